/**
 * `/reach/log/1.0.0`, the fetching side (SPEC §10.6): a peer's finished run, as a header whose
 * checkpoint is verified at once and a stream of batches, each chain-verified as it arrives.
 * A batch is asked for (`log.next`) only when the consumer wants one: a node holds one frame
 * (at most MAX_FRAME.logBatch) and what its consumer keeps, whatever length the peer announces.
 *
 * A peer's audit ledger comes the same way (`fetchLedger`), bound at its end to the checkpoint
 * the peer signed for it; `fetchConsistency` asks it to prove that a newer head of its ledger
 * extends an older one (RFC 6962), and `fetchLedgerConsistency` checks that proof against two
 * checkpoints the peer signed (SPEC §7.4).
 */
import { checkLedgerConsistency } from '../protocol/audit.ts'
import { chainError, ChainVerifier } from '../protocol/chain.ts'
import { decodeCheckpoint, verifyCheckpoint, type Checkpoint } from '../protocol/checkpoint.ts'
import { checkpointBinding, type LogDigest } from '../protocol/digest.ts'
import { ReachError } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { isHash } from '../protocol/hash.ts'
import { MerkleAccumulator, verifyConsistencyJson, type ConsistencyProofJson } from '../protocol/merkle.ts'
import { aggregatesReducer } from '../protocol/reducer.ts'
import { emptyState, stateHash } from '../protocol/state.ts'
import { publicKeyOfPeerId } from '../protocol/peer-id.ts'
import { isRunId } from '../protocol/run.ts'
import { MAX_FRAME, PROTOCOLS } from '../protocol/wire.ts'
import type { Dialer } from './components.ts'
import { frames, isErrorFrame, peerError, type FrameStream } from './frames.ts'

/** Largest log served or accepted (events): a run's tool-call budget bounds real logs far below this. */
export const MAX_LOG_EVENTS = 1_000_000
/** A dial, and each frame, gets this long unless the caller gives a signal. */
export const LOG_TIMEOUT_MS = 10_000
/**
 * Largest audit ledger accepted by default (events). A ledger only grows; the client holds one
 * batch at a time whatever its length, so this bounds only how long a fetch may run.
 */
export const MAX_LEDGER_EVENTS = 100_000_000

export interface LogStream {
  peer: string
  run_id: string
  pack_cid: string
  /** Events the peer announced; the stream ends with exactly these (else RL-4014). */
  announced: number
  /** Decoded and verified against the peer's key (SPEC §6). */
  checkpoint: Checkpoint
  /**
   * The events in batches, each event chain-checked on arrival (SPEC §3): the first bad one
   * throws its code and seq, and nothing after it is handed on. Iterate once; stopping early
   * resets the stream.
   */
  batches: AsyncIterable<readonly Event[]>
  /** Reset the stream if the batches were never read to the end. */
  close (): void
}

/** Fetch the header of `runId`'s log from `peer`; its checkpoint must be signed by the peer's key. */
export async function fetchLog (dialer: Dialer, peer: string, runId: string, options: { signal?: AbortSignal } = {}): Promise<LogStream> {
  const signer = publicKeyOfPeerId(peer)
  // A frame the peer would refuse as malformed is not sent: the caller's mistake is said here.
  if (!isRunId(runId)) throw new ReachError('RL-3019', { message: `${runId} is not a run id` })
  let stream
  try {
    stream = await dialer.dial(peer, PROTOCOLS.log, { signal: options.signal ?? AbortSignal.timeout(LOG_TIMEOUT_MS) })
  } catch (err) {
    if (err instanceof ReachError && err.code === 'RL-1011') throw err
    throw new ReachError('RL-4002', { message: `cannot reach ${peer} for the log: ${(err as Error).message}`, cause: err })
  }
  const fs = frames(stream, MAX_FRAME.logBatch)
  const read = options.signal === undefined ? {} : { signal: options.signal }
  let header
  try {
    await fs.write({ v: 1, type: 'log.get', run_id: runId })
    header = await fs.read(['log'], read)
    if (isErrorFrame(header)) throw peerError(header, peer)
    if (header.run_id !== runId || header.events > MAX_LOG_EVENTS) throw new ReachError('RL-4014', { message: `peer answered for ${header.run_id} with ${header.events} events` })
  } catch (err) {
    fs.reset(err as Error)
    throw err
  }
  let checkpoint: Checkpoint
  try {
    checkpoint = decodeCheckpoint(header.checkpoint)
    verifyCheckpoint(checkpoint, { expectedSigner: signer })
  } catch (err) {
    fs.reset(err as Error)
    throw err
  }
  const announced = header.events
  const { batches, close } = eventBatches(fs, peer, announced, read, {})
  return { peer, run_id: runId, pack_cid: header.pack_cid, announced, checkpoint, batches, close }
}

/**
 * The batches that follow a header, asked for (`log.next`) one at a time as the consumer wants
 * them, each event chain-checked on arrival (SPEC §3); `accept` sees each accepted event, `end`
 * runs at `log.end` once the count is right (a throw there fails the stream, as a bad event does).
 */
function eventBatches (fs: FrameStream, peer: string, announced: number, read: { signal?: AbortSignal }, hooks: { accept?: (e: Event) => void, end?: () => void }): { batches: AsyncIterable<readonly Event[]>, close: () => void } {
  let finished = false
  async function * batches (): AsyncGenerator<readonly Event[]> {
    const chain = new ChainVerifier(null)
    let received = 0
    try {
      for (;;) {
        // One batch at a time, when the consumer wants it (SPEC §10.6).
        await fs.write({ v: 1, type: 'log.next' })
        const next = await fs.read(['log.events', 'log.end'], read)
        if (isErrorFrame(next)) throw peerError(next, peer)
        if (next.type === 'log.end') {
          const end = chain.end()
          if (!end.ok) throw chainError(end)
          if (received !== announced) throw new ReachError('RL-4014', { message: `peer announced ${announced} events and sent ${received}` })
          hooks.end?.()
          finished = true
          await fs.close()
          return
        }
        received += next.events.length
        if (received > announced) throw new ReachError('RL-4014', { message: `peer sent more events than the ${announced} it announced` })
        const accepted: Event[] = []
        for (const value of next.events) {
          const before = chain.checked
          const failure = chain.push(value)
          if (failure !== undefined) throw chainError(failure)
          // An event that jumped ahead is held by the verifier until the next one says why.
          if (chain.checked > before) accepted.push(value as Event)
        }
        if (hooks.accept !== undefined) for (const e of accepted) hooks.accept(e)
        if (accepted.length > 0) yield accepted
      }
    } finally {
      if (!finished) fs.reset(new ReachError('RL-4002', { message: 'log stream not read to the end' }))
    }
  }
  return { batches: batches(), close: () => { if (!finished) fs.reset(new ReachError('RL-4002', { message: 'log stream closed early' })) } }
}

export interface LedgerStream {
  peer: string
  log_id: string
  /** Events the peer announced: its checkpoint's `at_seq + 1`. */
  announced: number
  /** Decoded and verified against the peer's key (SPEC §6), of kind "log". */
  checkpoint: Checkpoint
  /** The checkpoint's file text, as the peer sent it (what evidence and gossip carry). */
  checkpointText: string
  /**
   * The ledger's events in batches, each chain-checked on arrival; at the end the log they make
   * is held to the checkpoint (log id RL-2109, last hash RL-2102, Merkle root RL-2103, state
   * hash RL-2104) before the stream counts as read. Iterate once; stopping early resets it.
   */
  batches: AsyncIterable<readonly Event[]>
  close (): void
}

async function dialLog (dialer: Dialer, peer: string, signal: AbortSignal | undefined, what: string): Promise<FrameStream> {
  try {
    return frames(await dialer.dial(peer, PROTOCOLS.log, { signal: signal ?? AbortSignal.timeout(LOG_TIMEOUT_MS) }), MAX_FRAME.logBatch)
  } catch (err) {
    if (err instanceof ReachError && err.code === 'RL-1011') throw err
    throw new ReachError('RL-4002', { message: `cannot reach ${peer} for ${what}: ${(err as Error).message}`, cause: err })
  }
}

/**
 * Fetch `peer`'s audit ledger (SPEC §10.6 `log.audit`): a header whose checkpoint must be the
 * peer's (signed by its key, kind "log", `events` = `at_seq + 1`, the header's log id its own;
 * with `logId`, that ledger), then its events as the consumer reads them.
 */
export async function fetchLedger (dialer: Dialer, peer: string, options: { signal?: AbortSignal, logId?: string, maxEvents?: number } = {}): Promise<LedgerStream> {
  const signer = publicKeyOfPeerId(peer)
  const fs = await dialLog(dialer, peer, options.signal, 'its audit ledger')
  const read = options.signal === undefined ? {} : { signal: options.signal }
  const max = options.maxEvents ?? MAX_LEDGER_EVENTS
  let header
  let checkpoint: Checkpoint
  try {
    await fs.write({ v: 1, type: 'log.audit' })
    header = await fs.read(['log.ledger'], read)
    if (isErrorFrame(header)) throw peerError(header, peer)
    if (header.events > max) throw new ReachError('RL-4014', { message: `peer announced a ledger of ${header.events} events (at most ${max} are read)` })
    checkpoint = decodeCheckpoint(header.checkpoint)
    verifyCheckpoint(checkpoint, { expectedSigner: signer })
    if ((checkpoint.kind ?? 'log') !== 'log') throw new ReachError('RL-4014', { message: `peer sent a checkpoint of kind ${String(checkpoint.kind)} for its ledger` })
    if (checkpoint.log_id !== header.log_id || checkpoint.at_seq + 1 !== header.events) {
      throw new ReachError('RL-4014', { message: `peer's ledger header (log ${header.log_id}, ${header.events} events) is not its checkpoint's (log ${checkpoint.log_id} at seq ${checkpoint.at_seq})` })
    }
    if (options.logId !== undefined && header.log_id !== options.logId) throw new ReachError('RL-4014', { message: `peer served ledger ${header.log_id}, not ${options.logId}` })
  } catch (err) {
    fs.reset(err as Error)
    throw err
  }
  const cp = checkpoint
  const tree = new MerkleAccumulator()
  let state = emptyState()
  let first: Event | undefined
  let last: Event | undefined
  const { batches, close } = eventBatches(fs, peer, header.events, read, {
    accept: (e) => {
      first ??= e
      last = e
      tree.pushEventHash(e.hash)
      state = aggregatesReducer(state, e)
    },
    end: () => {
      const digest: LogDigest = { log_id: first?.hash ?? '', count: tree.size, last_seq: last?.seq ?? -1, log_hash: last?.hash ?? '', timestamp: last?.timestamp ?? 0, merkle_root: tree.rootHex(), state, state_hash: stateHash(state) }
      const bad = checkpointBinding(cp, digest).find((c) => !c.ok)
      if (bad !== undefined) throw new ReachError(bad.code, { message: `peer's ledger does not match its checkpoint: ${bad.check} is ${bad.actual}, the checkpoint says ${bad.expected}`, seq: cp.at_seq, details: { ...bad } })
    }
  })
  return { peer, log_id: header.log_id, announced: header.events, checkpoint, checkpointText: header.checkpoint, batches, close }
}

export interface ConsistencyRequest {
  log_id: string
  old_size: number
  new_size: number
  /** When given, the proof must start from this root (a checkpoint's `merkle_root` the caller trusts). */
  old_root?: string
  /** When given, the proof must end at this root. */
  new_root?: string
}

/**
 * Ask `peer` for an RFC 6962 consistency proof between two sizes of its ledger `log_id`
 * (SPEC §10.6 `log.consistency`). The answer must be for what was asked (RL-4014) and verify
 * from its old root to its new root (RL-2202); with `old_root` / `new_root`, those must be its
 * roots (RL-2202). Without them the caller must still hold the proof's roots to two (size, root)
 * pairs it trusts, as `fetchLedgerConsistency` does with two checkpoints.
 */
export async function fetchConsistency (dialer: Dialer, peer: string, request: ConsistencyRequest, options: { signal?: AbortSignal } = {}): Promise<ConsistencyProofJson> {
  const { log_id: logId, old_size: oldSize, new_size: newSize } = request
  if (!isHash(logId)) throw new ReachError('RL-1011', { message: `${String(logId)} is not a log id (64 lowercase hex)` })
  if (!Number.isSafeInteger(oldSize) || !Number.isSafeInteger(newSize) || oldSize < 0 || oldSize > newSize) {
    throw new ReachError('RL-1007', { message: `no consistency proof from size ${oldSize} to size ${newSize}`, details: { old_size: oldSize, new_size: newSize } })
  }
  const fs = await dialLog(dialer, peer, options.signal, 'a consistency proof')
  const read = options.signal === undefined ? {} : { signal: options.signal }
  let answer
  try {
    await fs.write({ v: 1, type: 'log.consistency', log_id: logId, old_size: oldSize, new_size: newSize })
    answer = await fs.read(['log.proof'], read)
    if (isErrorFrame(answer)) throw peerError(answer, peer)
    if (answer.log_id !== logId || answer.old_size !== oldSize || answer.new_size !== newSize) {
      throw new ReachError('RL-4014', { message: `peer answered for log ${answer.log_id} from ${answer.old_size} to ${answer.new_size}, not what was asked` })
    }
  } catch (err) {
    fs.reset(err as Error)
    throw err
  }
  await fs.close()
  const proof: ConsistencyProofJson = { version: 1, kind: 'consistency', old_size: oldSize, new_size: newSize, old_root: answer.old_root, new_root: answer.new_root, path: answer.path }
  verifyConsistencyJson(proof)
  for (const [side, expected] of [['old', request.old_root], ['new', request.new_root]] as const) {
    const got = side === 'old' ? proof.old_root : proof.new_root
    if (expected !== undefined && got !== expected) {
      throw new ReachError('RL-2202', { message: `consistency proof invalid: its ${side} root at size ${side === 'old' ? oldSize : newSize} is ${got}, not ${expected}`, details: { peer, [`${side}_root`]: got, [`expected_${side}_root`]: expected, path: proof.path } })
    }
  }
  return proof
}

/**
 * Hold `peer` to two checkpoints it signed of its ledger: both must be signed by its key
 * (RL-2106, RL-2101), and the proof it gives must show `newer` extends `older`
 * (`checkLedgerConsistency`: RL-2120, RL-2202; a rewritten ledger is RL-2202 with
 * `details.rewritten`, its old root and path). Returns the checked proof.
 */
export async function fetchLedgerConsistency (dialer: Dialer, peer: string, older: Checkpoint, newer: Checkpoint, options: { signal?: AbortSignal } = {}): Promise<ConsistencyProofJson> {
  const signer = publicKeyOfPeerId(peer)
  verifyCheckpoint(older, { expectedSigner: signer })
  verifyCheckpoint(newer, { expectedSigner: signer })
  if (older.log_id !== newer.log_id || older.at_seq > newer.at_seq) {
    // Said before a dial: there is nothing to ask.
    return checkLedgerConsistency(older, newer, undefined)
  }
  const proof = await fetchConsistency(dialer, peer, { log_id: newer.log_id, old_size: older.at_seq + 1, new_size: newer.at_seq + 1 }, options)
  return checkLedgerConsistency(older, newer, proof)
}
