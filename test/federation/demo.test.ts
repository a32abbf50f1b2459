import { mkdtemp } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { reach } from '../node/cli/helpers.ts'

describe('reach demo --mesh', () => {
  it('zero-config: three nodes publish, fetch through the DHT, delegate and verify the remote run', async () => {
    const r = await reach(['demo', '--mesh', '--json'], { env: { REACH_HOME: await mkdtemp(join(os.tmpdir(), 'reach-demo-mesh-home-')) } })
    expect(r.code).toBe(0)
    expect(r.json).toMatchObject({ ok: true, verified: true, delegation: { status: 'completed', output: { count: 8, sum: 31 } } })
    expect(r.json.fetched_from).toBe(r.json.nodes[0])
    expect(r.json.delegation.peer).toBe(r.json.nodes[1])
  }, 60_000)
})
