/**
 * Field-level difference of two JSON values (states, outputs).
 *
 * Paths are RFC 6901 JSON Pointers ("/aggregates/tasks/task-7/status"), so
 * keys containing dots or slashes stay unambiguous. Reference-equal subtrees
 * are skipped without descending, which keeps per-event trace diffs cheap
 * with the copy-on-write reducer.
 */
import type { JsonValue } from './canonical.ts'

export interface FieldChange {
  path: string
  op: 'added' | 'removed' | 'changed'
  before?: JsonValue
  after?: JsonValue
}

function pointer (parent: string, key: string | number): string {
  return `${parent}/${String(key).replaceAll('~', '~0').replaceAll('/', '~1')}`
}

function isObject (v: unknown): v is { [k: string]: JsonValue } {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function walk (a: JsonValue | undefined, b: JsonValue | undefined, path: string, out: FieldChange[], limit: number): void {
  if (out.length >= limit || a === b) return
  if (a === undefined) { out.push({ path, op: 'added', after: b }); return }
  if (b === undefined) { out.push({ path, op: 'removed', before: a }); return }
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
    for (const k of keys) walk(a[k], b[k], pointer(path, k), out, limit)
    return
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const n = Math.max(a.length, b.length)
    for (let i = 0; i < n; i++) walk(a[i], b[i], pointer(path, i), out, limit)
    return
  }
  out.push({ path, op: 'changed', before: a, after: b })
}

/** Every field that differs between `a` and `b`, in path order, at most `limit`. */
export function diffValues (a: JsonValue, b: JsonValue, limit = Number.POSITIVE_INFINITY): FieldChange[] {
  const out: FieldChange[] = []
  walk(a, b, '', out, limit)
  return out
}
