import type { JsonValue } from '../../protocol/canonical.ts'
import { nextEvent, headOf, type Event, type EventDraft } from '../../protocol/event.ts'

/** A deterministic mixed workload: agents, tasks, teams, and some unknown events. */
export function workloadDraft (i: number): EventDraft {
  const j = Math.floor(i / 9)
  const agent = `agent-${j % 45}`
  const task = `task-${j % 120}`
  const team = `team-${j % 8}`
  switch (i % 9) {
    case 0: return { type: 'AgentCreated', aggregate_id: agent, payload: { name: `alpha-${i}`, skills: ['plan', 'code'] } }
    case 1: return { type: 'TaskCreated', aggregate_id: task, payload: { title: `Task ${i}`, priority: i % 5 } }
    case 2: return { type: 'TaskAssigned', aggregate_id: task, payload: { agent_id: agent } }
    case 3: return { type: 'TeamCreated', aggregate_id: team, payload: { name: `team ${i % 8}` } }
    case 4: return { type: 'MemberAdded', aggregate_id: team, payload: { agent_id: agent } }
    case 5: return { type: 'TaskCompleted', aggregate_id: task, payload: { result: { score: i * 0.5, note: 'ok ✓' } } }
    case 6: return { type: 'AgentUpdated', aggregate_id: agent, payload: { load: i % 3 } }
    case 7: return { type: 'Annotated', aggregate_id: `note-${i}`, payload: [i, 'free-form', { nested: null }] as JsonValue }
    default: return { type: 'MemberRemoved', aggregate_id: team, payload: { agent_id: `agent-${(j + 1) % 45}` }, metadata: { actor: 'ops' } }
  }
}

export function makeEvents (n: number, draft: (i: number) => EventDraft = workloadDraft): Event[] {
  const events: Event[] = []
  let head = null
  for (let i = 0; i < n; i++) {
    const e = nextEvent(head, draft(i))
    events.push(e)
    head = headOf(e)
  }
  return events
}
