/**
 * Delegation hops (SPEC §10.5): each request carries the signed chain of requests that led to it.
 * A client signs one hop per request it sends (`from` asked `to` for this request, after the
 * previous hop's signature); a server checks the whole chain before it remembers the nonce.
 */
import { ReachError } from '../protocol/errors.ts'
import { signDomain, type Signer } from '../protocol/keys.ts'
import { hopChainProblem } from '../protocol/lineage.ts'
import { HOP_SIGNATURE_KIND, hopBody, requestDigest, type DelegateRequest, type Hop } from '../protocol/wire.ts'

export type HopRequest = Pick<DelegateRequest, 'delegation_id' | 'pack_cid' | 'input' | 'budget' | 'nonce' | 'deadline'>

/** The hop `from` → `to` for `request`, signed at index `ancestry.length`. */
export function signHop (signer: Signer, request: HopRequest, ancestry: readonly Hop[], from: string, to: string): Hop {
  const previous = ancestry.at(-1)?.signature ?? null
  const hop = { from, to, request: requestDigest(request) }
  const signature = signDomain(signer, HOP_SIGNATURE_KIND, hopBody(ancestry.length, hop, previous))
  return { ...hop, signature: Buffer.from(signature).toString('base64url') }
}

/**
 * RL-4006 unless the ancestry chains from its first hop to `self`, the last hop is the caller's
 * and is for this very request, and every hop is signed by its `from` after the hop before it.
 */
export function checkAncestry (request: DelegateRequest, caller: string, self: string): void {
  const hops = request.ancestry
  if (hops.length !== request.depth) throw new ReachError('RL-4006', { message: `depth ${request.depth} but ${hops.length} hops in the ancestry` })
  const last = hops.at(-1) as Hop
  if (last.from !== caller || last.to !== self) throw new ReachError('RL-4006', { message: `the last hop is ${last.from} → ${last.to}, but ${caller} is asking ${self}` })
  if (last.request !== requestDigest(request)) throw new ReachError('RL-4006', { message: 'the last hop was signed for another request' })
  const problem = hopChainProblem(hops)
  if (problem !== undefined) throw new ReachError('RL-4006', { message: problem })
}
