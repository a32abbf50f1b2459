/**
 * The node's Prometheus metrics (prom-client), served by the control API at
 * `GET /metrics`.
 *
 * Each NodeMetrics owns its own Registry, never prom-client's global one, so
 * several nodes can live in one process (tests, simulations) without "metric
 * already registered" errors or mixed-up counts.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'

export const DELEGATION_OUTCOMES = ['completed', 'failed', 'cancelled', 'refused', 'error'] as const
export const DHT_OPS = ['provide', 'find_providers'] as const
export const DHT_RESULTS = ['ok', 'empty', 'timeout', 'error'] as const
/** What federation/packs.ts counts: one of local, fetched, no_provider, failed, refused, aborted per fetch, plus bad_provider per lying provider. */
export const PACK_FETCH_RESULTS = ['local', 'fetched', 'no_provider', 'failed', 'refused', 'aborted', 'bad_provider'] as const
/** reach_peer_breaker_state values. */
export const BREAKER_STATE = { closed: 0, 'half-open': 1, open: 2 } as const

/**
 * Delegations range from a trivial pack answered by a neighbour (about a
 * millisecond) to the 30 s default deadline; roughly ×2.5 steps keep the
 * error of a quantile estimate small over that span.
 */
const DELEGATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

export class NodeMetrics {
  readonly registry: Registry
  readonly delegations: Counter<'outcome'>
  readonly delegationsServed: Counter<'outcome'>
  readonly delegationSeconds: Histogram
  readonly delegationRetries: Counter
  readonly breakerState: Gauge<'peer'>
  readonly breakerTransitions: Counter<'state'>
  readonly dhtOperations: Counter<'op' | 'result'>
  readonly packFetches: Counter<'result'>
  readonly gossipMessages: Counter<'direction' | 'result'>
  readonly runs: Counter<'status'>
  readonly peersConnected: Gauge
  readonly auditEvents: Counter<'type'>
  readonly verifications: Counter<'result'>

  constructor () {
    const registry = new Registry()
    const registers = [registry]
    this.registry = registry
    this.delegations = new Counter({ name: 'reach_delegations_total', help: 'Delegations this node sent, by outcome', labelNames: ['outcome'], registers })
    this.delegationsServed = new Counter({ name: 'reach_delegations_served_total', help: 'Delegations this node served for peers, by outcome', labelNames: ['outcome'], registers })
    this.delegationSeconds = new Histogram({ name: 'reach_delegation_duration_seconds', help: 'Time from sending a delegation to its result', buckets: DELEGATION_BUCKETS, registers })
    this.delegationRetries = new Counter({ name: 'reach_delegation_retries_total', help: 'Delegations retried on another peer', registers })
    this.breakerState = new Gauge({ name: 'reach_peer_breaker_state', help: 'Circuit breaker per peer: 0 closed, 1 half-open, 2 open', labelNames: ['peer'], registers })
    this.breakerTransitions = new Counter({ name: 'reach_peer_breaker_transitions_total', help: 'Circuit breaker transitions, by the state entered', labelNames: ['state'], registers })
    this.dhtOperations = new Counter({ name: 'reach_dht_operations_total', help: 'DHT operations, by operation and result', labelNames: ['op', 'result'], registers })
    this.packFetches = new Counter({ name: 'reach_pack_fetches_total', help: 'Pack fetches from providers, by result', labelNames: ['result'], registers })
    this.gossipMessages = new Counter({ name: 'reach_gossip_messages_total', help: 'Gossip messages, by direction and result', labelNames: ['direction', 'result'], registers })
    this.runs = new Counter({ name: 'reach_runs_total', help: 'Pack runs finished on this node, by status', labelNames: ['status'], registers })
    this.peersConnected = new Gauge({ name: 'reach_peers_connected', help: 'Peers with an open connection', registers })
    this.verifications = new Counter({ name: 'reach_verifications_total', help: 'Runs this node witnessed by itself (delegated results, sampled checkpoints), by result; dropped: the verification queue was full', labelNames: ['result'], registers })
    this.auditEvents = new Counter({ name: 'reach_audit_events_total', help: 'What peers did that this node keeps a record of (refusals, failed verifications, lying providers), by type', labelNames: ['type'], registers })

    // Known label values start at 0, so rate() and alerts see a series from
    // the start rather than only after the first event.
    for (const outcome of DELEGATION_OUTCOMES) {
      this.delegations.inc({ outcome }, 0)
      this.delegationsServed.inc({ outcome }, 0)
    }
    for (const op of DHT_OPS) for (const result of DHT_RESULTS) this.dhtOperations.inc({ op, result }, 0)
    for (const result of PACK_FETCH_RESULTS) this.packFetches.inc({ result }, 0)
  }

  /** The Prometheus text exposition of every metric. */
  async text (): Promise<string> {
    return await this.registry.metrics()
  }
}
