/**
 * The frames a client sends on a delegation stream, read by one reader for the stream's whole
 * life (during a run, to see a `cancel`; between runs, to get the next request) and handed out
 * in order. At most one frame is held: a client has nothing to send while a frame is unanswered
 * but a `cancel`, so more is a client breaking the protocol, and the read waits.
 */
import { ReachError } from '../protocol/errors.ts'
import type { CancelFrame, DelegateRequest, ErrorFrame } from '../protocol/wire.ts'
import { INBOX_READ_MS } from './delegation-constants.ts'
import type { FrameStream } from './frames.ts'

export type ClientFrame = DelegateRequest | CancelFrame | ErrorFrame

export class Inbox {
  private readonly fs: FrameStream
  private held: ClientFrame | undefined
  private reading: Promise<void> | undefined
  private failure: unknown

  constructor (fs: FrameStream) {
    this.fs = fs
  }

  private fill (): Promise<void> {
    this.reading ??= (async () => {
      try {
        this.held = await this.fs.read(['delegate', 'cancel'], { timeoutMs: INBOX_READ_MS })
      } catch (err) {
        this.failure = err
      } finally {
        this.reading = undefined
      }
    })()
    return this.reading
  }

  /** The next frame without taking it; undefined when `signal` aborts first. Throws how the stream failed. */
  async peek (signal: AbortSignal): Promise<ClientFrame | undefined> {
    if (this.held === undefined && this.failure === undefined) {
      let onAbort: (() => void) | undefined
      const stop = new Promise<void>((resolve) => {
        onAbort = resolve
        if (signal.aborted) resolve()
        else signal.addEventListener('abort', onAbort, { once: true })
      })
      try {
        await Promise.race([this.fill(), stop])
      } finally {
        if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
      }
    }
    if (this.held !== undefined) return this.held
    if (this.failure !== undefined) throw this.failure
    return undefined
  }

  drop (): void {
    this.held = undefined
  }

  /** Take the next frame; throws how the stream failed, or RL-4002 when `signal` aborts first. */
  async next (signal: AbortSignal): Promise<ClientFrame> {
    const frame = await this.peek(signal)
    if (frame === undefined) throw new ReachError('RL-4002', { message: 'no request in time' })
    this.drop()
    return frame
  }
}
