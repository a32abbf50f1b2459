/**
 * RFC 8785 JSON Canonicalization Scheme (JCS).
 *
 * JCS is defined so that ECMAScript's own serialisation does most of the
 * work: strings are escaped as `JSON.stringify` escapes them and numbers are
 * printed as `Number.prototype.toString` prints them (RFC 8785 §3.2.2.3). What
 * JCS adds is object member ordering by UTF-16 code units, which is exactly
 * `Array.prototype.sort` with no comparator, and a refusal of anything JSON
 * cannot carry (NaN, ±Infinity, lone surrogates, undefined, functions,
 * bigints, class instances). Refusal is an RL-1006 error, never a silent
 * `null` the way `JSON.stringify` would do it.
 *
 * This runs on the hot path (every event is hashed on append and on verify),
 * so it is a single recursive pass that appends to one string.
 */
import { ReachError } from './errors.ts'

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }
export type JsonObject = { [key: string]: JsonValue }

function fail (path: string, why: string): never {
  throw new ReachError('RL-1006', { message: `value at ${path === '' ? '(root)' : path} cannot be canonicalised: ${why}`, details: { path } })
}

/**
 * Why `value` (at `path`) cannot be canonicalised. The fast writer below
 * does not track paths (building them costs more than the serialisation
 * itself); when it meets a bad value it asks this slow walk where it was.
 */
function problem (value: unknown, path: string, depth = 0): [string, string] | undefined {
  switch (typeof value) {
    case 'string':
      // A lone UTF-16 surrogate has no UTF-8 encoding (RFC 8785 §3.2.2.2).
      return value.isWellFormed() ? undefined : [path, 'string contains a lone UTF-16 surrogate']
    case 'number':
      return Number.isFinite(value) ? undefined : [path, `${value} is not a finite number`]
    case 'boolean':
      return undefined
    case 'object': {
      if (value === null) return undefined
      if (depth >= MAX_DEPTH) return [path, `nested deeper than ${MAX_DEPTH} levels (or cyclic)`]
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          if (!(i in value)) return [`${path}[${i}]`, 'sparse array hole']
          const p = problem(value[i], `${path}[${i}]`, depth + 1)
          if (p !== undefined) return p
        }
        return undefined
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) return [path, `${proto?.constructor?.name ?? 'exotic'} object is not plain JSON`]
      for (const k of Object.keys(value)) {
        const at = path === '' ? k : `${path}.${k}`
        if (!k.isWellFormed()) return [at, 'key contains a lone UTF-16 surrogate']
        const p = problem((value as Record<string, unknown>)[k], at, depth + 1)
        if (p !== undefined) return p
      }
      return undefined
    }
    default:
      return [path, `${typeof value} is not a JSON type`]
  }
}

class NotCanonical extends Error {}
const NOT_CANONICAL = new NotCanonical()

/**
 * Deepest nesting accepted. Far below the ~7,000 levels where recursion
 * overflows the stack, and it turns a cyclic value into an RL-1006 instead
 * of a RangeError.
 */
export const MAX_DEPTH = 1000

function write (value: unknown, depth: number): string {
  switch (typeof value) {
    case 'string':
      if (!value.isWellFormed()) throw NOT_CANONICAL
      return JSON.stringify(value)
    case 'number':
      if (!Number.isFinite(value)) throw NOT_CANONICAL
      // ES Number::toString is the JCS number format; -0 serialises as 0.
      return JSON.stringify(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'object': {
      if (value === null) return 'null'
      if (depth >= MAX_DEPTH) throw NOT_CANONICAL
      if (Array.isArray(value)) {
        let out = '['
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ','
          if (!(i in value)) throw NOT_CANONICAL
          out += write(value[i], depth + 1)
        }
        return out + ']'
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) throw NOT_CANONICAL
      // Default sort compares UTF-16 code units: exactly JCS member order.
      const keys = Object.keys(value).sort()
      let out = '{'
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i] as string
        if (i > 0) out += ','
        if (!k.isWellFormed()) throw NOT_CANONICAL
        out += JSON.stringify(k) + ':' + write((value as Record<string, unknown>)[k], depth + 1)
      }
      return out + '}'
    }
    default:
      throw NOT_CANONICAL
  }
}

/** The RFC 8785 canonical form of `value`, as a string. Throws RL-1006. */
export function canonicalize (value: unknown): string {
  try {
    return write(value, 0)
  } catch (err) {
    if (err !== NOT_CANONICAL) throw err
    const [path, why] = problem(value, '') ?? ['', 'not plain JSON']
    return fail(path, why)
  }
}

const encoder = new TextEncoder()

/** The RFC 8785 canonical form of `value`, UTF-8 encoded. */
export function canonicalBytes (value: unknown): Uint8Array {
  return encoder.encode(canonicalize(value))
}

/**
 * Parse JSON text into a value that canonicalisation accepts. Object keys
 * that JSON.parse would silently collapse (duplicates) are an input error in
 * a signed format, so callers that need byte-exactness should compare
 * `canonicalize(parse(text)) === text` (see `isCanonical`).
 */
export function parseJson (text: string, what = 'input'): JsonValue {
  try {
    return JSON.parse(text) as JsonValue
  } catch (err) {
    throw new ReachError('RL-1002', { message: `${what} is not valid JSON: ${(err as Error).message}`, cause: err })
  }
}

/** True when `text` is exactly the canonical serialisation of what it encodes. */
export function isCanonical (text: string): boolean {
  let value: unknown
  try {
    value = JSON.parse(text)
    return canonicalize(value) === text
  } catch {
    return false
  }
}

/**
 * A value from outside, quoted for a message: JSON, cut to `max` characters. Never throws (a
 * record's `{"toString": 1}` would make `String()` throw).
 */
export function preview (value: unknown, max = 80): string {
  let text: string
  try {
    text = JSON.stringify(value) ?? typeof value
  } catch {
    text = typeof value
  }
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}
