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
import { ensureHome, homePaths } from '../../node/home.ts'
import { RunStore } from '../../node/runs.ts'
import type { EventStore } from '../../node/store/types.ts'
import { testEngine } from '../packs/helpers.ts'

const BUDGET = { fuel: 100_000, memory_bytes: 16 << 20, output_bytes: 65536, tool_calls: 1, wall_ms: 5000 }
const PACK = { cid: 'bafyimportpackaaaa', name: 'importable', entry: 'index.js', capabilities: [], files: { 'index.js': 'export function init (n) { return n }\nexport function reduce (s) { return { state: s, output: { n: s } } }' } }
const dirs: string[] = []
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
