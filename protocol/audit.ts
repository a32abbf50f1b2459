/**
 * The audit ledger's formats (SPEC §7.4): what a node did, kept as an ordinary event log (§2)
 * whose events are all of type `audit.<what>`, checkpointed like any log (§6, kind "log") and
 * served like a run's log (§10.6). A node that rewrites its own audit history, however
 * carefully it re-hashes and re-signs it, is caught by an RFC 6962 consistency check between a
 * checkpoint it signed before and one it signs after: `checkLedgerConsistency`.
 *
 *   genesis (seq 0)  audit.ledger.created  {at, format: "reach-audit/1", nonce, signer}
 *   then             audit.<what>          {at, peer, [code,] [run_id,] [cid,] [key,] [detail]}
 *                    audit.ledger.dropped  {at, count}: entries the node could not keep
 *
 * The ledger's log id is its genesis event's hash, as for every log. Its checkpoints' state hash
 * is §4's, which for a ledger (no event of a type the built-in reducer handles) only counts the
 * events: `ledgerStateHash(n)`; what the ledger holds is bound by the Merkle root.
 */
import type { Checkpoint } from './checkpoint.ts'
import { verifyCheckpoint } from './checkpoint.ts'
import { ReachError } from './errors.ts'
import { verifyConsistencyJson, type ConsistencyProofJson } from './merkle.ts'
import { stateHash } from './state.ts'

/** The genesis payload's `format`. */
export const AUDIT_FORMAT = 'reach-audit/1'
/** Every ledger event's type starts with this. */
export const AUDIT_TYPE_PREFIX = 'audit.'
/** The ledger's first event. */
export const LEDGER_CREATED = 'audit.ledger.created'
/** Entries the node had to drop (its queue full while its disk refused writes), and how many. */
export const LEDGER_DROPPED = 'audit.ledger.dropped'
/** What follows `audit.`: dot-separated lower-case words (`delegation.sent`, `trust.changed`). */
export const AUDIT_KIND_PATTERN = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/
/** The longest kind: `audit.` + this stays within an event type's 128 characters. */
export const MAX_AUDIT_KIND_LENGTH = 96

export function isAuditKind (kind: unknown): kind is string {
  return typeof kind === 'string' && kind.length <= MAX_AUDIT_KIND_LENGTH && AUDIT_KIND_PATTERN.test(kind)
}

/**
 * The §4 state hash of a ledger of `size` events: `SHA-256(canonical({"aggregates":{},"version":size}))`.
 * The built-in reducer handles no `audit.*` type, so this is what replaying the ledger gives.
 */
export function ledgerStateHash (size: number): string {
  return stateHash({ version: size, aggregates: {} })
}

function notComparable (message: string, details: Record<string, unknown>): never {
  throw new ReachError('RL-2120', { message, details })
}

function badProof (message: string, details: Record<string, unknown>): never {
  throw new ReachError('RL-2202', { message: `consistency proof invalid: ${message}`, details })
}

/**
 * Check that `newer` extends `older`, two checkpoints of one ledger, with `proof` (SPEC §7.4).
 * In this order: each checkpoint on its own (RL-2105, RL-2108, RL-2101); both of kind "log",
 * by one signer, of one log, `older` not past `newer` (RL-2120); the proof well-formed and
 * leading from its old root to its new root (RL-2202); its sizes `older.at_seq + 1` and
 * `newer.at_seq + 1`, its new root `newer`'s (RL-2202); and last its old root `older`'s: a proof
 * that passes everything but this shows the signer's newer tree holds another history at the
 * older size, a rewritten ledger (RL-2202 with `details.rewritten`, and the old root and path
 * that prove it). Returns the proof.
 */
export function checkLedgerConsistency (older: Checkpoint, newer: Checkpoint, proof: unknown): ConsistencyProofJson {
  verifyCheckpoint(older)
  verifyCheckpoint(newer)
  for (const cp of [older, newer]) {
    if ((cp.kind ?? 'log') !== 'log') notComparable(`checkpoint ${cp.checkpoint_id} is of kind ${String(cp.kind)}, not a ledger's ("log")`, { checkpoint_id: cp.checkpoint_id, kind: cp.kind })
  }
  if (older.signer !== newer.signer) notComparable(`the checkpoints have two signers (${older.signer} and ${newer.signer})`, { older: older.signer, newer: newer.signer })
  if (older.log_id !== newer.log_id) notComparable(`the checkpoints are of two logs (${older.log_id} and ${newer.log_id})`, { older: older.log_id, newer: newer.log_id })
  if (older.at_seq > newer.at_seq) notComparable(`the older checkpoint (at seq ${older.at_seq}) is past the newer (at seq ${newer.at_seq})`, { older: older.at_seq, newer: newer.at_seq })
  verifyConsistencyJson(proof)
  const p = proof as ConsistencyProofJson
  const oldSize = older.at_seq + 1
  const newSize = newer.at_seq + 1
  if (p.old_size !== oldSize || p.new_size !== newSize) {
    badProof(`it is between sizes ${p.old_size} and ${p.new_size}, not the checkpoints' ${oldSize} and ${newSize}`, { old_size: p.old_size, new_size: p.new_size, expected_old_size: oldSize, expected_new_size: newSize })
  }
  if (p.new_root !== newer.merkle_root) {
    badProof(`it ends at root ${p.new_root}, not the newer checkpoint's ${newer.merkle_root}`, { new_root: p.new_root, expected_new_root: newer.merkle_root })
  }
  if (p.old_root !== older.merkle_root) {
    badProof(`the newer checkpoint's tree holds root ${p.old_root} at size ${oldSize}, not the older checkpoint's ${older.merkle_root}: the ledger was rewritten`, {
      rewritten: true,
      old_size: oldSize,
      old_root: p.old_root,
      expected_old_root: older.merkle_root,
      path: p.path
    })
  }
  return p
}
