/**
 * Events: the unit of the hash-chained log.
 *
 * An event is `{seq, type, aggregate_id, timestamp, payload, metadata,
 * prev_hash, hash}`. `hash` is SHA-256 over the RFC 8785 canonical form of the
 * event without `hash`; `prev_hash` is the previous event's `hash`, or 64
 * zeros for seq 0. `timestamp` is a logical clock (a Lamport counter), never
 * the wall clock: it increases by at least one per event.
 */
import { canonicalize, type JsonObject, type JsonValue } from './canonical.ts'
import { ReachError } from './errors.ts'
import { isHash, sha256Hex, ZERO_HASH } from './hash.ts'

export interface Event {
  seq: number
  type: string
  aggregate_id: string
  timestamp: number
  payload: JsonValue
  metadata: JsonObject
  prev_hash: string
  hash: string
}

/** What a writer supplies; the log fills in seq, timestamp and the hashes. */
export interface EventDraft {
  type: string
  aggregate_id: string
  payload?: JsonValue
  metadata?: JsonObject
  /** A logical time observed elsewhere (Lamport receive rule); optional. */
  timestamp?: number
}

/** The last event of a log, as much of it as the next append needs. */
export interface ChainHead {
  seq: number
  hash: string
  timestamp: number
}

export const MAX_TYPE_LENGTH = 128
export const MAX_AGGREGATE_ID_LENGTH = 256
const TYPE_RE = /^[A-Za-z][A-Za-z0-9_.:-]*$/
const EVENT_KEYS = ['aggregate_id', 'hash', 'metadata', 'payload', 'prev_hash', 'seq', 'timestamp', 'type']
const EVENT_KEY_SET = new Set(EVENT_KEYS)

/** SHA-256 (hex) over the canonical event without its `hash` field. */
export function computeEventHash (event: Omit<Event, 'hash'> | Event): string {
  return sha256Hex(canonicalEventBody(event))
}

/**
 * `canonicalize(event without hash)`, with the top-level members written in
 * their (fixed, already sorted) order instead of sorting them per event:
 * this is the hottest function of verify. Equal to the generic form; a test
 * holds the two together.
 */
export function canonicalEventBody (event: Omit<Event, 'hash'> | Event): string {
  return '{"aggregate_id":' + canonicalize(event.aggregate_id) +
    ',"metadata":' + canonicalize(event.metadata) +
    ',"payload":' + canonicalize(event.payload) +
    ',"prev_hash":' + canonicalize(event.prev_hash) +
    ',"seq":' + canonicalize(event.seq) +
    ',"timestamp":' + canonicalize(event.timestamp) +
    ',"type":' + canonicalize(event.type) + '}'
}

/** Why `draft`'s user-supplied fields are unacceptable, or undefined. */
export function draftProblem (draft: EventDraft): string | undefined {
  if (typeof draft.type !== 'string' || draft.type.length === 0 || draft.type.length > MAX_TYPE_LENGTH || !TYPE_RE.test(draft.type)) {
    return `type must match ${TYPE_RE} and be at most ${MAX_TYPE_LENGTH} characters`
  }
  if (typeof draft.aggregate_id !== 'string' || draft.aggregate_id.length === 0 || draft.aggregate_id.length > MAX_AGGREGATE_ID_LENGTH) {
    return `aggregate_id must be a non-empty string of at most ${MAX_AGGREGATE_ID_LENGTH} characters`
  }
  if (draft.metadata !== undefined && (draft.metadata === null || typeof draft.metadata !== 'object' || Array.isArray(draft.metadata))) {
    return 'metadata must be a JSON object'
  }
  if (draft.timestamp !== undefined && !(Number.isSafeInteger(draft.timestamp) && draft.timestamp >= 0)) {
    return 'timestamp must be a non-negative integer'
  }
  return undefined
}

/**
 * The event that follows `head` (or the genesis event when `head` is null).
 * Pure: the same head and draft always give the same event, byte for byte.
 * Throws RL-1005 for a bad draft and RL-1006 for a payload JSON cannot carry.
 */
export function nextEvent (head: ChainHead | null, draft: EventDraft): Event {
  const problem = draftProblem(draft)
  if (problem !== undefined) throw new ReachError('RL-1005', { message: `invalid event: ${problem}` })
  const seq = head === null ? 0 : head.seq + 1
  const tick = head === null ? 0 : head.timestamp + 1
  const event: Omit<Event, 'hash'> = {
    seq,
    type: draft.type,
    aggregate_id: draft.aggregate_id,
    timestamp: Math.max(tick, draft.timestamp ?? 0),
    payload: draft.payload ?? null,
    metadata: draft.metadata ?? {},
    prev_hash: head === null ? ZERO_HASH : head.hash
  }
  const body = canonicalEventBody(event)
  const hash = sha256Hex(body)
  const minted = Object.freeze({ ...event, hash })
  MINTED.set(minted, spliceHash(body, minted.aggregate_id, hash))
  return minted
}

/**
 * Events made by `nextEvent` in this process, with their canonical text as
 * hashed at that moment. A store writing such an event needs neither to
 * re-validate nor to re-hash it: the fields that matter for placement (seq,
 * prev_hash, hash, timestamp) are frozen, and the text written is the very
 * text that was hashed, whatever the caller does to the payload object
 * afterwards. Events from anywhere else are verified in full.
 */
const MINTED = new WeakMap<Event, string>()

/** The canonical text of an event `nextEvent` made here, or undefined for any other event. */
export function mintedEventText (event: Event): string | undefined {
  return MINTED.get(event)
}

/**
 * `canonicalize(event)` from the canonical body: "hash" sorts right after
 * "aggregate_id" (and before every other member), so the whole event is the
 * body with the hash member spliced in after the aggregate id.
 */
function spliceHash (body: string, aggregateId: string, hash: string): string {
  const cut = BODY_PREFIX.length + canonicalize(aggregateId).length
  return body.slice(0, cut) + ',"hash":"' + hash + '"' + body.slice(cut)
}

const BODY_PREFIX = '{"aggregate_id":'

/** The canonical text of a whole event (what a JSONL log line holds), computed from its body. */
export function canonicalEventText (event: Event): string {
  return spliceHash(canonicalEventBody(event), event.aggregate_id, event.hash)
}

export function headOf (event: Event): ChainHead {
  return { seq: event.seq, hash: event.hash, timestamp: event.timestamp }
}

/**
 * Why `value` is not shaped like an event, or undefined. Checks structure
 * only; hashes and links are the chain verifier's business.
 */
export function eventShapeProblem (value: unknown): string | undefined {
  const problem = eventShapeProblemExceptHashes(value)
  if (problem !== undefined) return problem
  const e = value as Record<string, unknown>
  if (!isHash(e.prev_hash)) return 'prev_hash must be 64 lowercase hex characters'
  if (!isHash(e.hash)) return 'hash must be 64 lowercase hex characters'
  return undefined
}

/**
 * The shape check without validating the two hash fields' hex form, for
 * the verifier's hot path: there they are compared for equality with hashes
 * already known to be well-formed (the previous event's, the recomputed
 * one), which proves their form when the comparison holds. When it does not,
 * the verifier runs the full `eventShapeProblem` before reporting anything,
 * so the diagnosis is the same.
 */
export function eventShapeProblemExceptHashes (value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'not a JSON object'
  const e = value as Record<string, unknown>
  // Count known fields instead of scanning a list: this runs once per event.
  let known = 0
  for (const key in e) {
    if (!Object.hasOwn(e, key)) continue
    if (!EVENT_KEY_SET.has(key)) return `unknown field "${key}"`
    known++
  }
  if (known !== EVENT_KEYS.length) {
    const missing = EVENT_KEYS.find((k) => !Object.hasOwn(e, k))
    return `${missing ?? 'a field'} is missing`
  }
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) < 0) return 'seq must be a non-negative integer'
  if (!Number.isSafeInteger(e.timestamp) || (e.timestamp as number) < 0) return 'timestamp must be a non-negative integer'
  if (typeof e.prev_hash !== 'string') return 'prev_hash must be 64 lowercase hex characters'
  if (typeof e.hash !== 'string') return 'hash must be 64 lowercase hex characters'
  return draftProblem({ type: e.type as string, aggregate_id: e.aggregate_id as string, metadata: e.metadata as JsonObject })
}

/** Deterministic, collision-free identifier derived from a log position. */
export function deriveId (kind: string, seq: number, index = 0): string {
  return index === 0 ? `${kind}-${seq}` : `${kind}-${seq}.${index}`
}
