/**
 * Gossip messages (SPEC §10.8): what nodes of a federation tell each other on gossipsub, one
 * topic per kind of statement, each message a canonical JSON envelope around a text that is
 * checked by its own module (a checkpoint, a receipt, evidence).
 *
 *   reach/<federation>/checkpoints/1  {checkpoint, federation, [pack_cid, run_id,] type: "reach.checkpoint", v: 1}
 *   reach/<federation>/receipts/1     {federation, receipt, run_id, type: "reach.receipt", v: 1}
 *   reach/<federation>/evidence/1     {evidence, federation, type: "reach.evidence", v: 1}
 *
 * A run checkpoint names the run and the pack, so that a witness knows what to fetch and replay;
 * both are claims the replay checks (the log's first event names the pack, the log server
 * answers for the run id). An audit-ledger checkpoint (kind "log") names neither.
 *
 * Decoding here is only the cheap part, in a fixed order: size, JSON, shape and version, the
 * federation. Signatures are checked last, by the caller, after it has asked its head store
 * whether the message is news at all. RL-2125 for a malformed message, RL-2126 for one of
 * another federation (a message can only be on our topic if its sender put it there).
 */
import { canonicalize } from './canonical.ts'
import { MAX_CHECKPOINT_BYTES } from './checkpoint.ts'
import { ReachError } from './errors.ts'
import { MAX_EVIDENCE_TEXT_BYTES } from './evidence.ts'
import { MAX_RECEIPT_BYTES } from './receipt.ts'
import { RUN_ID_PATTERN } from './run.ts'

export const GOSSIP_VERSION = 1
export const GOSSIP_KINDS = ['checkpoints', 'receipts', 'evidence'] as const
export type GossipKind = typeof GOSSIP_KINDS[number]

/** A federation id as it may appear in a topic: short, no slash, printable ASCII. */
export const FEDERATION_PATTERN = /^[A-Za-z0-9._-]{1,64}$/

/** The largest message of each topic: its text at its limit, JSON-escaped (at most 2×), and the envelope. */
export const MAX_GOSSIP_BYTES: Readonly<Record<GossipKind, number>> = {
  checkpoints: 2 * MAX_CHECKPOINT_BYTES + 512,
  receipts: 2 * MAX_RECEIPT_BYTES + 512,
  evidence: 2 * MAX_EVIDENCE_TEXT_BYTES + 512
}

const TYPES: Record<GossipKind, string> = { checkpoints: 'reach.checkpoint', receipts: 'reach.receipt', evidence: 'reach.evidence' }
const RUN_ID = new RegExp(RUN_ID_PATTERN)

export function gossipTopic (federation: string, kind: GossipKind): string {
  return `reach/${federation}/${kind}/${GOSSIP_VERSION}`
}

export interface CheckpointMessage { kind: 'checkpoints', checkpoint: string, run_id?: string, pack_cid?: string }
export interface ReceiptMessage { kind: 'receipts', receipt: string, run_id: string }
export interface EvidenceMessage { kind: 'evidence', evidence: string }
export type GossipMessage = CheckpointMessage | ReceiptMessage | EvidenceMessage

function malformed (kind: GossipKind, why: string): never {
  throw new ReachError('RL-2125', { message: `gossip message on ${kind} is malformed: ${why}`, details: { topic: kind } })
}

/** The bytes to publish: canonical JSON, checked against the limits a receiver applies. */
export function encodeGossip (federation: string, message: GossipMessage): Uint8Array {
  const { kind, ...fields } = message
  const text = canonicalize({ ...fields, federation, type: TYPES[kind], v: GOSSIP_VERSION } as never)
  const bytes = new TextEncoder().encode(text)
  decodeGossip(kind, bytes, federation)
  return bytes
}

const MEMBERS: Record<GossipKind, { required: string[], optional: string[] }> = {
  checkpoints: { required: ['checkpoint'], optional: ['pack_cid', 'run_id'] },
  receipts: { required: ['receipt', 'run_id'], optional: [] },
  evidence: { required: ['evidence'], optional: [] }
}

/**
 * A message from the bytes gossipsub handed us, its cheap checks made in order: size, JSON, an
 * object of exactly the topic's members, version and type, canonical form, the federation.
 */
export function decodeGossip (kind: GossipKind, data: Uint8Array, federation: string): GossipMessage {
  if (data.byteLength > MAX_GOSSIP_BYTES[kind]) malformed(kind, `${data.byteLength} bytes, more than ${MAX_GOSSIP_BYTES[kind]}`)
  let text: string
  let value: unknown
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data)
    value = JSON.parse(text)
  } catch {
    malformed(kind, 'not UTF-8 JSON')
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) malformed(kind, 'not a JSON object')
  const m = value as Record<string, unknown>
  const { required, optional } = MEMBERS[kind]
  const allowed = new Set([...required, ...optional, 'federation', 'type', 'v'])
  for (const key of Object.keys(m)) if (!allowed.has(key)) malformed(kind, `unknown member ${JSON.stringify(key)}`)
  for (const key of [...required, 'federation', 'type', 'v']) if (!(key in m)) malformed(kind, `no ${key}`)
  if (m.v !== GOSSIP_VERSION) malformed(kind, `version ${JSON.stringify(m.v)}, not ${GOSSIP_VERSION}`)
  if (m.type !== TYPES[kind]) malformed(kind, `type ${JSON.stringify(m.type)}, not ${TYPES[kind]}`)
  for (const key of [...required, ...optional]) if (key in m && typeof m[key] !== 'string') malformed(kind, `${key} is not a string`)
  if (canonicalize(m as never) !== text) malformed(kind, 'not in canonical form (RFC 8785)')
  if (m.federation !== federation) {
    throw new ReachError('RL-2126', { message: `gossip message of federation ${JSON.stringify(m.federation)} on ${gossipTopic(federation, kind)}`, details: { federation: String(m.federation) } })
  }
  switch (kind) {
    case 'checkpoints': {
      if ((m.run_id === undefined) !== (m.pack_cid === undefined)) malformed(kind, 'run_id and pack_cid come together')
      if (m.run_id !== undefined && !RUN_ID.test(m.run_id as string)) malformed(kind, 'run_id is not a run id')
      if (m.pack_cid !== undefined && ((m.pack_cid as string).length === 0 || (m.pack_cid as string).length > 128)) malformed(kind, 'pack_cid is not a CID')
      return { kind, checkpoint: m.checkpoint as string, ...(m.run_id === undefined ? {} : { run_id: m.run_id as string, pack_cid: m.pack_cid as string }) }
    }
    case 'receipts':
      if (!RUN_ID.test(m.run_id as string)) malformed(kind, 'run_id is not a run id')
      return { kind, receipt: m.receipt as string, run_id: m.run_id as string }
    case 'evidence':
      return { kind, evidence: m.evidence as string }
  }
}
