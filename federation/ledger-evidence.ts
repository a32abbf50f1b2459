/**
 * Is a peer's newer ledger head an extension of the older one? (issue 13 §1, §4; SPEC §6
 * "Inconsistency evidence".) The witness asks this before it takes a newer head of a growing
 * log, and gets back either nothing (consistent) or evidence anyone can check offline.
 *
 * 1. Ask the signer for a consistency proof (RFC 6962) between the two sizes. A proof that holds
 *    and starts at the older root: consistent.
 * 2. A proof that holds but starts at another root is the signer's own admission: its newer tree
 *    holds another history at the older size. That root and path are the evidence.
 * 3. A proof that leads nowhere proves nothing either way; so fetch the ledger itself (checked
 *    on arrival against the checkpoint it is served with) and compute the root and path here.
 *
 * Anything else (the signer does not answer, serves a ledger that is not `newer`'s) throws: the
 * witness cannot tell, and takes no new head.
 */
import type { Checkpoint } from '../protocol/checkpoint.ts'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { inconsistencyEvidence } from '../protocol/evidence.ts'
import { buildConsistencyProof, leafHash, merkleRoot } from '../protocol/merkle.ts'
import type { Dialer } from './components.ts'
import { fetchLedger, fetchLedgerConsistency } from './log-client.ts'

export async function ledgerConsistency (dialer: Dialer, peer: string, older: { checkpoint: Checkpoint, text: string }, newer: { checkpoint: Checkpoint, text: string }, signal: AbortSignal): Promise<string | undefined> {
  try {
    await fetchLedgerConsistency(dialer, peer, older.checkpoint, newer.checkpoint, { signal })
    return undefined
  } catch (err) {
    if (!isReachError(err, 'RL-2202')) throw err
    const d = err.details as { rewritten?: unknown, old_root?: unknown, path?: unknown } | undefined
    if (d?.rewritten === true && typeof d.old_root === 'string' && Array.isArray(d.path)) {
      return inconsistencyEvidence(older.text, newer.text, d.old_root, d.path as string[])
    }
  }
  return await fromLedger(dialer, peer, older, newer, signal)
}

/** The root and path computed from the ledger the signer serves, when its own proof said nothing. */
async function fromLedger (dialer: Dialer, peer: string, older: { checkpoint: Checkpoint, text: string }, newer: { checkpoint: Checkpoint, text: string }, signal: AbortSignal): Promise<string | undefined> {
  const n = newer.checkpoint.at_seq + 1
  const m = older.checkpoint.at_seq + 1
  const ledger = await fetchLedger(dialer, peer, { signal, logId: newer.checkpoint.log_id })
  const hashes: string[] = []
  try {
    for await (const batch of ledger.batches) for (const e of batch) hashes.push(e.hash)
  } finally {
    ledger.close()
  }
  if (hashes.length < n) throw new ReachError('RL-4014', { message: `${peer} serves ${hashes.length} ledger events, fewer than the ${n} its newer head covers` })
  if (Buffer.from(merkleRoot(hashes.slice(0, n).map(leafHash))).toString('hex') !== newer.checkpoint.merkle_root) {
    throw new ReachError('RL-4014', { message: `the ledger ${peer} serves is not the one its newer head signs` })
  }
  const oldRoot = Buffer.from(merkleRoot(hashes.slice(0, m).map(leafHash))).toString('hex')
  if (oldRoot === older.checkpoint.merkle_root) return undefined
  return inconsistencyEvidence(older.text, newer.text, oldRoot, buildConsistencyProof(hashes.slice(0, n), m, n).path)
}
