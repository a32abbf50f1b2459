/**
 * Storage that refuses, through the `reach` executable: a data dir and logs on a read-only file
 * system, a log on a full one, a LevelDB log another process holds.
 *
 *   refused writes (EROFS, ENOSPC …) are one line `error RL-5010: …`, exit 1, no stack, and one
 *   JSON object with the code under --json; never RL-1001 ("unknown command") or RL-5009;
 *   a locked log is RL-5008 (exit 3) from `reach verify`, never "Hash chain INVALID".
 *
 * The tests run as root, where chmod does not stop a write (a control below shows it), so the
 * read-only data dir is a read-only bind mount of a temp dir and the full disk a small tmpfs;
 * where `mount` is not permitted those tests are skipped.
 */
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmdirSync } from 'node:fs'
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { reach, type CliResult } from './helpers.ts'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
const COUNTER = join(ROOT, 'packs', 'examples', 'counter')

function mount (args: string[]): void {
  execFileSync('mount', args, { stdio: 'ignore' })
}

/** Whether this process may make a read-only bind mount (root, with mount permitted): tried once on a scratch dir. */
const canMount = ((): boolean => {
  const probe = mkdtempSync(join(os.tmpdir(), 'reach-mount-probe-'))
  try {
    mount(['--bind', probe, probe])
    try {
      mount(['-o', 'remount,bind,ro', probe])
      try {
        mkdirSync(join(probe, 'x'))
        return false // mounted, but still writable: this is no test of a read-only disk
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'EROFS'
      }
    } finally {
      execFileSync('umount', [probe], { stdio: 'ignore' })
    }
  } catch {
    return false
  } finally {
    rmdirSync(probe)
  }
})()

let dir: string
const mounted: string[] = []

async function unmount (path: string): Promise<void> {
  const at = mounted.indexOf(path)
  if (at < 0) return
  execFileSync('umount', [path], { stdio: 'ignore' })
  mounted.splice(at, 1)
}

beforeAll(async () => {
  dir = await mkdtemp(join(os.tmpdir(), 'reach-storage-'))
})

afterAll(async () => {
  for (const path of [...mounted].reverse()) await unmount(path)
  await rm(dir, { recursive: true, force: true })
})

/** `reach args` as a person runs it, and again with --json: both must be one refusal with `code`. */
async function refusedBoth (args: string[], env: NodeJS.ProcessEnv, code: string, exit: number): Promise<{ human: CliResult, json: CliResult }> {
  const human = await reach(args, { env })
  const json = await reach([...args, '--json'], { env })
  const what = `reach ${args.join(' ')}: ${human.stdout}${human.stderr}`
  expect(human.code, what).toBe(exit)
  expect(human.stdout, what).toBe('')
  // One line, no stack trace.
  expect(human.stderr, what).toMatch(new RegExp(`^error ${code}: [^\\n]+\\n$`))
  expect(json.code, what).toBe(exit)
  expect(json.json).toMatchObject({ ok: false, error: { code } })
  expect(json.stderr, what).not.toMatch(/\n\s+at /)
  return { human, json }
}

describe('a read-only data dir and log dir', () => {
  let ro: string
  let home: string
  let logs: string
  let publisherKey: string
  const env = (): NodeJS.ProcessEnv => ({ REACH_HOME: home })

  beforeAll(async () => {
    if (!canMount) return
    ro = join(dir, 'ro')
    home = join(ro, 'home')
    logs = join(ro, 'logs')
    publisherKey = join(dir, 'publisher.key')
    await mkdir(logs, { recursive: true })
    for (const args of [['init'], ['keygen', '--publisher', '--output', publisherKey], ['init', '--log-path', join(logs, 'a.log')], ['init', '--log-path', join(logs, 'ldb')]]) {
      const r = await reach(args, { env: env() })
      if (r.code !== 0) throw new Error(`reach ${args.join(' ')} failed: ${r.stderr}`)
    }
    mount(['--bind', ro, ro])
    mounted.push(ro)
    mount(['-o', 'remount,bind,ro', ro])
  }, 60_000)

  it.skipIf(!canMount)('trust add, pack build, init, append (JSON lines and LevelDB) and node start: one line RL-5010 (EROFS), exit 1, and one JSON object', async () => {
    const commands: string[][] = [
      ['trust', 'add', publisherKey, '--name', 'publisher'],
      ['pack', 'build', COUNTER],
      ['init'],
      ['init', '--log-path', join(logs, 'b.log')],
      ['append', '--log-path', join(logs, 'a.log'), '--type', 'AgentCreated', '--aggregate-id', 'a'],
      ['append', '--log-path', join(logs, 'ldb'), '--type', 'AgentCreated', '--aggregate-id', 'a'],
      ['node', 'start', '--listen', '/ip4/127.0.0.1/tcp/0']
    ]
    for (const args of commands) {
      const { human, json } = await refusedBoth(args, env(), 'RL-5010', 1)
      expect(human.stderr).toContain('read-only file system (EROFS)')
      expect(json.json.error.details).toMatchObject({ errno: 'EROFS', path: expect.stringContaining(ro) })
    }
  }, 120_000)

  it.skipIf(!canMount)('reading still works: read and verify of the JSON-lines log succeed', async () => {
    const v = await reach(['verify', '--log-path', join(logs, 'a.log'), '--json'], { env: env() })
    expect(v.code).toBe(0)
    expect(v.json).toMatchObject({ ok: true, valid: true, count: 1 })
  })

  it.skipIf(!canMount)('control: with the mount gone, the same commands succeed on the same dirs', async () => {
    await unmount(ro)
    for (const args of [['trust', 'add', publisherKey, '--name', 'publisher'], ['pack', 'build', COUNTER], ['append', '--log-path', join(logs, 'a.log'), '--type', 'AgentCreated', '--aggregate-id', 'a']]) {
      const r = await reach([...args, '--json'], { env: env() })
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0)
    }
  })
})

describe('a full disk', () => {
  it.skipIf(!canMount)('append: one line RL-5010 (ENOSPC), exit 1; the log is as it was and no lock file is left behind', async () => {
    const full = join(dir, 'full')
    await mkdir(full)
    mount(['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', full])
    mounted.push(full)
    const log = join(full, 'a.log')
    const env = { REACH_HOME: join(dir, 'full-home') }
    expect((await reach(['init', '--log-path', log], { env })).code).toBe(0)
    // Fill the disk: the file system gives what it has, then ENOSPC.
    await writeFile(join(full, 'fill'), Buffer.alloc(512 * 1024)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOSPC') throw err })
    const payload = JSON.stringify('x'.repeat(64 * 1024))
    const { human } = await refusedBoth(['append', '--log-path', log, '--type', 'AgentCreated', '--aggregate-id', 'a', '--payload', payload], env, 'RL-5010', 1)
    expect(human.stderr).toContain('no space left on device (ENOSPC)')
    expect((await readdir(full)).sort()).toEqual(['a.log', 'fill'])
    const v = await reach(['verify', '--log-path', log, '--json'], { env })
    expect(v.json).toMatchObject({ ok: true, valid: true, count: 1 })
    await unmount(full)
  })
})

describe('why a mount: as root, permissions do not stop a write', () => {
  it.skipIf(process.getuid?.() !== 0)('control: `reach trust add` into a data dir of mode 0500 succeeds as root', async () => {
    const home = join(dir, 'chmod-home')
    const key = join(dir, 'chmod-publisher.key')
    expect((await reach(['keygen', '--publisher', '--output', key])).code).toBe(0)
    await mkdir(home, { mode: 0o700 })
    await chmod(home, 0o500)
    const r = await reach(['trust', 'add', key, '--name', 'x', '--json'], { env: { REACH_HOME: home } })
    await chmod(home, 0o700)
    expect(r.code).toBe(0)
  })
})

describe('a LevelDB log another process holds', () => {
  it('reach verify: RL-5008 "not verified", exit 3, never "INVALID"; once the holder lets go, the same log verifies', async () => {
    const ldb = join(dir, 'held-ldb')
    expect((await reach(['init', '--log-path', ldb])).code).toBe(0)
    // Another process holds the LevelDB lock until its stdin closes.
    const holder = spawn(process.execPath, ['--input-type=module', '-e', [
      "import { Level } from 'level'",
      'const db = new Level(process.env.LDB)',
      'await db.open()',
      "process.stdout.write('held\\n')",
      "process.stdin.on('end', async () => { await db.close(); process.exit(0) })",
      'process.stdin.resume()'
    ].join('\n')], { cwd: ROOT, env: { ...process.env, LDB: ldb }, stdio: ['pipe', 'pipe', 'inherit'] })
    const exited = new Promise<number | null>((resolve) => holder.once('exit', resolve))
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.setEncoding('utf8').on('data', (d: string) => { if (d.includes('held')) resolve() })
        holder.once('exit', (code) => { reject(new Error(`the holder exited (${code}) before it held the log`)) })
      })
      const { human, json } = await refusedBoth(['verify', '--log-path', ldb], {}, 'RL-5008', 3)
      expect(human.stderr).toMatch(/^error RL-5008: not verified: .*open in another process/)
      expect(human.stderr + human.stdout).not.toMatch(/INVALID|FAILED/)
      expect(json.json.error.details).toMatchObject({ verified: false })
    } finally {
      holder.stdin.end()
    }
    expect(await exited).toBe(0)
    const v = await reach(['verify', '--log-path', ldb])
    expect(v.code).toBe(0)
    expect(v.stdout).toContain('Integrity: OK')
  })
})
