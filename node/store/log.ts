/**
 * EventLog: the writer API on top of an EventStore.
 *
 * `append(draft)` builds the next event synchronously from the store's
 * pending head (`nextEvent(pendingHead, draft)`) and hands it to the store's
 * group commit in the same tick, so concurrent callers get consecutive seqs
 * without awaiting each other and share fsyncs. If a write fails, the store
 * resets its pending head to the durable head, and the next draft extends that.
 */
import { headOf, nextEvent, type ChainHead, type Event, type EventDraft } from '../../protocol/event.ts'
import type { EventStore, ReadRange } from './types.ts'

export class EventLog {
  readonly store: EventStore

  constructor (store: EventStore) {
    this.store = store
  }

  /** The durable head. */
  head (): ChainHead | null {
    return this.store.head()
  }

  /** The head the next draft will extend (includes appends in flight). */
  pendingHead (): ChainHead | null {
    return this.store.pendingHead()
  }

  /** Appends one event built from `draft`; resolves with it once durable. RL-1005 for a bad draft. */
  async append (draft: EventDraft): Promise<Event> {
    const event = nextEvent(this.store.pendingHead(), draft)
    await this.store.append(event)
    return event
  }

  /** Appends events built from `drafts` all-or-nothing, in one durable write. */
  async appendMany (drafts: readonly EventDraft[]): Promise<Event[]> {
    let head = this.store.pendingHead()
    const events: Event[] = []
    for (const draft of drafts) {
      const event = nextEvent(head, draft)
      events.push(event)
      head = headOf(event)
    }
    await this.store.appendBatch(events)
    return events
  }

  read (range?: ReadRange): AsyncIterable<Event> {
    return this.store.read(range)
  }

  async readAll (): Promise<Event[]> {
    return await this.store.readAll()
  }

  async get (seq: number): Promise<Event | undefined> {
    return await this.store.get(seq)
  }

  async getSinceSeq (seq: number): Promise<Event[]> {
    return await this.store.getSinceSeq(seq)
  }
}
