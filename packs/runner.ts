/**
 * The run loop (DESIGN.md §3): a pack's deterministic code, a policy gate,
 * host tools and a hash-chained event log.
 *
 *   RunStarted → init(input) → reduce(Start) → effects → gate →
 *     ToolDenied | ToolCalled (durable before the tool runs) → ToolResult | ToolFailed →
 *     reduce(outcome) → … → output → RunCompleted   (or RunFailed {code})
 *
 * One interpreter serves three modes, so they cannot drift apart:
 *  - run: nothing recorded yet; every effect is gated and executed live.
 *  - resume: a prefix is recorded (a node died mid-run); the recorded
 *    outcomes are fed back, a tool whose `ToolCalled` has no result is run
 *    again only if it is idempotent, and the run continues live.
 *  - replay: everything is recorded; no tool runs, no event is written, and
 *    the first effect or outcome that differs from the record is reported
 *    with its seq (RL-3017).
 */
import { canonicalize, type JsonObject, type JsonValue } from '../protocol/canonical.ts'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import { deriveId, type Event, type EventDraft } from '../protocol/event.ts'
import { hashCanonical } from '../protocol/hash.ts'
import { createSandbox, type Sandbox } from './sandbox.ts'
import type { Tool } from './tools/index.ts'

export const RUN_AGGREGATE = 'run'

export interface RunPack {
  cid: string
  name: string
  entry: string
  capabilities: readonly string[]
  files: Record<string, string>
}

export interface RunBudget {
  fuel: number
  memory_bytes: number
  output_bytes: number
  tool_calls: number
  wall_ms: number
}

export interface RunPolicy {
  version: string
  granted: readonly string[]
}

/** Where a live run writes its events (an EventLog over the run's store). */
export interface RunSink {
  /** Appends the event built from `draft`; resolves once it is durable. */
  append (draft: EventDraft): Promise<Event>
  /**
   * Builds the run's first event now and writes it with the next `append`, in the same durable
   * write. Nothing a run does reaches the world before a later event is durable (a tool is only
   * called once its ToolCalled is), so a run whose process dies before then simply never
   * started. Optional: without it the first event is appended on its own.
   */
  hold?: (draft: EventDraft) => Event
}

export interface RunStart {
  pack: RunPack
  input: JsonValue
  budget: RunBudget
  policy: RunPolicy
  engineVersion: string
  /** Makes two runs of the same pack and input distinct logs (recorded, so replay never needs it). */
  nonce: string
}

export interface RunOutcome {
  status: 'completed' | 'failed' | 'cancelled'
  output?: JsonValue
  error?: { code: ErrorCode, message: string }
  fuel_used: number
  /** The run's events, recorded and new, in order. */
  events: Event[]
}

export interface Divergence {
  seq: number
  reason: string
  expected: JsonValue
  actual: JsonValue
}

/**
 * The event the pack sees for each step, as canonical JSON text: the pack sees the same keys in
 * the same order in a live run (a tool's own object) and in a replay (a value read from the log).
 */
type PackEvent = string
const START: PackEvent = '{"type":"Start"}'

interface Mode {
  kind: 'run' | 'resume' | 'replay'
  recorded: readonly Event[]
  sink?: RunSink
  tools?: Map<string, Tool>
  signal: AbortSignal
}

/** The run was cancelled (its signal aborted, or the record says so): it ends with RunCancelled. */
class Cancelled extends Error {
  readonly error: { code: ErrorCode, message: string }
  constructor (error: { code: ErrorCode, message: string }) {
    super(error.message)
    this.error = error
  }
}

/** What a cancellation is recorded as: the abort reason if it is a Reach error, else RL-4015. */
function cancellationOf (reason: unknown): { code: ErrorCode, message: string } {
  if (isReachError(reason)) return { code: reason.code, message: reason.message }
  return { code: 'RL-4015', message: reason instanceof Error ? reason.message : 'run cancelled' }
}

class DivergenceError extends Error {
  readonly divergence: Divergence
  constructor (divergence: Divergence) {
    super(divergence.reason)
    this.divergence = divergence
  }
}

function errorOf (err: unknown): { code: ErrorCode, message: string } {
  if (isReachError(err)) return { code: err.code, message: err.message }
  return { code: 'RL-3106', message: err instanceof Error ? err.message : String(err) }
}

/**
 * JSON equality (what equal canonical forms mean), without serialising:
 * replay compares every recorded effect, so this is its hot path.
 */
function same (a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!same(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) if (!Object.hasOwn(b, k) || !same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false
  return true
}

interface ToolRequest extends JsonObject {
  call_id: string
  tool: string
  args: JsonObject
}

/** What the pack asked for, made well-formed (a malformed effect names no tool, and the gate denies it). */
function requestOf (effect: JsonValue, seq: number): ToolRequest {
  const e = (effect !== null && typeof effect === 'object' && !Array.isArray(effect) ? effect : {}) as JsonObject
  const tool = typeof e.tool === 'string' ? e.tool : ''
  const args = (e.args !== null && typeof e.args === 'object' && !Array.isArray(e.args) ? e.args : {}) as JsonObject
  return { call_id: deriveId('call', seq), tool, args }
}

/** A recorded ToolCalled or ToolDenied asks for exactly this. */
function sameRequest (recorded: Event, request: ToolRequest): boolean {
  const p = recorded.payload as JsonObject
  return p.call_id === request.call_id && p.tool === request.tool && same(p.args, request.args)
}

const NOT_RECORDED = 0
const CALLED = 1

/** Drives one run in any mode. */
class Interpreter {
  readonly events: Event[] = []
  private cursor = 0
  private toolCalls = 0
  private readonly start: RunStart
  private readonly mode: Mode

  constructor (start: RunStart, mode: Mode) {
    this.start = start
    this.mode = mode
  }

  /** The next recorded event, if the record goes that far. */
  private peek (): Event | undefined {
    return this.mode.recorded[this.cursor]
  }

  /** Take the next recorded event, checking it is what this run would write. */
  private take (recorded: Event, draft: EventDraft, compare: (recorded: Event) => boolean): Event {
    if (recorded.type !== draft.type || !compare(recorded)) {
      throw new DivergenceError({
        seq: recorded.seq,
        reason: `replay diverged at seq ${recorded.seq}: the pack produced ${draft.type}, the record has ${recorded.type}`,
        expected: { type: recorded.type, payload: recorded.payload },
        actual: { type: draft.type, payload: draft.payload ?? null }
      })
    }
    this.cursor++
    this.events.push(recorded)
    return recorded
  }

  /** Take the next event: from the record (checking it is what this run would write), else append it live. */
  private async emit (draft: EventDraft, compare: (recorded: Event) => boolean): Promise<Event> {
    const recorded = this.peek()
    if (recorded !== undefined) return this.take(recorded, draft, compare)
    if (this.mode.kind === 'replay' || this.mode.sink === undefined) {
      throw new DivergenceError({
        seq: this.events.length,
        reason: `replay diverged at seq ${this.events.length}: the pack went on (${draft.type}) past the end of the record`,
        expected: null,
        actual: { type: draft.type, payload: draft.payload ?? null }
      })
    }
    const event = await this.mode.sink.append(draft)
    this.events.push(event)
    return event
  }

  async run (): Promise<RunOutcome> {
    const { pack, input, budget, policy, engineVersion, nonce } = this.start
    const started = { pack_cid: pack.cid, pack_name: pack.name, engine_version: engineVersion, policy_version: policy.version, input, input_hash: hashCanonical(input), budget: budget as unknown as JsonObject, nonce }
    const startDraft: EventDraft = { type: 'RunStarted', aggregate_id: RUN_AGGREGATE, payload: started }
    const hold = this.mode.kind === 'run' ? this.mode.sink?.hold : undefined
    if (hold !== undefined) this.events.push(hold(startDraft))
    else await this.emit(startDraft, (r) => same(r.payload, started))
    let sandbox: Sandbox | undefined
    try {
      sandbox = await createSandbox(pack.files, pack.entry, { fuel: budget.fuel, memoryBytes: budget.memory_bytes, outputBytes: budget.output_bytes, wallMs: budget.wall_ms })
      const outcome = await this.loop(sandbox)
      return outcome
    } catch (err) {
      if (err instanceof DivergenceError) throw err
      const fuel = sandbox?.fuelUsed ?? 0
      if (err instanceof Cancelled) return { status: 'cancelled', error: err.error, fuel_used: fuel, events: this.events }
      if (this.mode.signal.aborted && this.mode.kind !== 'replay') {
        // Aborted while loading the sandbox: the run still ends on the record.
        const error = cancellationOf(this.mode.signal.reason)
        await this.emit({ type: 'RunCancelled', aggregate_id: RUN_AGGREGATE, payload: { error, fuel_used: fuel } }, () => true)
        return { status: 'cancelled', error, fuel_used: fuel, events: this.events }
      }
      const error = errorOf(err)
      await this.emit({ type: 'RunFailed', aggregate_id: RUN_AGGREGATE, payload: { error, fuel_used: fuel } }, (r) => same((r.payload as JsonObject).error, error))
      return { status: 'failed', error, fuel_used: fuel, events: this.events }
    } finally {
      sandbox?.dispose()
    }
  }

  /** The run's sandbox, once made: tools are told how much fuel the run has left. */
  private sandbox: Sandbox | undefined

  private async loop (sandbox: Sandbox): Promise<RunOutcome> {
    this.sandbox = sandbox
    // The pack's state lives in the sandbox from init to the end: only events go in and only
    // effects and output come out (the host never needs the state itself).
    sandbox.begin(this.start.input)
    // FIFO by index: shift() is linear on a long queue (a step may request thousands of effects).
    const queue: PackEvent[] = [START]
    for (let next = 0; next < queue.length; next++) {
      await this.checkCancelled(sandbox)
      const step = sandbox.step(queue[next] as PackEvent)
      queue[next] = ''
      if (step.output !== undefined) {
        const output = step.output
        const payload = { output, output_hash: hashCanonical(output), fuel_used: sandbox.fuelUsed }
        await this.emit({ type: 'RunCompleted', aggregate_id: RUN_AGGREGATE, payload }, (r) => same(r.payload, payload))
        return { status: 'completed', output, fuel_used: sandbox.fuelUsed, events: this.events }
      }
      const effects = Array.isArray(step.effects) ? step.effects : []
      for (const effect of effects) {
        await this.checkCancelled(sandbox)
        const request = requestOf(effect, this.events.length)
        // Replay (and the recorded prefix of a resume) stays synchronous: no promise per effect.
        const recorded = this.fromRecord(request)
        queue.push(typeof recorded === 'string' ? recorded : await this.live(request, recorded === CALLED))
      }
    }
    throw new ReachError('RL-3020')
  }

  /**
   * Cancellation is checked before every step and every effect: live, when the signal has
   * aborted; in replay (and resume), where the record has RunCancelled, so a cancelled run
   * replays to the same point. Ends the run with RunCancelled.
   */
  private async checkCancelled (sandbox: Sandbox): Promise<void> {
    const recorded = this.peek()
    let error: { code: ErrorCode, message: string } | undefined
    if (recorded?.type === 'RunCancelled') error = (recorded.payload as JsonObject).error as { code: ErrorCode, message: string }
    else if (recorded === undefined && this.mode.signal.aborted) error = cancellationOf(this.mode.signal.reason)
    if (error === undefined) return
    await this.emit({ type: 'RunCancelled', aggregate_id: RUN_AGGREGATE, payload: { error, fuel_used: sandbox.fuelUsed } }, () => true)
    throw new Cancelled(error)
  }

  /**
   * An effect whose fate is recorded: its ToolDenied, or its ToolCalled and outcome, are taken
   * from the record (the gate's verdict is part of the record: a recorded run replays and resumes
   * with the decisions it was made with, whatever the policy now). NOT_RECORDED when the record
   * has ended; CALLED when it ends right after the ToolCalled (a node died while the tool ran).
   */
  private fromRecord (request: ToolRequest): PackEvent | typeof NOT_RECORDED | typeof CALLED {
    const recorded = this.peek()
    if (recorded === undefined) return NOT_RECORDED
    const matches = (r: Event): boolean => sameRequest(r, request)
    if (recorded.type === 'ToolDenied') {
      return this.packEvent(this.take(recorded, { type: 'ToolDenied', aggregate_id: RUN_AGGREGATE, payload: request }, matches), request.tool)
    }
    this.toolCalls++
    this.take(recorded, { type: 'ToolCalled', aggregate_id: RUN_AGGREGATE, payload: request }, matches)
    const outcome = this.peek()
    if (outcome === undefined) {
      if (this.mode.kind === 'replay') {
        throw new DivergenceError({ seq: this.events.length, reason: `replay diverged: the record ends before the outcome of ${request.call_id}`, expected: null, actual: request })
      }
      return CALLED
    }
    if (outcome.type !== 'ToolResult' && outcome.type !== 'ToolFailed') {
      throw new DivergenceError({ seq: outcome.seq, reason: `replay diverged at seq ${outcome.seq}: expected the outcome of ${request.call_id}, the record has ${outcome.type}`, expected: { type: outcome.type }, actual: { type: 'ToolResult or ToolFailed' } })
    }
    this.cursor++
    this.events.push(outcome)
    return this.packEvent(outcome, request.tool)
  }

  /** Gate an effect, record it, run the tool; `called`: its ToolCalled is already recorded. */
  private async live (request: ToolRequest, called: boolean): Promise<PackEvent> {
    const { tool, args, call_id: callId } = request
    if (!called) {
      const denied = this.gate(tool)
      if (denied !== undefined) {
        return this.packEvent(await this.emit({ type: 'ToolDenied', aggregate_id: RUN_AGGREGATE, payload: { ...request, error: denied } }, () => true), tool)
      }
    }
    const impl = this.mode.tools?.get(tool)
    if (called) {
      // Resuming at a ToolCalled whose result was never recorded: run it again only if that is harmless.
      if (impl !== undefined && !impl.idempotent) {
        const error = { code: 'RL-3018' as const, message: `${tool} was interrupted by a node restart and is not idempotent: not repeated` }
        return this.packEvent(await this.emit({ type: 'ToolFailed', aggregate_id: RUN_AGGREGATE, payload: { call_id: callId, error } }, () => true), tool)
      }
    } else {
      this.toolCalls++
      // Durable before the tool runs: a crash after this line never loses the fact that we called it.
      await this.emit({ type: 'ToolCalled', aggregate_id: RUN_AGGREGATE, payload: { ...request, idempotent: impl?.idempotent ?? false } }, () => true)
    }
    try {
      if (impl === undefined) throw new ReachError('RL-3018', { message: `no host tool provides ${tool}` })
      const fuelLeft = Math.max(0, this.start.budget.fuel - (this.sandbox?.fuelUsed ?? 0))
      const result = await impl.run(args, { pack: this.start.pack.name, signal: this.mode.signal, fuelLeft })
      return this.packEvent(await this.emit({ type: 'ToolResult', aggregate_id: RUN_AGGREGATE, payload: { call_id: callId, result } }, () => true), tool)
    } catch (err) {
      const error = errorOf(err)
      return this.packEvent(await this.emit({ type: 'ToolFailed', aggregate_id: RUN_AGGREGATE, payload: { call_id: callId, error } }, () => true), tool)
    }
  }

  /** The policy gate, in its fixed order: declared, granted, budget left. */
  private gate (tool: string): { code: ErrorCode, message: string } | undefined {
    const { pack, policy, budget } = this.start
    if (!pack.capabilities.includes(tool)) return { code: 'RL-3015', message: `the pack does not declare the capability ${JSON.stringify(tool)}` }
    if (!policy.granted.includes(tool)) return { code: 'RL-3009', message: `this node's policy does not grant ${tool}` }
    if (this.toolCalls >= budget.tool_calls) return { code: 'RL-3016', message: `the run's budget of ${budget.tool_calls} tool calls is spent` }
    return undefined
  }

  /** `{ type, call_id, tool, result | error }`, written in canonical key order without sorting (the hot path of replay). */
  private packEvent (event: Event, tool: string): PackEvent {
    const p = event.payload as JsonObject
    const body = event.type === 'ToolResult' ? `"result":${canonicalize(p.result ?? null)}` : `"error":${canonicalize(p.error ?? null)}`
    return `{"call_id":${canonicalize(p.call_id ?? null)},${body},"tool":${canonicalize(tool)},"type":${canonicalize(event.type)}}`
  }

}

/** Start a new run, writing every event to `sink` (an empty log). */
export async function executeRun (start: RunStart, sink: RunSink, tools: Map<string, Tool>, signal: AbortSignal = new AbortController().signal): Promise<RunOutcome> {
  return await new Interpreter(start, { kind: 'run', recorded: [], sink, tools, signal }).run()
}

/** Continue a run whose log ends before RunCompleted / RunFailed. */
export async function resumeRun (start: RunStart, recorded: readonly Event[], sink: RunSink, tools: Map<string, Tool>, signal: AbortSignal = new AbortController().signal): Promise<RunOutcome> {
  return await new Interpreter(start, { kind: 'resume', recorded, sink, tools, signal }).run()
}

export type ReplayVerdict = { ok: true, outcome: RunOutcome } | { ok: false, divergence: Divergence }

/** Re-execute the pack against a complete record; no tool runs and nothing is written. */
export async function replayRecordedRun (start: RunStart, recorded: readonly Event[]): Promise<ReplayVerdict> {
  try {
    const outcome = await new Interpreter(start, { kind: 'replay', recorded, signal: new AbortController().signal }).run()
    if (outcome.events.length !== recorded.length) {
      const extra = recorded[outcome.events.length] as Event
      return { ok: false, divergence: { seq: extra.seq, reason: `replay diverged at seq ${extra.seq}: the run ended but the record goes on with ${extra.type}`, expected: { type: extra.type }, actual: null } }
    }
    return { ok: true, outcome }
  } catch (err) {
    if (err instanceof DivergenceError) return { ok: false, divergence: err.divergence }
    throw err
  }
}

/**
 * What a run's RunStarted event says, to replay or resume it. `granted` is
 * the node's current policy: it only gates effects past the end of the
 * record (recorded decisions stand).
 */
export function startOf (recorded: readonly Event[], pack: RunPack, granted: readonly string[] = []): RunStart {
  const first = recorded[0]
  if (first === undefined || first.type !== 'RunStarted') throw new ReachError('RL-3017', { message: 'a run log must begin with RunStarted', seq: 0 })
  const p = first.payload as JsonObject
  if (p.pack_cid !== pack.cid) {
    throw new ReachError('RL-3017', { message: `the run was recorded with pack ${String(p.pack_cid)}, not ${pack.cid}`, seq: 0 })
  }
  return {
    pack,
    input: p.input as JsonValue,
    budget: p.budget as unknown as RunBudget,
    policy: { version: p.policy_version as string, granted },
    engineVersion: p.engine_version as string,
    nonce: p.nonce as string
  }
}
