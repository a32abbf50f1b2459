/**
 * A run's first event, `RunStarted` (SPEC §8): written from what a run is started with, and read
 * back by a resume or a replay, which checks it against the pack and the engine at hand before
 * anything runs. What a replay cannot recompute (the input, budget, nonce, policy version and
 * lineage) is taken from the record once its form is right; everything else must be its own.
 */
import { preview, type JsonObject, type JsonValue } from '../../protocol/canonical.ts'
import type { ErrorCode } from '../../protocol/errors.ts'
import type { Event } from '../../protocol/event.ts'
import { hashCanonical, isHash } from '../../protocol/hash.ts'
import { lineageHops } from '../../protocol/lineage.ts'
import type { EngineBuild } from '../../protocol/run.ts'
import { BUDGET_FIELDS } from '../manifest.ts'
import type { Divergence, Engine, RunBudget, RunPack, RunStart } from './types.ts'

const REQUIRED = ['pack_cid', 'pack_name', 'engine_version', 'policy_version', 'input', 'input_hash', 'budget', 'nonce']
const OPTIONAL = ['engine_build', 'lineage']
const NONCE = /^[0-9a-f]{32}$/

/** The RunStarted payload of a new run. */
export function startedPayload (start: RunStart, engine: Pick<Engine, 'version' | 'build'>): JsonObject {
  const { pack, input, budget, policy, nonce, lineage } = start
  return {
    pack_cid: pack.cid,
    pack_name: pack.name,
    engine_version: engine.version,
    engine_build: { wasm: engine.build.wasm, prelude: engine.build.prelude },
    policy_version: policy.version,
    input,
    input_hash: hashCanonical(input),
    budget: budget as unknown as JsonObject,
    nonce,
    ...(lineage === undefined ? {} : { lineage })
  }
}

function isObject (v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function budgetProblem (b: unknown): string | undefined {
  if (!isObject(b)) return 'budget is not an object'
  const keys = Object.keys(b)
  if (keys.length !== BUDGET_FIELDS.length || !BUDGET_FIELDS.every((f) => Object.hasOwn(b, f))) return `budget must have exactly ${BUDGET_FIELDS.join(', ')}`
  for (const f of BUDGET_FIELDS) {
    const v = b[f]
    if (!Number.isSafeInteger(v) || (v as number) < (f === 'tool_calls' ? 0 : 1)) return `budget ${f} is not a ${f === 'tool_calls' ? 'non-negative' : 'positive'} integer`
  }
  return undefined
}

/** What the run loop knows of a run's place in a delegation chain (its recorded lineage). */
export interface LineageFacts {
  depth: number
  /** Every `from` and `to` of its hops: none of them can answer a delegation of this run. */
  peers: ReadonlySet<string>
}

export type StartedCheck =
  | { ok: true, start: RunStart, engineVersion: string, build: EngineBuild | null, lineage?: LineageFacts }
  | { ok: false, divergence: Divergence }

function refuse (code: ErrorCode, reason: string, recorded: JsonValue, replayed: JsonValue): StartedCheck {
  return { ok: false, divergence: { seq: 0, code, reason, recorded, replayed } }
}

export interface StartedOptions {
  /** The node that signed the log, when known: the run's lineage must end at it. */
  recorder?: string
  /**
   * Accept a run recorded before runs named their engine build (checked by engine version
   * only, under the rules of then). Only for this node's own records: a log that merely omits
   * `engine_build` would otherwise choose the laxer rules for itself.
   */
  legacy?: boolean
}

/**
 * Check the record's first event against the pack replaying it and this engine. The engine is
 * compared part by part (version, WebAssembly module, prelude) so that a replay on another build
 * says which part differs (RL-3021) instead of diverging later at a fuel count.
 */
export function checkStarted (first: Event | undefined, pack: RunPack, engine: Pick<Engine, 'version' | 'build'>, granted: readonly string[], options: StartedOptions = {}): StartedCheck {
  const { recorder } = options
  if (first === undefined || first.type !== 'RunStarted') {
    return refuse('RL-3017', 'a run log begins with RunStarted', first === undefined ? null : { type: first.type }, { type: 'RunStarted' })
  }
  const p = first.payload
  if (!isObject(p)) return refuse('RL-3017', 'RunStarted has no payload object', p, null)
  const missing = REQUIRED.find((k) => !Object.hasOwn(p, k))
  const extra = Object.keys(p).find((k) => !REQUIRED.includes(k) && !OPTIONAL.includes(k))
  if (missing !== undefined || extra !== undefined) return refuse('RL-3017', `RunStarted ${missing !== undefined ? `lacks ${missing}` : `has an unknown member ${extra as string}`}`, Object.keys(p).sort(), [...REQUIRED, ...OPTIONAL])
  if (p.pack_cid !== pack.cid) return refuse('RL-3017', `the run was recorded with pack ${preview(p.pack_cid)}, not ${pack.cid}`, p.pack_cid, pack.cid)
  if (p.pack_name !== pack.name) return refuse('RL-3017', `the record names the pack ${preview(p.pack_name)}; pack ${pack.cid} is ${JSON.stringify(pack.name)}`, p.pack_name, pack.name)
  if (p.engine_version !== engine.version) return refuse('RL-3021', `the run was recorded by engine ${preview(p.engine_version)}; this is engine ${engine.version}`, p.engine_version, engine.version)
  let build: EngineBuild | null = null
  if (Object.hasOwn(p, 'engine_build')) {
    const b = p.engine_build
    if (!isObject(b) || Object.keys(b).length !== 2 || !isHash(b.wasm) || !isHash(b.prelude)) return refuse('RL-3017', 'RunStarted engine_build is not {wasm, prelude} (SHA-256 hex each)', b, { wasm: engine.build.wasm, prelude: engine.build.prelude })
    if (b.wasm !== engine.build.wasm) return refuse('RL-3021', `the run was recorded by another build of engine ${engine.version}: its WebAssembly module differs (recorded ${b.wasm.slice(0, 12)}…, here ${engine.build.wasm.slice(0, 12)}…)`, b, { ...engine.build })
    if (b.prelude !== engine.build.prelude) return refuse('RL-3021', `the run was recorded by another build of engine ${engine.version}: its prelude differs (recorded ${b.prelude.slice(0, 12)}…, here ${engine.build.prelude.slice(0, 12)}…)`, b, { ...engine.build })
    build = { wasm: b.wasm, prelude: b.prelude }
  } else if (options.legacy !== true) {
    return refuse('RL-3021', `the run names no engine build: it was recorded before engine ${engine.version}'s rules, or its engine_build was removed, and only this node's own older runs replay without one`, null, { ...engine.build })
  }
  if (!isHash(p.policy_version)) return refuse('RL-3017', 'RunStarted policy_version is not a SHA-256 hex', p.policy_version, null)
  if (typeof p.nonce !== 'string' || !NONCE.test(p.nonce)) return refuse('RL-3017', 'RunStarted nonce is not 32 hex digits', p.nonce, null)
  const budget = budgetProblem(p.budget)
  if (budget !== undefined) return refuse('RL-3017', `RunStarted ${budget}`, p.budget ?? null, null)
  const inputHash = hashCanonical(p.input)
  if (p.input_hash !== inputHash) return refuse('RL-3017', 'RunStarted input_hash is not the hash of its input', p.input_hash, inputHash)
  let lineage: LineageFacts | undefined
  if (Object.hasOwn(p, 'lineage')) {
    // The recording node's claim of who asked it, held to the rule a delegation server holds a
    // request to (SPEC §10.5): a chain of hops, each signed by its `from`, ending at that node.
    const hops = lineageHops(p.lineage)
    if (typeof hops === 'string') return refuse('RL-3017', `RunStarted ${hops}`, p.lineage ?? null, null)
    const last = hops.at(-1)
    if (last !== undefined && recorder !== undefined && last.to !== recorder) return refuse('RL-3017', `the run's last hop asked ${last.to}, not the node that signed its log (${recorder})`, last.to, recorder)
    lineage = { depth: hops.length, peers: new Set(hops.flatMap((h) => [h.from, h.to])) }
  }
  return {
    ok: true,
    engineVersion: engine.version,
    build,
    ...(lineage === undefined ? {} : { lineage }),
    start: {
      pack,
      input: p.input as JsonValue,
      budget: p.budget as unknown as RunBudget,
      policy: { version: p.policy_version, granted },
      nonce: p.nonce,
      ...(isObject(p.lineage) ? { lineage: p.lineage } : {})
    }
  }
}
