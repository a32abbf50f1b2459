/**
 * A pack loaded into a blank (module evaluated, harness installed), kept once the same pack has
 * loaded twice, and the key that names a load.
 */
import { createHash } from 'node:crypto'
import { canonicalize } from '../../protocol/canonical.ts'
import type { SandboxLimits } from './limits.ts'
import type { Snapshot } from './snapshot.ts'

/**
 * A released sandbox that ran this pack is reset to this instead of to the blank, so the next run
 * of that pack skips loading. Loading is deterministic, so the state is the one a new load would
 * make; it is used only when the run's fuel covers what loading used (a run with less loads, and
 * fails, the ordinary way).
 */
export interface Loaded {
  key: string
  snapshot: Snapshot
  /** Ticks at the end of loading, the blank's included. */
  ticks: number
  files: Record<string, string>
}

/**
 * The digest of a frozen files object's code, per entry, hashed once per object: the run loop
 * hands the same frozen object (`runPackOf`) for every run of a pack. A memo of a pure hash over
 * frozen objects, not state: every pool would compute the same digests, so they share it.
 */
const filesDigests = new WeakMap<Record<string, string>, Map<string, string>>()

/** The identity of a load: the files, the entry, and the limits that shape it (stack, output). */
export function loadKey (files: Record<string, string>, entry: string, limits: SandboxLimits): string {
  // Only a frozen object's digest is kept: any other could change before the next load.
  const frozen = Object.isFrozen(files)
  let digests = frozen ? filesDigests.get(files) : undefined
  if (digests === undefined) {
    digests = new Map()
    if (frozen) filesDigests.set(files, digests)
  }
  let digest = digests.get(entry)
  if (digest === undefined) {
    digest = createHash('sha256').update(canonicalize({ entry, files })).digest('hex')
    digests.set(entry, digest)
  }
  return `${digest}:${limits.stackBytes}:${limits.outputBytes}`
}
