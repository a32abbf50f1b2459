/**
 * How every command talks to its caller: one JSON document on stdout with
 * `--json`, readable lines otherwise; failures as `error RL-XXXX: ...` with a
 * non-zero exit. Commands build a `Report`; only main.ts prints.
 */
import { parseJson, type JsonObject, type JsonValue } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'

export interface Io {
  json: boolean
  write: (text: string) => void
}

export interface Report {
  /** Lines for a person. */
  human: string[]
  /** The machine-readable result (merged with `ok: true`). */
  json: Record<string, unknown>
  /** Non-zero when the command ran but its verdict is negative (e.g. a failed verification). */
  exitCode?: number
}

/** A streaming command writes its own output and returns nothing. */
export type Outcome = Report | undefined

export function parseSeqOption (value: string, name: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new ReachError('RL-1003', { message: `${name} must be a non-negative integer, got "${value}"` })
  }
  return Number(value)
}

export function parseJsonOption (value: string, name: string): JsonValue {
  return parseJson(value, name)
}

export function parseObjectOption (value: string, name: string): JsonObject {
  const v = parseJson(value, name)
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ReachError('RL-1002', { message: `${name} must be a JSON object` })
  return v
}

export function short (hash: string, n = 16): string {
  return hash.slice(0, n)
}

export function plural (n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`
}
