import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import vm from 'node:vm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JsonValue } from '../../protocol/canonical.ts'
import { ReachError, isReachError } from '../../protocol/errors.ts'
import { SandboxPool, engineBuild, type Sandbox, type SandboxLimits, type SandboxPoolInit } from '../../packs/sandbox/index.ts'
import { PRELUDE } from '../../packs/sandbox/prelude.ts'

const COUNTER = `
export function init (input) {
  return { n: input.start ?? 0, seen: [] }
}
export function reduce (state, event) {
  switch (event.type) {
    case 'Add': return { state: { ...state, n: state.n + event.by, seen: [...state.seen, event.by] } }
    case 'Stop': return { state, output: { total: state.n } }
    default: return { state }
  }
}
`

/** Burns a deterministic amount of fuel per event, so ticks actually vary call by call. */
const WORKER = `
export function init (input) {
  return { acc: input.seed }
}
export function reduce (state, event) {
  let acc = state.acc
  for (let i = 0; i < event.work; i++) acc = (acc * 31 + i) % 1000003
  return { state: { acc }, output: event.last ? acc : undefined }
}
`

function pack (source: string): Record<string, string> {
  return { 'index.js': source }
}

function hostile (name: string): Record<string, string> {
  return pack(readFileSync(new URL(`./hostile/${name}`, import.meta.url), 'utf8'))
}

/** The error a thunk fails with; the test fails if it succeeds or throws something else. */
async function failure (fn: () => unknown): Promise<ReachError> {
  try {
    await fn()
  } catch (err) {
    if (isReachError(err)) return err
    throw err
  }
  throw new Error('expected a ReachError, got success')
}

/** The pool most tests share; tests that count what a pool does make their own (`newPool`). */
let pool: SandboxPool
const pools: SandboxPool[] = []

/** A pool closed after the file's tests, with the default sizes spelled out so counts do not move with the constants. */
function newPool (init: SandboxPoolInit = {}): SandboxPool {
  const made = new SandboxPool({ spareSandboxes: 2, pooledSandboxes: 4, loadedPacks: 8, loadedReadyPerPack: 2, ...init })
  pools.push(made)
  return made
}

/**
 * A pool resets released sandboxes on the next turn of the event loop (setImmediate, and
 * immediates run in the order they were queued): one turn after a release, it is settled.
 */
async function nextTurn (): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve))
}

/** Runs the counter pack end to end in a new sandbox: the pool is still healthy. */
async function expectHealthy (from: SandboxPool = pool): Promise<void> {
  const sandbox = await from.create(pack(COUNTER), 'index.js')
  let state = sandbox.call('init', [{ start: 10 }]).value
  for (const by of [1, 2, 3]) state = (sandbox.call('reduce', [state, { type: 'Add', by }]).value as { state: JsonValue }).state
  expect(sandbox.call('reduce', [state, { type: 'Stop' }]).value).toEqual({ state: { n: 16, seen: [1, 2, 3] }, output: { total: 16 } })
  sandbox.dispose()
}

/** Given a hostile pack, when `fn` is called, then it fails with `code`, and a new sandbox still works. */
async function expectContained (file: string, fn: 'init' | 'reduce', code: string, limits: Partial<SandboxLimits> = {}, event: JsonValue = {}): Promise<ReachError> {
  const err = await failure(async () => {
    const sandbox = await pool.create(hostile(file), 'index.js', limits)
    if (fn === 'init') sandbox.call('init', [{}])
    else sandbox.call('reduce', [sandbox.call('init', [{}]).value, event])
  })
  expect(err.code, err.message).toBe(code)
  await expectHealthy()
  return err
}

/** Small fuel: an infinite loop stops after tens of milliseconds. */
const LITTLE_FUEL = { fuel: 2_000 }

beforeAll(async () => {
  pool = newPool()
  await pool.load()
})

afterAll(async () => {
  await Promise.all(pools.map(async (p) => { await p.close() }))
})

describe('sandbox: a well-behaved pack', () => {
  it('given the counter pack, init and reduce round-trip JSON values', async () => {
    const sandbox = await pool.create(pack(COUNTER), 'index.js')
    const loaded = sandbox.fuelUsed
    const init = sandbox.call('init', [{ start: 5 }])
    expect(init.value).toEqual({ n: 5, seen: [] })
    const step = sandbox.call('reduce', [init.value, { type: 'Add', by: 2 }])
    expect(step.value).toEqual({ state: { n: 7, seen: [2] } })
    const stop = sandbox.call('reduce', [(step.value as { state: JsonValue }).state, { type: 'Stop' }])
    expect(stop.value).toEqual({ state: { n: 7, seen: [2] }, output: { total: 7 } })
    // fuelUsed is loading plus every call's ticks, and survives dispose.
    const used = loaded + init.fuel + step.fuel + stop.fuel
    expect(sandbox.fuelUsed).toBe(used)
    sandbox.dispose()
    sandbox.dispose()
    expect(sandbox.fuelUsed).toBe(used)
    expect(() => sandbox.call('init', [{}])).toThrow('disposed')
  })

  it('is deterministic: 100 runs of the same sequence give identical values and identical fuel', async () => {
    const events = [40_000, 5, 14_000, 1, 0, 24_690, 9_999, 8_000].map((work, i, all) => ({ work, last: i === all.length - 1 }))
    const runs: string[] = []
    let sample: { values: JsonValue[], fuel: number[], total: number } | undefined
    for (let run = 0; run < 100; run++) {
      const sandbox = await pool.create(pack(WORKER), 'index.js')
      const values: JsonValue[] = []
      const fuel: number[] = []
      let state = sandbox.call('init', [{ seed: 7 }]).value
      for (const event of events) {
        const step = sandbox.call('reduce', [state, event])
        values.push(step.value)
        fuel.push(step.fuel)
        state = (step.value as { state: JsonValue }).state
      }
      sample ??= { values, fuel, total: sandbox.fuelUsed }
      runs.push(JSON.stringify({ values, fuel, total: sandbox.fuelUsed }))
      sandbox.dispose()
    }
    expect(new Set(runs).size).toBe(1)
    // `output: undefined` is left out, as JSON.stringify leaves it out.
    expect(sample?.values[0]).not.toHaveProperty('output')
    expect(sample?.values.at(-1)).toHaveProperty('output')
    // The work really costs fuel, in proportion: 40,000 iterations ≈ 8 ticks of 10,000 poll points.
    expect(sample?.fuel[0]).toBeGreaterThan(4)
    expect(sample?.fuel[1]).toBeLessThanOrEqual(1)
    expect(sample?.total).toBeGreaterThan(sample?.fuel.reduce((a, b) => a + b, 0) ?? Infinity)
  })

  it('runs out of stack and of memory at the same point every run', async () => {
    const probe = pack(`
export function init () {
  let depth = 0
  const down = () => { depth++; down() }
  try { down() } catch {}
  let hoard = []
  try { for (;;) hoard.push({ i: hoard.length }) } catch {}
  const objects = hoard.length
  hoard = null
  return { depth, objects }
}
export function reduce (s) { return { state: s } }`)
    const seen = new Set<string>()
    for (let run = 0; run < 5; run++) {
      const sandbox = await pool.create(probe, 'index.js', { memoryBytes: 4 << 20 })
      seen.add(JSON.stringify(sandbox.call('init', [{}]).value))
    }
    expect(seen.size).toBe(1)
    // Both limits were really reached, well past a trivial depth or count.
    const { depth, objects } = JSON.parse([...seen][0] as string) as { depth: number, objects: number }
    expect(depth).toBeGreaterThan(100)
    expect(objects).toBeGreaterThan(1000)
  })

  it('hands the pack canonical JSON: keys sorted, whatever order the host built them in', async () => {
    const sandbox = await pool.create(pack('export function init (v) { return Object.keys(v) }\nexport function reduce (s, e) { return { state: Object.keys(e) } }'), 'index.js')
    expect(sandbox.call('init', [{ b: 1, a: 2, c: { z: 1, y: 2 } }]).value).toEqual(['a', 'b', 'c'])
    expect(sandbox.call('reduce', [null, { type: 'T', aggregate: 'x', at: 1 }]).value).toEqual({ state: ['aggregate', 'at', 'type'] })
  })

  it('refuses limits it cannot honour (RL-1003)', async () => {
    for (const limits of [{ fuel: 0 }, { memoryBytes: -1 }, { wallMs: Number.NaN }, { stackBytes: 16 << 20 }, { memoryBytes: 4 * 2 ** 30 }]) {
      expect((await failure(async () => await pool.create(pack(COUNTER), 'index.js', limits))).code).toBe('RL-1003')
    }
  })

  it('refuses host values that are not JSON (RL-1006) and stays usable', async () => {
    const sandbox = await pool.create(pack(COUNTER), 'index.js')
    expect((await failure(() => sandbox.call('init', [{ start: Number.NaN }]))).code).toBe('RL-1006')
    expect(sandbox.call('init', [{ start: 1 }]).value).toEqual({ n: 1, seen: [] })
  })

  it('resolves relative imports among the pack files, awaits async functions and top-level await', async () => {
    const sandbox = await pool.create({
      'index.js': "import { add } from './lib/math.js'\nconst base = await Promise.resolve(100)\nexport async function init (i) { await null; return add(base, i.x) }\nexport function reduce (s, e) { return { state: add(s, e.by) } }",
      'lib/math.js': "import { id } from '../util.js'\nexport const add = (a, b) => id(a) + b",
      'util.js': 'export const id = (x) => x'
    }, './index.js')
    expect(sandbox.call('init', [{ x: 1 }]).value).toBe(101)
    expect(sandbox.call('reduce', [101, { by: 2 }]).value).toEqual({ state: 103 })
  })

  it('a failure is final: the sandbox is disposed and every later call throws the same error', async () => {
    const sandbox = await pool.create(hostile('throws.js'), 'index.js')
    const first = await failure(() => sandbox.call('init', [{}]))
    const again = await failure(() => sandbox.call('init', [{}]))
    expect(again).toBe(first)
    expect(first.details).toMatchObject({ phase: 'call', fuel_limit: 10_000 })
  })
})

describe('sandbox: the run loop path (begin/step), the state kept in the VM', () => {
  const text = (v: JsonValue): string => JSON.stringify(v)

  it('keeps the state between steps and hands back only effects and output', async () => {
    const sandbox = await pool.create(pack(COUNTER), 'index.js')
    const loaded = sandbox.fuelUsed
    expect(loaded + sandbox.begin({ start: 5 })).toBe(sandbox.fuelUsed)
    const add = sandbox.step(text({ type: 'Add', by: 2 }))
    expect(add).not.toHaveProperty('effects')
    expect(add).not.toHaveProperty('output')
    sandbox.step(text({ type: 'Add', by: 3 }))
    expect(sandbox.step(text({ type: 'Stop' })).output).toEqual({ total: 10 })
  })

  it('gives the same outputs and the same fuel on every run', async () => {
    const events = [40_000, 5, 14_000, 1, 0, 24_690].map((work, i, all) => text({ work, last: i === all.length - 1 }))
    const runs = new Set<string>()
    for (let run = 0; run < 20; run++) {
      const sandbox = await pool.create(pack(WORKER), 'index.js')
      sandbox.begin({ seed: 7 })
      const steps = events.map((e) => sandbox.step(e))
      runs.add(JSON.stringify({ steps, total: sandbox.fuelUsed }))
    }
    expect(runs.size).toBe(1)
    const [sample] = [...runs]
    expect(JSON.parse(sample as string).steps[0].fuel).toBeGreaterThan(4)
  })

  it('a reduce result without state, a non-JSON effect, a cyclic output → RL-3108', async () => {
    const cases = [
      'export function reduce () { return { effects: [] } }',
      'export function reduce (s) { return { state: s, effects: [{ tool: "t", args: { f () {} } }] } }',
      'export function reduce (s) { const a = []; a.push(a); return { state: s, output: a } }'
    ]
    for (const body of cases) {
      const sandbox = await pool.create(pack(`export function init () { return 0 }\n${body}`), 'index.js')
      sandbox.begin(null)
      expect((await failure(() => sandbox.step('{"type":"Start"}'))).code).toBe('RL-3108')
    }
  })

  it('accepts a wide output (20,000 effects) and still counts output bytes', async () => {
    const wide = 'export function init () { return 0 }\nexport function reduce (s, e) { const effects = []; for (let i = 0; i < e.n; i++) effects.push({ tool: "t", args: { i } }); return { state: s, effects } }'
    const sandbox = await pool.create(pack(wide), 'index.js', { outputBytes: 4 << 20 })
    sandbox.begin(null)
    expect((sandbox.step(text({ n: 20_000 })).effects as JsonValue[]).length).toBe(20_000)
    const small = await pool.create(pack(wide), 'index.js', { outputBytes: 1000 })
    small.begin(null)
    expect((await failure(() => small.step(text({ n: 1000 })))).code).toBe('RL-3104')
  })

  it('the output check walks with its own arrays: a setter planted on Array.prototype cannot see or stop it', async () => {
    // Negative control: inside the VM, a plain array's new index does run such a setter.
    const planted = `
let caught = 0
Object.defineProperty(Array.prototype, '0', { set (v) { caught++ }, configurable: true })
export function init () { const naive = []; naive[0] = 'x'; return { naive: caught } }
export function reduce (s, e) { s.n = (s.n ?? 0) + 1; return { state: s, output: { effects_walked: true, caught, naive: s.naive } } }`
    const sandbox = await pool.create(pack(planted), 'index.js')
    sandbox.begin(null)
    expect(sandbox.step('{"type":"Start"}').output).toEqual({ effects_walked: true, caught: 1, naive: 1 })
  })
})

describe('sandbox: a released instance is reset to a blank (or to its pack loaded), byte for byte', () => {
  /** Leaves marks everywhere a later run could look: the global object, a built-in prototype, module state. */
  const MARKER = `
let calls = 0
export function init (input) {
  const before = { global: globalThis.mark ?? null, proto: Object.prototype.mark ?? null }
  globalThis.mark = input.run
  Object.prototype.mark = input.run
  return { before, run: input.run }
}
export function reduce (s, e) {
  calls++
  try { null.x } catch {}
  const text = JSON.stringify(s) + 'x'.repeat(500) + /a+b/.exec('aaab')[0]
  const down = (n) => n === 0 ? 0 : 1 + down(n - 1)
  return { state: s, output: { before: s.before, calls, text: text.length, deep: down(400) } }
}`
  it('every run starts from a clean world, and the instances really are reused', async () => {
    const own = newPool()
    await own.load()
    for (let run = 1; run <= 6; run++) {
      const sandbox = await own.create(pack(MARKER), 'index.js')
      sandbox.begin({ run })
      expect(sandbox.step('{"type":"Start"}').output).toEqual({ before: { global: null, proto: null }, calls: 1, text: 551, deep: 400 })
      sandbox.dispose()
      await nextTurn()
    }
    // Every run's instance was reset and kept; from the third run on the pack was kept loaded
    // (the second load is captured), so runs 3 to 6 started with it loaded.
    expect(own.stats()).toEqual({ reused: 6, preloaded: 4, ready: 2, loaded: 1 })
  })

  it('negative control: the same instance used again without a reset shows the last run its marks', async () => {
    const sandbox = await pool.create(pack(MARKER), 'index.js')
    sandbox.begin({ run: 1 })
    sandbox.begin({ run: 2 })
    expect(sandbox.step('{"type":"Start"}').output).toMatchObject({ before: { global: 1, proto: 1 } })
    sandbox.dispose()
  })

  it('after runs of all kinds, every ready sandbox is the same bytes as a new instance (blank, or with the pack just loaded)', async () => {
    const runs: Array<[Record<string, string>, Partial<SandboxLimits>, (s: Sandbox) => unknown]> = [
      [pack(MARKER), {}, (s) => { s.begin({ run: 9 }); s.step('{"type":"Start"}') }],
      [pack(COUNTER), {}, (s) => { let st = s.call('init', [{ start: 1 }]).value; st = (s.call('reduce', [st, { type: 'Add', by: 2 }]).value as { state: JsonValue }).state }],
      [pack(WORKER), {}, (s) => { s.begin({ seed: 3 }); s.step(JSON.stringify({ work: 30_000, last: true })) }],
      [pack('export async function init () { await null; return [1, 2, 3].map(String) }\nexport function reduce (s) { return { state: s } }'), { stackBytes: 64 << 10 }, (s) => s.call('init', [null])]
    ]
    const own = newPool()
    await own.load()
    const same = (compared: { ready: Uint8Array[], fresh: Uint8Array }): void => {
      for (const memory of compared.ready) {
        expect(memory.length).toBe(compared.fresh.length)
        expect(Buffer.compare(memory, compared.fresh)).toBe(0)
      }
    }
    for (let round = 0; round < 3; round++) {
      for (const [files, limits, use] of runs) {
        const sandbox = await own.create(files, 'index.js', limits)
        use(sandbox)
        sandbox.dispose()
        await nextTurn()
      }
      if (round === 0) {
        // Each pack ran once: every instance went back to a blank.
        expect(own.stats()).toMatchObject({ reused: 4, ready: 2, loaded: 0 })
        same(await own.inspectBlanks())
      }
    }
    // Each pack ran three times: ready sandboxes are blanks, or blanks with one of these packs loaded.
    const loaded = await Promise.all(runs.map(async ([files, limits]) => await own.inspectLoaded(files, 'index.js', limits)))
    expect(loaded.reduce((n, c) => n + c.ready.length, 0)).toBeGreaterThan(0)
    for (const compared of [await own.inspectBlanks(), ...loaded]) same(compared)
  })

  it('a reset instance counts fuel from the same start as a new one (loading and the blank included)', async () => {
    const own = newPool()
    await own.load()
    const use = (s: Sandbox): string => {
      s.begin({ seed: 1 })
      s.step(JSON.stringify({ work: 25_000, last: true }))
      return JSON.stringify({ fuel: s.fuelUsed })
    }
    // More at once than the pool holds: two spares, four new instances.
    const first = await Promise.all(Array.from({ length: 6 }, async () => await own.create(pack(WORKER), 'index.js')))
    const seen = new Set(first.map(use))
    for (const s of first) s.dispose()
    await nextTurn()
    // Four kept (the pool's size): two reset with the pack loaded (the most per pack), two to blanks.
    expect(own.stats()).toEqual({ reused: 4, preloaded: 0, ready: 4, loaded: 1 })
    const again = await Promise.all(Array.from({ length: 4 }, async () => await own.create(pack(WORKER), 'index.js')))
    expect(own.stats().preloaded).toBe(2)
    for (const s of again) seen.add(use(s))
    expect(seen.size).toBe(1)
  })

  it('a pack kept loaded gives the fuel a new load gives, and a run whose fuel does not cover loading still fails loading', async () => {
    const own = newPool()
    await own.load()
    // Loading burns fuel: a top-level loop.
    const heavy = pack('let x = 0\nfor (let i = 0; i < 60000; i++) x = (x * 31 + i) % 1000003\nexport function init () { return x }\nexport function reduce (s) { return { state: s, output: s } }')
    const totals = new Set<string>()
    for (let run = 0; run < 5; run++) {
      const sandbox = await own.create(heavy, 'index.js')
      sandbox.begin(null)
      totals.add(JSON.stringify({ output: sandbox.step('{"type":"Start"}').output, fuel: sandbox.fuelUsed }))
      sandbox.dispose()
      await nextTurn()
    }
    // Two loads, then three runs with the pack already loaded, all with the same fuel.
    expect(own.stats().preloaded).toBe(3)
    expect(totals.size).toBe(1)
    const runTicks = (JSON.parse([...totals][0] as string) as { fuel: number }).fuel
    expect(runTicks).toBeGreaterThan(3)
    const short = await failure(async () => await own.create(heavy, 'index.js', { fuel: 2 }))
    expect(short.code).toBe('RL-3101')
    expect(short.details).toMatchObject({ phase: 'load' })
  })

  it('an instance that failed or grew its memory is not handed back', async () => {
    const own = newPool()
    await own.load()
    await failure(async () => {
      const sandbox = await own.create(hostile('loop-init.js'), 'index.js', LITTLE_FUEL)
      sandbox.call('init', [{}])
    })
    const big = await own.create(pack('export function init () { return "x".repeat(4 << 20).length }\nexport function reduce (s) { return { state: s } }'), 'index.js')
    expect(big.call('init', [null]).value).toBe(4 << 20)
    big.dispose()
    await nextTurn()
    expect(own.stats().reused).toBe(0)
    // Control: a run that ends cleanly is handed back.
    ;(await own.create(pack(COUNTER), 'index.js')).dispose()
    await nextTurn()
    expect(own.stats().reused).toBe(1)
  })
})

describe('sandbox: hostile corpus, each contained with its code and a healthy sandbox afterwards', () => {
  it('infinite loop in init → RL-3101', async () => {
    const err = await expectContained('loop-init.js', 'init', 'RL-3101', LITTLE_FUEL)
    expect(err.details).toMatchObject({ fuel_used: 2_001, fuel_limit: 2_000 })
  })

  it('infinite loop in reduce → RL-3101', async () => {
    await expectContained('loop-reduce.js', 'reduce', 'RL-3101', LITTLE_FUEL)
  })

  it('a loop that swallows the interrupt through the Promise constructor is torn out → RL-3101', async () => {
    await expectContained('swallow-interrupt.js', 'init', 'RL-3101', LITTLE_FUEL)
  })

  it('a loop that swallows the interrupt through async functions is torn out → RL-3101', async () => {
    await expectContained('swallow-async.js', 'init', 'RL-3101', LITTLE_FUEL)
  })

  it('infinite loop with fuel to spare hits the wall-clock backstop → RL-3105', async () => {
    await expectContained('loop-init.js', 'init', 'RL-3105', { fuel: 1e12, wallMs: 100 })
  })

  it('memory bomb → RL-3102', async () => {
    await expectContained('memory-bomb.js', 'init', 'RL-3102', { memoryBytes: 8 << 20 })
  })

  it('many buffers each under the limit → RL-3102 (the limit is the instance memory, not QuickJS\'s count)', async () => {
    await expectContained('big-buffers.js', 'init', 'RL-3102', { memoryBytes: 16 << 20 })
  })

  it('deep recursion → RL-3103', async () => {
    await expectContained('deep-recursion.js', 'init', 'RL-3103')
  })

  it('deep recursion inside a C built-in (native stack) → RL-3103', async () => {
    await expectContained('native-recursion.js', 'init', 'RL-3103')
  })

  it('giant output → RL-3104, counted in UTF-8 bytes', async () => {
    await expectContained('giant-output.js', 'init', 'RL-3104')
    // 600 'é' are 600 UTF-16 units but 1,200 bytes.
    await expectContained('giant-output.js', 'reduce', 'RL-3104', { outputBytes: 1_000 }, { n: 600 })
  })

  it('a promise that never resolves → RL-3105 once the job queue is empty, without waiting', async () => {
    const err = await expectContained('never-resolves.js', 'init', 'RL-3105', { wallMs: 600_000 })
    expect(err.message).toContain('never settles')
  })

  it('throwing → RL-3106 with the message, truncated', async () => {
    const err = await expectContained('throws.js', 'init', 'RL-3106')
    expect(err.message).toMatch(/^pack code threw Error: boom: x+…$/)
    expect(err.message.length).toBeLessThan(600)
    const late = await expectContained('rejects.js', 'reduce', 'RL-3106')
    expect(late.message).toBe('pack code threw RangeError: late failure')
  })

  it('syntax error, missing export, imports outside the pack → RL-3107', async () => {
    for (const file of ['syntax-error.js', 'missing-export.js', 'import-builtin.js', 'import-parent.js']) {
      const err = await failure(async () => await pool.create(hostile(file), 'index.js'))
      expect(err.code, `${file}: ${err.message}`).toBe('RL-3107')
    }
    expect((await failure(async () => await pool.create(pack(COUNTER), 'main.js'))).code).toBe('RL-3107')
    const dynamic = await expectContained('dynamic-import.js', 'reduce', 'RL-3107')
    expect(dynamic.message).toContain('cannot import "os"')
  })

  it('returning a function or NaN → RL-3108', async () => {
    await expectContained('returns-function.js', 'init', 'RL-3108')
    const nan = await expectContained('returns-nan.js', 'reduce', 'RL-3108')
    expect(nan.message).toContain('NaN is not a finite number')
  })
})

describe('sandbox: no ambient authority', () => {
  it('process, require, fetch and timers are undefined; Date and Math.random throw; console is a silent stub', async () => {
    const sandbox = await pool.create(hostile('ambient.js'), 'index.js')
    const report = sandbox.call('init', [{}]).value
    expect(report).toEqual({
      typeofProcess: 'undefined',
      typeofRequire: 'undefined',
      globalProcess: 'undefined',
      typeofFetch: 'undefined',
      typeofSetTimeout: 'undefined',
      typeofSetInterval: 'undefined',
      typeofWeakRef: 'undefined',
      typeofFinalizationRegistry: 'undefined',
      typeofConsole: 'object',
      consoleLog: { value: 'undefined' },
      mathRandom: { threw: 'TypeError: Math.random is not available in a Reach pack: randomness arrives in events (request the random.bytes tool)' },
      dateNow: { threw: 'TypeError: Date.now is not available in a Reach pack: time arrives in events (request the clock.now tool)' },
      newDate: { threw: 'TypeError: Date is not available in a Reach pack: time arrives in events (request the clock.now tool)' },
      callProcess: { threw: "ReferenceError: 'process' is not defined" },
      callRequire: { threw: "ReferenceError: 'require' is not defined" },
      callFetch: { threw: "ReferenceError: 'fetch' is not defined" }
    })
  })

  it('constructor-chain escapes reach only the VM\'s own global object', async () => {
    const sandbox = await pool.create(hostile('constructor-escape.js'), 'index.js')
    expect(sandbox.call('init', [{}]).value).toEqual({
      viaThis: "threw ReferenceError: 'process' is not defined",
      reachedOwnGlobal: true,
      processThroughIt: 'undefined',
      requireThroughIt: 'undefined',
      processThroughFunction: 'undefined'
    })
  })

  it('negative control: the same escapes on a naive node:vm sandbox reach the host process', () => {
    // `this` is the contextified object, created by the host: its constructor chain is the host's.
    expect(vm.runInNewContext('this.constructor.constructor("return process")()')).toBe(process)
    // Any host object handed in does the same, which is why our boundary carries JSON text only.
    expect(vm.runInNewContext('input.constructor.constructor("return process")()', { input: {} })).toBe(process)
  })

  it('prototype pollution inside the VM does not leak to the host, and the sandbox plumbing survives it', async () => {
    const sandbox = await pool.create(hostile('pollute.js'), 'index.js')
    const state = sandbox.call('init', [{}]).value
    expect(state).toEqual({ polluted: 'yes' })
    expect(sandbox.call('reduce', [state, { n: 3 }]).value).toEqual({ state: { seen: 3, polluted: 'yes' } })
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    expect(Object.prototype).not.toHaveProperty('polluted')
    expect(([] as unknown as Record<string, unknown>).polluted).toBeUndefined()
    await expectHealthy()
  })
})

describe('sandbox: a pool is an object its node owns', () => {
  /** Runs `files` in `from` and hands the sandbox back: a clean run. */
  async function run (from: SandboxPool, files: Record<string, string>): Promise<void> {
    const sandbox = await from.create(files, 'index.js')
    sandbox.begin({ seed: 1 })
    sandbox.step(JSON.stringify({ work: 10, last: true }))
    sandbox.dispose()
    await nextTurn()
  }

  it('given two pools in one process, runs in one change nothing in the other, and a pack kept loaded in one is not preloaded in the other', async () => {
    const a = newPool()
    const b = newPool()
    await Promise.all([a.load(), b.load()])
    const bBefore = b.stats()
    expect(bBefore).toEqual({ reused: 0, preloaded: 0, ready: 2, loaded: 0 })
    for (let i = 0; i < 3; i++) await run(a, pack(WORKER))
    expect(a.stats()).toEqual({ reused: 3, preloaded: 1, ready: 2, loaded: 1 })
    expect(b.stats()).toEqual(bBefore)
    // The same pack, loaded twice in A, is loaded afresh in B: B has seen it once.
    await run(b, pack(WORKER))
    expect(b.stats()).toEqual({ reused: 1, preloaded: 0, ready: 2, loaded: 0 })
    expect(a.stats()).toEqual({ reused: 3, preloaded: 1, ready: 2, loaded: 1 })
  })

  it('closing one pool leaves the other working; close is idempotent and a closed pool refuses with RL-5007', async () => {
    const a = newPool()
    const b = newPool()
    await Promise.all([a.load(), b.load()])
    await run(a, pack(WORKER))
    await run(a, pack(WORKER))
    await a.close()
    await a.close()
    expect(a.stats()).toMatchObject({ ready: 0, loaded: 0 })
    const refused = await failure(async () => await a.create(pack(COUNTER), 'index.js'))
    expect(refused.code).toBe('RL-5007')
    expect(refused.message).toContain('sandbox pool is closed')
    expect((await failure(async () => { await a.load() })).code).toBe('RL-5007')
    await expectHealthy(b)
    await run(b, pack(WORKER))
    expect(b.stats()).toMatchObject({ reused: 2 })
  })

  it('close cancels what was pending: a sandbox released just before is not reset, one in use keeps working and is dropped when released', async () => {
    const a = newPool()
    await a.load()
    const inUse = await a.create(pack(COUNTER), 'index.js')
    const released = await a.create(pack(COUNTER), 'index.js')
    released.dispose()
    // Its reset was queued for the next turn; close comes first.
    await a.close()
    await nextTurn()
    expect(a.stats()).toEqual({ reused: 0, preloaded: 0, ready: 0, loaded: 0 })
    expect(inUse.call('init', [{ start: 2 }]).value).toEqual({ n: 2, seen: [] })
    inUse.dispose()
    await nextTurn()
    expect(a.stats()).toEqual({ reused: 0, preloaded: 0, ready: 0, loaded: 0 })
  })

  it('close waits for an instance being made; the create that was waiting for it fails with RL-5007', async () => {
    const a = newPool({ spareSandboxes: 0 })
    await a.load()
    const creating = failure(async () => await a.create(pack(COUNTER), 'index.js'))
    await a.close()
    expect((await creating).code).toBe('RL-5007')
    expect(a.stats().ready).toBe(0)
  })

  it('refuses pool sizes that are not non-negative integers (RL-1011)', () => {
    for (const init of [{ spareSandboxes: -1 }, { pooledSandboxes: 1.5 }, { seenPacks: Number.NaN }]) {
      expect(() => new SandboxPool(init)).toThrow(expect.objectContaining({ code: 'RL-1011' }))
    }
  })
})

describe('sandbox: engine build identity (what fuel counts depend on)', () => {
  const HEX = /^[0-9a-f]{64}$/

  it('hashes the exact .wasm file instantiated and the prelude text, the same on every call and in every pool', async () => {
    const first = await engineBuild()
    expect(first.wasm).toMatch(HEX)
    expect(first.prelude).toMatch(HEX)
    const wasmFile = createRequire(import.meta.url).resolve('@jitl/quickjs-wasmfile-release-sync/wasm')
    expect(first.wasm).toBe(createHash('sha256').update(readFileSync(wasmFile)).digest('hex'))
    expect(first.prelude).toBe(createHash('sha256').update(PRELUDE, 'utf8').digest('hex'))
    expect(await engineBuild()).toEqual(first)
    // A second pool, made and used after the first call, runs the same build.
    const other = newPool()
    await other.load()
    await expectHealthy(other)
    expect(await engineBuild()).toEqual(first)
  })
})
