/**
 * What the engine knows about each host tool without running it (SPEC §8): whether a repeat is
 * harmless, and which results the tool can return for given arguments. A replay holds every
 * recorded `ToolResult` to its tool's contract, so a log cannot claim an answer the tool never
 * gives (a clock reading that is not a number, 3 random bytes for a request of 32, a delegated
 * result its peer did not sign). The contracts are part of the engine version.
 */
import type { JsonObject, JsonValue } from '../../protocol/canonical.ts'
import { decodeCheckpoint, verifyCheckpoint } from '../../protocol/checkpoint.ts'
import { isReachError, type ErrorCode } from '../../protocol/errors.ts'
import { hashCanonical, isHash } from '../../protocol/hash.ts'
import { publicKeyOfPeerId } from '../../protocol/peer-id.ts'
import { runOutcomeHash } from '../../protocol/run.ts'
import type { Capability } from '../manifest.ts'

/** What the run loop decided about a call before the tool ran (only reach.delegate has any). */
export interface CallFacts {
  /** reach.delegate: the fuel granted to the sub-run. */
  fuelGranted?: number
}

export interface ToolContract {
  /** A call interrupted by a crash may be repeated on resume (SPEC §8). */
  idempotent: boolean
  /** Why `result` cannot be this tool's answer to `args`, or undefined. */
  resultProblem (args: JsonObject, result: JsonValue, facts: CallFacts): string | undefined
}

function isObject (v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/** Why `v` is not an object with exactly `required` (and at most `optional`) members, or undefined. */
function membersProblem (v: unknown, required: readonly string[], optional: readonly string[] = []): string | undefined {
  if (!isObject(v)) return 'not an object'
  for (const k of required) if (!Object.hasOwn(v, k)) return `no ${k}`
  for (const k of Object.keys(v)) if (!required.includes(k) && !optional.includes(k)) return `unknown member ${k}`
  return undefined
}

const CODE = /^RL-[1-6]\d{3}$/
const RUN_ID = /^run_[0-9a-f]{20}$/

/** The random.bytes size asked for: what the tool itself would read (an invalid n fails the call). */
function randomBytesAsked (args: JsonObject): number {
  return typeof args.n === 'number' ? args.n : 32
}

/** A delegated run's result must be what its peer signed: the checkpoint, the outcome and the grant. */
function delegateResultProblem (args: JsonObject, result: JsonValue, facts: CallFacts): string | undefined {
  const shape = membersProblem(result, ['peer', 'status', 'run_id', 'fingerprint', 'checkpoint', 'fuel_granted'], ['output', 'error'])
  if (shape !== undefined) return shape
  const r = result as JsonObject
  if (r.fuel_granted !== facts.fuelGranted) return `fuel_granted ${String(r.fuel_granted)} is not the ${String(facts.fuelGranted)} the run loop granted`
  if (r.status !== 'completed' && r.status !== 'failed' && r.status !== 'cancelled') return 'status is not completed, failed or cancelled'
  if (typeof r.run_id !== 'string' || !RUN_ID.test(r.run_id) || !isHash(r.fingerprint)) return 'run_id or fingerprint malformed'
  if ((r.status === 'completed') !== Object.hasOwn(r, 'output') || (r.status === 'completed') === Object.hasOwn(r, 'error')) return 'a completed run has an output and no error; any other has an error and no output'
  const error = r.error ?? null
  if (error !== null && (membersProblem(error, ['code', 'message']) !== undefined || typeof (error as JsonObject).code !== 'string' || !CODE.test((error as JsonObject).code as string) || typeof (error as JsonObject).message !== 'string')) return 'error is not {code, message}'
  if (typeof r.peer !== 'string' || typeof r.checkpoint !== 'string') return 'peer or checkpoint is not a string'
  if (typeof args.peer === 'string' && args.peer !== r.peer) return `the call named peer ${args.peer}, the result is from ${r.peer}`
  try {
    const checkpoint = decodeCheckpoint(r.checkpoint)
    verifyCheckpoint(checkpoint, { expectedSigner: publicKeyOfPeerId(r.peer) })
    const outcome = runOutcomeHash({ status: r.status, output_hash: r.status === 'completed' ? hashCanonical(r.output) : null, error: error as { code: ErrorCode, message: string } | null })
    if (checkpoint.state_hash !== outcome) return `the checkpoint of ${r.peer} does not sign this outcome`
  } catch (err) {
    return `the checkpoint is not ${r.peer}'s (${isReachError(err) ? `${err.code} ` : ''}${(err as Error).message})`
  }
  return undefined
}

export const TOOL_CONTRACTS: Readonly<Record<Capability, ToolContract>> = {
  'clock.now': {
    idempotent: true,
    resultProblem: (_args, result) => membersProblem(result, ['now_ms']) ?? (Number.isSafeInteger((result as JsonObject).now_ms) && ((result as JsonObject).now_ms as number) >= 0 ? undefined : 'now_ms is not a non-negative integer')
  },
  'random.bytes': {
    idempotent: true,
    resultProblem: (args, result) => {
      const shape = membersProblem(result, ['hex'])
      if (shape !== undefined) return shape
      const hex = (result as JsonObject).hex
      const n = randomBytesAsked(args)
      return typeof hex === 'string' && hex.length === 2 * n && /^[0-9a-f]*$/.test(hex) ? undefined : `hex is not ${n} random bytes`
    }
  },
  'kv.get': { idempotent: true, resultProblem: (_args, result) => membersProblem(result, ['value']) },
  // Writing the same value under the same key twice leaves the same state.
  'kv.put': { idempotent: true, resultProblem: (_args, result) => membersProblem(result, ['ok']) ?? ((result as JsonObject).ok === true ? undefined : 'ok is not true') },
  // GET only, so a repeat after a crash asks the same question again.
  'http.fetch': {
    idempotent: true,
    resultProblem: (_args, result) => {
      const shape = membersProblem(result, ['status', 'body'])
      if (shape !== undefined) return shape
      const { status, body } = result as JsonObject
      return Number.isSafeInteger(status) && (status as number) >= 100 && (status as number) <= 599 && typeof body === 'string' ? undefined : 'status is not an HTTP status or body is not text'
    }
  },
  // Spends another node's resources: a repeat would run the sub-run twice.
  'reach.delegate': { idempotent: false, resultProblem: delegateResultProblem }
}

/** The contract of a capability, if the engine knows it. */
export function contractOf (tool: string): ToolContract | undefined {
  return Object.hasOwn(TOOL_CONTRACTS, tool) ? TOOL_CONTRACTS[tool as Capability] : undefined
}
