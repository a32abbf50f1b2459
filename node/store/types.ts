/**
 * The EventStore interface: a durable, append-only, hash-chained event log.
 *
 * Every store verifies on arrival (shape RL-2006, hash RL-2001, seq RL-5001 /
 * RL-5002, prev_hash RL-5002, logical clock RL-2007), never overwrites or
 * deletes an entry (except `repair` of a tail no append ever acknowledged),
 * and resolves an append only once its bytes are on disk.
 */
import type { ErrorCode } from '../../protocol/errors.ts'
import type { ChainHead, Event } from '../../protocol/event.ts'

export type StoreKind = 'jsonl' | 'level'

export interface OpenOptions {
  /** Create a new empty log; RL-5005 if one with events already exists. */
  create?: boolean
  /**
   * Cut off a tail no append ever acknowledged (RL-5003 torn line, RL-5004
   * half-written batch) instead of refusing to open. The removed bytes are
   * kept beside the log; `lastRepair` says what was removed.
   */
  repair?: boolean
}

/** Inclusive seq bounds. */
export interface ReadRange {
  from?: number
  to?: number
}

/** What `open({ repair: true })` removed. */
export interface RepairReport {
  /** The problem repaired: RL-5003 (torn last line) or RL-5004 (half-written batch). */
  code: ErrorCode
  /** First seq removed, i.e. the new head seq + 1. */
  fromSeq: number
  /** Complete events removed (none of them had been acknowledged). */
  removedEvents: number
  /** Bytes removed from the log (JSONL), or 0 for LevelDB. */
  removedBytes: number
  /** Where the removed bytes / events were copied for forensics. */
  tornPath: string
  /** Head after the repair. */
  head: ChainHead | null
}

export interface EventStore {
  readonly kind: StoreKind
  /** Path of the JSONL file or the LevelDB directory. */
  readonly path: string
  /** What the last `open({ repair: true })` removed; undefined when nothing. */
  readonly lastRepair: RepairReport | undefined
  open (options?: OpenOptions): Promise<void>
  /** Waits for writes in flight, then releases the store. Idempotent. */
  close (): Promise<void>
  /** The durable head (null for an empty log). */
  head (): ChainHead | null
  /**
   * The head including events accepted but not yet durable: what the next
   * append must extend. Equals `head()` when nothing is in flight, and falls
   * back to it when a write fails.
   */
  pendingHead (): ChainHead | null
  /** Append one event; concurrent callers are group-committed (one fsync per batch). */
  append (event: Event): Promise<void>
  /** Append events all-or-nothing in one durable write. */
  appendBatch (events: readonly Event[]): Promise<void>
  /** Durable events in seq order, inclusive bounds, streamed (never the whole log in memory). */
  read (range?: ReadRange): AsyncIterable<Event>
  readAll (): Promise<Event[]>
  /** Events with seq > `seq`. */
  getSinceSeq (seq: number): Promise<Event[]>
  get (seq: number): Promise<Event | undefined>
}
