/**
 * `reach-pack.json`: what a pack is, what it may ask for, and what it needs.
 *
 *   {
 *     "name": "counter",                 lowercase [a-z0-9-], at most 64 characters
 *     "version": "1.0.0",                a semver version (no "v", no spaces)
 *     "description": "…",
 *     "entry": "index.js",               a relative .js path inside the pack
 *     "capabilities": ["kv.get"],        unique names from CAPABILITIES
 *     "engine": "^1.0.0",                a semver range ENGINE_VERSION must satisfy
 *     "budget": {"fuel": …, "memory_bytes": …, "output_bytes": …, "tool_calls": …, "wall_ms": …}
 *   }
 *
 * Every field is required and no other field is allowed: a manifest is
 * hashed and signed, so a field this engine does not understand is refused
 * (RL-3001) rather than ignored. Errors name the field.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import semver from 'semver'
import { ReachError } from '../protocol/errors.ts'

/**
 * The version of the pack engine (sandbox, run loop, tool contract) this
 * node implements. Manifests state the range they need in `engine`; it moves
 * only when what a pack observes changes, not with the package version.
 */
export const ENGINE_VERSION = '1.0.0'

/** The file at the root of a pack folder that holds its manifest. */
export const MANIFEST_FILE = 'reach-pack.json'

/** Host tools a pack may declare; DESIGN.md §3 (tools/). */
export const CAPABILITIES = ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch', 'reach.delegate'] as const
export type Capability = typeof CAPABILITIES[number]

/** The budget fields, in the order they are shown. */
export const BUDGET_FIELDS = ['fuel', 'memory_bytes', 'output_bytes', 'tool_calls', 'wall_ms'] as const
export type BudgetField = typeof BUDGET_FIELDS[number]
export type Budget = Record<BudgetField, number>

export interface PackManifest {
  name: string
  version: string
  description: string
  entry: string
  capabilities: Capability[]
  engine: string
  budget: Budget
}

/** Pack names are also CLI arguments and file-name parts: 64 is plenty and keeps them readable. */
export const MAX_NAME_LENGTH = 64
/** A description is one paragraph shown by `reach pack inspect`, not documentation. */
export const MAX_DESCRIPTION_LENGTH = 1024
/** Paths inside a pack (the entry, bundle file names): deep trees are not what packs are for. */
export const MAX_PATH_LENGTH = 256
/** Versions and ranges are short; the cap stops pathological inputs reaching the semver parser. */
export const MAX_SEMVER_LENGTH = 128

const NAME_PATTERN = '^[a-z0-9][a-z0-9-]*$'

/**
 * True for a relative POSIX path that stays inside the pack: no leading "/",
 * no empty, "." or ".." segment, no dot-file segment; no "\\" or ":" (Windows
 * separators and drive letters, which would let a path escape on another OS)
 * and no control characters. It must be in Unicode NFC, so a name typed on
 * macOS (NFD) and on Linux (NFC) cannot give two packs, or two files, that
 * look the same. The same rule applies to every file of a bundle.
 */
export function isPackPath (path: string): boolean {
  if (path.length === 0 || path.length > MAX_PATH_LENGTH) return false
  if (!path.isWellFormed() || path.normalize('NFC') !== path) return false
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\:]/.test(path)) return false
  for (const segment of path.split('/')) {
    if (segment === '' || segment.startsWith('.')) return false
  }
  return true
}

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'version', 'description', 'entry', 'capabilities', 'engine', 'budget'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: NAME_PATTERN },
    version: { type: 'string', maxLength: MAX_SEMVER_LENGTH, format: 'semver' },
    description: { type: 'string', maxLength: MAX_DESCRIPTION_LENGTH },
    entry: { type: 'string', maxLength: MAX_PATH_LENGTH, format: 'pack-entry' },
    capabilities: { type: 'array', uniqueItems: true, items: { type: 'string', enum: [...CAPABILITIES] } },
    engine: { type: 'string', maxLength: MAX_SEMVER_LENGTH, format: 'semver-range' },
    budget: {
      type: 'object',
      additionalProperties: false,
      required: [...BUDGET_FIELDS],
      properties: Object.fromEntries(BUDGET_FIELDS.map((f) => [f, { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER }]))
    }
  }
} as const

let validator: ValidateFunction<PackManifest> | undefined

/**
 * The compiled schema, built on first use: compiling costs ~30 ms, which a
 * command that imports this module only for its types or constants should
 * not pay at start-up.
 */
function validate (value: unknown): value is PackManifest {
  if (validator === undefined) {
    const ajv = new Ajv({ strict: true, allErrors: false })
    // `semver.valid` accepts "v1.0.0" and surrounding spaces and returns the
    // cleaned form; a signed manifest must carry exactly one spelling.
    ajv.addFormat('semver', (v: string) => semver.valid(v) === v)
    ajv.addFormat('semver-range', (v: string) => v.trim() !== '' && semver.validRange(v) !== null)
    ajv.addFormat('pack-entry', (v: string) => isPackPath(v) && v.endsWith('.js'))
    validator = ajv.compile<PackManifest>(schema)
  }
  return validator(value)
}

const FORMAT_HINTS: Record<string, string> = {
  semver: 'must be a semver version such as "1.0.0"',
  'semver-range': 'must be a semver range such as "^1.0.0"',
  'pack-entry': 'must be a relative .js path inside the pack (no "..", no leading "/", no dot-files)'
}

/** "budget.fuel", "capabilities[2]" from an ajv error. */
function fieldOf (e: ErrorObject): string {
  const parts = e.instancePath.split('/').slice(1)
  if (e.keyword === 'required') parts.push(String(e.params.missingProperty))
  if (e.keyword === 'additionalProperties') parts.push(String(e.params.additionalProperty))
  let out = ''
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : (out === '' ? p : `.${p}`)
  return out === '' ? '(root)' : out
}

function explain (e: ErrorObject): string {
  switch (e.keyword) {
    case 'required': return 'is required'
    case 'additionalProperties': return 'is not a manifest field'
    case 'format': return FORMAT_HINTS[String(e.params.format)] ?? `must match format ${String(e.params.format)}`
    case 'pattern': return 'must be lowercase letters, digits and "-", starting with a letter or digit'
    case 'enum': return `must be one of ${CAPABILITIES.join(', ')}`
    case 'uniqueItems': return 'must not repeat a capability'
    default: return e.message ?? 'is invalid'
  }
}

/** Throw RL-3001 naming `field`. */
export function manifestError (field: string, why: string, details: Record<string, unknown> = {}): never {
  throw new ReachError('RL-3001', { message: `${MANIFEST_FILE}: ${field} ${why}`, details: { field, ...details } })
}

/**
 * Validate a parsed manifest and return it as a fresh plain object (no
 * aliasing with the input). Throws RL-3001 naming the first bad field.
 */
export function parseManifest (value: unknown): PackManifest {
  if (!validate(value)) {
    const e = (validator?.errors ?? [])[0]
    if (e === undefined) manifestError('(root)', 'is invalid')
    manifestError(fieldOf(e), explain(e))
  }
  const m = value
  return {
    name: m.name,
    version: m.version,
    description: m.description,
    entry: m.entry,
    capabilities: [...m.capabilities],
    engine: m.engine,
    budget: Object.fromEntries(BUDGET_FIELDS.map((f) => [f, m.budget[f]])) as Budget
  }
}

/** Parse manifest text (a `reach-pack.json` file). RL-3001 when it is not JSON. */
export function parseManifestText (text: string): PackManifest {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    manifestError('(root)', `is not valid JSON (${(err as Error).message})`)
  }
  return parseManifest(value)
}

/** True when this node's ENGINE_VERSION satisfies the manifest's range. */
export function engineSatisfies (manifest: Pick<PackManifest, 'engine'>, engineVersion = ENGINE_VERSION): boolean {
  return semver.satisfies(engineVersion, manifest.engine)
}
