/**
 * Read-only access to a log by path, whatever it is stored in.
 *
 * A JSON-lines log is streamed straight from the file without taking the
 * writer's lock, so `reach verify` can audit a log another process is
 * appending to. A LevelDB log has to be opened (LevelDB allows one process).
 */
import { stat } from 'node:fs/promises'
import { ReachError } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { openStore, readJsonlBatches, readJsonlEvents } from './store/index.ts'

export interface EventRange { from?: number, to?: number }

export async function storeKind (path: string): Promise<'jsonl' | 'level'> {
  try {
    return (await stat(path)).isDirectory() ? 'level' : 'jsonl'
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ReachError('RL-5006', { message: `no log at ${path} (create one with \`reach init --log-path ${path}\`)`, details: { path } })
    throw new ReachError('RL-1004', { message: `cannot read ${path}: ${(err as Error).message}`, cause: err })
  }
}

/** Stream the events of the log at `path`; tail problems surface at the end of the stream. */
export async function * streamEvents (path: string, range: EventRange = {}): AsyncGenerator<Event> {
  if (await storeKind(path) === 'jsonl') {
    yield * readJsonlEvents(path, range)
    return
  }
  const store = await openStore(path)
  try {
    yield * store.read(range)
  } finally {
    await store.close()
  }
}

/** Batches of EVENTS_PER_BATCH events: one await per batch on the verify hot path. */
const EVENTS_PER_BATCH = 256

/**
 * Stream the log in batches for a consumer that runs the chain verifier on
 * every event (so the reader need not check event shape a second time).
 */
export async function * streamBatches (path: string, range: EventRange = {}): AsyncGenerator<Event[]> {
  if (await storeKind(path) === 'jsonl') {
    yield * readJsonlBatches(path, { ...range, shape: false })
    return
  }
  let batch: Event[] = []
  for await (const e of streamEvents(path, range)) {
    batch.push(e)
    if (batch.length >= EVENTS_PER_BATCH) {
      yield batch
      batch = []
    }
  }
  if (batch.length > 0) yield batch
}
