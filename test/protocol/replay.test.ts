import { describe, expect, it } from 'vitest'
import { replay, replayAsync } from '../../protocol/replay.ts'
import { aggregatesReducer } from '../../protocol/reducer.ts'
import { diffValues } from '../../protocol/diff.ts'
import { nextEvent, deriveId, type Event } from '../../protocol/event.ts'
import { emptyState, stateHash, aggregateCounts } from '../../protocol/state.ts'
import { makeEvents } from './helpers.ts'

function given (...drafts: Array<[string, string, unknown?]>): Event[] {
  const out: Event[] = []
  for (const [type, aggregate_id, payload] of drafts) {
    const prev = out.at(-1)
    out.push(nextEvent(prev === undefined ? null : prev, { type, aggregate_id, payload: (payload ?? null) as never }))
  }
  return out
}

describe('aggregates reducer (given / when / then)', () => {
  it('given an agent and a task, when the task is assigned and completed, then the task records both', () => {
    const { state } = replay(given(
      ['AgentCreated', 'agent-1', { name: 'alpha' }],
      ['TaskCreated', 'task-1', { title: 'index the log' }],
      ['TaskAssigned', 'task-1', { agent_id: 'agent-1' }],
      ['TaskCompleted', 'task-1', { result: { ok: true } }]
    ))
    expect(state.version).toBe(4)
    expect(state.aggregates.agents!['agent-1']).toMatchObject({ name: 'alpha', status: 'active', created_at: 0 })
    expect(state.aggregates.tasks!['task-1']).toMatchObject({ title: 'index the log', assignee: 'agent-1', status: 'completed', result: { ok: true }, updated_at: 3 })
  })

  it('given a team, when members are added twice and removed, then membership is a sorted set', () => {
    const { state } = replay(given(
      ['TeamCreated', 'team-1', { name: 'core' }],
      ['MemberAdded', 'team-1', { agent_id: 'b' }],
      ['MemberAdded', 'team-1', { agent_id: 'a' }],
      ['MemberAdded', 'team-1', { agent_id: 'b' }],
      ['MemberRemoved', 'team-1', { agent_id: 'a' }],
      ['MemberAdded', 'team-1', { agent_id: 'c' }]
    ))
    expect(state.aggregates.teams!['team-1']!.members).toEqual(['b', 'c'])
  })

  it('an unknown event type only bumps the version; an event about a missing aggregate creates it', () => {
    const { state } = replay(given(['Whatever', 'x', [1, 2]], ['TaskAssigned', 'task-9', { agent_id: 'agent-2' }]))
    expect(state.version).toBe(2)
    expect(state.aggregates.tasks!['task-9']).toMatchObject({ status: 'assigned', assignee: 'agent-2' })
  })

  it('is pure: earlier states are never mutated', () => {
    const events = makeEvents(30)
    const before = emptyState()
    const snapshot = structuredClone(before)
    let s = before
    const history = []
    for (const e of events) { history.push(structuredClone(s)); const next = aggregatesReducer(s, e); history.push(s); s = next }
    expect(before).toEqual(snapshot)
    for (let i = 0; i < history.length; i += 2) expect(history[i + 1]).toEqual(history[i])
  })
})

describe('replay', () => {
  const events = makeEvents(1000)

  it('gives the same state hash 100 times over', () => {
    const first = replay(events).state_hash
    for (let i = 0; i < 100; i++) expect(replay(events).state_hash).toBe(first)
    expect(aggregateCounts(replay(events).state)).toEqual({ agents: 45, tasks: 111, teams: 8 })
  })

  it('stops at untilSeq, and resuming from there reaches the same final state', () => {
    const half = replay(events, { untilSeq: 500 })
    expect(half.last_seq).toBe(500)
    expect(half.events_applied).toBe(501)
    const rest = replay(events.slice(501), { initial: { state: half.state, anchor: { seq: 500, hash: events[500]!.hash, timestamp: events[500]!.timestamp } } })
    expect(rest.state_hash).toBe(replay(events).state_hash)
  })

  it('replay to 500, again to 500: states match', async () => {
    async function * stream () { yield * events }
    const a = replay(events, { untilSeq: 500 })
    const b = await replayAsync(stream(), { untilSeq: 500 })
    expect(b.state_hash).toBe(a.state_hash)
    expect(stateHash(b.state)).toBe(a.state_hash)
  })

  it('replay to 500, checkpoint, replay again: the states match the signed state hash', async () => {
    const { digestLog } = await import('../../protocol/digest.ts')
    const { createCheckpoint, verifyCheckpoint } = await import('../../protocol/checkpoint.ts')
    const { createSigner, generateKeyPair } = await import('../../protocol/keys.ts')
    const first = replay(events, { untilSeq: 500 })
    const d = digestLog(events, { untilSeq: 500 })
    const cp = createCheckpoint({ kind: 'log', log_id: d.log_id, at_seq: 500, state_hash: d.state_hash!, log_hash: d.log_hash, merkle_root: d.merkle_root, timestamp: d.timestamp }, createSigner(generateKeyPair().seed))
    verifyCheckpoint(cp)
    expect(cp.state_hash).toBe(first.state_hash)
    expect(replay(events, { untilSeq: 500 }).state_hash).toBe(cp.state_hash)
  })

  it('refuses to replay past the end of the log with RL-1007', () => {
    expect(() => replay(events.slice(0, 10), { untilSeq: 20 })).toThrow(expect.objectContaining({ code: 'RL-1007' }))
  })

  it('fails on a broken chain with the chain code and seq', () => {
    const bad = structuredClone(events)
    ;(bad[70] as any).payload = 'tampered'
    expect(() => replay(bad)).toThrow(expect.objectContaining({ code: 'RL-2001', seq: 70 }))
  })

  it('traces each event with its field-level state change', () => {
    const { trace } = replay(given(['AgentCreated', 'agent-1', { name: 'alpha' }], ['AgentUpdated', 'agent-1', { name: 'beta' }]), { trace: true })
    expect(trace![0]).toMatchObject({ seq: 0, type: 'AgentCreated', aggregate_id: 'agent-1', changes: [{ path: '/aggregates/agents', op: 'added' }] })
    expect(trace![1]!.changes).toEqual([
      { path: '/aggregates/agents/agent-1/name', op: 'changed', before: 'alpha', after: 'beta' },
      { path: '/aggregates/agents/agent-1/updated_at', op: 'changed', before: 0, after: 1 }
    ])
  })
})

describe('diff', () => {
  it('reports added, removed and changed fields with escaped JSON pointers', () => {
    expect(diffValues({ a: 1, 'x/y': { b: [1, 2] }, gone: true }, { a: 2, 'x/y': { b: [1, 3, 4] }, fresh: null })).toEqual([
      { path: '/a', op: 'changed', before: 1, after: 2 },
      { path: '/fresh', op: 'added', after: null },
      { path: '/gone', op: 'removed', before: true },
      { path: '/x~1y/b/1', op: 'changed', before: 2, after: 3 },
      { path: '/x~1y/b/2', op: 'added', after: 4 }
    ])
    expect(diffValues({ a: { b: 1 } }, { a: { b: 1 } })).toEqual([])
  })

  it('derives collision-free ids from log positions', () => {
    const ids = new Set<string>()
    for (let seq = 0; seq < 200; seq++) for (let i = 0; i < 3; i++) ids.add(deriveId('task', seq, i))
    expect(ids.size).toBe(600)
  })
})
