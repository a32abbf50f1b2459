import { mkdtemp, readFile, stat } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { reach } from './helpers.ts'

describe('reach init (node identity)', () => {
  it('creates the identity (peer id = the Ed25519 key), config and API token, and keeps them on a second init', async () => {
    const home = await mkdtemp(join(os.tmpdir(), 'reach-init-'))
    const env = { REACH_HOME: home }
    const first = await reach(['init', '--federation', 'lab', '--json'], { env })
    expect(first.code).toBe(0)
    expect(first.json.peer_id).toMatch(/^12D3KooW/)
    expect(first.json.public_key).toMatch(/^z6Mk/)
    expect(JSON.parse(await readFile(join(home, 'config.json'), 'utf8'))).toMatchObject({ version: 1, federation: 'lab', bootstrap: [] })
    for (const file of ['keys/node.key', 'api.token', 'config.json']) expect((await stat(join(home, file))).mode & 0o077).toBe(0)
    const again = await reach(['init', '--json'], { env })
    expect(again.json.peer_id).toBe(first.json.peer_id)
    expect(again.json.config.federation).toBe('lab')
    const bad = await reach(['init', '--federation', 'no spaces allowed', '--json'], { env })
    expect(bad.code).toBe(2)
    expect(bad.json.error.code).toBe('RL-1012')
  })
})
