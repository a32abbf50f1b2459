/**
 * The built-in aggregates reducer: agents, tasks and teams.
 *
 * Events are facts already in the log, so the reducer is total: it never
 * throws and never consults anything but its arguments. An event about an
 * aggregate that does not exist yet creates it (the log is the authority, not
 * the reducer), and an unknown event type changes nothing but `version`.
 * Updates are copy-on-write so earlier states handed out stay untouched.
 *
 * Changing what an existing event type does changes every replayed state
 * hash: add a new event type (or a versioned reducer) instead.
 */
import type { JsonObject, JsonValue } from './canonical.ts'
import type { Event } from './event.ts'
import type { State } from './state.ts'

export const AGGREGATES_REDUCER_VERSION = 1

/** Event types the built-in reducer understands, by aggregate kind. */
export const BUILTIN_EVENT_TYPES = {
  agents: ['AgentCreated', 'AgentUpdated', 'AgentRetired'],
  tasks: ['TaskCreated', 'TaskAssigned', 'TaskCompleted', 'TaskFailed'],
  teams: ['TeamCreated', 'MemberAdded', 'MemberRemoved']
} as const

function fields (payload: JsonValue): JsonObject {
  return payload !== null && typeof payload === 'object' && !Array.isArray(payload) ? payload : {}
}

function str (value: JsonValue | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined
}

function put (state: State, kind: string, id: string, record: JsonObject): State {
  const records = state.aggregates[kind] ?? {}
  return {
    version: state.version + 1,
    aggregates: { ...state.aggregates, [kind]: { ...records, [id]: record } }
  }
}

function get (state: State, kind: string, id: string): JsonObject | undefined {
  return state.aggregates[kind]?.[id]
}

function withMembers (team: JsonObject, change: (members: string[]) => string[]): JsonObject {
  const members = Array.isArray(team.members) ? team.members.filter((m): m is string => typeof m === 'string') : []
  return { ...team, members: change(members) }
}

export function aggregatesReducer (state: State, event: Event): State {
  const id = event.aggregate_id
  const p = fields(event.payload)
  const at = event.timestamp
  switch (event.type) {
    case 'AgentCreated':
      return put(state, 'agents', id, { ...p, id, status: 'active', created_at: at, updated_at: at })
    case 'AgentUpdated':
      return put(state, 'agents', id, { ...(get(state, 'agents', id) ?? { id, status: 'active', created_at: at }), ...p, id, updated_at: at })
    case 'AgentRetired':
      return put(state, 'agents', id, { ...(get(state, 'agents', id) ?? { id, created_at: at }), status: 'retired', updated_at: at })
    case 'TaskCreated':
      return put(state, 'tasks', id, { ...p, id, status: 'open', created_at: at, updated_at: at })
    case 'TaskAssigned': {
      const task = get(state, 'tasks', id) ?? { id, created_at: at }
      return put(state, 'tasks', id, { ...task, assignee: str(p.agent_id) ?? null, status: 'assigned', updated_at: at })
    }
    case 'TaskCompleted': {
      const task = get(state, 'tasks', id) ?? { id, created_at: at }
      return put(state, 'tasks', id, { ...task, status: 'completed', result: p.result ?? null, updated_at: at })
    }
    case 'TaskFailed': {
      const task = get(state, 'tasks', id) ?? { id, created_at: at }
      return put(state, 'tasks', id, { ...task, status: 'failed', error: p.error ?? null, updated_at: at })
    }
    case 'TeamCreated':
      return put(state, 'teams', id, { ...p, id, members: [], created_at: at })
    case 'MemberAdded': {
      const agent = str(p.agent_id)
      const team = get(state, 'teams', id) ?? { id, members: [], created_at: at }
      if (agent === undefined) return { ...state, version: state.version + 1 }
      return put(state, 'teams', id, withMembers(team, (m) => m.includes(agent) ? m : [...m, agent].sort()))
    }
    case 'MemberRemoved': {
      const agent = str(p.agent_id)
      const team = get(state, 'teams', id)
      if (agent === undefined || team === undefined) return { ...state, version: state.version + 1 }
      return put(state, 'teams', id, withMembers(team, (m) => m.filter((x) => x !== agent)))
    }
    default:
      return { ...state, version: state.version + 1 }
  }
}
