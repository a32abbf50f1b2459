/**
 * Frames on a libp2p stream (SPEC §10): length-prefixed JSON through
 * `lpStream`, with the protocol's maximum frame size enforced before a byte
 * of an oversized frame is buffered, a deadline on every read, and on any
 * protocol violation an error frame with the code, then a close (a reset if
 * the close does not finish within a second), so the peer learns at once and
 * the node's resources are released.
 */
import type { Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { varint } from 'multiformats'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { FRAME_LIMIT, MAX_FRAME, decodeFrame, encodeFrame, errorFrame, type ErrorFrame, type FrameType, type Frames } from '../protocol/wire.ts'

export interface FrameStream {
  readonly stream: Stream
  /** The next frame, one of `expected` (or an `error` frame from the peer). Throws RL-4010/4011/4012/4002. */
  read<T extends FrameType>(expected: readonly T[], options?: { signal?: AbortSignal, timeoutMs?: number }): Promise<Frames[T] | ErrorFrame>
  /** Raw bytes of the next frame (a pack bundle), at most `max` bytes. */
  readBytes (max: number, options?: { signal?: AbortSignal, timeoutMs?: number }): Promise<Uint8Array>
  write (frame: Frames[FrameType]): Promise<void>
  /** A frame of `type` already encoded as JSON (a sender that built it without a second stringify). */
  writeEncoded (type: FrameType, json: Uint8Array): Promise<void>
  writeBytes (bytes: Uint8Array): Promise<void>
  /**
   * Tell the peer why in an error frame, then close the stream (reset it if that stalls); never
   * throws. A ReachError goes with its code; anything else is this node's own failure (RL-4020).
   */
  refuse (err: unknown): Promise<void>
  close (): Promise<void>
  reset (err?: Error): void
}

export const DEFAULT_READ_TIMEOUT_MS = 10_000

export interface FramesInit {
  /** The largest raw frame `readBytes` will be asked for on this stream (a pack bundle); default none. */
  bytesMax?: number
}

/** What a failed read means, as a ReachError. */
function readError (err: unknown, max: number): ReachError {
  if (isReachError(err)) return err
  const name = (err as { name?: string })?.name
  if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError') {
    return new ReachError('RL-4011', { message: `frame larger than the ${max}-byte limit`, cause: err })
  }
  if (name === 'InvalidMessageLengthError') return new ReachError('RL-4010', { message: 'frame length prefix is not a valid varint', cause: err })
  // The peer closed or died before a whole frame arrived: it is gone, not confused.
  if (name === 'UnexpectedEOFError') return new ReachError('RL-4002', { message: 'the peer closed the stream before answering', cause: err })
  if (name === 'TimeoutError' || name === 'AbortError') return new ReachError('RL-4002', { message: 'peer did not answer in time', cause: err })
  return new ReachError('RL-4002', { message: `stream failed: ${(err as Error)?.message ?? String(err)}`, cause: err })
}

function signalOf (options?: { signal?: AbortSignal, timeoutMs?: number }): AbortSignal {
  const timeout = AbortSignal.timeout(options?.timeoutMs ?? DEFAULT_READ_TIMEOUT_MS)
  return options?.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout])
}

/**
 * A frame stream whose JSON frames are at most `maxFrame` bytes.
 *
 * One length-prefixed reader for the stream's life; the limit of each read is enforced as its
 * length prefix is decoded (SPEC §10.3 check 1): a prefix longer than the limit's own varint, or
 * naming more than the limit, is RL-4011 at once, before a byte of the body is buffered. The
 * read buffer holds the largest frame this stream reads and one small frame behind it (a
 * `cancel` after a `delegate`): a peer sending more ahead than that loses the stream.
 */
export function frames (stream: Stream, maxFrame: number, init: FramesInit = {}): FrameStream {
  let limit = maxFrame
  const lengthDecoder = (data: { byteLength: number, subarray: () => Uint8Array }): number => {
    if (data.byteLength > varint.encodingLength(limit)) throw new ReachError('RL-4011', { message: `frame length prefix longer than the ${limit}-byte limit needs` })
    // RangeError: not a whole varint yet (lpStream reads another byte).
    const [length] = varint.decode(data.subarray())
    if (length > limit) throw new ReachError('RL-4011', { message: `frame of ${length} bytes is over the ${limit}-byte limit` })
    return length
  }
  const largest = Math.max(maxFrame, init.bytesMax ?? 0)
  const lp: LengthPrefixedStream<Stream> = lpStream(stream, { lengthDecoder, maxBufferSize: largest + MAX_FRAME.request + 16 })
  const readRaw = async (max: number, options?: { signal?: AbortSignal, timeoutMs?: number }): Promise<Uint8Array> => {
    if (max > largest) throw new RangeError(`readBytes(${max}) on a stream made for frames of at most ${largest} bytes`)
    limit = max
    try {
      return (await lp.read({ signal: signalOf(options) })).subarray()
    } catch (err) {
      throw readError(err, max)
    }
  }
  const fs: FrameStream = {
    stream,
    async read (expected, options) {
      return decodeFrame(await readRaw(maxFrame, options), expected)
    },
    async readBytes (max, options) {
      return await readRaw(max, options)
    },
    async write (frame) {
      await fs.writeEncoded(frame.type, encodeFrame(frame))
    },
    async writeEncoded (type, bytes) {
      // Held to the limit the peer reads this frame type with, not to our own read limit.
      const limit = FRAME_LIMIT[type]
      if (bytes.byteLength > limit) throw new ReachError('RL-4011', { message: `refusing to send a ${type} frame of ${bytes.byteLength} bytes (limit ${limit})` })
      await lp.write(bytes)
    },
    async writeBytes (bytes) {
      await lp.write(bytes)
    },
    async refuse (err) {
      // Our own failure is not the peer's malformed frame: it gets a code that sends the peer elsewhere.
      const e = isReachError(err) ? err : new ReachError('RL-4020', { message: `internal error: ${(err as Error)?.message ?? String(err)}` })
      try {
        await lp.write(encodeFrame(errorFrame(e.code, e.message)), { signal: AbortSignal.timeout(1000) })
        await stream.close({ signal: AbortSignal.timeout(1000) })
      } catch {
        stream.abort(e)
      }
    },
    async close () {
      try {
        await stream.close({ signal: AbortSignal.timeout(2000) })
      } catch (err) {
        stream.abort(err as Error)
      }
    },
    reset (err) {
      stream.abort(err ?? new Error('reset'))
    }
  }
  return fs
}

/** A peer's error frame as a ReachError carrying the peer's own code. */
export function peerError (frame: ErrorFrame, peer: string): ReachError {
  const code = /^RL-[1-6]\d{3}$/.test(frame.code) ? frame.code as ReachError['code'] : 'RL-4010'
  return new ReachError(code, { message: `peer ${peer}: ${frame.message}`, details: { peer, remote: true } })
}

export function isErrorFrame (frame: { type: string }): frame is ErrorFrame {
  return frame.type === 'error'
}
