/**
 * `storageFailure`: which file-system errors are storage refusing a write (RL-5010), which are a
 * path refused for reading (RL-1004), and which are neither (undefined). Errors made by hand with
 * the errno, syscall and path Node gives; an `open` is told apart by the file it names, so those
 * name real files in a temp dir.
 */
import { chmod, mkdtemp, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { storageFailure } from '../../node/fs.ts'

function fsError (code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${syscall}${path === undefined ? '' : ` '${path}'`}`), { code, syscall, ...(path === undefined ? {} : { path }) })
}

/** Root reads every file whatever its mode. */
const root = process.getuid?.() === 0

let dir: string
let readable: string
beforeAll(async () => {
  dir = await mkdtemp(join(os.tmpdir(), 'reach-fs-'))
  readable = join(dir, 'readable')
  await writeFile(readable, 'x')
})

describe('storageFailure', () => {
  it('EACCES or EPERM from a write call is a write refused: RL-5010 naming the path and errno', () => {
    for (const [code, syscall] of [['EACCES', 'mkdir'], ['EACCES', 'rename'], ['EPERM', 'unlink'], ['EACCES', 'write'], ['EPERM', 'fsync']]) {
      const e = storageFailure(fsError(code as string, syscall as string, '/data/x'))
      expect(e?.code, syscall).toBe('RL-5010')
      expect(e?.details, syscall).toEqual({ errno: code, path: '/data/x' })
    }
  })

  it('EACCES from a read call is a read refused: RL-1004, not RL-5010', () => {
    for (const syscall of ['scandir', 'stat', 'read']) {
      const e = storageFailure(fsError('EACCES', syscall, '/data/x'))
      expect(e?.code, syscall).toBe('RL-1004')
      expect(e?.message, syscall).toBe('cannot read /data/x: permission denied (EACCES)')
    }
  })

  it('an open refused EACCES: of a file this user can read, or one not there, was a write (RL-5010)', () => {
    expect(storageFailure(fsError('EACCES', 'open', readable))?.code).toBe('RL-5010')
    expect(storageFailure(fsError('EACCES', 'open', join(dir, 'not-there.tmp')))?.code).toBe('RL-5010')
  })

  it.skipIf(root)('an open refused EACCES of a file this user cannot read was a read (RL-1004)', async () => {
    const secret = join(dir, 'secret')
    await writeFile(secret, 'x')
    await chmod(secret, 0o000)
    expect(storageFailure(fsError('EACCES', 'open', secret))?.code).toBe('RL-1004')
  })

  it('ENOSPC, EROFS and EDQUOT are RL-5010 whatever the call, with or without a path', () => {
    expect(storageFailure(fsError('ENOSPC', 'write'), '/data/log.jsonl')).toMatchObject({ code: 'RL-5010', message: '/data/log.jsonl: no space left on device (ENOSPC)', details: { errno: 'ENOSPC', path: '/data/log.jsonl' } })
    expect(storageFailure(fsError('ENOSPC', 'open', readable))?.code).toBe('RL-5010')
    expect(storageFailure(fsError('EROFS', 'scandir', '/data'))?.code).toBe('RL-5010')
    expect(storageFailure(fsError('EDQUOT', 'read'))?.code).toBe('RL-5010')
  })

  it('finds the errno in an error it wraps, and in LevelDB\'s words', () => {
    const wrapped = new Error('append failed', { cause: fsError('ENOSPC', 'write', '/data/x') })
    expect(storageFailure(wrapped)?.details).toEqual({ errno: 'ENOSPC', path: '/data/x' })
    const level = Object.assign(new Error('IO error: /data/runs.db/LOCK: Permission denied'), { code: 'LEVEL_IO_ERROR' })
    expect(storageFailure(level, '/data/runs.db')).toMatchObject({ code: 'RL-5010', details: { errno: 'EACCES', path: '/data/runs.db' } })
  })

  it('anything else is not storage: undefined', () => {
    expect(storageFailure(fsError('ENOENT', 'open', '/data/x'))).toBeUndefined()
    expect(storageFailure(fsError('EEXIST', 'mkdir', '/data/x'))).toBeUndefined()
    // A socket refused a port (no path) is not storage.
    expect(storageFailure(fsError('EACCES', 'listen'))).toBeUndefined()
    expect(storageFailure(new TypeError('boom'))).toBeUndefined()
    expect(storageFailure('not an error')).toBeUndefined()
  })
})
