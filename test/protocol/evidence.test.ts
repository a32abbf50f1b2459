/**
 * Equivocation evidence (protocol/evidence.ts): a signer that signed two histories of one log at
 * one position is proven so by its own two signatures; every forgery of such a proof is refused
 * with its code. Negative control: a naive check ("two valid checkpoints of one signer whose ids
 * differ") accepts each forgery it can even read.
 */
import { describe, expect, it } from 'vitest'
import { canonicalize } from '../../protocol/canonical.ts'
import { createCheckpoint, decodeCheckpoint, encodeCheckpoint, type CheckpointInput } from '../../protocol/checkpoint.ts'
import { isReachError } from '../../protocol/errors.ts'
import { checkEquivocation, equivocationEvidence, EQUIVOCATION } from '../../protocol/evidence.ts'
import { createSigner, generateKeyPair, signDomain } from '../../protocol/keys.ts'

const liar = createSigner(generateKeyPair().seed)
const other = createSigner(generateKeyPair().seed)
const h = (c: string): string => c.repeat(64)
const BASE: CheckpointInput = { kind: 'run', log_id: h('1'), at_seq: 5, state_hash: h('2'), log_hash: h('3'), merkle_root: h('4'), timestamp: 100 }
const text = (over: Partial<CheckpointInput> = {}, signer = liar): string => encodeCheckpoint(createCheckpoint({ ...BASE, ...over }, signer))

/** The evidence envelope for a and b as given (no ordering, no checks): what a forger sends. */
const envelope = (a: string, b: string): string => canonicalize({ a, b, type: EQUIVOCATION, v: 1 })
/** The pair in checkpoint-id order. */
const ordered = (x: string, y: string): [string, string] => decodeCheckpoint(x).checkpoint_id < decodeCheckpoint(y).checkpoint_id ? [x, y] : [y, x]

/** The naive check: both parse, both verify as JSON objects with some signer, same signer, different ids. */
function naive (evidence: string): boolean {
  try {
    const e = JSON.parse(evidence) as { a: string, b: string }
    const a = JSON.parse(e.a) as { signer: string, checkpoint_id: string }
    const b = JSON.parse(e.b) as { signer: string, checkpoint_id: string }
    return a.signer === b.signer && a.checkpoint_id !== b.checkpoint_id
  } catch {
    return false
  }
}

function codeOf (evidence: string): string {
  try {
    checkEquivocation(evidence)
    return 'proven'
  } catch (err) {
    if (isReachError(err)) return err.code
    throw err
  }
}

describe('equivocation evidence', () => {
  it('two checkpoints of one signer, log and position with different log hashes prove equivocation, offline', () => {
    const evidence = equivocationEvidence(text(), text({ log_hash: h('9'), merkle_root: h('8') }))
    const proven = checkEquivocation(evidence)
    expect(proven).toMatchObject({ signer: liar.publicKey, log_id: h('1'), at_seq: 5, differ: ['log_hash', 'merkle_root'] })
    // One pair, one encoding, whichever order it was given in.
    expect(equivocationEvidence(text({ log_hash: h('9'), merkle_root: h('8') }), text())).toBe(evidence)
  })

  const forgeries: Array<{ name: string, evidence: () => string, code: string }> = [
    { name: 'one checkpoint twice', evidence: () => envelope(text(), text()), code: 'RL-2112' },
    { name: 'the same history re-signed at another time', evidence: () => envelope(...ordered(text(), text({ timestamp: 200 }))), code: 'RL-2112' },
    { name: 'two signers', evidence: () => envelope(...ordered(text(), text({ log_hash: h('9') }, other))), code: 'RL-2111' },
    { name: 'two logs', evidence: () => envelope(...ordered(text(), text({ log_id: h('7'), log_hash: h('9') }))), code: 'RL-2111' },
    { name: 'two positions (a log that grew)', evidence: () => envelope(...ordered(text(), text({ at_seq: 6, log_hash: h('9') }))), code: 'RL-2111' },
    { name: 'two kinds', evidence: () => envelope(...ordered(text(), text({ kind: 'log', log_hash: h('9') }))), code: 'RL-2111' },
    {
      name: 'a re-encoded copy of one checkpoint (keys reordered, so its text differs)',
      evidence: () => {
        const t = text()
        const reordered = JSON.stringify(Object.fromEntries(Object.entries(JSON.parse(t) as Record<string, unknown>).reverse())) + '\n'
        return envelope(...([t, reordered].sort() as [string, string]))
      },
      code: 'RL-2105'
    },
    {
      name: 'a signature from another domain (the signer signed the same bytes as something else)',
      evidence: () => {
        const honest = decodeCheckpoint(text())
        const forged = decodeCheckpoint(text({ log_hash: h('9') }))
        // The liar's key did sign this body, but as a hop, not as a checkpoint.
        const { signature: _s, checkpoint_id: _i, ...body } = forged
        const sig = Buffer.from(signDomain(liar, 'hop', canonicalize(body as never))).toString('hex')
        return envelope(...ordered(encodeCheckpoint(honest), encodeCheckpoint({ ...forged, signature: sig })))
      },
      code: 'RL-2101'
    },
    { name: 'a checkpoint whose body was edited after signing (its id no longer its body\'s)', evidence: () => envelope(...ordered(text(), encodeCheckpoint({ ...decodeCheckpoint(text()), log_hash: h('9'), checkpoint_id: h('f') }))), code: 'RL-2108' },
    { name: 'the pair out of order', evidence: () => { const [a, b] = ordered(text(), text({ log_hash: h('9') })); return envelope(b, a) }, code: 'RL-2110' },
    { name: 'another version', evidence: () => { const [a, b] = ordered(text(), text({ log_hash: h('9') })); return canonicalize({ a, b, type: EQUIVOCATION, v: 2 }) }, code: 'RL-2110' },
    { name: 'an extra member', evidence: () => { const [a, b] = ordered(text(), text({ log_hash: h('9') })); return canonicalize({ a, b, note: 'trust me', type: EQUIVOCATION, v: 1 }) }, code: 'RL-2110' },
    { name: 'not canonical JSON', evidence: () => { const [a, b] = ordered(text(), text({ log_hash: h('9') })); return JSON.stringify({ v: 1, type: EQUIVOCATION, a, b }) }, code: 'RL-2110' },
    { name: 'too large', evidence: () => 'x'.repeat(40_000), code: 'RL-2110' }
  ]
  for (const f of forgeries) {
    it(`refuses ${f.name}: ${f.code}`, () => {
      expect(codeOf(f.evidence())).toBe(f.code)
    })
  }

  it('negative control: the naive check accepts the forgeries a real check must refuse', () => {
    const fooled = forgeries.filter((f) => naive(f.evidence())).map((f) => f.name)
    expect(fooled).toEqual(expect.arrayContaining([
      'the same history re-signed at another time', 'two logs', 'two positions (a log that grew)', 'two kinds',
      'a signature from another domain (the signer signed the same bytes as something else)', 'a checkpoint whose body was edited after signing (its id no longer its body\'s)'
    ]))
  })
})
