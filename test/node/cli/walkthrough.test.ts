/**
 * The README walkthrough, run for real: every command through the `reach`
 * executable in a child process, human and --json output, exit codes.
 */
import { mkdtemp, readdir, readFile, writeFile, chmod } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { reach } from './helpers.ts'

let dir: string
let log: string

beforeAll(async () => {
  dir = await mkdtemp(join(os.tmpdir(), 'reach-cli-'))
  log = join(dir, 'logs', 'universe.log')
})

describe('reach walkthrough', () => {
  it('init, append, read, verify', async () => {
    const init = await reach(['init', '--log-path', log, '--json'])
    expect(init.code).toBe(0)
    expect(init.json).toMatchObject({ ok: true, store: 'jsonl', genesis: { seq: 0, type: 'LogCreated' } })

    const a = await reach(['append', '--log-path', log, '--type', 'AgentCreated', '--aggregate-id', 'agent-1', '--payload', '{"name":"alpha"}'])
    expect(a.code).toBe(0)
    expect(a.stdout).toContain('Appended seq 1 (AgentCreated agent-1)')
    for (const [type, id, payload] of [['TaskCreated', 'task-1', '{"title":"index"}'], ['TaskAssigned', 'task-1', '{"agent_id":"agent-1"}'], ['TeamCreated', 'team-1', '{"name":"core"}']]) {
      expect((await reach(['append', '--log-path', log, '--type', type!, '--aggregate-id', id!, '--payload', payload!, '--json'])).json.ok).toBe(true)
    }

    const read = await reach(['read', '--log-path', log, '--from-seq', '1', '--to-seq', '2', '--json'])
    expect(read.json.events.map((e: any) => [e.seq, e.type])).toEqual([[1, 'AgentCreated'], [2, 'TaskCreated']])
    expect(read.json.count).toBe(2)

    const v = await reach(['verify', '--log-path', log])
    expect(v.code).toBe(0)
    expect(v.stdout).toContain('Hash chain valid: 0 -> 4 (5 events)')
    expect(v.stdout).toContain('Integrity: OK')
  })

  it('keygen, checkpoint create and verify, replay with diff, proofs', async () => {
    const key = join(dir, 'keys', 'operator.key')
    const other = join(dir, 'keys', 'other.key')
    const k = await reach(['keygen', '--output', key, '--json'])
    expect(k.json.public_key).toMatch(/^z6Mk/)
    await reach(['keygen', '--output', other])

    const cp = await reach(['checkpoint', 'create', '--log-path', log, '--at-seq', '3', '--key-path', key, '--output', join(dir, 'checkpoints'), '--json'])
    expect(cp.code).toBe(0)
    const files = await readdir(join(dir, 'checkpoints'))
    expect(files.sort()).toEqual([expect.stringMatching(/-0000000000000003-.*\.checkpoint$/), expect.stringMatching(/\.state\.json$/)])
    const cpPath = cp.json.path as string

    const ok = await reach(['checkpoint', 'verify', '--checkpoint-path', cpPath, '--log-path', log, '--signer', key])
    expect(ok.code).toBe(0)
    expect(ok.stdout).toMatch(/Replayed state hash: OK[\s\S]*VERIFIED/)

    const wrongSigner = await reach(['checkpoint', 'verify', '--checkpoint-path', cpPath, '--log-path', log, '--signer', other, '--json'])
    expect(wrongSigner.code).toBe(1)
    expect(wrongSigner.json.error.code).toBe('RL-2106')

    const replay = await reach(['replay', '--log-path', log, '--until-seq', '3', '--trace', '--diff-with', cpPath])
    expect(replay.code).toBe(0)
    expect(replay.stdout).toContain('Replayed 4 events (seq 0 -> 3)')
    expect(replay.stdout).toContain('Final state: 1 agents, 1 tasks')
    expect(replay.stdout).toContain('seq 2 TaskCreated task-1')
    expect(replay.stdout).toContain('State diff: MATCH (no differences)')
    expect(replay.stdout).toContain('Deterministic replay: VERIFIED')

    // The snapshot beside the checkpoint is bound to it by the state hash.
    const snap = cpPath.replace(/\.checkpoint$/, '.state.json')
    const original = await readFile(snap, 'utf8')
    await writeFile(snap, original.replace('"alpha"', '"omega"'))
    const forged = await reach(['replay', '--log-path', log, '--diff-with', cpPath, '--json'])
    expect(forged.json.error.code).toBe('RL-2104')
    await writeFile(snap, original)

    const inc = await reach(['proof', 'inclusion', '--log-path', log, '--seq', '2', '--output', join(dir, 'inc.json'), '--json'])
    expect(inc.json.proof).toMatchObject({ kind: 'inclusion', leaf_index: 2, tree_size: 5 })
    expect((await reach(['proof', 'verify', '--proof', join(dir, 'inc.json'), '--log-path', log])).code).toBe(0)
    const con = await reach(['proof', 'consistency', '--log-path', log, '--from', '2', '--to', '5', '--output', join(dir, 'con.json'), '--json'])
    expect(con.json.proof).toMatchObject({ kind: 'consistency', old_size: 2, new_size: 5 })
    expect((await reach(['proof', 'verify', '--proof', join(dir, 'con.json'), '--log-path', log])).code).toBe(0)

    // A proof about another tree says nothing about this log.
    const p = JSON.parse(await readFile(join(dir, 'inc.json'), 'utf8'))
    p.path[0] = p.path[0].replace(/^./, (c: string) => c === 'a' ? 'b' : 'a')
    await writeFile(join(dir, 'bad.json'), JSON.stringify(p))
    const bad = await reach(['proof', 'verify', '--proof', join(dir, 'bad.json'), '--json'])
    expect(bad.code).toBe(1)
    expect(bad.json.error.code).toBe('RL-2201')
  })

  it('a state that differs from the checkpoint is shown field by field', async () => {
    const key = join(dir, 'keys', 'operator.key')
    const cp = await reach(['checkpoint', 'create', '--log-path', log, '--at-seq', '4', '--key-path', key, '--output', join(dir, 'cp4.checkpoint'), '--json'])
    const other = join(dir, 'state.json')
    const state = JSON.parse(await readFile(join(dir, 'cp4.state.json'), 'utf8'))
    state.aggregates.agents['agent-1'].name = 'beta'
    await writeFile(other, JSON.stringify(state))
    const r = await reach(['replay', '--log-path', log, '--diff-with', other])
    expect(cp.code).toBe(0)
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('State diff: MISMATCH')
    expect(r.stdout).toContain('~ /aggregates/agents/agent-1/name: "beta" -> "alpha"')
    expect(r.stdout).toContain('Deterministic replay: FAILED (RL-2203)')
  })

  it('LevelDB logs work the same way', async () => {
    const ldb = join(dir, 'ldb')
    expect((await reach(['init', '--log-path', ldb, '--json'])).json.store).toBe('level')
    expect((await reach(['append', '--log-path', ldb, '--type', 'AgentCreated', '--aggregate-id', 'a', '--json'])).code).toBe(0)
    const v = await reach(['verify', '--log-path', ldb, '--json'])
    expect(v.json).toMatchObject({ ok: true, valid: true, count: 2, store: 'level' })
  })
})

describe('bad input gets an RL- code and a non-zero exit', () => {
  const cases: Array<[string, () => string[], string, number]> = [
    ['unknown command', () => ['frobnicate', '--json'], 'RL-1001', 2],
    ['unknown option', () => ['verify', '--log-path', log, '--nope', '--json'], 'RL-1001', 2],
    ['missing required option', () => ['append', '--log-path', log, '--json'], 'RL-1001', 2],
    ['payload not JSON', () => ['append', '--log-path', log, '--type', 'X', '--aggregate-id', 'a', '--payload', '{nope', '--json'], 'RL-1002', 2],
    ['metadata not an object', () => ['append', '--log-path', log, '--type', 'X', '--aggregate-id', 'a', '--metadata', '[1]', '--json'], 'RL-1002', 2],
    ['bad event type', () => ['append', '--log-path', log, '--type', 'has space', '--aggregate-id', 'a', '--json'], 'RL-1005', 2],
    ['negative seq', () => ['read', '--log-path', log, '--from-seq', '-1', '--json'], 'RL-1003', 2],
    ['seq beyond the log', () => ['proof', 'inclusion', '--log-path', log, '--seq', '99', '--json'], 'RL-1007', 2],
    ['checkpoint beyond the log', () => ['checkpoint', 'create', '--log-path', log, '--at-seq', '99', '--key-path', join(dir, 'keys', 'operator.key'), '--output', dir, '--json'], 'RL-2107', 1],
    ['missing log', () => ['verify', '--log-path', join(dir, 'nope.log'), '--json'], 'RL-5006', 1],
    ['init over an existing log', () => ['init', '--log-path', log, '--json'], 'RL-5005', 1],
    ['keygen over an existing key', () => ['keygen', '--output', join(dir, 'keys', 'operator.key'), '--json'], 'RL-1008', 2],
    ['missing checkpoint file', () => ['checkpoint', 'verify', '--checkpoint-path', join(dir, 'none.checkpoint'), '--log-path', log, '--json'], 'RL-1004', 2]
  ]
  for (const [name, args, code, exit] of cases) {
    it(name, async () => {
      const before = await readFile(log, 'utf8')
      const r = await reach(args())
      expect(r.json).toMatchObject({ ok: false, error: { code } })
      expect(r.code).toBe(exit)
      expect(await readFile(log, 'utf8')).toBe(before)
    })
  }

  it('human errors are one line on stderr', async () => {
    const r = await reach(['append', '--log-path', log, '--type', 'X', '--aggregate-id', 'a', '--payload', '{nope'])
    expect(r.code).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/^error RL-1002: --payload is not valid JSON: .*\n$/)
  })

  it('a key file readable by others is refused', async () => {
    const key = join(dir, 'keys', 'operator.key')
    await chmod(key, 0o644)
    const r = await reach(['checkpoint', 'create', '--log-path', log, '--at-seq', '1', '--key-path', key, '--output', dir, '--json'])
    await chmod(key, 0o600)
    expect(r.json.error.code).toBe('RL-1010')
  })

  it('--version and errors work offline', async () => {
    expect((await reach(['--version'])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/)
    const e = await reach(['errors', '--json'])
    expect(Object.keys(e.json.codes)).toContain('RL-2001')
  })
})
