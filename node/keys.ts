/**
 * Key files: where a node, an operator or a pack publisher keeps its Ed25519
 * seed.
 *
 * Format (JSON on one line, then "\n"):
 *
 *   {"version":1,"type":"ed25519","public_key":"z6Mk...","seed":"<base64url, 32 bytes>","kind":"node"}
 *
 * `kind` is one of operator | publisher | node. The public key is stored next
 * to the seed so a file can be identified without deriving it, and is checked
 * against the seed on every read (RL-1009 when they disagree).
 *
 * Like ssh, a key file must not be readable by group or others: `readKeyFile`
 * refuses mode bits 0o077 with RL-1010. Files are written atomically (temp
 * file in the same directory, mode 0600, fsync, then link/rename), so a crash
 * never leaves a half-written key, and an existing key is never replaced
 * unless the caller asks for it (RL-1008).
 */
import { randomBytes } from 'node:crypto'
import { link, mkdir, open, rename, unlink } from 'node:fs/promises'
import { errno, pathExists } from './fs.ts'
import { basename, dirname, join } from 'node:path'
import { ReachError } from '../protocol/errors.ts'
import { isPublicKey, keyPairFromSeed, SEED_LENGTH, type KeyPair } from '../protocol/keys.ts'

export const KEY_FILE_VERSION = 1
export const KEY_KINDS = ['operator', 'publisher', 'node'] as const
export type KeyKind = typeof KEY_KINDS[number]
/** A key file is ~170 bytes; anything past 4 KiB is not one. */
export const MAX_KEY_FILE_BYTES = 4096
/** Permission bits a key file must not have (group and other). */
const OPEN_MODE_BITS = 0o077

export interface KeyFile {
  version: 1
  type: 'ed25519'
  public_key: string
  seed: string
  kind: KeyKind
}

export interface StoredKeyPair extends KeyPair {
  kind: KeyKind
}

export interface WriteKeyFileOptions {
  /** Replace an existing file (default false: RL-1008). */
  overwrite?: boolean
}

const SEED_B64URL = /^[A-Za-z0-9_-]{43}$/
const KEY_FILE_FIELDS = ['kind', 'public_key', 'seed', 'type', 'version']

function malformed (path: string, why: string): never {
  throw new ReachError('RL-1009', { message: `key file ${path} is malformed: ${why}`, details: { path } })
}

function isKind (value: unknown): value is KeyKind {
  return typeof value === 'string' && (KEY_KINDS as readonly string[]).includes(value)
}

/** The key file text for a key pair. */
export function encodeKeyFile (keyPair: KeyPair, kind: KeyKind): string {
  if (!isKind(kind)) throw new ReachError('RL-1009', { message: `key kind must be one of ${KEY_KINDS.join(', ')}` })
  const derived = keyPairFromSeed(keyPair.seed)
  if (derived.publicKey !== keyPair.publicKey) throw new ReachError('RL-1009', { message: 'public key does not match the seed' })
  const file: KeyFile = {
    version: KEY_FILE_VERSION,
    type: 'ed25519',
    public_key: derived.publicKey,
    seed: Buffer.from(keyPair.seed).toString('base64url'),
    kind
  }
  return JSON.stringify(file) + '\n'
}

/**
 * Parse key file text. With `requireSeed: false` a public-only file (no
 * `seed`) is accepted and the returned seed is empty. Throws RL-1009.
 */
export function decodeKeyFile (text: string, path = '(key file)', opts: { requireSeed?: boolean } = {}): StoredKeyPair {
  const requireSeed = opts.requireSeed ?? true
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    malformed(path, `not valid JSON (${(err as Error).message})`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) malformed(path, 'not a JSON object')
  const file = value as Record<string, unknown>
  if (file.version !== KEY_FILE_VERSION) malformed(path, `unsupported version ${JSON.stringify(file.version)} (expected ${KEY_FILE_VERSION})`)
  if (file.type !== 'ed25519') malformed(path, `unsupported key type ${JSON.stringify(file.type)} (expected "ed25519")`)
  const unknown = Object.keys(file).filter(k => !KEY_FILE_FIELDS.includes(k))
  if (unknown.length > 0) malformed(path, `unknown field(s) ${unknown.join(', ')}`)
  if (!isKind(file.kind)) malformed(path, `kind must be one of ${KEY_KINDS.join(', ')}`)
  if (!isPublicKey(file.public_key)) malformed(path, 'public_key is not a multibase Ed25519 public key')
  if (file.seed === undefined && !requireSeed) {
    return { publicKey: file.public_key, seed: new Uint8Array(0), kind: file.kind }
  }
  if (typeof file.seed !== 'string' || !SEED_B64URL.test(file.seed)) malformed(path, `seed must be ${SEED_LENGTH} bytes in unpadded base64url`)
  const seed = Uint8Array.from(Buffer.from(file.seed, 'base64url'))
  // 43 base64url characters carry 258 bits; reject non-zero trailing bits so
  // each seed has exactly one spelling.
  if (seed.length !== SEED_LENGTH || Buffer.from(seed).toString('base64url') !== file.seed) malformed(path, `seed must be ${SEED_LENGTH} bytes in unpadded base64url`)
  const keyPair = keyPairFromSeed(seed)
  if (keyPair.publicKey !== file.public_key) malformed(path, 'public_key does not match the seed')
  return { ...keyPair, kind: file.kind }
}


async function fsyncDir (dir: string): Promise<void> {
  // Make the new directory entry durable. Not supported everywhere (Windows);
  // the file itself is already fsynced.
  try {
    const handle = await open(dir, 'r')
    try { await handle.sync() } finally { await handle.close() }
  } catch {}
}

/**
 * Write a key file atomically with mode 0600, creating parent directories
 * (0700). Refuses to replace an existing file with RL-1008 unless
 * `overwrite`; the existing file is then left untouched.
 */
export async function writeKeyFile (path: string, keyPair: KeyPair, kind: KeyKind, options: WriteKeyFileOptions = {}): Promise<void> {
  const text = encodeKeyFile(keyPair, kind)
  const dir = dirname(path)
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const refuse = (): never => {
    throw new ReachError('RL-1008', { message: `key file ${path} already exists; refusing to overwrite it`, details: { path } })
  }
  if (options.overwrite !== true && await pathExists(path)) refuse()

  const temp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  const handle = await open(temp, 'wx', 0o600)
  try {
    try {
      await handle.chmod(0o600)
      await handle.writeFile(text, 'utf8')
      await handle.sync()
    } finally {
      await handle.close()
    }
    if (options.overwrite === true) {
      await rename(temp, path)
    } else {
      // link() fails with EEXIST when the target exists, so two writers racing
      // cannot both "create" the key: no check-then-rename window.
      try {
        await link(temp, path)
      } catch (err) {
        if (errno(err) === 'EEXIST') refuse()
        // File systems without hard links: fall back to check + rename.
        if (await pathExists(path)) refuse()
        await rename(temp, path)
      }
    }
  } finally {
    await unlink(temp).catch(() => {})
  }
  await fsyncDir(dir)
}


async function readText (path: string, checkMode: boolean): Promise<string> {
  let handle
  try {
    handle = await open(path, 'r')
  } catch (err) {
    throw new ReachError('RL-1004', { message: `key file ${path} not found or unreadable (${errno(err) ?? 'error'})`, details: { path }, cause: err })
  }
  try {
    // fstat the open descriptor: what we check is what we read.
    const st = await handle.stat()
    if (!st.isFile()) malformed(path, 'not a regular file')
    if (checkMode && process.platform !== 'win32' && (st.mode & OPEN_MODE_BITS) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
      throw new ReachError('RL-1010', {
        message: `key file ${path} has mode ${mode}, which lets other users read it; run: chmod 600 ${path}`,
        details: { path, mode }
      })
    }
    if (st.size > MAX_KEY_FILE_BYTES) malformed(path, `larger than ${MAX_KEY_FILE_BYTES} bytes`)
    return await handle.readFile('utf8')
  } finally {
    await handle.close()
  }
}

/**
 * Read a key file: RL-1004 when missing, RL-1010 when group or others have
 * any permission on it, RL-1009 when malformed or the public key does not
 * match the seed.
 */
export async function readKeyFile (path: string): Promise<StoredKeyPair> {
  return decodeKeyFile(await readText(path, true), path)
}

/**
 * A multibase public key from either a multibase string ("z6Mk...") or the
 * path of a key file (a full key file, or one without its `seed`). Only the
 * public part is used, so the file's permissions are not checked. A string
 * that is a valid public key is taken as one, never as a path.
 */
export async function readPublicKey (pathOrMultibase: string): Promise<string> {
  if (isPublicKey(pathOrMultibase)) return pathOrMultibase
  const text = await readText(pathOrMultibase, false)
  return decodeKeyFile(text, pathOrMultibase, { requireSeed: false }).publicKey
}
