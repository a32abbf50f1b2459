/**
 * The node's pack store: verified bundles by CID, with their signatures.
 *
 *   <home>/packs/<cid>.pack        the bundle bytes (DAG-CBOR), exactly as hashed
 *   <home>/packs/<cid>.sigs.json   JSON array of signature envelopes, sorted by publisher
 *
 * Nothing is written before it is verified: `put` re-hashes the bytes (and
 * compares them with the CID the caller expected), decodes the bundle, and
 * checks every signature against that CID and manifest. Reads verify again,
 * so a file damaged on disk is reported (RL-3003), never run. The store does
 * not judge trust or policy: `admitPack` does, before a pack runs or is
 * accepted from a peer. Writes are atomic; a bundle, once stored, is never
 * rewritten (same CID, same bytes).
 */
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import semver from 'semver'
import { ReachError } from '../protocol/errors.ts'
import { decodeBundle, isPackCid, MAX_BUNDLE_BYTES, type Pack } from '../packs/bundle.ts'
import { parsePackSignature, verifyPackSignature, type PackSignature, type StoredPack } from '../packs/trust.ts'
import { errno, pathExists, writeFileAtomic } from './fs.ts'

export const PACK_SUFFIX = '.pack'
export const SIGS_SUFFIX = '.sigs.json'

export type { StoredPack }

export interface PackSummary {
  cid: string
  name: string
  version: string
  /** Bundle size in bytes. */
  size: number
  signatures: number
}

export interface PutOptions {
  /** The CID the caller asked for (from a peer, a user): the bytes must hash to it (RL-3003). */
  cid?: string
}

export interface PackStore {
  readonly dir: string
  /** Verify and store a bundle with any signatures (merged with those already stored). */
  put (bytes: Uint8Array, signatures?: readonly unknown[], options?: PutOptions): Promise<StoredPack>
  /**
   * A pack by CID, by `name` (the highest version by semver; among equal
   * versions the most recently stored), or by `name@version`. RL-3012 when
   * there is none.
   */
  get (cidOrName: string): Promise<StoredPack>
  has (cid: string): Promise<boolean>
  /** Verify an envelope for a stored pack and keep it. */
  addSignature (cid: string, envelope: unknown): Promise<StoredPack>
  /** Every stored pack, by name then version then CID. */
  list (): Promise<PackSummary[]>
}


function notFound (what: string, dir: string): never {
  throw new ReachError('RL-3012', { message: `no pack ${what} in ${dir}`, details: { pack: what, dir } })
}

/** One signature per publisher (Ed25519 is deterministic: the same key signs the same body identically). */
function mergeSignatures (a: readonly PackSignature[], b: readonly PackSignature[]): PackSignature[] {
  const byPublisher = new Map<string, PackSignature>()
  for (const s of [...a, ...b]) byPublisher.set(s.publisher, s)
  return [...byPublisher.values()].sort((x, y) => (x.publisher < y.publisher ? -1 : x.publisher > y.publisher ? 1 : 0))
}

export function openPackStore (dir: string): PackStore {
  const packPath = (cid: string): string => join(dir, cid + PACK_SUFFIX)
  const sigsPath = (cid: string): string => join(dir, cid + SIGS_SUFFIX)

  async function readSignatures (cid: string): Promise<PackSignature[]> {
    let text: string
    try {
      text = await readFile(sigsPath(cid), 'utf8')
    } catch (err) {
      if (errno(err) === 'ENOENT') return []
      throw err
    }
    try {
      const value = JSON.parse(text) as unknown
      if (!Array.isArray(value)) throw new Error('not a JSON array')
      return value.map((s) => parsePackSignature(s))
    } catch (err) {
      throw new ReachError('RL-5009', { message: `signature file ${sigsPath(cid)} is corrupt: ${(err as Error).message}`, details: { path: sigsPath(cid) }, cause: err })
    }
  }

  async function writeSignatures (cid: string, sigs: readonly PackSignature[]): Promise<void> {
    await writeFileAtomic(sigsPath(cid), JSON.stringify(sigs, null, 2) + '\n')
  }

  async function readPack (cid: string): Promise<StoredPack> {
    let bytes: Uint8Array
    try {
      const st = await stat(packPath(cid))
      if (st.size > MAX_BUNDLE_BYTES) throw new ReachError('RL-3004', { message: `${packPath(cid)} is larger than any bundle (${st.size} bytes)` })
      bytes = new Uint8Array(await readFile(packPath(cid)))
    } catch (err) {
      if (errno(err) === 'ENOENT') notFound(cid, dir)
      throw err
    }
    return { ...decodeBundle(bytes, cid), signatures: await readSignatures(cid) }
  }


  async function cids (): Promise<string[]> {
    let names: string[]
    try {
      names = await readdir(dir)
    } catch (err) {
      if (errno(err) === 'ENOENT') return []
      throw err
    }
    return names.filter((n) => n.endsWith(PACK_SUFFIX)).map((n) => n.slice(0, -PACK_SUFFIX.length)).filter(isPackCid).sort()
  }

  const store: PackStore = {
    dir,

    async put (bytes, signatures = [], options = {}) {
      const pack = decodeBundle(bytes, options.cid)
      const subject = { cid: pack.cid, manifest: pack.bundle.manifest }
      const offered = signatures.map((s) => verifyPackSignature(s, subject))
      if (!(await pathExists(packPath(pack.cid)))) await writeFileAtomic(packPath(pack.cid), pack.bytes)
      const existing = await readSignatures(pack.cid)
      const merged = mergeSignatures(existing, offered)
      if (offered.length > 0 || !(await pathExists(sigsPath(pack.cid)))) await writeSignatures(pack.cid, merged)
      return { ...pack, signatures: merged }
    },

    async get (cidOrName) {
      if (isPackCid(cidOrName)) return await readPack(cidOrName)
      const at = cidOrName.lastIndexOf('@')
      const name = at > 0 ? cidOrName.slice(0, at) : cidOrName
      const version = at > 0 ? cidOrName.slice(at + 1) : undefined
      let best: { cid: string, version: string, mtime: number } | undefined
      for (const cid of await cids()) {
        let pack: Pack
        try {
          pack = decodeBundle(new Uint8Array(await readFile(packPath(cid))), cid)
        } catch {
          continue // a damaged file is reported when asked for by CID, not when searching by name
        }
        const m = pack.bundle.manifest
        if (m.name !== name || (version !== undefined && m.version !== version)) continue
        const mtime = (await stat(packPath(cid))).mtimeMs
        const order = best === undefined ? 1 : semver.compare(m.version, best.version) || Math.sign(mtime - best.mtime)
        if (order > 0) best = { cid, version: m.version, mtime }
      }
      if (best === undefined) notFound(cidOrName, dir)
      return await readPack(best.cid)
    },

    async has (cid) {
      return isPackCid(cid) && await pathExists(packPath(cid))
    },

    async addSignature (cid, envelope) {
      const pack = await readPack(cid)
      const sig = verifyPackSignature(envelope, { cid: pack.cid, manifest: pack.bundle.manifest })
      const merged = mergeSignatures(pack.signatures, [sig])
      await writeSignatures(cid, merged)
      return { ...pack, signatures: merged }
    },

    async list () {
      const out: PackSummary[] = []
      for (const cid of await cids()) {
        const pack = await readPack(cid)
        const m = pack.bundle.manifest
        out.push({ cid, name: m.name, version: m.version, size: pack.bytes.length, signatures: pack.signatures.length })
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : semver.compare(a.version, b.version) || (a.cid < b.cid ? -1 : a.cid > b.cid ? 1 : 0)))
    }
  }
  return store
}
