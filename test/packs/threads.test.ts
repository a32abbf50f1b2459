/**
 * Runs on worker threads (packs/run/threads.ts): the run loop runs there with its own sandboxes,
 * events are made durable and tools called on this thread. A pack burning CPU in a step then
 * leaves this thread free, and a cancel cuts the step: the run ends RunCancelled, as if the
 * cancel had come just before that step, and its replay verifies. The negative control runs the
 * same pack on this thread: nothing here runs until the step ends, so the cancel comes too late
 * and the run burns its whole fuel (RL-3101).
 */
import { mkdtemp } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JsonValue } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'
import { generateKeyPair } from '../../protocol/keys.ts'
import { headOf, nextEvent, type Event } from '../../protocol/event.ts'
import { ArrayCursor, RunThreads, executeRun, replayRun, type Engine, type RunOutcome, type RunPack, type RunSink, type RunStart } from '../../packs/run/index.ts'
import type { Tool } from '../../packs/tools/index.ts'
import { ensureHome, homePaths } from '../../node/home.ts'
import { RunStore } from '../../node/runs.ts'
import { testEngine } from './helpers.ts'

/** One clock.now, then (on its answer) a loop that only fuel or a cancel ends. */
const SPIN = `
export function init (input) { return input }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [{ tool: 'clock.now', args: {} }] }
  let x = 0
  for (;;) x++
}`
const COUNTER = `
export function init (n) { return { n, seen: 0 } }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: Array.from({ length: s.n }, () => ({ tool: 'clock.now', args: {} })) }
  const seen = s.seen + 1
  return seen === s.n ? { state: s, output: { seen } } : { state: { ...s, seen } }
}`
const pack = (name: string, source: string): RunPack => ({ cid: `bafy${name}packaaaaaaaa`, name, entry: 'index.js', capabilities: ['clock.now'], files: Object.freeze({ 'index.js': source }) })
const spin = pack('spin', SPIN)
const counter = pack('counter', COUNTER)
const POLICY = { version: 'c'.repeat(64), granted: ['clock.now'] }
/** Enough fuel that a loop runs a good while on this thread (about 20 M poll points), no wall clock in the way. */
const BUDGET = { fuel: 2_000, memory_bytes: 16 * 1024 * 1024, output_bytes: 65_536, tool_calls: 16, wall_ms: 60_000 }

let local: Engine & { sandboxes: { close: () => Promise<void> } }
let threads: RunThreads
let threaded: Engine
let store: RunStore

beforeAll(async () => {
  local = await testEngine()
  threads = new RunThreads(local, { size: 2 })
  threaded = { ...local, threads }
  store = new RunStore(await ensureHome(homePaths(await mkdtemp(join(os.tmpdir(), 'reach-threads-')))), generateKeyPair().seed)
})
afterAll(async () => {
  await store.close()
  await threads.close()
  await local.sandboxes.close()
})

/** clock.now with a fixed answer; `called` resolves at its first call. */
function clock (): { tools: Map<string, Tool>, called: Promise<void> } {
  const called = Promise.withResolvers<void>()
  const tool: Tool = { capability: 'clock.now', run: async () => { called.resolve(); return { now_ms: 1_700_000_000_000 } as JsonValue } }
  return { tools: new Map([['clock.now', tool]]), called: called.promise }
}

/** A sink in memory: each append is durable at once (no I/O), so nothing waits between a tool's answer and the next step. */
function memorySink (): RunSink & { events: Event[] } {
  const events: Event[] = []
  return {
    events,
    append: async (draft) => {
      const last = events.at(-1)
      const e = nextEvent(last === undefined ? null : headOf(last), draft)
      events.push(e)
      return e
    }
  }
}

const START: RunStart = { pack: spin, input: null, budget: BUDGET, policy: POLICY, nonce: 'f'.repeat(32) }

/**
 * Start SPIN and cancel it on the next turn of this thread's event loop after its clock.now was
 * called: with a sink in memory, the answer, its ToolResult and the looping step follow the call
 * with no turn between them, so on this thread the cancel can only come once the step has ended.
 */
async function spinThenCancel (engine: Engine): Promise<RunOutcome> {
  const abort = new AbortController()
  const { tools, called } = clock()
  void called.then(() => { setImmediate(() => { abort.abort(new ReachError('RL-4015', { message: 'cancelled by the test' })) }) })
  return await executeRun(START, engine, memorySink(), tools, abort.signal)
}

describe('runs on worker threads', () => {
  it('a run on a thread records the same log a run here does, and replays on either', async () => {
    const here = await store.start({ pack: counter, input: 3, budget: BUDGET, policy: POLICY, engine: local, tools: clock().tools })
    const there = await store.start({ pack: counter, input: 3, budget: BUDGET, policy: POLICY, engine: threaded, tools: clock().tools })
    expect(there.outcome).toMatchObject({ status: 'completed', output: { seen: 3 }, fuel_used: here.outcome.fuel_used })
    expect(there.outcome.events.map((e) => [e.type, e.payload]).slice(1)).toEqual(here.outcome.events.map((e) => [e.type, e.payload]).slice(1))
    // The durable log is what the outcome says (the thread's events are this thread's writes).
    expect((await store.events(there.record.run_id)).map((e) => e.hash)).toEqual(there.outcome.events.map((e) => e.hash))
    for (const engine of [local, threaded]) {
      expect(await replayRun(counter, engine, new ArrayCursor(there.outcome.events))).toMatchObject({ ok: true, outcome: { output: { seen: 3 } } })
    }
  })

  it('a thread replays a forged log as this thread does: the same divergence', async () => {
    const run = await store.start({ pack: counter, input: 2, budget: BUDGET, policy: POLICY, engine: local, tools: clock().tools })
    const events = run.outcome.events.map((e) => e.type === 'RunCompleted' ? { ...e, payload: { ...(e.payload as object), output: { seen: 99 } } } : e)
    const here = await replayRun(counter, local, new ArrayCursor(events))
    const there = await replayRun(counter, threaded, new ArrayCursor(events))
    expect(here.ok).toBe(false)
    expect(there).toEqual(here)
  })

  it('a CPU-bound step is cut by a cancel: RunCancelled with the fuel before the step, and the log replays', async () => {
    const r = await spinThenCancel(threaded)
    expect(r).toMatchObject({ status: 'cancelled', error: { code: 'RL-4015', message: 'cancelled by the test' } })
    const end = r.events.at(-1)
    expect(end?.type).toBe('RunCancelled')
    // Cut before it could burn its budget: the fuel is that before the looping step.
    expect((end?.payload as { fuel_used: number }).fuel_used).toBeLessThan(BUDGET.fuel)
    expect(r.fuel_used).toBe((end?.payload as { fuel_used: number }).fuel_used)
    const replayed = await replayRun(spin, threaded, new ArrayCursor(r.events))
    expect(replayed).toMatchObject({ ok: true, outcome: { status: 'cancelled' } })
    expect(await replayRun(spin, local, new ArrayCursor(r.events))).toEqual(replayed)
  }, 60_000)

  it('negative control: on this thread the cancel cannot come until the step ends, and the loop burns all its fuel', async () => {
    const r = await spinThenCancel(local)
    expect(r).toMatchObject({ status: 'failed', error: { code: 'RL-3101' } })
  }, 60_000)

  it('the pool grows to its size and no further; jobs go to the least busy thread', async () => {
    const small = new RunThreads(local, { size: 1 })
    try {
      const engine = { ...local, threads: small }
      const runs = [1, 2, 3].map(async (n) => await executeRun({ pack: counter, input: n, budget: BUDGET, policy: POLICY, nonce: 'e'.repeat(32) }, engine, memorySink(), clock().tools))
      expect(small.load()).toEqual([3])
      expect((await Promise.all(runs)).map((r) => r.output)).toEqual([{ seen: 1 }, { seen: 2 }, { seen: 3 }])
      expect(small.load()).toEqual([0])
    } finally {
      await small.close()
    }
    expect(() => new RunThreads(local, { size: 0 })).toThrow(/positive integer/)
  })
})
