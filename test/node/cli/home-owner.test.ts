/**
 * The data dir belongs to its owner (RL-1014): a data dir, or a key, policy, trust registry,
 * config or API token in it, that another user owns or can write is refused by every command
 * that opens it, before anything is written, and `reach doctor` names each one. Through the real
 * `reach` executable; each attack has its negative control (the same dir, fixed, works).
 */
import { chmod, chown, lchown, mkdir, mkdtemp, readdir, stat, symlink, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { reach } from './helpers.ts'

/** No uids or mode bits on Windows: nothing to check there. */
const posix = process.getuid !== undefined
/** Only root can give a file to another user. */
const root = process.getuid?.() === 0
const uid = process.getuid?.() ?? -1
const NOBODY = 65534

/** Grants `http.fetch` to the cloud metadata address: what a swapped policy would say. */
const HOSTILE_POLICY = JSON.stringify({ version: 1, granted_capabilities: ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch'], http_allowlist: ['169.254.169.254'] })

async function parent (): Promise<string> {
  return await mkdtemp(join(os.tmpdir(), 'reach-owner-'))
}

function problemsIn (doctor: { json: any }): Array<{ check: string, detail: string }> {
  return doctor.json.checks.filter((c: { ok: boolean }) => !c.ok)
}

describe.skipIf(!posix)('the data dir belongs to its owner (RL-1014)', () => {
  it('reach init makes a new data dir 0700', async () => {
    const home = join(await parent(), 'a', 'b')
    const init = await reach(['init', '--json'], { env: { REACH_HOME: home } })
    expect(init.code).toBe(0)
    for (const dir of [home, join(home, 'keys')]) expect((await stat(dir)).mode & 0o777).toBe(0o700)
  })

  it('refuses a 0777 data dir, writes nothing into it, and says how to fix it; after chmod 700 it is taken', async () => {
    const home = join(await parent(), 'home')
    await mkdir(home)
    await chmod(home, 0o777)
    const env = { REACH_HOME: home }

    const refused = await reach(['init', '--json'], { env })
    expect(refused.code).not.toBe(0)
    expect(refused.json.error.code).toBe('RL-1014')
    expect(refused.json.error.message).toContain(`data dir ${home} (owner uid ${uid}, mode 0777)`)
    expect(refused.json.error.message).toContain(`chmod 700 ${home}`)
    const human = await reach(['init'], { env })
    expect(human.code).toBe(2)
    expect(human.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^error RL-1014: data dir .* writable by group or others.*run: chmod 700 /)])
    // Neither init nor a command that opens the node wrote anything.
    expect((await reach(['runs', 'list', '--json'], { env })).json.error.code).toBe('RL-1014')
    expect(await readdir(home)).toEqual([])

    await chmod(home, 0o700)
    const init = await reach(['init', '--json'], { env })
    expect(init.code).toBe(0)
    expect((await readdir(home)).sort()).toEqual(expect.arrayContaining(['api.token', 'config.json', 'keys']))
  })

  it('refuses a group-writable policy.json in every command, doctor names it; after chmod 600 all is well', async () => {
    const home = join(await parent(), 'home')
    const env = { REACH_HOME: home }
    expect((await reach(['init'], { env })).code).toBe(0)
    const policy = join(home, 'policy.json')
    await writeFile(policy, HOSTILE_POLICY)
    await chmod(policy, 0o664)

    for (const args of [['trust', 'list'], ['runs', 'list'], ['node', 'status'], ['init']]) {
      const r = await reach([...args, '--json'], { env })
      expect(r.code, args.join(' ')).not.toBe(0)
      expect(r.json.error.code, args.join(' ')).toBe('RL-1014')
      expect(r.json.error.message).toContain(`policy ${policy} (owner uid ${uid}, mode 0664)`)
      expect(r.json.error.message).toContain(`chmod 600 ${policy}`)
    }
    // The daemon refuses it before it listens (a regression would leave it running, and time out).
    const start = await reach(['node', 'start'], { env })
    expect(start.code).not.toBe(0)
    expect(start.stderr).toContain('error RL-1014: policy')

    const doctor = await reach(['doctor', '--json'], { env })
    expect(doctor.code).toBe(1)
    expect(doctor.json.healthy).toBe(false)
    expect(problemsIn(doctor)).toEqual([{ check: 'policy', ok: false, detail: expect.stringMatching(/^RL-1014 policy .*mode 0664/) }])
    expect(doctor.json.skipped).toEqual(['node key', 'policy', 'trust registry', 'packs', 'runs'])
    const human = await reach(['doctor'], { env })
    expect(human.stdout).toContain(`FAIL policy: RL-1014 policy ${policy}`)
    expect(human.stdout).not.toContain('Healthy')

    await chmod(policy, 0o600)
    const fixed = await reach(['doctor', '--json'], { env })
    expect(fixed.json.healthy).toBe(true)
    expect(fixed.json.checks.find((c: { check: string }) => c.check === 'policy').detail).toContain('http.fetch')
  })

  it('doctor reports each problem: a 0777 data dir and a world-writable trust registry', async () => {
    const home = join(await parent(), 'home')
    const env = { REACH_HOME: home }
    expect((await reach(['init'], { env })).code).toBe(0)
    const trust = join(home, 'trust.json')
    await writeFile(trust, JSON.stringify({ version: 1, keys: [] }))
    await chmod(trust, 0o666)
    await chmod(home, 0o777)

    const doctor = await reach(['doctor', '--json'], { env })
    expect(doctor.json.healthy).toBe(false)
    expect(problemsIn(doctor).map((c) => [c.check, c.detail.split(' ')[0]])).toEqual([['data dir', 'RL-1014'], ['trust registry', 'RL-1014']])
    const human = await reach(['doctor'], { env })
    expect(human.stdout).toContain('2 problem(s)')
    const refused = await reach(['trust', 'list', '--json'], { env })
    expect(refused.json.error.message).toContain('(and 1 more: reach doctor lists them)')

    await chmod(home, 0o700)
    await chmod(trust, 0o600)
    expect((await reach(['doctor', '--json'], { env })).json.healthy).toBe(true)
  })

  it.skipIf(!root)('refuses a data dir, a key or a symlink another user owns', async () => {
    const dir = await parent()
    const theirs = join(dir, 'theirs')
    await mkdir(theirs, { mode: 0o700 })
    await chown(theirs, NOBODY, NOBODY)
    const refused = await reach(['init', '--json'], { env: { REACH_HOME: theirs } })
    expect(refused.code).not.toBe(0)
    expect(refused.json.error.code).toBe('RL-1014')
    expect(refused.json.error.message).toContain(`data dir ${theirs} (owner uid ${NOBODY}, mode 0700) is not owned by this user (uid 0)`)
    expect(refused.json.error.message).toContain(`chown -R 0 ${theirs}`)
    expect(await readdir(theirs)).toEqual([])
    const doctor = await reach(['doctor', '--json'], { env: { REACH_HOME: theirs } })
    expect(doctor.json.healthy).toBe(false)
    expect(problemsIn(doctor).map((c) => c.check)).toEqual(['data dir'])

    // A symlink of ours to their dir is their dir; a symlink of theirs to ours is theirs to re-point.
    const toTheirs = join(dir, 'to-theirs')
    await symlink(theirs, toTheirs)
    expect((await reach(['init', '--json'], { env: { REACH_HOME: toTheirs } })).json.error.code).toBe('RL-1014')
    const mine = join(dir, 'mine')
    await mkdir(mine, { mode: 0o700 })
    const theirLink = join(dir, 'their-link')
    await symlink(mine, theirLink)
    await lchown(theirLink, NOBODY, NOBODY)
    const viaTheirLink = await reach(['init', '--json'], { env: { REACH_HOME: theirLink } })
    expect(viaTheirLink.json.error.code).toBe('RL-1014')
    expect(viaTheirLink.json.error.message).toContain(`data dir ${theirLink} is a symlink owned by uid ${NOBODY}`)
    expect(await readdir(mine)).toEqual([])
    // Negative control: our own link to our own dir is taken.
    const myLink = join(dir, 'my-link')
    await symlink(mine, myLink)
    expect((await reach(['init', '--json'], { env: { REACH_HOME: myLink } })).code).toBe(0)

    // A node key handed to another user: the node refuses to start as it.
    await chown(join(mine, 'keys', 'node.key'), NOBODY, NOBODY)
    const key = await reach(['runs', 'list', '--json'], { env: { REACH_HOME: mine } })
    expect(key.json.error.code).toBe('RL-1014')
    expect(key.json.error.message).toContain(`key file ${join(mine, 'keys', 'node.key')} (owner uid ${NOBODY}, mode 0600)`)
  })
})

describe('a data dir that is not a directory (RL-1004)', () => {
  it('refuses REACH_HOME that is a file, or lies under one, with one line naming the file', async () => {
    const dir = await parent()
    const file = join(dir, 'file')
    await writeFile(file, 'not a dir')
    for (const [home, says] of [[file, `the data dir ${file} is not a directory`], [join(file, 'a', 'b'), `the data dir ${join(file, 'a', 'b')} cannot be made: ${file} is a file`]]) {
      const refused = await reach(['runs', 'list', '--json'], { env: { REACH_HOME: home } })
      expect(refused.code, home).toBe(2)
      expect(refused.json.error.code, home).toBe('RL-1004')
      expect(refused.json.error.message, home).toContain(says)
      const human = await reach(['init'], { env: { REACH_HOME: home } })
      expect(human.code, home).toBe(2)
      expect(human.stderr.trim().split('\n'), home).toEqual([`error RL-1004: ${says}; move it away, or set REACH_HOME to another data dir`])
    }
    // A keys dir that is a file is named too.
    const home = join(dir, 'home')
    await mkdir(home, { mode: 0o700 })
    await writeFile(join(home, 'keys'), 'not a dir')
    const keys = await reach(['trust', 'list', '--json'], { env: { REACH_HOME: home } })
    expect(keys.json.error.code).toBe('RL-1004')
    expect(keys.json.error.message).toContain(`the keys dir ${join(home, 'keys')} is not a directory`)
  })
})
