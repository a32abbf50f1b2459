/**
 * Pack exchange (DESIGN.md §2, §4): a node announces the CIDs of the packs it
 * holds on the federation's DHT, finds who provides a CID it lacks, and
 * fetches the bundle over /reach/pack/1.0.0.
 *
 *   client → server   pack.get {cid}
 *   server → client   pack {cid, size, signatures}, then one raw frame of `size` bundle bytes
 *                     (or an error frame: RL-3012 when it does not hold the pack)
 *
 * Nothing a provider sends is trusted: the bytes are re-hashed against the
 * CID that was asked for and every signature is verified before the node's
 * policy sees the pack, and only then is it stored. A provider caught sending
 * bytes or signatures that do not match is remembered and never asked again;
 * one that is merely slow or unreachable is only skipped for this fetch.
 */
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import { MAX_FRAME, PROTOCOLS } from '../protocol/wire.ts'
import { decodeBundle, isPackCid, MAX_BUNDLE_BYTES, parsePackCid, type Bundle, type Pack } from '../packs/bundle.ts'
import { verifyPackSignature, type PackSignature } from '../packs/trust.ts'
import type { ReachHost } from '../node/host.ts'
import type { PackStore, StoredPack } from '../node/pack-store.ts'
import { frames, isErrorFrame, peerError, type FrameStream } from './frames.ts'

/** How long a provider that did not answer is asked last (it may be down, or just busy). */
export const SILENT_MEMORY_MS = 10 * 60_000

/** A whole fetch (find + every provider tried): long enough for a few providers of a full-size bundle. */
export const DEFAULT_FETCH_TIMEOUT_MS = 15_000
/**
 * One provider's share of a fetch (dial, request, header and bytes). A silent
 * or stalled provider must not use up the whole fetch: with 6 s at least two
 * providers get a turn within the default fetch timeout, and 6 s moves a
 * full 9 MiB bundle at ~1.5 MB/s.
 */
export const DEFAULT_PROVIDER_TIMEOUT_MS = 6_000
/** How long the server waits for a peer's request before giving up on the stream. */
export const REQUEST_TIMEOUT_MS = 10_000
/** How long the server spends sending one pack: a peer that reads slowly gives its slot back. */
export const SERVE_TIMEOUT_MS = 60_000
/** Announcing a CID on the DHT: a query to the closest peers; a mesh that does not answer in 30 s is not there. */
export const PROVIDE_TIMEOUT_MS = 30_000
/**
 * Provider records expire (kad-dht keeps them 48 h) and the peers closest
 * to a CID change as nodes join; every 10 min keeps a new node findable soon
 * after it joins without flooding the DHT.
 */
export const DEFAULT_REPROVIDE_INTERVAL_MS = 10 * 60_000
/**
 * Packs served at once, across all peers. Each holds a bundle (≤ 9 MiB) in
 * memory while it is sent; 32 bounds that to ~300 MB, and a peer beyond it is
 * told RL-4007 (busy) rather than left waiting.
 */
export const MAX_CONCURRENT_SERVES = 32
/** Open /reach/pack streams per connection: a fetch needs one; a few allow retries without letting one peer take every slot. */
export const MAX_INBOUND_STREAMS = 4
/** A `pack` header carries at most this many signature envelopes (the wire schema's limit). */
export const MAX_HEADER_SIGNATURES = 64

export interface PackExchangeMetrics {
  /**
   * One `result` per fetch: local | fetched | no_provider | failed | refused | aborted;
   * plus one `bad_provider` for each provider caught sending bytes or signatures that do not match.
   */
  packFetches?: { inc (labels: { result: string }): void }
  /** op: provide | find_providers; result: ok | empty | timeout | error. */
  dhtOperations?: { inc (labels: { op: string, result: string }): void }
}

export interface PackExchangeInit {
  host: ReachHost
  packs: PackStore
  /** Throws the node's policy refusal (admitPack with the node's registry and policy); called before anything fetched is stored. */
  admit: (pack: { bundle: Bundle, cid: string, signatures: readonly unknown[] }) => void
  metrics?: PackExchangeMetrics
  log?: (line: string) => void
  /** Re-provide every published CID this often (default 10 min). */
  reprovideIntervalMs?: number
  /** One provider's share of a fetch (default 6 s). */
  providerTimeoutMs?: number
}

export interface FetchOptions {
  /** The whole fetch, find included (default 15 s). */
  timeoutMs?: number
  signal?: AbortSignal
}

export interface FetchResult {
  pack: StoredPack
  /** The peer the bytes came from; null when the pack was already stored here. */
  provider: string | null
  /** Providers that failed before one succeeded (or before giving up), with why. */
  tried: Array<{ peer: string, code: string }>
}

/** What one provider sent, checked against the CID and the signatures verified. */
interface Received {
  pack: Pack
  signatures: PackSignature[]
}

function codeOf (err: unknown): ErrorCode {
  return isReachError(err) ? err.code : 'RL-4002'
}

function unavailable (peer: string, err: unknown): ReachError {
  if (isReachError(err)) return err
  return new ReachError('RL-4002', { message: `peer ${peer}: ${(err as Error)?.message ?? String(err)}`, details: { peer }, cause: err })
}

/** A CID the caller asked for: text that is not one is a bad argument (RL-1011), not a bad bundle. */
function cidArgument (cid: string): ReturnType<typeof parsePackCid> {
  if (!isPackCid(cid)) throw new ReachError('RL-1011', { message: `not a pack CID: ${JSON.stringify(cid.slice(0, 100))}` })
  return parsePackCid(cid)
}

export class PackExchange {
  readonly #host: ReachHost
  readonly #packs: PackStore
  readonly #admit: PackExchangeInit['admit']
  readonly #metrics: PackExchangeMetrics
  readonly #log: (line: string) => void
  readonly #reprovideIntervalMs: number
  readonly #providerTimeoutMs: number
  /** CIDs this node announced, re-announced periodically. */
  readonly #published = new Set<string>()
  /** Providers caught lying, for the life of the process. */
  readonly #bad = new Set<string>()
  /** Providers that did not answer: asked last, after everyone else, until this time. */
  readonly #silent = new Map<string, number>()
  #serving = 0
  #reproviding = false
  #started = false
  #timer: ReturnType<typeof setInterval> | undefined
  #stopping: AbortController | undefined

  constructor (init: PackExchangeInit) {
    this.#host = init.host
    this.#packs = init.packs
    this.#admit = init.admit
    this.#metrics = init.metrics ?? {}
    this.#log = init.log ?? (() => {})
    this.#reprovideIntervalMs = init.reprovideIntervalMs ?? DEFAULT_REPROVIDE_INTERVAL_MS
    this.#providerTimeoutMs = init.providerTimeoutMs ?? DEFAULT_PROVIDER_TIMEOUT_MS
  }

  async start (): Promise<void> {
    if (this.#started) return
    this.#started = true
    this.#stopping = new AbortController()
    await this.#host.handle(PROTOCOLS.pack, async (stream, connection) => { await this.#serve(stream, connection) }, { maxInboundStreams: MAX_INBOUND_STREAMS })
    this.#timer = setInterval(() => { void this.#reprovide() }, this.#reprovideIntervalMs)
    // The timer must not keep a process alive that has nothing else to do.
    this.#timer.unref()
  }

  async stop (): Promise<void> {
    if (!this.#started) return
    this.#started = false
    clearInterval(this.#timer)
    this.#timer = undefined
    this.#stopping?.abort()
    try {
      await this.#host.unhandle(PROTOCOLS.pack)
    } catch {
      // the host may already be stopped, which removes every handler anyway
    }
  }

  /** Announce a stored pack on the DHT and keep announcing it. RL-3012 when the pack is not stored here. */
  async publish (cid: string, options: { signal?: AbortSignal } = {}): Promise<{ cid: string, provide_ms: number }> {
    const key = cidArgument(cid)
    // get, not has: it re-verifies the stored bytes, so a damaged file is never announced.
    await this.#packs.get(cid)
    const signal = options.signal === undefined ? AbortSignal.timeout(PROVIDE_TIMEOUT_MS) : AbortSignal.any([options.signal, AbortSignal.timeout(PROVIDE_TIMEOUT_MS)])
    const started = performance.now()
    await this.#provide(key, signal)
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
    for (const cid of cids) if (isPackCid(cid)) this.#published.add(cid)
    try {
      for (const cid of [...this.#published]) {
        if (!await this.#packs.has(cid)) this.#published.delete(cid)
      }
      await this.#reprovide()
    } catch {
      // the next periodic re-provide tries again
    }
  }

  /**
   * The pack named `cid`: from the store if it is there, otherwise from the
   * first provider on the DHT that sends bytes hashing to it. Throws RL-4001
   * (nobody provides it in time), RL-4013 (every provider failed;
   * `details.tried`), or the node's policy refusal as is.
   */
  async fetch (cid: string, options: FetchOptions = {}): Promise<FetchResult> {
    const key = cidArgument(cid)
    if (await this.#packs.has(cid)) {
      this.#count('local')
      return { pack: await this.#packs.get(cid), provider: null, tried: [] }
    }
    const deadline = AbortSignal.timeout(options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS)
    const signal = options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline])
    const self = this.#host.peerId.toString()
    const tried: FetchResult['tried'] = []
    let found = false
    let received: { peer: string, data: Received } | undefined
    // Signatures travel beside the bytes, not inside the CID: one provider's copy may carry only
    // signatures this node does not trust while another's carries a trusted one. A refusal is
    // kept and thrown only if no provider's copy is admitted.
    let refusal: unknown
    const deferred: PeerId[] = []
    const attempt = async (id: PeerId): Promise<boolean> => {
      const peer = id.toString()
      let data: Received
      try {
        data = await this.#fetchFrom(id, cid, signal)
        this.#silent.delete(peer)
      } catch (err) {
        const code = codeOf(err)
        tried.push({ peer, code })
        if (code === 'RL-4002') this.#silent.set(peer, Date.now() + SILENT_MEMORY_MS)
        this.#log(`pack ${cid}: provider ${peer} failed (${code}: ${(err as Error)?.message})`)
        return false
      }
      try {
        this.#admit({ bundle: data.pack.bundle, cid: data.pack.cid, signatures: data.signatures })
      } catch (err) {
        refusal ??= err
        tried.push({ peer, code: codeOf(err) })
        return false
      }
      received = { peer, data }
      return true
    }
    try {
      // Providers are tried as the query yields them, so the first answer is used at once;
      // one that did not answer recently waits until everyone else has been asked.
      for await (const provider of this.#host.contentRouting.findProviders(key, { signal })) {
        const peer = provider.id.toString()
        if (peer === self || this.#bad.has(peer) || tried.some((t) => t.peer === peer) || deferred.some((d) => d.equals(provider.id))) continue
        found = true
        if ((this.#silent.get(peer) ?? 0) > Date.now()) {
          deferred.push(provider.id)
          continue
        }
        if (await attempt(provider.id)) break
      }
      this.#dht('find_providers', found ? 'ok' : 'empty')
    } catch {
      // The query ran out of time (or was cancelled) or failed: judged below by what was tried.
      this.#dht('find_providers', signal.aborted ? 'timeout' : 'error')
    }
    for (const id of deferred) {
      if (received !== undefined || signal.aborted) break
      await attempt(id)
    }
    if (received !== undefined) return { pack: await this.#accept(received.data), provider: received.peer, tried }
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
      throw new ReachError('RL-4001', { message: `no provider of pack ${cid} found within ${options.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS} ms`, details: { cid } })
    }
    this.#count('failed')
    throw new ReachError('RL-4013', { message: `pack ${cid} could not be fetched from any of ${tried.length} provider(s)`, details: { cid, tried } })
  }

  /** A copy the node's policy admitted, into the store (which re-hashes once more as it writes). */
  async #accept (received: Received): Promise<StoredPack> {
    const { pack, signatures } = received
    const stored = await this.#packs.put(pack.bytes, signatures, { cid: pack.cid })
    this.#count('fetched')
    return stored
  }

  /** Ask one provider; throws RL-4002 and the like for a provider that failed, after marking a lying one. */
  async #fetchFrom (provider: PeerId, cid: string, fetchSignal: AbortSignal): Promise<Received> {
    const peer = provider.toString()
    const signal = AbortSignal.any([fetchSignal, AbortSignal.timeout(this.#providerTimeoutMs)])
    let stream: Stream
    try {
      stream = await this.#host.dialProtocol(provider, PROTOCOLS.pack, { signal })
    } catch (err) {
      throw unavailable(peer, err)
    }
    // The header is held to its own limit; the bundle that follows to the size it announced.
    const fs: FrameStream = frames(stream, MAX_FRAME.packHeader)
    try {
      await fs.write({ v: 1, type: 'pack.get', cid })
      const header = await fs.read(['pack'], { signal, timeoutMs: this.#providerTimeoutMs })
      if (isErrorFrame(header)) throw peerError(header, peer)
      if (header.cid !== cid) this.#lied(peer, cid, 'RL-3003', `answered with pack ${header.cid}`)
      if (header.size > MAX_BUNDLE_BYTES) this.#lied(peer, cid, 'RL-4011', `announced ${header.size} bytes, over the ${MAX_BUNDLE_BYTES}-byte bundle limit`)
      const bytes = await fs.readBytes(header.size, { signal, timeoutMs: this.#providerTimeoutMs })
      if (bytes.length !== header.size) this.#lied(peer, cid, 'RL-4010', `announced ${header.size} bytes and sent ${bytes.length}`)
      let pack: Pack
      let signatures: PackSignature[]
      try {
        pack = decodeBundle(bytes, cid)
        signatures = header.signatures.map((s) => verifyPackSignature(s, { cid, manifest: pack.bundle.manifest }))
      } catch (err) {
        // Bytes that do not hash to the CID, or signatures that do not sign it: an honest
        // provider never serves those (its store verified them when they arrived).
        this.#lied(peer, cid, codeOf(err), (err as Error).message)
      }
      await fs.close()
      return { pack, signatures }
    } catch (err) {
      fs.reset(err as Error)
      throw unavailable(peer, err)
    }
  }

  #lied (peer: string, cid: string, code: ErrorCode, why: string): never {
    this.#bad.add(peer)
    this.#count('bad_provider')
    this.#log(`pack ${cid}: provider ${peer} ${why}; it is not asked again`)
    throw new ReachError(code, { message: `provider ${peer} ${why}`, details: { peer, cid } })
  }

  /** Serve one pack.get. Never throws: a bad request costs the peer its stream, never the node. */
  async #serve (stream: Stream, connection: Connection): Promise<void> {
    const peer = connection.remotePeer.toString()
    const fs = frames(stream, MAX_FRAME.request)
    if (this.#serving >= MAX_CONCURRENT_SERVES) {
      await fs.refuse(new ReachError('RL-4007', { message: `serving ${this.#serving} packs already; try again shortly` }))
      return
    }
    this.#serving++
    const timer = setTimeout(() => { fs.reset(new ReachError('RL-4002', { message: `sending to ${peer} took over ${SERVE_TIMEOUT_MS} ms` })) }, SERVE_TIMEOUT_MS)
    try {
      let request
      try {
        request = await fs.read(['pack.get'], { timeoutMs: REQUEST_TIMEOUT_MS })
      } catch (err) {
        this.#log(`pack server: refused a request from ${peer} (${codeOf(err)}: ${(err as Error)?.message})`)
        await fs.refuse(err)
        return
      }
      if (isErrorFrame(request)) {
        await fs.close()
        return
      }
      const cid = request.cid
      // has() first: get() also resolves names, and a peer may only ask by CID.
      let pack: StoredPack | undefined
      if (await this.#packs.has(cid)) {
        try {
          pack = await this.#packs.get(cid)
        } catch (err) {
          this.#log(`pack server: stored pack ${cid} is unreadable (${codeOf(err)}: ${(err as Error)?.message})`)
        }
      }
      if (pack === undefined) {
        // A fresh error: the store's own message names local paths.
        await fs.refuse(new ReachError('RL-3012', { message: `this node does not have pack ${cid}` }))
        return
      }
      await fs.write({ v: 1, type: 'pack', cid, size: pack.bytes.length, signatures: pack.signatures.slice(0, MAX_HEADER_SIGNATURES) })
      await fs.writeBytes(pack.bytes)
      await fs.close()
    } catch (err) {
      fs.reset(err as Error)
    } finally {
      clearTimeout(timer)
      this.#serving--
    }
  }

  async #provide (key: CID, signal: AbortSignal): Promise<void> {
    try {
      await this.#host.contentRouting.provide(key, { signal })
      this.#dht('provide', 'ok')
    } catch (err) {
      this.#dht('provide', signal.aborted ? 'timeout' : 'error')
      throw new ReachError('RL-4002', { message: `could not announce ${key.toString()} on the DHT: ${(err as Error)?.message ?? String(err)}`, cause: err })
    }
  }

  async #reprovide (): Promise<void> {
    // A pass over many CIDs on a slow DHT can outlast the interval: never run two at once.
    if (this.#reproviding) return
    this.#reproviding = true
    const stopping = this.#stopping?.signal
    try {
      for (const cid of this.#published) {
        if (stopping?.aborted === true) return
        const signal = stopping === undefined ? AbortSignal.timeout(PROVIDE_TIMEOUT_MS) : AbortSignal.any([stopping, AbortSignal.timeout(PROVIDE_TIMEOUT_MS)])
        try {
          await this.#provide(parsePackCid(cid), signal)
        } catch (err) {
          this.#log(`pack ${cid}: re-provide failed (${(err as Error).message})`)
        }
      }
    } finally {
      this.#reproviding = false
    }
  }

  #count (result: string): void {
    this.#metrics.packFetches?.inc({ result })
  }

  #dht (op: string, result: string): void {
    this.#metrics.dhtOperations?.inc({ op, result })
  }
}
