/**
 * Replay: fold a log through a reducer, optionally verifying the chain on the
 * way and recording a trace (seq, type, aggregate_id and the field-level
 * state change of every event).
 *
 * Replay is the judge of determinism: the same events and reducer give the
 * same state and state hash on every machine, every time.
 */
import type { JsonValue } from './canonical.ts'
import { ChainVerifier, chainError, type ChainAnchor } from './chain.ts'
import { diffValues, type FieldChange } from './diff.ts'
import { ReachError } from './errors.ts'
import type { Event } from './event.ts'
import { aggregatesReducer } from './reducer.ts'
import { emptyState, stateHash, type Reducer, type State } from './state.ts'

export interface TraceEntry {
  seq: number
  type: string
  aggregate_id: string
  changes: FieldChange[]
}

export interface ReplayOptions {
  reducer?: Reducer
  /** Stop after applying this seq (inclusive). Default: the whole log. */
  untilSeq?: number
  /** Record a trace entry per event. */
  trace?: boolean
  /** Verify the hash chain while replaying (default true). */
  verify?: boolean
  /** Start from this state and chain anchor instead of genesis. */
  initial?: { state: State, anchor: ChainAnchor }
}

export interface ReplayResult {
  state: State
  state_hash: string
  events_applied: number
  /** Seq of the last event applied, -1 when none. */
  last_seq: number
  /** Hash of the last event applied, when any. */
  last_event_hash?: string
  trace?: TraceEntry[]
}

class Replayer {
  state: State
  private readonly reducer: Reducer
  private readonly verifier: ChainVerifier | undefined
  private readonly untilSeq: number
  private readonly trace: TraceEntry[] | undefined
  private applied = 0
  private last: Event | undefined
  done = false

  constructor (options: ReplayOptions) {
    this.reducer = options.reducer ?? aggregatesReducer
    this.state = options.initial?.state ?? emptyState()
    this.verifier = options.verify === false ? undefined : new ChainVerifier(options.initial?.anchor ?? null)
    this.untilSeq = options.untilSeq ?? Number.POSITIVE_INFINITY
    this.trace = options.trace === true ? [] : undefined
  }

  push (event: Event): void {
    if (event.seq > this.untilSeq) {
      this.done = true
      return
    }
    const failure = this.verifier?.push(event)
    if (failure !== undefined) throw chainError(failure)
    const before = this.state
    this.state = this.reducer(before, event)
    this.applied++
    this.last = event
    this.trace?.push({
      seq: event.seq,
      type: event.type,
      aggregate_id: event.aggregate_id,
      changes: diffValues(before as unknown as JsonValue, this.state as unknown as JsonValue)
        .filter((c) => c.path !== '/version')
    })
    if (event.seq === this.untilSeq) this.done = true
  }

  finish (): ReplayResult {
    const verdict = this.verifier?.end()
    if (verdict !== undefined && !verdict.ok) throw chainError(verdict)
    if (Number.isFinite(this.untilSeq) && (this.last?.seq ?? -1) < this.untilSeq) {
      throw new ReachError('RL-1007', {
        message: `cannot replay until seq ${this.untilSeq}: the log ends at seq ${this.last?.seq ?? -1}`,
        seq: this.untilSeq
      })
    }
    return {
      state: this.state,
      state_hash: stateHash(this.state),
      events_applied: this.applied,
      last_seq: this.last?.seq ?? -1,
      ...(this.last === undefined ? {} : { last_event_hash: this.last.hash }),
      ...(this.trace === undefined ? {} : { trace: this.trace })
    }
  }
}

/** Replay an in-memory sequence of events. Throws the chain's RL-2xxx on a bad log. */
export function replay (events: Iterable<Event>, options: ReplayOptions = {}): ReplayResult {
  const r = new Replayer(options)
  for (const event of events) {
    r.push(event)
    if (r.done) break
  }
  return r.finish()
}

/** Replay a streamed log in constant memory (unless tracing). */
export async function replayAsync (events: AsyncIterable<Event>, options: ReplayOptions = {}): Promise<ReplayResult> {
  const r = new Replayer(options)
  for await (const event of events) {
    r.push(event)
    if (r.done) break
  }
  return r.finish()
}
