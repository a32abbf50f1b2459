/**
 * The run loop (DESIGN.md §3, SPEC §8): a pack's deterministic code, a policy gate, host tools
 * and a hash-chained event log.
 *
 *   RunStarted → init(input) → reduce(Start) → effects → gate →
 *     ToolDenied | ToolCalled (durable before the tool runs) → ToolResult | ToolFailed →
 *     reduce(outcome) → … → output → RunCompleted   (or RunFailed {code}, RunCancelled {code})
 *
 * `executeRun` starts a run, `resumeRun` finishes one a dead process left, `replayRun`
 * re-executes a finished one against its record (interpreter.ts).
 */
import type { Event } from '../../protocol/event.ts'
import type { Tool } from '../tools/index.ts'
import { DivergenceError, Interpreter } from './interpreter.ts'
import { ArrayCursor, RecordReadError, type RecordCursor } from './record.ts'
import { checkStarted, type StartedCheck, type StartedOptions } from './started.ts'
import type { Engine, ReplayVerdict, RunOutcome, RunPack, RunSink, RunStart } from './types.ts'

export * from './types.ts'
export { ArrayCursor, RecordReadError, StreamCursor, type RecordCursor } from './record.ts'
export { DivergenceError } from './interpreter.ts'
export { RunThreads, type RunThreadsInit } from './threads.ts'

const NEVER = new AbortController().signal

/** Start a new run, writing every event to `sink` (an empty log). */
export async function executeRun (start: RunStart, engine: Engine, sink: RunSink, tools: Map<string, Tool>, signal: AbortSignal = NEVER): Promise<RunOutcome> {
  if (engine.threads !== undefined) return await engine.threads.execute(start, sink, tools, signal)
  return await new Interpreter(start, engine, { kind: 'run', record: new ArrayCursor([]), sink, tools, signal }).run()
}

/**
 * What a recorded run was started with, checked against `pack` and `engine` (checkStarted in
 * started.ts): a divergence at seq 0 when the record is not a run of this pack on this engine.
 * `granted`: the node's current policy, which gates only effects past the end of the record.
 */
export function startOf (recorded: readonly Event[], pack: RunPack, engine: Pick<Engine, 'version' | 'build'>, granted: readonly string[] = []): StartedCheck {
  // Only this node's own unfinished runs resume: one from before engine builds may.
  return checkStarted(recorded[0], pack, engine, granted, { legacy: true })
}

/**
 * Continue a run whose log ends before its end event. Throws DivergenceError when the recorded
 * prefix is not what this pack does on this engine (a damaged or foreign log, another build).
 */
export async function resumeRun (started: StartedCheck & { ok: true }, recorded: readonly Event[], engine: Engine, sink: RunSink, tools: Map<string, Tool>, signal: AbortSignal = NEVER): Promise<RunOutcome> {
  if (engine.threads !== undefined) return await engine.threads.resume(started, recorded, sink, tools, signal)
  return await new Interpreter(started.start, engine, { kind: 'resume', record: new ArrayCursor(recorded), sink, tools, signal }, { strict: started.build !== null, ...(started.lineage === undefined ? {} : { lineage: started.lineage }) }).run()
}

/**
 * Re-execute `pack` against a complete record: no tool runs and nothing is written. The record
 * comes from an array or a stream (record.ts: a peer's log is never held whole). The first
 * event is read first, so a stream needs no more than a batch to be refused for its start.
 * `recorder`: the node whose log this is (its signer), when known: a run's lineage must end at
 * it, and it cannot have answered its own delegations. Reading the record failing throws its
 * own error (not a divergence); so does a replay cut by this node's wall clock (RL-3105:
 * inconclusive, the wall clock is no deterministic limit). `legacy`: the record is this node's
 * own, so one from before runs named their engine build replays under the rules of then; any
 * other record without an engine build diverges at seq 0 (RL-3021).
 */
export async function replayRun (pack: RunPack, engine: Engine, record: RecordCursor, options: StartedOptions = {}): Promise<ReplayVerdict> {
  if (engine.threads !== undefined) return await engine.threads.replay(pack, record, options)
  try {
    await record.fill(1)
    const started = checkStarted(record.peek(), pack, engine, [], options)
    if (!started.ok) return started
    const interpreter = new Interpreter(started.start, engine, { kind: 'replay', record, signal: NEVER }, {
      strict: started.build !== null,
      ...(started.lineage === undefined ? {} : { lineage: started.lineage }),
      ...(options.recorder === undefined ? {} : { recorder: options.recorder })
    })
    const outcome = await interpreter.run()
    await record.fill(1)
    return { ok: true, outcome: interpreter.replayed(outcome) }
  } catch (err) {
    if (err instanceof DivergenceError) return { ok: false, divergence: err.divergence }
    if (err instanceof RecordReadError) throw err.error
    throw err
  }
}
export { runPackOf } from './pack.ts'
