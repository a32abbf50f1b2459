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

// A lone (unpaired) UTF-16 surrogate cannot be encoded as UTF-8, so JCS
// rejects it (RFC 8785 §3.2.2.2 requires valid Unicode).
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

function fail (path: string, why: string): never {
  throw new ReachError('RL-1006', { message: `value at ${path === '' ? '(root)' : path} cannot be canonicalised: ${why}`, details: { path } })
}

function str (s: string, path: string): string {
  if (LONE_SURROGATE.test(s)) fail(path, 'string contains a lone UTF-16 surrogate')
  return JSON.stringify(s)
}

function write (value: unknown, path: string): string {
  switch (typeof value) {
    case 'string':
      return str(value, path)
    case 'number':
      if (!Number.isFinite(value)) fail(path, `${value} is not a finite number`)
      // ES Number::toString is the JCS number format; -0 serialises as 0.
      return JSON.stringify(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'object': {
      if (value === null) return 'null'
      if (Array.isArray(value)) {
        let out = '['
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ','
          if (!(i in value)) fail(`${path}[${i}]`, 'sparse array hole')
          out += write(value[i], `${path}[${i}]`)
        }
        return out + ']'
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) fail(path, `${proto?.constructor?.name ?? 'exotic'} object is not plain JSON`)
      const keys = Object.keys(value).sort()
      let out = '{'
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i] as string
        const v = (value as Record<string, unknown>)[k]
        if (i > 0) out += ','
        out += str(k, path) + ':' + write(v, path === '' ? k : `${path}.${k}`)
      }
      return out + '}'
    }
    default:
      return fail(path, `${typeof value} is not a JSON type`)
  }
}

/** The RFC 8785 canonical form of `value`, as a string. Throws RL-1006. */
export function canonicalize (value: unknown): string {
  return write(value, '')
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
