/**
 * Limits and defaults of the peer registry (peer-registry.ts), each with why it has its value.
 */
import type { PeerBreakerOptions } from './peer-breaker.ts'

/**
 * A peer is worth trying again 10 s after it tripped; three calls are enough evidence to trip
 * (fewer would let one unlucky request bench a peer); over half failing is the trip point; and a
 * 30 s window outlasts the reset timeout, so a peer that recovers and fails again soon trips at once.
 */
export const BREAKER_DEFAULTS: Required<PeerBreakerOptions> = {
  resetTimeoutMs: 10_000,
  volumeThreshold: 3,
  errorThresholdPercentage: 50,
  rollingCountTimeoutMs: 30_000
}

/**
 * Peers the registry keeps. Peer ids cost nothing to make, so the table must not grow with every
 * id that connects; 1024 is eight times the host's connection limit (128), room for the peers a
 * node works with and their history, at a few KB each (stats and an opossum breaker).
 */
export const MAX_PEERS = 1024

/**
 * Peers that may not be forgotten (connected, a call under way, a tripped breaker) can push the
 * table past MAX_PEERS up to this many times it; there, tripped breakers are forgotten too.
 */
export const MAX_PEERS_OVERFLOW = 2
