/** Small file-system helpers shared by the node's writers. */
import { mkdir, open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/**
 * Write a file so that readers see the old content or the new, never half:
 * temp file in the same directory, fsync, rename, fsync the directory.
 */
export async function writeFileAtomic (path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = dirname(path)
  await mkdir(dir, { recursive: true })
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2, 8)}.tmp`)
  const fh = await open(tmp, 'wx', mode)
  try {
    await fh.writeFile(data)
    await fh.sync()
  } catch (err) {
    await fh.close()
    await rm(tmp, { force: true })
    throw err
  }
  await fh.close()
  await rename(tmp, path)
  const d = await open(dir, 'r')
  try { await d.sync() } finally { await d.close() }
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
