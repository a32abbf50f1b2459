/**
 * Closing a run store with a run under way (a node stopping while it serves): the run is
 * cancelled, ends with RunCancelled RL-5007 written and sealed, and close() resolves only after.
 * (A review found that close() used to close the database under the run, which then failed
 * writing: no end event, a log that read as cut short by a crash.)
 */
import { mkdtemp } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JsonValue } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'
import { generateKeyPair } from '../../protocol/keys.ts'
import type { RunPack } from '../../packs/run/index.ts'
import type { Tool } from '../../packs/tools/index.ts'
import { ensureHome, homePaths } from '../../node/home.ts'
import { RunStore } from '../../node/runs.ts'
import { testEngine } from '../packs/helpers.ts'

const WAIT = `export function init (input) { return input }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [{ tool: 'clock.now', args: {} }] }
  return { state: s, output: e.type }
}`
const pack: RunPack = { cid: 'bafywaitpackaaaaaaa', name: 'wait', entry: 'index.js', capabilities: ['clock.now'], files: Object.freeze({ 'index.js': WAIT }) }
const POLICY = { version: 'c'.repeat(64), granted: ['clock.now'] }
const BUDGET = { fuel: 10_000, memory_bytes: 16 * 1024 * 1024, output_bytes: 65_536, tool_calls: 4, wall_ms: 30_000 }

let engine: Awaited<ReturnType<typeof testEngine>>
beforeAll(async () => { engine = await testEngine() })
afterAll(async () => { await engine.sandboxes.close() })

/** clock.now that answers only when its run's signal aborts (then it fails with the reason); `called` once it was called. */
function hanging (): { tools: Map<string, Tool>, called: Promise<void> } {
  const called = Promise.withResolvers<void>()
  const tool: Tool = {
    capability: 'clock.now',
    run: async (_args, ctx) => {
      called.resolve()
      return await new Promise<JsonValue>((_resolve, reject) => { ctx.signal.addEventListener('abort', () => { reject(ctx.signal.reason as Error) }, { once: true }) })
    }
  }
  return { tools: new Map([['clock.now', tool]]), called: called.promise }
}

describe('closing a run store with a run under way', () => {
  it('cancels the run, which ends RunCancelled RL-5007 on disk, and resolves only after', async () => {
    const home = await ensureHome(homePaths(await mkdtemp(join(os.tmpdir(), 'reach-runs-close-'))))
    const key = generateKeyPair()
    const store = new RunStore(home, key.seed)
    const { tools, called } = hanging()
    const running = store.start({ pack, input: null, budget: BUDGET, policy: POLICY, engine, tools })
    await called
    let closed = false
    const closing = store.close().then(() => { closed = true })
    const r = await running
    expect(r.outcome).toMatchObject({ status: 'cancelled', error: { code: 'RL-5007' } })
    await closing
    expect(closed).toBe(true)
    // Reopened, the run is there, ended and sealed (not left to resume).
    const again = new RunStore(home, key.seed)
    try {
      expect((await again.events(r.record.run_id)).map((e) => e.type)).toEqual(['RunStarted', 'ToolCalled', 'ToolFailed', 'RunCancelled'])
      expect(await again.record(r.record.run_id)).toMatchObject({ status: 'cancelled', error: { code: 'RL-5007' } })
      // And a run asked for after close is refused, not started on a closed database.
      await again.close()
      await expect(again.start({ pack, input: null, budget: BUDGET, policy: POLICY, engine, tools: hanging().tools })).rejects.toThrow(ReachError)
    } finally {
      await again.close()
    }
  })
})
