/**
 * How many entries a list may return: `reach runs list --limit N` and `?limit=N` on the control
 * API's list routes read it with the same parser, so the two cannot disagree about what a limit
 * is.
 */
import { ReachError } from '../protocol/errors.ts'

/**
 * `text` as a limit: a positive integer (decimal digits only). 0, a negative number, a fraction
 * or a word is RL-1003: a limit that cannot be honoured is refused, never read as "all".
 */
export function parseLimit (text: string, name = 'limit'): number {
  const n = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1) {
    throw new ReachError('RL-1003', { message: `${name} must be a positive integer, got ${JSON.stringify(text.slice(0, 40))}`, details: { option: name, value: text.slice(0, 40) } })
  }
  return n
}

/** At most `limit` of `items` (all of them when no limit was given). */
export function limited<T> (items: readonly T[], limit: number | undefined): T[] {
  return limit === undefined ? [...items] : items.slice(0, limit)
}
