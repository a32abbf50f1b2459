/**
 * `/reach/log/1.0.0`: a finished run's event log, fetched from the node that
 * ran it, and the checks that turn a peer's claim into something we verified.
 *
 *   client → log.get {run_id}
 *   server → log {run_id, events, pack_cid, checkpoint} , log.events {events ≤ 1000} … , log.end
 *
 * `verifyRemoteRun` is what `reach delegate --verify` and `reach verify-remote`
 * do with it: the chain must hold, its head must be the one the signed result
 * named, and replaying the pack locally must give the same record.
 */
import type { Libp2p } from '@libp2p/interface'
import type { JsonObject } from '../protocol/canonical.ts'
import { chainError, verifyChain } from '../protocol/chain.ts'
import { checkpointBinding, digestLog } from '../protocol/digest.ts'
import { hashCanonical } from '../protocol/hash.ts'
import { decodeCheckpoint, verifyCheckpoint, type Checkpoint } from '../protocol/checkpoint.ts'
import { ReachError, isReachError } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { LOG_BATCH_BYTES, LOG_BATCH_EVENTS, MAX_FRAME, PROTOCOLS } from '../protocol/wire.ts'
import { replayRecordedRun, startOf } from '../packs/runner.ts'
import { runPackOf } from '../node/node.ts'
import type { StoredPack } from '../node/pack-store.ts'
import { recordOf, type RunRecord, type RunStore } from '../node/runs.ts'
import { frames, isErrorFrame, peerError } from './frames.ts'

/** Largest log served or accepted (events): a run's tool-call budget bounds real logs far below this. */
export const MAX_LOG_EVENTS = 1_000_000

export interface LogServerInit {
  host: Libp2p
  runs: RunStore
  log?: (line: string) => void
}

/** Serve finished runs' logs. Returns a function that unregisters the handler. */
export async function serveLogs (init: LogServerInit): Promise<() => Promise<void>> {
  const { host, runs } = init
  await host.handle(PROTOCOLS.log, async (stream, connection) => {
    const fs = frames(stream, MAX_FRAME.logBatch)
    try {
      const ask = await fs.read(['log.get'])
      if (isErrorFrame(ask)) return await fs.close()
      let record: RunRecord
      let events: Event[]
      try {
        record = await runs.record(ask.run_id)
        events = await runs.events(ask.run_id)
      } catch (err) {
        throw isReachError(err, 'RL-3019') ? new ReachError('RL-4017', { message: `no run ${ask.run_id} here` }) : err
      }
      if (record.status === 'running') throw new ReachError('RL-4017', { message: `run ${ask.run_id} has not finished` })
      await fs.write({ v: 1, type: 'log', run_id: ask.run_id, events: events.length, pack_cid: record.artifact_hash, checkpoint: await runs.checkpointText(ask.run_id) })
      // Batches of at most LOG_BATCH_EVENTS events and about LOG_BATCH_BYTES of JSON.
      let batch: Event[] = []
      let bytes = 0
      for (const event of events) {
        const size = JSON.stringify(event).length
        if (batch.length > 0 && (batch.length >= LOG_BATCH_EVENTS || bytes + size > LOG_BATCH_BYTES)) {
          await fs.write({ v: 1, type: 'log.events', events: batch })
          batch = []
          bytes = 0
        }
        batch.push(event)
        bytes += size
      }
      if (batch.length > 0) await fs.write({ v: 1, type: 'log.events', events: batch })
      await fs.write({ v: 1, type: 'log.end' })
      await fs.close()
    } catch (err) {
      init.log?.(`log: refused ${connection.remotePeer.toString()}: ${(err as Error).message}`)
      await fs.refuse(err)
    }
  }, { maxInboundStreams: 16 })
  return async () => { await host.unhandle(PROTOCOLS.log) }
}

export interface FetchedLog {
  run_id: string
  pack_cid: string
  events: Event[]
  checkpoint: Checkpoint
}

/** Fetch a run's log from `peer`; the checkpoint must be signed by `signer` (the peer's key). */
export async function fetchLog (host: Libp2p, peer: Parameters<Libp2p['dialProtocol']>[0], runId: string, signer: string, options: { signal?: AbortSignal, timeoutMs?: number } = {}): Promise<FetchedLog> {
  let stream
  try {
    stream = await host.dialProtocol(peer, PROTOCOLS.log, { signal: options.signal ?? AbortSignal.timeout(options.timeoutMs ?? 10_000) })
  } catch (err) {
    throw new ReachError('RL-4002', { message: `cannot reach ${String(peer)} for the log: ${(err as Error).message}`, cause: err })
  }
  const fs = frames(stream, MAX_FRAME.logBatch)
  const peerName = String(peer)
  try {
    await fs.write({ v: 1, type: 'log.get', run_id: runId })
    const header = await fs.read(['log'], options)
    if (isErrorFrame(header)) throw peerError(header, peerName)
    if (header.run_id !== runId || header.events > MAX_LOG_EVENTS) throw new ReachError('RL-4014', { message: `peer answered for ${header.run_id} with ${header.events} events` })
    const checkpoint = decodeCheckpoint(header.checkpoint)
    verifyCheckpoint(checkpoint, { expectedSigner: signer })
    const events: Event[] = []
    for (;;) {
      const next = await fs.read(['log.events', 'log.end'], options)
      if (isErrorFrame(next)) throw peerError(next, peerName)
      if (next.type === 'log.end') break
      events.push(...(next.events as Event[]))
      if (events.length > header.events) throw new ReachError('RL-4014', { message: `peer sent more events than the ${header.events} it announced` })
    }
    if (events.length !== header.events) throw new ReachError('RL-4014', { message: `peer announced ${header.events} events and sent ${events.length}` })
    await fs.close()
    return { run_id: runId, pack_cid: header.pack_cid, events, checkpoint }
  } catch (err) {
    fs.reset(err as Error)
    throw err
  }
}

export interface RemoteVerdict {
  verified: boolean
  record: RunRecord
  /** The first divergence, when the replay did not verify. */
  divergence?: { seq: number, reason: string }
}

/**
 * Check a fetched log against what the peer signed, then replay it with the
 * pack. Throws RL-2xxx when the log itself is broken or does not match its
 * checkpoint (the peer lied about the bytes), RL-4014 when it is not the run
 * that was claimed; returns verified: false with the divergence when the
 * bytes are consistent but the pack does not reproduce them.
 */
export async function verifyRemoteRun (log: FetchedLog, pack: StoredPack, claim?: { head?: { seq: number, hash: string }, record?: RunRecord }): Promise<RemoteVerdict> {
  const chain = verifyChain(log.events)
  if (!chain.ok) throw chainError(chain)
  const last = log.events.at(-1)
  if (last === undefined) throw new ReachError('RL-4014', { message: 'the peer sent an empty log' })
  if (log.checkpoint.at_seq !== last.seq || log.checkpoint.log_hash !== last.hash) {
    throw new ReachError('RL-4014', { message: `the log ends at seq ${last.seq} (${last.hash.slice(0, 12)}…), the peer's checkpoint says seq ${log.checkpoint.at_seq} (${log.checkpoint.log_hash.slice(0, 12)}…)` })
  }
  if (claim?.head !== undefined && (claim.head.seq !== last.seq || claim.head.hash !== last.hash)) {
    throw new ReachError('RL-4014', { message: 'the log is not the one the signed result named' })
  }
  if (pack.cid !== log.pack_cid || (last.type !== 'RunCompleted' && last.type !== 'RunFailed' && last.type !== 'RunCancelled')) {
    throw new ReachError('RL-4014', { message: 'the log is not a finished run of that pack' })
  }
  const record = recordOf(log.run_id, log.events)
  // The peer's checkpoint must be of this very log: its id, head, Merkle root and outcome.
  const problems = checkpointBinding(log.checkpoint, digestLog(log.events, { reduce: false })).filter((c) => c.check !== 'state_hash' && !c.ok)
  const outcome = hashCanonical({ status: record.status, output_hash: record.output_hash, error: record.error })
  if (problems.length > 0 || log.checkpoint.state_hash !== outcome) {
    throw new ReachError('RL-4014', { message: `the peer's checkpoint does not sign this log (${[...problems.map((p) => p.check), ...(log.checkpoint.state_hash !== outcome ? ['state_hash'] : [])].join(', ')} differ)` })
  }
  if (claim?.record !== undefined && claim.record.fingerprint !== record.fingerprint) {
    throw new ReachError('RL-4014', { message: `the signed record's fingerprint ${claim.record.fingerprint} is not the log's ${record.fingerprint}` })
  }
  const started = log.events[0]?.payload as JsonObject | undefined
  if (started?.pack_cid !== pack.cid) throw new ReachError('RL-4014', { message: 'the log was recorded with another pack' })
  const verdict = await replayRecordedRun(startOf(log.events, runPackOf(pack)), log.events)
  if (!verdict.ok) return { verified: false, record, divergence: { seq: verdict.divergence.seq, reason: verdict.divergence.reason } }
  return { verified: true, record }
}
