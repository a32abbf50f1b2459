/**
 * Node-to-node messages (DESIGN.md §4; SPEC §10): protocol ids, message
 * types, versions and size limits. Pure: no I/O.
 *
 * Every frame is one length-prefixed (unsigned varint) UTF-8 JSON object with
 * `v` (the message version) and `type`. A receiver refuses, in this order:
 * a frame over the protocol's maximum (RL-4011, before a byte of it is
 * buffered), text that is not a JSON object (RL-4010), a version it does not
 * speak (RL-4012), a type the protocol does not have at that point, and
 * fields of the wrong type or unknown fields (RL-4010). Validation is by JSON
 * Schema (ajv, compiled once), so the shapes below are the documentation.
 */
import { Ajv, type ValidateFunction } from 'ajv'
import { ReachError } from './errors.ts'
import { hashCanonical } from './hash.ts'
import { RUN_ID_PATTERN } from './run.ts'

export const WIRE_VERSION = 1

export const PROTOCOLS = {
  pack: '/reach/pack/1.0.0',
  delegate: '/reach/delegate/1.0.0',
  log: '/reach/log/1.0.0'
} as const

/** Largest frame each protocol accepts, in bytes (a bundle frame is bounded by the bundle limit). */
export const MAX_FRAME = {
  request: 64 * 1024,
  packHeader: 256 * 1024,
  packBytes: 9 * 1024 * 1024,
  delegateRequest: 1024 * 1024,
  delegateResult: 4 * 1024 * 1024,
  /**
   * A `/reach/log` frame as the client reads it: a batch (cut at LOG_BATCH_BYTES), or one event
   * larger than that on its own. 16 MiB covers the largest event a run writes under any budget a
   * node should grant (the default policy's output cap is 1 MiB); it is also what one fetch can
   * make its client hold at once.
   */
  logBatch: 16 * 1024 * 1024
} as const

/** The limit the receiver of each frame type applies: what a sender must stay under. */
export const FRAME_LIMIT: Readonly<Record<FrameType, number>> = {
  'error': MAX_FRAME.request,
  'pack.get': MAX_FRAME.request,
  'pack': MAX_FRAME.packHeader,
  'delegate': MAX_FRAME.delegateRequest,
  'cancel': MAX_FRAME.request,
  'result': MAX_FRAME.delegateResult,
  'log.get': MAX_FRAME.request,
  'log': MAX_FRAME.logBatch,
  'log.next': MAX_FRAME.request,
  'log.events': MAX_FRAME.logBatch,
  'log.end': MAX_FRAME.logBatch,
  'log.audit': MAX_FRAME.request,
  'log.ledger': MAX_FRAME.logBatch,
  'log.consistency': MAX_FRAME.request,
  'log.proof': MAX_FRAME.logBatch
}

/** Events per `log.events` frame (and at most LOG_BATCH_BYTES of them). */
export const LOG_BATCH_EVENTS = 1000
/**
 * A batch is cut before its events' JSON would pass this many bytes (UTF-8, as sent), so a
 * client holds about this much of a log at a time; an event larger than this goes alone.
 */
export const LOG_BATCH_BYTES = 1024 * 1024
/**
 * Hashes in a `log.proof` path: an RFC 6962 consistency path between sizes below 2^53 has at
 * most 2 × 53; 128 leaves room and bounds what a client parses.
 */
export const LOG_PROOF_PATH = 128

const HASH = { type: 'string', pattern: '^[0-9a-f]{64}$' }
const CID_TEXT = { type: 'string', minLength: 8, maxLength: 128, pattern: '^[a-z0-9]+$' }
const PEER = { type: 'string', minLength: 16, maxLength: 128, pattern: '^[1-9A-HJ-NP-Za-km-z]+$' }
const RUN_ID = { type: 'string', pattern: RUN_ID_PATTERN }
const ID = { type: 'string', pattern: '^[0-9a-f]{32}$' }
const SIG = { type: 'string', pattern: '^[A-Za-z0-9_-]{86}$' }
const CODE = { type: 'string', pattern: '^RL-[1-6][0-9]{3}$' }
const MESSAGE = { type: 'string', maxLength: 4096 }
const ANY = {}
/** A tree size: a non-negative safe integer. */
const SIZE = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER }
const OBJECT = { type: 'object' }

function frame (type: string, properties: Record<string, unknown>, required: string[]): object {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['v', 'type', ...required],
    properties: { v: { const: WIRE_VERSION }, type: { const: type }, ...properties }
  }
}

const BUDGET = {
  type: 'object',
  additionalProperties: false,
  properties: {
    fuel: { type: 'integer', minimum: 1 },
    memory_bytes: { type: 'integer', minimum: 1 },
    output_bytes: { type: 'integer', minimum: 1 },
    tool_calls: { type: 'integer', minimum: 0 },
    wall_ms: { type: 'integer', minimum: 1 }
  }
}

export const HOP_SIGNATURE_KIND = 'delegation-hop'

/** One hop of a delegation's ancestry: `from` asked `to` (the request with digest `request`), signed by `from` (see hopBody). */
const HOP = {
  type: 'object',
  additionalProperties: false,
  required: ['from', 'to', 'request', 'signature'],
  properties: { from: PEER, to: PEER, request: HASH, signature: SIG }
}

const SCHEMAS = {
  'error': frame('error', { code: CODE, message: MESSAGE }, ['code', 'message']),
  'pack.get': frame('pack.get', { cid: CID_TEXT }, ['cid']),
  'pack': frame('pack', { cid: CID_TEXT, size: { type: 'integer', minimum: 1, maximum: MAX_FRAME.packBytes }, signatures: { type: 'array', maxItems: 64, items: OBJECT } }, ['cid', 'size', 'signatures']),
  'delegate': frame('delegate', {
    delegation_id: ID,
    pack_cid: CID_TEXT,
    input: ANY,
    budget: BUDGET,
    depth: { type: 'integer', minimum: 1, maximum: 64 },
    ancestry: { type: 'array', minItems: 1, maxItems: 64, items: HOP },
    deadline: { type: 'integer', minimum: 0 },
    nonce: ID
  }, ['delegation_id', 'pack_cid', 'input', 'budget', 'depth', 'ancestry', 'deadline', 'nonce']),
  'cancel': frame('cancel', { delegation_id: ID }, ['delegation_id']),
  'result': frame('result', {
    delegation_id: ID,
    run_id: RUN_ID,
    status: { enum: ['completed', 'failed', 'cancelled'] },
    output: ANY,
    error: { type: 'object', additionalProperties: false, required: ['code', 'message'], properties: { code: CODE, message: MESSAGE } },
    record: OBJECT,
    started: OBJECT,
    checkpoint: { type: 'string', maxLength: 8192 },
    log_head: { type: 'object', additionalProperties: false, required: ['seq', 'hash'], properties: { seq: { type: 'integer', minimum: 0 }, hash: HASH } }
  }, ['delegation_id', 'run_id', 'status', 'record', 'started', 'checkpoint', 'log_head']),
  'log.get': frame('log.get', { run_id: RUN_ID }, ['run_id']),
  'log': frame('log', { run_id: RUN_ID, events: { type: 'integer', minimum: 0 }, pack_cid: CID_TEXT, checkpoint: { type: 'string', maxLength: 8192 } }, ['run_id', 'events', 'pack_cid', 'checkpoint']),
  'log.next': frame('log.next', {}, []),
  'log.events': frame('log.events', { events: { type: 'array', minItems: 1, maxItems: LOG_BATCH_EVENTS, items: OBJECT } }, ['events']),
  'log.end': frame('log.end', {}, []),
  'log.audit': frame('log.audit', {}, []),
  'log.ledger': frame('log.ledger', { log_id: HASH, events: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER }, checkpoint: { type: 'string', maxLength: 8192 } }, ['log_id', 'events', 'checkpoint']),
  'log.consistency': frame('log.consistency', { log_id: HASH, old_size: SIZE, new_size: SIZE }, ['log_id', 'old_size', 'new_size']),
  'log.proof': frame('log.proof', { log_id: HASH, old_size: SIZE, new_size: SIZE, old_root: HASH, new_root: HASH, path: { type: 'array', maxItems: LOG_PROOF_PATH, items: HASH } }, ['log_id', 'old_size', 'new_size', 'old_root', 'new_root', 'path'])
} as const

export type FrameType = keyof typeof SCHEMAS

export interface ErrorFrame { v: 1, type: 'error', code: string, message: string }
export interface PackGet { v: 1, type: 'pack.get', cid: string }
export interface PackHeader { v: 1, type: 'pack', cid: string, size: number, signatures: unknown[] }
export interface Hop { from: string, to: string, request: string, signature: string }
export interface WireBudget { fuel?: number, memory_bytes?: number, output_bytes?: number, tool_calls?: number, wall_ms?: number }
export interface DelegateRequest {
  v: 1
  type: 'delegate'
  delegation_id: string
  pack_cid: string
  input: unknown
  budget: WireBudget
  depth: number
  ancestry: Hop[]
  deadline: number
  nonce: string
}
export interface CancelFrame { v: 1, type: 'cancel', delegation_id: string }
export interface ResultFrame {
  v: 1
  type: 'result'
  delegation_id: string
  run_id: string
  status: 'completed' | 'failed' | 'cancelled'
  output?: unknown
  error?: { code: string, message: string }
  record: Record<string, unknown>
  /** The child run's first event (its RunStarted), whose hash the checkpoint signs as `log_id`. */
  started: Record<string, unknown>
  checkpoint: string
  log_head: { seq: number, hash: string }
}
export interface LogGet { v: 1, type: 'log.get', run_id: string }
export interface LogHeader { v: 1, type: 'log', run_id: string, events: number, pack_cid: string, checkpoint: string }
export interface LogNext { v: 1, type: 'log.next' }
export interface LogEvents { v: 1, type: 'log.events', events: unknown[] }
export interface LogEnd { v: 1, type: 'log.end' }
/** Ask for the node's audit ledger (SPEC §10.6): answered like `log.get`, with a `log.ledger` header. */
export interface LogAudit { v: 1, type: 'log.audit' }
export interface LogLedger { v: 1, type: 'log.ledger', log_id: string, events: number, checkpoint: string }
export interface LogConsistency { v: 1, type: 'log.consistency', log_id: string, old_size: number, new_size: number }
export interface LogProof { v: 1, type: 'log.proof', log_id: string, old_size: number, new_size: number, old_root: string, new_root: string, path: string[] }

export interface Frames {
  'error': ErrorFrame
  'pack.get': PackGet
  'pack': PackHeader
  'delegate': DelegateRequest
  'cancel': CancelFrame
  'result': ResultFrame
  'log.get': LogGet
  'log': LogHeader
  'log.next': LogNext
  'log.events': LogEvents
  'log.end': LogEnd
  'log.audit': LogAudit
  'log.ledger': LogLedger
  'log.consistency': LogConsistency
  'log.proof': LogProof
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true })

let validators: Map<string, ValidateFunction> | undefined

function validator (type: FrameType): ValidateFunction {
  if (validators === undefined) {
    const ajv = new Ajv({ allErrors: false, strict: true })
    validators = new Map(Object.entries(SCHEMAS).map(([name, schema]) => [name, ajv.compile(schema)]))
  }
  return validators.get(type) as ValidateFunction
}

/**
 * Parse and check one frame's bytes as one of `expected` types (an `error`
 * frame is always accepted, so a peer can refuse at any point). Throws
 * RL-4010 / RL-4012.
 */
export function decodeFrame<T extends FrameType> (bytes: Uint8Array, expected: readonly T[]): Frames[T] | ErrorFrame {
  let value: unknown
  try {
    // fatal: bytes that are not UTF-8 are refused, not turned into U+FFFD.
    value = JSON.parse(strictUtf8.decode(bytes))
  } catch {
    throw new ReachError('RL-4010', { message: 'frame is not UTF-8 JSON' })
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ReachError('RL-4010', { message: 'frame is not a JSON object' })
  const { v, type } = value as { v?: unknown, type?: unknown }
  if (v !== WIRE_VERSION) throw new ReachError('RL-4012', { message: `frame version ${JSON.stringify(v)} is not spoken here (this node speaks ${WIRE_VERSION})` })
  if (typeof type !== 'string' || (type !== 'error' && !(expected as readonly string[]).includes(type))) {
    throw new ReachError('RL-4010', { message: `unexpected frame type ${JSON.stringify(type)} (expected ${expected.join(' or ')})` })
  }
  const problem = schemaProblem(type as FrameType, value)
  if (problem !== undefined) throw new ReachError('RL-4010', { message: malformed(type, value, problem) })
  return value as Frames[T] | ErrorFrame
}

/**
 * Why a frame is refused, in words. A result without `started` (required since the checkpoint
 * signs its hash, SPEC §10.5) cannot be checked against what the peer signed: it is refused like
 * any malformed frame, but the message says it is most likely an older peer's.
 */
function malformed (type: string, value: object, problem: string): string {
  if (type === 'result' && !Object.hasOwn(value, 'started')) return 'result frame has no `started` event: the peer runs an older Reach'
  return `malformed ${type} frame: ${problem}`
}

/**
 * Why `value` is not a valid `type` frame by the schema its receiver holds it to (the field's
 * JSON Pointer and what is wrong), or undefined. decodeFrame refuses with it; a sender checks
 * its own frame with it before sending, so a frame every peer would refuse is never sent.
 */
export function schemaProblem (type: FrameType, value: unknown): string | undefined {
  const check = validator(type)
  if (check(value)) return undefined
  const e = check.errors?.[0]
  return `${e?.instancePath ?? ''} ${e?.message ?? 'invalid'}`.trim()
}

export function encodeFrame (frame: Frames[FrameType]): Uint8Array {
  return Buffer.from(JSON.stringify(frame), 'utf8')
}

/** Error messages are at most this many characters (code points, as the schema counts them). */
export const MAX_ERROR_MESSAGE = 4096

export function errorFrame (code: string, message: string): ErrorFrame {
  // Cut by code points, never inside a surrogate pair: the frame must stay well-formed text.
  const points = [...message.toWellFormed()]
  return { v: 1, type: 'error', code, message: points.length > MAX_ERROR_MESSAGE ? points.slice(0, MAX_ERROR_MESSAGE - 1).join('') + '…' : points.join('') }
}

/** The request a hop was made for (what runs, with what, until when): its last hop must carry this digest. */
export function requestDigest (request: Pick<DelegateRequest, 'delegation_id' | 'pack_cid' | 'input' | 'budget' | 'nonce' | 'deadline'>): string {
  return hashCanonical({ delegation_id: request.delegation_id, pack_cid: request.pack_cid, input_hash: hashCanonical(request.input), budget: request.budget, nonce: request.nonce, deadline: request.deadline })
}

/**
 * What a hop signs: who asked whom, for which request, at which depth, after which previous
 * hop. Every hop carries its own request digest, so a node deeper in the chain can verify
 * earlier hops without the requests they were made for.
 */
export function hopBody (index: number, hop: Pick<Hop, 'from' | 'to' | 'request'>, previous: string | null): Record<string, unknown> {
  return { depth: index + 1, from: hop.from, to: hop.to, request: hop.request, previous }
}
