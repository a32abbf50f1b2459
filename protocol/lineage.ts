/**
 * A run's lineage (SPEC §8, §10.5): where it sits in a delegation chain, `{depth, ancestry,
 * deadline?}`, the ancestry being the signed hops that led to it. Pure: the hop chain is checked
 * with the peers' keys its ids name, so a replay can hold a recorded lineage to the same rule a
 * delegation server does.
 */
import type { JsonObject } from './canonical.ts'
import { verifyDomain } from './keys.ts'
import { publicKeyOfPeerId } from './peer-id.ts'
import { HOP_SIGNATURE_KIND, hopBody, type Hop } from './wire.ts'

/** Deepest chain the wire allows (the `delegate` frame's `depth` maximum). */
export const MAX_LINEAGE_DEPTH = 64

const HASH = /^[0-9a-f]{64}$/
const SIG = /^[A-Za-z0-9_-]{86}$/

/**
 * Why the hops are not a chain each signed by its `from` after the hop before it (starting where
 * the previous one ended), or undefined. `index` names the hop (from 1) in the message.
 */
export function hopChainProblem (hops: readonly Hop[]): string | undefined {
  let previous: string | null = null
  for (let i = 0; i < hops.length; i++) {
    const hop = hops[i] as Hop
    if (i > 0 && hop.from !== hops[i - 1]?.to) return `hop ${i + 1} starts at ${hop.from}, not where hop ${i} ended`
    let key: string
    try {
      key = publicKeyOfPeerId(hop.from)
    } catch {
      return `hop ${i + 1}: ${hop.from} is not an Ed25519 peer id`
    }
    const signature = Buffer.from(hop.signature, 'base64url')
    // One spelling per signature: base64url's spare bits must be zero.
    if (signature.toString('base64url') !== hop.signature || !verifyDomain(key, HOP_SIGNATURE_KIND, hopBody(i, hop, previous), signature)) {
      return `hop ${i + 1} (${hop.from} → ${hop.to}) is not signed by ${hop.from}`
    }
    previous = hop.signature
  }
  return undefined
}

/** The hops of a recorded lineage, or why it is not one (its form, then its signatures). */
export function lineageHops (value: unknown): Hop[] | string {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'lineage is not an object'
  const l = value as JsonObject
  const keys = Object.keys(l)
  if (keys.some((k) => k !== 'depth' && k !== 'ancestry' && k !== 'deadline')) return 'lineage has a member other than depth, ancestry, deadline'
  const { depth, ancestry, deadline } = l
  if (!Number.isSafeInteger(depth) || (depth as number) < 0 || (depth as number) > MAX_LINEAGE_DEPTH) return `lineage depth is not an integer from 0 to ${MAX_LINEAGE_DEPTH}`
  if (!Array.isArray(ancestry) || ancestry.length !== depth) return 'lineage ancestry is not as many hops as its depth'
  if ((depth as number) > 0 ? !(Number.isSafeInteger(deadline) && (deadline as number) >= 0) : deadline !== undefined) return 'lineage deadline is not a time (a delegated run has one, a root run none)'
  const hops: Hop[] = []
  for (const h of ancestry) {
    if (h === null || typeof h !== 'object' || Array.isArray(h) || Object.keys(h).length !== 4) return 'lineage hop is not {from, to, request, signature}'
    const { from, to, request, signature } = h as JsonObject
    if (typeof from !== 'string' || typeof to !== 'string' || typeof request !== 'string' || !HASH.test(request) || typeof signature !== 'string' || !SIG.test(signature)) return 'lineage hop is not {from, to, request, signature}'
    hops.push({ from, to, request, signature })
  }
  return hopChainProblem(hops) ?? hops
}
