/**
 * `reach evidence make|verify` through the real executable: one key signs checkpoints of two
 * histories that share a genesis (the same log id) at the same seq, and the evidence file proves
 * it offline; a file with one checkpoint twice, or a tampered one, is refused with its code.
 */
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { reach } from './helpers.ts'

describe('reach evidence', () => {
  it('proves two signed histories of one log at one seq, and refuses what proves nothing', async () => {
    const dir = await mkdtemp(join(os.tmpdir(), 'reach-evidence-'))
    const env = { REACH_HOME: join(dir, 'home') }
    const run = async (args: string[]): Promise<any> => {
      const r = await reach([...args, '--json'], { env })
      return { code: r.code, json: r.json }
    }
    expect((await run(['init', '--log-path', join(dir, 'a.jsonl')])).code).toBe(0)
    await cp(join(dir, 'a.jsonl'), join(dir, 'b.jsonl'))
    expect((await run(['keygen', '--output', join(dir, 'k.key')])).code).toBe(0)
    for (const [log, name] of [['a', 'honest'], ['b', 'other']]) {
      expect((await run(['append', '--log-path', join(dir, `${log}.jsonl`), '--type', 'AgentCreated', '--aggregate-id', 'x', '--payload', JSON.stringify({ name })])).code).toBe(0)
      expect((await run(['checkpoint', 'create', '--log-path', join(dir, `${log}.jsonl`), '--at-seq', '1', '--key-path', join(dir, 'k.key'), '--output', join(dir, `${log}.checkpoint`)])).code).toBe(0)
    }
    const made = await run(['evidence', 'make', join(dir, 'a.checkpoint'), join(dir, 'b.checkpoint'), '--output', join(dir, 'ev.json')])
    expect(made.json).toMatchObject({ ok: true, equivocation: true, at_seq: 1, differ: ['log_hash', 'state_hash', 'merkle_root'] })
    const verified = await run(['evidence', 'verify', join(dir, 'ev.json')])
    expect(verified).toMatchObject({ code: 0, json: { equivocation: true, peer: made.json.peer } })
    // One checkpoint twice proves nothing.
    expect(await run(['evidence', 'make', join(dir, 'a.checkpoint'), join(dir, 'a.checkpoint')])).toMatchObject({ code: 1, json: { ok: false, error: { code: 'RL-2112' } } })
    // A tampered file: one hash in one checkpoint changed, so its id is not its body's.
    const ev = JSON.parse(await readFile(join(dir, 'ev.json'), 'utf8')) as { a: string, b: string }
    const a = JSON.parse(ev.a) as Record<string, unknown>
    const tampered = { ...ev, a: JSON.stringify({ ...a, state_hash: '0'.repeat(64) }) + '\n' }
    const { canonicalize } = await import('../../../protocol/canonical.ts')
    await writeFile(join(dir, 'bad.json'), canonicalize(tampered as never))
    expect(await run(['evidence', 'verify', join(dir, 'bad.json')])).toMatchObject({ code: 1, json: { ok: false, error: { code: 'RL-2108' } } })
  })
})
