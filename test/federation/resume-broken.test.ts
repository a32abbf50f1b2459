/**
 * A node restarts with an unfinished run it cannot resume (its pack was removed from the data
 * dir): it starts and serves anyway, and names the run it left. Resumes run in the background,
 * once the node serves, so one that cannot go on keeps neither the others nor the node back.
 * (Run on the code before, this test fails at once: the node exits 1 before it is ready.)
 */
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { callApi } from '../../node/api-client.ts'
import { cli, newHome, startNode, stopNode, untilOutput, type MeshNode } from './cluster.ts'
import { reach } from '../node/cli/helpers.ts'

const REPORT = fileURLToPath(new URL('../../packs/examples/report', import.meta.url))
const nodes: MeshNode[] = []
const homes: string[] = []

afterAll(async () => {
  for (const n of nodes) await stopNode(n)
  for (const h of homes) await rm(h, { recursive: true, force: true })
})

describe('a restart with an unfinished run that cannot resume', () => {
  it('the node starts, serves, and names the run it could not resume', async () => {
    const home = await newHome('broken', { allow_unsigned_legacy: true, granted_capabilities: ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch'] })
    homes.push(home)
    const built = (await cli({ home }, ['pack', 'build', REPORT])).json as { cid: string }
    // Offline, the process dies right after the run's first ToolCalled is on disk: an unfinished run.
    const killed = await reach(['run', built.cid, '--input', '{"title":"x","items":[1]}'], { env: { REACH_HOME: home, REACH_FAULT: 'exit-after:ToolCalled' } })
    expect(killed.code).not.toBe(0)
    expect((await cli({ home }, ['runs', 'list'])).json.runs).toMatchObject([{ status: 'running' }])
    await rm(join(home, 'packs', `${built.cid}.pack`))
    const n = await startNode('broken', home)
    nodes.push(n)
    const [, runId] = await untilOutput(n, /cannot resume unfinished run (run_[0-9a-f]{20}): RL-\d{4}/, 'the run it could not resume', { from: 0 })
    // It serves: its control API answers, and the run is still there, unfinished.
    const status = await callApi<{ peer_id: string }>(home, 'GET', '/v1/status')
    expect(status.peer_id).toBe(n.peerId)
    const record = await callApi<{ record: { status: string } }>(home, 'GET', `/v1/runs/${runId as string}`)
    expect(record.record.status).toBe('running')
  })
})
