/**
 * An exclusive lock file: `<path>` created with O_EXCL, holding the owner's
 * pid in decimal and a newline. A lock whose pid no longer runs (or names
 * this process but is not one it took) is stale and taken over; a live one
 * is RL-5008.
 *
 * Takeover renames the stale file away (rename is atomic, so of two racing
 * takers only one moves it), checks that what it moved is the stale lock it
 * judged, and puts it back if another taker had already replaced it.
 */
import { constants } from 'node:fs'
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises'
import { resolve } from 'node:path'
import { ReachError } from '../../protocol/errors.ts'
import { storageFailure } from '../fs.ts'
import { LOCK_ATTEMPTS } from './constants.ts'

/**
 * A lock file with no readable pid is taken for one being written right now
 * by its creator (it creates, then writes) until it is this old.
 */
const UNREADABLE_LOCK_GRACE_MS = 2000

export interface LockFile {
  readonly path: string
  /** Removes the lock if it is still ours. Idempotent. */
  release (): Promise<void>
}

/**
 * Lock files this process holds or is acquiring. A lock file naming our own
 * pid that is not in here was left by an earlier process that had the same
 * pid (common in containers, where a node is often pid 1): it is stale.
 */
const held = new Set<string>()

export async function acquireLock (path: string): Promise<LockFile> {
  const key = resolve(path)
  if (held.has(key)) {
    throw new ReachError('RL-5008', { message: `locked by this process (${path})`, details: { lock: path, pid: process.pid } })
  }
  held.add(key)
  try {
    return await acquire(path, key)
  } catch (err) {
    held.delete(key)
    throw err
  }
}

async function acquire (path: string, key: string): Promise<LockFile> {
  for (let attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
    try {
      const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644)
      try {
        await fh.writeFile(`${process.pid}\n`)
      } catch (err) {
        // A full disk: leave no empty lock behind for the next opener to wait out, and say which file.
        // The write's error is the one to report: a close that fails too must not hide it or keep the lock.
        await fh.close().catch(() => {})
        await unlink(path).catch(ignoreMissing)
        throw storageFailure(err, path) ?? err
      }
      await fh.close()
      return lockFile(path, key)
    } catch (err) {
      if (code(err) !== 'EEXIST') throw err
    }
    const holder = await readHolder(path)
    if (holder === undefined) continue // vanished meanwhile: try again
    const live = holder.pid === undefined
      ? holder.ageMs < UNREADABLE_LOCK_GRACE_MS
      : holder.pid !== process.pid && pidAlive(holder.pid)
    if (live) {
      throw new ReachError('RL-5008', {
        message: holder.pid === undefined
          ? `${path} is being created by another process`
          : `locked by process ${holder.pid} (${path}); if that process is not a Reach node, delete the lock file`,
        details: { lock: path, ...(holder.pid === undefined ? {} : { pid: holder.pid }) }
      })
    }
    await takeOver(path, holder.text, attempt)
  }
  throw new ReachError('RL-5008', { message: `could not take over the stale lock ${path}`, details: { lock: path } })
}

function lockFile (path: string, key: string): LockFile {
  let released = false
  return {
    path,
    async release () {
      if (released) return
      released = true
      try {
        const holder = await readHolder(path)
        if (holder?.pid === process.pid) await unlink(path).catch(ignoreMissing)
      } finally {
        held.delete(key)
      }
    }
  }
}

async function takeOver (path: string, staleText: string, attempt: number): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${attempt}`
  try {
    await rename(path, aside)
  } catch (err) {
    if (code(err) === 'ENOENT') return // another taker moved it first
    throw err
  }
  const moved = await readFile(aside, 'utf8').catch(() => '')
  if (moved !== staleText) {
    // We moved a fresh lock another taker had just created: put it back.
    await link(aside, path).catch(() => {})
  }
  await unlink(aside).catch(ignoreMissing)
}

async function readHolder (path: string): Promise<{ pid?: number, text: string, ageMs: number } | undefined> {
  try {
    const [text, info] = await Promise.all([readFile(path, 'utf8'), stat(path)])
    const ageMs = Date.now() - info.mtimeMs
    const pid = /^\d+\n?$/.test(text) ? Number.parseInt(text, 10) : undefined
    return pid !== undefined && pid > 0 ? { pid, text, ageMs } : { text, ageMs }
  } catch (err) {
    if (code(err) === 'ENOENT') return undefined
    throw err
  }
}

/** Whether a process with this pid exists (EPERM: it does, owned by someone else). */
export function pidAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return code(err) === 'EPERM'
  }
}

function code (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

function ignoreMissing (err: unknown): void {
  if (code(err) !== 'ENOENT') throw err
}
