/**
 * A peer's circuit breaker (opossum): when to stop trying a peer, and when to try it again.
 *
 * A remote's *policy refusal* (it will not run this pack, the delegation is too deep, a cycle ...)
 * says nothing about its health, and neither does its refusal of the caller's own bad input (an
 * input that is not canonical JSON, a non-CID), so neither trips the breaker: only
 * unavailability, overload, deadlines, protocol violations and unexpected errors do.
 */
import CircuitBreaker from 'opossum'
import { isReachError } from '../protocol/errors.ts'

export type BreakerState = 'closed' | 'open' | 'half-open'

export interface PeerBreakerOptions {
  /** How long a breaker stays open before it lets one half-open probe through (default 10_000). */
  resetTimeoutMs?: number
  /** Calls in the rolling window before the breaker may open at all (default 3). */
  volumeThreshold?: number
  /** Failure percentage in the rolling window above which the breaker opens (default 50). */
  errorThresholdPercentage?: number
  /** Length of the rolling window (default 30_000). */
  rollingCountTimeoutMs?: number
}

export type Breaker = CircuitBreaker<[() => Promise<unknown>], unknown>

/** Federation codes that are a remote's deliberate answer rather than a fault. */
// RL-4015 is our own cancellation: the peer did nothing wrong.
// RL-4001/RL-4013: the peer could not get the pack from the DHT, which says nothing of its health.
const REFUSAL_CODES: ReadonlySet<string> = new Set(['RL-4001', 'RL-4004', 'RL-4005', 'RL-4009', 'RL-4012', 'RL-4013', 'RL-4015', 'RL-4017'])

/**
 * Usage and input codes that say the request itself is wrong (not JSON, not a number, a bad
 * event field, not canonical JSON, out of range, an invalid argument such as a non-CID): the
 * caller's mistake, refused alike by every peer. The other RL-1xxx codes (a peer's own key or
 * node file, its listen address) are about the node that sends them and still count.
 */
const CALLER_INPUT_CODES: ReadonlySet<string> = new Set(['RL-1002', 'RL-1003', 'RL-1005', 'RL-1006', 'RL-1007', 'RL-1011'])

/** Whether `err` refuses the caller's own input (CALLER_INPUT_CODES), from the peer or found before sending. */
export function isCallersInput (err: unknown): boolean {
  return isReachError(err) && CALLER_INPUT_CODES.has(err.code)
}

/** Whether `err` is a remote's policy refusal (RL-3xxx and the refusal codes above) or a refusal of the caller's own input. */
export function isPolicyRefusal (err: unknown): boolean {
  return isReachError(err) && (err.code.startsWith('RL-3') || REFUSAL_CODES.has(err.code) || CALLER_INPUT_CODES.has(err.code))
}

/** A breaker for `peer`; call `shutdown()` when done with it (it holds a timer). */
export function createBreaker (peer: string, settings: Required<PeerBreakerOptions>): Breaker {
  return new CircuitBreaker(async (thunk: () => Promise<unknown>) => await thunk(), {
    name: peer,
    timeout: false, // deadlines belong to the caller's AbortSignal, which fails fn with RL-4008
    resetTimeout: settings.resetTimeoutMs,
    volumeThreshold: settings.volumeThreshold,
    errorThresholdPercentage: settings.errorThresholdPercentage,
    rollingCountTimeout: settings.rollingCountTimeoutMs,
    errorFilter: isPolicyRefusal,
    allowWarmUp: false,
    // Neither is read here; both would cost a timer or memory per peer.
    enableSnapshots: false,
    rollingPercentilesEnabled: false
  })
}

export function stateOf (breaker: Breaker | undefined): BreakerState {
  if (breaker === undefined) return 'closed'
  return breaker.opened ? 'open' : breaker.halfOpen ? 'half-open' : 'closed'
}

/** Closed, or half-open with its one probe not yet taken (opossum lets exactly one through). */
export function admits (breaker: Breaker | undefined): boolean {
  return breaker === undefined || breaker.closed || (breaker.halfOpen && breaker.pendingClose)
}

/** opossum's own rejection (another call took the half-open probe first), not the call's error. */
export function isBreakerRejection (err: unknown): boolean {
  return err instanceof Error && CircuitBreaker.isOurError(err)
}
