/**
 * Pack bundles: one deterministic DAG-CBOR value per pack, named by its CID.
 *
 *   bundle = {version: 1, manifest: <reach-pack.json as parsed>, files: {<posix path>: <bytes>}}
 *   bytes  = dag-cbor(bundle)            (map keys sorted by DAG-CBOR rules: length, then bytes)
 *   cid    = CIDv1(dag-cbor 0x71, sha2-256(bytes))     → "bafy…" in base32
 *
 * Only names and contents go in: no timestamps, modes, owners or directory
 * entries, so the same folder gives the same bytes and CID on every machine
 * whatever the order files were written in, their mtimes or the umask.
 * `reach-pack.json` is carried once, as `manifest`, never also in `files`.
 *
 * Decoding verifies before it trusts anything: the bytes are re-hashed and
 * compared with the CID (RL-3003), must be the canonical encoding of a
 * version-1 bundle (RL-3004), every file must obey the same path and size
 * rules as a build (RL-3002), and the manifest is validated (RL-3001).
 */
import { constants } from 'node:fs'
import { lstat, open, readdir, realpath } from 'node:fs/promises'
import { join } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { ReachError } from '../protocol/errors.ts'
import { sha256 } from '../protocol/hash.ts'
import { isPackPath, manifestError, MANIFEST_FILE, parseManifest, parseManifestText, type PackManifest } from './manifest.ts'

export const BUNDLE_VERSION = 1
/** Multicodec dag-cbor. */
export const DAG_CBOR_CODE = 0x71
/** Multihash sha2-256. */
export const SHA2_256_CODE = 0x12

/**
 * Largest single file. Pack code is JavaScript run in a small sandbox; a
 * source file over 1 MiB is almost always a bundled dependency or data that
 * belongs in a tool result, and each file is held in memory whole.
 */
export const MAX_FILE_BYTES = 1024 * 1024
/**
 * Largest sum of file sizes. Bundles travel in one length-prefixed frame
 * over /reach/pack/1.0.0 and are held in memory while verified; 8 MiB keeps
 * a fetch to seconds on a slow link and bounds what a peer can make us hash.
 */
export const MAX_TOTAL_BYTES = 8 * 1024 * 1024
/**
 * Most files in a bundle. Each is a map entry decoded and checked one by
 * one; a thousand is far more than a pack needs and bounds decode work.
 */
export const MAX_FILES = 1024
/**
 * Largest manifest file. A valid manifest is a few hundred bytes (its
 * strings are capped); this only stops a huge file being read to find that out.
 */
export const MAX_MANIFEST_BYTES = 64 * 1024
/**
 * Largest encoded bundle: all file bytes plus room for paths (MAX_FILES ×
 * 256-byte paths), the manifest and CBOR headers. Checked before hashing, and
 * the frame limit for fetching a pack.
 */
export const MAX_BUNDLE_BYTES = MAX_TOTAL_BYTES + 1024 * 1024

export interface Bundle {
  version: 1
  manifest: PackManifest
  /** File contents by relative POSIX path. */
  files: Record<string, Uint8Array>
}

/** A bundle with its canonical bytes and CID (base32 CIDv1 string). */
export interface Pack {
  cid: string
  bytes: Uint8Array
  bundle: Bundle
}

function rejectFile (path: string, why: string): never {
  throw new ReachError('RL-3002', { message: `pack file ${JSON.stringify(path)} rejected: ${why}`, details: { path } })
}

function malformed (why: string, details: Record<string, unknown> = {}): never {
  throw new ReachError('RL-3004', { message: `pack bundle malformed: ${why}`, details })
}

/** The CIDv1 (dag-cbor, sha2-256) of bundle bytes, as a base32 string ("bafy…"). */
export function cidOf (bytes: Uint8Array): string {
  return CID.createV1(DAG_CBOR_CODE, Digest.create(SHA2_256_CODE, sha256(bytes))).toString()
}

/**
 * Parse a pack CID string: CIDv1, dag-cbor, sha2-256 (32 bytes), in its
 * canonical base32 spelling. Throws RL-3004 for anything else.
 */
export function parsePackCid (value: string): CID {
  let cid: CID
  try {
    cid = CID.parse(value) as CID
  } catch (err) {
    malformed(`${JSON.stringify(value)} is not a CID (${(err as Error).message})`, { cid: value })
  }
  if (cid.version !== 1 || cid.code !== DAG_CBOR_CODE || cid.multihash.code !== SHA2_256_CODE || cid.multihash.size !== 32) {
    malformed(`${value} is not a pack CID (CIDv1, dag-cbor, sha2-256)`, { cid: value })
  }
  if (cid.toString() !== value) malformed(`${value} is not in canonical base32 form (${cid.toString()})`, { cid: value })
  return cid
}

/** True when `value` parses as a pack CID. */
export function isPackCid (value: string): boolean {
  try {
    parsePackCid(value)
    return true
  } catch {
    return false
  }
}

/** Path, count and size rules shared by build and decode (RL-3002). */
function checkFiles (files: Iterable<[string, Uint8Array]>): void {
  let count = 0
  let total = 0
  for (const [path, data] of files) {
    if (path === MANIFEST_FILE) rejectFile(path, 'the manifest is carried as `manifest`, not as a file')
    if (!isPackPath(path)) rejectFile(path, 'not a relative path inside the pack (no "..", leading "/", "\\", ":", dot-files or control characters; NFC; at most 256 characters)')
    if (data.length > MAX_FILE_BYTES) rejectFile(path, `${data.length} bytes is over the ${MAX_FILE_BYTES}-byte file limit`)
    total += data.length
    if (total > MAX_TOTAL_BYTES) rejectFile(path, `the pack's files exceed ${MAX_TOTAL_BYTES} bytes in total`)
    if (++count > MAX_FILES) rejectFile(path, `a pack holds at most ${MAX_FILES} files`)
  }
}

/**
 * Encode a manifest and files as a bundle. Validates the manifest (RL-3001),
 * the files (RL-3002) and that the entry is one of them (RL-3001).
 */
export function encodeBundle (manifest: unknown, files: Record<string, Uint8Array>): Pack {
  const m = parseManifest(manifest)
  const entries = Object.entries(files).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  checkFiles(entries)
  if (!Object.hasOwn(files, m.entry)) manifestError('entry', `names ${JSON.stringify(m.entry)}, which is not a file of the pack`)
  // Own copies of plain Uint8Arrays: a Buffer would encode the same, but the
  // bundle must not alias memory the caller keeps changing.
  const bundle: Bundle = { version: BUNDLE_VERSION, manifest: m, files: Object.fromEntries(entries.map(([p, d]) => [p, Uint8Array.from(d)])) }
  const bytes = dagCbor.encode(bundle)
  return { cid: cidOf(bytes), bytes, bundle }
}

function isPlainObject (v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0
}

/**
 * Verify and decode bundle bytes. With `expectedCid`, the bytes must hash to
 * it (RL-3003): pass it whenever the CID came from somewhere else (a peer, a
 * file name, the user). Then: canonical DAG-CBOR of a version-1 bundle
 * (RL-3004), file rules (RL-3002), manifest and entry (RL-3001).
 */
export function decodeBundle (bytes: Uint8Array, expectedCid?: string): Pack {
  if (!(bytes instanceof Uint8Array)) malformed('not bytes')
  if (bytes.length > MAX_BUNDLE_BYTES) malformed(`${bytes.length} bytes is over the ${MAX_BUNDLE_BYTES}-byte bundle limit`)
  const cid = cidOf(bytes)
  if (expectedCid !== undefined) {
    parsePackCid(expectedCid)
    if (cid !== expectedCid) {
      throw new ReachError('RL-3003', { message: `pack bytes hash to ${cid}, not ${expectedCid}`, details: { expected: expectedCid, actual: cid } })
    }
  }
  let value: unknown
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    malformed(`not DAG-CBOR (${(err as Error).message})`)
  }
  if (!isPlainObject(value)) malformed('the bundle is not a map')
  if (value.version !== BUNDLE_VERSION) {
    malformed(`unsupported bundle version ${JSON.stringify(value.version) ?? typeof value.version} (this engine reads ${BUNDLE_VERSION})`, { version: value.version })
  }
  const extra = Object.keys(value).filter((k) => k !== 'version' && k !== 'manifest' && k !== 'files')
  if (extra.length > 0) malformed(`unknown bundle field(s) ${extra.join(', ')}`)
  if (!isPlainObject(value.files)) malformed('`files` is not a map')
  const files = value.files
  const entries = Object.entries(files)
  for (const [path, data] of entries) {
    if (!(data instanceof Uint8Array)) malformed(`file ${JSON.stringify(path)} is not a byte string`, { path })
  }
  // One CID per content: a non-canonical encoding of the same value (map
  // order, integer widths) would name the same pack with another CID.
  if (!sameBytes(dagCbor.encode(value), bytes)) malformed('not the canonical DAG-CBOR encoding of its value')
  checkFiles(entries as Array<[string, Uint8Array]>)
  if (value.manifest === undefined) manifestError('(root)', 'is missing from the bundle')
  const manifest = parseManifest(value.manifest)
  if (!Object.hasOwn(files, manifest.entry)) manifestError('entry', `names ${JSON.stringify(manifest.entry)}, which is not a file of the pack`)
  return { cid, bytes, bundle: { version: BUNDLE_VERSION, manifest, files: files as Record<string, Uint8Array> } }
}

function errno (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

/**
 * Read one regular file without following a symlink (O_NOFOLLOW, so a file
 * swapped for a link after the directory was listed is refused too), never
 * more than `limit` + 1 bytes.
 */
async function readRegular (abs: string, rel: string, limit: number): Promise<Uint8Array> {
  let handle
  try {
    handle = await open(abs, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0))
  } catch (err) {
    if (errno(err) === 'ELOOP') rejectFile(rel, 'a symbolic link (packs hold plain files only)')
    throw new ReachError('RL-1004', { message: `cannot read ${abs} (${errno(err) ?? 'error'})`, details: { path: abs }, cause: err })
  }
  try {
    const st = await handle.stat()
    if (!st.isFile()) rejectFile(rel, 'not a regular file')
    if (st.size > limit) return rejectFile(rel, `${st.size} bytes is over the ${limit}-byte limit`)
    const buf = Buffer.alloc(Math.min(st.size, limit) + 1)
    let n = 0
    while (n < buf.length) {
      const { bytesRead } = await handle.read(buf, n, buf.length - n, n)
      if (bytesRead === 0) break
      n += bytesRead
    }
    if (n > limit) rejectFile(rel, `over the ${limit}-byte limit (it grew while being read)`)
    return Uint8Array.from(buf.subarray(0, n))
  } finally {
    await handle.close()
  }
}

/**
 * Walk `dir` in sorted order, so the first problem reported is the same on
 * every machine. Everything that is not a regular file or a directory is
 * refused, as are dot-files (hidden state such as .git or .env has no place
 * in a published pack) and anything beyond the count and size limits.
 */
async function collect (root: string, rel: string, out: Array<[string, Uint8Array]>, budget: { total: number }): Promise<void> {
  const abs = rel === '' ? root : join(root, ...rel.split('/'))
  const names = (await readdir(abs)).sort()
  for (const name of names) {
    const path = rel === '' ? name : `${rel}/${name}`
    if (rel === '' && name === MANIFEST_FILE) continue
    if (name.startsWith('.')) rejectFile(path, 'dot-files are not allowed in a pack (remove it, or build from a clean folder)')
    const st = await lstat(join(abs, name))
    if (st.isSymbolicLink()) rejectFile(path, 'a symbolic link (packs hold plain files only)')
    if (st.isDirectory()) {
      await collect(root, path, out, budget)
      continue
    }
    if (!st.isFile()) rejectFile(path, 'not a regular file')
    if (!isPackPath(path)) rejectFile(path, 'not a valid pack path (no "\\", ":" or control characters; NFC; at most 256 characters)')
    if (out.length >= MAX_FILES) rejectFile(path, `a pack holds at most ${MAX_FILES} files`)
    const data = await readRegular(join(abs, name), path, MAX_FILE_BYTES)
    budget.total += data.length
    if (budget.total > MAX_TOTAL_BYTES) rejectFile(path, `the pack's files exceed ${MAX_TOTAL_BYTES} bytes in total`)
    out.push([path, data])
  }
}

/**
 * Build the bundle of a pack folder: `reach-pack.json` at its root is the
 * manifest, every other regular file is carried by its relative path.
 * RL-1004 when the folder is missing, RL-3001 for the manifest, RL-3002 for a
 * file that breaks a rule (symlink, dot-file, special file, size).
 */
export async function buildBundle (dir: string): Promise<Pack> {
  let root: string
  try {
    // The folder itself may be reached through a link; nothing inside may be.
    root = await realpath(dir)
    if (!(await lstat(root)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' })
  } catch (err) {
    throw new ReachError('RL-1004', { message: `pack folder ${dir} not found or not a directory (${errno(err) ?? 'error'})`, details: { path: dir }, cause: err })
  }
  let manifestBytes: Uint8Array
  try {
    manifestBytes = await readRegular(join(root, MANIFEST_FILE), MANIFEST_FILE, MAX_MANIFEST_BYTES)
  } catch (err) {
    if (err instanceof ReachError && err.code === 'RL-1004') manifestError('(root)', `is missing: ${dir} has no ${MANIFEST_FILE}`, { path: dir })
    if (err instanceof ReachError && err.code === 'RL-3002') manifestError('(root)', `must be a regular file of at most ${MAX_MANIFEST_BYTES} bytes`, { path: dir })
    throw err
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(manifestBytes)
  } catch {
    manifestError('(root)', 'is not valid UTF-8', { path: dir })
  }
  const manifest = parseManifestText(text)
  const files: Array<[string, Uint8Array]> = []
  await collect(root, '', files, { total: 0 })
  return encodeBundle(manifest, Object.fromEntries(files))
}
