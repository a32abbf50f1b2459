import { register } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { BREAKER_STATE, NodeMetrics } from '../../node/metrics.ts'

describe('NodeMetrics', () => {
  it('exposes every metric under its documented name and type', async () => {
    const text = await new NodeMetrics().text()
    for (const [name, type] of [
      ['reach_delegations_total', 'counter'],
      ['reach_delegations_served_total', 'counter'],
      ['reach_delegation_duration_seconds', 'histogram'],
      ['reach_delegation_retries_total', 'counter'],
      ['reach_peer_breaker_state', 'gauge'],
      ['reach_peer_breaker_transitions_total', 'counter'],
      ['reach_dht_operations_total', 'counter'],
      ['reach_pack_fetches_total', 'counter'],
      ['reach_gossip_messages_total', 'counter'],
      ['reach_runs_total', 'counter'],
      ['reach_peers_connected', 'gauge']
    ]) expect(text).toContain(`# TYPE ${name} ${type}\n`)
  })

  it('counts with the right labels', async () => {
    const m = new NodeMetrics()
    m.delegations.inc({ outcome: 'completed' })
    m.delegations.inc({ outcome: 'completed' })
    m.delegationsServed.inc({ outcome: 'refused' })
    m.delegationSeconds.observe(0.02)
    m.delegationRetries.inc()
    m.breakerState.set({ peer: '12D3KooWpeer' }, BREAKER_STATE.open)
    m.breakerTransitions.inc({ state: 'open' })
    m.dhtOperations.inc({ op: 'find_providers', result: 'empty' })
    m.packFetches.inc({ result: 'bad_provider' })
    m.gossipMessages.inc({ direction: 'in', result: 'ok' })
    m.runs.inc({ status: 'failed' })
    m.peersConnected.set(3)
    const text = await m.text()
    for (const line of [
      'reach_delegations_total{outcome="completed"} 2',
      'reach_delegations_served_total{outcome="refused"} 1',
      'reach_delegation_duration_seconds_bucket{le="0.01"} 0',
      'reach_delegation_duration_seconds_bucket{le="0.025"} 1',
      'reach_delegation_duration_seconds_bucket{le="30"} 1',
      'reach_delegation_duration_seconds_count 1',
      'reach_delegation_retries_total 1',
      'reach_peer_breaker_state{peer="12D3KooWpeer"} 2',
      'reach_peer_breaker_transitions_total{state="open"} 1',
      'reach_dht_operations_total{op="find_providers",result="empty"} 1',
      'reach_pack_fetches_total{result="bad_provider"} 1',
      'reach_gossip_messages_total{direction="in",result="ok"} 1',
      'reach_runs_total{status="failed"} 1',
      'reach_peers_connected 3'
    ]) expect(text).toContain(line + '\n')
  })

  it('starts known outcomes at zero, so rates exist before the first event', async () => {
    const text = await new NodeMetrics().text()
    expect(text).toContain('reach_delegations_total{outcome="cancelled"} 0\n')
    expect(text).toContain('reach_dht_operations_total{op="provide",result="error"} 0\n')
    expect(text).toContain('reach_pack_fetches_total{result="no_provider"} 0\n')
  })

  it('keeps two instances apart and leaves the global registry alone', async () => {
    const a = new NodeMetrics()
    const b = new NodeMetrics()
    a.runs.inc({ status: 'completed' }, 5)
    a.peersConnected.set(7)
    expect(await a.text()).toContain('reach_runs_total{status="completed"} 5\n')
    const other = await b.text()
    expect(other).not.toContain('reach_runs_total{status="completed"}')
    expect(other).toContain('reach_peers_connected 0\n')
    expect(register.getSingleMetric('reach_runs_total')).toBeUndefined()
  })
})
