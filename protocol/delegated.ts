/**
 * A delegated run as its caller receives it (SPEC §10.5): the outcome, the child's run record,
 * its first event and its peer's signed checkpoint. One check, used by the delegator on a
 * result frame and by replay on a recorded `reach.delegate` result, so that a live run records
 * nothing its replay would refuse.
 *
 * What binds it is what the peer signed. The checkpoint signs `log_id`, the hash of the child's
 * RunStarted (the first event of its log), so that event names the pack, input, budget and
 * engine of the run the peer signed; `log_hash` and `state_hash` sign the end of its log and
 * its outcome. The record is then held to those: every member a fingerprint covers is either
 * signed or derived from something signed, and the fingerprint is recomputed.
 */
import { canonicalize, preview, type JsonObject, type JsonValue } from './canonical.ts'
import { decodeCheckpoint, verifyCheckpoint, type Checkpoint } from './checkpoint.ts'
import { verifyChain } from './chain.ts'
import { isErrorCode, isReachError } from './errors.ts'
import { hashCanonical } from './hash.ts'
import { publicKeyOfPeerId } from './peer-id.ts'
import { fingerprintOf, isRunId, runOutcomeHash, type RunError, type RunRecord, type RunStatus } from './run.ts'

export interface DelegatedRun {
  /** The peer that ran it (its peer id is its signing key). */
  peer: string
  status: unknown
  output?: unknown
  error?: unknown
  run_id: unknown
  /** The peer's signed checkpoint text. */
  checkpoint: unknown
  /** The child's run record. */
  record?: unknown
  /** The child's first event, its RunStarted. */
  started?: unknown
}

export interface DelegationAsked {
  pack: string
  input: JsonValue
  /** The fuel the child was granted, when the caller knows it (its RunStarted budget says it). */
  fuel?: number
}

export type DelegatedCheck =
  | { ok: true, checkpoint: Checkpoint, record: RunRecord | undefined }
  | { ok: false, problem: string }

const STATUSES: ReadonlySet<unknown> = new Set<RunStatus>(['completed', 'failed', 'cancelled'])

function isObject (v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/**
 * Whether `run` is the run `asked` for, signed by `run.peer`. `legacy`: a result recorded before
 * delegated results carried their record and first event, held to the rules of then (signed
 * checkpoint and outcome only); never for anything received now.
 */
export function checkDelegatedRun (run: DelegatedRun, asked: DelegationAsked, options: { legacy?: boolean } = {}): DelegatedCheck {
  try {
    return check(run, asked, options)
  } catch (err) {
    // A value no honest node sends (a number canonical JSON refuses): as wrong as a bad hash.
    return { ok: false, problem: `it cannot be hashed (${(err as Error).message})` }
  }
}

function check (run: DelegatedRun, asked: DelegationAsked, options: { legacy?: boolean }): DelegatedCheck {
  const problem = (text: string): DelegatedCheck => ({ ok: false, problem: text })
  const { status } = run
  if (!STATUSES.has(status)) return problem('status is not completed, failed or cancelled')
  const hasOutput = Object.hasOwn(run, 'output') && run.output !== undefined
  const hasError = Object.hasOwn(run, 'error') && run.error !== undefined
  if ((status === 'completed') !== hasOutput || (status === 'completed') === hasError) return problem('a completed run has an output and no error; any other has an error and no output')
  const error = hasError ? run.error : null
  if (error !== null && (!isObject(error) || Object.keys(error).length !== 2 || !isErrorCode(error.code) || typeof error.message !== 'string')) return problem('error is not {code, message} with a registered code')
  if (!isRunId(run.run_id)) return problem(`run id ${preview(run.run_id)} is not a run id`)
  if (typeof run.checkpoint !== 'string') return problem('checkpoint is not a string')

  let checkpoint: Checkpoint
  try {
    checkpoint = decodeCheckpoint(run.checkpoint)
    verifyCheckpoint(checkpoint, { expectedSigner: publicKeyOfPeerId(run.peer) })
  } catch (err) {
    return problem(`the checkpoint is not ${run.peer}'s (${isReachError(err) ? `${err.code} ` : ''}${(err as Error).message})`)
  }
  // Version 1 checkpoints said nothing of their kind: only results of then may carry one.
  if (checkpoint.kind !== 'run' && !(options.legacy === true && checkpoint.kind === undefined)) return problem(`the checkpoint of ${run.peer} is not of a run (kind ${preview(checkpoint.kind ?? null)})`)
  // A finished run has at least RunStarted and its end.
  if (checkpoint.at_seq < 1) return problem(`the checkpoint of ${run.peer} covers one event: no finished run is that short`)
  const outputHash = status === 'completed' ? hashCanonical(run.output) : null
  const outcome = { status: status as RunStatus, output_hash: outputHash, error: error as RunError | null }
  if (checkpoint.state_hash !== runOutcomeHash(outcome)) return problem(`the checkpoint of ${run.peer} does not sign this outcome`)
  if (options.legacy === true && run.record === undefined && run.started === undefined) return { ok: true, checkpoint, record: undefined }

  // The first event: the one whose hash the peer signed as the log's id.
  const started = run.started
  const chain = verifyChain([started])
  if (!chain.ok) return problem(`the child's first event is not a genesis event (${chain.code}: ${chain.reason})`)
  const first = started as { type: string, hash: string, payload: JsonValue }
  if (first.hash !== checkpoint.log_id) return problem(`the child's first event is not the one ${run.peer} signed as its log's id`)
  if (first.type !== 'RunStarted' || !isObject(first.payload)) return problem('the child\'s first event is not a RunStarted')
  const p = first.payload
  if (p.pack_cid !== asked.pack) return problem(`the child run is of pack ${preview(p.pack_cid)}, not the ${asked.pack} asked for`)
  if (p.input_hash !== hashCanonical(asked.input) || p.input_hash !== hashCanonical(p.input ?? null)) return problem('the child run was given another input than the one asked for')
  if (asked.fuel !== undefined && (!isObject(p.budget) || p.budget.fuel !== asked.fuel)) return problem(`the child run's fuel budget is not the ${asked.fuel} granted`)

  // The record: each member the fingerprint covers is the first event's, the checkpoint's or the result's.
  const rec = run.record
  if (!isObject(rec)) return problem('record is not an object')
  if (rec.artifact_hash !== p.pack_cid || rec.input_hash !== p.input_hash || rec.engine_version !== p.engine_version || rec.policy_version !== p.policy_version ||
    canonicalize(rec.engine_build ?? null) !== canonicalize(p.engine_build ?? null)) return problem('the child record is not of the run its first event starts (pack, input, engine or policy)')
  if (rec.run_id !== run.run_id || rec.status !== status || rec.output_hash !== outputHash || canonicalize(rec.error ?? null) !== canonicalize(error)) return problem('the child record does not say what the result says (run id, status, output or error)')
  if (rec.event_log_hash !== checkpoint.log_hash) return problem('the child record is not of the log its checkpoint ends')
  let fingerprint: string
  try {
    fingerprint = fingerprintOf(rec as unknown as RunRecord)
  } catch {
    return problem('the child record cannot be fingerprinted')
  }
  if (rec.fingerprint !== fingerprint) return problem('the child record does not hash to its fingerprint')
  return { ok: true, checkpoint, record: rec as unknown as RunRecord }
}
