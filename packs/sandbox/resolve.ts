/**
 * Module resolution inside the sandbox: relative specifiers among the pack's own files, nothing
 * else (no built-ins, no packages, no paths above the pack's root).
 */

/** What the normaliser returns for a refused specifier; the loader then refuses to load it. */
export const REFUSED = '<refused>'

/** `specifier` imported from `base`, as a path among the pack's files; undefined if refused. */
export function resolveSpecifier (base: string, specifier: string): string | undefined {
  if (!specifier.startsWith('./') && !specifier.startsWith('../')) return undefined
  const parts = base.split('/')
  parts.pop()
  for (const segment of specifier.split('/')) {
    if (segment === '.') continue
    if (segment === '') return undefined
    if (segment === '..') {
      if (parts.length === 0) return undefined
      parts.pop()
    } else {
      parts.push(segment)
    }
  }
  return parts.join('/')
}
