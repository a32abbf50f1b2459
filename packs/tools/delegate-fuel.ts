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
  if (strict && asked !== undefined && !(Number.isSafeInteger(asked) && (asked as number) >= 1)) {
    return { ok: false, error: { code: 'RL-3018', message: 'reach.delegate budget.fuel must be a positive integer' } }
  }
  const now = Math.min(left, unburnt)
  const fuel = Math.min((asked as number | undefined) ?? Math.floor(now / 2), now)
  if (fuel < 1) return { ok: false, error: { code: 'RL-3016', message: 'no fuel left in this run for a delegation' } }
  return { ok: true, fuel, left: now - fuel }
}
