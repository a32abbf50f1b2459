/**
 * A run a killed node left unfinished resumes with the tools a new run gets, `reach.delegate`
 * included: real `reach node start` processes on loopback, the serving node SIGKILLed by the
 * REACH_FAULT hook right after the run's first ToolCalled is durable, then started again.
 *
 * Before the composition root, a node resumed its runs before it had a delegator, so such a
 * run's delegation failed with RL-3018 ("no host tool provides reach.delegate") after a restart.
 */
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callApi } from '../../node/api-client.ts'
import { cli, newHome, startNode, stopNode, untilOutput, type MeshNode } from './cluster.ts'

const EXAMPLES = fileURLToPath(new URL('../../packs/examples/', import.meta.url))
const FIXTURES = fileURLToPath(new URL('../fixtures/packs/', import.meta.url))
const GRANTS = ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'reach.delegate']

const nodes: MeshNode[] = []
const homes: Record<string, string> = {}
const cids: Record<string, string> = {}

async function ok (home: string, args: string[]): Promise<any> {
  const r = await cli({ home }, args)
  if (r.code !== 0 || r.json?.ok !== true) throw new Error(`reach ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
  return r.json
}

beforeAll(async () => {
  homes.a = await newHome('resume-a', { granted_capabilities: GRANTS })
  homes.b = await newHome('resume-b', { granted_capabilities: GRANTS })
  const keyPath = join(homes.a, 'publisher.key')
  await ok(homes.a, ['keygen', '--publisher', '--output', keyPath])
  const pub = JSON.parse(await readFile(keyPath, 'utf8')).public_key as string
  for (const home of Object.values(homes)) await ok(home, ['trust', 'add', pub, '--name', 'resume test publisher'])
  for (const [name, dir, home] of [['relay', `${FIXTURES}relay`, homes.a], ['counter', `${EXAMPLES}counter`, homes.a], ['counter', `${EXAMPLES}counter`, homes.b]] as const) {
    const built = await ok(home, ['pack', 'build', dir])
    cids[name] = built.cid
    await ok(home, ['pack', 'sign', built.cid, '--key', keyPath])
  }
}, 60_000)

afterAll(async () => {
  for (const n of nodes) await stopNode(n)
  for (const home of Object.values(homes)) await rm(home, { recursive: true, force: true })
})

describe('a delegating run that a killed node left unfinished', () => {
  it('resumes at the next start with reach.delegate, delegates, and replays', async () => {
    const b = await startNode('b', homes.b as string)
    nodes.push(b)
    // A dies right after the run's ToolCalled of clock.now is on disk, before the delegation.
    const dying = await startNode('a', homes.a as string, { bootstrap: [b.addr], env: { REACH_FAULT: 'exit-after:ToolCalled' } })
    const exited = new Promise<NodeJS.Signals | null>((resolve) => dying.proc.once('exit', (_code, signal) => resolve(signal)))
    const input = JSON.stringify({ pack: cids.counter, input: { numbers: [2, 3] }, peer: b.peerId })
    const killed = await cli({ home: homes.a as string }, ['run', cids.relay as string, '--input', input])
    expect(killed.code).not.toBe(0)
    expect(await exited).toBe('SIGKILL')

    const a = await startNode('a', homes.a as string, { bootstrap: [b.addr] })
    nodes.push(a)
    // Resumed in the background once the node serves.
    const [, runId, status] = await untilOutput(a, /resumed unfinished run (run_[0-9a-f]{20}): (\w+)/, 'the resumed run to end', { from: 0 })
    expect(status).toBe('completed')
    const listed = (await ok(homes.a as string, ['runs', 'list'])).runs as Array<{ run_id: string, status: string }>
    expect(listed.find((r) => r.run_id === runId)).toMatchObject({ status: 'completed' })
    // The clock was read again (idempotent), then the delegation ran after the restart: the
    // parent's output carries B's signed result, not a refusal.
    const { events } = await callApi<{ events: Array<{ type: string, payload: any }> }>(homes.a as string, 'GET', `/v1/runs/${runId}/events`)
    expect(events.map((e) => e.type)).toEqual(['RunStarted', 'ToolCalled', 'ToolResult', 'ToolCalled', 'ToolResult', 'RunCompleted'])
    expect(events[0]?.payload.lineage).toEqual({ depth: 0, ancestry: [] })
    expect(events.at(-1)?.payload.output.child).toMatchObject({ peer: b.peerId, status: 'completed', output: { count: 2, sum: 5 } })
    const served = (await ok(homes.b as string, ['runs', 'list'])).runs as Array<{ status: string, pack_name: string }>
    expect(served).toEqual([expect.objectContaining({ status: 'completed', pack_name: 'counter' })])
    // And it replays here, its delegated result checked against B's signature.
    expect((await ok(homes.a as string, ['replay', runId])).verified).toBe(true)
  })
})
