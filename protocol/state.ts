/**
 * State: what a log means once reduced.
 *
 * `State {version, aggregates}`: `version` counts the events applied (so the
 * state after replaying seqs 0..n has version n+1) and `aggregates` maps an
 * aggregate kind (agents, tasks, teams ...) to its records keyed by
 * aggregate id. The state hash every checkpoint signs is
 * `sha256(canonical(state))`, so states must stay plain JSON.
 */
import type { JsonObject, JsonValue } from './canonical.ts'
import { hashCanonical } from './hash.ts'

export interface State {
  version: number
  aggregates: { [kind: string]: { [id: string]: JsonObject } }
}

export type Reducer = (state: State, event: import('./event.ts').Event) => State

export function emptyState (): State {
  return { version: 0, aggregates: {} }
}

export function stateHash (state: State): string {
  return hashCanonical(state)
}

/** Number of records of each aggregate kind, for summaries. */
export function aggregateCounts (state: State): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const kind of Object.keys(state.aggregates).sort()) counts[kind] = Object.keys(state.aggregates[kind] ?? {}).length
  return counts
}

export type { JsonValue }
