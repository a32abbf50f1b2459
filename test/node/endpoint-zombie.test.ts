/**
 * A daemon killed with SIGKILL stays a zombie until its parent reaps it (under a slow init, for
 * seconds): its pid still answers kill(pid, 0). Its endpoint file must read as a node that has
 * exited, or `reach node start` right after is refused with RL-6005 for a node that is gone.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, readFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { readEndpoint, writeEndpoint } from '../../node/api-client.ts'
import { isReachError } from '../../protocol/errors.ts'

describe.skipIf(process.platform !== 'linux')('an endpoint file naming a zombie', () => {
  it('reads as a node that has exited (RL-6002), though kill(pid, 0) still finds the pid', async () => {
    // `sleep 0` ends at once; its parent becomes `sleep 5` (exec), which never reaps it.
    const holder = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] })
    try {
      const pid = Number((await new Promise<string>((resolve) => { holder.stdout.once('data', (d: Buffer) => { resolve(d.toString()) }) })).trim())
      // Until it has exited, it is not yet a zombie: wait for its state to say so.
      for (;;) {
        const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
        if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) break
        await new Promise((resolve) => setImmediate(resolve))
      }
      expect(() => process.kill(pid, 0)).not.toThrow()
      const home = await mkdtemp(join(os.tmpdir(), 'reach-zombie-'))
      await writeEndpoint(home, { version: 1, pid, api: 'http://127.0.0.1:1', peer_id: 'x', addrs: [], federation: 'default', started_at: new Date(0).toISOString() })
      const err = await readEndpoint(home).then(() => undefined, (e: unknown) => e)
      expect(isReachError(err, 'RL-6002')).toBe(true)
      expect((err as Error).message).toMatch(/has exited/)
    } finally {
      holder.kill()
    }
  })
})
