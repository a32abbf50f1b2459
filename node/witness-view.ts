/**
 * What `reach checkpoints` and `reach evidence` show, from a WitnessStore: the control API
 * answers with it while the node runs, the CLI opens witness.db and answers the same otherwise.
 */
import { ReachError } from '../protocol/errors.ts'
import { peerIdOfPublicKey } from '../protocol/peer-id.ts'
import type { CheckpointEntry, EvidenceEntry, ReceiptEntry } from '../federation/witness.ts'
import type { RunCheckpoints, WitnessStore } from './witness-store.ts'

export interface RunView {
  run_id: string | undefined
  checkpoint_id: string
  signer: string
  /** The signer's peer id. */
  peer: string
  at_seq: number
  pack_cid: string | undefined
  received_at: number
  /** The distinct peers that replayed it and signed a receipt. */
  receipts: Array<{ peer: string, signer: string, received_at: number, receipt?: string }>
}

export interface EvidenceView extends Omit<EvidenceEntry, 'text'> {
  /** The peer the evidence convicts. */
  peer: string
  text?: string
}

function receiptView (r: ReceiptEntry, full: boolean): RunView['receipts'][number] {
  return { peer: peerIdOfPublicKey(r.signer), signer: r.signer, received_at: r.received_at, ...(full ? { receipt: r.text } : {}) }
}

export function runView (r: RunCheckpoints, full = false): RunView & { checkpoint?: string } {
  const c: CheckpointEntry = r.checkpoint
  return {
    run_id: c.run_id,
    checkpoint_id: c.checkpoint_id,
    signer: c.signer,
    peer: peerIdOfPublicKey(c.signer),
    at_seq: c.at_seq,
    pack_cid: c.pack_cid,
    received_at: c.received_at,
    receipts: r.receipts.map((x) => receiptView(x, full)),
    ...(full ? { checkpoint: c.text } : {})
  }
}

export function evidenceView (e: EvidenceEntry, full = false): EvidenceView {
  const { text, ...rest } = e
  return { ...rest, peer: peerIdOfPublicKey(e.signer), ...(full ? { text } : {}) }
}

export async function listRuns (store: WitnessStore, options: { run?: string, limit?: number }): Promise<RunView[]> {
  return (await store.runs(options)).map((r) => runView(r))
}

export async function showCheckpoint (store: WitnessStore, id: string): Promise<RunView & { checkpoint?: string }> {
  const found = await store.checkpoint(id)
  if (found === undefined) throw new ReachError('RL-1015', { message: `no checkpoint ${id} here` })
  return runView(found, true)
}

export function listEvidence (store: WitnessStore, limit?: number): EvidenceView[] {
  const all = store.evidenceList().map((e) => evidenceView(e))
  return limit === undefined ? all : all.slice(0, limit)
}

export function showEvidence (store: WitnessStore, id: string): EvidenceView {
  const e = store.evidence(id)
  if (e === undefined) throw new ReachError('RL-1015', { message: `no evidence ${id} here` })
  return evidenceView(e, true)
}
