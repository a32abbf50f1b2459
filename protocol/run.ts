/**
 * Run records (SPEC §8): what a run's log says about the run, as a pure function of the log.
 *
 * A record names the pack (`artifact_hash`, its CID), the engine that ran it, the policy, the
 * input, the output and the log's last event; its `fingerprint` hashes those, so two nodes that
 * replay the same log agree on it. A run's closing checkpoint signs `runOutcomeHash` of the
 * record as its state hash.
 */
import type { JsonObject } from './canonical.ts'
import type { ErrorCode } from './errors.ts'
import type { Event } from './event.ts'
import { hashCanonical } from './hash.ts'

/** The events that end a run. */
/** A run id: `run_` and 20 hex digits (SPEC §8). */
export const RUN_ID_PATTERN = '^run_[0-9a-f]{20}$'
const RUN_ID = new RegExp(RUN_ID_PATTERN)

export function isRunId (value: unknown): value is string {
  return typeof value === 'string' && RUN_ID.test(value)
}

export const TERMINAL_EVENTS: ReadonlySet<string> = new Set(['RunCompleted', 'RunFailed', 'RunCancelled'])

/** The build of the engine that ran a run: the hashes of what decides its fuel count (SPEC §8). */
export interface EngineBuild {
  /** SHA-256 of the sandbox's WebAssembly module bytes. */
  wasm: string
  /** SHA-256 of the harness evaluated in every VM before the pack. */
  prelude: string
}

export type RunStatus = 'running' | 'completed' | 'failed' | 'cancelled'

export interface RunError {
  code: ErrorCode
  message: string
}

export interface RunRecord {
  /** 2 since runs record their engine build; a stored version-1 record has no `engine_build`. */
  version: 1 | 2
  run_id: string
  pack_name: string
  engine_version: string
  /** Null for a run recorded before runs recorded their engine build. */
  engine_build?: EngineBuild | null
  policy_version: string
  input_hash: string
  artifact_hash: string
  output_hash: string | null
  event_log_hash: string
  fingerprint: string
  status: RunStatus
  error: RunError | null
  events: number
  fuel_used: number
  checkpoint_id: string | null
}

export const RUN_RECORD_VERSION = 2

type FingerprintFields = Pick<RunRecord, 'engine_version' | 'engine_build' | 'policy_version' | 'input_hash' | 'artifact_hash' | 'output_hash' | 'event_log_hash'>

/**
 * sha256(canonical({engine_version, engine_build?, policy_version, input_hash, artifact_hash,
 * output_hash, event_log_hash})). `engine_build` is there when the run recorded one, so the
 * fingerprints of older runs are unchanged.
 */
export function fingerprintOf (r: FingerprintFields): string {
  const build = r.engine_build ?? null
  return hashCanonical({
    engine_version: r.engine_version,
    ...(build === null ? {} : { engine_build: { prelude: build.prelude, wasm: build.wasm } }),
    policy_version: r.policy_version,
    input_hash: r.input_hash,
    artifact_hash: r.artifact_hash,
    output_hash: r.output_hash,
    event_log_hash: r.event_log_hash
  })
}

/** What a run checkpoint's `state_hash` is: the hash of how the run ended. */
export function runOutcomeHash (r: Pick<RunRecord, 'status' | 'output_hash' | 'error'>): string {
  return hashCanonical({ status: r.status, output_hash: r.output_hash, error: r.error })
}

/**
 * The record of a run's log, built one event at a time (a log streamed from a peer is never
 * held whole): only the first event, the last one and the count matter.
 */
export class RunRecordFold {
  private first: Event | undefined
  private last: Event | undefined
  private count = 0

  push (event: Event): void {
    this.first ??= event
    this.last = event
    this.count++
  }

  get events (): number {
    return this.count
  }

  /** The record; throws when no event was pushed. */
  finish (runId: string): RunRecord {
    const first = this.first
    const last = this.last
    if (first === undefined || last === undefined) throw new TypeError('a run record needs at least one event')
    const started = (first.payload ?? {}) as JsonObject
    const end = TERMINAL_EVENTS.has(last.type) ? (last.payload ?? {}) as JsonObject : undefined
    const build = started.engine_build as unknown as EngineBuild | undefined
    const base: FingerprintFields = {
      engine_version: started.engine_version as string,
      engine_build: build === undefined ? null : build,
      policy_version: started.policy_version as string,
      input_hash: started.input_hash as string,
      artifact_hash: started.pack_cid as string,
      output_hash: last.type === 'RunCompleted' ? (end?.output_hash as string) : null,
      event_log_hash: last.hash
    }
    const status: RunStatus = last.type === 'RunCompleted' ? 'completed' : last.type === 'RunFailed' ? 'failed' : last.type === 'RunCancelled' ? 'cancelled' : 'running'
    return {
      version: RUN_RECORD_VERSION,
      run_id: runId,
      pack_name: started.pack_name as string,
      engine_version: base.engine_version,
      engine_build: base.engine_build ?? null,
      policy_version: base.policy_version,
      input_hash: base.input_hash,
      artifact_hash: base.artifact_hash,
      output_hash: base.output_hash,
      event_log_hash: base.event_log_hash,
      fingerprint: fingerprintOf(base),
      status,
      error: last.type === 'RunFailed' || last.type === 'RunCancelled' ? (end?.error as unknown as RunError) : null,
      events: this.count,
      fuel_used: (end?.fuel_used as number | undefined) ?? 0,
      checkpoint_id: null
    }
  }
}

/** The record a log implies. */
export function recordOf (runId: string, events: Iterable<Event>): RunRecord {
  const fold = new RunRecordFold()
  for (const e of events) fold.push(e)
  return fold.finish(runId)
}
