/**
 * What both event stores do the same way on top of their group commit: heads, appends, and
 * reads of the whole log or of what follows a seq. Each store supplies its open group commit
 * (or RL-5007 when it is not open) and its own `read`.
 */
import type { ChainHead, Event } from '../../protocol/event.ts'
import type { GroupCommit } from './group-commit.ts'
import type { ReadRange } from './types.ts'

export abstract class CommittedStore {
  /** The group commit of the open store; RL-5007 when the store is not open. */
  protected abstract committer (): GroupCommit

  abstract read (range?: ReadRange): AsyncGenerator<Event>

  head (): ChainHead | null {
    return this.committer().durableHead()
  }

  pendingHead (): ChainHead | null {
    return this.committer().pendingHead()
  }

  async append (event: Event): Promise<void> {
    await this.committer().submit([event])
  }

  async appendBatch (events: readonly Event[]): Promise<void> {
    await this.committer().submit(events)
  }

  async readAll (): Promise<Event[]> {
    return await collect(this.read())
  }

  async getSinceSeq (seq: number): Promise<Event[]> {
    return await collect(this.read({ from: seq + 1 }))
  }

  /** The seqs a read covers within the durable log, or undefined when it covers none. */
  protected span (range: ReadRange): { from: number, to: number } | undefined {
    const head = this.committer().durableHead()
    const from = Math.max(0, Math.ceil(range.from ?? 0))
    const to = Math.min(head === null ? -1 : head.seq, Math.floor(range.to ?? Number.POSITIVE_INFINITY))
    return from > to ? undefined : { from, to }
  }
}

async function collect<T> (items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of items) out.push(item)
  return out
}
