/**
 * Runs an older version kept in a directory each (`<home>/runs/<run_id>/log/` with §7.2 keys,
 * `record.json`, `final.checkpoint`), moved into the run database when it is opened (SPEC §7.3).
 */
import { readdir, readFile, rm, rmdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { ReachError } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { isRunId } from '../protocol/run.ts'
import type { RunDatabase } from './run-db.ts'
import { parseRecord, type Sealed } from './run-seal.ts'
import { openStore } from './store/index.ts'

/** A run directory the move left where it was, and why. */
export interface LegacyLeft {
  run_id: string
  path: string
  code: string
  message: string
}

/**
 * Copy every run directory under `runsDir` into `db`, then remove it. A run's log and its seal go
 * in one synced write, so a crash never leaves a moved log without the seal its origin signed
 * (the node would otherwise rebuild that checkpoint with its own key). A log already in the
 * database (moved by a version that wrote the two apart) is not written again. A directory whose
 * log cannot be read as it is (held by an older node still running, cut short by a crash,
 * damaged) is left untouched and returned (`reach doctor` names it); the move is tried again the
 * next time the database is opened.
 */
export async function moveLegacyRuns (db: RunDatabase, runsDir: string): Promise<LegacyLeft[]> {
  const names = (await readdir(runsDir).catch(() => [] as string[])).filter(isRunId)
  const left: LegacyLeft[] = []
  if (names.length === 0) return left
  const { LevelEventStore } = await import('./store/level.ts')
  for (const runId of names) {
    const dir = join(runsDir, runId)
    let events: Event[]
    try {
      const old = await openStore(join(dir, 'log'), { kind: 'level' })
      try {
        events = await old.readAll()
      } finally {
        await old.close()
      }
    } catch (err) {
      // No log at all: a run that died before its log was made. Nothing to move.
      if ((err as ReachError).code === 'RL-5006') {
        await rm(dir, { recursive: true, force: true })
        continue
      }
      left.push({ run_id: runId, path: dir, code: (err as ReachError).code ?? 'RL-5009', message: (err as Error).message })
      continue
    }
    if (events.length > 0) {
      const [record, checkpoint, info] = await Promise.all([
        readFile(join(dir, 'record.json'), 'utf8').then(parseRecord, () => undefined),
        readFile(join(dir, 'final.checkpoint'), 'utf8').catch(() => undefined),
        stat(dir)
      ])
      // Kept as they were (an imported run's checkpoint is its origin's, not a rebuild by this
      // node). Without either (a crash lost it: older versions wrote both without fsync), the
      // seal is rebuilt from the log when the run is next read.
      const sealed: Sealed | undefined = record !== undefined && checkpoint !== undefined ? { record, checkpoint, ended_at: info.mtimeMs } : undefined
      const seal = sealed === undefined ? [] : [{ sublevel: db.sealed, key: runId, value: JSON.stringify(sealed) }]
      const into = LevelEventStore.within(db, runId)
      try {
        await into.open({ create: true })
        await into.appendBatchWith(events, seal)
      } catch (err) {
        if ((err as ReachError).code !== 'RL-5005') throw err
        if (seal.length > 0) await db.db.batch(seal.map((r) => ({ type: 'put' as const, ...r })), { sync: true })
      } finally {
        await into.close()
      }
    }
    await rm(dir, { recursive: true, force: true })
  }
  await rmdir(runsDir).catch(() => {})
  return left
}
