/**
 * The peer registry: which peer to delegate a run to, and when to stop trying one.
 *
 * Each peer has a reputation (successes, failures, verification failures, a
 * latency average) that survives restarts in a small JSON file, live health
 * (connected, last ping) that does not, and its own opossum circuit breaker,
 * created on first use. `select()` orders candidates by score and leaves out
 * peers whose breaker is open; `call()` runs a request through the peer's
 * breaker and records the outcome.
 *
 * A remote's *policy refusal* (it will not run this pack, the delegation is too
 * deep, a cycle ...) says nothing about its health, so it never trips the
 * breaker: only unavailability, overload, deadlines, protocol violations and
 * unexpected errors do.
 */
import { readFile } from 'node:fs/promises'
import CircuitBreaker from 'opossum'
import { writeFileAtomic } from '../node/fs.ts'
import { isReachError, ReachError } from '../protocol/errors.ts'

export type BreakerState = 'closed' | 'open' | 'half-open'

export interface PeerStats {
  peer: string
  successes: number
  failures: number
  verification_failures: number
  latency_ewma_ms: number | null
  last_success: number | null
  last_failure: { at: number, code: string } | null
  /** Last ping seen (not persisted); `rtt_ms: null` is a failed ping. */
  last_ping: { at: number, rtt_ms: number | null } | null
  breaker: BreakerState
  connected: boolean
  score: number
}

export interface PeerBreakerOptions {
  /** How long a breaker stays open before it lets one half-open probe through (default 10_000). */
  resetTimeoutMs?: number
  /** Calls in the rolling window before the breaker may open at all (default 3). */
  volumeThreshold?: number
  /** Failure percentage in the rolling window above which the breaker opens (default 50). */
  errorThresholdPercentage?: number
  /** Length of the rolling window (default 30_000). */
  rollingCountTimeoutMs?: number
}

export interface PeerRegistryOptions {
  /** opossum settings; tests pass small values. */
  breaker?: PeerBreakerOptions
  /** Clock for timestamps and call latency (default Date.now). */
  now?: () => number
  /** Called after any change to a peer's stats or breaker state (for metrics). */
  onChange?: (peer: string, stats: PeerStats) => void
}

export const PEER_FILE_VERSION = 1

/**
 * A peer is worth trying again 10 s after it tripped; three calls are enough
 * evidence to trip (fewer would let one unlucky request bench a peer); over
 * half failing is the trip point; and a 30 s window outlasts the reset
 * timeout, so a peer that recovers and fails again soon trips at once.
 */
const BREAKER_DEFAULTS: Required<PeerBreakerOptions> = {
  resetTimeoutMs: 10_000,
  volumeThreshold: 3,
  errorThresholdPercentage: 50,
  rollingCountTimeoutMs: 30_000
}

/** Weight of the newest latency sample in the moving average. */
const LATENCY_ALPHA = 0.3

/*
 * Score weights (see peerScore). A verification failure means the peer
 * returned a result that did not check out, which is worse than being down,
 * so it counts as ten failures. Latency only breaks near-ties: at most 0.1,
 * half of that at 1 s. A failed last ping suggests the peer is gone right now;
 * a live connection saves a dial.
 */
const VERIFICATION_FAILURE_WEIGHT = 10
const LATENCY_WEIGHT = 0.1
const LATENCY_HALF_MS = 1_000
const PING_FAILED_PENALTY = 0.2
const CONNECTED_BONUS = 0.05

/** Federation codes that are a remote's deliberate answer rather than a fault. */
// RL-4015 is our own cancellation: the peer did nothing wrong.
// RL-4001/RL-4013: the peer could not get the pack from the DHT, which says nothing of its health.
const REFUSAL_CODES: ReadonlySet<string> = new Set(['RL-4001', 'RL-4004', 'RL-4005', 'RL-4009', 'RL-4012', 'RL-4013', 'RL-4015', 'RL-4017'])

/** Whether `err` is a remote's policy refusal (RL-3xxx and the refusal codes above). */
export function isPolicyRefusal (err: unknown): boolean {
  return isReachError(err) && (err.code.startsWith('RL-3') || REFUSAL_CODES.has(err.code))
}

type Reputation = Pick<PeerStats, 'successes' | 'failures' | 'verification_failures' | 'latency_ewma_ms' | 'last_success' | 'last_failure'>

interface Peer extends Reputation {
  connected: boolean
  last_ping: PeerStats['last_ping']
}

/**
 * Higher is better:
 *
 *   ratio = (successes + 1) / (successes + failures + 10·verification_failures + 2)
 *   score = ratio
 *           − 0.1 · L / (L + 1000)     L = latency EWMA in ms (0 when never measured)
 *           − 0.2 if the last ping failed
 *           + 0.05 if connected
 *
 * The ratio is the success rate with one imagined success and one imagined
 * failure (a Beta(1,1) prior), so a new peer starts at 0.5 and a single
 * outcome does not swing it to 0 or 1.
 */
export function peerScore (stats: Omit<PeerStats, 'peer' | 'breaker' | 'score'>): number {
  const { successes, failures, verification_failures: bad, latency_ewma_ms: latency } = stats
  const ratio = (successes + 1) / (successes + failures + VERIFICATION_FAILURE_WEIGHT * bad + 2)
  const slow = latency === null ? 0 : LATENCY_WEIGHT * latency / (latency + LATENCY_HALF_MS)
  const pingFailed = stats.last_ping !== null && stats.last_ping.rtt_ms === null ? PING_FAILED_PENALTY : 0
  return ratio - slow - pingFailed + (stats.connected ? CONNECTED_BONUS : 0)
}

type Breaker = CircuitBreaker<[() => Promise<unknown>], unknown>

function freshPeer (): Peer {
  return {
    successes: 0,
    failures: 0,
    verification_failures: 0,
    latency_ewma_ms: null,
    last_success: null,
    last_failure: null,
    connected: false,
    last_ping: null
  }
}

function stateOf (breaker: Breaker | undefined): BreakerState {
  if (breaker === undefined) return 'closed'
  return breaker.opened ? 'open' : breaker.halfOpen ? 'half-open' : 'closed'
}

/** Closed, or half-open with its one probe not yet taken (opossum lets exactly one through). */
function admits (breaker: Breaker | undefined): boolean {
  return breaker === undefined || breaker.closed || (breaker.halfOpen && breaker.pendingClose)
}

function failureCode (err: unknown): string {
  if (isReachError(err)) return err.code
  const { code, name } = (err ?? {}) as { code?: unknown, name?: unknown }
  return typeof code === 'string' ? code : typeof name === 'string' ? name : 'error'
}

export class PeerRegistry {
  readonly path: string
  readonly #peers: Map<string, Peer>
  readonly #breakers = new Map<string, Breaker>()
  readonly #settings: Required<PeerBreakerOptions>
  readonly #now: () => number
  readonly #onChange: ((peer: string, stats: PeerStats) => void) | undefined
  #dirty = false
  #closed = false
  /** Saves run one after another: each writes the registry as it is when its turn comes. */
  #saving: Promise<void> = Promise.resolve()

  private constructor (path: string, peers: Map<string, Peer>, options: PeerRegistryOptions) {
    this.path = path
    this.#peers = peers
    const b = options.breaker ?? {}
    this.#settings = {
      resetTimeoutMs: b.resetTimeoutMs ?? BREAKER_DEFAULTS.resetTimeoutMs,
      volumeThreshold: b.volumeThreshold ?? BREAKER_DEFAULTS.volumeThreshold,
      errorThresholdPercentage: b.errorThresholdPercentage ?? BREAKER_DEFAULTS.errorThresholdPercentage,
      rollingCountTimeoutMs: b.rollingCountTimeoutMs ?? BREAKER_DEFAULTS.rollingCountTimeoutMs
    }
    this.#now = options.now ?? Date.now
    this.#onChange = options.onChange
  }

  /**
   * Open the registry persisted at `path`. A missing file is an empty
   * registry; an unreadable one is RL-1004, a malformed one RL-1012.
   */
  static async open (path: string, options: PeerRegistryOptions = {}): Promise<PeerRegistry> {
    let text: string | undefined
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT') {
        throw new ReachError('RL-1004', { message: `cannot read peer registry ${path} (${code ?? 'error'})`, details: { path }, cause: err })
      }
    }
    return new PeerRegistry(path, text === undefined ? new Map() : parsePeerFile(text, path), options)
  }

  /** From libp2p connection events. */
  connected (peer: string, yes: boolean): void {
    const p = this.#peer(peer)
    if (p.connected === yes) return
    p.connected = yes
    this.#notify(peer)
  }

  /** Health from ping: the round trip in ms, or null for a failed ping. */
  recordPing (peer: string, rttMs: number | null): void {
    this.#peer(peer).last_ping = { at: this.#now(), rtt_ms: rttMs }
    this.#notify(peer)
  }

  /** The peer returned a result that did not verify. */
  recordVerificationFailure (peer: string): void {
    this.#peer(peer).verification_failures++
    this.#dirty = true
    this.#notify(peer)
  }

  score (peer: string): number {
    return this.#stats(peer).score
  }

  breakerState (peer: string): BreakerState {
    return stateOf(this.#breakers.get(peer))
  }

  /**
   * Candidates ordered best first, ties by peer id. Left out: duplicates,
   * peers in `exclude` (already tried), peers whose breaker is open, and
   * half-open peers whose single probe is already under way.
   */
  select (candidates: readonly string[], exclude: ReadonlySet<string> = new Set()): string[] {
    const eligible = [...new Set(candidates)].filter((peer) => !exclude.has(peer) && admits(this.#breakers.get(peer)))
    const scores = new Map(eligible.map((peer) => [peer, this.score(peer)]))
    // Plain code-unit comparison for ties: localeCompare would depend on the locale.
    return eligible.sort((a, b) => (scores.get(b) ?? 0) - (scores.get(a) ?? 0) || (a < b ? -1 : a > b ? 1 : 0))
  }

  /**
   * Run `fn` through the peer's breaker and record the outcome. When the
   * breaker is open, throws RL-4003 without calling `fn`. Whatever `fn` throws
   * is rethrown as it is; policy refusals are neither successes nor failures
   * (though a refusal to a half-open probe closes the breaker: the peer answered).
   */
  async call<T> (peer: string, fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new ReachError('RL-5007', { message: 'peer registry is closed' })
    const breaker = this.#breaker(peer)
    if (!admits(breaker)) throw breakerOpen(peer)
    const started = this.#now()
    let result: T
    try {
      result = await breaker.fire(fn) as T
    } catch (err) {
      // opossum's own rejection: another call took the half-open probe first.
      if (err instanceof Error && CircuitBreaker.isOurError(err)) throw breakerOpen(peer, err)
      if (isPolicyRefusal(err)) {
        this.#notify(peer) // no new stats, but a refusal to a half-open probe has closed the breaker
        throw err
      }
      const p = this.#peer(peer)
      p.failures++
      p.last_failure = { at: this.#now(), code: failureCode(err) }
      this.#dirty = true
      this.#notify(peer)
      throw err
    }
    // Only successes feed the latency average: a failure's duration is often a timeout, not the peer's speed.
    const p = this.#peer(peer)
    const now = this.#now()
    const sample = Math.max(0, now - started)
    p.successes++
    p.last_success = now
    p.latency_ewma_ms = p.latency_ewma_ms === null ? sample : LATENCY_ALPHA * sample + (1 - LATENCY_ALPHA) * p.latency_ewma_ms
    this.#dirty = true
    this.#notify(peer)
    return result
  }

  /** Every peer the registry knows, by peer id. */
  list (): PeerStats[] {
    return [...this.#peers.keys()].sort().map((peer) => this.#stats(peer))
  }

  /** Write the reputation file if anything changed (atomic, mode 0600). */
  save (): Promise<void> {
    const next = this.#saving.then(async () => {
      if (!this.#dirty) return
      this.#dirty = false
      try {
        await writeFileAtomic(this.path, this.#encode(), 0o600)
      } catch (err) {
        this.#dirty = true
        throw err
      }
    })
    this.#saving = next.catch(() => {})
    return next
  }

  /** Save, and shut down every breaker so no timer outlives the registry. Idempotent. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const breaker of this.#breakers.values()) breaker.shutdown()
    this.#breakers.clear()
    await this.save()
  }

  #peer (peer: string): Peer {
    let p = this.#peers.get(peer)
    if (p === undefined) {
      p = freshPeer()
      this.#peers.set(peer, p)
    }
    return p
  }

  #stats (peer: string): PeerStats {
    const p = this.#peers.get(peer) ?? freshPeer()
    const stats = {
      peer,
      successes: p.successes,
      failures: p.failures,
      verification_failures: p.verification_failures,
      latency_ewma_ms: p.latency_ewma_ms,
      last_success: p.last_success,
      last_failure: p.last_failure === null ? null : { ...p.last_failure },
      last_ping: p.last_ping === null ? null : { ...p.last_ping },
      breaker: this.breakerState(peer),
      connected: p.connected
    }
    return { ...stats, score: peerScore(stats) }
  }

  #notify (peer: string): void {
    this.#onChange?.(peer, this.#stats(peer))
  }

  #breaker (peer: string): Breaker {
    let breaker = this.#breakers.get(peer)
    if (breaker !== undefined) return breaker
    const s = this.#settings
    breaker = new CircuitBreaker(async (thunk: () => Promise<unknown>) => await thunk(), {
      name: peer,
      timeout: false, // deadlines belong to the caller's AbortSignal, which fails fn with RL-4008
      resetTimeout: s.resetTimeoutMs,
      volumeThreshold: s.volumeThreshold,
      errorThresholdPercentage: s.errorThresholdPercentage,
      rollingCountTimeout: s.rollingCountTimeoutMs,
      errorFilter: isPolicyRefusal,
      allowWarmUp: false,
      // Neither is read here; both would cost a timer or memory per peer.
      enableSnapshots: false,
      rollingPercentilesEnabled: false
    })
    // Opening and closing happen inside fire(), and call() reports them with the
    // outcome that caused them (so onChange never sees "open" with the old
    // failure count); only half-open comes from a timer (unref'd, cleared by shutdown()).
    breaker.on('halfOpen', () => this.#notify(peer))
    this.#breakers.set(peer, breaker)
    this.#peer(peer)
    return breaker
  }

  #encode (): string {
    const peers: Record<string, Reputation> = {}
    for (const peer of [...this.#peers.keys()].sort()) {
      const p = this.#peers.get(peer) as Peer
      // Peers only ever seen connected or pinged have no reputation worth keeping.
      if (p.successes + p.failures + p.verification_failures === 0 && p.latency_ewma_ms === null) continue
      peers[peer] = {
        successes: p.successes,
        failures: p.failures,
        verification_failures: p.verification_failures,
        latency_ewma_ms: p.latency_ewma_ms,
        last_success: p.last_success,
        last_failure: p.last_failure
      }
    }
    return JSON.stringify({ version: PEER_FILE_VERSION, peers }, null, 2) + '\n'
  }
}

function breakerOpen (peer: string, cause?: unknown): ReachError {
  return new ReachError('RL-4003', { message: `circuit breaker for peer ${peer} is open`, details: { peer }, cause })
}

function malformed (path: string, why: string): never {
  throw new ReachError('RL-1012', { message: `peer registry ${path} is malformed: ${why}`, details: { path } })
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0
const isMs = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0

/** The reputation file, checked field by field; anything off is RL-1012. */
function parsePeerFile (text: string, path: string): Map<string, Peer> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    malformed(path, `not valid JSON (${(err as Error).message})`)
  }
  if (!isObject(value)) malformed(path, 'not a JSON object')
  if (value.version !== PEER_FILE_VERSION) malformed(path, `unsupported version ${JSON.stringify(value.version)}`)
  if (!isObject(value.peers)) malformed(path, '"peers" is not an object')
  const peers = new Map<string, Peer>()
  for (const [peer, e] of Object.entries(value.peers)) {
    const where = `peer ${JSON.stringify(peer)}`
    if (peer === '') malformed(path, 'empty peer id')
    if (!isObject(e)) malformed(path, `${where} is not an object`)
    for (const field of ['successes', 'failures', 'verification_failures'] as const) {
      if (!isCount(e[field])) malformed(path, `${where}: ${field} is not a non-negative integer`)
    }
    for (const field of ['latency_ewma_ms', 'last_success'] as const) {
      if (e[field] !== null && !isMs(e[field])) malformed(path, `${where}: ${field} is not a non-negative number or null`)
    }
    const lf = e.last_failure
    if (lf !== null && !(isObject(lf) && isMs(lf.at) && typeof lf.code === 'string')) {
      malformed(path, `${where}: last_failure is not {at, code} or null`)
    }
    peers.set(peer, {
      ...freshPeer(),
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
