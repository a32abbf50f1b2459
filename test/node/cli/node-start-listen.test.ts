/**
 * `reach node start --listen …` listens where the flag says: the config's own listen addresses
 * are neither probed for a free port nor rewritten (pinListenPorts runs only without the flag).
 * Through the real `reach` executable.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { reach } from './helpers.ts'

/** A TEST-NET-1 address (RFC 5737): no interface has it, so no port on it can be pinned. */
const UNBINDABLE = '/ip4/192.0.2.1/tcp/0'

let busy: Server
beforeAll(async () => {
  busy = createServer()
  await new Promise<void>((resolve) => busy.listen({ host: '127.0.0.1', port: 0 }, resolve))
})
afterAll(async () => { await new Promise((resolve) => busy.close(resolve)) })

describe('reach node start --listen', () => {
  it('does not pin or rewrite the config\'s listen addresses', async () => {
    const root = join(await mkdtemp(join(os.tmpdir(), 'reach-listen-')), 'home')
    const env = { REACH_HOME: root }
    expect((await reach(['init'], { env })).code).toBe(0)
    const config = join(root, 'config.json')
    const written = JSON.stringify({ ...JSON.parse(await readFile(config, 'utf8')), listen: [UNBINDABLE] })
    await writeFile(config, written)
    // Negative control: without the flag the config's address is pinned, and cannot be.
    const pinned = await reach(['node', 'start', '--json'], { env })
    expect(pinned.json.error).toMatchObject({ code: 'RL-1013', message: expect.stringContaining('cannot find a free port on 192.0.2.1') })

    // With the flag it gets as far as listening where the flag says (a port in use here, so it stops there).
    const port = (busy.address() as { port: number }).port
    const r = await reach(['node', 'start', '--listen', `/ip4/127.0.0.1/tcp/${port}`, '--json'], { env })
    expect(r.code).toBe(2)
    expect(r.json.error).toMatchObject({ code: 'RL-1013', message: `listening on /ip4/127.0.0.1/tcp/${port}: the address is already in use (EADDRINUSE)` })
    expect(await readFile(config, 'utf8')).toBe(written)
  })
})
