/**
 * Reach error codes.
 *
 * Every failure a user or a peer can see carries a stable `RL-XXXX` code. The
 * registry below is the single source of truth; docs/ERRORS.md documents each
 * entry (a test keeps the two in step). Ranges:
 *
 *   RL-1xxx usage and input          RL-4xxx federation
 *   RL-2xxx integrity                RL-5xxx storage
 *   RL-3xxx packs, policy, sandbox   RL-6xxx control API and auth
 *
 * Codes are never reused or renumbered: peers and scripts match on them.
 */

export const CODES = {
  // usage and input
  'RL-1001': 'unknown command or option',
  'RL-1002': 'argument is not valid JSON',
  'RL-1003': 'argument is not a valid number or sequence number',
  'RL-1004': 'file or directory not found or unreadable',
  'RL-1005': 'invalid event field',
  'RL-1006': 'value cannot be represented in canonical JSON',
  'RL-1007': 'sequence number out of range for this log',
  'RL-1008': 'refusing to overwrite an existing file',
  'RL-1009': 'key file malformed',
  'RL-1010': 'key file permissions too open',
  'RL-1011': 'invalid argument',
  'RL-1012': 'node file invalid',
  'RL-1013': 'listen address in use or not available',
  'RL-1014': 'data dir or file not owned by this user, or writable by others',
  'RL-1015': 'no checkpoint or evidence with this id here',

  // integrity
  'RL-2001': 'event hash mismatch',
  'RL-2002': 'broken hash link (prev_hash does not match the previous event)',
  'RL-2003': 'sequence gap (an event is missing)',
  'RL-2004': 'events out of order',
  'RL-2005': 'duplicate event',
  'RL-2006': 'malformed event',
  'RL-2007': 'logical clock went backwards',
  'RL-2101': 'checkpoint signature invalid',
  'RL-2102': 'checkpoint log hash does not match the log',
  'RL-2103': 'checkpoint merkle root does not match the log',
  'RL-2104': 'checkpoint state hash does not match the replayed state',
  'RL-2105': 'checkpoint malformed or of an unsupported version',
  'RL-2106': 'checkpoint signed by an unexpected key',
  'RL-2107': 'checkpoint refers to a sequence the log does not have',
  'RL-2108': 'checkpoint id does not match its body',
  'RL-2109': 'checkpoint belongs to another log',
  'RL-2110': 'equivocation evidence malformed',
  'RL-2111': 'evidence checkpoints cannot contradict each other (another signer, log, kind or position)',
  'RL-2112': 'evidence checkpoints do not disagree',
  'RL-2113': 'verification receipt invalid',
  'RL-2120': 'checkpoints are not two heads of one audit ledger (another kind, signer or log, or out of order)',
  'RL-2125': 'gossip message malformed',
  'RL-2126': 'gossip message of another federation',
  'RL-2201': 'inclusion proof invalid',
  'RL-2202': 'consistency proof invalid',
  'RL-2203': 'replayed state differs from the expected state',

  // packs, policy and sandbox
  'RL-3001': 'pack manifest invalid',
  'RL-3002': 'pack file rejected (path, kind or size)',
  'RL-3003': 'pack bytes do not match their CID',
  'RL-3004': 'pack bundle malformed or of an unsupported version',
  'RL-3005': 'pack is unsigned',
  'RL-3006': 'pack signed by an unknown publisher',
  'RL-3007': 'pack signed by a revoked publisher',
  'RL-3008': 'pack signature invalid',
  'RL-3009': 'capability not granted by node policy',
  'RL-3010': 'budget exceeds node policy',
  'RL-3011': 'policy file invalid',
  'RL-3012': 'pack not found',
  'RL-3013': 'pack needs an incompatible engine version',
  'RL-3014': 'trust registry invalid',
  'RL-3015': 'capability not declared by the pack',
  'RL-3016': 'tool-call budget exhausted',
  'RL-3017': 'replay diverged from the recorded run (non-determinism)',
  'RL-3018': 'tool failed',
  'RL-3019': 'run not found',
  'RL-3020': 'pack ended without an output',
  'RL-3021': 'run recorded by another engine version or build',
  'RL-3022': 'node policy changed before the run finished',
  'RL-3101': 'fuel exhausted',
  'RL-3102': 'memory limit exceeded',
  'RL-3103': 'stack limit exceeded',
  'RL-3104': 'output too large',
  'RL-3105': 'wall-clock limit exceeded',
  'RL-3106': 'pack code threw an error',
  'RL-3107': 'pack code invalid',
  'RL-3108': 'pack returned a value that is not JSON',

  // federation
  'RL-4001': 'no provider found for the pack',
  'RL-4002': 'peer unavailable',
  'RL-4003': 'peer circuit breaker open',
  'RL-4004': 'delegation depth exceeded',
  'RL-4005': 'delegation cycle',
  'RL-4006': 'peer identity or hop signature invalid',
  'RL-4007': 'peer busy',
  'RL-4008': 'delegation deadline expired',
  'RL-4009': 'delegation nonce replayed',
  'RL-4010': 'malformed protocol frame',
  'RL-4011': 'protocol frame too large',
  'RL-4012': 'unsupported protocol version',
  'RL-4013': 'pack fetch failed at every provider',
  'RL-4014': 'remote result invalid',
  'RL-4015': 'delegation cancelled',
  'RL-4016': 'no peer available',
  'RL-4017': 'remote run not found',
  'RL-4018': 'remote replay did not verify',
  'RL-4019': 'delegation not found',
  'RL-4020': 'peer failed internally',
  'RL-4021': 'peer is untrusted: evidence shows it signed a lie',

  // storage
  'RL-5001': 'duplicate sequence number: append rejected',
  'RL-5002': 'append does not extend the log head',
  'RL-5003': 'torn last line (incomplete write)',
  'RL-5004': 'half-written batch (events without a commit record)',
  'RL-5005': 'log already exists',
  'RL-5006': 'log not found',
  'RL-5007': 'store is closed',
  'RL-5008': 'store is locked by another process',
  'RL-5009': 'store corrupt',
  'RL-5010': 'data dir not writable: read-only file system, permission denied or disk full',

  // control API
  'RL-6001': 'control API: missing or wrong bearer token',
  'RL-6002': 'node is not running',
  'RL-6003': 'control API: unknown route',
  'RL-6004': 'control API: bad request',
  'RL-6005': 'node already running',
  'RL-6006': 'internal error (the daemon or a command failed on its own)'
} as const

export type ErrorCode = keyof typeof CODES

export interface ReachErrorInit {
  /** Human sentence; defaults to the registry summary. */
  message?: string
  /** Sequence number the error is about, when there is one. */
  seq?: number
  /** Extra machine-readable facts (expected vs actual, paths ...). */
  details?: Record<string, unknown>
  cause?: unknown
}

/**
 * The one error type Reach throws across module boundaries. Tests and callers
 * match on `code`, never on the message.
 */
export class ReachError extends Error {
  override readonly name = 'ReachError'
  readonly code: ErrorCode
  readonly seq?: number
  readonly details: Record<string, unknown>

  constructor (code: ErrorCode, init: ReachErrorInit = {}) {
    super(init.message ?? CODES[code], init.cause === undefined ? undefined : { cause: init.cause })
    this.code = code
    if (init.seq !== undefined) this.seq = init.seq
    this.details = init.details ?? {}
  }

  toJSON (): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.seq === undefined ? {} : { seq: this.seq }),
      ...(Object.keys(this.details).length === 0 ? {} : { details: this.details })
    }
  }
}

export function isReachError (err: unknown, code?: ErrorCode): err is ReachError {
  return err instanceof ReachError && (code === undefined || err.code === code)
}

/** A code in this registry (a `{code, message}` from elsewhere is held to it). */
export function isErrorCode (value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(CODES, value)
}
