/**
 * The peer registry: which peer to delegate a run to, and when to stop trying one.
 *
 * Each peer has a reputation (successes, failures, verification failures, a latency average)
 * that survives restarts through a PeerStore (peer-file.ts), live health (connected, last ping)
 * that does not, and its own circuit breaker (peer-breaker.ts), created on first use.
 * `select()` orders candidates by score (peer-score.ts) and leaves out peers whose breaker is
 * open; `call()` runs a request through the peer's breaker and records the outcome.
 *
 * The table is bounded (MAX_PEERS): a new peer past it makes the registry forget the least
 * useful one it may forget (see #evictDownTo).
 */
import { isReachError, ReachError } from '../protocol/errors.ts'
import { systemClock, type Clock } from './components.ts'
import { admits, createBreaker, isBreakerRejection, isPolicyRefusal, stateOf, type Breaker, type BreakerState, type PeerBreakerOptions } from './peer-breaker.ts'
import { BREAKER_DEFAULTS, MAX_PEERS, MAX_PEERS_OVERFLOW } from './peer-constants.ts'
import { encodePeerFile, hasReputation, parsePeerFile, type PeerStore, type Reputation } from './peer-file.ts'
import { nextLatency, peerScore } from './peer-score.ts'

export interface PeerStats extends Reputation {
  peer: string
  /** Last ping seen (not persisted); `rtt_ms: null` is a failed ping. */
  last_ping: { at: number, rtt_ms: number | null } | null
  breaker: BreakerState
  connected: boolean
  score: number
  /** Why the peer is untrusted (evidence against it); absent while it is not. */
  untrusted?: string
}

export interface PeerRegistryOptions {
  /** opossum settings; tests pass small values. */
  breaker?: PeerBreakerOptions
  /** Timestamps, call latency and when a peer was last seen (default: the system clock). */
  clock?: Clock
  /** Peers kept at most (default MAX_PEERS, 1024); past it the least useful is forgotten. */
  maxPeers?: number
  /** Called after any change to a peer's stats or breaker state (for metrics). */
  onChange?: (peer: string, stats: PeerStats) => void
  /** Called when a peer is forgotten to keep the table bounded (drop its per-peer metrics). */
  onEvict?: (peer: string) => void
}

interface Peer extends Reputation {
  connected: boolean
  last_ping: PeerStats['last_ping']
  /** Clock time of the last thing heard from or done with the peer. */
  seen: number
  /** Calls through its breaker under way. */
  calls: number
}

function freshPeer (): Peer {
  return {
    successes: 0,
    failures: 0,
    verification_failures: 0,
    latency_ewma_ms: null,
    last_success: null,
    last_failure: null,
    connected: false,
    last_ping: null,
    seen: 0,
    calls: 0
  }
}

function failureCode (err: unknown): string {
  if (isReachError(err)) return err.code
  const { code, name } = (err ?? {}) as { code?: unknown, name?: unknown }
  return typeof code === 'string' ? code : typeof name === 'string' ? name : 'error'
}

function breakerOpen (peer: string, cause?: unknown): ReachError {
  return new ReachError('RL-4003', { message: `circuit breaker for peer ${peer} is open`, details: { peer }, cause })
}

/** Below any score peerScore can give (it stays within about ±2). */
export const UNTRUSTED_SCORE = -10

/** RL-4021: evidence says the peer lied, so nothing is sent to it or taken from it. */
export function untrustedPeer (peer: string, reason: string): ReachError {
  return new ReachError('RL-4021', { message: `peer ${peer} is untrusted (${reason})`, details: { peer } })
}

/** Forgotten first: peers with no record, then peers with one, last those caught cheating (that record protects us). */
function keepRank (p: Peer): number {
  return p.verification_failures > 0 ? 2 : hasReputation(p) ? 1 : 0
}

export class PeerRegistry {
  readonly #store: PeerStore
  readonly #peers: Map<string, Peer>
  readonly #breakers = new Map<string, Breaker>()
  readonly #settings: Required<PeerBreakerOptions>
  readonly #clock: Clock
  readonly #maxPeers: number
  readonly #onChange: PeerRegistryOptions['onChange']
  readonly #onEvict: PeerRegistryOptions['onEvict']
  /** Calls under way, awaited by stop() so their outcomes are saved. */
  readonly #calls = new Set<Promise<void>>()
  /** Peers convicted by evidence, and why: their breaker is open for good, and they are never chosen. */
  readonly #untrusted = new Map<string, string>()
  #dirty = false
  #stopping: Promise<void> | undefined
  /** Saves run one after another: each writes the registry as it is when its turn comes. */
  #saving: Promise<void> = Promise.resolve()

  private constructor (store: PeerStore, saved: Map<string, Reputation>, options: PeerRegistryOptions) {
    this.#store = store
    const b = options.breaker ?? {}
    this.#settings = {
      resetTimeoutMs: b.resetTimeoutMs ?? BREAKER_DEFAULTS.resetTimeoutMs,
      volumeThreshold: b.volumeThreshold ?? BREAKER_DEFAULTS.volumeThreshold,
      errorThresholdPercentage: b.errorThresholdPercentage ?? BREAKER_DEFAULTS.errorThresholdPercentage,
      rollingCountTimeoutMs: b.rollingCountTimeoutMs ?? BREAKER_DEFAULTS.rollingCountTimeoutMs
    }
    this.#clock = options.clock ?? systemClock
    this.#maxPeers = options.maxPeers ?? MAX_PEERS
    if (!Number.isSafeInteger(this.#maxPeers) || this.#maxPeers < 1) {
      throw new ReachError('RL-1011', { message: `maxPeers must be a positive integer, not ${String(options.maxPeers)}` })
    }
    this.#onChange = options.onChange
    this.#onEvict = options.onEvict
    // A saved peer was last seen when its record last changed.
    this.#peers = new Map([...saved].map(([peer, r]) => [peer, { ...freshPeer(), ...r, seen: Math.max(r.last_success ?? 0, r.last_failure?.at ?? 0) }]))
    this.#evictDownTo(this.#maxPeers)
  }

  /**
   * The registry saved in `store` (nothing saved: an empty registry). A malformed text is
   * RL-1012; the store's own read errors are passed on.
   */
  static async open (store: PeerStore, options: PeerRegistryOptions = {}): Promise<PeerRegistry> {
    const text = await store.read()
    return new PeerRegistry(store, text === undefined ? new Map() : parsePeerFile(text, store.name), options)
  }

  /** From libp2p connection events. */
  connected (peer: string, yes: boolean): void {
    if (!yes && !this.#peers.has(peer)) return
    const p = this.#touch(peer)
    if (p.connected === yes) return
    p.connected = yes
    this.#notify(peer)
  }

  /** Health from ping: the round trip in ms, or null for a failed ping. */
  recordPing (peer: string, rttMs: number | null): void {
    this.#touch(peer).last_ping = { at: this.#clock.now(), rtt_ms: rttMs }
    this.#notify(peer)
  }

  /** The peer returned a result that did not verify. */
  recordVerificationFailure (peer: string): void {
    this.#touch(peer).verification_failures++
    this.#dirty = true
    this.#notify(peer)
  }

  /** A peer this node has heard from or of (its registry holds it), or is connected to. */
  knows (peer: string): boolean {
    return this.#peers.has(peer)
  }

  /**
   * Evidence convicts `peer` (federation/witness.ts): from now on its breaker reads open, it is
   * never selected, and a call to it fails RL-4021 without being made. Not undone by time; the
   * node re-applies it from its stored evidence at every start.
   */
  distrust (peer: string, reason: string): void {
    if (this.#untrusted.has(peer)) return
    this.#untrusted.set(peer, reason)
    this.#touch(peer).verification_failures++
    this.#dirty = true
    this.#notify(peer)
  }

  untrusted (peer: string): boolean {
    return this.#untrusted.has(peer)
  }

  score (peer: string): number {
    return this.#stats(peer).score
  }

  breakerState (peer: string): BreakerState {
    if (this.#untrusted.has(peer)) return 'open'
    return stateOf(this.#breakers.get(peer))
  }

  /**
   * Candidates ordered best first, ties by peer id. Left out: duplicates, peers in `exclude`
   * (already tried), peers whose breaker is open, and half-open peers whose single probe is
   * already under way.
   */
  select (candidates: readonly string[], exclude: ReadonlySet<string> = new Set()): string[] {
    const eligible = [...new Set(candidates)].filter((peer) => !exclude.has(peer) && !this.#untrusted.has(peer) && admits(this.#breakers.get(peer)))
    const scores = new Map(eligible.map((peer) => [peer, this.score(peer)]))
    // Plain code-unit comparison for ties: localeCompare would depend on the locale.
    return eligible.sort((a, b) => (scores.get(b) ?? 0) - (scores.get(a) ?? 0) || (a < b ? -1 : a > b ? 1 : 0))
  }

  /**
   * Run `fn` through the peer's breaker and record the outcome. When the breaker is open,
   * throws RL-4003 without calling `fn`; after stop(), RL-5007. Whatever `fn` throws is rethrown
   * as it is; policy refusals are neither successes nor failures (though a refusal to a
   * half-open probe closes the breaker: the peer answered).
   */
  async call<T> (peer: string, fn: () => Promise<T>): Promise<T> {
    if (this.#stopping !== undefined) throw new ReachError('RL-5007', { message: 'peer registry is stopped' })
    const distrusted = this.#untrusted.get(peer)
    if (distrusted !== undefined) throw untrustedPeer(peer, distrusted)
    const p = this.#touch(peer)
    const breaker = this.#breaker(peer)
    if (!admits(breaker)) throw breakerOpen(peer)
    p.calls++
    const done = Promise.withResolvers<void>()
    this.#calls.add(done.promise)
    const started = this.#clock.now()
    try {
      let result: T
      try {
        result = await breaker.fire(fn) as T
      } catch (err) {
        if (isBreakerRejection(err)) throw breakerOpen(peer, err)
        if (isPolicyRefusal(err)) {
          this.#notify(peer) // no new stats, but a refusal to a half-open probe has closed the breaker
          throw err
        }
        p.failures++
        p.last_failure = { at: this.#clock.now(), code: failureCode(err) }
        this.#dirty = true
        this.#notify(peer)
        throw err
      }
      // Only successes feed the latency average: a failure's duration is often a timeout, not the peer's speed.
      const now = this.#clock.now()
      p.successes++
      p.last_success = now
      p.latency_ewma_ms = nextLatency(p.latency_ewma_ms, Math.max(0, now - started))
      this.#dirty = true
      this.#notify(peer)
      return result
    } finally {
      p.calls--
      p.seen = this.#clock.now()
      this.#calls.delete(done.promise)
      done.resolve()
    }
  }

  /** Every peer the registry holds, by peer id. */
  list (): PeerStats[] {
    return [...this.#peers.keys()].sort().map((peer) => this.#stats(peer))
  }

  /** Write the reputation to the store if anything changed. */
  save (): Promise<void> {
    const next = this.#saving.then(async () => {
      if (!this.#dirty) return
      this.#dirty = false
      try {
        await this.#store.write(encodePeerFile(this.#peers))
      } catch (err) {
        this.#dirty = true
        throw err
      }
    })
    this.#saving = next.catch(() => {})
    return next
  }

  /**
   * Refuse new calls, wait for those under way (their callers' signals bound them), shut every
   * breaker down so no timer outlives the registry, and save. Idempotent.
   */
  async stop (): Promise<void> {
    this.#stopping ??= (async () => {
      await Promise.all([...this.#calls])
      for (const breaker of this.#breakers.values()) breaker.shutdown()
      this.#breakers.clear()
      await this.save()
    })()
    await this.#stopping
  }

  /** The peer's entry, made (room made first) if it is new, marked seen now. */
  #touch (peer: string): Peer {
    let p = this.#peers.get(peer)
    if (p === undefined) {
      this.#evictDownTo(this.#maxPeers - 1)
      p = freshPeer()
      this.#peers.set(peer, p)
    }
    p.seen = this.#clock.now()
    return p
  }

  /**
   * Forget peers until at most `limit` are left, least useful first (keepRank, then least
   * recently seen, then peer id). Never forgotten: a connected peer or one with a call under
   * way. A peer whose breaker is open or half-open is kept too, until the table reaches
   * MAX_PEERS_OVERFLOW times its cap; if only connected or calling peers are left, the table
   * grows past the cap (the host's connection limit and the callers bound those).
   */
  #evictDownTo (limit: number): void {
    const ceiling = this.#maxPeers * MAX_PEERS_OVERFLOW
    while (this.#peers.size > limit) {
      const victim = this.#victim(false) ?? (this.#peers.size >= ceiling ? this.#victim(true) : undefined)
      if (victim === undefined) return
      this.#forget(victim)
    }
  }

  #victim (evenTripped: boolean): string | undefined {
    let best: { peer: string, p: Peer } | undefined
    for (const [peer, p] of this.#peers) {
      if (p.connected || p.calls > 0) continue
      if (!evenTripped && stateOf(this.#breakers.get(peer)) !== 'closed') continue
      if (best === undefined || (keepRank(p) - keepRank(best.p) || p.seen - best.p.seen || (peer < best.peer ? -1 : 1)) < 0) best = { peer, p }
    }
    return best?.peer
  }

  #forget (peer: string): void {
    const p = this.#peers.get(peer)
    this.#breakers.get(peer)?.shutdown()
    this.#breakers.delete(peer)
    this.#peers.delete(peer)
    if (p !== undefined && hasReputation(p)) this.#dirty = true
    this.#onEvict?.(peer)
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
    const untrusted = this.#untrusted.get(peer)
    // An untrusted peer's score is the lowest there is: nothing it did before counts.
    return untrusted === undefined ? { ...stats, score: peerScore(stats) } : { ...stats, score: UNTRUSTED_SCORE, untrusted }
  }

  #notify (peer: string): void {
    this.#onChange?.(peer, this.#stats(peer))
  }

  #breaker (peer: string): Breaker {
    let breaker = this.#breakers.get(peer)
    if (breaker !== undefined) return breaker
    breaker = createBreaker(peer, this.#settings)
    // Opening and closing happen inside fire(), and call() reports them with the outcome that
    // caused them (so onChange never sees "open" with the old failure count); only half-open
    // comes from a timer (unref'd, cleared by shutdown()).
    breaker.on('halfOpen', () => this.#notify(peer))
    this.#breakers.set(peer, breaker)
    return breaker
  }
}
