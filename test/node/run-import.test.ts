/**
 * An imported run (`reach import`) is its log and its origin's signed checkpoint: both go in one
 * synced write of the run database, so a failure leaves both or neither. (Before, the seal went
 * first and the log after: a failure between them left a seal with no run.)
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ReachError, isReachError } from '../../protocol/errors.ts'
import type { Event } from '../../protocol/event.ts'
import { generateKeyPair } from '../../protocol/keys.ts'
import { ArrayCursor, replayRun } from '../../packs/run/index.ts'
import { hostTools } from '../../packs/tools/index.ts'
import { ensureHome, homePaths } from '../../node/home.ts'
import { RunStore } from '../../node/runs.ts'
import type { EventStore } from '../../node/store/types.ts'
import { testEngine } from '../packs/helpers.ts'

const BUDGET = { fuel: 100_000, memory_bytes: 16 << 20, output_bytes: 65536, tool_calls: 1, wall_ms: 5000 }
const PACK = { cid: 'bafyimportpackaaaa', name: 'importable', entry: 'index.js', capabilities: [], files: { 'index.js': 'export function init (n) { return n }\nexport function reduce (s) { return { state: s, output: { n: s } } }' } }
const dirs: string[] = []
const POLICY_A = { version: 'a'.repeat(64), granted: ['clock.now'] }
const BUDGET_2 = { ...BUDGET, tool_calls: 2 }
/** Two clock readings, then the output. */
const CLOCKED = { cid: 'bafyclockedpackaaa', name: 'clocked', entry: 'index.js', capabilities: ['clock.now'], files: { 'index.js': "export function init (n) { return { n, seen: 0 } }\nexport function reduce (s, e) {\n  if (e.type === 'Start') return { state: s, effects: [{ tool: 'clock.now', args: {} }] }\n  if (s.seen === 0) return { state: { ...s, seen: 1 }, effects: [{ tool: 'clock.now', args: {} }] }\n  return { state: s, output: { n: s.n } }\n}" } }
let engine: Awaited<ReturnType<typeof testEngine>>

async function store (options: ConstructorParameters<typeof RunStore>[2] = {}): Promise<RunStore> {
  const root = await mkdtemp(join(os.tmpdir(), 'reach-import-'))
  dirs.push(root)
  return new RunStore(await ensureHome(homePaths(root)), generateKeyPair().seed, options)
}

beforeAll(async () => { engine = await testEngine() })
afterAll(async () => {
  await engine.sandboxes.close()
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

/** A finished run made elsewhere: its events, record and the origin's checkpoint text. */
async function exported (): Promise<{ runId: string, events: Event[], record: Awaited<ReturnType<RunStore['record']>>, checkpoint: string }> {
  const origin = await store()
  const { record, checkpointText } = await origin.start({ pack: PACK, input: 7, budget: BUDGET, policy: { version: 'a'.repeat(64), granted: [] }, engine, tools: new Map() })
  const events = await origin.events(record.run_id)
  await origin.close()
  return { runId: record.run_id, events, record, checkpoint: checkpointText }
}

describe('importing a run', () => {
  it('writes its log and its origin\'s seal together: the run reads back with the origin\'s checkpoint', async () => {
    const run = await exported()
    const here = await store()
    await here.importRun(run.runId, run.events, run.record, run.checkpoint)
    expect(await here.checkpointText(run.runId)).toBe(run.checkpoint)
    expect((await here.events(run.runId)).map((e) => e.hash)).toEqual(run.events.map((e) => e.hash))
    expect(await here.importRun(run.runId, run.events, run.record, run.checkpoint).then(() => 'imported', (e: unknown) => isReachError(e) ? e.code : String(e))).toBe('RL-1008')
    await here.close()
  })

  it('a write that fails leaves neither the log nor the seal (and the run can be imported again)', async () => {
    const run = await exported()
    let fail = true
    const here = await store({
      openLog: async (open) => {
        const inner = await open()
        return new Proxy(inner, {
          get (target, key) {
            if (key === 'appendBatchWith' && fail) return async () => { throw new ReachError('RL-5009', { message: 'disk gone (test)' }) }
            const value = Reflect.get(target, key) as unknown
            return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
          }
        }) as EventStore
      }
    })
    const code = await here.importRun(run.runId, run.events, run.record, run.checkpoint).then(() => 'imported', (e: unknown) => isReachError(e) ? e.code : String(e))
    expect(code).toBe('RL-5009')
    const db = await here['database']()
    expect(await db.sealed.get(run.runId)).toBeUndefined()
    expect(await db.heads.get(run.runId)).toBeUndefined()
    expect(await here.has(run.runId)).toBe(false)
    fail = false
    await here.importRun(run.runId, run.events, run.record, run.checkpoint)
    expect(await here.checkpointText(run.runId)).toBe(run.checkpoint)
    await here.close()
  })
})

describe('resuming a run under a policy it did not start with', () => {
  /** A run's first `k` events written as a killed node leaves them: a log with no end. */
  async function unfinished (k: number): Promise<{ store: RunStore, runId: string, events: Event[] }> {
    const origin = await store()
    const { record } = await origin.start({ pack: CLOCKED, input: 3, budget: BUDGET_2, policy: POLICY_A, engine, tools: hostTools({ kv: { get: async () => undefined, put: async () => {} } }) })
    const events = await origin.events(record.run_id)
    await origin.close()
    const here = await store()
    const db = await here['database']()
    const { LevelEventStore } = await import('../../node/store/level.ts')
    const log = LevelEventStore.within(db, record.run_id)
    await log.open({ create: true })
    await log.appendBatch(events.slice(0, k))
    await log.close()
    return { store: here, runId: record.run_id, events: events.slice(0, k) }
  }

  it('ends RunCancelled RL-3022 where its record ends, and the whole log still replays', async () => {
    const { store: here, runId } = await unfinished(3)
    const r = await here.resume(runId, CLOCKED, engine, { version: 'b'.repeat(64), granted: ['clock.now'] }, () => hostTools({ kv: { get: async () => undefined, put: async () => {} } }))
    expect(r.outcome).toMatchObject({ status: 'cancelled', error: { code: 'RL-3022' } })
    const events = await here.events(runId)
    expect(events.map((e) => e.type)).toEqual(['RunStarted', 'ToolCalled', 'ToolResult', 'RunCancelled'])
    expect((await replayRun(CLOCKED, engine, new ArrayCursor(events))).ok).toBe(true)
    await here.close()
  })

  it('under the policy it started with, it goes on to the end (the control)', async () => {
    const { store: here, runId } = await unfinished(3)
    const r = await here.resume(runId, CLOCKED, engine, POLICY_A, () => hostTools({ kv: { get: async () => undefined, put: async () => {} } }))
    expect(r.outcome.status).toBe('completed')
    expect((await here.events(runId)).at(-1)?.type).toBe('RunCompleted')
    await here.close()
  })
})
