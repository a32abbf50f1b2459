/**
 * How good a peer is to delegate to: a score from its record and health (higher is better), and
 * the latency average that feeds it.
 */

/** What the score reads of a peer. */
export interface ScoreInputs {
  successes: number
  failures: number
  verification_failures: number
  latency_ewma_ms: number | null
  /** `rtt_ms: null` is a failed ping. */
  last_ping: { at: number, rtt_ms: number | null } | null
  connected: boolean
}

/*
 * A verification failure means the peer returned a result that did not check out, which is worse
 * than being down, so it counts as ten failures. Latency only breaks near-ties: at most 0.1, half
 * of that at 1 s. A failed last ping suggests the peer is gone right now; a live connection saves
 * a dial.
 */
const VERIFICATION_FAILURE_WEIGHT = 10
const LATENCY_WEIGHT = 0.1
const LATENCY_HALF_MS = 1_000
const PING_FAILED_PENALTY = 0.2
const CONNECTED_BONUS = 0.05

/** Weight of the newest latency sample in the moving average. */
const LATENCY_ALPHA = 0.3

/**
 * Higher is better:
 *
 *   ratio = (successes + 1) / (successes + failures + 10·verification_failures + 2)
 *   score = ratio
 *           − 0.1 · L / (L + 1000)     L = latency EWMA in ms (0 when never measured)
 *           − 0.2 if the last ping failed
 *           + 0.05 if connected
 *
 * The ratio is the success rate with one imagined success and one imagined failure (a Beta(1,1)
 * prior), so a new peer starts at 0.5 and a single outcome does not swing it to 0 or 1.
 */
export function peerScore (stats: ScoreInputs): number {
  const { successes, failures, verification_failures: bad, latency_ewma_ms: latency } = stats
  const ratio = (successes + 1) / (successes + failures + VERIFICATION_FAILURE_WEIGHT * bad + 2)
  const slow = latency === null ? 0 : LATENCY_WEIGHT * latency / (latency + LATENCY_HALF_MS)
  const pingFailed = stats.last_ping !== null && stats.last_ping.rtt_ms === null ? PING_FAILED_PENALTY : 0
  return ratio - slow - pingFailed + (stats.connected ? CONNECTED_BONUS : 0)
}

/** The latency average after one more successful call of `sampleMs`. */
export function nextLatency (average: number | null, sampleMs: number): number {
  return average === null ? sampleMs : LATENCY_ALPHA * sampleMs + (1 - LATENCY_ALPHA) * average
}
