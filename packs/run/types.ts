/**
 * The run loop's vocabulary (SPEC §8): what a run is started with, where it writes, how it ends,
 * and how a replay says where it parted from the record.
 */
import type { JsonObject, JsonValue } from '../../protocol/canonical.ts'
import type { ErrorCode } from '../../protocol/errors.ts'
import type { Event, EventDraft } from '../../protocol/event.ts'
import type { EngineBuild } from '../../protocol/run.ts'
import type { SandboxFactory } from '../sandbox.ts'
import type { RunThreads } from './threads.ts'

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

/** The engine a run is made with: its version and build (the hashes its fuel count depends on). */
export interface Engine {
  version: string
  build: EngineBuild
  /** Where the run's sandbox comes from (a node's pool). */
  sandboxes: SandboxFactory
  /**
   * Worker threads that run the run loop off this thread (threads.ts), with their own
   * sandboxes; without them runs, resumes and replays run here.
   */
  threads?: RunThreads
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
  /** Makes two runs of the same pack and input distinct logs (recorded, so replay never needs it). */
  nonce: string
  /**
   * Where the run sits in a delegation chain, recorded in RunStarted as it is given (the run
   * loop does not read it), so that a resumed run gets the tools a new one would.
   */
  lineage?: JsonObject
}

export interface RunOutcome {
  status: 'completed' | 'failed' | 'cancelled'
  output?: JsonValue
  error?: { code: ErrorCode, message: string }
  fuel_used: number
  /** The run's events, recorded and new, in order (a replay keeps none: see ReplayOutcome). */
  events: Event[]
}

/** A replay's outcome: what the run ended with, and the record's last event. */
export interface ReplayOutcome {
  status: RunOutcome['status']
  output?: JsonValue
  error?: RunOutcome['error']
  fuel_used: number
  /** Events the replay matched (the whole record when it verified). */
  events: number
  last: Event
  /** The record named no engine build (a run from before builds were recorded): only the version was compared. */
  legacyEngine: boolean
  /**
   * The delegated results the run used, each checked against its peer's signature and bound to
   * its call, but not replayed here: the child runs are their peers' to show (verify them with
   * their peer and run id).
   */
  delegated: Array<{ seq: number, peer: string, run_id: string, fingerprint: string }>
}

/** Where a replay parted from the record: the first seq, why, and what each side had. */
export interface Divergence {
  seq: number
  /** RL-3017 unless a narrower code says why: RL-3015/3016 (the gate), RL-3021 (engine), RL-31xx (the pack failed here). */
  code: ErrorCode
  reason: string
  /** The recorded event (type and payload), or null where the record has ended. */
  recorded: JsonValue
  /** What the replay produced there, or null where it ended. */
  replayed: JsonValue
}

export type ReplayVerdict = { ok: true, outcome: ReplayOutcome } | { ok: false, divergence: Divergence }
