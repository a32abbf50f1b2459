/**
 * The run loop (DESIGN.md §3, SPEC §8): one interpreter for run, resume and replay, so the three
 * cannot disagree about what a pack did.
 *
 *  - run: nothing is recorded; every effect is gated and executed live.
 *  - resume: a prefix is recorded (a node died mid-run); it is read back as a replay reads it,
 *    a tool whose `ToolCalled` has no outcome runs again only if it is idempotent, and the run
 *    goes on live.
 *  - replay: everything is recorded; no tool runs and nothing is written.
 *
 * Reading a record is re-deriving it: every recorded event must be the event this run loop
 * writes at that point, member for member, except what only the world could say (the input,
 * budget, nonce and policy version in RunStarted, a tool's result or failure, a cancellation and
 * its reason, a denial by the recording node's policy). Those are taken from the record once
 * their form is right and the engine's own rules allow them there: the gate (declared, not
 * refused by policy earlier, within the tool-call budget), the tool's contract, the fuel grant
 * of a delegation. Fuel needs no rule of its own: the sandbox runs out where the run did.
 */
import { canonicalize, type JsonObject, type JsonValue } from '../../protocol/canonical.ts'
import { diffValues } from '../../protocol/diff.ts'
import { ReachError, isErrorCode, isReachError, type ErrorCode } from '../../protocol/errors.ts'
import { deriveId, type Event, type EventDraft } from '../../protocol/event.ts'
import { hashCanonical } from '../../protocol/hash.ts'
import type { Sandbox } from '../sandbox.ts'
import { contractOf, type CallFacts } from '../tools/contracts.ts'
import { delegateFuel } from '../tools/delegate-fuel.ts'
import type { Tool } from '../tools/index.ts'
import { gate, replayedCallProblem, replayedDenial } from './gate.ts'
import { RecordReadError, type RecordCursor } from './record.ts'
import { startedPayload, type LineageFacts } from './started.ts'
import { RUN_AGGREGATE, type Divergence, type Engine, type ReplayOutcome, type RunOutcome, type RunSink, type RunStart } from './types.ts'

export interface Mode {
  kind: 'run' | 'resume' | 'replay'
  record: RecordCursor
  sink?: RunSink
  tools?: Map<string, Tool>
  signal: AbortSignal
  /**
   * Shared with the thread that cancels (threads.ts): [0] is set when `signal` aborts, [1] armed
   * here during each live step, so a step burning CPU is cut (Sandbox.watch) and the run ends
   * with RunCancelled as if the cancel had come just before that step.
   */
  cancel?: Int32Array
}

/**
 * The event the pack sees for each step, as canonical JSON text: the pack sees the same keys in
 * the same order in a live run (a tool's own object) and in a replay (a value read from the log).
 */
type PackEvent = string
const START: PackEvent = '{"type":"Start"}'
/** Events one effect may take from the record (its call and outcome), plus the run's end. */
const LOOKAHEAD = 4

/** The run was cancelled (its signal aborted, or the record says so): it ends with RunCancelled. */
class Cancelled extends Error {
  readonly error: { code: ErrorCode, message: string }
  /** The fuel its RunCancelled records. */
  readonly fuel: number
  constructor (error: { code: ErrorCode, message: string }, fuel: number) {
    super(error.message)
    this.error = error
    this.fuel = fuel
  }
}

/** The sandbox stopped a step because its run was cancelled (Sandbox.watch). */
function interruptedByCancel (err: unknown): boolean {
  return isReachError(err, 'RL-4015') && (err.details as { interrupted?: unknown } | undefined)?.interrupted === 'cancel'
}

export class DivergenceError extends Error {
  readonly divergence: Divergence
  constructor (divergence: Divergence) {
    super(divergence.reason)
    this.divergence = divergence
  }
}

/** What a cancellation is recorded as: the abort reason if it is a Reach error, else RL-4015. */
function cancellationOf (reason: unknown): { code: ErrorCode, message: string } {
  if (isReachError(reason)) return { code: reason.code, message: reason.message }
  return { code: 'RL-4015', message: reason instanceof Error ? reason.message : 'run cancelled' }
}

/** A replay that cannot say either way (RL-3105): thrown, never a verdict. */
function inconclusive (why: string): ReachError {
  return new ReachError('RL-3105', { message: `replay inconclusive: ${why}; a wall-clock limit is not deterministic, so the run cannot be verified by replay` })
}

/** What a recorded lineage tells the run loop (the record's form was checked in started.ts). */
function lineageFactsOf (l: JsonObject): LineageFacts {
  const hops = (Array.isArray(l.ancestry) ? l.ancestry : []) as JsonObject[]
  return { depth: typeof l.depth === 'number' ? l.depth : hops.length, peers: new Set(hops.flatMap((h) => [String(h.from), String(h.to)])) }
}

function errorOf (err: unknown): { code: ErrorCode, message: string } {
  if (isReachError(err)) return { code: err.code, message: err.message }
  return { code: 'RL-3106', message: err instanceof Error ? err.message : String(err) }
}


/** A recorded `{code, message}` (an oracle's error: a tool's failure, a cancellation's reason), if that is its form. */
function errorValue (v: unknown): { code: ErrorCode, message: string } | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined
  const e = v as JsonObject
  if (Object.keys(e).length !== 2 || !isErrorCode(e.code) || typeof e.message !== 'string') return undefined
  return { code: e.code, message: e.message }
}

/**
 * JSON equality (what equal canonical forms mean), without serialising:
 * replay compares every recorded event, so this is its hot path.
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

/** A plain object with exactly `n` own members (the caller then checks which, by name). */
function hasMembers (v: JsonObject | null | undefined, n: number): boolean {
  if (v === null || v === undefined || typeof v !== 'object' || Array.isArray(v)) return false
  let count = 0
  for (const k in v) if (Object.hasOwn(v, k)) count++
  return count === n
}

function isEmptyObject (v: unknown): boolean {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false
  for (const k in v) if (Object.hasOwn(v, k)) return false
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

/** A call whose ToolCalled the record ends with: a node died while the tool ran. */
interface Interrupted {
  called: true
  grant?: ReturnType<typeof delegateFuel>
}

function idempotent (tool: string): boolean {
  return contractOf(tool)?.idempotent ?? false
}

/** Drives one run in any mode. */
export class Interpreter {
  /** The run's events (run and resume; a replay keeps none). */
  readonly events: Event[] = []
  private count = 0
  private last: Event | undefined
  private toolCalls = 0
  /** Tools the run's policy is shown to grant (called, or denied for the budget), and tools the record said it does not. */
  private readonly called = new Set<string>()
  private readonly refused = new Set<string>()
  /** Fuel `reach.delegate` may still hand out (delegate-fuel.ts). */
  private delegateLeft: number
  private sandbox: Sandbox | undefined
  /** Delegated results taken from the record (ReplayOutcome.delegated). */
  private readonly delegated: ReplayOutcome['delegated'] = []
  private readonly start: RunStart
  private readonly engine: Engine
  private readonly mode: Mode
  /** The record named its engine build (false: a run from before builds were recorded, held to the rules of then). */
  private readonly recordedBuild: boolean
  private readonly lineage: LineageFacts | undefined
  private readonly recorder: string | undefined

  constructor (start: RunStart, engine: Engine, mode: Mode, options: { strict?: boolean, lineage?: LineageFacts, recorder?: string } = {}) {
    this.start = start
    this.engine = engine
    this.mode = mode
    this.recordedBuild = options.strict ?? true
    this.lineage = options.lineage ?? (start.lineage === undefined ? undefined : lineageFactsOf(start.lineage))
    this.recorder = options.recorder
    this.delegateLeft = start.budget.fuel
  }

  private get keeps (): boolean {
    return this.mode.kind !== 'replay'
  }

  private push (event: Event): Event {
    if (this.keeps) this.events.push(event)
    this.count++
    this.last = event
    return event
  }

  /** Whether the record must be read further before the next effect or step (a stream only). */
  private get low (): boolean {
    return this.mode.record.needs(LOOKAHEAD)
  }

  /** Read the record further; its failure is the record's (RecordReadError), never the pack's. */
  private async fill (): Promise<void> {
    try {
      await this.mode.record.fill(LOOKAHEAD)
    } catch (err) {
      throw new RecordReadError(err)
    }
  }

  private diverge (seq: number, code: ErrorCode, reason: string, recorded: JsonValue, replayed: JsonValue): never {
    const at = this.mode.record.peek()
    if (at?.type === 'RunFailed' && ((at.payload as JsonObject | null)?.error as JsonObject | undefined)?.code === 'RL-3105') {
      // The run was cut by its wall clock, a backstop no replay repeats: not verifiable, and no sign of forgery.
      throw inconclusive(`the record ends at seq ${at.seq} with the run cut by its wall clock`)
    }
    throw new DivergenceError({ seq, code, reason: `replay diverged at seq ${seq}: ${reason}`, recorded, replayed })
  }

  /**
   * Take the next recorded event, which must be exactly `type` with `payload` (and the fields the
   * run loop gives every event: aggregate "run", no metadata, timestamp = seq). `failure`: the
   * replayed pack failed here with this code (named when the record went on instead).
   */
  private take (recorded: Event, type: string, payload: JsonValue, failure?: ErrorCode): Event {
    this.check(recorded, type, same(recorded.payload, payload), () => payload, failure)
    return this.accept(recorded)
  }

  /**
   * The same check with the payload compared by the caller (`equal`), and the expected payload
   * made only to say how it differs: the replay's hot path allocates nothing per event.
   */
  private check (recorded: Event, type: string, equal: boolean, payload: () => JsonValue, failure?: ErrorCode): void {
    if (recorded.type !== type) {
      const code = failure !== undefined && failure.startsWith('RL-31') ? failure : 'RL-3017'
      const p = payload()
      const why = failure !== undefined ? `the pack fails here (${failure}: ${String((p as JsonObject)?.error !== undefined ? ((p as JsonObject).error as JsonObject).message : '')})` : `the pack produced ${type}`
      this.diverge(recorded.seq, code, `${why}, the record has ${recorded.type}`, { type: recorded.type, payload: recorded.payload }, { type, payload: p })
    }
    if (recorded.aggregate_id !== RUN_AGGREGATE || recorded.timestamp !== recorded.seq || !isEmptyObject(recorded.metadata)) {
      this.diverge(recorded.seq, 'RL-3017', `${type} is not written as the run loop writes events (aggregate "run", no metadata, timestamp = seq)`,
        { aggregate_id: recorded.aggregate_id, metadata: recorded.metadata, timestamp: recorded.timestamp }, { aggregate_id: RUN_AGGREGATE, metadata: {}, timestamp: recorded.seq })
    }
    if (!equal) {
      const p = payload()
      const d = diffValues(p, recorded.payload, 1)[0]
      const at = d === undefined || d.path === '' ? 'its payload' : d.path
      const what = d === undefined ? '' : d.op === 'added' ? `: the record adds ${JSON.stringify(d.after)}` : d.op === 'removed' ? `: the record lacks ${JSON.stringify(d.before)}` : `: the run loop writes ${JSON.stringify(d.before)}, the record has ${JSON.stringify(d.after)}`
      this.diverge(recorded.seq, failure !== undefined && failure.startsWith('RL-31') ? failure : 'RL-3017', `${type} differs at ${at}${what}`, { type, payload: recorded.payload }, { type, payload: p })
    }
  }

  private accept (recorded: Event): Event {
    this.mode.record.advance()
    return this.push(recorded)
  }

  /** Take the next event from the record (checking it), else append it live. */
  private async emit (type: string, payload: JsonValue, failure?: ErrorCode): Promise<Event> {
    const recorded = this.mode.record.peek()
    if (recorded !== undefined) return this.take(recorded, type, payload, failure)
    if (this.mode.kind === 'replay' || this.mode.sink === undefined) {
      this.diverge(this.count, failure !== undefined && failure.startsWith('RL-31') ? failure : 'RL-3017', `the record ends; the pack goes on with ${type}`, null, { type, payload })
    }
    return this.push(await this.mode.sink.append({ type, aggregate_id: RUN_AGGREGATE, payload } satisfies EventDraft))
  }

  async run (): Promise<RunOutcome> {
    const started = startedPayload(this.start, this.engine)
    if (!this.recordedBuild) delete started.engine_build
    const hold = this.mode.kind === 'run' ? this.mode.sink?.hold : undefined
    if (this.low) await this.fill()
    if (hold !== undefined) this.push(hold({ type: 'RunStarted', aggregate_id: RUN_AGGREGATE, payload: started }))
    else await this.emit('RunStarted', started)
    const { pack, budget } = this.start
    let sandbox: Sandbox | undefined
    try {
      sandbox = await this.engine.sandboxes.create(pack.files, pack.entry, { fuel: budget.fuel, memoryBytes: budget.memory_bytes, outputBytes: budget.output_bytes, wallMs: budget.wall_ms })
      if (this.mode.cancel !== undefined) sandbox.watch?.(this.mode.cancel)
      return await this.loop(sandbox)
    } catch (err) {
      if (err instanceof DivergenceError || err instanceof RecordReadError) throw err
      const fuel = sandbox?.fuelUsed ?? 0
      if (err instanceof Cancelled) return { status: 'cancelled', error: err.error, fuel_used: err.fuel, events: this.events }
      // Deterministic (the same pack fails the same way), even when the run was also cancelled;
      // but not a replay cut by the wall clock here, which says nothing about the record.
      const error = errorOf(err)
      if (this.mode.kind === 'replay' && error.code === 'RL-3105') throw inconclusive(`the replay ran past its wall clock (${this.start.budget.wall_ms} ms) here`)
      if (this.low) await this.fill()
      await this.emit('RunFailed', { error, fuel_used: fuel }, error.code)
      return { status: 'failed', error, fuel_used: fuel, events: this.events }
    } finally {
      sandbox?.dispose()
    }
  }

  private async loop (sandbox: Sandbox): Promise<RunOutcome> {
    this.sandbox = sandbox
    // The pack's state lives in the sandbox from init to the end: only events go in and only
    // effects and output come out (the host never needs the state itself).
    sandbox.begin(this.start.input)
    // FIFO by index: shift() is linear on a long queue (a step may request thousands of effects).
    const queue: PackEvent[] = [START]
    for (let next = 0; next < queue.length; next++) {
      // Replay stays synchronous on its hot path: an await only to read a stream further, or to end.
      if (this.low) await this.fill()
      if (this.cancelling()) await this.cancel(sandbox)
      const step = this.step(sandbox, queue[next] as PackEvent) ?? await this.cancelled()
      queue[next] = ''
      if (step.output !== undefined) {
        const output = step.output
        const payload = { output, output_hash: hashCanonical(output), fuel_used: sandbox.fuelUsed }
        await this.emit('RunCompleted', payload)
        return { status: 'completed', output, fuel_used: sandbox.fuelUsed, events: this.events }
      }
      const effects = Array.isArray(step.effects) ? step.effects : []
      for (const effect of effects) {
        if (this.low) await this.fill()
        if (this.cancelling()) await this.cancel(sandbox)
        const request = requestOf(effect, this.count)
        // Replay (and the recorded prefix of a resume) stays synchronous: no promise per effect.
        const recorded = this.fromRecord(request)
        queue.push(typeof recorded === 'string' ? recorded : await this.live(request, recorded))
      }
    }
    throw new ReachError('RL-3020')
  }

  /** One step; undefined when a cancel cut it (a live step only: the record has ended). */
  private step (sandbox: Sandbox, event: PackEvent): ReturnType<Sandbox['step']> | undefined {
    const cancel = this.mode.cancel
    if (cancel === undefined) return sandbox.step(event)
    this.stepFuel = sandbox.fuelUsed
    Atomics.store(cancel, 1, this.mode.record.peek() === undefined ? 1 : 0)
    try {
      return sandbox.step(event)
    } catch (err) {
      if (interruptedByCancel(err)) return undefined
      throw err
    } finally {
      Atomics.store(cancel, 1, 0)
    }
  }

  /** The fuel before the step in progress: what a cut step's RunCancelled records. */
  private stepFuel = 0

  /**
   * A cancel cut a step: the run ends as a live run ends that sees the cancel just before that
   * step (`cancel` below), with the fuel of then, so its replay stops at the same point.
   */
  private async cancelled (): Promise<never> {
    const signal = this.mode.signal
    // The flag can be seen before the signal here aborts (it comes in a message, once this
    // thread is free again): wait for it, for its reason.
    if (!signal.aborted) await new Promise((resolve) => { signal.addEventListener('abort', resolve, { once: true }) })
    const error = cancellationOf(signal.reason)
    await this.emit('RunCancelled', { error, fuel_used: this.stepFuel })
    throw new Cancelled(error, this.stepFuel)
  }

  /**
   * Cancellation is checked before every step and every effect: live, when the signal has
   * aborted; in replay (and resume), where the record has RunCancelled, so a cancelled run
   * replays to the same point.
   */
  private cancelling (): boolean {
    const recorded = this.mode.record.peek()
    return recorded === undefined ? this.mode.signal.aborted : recorded.type === 'RunCancelled'
  }

  /** End the run with RunCancelled (recorded or live). */
  private async cancel (sandbox: Sandbox): Promise<never> {
    const recorded = this.mode.record.peek()
    let error: { code: ErrorCode, message: string } | undefined
    if (recorded !== undefined) {
      error = errorValue((recorded.payload as JsonObject | null)?.error)
      if (error === undefined) this.diverge(recorded.seq, 'RL-3017', 'RunCancelled error is not {code, message}', { type: recorded.type, payload: recorded.payload }, null)
    } else {
      error = cancellationOf(this.mode.signal.reason)
    }
    await this.emit('RunCancelled', { error, fuel_used: sandbox.fuelUsed })
    throw new Cancelled(error, sandbox.fuelUsed)
  }

  /**
   * An effect whose fate is recorded: its ToolDenied, or its ToolCalled and outcome, are checked
   * and taken from the record. Undefined when the record has ended (the call goes live);
   * `called` when it ends right after the ToolCalled (a node died while the tool ran).
   */
  private fromRecord (request: ToolRequest): PackEvent | Interrupted | undefined {
    const recorded = this.mode.record.peek()
    if (recorded === undefined) {
      if (this.mode.kind === 'replay') this.diverge(this.count, 'RL-3017', `the record ends; the pack goes on asking for ${JSON.stringify(request.tool)}`, null, { type: 'ToolCalled or ToolDenied', payload: request })
      return undefined
    }
    const { tool, args, call_id: callId } = request
    const declared = this.start.pack.capabilities
    const max = this.start.budget.tool_calls
    const seen = (): JsonValue => ({ type: recorded.type, payload: recorded.payload })
    if (recorded.type === 'ToolDenied') {
      const code = ((recorded.payload as JsonObject | null)?.error as JsonObject | undefined)?.code
      const denial = replayedDenial(tool, code, declared, this.called, this.refused, this.toolCalls, max)
      if (denial === undefined) this.diverge(recorded.seq, 'RL-3017', `the record denies ${JSON.stringify(tool)}, which the gate lets through (declared, within the budget of ${max} calls)`, seen(), { type: 'ToolCalled', payload: request })
      if (denial.code === 'RL-3009') this.refused.add(tool)
      // Denied for the budget, so the policy granted it (the gate checks the grant first).
      if (denial.code === 'RL-3016') this.called.add(tool)
      return this.packEvent(this.take(recorded, 'ToolDenied', { ...request, error: { ...denial } }), tool)
    }
    if (recorded.type !== 'ToolCalled') this.diverge(recorded.seq, 'RL-3017', `the pack asks for ${JSON.stringify(tool)} (${callId}), the record has ${recorded.type}`, seen(), { type: 'ToolCalled or ToolDenied', payload: request })
    const problem = replayedCallProblem(tool, declared, this.refused, this.toolCalls, max)
    if (problem !== undefined) this.diverge(recorded.seq, problem.code, problem.message, seen(), { type: 'ToolDenied', payload: request })
    const idem = idempotent(tool)
    const called = recorded.payload as JsonObject
    this.check(recorded, 'ToolCalled', hasMembers(called, 4) && called.call_id === callId && called.tool === tool && called.idempotent === idem && same(called.args, args), () => ({ ...request, idempotent: idem }))
    this.accept(recorded)
    this.toolCalls++
    this.called.add(tool)
    const grant = this.grant(tool, args)
    const outcome = this.mode.record.peek()
    if (outcome === undefined) {
      if (this.mode.kind === 'replay') this.diverge(this.count, 'RL-3017', `the record ends before the outcome of ${callId}`, null, request)
      return { called: true, ...(grant === undefined ? {} : { grant }) }
    }
    const p = (outcome.payload ?? {}) as JsonObject
    const got = (): JsonValue => ({ type: outcome.type, payload: outcome.payload })
    // The run loop refuses the call itself: that failure is the loop's, not the world's.
    if (grant !== undefined && !grant.ok) return this.packEvent(this.take(outcome, 'ToolFailed', { call_id: callId, error: grant.error }), tool)
    const contract = contractOf(tool)
    // Arguments the tool refuses: it can only have failed, with exactly its own refusal.
    const refused = contract === undefined ? undefined : this.contractSays(outcome.seq, () => contract.argsProblem(args))
    if (refused !== undefined) return this.packEvent(this.take(outcome, 'ToolFailed', { call_id: callId, error: { code: 'RL-3018', message: refused } }), tool)
    if (outcome.type === 'ToolResult') {
      if (!Object.hasOwn(p, 'result')) this.diverge(outcome.seq, 'RL-3017', `ToolResult of ${callId} has no result`, got(), null)
      const problem = contract === undefined ? undefined : this.contractSays(outcome.seq, () => contract.resultProblem(args, p.result as JsonValue, this.facts(grant)))
      if (problem !== undefined) this.diverge(outcome.seq, 'RL-3017', `the recorded result of ${callId} is not an answer ${tool} gives: ${problem}`, got(), null)
      this.check(outcome, 'ToolResult', hasMembers(p, 2) && p.call_id === callId, () => ({ call_id: callId, result: p.result as JsonValue }))
      if (tool === 'reach.delegate') {
        // Its contract held these to a peer id, a run id and a fingerprint.
        const r = p.result as { peer: string, run_id: string, fingerprint: string }
        this.delegated.push({ seq: outcome.seq, peer: r.peer, run_id: r.run_id, fingerprint: r.fingerprint })
      }
      return this.packEvent(this.accept(outcome), tool)
    }
    if (outcome.type === 'ToolFailed') {
      const error = errorValue(p.error)
      if (error === undefined) this.diverge(outcome.seq, 'RL-3017', `ToolFailed of ${callId} has no {code, message} error`, got(), null)
      return this.packEvent(this.take(outcome, 'ToolFailed', { call_id: callId, error }), tool)
    }
    return this.diverge(outcome.seq, 'RL-3017', `expected the outcome of ${callId}, the record has ${outcome.type}`, got(), { type: 'ToolResult or ToolFailed', payload: { call_id: callId } })
  }

  /**
   * A contract's verdict on recorded values. A value that breaks the check itself (one that
   * throws when read) is a record no engine wrote: a divergence, never the pack's failure.
   */
  private contractSays (seq: number, verdict: () => string | undefined): string | undefined {
    try {
      return verdict()
    } catch (err) {
      return this.diverge(seq, 'RL-3017', `the record holds a value no tool gives (${err instanceof Error ? err.message : 'unreadable'})`, null, null)
    }
  }

  /** What a tool's contract is told about a call besides its arguments. */
  private facts (grant: ReturnType<typeof delegateFuel> | undefined): CallFacts {
    return {
      ...(grant?.ok === true ? { fuelGranted: grant.fuel } : {}),
      strict: this.recordedBuild,
      ...(this.lineage === undefined ? {} : { lineage: this.lineage }),
      ...(this.recorder === undefined ? {} : { recorder: this.recorder })
    }
  }

  /** The fuel a reach.delegate call hands its sub-run, taken from what the run has left (delegate-fuel.ts). */
  private grant (tool: string, args: JsonObject): ReturnType<typeof delegateFuel> | undefined {
    if (tool !== 'reach.delegate') return undefined
    const g = delegateFuel(args, this.delegateLeft, Math.max(0, this.start.budget.fuel - (this.sandbox?.fuelUsed ?? 0)), this.recordedBuild)
    if (g.ok) this.delegateLeft = g.left
    return g
  }

  /** Gate an effect, record it, run the tool; `interrupted`: its ToolCalled is already recorded. */
  private async live (request: ToolRequest, interrupted?: Interrupted): Promise<PackEvent> {
    const { tool, args, call_id: callId } = request
    let grant = interrupted?.grant
    if (interrupted !== undefined) {
      // Resuming at a ToolCalled whose outcome was never recorded: run it again only if that is
      // harmless (its fuel grant was taken when the call was read back).
      if (!idempotent(tool) && grant?.ok !== false) {
        const error = { code: 'RL-3018' as const, message: `${tool} was interrupted by a node restart and is not idempotent: not repeated` }
        return this.packEvent(await this.emit('ToolFailed', { call_id: callId, error }), tool)
      }
    } else {
      const denied = gate(tool, this.start.pack.capabilities, this.start.policy.granted, this.toolCalls, this.start.budget.tool_calls)
      if (denied !== undefined) return this.packEvent(await this.emit('ToolDenied', { ...request, error: { code: denied.code, message: denied.message } }), tool)
      this.toolCalls++
      this.called.add(tool)
      // Durable before the tool runs: a crash after this line never loses the fact that we called it.
      await this.emit('ToolCalled', { ...request, idempotent: idempotent(tool) })
      grant = this.grant(tool, args)
    }
    try {
      if (grant !== undefined && !grant.ok) throw new ReachError(grant.error.code, { message: grant.error.message })
      const impl = this.mode.tools?.get(tool)
      if (impl === undefined) throw new ReachError('RL-3018', { message: `no host tool provides ${tool}` })
      const fuelLeft = Math.max(0, this.start.budget.fuel - (this.sandbox?.fuelUsed ?? 0))
      const result = await impl.run(args, { pack: this.start.pack.name, signal: this.mode.signal, fuelLeft, ...(grant?.ok === true ? { fuelGranted: grant.fuel } : {}) })
      return this.packEvent(await this.emit('ToolResult', { call_id: callId, result }), tool)
    } catch (err) {
      return this.packEvent(await this.emit('ToolFailed', { call_id: callId, error: errorOf(err) }), tool)
    }
  }

  /** `{ type, call_id, tool, result | error }`, written in canonical key order without sorting (the hot path of replay). */
  private packEvent (event: Event, tool: string): PackEvent {
    const p = event.payload as JsonObject
    const body = event.type === 'ToolResult' ? `"result":${canonicalize(p.result ?? null)}` : `"error":${canonicalize(p.error ?? null)}`
    return `{"call_id":${canonicalize(p.call_id ?? null)},${body},"tool":${canonicalize(tool)},"type":${canonicalize(event.type)}}`
  }

  /** After a replay: what the run ended with, and whether the record goes on past it. */
  replayed (outcome: RunOutcome): ReplayOutcome {
    const extra = this.mode.record.peek()
    if (extra !== undefined) {
      this.diverge(extra.seq, 'RL-3017', `the run ended, but the record goes on with ${extra.type}`, { type: extra.type }, null)
    }
    return {
      status: outcome.status,
      ...(outcome.output === undefined ? {} : { output: outcome.output }),
      ...(outcome.error === undefined ? {} : { error: outcome.error }),
      fuel_used: outcome.fuel_used,
      events: this.count,
      last: this.last as Event,
      legacyEngine: !this.recordedBuild,
      delegated: this.delegated
    }
  }
}
