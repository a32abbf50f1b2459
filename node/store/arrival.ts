/**
 * Verify on arrival: the checks every store applies to an event before any
 * byte of it is written. Cheap checks run first, the hash last.
 */
import { canonicalize } from '../../protocol/canonical.ts'
import { isReachError, ReachError } from '../../protocol/errors.ts'
import { canonicalEventBody, computeEventHash, eventShapeProblem, nextEvent, type ChainHead, type Event } from '../../protocol/event.ts'
import { sha256Hex, ZERO_HASH } from '../../protocol/hash.ts'

/**
 * Checks that `event` may follow `head` (null: the log is empty) and returns
 * its canonical serialisation, the exact bytes a store writes. Throws:
 * RL-2006 malformed, RL-5001 seq already taken, RL-5002 seq gap or prev_hash
 * not the head's hash, RL-2001 hash mismatch, RL-2007 logical clock not
 * increasing.
 */
export function checkArrival (head: ChainHead | null, event: Event): string {
  const problem = eventShapeProblem(event)
  if (problem !== undefined) {
    throw new ReachError('RL-2006', { message: `malformed event: ${problem}`, seq: expectedSeq(head), details: { reason: problem } })
  }
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
  if (head !== null && event.timestamp <= head.timestamp) {
    throw new ReachError('RL-2007', {
      message: `timestamp ${event.timestamp} of seq ${event.seq} does not exceed the head's ${head.timestamp}`,
      seq: event.seq,
      details: { expected: head.timestamp + 1, actual: event.timestamp }
    })
  }
  return line
}

/**
 * The event's computed hash and the canonical text of the whole event (with
 * its claimed `hash`). Both come from one canonicalisation: the canonical
 * event is the canonical body with `"hash":"…"` inserted after
 * `aggregate_id`, the only key that sorts before it. Checked against the
 * generic path at load (SPLICE_AGREES); if the protocol's hashing ever stops
 * being sha256(canonical body), the generic path is used instead.
 */
export function hashAndLine (event: Event): { hash: string, line: string } {
  if (!SPLICE_AGREES) return { hash: computeEventHash(event), line: canonicalize(event) }
  const body = canonicalEventBody(event)
  return { hash: sha256Hex(body), line: splice(body, event) }
}

const BODY_PREFIX = '{"aggregate_id":'

function splice (body: string, event: Event): string {
  const cut = BODY_PREFIX.length + canonicalize(event.aggregate_id).length
  return body.slice(0, cut) + ',"hash":' + canonicalize(event.hash) + body.slice(cut)
}

function spliceAgrees (): boolean {
  const samples: Event[] = [
    nextEvent(null, { type: 'Probe', aggregate_id: 'a"\\u2028✓', payload: { b: [1, 'x'], a: null }, metadata: { z: 1, y: 'é' } }),
    nextEvent({ seq: 41, hash: 'f'.repeat(64), timestamp: 7 }, { type: 'P.q:r-s_t', aggregate_id: '𝄞', payload: 1.5e-7 })
  ]
  return samples.every((e) => {
    const body = canonicalEventBody(e)
    return sha256Hex(body) === computeEventHash(e) && splice(body, e) === canonicalize(e)
  })
}

export const SPLICE_AGREES = spliceAgrees()

export function expectedSeq (head: ChainHead | null): number {
  return head === null ? 0 : head.seq + 1
}
