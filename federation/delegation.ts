/**
 * What a delegation is on both sides of `/reach/delegate/1.0.0` (SPEC §10.5): its checked result,
 * and the lineage a run delegates from (its depth, the signed hops that led to it, its deadline).
 */
import type { JsonObject, JsonValue } from '../protocol/canonical.ts'
import type { Event } from '../protocol/event.ts'
import type { RunRecord } from '../protocol/run.ts'
import type { Hop } from '../protocol/wire.ts'

/** A delegation's result, checked against the peer that ran it. */
export interface Delegation {
  delegation_id: string
  pack_cid: string
  peer: string
  status: 'completed' | 'failed' | 'cancelled'
  output?: JsonValue
  error?: { code: string, message: string }
  run_id: string
  record: RunRecord
  /** The child's first event, whose hash its checkpoint signs as the log's id. */
  started: Event
  checkpoint: string
  log_head: { seq: number, hash: string }
  attempts: Array<{ peer: string, code: string, message: string }>
}

/** Where a delegation stands in the chain: depth of the run asking, and the hops that led to it. */
export interface Lineage {
  depth: number
  ancestry: Hop[]
  deadline?: number
}

/** A run started on this node: nothing above it. */
export const ROOT: Lineage = { depth: 0, ancestry: [] }

/** Deepest chain the wire allows (the `delegate` frame's `depth` maximum). */
const MAX_DEPTH = 64

/** A lineage as JSON (what a RunExecutor is handed for the run it serves). */
export function lineageJson (l: Lineage): JsonObject {
  return {
    depth: l.depth,
    ancestry: l.ancestry.map((h) => ({ from: h.from, to: h.to, request: h.request, signature: h.signature })),
    ...(l.deadline === undefined ? {} : { deadline: l.deadline })
  }
}

function hopOf (value: unknown): Hop | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const { from, to, request, signature } = value as Record<string, unknown>
  if (typeof from !== 'string' || typeof to !== 'string' || typeof request !== 'string' || typeof signature !== 'string') return undefined
  return { from, to, request, signature }
}

/** The lineage `lineageJson` wrote; ROOT for undefined or anything that is not one. */
export function lineageOf (json: JsonObject | undefined): Lineage {
  if (json === undefined) return ROOT
  const { depth, ancestry, deadline } = json
  if (typeof depth !== 'number' || !Number.isSafeInteger(depth) || depth < 0 || depth > MAX_DEPTH) return ROOT
  if (!Array.isArray(ancestry) || ancestry.length !== depth) return ROOT
  if (deadline !== undefined && (typeof deadline !== 'number' || !Number.isSafeInteger(deadline) || deadline < 0)) return ROOT
  const hops: Hop[] = []
  for (const value of ancestry) {
    const hop = hopOf(value)
    if (hop === undefined) return ROOT
    hops.push(hop)
  }
  return { depth, ancestry: hops, ...(deadline === undefined ? {} : { deadline }) }
}
