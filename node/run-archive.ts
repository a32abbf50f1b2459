/**
 * A run as one self-verifying CAR file (CARv1, @ipld/car): everything a
 * second node needs to replay it offline.
 *
 *   root   dag-cbor {version: 1, kind: "reach-run", record, pack: CID, signatures: CID, log: CID, checkpoint: CID}
 *   pack        the pack bundle, exactly its bytes (its own CID)
 *   signatures  dag-cbor [publisher signature envelopes]
 *   log         dag-cbor {version: 1, events: [canonical event text, …]}  (text, so bytes are exact)
 *   checkpoint  dag-cbor {text: the checkpoint file}
 *
 * Import verifies before it stores anything: every block against its CID,
 * the pack against its CID and the node's policy and trust registry, the
 * log's chain, the checkpoint's signature and its binding to the log, and
 * the record against the one the log implies.
 */
import { CarBufferReader, CarBufferWriter } from '@ipld/car'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { chainError, verifyChain } from '../protocol/chain.ts'
import { decodeCheckpoint, verifyCheckpoint } from '../protocol/checkpoint.ts'
import { digestLog } from '../protocol/digest.ts'
import { ReachError } from '../protocol/errors.ts'
import { canonicalEventText, type Event } from '../protocol/event.ts'
import { decodeBundle, type Pack } from '../packs/bundle.ts'
import { recordOf, type RunRecord } from './runs.ts'

export const ARCHIVE_VERSION = 1

interface Root {
  version: number
  kind: string
  record: RunRecord
  pack: CID
  signatures: CID
  log: CID
  checkpoint: CID
}

export interface RunArchive {
  record: RunRecord
  pack: Pack
  signatures: unknown[]
  events: Event[]
  checkpointText: string
}

function block (value: unknown): { cid: CID, bytes: Uint8Array } {
  const bytes = dagCbor.encode(value)
  return { cid: CID.createV1(dagCbor.code, sha256.digest(bytes) as never), bytes }
}

function bad (message: string): never {
  throw new ReachError('RL-2001', { message: `run archive: ${message}` })
}

export function writeRunArchive (a: RunArchive): Uint8Array {
  const pack = { cid: CID.parse(a.pack.cid), bytes: a.pack.bytes }
  const signatures = block(a.signatures)
  const log = block({ version: 1, events: a.events.map((e) => canonicalEventText(e)) })
  const checkpoint = block({ text: a.checkpointText })
  const root = block({ version: ARCHIVE_VERSION, kind: 'reach-run', record: a.record, pack: pack.cid, signatures: signatures.cid, log: log.cid, checkpoint: checkpoint.cid })
  const blocks = [root, pack, signatures, log, checkpoint]
  const size = blocks.reduce((n, b) => n + b.bytes.length + 200, 1024)
  const writer = CarBufferWriter.createWriter(new ArrayBuffer(size), { roots: [root.cid] })
  for (const b of blocks) writer.write(b as never)
  return writer.close({ resize: true })
}

/** Decode and verify an archive. Throws before anything is stored; storing is the caller's. */
export async function readRunArchive (bytes: Uint8Array): Promise<RunArchive> {
  let reader: CarBufferReader
  try {
    reader = CarBufferReader.fromBytes(bytes)
  } catch (err) {
    throw new ReachError('RL-1002', { message: `not a CAR file: ${(err as Error).message}` })
  }
  const get = async (cid: CID): Promise<Uint8Array> => {
    const b = reader.get(cid)
    if (b === undefined) bad(`block ${cid.toString()} is missing`)
    // Every byte is re-hashed against the CID it arrived under.
    const digest = await sha256.digest(b.bytes)
    if (!CID.createV1(cid.code, digest).equals(cid)) throw new ReachError('RL-3003', { message: `run archive: block ${cid.toString()} does not match its CID` })
    return b.bytes
  }
  const [rootCid] = reader.getRoots()
  if (rootCid === undefined) bad('no root')
  const root = dagCbor.decode(await get(rootCid)) as Root
  if (root?.version !== ARCHIVE_VERSION || root.kind !== 'reach-run') bad('not a version 1 reach-run archive')
  const pack = decodeBundle(await get(root.pack), root.pack.toString())
  const signatures = dagCbor.decode(await get(root.signatures)) as unknown[]
  const log = dagCbor.decode(await get(root.log)) as { events: string[] }
  const events = log.events.map((t) => JSON.parse(t) as Event)
  const chain = verifyChain(events)
  if (!chain.ok) throw chainError(chain)
  const checkpointText = (dagCbor.decode(await get(root.checkpoint)) as { text: string }).text
  const cp = decodeCheckpoint(checkpointText)
  verifyCheckpoint(cp)
  const d = digestLog(events, { reduce: false })
  if (cp.log_id !== d.log_id || cp.at_seq !== d.last_seq || cp.log_hash !== d.log_hash || cp.merkle_root !== d.merkle_root) {
    throw new ReachError('RL-2102', { message: 'run archive: the checkpoint does not cover this log' })
  }
  const implied = recordOf(root.record.run_id, events)
  for (const field of ['engine_version', 'policy_version', 'input_hash', 'artifact_hash', 'output_hash', 'event_log_hash', 'fingerprint', 'status'] as const) {
    if (implied[field] !== root.record[field]) bad(`the record's ${field} does not match its log`)
  }
  if (implied.artifact_hash !== pack.cid) bad('the record names another pack')
  // The version is this node's to say: an archive calling its record version 1 must not make
  // its run replay under the rules of runs from before engine builds (only our own old runs do).
  return { record: { ...root.record, version: implied.version }, pack, signatures, events, checkpointText }
}
