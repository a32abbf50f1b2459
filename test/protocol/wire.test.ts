/**
 * Wire frames (SPEC §10.3–10.6, protocol/wire.ts): for every frame type, arbitrary valid frames
 * round-trip and decode as that type; refusals carry the code of the FIRST §10.3 check that fails
 * (not UTF-8 JSON object RL-4010, version RL-4012, type RL-4010, schema RL-4010); the schema
 * limits at their boundaries; errorFrame's cut; the request digest and hop body of §10.5, and the
 * SPEC's example hop message recomputed byte for byte. The tables of members and limits below are
 * written from the SPEC, not read from wire.ts, so a drift between the two fails here.
 */
import { isUtf8 } from 'node:buffer'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { canonicalize } from '../../protocol/canonical.ts'
import { isReachError } from '../../protocol/errors.ts'
import { domainMessage } from '../../protocol/hash.ts'
import { createSigner, keyPairFromSeed } from '../../protocol/keys.ts'
import { peerIdOfPublicKey } from '../../protocol/peer-id.ts'
import {
  decodeFrame, encodeFrame, errorFrame, FRAME_LIMIT, hopBody, HOP_SIGNATURE_KIND, MAX_FRAME, PROTOCOLS, requestDigest,
  type DelegateRequest, type FrameType, type Frames, type Hop
} from '../../protocol/wire.ts'

const SPEC = readFileSync(new URL('../../protocol/SPEC.md', import.meta.url), 'utf8')

// ---------------------------------------------------------------------------
// The frame types and their members, as SPEC §10.3–10.6 list them

const TYPES = ['error', 'pack.get', 'pack', 'delegate', 'cancel', 'result', 'log.get', 'log', 'log.next', 'log.events', 'log.end', 'log.audit', 'log.ledger', 'log.consistency', 'log.proof'] as const satisfies readonly FrameType[]

const REQUIRED: Record<FrameType, readonly string[]> = {
  'error': ['code', 'message'],
  'pack.get': ['cid'],
  'pack': ['cid', 'size', 'signatures'],
  'delegate': ['delegation_id', 'pack_cid', 'input', 'budget', 'depth', 'ancestry', 'deadline', 'nonce'],
  'cancel': ['delegation_id'],
  'result': ['delegation_id', 'run_id', 'status', 'record', 'checkpoint', 'log_head'],
  'log.get': ['run_id'],
  'log': ['run_id', 'events', 'pack_cid', 'checkpoint'],
  'log.next': [],
  'log.events': ['events'],
  'log.end': [],
  'log.audit': [],
  'log.ledger': ['log_id', 'events', 'checkpoint'],
  'log.consistency': ['log_id', 'old_size', 'new_size'],
  'log.proof': ['log_id', 'old_size', 'new_size', 'old_root', 'new_root', 'path']
}
const OPTIONAL: Partial<Record<FrameType, readonly string[]>> = { result: ['output', 'error'] }
/** Members whose type is "any JSON value": no replacement has a wrong type. */
const ANY_JSON = new Set(['delegate.input', 'result.output'])

function membersOf (type: FrameType): string[] {
  return ['v', 'type', ...REQUIRED[type], ...(OPTIONAL[type] ?? [])]
}

// ---------------------------------------------------------------------------
// Helpers

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text)
const bytesOf = (value: unknown): Uint8Array => utf8(JSON.stringify(value))

/** The RL- code decodeFrame refuses `bytes` with; undefined when it accepts them. */
function refusal (bytes: Uint8Array, expected: readonly FrameType[] = TYPES): string | undefined {
  try {
    decodeFrame(bytes, expected)
  } catch (err) {
    return isReachError(err) ? err.code : `not a ReachError: ${String(err)}`
  }
  return undefined
}

/** A deep copy that can be edited freely (frames are plain JSON). */
function clone<T> (value: T): T {
  return JSON.parse(JSON.stringify(value)) as T
}

/** A deep copy of a frame, as a bag of members to edit. */
function editable (frame: object): Record<string, unknown> {
  return clone(frame) as Record<string, unknown>
}

/** `frame` as JSON text with one more member appended, whatever its name (`__proto__` included). */
function withMember (frame: object, key: string, value: unknown): Uint8Array {
  const json = JSON.stringify(frame)
  return utf8(`${json.slice(0, -1)},${JSON.stringify(key)}:${JSON.stringify(value)}}`)
}

type JsonType = 'null' | 'boolean' | 'number' | 'string' | 'array' | 'object'
function jsonType (value: unknown): JsonType {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  return typeof value as JsonType
}

/** The same value with the members of every object inserted in another order (by `seed`). */
function permuted (value: unknown, seed: number): unknown {
  if (Array.isArray(value)) return value.map((x, i) => permuted(x, seed + i))
  if (value === null || typeof value !== 'object') return value
  const rank = (k: string): string => createHash('sha256').update(`${seed}/${k}`).digest('hex')
  const keys = Object.keys(value).sort((a, b) => rank(a).localeCompare(rank(b)))
  const out: Record<string, unknown> = {}
  for (const k of keys) Object.defineProperty(out, k, { value: permuted((value as Record<string, unknown>)[k], seed + 1), enumerable: true, writable: true, configurable: true })
  return out
}

// ---------------------------------------------------------------------------
// Arbitraries of valid frames (SPEC §10.3 string types)

const HEX = '0123456789abcdef'
const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const CID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'

/** fc.record, always with Object.prototype (decoded JSON never has a null prototype). */
const record = ((model: never, constraints: object = {}) => fc.record(model, { ...constraints, noNullPrototype: true })) as typeof fc.record

const chars = (alphabet: string, minLength: number, maxLength = minLength): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...alphabet), minLength, maxLength })

const id = chars(HEX, 32)
const hex64 = chars(HEX, 64)
const runId = chars(HEX, 20).map((h) => `run_${h}`)
const peer = chars(B58, 16, 128)
const sig = chars(B64URL, 86)
const cid = chars(CID_ALPHABET, 8, 128)
const code = fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 999 })).map(([r, n]) => `RL-${r}${String(n).padStart(3, '0')}`)
/** At most 4,096 characters: each `binary` unit is one code point, whatever its UTF-16 length. */
const message = fc.string({ unit: 'binary', maxLength: 4096 })
const checkpointText = fc.string({ unit: 'binary', maxLength: 8192 })
const positive = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER })
const natural = fc.maxSafeNat()
/** Any JSON value as JSON carries it (no -0: it reads back as 0). */
const json = fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown)
const object = fc.dictionary(fc.string(), json, { maxKeys: 5 }).map((v) => JSON.parse(JSON.stringify(v)) as Record<string, unknown>)
const budget = record({ fuel: positive, memory_bytes: positive, output_bytes: positive, tool_calls: natural, wall_ms: positive }, { requiredKeys: [] })
const hop: fc.Arbitrary<Hop> = record({ from: peer, to: peer, request: hex64, signature: sig })

const FRAMES: { [T in FrameType]: fc.Arbitrary<Frames[T]> } = {
  'error': record({ code, message }).map((m) => ({ v: 1, type: 'error', ...m })),
  'pack.get': record({ cid }).map((m) => ({ v: 1, type: 'pack.get', ...m })),
  'pack': record({ cid, size: fc.integer({ min: 1, max: 9_437_184 }), signatures: fc.array(object, { maxLength: 64 }) }).map((m) => ({ v: 1, type: 'pack', ...m })),
  'delegate': record({ delegation_id: id, pack_cid: cid, input: json, budget, ancestry: fc.array(hop, { minLength: 1, maxLength: 64 }), deadline: natural, nonce: id })
    .map((m) => ({ v: 1, type: 'delegate', ...m, depth: m.ancestry.length })),
  'cancel': record({ delegation_id: id }).map((m) => ({ v: 1, type: 'cancel', ...m })),
  'result': record({
    delegation_id: id,
    run_id: runId,
    status: fc.constantFrom('completed' as const, 'failed' as const, 'cancelled' as const),
    output: json,
    error: record({ code, message }),
    record: object,
    started: object,
    checkpoint: checkpointText,
    log_head: record({ seq: natural, hash: hex64 })
  }, { requiredKeys: ['delegation_id', 'run_id', 'status', 'record', 'started', 'checkpoint', 'log_head'] }).map((m) => ({ v: 1, type: 'result', ...m })),
  'log.get': record({ run_id: runId }).map((m) => ({ v: 1, type: 'log.get', ...m })),
  'log': record({ run_id: runId, events: natural, pack_cid: cid, checkpoint: checkpointText }).map((m) => ({ v: 1, type: 'log', ...m })),
  'log.events': record({ events: fc.array(object, { minLength: 1, maxLength: 1000 }) }).map((m) => ({ v: 1, type: 'log.events', ...m })),
  'log.next': fc.constant({ v: 1, type: 'log.next' }),
  'log.end': fc.constant({ v: 1, type: 'log.end' }),
  'log.audit': fc.constant({ v: 1, type: 'log.audit' }),
  'log.ledger': record({ log_id: hex64, events: positive, checkpoint: checkpointText }).map((m) => ({ v: 1, type: 'log.ledger', ...m })),
  'log.consistency': record({ log_id: hex64, old_size: natural, new_size: natural }).map((m) => ({ v: 1, type: 'log.consistency', ...m })),
  'log.proof': record({ log_id: hex64, old_size: natural, new_size: natural, old_root: hex64, new_root: hex64, path: fc.array(hex64, { maxLength: 128 }) }).map((m) => ({ v: 1, type: 'log.proof', ...m }))
}

type AnyFrame = Frames[FrameType]
const anyFrame: fc.Arbitrary<AnyFrame> = fc.oneof(...TYPES.map((t) => FRAMES[t] as fc.Arbitrary<AnyFrame>))

/** A JSON value whose JSON type is not `type`. */
function ofAnotherType (type: JsonType): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.constant(null),
    fc.boolean(),
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((n) => (Object.is(n, -0) ? 0 : n)),
    fc.string(),
    fc.array(json, { maxLength: 3 }),
    object
  ).filter((v) => jsonType(v) !== type)
}

/** One valid frame of each type, for the boundary tables. */
const HOP_A: Hop = { from: '12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7', to: 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N', request: 'c'.repeat(64), signature: 'A'.repeat(86) }
const BASE: { [T in FrameType]: Frames[T] } = {
  'error': { v: 1, type: 'error', code: 'RL-4010', message: 'malformed' },
  'pack.get': { v: 1, type: 'pack.get', cid: 'bafyexample' },
  'pack': { v: 1, type: 'pack', cid: 'bafyexample', size: 10, signatures: [] },
  'delegate': { v: 1, type: 'delegate', delegation_id: 'a'.repeat(32), pack_cid: 'bafyexample', input: null, budget: {}, depth: 1, ancestry: [HOP_A], deadline: 1_700_000_000_000, nonce: 'b'.repeat(32) },
  'cancel': { v: 1, type: 'cancel', delegation_id: 'a'.repeat(32) },
  'result': { v: 1, type: 'result', delegation_id: 'a'.repeat(32), run_id: `run_${'0'.repeat(20)}`, status: 'completed', output: 1, record: {}, started: {}, checkpoint: '{}\n', log_head: { seq: 0, hash: 'd'.repeat(64) } },
  'log.get': { v: 1, type: 'log.get', run_id: `run_${'0'.repeat(20)}` },
  'log': { v: 1, type: 'log', run_id: `run_${'0'.repeat(20)}`, events: 3, pack_cid: 'bafyexample', checkpoint: '{}\n' },
  'log.events': { v: 1, type: 'log.events', events: [{}] },
  'log.next': { v: 1, type: 'log.next' },
  'log.end': { v: 1, type: 'log.end' },
  'log.audit': { v: 1, type: 'log.audit' },
  'log.ledger': { v: 1, type: 'log.ledger', log_id: 'e'.repeat(64), events: 3, checkpoint: '{}\n' },
  'log.consistency': { v: 1, type: 'log.consistency', log_id: 'e'.repeat(64), old_size: 1, new_size: 3 },
  'log.proof': { v: 1, type: 'log.proof', log_id: 'e'.repeat(64), old_size: 1, new_size: 3, old_root: 'a'.repeat(64), new_root: 'b'.repeat(64), path: ['c'.repeat(64)] }
}

/** BASE[type] with `edit` applied to a copy. */
function edited<T extends FrameType> (type: T, edit: (f: any) => void): Frames[T] {
  const f = clone(BASE[type])
  edit(f)
  return f
}

// ---------------------------------------------------------------------------

describe('the constants match SPEC §10', () => {
  it('MAX_FRAME holds exactly the byte limits of the §10.3 table', () => {
    const section = SPEC.slice(SPEC.indexOf('### 10.3 Frames'), SPEC.indexOf('### 10.4'))
    const rows = [...section.matchAll(/^\| `(\w+)` \| ([\d,]+) /gm)].map(([, name, bytes]) => [name, Number((bytes as string).replaceAll(',', ''))])
    expect(rows.length).toBe(6)
    expect(Object.fromEntries(rows)).toStrictEqual({ ...MAX_FRAME })
  })

  it('PROTOCOLS are the protocol ids of the §10.4–10.6 headings', () => {
    const ids = [...SPEC.matchAll(/^### 10\.\d \w+: `(\/reach\/[^`]+)`$/gm)].map((m) => m[1])
    expect(ids).toStrictEqual([PROTOCOLS.pack, PROTOCOLS.delegate, PROTOCOLS.log])
    expect(PROTOCOLS).toStrictEqual({ pack: '/reach/pack/1.0.0', delegate: '/reach/delegate/1.0.0', log: '/reach/log/1.0.0' })
  })

  it('FRAME_LIMIT covers exactly the SPEC frame types, each at the limit its reader reads it with (never above any reader of it)', () => {
    expect(Object.keys(FRAME_LIMIT).sort()).toStrictEqual([...TYPES].sort())
    // §10.3 "read by": the one reader of each frame type.
    expect(FRAME_LIMIT['pack.get']).toBe(MAX_FRAME.request)
    expect(FRAME_LIMIT['log.get']).toBe(MAX_FRAME.request)
    expect(FRAME_LIMIT['log.next']).toBe(MAX_FRAME.request)
    expect(FRAME_LIMIT.pack).toBe(MAX_FRAME.packHeader)
    expect(FRAME_LIMIT.delegate).toBe(MAX_FRAME.delegateRequest)
    expect(FRAME_LIMIT.result).toBe(MAX_FRAME.delegateResult)
    for (const t of ['log', 'log.events', 'log.end', 'log.ledger', 'log.proof'] as const) expect(FRAME_LIMIT[t]).toBe(MAX_FRAME.logBatch)
    // The log server reads the ledger's requests as it reads `log.get`.
    expect(FRAME_LIMIT['log.audit']).toBe(MAX_FRAME.request)
    expect(FRAME_LIMIT['log.consistency']).toBe(MAX_FRAME.request)
    // The delegation server reads `cancel` with delegateRequest: a sender may not exceed it.
    expect(FRAME_LIMIT.cancel).toBeLessThanOrEqual(MAX_FRAME.delegateRequest)
    // Every reader reads an `error` frame, so it is held to the smallest reader limit.
    expect(FRAME_LIMIT.error).toBe(Math.min(...Object.values(MAX_FRAME)))
  })

  it('an error frame at its schema maximum fits FRAME_LIMIT.error, so every reader can read a refusal', () => {
    // 4,096 characters that JSON.stringify escapes to six bytes each (`\u0000`): the longest encoding.
    const widest = errorFrame('RL-4020', '\u0000'.repeat(4096))
    expect(refusal(encodeFrame(widest), [])).toBeUndefined()
    expect(encodeFrame(widest).byteLength).toBeLessThanOrEqual(FRAME_LIMIT.error)
  })
})

describe('valid frames round-trip (property, every type)', () => {
  for (const type of TYPES) {
    it(`${type}: decode(encode(frame)) equals the frame and is accepted as ${type}`, () => {
      fc.assert(fc.property(FRAMES[type], (frame) => {
        const bytes = encodeFrame(frame)
        expect(new Uint8Array(bytes)).toStrictEqual(utf8(JSON.stringify(frame)))
        const decoded = decodeFrame(bytes, [type])
        expect(decoded.type).toBe(type)
        expect(decoded).toStrictEqual(frame)
        expect(decodeFrame(bytes, TYPES)).toStrictEqual(frame)
      }), { numRuns: type === 'log.events' || type === 'delegate' ? 50 : 100 })
    })
  }

  it('a receiver does not depend on member order: the frame with its members (at every depth) in another order decodes equal', () => {
    fc.assert(fc.property(anyFrame, fc.integer(), (frame, seed) => {
      const shuffled = bytesOf(permuted(frame, seed))
      expect(decodeFrame(shuffled, [frame.type])).toStrictEqual(frame)
    }), { numRuns: 200 })
  })
})

describe('refusals, in the §10.3 order', () => {
  // Row 2: the body is valid UTF-8, parses as JSON and is an object.

  /** Byte sequences that are not UTF-8: stray continuation, overlong, surrogate, past U+10FFFF, truncated. */
  const NOT_UTF8 = [[0xff], [0xfe], [0x80], [0xbf], [0xc0, 0x80], [0xc1, 0xbf], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xc3], [0xe2, 0x82], [0xf0, 0x9f, 0x98]]
  const ascii = fc.string({ unit: 'grapheme-ascii', maxLength: 40 }).map((s) => JSON.stringify(s).slice(1, -1))

  /** An error frame whose message has `bad` spliced into it: only the bytes are wrong, the JSON is fine. */
  function spliced (prefix: string, bad: number[], suffix: string, v: unknown = 1): Uint8Array {
    return Uint8Array.from([...utf8(`{"v":${JSON.stringify(v)},"type":"error","code":"RL-4010","message":"${prefix}`), ...bad, ...utf8(`${suffix}"}`)])
  }

  it('bytes that are not UTF-8 inside a string member are RL-4010, although a lenient decoder would accept the frame (negative control)', () => {
    fc.assert(fc.property(ascii, fc.constantFrom(...NOT_UTF8), ascii, (prefix, bad, suffix) => {
      const bytes = spliced(prefix, bad, suffix)
      expect(isUtf8(bytes)).toBe(false)
      // The naive path: replacing bad bytes with U+FFFD yields a frame that passes every other check.
      const lenient = utf8(new TextDecoder().decode(bytes))
      expect(refusal(lenient, [])).toBeUndefined()
      expect(refusal(bytes, TYPES)).toBe('RL-4010')
    }))
  })

  it('arbitrary bytes that are not UTF-8 are RL-4010', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }).filter((b) => !isUtf8(b)), (bytes) => {
      expect(refusal(bytes)).toBe('RL-4010')
    }))
  })

  it('text that is not JSON (empty, truncated, trailing bytes, two objects) is RL-4010', () => {
    const frame = JSON.stringify(BASE.cancel)
    for (const text of ['', ' ', '{', frame.slice(0, -1), `${frame} x`, `${frame}${frame}`, `${frame},`, "{'v':1}", '{"v":1,"type":"cancel",}', 'undefined', 'NaN']) {
      expect(refusal(utf8(text)), text).toBe('RL-4010')
    }
    fc.assert(fc.property(fc.string().filter((s) => { try { JSON.parse(s); return false } catch { return true } }), (s) => {
      expect(refusal(utf8(s))).toBe('RL-4010')
    }))
  })

  it('JSON that is not an object (null, booleans, numbers, strings, arrays, an array holding a valid frame) is RL-4010', () => {
    fc.assert(fc.property(json.filter((v) => jsonType(v) !== 'object'), (value) => {
      expect(refusal(bytesOf(value))).toBe('RL-4010')
    }))
    fc.assert(fc.property(anyFrame, (frame) => {
      expect(refusal(bytesOf([frame]))).toBe('RL-4010')
      expect(refusal(bytesOf(JSON.stringify(frame)))).toBe('RL-4010')
    }), { numRuns: 50 })
  })

  it('bytes that are not UTF-8 are refused before the version is looked at: RL-4010 even with v = 2', () => {
    fc.assert(fc.property(ascii, fc.constantFrom(...NOT_UTF8), ascii, (prefix, bad, suffix) => {
      expect(refusal(spliced(prefix, bad, suffix, 2))).toBe('RL-4010')
    }), { numRuns: 50 })
  })

  // Row 3: `v` is present and equals 1.

  it('a frame whose v is missing or any JSON value but 1 is RL-4012', () => {
    fc.assert(fc.property(anyFrame, fc.option(json.filter((v) => v !== 1), { nil: undefined }), (frame, v) => {
      const f = editable(frame)
      if (v === undefined) delete f.v
      else f.v = v
      expect(refusal(bytesOf(f), [frame.type])).toBe('RL-4012')
    }), { numRuns: 200 })
    for (const v of [0, 2, -1, 1.5, '1', true, null, [1], { v: 1 }]) expect(refusal(bytesOf({ ...BASE.cancel, v })), JSON.stringify(v)).toBe('RL-4012')
  })

  it('the version is checked before the type: a wrong v with an unknown, missing or non-string type is RL-4012', () => {
    expect(refusal(bytesOf({}))).toBe('RL-4012')
    expect(refusal(bytesOf({ v: 2 }))).toBe('RL-4012')
    fc.assert(fc.property(anyFrame, json.filter((v) => v !== 1), fc.oneof(fc.string().filter((t) => !(TYPES as readonly string[]).includes(t)), ofAnotherType('string')), (frame, v, type) => {
      expect(refusal(bytesOf({ ...frame, v, type }))).toBe('RL-4012')
      // …and a type this point does not expect.
      expect(refusal(bytesOf({ ...frame, v }), TYPES.filter((t) => t !== frame.type && t !== 'error'))).toBe('RL-4012')
    }), { numRuns: 100 })
  })

  it('the version is checked before the schema: a wrong v with an unknown member or a missing one is RL-4012', () => {
    fc.assert(fc.property(anyFrame, fc.integer({ min: 2 }), (frame, v) => {
      expect(refusal(withMember({ ...frame, v }, 'unknown_member', 1), [frame.type])).toBe('RL-4012')
      const f = editable(frame)
      f.v = v
      for (const m of REQUIRED[frame.type]) delete f[m]
      expect(refusal(bytesOf(f), [frame.type])).toBe('RL-4012')
    }), { numRuns: 100 })
  })

  // Row 4: `type` names a frame expected at this point; an `error` frame is always expected.

  it('a valid frame of a type not in the expected list is RL-4010, except an error frame, which is always accepted', () => {
    fc.assert(fc.property(anyFrame.chain((f) => fc.tuple(fc.constant(f), fc.subarray(TYPES.filter((t) => t !== f.type)))), ([frame, expected]) => {
      const got = refusal(encodeFrame(frame), expected)
      if (frame.type === 'error') expect(got).toBeUndefined()
      else expect(got).toBe('RL-4010')
    }), { numRuns: 300 })
    expect(decodeFrame(encodeFrame(BASE.error), [])).toStrictEqual(BASE.error)
  })

  it('a type that is not a string, or a string no frame has (case, spaces, Object.prototype names), is RL-4010 even when every type is expected', () => {
    const names = fc.oneof(
      fc.constantFrom('Error', 'ERROR', ' error', 'error ', 'pack.get ', 'pack_get', 'log.End', '', 'constructor', '__proto__', 'toString', 'hasOwnProperty'),
      fc.string().filter((t) => !(TYPES as readonly string[]).includes(t))
    )
    fc.assert(fc.property(anyFrame, fc.oneof(names, ofAnotherType('string')), (frame, type) => {
      expect(refusal(bytesOf({ ...frame, type }))).toBe('RL-4010')
    }), { numRuns: 200 })
    expect(refusal(bytesOf({ ...BASE.error, type: ['error'] }))).toBe('RL-4010')
  })

  // Row 5: the frame matches its schema.

  it('a frame with an unknown extra member, whatever its name (__proto__, constructor, case variants), is RL-4010', () => {
    const key = (type: FrameType): fc.Arbitrary<string> => fc.oneof(
      fc.constantFrom('__proto__', 'constructor', 'toString', 'V', 'Type', 'type ', '', 'signature', 'depth'),
      fc.string()
    ).filter((k) => !membersOf(type).includes(k))
    fc.assert(fc.property(anyFrame.chain((f) => fc.tuple(fc.constant(f), key(f.type), json)), ([frame, k, value]) => {
      expect(refusal(withMember(frame, k, value), [frame.type])).toBe('RL-4010')
    }), { numRuns: 300 })
  })

  it('an unknown member inside a nested object with fixed members (budget, hop, result error, log_head) is RL-4010', () => {
    const cases: Array<[string, AnyFrame]> = [
      ['budget', edited('delegate', (f) => { f.budget.gpu = 1 })],
      ['budget __proto__', { ...BASE.delegate, budget: JSON.parse('{"__proto__":{"fuel":1}}') }],
      ['hop', edited('delegate', (f) => { f.ancestry[0].depth = 1 })],
      ['hop __proto__', { ...BASE.delegate, ancestry: [JSON.parse(`{${JSON.stringify(HOP_A).slice(1, -1)},"__proto__":{}}`)] }],
      ['result error', edited('result', (f) => { f.status = 'failed'; f.error = { code: 'RL-3106', message: 'threw', seq: 4 } })],
      ['log_head', edited('result', (f) => { f.log_head.at = 1 })]
    ]
    for (const [name, frame] of cases) expect(refusal(bytesOf(frame), [frame.type]), name).toBe('RL-4010')
  })

  it('a frame missing any one required member is RL-4010 (RL-4012 for v)', () => {
    fc.assert(fc.property(anyFrame.chain((f) => fc.tuple(fc.constant(f), fc.constantFrom('v', 'type', ...REQUIRED[f.type]))), ([frame, member]) => {
      const f = editable(frame)
      delete f[member]
      expect(refusal(bytesOf(f), [frame.type])).toBe(member === 'v' ? 'RL-4012' : 'RL-4010')
    }), { numRuns: 300 })
    // `result`'s optional members may be absent.
    const bare = edited('result', (f) => { delete f.output; delete f.error })
    expect(refusal(bytesOf(bare), ['result'])).toBeUndefined()
  })

  it('a result without `started` (an older peer\'s) is RL-4010 with a message that says so; another missing member is not said to be that', () => {
    const message = (f: unknown): string => {
      try {
        decodeFrame(bytesOf(f), ['result'])
      } catch (err) {
        if (isReachError(err, 'RL-4010')) return err.message
        throw err
      }
      throw new Error('decoded')
    }
    expect(message(edited('result', (f) => { delete f.started }))).toBe('result frame has no `started` event: the peer runs an older Reach')
    expect(message(edited('result', (f) => { delete f.log_head }))).toBe('malformed result frame: must have required property \'log_head\'')
  })

  it('mutating any single required member of a valid frame to a value of another JSON type is refused (RL-4012 for v, RL-4010 otherwise)', () => {
    const mutation = anyFrame.chain((f) => {
      const members = ['v', 'type', ...REQUIRED[f.type]].filter((m) => !ANY_JSON.has(`${f.type}.${m}`))
      return fc.constantFrom(...members).chain((m) => fc.tuple(fc.constant(f), fc.constant(m), ofAnotherType(jsonType((f as unknown as Record<string, unknown>)[m]))))
    })
    fc.assert(fc.property(mutation, ([frame, member, value]) => {
      const f = editable(frame)
      f[member] = value
      expect(refusal(bytesOf(f), [frame.type])).toBe(member === 'v' ? 'RL-4012' : 'RL-4010')
    }), { numRuns: 500 })
  })

  it('mutating a member of a nested object (budget, hop, result error, log_head) or an optional member to another JSON type is RL-4010', () => {
    const delegateMutation = fc.tuple(FRAMES.delegate, fc.constantFrom('fuel', 'memory_bytes', 'output_bytes', 'tool_calls', 'wall_ms', 'from', 'to', 'request', 'signature'), ofAnotherType('number'), ofAnotherType('string'))
    fc.assert(fc.property(delegateMutation, ([frame, member, notNumber, notString]) => {
      const f = clone(frame) as any
      if (['from', 'to', 'request', 'signature'].includes(member)) f.ancestry[f.ancestry.length - 1][member] = notString
      else f.budget[member] = notNumber
      expect(refusal(bytesOf(f), ['delegate'])).toBe('RL-4010')
    }), { numRuns: 200 })
    const resultMutation = fc.tuple(FRAMES.result, fc.constantFrom('error', 'error.code', 'error.message', 'log_head.seq', 'log_head.hash'), ofAnotherType('object'), ofAnotherType('string'), ofAnotherType('number'))
    fc.assert(fc.property(resultMutation, ([frame, path, notObject, notString, notNumber]) => {
      const f = clone(frame) as any
      if (path === 'error') f.error = notObject
      else if (path === 'log_head.seq') f.log_head.seq = notNumber
      else {
        const [outer, inner] = path.split('.') as [string, string]
        f[outer] ??= { code: 'RL-3106', message: 'threw' }
        f[outer][inner] = notString
      }
      expect(refusal(bytesOf(f), ['result'])).toBe('RL-4010')
    }), { numRuns: 200 })
  })

  it('a frame that is valid except for a member out of its SPEC range is RL-4010: each limit at its boundary', () => {
    const s = (n: number, c = 'a'): string => c.repeat(n)
    const hops = (n: number): Hop[] => Array.from({ length: n }, () => HOP_A)
    const events = (n: number): object[] => Array.from({ length: n }, (_, i) => ({ seq: i }))
    const table: Array<[string, AnyFrame, 'ok' | 'RL-4010']> = [
      ['message of 4,096 characters', edited('error', (f) => { f.message = s(4096) }), 'ok'],
      ['message of 4,096 astral characters', edited('error', (f) => { f.message = '😀'.repeat(4096) }), 'ok'],
      ['message of 4,097 characters', edited('error', (f) => { f.message = s(4097) }), 'RL-4010'],
      ['code RL-1000', edited('error', (f) => { f.code = 'RL-1000' }), 'ok'],
      ['code RL-6999', edited('error', (f) => { f.code = 'RL-6999' }), 'ok'],
      ['code RL-7001', edited('error', (f) => { f.code = 'RL-7001' }), 'RL-4010'],
      ['code RL-0001', edited('error', (f) => { f.code = 'RL-0001' }), 'RL-4010'],
      ['code RL-401', edited('error', (f) => { f.code = 'RL-401' }), 'RL-4010'],
      ['code RL-40100', edited('error', (f) => { f.code = 'RL-40100' }), 'RL-4010'],
      ['code rl-4010', edited('error', (f) => { f.code = 'rl-4010' }), 'RL-4010'],
      ['code with a trailing newline', edited('error', (f) => { f.code = 'RL-4010\n' }), 'RL-4010'],
      ['cid of 8 characters', edited('pack.get', (f) => { f.cid = s(8) }), 'ok'],
      ['cid of 7 characters', edited('pack.get', (f) => { f.cid = s(7) }), 'RL-4010'],
      ['cid of 128 characters', edited('pack.get', (f) => { f.cid = s(128) }), 'ok'],
      ['cid of 129 characters', edited('pack.get', (f) => { f.cid = s(129) }), 'RL-4010'],
      ['cid with an upper-case letter', edited('pack.get', (f) => { f.cid = 'bafyExample' }), 'RL-4010'],
      ['cid with a dash', edited('pack.get', (f) => { f.cid = 'bafy-example' }), 'RL-4010'],
      ['size 1', edited('pack', (f) => { f.size = 1 }), 'ok'],
      ['size 9,437,184', edited('pack', (f) => { f.size = 9_437_184 }), 'ok'],
      ['size 0', edited('pack', (f) => { f.size = 0 }), 'RL-4010'],
      ['size 9,437,185', edited('pack', (f) => { f.size = 9_437_185 }), 'RL-4010'],
      ['size 1.5', edited('pack', (f) => { f.size = 1.5 }), 'RL-4010'],
      ['64 signatures', edited('pack', (f) => { f.signatures = events(64) }), 'ok'],
      ['65 signatures', edited('pack', (f) => { f.signatures = events(65) }), 'RL-4010'],
      ['a signature that is an array', edited('pack', (f) => { f.signatures = [[]] }), 'RL-4010'],
      ['a signature that is null', edited('pack', (f) => { f.signatures = [null] }), 'RL-4010'],
      ['depth 64 with 64 hops', edited('delegate', (f) => { f.depth = 64; f.ancestry = hops(64) }), 'ok'],
      ['depth 0', edited('delegate', (f) => { f.depth = 0 }), 'RL-4010'],
      ['depth 65 with 64 hops', edited('delegate', (f) => { f.depth = 65; f.ancestry = hops(64) }), 'RL-4010'],
      ['depth 1.5', edited('delegate', (f) => { f.depth = 1.5 }), 'RL-4010'],
      ['an empty ancestry', edited('delegate', (f) => { f.ancestry = [] }), 'RL-4010'],
      ['65 hops', edited('delegate', (f) => { f.depth = 64; f.ancestry = hops(65) }), 'RL-4010'],
      ['deadline 0', edited('delegate', (f) => { f.deadline = 0 }), 'ok'],
      ['deadline -1', edited('delegate', (f) => { f.deadline = -1 }), 'RL-4010'],
      ['deadline 1.5', edited('delegate', (f) => { f.deadline = 1.5 }), 'RL-4010'],
      ['nonce of 31 hex digits', edited('delegate', (f) => { f.nonce = s(31, 'b') }), 'RL-4010'],
      ['nonce of 33 hex digits', edited('delegate', (f) => { f.nonce = s(33, 'b') }), 'RL-4010'],
      ['nonce in upper case', edited('delegate', (f) => { f.nonce = s(32, 'B') }), 'RL-4010'],
      ['nonce with a trailing newline', edited('delegate', (f) => { f.nonce = `${s(32, 'b')}\n` }), 'RL-4010'],
      ['delegation_id not hex', edited('delegate', (f) => { f.delegation_id = s(32, 'g') }), 'RL-4010'],
      ['every budget member at its minimum', edited('delegate', (f) => { f.budget = { fuel: 1, memory_bytes: 1, output_bytes: 1, tool_calls: 0, wall_ms: 1 } }), 'ok'],
      ['budget fuel 0', edited('delegate', (f) => { f.budget = { fuel: 0 } }), 'RL-4010'],
      ['budget memory_bytes 0', edited('delegate', (f) => { f.budget = { memory_bytes: 0 } }), 'RL-4010'],
      ['budget output_bytes 0', edited('delegate', (f) => { f.budget = { output_bytes: 0 } }), 'RL-4010'],
      ['budget tool_calls -1', edited('delegate', (f) => { f.budget = { tool_calls: -1 } }), 'RL-4010'],
      ['budget wall_ms 0', edited('delegate', (f) => { f.budget = { wall_ms: 0 } }), 'RL-4010'],
      ['budget fuel 1.5', edited('delegate', (f) => { f.budget = { fuel: 1.5 } }), 'RL-4010'],
      ['budget null', edited('delegate', (f) => { f.budget = null }), 'RL-4010'],
      ['budget an array', edited('delegate', (f) => { f.budget = [] }), 'RL-4010'],
      ['hop peer of 16 characters', edited('delegate', (f) => { f.ancestry[0].to = s(16, 'z') }), 'ok'],
      ['hop peer of 15 characters', edited('delegate', (f) => { f.ancestry[0].to = s(15, 'z') }), 'RL-4010'],
      ['hop peer of 128 characters', edited('delegate', (f) => { f.ancestry[0].to = s(128, 'z') }), 'ok'],
      ['hop peer of 129 characters', edited('delegate', (f) => { f.ancestry[0].to = s(129, 'z') }), 'RL-4010'],
      ...['0', 'O', 'I', 'l', '+'].map((c): [string, AnyFrame, 'RL-4010'] => [`hop peer with "${c}" (not base58btc)`, edited('delegate', (f) => { f.ancestry[0].from = `${c}${HOP_A.from.slice(1)}` }), 'RL-4010']),
      ['hop request in upper case', edited('delegate', (f) => { f.ancestry[0].request = s(64, 'C') }), 'RL-4010'],
      ['hop request of 63 hex digits', edited('delegate', (f) => { f.ancestry[0].request = s(63, 'c') }), 'RL-4010'],
      ['hop signature of 85 characters', edited('delegate', (f) => { f.ancestry[0].signature = s(85, 'A') }), 'RL-4010'],
      ['hop signature of 87 characters', edited('delegate', (f) => { f.ancestry[0].signature = s(87, 'A') }), 'RL-4010'],
      ...['+', '/', '='].map((c): [string, AnyFrame, 'RL-4010'] => [`hop signature with "${c}" (not base64url)`, edited('delegate', (f) => { f.ancestry[0].signature = `${s(85, 'A')}${c}` }), 'RL-4010']),
      ['a hop missing its signature', edited('delegate', (f) => { delete f.ancestry[0].signature }), 'RL-4010'],
      ['a hop that is a string', edited('delegate', (f) => { f.ancestry = ['hop'] }), 'RL-4010'],
      ['result without output or error', edited('result', (f) => { delete f.output }), 'ok'],
      ['result with output null', edited('result', (f) => { f.output = null }), 'ok'],
      ['result status "done"', edited('result', (f) => { f.status = 'done' }), 'RL-4010'],
      ['result error missing its message', edited('result', (f) => { f.error = { code: 'RL-3106' } }), 'RL-4010'],
      ['result error with a bad code', edited('result', (f) => { f.error = { code: 'E42', message: 'x' } }), 'RL-4010'],
      ['result error message of 4,097 characters', edited('result', (f) => { f.error = { code: 'RL-3106', message: s(4097) } }), 'RL-4010'],
      ['record an array', edited('result', (f) => { f.record = [] }), 'RL-4010'],
      ['checkpoint of 8,192 characters', edited('result', (f) => { f.checkpoint = s(8192) }), 'ok'],
      ['checkpoint of 8,193 characters', edited('result', (f) => { f.checkpoint = s(8193) }), 'RL-4010'],
      ['log_head seq -1', edited('result', (f) => { f.log_head.seq = -1 }), 'RL-4010'],
      ['log_head seq 0.5', edited('result', (f) => { f.log_head.seq = 0.5 }), 'RL-4010'],
      ['log_head missing its hash', edited('result', (f) => { delete f.log_head.hash }), 'RL-4010'],
      ['run_id of 19 hex digits', edited('log.get', (f) => { f.run_id = `run_${s(19, '0')}` }), 'RL-4010'],
      ['run_id of 21 hex digits', edited('log.get', (f) => { f.run_id = `run_${s(21, '0')}` }), 'RL-4010'],
      ['run_id with RUN_', edited('log.get', (f) => { f.run_id = `RUN_${s(20, '0')}` }), 'RL-4010'],
      ['log events 0', edited('log', (f) => { f.events = 0 }), 'ok'],
      ['log events -1', edited('log', (f) => { f.events = -1 }), 'RL-4010'],
      ['log checkpoint of 8,193 characters', edited('log', (f) => { f.checkpoint = s(8193) }), 'RL-4010'],
      ['log pack_cid of 7 characters', edited('log', (f) => { f.pack_cid = s(7) }), 'RL-4010'],
      ['1,000 events in a batch', edited('log.events', (f) => { f.events = events(1000) }), 'ok'],
      ['1,001 events in a batch', edited('log.events', (f) => { f.events = events(1001) }), 'RL-4010'],
      ['an empty batch', edited('log.events', (f) => { f.events = [] }), 'RL-4010'],
      ['an event that is a number', edited('log.events', (f) => { f.events = [1] }), 'RL-4010'],
      ['log.end with a member', edited('log.end', (f) => { f.events = 0 }), 'RL-4010'],
      ['log.next with a member', edited('log.next', (f) => { f.from = 0 }), 'RL-4010'],
      ['log.audit with a member', edited('log.audit', (f) => { f.from = 0 }), 'RL-4010'],
      ['log.ledger events 0', edited('log.ledger', (f) => { f.events = 0 }), 'RL-4010'],
      ['log.ledger events 2^53', edited('log.ledger', (f) => { f.events = 2 ** 53 }), 'RL-4010'],
      ['log.ledger log_id in upper case', edited('log.ledger', (f) => { f.log_id = s(64, 'E') }), 'RL-4010'],
      ['log.ledger checkpoint of 8,193 characters', edited('log.ledger', (f) => { f.checkpoint = s(8193) }), 'RL-4010'],
      ['log.consistency old_size 0', edited('log.consistency', (f) => { f.old_size = 0 }), 'ok'],
      ['log.consistency old_size -1', edited('log.consistency', (f) => { f.old_size = -1 }), 'RL-4010'],
      ['log.consistency new_size 1.5', edited('log.consistency', (f) => { f.new_size = 1.5 }), 'RL-4010'],
      ['log.consistency new_size 2^53', edited('log.consistency', (f) => { f.new_size = 2 ** 53 }), 'RL-4010'],
      ['log.consistency without log_id', edited('log.consistency', (f) => { delete f.log_id }), 'RL-4010'],
      ['log.proof with an empty path', edited('log.proof', (f) => { f.path = [] }), 'ok'],
      ['log.proof path of 128 hashes', edited('log.proof', (f) => { f.path = Array.from({ length: 128 }, () => s(64, 'c')) }), 'ok'],
      ['log.proof path of 129 hashes', edited('log.proof', (f) => { f.path = Array.from({ length: 129 }, () => s(64, 'c')) }), 'RL-4010'],
      ['log.proof path hash of 63 hex digits', edited('log.proof', (f) => { f.path = [s(63, 'c')] }), 'RL-4010'],
      ['log.proof new_root not hex', edited('log.proof', (f) => { f.new_root = s(64, 'g') }), 'RL-4010']
    ]
    for (const [name, frame, want] of table) {
      expect(refusal(bytesOf(frame), [frame.type]) ?? 'ok', name).toBe(want)
    }
  })
})

describe('errorFrame', () => {
  it('keeps a message of at most 4,096 characters as it is, and the frame decodes', () => {
    fc.assert(fc.property(code, fc.string({ maxLength: 4096, unit: 'grapheme-ascii' }), (c, m) => {
      const f = errorFrame(c, m)
      expect(f).toStrictEqual({ v: 1, type: 'error', code: c, message: m })
      expect(decodeFrame(encodeFrame(f), [])).toStrictEqual(f)
    }), { numRuns: 50 })
  })

  it('cuts a message over 4,096 characters to 4,095 and an ellipsis, and the frame decodes', () => {
    fc.assert(fc.property(code, fc.string({ minLength: 4097, maxLength: 10_000, unit: 'grapheme-ascii' }), (c, m) => {
      const f = errorFrame(c, m)
      expect(f.code).toBe(c)
      expect(f.message).toBe(`${m.slice(0, 4095)}…`)
      expect(f.message.length).toBe(4096)
      expect(decodeFrame(encodeFrame(f), [])).toStrictEqual(f)
    }), { numRuns: 50 })
    expect(errorFrame('RL-4020', 'x'.repeat(4097)).message).toBe(`${'x'.repeat(4095)}…`)
    expect(errorFrame('RL-4020', 'x'.repeat(4096)).message).toBe('x'.repeat(4096))
  })

  it('does not split a character when it cuts: a well-formed message stays well-formed, so canonical JSON can still hash it', () => {
    // '😀' is two UTF-16 code units; here the cut at 4,095 units falls between them.
    const m = `${'x'.repeat(4094)}😀😀`
    expect(m.isWellFormed()).toBe(true)
    const f = errorFrame('RL-4020', m)
    expect(f.message.isWellFormed()).toBe(true)
    expect(() => canonicalize(f)).not.toThrow()
  })
})

describe('requestDigest (SPEC §10.5)', () => {
  const text = fc.jsonValue({ maxDepth: 3, stringUnit: 'grapheme' }).map((v) => JSON.parse(JSON.stringify(v)) as unknown)
  const digestInput = record({ delegation_id: id, pack_cid: cid, input: text, budget, nonce: id, deadline: natural })
  const sha = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex')

  it('is hex(SHA-256(canonical({delegation_id, pack_cid, input_hash, budget, nonce, deadline}))) as the SPEC writes it', () => {
    fc.assert(fc.property(digestInput, (r) => {
      const input_hash = sha(canonicalize(r.input))
      expect(requestDigest(r)).toBe(sha(canonicalize({ delegation_id: r.delegation_id, pack_cid: r.pack_cid, input_hash, budget: r.budget, nonce: r.nonce, deadline: r.deadline })))
    }))
  })

  it('is independent of the member order of its input, at every depth (input and budget included)', () => {
    fc.assert(fc.property(digestInput, fc.integer(), (r, seed) => {
      expect(requestDigest(permuted(r, seed) as typeof r)).toBe(requestDigest(r))
    }))
  })

  it('ignores everything but its six inputs: a whole delegate frame (depth, ancestry, v, type) has the digest of its six members', () => {
    fc.assert(fc.property(FRAMES.delegate, (f) => {
      const six = { delegation_id: f.delegation_id, pack_cid: f.pack_cid, input: f.input, budget: f.budget, nonce: f.nonce, deadline: f.deadline }
      expect(requestDigest(f)).toBe(requestDigest(six))
    }), { numRuns: 50 })
  })

  it('changes when any one of its six inputs changes', () => {
    const other = { delegation_id: id, pack_cid: cid, input: text, budget, nonce: id, deadline: natural }
    const change = digestInput.chain((r) => fc.constantFrom(...(Object.keys(other) as Array<keyof typeof other>))
      .chain((m) => fc.tuple(fc.constant(r), fc.constant(m), (other[m] as fc.Arbitrary<unknown>).filter((v) => canonicalize(v) !== canonicalize(r[m])))))
    fc.assert(fc.property(change, ([r, member, value]) => {
      expect(requestDigest({ ...r, [member]: value })).not.toBe(requestDigest(r))
    }), { numRuns: 300 })
  })
})

describe('hopBody (SPEC §10.5)', () => {
  it('hopBody(i, …) is {depth: i + 1, from, to, request, previous} and nothing else (not the hop\'s signature)', () => {
    fc.assert(fc.property(fc.nat({ max: 63 }), hop, fc.option(sig, { nil: null }), (i, h, previous) => {
      const body = hopBody(i, h, previous)
      expect(body).toStrictEqual({ depth: i + 1, from: h.from, to: h.to, request: h.request, previous })
      expect(Object.keys(body).sort()).toStrictEqual(['depth', 'from', 'previous', 'request', 'to'])
    }))
  })
})

describe('the SPEC §10.5 example message', () => {
  const VECTOR_PEER = '12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7'
  const seed = new Uint8Array(32).fill(7)
  const request: Parameters<typeof requestDigest>[0] = { delegation_id: 'a'.repeat(32), pack_cid: 'bafyexample', nonce: 'b'.repeat(32), input: null, budget: {}, deadline: 1_700_000_000_000 }

  /** The example, as printed in SPEC.md: the code block after "Example message", its `\n` a newline. */
  function printed (): string {
    const after = SPEC.slice(SPEC.indexOf('Example message'))
    const block = /```\n([\s\S]*?)\n```/.exec(after)?.[1]
    if (block === undefined) throw new Error('SPEC.md has no example message block')
    expect(block.split('\\n').length).toBe(2)
    return block.replace('\\n', '\n')
  }

  it('is recomputed byte for byte from its values with requestDigest, hopBody and canonical JSON', () => {
    // The §10.2 vector: seed 07 × 32 is this peer id.
    expect(peerIdOfPublicKey(keyPairFromSeed(seed).publicKey)).toBe(VECTOR_PEER)
    const body = hopBody(0, { from: VECTOR_PEER, to: VECTOR_PEER, request: requestDigest(request) }, null)
    const message = `reach/delegation-hop/v1\n${canonicalize(body)}`
    expect(utf8(message)).toStrictEqual(utf8(printed()))
    expect(domainMessage(HOP_SIGNATURE_KIND, body)).toBe(message)
  })

  it('signed by the seed of `from`, gives a hop whose delegate frame decodes', () => {
    const digest = requestDigest(request)
    const signature = Buffer.from(createSigner(seed).sign(printed())).toString('base64url')
    const frame: DelegateRequest = { v: 1, type: 'delegate', ...request, depth: 1, ancestry: [{ from: VECTOR_PEER, to: VECTOR_PEER, request: digest, signature }] } as DelegateRequest
    expect(signature).toMatch(/^[A-Za-z0-9_-]{86}$/)
    expect(decodeFrame(encodeFrame(frame), ['delegate'])).toStrictEqual(frame)
  })
})
