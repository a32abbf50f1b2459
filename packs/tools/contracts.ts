/**
 * What the engine knows about each host tool without running it (SPEC §8): whether a repeat is
 * harmless, and which results the tool can return for given arguments. A replay holds every
 * recorded `ToolResult` to its tool's contract, so a log cannot claim an answer the tool never
 * gives (a clock reading that is not a number, 3 random bytes for a request of 32, a delegated
 * result its peer did not sign). The contracts are part of the engine version.
 */
import { preview, type JsonObject, type JsonValue } from '../../protocol/canonical.ts'
import { checkDelegatedRun } from '../../protocol/delegated.ts'
import { isHash } from '../../protocol/hash.ts'
import { MAX_LINEAGE_DEPTH } from '../../protocol/lineage.ts'
import type { Capability } from '../manifest.ts'

/** What the run loop knows about a call besides its arguments. */
export interface CallFacts {
  /** reach.delegate: the fuel the run loop granted the sub-run. */
  fuelGranted?: number
  /**
   * The rules of runs that record their engine build (every run this version writes): a
   * delegated result carries the child's record, bound to the call, and needs a lineage. Off for
   * older runs, whose results were recorded without them.
   */
  strict?: boolean
  /** The calling run's lineage: its depth and every peer in its chain (none may answer it). */
  lineage?: { depth: number, peers: ReadonlySet<string> }
  /** The node that recorded the run (its log's signer), when the verifier knows it. */
  recorder?: string
}

export interface ToolContract {
  /** A call interrupted by a crash may be repeated on resume (SPEC §8). */
  idempotent: boolean
  /**
   * Why the tool refuses these arguments (it then fails the call, RL-3018), or undefined. The host
   * tool runs this same check, so a replay knows which calls can only have failed.
   */
  argsProblem (args: JsonObject): string | undefined
  /** Why `result` cannot be this tool's answer to `args` (whose form is right), or undefined. */
  resultProblem (args: JsonObject, result: JsonValue, facts: CallFacts): string | undefined
}

/** Random bytes per call: enough for ids and nonces, too little to be a memory lever. */
export const MAX_RANDOM_BYTES = 1024
/** kv keys are short identifiers, not storage for blobs. */
export const MAX_KV_KEY_LENGTH = 256

function kvKeyProblem (args: JsonObject): string | undefined {
  const key = args.key
  return typeof key === 'string' && key.length > 0 && key.length <= MAX_KV_KEY_LENGTH ? undefined : `kv key must be a string of 1 to ${MAX_KV_KEY_LENGTH} characters`
}

/** The URL http.fetch would ask for, or why it refuses it (the host allowlist is the node's policy, checked by the tool). */
export function httpUrl (args: JsonObject): URL | string {
  let url: URL
  try {
    url = new URL(String(args.url))
  } catch {
    return `http.fetch url is not a URL: ${preview(args.url ?? null)}`
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `http.fetch allows http and https only, not ${url.protocol}`
  return url
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

/** The random.bytes size asked for (32 when not given), or why the tool refuses it. */
export function randomBytesAsked (args: JsonObject): number | string {
  const n = args.n ?? 32
  return Number.isSafeInteger(n) && (n as number) >= 1 && (n as number) <= MAX_RANDOM_BYTES ? n as number : `random.bytes n must be an integer from 1 to ${MAX_RANDOM_BYTES}`
}

/**
 * A delegated run's result must be the run this call asked for, signed by the peer that ran it
 * (protocol/delegated.ts, the check the delegator made before the result was recorded), with the
 * fuel the run loop granted, from a peer that could have answered this run.
 */
function delegateResultProblem (args: JsonObject, result: JsonValue, facts: CallFacts): string | undefined {
  const strict = facts.strict === true
  const shape = membersProblem(result, ['peer', 'status', 'run_id', 'fingerprint', 'checkpoint', 'fuel_granted', ...(strict ? ['record', 'started'] : [])], ['output', 'error'])
  if (shape !== undefined) return shape
  const r = result as JsonObject
  if (r.fuel_granted !== facts.fuelGranted) return `fuel_granted ${preview(r.fuel_granted)} is not the ${preview(facts.fuelGranted ?? null)} the run loop granted`
  if (typeof r.peer !== 'string') return 'peer is not a string'
  if (typeof args.peer === 'string' && args.peer !== r.peer) return `the call named peer ${args.peer}, the result is from ${r.peer}`
  // Who could have answered: never the recording node itself, nor a peer already in its chain.
  if (r.peer === facts.recorder) return `${r.peer} ran the calling run: a node never delegates to itself`
  if (facts.lineage?.peers.has(r.peer) === true) return `${r.peer} is already in this run's delegation chain: it refuses such a request (RL-4005)`
  if (strict) {
    if (facts.lineage === undefined) return 'a run started without a lineage has no reach.delegate: only a ToolFailed can be its outcome'
    if (facts.lineage.depth >= MAX_LINEAGE_DEPTH) return `a run at depth ${facts.lineage.depth} cannot delegate deeper`
  }
  const checked = checkDelegatedRun(
    { peer: r.peer, status: r.status, output: r.output, error: r.error, run_id: r.run_id, checkpoint: r.checkpoint, record: r.record, started: r.started },
    { pack: typeof args.pack === 'string' ? args.pack : '', input: args.input ?? null, ...(strict && facts.fuelGranted !== undefined ? { fuel: facts.fuelGranted } : {}) },
    { legacy: !strict }
  )
  if (!checked.ok) return checked.problem
  if (checked.record === undefined ? !isHash(r.fingerprint) : r.fingerprint !== checked.record.fingerprint) return 'the fingerprint is not the child record\'s'
  return undefined
}

export const TOOL_CONTRACTS: Readonly<Record<Capability, ToolContract>> = {
  'clock.now': {
    idempotent: true,
    argsProblem: () => undefined,
    resultProblem: (_args, result) => membersProblem(result, ['now_ms']) ?? (Number.isSafeInteger((result as JsonObject).now_ms) && ((result as JsonObject).now_ms as number) >= 0 ? undefined : 'now_ms is not a non-negative integer')
  },
  'random.bytes': {
    idempotent: true,
    argsProblem: (args) => { const n = randomBytesAsked(args); return typeof n === 'string' ? n : undefined },
    resultProblem: (args, result) => {
      const shape = membersProblem(result, ['hex'])
      if (shape !== undefined) return shape
      const hex = (result as JsonObject).hex
      const n = randomBytesAsked(args) as number
      return typeof hex === 'string' && hex.length === 2 * n && /^[0-9a-f]*$/.test(hex) ? undefined : `hex is not ${n} random bytes`
    }
  },
  'kv.get': { idempotent: true, argsProblem: kvKeyProblem, resultProblem: (_args, result) => membersProblem(result, ['value']) },
  // Writing the same value under the same key twice leaves the same state.
  'kv.put': {
    idempotent: true,
    argsProblem: (args) => kvKeyProblem(args) ?? (Object.hasOwn(args, 'value') ? undefined : 'kv.put needs a value'),
    resultProblem: (_args, result) => membersProblem(result, ['ok']) ?? ((result as JsonObject).ok === true ? undefined : 'ok is not true')
  },
  // GET only, so a repeat after a crash asks the same question again.
  'http.fetch': {
    idempotent: true,
    argsProblem: (args) => { const url = httpUrl(args); return typeof url === 'string' ? url : undefined },
    resultProblem: (_args, result) => {
      const shape = membersProblem(result, ['status', 'body'])
      if (shape !== undefined) return shape
      const { status, body } = result as JsonObject
      return Number.isSafeInteger(status) && (status as number) >= 100 && (status as number) <= 599 && typeof body === 'string' ? undefined : 'status is not an HTTP status or body is not text'
    }
  },
  // Spends another node's resources: a repeat would run the sub-run twice. Its arguments are the
  // run loop's to check (delegate-fuel.ts), before the tool is called.
  'reach.delegate': { idempotent: false, argsProblem: () => undefined, resultProblem: delegateResultProblem }
}

/** The contract of a capability, if the engine knows it. */
export function contractOf (tool: string): ToolContract | undefined {
  return Object.hasOwn(TOOL_CONTRACTS, tool) ? TOOL_CONTRACTS[tool as Capability] : undefined
}
