/**
 * Verification receipts (SPEC §6, "Verification receipts"): a witness's signature that it
 * re-executed a signed run log and got what the checkpoint says. Like a tlog-cosignature beside
 * a checkpoint, but for a replay, not only for append-only-ness; the witness names its engine,
 * since a replay is only as good as the build that made it.
 *
 *   canonical({at_seq, checkpoint_id, engine: {version, wasm, prelude}, fingerprint, log_hash,
 *     log_id, pack_cid, signature, signer, state_hash, timestamp, v: 1, verdict: "verified"})
 *
 * `signature` = hex Ed25519 over `"reach/receipt/v1\n" || canonical(body without signature)` by
 * `signer` (the witness's multibase key). At most MAX_RECEIPT_BYTES. RL-2113 for a receipt that
 * is malformed, not its signer's, or not of the checkpoint it is checked against.
 */
import { canonicalize } from './canonical.ts'
import type { Checkpoint } from './checkpoint.ts'
import { ReachError } from './errors.ts'
import { isHash } from './hash.ts'
import { signDomain, verifyDomain, type Signer } from './keys.ts'

export const RECEIPT_VERSION = 1
export const RECEIPT_KIND = 'receipt'
export const MAX_RECEIPT_BYTES = 2048

export interface ReceiptBody {
  v: 1
  verdict: 'verified'
  checkpoint_id: string
  log_id: string
  at_seq: number
  state_hash: string
  log_hash: string
  pack_cid: string
  /** The run record's fingerprint the replay computed (it covers the output hash). */
  fingerprint: string
  /** The witness's engine: version and the hashes of its WebAssembly module and prelude. */
  engine: { version: string, wasm: string, prelude: string }
  signer: string
  /** When the witness signed, ms since the epoch (its own clock: a claim, not a fact). */
  timestamp: number
}

export interface Receipt extends ReceiptBody {
  signature: string
}

const KEYS = ['at_seq', 'checkpoint_id', 'engine', 'fingerprint', 'log_hash', 'log_id', 'pack_cid', 'signature', 'signer', 'state_hash', 'timestamp', 'v', 'verdict']
const BOUND = ['checkpoint_id', 'log_id', 'at_seq', 'state_hash', 'log_hash'] as const

function invalid (message: string): never {
  throw new ReachError('RL-2113', { message: `verification receipt: ${message}` })
}

/** Sign a receipt for `checkpoint`, whose run replayed to `fingerprint` on `engine`. */
export function signReceipt (signer: Signer, checkpoint: Checkpoint, facts: { pack_cid: string, fingerprint: string, engine: ReceiptBody['engine'], timestamp: number }): Receipt {
  const body: ReceiptBody = {
    v: RECEIPT_VERSION,
    verdict: 'verified',
    checkpoint_id: checkpoint.checkpoint_id,
    log_id: checkpoint.log_id,
    at_seq: checkpoint.at_seq,
    state_hash: checkpoint.state_hash,
    log_hash: checkpoint.log_hash,
    pack_cid: facts.pack_cid,
    fingerprint: facts.fingerprint,
    engine: { version: facts.engine.version, wasm: facts.engine.wasm, prelude: facts.engine.prelude },
    signer: signer.publicKey,
    timestamp: facts.timestamp
  }
  return { ...body, signature: Buffer.from(signDomain(signer, RECEIPT_KIND, body)).toString('hex') }
}

export function encodeReceipt (r: Receipt): string {
  return canonicalize(r as never)
}

/**
 * A receipt from its text, checked: its form, its signature, and (when given) that it is of
 * `checkpoint` (the same id, log, position and hashes).
 */
export function checkReceipt (text: string, checkpoint?: Checkpoint): Receipt {
  if (typeof text !== 'string' || Buffer.byteLength(text) > MAX_RECEIPT_BYTES) invalid(`not text of at most ${MAX_RECEIPT_BYTES} bytes`)
  let r: Record<string, unknown>
  try {
    r = JSON.parse(text) as Record<string, unknown>
  } catch {
    invalid('not JSON')
  }
  if (r === null || typeof r !== 'object' || Array.isArray(r)) invalid('not an object')
  if (Object.keys(r).sort().join() !== KEYS.join()) invalid(`its members are not ${KEYS.join(', ')}`)
  if (r.v !== RECEIPT_VERSION || r.verdict !== 'verified') invalid('not a version 1 "verified" receipt')
  for (const f of ['checkpoint_id', 'log_id', 'state_hash', 'log_hash', 'fingerprint'] as const) if (!isHash(r[f])) invalid(`${f} is not a SHA-256 hex`)
  if (!Number.isSafeInteger(r.at_seq) || (r.at_seq as number) < 0 || !Number.isSafeInteger(r.timestamp) || (r.timestamp as number) < 0) invalid('at_seq and timestamp must be non-negative integers')
  if (typeof r.pack_cid !== 'string' || r.pack_cid.length === 0 || r.pack_cid.length > 128) invalid('pack_cid is not a CID')
  const e = r.engine as Record<string, unknown> | null
  if (e === null || typeof e !== 'object' || Object.keys(e).sort().join() !== 'prelude,version,wasm' || typeof e.version !== 'string' || !isHash(e.wasm) || !isHash(e.prelude)) invalid('engine is not {version, wasm, prelude}')
  if (typeof r.signer !== 'string' || typeof r.signature !== 'string' || !/^[0-9a-f]{128}$/.test(r.signature)) invalid('signer or signature malformed')
  if (canonicalize(r as never) !== text) invalid('not in canonical form (RFC 8785)')
  const { signature, ...body } = r
  if (!verifyDomain(r.signer, RECEIPT_KIND, body, Buffer.from(signature as string, 'hex'))) invalid(`the signature is not ${r.signer}'s over this receipt`)
  if (checkpoint !== undefined) {
    const off = BOUND.filter((f) => r[f] !== checkpoint[f])
    if (off.length > 0) invalid(`it is not of checkpoint ${checkpoint.checkpoint_id} (${off.join(', ')} differ)`)
  }
  return r as unknown as Receipt
}
