/**
 * Gossip envelopes (SPEC §10.8) and inconsistency evidence (SPEC §6): each refusal with its
 * code, and a rewritten growing log caught by a consistency path that a naive check (each
 * checkpoint's signature on its own) lets through.
 */
import { describe, expect, it } from 'vitest'
import { createCheckpoint, decodeCheckpoint, encodeCheckpoint, verifyCheckpoint } from '../../protocol/checkpoint.ts'
import { isReachError } from '../../protocol/errors.ts'
import { checkInconsistency, inconsistencyEvidence } from '../../protocol/evidence.ts'
import { decodeGossip, encodeGossip, gossipTopic, MAX_GOSSIP_BYTES } from '../../protocol/gossip.ts'
import { sha256Hex } from '../../protocol/hash.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { buildConsistencyProof, merkleRoot, leafHash } from '../../protocol/merkle.ts'

const key = createSigner(generateKeyPair().seed)
const other = createSigner(generateKeyPair().seed)
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)

function codeOf (fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (isReachError(err)) return err.code
    throw err
  }
  return 'accepted'
}

/** A growing log's event hashes, and a checkpoint of its first `size` of them. */
function ledger (hashes: string[], size: number, signer = key, logId = hashes[0] as string): string {
  const root = Buffer.from(merkleRoot(hashes.slice(0, size).map(leafHash))).toString('hex')
  return encodeCheckpoint(createCheckpoint({ kind: 'log', log_id: logId, at_seq: size - 1, state_hash: '0'.repeat(64), log_hash: hashes[size - 1] as string, merkle_root: root, timestamp: size }, signer))
}

const honest = Array.from({ length: 9 }, (_, i) => sha256Hex(`event ${i}`))
// The same log with event 2 rewritten (and everything after it re-chained).
const rewritten = honest.map((h, i) => i < 2 ? h : sha256Hex(`rewritten ${i}`))

describe('gossip envelopes', () => {
  const cp = ledger(honest, 3)
  it('round-trips, and the topic names the federation and version', () => {
    const data = encodeGossip('fed-1', { kind: 'checkpoints', checkpoint: cp })
    expect(decodeGossip('checkpoints', data, 'fed-1')).toEqual({ kind: 'checkpoints', checkpoint: cp })
    expect(gossipTopic('fed-1', 'evidence')).toBe('reach/fed-1/evidence/1')
  })

  it('refuses, each with its code: too large, not JSON, other members, another version, not canonical, run fields apart, another federation', () => {
    const good = JSON.parse(new TextDecoder().decode(encodeGossip('f', { kind: 'checkpoints', checkpoint: cp }))) as Record<string, unknown>
    const canon = (o: Record<string, unknown>): Uint8Array => bytes(JSON.stringify(o, Object.keys(o).sort()))
    expect(codeOf(() => decodeGossip('checkpoints', new Uint8Array(MAX_GOSSIP_BYTES.checkpoints + 1), 'f'))).toBe('RL-2125')
    expect(codeOf(() => decodeGossip('checkpoints', bytes('{"v":'), 'f'))).toBe('RL-2125')
    expect(codeOf(() => decodeGossip('checkpoints', canon({ ...good, extra: 'x' }), 'f'))).toBe('RL-2125')
    expect(codeOf(() => decodeGossip('checkpoints', canon({ ...good, v: 2 }), 'f'))).toBe('RL-2125')
    expect(codeOf(() => decodeGossip('checkpoints', bytes(JSON.stringify({ v: 1, ...good })), 'f'))).toBe('RL-2125')
    expect(codeOf(() => decodeGossip('checkpoints', canon({ ...good, run_id: 'run_' + '0'.repeat(20) }), 'f'))).toBe('RL-2125')
    expect(codeOf(() => decodeGossip('receipts', canon({ ...good, type: 'reach.receipt' }), 'f'))).toBe('RL-2125')
    expect(codeOf(() => decodeGossip('checkpoints', canon(good), 'g'))).toBe('RL-2126')
    // The control: the untouched envelope passes the same decoder.
    expect(codeOf(() => decodeGossip('checkpoints', canon(good), 'f'))).toBe('accepted')
  })
})

describe('inconsistency evidence', () => {
  const older = ledger(honest, 4)
  const newer = ledger(rewritten, 9, key, honest[0])
  /** What a witness holding the newer log computes: the root of its first 4 leaves, and its consistency path. */
  const fromNewer = (): { oldRoot: string, path: string[] } => ({
    oldRoot: Buffer.from(merkleRoot(rewritten.slice(0, 4).map(leafHash))).toString('hex'),
    path: buildConsistencyProof(rewritten, 4, 9).path
  })

  it('the naive check (each checkpoint signed by its signer) accepts the rewrite: the attack works there', () => {
    expect(() => { verifyCheckpoint(decodeCheckpoint(older)); verifyCheckpoint(decodeCheckpoint(newer)) }).not.toThrow()
  })

  it('proves a rewritten ledger, offline, from the newer log alone', () => {
    const { oldRoot, path } = fromNewer()
    const proven = checkInconsistency(inconsistencyEvidence(older, newer, oldRoot, path))
    expect(proven.signer).toBe(key.publicKey)
    expect(proven.at_seq).toBe(3)
    expect(proven.old_root).not.toBe(decodeCheckpoint(older).merkle_root)
  })

  it('refuses an honest extension (RL-2112), a forged path (RL-2202), two signers (RL-2111), and the pair out of order (RL-2110)', () => {
    const extended = ledger(honest, 9)
    const honestRoot = Buffer.from(merkleRoot(honest.slice(0, 4).map(leafHash))).toString('hex')
    expect(codeOf(() => inconsistencyEvidence(older, extended, honestRoot, buildConsistencyProof(honest, 4, 9).path))).toBe('RL-2112')
    const { oldRoot, path } = fromNewer()
    const bent = [...path]
    bent[0] = (bent[0] as string).replace(/^./, (c) => c === '0' ? '1' : '0')
    expect(codeOf(() => inconsistencyEvidence(older, newer, oldRoot, bent))).toBe('RL-2202')
    // A root the path does not lead from: a witness cannot make one up.
    expect(codeOf(() => inconsistencyEvidence(older, newer, 'a'.repeat(64), path))).toBe('RL-2202')
    expect(codeOf(() => inconsistencyEvidence(older, ledger(rewritten, 9, other, honest[0]), oldRoot, path))).toBe('RL-2111')
    expect(codeOf(() => inconsistencyEvidence(newer, older, oldRoot, path))).toBe('RL-2110')
  })
})
