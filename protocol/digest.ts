/**
 * One pass over a log that yields everything a checkpoint speaks about.
 *
 * Verifying the chain, building the RFC 6962 tree and replaying the state are
 * three folds over the same events; doing them in one streaming pass keeps
 * `reach verify`, `reach checkpoint create|verify` and remote verification
 * at one read of the log and constant memory (the Merkle accumulator keeps
 * O(log n) hashes).
 */
import { ChainVerifier, chainError } from './chain.ts'
import { ReachError } from './errors.ts'
import type { Event } from './event.ts'
import { MerkleAccumulator } from './merkle.ts'
import { aggregatesReducer } from './reducer.ts'
import { emptyState, stateHash, type Reducer, type State } from './state.ts'

export interface DigestOptions {
  /** Stop after this seq (inclusive). Default: the whole log. */
  untilSeq?: number
  /** Fold the state too (default true). `reach verify` skips it. */
  reduce?: boolean
  reducer?: Reducer
  /** Called with every verified event, e.g. to collect leaf hashes for proofs. */
  onEvent?: (event: Event) => void
}

export interface LogDigest {
  /** The log's identity: the hash of its genesis event (seq 0). */
  log_id: string
  /** Events covered: seqs 0 .. last_seq. */
  count: number
  last_seq: number
  /** Hash of the event at last_seq (a checkpoint's `log_hash`). */
  log_hash: string
  /** Logical timestamp of the event at last_seq. */
  timestamp: number
  /** RFC 6962 root over the event hashes 0 .. last_seq, hex. */
  merkle_root: string
  state?: State
  state_hash?: string
}

function fold (options: DigestOptions): { push: (e: Event) => boolean, finish: () => LogDigest } {
  const until = options.untilSeq ?? Number.POSITIVE_INFINITY
  const reduce = options.reduce !== false
  const reducer = options.reducer ?? aggregatesReducer
  const verifier = new ChainVerifier(null)
  const tree = new MerkleAccumulator()
  let state = emptyState()
  let first: Event | undefined
  let last: Event | undefined
  return {
    /** Returns false once `until` is reached. */
    push (event) {
      if (event.seq > until) return false
      const failure = verifier.push(event)
      if (failure !== undefined) throw chainError(failure)
      first ??= event
      last = event
      tree.pushEventHash(event.hash)
      if (reduce) state = reducer(state, event)
      options.onEvent?.(event)
      return event.seq !== until
    },
    finish () {
      const verdict = verifier.end()
      if (!verdict.ok) throw chainError(verdict)
      if (first === undefined || last === undefined) {
        throw new ReachError('RL-1007', { message: 'the log is empty: there is nothing to digest' })
      }
      if (Number.isFinite(until) && last.seq < until) {
        throw new ReachError('RL-1007', { message: `the log ends at seq ${last.seq}, before seq ${until}`, seq: until, details: { last_seq: last.seq } })
      }
      return {
        log_id: first.hash,
        count: tree.size,
        last_seq: last.seq,
        log_hash: last.hash,
        timestamp: last.timestamp,
        merkle_root: tree.rootHex(),
        ...(reduce ? { state, state_hash: stateHash(state) } : {})
      }
    }
  }
}

export function digestLog (events: Iterable<Event>, options: DigestOptions = {}): LogDigest {
  const f = fold(options)
  for (const e of events) if (!f.push(e)) break
  return f.finish()
}

export async function digestLogAsync (events: AsyncIterable<Event>, options: DigestOptions = {}): Promise<LogDigest> {
  const f = fold(options)
  for await (const e of events) if (!f.push(e)) break
  return f.finish()
}

/** The same over batches of events: one await per batch instead of per event (the verify hot path). */
export async function digestBatchesAsync (batches: AsyncIterable<readonly Event[]>, options: DigestOptions = {}): Promise<LogDigest> {
  const f = fold(options)
  outer: for await (const batch of batches) {
    for (const e of batch) if (!f.push(e)) break outer
  }
  return f.finish()
}

/** One line of a checkpoint verification: what was compared and whether it held. */
export interface BindingCheck {
  check: 'log_id' | 'log_hash' | 'merkle_root' | 'state_hash'
  ok: boolean
  code: 'RL-2109' | 'RL-2102' | 'RL-2103' | 'RL-2104'
  expected: string
  actual: string
}

/**
 * Compare what a checkpoint claims with a digest of the log up to its
 * at_seq. The caller verifies the signature first (verifyCheckpoint) and
 * digests with `untilSeq: cp.at_seq`; a log shorter than that fails there
 * with RL-2107.
 */
export function checkpointBinding (cp: { log_id: string, log_hash: string, merkle_root: string, state_hash: string }, digest: LogDigest): BindingCheck[] {
  const line = (check: BindingCheck['check'], code: BindingCheck['code'], expected: string, actual: string | undefined): BindingCheck =>
    ({ check, code, expected, actual: actual ?? '', ok: expected === actual })
  return [
    line('log_id', 'RL-2109', cp.log_id, digest.log_id),
    line('log_hash', 'RL-2102', cp.log_hash, digest.log_hash),
    line('merkle_root', 'RL-2103', cp.merkle_root, digest.merkle_root),
    line('state_hash', 'RL-2104', cp.state_hash, digest.state_hash)
  ]
}
