/**
 * The run database: one LevelDB at `<home>/runs.db` holding every run of the
 * node: its event log, and its record and closing checkpoint once it ends.
 *
 *   !meta!version              the format version, `1`
 *   !segments!<run_id>!<seq>   the run's log, one durable batch per key (node/store/level.ts)
 *   !heads!<run_id>            the run's head: {hash, seq, timestamp} of its last durable event,
 *                              written with its segment in one synced batch
 *   !sealed!<run_id>           {record, checkpoint, ended_at} of a finished run: functions of the
 *                              log, written unsynced after the run's result went back, rebuilt
 *                              from the log when a crash lost them
 *
 * One database rather than one per run: making, opening and closing a LevelDB
 * per run, and two files beside it, cost a serving node about 1.5 ms of its
 * event loop per run, on the path of the run that came next. A run is known by
 * its head: a log whose first write never happened leaves nothing behind.
 *
 * LevelDB's lock keeps a second process out (RL-5008): while a daemon holds
 * the database, the CLI reads runs through the daemon's control API.
 */
import { Level } from 'level'
import { ReachError } from '../protocol/errors.ts'
import { storageFailure } from './fs.ts'
import { sublevel, type Db, type SharedLogs, type Sub } from './store/level.ts'

/** Format of the run database (its `!meta!version`). */
export const RUN_DB_VERSION = 1

export interface RunDatabase extends SharedLogs {
  /** `{record, checkpoint, ended_at}` of finished runs, by run id. */
  readonly sealed: Sub
  close (): Promise<void>
}

/** Open (creating it if missing) the run database at `path`; RL-5008 when another process holds it. */
export async function openRunDatabase (path: string): Promise<RunDatabase> {
  const db: Db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
  try {
    await db.open({ createIfMissing: true })
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED') {
      throw new ReachError('RL-5008', { message: `${path} is open in another process (a running node, or another reach command)`, details: { path }, cause: err })
    }
    throw storageFailure(err, path) ?? new ReachError('RL-5009', { message: `cannot open the run database ${path}: ${(err as Error).message}`, details: { path }, cause: err })
  }
  try {
    const meta = sublevel(db, 'meta')
    const version = await meta.get('version')
    if (version === undefined) await db.batch([{ type: 'put', sublevel: meta, key: 'version', value: String(RUN_DB_VERSION) }], { sync: true })
    else if (version !== String(RUN_DB_VERSION)) {
      throw new ReachError('RL-5009', { message: `${path} has format version ${version}; this node reads version ${RUN_DB_VERSION}`, details: { path, version } })
    }
  } catch (err) {
    await db.close()
    throw err
  }
  return {
    path,
    db,
    segments: sublevel(db, 'segments'),
    heads: sublevel(db, 'heads'),
    sealed: sublevel(db, 'sealed'),
    inUse: new Set(),
    async close () {
      await db.close()
    }
  }
}
