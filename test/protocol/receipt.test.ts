/**
 * Verification receipts (protocol/receipt.ts): a witness's signature that it replayed a signed
 * run to what the checkpoint says. Each forgery is refused (RL-2113); the negative control is a
 * naive check (the signature verifies over the receipt's own fields), which a receipt moved to
 * another checkpoint passes.
 */
import { describe, expect, it } from 'vitest'
import { canonicalize } from '../../protocol/canonical.ts'
import { createCheckpoint, type CheckpointInput } from '../../protocol/checkpoint.ts'
import { isReachError } from '../../protocol/errors.ts'
import { createSigner, generateKeyPair, signDomain, verifyDomain } from '../../protocol/keys.ts'
import { checkReceipt, encodeReceipt, signReceipt, type Receipt } from '../../protocol/receipt.ts'

const peer = createSigner(generateKeyPair().seed)
const witness = createSigner(generateKeyPair().seed)
const h = (c: string): string => c.repeat(64)
const BASE: CheckpointInput = { kind: 'run', log_id: h('1'), at_seq: 5, state_hash: h('2'), log_hash: h('3'), merkle_root: h('4'), timestamp: 100 }
const checkpoint = createCheckpoint(BASE, peer)
const other = createCheckpoint({ ...BASE, log_hash: h('9') }, peer)
const FACTS = { pack_cid: 'bafyreiexamplepack', fingerprint: h('5'), engine: { version: '1.0.0', wasm: h('6'), prelude: h('7') }, timestamp: 1_700_000_000_000 }
const receipt = signReceipt(witness, checkpoint, FACTS)

function codeOf (text: string, cp = checkpoint): string {
  try {
    checkReceipt(text, cp)
    return 'valid'
  } catch (err) {
    if (isReachError(err)) return err.code
    throw err
  }
}
/** Re-signed by the witness after an edit (a witness lying about what it replayed is its own business; the binding is ours). */
const resigned = (r: Omit<Receipt, 'signature'>): string => { const { signature: _s, ...body } = r as Receipt; return encodeReceipt({ ...body, signature: Buffer.from(signDomain(witness, 'receipt', body)).toString('hex') }) }

describe('verification receipts', () => {
  it('a witness\'s receipt checks against the checkpoint it replayed, offline', () => {
    expect(checkReceipt(encodeReceipt(receipt), checkpoint)).toMatchObject({ signer: witness.publicKey, checkpoint_id: checkpoint.checkpoint_id, fingerprint: h('5') })
  })

  const forgeries: Array<[string, () => string, typeof checkpoint?]> = [
    ['a receipt for another checkpoint, presented for this one', () => encodeReceipt(signReceipt(witness, other, FACTS))],
    ['a field edited after signing (the fingerprint)', () => encodeReceipt({ ...receipt, fingerprint: h('8') })],
    ['another signer named over the witness\'s signature', () => encodeReceipt({ ...receipt, signer: peer.publicKey })],
    ['a signature from another domain (the witness\'s key signed the same body as a hop)', () => { const { signature: _s, ...body } = receipt; return encodeReceipt({ ...receipt, signature: Buffer.from(signDomain(witness, 'hop', body)).toString('hex') }) }],
    ['a receipt re-signed with the position moved', () => resigned({ ...receipt, at_seq: 6 })],
    ['an extra member', () => canonicalize({ ...receipt, trust: 'me' } as never)],
    ['not canonical JSON (members in another order)', () => JSON.stringify(Object.fromEntries(Object.entries(receipt).reverse()))],
    ['a verdict other than verified', () => resigned({ ...receipt, verdict: 'diverged' as 'verified' })]
  ]
  for (const [name, forge] of forgeries) {
    it(`refuses ${name}: RL-2113`, () => { expect(codeOf(forge())).toBe('RL-2113') })
  }

  it('negative control: a naive check (the signature over the receipt\'s own body) accepts a receipt moved to another checkpoint', () => {
    const moved = signReceipt(witness, other, FACTS)
    const { signature, ...body } = moved
    expect(verifyDomain(moved.signer, 'receipt', body, Buffer.from(signature, 'hex'))).toBe(true)
    expect(codeOf(encodeReceipt(moved))).toBe('RL-2113')
    expect(codeOf(encodeReceipt(moved), other)).toBe('valid')
  })
})
