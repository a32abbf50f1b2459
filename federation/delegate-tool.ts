/**
 * The `reach.delegate` host tool (SPEC §10.5): a run's sub-run on a peer, one hop deeper.
 */
import type { JsonValue } from '../protocol/canonical.ts'
import { ReachError } from '../protocol/errors.ts'
import type { WireBudget } from '../protocol/wire.ts'
import type { Tool } from '../packs/tools/index.ts'
import type { Lineage } from './delegation.ts'
import type { Delegator } from './delegator.ts'

/**
 * `reach.delegate {pack, input, budget?, peer?}` for one run at `lineage`: the sub-run goes one
 * hop deeper, with the fuel the run loop granted this call out of what the parent has left
 * (packs/tools/delegate-fuel.ts: the children of a run never get more fuel in total than the
 * parent's budget), and it is cancelled when the parent's run ends. Its result, with the peer's
 * signed checkpoint, is what the log records, so the parent replays offline.
 */
export function delegateTool (delegator: Delegator, lineage: Lineage, runSignal: AbortSignal): Tool {
  return {
    capability: 'reach.delegate',
    async run (args, ctx) {
      const fuel = ctx.fuelGranted
      if (typeof args.pack !== 'string' || fuel === undefined) throw new ReachError('RL-3018', { message: 'reach.delegate needs { pack: <cid>, input } and a fuel grant' })
      const asked = (args.budget !== null && typeof args.budget === 'object' && !Array.isArray(args.budget) ? args.budget : {}) as WireBudget
      const d = await delegator.delegate({
        pack_cid: args.pack,
        input: (args.input ?? null) as JsonValue,
        budget: { ...asked, fuel },
        lineage,
        signal: AbortSignal.any([ctx.signal, runSignal]),
        ...(typeof args.peer === 'string' ? { peer: args.peer } : {})
      })
      return {
        peer: d.peer,
        status: d.status,
        ...(d.output === undefined ? {} : { output: d.output }),
        ...(d.error === undefined ? {} : { error: d.error }),
        run_id: d.run_id,
        fingerprint: d.record.fingerprint,
        checkpoint: d.checkpoint,
        fuel_granted: fuel,
        // The child's record and first event, checked by the delegator: a replay binds the
        // result to this call with them (protocol/delegated.ts).
        record: d.record as unknown as JsonValue,
        started: d.started as unknown as JsonValue
      } as JsonValue
    }
  }
}
