/**
 * `npm run bench:runs` — the run loop's figures, beside the engine's raw
 * chain verify measured in the same run:
 *
 *   warm sandbox instantiate per run (pool.create + init)
 *   trivial reduce steps/s, in a replay of a recorded run (pack code, no tools)
 *   runs/s of a trivial pack end to end (durable LevelDB log, closing checkpoint)
 *   replay of a 100k-event run (events/s), vs verifyChain of the same events
 *
 * Options: --quick, --json. Prints numbers; the README records them.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import type { JsonObject } from '../protocol/canonical.ts'
import { verifyChain } from '../protocol/chain.ts'
import { nextEvent, type Event, type EventDraft } from '../protocol/event.ts'
import { generateKeyPair } from '../protocol/keys.ts'
import { ENGINE_VERSION } from '../packs/manifest.ts'
import { ArrayCursor, RunThreads, executeRun, replayRun, type Engine, type RunPack } from '../packs/run/index.ts'
import { SandboxPool, engineBuild } from '../packs/sandbox/index.ts'
import type { Tool } from '../packs/tools/index.ts'
import { ensureHome, homePaths } from '../node/home.ts'
import { RunStore } from '../node/runs.ts'
import { median, report, type Figure } from './report.ts'

const { values: args } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' } } })
const quick = args.quick === true
const EVENTS = quick ? 20_000 : 100_000
const RUNS = quick ? 50 : 200
const figures: Figure[] = []
const rate = (n: number, ms: number): number => n / (ms / 1000)

const TRIVIAL: RunPack = {
  cid: 'bafy-bench-trivial', name: 'trivial', entry: 'index.js', capabilities: [],
  files: { 'index.js': 'export function init (input) { return { n: 0 } }\nexport function reduce (s, e) { return { state: s, output: { ok: true } } }' }
}
// A trivial reducer fed by recorded tool results: it asks for tool calls 100 at a time and
// only counts the results (one reduce per result, ~2 events per step).
const BATCHER: RunPack = {
  cid: 'bafy-bench-batcher', name: 'batcher', entry: 'index.js', capabilities: ['bench.echo'],
  files: { 'index.js': `export function init (input) { return { n: 0, issued: 0, steps: input.steps } }
export function reduce (s, e) {
  if (e.type !== 'Start') s.n++
  if (s.n === s.steps) return { state: s, output: { n: s.n } }
  if (s.n < s.issued) return { state: s }
  const effects = []
  for (let i = 0; i < 100 && s.issued < s.steps; i++, s.issued++) effects.push({ tool: 'bench.echo', args: {} })
  return { state: s, effects }
}` }
}
// One tool call per step, each built from the last state: the pack does more work per step.
const LOOPER: RunPack = {
  cid: 'bafy-bench-looper', name: 'looper', entry: 'index.js', capabilities: ['bench.echo'],
  files: { 'index.js': `export function init (input) { return { n: 0, steps: input.steps } }
export function reduce (s, e) {
  const n = e.type === 'ToolResult' ? s.n + 1 : s.n
  if (n >= s.steps) return { state: { ...s, n }, output: { n } }
  return { state: { ...s, n }, effects: [{ tool: 'bench.echo', args: { i: n } }] }
}` }
}
const echo: Tool = { capability: 'bench.echo', run: async (a) => a }
const budget = { fuel: 10_000_000, memory_bytes: 32 << 20, output_bytes: 65536, tool_calls: 1_000_000, wall_ms: 600_000 }
const policy = { version: '0'.repeat(64), granted: ['bench.echo'] }

/** An in-memory sink: the bench measures the loop, not the disk (runs/s below includes the disk). */
function memorySink (): { append: (d: EventDraft) => Promise<Event> } {
  let head: Event | null = null
  return { append: async (d) => { head = nextEvent(head, d); return head } }
}

const pool = new SandboxPool()
await pool.load()
const root = await mkdtemp(join(os.tmpdir(), 'reach-bench-runs-'))
try {
  // Warm instantiate.
  const times: number[] = []
  for (let i = 0; i < 200; i++) {
    const t = performance.now()
    const sb = await pool.create(TRIVIAL.files, TRIVIAL.entry)
    sb.call('init', [null])
    times.push(performance.now() - t)
    sb.dispose()
  }
  figures.push({ name: 'warm sandbox instantiate per run (pool.create + init), median of 200', value: median(times), unit: 'ms', lowerIsBetter: true })
  // The runs below have their own pool: this one's instances would only weigh on the heap.
  await pool.close()
  const engine: Engine & { sandboxes: SandboxPool } = { version: ENGINE_VERSION, build: await engineBuild(), sandboxes: new SandboxPool() }

  // Recorded runs of ~EVENTS events (two per step), replayed.
  const steps = EVENTS / 2
  const replayOf = async (pack: RunPack): Promise<{ events: Event[], ms: number }> => {
    const live = await executeRun({ pack, input: { steps }, budget, policy, nonce: '0'.repeat(32) }, engine, memorySink(), new Map([['bench.echo', echo]]))
    if (live.status !== 'completed') throw new Error(`bench run of ${pack.name} failed: ${live.error?.message ?? ''}`)
    // Median of three replays (the first one also pays for the live run's garbage).
    const times: number[] = []
    for (let i = 0; i < 3; i++) {
      const t = performance.now()
      const verdict = await replayRun(pack, engine, new ArrayCursor(live.events))
      times.push(performance.now() - t)
      if (!verdict.ok) throw new Error(`bench replay of ${pack.name} diverged: ${verdict.divergence.reason}`)
    }
    return { events: live.events, ms: median(times) }
  }
  const trivial = await replayOf(BATCHER)
  const looper = await replayOf(LOOPER)
  let t = performance.now()
  const chain = verifyChain(trivial.events)
  const chainMs = performance.now() - t
  if (!chain.ok) throw new Error('bench log invalid')
  const chainRate = rate(trivial.events.length, chainMs)
  const stepRate = rate(steps, trivial.ms)
  figures.push({ name: `replay of a ${trivial.events.length.toLocaleString('en')}-event run (events/s, median of 3)`, value: rate(trivial.events.length, trivial.ms), unit: 'events/s', baseline: 'raw chain verify of the same events', baselineValue: chainRate })
  figures.push({ name: 'trivial reduce steps/s in that replay, median of 3 (one reduce per recorded tool result; tool calls asked 100 at a time)', value: stepRate, unit: 'steps/s', baseline: 'raw chain verify (events/s)', baselineValue: chainRate, bar: '>= 100k steps/s', pass: stepRate >= 100_000 })
  figures.push({ name: 'reduce steps/s in replay, one tool call built per step (pack work per step, no bar)', value: rate(steps, looper.ms), unit: 'steps/s' })

  // The same replay on a run thread (what a node does: packs/run/threads.ts), the record read a
  // batch at a time from this thread.
  const threads = new RunThreads(engine, { size: 1 })
  const threaded: Engine = { ...engine, threads }
  const threadTimes: number[] = []
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now()
    const verdict = await replayRun(BATCHER, threaded, new ArrayCursor(trivial.events))
    threadTimes.push(performance.now() - t0)
    if (!verdict.ok) throw new Error(`bench replay on a run thread diverged: ${verdict.divergence.reason}`)
  }
  figures.push({ name: 'trivial reduce steps/s in that replay on a run thread, median of 3', value: rate(steps, median(threadTimes)), unit: 'steps/s', baseline: 'the same replay on this thread', baselineValue: stepRate })

  // Runs/s end to end, durable.
  const home = await ensureHome(homePaths(join(root, 'home')))
  const store = new RunStore(home, generateKeyPair().seed)
  t = performance.now()
  for (let i = 0; i < RUNS; i++) await store.start({ pack: TRIVIAL, input: { i } as JsonObject, budget, policy, engine, tools: new Map() })
  const hereRate = rate(RUNS, performance.now() - t)
  figures.push({ name: `runs/s of a trivial pack end to end (${RUNS} runs; LevelDB log, fsync, signed checkpoint, record)`, value: hereRate, unit: 'runs/s' })
  t = performance.now()
  for (let i = 0; i < RUNS; i++) await store.start({ pack: TRIVIAL, input: { i, thread: true } as JsonObject, budget, policy, engine: threaded, tools: new Map() })
  figures.push({ name: `runs/s of the same on a run thread (${RUNS} runs, as a node runs them)`, value: rate(RUNS, performance.now() - t), unit: 'runs/s', baseline: 'on this thread', baselineValue: hereRate })
  await threads.close()
  report('bench:runs', figures, { json: args.json === true, extra: { events: trivial.events.length } })
  await store.close()
  await engine.sandboxes.close()
} finally {
  await pool.close()
  await rm(root, { recursive: true, force: true })
}
