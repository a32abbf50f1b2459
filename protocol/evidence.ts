/**
 * Equivocation evidence (SPEC §6, "Equivocation evidence"): two checkpoints the same key signed for the same log and
 * position that disagree about what the log holds there. Anyone can check it offline, with no
 * trust in whoever passed it on: both signatures are the signer's own, so the signer said both.
 *
 *   {"a":"<checkpoint text>","b":"<checkpoint text>","type":"reach.equivocation","v":1}
 *
 * canonical JSON, `a` the one with the smaller `checkpoint_id`, so that one pair has exactly one
 * encoding (a node stores and gossips it once). At most MAX_EVIDENCE_BYTES.
 *
 * Refused, each with its code: a malformed object or an out-of-order pair (RL-2110); a checkpoint
 * that does not decode strictly (RL-2105: a re-encoded copy among them), whose id is not its body's
 * (RL-2108) or whose signature is not its signer's over the checkpoint domain (RL-2101: a signature
 * made for another kind of message); two checkpoints that cannot disagree because they are not of
 * one signer, one log, one kind and one position (RL-2111); and two that do not disagree: one
 * checkpoint twice, or the same history signed again at another time (RL-2112).
 */
import { canonicalize } from './canonical.ts'
import { MAX_CHECKPOINT_BYTES, decodeCheckpoint, verifyCheckpoint, type Checkpoint } from './checkpoint.ts'
import { ReachError } from './errors.ts'
import { hexToBytes, isHash, sha256Hex } from './hash.ts'
import { verifyConsistency } from './merkle.ts'

export const EVIDENCE_VERSION = 1
export const EQUIVOCATION = 'reach.equivocation'
/** Two checkpoints at their largest, JSON-escaped, and the envelope. */
export const MAX_EVIDENCE_BYTES = 2 * 2 * MAX_CHECKPOINT_BYTES + 256
export const INCONSISTENCY = 'reach.inconsistency'
/** A consistency path of a tree of up to 2^63 leaves has at most 2·63 hashes. */
export const MAX_CONSISTENCY_PATH = 126
export const MAX_INCONSISTENCY_BYTES = MAX_EVIDENCE_BYTES + (MAX_CONSISTENCY_PATH + 1) * 67 + 64
/** The largest evidence text of any type a node stores or gossips (a divergence proof carries events). */
export const MAX_EVIDENCE_TEXT_BYTES = 1024 * 1024

/** What the evidence proves: `signer` signed two histories of `log_id` at `at_seq`. */
export interface Equivocation {
  signer: string
  log_id: string
  at_seq: number
  /** The hashes the two checkpoints disagree on (log_hash, state_hash, merkle_root). */
  differ: string[]
  a: Checkpoint
  b: Checkpoint
}

const DISAGREE = ['log_hash', 'state_hash', 'merkle_root'] as const

function malformed (message: string): never {
  throw new ReachError('RL-2110', { message: `equivocation evidence is malformed: ${message}` })
}

/** The evidence text for two checkpoint texts (checked: it throws what `checkEquivocation` would). */
export function equivocationEvidence (first: string, second: string): string {
  const [a, b] = decodeCheckpoint(first).checkpoint_id < decodeCheckpoint(second).checkpoint_id ? [first, second] : [second, first]
  const text = canonicalize({ a, b, type: EQUIVOCATION, v: EVIDENCE_VERSION })
  checkEquivocation(text)
  return text
}

/** What `text` proves, or the code of why it proves nothing. */
export function checkEquivocation (text: string): Equivocation {
  if (typeof text !== 'string') malformed('not text')
  if (Buffer.byteLength(text) > MAX_EVIDENCE_BYTES) malformed(`larger than ${MAX_EVIDENCE_BYTES} bytes`)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    malformed(`not JSON (${(err as Error).message})`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) malformed('not a JSON object')
  const e = value as Record<string, unknown>
  const keys = Object.keys(e).sort().join()
  if (keys !== 'a,b,type,v') malformed(`its members are ${keys}, not a, b, type, v`)
  if (e.v !== EVIDENCE_VERSION) malformed(`version ${JSON.stringify(e.v)}, not ${EVIDENCE_VERSION}`)
  if (e.type !== EQUIVOCATION) malformed(`type ${JSON.stringify(e.type)}, not ${EQUIVOCATION}`)
  if (typeof e.a !== 'string' || typeof e.b !== 'string') malformed('a and b must be checkpoint texts')
  if (canonicalize(e) !== text) malformed('not in canonical form (RFC 8785)')
  const a = decodeCheckpoint(e.a)
  const b = decodeCheckpoint(e.b)
  verifyCheckpoint(a)
  verifyCheckpoint(b)
  if (a.checkpoint_id === b.checkpoint_id) throw new ReachError('RL-2112', { message: `both are checkpoint ${a.checkpoint_id}: one checkpoint twice disagrees with nothing` })
  if (a.checkpoint_id > b.checkpoint_id) malformed('a must be the checkpoint with the smaller checkpoint_id')
  const apart = (what: string, x: unknown, y: unknown): never => {
    throw new ReachError('RL-2111', { message: `the two checkpoints are of two ${what} (${String(x)} and ${String(y)}): they cannot contradict each other` })
  }
  if (a.signer !== b.signer) apart('signers', a.signer, b.signer)
  if (a.log_id !== b.log_id) apart('logs', a.log_id, b.log_id)
  if (a.at_seq !== b.at_seq) apart('positions', a.at_seq, b.at_seq)
  if ((a.kind ?? 'log') !== (b.kind ?? 'log')) apart('kinds', a.kind ?? 'log', b.kind ?? 'log')
  const differ = DISAGREE.filter((f) => a[f] !== b[f])
  if (differ.length === 0) throw new ReachError('RL-2112', { message: `both sign the same history of ${a.log_id} at seq ${a.at_seq} (only the time of signing differs): not a disagreement` })
  return { signer: a.signer, log_id: a.log_id, at_seq: a.at_seq, differ: [...differ], a, b }
}

/**
 * What inconsistency evidence proves: `signer` signed `a` (an older head of a growing log) and
 * `b` (a newer one) whose first `a.at_seq + 1` leaves have another root than `a` says.
 */
export interface Inconsistency {
  signer: string
  log_id: string
  /** The older checkpoint's position; the newer tree's prefix of that size is not its tree. */
  at_seq: number
  /** The root of the newer tree's prefix, proven by the consistency path. */
  old_root: string
  a: Checkpoint
  b: Checkpoint
}

/**
 * The other form of equivocation (SPEC §6): a newer head `b` of a growing log (kind "log", the
 * audit ledger) that is not an extension of the older head `a`. It is offline-checkable: `proof`
 * is an RFC 6962 consistency path from `old_root` at size `a.at_seq + 1` to `b.merkle_root`, so
 * `old_root` is what `b`'s tree holds at `a`'s size; it is not `a.merkle_root`, so the signer
 * signed two histories. Whoever holds the newer log (fetched from the signer and checked against
 * `b`) computes both with `buildConsistencyProof`.
 *
 *   {"a":"<older checkpoint text>","b":"<newer>","old_root":"<hex>","proof":["<hex>",...],"type":"reach.inconsistency","v":1}
 */
export function inconsistencyEvidence (older: string, newer: string, oldRoot: string, proof: readonly string[]): string {
  const text = canonicalize({ a: older, b: newer, old_root: oldRoot, proof: [...proof], type: INCONSISTENCY, v: EVIDENCE_VERSION })
  checkInconsistency(text)
  return text
}

export function checkInconsistency (text: string): Inconsistency {
  if (typeof text !== 'string') malformed('not text')
  if (Buffer.byteLength(text) > MAX_INCONSISTENCY_BYTES) malformed(`larger than ${MAX_INCONSISTENCY_BYTES} bytes`)
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    malformed(`not JSON (${(err as Error).message})`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) malformed('not a JSON object')
  const e = value as Record<string, unknown>
  const keys = Object.keys(e).sort().join()
  if (keys !== 'a,b,old_root,proof,type,v') malformed(`its members are ${keys}, not a, b, old_root, proof, type, v`)
  if (e.v !== EVIDENCE_VERSION) malformed(`version ${JSON.stringify(e.v)}, not ${EVIDENCE_VERSION}`)
  if (e.type !== INCONSISTENCY) malformed(`type ${JSON.stringify(e.type)}, not ${INCONSISTENCY}`)
  if (typeof e.a !== 'string' || typeof e.b !== 'string') malformed('a and b must be checkpoint texts')
  if (!isHash(e.old_root)) malformed('old_root is not a SHA-256 hex')
  if (!Array.isArray(e.proof) || e.proof.length > MAX_CONSISTENCY_PATH || !e.proof.every(isHash)) malformed(`proof must be at most ${MAX_CONSISTENCY_PATH} SHA-256 hexes`)
  if (canonicalize(e) !== text) malformed('not in canonical form (RFC 8785)')
  const a = decodeCheckpoint(e.a)
  const b = decodeCheckpoint(e.b)
  verifyCheckpoint(a)
  verifyCheckpoint(b)
  const apart = (what: string, x: unknown, y: unknown): never => {
    throw new ReachError('RL-2111', { message: `the two checkpoints are of two ${what} (${String(x)} and ${String(y)}): they cannot contradict each other` })
  }
  if (a.signer !== b.signer) apart('signers', a.signer, b.signer)
  if (a.log_id !== b.log_id) apart('logs', a.log_id, b.log_id)
  if ((a.kind ?? 'log') !== 'log' || (b.kind ?? 'log') !== 'log') apart('kinds', a.kind ?? 'log', b.kind ?? 'log')
  if (a.at_seq >= b.at_seq) malformed('a must be the older head: its at_seq below b\'s')
  const proof = (e.proof as string[]).map(hexToBytes)
  if (!verifyConsistency(a.at_seq + 1, b.at_seq + 1, hexToBytes(e.old_root), hexToBytes(b.merkle_root), proof)) {
    throw new ReachError('RL-2202', { message: `consistency proof invalid: it does not lead from old_root at size ${a.at_seq + 1} to b's root at size ${b.at_seq + 1}` })
  }
  if (e.old_root === a.merkle_root) throw new ReachError('RL-2112', { message: `b's tree holds a's tree at size ${a.at_seq + 1}: the two heads are consistent` })
  return { signer: a.signer, log_id: a.log_id, at_seq: a.at_seq, old_root: e.old_root, a, b }
}

/** An evidence text's id: sha256 of its bytes (one encoding per evidence, so one id). */
export function evidenceId (text: string): string {
  return sha256Hex(text)
}
