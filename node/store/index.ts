/**
 * Event storage: the EventStore interface and its two implementations.
 *
 * - `JsonlEventStore`: one append-only file of canonical JSON lines with
 *   commit records (the CLI's `--log-path` mode); format in jsonl.ts.
 * - `LevelEventStore`: a LevelDB directory; format in level.ts.
 * - `EventLog`: the writer API (drafts in, chained events out) over either.
 * - `readJsonlEvents` / `readJsonlBatches`: stream a JSONL log read-only,
 *   without locking it, reporting tail damage at the end of the stream.
 *
 * Both stores verify on arrival, group-commit concurrent appends (one fsync
 * per batch), never rewrite an entry, and resolve appends only once durable.
 */
import { stat } from 'node:fs/promises'
import { JsonlEventStore, type JsonlStoreInit } from './jsonl.ts'
import type { EventStore, OpenOptions, StoreKind } from './types.ts'

export type { EventStore, OpenOptions, ReadRange, RepairReport, StoreKind } from './types.ts'
export { EventLog } from './log.ts'
export { GroupCommit, type CommitBatch, type GroupCommitInit } from './group-commit.ts'
export { checkArrival } from './arrival.ts'
export { JsonlEventStore, type JsonlStoreInit } from './jsonl.ts'
// level.ts (LevelEventStore) is loaded on first use: it brings LevelDB's
// native addon, which JSON-lines commands never need.
export type { LevelStoreInit } from './level.ts'
export {
  classifyLine,
  commitRecord,
  inspectJsonl,
  inspectJsonlTail,
  jsonlBatchText,
  readJsonlBatches,
  readJsonlEvents,
  type JsonlLine,
  type JsonlReadOptions,
  type JsonlTail
} from './jsonl-reader.ts'

export interface OpenStoreOptions extends OpenOptions, JsonlStoreInit {
  /** Which store; otherwise guessed from the path (see `storeKindFor`). */
  kind?: StoreKind
}

/**
 * The kind of store at `path`: a name ending in `.log` / `.jsonl` or an
 * existing regular file is JSONL; an existing directory, or any other new
 * path, is LevelDB.
 */
export async function storeKindFor (path: string): Promise<StoreKind> {
  if (/\.(log|jsonl)$/i.test(path)) return 'jsonl'
  const info = await stat(path).catch(() => undefined)
  return info?.isFile() === true ? 'jsonl' : 'level'
}

/** Creates and opens the store at `path`. */
export async function openStore (path: string, options: OpenStoreOptions = {}): Promise<EventStore> {
  const kind = options.kind ?? await storeKindFor(path)
  const store: EventStore = kind === 'jsonl'
    ? new JsonlEventStore(path, options)
    : new (await import('./level.ts')).LevelEventStore(path, { maxBatchEvents: options.maxBatchEvents, maxBatchBytes: options.maxBatchBytes })
  await store.open({ create: options.create, repair: options.repair })
  return store
}
