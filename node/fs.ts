/** Small file-system helpers shared by the node's writers. */
import { renameSync, rmSync, writeFileSync } from 'node:fs'
import { mkdir, open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/**
 * Write a file so that readers see the old content or the new, never half:
 * temp file in the same directory, fsync, rename, fsync the directory.
 */
export async function writeFileAtomic (path: string, data: string | Uint8Array, mode = 0o644, options: { durable?: boolean } = {}): Promise<void> {
  // durable: false still replaces the file atomically for readers, but skips the fsyncs: for
  // files that can be rebuilt from a durable source (a run's record and checkpoint, from its log).
  const durable = options.durable ?? true
  const dir = dirname(path)
  await mkdir(dir, { recursive: true })
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2, 8)}.tmp`)
  const fh = await open(tmp, 'wx', mode)
  try {
    await fh.writeFile(data)
    if (durable) await fh.sync()
  } catch (err) {
    await fh.close()
    await rm(tmp, { force: true })
    throw err
  }
  await fh.close()
  await rename(tmp, path)
  if (!durable) return
  const d = await open(dir, 'r')
  try { await d.sync() } finally { await d.close() }
}

/**
 * `writeFileAtomic(..., { durable: false })`, synchronously: for small files rebuilt from a
 * durable source when lost (a run's record and checkpoint), written once the run's result has
 * gone back. Measured here: 0.17 ms of blocking per file, against five trips through the thread
 * pool and about 0.6 ms of the event loop's time for the asynchronous version. The directory
 * must exist.
 */
export function writeFileAtomicSync (path: string, data: string | Uint8Array, mode = 0o644): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2, 8)}.tmp`)
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' })
    renameSync(tmp, path)
  } catch (err) {
    rmSync(tmp, { force: true })
    throw err
  }
}

/** The error code of a failed file-system call (ENOENT, EEXIST …), if any. */
export function errno (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

/** Whether `path` exists; other errors (permissions, I/O) are thrown, not taken for "no". */
export async function pathExists (path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch (err) {
    if (errno(err) === 'ENOENT') return false
    throw err
  }
}
