/**
 * Pack exchange (SPEC §10.4, §10.7): a node announces the CIDs of the packs it holds on the
 * federation's DHT, finds who provides a CID it lacks, and fetches the bundle over
 * /reach/pack/1.0.0 (pack-client.ts), serving its own packs the same way (pack-server.ts).
 *
 * Nothing a provider sends is trusted: the bytes are re-hashed against the CID asked for and
 * every signature is verified before the node's policy sees the pack, and only then is it
 * stored. A provider caught lying is never asked again; one that is merely slow or unreachable
 * is asked last for a while.
 */
import type { CID } from 'multiformats/cid'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import { isPackCid, parsePackCid, type Bundle } from '../packs/bundle.ts'
import type { PackSignature, StoredPack } from '../packs/trust.ts'
import { systemClock, type AuditSink, type Clock, type ComponentLogger, type Dialer, type Logger, type Registrar } from './components.ts'
import { askProvider } from './pack-client.ts'
import { DEFAULT_FETCH_TIMEOUT_MS, DEFAULT_PROVIDER_TIMEOUT_MS, DEFAULT_REPROVIDE_INTERVAL_MS, PROVIDE_TIMEOUT_MS, SILENT_MEMORY_MS } from './pack-constants.ts'
import { PackServer, type PackReader } from './pack-server.ts'

/** What the exchange uses of the node's pack store (node/pack-store.ts satisfies it). */
export interface PackStore extends PackReader {
  /** Store a pack; `options.cid` is the CID asked for, which the bytes must hash to (RL-3003). */
  put (bytes: Uint8Array, signatures: readonly PackSignature[], options: { cid: string }): Promise<StoredPack>
}

/** Where pack CIDs are announced and found: libp2p's `host.contentRouting` (the kad-dht). */
export interface PackRouting {
  provide (cid: CID, options: { signal: AbortSignal }): Promise<void>
  findProviders (cid: CID, options: { signal: AbortSignal }): AsyncIterable<{ id: { toString (): string } }>
}

/** A fetched pack, checked, as the node's policy is asked to admit it. */
export interface PackCandidate {
  bundle: Bundle
  cid: string
  signatures: readonly unknown[]
}

export interface PackExchangeMetrics {
  /**
   * One `result` per fetch: local | fetched | no_provider | failed | refused | aborted;
   * plus one `bad_provider` for each provider caught sending bytes or signatures that do not match.
   */
  packFetches?: { inc (labels: { result: string }): void }
  /** op: provide | find_providers; result: ok | empty | timeout | error. */
  dhtOperations?: { inc (labels: { op: string, result: string }): void }
}

export interface PackExchangeComponents {
  /** This node's peer id: its own provider records are skipped. */
  self: string
  registrar: Registrar
  dialer: Dialer
  routing: PackRouting
  packs: PackStore
  /** Throws the node's policy refusal; called before anything fetched is stored. */
  admit: (pack: PackCandidate) => void
  logger: ComponentLogger
  clock?: Clock
  audit?: AuditSink
  metrics?: PackExchangeMetrics
}

export interface PackExchangeInit {
  /** Re-provide every published CID this often (default 10 min). */
  reprovideIntervalMs?: number
  /** One provider's share of a fetch (default 6 s). */
  providerTimeoutMs?: number
}

export interface FetchOptions {
  /** The whole fetch, find included (default 15 s). */
  timeoutMs?: number
  signal?: AbortSignal
  /**
   * Admit with this instead of the node's policy: a pack fetched only to replay a run, whose
   * publisher this node need not trust (a replay calls no tool; the sandbox contains it). The
   * CID is checked either way; what is stored is refused again by policy when a run asks for it.
   */
  admit?: (pack: PackCandidate) => void
}

export interface FetchResult {
  pack: StoredPack
  /** The peer the bytes came from; null when the pack was already stored here. */
  provider: string | null
  /** Providers that failed before one succeeded (or before giving up), with why. */
  tried: Array<{ peer: string, code: string }>
}

function codeOf (err: unknown): ErrorCode {
  return isReachError(err) ? err.code : 'RL-4002'
}

/** A CID the caller asked for: text that is not one is a bad argument (RL-1011), not a bad bundle. */
function cidArgument (cid: string): CID {
  if (!isPackCid(cid)) throw new ReachError('RL-1011', { message: `not a pack CID: ${JSON.stringify(cid.slice(0, 100))}` })
  return parsePackCid(cid)
}

function withTimeout (signal: AbortSignal | undefined, ms: number): AbortSignal {
  return signal === undefined ? AbortSignal.timeout(ms) : AbortSignal.any([signal, AbortSignal.timeout(ms)])
}

export class PackExchange {
  readonly #c: PackExchangeComponents
  readonly #server: PackServer
  readonly #log: Logger
  readonly #clock: Clock
  readonly #metrics: PackExchangeMetrics
  readonly #reprovideIntervalMs: number
  readonly #providerTimeoutMs: number
  /** CIDs this node announced, re-announced periodically. */
  readonly #published = new Set<string>()
  /** Providers caught lying, for the life of the process. */
  readonly #bad = new Set<string>()
  /** Providers that did not answer: asked last, after everyone else, until this time. */
  readonly #silent = new Map<string, number>()
  /** Aborted by stop(): a re-provide pass or adopt() under way stops at once. */
  #lifecycle = new AbortController()
  /** Re-provide passes and adopt() calls under way; stop() awaits them. They never reject. */
  readonly #background = new Set<Promise<void>>()
  #reproviding: Promise<void> | undefined
  #timer: ReturnType<typeof setInterval> | undefined
  #started = false
  #stopping: Promise<void> | undefined

  constructor (components: PackExchangeComponents, init: PackExchangeInit = {}) {
    this.#c = components
    this.#log = components.logger.forComponent('reach:federation:packs')
    this.#server = new PackServer({ registrar: components.registrar, packs: components.packs, logger: components.logger })
    this.#clock = components.clock ?? systemClock
    this.#metrics = components.metrics ?? {}
    this.#reprovideIntervalMs = init.reprovideIntervalMs ?? DEFAULT_REPROVIDE_INTERVAL_MS
    this.#providerTimeoutMs = init.providerTimeoutMs ?? DEFAULT_PROVIDER_TIMEOUT_MS
  }

  async start (): Promise<void> {
    if (this.#started) return
    this.#started = true
    if (this.#lifecycle.signal.aborted) this.#lifecycle = new AbortController()
    await this.#server.start()
    this.#timer = setInterval(() => { void this.#reprovide() }, this.#reprovideIntervalMs)
    // The timer must not keep a process alive that has nothing else to do.
    this.#timer.unref()
  }

  /**
   * Stops serving and announcing: resets the streams being served, aborts a re-provide pass or
   * adopt() under way, and returns once all of them have ended. A fetch or publish under way is
   * its caller's (its signal ends it).
   */
  async stop (): Promise<void> {
    if (!this.#started) return await this.#stopping
    this.#started = false
    this.#stopping = this.#shutdown()
    await this.#stopping
  }

  async #shutdown (): Promise<void> {
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#lifecycle.abort(new ReachError('RL-4002', { message: 'the pack exchange is stopping' }))
    await Promise.all([this.#server.stop(), ...this.#background])
  }

  /** Announce a stored pack on the DHT and keep announcing it. RL-3012 when the pack is not stored here. */
  async publish (cid: string, options: { signal?: AbortSignal } = {}): Promise<{ cid: string, provide_ms: number }> {
    const key = cidArgument(cid)
    // get, not has: it re-verifies the stored bytes, so a damaged file is never announced.
    await this.#c.packs.get(cid)
    const started = performance.now()
    await this.#provide(key, withTimeout(options.signal, PROVIDE_TIMEOUT_MS))
    this.#published.add(cid)
    return { cid, provide_ms: Math.round((performance.now() - started) * 10) / 10 }
  }

  badProviders (): string[] {
    return [...this.#bad]
  }

  /** The CIDs this exchange keeps announcing. */
  published (): string[] {
    return [...this.#published]
  }

  /**
   * Keep announcing CIDs published before a restart: they join the re-provide set and are
   * announced once now (a CID no longer stored is dropped). Resolves when that first
   * announcement is done; callers that do not need to wait need not (it never rejects).
   */
  async adopt (cids: readonly string[]): Promise<void> {
    await this.#run(this.#adopt(cids))
  }

  async #adopt (cids: readonly string[]): Promise<void> {
    const stopping = this.#lifecycle.signal
    for (const cid of cids) if (isPackCid(cid)) this.#published.add(cid)
    try {
      for (const cid of [...this.#published]) {
        if (stopping.aborted) return
        if (!await this.#c.packs.has(cid)) this.#published.delete(cid)
      }
      // A pass already under way may have gone past these CIDs: announce them in the next one.
      await this.#reproviding
      await this.#reprovide()
    } catch (err) {
      this.#log.warn(`adopting published packs failed (${(err as Error)?.message}); the next re-provide tries again`)
    }
  }

  /**
   * The pack named `cid`: from the store if it is there, otherwise from the first provider on
   * the DHT that sends bytes hashing to it. Throws RL-4001 (nobody provides it in time),
   * RL-4013 (every provider failed; `details.tried`), or the node's policy refusal as is.
   */
  async fetch (cid: string, options: FetchOptions = {}): Promise<FetchResult> {
    const key = cidArgument(cid)
    const { packs, self } = this.#c
    if (await packs.has(cid)) {
      this.#count('local')
      return { pack: await packs.get(cid), provider: null, tried: [] }
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS
    const signal = withTimeout(options.signal, timeoutMs)
    const tried: FetchResult['tried'] = []
    let found = false
    let received: { peer: string, bytes: Uint8Array, signatures: PackSignature[] } | undefined
    // Signatures travel beside the bytes, not inside the CID: one provider's copy may carry only
    // signatures this node does not trust while another's carries a trusted one. A refusal is
    // kept and thrown only if no provider's copy is admitted.
    let refusal: unknown
    const deferred: string[] = []
    const attempt = async (peer: string): Promise<boolean> => {
      const answer = await askProvider(this.#c.dialer, peer, cid, { signal, timeoutMs: this.#providerTimeoutMs })
      if (!answer.ok) {
        const code = answer.error.code
        tried.push({ peer, code })
        if (answer.lied) this.#lied(peer, cid, answer.error)
        else this.#log.info(`pack ${cid}: provider ${peer} failed (${code}: ${answer.error.message})`)
        if (code === 'RL-4002') this.#remember(peer)
        return false
      }
      this.#silent.delete(peer)
      try {
        ;(options.admit ?? this.#c.admit)({ bundle: answer.pack.bundle, cid: answer.pack.cid, signatures: answer.signatures })
      } catch (err) {
        refusal ??= err
        tried.push({ peer, code: codeOf(err) })
        return false
      }
      received = { peer, bytes: answer.pack.bytes, signatures: answer.signatures }
      return true
    }
    try {
      // Providers are tried as the query yields them, so the first answer is used at once;
      // one that did not answer recently waits until everyone else has been asked.
      for await (const provider of this.#c.routing.findProviders(key, { signal })) {
        const peer = provider.id.toString()
        if (peer === self || this.#bad.has(peer) || tried.some((t) => t.peer === peer) || deferred.includes(peer)) continue
        found = true
        if ((this.#silent.get(peer) ?? 0) > this.#clock.now()) {
          deferred.push(peer)
          continue
        }
        if (await attempt(peer)) break
      }
      this.#dht('find_providers', found ? 'ok' : 'empty')
    } catch {
      // The query ran out of time (or was cancelled) or failed: judged below by what was tried.
      this.#dht('find_providers', signal.aborted ? 'timeout' : 'error')
    }
    for (const peer of deferred) {
      if (received !== undefined || signal.aborted) break
      await attempt(peer)
    }
    if (received !== undefined) {
      // Into the store, which re-hashes once more as it writes.
      const stored = await packs.put(received.bytes, received.signatures, { cid })
      this.#count('fetched')
      return { pack: stored, provider: received.peer, tried }
    }
    if (refusal !== undefined) {
      this.#count('refused')
      throw refusal
    }
    if (options.signal?.aborted === true) {
      this.#count('aborted')
      throw options.signal.reason
    }
    if (tried.length === 0) {
      this.#count('no_provider')
      throw new ReachError('RL-4001', { message: `no provider of pack ${cid} found within ${timeoutMs} ms`, details: { cid } })
    }
    this.#count('failed')
    throw new ReachError('RL-4013', { message: `pack ${cid} could not be fetched from any of ${tried.length} provider(s)`, details: { cid, tried } })
  }

  /** A provider that sent what an honest node never serves: never asked again. */
  #lied (peer: string, cid: string, error: ReachError): void {
    this.#bad.add(peer)
    this.#count('bad_provider')
    this.#c.audit?.record({ type: 'provider.lied', peer, code: error.code, detail: `pack ${cid}: ${error.message}` })
    this.#log.warn(`pack ${cid}: ${error.message}; it is not asked again`)
  }

  /** A provider that did not answer is asked last for a while; entries past their time are dropped here. */
  #remember (peer: string): void {
    const now = this.#clock.now()
    for (const [p, until] of this.#silent) if (until <= now) this.#silent.delete(p)
    this.#silent.set(peer, now + SILENT_MEMORY_MS)
  }

  async #provide (key: CID, signal: AbortSignal): Promise<void> {
    try {
      await this.#c.routing.provide(key, { signal })
      this.#dht('provide', 'ok')
    } catch (err) {
      this.#dht('provide', signal.aborted ? 'timeout' : 'error')
      throw new ReachError('RL-4002', { message: `could not announce ${key.toString()} on the DHT: ${(err as Error)?.message ?? String(err)}`, cause: err })
    }
  }

  /** Start a re-provide pass, or join the one under way: a pass on a slow DHT can outlast the interval. */
  #reprovide (): Promise<void> {
    if (this.#reproviding === undefined) {
      const pass = this.#announceAll()
      this.#reproviding = pass
      void this.#run(pass.finally(() => { if (this.#reproviding === pass) this.#reproviding = undefined }))
    }
    return this.#reproviding
  }

  async #announceAll (): Promise<void> {
    const stopping = this.#lifecycle.signal
    for (const cid of this.#published) {
      if (stopping.aborted) return
      try {
        await this.#provide(parsePackCid(cid), AbortSignal.any([stopping, AbortSignal.timeout(PROVIDE_TIMEOUT_MS)]))
      } catch (err) {
        if (!stopping.aborted) this.#log.warn(`pack ${cid}: re-provide failed (${(err as Error).message})`)
      }
    }
  }

  /** Work stop() waits for. */
  async #run (work: Promise<void>): Promise<void> {
    this.#background.add(work)
    try {
      await work
    } finally {
      this.#background.delete(work)
    }
  }

  #count (result: string): void {
    this.#metrics.packFetches?.inc({ result })
  }

  #dht (op: string, result: string): void {
    this.#metrics.dhtOperations?.inc({ op, result })
  }
}
