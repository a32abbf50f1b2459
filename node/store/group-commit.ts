/**
 * Group commit: many appenders, one fsync per batch.
 *
 * Each submission is verified on arrival, synchronously and in call order,
 * against the *pending* head (the durable head plus everything accepted but
 * not yet written), so concurrent appenders of consecutive events all
 * succeed. While one durable write is in flight, new submissions queue; when
 * it completes, everything queued (up to MAX_BATCH_EVENTS / MAX_BATCH_BYTES)
 * becomes the next write. A submission is never split across writes, so an
 * `appendBatch` stays all-or-nothing.
 *
 * If a write fails, its submissions are rejected with the write's error,
 * every submission queued behind it (each one extends the failed events) is
 * rejected with RL-5002, and the pending head falls back to the durable head.
 */
import { ReachError } from '../../protocol/errors.ts'
import { headOf, type ChainHead, type Event } from '../../protocol/event.ts'
import { checkArrival } from './arrival.ts'
import { MAX_BATCH_BYTES, MAX_BATCH_EVENTS } from './constants.ts'

/**
 * One durable write: the canonical lines of verified, consecutive events.
 * Taken at submission, so a caller mutating its event objects afterwards
 * changes nothing.
 */
export interface CommitBatch {
  /** Seq of the first event; line i is seq firstSeq + i. */
  readonly firstSeq: number
  /** `canonicalize(event)` for each event, the exact text to store. */
  readonly lines: readonly string[]
  /** Head after the last event of the batch. */
  readonly head: ChainHead
  /** Sum of the lines' lengths in UTF-16 code units (a size estimate). */
  readonly size: number
  /** Writes of the store's own kind that go in the same durable write (LevelEventStore.appendBatchWith). */
  readonly riders?: readonly unknown[]
}

export interface GroupCommitInit {
  /** Durable head at start. */
  head: ChainHead | null
  /** Writes a batch durably; resolves only after the data is fsynced. */
  write: (batch: CommitBatch) => Promise<void>
  maxEvents?: number
  maxBytes?: number
}

interface Submission {
  firstSeq: number
  lines: string[]
  head: ChainHead
  size: number
  riders?: readonly unknown[]
  resolve: () => void
  reject: (err: unknown) => void
}

export class GroupCommit {
  #durable: ChainHead | null
  #pending: ChainHead | null
  #queue: Submission[] = []
  #running: Promise<void> | undefined
  readonly #write: (batch: CommitBatch) => Promise<void>
  readonly #maxEvents: number
  readonly #maxBytes: number

  constructor (init: GroupCommitInit) {
    this.#durable = init.head
    this.#pending = init.head
    this.#write = init.write
    this.#maxEvents = init.maxEvents ?? MAX_BATCH_EVENTS
    this.#maxBytes = init.maxBytes ?? MAX_BATCH_BYTES
  }

  durableHead (): ChainHead | null {
    return this.#durable
  }

  pendingHead (): ChainHead | null {
    return this.#pending
  }

  /** True while a write is in flight or submissions are queued. */
  get busy (): boolean {
    return this.#running !== undefined || this.#queue.length > 0
  }

  /**
   * Verifies `events` against the pending head and queues them as one unit.
   * Verification errors are thrown synchronously and change nothing; the
   * returned promise settles when the unit is durable (or its write failed).
   * `riders` go in the same durable write as the events (see CommitBatch).
   */
  submit (events: readonly Event[], riders?: readonly unknown[]): Promise<void> {
    if (events.length === 0) return Promise.resolve()
    const lines: string[] = new Array(events.length)
    let head = this.#pending
    let size = 0
    for (let i = 0; i < events.length; i++) {
      const event = events[i] as Event
      const line = checkArrival(head, event)
      lines[i] = line
      size += line.length
      head = headOf(event)
    }
    const firstSeq = (events[0] as Event).seq
    const promise = new Promise<void>((resolve, reject) => {
      this.#queue.push({ firstSeq, lines, head: head as ChainHead, size, ...(riders === undefined ? {} : { riders }), resolve, reject })
    })
    this.#pending = head
    this.#kick()
    return promise
  }

  /** Resolves once nothing is queued or in flight. Never rejects. */
  async idle (): Promise<void> {
    while (this.#running !== undefined) await this.#running
  }

  #kick (): void {
    if (this.#running !== undefined) return
    this.#running = (async () => {
      // Yield once so a synchronous burst of submissions joins the first write.
      await undefined
      await this.#drain()
    })().finally(() => {
      this.#running = undefined
      if (this.#queue.length > 0) this.#kick()
    })
  }

  async #drain (): Promise<void> {
    while (this.#queue.length > 0) {
      const units = this.#take()
      const batch = merge(units)
      try {
        await this.#write(batch)
      } catch (err) {
        const behind = this.#queue
        this.#queue = []
        this.#pending = this.#durable
        for (const unit of units) unit.reject(err)
        for (const unit of behind) {
          unit.reject(new ReachError('RL-5002', {
            message: `not written: it extends seq ${batch.firstSeq}..${batch.head.seq}, whose write failed`,
            seq: unit.firstSeq,
            cause: err
          }))
        }
        return
      }
      this.#durable = batch.head
      for (const unit of units) unit.resolve()
    }
  }

  /** Whole submissions from the front of the queue, within the batch caps (at least one). */
  #take (): Submission[] {
    let n = 1
    let events = (this.#queue[0] as Submission).lines.length
    let size = (this.#queue[0] as Submission).size
    while (n < this.#queue.length) {
      const next = this.#queue[n] as Submission
      if (events + next.lines.length > this.#maxEvents || size + next.size > this.#maxBytes) break
      events += next.lines.length
      size += next.size
      n++
    }
    return this.#queue.splice(0, n)
  }
}

function merge (units: Submission[]): CommitBatch {
  const first = units[0] as Submission
  const last = units[units.length - 1] as Submission
  if (units.length === 1) return { firstSeq: first.firstSeq, lines: first.lines, head: first.head, size: first.size, ...(first.riders === undefined ? {} : { riders: first.riders }) }
  const lines: string[] = []
  const riders: unknown[] = []
  let size = 0
  for (const unit of units) {
    for (const line of unit.lines) lines.push(line)
    if (unit.riders !== undefined) riders.push(...unit.riders)
    size += unit.size
  }
  return { firstSeq: first.firstSeq, lines, head: last.head, size, ...(riders.length === 0 ? {} : { riders }) }
}
