/**
 * Node policy: which packs this node agrees to run, with which capabilities
 * and how much of its resources.
 *
 * `<home>/policy.json` (version 1; every field optional, missing ones take
 * the defaults below, unknown ones are refused with RL-3011):
 *
 *   {
 *     "version": 1,
 *     "allow_unsigned_legacy": false,
 *     "granted_capabilities": ["clock.now", "random.bytes", "kv.get", "kv.put"],
 *     "http_allowlist": [],              hosts http.fetch may reach: "host" or "host:port", lowercase
 *     "max_budget": {"fuel": …, "memory_bytes": …, "output_bytes": …, "tool_calls": …, "wall_ms": …},
 *     "max_delegation_depth": 4,         deepest chain of delegations this node serves (SPEC §10.5)
 *     "run_threads": 2                   worker threads the node runs packs on (packs/run/threads.ts)
 *   }
 *
 * `policyVersion(policy)` = sha256(canonical(policy with defaults filled in,
 * `run_threads` left out)) is what a run records, so a replay knows which
 * rules the run was admitted under. How many threads run packs says nothing
 * of what a pack may do, so changing it changes no version.
 *
 * `admitPack` decides whether a verified bundle may run here. It is pure and
 * checks in a fixed order, so every node gives the same code for the same
 * pack: engine range (RL-3013) → signatures (RL-3005, RL-3008, RL-3006,
 * RL-3007) → capabilities (RL-3009) → default budget (RL-3010).
 */
import { readFile } from 'node:fs/promises'
import { Ajv, type ValidateFunction } from 'ajv'
import { canonicalize } from '../protocol/canonical.ts'
import { ReachError } from '../protocol/errors.ts'
import { sha256Hex } from '../protocol/hash.ts'
import type { Bundle } from './bundle.ts'
import { BUDGET_FIELDS, CAPABILITIES, ENGINE_VERSION, engineSatisfies, type Budget, type Capability } from './manifest.ts'
import { verifyPackSignature, type TrustStatus } from './trust.ts'

export const POLICY_VERSION = 1

export interface NodePolicy {
  version: 1
  /** Run packs that carry no signature at all. Off: an unsigned pack is code nobody vouches for. */
  allow_unsigned_legacy: boolean
  granted_capabilities: Capability[]
  /**
   * Hosts `http.fetch` may reach, as a URL's `host` spells them ("example.org",
   * "localhost:8080"; lowercase, default ports omitted). Empty by default:
   * granting the capability without listing a host reaches nothing.
   */
  http_allowlist: string[]
  max_budget: Budget
  /** How deep a chain of delegations this node serves (A→B is depth 1). */
  max_delegation_depth: number
  /**
   * Worker threads that run packs off the node's event loop (at most; each hosts many runs). A
   * pack looping within its budget holds one thread, never the control API or the mesh.
   */
  run_threads: number
  /**
   * What this node witnesses by itself (issue 13): every delegated result it receives
   * (`verify_delegated`), a seeded share of the run checkpoints gossiped to it
   * (`verify_sample_rate`, 0 to 1), with a bounded queue of its own. None of these change what a
   * run does, so, like `run_threads`, they are not part of `policy_version`.
   */
  verify_delegated: boolean
  verify_sample_rate: number
  verify_concurrency: number
  verify_queue: number
  /**
   * Replay, to verify, runs of packs whose publisher this node does not trust (default yes):
   * a replay calls no tool, and the sandbox with this policy's limits is the containment. Such
   * packs are still never run here.
   */
  verify_untrusted_packs: boolean
}

/** What a node witnesses when its policy does not say: the results it delegated, one at a time. */
export const DEFAULT_WITNESSING = Object.freeze({ verify_delegated: true, verify_sample_rate: 0, verify_concurrency: 1, verify_queue: 64, verify_untrusted_packs: true })
/** Fields that never change what a run does, left out of `policy_version`. */
const OPERATIONAL = ['run_threads', 'verify_delegated', 'verify_sample_rate', 'verify_concurrency', 'verify_queue', 'verify_untrusted_packs'] as const

/** Two: on a small machine a busy pack leaves the other core to the node and to a second run. */
export const DEFAULT_RUN_THREADS = 2
/** A ceiling that no machine here needs more of (each thread holds its own sandboxes). */
export const MAX_RUN_THREADS = 64

/**
 * Capabilities granted when the policy does not say otherwise. The clock,
 * randomness and the node-local key-value store only hand the pack values
 * that are recorded in its log; they reach nothing outside the node.
 * `http.fetch` is not granted: it lets a pack talk to the network from this
 * node's address (internal services, metadata endpoints, exfiltration), so an
 * operator must opt in, with an allowlist. `reach.delegate` spends other
 * nodes' resources in this node's name and is likewise opt-in.
 */
export const DEFAULT_GRANTED: readonly Capability[] = ['clock.now', 'random.bytes', 'kv.get', 'kv.put']

/** The most one run may ask for unless the operator raises it. */
export const DEFAULT_MAX_BUDGET: Readonly<Budget> = {
  /**
   * Sandbox fuel in interrupt ticks (about 10,000 loop back-edges or calls
   * each; 0.03 to 1.5 ms of CPU): a million ticks is minutes of work, more
   * than any pack on this node should need in one run.
   */
  fuel: 1_000_000,
  /** QuickJS heap per run: 64 MiB lets a few runs share a small (2 GB) machine. */
  memory_bytes: 64 * 1024 * 1024,
  /** The output is recorded in the log and hashed; 1 MiB keeps logs and proofs small. */
  output_bytes: 1024 * 1024,
  /** Every call is two durable log events; 1000 bounds a run's log to a few thousand events. */
  tool_calls: 1000,
  /** 30 s: packs are short computations; long jobs are split into runs or delegated. */
  wall_ms: 30_000
}

/** Four hops: enough for a pack that fans out through a helper, few enough that a loop dies fast. */
export const DEFAULT_MAX_DELEGATION_DEPTH = 4

export const DEFAULT_POLICY: Readonly<NodePolicy> = Object.freeze({
  version: POLICY_VERSION,
  allow_unsigned_legacy: false,
  granted_capabilities: [...DEFAULT_GRANTED],
  http_allowlist: [],
  max_budget: { ...DEFAULT_MAX_BUDGET },
  max_delegation_depth: DEFAULT_MAX_DELEGATION_DEPTH,
  run_threads: DEFAULT_RUN_THREADS,
  ...DEFAULT_WITNESSING
})

/** The default policy as a fresh object. */
export function defaultPolicy (): NodePolicy {
  return { version: POLICY_VERSION, allow_unsigned_legacy: false, granted_capabilities: [...DEFAULT_GRANTED], http_allowlist: [], max_budget: { ...DEFAULT_MAX_BUDGET }, max_delegation_depth: DEFAULT_MAX_DELEGATION_DEPTH, run_threads: DEFAULT_RUN_THREADS, ...DEFAULT_WITNESSING }
}

/** An allowlist is a handful of APIs; 256 entries bounds the list without getting in anyone's way. */
export const MAX_HTTP_ALLOWLIST = 256
/** A URL `host`: lowercase name or [IPv6], optional port; no scheme, path or user info. */
const HOST_PATTERN = '^(\\[[0-9a-f:.]+\\]|[a-z0-9]([a-z0-9.-]*[a-z0-9])?)(:[0-9]{1,5})?$'

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['version'],
  properties: {
    version: { const: POLICY_VERSION },
    allow_unsigned_legacy: { type: 'boolean' },
    granted_capabilities: { type: 'array', uniqueItems: true, items: { type: 'string', enum: [...CAPABILITIES] } },
    http_allowlist: { type: 'array', uniqueItems: true, maxItems: MAX_HTTP_ALLOWLIST, items: { type: 'string', maxLength: 260, pattern: HOST_PATTERN } },
    max_budget: {
      type: 'object',
      additionalProperties: false,
      properties: Object.fromEntries(BUDGET_FIELDS.map((f) => [f, { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER }]))
    },
    max_delegation_depth: { type: 'integer', minimum: 0, maximum: 64 },
    run_threads: { type: 'integer', minimum: 1, maximum: MAX_RUN_THREADS },
    verify_delegated: { type: 'boolean' },
    verify_sample_rate: { type: 'number', minimum: 0, maximum: 1 },
    verify_concurrency: { type: 'integer', minimum: 1, maximum: 64 },
    verify_queue: { type: 'integer', minimum: 0, maximum: 100_000 },
    verify_untrusted_packs: { type: 'boolean' }
  }
} as const

let validator: ValidateFunction | undefined

/** The compiled schema, built on first use (see manifest.ts). */
function validate (value: unknown): boolean {
  validator ??= new Ajv({ strict: true, allErrors: false }).compile(schema)
  return validator(value)
}

function invalidPolicy (path: string, why: string, field?: string): never {
  throw new ReachError('RL-3011', { message: `policy ${path} is invalid: ${why}`, details: { path, ...(field === undefined ? {} : { field }) } })
}

/**
 * Validate a parsed policy and fill in defaults. Throws RL-3011 naming the
 * field. The granted capabilities and the allowlist come back sorted (their
 * order means nothing, and policyVersion must not depend on it).
 */
export function parsePolicy (value: unknown, path = '(policy)'): NodePolicy {
  if (!validate(value)) {
    const e = (validator?.errors ?? [])[0]
    const parts = (e?.instancePath ?? '').split('/').slice(1)
    if (e?.keyword === 'required') parts.push(String(e.params.missingProperty))
    if (e?.keyword === 'additionalProperties') parts.push(String(e.params.additionalProperty))
    const field = parts.join('.').replace(/\.(\d+)(?=\.|$)/g, '[$1]') || '(root)'
    const hints: Record<string, string> = {
      additionalProperties: 'is not a policy field',
      const: `must be ${POLICY_VERSION}`,
      enum: `must be one of ${CAPABILITIES.join(', ')}`,
      pattern: 'must be a host as a URL spells it ("example.org", "localhost:8080"), lowercase'
    }
    const why = hints[e?.keyword ?? ''] ?? e?.message ?? 'is invalid'
    invalidPolicy(path, `${field} ${why}`, field)
  }
  const v = value as Partial<NodePolicy>
  const order = (c: Capability): number => CAPABILITIES.indexOf(c)
  return {
    version: POLICY_VERSION,
    allow_unsigned_legacy: v.allow_unsigned_legacy ?? false,
    granted_capabilities: [...(v.granted_capabilities ?? DEFAULT_GRANTED)].sort((a, b) => order(a) - order(b)),
    http_allowlist: [...(v.http_allowlist ?? [])].sort(),
    max_budget: Object.fromEntries(BUDGET_FIELDS.map((f) => [f, v.max_budget?.[f] ?? DEFAULT_MAX_BUDGET[f]])) as Budget,
    max_delegation_depth: v.max_delegation_depth ?? DEFAULT_MAX_DELEGATION_DEPTH,
    run_threads: v.run_threads ?? DEFAULT_RUN_THREADS,
    verify_delegated: v.verify_delegated ?? DEFAULT_WITNESSING.verify_delegated,
    verify_sample_rate: v.verify_sample_rate ?? DEFAULT_WITNESSING.verify_sample_rate,
    verify_concurrency: v.verify_concurrency ?? DEFAULT_WITNESSING.verify_concurrency,
    verify_queue: v.verify_queue ?? DEFAULT_WITNESSING.verify_queue,
    verify_untrusted_packs: v.verify_untrusted_packs ?? DEFAULT_WITNESSING.verify_untrusted_packs
  }
}

/** Load the policy at `path`: a missing file is the default policy, a malformed one RL-3011. */
export async function loadPolicy (path: string): Promise<NodePolicy> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return defaultPolicy()
    throw new ReachError('RL-1004', { message: `cannot read policy ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, details: { path }, cause: err })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    invalidPolicy(path, `not valid JSON (${(err as Error).message})`)
  }
  return parsePolicy(value, path)
}

/** sha256(canonical(policy)), hex: recorded by every run admitted under it. */
export function policyVersion (policy: NodePolicy): string {
  const rules: Record<string, unknown> = { ...policy }
  for (const f of OPERATIONAL) delete rules[f]
  return sha256Hex(canonicalize(rules as never))
}

/** Throw RL-3009 unless every capability is granted. */
export function checkCapabilities (capabilities: readonly string[], policy: NodePolicy): void {
  const missing = capabilities.filter((c) => !(policy.granted_capabilities as readonly string[]).includes(c))
  if (missing.length > 0) {
    throw new ReachError('RL-3009', {
      message: `capability ${missing.join(', ')} is not granted by this node's policy (granted: ${policy.granted_capabilities.join(', ') || 'none'})`,
      details: { capability: missing[0], missing, granted: policy.granted_capabilities }
    })
  }
}

/** Throw RL-3010 naming the first budget field over the policy's maximum. */
export function checkBudget (budget: Partial<Budget>, policy: NodePolicy): void {
  for (const f of BUDGET_FIELDS) {
    const asked = budget[f]
    if (asked !== undefined && asked > policy.max_budget[f]) {
      throw new ReachError('RL-3010', {
        message: `budget ${f} ${asked} exceeds this node's maximum ${policy.max_budget[f]}`,
        details: { field: f, requested: asked, max: policy.max_budget[f] }
      })
    }
  }
}

export interface AdmitInput {
  /** A bundle from `decodeBundle`/`buildBundle` (already verified against its CID). */
  bundle: Bundle
  cid: string
  /** Signature envelopes offered with the pack (any shape: each is verified). */
  signatures: readonly unknown[]
  registry: { status (publicKey: string): TrustStatus }
  policy: NodePolicy
  /** The engine version to check the manifest's range against (default ENGINE_VERSION). */
  engineVersion?: string
}

export interface Admission {
  /** The trusted publisher whose signature admitted the pack; absent for a legacy unsigned pack. */
  publisher?: string
  legacy_unsigned: boolean
}

/**
 * May this pack run on this node? Pure; throws the first failure in the
 * fixed order (engine, signatures, capabilities, budget). Every signature
 * offered must be valid for this CID and manifest (RL-3008): a pack that
 * arrives with a forged or misplaced signature is refused even if another
 * signature is good. At least one must be by a trusted key; otherwise
 * RL-3007 if any signer is revoked, else RL-3006. The legacy override admits
 * packs with no signature at all; it never excuses a bad or untrusted one.
 */
export function admitPack (input: AdmitInput): Admission {
  const { bundle, cid, signatures, registry, policy } = input
  const manifest = bundle.manifest
  const engineVersion = input.engineVersion ?? ENGINE_VERSION
  if (!engineSatisfies(manifest, engineVersion)) {
    throw new ReachError('RL-3013', {
      message: `pack ${manifest.name}@${manifest.version} needs engine ${manifest.engine}; this node runs engine ${engineVersion}`,
      details: { engine: manifest.engine, node_engine: engineVersion }
    })
  }

  let publisher: string | undefined
  if (signatures.length === 0) {
    if (!policy.allow_unsigned_legacy) {
      throw new ReachError('RL-3005', { message: `pack ${manifest.name}@${manifest.version} (${cid}) is unsigned and this node's policy requires a signature`, details: { cid } })
    }
  } else {
    const verified = signatures.map((s, i) => {
      try {
        return verifyPackSignature(s, { cid, manifest })
      } catch (err) {
        if (err instanceof ReachError) err.details.index = i
        throw err
      }
    })
    const trusted = verified.find((s) => registry.status(s.publisher) === 'trusted')
    if (trusted === undefined) {
      const revoked = verified.find((s) => registry.status(s.publisher) === 'revoked')
      if (revoked !== undefined) {
        throw new ReachError('RL-3007', { message: `pack ${cid} is signed by ${revoked.publisher}, whose key is revoked, and by no trusted key`, details: { cid, publisher: revoked.publisher } })
      }
      const signers = verified.map((s) => s.publisher)
      throw new ReachError('RL-3006', { message: `pack ${cid} is signed only by key(s) not in the trust registry: ${signers.join(', ')}`, details: { cid, publishers: signers } })
    }
    publisher = trusted.publisher
  }

  checkCapabilities(manifest.capabilities, policy)
  checkBudget(manifest.budget, policy)
  return publisher === undefined ? { legacy_unsigned: true } : { publisher, legacy_unsigned: false }
}
