/**
 * How much fuel a `reach.delegate` call hands its sub-run (SPEC §10.5). The run loop decides it,
 * not the tool, so that a replay computes the same grant and can hold the recorded result to it:
 * the children of a run together never get more fuel than the run's budget.
 *
 *   left  = min(left, budget.fuel − fuel burnt so far)        (before each call)
 *   grant = min(args.budget.fuel ?? floor(left / 2), left)    (RL-3016 when below 1)
 *   left  = left − grant                                      (whatever the sub-run then does)
 */
import type { JsonObject } from '../../protocol/canonical.ts'
import type { ErrorCode } from '../../protocol/errors.ts'
import { BUDGET_FIELDS } from '../manifest.ts'

export type FuelGrant = { ok: true, fuel: number, left: number } | { ok: false, error: { code: ErrorCode, message: string } }

/**
 * The grant for one call; `left` is what the run's earlier calls left, `unburnt` its budget minus
 * the fuel it used. `strict` (runs that record their engine build): an asked fuel that is not a
 * positive integer fails the call; older runs took it as it was (and a peer refused the request).
 */
export function delegateFuel (args: JsonObject, left: number, unburnt: number, strict = true): FuelGrant {
  if (typeof args.pack !== 'string') return { ok: false, error: { code: 'RL-3018', message: 'reach.delegate needs { pack: <cid>, input }' } }
  const budget = args.budget !== null && typeof args.budget === 'object' && !Array.isArray(args.budget) ? args.budget : {}
  const asked = budget.fuel
  if (strict) {
    // What a peer would refuse (the wire's budget form, SPEC §10.5) fails here, before any
    // request is sent: the caller's mistake never counts against a peer.
    const wrong = budgetProblem(args.budget)
    if (wrong !== undefined) return { ok: false, error: { code: 'RL-3018', message: `reach.delegate ${wrong}` } }
  }
  const now = Math.min(left, unburnt)
  const fuel = Math.min((asked as number | undefined) ?? Math.floor(now / 2), now)
  if (fuel < 1) return { ok: false, error: { code: 'RL-3016', message: 'no fuel left in this run for a delegation' } }
  return { ok: true, fuel, left: now - fuel }
}

/** Why a call's `budget` is not {fuel?, memory_bytes?, output_bytes?, tool_calls?, wall_ms?} of integers (each ≥ 1, tool_calls ≥ 0), or undefined. */
function budgetProblem (budget: unknown): string | undefined {
  if (budget === undefined) return undefined
  if (budget === null || typeof budget !== 'object' || Array.isArray(budget)) return 'budget must be an object'
  for (const [k, v] of Object.entries(budget)) {
    if (!(BUDGET_FIELDS as readonly string[]).includes(k)) return `budget has an unknown member ${JSON.stringify(k)} (it takes ${BUDGET_FIELDS.join(', ')})`
    if (!Number.isSafeInteger(v) || (v as number) < (k === 'tool_calls' ? 0 : 1)) return `budget.${k} must be a ${k === 'tool_calls' ? 'non-negative' : 'positive'} integer`
  }
  return undefined
}
