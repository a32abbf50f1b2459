/**
 * Golden fixtures: a recorded log and checkpoint replayed through the CLI.
 * Their hashes are fixed in expected.json; if the engine ever reads them
 * differently, logs already written elsewhere would stop verifying.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { reach } from './helpers.ts'

const fixture = (name: string): string => fileURLToPath(new URL(`../../fixtures/golden/${name}`, import.meta.url))
const expected = JSON.parse(readFileSync(fixture('expected.json'), 'utf8'))

describe('golden fixtures', () => {
  it('the recorded log verifies with the recorded head and Merkle root', async () => {
    const r = await reach(['verify', '--log-path', fixture('universe.log'), '--json'])
    expect(r.json).toMatchObject({ ok: true, count: expected.events, log_id: expected.log_id, head: expected.head, merkle_root: expected.merkle_root })
  })

  it('replays to the recorded state hash', async () => {
    const r = await reach(['replay', '--log-path', fixture('universe.log'), '--json'])
    expect(r.json.state_hash).toBe(expected.state_hash)
  })

  it('the recorded checkpoint verifies against the log, pinned to its signer', async () => {
    const r = await reach(['checkpoint', 'verify', '--checkpoint-path', fixture('universe.checkpoint'), '--log-path', fixture('universe.log'), '--signer', expected.checkpoint.signer, '--json'])
    expect(r.code).toBe(0)
    expect(r.json.checkpoint).toMatchObject({ checkpoint_id: expected.checkpoint.checkpoint_id, state_hash: expected.checkpoint.state_hash, merkle_root: expected.checkpoint.merkle_root })
    const d = await reach(['replay', '--log-path', fixture('universe.log'), '--diff-with', fixture('universe.checkpoint')])
    expect(d.stdout).toContain('Deterministic replay: VERIFIED')
  })

  it('the version-2 checkpoint of the same log (kind "log") verifies too, and the version-1 file still does', async () => {
    const r = await reach(['checkpoint', 'verify', '--checkpoint-path', fixture('universe-v2.checkpoint'), '--log-path', fixture('universe.log'), '--signer', expected.checkpoint_v2.signer, '--json'])
    expect(r.code).toBe(0)
    expect(r.json.checkpoint).toMatchObject({ version: 2, kind: 'log', checkpoint_id: expected.checkpoint_v2.checkpoint_id, state_hash: expected.checkpoint.state_hash })
    // Same log, same state: the two versions differ only in how they are signed.
    expect(expected.checkpoint_v2.checkpoint_id).not.toBe(expected.checkpoint.checkpoint_id)
  })

  it('the mutated log twin fails at its recorded seq and code', async () => {
    const r = await reach(['verify', '--log-path', fixture('universe-mutated.log'), '--json'])
    expect(r.code).toBe(1)
    expect(r.json.error).toMatchObject(expected.mutated.log)
  })

  it('the mutated checkpoint twin fails', async () => {
    const r = await reach(['checkpoint', 'verify', '--checkpoint-path', fixture('universe-mutated.checkpoint'), '--log-path', fixture('universe.log'), '--json'])
    expect(r.code).toBe(1)
    expect(r.json.error).toMatchObject(expected.mutated.checkpoint)
  })

  it('the recorded checkpoint against the mutated log fails on the Merkle root', async () => {
    const r = await reach(['checkpoint', 'verify', '--checkpoint-path', fixture('universe.checkpoint'), '--log-path', fixture('universe-mutated.log'), '--json'])
    expect(r.code).toBe(1)
    expect(r.json.error).toMatchObject({ code: 'RL-2001', seq: 57 })
  })
})
