/**
 * A run's sandbox limits: the defaults (sandbox-constants.ts, where each value is explained), and
 * the check that a run's limits can be honoured.
 */
import { ReachError } from '../../protocol/errors.ts'
import {
  BASE_MEMORY_BYTES, DEFAULT_FUEL, DEFAULT_MEMORY_BYTES, DEFAULT_OUTPUT_BYTES, DEFAULT_STACK_BYTES, DEFAULT_WALL_MS,
  MAX_ERROR_MESSAGE, MAX_MEMORY_BYTES, MAX_STACK_BYTES
} from '../sandbox-constants.ts'

export interface SandboxLimits {
  /** Deterministic budget in QuickJS interrupt ticks, summed over all calls of a run (loading included). */
  fuel: number
  /** Heap the pack may allocate: growth of the sandbox's WebAssembly memory beyond a blank sandbox's. */
  memoryBytes: number
  /** QuickJS stack limit (runtime.setMaxStackSize), at most 1 MiB; past ~450 KiB the host's stack may give out first, see sandbox-constants.ts. */
  stackBytes: number
  /** Largest canonical JSON size (UTF-8 bytes) of any value returned to the host. */
  outputBytes: number
  /** Wall-clock backstop per call (and for loading); never decides a successful result. */
  wallMs: number
}

export const DEFAULT_LIMITS: SandboxLimits = Object.freeze({
  fuel: DEFAULT_FUEL,
  memoryBytes: DEFAULT_MEMORY_BYTES,
  stackBytes: DEFAULT_STACK_BYTES,
  outputBytes: DEFAULT_OUTPUT_BYTES,
  wallMs: DEFAULT_WALL_MS
})

/** The defaults overridden by the fields `limits` sets; throws RL-1003 for a limit that cannot be honoured. */
export function fullLimits (limits: Partial<SandboxLimits>): SandboxLimits {
  const full: SandboxLimits = { ...DEFAULT_LIMITS }
  for (const key of Object.keys(DEFAULT_LIMITS) as Array<keyof SandboxLimits>) {
    const v = limits[key]
    if (v !== undefined) full[key] = v
  }
  for (const [name, value] of Object.entries(full)) {
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new ReachError('RL-1003', { message: `sandbox limit ${name} must be a positive integer, got ${String(value)}`, details: { limit: name } })
    }
  }
  const ceilings: Array<[keyof SandboxLimits, number]> = [['memoryBytes', MAX_MEMORY_BYTES - BASE_MEMORY_BYTES], ['stackBytes', MAX_STACK_BYTES]]
  for (const [name, max] of ceilings) {
    if (full[name] > max) throw new ReachError('RL-1003', { message: `sandbox limit ${name} must be at most ${max}, got ${full[name]}`, details: { limit: name } })
  }
  return full
}

/** A message from the VM or the pack, cut to what reaches the host. */
export function truncate (s: string): string {
  return s.length > MAX_ERROR_MESSAGE ? s.slice(0, MAX_ERROR_MESSAGE) + '…' : s
}
