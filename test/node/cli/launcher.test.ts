/**
 * `./reach`, the checkout's launcher, run for real in child processes: the version it prints is
 * package.json's (the one node/version.ts reports), and without `npm install` it says so in one
 * line and exits 2. Timing is `npm run bench:start`'s job, not this file's.
 */
import { execFile } from 'node:child_process'
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const LAUNCHER = fileURLToPath(new URL('../../../reach', import.meta.url))
const PKG = fileURLToPath(new URL('../../../package.json', import.meta.url))

interface Ran { code: number, stdout: string, stderr: string }

function run (file: string, args: string[]): Promise<Ran> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') reject(err)
      else resolve({ code: err === null ? 0 : err.code as number, stdout, stderr })
    })
  })
}

let dir: string
beforeAll(async () => { dir = await mkdtemp(join(os.tmpdir(), 'reach-launcher-')) })
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('./reach', () => {
  it('prints the package.json version and exits 0', async () => {
    const { version } = JSON.parse(await readFile(PKG, 'utf8'))
    const r = await run(LAUNCHER, ['--version'])
    expect(r).toEqual({ code: 0, stdout: `${version as string}\n`, stderr: '' })
    // With a second argument bin.js leaves --version to the CLI (commander, node/version.ts's VERSION).
    expect(await run(LAUNCHER, ['--version', '--json'])).toEqual({ code: 0, stdout: `${version as string}\n`, stderr: '' })
  })

  it('answers --version as the CLI does when it loads (commander, from node/version.ts)', async () => {
    const fast = await run(LAUNCHER, ['-V'])
    const full = await run(LAUNCHER, ['--version', '--json'])
    expect(full.code).toBe(0)
    expect(fast.stdout).toBe(full.stdout)
  })

  it('runs commands through a symlink to it (as from ~/bin)', async () => {
    const link = join(dir, 'reach-link')
    await symlink(LAUNCHER, link)
    const r = await run(link, ['errors', '--json'])
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, codes: { 'RL-1001': expect.any(String) } })
  })

  it('without npm install: one line naming npm install, exit 2', async () => {
    const bare = join(dir, 'bare')
    await mkdir(bare)
    await copyFile(LAUNCHER, join(bare, 'reach'))
    await chmod(join(bare, 'reach'), 0o755)
    const r = await run(join(bare, 'reach'), ['--version'])
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr.endsWith('\n')).toBe(true)
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1)
    expect(r.stderr).toMatch(/^error RL-1001: .*npm install/)
    expect(r.stderr).toContain(bare)
  })
})
