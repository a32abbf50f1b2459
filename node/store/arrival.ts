/**
 * Verify on arrival: the checks every store applies to an event before any
 * byte of it is written. Cheap checks run first, the hash last.
 */
import { isReachError, ReachError } from '../../protocol/errors.ts'
import { canonicalEventBody, canonicalEventText, eventShapeProblem, mintedEventText, type ChainHead, type Event } from '../../protocol/event.ts'
import { sha256Hex, ZERO_HASH } from '../../protocol/hash.ts'

/**
 * Checks that `event` may follow `head` (null: the log is empty) and returns
 * its canonical serialisation, the exact bytes a store writes. Throws:
 * RL-2006 malformed, RL-5001 seq already taken, RL-5002 seq gap or prev_hash
 * not the head's hash, RL-2001 hash mismatch, RL-2007 logical clock not
 * increasing.
 */
export function checkArrival (head: ChainHead | null, event: Event): string {
  const minted = mintedEventText(event)
  if (minted !== undefined) {
    // Made by nextEvent in this process: shape and hash hold by construction
    // (see protocol/event.ts); only its place in the log is left to check.
    checkPlace(head, event)
    checkClock(head, event)
    return minted
  }
  const problem = eventShapeProblem(event)
  if (problem !== undefined) {
    throw new ReachError('RL-2006', { message: `malformed event: ${problem}`, seq: expectedSeq(head), details: { reason: problem } })
  }
  checkPlace(head, event)
  let hash: string
  let line: string
  try {
    ;({ hash, line } = hashAndLine(event))
  } catch (err) {
    if (!isReachError(err)) throw err
    throw new ReachError('RL-2006', { message: `malformed event: ${err.message}`, seq: event.seq, cause: err })
  }
  if (hash !== event.hash) {
    throw new ReachError('RL-2001', { seq: event.seq, details: { expected: hash, actual: event.hash } })
  }
  checkClock(head, event)
  return line
}

/** seq and prev_hash must extend `head`: RL-5001 for a seq already taken, RL-5002 otherwise. */
function checkPlace (head: ChainHead | null, event: Event): void {
  const expected = expectedSeq(head)
  if (event.seq < expected) {
    throw new ReachError('RL-5001', {
      message: `seq ${event.seq} is already in the log (head is ${expected - 1}); entries are never overwritten`,
      seq: event.seq,
      details: { expected, actual: event.seq }
    })
  }
  if (event.seq > expected) {
    throw new ReachError('RL-5002', {
      message: `seq ${event.seq} leaves a gap: the next seq is ${expected}`,
      seq: event.seq,
      details: { expected, actual: event.seq }
    })
  }
  const prev = head === null ? ZERO_HASH : head.hash
  if (event.prev_hash !== prev) {
    throw new ReachError('RL-5002', {
      message: `prev_hash of seq ${event.seq} is not the hash of the head`,
      seq: event.seq,
      details: { expected: prev, actual: event.prev_hash }
    })
  }
}

function checkClock (head: ChainHead | null, event: Event): void {
  if (head !== null && event.timestamp <= head.timestamp) {
    throw new ReachError('RL-2007', {
      message: `timestamp ${event.timestamp} of seq ${event.seq} does not exceed the head's ${head.timestamp}`,
      seq: event.seq,
      details: { expected: head.timestamp + 1, actual: event.timestamp }
    })
  }
}

/**
 * The event's computed hash and the canonical text of the whole event (with
 * its claimed `hash`), from one canonicalisation of its body.
 */
export function hashAndLine (event: Event): { hash: string, line: string } {
  const body = canonicalEventBody(event)
  return { hash: sha256Hex(body), line: canonicalEventText(event) }
}

export function expectedSeq (head: ChainHead | null): number {
  return head === null ? 0 : head.seq + 1
}
