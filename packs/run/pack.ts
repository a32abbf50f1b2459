/**
 * The run loop's view of a pack: its CID, name, entry, capabilities and files as text.
 */
import type { Pack } from '../bundle.ts'
import type { RunPack } from './types.ts'

/**
 * Made once per pack object: a memo over immutable values (a decoded pack is never changed), so
 * a node that reuses its verified packs hashes a pack's files once (the sandbox keys a loaded
 * pack by its frozen files object).
 */
const views = new WeakMap<Pack, RunPack>()

export function runPackOf (pack: Pack): RunPack {
  const known = views.get(pack)
  if (known !== undefined) return known
  const { manifest, files } = pack.bundle
  const made: RunPack = Object.freeze({
    cid: pack.cid,
    name: manifest.name,
    entry: manifest.entry,
    capabilities: Object.freeze([...manifest.capabilities]),
    files: Object.freeze(Object.fromEntries(Object.entries(files).map(([path, bytes]) => [path, Buffer.from(bytes).toString('utf8')])))
  })
  views.set(pack, made)
  return made
}
