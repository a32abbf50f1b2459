/**
 * `node bench/sandbox.ts` — the pack sandbox's figures, each beside a baseline
 * measured in the same run:
 *
 *   trivial reduce steps/s (counter pack, state and event round-tripped as JSON)
 *       vs the same round trip through quickjs-emscripten's public API on a bare context
 *   trivial reduce steps/s on the run loop's path (begin/step: the state stays in the VM)
 *   SandboxPool.create once the last sandbox was reset (the pack kept loaded), and back to back
 *     (the last one reset when the next is asked for)
 *   SandboxPool.load (compile the module, make the spares)
 *
 * Options: --quick (fewer steps), --json. Nothing here is a test: it prints numbers.
 */
import { parseArgs } from 'node:util'
import { newQuickJSWASMModuleFromVariant, type QuickJSSyncVariant } from 'quickjs-emscripten-core'
import * as releaseSync from '@jitl/quickjs-wasmfile-release-sync'
import { SandboxPool } from '../packs/sandbox/index.ts'
import { median, percentile, report, type Figure } from './report.ts'

const { values: args } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' } } })
const STEPS = args.quick === true ? 20_000 : 100_000
const ROUNDS = 5
const figures: Figure[] = []

const COUNTER = `export function init (input) { return { n: input.start } }
export function reduce (state, event) { return { state: { n: state.n + event.by } } }`

type Step = { state: { n: number } }

/** The naive round trip: public API, JSON.stringify in, dump-style JSON out. */
async function baselineStepsPerSecond (): Promise<number> {
  let variant = releaseSync as unknown as { type?: unknown, default?: unknown }
  while (variant.type === undefined && typeof variant.default === 'object' && variant.default !== null) variant = variant.default as typeof variant
  const wasm = await newQuickJSWASMModuleFromVariant(variant as unknown as QuickJSSyncVariant)
  const ctx = wasm.newContext()
  const fn = ctx.unwrapResult(ctx.evalCode(`(function () {
    function reduce (state, event) { return { state: { n: state.n + event.by } } }
    return function (text) { const a = JSON.parse(text); return JSON.stringify(reduce(a[0], a[1])) }
  })()`))
  const rates: number[] = []
  for (let round = 0; round < ROUNDS; round++) {
    let state = { n: 0 }
    const started = performance.now()
    for (let i = 0; i < STEPS; i++) {
      const arg = ctx.newString(JSON.stringify([state, { type: 'Add', by: 1 }]))
      const out = ctx.unwrapResult(ctx.callFunction(fn, ctx.undefined, arg))
      state = (JSON.parse(ctx.getString(out)) as Step).state
      out.dispose()
      arg.dispose()
    }
    rates.push(STEPS / ((performance.now() - started) / 1000))
  }
  fn.dispose()
  ctx.dispose()
  return median(rates)
}

const pool = new SandboxPool()
const loadStarted = performance.now()
await pool.load()
const loadMs = performance.now() - loadStarted

const sandbox = await pool.create({ 'index.js': COUNTER }, 'index.js')
const rates: number[] = []
let state = sandbox.call('init', [{ start: 0 }]).value
for (let round = 0; round < ROUNDS; round++) {
  const started = performance.now()
  for (let i = 0; i < STEPS; i++) state = (sandbox.call('reduce', [state, { type: 'Add', by: 1 }]).value as Step).state
  rates.push(STEPS / ((performance.now() - started) / 1000))
}
sandbox.dispose()
const ours = median(rates)
const baseline = await baselineStepsPerSecond()
figures.push({ name: 'trivial reduce steps, stateless call (state and event as canonical JSON in, checked JSON out, fuel metered)', value: ours, unit: 'steps/s', baseline: 'public-API round trip, no checks', baselineValue: baseline, bar: '>= 100k steps/s', pass: ours >= 100_000 })

// The run loop's path: the state stays in the VM, only the event goes in.
const stepper = await pool.create({ 'index.js': COUNTER }, 'index.js')
stepper.begin({ start: 0 })
const event = '{"by":1,"type":"Add"}'
const stepRates: number[] = []
for (let round = 0; round < ROUNDS; round++) {
  const started = performance.now()
  for (let i = 0; i < STEPS; i++) stepper.step(event)
  stepRates.push(STEPS / ((performance.now() - started) / 1000))
}
stepper.dispose()
const stepped = median(stepRates)
figures.push({ name: 'trivial reduce steps, run-loop path (state kept in the VM, event in, effects/output out)', value: stepped, unit: 'steps/s', baseline: 'public-API round trip, no checks', baselineValue: baseline, bar: '>= 100k steps/s', pass: stepped >= 100_000 })

const spareMs: number[] = []
for (let i = 0; i < 30; i++) {
  await new Promise((resolve) => setTimeout(resolve, 20)) // let the released sandbox be reset
  const started = performance.now()
  const s = await pool.create({ 'index.js': COUNTER }, 'index.js')
  s.call('init', [{ start: 0 }])
  spareMs.push(performance.now() - started)
  s.dispose()
}
figures.push({ name: 'SandboxPool.create + init, a released sandbox reset with the pack kept loaded (p50)', value: median(spareMs), unit: 'ms', lowerIsBetter: true })
figures.push({ name: 'SandboxPool.create + init, reset and kept loaded (p90)', value: percentile(spareMs, 90), unit: 'ms', lowerIsBetter: true })

const backToBack = 100
const started = performance.now()
for (let i = 0; i < backToBack; i++) (await pool.create({ 'index.js': COUNTER }, 'index.js')).dispose()
figures.push({ name: 'SandboxPool.create back to back (the last one reset at once, the pack kept loaded)', value: (performance.now() - started) / backToBack, unit: 'ms', lowerIsBetter: true })
figures.push({ name: 'SandboxPool.load (compile, two spares)', value: loadMs, unit: 'ms', lowerIsBetter: true })
await pool.close()

report('Pack sandbox', figures, { json: args.json === true })
