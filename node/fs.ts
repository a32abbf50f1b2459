/** Small file-system helpers shared by the node's writers. */
import { accessSync, constants } from 'node:fs'
import { mkdir, open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { ReachError } from '../protocol/errors.ts'

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

/** The errnos that mean the file system will not take a write here, in words. */
const NOT_WRITABLE: Readonly<Record<string, string>> = {
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded'
}

/** LevelDB names them only in its IO error's message, in the C library's words. */
const LEVEL_WORDS: ReadonlyArray<readonly [RegExp, string]> = [
  [/read-only file system/i, 'EROFS'],
  [/permission denied/i, 'EACCES'],
  [/operation not permitted/i, 'EPERM'],
  [/no space left on device/i, 'ENOSPC'],
  [/(disk )?quota exceeded/i, 'EDQUOT']
]

/** The errno (among NOT_WRITABLE) with which the nearest existing directory above `path` refuses writes, if it does. */
function writeRefusal (path: string): string | undefined {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    try {
      accessSync(dir, constants.W_OK)
      return undefined
    } catch (err) {
      const code = errno(err)
      if (code === 'ENOENT' && dirname(dir) !== dir) continue
      return code !== undefined && Object.hasOwn(NOT_WRITABLE, code) ? code : undefined
    }
  }
}

/** The calls whose EACCES or EPERM is a write refused (RL-5010); from any other call on a path it is a read refused (RL-1004). */
const WRITE_SYSCALLS: ReadonlySet<string> = new Set([
  'write', 'mkdir', 'mkdtemp', 'rename', 'unlink', 'rmdir', 'rm', 'fsync', 'fdatasync', 'ftruncate', 'truncate',
  'copyfile', 'link', 'symlink', 'chmod', 'fchmod', 'lchmod', 'chown', 'fchown', 'lchown', 'utime', 'futime', 'lutime'
])

/**
 * Whether an `open` of `path` refused EACCES or EPERM was a write: the error does not carry the
 * flags, so ask the file: one this user can read (or one not there, that the open would have
 * made) was refused for writing; one it cannot read was refused for reading.
 */
function openForWrite (path: string): boolean {
  try {
    accessSync(path, constants.R_OK)
    return true
  } catch (err) {
    return errno(err) === 'ENOENT'
  }
}

/**
 * RL-5010 when `err`, or an error it wraps, is the file system refusing to write (read-only,
 * not permitted, full); RL-1004 when it refused to let a path be read (EACCES, EPERM from a
 * read: an open of a file this user cannot read, a stat, a readdir); undefined for anything
 * else. The one place these errnos become a code: the CLI's and the control API's last resort
 * ask it, and so do the stores before they would call such a failure corruption or a missing
 * log. `where` names the file when the error does not (a write on an open handle). EROFS,
 * ENOSPC and EDQUOT are writes refused whatever the call; EACCES and EPERM count only from a
 * call on a path (a socket refused a port is not storage), and only a write call's (or an
 * `open` for writing, openForWrite) is RL-5010. LevelDB's IO errors name no call: RL-5010.
 */
export function storageFailure (err: unknown, where?: string): ReachError | undefined {
  let e: unknown = err
  for (let depth = 0; depth < 8 && e !== null && typeof e === 'object'; depth++, e = (e as { cause?: unknown }).cause) {
    const { code, path, message, syscall } = e as NodeJS.ErrnoException
    let found: string | undefined
    if (code === 'LEVEL_IO_ERROR' && typeof message === 'string') found = LEVEL_WORDS.find(([words]) => words.test(message))?.[1]
    // Node's recursive mkdir reports a read-only parent as ENOENT: ask the nearest directory that exists.
    else if (code === 'ENOENT' && syscall === 'mkdir' && typeof path === 'string') found = writeRefusal(path)
    else if ((code === 'EACCES' || code === 'EPERM') && typeof path === 'string') {
      const write = syscall === 'open' ? openForWrite(path) : syscall !== undefined && WRITE_SYSCALLS.has(syscall)
      if (!write) {
        return new ReachError('RL-1004', { message: `cannot read ${path}: ${NOT_WRITABLE[code] as string} (${code})`, details: { errno: code, path }, cause: err })
      }
      found = code
    } else if (typeof code === 'string' && Object.hasOwn(NOT_WRITABLE, code) && code !== 'EACCES' && code !== 'EPERM') found = code
    if (found === undefined) continue
    const at = typeof path === 'string' ? path : where
    return new ReachError('RL-5010', {
      message: `${at === undefined ? '' : `${at}: `}${NOT_WRITABLE[found] as string} (${found})`,
      details: { errno: found, ...(at === undefined ? {} : { path: at }) },
      cause: err
    })
  }
  return undefined
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
