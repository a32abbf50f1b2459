/**
 * Frame streams (federation/frames.ts, SPEC §10.3) over in-memory libp2p stream pairs: frames
 * round-trip both ways, JSON and raw bundle frames share a stream under different limits, every
 * read failure has its §10.3 code (RL-4011 before the body is buffered, RL-4010, RL-4002), a
 * sender holds each frame to its receiver's limit, `refuse` sends one error frame then ends the
 * stream, and `peerError` reports the peer's own code. Nothing here sleeps: tests await writes,
 * reads and stream events.
 */
import type { Stream } from '@libp2p/interface'
import { streamPair, type StreamPairOptions } from '@libp2p/utils'
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { frames, isErrorFrame, peerError } from '../../federation/frames.ts'
import { isReachError, ReachError } from '../../protocol/errors.ts'
import {
  decodeFrame, encodeFrame, FRAME_LIMIT, MAX_FRAME,
  type CancelFrame, type DelegateRequest, type ErrorFrame, type FrameType, type Frames, type LogEvents, type ResultFrame
} from '../../protocol/wire.ts'
import { code } from '../codes.ts'
// The unsigned LEB128 varint of a length, written by the tests, not by the library under test.
import { varint } from './mesh-helpers.ts'

const TYPES = ['error', 'pack.get', 'pack', 'delegate', 'cancel', 'result', 'log.get', 'log', 'log.events', 'log.end'] as const satisfies readonly FrameType[]

// ---------------------------------------------------------------------------
// Streams, and how to wait for them without sleeping

const opened: Stream[] = []

afterEach(() => {
  for (const s of opened.splice(0)) {
    try { s.abort(new Error('test over')) } catch { /* already gone */ }
  }
})

async function pair (options?: StreamPairOptions): Promise<[Stream, Stream]> {
  const [a, b] = await streamPair(options)
  opened.push(a, b)
  return [a, b]
}

/**
 * Resolves when `stream`'s remote end has closed for writing (every byte sent before it has
 * arrived), or the stream itself has closed; fails loudly after 10 s.
 */
async function remoteClosed (stream: Stream): Promise<void> {
  if (stream.remoteWriteStatus === 'closed' || stream.status !== 'open') return
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('the remote end did not close within 10 s')) }, 10_000)
    const done = (): void => { clearTimeout(timer); resolve() }
    stream.addEventListener('remoteCloseWrite', done, { once: true })
    stream.addEventListener('close', done, { once: true })
  })
}

/** The ReachError `promise` rejects with (a test failure if it resolves or throws something else). */
async function failure (promise: Promise<unknown>): Promise<ReachError> {
  try {
    await promise
  } catch (err) {
    if (isReachError(err)) return err
    throw new Error(`expected a ReachError, got ${String(err)}`)
  }
  throw new Error('expected a ReachError, the promise resolved')
}


function concat (...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => [...p]))
}

// ---------------------------------------------------------------------------
// Frames

const PEER = '12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7'
const HOP = { from: PEER, to: PEER, request: 'c'.repeat(64), signature: 'A'.repeat(86) }

function delegate (input: unknown = { n: 1 }): DelegateRequest {
  return { v: 1, type: 'delegate', delegation_id: 'a'.repeat(32), pack_cid: 'bafyexample', input, budget: { fuel: 500 }, depth: 1, ancestry: [HOP], deadline: 1_700_000_000_000, nonce: 'b'.repeat(32) }
}

/** A delegate frame whose JSON is exactly `bytes` long (its input a string of the right length). */
function delegateOfSize (bytes: number): DelegateRequest {
  const frame = delegate('')
  frame.input = 'x'.repeat(bytes - encodeFrame(frame).byteLength)
  expect(encodeFrame(frame).byteLength).toBe(bytes)
  return frame
}

const CANCEL: CancelFrame = { v: 1, type: 'cancel', delegation_id: 'a'.repeat(32) }
const RESULT: ResultFrame = {
  v: 1, type: 'result', delegation_id: 'a'.repeat(32), run_id: `run_${'1'.repeat(20)}`, status: 'completed', output: { echo: 'ok ✓' },
  record: { status: 'completed' }, started: { type: 'RunStarted' }, checkpoint: '{"v":1}\n', log_head: { seq: 3, hash: 'd'.repeat(64) }
}
const REFUSAL: ErrorFrame = { v: 1, type: 'error', code: 'RL-4007', message: 'busy' }

/** A compact arbitrary of valid frames of every type, for the stream property. */
const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n })
const cid = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789'), minLength: 8, maxLength: 128 })
const runId = hex(20).map((h) => `run_${h}`)
const json = fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown)
const object = fc.dictionary(fc.string(), json, { maxKeys: 4 }).map((v) => JSON.parse(JSON.stringify(v)) as Record<string, unknown>)
const code3 = fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 999 })).map(([r, n]) => `RL-${r}${String(n).padStart(3, '0')}`)
const text = fc.string({ unit: 'binary', maxLength: 300 })
const anyFrame: fc.Arbitrary<Frames[FrameType]> = fc.oneof(
  fc.tuple(code3, text).map(([c, message]): ErrorFrame => ({ v: 1, type: 'error', code: c, message })),
  cid.map((c): Frames['pack.get'] => ({ v: 1, type: 'pack.get', cid: c })),
  fc.tuple(cid, fc.integer({ min: 1, max: 9_437_184 }), fc.array(object, { maxLength: 3 })).map(([c, size, signatures]): Frames['pack'] => ({ v: 1, type: 'pack', cid: c, size, signatures })),
  fc.tuple(hex(32), json, hex(32), fc.nat()).map(([id, input, nonce, deadline]): DelegateRequest => ({ ...delegate(input), delegation_id: id, nonce, deadline })),
  hex(32).map((id): CancelFrame => ({ v: 1, type: 'cancel', delegation_id: id })),
  fc.tuple(hex(32), runId, fc.constantFrom('completed' as const, 'failed' as const, 'cancelled' as const), json, object, text).map(([id, run, status, output, record, checkpoint]): ResultFrame => ({ ...RESULT, delegation_id: id, run_id: run, status, output, record, checkpoint })),
  runId.map((run): Frames['log.get'] => ({ v: 1, type: 'log.get', run_id: run })),
  fc.tuple(runId, fc.nat(), cid, text).map(([run, events, c, checkpoint]): Frames['log'] => ({ v: 1, type: 'log', run_id: run, events, pack_cid: c, checkpoint })),
  fc.array(object, { minLength: 1, maxLength: 5 }).map((events): LogEvents => ({ v: 1, type: 'log.events', events })),
  fc.constant<Frames['log.end']>({ v: 1, type: 'log.end' })
)

// ---------------------------------------------------------------------------

describe('round trips', () => {
  it('frames of several types travel both ways on one stream, equal and in order', async () => {
    const [near, far] = await pair()
    const client = frames(near, MAX_FRAME.delegateResult)
    const server = frames(far, MAX_FRAME.delegateRequest)

    await client.write(delegate())
    await client.write(CANCEL)
    expect(await server.read(['delegate'])).toStrictEqual(delegate())
    expect(await server.read(['cancel', 'delegate'])).toStrictEqual(CANCEL)

    await server.write(RESULT)
    await server.write(REFUSAL)
    expect(await client.read(['result'])).toStrictEqual(RESULT)
    // An error frame is always accepted, whatever the reader expects.
    expect(await client.read(['result'])).toStrictEqual(REFUSAL)
  })

  it('writeEncoded sends a frame already encoded as JSON; the peer reads the same frame', async () => {
    const [near, far] = await pair()
    await frames(far, MAX_FRAME.request).writeEncoded('result', encodeFrame(RESULT))
    expect(await frames(near, MAX_FRAME.delegateResult).read(['result'])).toStrictEqual(RESULT)
  })

  it('on the wire a frame is its length as an unsigned varint, then exactly the JSON bytes (checked with a decoder of our own)', async () => {
    const [near, far] = await pair()
    const chunks: Uint8Array[] = []
    far.addEventListener('message', (evt) => { chunks.push(evt.data.subarray()) })
    const ended = remoteClosed(far)
    const big = { ...RESULT, output: 'w'.repeat(70_000) }
    await frames(near, MAX_FRAME.request).write(CANCEL)
    await frames(near, MAX_FRAME.request).write(big)
    await near.close()
    await ended
    const expected = [CANCEL, big].map((f) => encodeFrame(f)).flatMap((body) => [varint(body.byteLength), body])
    expect(concat(...chunks)).toStrictEqual(concat(...expected))
    // 70 KiB takes a three-byte varint: the encoder of the test is exercised past one byte.
    expect(varint(encodeFrame(big).byteLength).byteLength).toBe(3)
  })

  it('property: any sequence of valid frames written on one end is read back on the other, equal and in order, then the end', async () => {
    await fc.assert(fc.asyncProperty(fc.array(anyFrame, { minLength: 1, maxLength: 12 }), fc.constantFrom(undefined, 1, 3), async (sent, capacity) => {
      const [near, far] = await pair(capacity === undefined ? {} : { capacity })
      const writer = frames(near, MAX_FRAME.request)
      const reader = frames(far, MAX_FRAME.logBatch)
      const writing = (async () => {
        for (const f of sent) await writer.write(f)
        await writer.close()
      })()
      const got: unknown[] = []
      for (let i = 0; i < sent.length; i++) got.push(await reader.read(TYPES))
      await writing
      expect(got).toStrictEqual(sent)
      // Nothing more: the next read finds the end of the stream.
      expect(await code(reader.read(TYPES))).toBe('RL-4002')
    }), { numRuns: 50 })
  })
})

describe('raw bundle frames beside JSON frames, with another limit', () => {
  const bundle = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31) & 0xff)
  const header = (size: number): Frames['pack'] => ({ v: 1, type: 'pack', cid: 'bafyexample', size, signatures: [] })
  // Larger than the reader's JSON limit, so only readBytes' own limit lets it through.
  const BIG = MAX_FRAME.packHeader + 1000

  it('JSON then raw: a pack header, then a bundle over the JSON limit read with readBytes(size), then JSON again', async () => {
    const [near, far] = await pair()
    const server = frames(near, MAX_FRAME.request)
    const client = frames(far, MAX_FRAME.packHeader, { bytesMax: MAX_FRAME.packBytes })
    const reading = (async () => [await client.read(['pack']), await client.readBytes(BIG), await client.read(['log.end'])])()
    await server.write(header(BIG))
    await server.writeBytes(bundle(BIG))
    await server.write({ v: 1, type: 'log.end' })
    const [h, bytes, after] = await reading
    expect(h).toStrictEqual(header(BIG))
    expect(bytes).toStrictEqual(bundle(BIG))
    expect(after).toStrictEqual({ v: 1, type: 'log.end' })
  })

  it('raw then JSON: a bundle read with a small limit, then a JSON frame larger than that limit is read with the stream\'s own limit', async () => {
    const [near, far] = await pair()
    const writer = frames(near, MAX_FRAME.delegateResult)
    const reader = frames(far, MAX_FRAME.delegateResult)
    const big = { ...RESULT, output: 'y'.repeat(200_000) }
    const reading = (async () => [await reader.readBytes(100), await reader.read(['result'])])()
    await writer.writeBytes(bundle(100))
    await writer.write(big)
    const [bytes, after] = await reading
    expect(bytes).toStrictEqual(bundle(100))
    expect(after).toStrictEqual(big)
  })

  it('a client that half-closes after pack.get reads the whole answer (header, bundle, close) once it has all arrived: switching limits loses no byte and throws nothing', async () => {
    const [near, far] = await pair()
    const client = frames(near, MAX_FRAME.packHeader)
    const server = frames(far, MAX_FRAME.request)
    await client.write({ v: 1, type: 'pack.get', cid: 'bafyexample' })
    // Done sending: a libp2p client may close its writable end and keep reading.
    await near.close()
    expect(await server.read(['pack.get'])).toStrictEqual({ v: 1, type: 'pack.get', cid: 'bafyexample' })
    await server.write(header(5000))
    await server.writeBytes(bundle(5000))
    await server.close()
    await remoteClosed(near)
    expect(await client.read(['pack'])).toStrictEqual(header(5000))
    const bytes = await client.readBytes(5000).catch((err: unknown) => `${(err as Error).name}: ${(err as Error).message}`)
    expect(bytes).toStrictEqual(bundle(5000))
  })

  it('readBytes(max) refuses a raw frame of max + 1 bytes with RL-4011 and accepts one of exactly max', async () => {
    const [near, far] = await pair()
    const writer = frames(near, MAX_FRAME.request)
    const reader = frames(far, MAX_FRAME.request)
    await writer.writeBytes(bundle(1000))
    expect(await reader.readBytes(1000)).toStrictEqual(bundle(1000))
    await writer.writeBytes(bundle(1001))
    expect(await code(reader.readBytes(1000))).toBe('RL-4011')
  })
})

describe('read failures and their codes (SPEC §10.3)', () => {
  it('a length prefix over the reader\'s limit is RL-4011, refused on the prefix alone: no body is ever sent', async () => {
    for (const length of [MAX_FRAME.request + 1, 2 ** 40]) {
      const [near, far] = await pair()
      const reader = frames(far, MAX_FRAME.request)
      near.send(varint(length))
      // Were the reader to wait for the body, this read would end at its deadline with RL-4002.
      expect(await code(reader.read(TYPES, { timeoutMs: 5000 })), `length ${length}`).toBe('RL-4011')
    }
  })

  it('a length prefix of exactly the limit is accepted (the refusal is at limit + 1, not before)', async () => {
    const [near, far] = await pair()
    const reader = frames(far, MAX_FRAME.delegateRequest)
    const frame = delegateOfSize(MAX_FRAME.delegateRequest)
    await frames(near, MAX_FRAME.request).write(frame)
    expect(await reader.read(['delegate'])).toStrictEqual(frame)
  })

  it('a varint longer than the limit needs (1 in four bytes for a 64 KiB limit, which needs three) is RL-4011', async () => {
    const [near, far] = await pair()
    near.send(Uint8Array.of(0x81, 0x80, 0x80, 0x00))
    expect(await code(frames(far, MAX_FRAME.request).read(TYPES, { timeoutMs: 5000 }))).toBe('RL-4011')
  })

  it('an unterminated varint prefix already longer than any the limit allows is refused at once with RL-4011 (SPEC row 1), not left to wait for the read deadline', async () => {
    const [near, far] = await pair()
    // Twelve continuation bytes: no valid prefix for a 64 KiB limit (three bytes at most) starts this way.
    near.send(new Uint8Array(12).fill(0x80))
    expect(await code(frames(far, MAX_FRAME.request).read(TYPES, { timeoutMs: 1000 }))).toBe('RL-4011')
  })

  it('a body that is not a valid frame is RL-4010 (not JSON) or RL-4012 (version), as decodeFrame says', async () => {
    const [near, far] = await pair()
    const reader = frames(far, MAX_FRAME.request)
    for (const body of ['not json', '[1]', JSON.stringify({ ...CANCEL, v: 2 }), JSON.stringify({ ...CANCEL, extra: 1 })]) {
      const bytes = new TextEncoder().encode(body)
      near.send(concat(varint(bytes.byteLength), bytes))
    }
    expect(await code(reader.read(['cancel']))).toBe('RL-4010')
    expect(await code(reader.read(['cancel']))).toBe('RL-4010')
    expect(await code(reader.read(['cancel']))).toBe('RL-4012')
    expect(await code(reader.read(['cancel']))).toBe('RL-4010')
  })

  it('a stream that ends mid-frame (in the body, in the prefix, or before any byte) is RL-4002: the peer is gone', async () => {
    const cases: Array<[string, Uint8Array]> = [
      ['half a body', concat(varint(100), new Uint8Array(50).fill(0x20))],
      ['half a prefix', Uint8Array.of(0x80)],
      ['nothing', new Uint8Array(0)]
    ]
    for (const [name, bytes] of cases) {
      const [near, far] = await pair()
      const reader = frames(far, MAX_FRAME.request)
      if (bytes.byteLength > 0) near.send(bytes)
      await near.close()
      const err = await failure(reader.read(TYPES, { timeoutMs: 5000 }))
      expect(err.code, name).toBe('RL-4002')
      // The end of the stream, not the read deadline.
      expect((err.cause as Error | undefined)?.name, name).toBe('UnexpectedEOFError')
    }
  })

  it('a read that gets nothing within its timeoutMs is RL-4002, and so is one whose body stops coming', async () => {
    const [near, far] = await pair()
    const reader = frames(far, MAX_FRAME.request)
    expect(await code(reader.read(TYPES, { timeoutMs: 20 }))).toBe('RL-4002')
    near.send(concat(varint(100), new Uint8Array(10).fill(0x20)))
    expect(await code(reader.read(TYPES, { timeoutMs: 20 }))).toBe('RL-4002')
  })

  it('a read whose caller aborts its signal is RL-4002', async () => {
    const [, far] = await pair()
    const controller = new AbortController()
    const reading = code(frames(far, MAX_FRAME.request).read(TYPES, { signal: controller.signal, timeoutMs: 5000 }))
    controller.abort()
    expect(await reading).toBe('RL-4002')
  })

  it('a frame and a small one behind it are read even when together they pass the reader\'s limit; a peer further ahead than that loses the stream', async () => {
    // The SPEC lets a client send `cancel` at any time, so a `delegate` of the full limit may
    // arrive with a `cancel` behind it. A log server sends a batch only when asked (`log.next`),
    // so one that streams batches ahead of its client is past what a reader holds.
    const cases: Array<[string, number, Array<Frames[FrameType]>, string?]> = [
      ['delegate of 1 MiB − 20 bytes, then cancel', MAX_FRAME.delegateRequest, [delegateOfSize(MAX_FRAME.delegateRequest - 20), CANCEL]],
      ['three error frames of 24 KiB each on a 64 KiB stream', MAX_FRAME.request, Array.from({ length: 3 }, () => ({ ...REFUSAL, message: '\u0000'.repeat(4096) }))],
      ['17 log.events batches of 1 MiB streamed ahead of a log client (limit 16 MiB)', MAX_FRAME.logBatch, Array.from({ length: 17 }, (_, i): LogEvents => ({ v: 1, type: 'log.events', events: [{ seq: i, pad: 'p'.repeat(1024 * 1024 - 100) }] })), 'lost']
    ]
    const outcomes: Record<string, string> = {}
    for (const [name, limit, sent, expectation] of cases) {
      const [near, far] = await pair()
      const reader = frames(far, limit)
      const writer = frames(near, MAX_FRAME.delegateResult)
      // Everything has been sent and has arrived before the reader asks for its first frame (a
      // write fails only when the reader's end has already given up).
      await (async () => {
        for (const f of sent) await writer.write(f)
        await writer.close()
      })().catch(() => {})
      await remoteClosed(far)
      let read = 0
      let first: string | undefined
      for (const f of sent) {
        try {
          const got = await reader.read([f.type])
          if (JSON.stringify(got) === JSON.stringify(f)) read++
          else first ??= `another ${got.type} frame`
        } catch (err) {
          first ??= isReachError(err) ? `${err.code}: ${err.message}` : String(err)
        }
      }
      outcomes[name] = expectation === 'lost' && read === 0 && first?.startsWith('RL-4002') === true && first.includes('overflow') ? 'lost' : `${read} of ${sent.length} read${first === undefined ? '' : `; first failure ${first}`}`
    }
    expect(outcomes).toStrictEqual(Object.fromEntries(cases.map(([name, , sent, expectation]) => [name, expectation ?? `${sent.length} of ${sent.length} read`])))
  })
})

describe('write: a frame is held to its receiver\'s limit (FRAME_LIMIT)', () => {
  it('a delegate frame of FRAME_LIMIT.delegate + 1 bytes is refused with RL-4011 and nothing of it is sent; one of exactly the limit goes', async () => {
    const [near, far] = await pair()
    const writer = frames(near, MAX_FRAME.delegateResult)
    const reader = frames(far, MAX_FRAME.delegateRequest)
    expect(await code(writer.write(delegateOfSize(FRAME_LIMIT.delegate + 1)))).toBe('RL-4011')
    // Had any byte of it been sent, the peer would read it (or its prefix) before this cancel.
    await writer.write(CANCEL)
    expect(await reader.read(['cancel', 'delegate'])).toStrictEqual(CANCEL)
    const atLimit = delegateOfSize(FRAME_LIMIT.delegate)
    await writer.write(atLimit)
    expect(await reader.read(['delegate'])).toStrictEqual(atLimit)
  })

  it('writeEncoded applies the limit of the type it is given: 100 KiB of JSON as a cancel (64 KiB) is RL-4011', async () => {
    const [near, far] = await pair()
    const writer = frames(near, MAX_FRAME.delegateResult)
    const json = encodeFrame({ ...RESULT, output: 'q'.repeat(100 * 1024) })
    expect(await code(writer.writeEncoded('cancel', json))).toBe('RL-4011')
    await writer.writeEncoded('result', json)
    expect(await frames(far, MAX_FRAME.delegateResult).read(['result'])).toStrictEqual(decodeFrame(json, ['result']))
  })

  it('the limit is the receiver\'s, not the writer\'s own read limit: a 2 MiB result goes from a stream that reads at most 1 MiB', async () => {
    const [near, far] = await pair()
    const server = frames(near, MAX_FRAME.delegateRequest)
    const big = { ...RESULT, output: 'r'.repeat(2 * 1024 * 1024) }
    expect(encodeFrame(big).byteLength).toBeGreaterThan(MAX_FRAME.delegateRequest)
    await server.write(big)
    expect(await frames(far, MAX_FRAME.delegateResult).read(['result'])).toStrictEqual(big)
  })
})

describe('refuse', () => {
  /** What the peer of a refusing stream reads: its frames until the stream ends. */
  async function afterRefusal (err: unknown): Promise<{ frame: unknown, next: ReachError, far: Stream }> {
    const [near, far] = await pair()
    const reader = frames(far, MAX_FRAME.delegateResult)
    await frames(near, MAX_FRAME.request).refuse(err)
    const frame = await reader.read(['result'])
    const next = await failure(reader.read(['result'], { timeoutMs: 5000 }))
    return { frame, next, far }
  }

  it('a ReachError: the peer reads one error frame with its code and message, then the end of the stream', async () => {
    const { frame, next, far } = await afterRefusal(new ReachError('RL-4007', { message: 'busy: 4 runs and 16 waiting' }))
    expect(frame).toStrictEqual({ v: 1, type: 'error', code: 'RL-4007', message: 'busy: 4 runs and 16 waiting' })
    expect(next.code).toBe('RL-4002')
    expect((next.cause as Error | undefined)?.name).toBe('UnexpectedEOFError')
    expect(far.remoteWriteStatus).toBe('closed')
  })

  it('a plain Error is this node\'s own failure: RL-4020 (peer failed internally), not RL-4010, and the message says it is internal', async () => {
    const { frame, next } = await afterRefusal(new Error('disk on fire'))
    expect(frame).toMatchObject({ v: 1, type: 'error', code: 'RL-4020' })
    expect((frame as ErrorFrame).message).toMatch(/internal/)
    expect(next.code).toBe('RL-4002')
  })

  it('anything thrown that is not an Error (a string, undefined) is RL-4020 too', async () => {
    for (const thrown of ['boom', undefined]) {
      const { frame } = await afterRefusal(thrown)
      expect(frame, String(thrown)).toMatchObject({ v: 1, type: 'error', code: 'RL-4020' })
    }
  })

  it('a message over 4,096 characters goes cut, as a frame the peer can decode', async () => {
    const { frame } = await afterRefusal(new ReachError('RL-3010', { message: 'm'.repeat(10_000) }))
    expect(frame).toStrictEqual({ v: 1, type: 'error', code: 'RL-3010', message: `${'m'.repeat(4095)}…` })
  })

  it('never throws, even on a stream that was already reset', async () => {
    const [near] = await pair()
    const fs = frames(near, MAX_FRAME.request)
    fs.reset(new Error('gone'))
    await expect(fs.refuse(new ReachError('RL-4010'))).resolves.toBeUndefined()
  })
})

describe('peerError', () => {
  it('maps a peer\'s error frame to a ReachError with the peer\'s own code, details.remote === true and the peer', async () => {
    const [near, far] = await pair()
    await frames(far, MAX_FRAME.request).refuse(new ReachError('RL-3012', { message: 'pack not here' }))
    const frame = await frames(near, MAX_FRAME.packHeader).read(['pack'])
    expect(isErrorFrame(frame)).toBe(true)
    const err = peerError(frame as ErrorFrame, PEER)
    expect(err).toBeInstanceOf(ReachError)
    expect(err.code).toBe('RL-3012')
    expect(err.details).toStrictEqual({ peer: PEER, remote: true })
    expect(err.message).toContain('pack not here')
    expect(err.message).toContain(PEER)
  })

  it('a code that is not an RL- code (only a frame built by hand can carry one) becomes RL-4010, still remote', () => {
    const err = peerError({ v: 1, type: 'error', code: 'E_BAD', message: 'x' }, PEER)
    expect(err.code).toBe('RL-4010')
    expect(err.details.remote).toBe(true)
    expect(isErrorFrame(CANCEL)).toBe(false)
  })
})
