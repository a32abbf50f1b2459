/**
 * The peer registry's saved reputation (`peers.json`, version 1) and where it is kept.
 *
 *   { "version": 1, "peers": { "<peer id>": { successes, failures, verification_failures,
 *       latency_ewma_ms, last_success, last_failure: {at, code} | null } } }
 *
 * Peers sorted by id, two-space indented, a final newline. Read strictly: anything off is RL-1012.
 */
import { ReachError } from '../protocol/errors.ts'

export const PEER_FILE_VERSION = 1

/**
 * Where the registry keeps its text. The node's is `peers.json` in the data dir, written with
 * writeFileAtomic, mode 0600.
 */
export interface PeerStore {
  /**
   * The text last written, or undefined when nothing was ever saved. A store that cannot read
   * throws (the node: RL-1004); the registry passes that on as it is.
   */
  read (): Promise<string | undefined>
  /**
   * Replace the saved text as a whole: a later read() returns this text or the one before,
   * never a mix. The registry calls it one at a time, never concurrently.
   */
  write (text: string): Promise<void>
  /** Names the store in error messages (the node: the file's path). */
  name?: string
}

/** What a peer's saved entry holds. */
export interface Reputation {
  successes: number
  failures: number
  verification_failures: number
  latency_ewma_ms: number | null
  last_success: number | null
  last_failure: { at: number, code: string } | null
}

/** Whether a peer's record is worth saving (and keeping): peers only ever seen connected or pinged have none. */
export function hasReputation (r: Reputation): boolean {
  return r.successes + r.failures + r.verification_failures > 0 || r.latency_ewma_ms !== null
}

export function encodePeerFile (peers: ReadonlyMap<string, Reputation>): string {
  const out: Record<string, Reputation> = {}
  for (const peer of [...peers.keys()].sort()) {
    const p = peers.get(peer) as Reputation
    if (!hasReputation(p)) continue
    out[peer] = {
      successes: p.successes,
      failures: p.failures,
      verification_failures: p.verification_failures,
      latency_ewma_ms: p.latency_ewma_ms,
      last_success: p.last_success,
      last_failure: p.last_failure
    }
  }
  return JSON.stringify({ version: PEER_FILE_VERSION, peers: out }, null, 2) + '\n'
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0
const isMs = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0

/** The saved text, checked field by field; anything off is RL-1012 (naming the store when it has a name). */
export function parsePeerFile (text: string, name?: string): Map<string, Reputation> {
  const malformed: (why: string) => never = (why) => {
    throw new ReachError('RL-1012', { message: `peer registry ${name === undefined ? '' : `${name} `}is malformed: ${why}`, ...(name === undefined ? {} : { details: { store: name } }) })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    malformed(`not valid JSON (${(err as Error).message})`)
  }
  if (!isObject(value)) malformed('not a JSON object')
  if (value.version !== PEER_FILE_VERSION) malformed(`unsupported version ${JSON.stringify(value.version)}`)
  if (!isObject(value.peers)) malformed('"peers" is not an object')
  const peers = new Map<string, Reputation>()
  for (const [peer, e] of Object.entries(value.peers)) {
    const where = `peer ${JSON.stringify(peer)}`
    if (peer === '') malformed('empty peer id')
    if (!isObject(e)) malformed(`${where} is not an object`)
    for (const field of ['successes', 'failures', 'verification_failures'] as const) {
      if (!isCount(e[field])) malformed(`${where}: ${field} is not a non-negative integer`)
    }
    for (const field of ['latency_ewma_ms', 'last_success'] as const) {
      if (e[field] !== null && !isMs(e[field])) malformed(`${where}: ${field} is not a non-negative number or null`)
    }
    const lf = e.last_failure
    if (lf !== null && !(isObject(lf) && isMs(lf.at) && typeof lf.code === 'string')) {
      malformed(`${where}: last_failure is not {at, code} or null`)
    }
    peers.set(peer, {
      successes: e.successes as number,
      failures: e.failures as number,
      verification_failures: e.verification_failures as number,
      latency_ewma_ms: e.latency_ewma_ms as number | null,
      last_success: e.last_success as number | null,
      last_failure: lf === null ? null : { at: (lf as { at: number }).at, code: (lf as { code: string }).code }
    })
  }
  return peers
}
