/**
 * `/reach/log/1.0.0`, the fetching side (SPEC §10.6): a peer's finished run, as a header whose
 * checkpoint is verified at once and a stream of batches, each chain-verified as it arrives.
 * A batch is asked for (`log.next`) only when the consumer wants one: a node holds one frame
 * (at most MAX_FRAME.logBatch) and what its consumer keeps, whatever length the peer announces.
 */
import { chainError, ChainVerifier } from '../protocol/chain.ts'
import { decodeCheckpoint, verifyCheckpoint, type Checkpoint } from '../protocol/checkpoint.ts'
import { ReachError } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { publicKeyOfPeerId } from '../protocol/peer-id.ts'
import { isRunId } from '../protocol/run.ts'
import { MAX_FRAME, PROTOCOLS } from '../protocol/wire.ts'
import type { Dialer } from './components.ts'
import { frames, isErrorFrame, peerError } from './frames.ts'

/** Largest log served or accepted (events): a run's tool-call budget bounds real logs far below this. */
export const MAX_LOG_EVENTS = 1_000_000
/** A dial, and each frame, gets this long unless the caller gives a signal. */
export const LOG_TIMEOUT_MS = 10_000

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
        if (accepted.length > 0) yield accepted
      }
    } finally {
      if (!finished) fs.reset(new ReachError('RL-4002', { message: 'log stream not read to the end' }))
    }
  }
  return {
    peer,
    run_id: runId,
    pack_cid: header.pack_cid,
    announced,
    checkpoint,
    batches: batches(),
    close: () => { if (!finished) fs.reset(new ReachError('RL-4002', { message: 'log stream closed early' })) }
  }
}
