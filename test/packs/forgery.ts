/**
 * The forger's kit for the forged-log corpora (forged-logs.test.ts, forged-logs-review.test.ts).
 *
 * The forger is the node that ran the pack: it holds its own key, so its logs are whole chains
 * with valid signatures. `forge` is its run loop: the pack runs for real in a sandbox and every
 * answer it gets is the forger's, so the log is self-consistent. `naive` is the negative
 * control: the replay a first implementation writes. It feeds the recorded outcomes to the pack
 * in order, trusts the recorded gate decisions and budget (runs the pack with its own limits),
 * matches each call by its tool name, takes the pack by the name the log gives, and compares the
 * output hash the log records with the pack's output.
 */
import { canonicalize, type JsonObject, type JsonValue } from '../../protocol/canonical.ts'
import { nextEvent, type Event } from '../../protocol/event.ts'
import { hashCanonical } from '../../protocol/hash.ts'
import type { Budget } from '../../packs/manifest.ts'
import type { RunPack } from '../../packs/run/index.ts'
import type { RunPolicy } from '../../packs/run/types.ts'
import { startedPayload } from '../../packs/run/started.ts'
import type { KvBackend } from '../../packs/tools/index.ts'
import { contractOf } from '../../packs/tools/contracts.ts'
import type { testEngine } from './helpers.ts'

type TestEngine = Awaited<ReturnType<typeof testEngine>>

export const BUDGET: Budget = { fuel: 100_000, memory_bytes: 16 << 20, output_bytes: 65536, tool_calls: 4, wall_ms: 5000 }

/**
 * Six effects: clock.now, random.bytes, http.fetch, kv.put, kv.get and a second clock.now (the
 * fifth call: past a budget of 4). The output lists what the pack saw, so every recorded answer
 * shows in it.
 */
export const LEDGER = `
export function init (input) {
  // Some work, so the run burns a few dozen ticks of fuel.
  let x = 0
  for (let i = 0; i < 300000; i++) x = (x + i) % 7
  return { input, seen: [], x }
}
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [
    { tool: 'clock.now', args: {} },
    { tool: 'random.bytes', args: { n: 8 } },
    { tool: 'http.fetch', args: { url: 'http://example.test/' } },
    { tool: 'kv.put', args: { key: 'k', value: s.input } },
    { tool: 'kv.get', args: { key: 'k' } },
    { tool: 'clock.now', args: {} }
  ] }
  const seen = [...s.seen, { type: e.type, tool: e.tool, result: e.result === undefined ? null : e.result, code: e.error ? e.error.code : null }]
  if (seen.length === 6) return { state: s, output: seen }
  return { state: { ...s, seen } }
}`

/** One delegation; its answer is the output. */
export const DELEGATING = `
export function init () { return {} }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [{ tool: 'reach.delegate', args: { pack: 'bafyexamplechild', input: 1 } }] }
  return { state: s, output: { child: e.result === undefined ? null : e.result.output, status: e.result === undefined ? e.error.code : e.result.status } }
}`

export const pack = (name: string, source: string, capabilities: string[], cid: string): RunPack =>
  ({ cid, name, entry: 'index.js', capabilities, files: Object.freeze({ 'index.js': source }) })

export function memoryKv (): KvBackend {
  const m = new Map<string, JsonValue>()
  return { get: async (ns, k) => m.get(`${ns}/${k}`), put: async (ns, k, v) => { m.set(`${ns}/${k}`, v) } }
}

/** The text the run loop hands the pack for an outcome (canonical key order). */
function packEvent (type: string, callId: string, tool: string, body: { result?: JsonValue, error?: JsonValue }): string {
  return canonicalize({ type, call_id: callId, tool, ...body } as JsonObject)
}

export type Decision =
  | { deny: { code: string, message: string } }
  | { result: JsonValue }
  | { error: { code: string, message: string } }

type Draft = { type: string, aggregate_id: string, payload: JsonValue, metadata?: JsonObject }

export interface ForgeOptions {
  input: JsonValue
  budget: Budget
  policy: RunPolicy
  /** The RunStarted payload, changed as the forger likes. */
  started?: (p: JsonObject) => JsonObject
  /** What the forger records for each effect (index counts effects from 0). */
  decide: (request: { call_id: string, tool: string, args: JsonObject }, index: number, fuelUsed: number) => Decision
  /** Edit the end event's payload. */
  end?: (p: JsonObject) => JsonObject
  /** Edit any event's fields last (before chaining). */
  edit?: (draft: Draft, seq: number) => void
}

/** The forger's run loop (see the top of this file); the events come out properly chained. */
export async function forge (engine: TestEngine, p: RunPack, o: ForgeOptions): Promise<Event[]> {
  const { budget } = o
  const drafts: Draft[] = []
  const add = (type: string, payload: JsonValue): void => { drafts.push({ type, aggregate_id: 'run', payload }) }
  let started = startedPayload({ pack: p, input: o.input, budget, policy: o.policy, nonce: 'f'.repeat(32) }, engine)
  if (o.started !== undefined) started = o.started(started)
  add('RunStarted', started)
  const sandbox = await engine.sandboxes.create(p.files, p.entry, { fuel: budget.fuel, memoryBytes: budget.memory_bytes, outputBytes: budget.output_bytes, wallMs: budget.wall_ms })
  try {
    sandbox.begin(o.input)
    const queue = ['{"type":"Start"}']
    let effectIndex = 0
    for (let next = 0; next < queue.length; next++) {
      const step = sandbox.step(queue[next] as string)
      if (step.output !== undefined) {
        let payload: JsonObject = { output: step.output, output_hash: hashCanonical(step.output), fuel_used: sandbox.fuelUsed }
        if (o.end !== undefined) payload = o.end(payload)
        add('RunCompleted', payload)
        break
      }
      for (const effect of (step.effects ?? []) as JsonObject[]) {
        const request = { call_id: `call-${drafts.length}`, tool: effect.tool as string, args: (effect.args ?? {}) as JsonObject }
        const d = o.decide(request, effectIndex++, sandbox.fuelUsed)
        if ('deny' in d) {
          add('ToolDenied', { ...request, error: d.deny })
          queue.push(packEvent('ToolDenied', request.call_id, request.tool, { error: d.deny }))
          continue
        }
        add('ToolCalled', { ...request, idempotent: contractOf(request.tool)?.idempotent ?? false })
        if ('result' in d) {
          add('ToolResult', { call_id: request.call_id, result: d.result })
          queue.push(packEvent('ToolResult', request.call_id, request.tool, { result: d.result }))
        } else {
          add('ToolFailed', { call_id: request.call_id, error: d.error })
          queue.push(packEvent('ToolFailed', request.call_id, request.tool, { error: d.error }))
        }
      }
    }
  } finally {
    sandbox.dispose()
  }
  drafts.forEach((d, seq) => o.edit?.(d, seq))
  const events: Event[] = []
  for (const d of drafts) events.push(nextEvent(events.at(-1) ?? null, d))
  return events
}

/** The naive replay (see the top of this file): true when it accepts the log. */
export async function naive (engine: TestEngine, events: Event[], packsByName: Map<string, RunPack>): Promise<boolean> {
  const started = events[0]?.payload as JsonObject
  const p = packsByName.get(started.pack_name as string)
  if (p === undefined) return false
  // Its own limits: the recorded budget is taken as written, never applied.
  const sandbox = await engine.sandboxes.create(p.files, p.entry)
  try {
    sandbox.begin(started.input as JsonValue)
    const queue = ['{"type":"Start"}']
    let at = 1
    for (let next = 0; next < queue.length; next++) {
      const step = sandbox.step(queue[next] as string)
      if (step.output !== undefined) {
        const end = events[at]
        return end?.type === 'RunCompleted' && (end.payload as JsonObject).output_hash === hashCanonical(step.output) && at === events.length - 1
      }
      for (const effect of (step.effects ?? []) as JsonObject[]) {
        const recorded = events[at]
        if (recorded === undefined) return false
        const p = recorded.payload as JsonObject
        if (p.tool !== effect.tool) return false
        if (recorded.type === 'ToolDenied') {
          queue.push(packEvent('ToolDenied', p.call_id as string, p.tool as string, { error: p.error as JsonValue }))
          at++
          continue
        }
        const outcome = events[at + 1]
        if (outcome === undefined) return false
        const o = outcome.payload as JsonObject
        queue.push(packEvent(outcome.type, o.call_id as string, p.tool as string, outcome.type === 'ToolResult' ? { result: o.result as JsonValue } : { error: o.error as JsonValue }))
        at += 2
      }
    }
    return false
  } catch {
    return false
  } finally {
    sandbox.dispose()
  }
}
