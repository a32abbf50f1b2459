/**
 * The run loop end to end: determinism, replay catching non-determinism,
 * hostile packs ending as RunFailed with their code, and crash resume with a
 * real child process killed (SIGKILL) right after ToolCalled / ToolResult.
 */
import { mkdtemp, mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JsonObject } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'
import { computeEventHash, type Event } from '../../protocol/event.ts'
import { generateKeyPair } from '../../protocol/keys.ts'
import { ArrayCursor, replayRun, type RunPack } from '../../packs/run/index.ts'
import { hostTools, type KvBackend, type Tool } from '../../packs/tools/index.ts'
import { ensureHome, homePaths } from '../../node/home.ts'
import { RunStore } from '../../node/runs.ts'
import { openStore } from '../../node/store/index.ts'
import type { EventStore } from '../../node/store/types.ts'
import { verifyChain } from '../../protocol/chain.ts'
import { reach } from '../node/cli/helpers.ts'
import { testEngine } from './helpers.ts'

const BUDGET = { fuel: 100_000, memory_bytes: 16 << 20, output_bytes: 65536, tool_calls: 10, wall_ms: 5000 }
const POLICY = { version: 'a'.repeat(64), granted: ['clock.now', 'kv.get', 'kv.put', 'random.bytes'] }

function pack (source: string, capabilities: string[] = ['clock.now', 'kv.put']): RunPack {
  return { cid: 'bafy-test-' + computeEventHash({ seq: 0, type: 'X', aggregate_id: source, timestamp: 0, payload: null, metadata: {}, prev_hash: '0'.repeat(64) }).slice(0, 16), name: 'test-pack', entry: 'index.js', capabilities, files: { 'index.js': source } }
}

// Start → clock.now → kv.put(now) → output {now, stored}
const CLOCK_PACK = `
export function init (input) { return { input } }
export function reduce (state, event) {
  if (event.type === 'Start') return { state, effects: [{ tool: 'clock.now', args: {} }] }
  if (event.type === 'ToolResult' && event.tool === 'clock.now') return { state: { ...state, now: event.result.now_ms }, effects: [{ tool: 'kv.put', args: { key: 'last', value: event.result.now_ms } }] }
  if (event.tool === 'kv.put') return { state, output: { now: state.now, stored: event.type === 'ToolResult', input: state.input } }
  return { state, output: { unexpected: event } }
}`

function memoryKv (): KvBackend & { puts: number } {
  const m = new Map<string, unknown>()
  const kv = {
    puts: 0,
    async get (ns: string, k: string) { return m.get(`${ns}/${k}`) as never },
    async put (ns: string, k: string, v: unknown) { kv.puts++; m.set(`${ns}/${k}`, v) }
  }
  return kv
}

let store: RunStore
let engine: Awaited<ReturnType<typeof testEngine>>
/** Dirs this file made, removed at the end. */
const dirs: string[] = []
async function tempDir (prefix: string): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), prefix))
  dirs.push(dir)
  return dir
}
beforeAll(async () => {
  const home = await ensureHome(homePaths(await tempDir('reach-runs-')))
  store = new RunStore(home, generateKeyPair().seed)
  engine = await testEngine()
})
afterAll(async () => {
  await store.close()
  await engine.sandboxes.close()
  await Promise.all(dirs.map(async (dir) => { await rm(dir, { recursive: true, force: true }) }))
})

async function recorded (source = CLOCK_PACK, capabilities?: string[], fuel = BUDGET.fuel): Promise<{ events: Event[], p: RunPack, runId: string }> {
  const p = pack(source, capabilities)
  const { record } = await store.start({ pack: p, input: { q: 1 }, budget: { ...BUDGET, fuel }, policy: POLICY, engine, tools: hostTools({ kv: memoryKv() }) })
  return { events: await store.events(record.run_id), p, runId: record.run_id }
}

describe('runs', () => {
  it('records the run loop: RunStarted, ToolCalled before each result, RunCompleted', async () => {
    const { events } = await recorded()
    expect(events.map((e) => e.type)).toEqual(['RunStarted', 'ToolCalled', 'ToolResult', 'ToolCalled', 'ToolResult', 'RunCompleted'])
    expect((events[1]!.payload as JsonObject).call_id).toBe('call-1')
  })

  it('100 replays of a recorded run give the same fingerprint', async () => {
    const { runId, p } = await recorded()
    const first = await store.replay(runId, p, engine)
    expect(first.verdict.ok).toBe(true)
    for (let i = 0; i < 100; i++) expect((await store.replay(runId, p, engine)).fingerprint).toBe(first.fingerprint)
    expect(first.fingerprint).toBe(first.record.fingerprint)
  })

  it('a pack changed after recording fails replay naming the seq', async () => {
    const { events, p } = await recorded()
    const changed = { ...p, files: { 'index.js': CLOCK_PACK.replace("key: 'last'", "key: 'other'") } }
    const verdict = await replayRun({ ...changed, cid: p.cid }, engine, new ArrayCursor(events))
    expect(verdict).toMatchObject({ ok: false, divergence: { seq: 3 } })
  })

  it('a log whose recorded tool call was edited fails: the chain names the seq, and a rehashed edit diverges at it', async () => {
    const { events, p, runId } = await recorded()
    const edited = structuredClone(events)
    ;(edited[3]!.payload as JsonObject).args = { key: 'evil', value: 1 }
    // Rehash the whole chain so only the replay can notice.
    for (let i = 3; i < edited.length; i++) {
      if (i > 0) edited[i]!.prev_hash = edited[i - 1]!.hash
      edited[i]!.hash = computeEventHash(edited[i]!)
    }
    const verdict = await replayRun(p, engine, new ArrayCursor(edited))
    expect(verdict).toMatchObject({ ok: false, divergence: { seq: 3 } })
    // Without rehashing, the stored chain itself is broken at that seq.
    const raw = structuredClone(events)
    ;(raw[3]!.payload as JsonObject).args = { key: 'evil', value: 1 }
    const { verifyChain } = await import('../../protocol/chain.ts')
    expect(verifyChain(raw)).toMatchObject({ ok: false, seq: 3, code: 'RL-2001' })
    expect((await store.replay(runId, p, engine)).verdict.ok).toBe(true)
  })

  it('the policy gate denies undeclared and ungranted capabilities and a spent budget, in that order', async () => {
    const src = `
export function init () { return { n: 0 } }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [{ tool: 'kv.get', args: { key: 'a' } }, { tool: 'http.fetch', args: { url: 'http://x' } }, { tool: 'clock.now', args: {} }, { tool: 'clock.now', args: {} }] }
  const n = s.n + 1
  const seen = [...(s.seen ?? []), e.type + ':' + (e.error ? e.error.code : 'ok')]
  return n === 4 ? { state: s, output: seen } : { state: { n, seen } }
}`
    const p = pack(src, ['http.fetch', 'clock.now'])
    const { record, outcome } = await store.start({ pack: p, input: null, budget: { ...BUDGET, tool_calls: 1 }, policy: POLICY, engine, tools: hostTools({ kv: memoryKv() }) })
    expect(record.status).toBe('completed')
    expect(outcome.output).toEqual(['ToolDenied:RL-3015', 'ToolDenied:RL-3009', 'ToolResult:ok', 'ToolDenied:RL-3016'])
    expect((await store.replay(record.run_id, p, engine)).verdict.ok).toBe(true)
  })

  it('a hostile pack ends as RunFailed with its code, replays the same, and the next run works', async () => {
    const { events, runId, p } = await recorded('export function init () { for (;;) {} }\nexport function reduce (s) { return { state: s } }', undefined, 1000)
    expect(events.at(-1)).toMatchObject({ type: 'RunFailed', payload: { error: { code: 'RL-3101' } } })
    expect((await store.replay(runId, p, engine)).verdict.ok).toBe(true)
    expect((await recorded()).events.at(-1)!.type).toBe('RunCompleted')
  })
})

describe('run store', () => {
  it('a lost record and checkpoint are rebuilt from the log, byte for byte (they are written without fsync)', async () => {
    const { runId } = await recorded()
    const text = await store.checkpointText(runId)
    const record = await store.record(runId)
    const db = await store['database']()
    const sealed = await db.sealed.get(runId)
    expect(sealed, 'no seal for the run').toBeTypeOf('string')
    expect(JSON.parse(sealed as string)).toMatchObject({ record: { run_id: runId }, checkpoint: text })
    await db.sealed.del(runId)
    expect(await db.sealed.get(runId)).toBeUndefined()
    expect(await store.checkpointText(runId)).toBe(text)
    expect(await store.record(runId)).toEqual(record)
  })

  it('with spare logs open ahead of time: runs use them, list shows only runs, the spares leave nothing behind', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-spares-')))
    const spared = new RunStore(home, generateKeyPair().seed, { spares: 2 })
    const p = pack(CLOCK_PACK)
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push((await spared.start({ pack: p, input: { i }, budget: BUDGET, policy: POLICY, engine, tools: hostTools({ kv: memoryKv() }) })).record.run_id)
    expect(new Set(ids).size).toBe(3)
    expect((await spared.list()).map((r) => r.run_id).sort()).toEqual([...ids].sort())
    await spared.close()
    const again = new RunStore(home, generateKeyPair().seed)
    expect((await again.list()).map((r) => r.run_id).sort()).toEqual([...ids].sort())
    for (const id of ids) expect((await again.replay(id, p, engine)).verdict.ok).toBe(true)
    await again.close()
  })
})

describe('a run whose log write fails', () => {
  /** A RunStore whose run logs refuse their `failAt`-th write (counting from 1), as a full disk would. */
  async function failingStore (failAt: number): Promise<RunStore> {
    const home = await ensureHome(homePaths(await tempDir('reach-failing-')))
    return new RunStore(home, generateKeyPair().seed, {
      openLog: async (open) => {
        const inner = await open()
        let writes = 0
        return new Proxy(inner, {
          get (target, key) {
            if (key === 'appendBatch') {
              return async (events: Event[]) => {
                if (++writes === failAt) throw new ReachError('RL-5002', { message: 'disk full (test)' })
                await target.appendBatch(events)
              }
            }
            const value = Reflect.get(target, key) as unknown
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
          }
        }) as EventStore
      }
    })
  }

  const TRIVIAL = 'export function init () { return 0 }\nexport function reduce (s) { return { state: s, output: { done: true } } }'

  // A failed ToolResult write is recorded as that tool failing (ToolFailed, RL-5002): the pack
  // sees the failure and goes on, as it would for any tool error.
  for (const [name, source, failAt, ends] of [['its first write (RunStarted with the first ToolCalled)', CLOCK_PACK, 1, 'RunFailed'], ['its last write (RunStarted with RunCompleted)', TRIVIAL, 1, 'RunFailed'], ['a later write (a ToolResult)', CLOCK_PACK, 2, 'RunCompleted']] as const) {
    it(`fails at ${name}: it ends ${ends} with RunStarted still first, the chain whole, and the error recorded`, async () => {
      // A rejection nobody handles (say the failed write's, left behind by the run) is caught here.
      const unhandled: unknown[] = []
      const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
      process.on('unhandledRejection', onUnhandled)
      try {
        const failing = await failingStore(failAt)
        const { record, outcome } = await failing.start({ pack: pack(source), input: { n: 1 }, budget: BUDGET, policy: POLICY, engine, tools: hostTools({ kv: memoryKv() }) })
        const events = await failing.events(record.run_id)
        expect(events[0]?.type).toBe('RunStarted')
        expect(events.at(-1)?.type).toBe(ends)
        expect(events.some((e) => ((e.payload as JsonObject).error as JsonObject | undefined)?.code === 'RL-5002')).toBe(true)
        expect(verifyChain(events).ok).toBe(true)
        expect(events.map((e) => e.type)).toEqual(outcome.events.map((e) => e.type))
        // What was sealed is what is on disk.
        expect(await failing.record(record.run_id)).toEqual(record)
        await failing.close()
        // Node reports a rejection left unhandled at the end of the event-loop turn it happened
        // in: after one more turn, any the run or the close left has been reported.
        await new Promise((resolve) => setImmediate(resolve))
      } finally {
        process.off('unhandledRejection', onUnhandled)
      }
      expect(unhandled).toEqual([])
    })
  }
})

describe('cancellation', () => {
  /** A tool that says it was called, then waits until the run is cancelled and fails with the abort reason. */
  function waiter (): { tool: Tool, called: Promise<void> } {
    const called = Promise.withResolvers<void>()
    const tool: Tool = {
      capability: 'clock.now',
      run: async (_a, ctx) => {
        called.resolve()
        return await new Promise<never>((_resolve, reject) => { ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true }) })
      }
    }
    return { tool, called: called.promise }
  }

  it('an abort during a tool call ends the run with RunCancelled after the recorded ToolFailed, and it replays', async () => {
    const p = pack(CLOCK_PACK)
    const abort = new AbortController()
    const { tool, called } = waiter()
    const tools = new Map([['clock.now', tool]])
    const running = store.start({ pack: p, input: { q: 1 }, budget: BUDGET, policy: POLICY, engine, tools, signal: abort.signal })
    // The run is in its tool call (or it ended without making one, which fails here).
    await Promise.race([called, running.then(() => { throw new Error('the run ended before its tool call') })])
    abort.abort(new ReachError('RL-4015', { message: 'cancelled by the test' }))
    const { record, outcome } = await running
    expect(outcome.status).toBe('cancelled')
    expect(record).toMatchObject({ status: 'cancelled', error: { code: 'RL-4015' } })
    const events = await store.events(record.run_id)
    expect(events.map((e) => e.type)).toEqual(['RunStarted', 'ToolCalled', 'ToolFailed', 'RunCancelled'])
    const replay = await store.replay(record.run_id, p, engine)
    expect(replay.verdict.ok).toBe(true)
    expect(replay.fingerprint).toBe(record.fingerprint)
  })

  it('a run cancelled before it starts records RunCancelled right after RunStarted; a replay that goes past it diverges', async () => {
    const p = pack(CLOCK_PACK)
    const abort = new AbortController()
    abort.abort(new ReachError('RL-4015', { message: 'cancelled early' }))
    const { record } = await store.start({ pack: p, input: { q: 1 }, budget: BUDGET, policy: POLICY, engine, tools: hostTools({ kv: memoryKv() }), signal: abort.signal })
    const events = await store.events(record.run_id)
    expect(events.map((e) => e.type)).toEqual(['RunStarted', 'RunCancelled'])
    // The record without its RunCancelled: replay goes on past the end and says so.
    const verdict = await replayRun(p, engine, new ArrayCursor(events.slice(0, 1)))
    expect(verdict.ok).toBe(false)
  })
})

describe('crash resume (real child process, SIGKILL)', () => {
  let home: string
  let dir: string
  beforeAll(async () => {
    home = await tempDir('reach-crash-home-')
    dir = join(home, 'clock-pack')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'index.js'), CLOCK_PACK)
    await writeFile(join(dir, 'reach-pack.json'), JSON.stringify({ name: 'clock', version: '1.0.0', description: 'crash test', entry: 'index.js', capabilities: ['clock.now', 'kv.put'], engine: '^1.0.0', budget: BUDGET }))
    // Unsigned packs only with the explicit legacy override: this is a test fixture folder.
    await writeFile(join(home, 'policy.json'), JSON.stringify({ version: 1, allow_unsigned_legacy: true }))
  })

  /** The run's events, read the way another process would: the run database is let go after. */
  async function eventsOf (runId: string): Promise<Event[]> {
    const runs = new RunStore(homePaths(home), undefined)
    try {
      return await runs.events(runId)
    } finally {
      await runs.close()
    }
  }

  for (const after of ['ToolCalled', 'ToolResult']) {
    it(`killed after the first ${after}: resumes, and no tool whose result was recorded runs again`, async () => {
      const env = { REACH_HOME: home }
      const killed = await reach(['run', dir, '--input', '{"n":1}'], { env: { ...env, REACH_FAULT: `exit-after:${after}` } })
      expect(killed.code).not.toBe(0)
      const listed = await reach(['runs', 'list', '--json'], { env })
      const open = listed.json.runs.filter((r: { status: string }) => r.status === 'running')
      expect(open).toHaveLength(1)
      const runId = open[0].run_id as string
      const before = await eventsOf(runId)
      expect(before.at(-1)!.type).toBe(after)

      const resumed = await reach(['runs', 'resume', '--json'], { env })
      expect(resumed.json.resumed).toEqual([expect.objectContaining({ run_id: runId, status: 'completed' })])
      const events = await eventsOf(runId)
      const calls = events.filter((e) => e.type === 'ToolCalled').map((e) => (e.payload as JsonObject).call_id)
      const results = events.filter((e) => e.type === 'ToolResult').map((e) => (e.payload as JsonObject).call_id)
      expect(calls).toEqual(['call-1', 'call-3'])
      expect(results).toEqual(['call-1', 'call-3'])
      if (after === 'ToolResult') {
        // The clock reading recorded before the kill is the one the run used.
        expect(events[2]).toEqual(before[2])
        expect((events.at(-1)!.payload as JsonObject).output).toMatchObject({ now: ((before[2]!.payload as JsonObject).result as JsonObject).now_ms })
      }
      expect((await reach(['replay', runId, '--json'], { env })).json.verified).toBe(true)
    })
  }
})
