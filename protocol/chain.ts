/**
 * The link rule and the chain verifier.
 *
 * Event k is valid after event k-1 when: it is event-shaped, its seq is
 * k-1's seq + 1, its prev_hash is k-1's hash (64 zeros at genesis), its hash
 * is the SHA-256 of its canonical form without `hash`, and its logical
 * timestamp is greater than k-1's. `ChainVerifier` checks a stream of events
 * one at a time in constant memory and reports the FIRST failure: the seq
 * where the log stops being trustworthy and why. protocol/SPEC.md §3 fixes
 * the order of the checks, so every implementation names the same seq and
 * code for the same damage:
 *
 *   1. shape                                   RL-2006 at the expected seq
 *   2. seq === expected?
 *      no, and it repeats the previous event    RL-2005 at that seq
 *      no, but prev_hash links in place         RL-2001 at the expected seq (the seq field was altered)
 *      no, and the next event has the expected
 *        seq (a swapped pair)                   RL-2004 at the expected seq
 *      no, otherwise (an event is missing)      RL-2003 at the expected seq
 *   3. prev_hash === previous hash               RL-2002
 *   4. hash === computed hash                    RL-2001
 *   5. timestamp > previous timestamp            RL-2007
 *
 * Telling a swapped pair from a deletion needs one event of look-ahead, which
 * is why `push` may defer its verdict to the next `push` or to `end`.
 */
import type { ErrorCode } from './errors.ts'
import { ReachError } from './errors.ts'
import { computeEventHash, eventShapeProblem, eventShapeProblemExceptHashes, type ChainHead, type Event } from './event.ts'
import { ZERO_HASH } from './hash.ts'

export interface ChainFailure {
  ok: false
  /** The first seq at which the log is not valid. */
  seq: number
  code: ErrorCode
  reason: string
  expected?: string | number
  actual?: string | number
}

export interface ChainSuccess {
  ok: true
  /** Events checked. */
  count: number
  /** Seq of the first and last event checked (-1 when empty). */
  first_seq: number
  last_seq: number
  /** Head after the last event, or the anchor when no event was checked. */
  head: ChainHead | null
}

export type ChainResult = ChainSuccess | ChainFailure

/** Where verification starts: null for genesis, otherwise the head just before the range. */
export type ChainAnchor = ChainHead | null

export class ChainVerifier {
  private prev: ChainAnchor
  private pending: Event | undefined
  private failure: ChainFailure | undefined
  private count = 0
  private firstSeq = -1

  constructor (anchor: ChainAnchor = null) {
    this.prev = anchor
  }

  get failed (): ChainFailure | undefined {
    return this.failure
  }

  /**
   * Events accepted so far. An event pushed without a failure may still be held for look-ahead
   * (it jumped ahead of its place); it is accepted only when this count grows.
   */
  get checked (): number {
    return this.count
  }

  private expectedSeq (): number {
    return this.prev === null ? 0 : this.prev.seq + 1
  }

  private fail (code: ErrorCode, seq: number, reason: string, expected?: string | number, actual?: string | number): ChainFailure {
    this.failure = { ok: false, seq, code, reason, ...(expected === undefined ? {} : { expected }), ...(actual === undefined ? {} : { actual }) }
    return this.failure
  }

  /**
   * Check the next event. Returns the first failure once known (possibly on
   * a later call, see look-ahead above); after a failure further events are
   * ignored.
   */
  push (value: unknown): ChainFailure | undefined {
    if (this.failure !== undefined) return this.failure
    const expected = this.expectedSeq()
    if (this.pending === undefined && eventShapeProblemExceptHashes(value) === undefined) {
      // Hot path: a well-formed event in place. Its hash fields' hex form is
      // proven by the equality checks; anything else takes the full path.
      const event = value as Event
      if (event.seq === expected &&
        event.prev_hash === (this.prev === null ? ZERO_HASH : this.prev.hash) &&
        computeEventHash(event) === event.hash &&
        (this.prev === null || event.timestamp > this.prev.timestamp)) {
        if (this.firstSeq < 0) this.firstSeq = event.seq
        this.count++
        this.prev = { seq: event.seq, hash: event.hash, timestamp: event.timestamp }
        return undefined
      }
    }
    return this.pushChecked(value, expected)
  }

  /** The full, ordered checks of SPEC.md §3, for anything off the hot path. */
  private pushChecked (value: unknown, expected: number): ChainFailure | undefined {
    const problem = eventShapeProblem(value)
    if (this.pending !== undefined) {
      // Verdict on the held out-of-place event: is `value` the one it jumped over?
      const held = this.pending
      this.pending = undefined
      if (problem === undefined && (value as Event).seq === expected) {
        return this.fail('RL-2004', expected, `events out of order: expected seq ${expected}, found seq ${held.seq} before it`, expected, held.seq)
      }
      return this.fail('RL-2003', expected, `sequence gap: expected seq ${expected}, found seq ${held.seq}`, expected, held.seq)
    }
    if (problem !== undefined) return this.fail('RL-2006', expected, `malformed event: ${problem}`)
    const event = value as Event
    const prevHash = this.prev === null ? ZERO_HASH : this.prev.hash
    if (event.seq !== expected) {
      if (this.prev !== null && event.seq === this.prev.seq && event.hash === this.prev.hash) {
        return this.fail('RL-2005', event.seq, `duplicate event: seq ${event.seq} appears twice`, expected, event.seq)
      }
      if (event.prev_hash === prevHash) {
        return this.fail('RL-2001', expected, `event hash mismatch: the event at seq ${expected} links correctly but claims seq ${event.seq}`, expected, event.seq)
      }
      if (event.seq > expected) {
        this.pending = event
        return undefined
      }
      return this.fail('RL-2004', expected, `events out of order: expected seq ${expected}, found seq ${event.seq}`, expected, event.seq)
    }
    if (event.prev_hash !== prevHash) {
      return this.fail('RL-2002', expected, `broken hash link at seq ${expected}: prev_hash does not match the hash of seq ${expected - 1}`, prevHash, event.prev_hash)
    }
    const computed = computeEventHash(event)
    if (computed !== event.hash) {
      return this.fail('RL-2001', expected, `event hash mismatch at seq ${expected}`, computed, event.hash)
    }
    if (this.prev !== null && event.timestamp <= this.prev.timestamp) {
      return this.fail('RL-2007', expected, `logical clock went backwards at seq ${expected}`, this.prev.timestamp + 1, event.timestamp)
    }
    if (this.firstSeq < 0) this.firstSeq = event.seq
    this.count++
    this.prev = { seq: event.seq, hash: event.hash, timestamp: event.timestamp }
    return undefined
  }

  /** Finish: resolves a pending look-ahead and returns the verdict. */
  end (): ChainResult {
    if (this.failure !== undefined) return this.failure
    if (this.pending !== undefined) {
      const held = this.pending
      this.pending = undefined
      const expected = this.expectedSeq()
      return this.fail('RL-2003', expected, `sequence gap: expected seq ${expected}, found seq ${held.seq}`, expected, held.seq)
    }
    return { ok: true, count: this.count, first_seq: this.firstSeq, last_seq: this.prev?.seq ?? -1, head: this.prev }
  }
}

/** Verify an in-memory or synchronous sequence of events. */
export function verifyChain (events: Iterable<unknown>, anchor: ChainAnchor = null): ChainResult {
  const verifier = new ChainVerifier(anchor)
  for (const event of events) {
    if (verifier.push(event) !== undefined) break
  }
  return verifier.end()
}

/** Verify a streamed sequence of events in constant memory. */
export async function verifyChainAsync (events: AsyncIterable<unknown>, anchor: ChainAnchor = null): Promise<ChainResult> {
  const verifier = new ChainVerifier(anchor)
  for await (const event of events) {
    if (verifier.push(event) !== undefined) break
  }
  return verifier.end()
}

/** Turn a failure into the error the CLI and peers report. */
export function chainError (failure: ChainFailure): ReachError {
  return new ReachError(failure.code, {
    message: failure.reason,
    seq: failure.seq,
    details: { ...(failure.expected === undefined ? {} : { expected: failure.expected }), ...(failure.actual === undefined ? {} : { actual: failure.actual }) }
  })
}
