/**
 * The recorded events a resume or a replay reads, one at a time: from an array (a local log),
 * or from batches as they arrive (a log streamed from a peer), holding a bounded number of them.
 *
 * Reading stays synchronous on the replay's hot path: the interpreter asks `needs(n)` (a
 * comparison) before each step and each effect, and awaits `fill(n)` only when the buffered
 * events run low, which for a streamed log is once per batch.
 */
import type { Event } from '../../protocol/event.ts'

/**
 * Reading the record failed (the stream broke, a peer's error, a chain failure on arrival): not
 * the pack's doing, so the run loop passes it on as it is instead of recording a RunFailed.
 */
export class RecordReadError extends Error {
  readonly error: unknown
  constructor (error: unknown) {
    super((error as Error)?.message ?? String(error))
    this.error = error
  }
}

export interface RecordCursor {
  /** The next recorded event; undefined once the record has ended (after `fill`). */
  peek (): Event | undefined
  advance (): void
  /** Fewer than `n` events are buffered and more may come. */
  needs (n: number): boolean
  /** Buffer at least `n` events, or all that are left. */
  fill (n: number): Promise<void>
}

export class ArrayCursor implements RecordCursor {
  private i = 0
  private readonly events: readonly Event[]

  constructor (events: readonly Event[]) {
    this.events = events
  }

  peek (): Event | undefined {
    return this.events[this.i]
  }

  advance (): void {
    this.i++
  }

  needs (): boolean {
    return false
  }

  async fill (): Promise<void> {}
}

/** Events from an iterator of batches; at most the batch being read and the one before are held. */
export class StreamCursor implements RecordCursor {
  private batch: readonly Event[] = []
  private i = 0
  private done = false
  private readonly source: AsyncIterator<readonly Event[]>

  constructor (batches: AsyncIterable<readonly Event[]>) {
    this.source = batches[Symbol.asyncIterator]()
  }

  peek (): Event | undefined {
    return this.batch[this.i]
  }

  advance (): void {
    this.i++
  }

  needs (n: number): boolean {
    return !this.done && this.batch.length - this.i < n
  }

  async fill (n: number): Promise<void> {
    while (this.needs(n)) {
      let next: IteratorResult<readonly Event[]>
      try {
        next = await this.source.next()
      } catch (err) {
        this.done = true
        throw err
      }
      if (next.done === true) {
        this.done = true
        return
      }
      // Keep what is left of this batch and append the next one.
      this.batch = this.i < this.batch.length ? [...this.batch.slice(this.i), ...next.value] : next.value
      this.i = 0
    }
  }

  /** Read what is left of the source, keeping none of it (its own checks still run as it is read). */
  async drain (): Promise<void> {
    this.batch = []
    this.i = 0
    while (!this.done) {
      const next = await this.source.next()
      if (next.done === true) this.done = true
    }
  }
}
