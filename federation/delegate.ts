/**
 * `/reach/delegate/1.0.0`: run a pack on a peer (DESIGN.md §3, SPEC §10).
 *
 *   client → delegate {delegation_id, pack_cid, input, budget, depth, ancestry, deadline, nonce}
 *   client → cancel {delegation_id}                (optional, any time before the result)
 *   server → result {delegation_id, run_id, status, output?, error?, record, checkpoint, log_head}
 *          | error {code, message}                 (refused; the stream is then closed)
 *
 * After a result the client may send its next request on the same stream: a client keeps its
 * idle streams per peer, which spares the next delegation a new stream and a protocol
 * negotiation round trip; the server closes a stream idle for 30 s.
 *
 * The server refuses, in this order, so every node gives the same answer to
 * the same request: a malformed frame (RL-4010/4011/4012), an expired
 * deadline (RL-4008), a replayed nonce (RL-4009), an ancestry whose hops do
 * not chain from the caller to this node or whose signatures fail (RL-4006),
 * depth over the policy's maximum (RL-4004), itself already in the ancestry
 * (RL-4005: A→B→A, and A→B→C→B), a full queue (RL-4007); then the pack is
 * fetched if missing and admitted by policy (RL-30xx, engine RL-3013) and the
 * budget checked (RL-3010). The run is cancelled when the client sends
 * `cancel`, goes away, or the deadline passes; it then ends with RunCancelled.
 *
 * The client signs a hop for each request it sends (`from` asked `to` for this
 * delegation, after the previous hop's signature), checks the result against
 * the peer's own key (the signed checkpoint must be the peer's and must cover
 * the record it sent), retries on the next-best peer when a peer is
 * unavailable or busy, and records every outcome in the peer registry.
 */
import { randomBytes } from 'node:crypto'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { canonicalize, type JsonValue } from '../protocol/canonical.ts'
import { decodeCheckpoint, verifyCheckpoint } from '../protocol/checkpoint.ts'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import { hashCanonical } from '../protocol/hash.ts'
import { createSigner, signDomain, verifyDomain, type Signer } from '../protocol/keys.ts'
import { HOP_SIGNATURE_KIND, MAX_FRAME, PROTOCOLS, hopBody, requestDigest, type CancelFrame, type DelegateRequest, type ErrorFrame, type Hop, type ResultFrame, type WireBudget } from '../protocol/wire.ts'
import type { Budget } from '../packs/manifest.ts'
import type { Tool } from '../packs/tools/index.ts'
import type { LocalNode } from '../node/node.ts'
import type { StoredPack } from '../node/pack-store.ts'
import { fingerprintOf, type RunRecord } from '../node/runs.ts'
import type { ReachHost } from '../node/host.ts'
import { parsePeerId, publicKeyOfPeer } from '../node/host.ts'
import { DEFAULT_READ_TIMEOUT_MS, frames, isErrorFrame, peerError, type FrameStream } from './frames.ts'

/**
 * Codes that say something about the request itself, so every peer would answer the same: a
 * replayed nonce, a version nobody speaks, our own cancellation. Policy refusals (depth, budget,
 * trust, engine) are each peer's own policy, so the next peer is tried.
 */
const FINAL: ReadonlySet<string> = new Set(['RL-4009', 'RL-4012', 'RL-4015'])

export const DEFAULT_DEADLINE_MS = 30_000
export const DEFAULT_ATTEMPTS = 3
/** A delegation may ask for at most an hour (and the timer stays within setTimeout's range). */
export const MAX_DEADLINE_MS = 3_600_000
/** How long a nonce is remembered past its deadline (clock skew between nodes). */
const NONCE_GRACE_MS = 60_000
/** A delegation stream idle this long between requests is closed by the server ... */
export const SERVER_IDLE_MS = 30_000
/** ... and given up by the client well before, so that the client is not the one racing the close. */
export const CLIENT_IDLE_MS = 10_000
/** Idle delegation streams a client keeps per peer. */
const IDLE_STREAMS_PER_PEER = 2
/** Live nonces remembered at most (each ~100 bytes): past this the node answers busy. */
const MAX_NONCES = 100_000

export interface Delegation {
  delegation_id: string
  pack_cid: string
  peer: string
  status: 'completed' | 'failed' | 'cancelled'
  output?: JsonValue
  error?: { code: string, message: string }
  run_id: string
  record: RunRecord
  checkpoint: string
  log_head: { seq: number, hash: string }
  attempts: Array<{ peer: string, code: string, message: string }>
}

/** Where a delegation stands in the chain: depth of the run asking, and the hops that led to it. */
export interface Lineage {
  depth: number
  ancestry: Hop[]
  deadline?: number
}

export const ROOT: Lineage = { depth: 0, ancestry: [] }

// ---------------------------------------------------------------------------
// Hops

function signHop (signer: Signer, request: Pick<DelegateRequest, 'delegation_id' | 'pack_cid' | 'input' | 'budget' | 'nonce' | 'deadline'>, ancestry: readonly Hop[], from: string, to: string): Hop {
  const previous = ancestry.at(-1)?.signature ?? null
  const hop = { from, to, request: requestDigest(request) }
  const signature = signDomain(signer, HOP_SIGNATURE_KIND, hopBody(ancestry.length, hop, previous))
  return { ...hop, signature: Buffer.from(signature).toString('base64url') }
}

/**
 * The ancestry chains from its first hop to `self`, the last hop is the caller's and is for
 * this very request, and every hop is signed by its `from` after the hop before it.
 */
function checkAncestry (request: DelegateRequest, caller: string, self: string): void {
  const hops = request.ancestry
  if (hops.length !== request.depth) throw new ReachError('RL-4006', { message: `depth ${request.depth} but ${hops.length} hops in the ancestry` })
  const last = hops.at(-1) as Hop
  if (last.from !== caller || last.to !== self) throw new ReachError('RL-4006', { message: `the last hop is ${last.from} → ${last.to}, but ${caller} is asking ${self}` })
  if (last.request !== requestDigest(request)) throw new ReachError('RL-4006', { message: 'the last hop was signed for another request' })
  let previous: string | null = null
  hops.forEach((hop, i) => {
    if (i > 0 && hop.from !== hops[i - 1]?.to) throw new ReachError('RL-4006', { message: `hop ${i + 1} starts at ${hop.from}, not where hop ${i} ended` })
    let key: string
    try {
      key = publicKeyOfPeer(hop.from)
    } catch {
      throw new ReachError('RL-4006', { message: `hop ${i + 1}: ${hop.from} is not an Ed25519 peer id` })
    }
    const signature = Buffer.from(hop.signature, 'base64url')
    // One spelling per signature: base64url's spare bits must be zero.
    if (signature.toString('base64url') !== hop.signature || !verifyDomain(key, HOP_SIGNATURE_KIND, hopBody(i, hop, previous), signature)) {
      throw new ReachError('RL-4006', { message: `hop ${i + 1} (${hop.from} → ${hop.to}) is not signed by ${hop.from}` })
    }
    previous = hop.signature
  })
}

// ---------------------------------------------------------------------------
// Server

export interface DelegationServerInit {
  host: ReachHost
  node: LocalNode
  /** The pack, from the store or fetched from providers, admitted by this node's policy. */
  getPack: (cid: string, signal: AbortSignal, timeoutMs: number) => Promise<StoredPack>
  /** Tools a delegated run gets beyond the host's own (the nested `reach.delegate`), given its lineage. */
  toolsFor?: (lineage: Lineage, budget: Budget, signal: AbortSignal) => Tool[]
  maxConcurrent?: number
  maxQueue?: number
  /** How long a stream may wait between one result and the next request (default SERVER_IDLE_MS). */
  idleMs?: number
  now?: () => number
  onServed?: (outcome: string) => void
  log?: (line: string) => void
}

interface Active {
  delegation_id: string
  peer: string
  abort: AbortController
  started: number
}

export class DelegationServer {
  private readonly init: DelegationServerInit
  private readonly self: string
  private readonly nonces = new Map<string, number>()
  private readonly active = new Map<string, Active>()
  private running = 0
  private readonly waiting: Array<() => void> = []
  private readonly maxConcurrent: number
  private readonly maxQueue: number
  private readonly idleMs: number
  private stopping = false

  constructor (init: DelegationServerInit) {
    this.init = init
    this.self = init.host.peerId.toString()
    this.maxConcurrent = init.maxConcurrent ?? 4
    this.maxQueue = init.maxQueue ?? 16
    this.idleMs = init.idleMs ?? SERVER_IDLE_MS
  }

  async start (): Promise<void> {
    await this.init.host.handle(PROTOCOLS.delegate, async (stream, connection) => { await this.serve(stream, connection) }, { maxInboundStreams: this.maxConcurrent + this.maxQueue + 4 })
  }

  async stop (): Promise<void> {
    // Kept streams may still bring requests until the host stops: they are refused from now on.
    this.stopping = true
    await this.init.host.unhandle(PROTOCOLS.delegate)
    // Not the client's cancellation: it should try another peer.
    for (const a of this.active.values()) a.abort.abort(new ReachError('RL-4002', { message: 'the serving node is shutting down' }))
    // Let the cancelled runs record RunCancelled before the stores close (they stop at their next step).
    const until = Date.now() + 5_000
    while (this.active.size > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20))
  }

  list (): Array<{ delegation_id: string, peer: string, started: number }> {
    return [...this.active.values()].map(({ delegation_id, peer, started }) => ({ delegation_id, peer, started }))
  }

  private now (): number {
    return this.init.now?.() ?? Date.now()
  }

  private rememberNonce (nonce: string, deadline: number): void {
    if (this.nonces.has(nonce)) throw new ReachError('RL-4009', { message: 'this request was already received (replayed nonce)' })
    if (this.nonces.size >= MAX_NONCES) {
      // Sweep only when full (a sweep per request was a scan per request).
      const now = this.now()
      for (const [n, until] of this.nonces) if (until < now) this.nonces.delete(n)
      if (this.nonces.size >= MAX_NONCES) throw new ReachError('RL-4007', { message: 'busy: too many live requests remembered' })
    }
    this.nonces.set(nonce, deadline + NONCE_GRACE_MS)
  }

  /** Wait for a run slot; RL-4007 when the queue is full. */
  private async slot (signal: AbortSignal): Promise<() => void> {
    if (this.running < this.maxConcurrent) {
      this.running++
    } else {
      if (this.waiting.length >= this.maxQueue) throw new ReachError('RL-4007', { message: `busy: ${this.running} runs and ${this.waiting.length} waiting` })
      // A released slot is handed straight to the first waiter (running stays the same), so a
      // request arriving in between cannot take it too.
      await new Promise<void>((resolve, reject) => {
        const go = (): void => { signal.removeEventListener('abort', onAbort); resolve() }
        const onAbort = (): void => {
          const i = this.waiting.indexOf(go)
          if (i >= 0) this.waiting.splice(i, 1)
          reject(signal.reason as Error)
        }
        signal.addEventListener('abort', onAbort, { once: true })
        this.waiting.push(go)
      })
    }
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.waiting.shift()
      if (next === undefined) this.running--
      else next()
    }
  }

  /**
   * One stream, its delegations one after another: after a result the client may send its next
   * request on the same stream (no new stream, no protocol negotiation), or close it. A refusal
   * or a failure closes the stream; so does a stream idle for `idleMs` between requests.
   */
  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const caller = connection.remotePeer.toString()
    const fs = frames(stream, MAX_FRAME.delegateRequest)
    const inbox = new Inbox(fs)
    let first = true
    // The first request must come within DEFAULT_READ_TIMEOUT_MS, each later one within idleMs of
    // the last result; frames in between (a late cancel) do not extend it.
    let until = this.now() + DEFAULT_READ_TIMEOUT_MS
    for (;;) {
      let frame: DelegateRequest | CancelFrame | ErrorFrame
      try {
        frame = await inbox.next(AbortSignal.timeout(Math.max(1, until - this.now())))
      } catch (err) {
        // A frame that does not parse gets its code, first or not; a stream that went quiet or
        // away is closed (the first time, with RL-4002: nothing was asked in time).
        const malformed = isReachError(err, 'RL-4010') || isReachError(err, 'RL-4011') || isReachError(err, 'RL-4012')
        if (first || malformed) {
          this.init.onServed?.('refused')
          return await fs.refuse(err)
        }
        return await fs.close()
      }
      if (isErrorFrame(frame)) return await fs.close()
      // A cancel that crossed the result on the wire: nothing left to cancel.
      if (frame.type === 'cancel') continue
      first = false
      if (!await this.serveOne(fs, inbox, frame, caller)) return
      until = this.now() + this.idleMs
    }
  }

  /** Serve one request; true when its result went back and the stream may carry the next one. */
  private async serveOne (fs: FrameStream, inbox: Inbox, request: DelegateRequest, caller: string): Promise<boolean> {
    try {
      if (this.stopping) throw new ReachError('RL-4002', { message: 'the serving node is shutting down' })
      if (request.deadline <= this.now()) throw new ReachError('RL-4008', { message: 'the request arrived after its deadline' })
      if (request.deadline > this.now() + MAX_DEADLINE_MS) throw new ReachError('RL-4008', { message: `the deadline is more than ${MAX_DEADLINE_MS / 60_000} minutes away` })
      checkAncestry(request, caller, this.self)
      // Only signed requests are remembered: garbage cannot fill the nonce table.
      this.rememberNonce(request.nonce, request.deadline)
      const max = this.init.node.policy.max_delegation_depth
      if (request.depth > max) throw new ReachError('RL-4004', { message: `depth ${request.depth} is over this node's maximum of ${max}` })
      if (request.ancestry.some((hop) => hop.from === this.self)) throw new ReachError('RL-4005', { message: `${this.self} is already in this delegation's ancestry` })
    } catch (err) {
      this.init.onServed?.('refused')
      this.init.log?.(`delegate: refused ${caller}: ${(err as Error).message}`)
      await fs.refuse(err)
      return false
    }

    const abort = new AbortController()
    const deadline = setTimeout(() => abort.abort(new ReachError('RL-4008', { message: 'the delegation deadline passed' })), Math.max(0, request.deadline - this.now()))
    const active: Active = { delegation_id: request.delegation_id, peer: caller, abort, started: this.now() }
    this.active.set(request.delegation_id, active)
    // The client may cancel at any time: a `cancel` frame, or the stream going away.
    const watching = this.watchCancel(inbox, request.delegation_id, abort)
    let release: (() => void) | undefined
    try {
      release = await this.slot(abort.signal)
      const pack = await this.init.getPack(request.pack_cid, abort.signal, Math.max(1, request.deadline - this.now()))
      const budget = { ...pack.bundle.manifest.budget, ...request.budget } as Budget
      const lineage: Lineage = { depth: request.depth, ancestry: request.ancestry, deadline: request.deadline }
      const { record, outcome, checkpoint, checkpointText } = await this.init.node.runPack({
        pack,
        input: request.input as JsonValue,
        budget: request.budget as Partial<Budget>,
        signal: abort.signal,
        extraTools: this.init.toolsFor?.(lineage, budget, abort.signal) ?? []
      })
      const last = outcome.events.at(-1)
      const result: ResultFrame = {
        v: 1,
        type: 'result',
        delegation_id: request.delegation_id,
        run_id: record.run_id,
        status: outcome.status,
        ...(outcome.output === undefined ? {} : { output: outcome.output }),
        ...(outcome.error === undefined ? {} : { error: outcome.error }),
        record: record as unknown as Record<string, unknown>,
        checkpoint: checkpointText,
        log_head: { seq: last?.seq ?? checkpoint.at_seq, hash: last?.hash ?? checkpoint.log_hash }
      }
      this.init.onServed?.(outcome.status)
      await fs.write(result)
      // A run the client cancelled, or a client that broke the protocol: this stream is done.
      if (abort.signal.aborted) {
        await fs.close()
        return false
      }
      return true
    } catch (err) {
      this.init.onServed?.('error')
      this.init.log?.(`delegate: ${request.delegation_id} from ${caller} failed: ${(err as Error).message}`)
      await fs.refuse(abort.signal.aborted && !isReachError(err) ? abort.signal.reason : err)
      return false
    } finally {
      clearTimeout(deadline)
      release?.()
      if (this.active.get(request.delegation_id) === active) this.active.delete(request.delegation_id)
      watching.stop()
    }
  }

  /** Until `stop`: a `cancel` for this delegation, the stream going away, or a request out of turn aborts the run. */
  private watchCancel (inbox: Inbox, delegationId: string, abort: AbortController): { stop: () => void } {
    const stopped = new AbortController()
    void (async () => {
      try {
        for (;;) {
          const frame = await inbox.peek(stopped.signal)
          if (frame === undefined) return
          if (isErrorFrame(frame) || frame.type === 'cancel') {
            inbox.drop()
            if (isErrorFrame(frame) || frame.delegation_id === delegationId) break
            continue
          }
          // The result went back and the client asked again: that is the serve loop's to take.
          if (stopped.signal.aborted) return
          // A request before this one's result: the client broke the protocol.
          inbox.drop()
          abort.abort(new ReachError('RL-4010', { message: 'a second request on the stream before the first one\'s result' }))
          return
        }
        abort.abort(new ReachError('RL-4015', { message: 'cancelled by the client' }))
      } catch (err) {
        // The stream ended or broke before the result: nobody is waiting for the run any more.
        if (!abort.signal.aborted && !stopped.signal.aborted) abort.abort(new ReachError('RL-4015', { message: `the client went away (${(err as Error).message})` }))
      }
    })()
    return { stop: () => { stopped.abort() } }
  }
}

/**
 * The frames a client sends on a delegation stream, read by one reader for the stream's whole
 * life (during a run, to see a `cancel`; between runs, to get the next request) and handed out
 * in order. At most one frame is held: a client has nothing to send while a frame is unanswered
 * but a `cancel`, so more is a client breaking the protocol, and the read waits.
 */
class Inbox {
  private readonly fs: FrameStream
  private held: DelegateRequest | CancelFrame | ErrorFrame | undefined
  private reading: Promise<void> | undefined
  private failure: unknown

  constructor (fs: FrameStream) {
    this.fs = fs
  }

  private fill (): Promise<void> {
    this.reading ??= (async () => {
      try {
        // Deadlines are the caller's (peek's signal): a stream stays open between requests.
        this.held = await this.fs.read(['delegate', 'cancel'], { timeoutMs: MAX_DEADLINE_MS + 60_000 })
      } catch (err) {
        this.failure = err
      } finally {
        this.reading = undefined
      }
    })()
    return this.reading
  }

  /** The next frame without taking it; undefined when `signal` aborts first. Throws how the stream failed. */
  async peek (signal: AbortSignal): Promise<DelegateRequest | CancelFrame | ErrorFrame | undefined> {
    if (this.held === undefined && this.failure === undefined) {
      const stop = new Promise<void>((resolve) => {
        if (signal.aborted) resolve()
        signal.addEventListener('abort', () => { resolve() }, { once: true })
      })
      await Promise.race([this.fill(), stop])
    }
    if (this.held !== undefined) return this.held
    if (this.failure !== undefined) throw this.failure
    return undefined
  }

  drop (): void {
    this.held = undefined
  }

  /** Take the next frame; throws how the stream failed, or RL-4002 when `signal` aborts first. */
  async next (signal: AbortSignal): Promise<DelegateRequest | CancelFrame | ErrorFrame> {
    const frame = await this.peek(signal)
    if (frame === undefined) throw new ReachError('RL-4002', { message: 'no request in time' })
    this.drop()
    return frame
  }
}

// ---------------------------------------------------------------------------
// Client

/** What the client needs from the peer registry (federation/peers.ts). */
export interface PeerChooser {
  select (candidates: readonly string[], exclude?: ReadonlySet<string>): string[]
  call<T> (peer: string, fn: () => Promise<T>): Promise<T>
  recordVerificationFailure (peer: string): void
}

export interface DelegatorInit {
  host: ReachHost
  seed: Uint8Array
  peers: PeerChooser
  onOutcome?: (outcome: string, seconds: number) => void
  onRetry?: () => void
  log?: (line: string) => void
}

export interface DelegateOptions {
  pack_cid: string
  input: JsonValue
  budget?: WireBudget
  /** Only this peer (no retries elsewhere). */
  peer?: string
  lineage?: Lineage
  timeoutMs?: number
  attempts?: number
  signal?: AbortSignal
  delegation_id?: string
}

interface IdleStream {
  fs: FrameStream
  since: number
  /** Stop watching it for the peer's close. */
  forget: () => void
}

/** A stream failed before any answer came back on it (RL-4002 inside). */
class StaleStream extends Error {
  readonly error: ReachError
  constructor (error: ReachError) {
    super(error.message)
    this.error = error
  }
}

export class Delegator {
  private readonly init: DelegatorInit
  private readonly self: string
  private readonly inflight = new Map<string, AbortController>()
  /** Made once: a private KeyObject per request cost a delegation 0.3 ms. */
  private readonly signer: Signer
  /** Streams whose last delegation ended in a result, kept for the next request to the same peer. */
  private readonly idle = new Map<string, IdleStream[]>()

  constructor (init: DelegatorInit) {
    this.init = init
    this.self = init.host.peerId.toString()
    this.signer = createSigner(init.seed)
  }

  /** Cancel a delegation this node is waiting on; false when there is none. */
  cancel (delegationId: string): boolean {
    const a = this.inflight.get(delegationId)
    a?.abort(new ReachError('RL-4015', { message: 'cancelled (reach cancel)' }))
    return a !== undefined
  }

  list (): string[] {
    return [...this.inflight.keys()]
  }

  /** Connected peers that could take the work, best first (never one already in the chain). */
  candidates (lineage: Lineage, tried: ReadonlySet<string>): string[] {
    const inChain = new Set(lineage.ancestry.flatMap((h) => [h.from, h.to]))
    const connected = [...new Set(this.init.host.getConnections().map((c) => c.remotePeer.toString()))]
      .filter((p) => p !== this.self && !inChain.has(p))
    return this.init.peers.select(connected, tried)
  }

  async delegate (options: DelegateOptions): Promise<Delegation> {
    // A peer id that does not parse is the caller's mistake (RL-1011), not a peer being down.
    if (options.peer !== undefined) parsePeerId(options.peer)
    const lineage = options.lineage ?? ROOT
    const delegationId = options.delegation_id ?? randomBytes(16).toString('hex')
    // Each attempt gets the whole timeout (capped by the parent run's deadline): a peer that
    // timed out must not leave the next one an expired deadline.
    const deadlineFor = (): number => Math.min(Date.now() + (options.timeoutMs ?? DEFAULT_DEADLINE_MS), lineage.deadline ?? Infinity)
    const abort = new AbortController()
    this.inflight.set(delegationId, abort)
    const signal = options.signal === undefined ? abort.signal : AbortSignal.any([options.signal, abort.signal])
    const started = performance.now()
    const attempts: Delegation['attempts'] = []
    const tried = new Set<string>()
    const maxAttempts = options.peer !== undefined ? 1 : options.attempts ?? DEFAULT_ATTEMPTS
    try {
      for (let i = 0; i < maxAttempts; i++) {
        signal.throwIfAborted()
        if (lineage.deadline !== undefined && Date.now() >= lineage.deadline) throw new ReachError('RL-4008', { message: 'the parent run\'s deadline passed' })
        const peer = options.peer ?? this.candidates(lineage, tried)[0]
        if (peer === undefined) break
        if (i > 0) this.init.onRetry?.()
        tried.add(peer)
        try {
          const result = await this.init.peers.call(peer, async () => {
            const r = await this.attempt(peer, { ...options, delegation_id: delegationId }, lineage, deadlineFor(), signal)
            // The peer cut the run at the deadline (not at our request): a failed attempt.
            if (r.status === 'cancelled' && !signal.aborted) throw new ReachError((r.error?.code ?? 'RL-4008') as ErrorCode, { message: `the run on ${peer} was cut: ${r.error?.message ?? 'deadline'}` })
            return r
          })
          this.init.onOutcome?.(result.status, (performance.now() - started) / 1000)
          return { ...result, attempts }
        } catch (err) {
          const e = isReachError(err) ? err : new ReachError('RL-4002', { message: (err as Error).message, cause: err })
          attempts.push({ peer, code: e.code, message: e.message })
          this.init.log?.(`delegate: ${delegationId} on ${peer} failed: ${e.code} ${e.message}`)
          if (signal.aborted) {
            this.init.onOutcome?.('cancelled', (performance.now() - started) / 1000)
            throw isReachError(signal.reason) ? signal.reason : new ReachError('RL-4015')
          }
          const ourFrame = e.details.remote === true && (e.code === 'RL-4010' || e.code === 'RL-4011')
          if (FINAL.has(e.code) || ourFrame || options.peer !== undefined) {
            this.init.onOutcome?.('refused', (performance.now() - started) / 1000)
            throw e
          }
        }
      }
      this.init.onOutcome?.('error', (performance.now() - started) / 1000)
      throw new ReachError('RL-4016', { message: attempts.length === 0 ? 'no connected peer can take this delegation' : `every attempt failed: ${attempts.map((a) => `${a.peer.slice(-8)} ${a.code}`).join(', ')}`, details: { attempts } })
    } finally {
      this.inflight.delete(delegationId)
    }
  }

  /** Close every kept stream (to `peer`, or to every peer): the next request opens a new one. */
  dropIdle (peer?: string): void {
    for (const [p, kept] of this.idle) {
      if (peer !== undefined && p !== peer) continue
      for (const { fs, forget } of kept.splice(0)) {
        forget()
        void fs.close()
      }
    }
  }

  /** An idle stream to `peer` that is still open both ways, if one is kept. */
  private takeIdle (peer: string): FrameStream | undefined {
    const kept = this.idle.get(peer)
    while (kept !== undefined && kept.length > 0) {
      const { fs, since, forget } = kept.pop() as IdleStream
      forget()
      const s = fs.stream
      if (Date.now() - since < CLIENT_IDLE_MS && s.status === 'open' && s.writeStatus === 'writable' && s.remoteWriteStatus === 'writable') return fs
      void fs.close()
    }
    return undefined
  }

  private keepIdle (peer: string, fs: FrameStream): void {
    const s = fs.stream
    const kept = this.idle.get(peer) ?? []
    this.idle.set(peer, kept)
    // The peer closes a stream it will not read again (a refusal, an old server): not kept.
    if (kept.length >= IDLE_STREAMS_PER_PEER || s.status !== 'open' || s.remoteWriteStatus !== 'writable') {
      void fs.close()
      return
    }
    // Closed by the peer (idle too long on its side) or torn down while kept: let it go at once.
    const gone = (): void => {
      const i = kept.indexOf(entry)
      if (i >= 0) kept.splice(i, 1)
      forget()
      void fs.close()
    }
    const forget = (): void => {
      s.removeEventListener('remoteCloseWrite', gone)
      s.removeEventListener('close', gone)
    }
    const entry: IdleStream = { fs, since: Date.now(), forget }
    s.addEventListener('remoteCloseWrite', gone)
    s.addEventListener('close', gone)
    kept.push(entry)
  }

  /**
   * One request to one peer: sign our hop, send, wait for the result (or cancel), check it. The
   * request goes on a kept stream to that peer when there is one (no new stream, no protocol
   * negotiation). If that stream fails before any answer (the peer closed it while it sat idle),
   * the same request, with the same nonce and hop, goes again on a new stream to the same peer:
   * a peer that had it refuses the repeat (RL-4009), so a request never runs twice on one peer.
   */
  private async attempt (peer: string, options: DelegateOptions & { delegation_id: string }, lineage: Lineage, deadline: number, signal: AbortSignal): Promise<Omit<Delegation, 'attempts'>> {
    const base = { delegation_id: options.delegation_id, pack_cid: options.pack_cid, input: options.input, budget: options.budget ?? {}, nonce: randomBytes(16).toString('hex'), deadline }
    const hop = signHop(this.signer, base, lineage.ancestry, this.self, peer)
    const request: DelegateRequest = { v: 1, type: 'delegate', ...base, depth: lineage.depth + 1, ancestry: [...lineage.ancestry, hop] }
    const kept = this.takeIdle(peer)
    if (kept !== undefined) {
      try {
        return await this.exchange(peer, kept, options, request, deadline, signal)
      } catch (err) {
        if (!(err instanceof StaleStream)) throw err
      }
    }
    let stream: Stream
    try {
      stream = await this.init.host.dialProtocol(parsePeerId(peer) as PeerId, PROTOCOLS.delegate, { signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]) })
    } catch (err) {
      throw new ReachError('RL-4002', { message: `cannot reach ${peer}: ${(err as Error).message}`, cause: err })
    }
    try {
      return await this.exchange(peer, frames(stream, MAX_FRAME.delegateResult), options, request, deadline, signal)
    } catch (err) {
      if (err instanceof StaleStream) throw err.error
      // The same request again, after a kept stream failed: the peer had it (its nonce table says
      // so), so it ran or is running it, and the answer was lost with the stream. Not final: the
      // next peer is tried, as for any peer that did not answer.
      if (kept !== undefined && isReachError(err, 'RL-4009')) throw new ReachError('RL-4002', { message: `${peer} got this request on a stream that then failed; its answer was lost`, cause: err })
      throw err
    }
  }

  private async exchange (peer: string, fs: FrameStream, options: DelegateOptions & { delegation_id: string }, request: DelegateRequest, deadline: number, signal: AbortSignal): Promise<Omit<Delegation, 'attempts'>> {
    const onAbort = (): void => { void fs.write({ v: 1, type: 'cancel', delegation_id: options.delegation_id }).catch(() => {}) }
    signal.addEventListener('abort', onAbort, { once: true })
    let answered = false
    try {
      try {
        await fs.write(request)
      } catch (err) {
        throw isReachError(err) ? err : new ReachError('RL-4002', { message: `stream failed: ${(err as Error).message}`, cause: err })
      }
      // Until the deadline (and a second for the peer to say it ran out); after a cancel, a
      // second for the cancelled run's result, then we stop waiting (a late result is dropped).
      const wait = new AbortController()
      const afterCancel = (): void => { setTimeout(() => { wait.abort(new ReachError('RL-4015', { message: 'cancelled; the peer did not confirm within 1 s' })) }, 1_000).unref() }
      if (signal.aborted) afterCancel()
      else signal.addEventListener('abort', afterCancel, { once: true })
      const frame = await fs.read(['result'], { signal: wait.signal, timeoutMs: Math.max(1, deadline - Date.now()) + 1_000 })
      answered = true
      if (isErrorFrame(frame)) throw peerError(frame, peer)
      const checked = this.check(peer, options, frame)
      // The answer is in and checked: the stream carries the next request to this peer, or winds
      // down in the background (close never throws).
      if (signal.aborted) void fs.close()
      else this.keepIdle(peer, fs)
      return checked
    } catch (err) {
      fs.reset(err as Error)
      if (signal.aborted && isReachError(err, 'RL-4002')) throw isReachError(signal.reason) ? signal.reason : new ReachError('RL-4015')
      // The stream ended or broke before any answer (not a peer that was merely slow).
      const cause = (err as { cause?: { name?: string } }).cause?.name
      if (!answered && isReachError(err, 'RL-4002') && !signal.aborted && cause !== 'TimeoutError' && cause !== 'AbortError') throw new StaleStream(err)
      throw err
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** The result must be this delegation's, signed by the peer that ran it, and consistent with itself. */
  private check (peer: string, options: DelegateOptions & { delegation_id: string }, frame: ResultFrame): Omit<Delegation, 'attempts'> {
    const invalid = (why: string): never => {
      this.init.peers.recordVerificationFailure(peer)
      throw new ReachError('RL-4014', { message: `result from ${peer}: ${why}` })
    }
    if (frame.delegation_id !== options.delegation_id) invalid('it answers another delegation')
    const record = frame.record as unknown as RunRecord
    let checkpoint
    try {
      checkpoint = decodeCheckpoint(frame.checkpoint)
      verifyCheckpoint(checkpoint, { expectedSigner: publicKeyOfPeer(peer) })
    } catch (err) {
      return invalid(`its checkpoint does not verify as the peer's (${(err as Error).message})`)
    }
    if (record.artifact_hash !== options.pack_cid) invalid('it ran another pack')
    if (record.input_hash !== hashCanonical(options.input)) invalid('it ran another input')
    if (record.fingerprint !== fingerprintOf(record)) invalid('its record does not hash to its fingerprint')
    if (record.event_log_hash !== frame.log_head.hash || checkpoint.log_hash !== frame.log_head.hash || checkpoint.at_seq !== frame.log_head.seq) invalid('its checkpoint, record and log head disagree')
    const outputHash = frame.output === undefined ? null : hashCanonical(frame.output)
    if (record.output_hash !== outputHash) invalid('its output does not match the record')
    if (checkpoint.state_hash !== hashCanonical({ status: record.status, output_hash: record.output_hash, error: record.error })) invalid('its checkpoint does not sign this outcome')
    if (record.status !== frame.status) invalid('its status does not match the record')
    if (record.run_id !== frame.run_id) invalid('its run id does not match the record')
    if (canonicalize(frame.error ?? null) !== canonicalize(record.error ?? null)) invalid('its error does not match the record')
    return {
      delegation_id: frame.delegation_id,
      pack_cid: options.pack_cid,
      peer,
      status: frame.status,
      ...(frame.output === undefined ? {} : { output: frame.output as JsonValue }),
      ...(frame.error === undefined ? {} : { error: frame.error as { code: ErrorCode, message: string } }),
      run_id: frame.run_id,
      record,
      checkpoint: frame.checkpoint,
      log_head: frame.log_head
    }
  }
}

// ---------------------------------------------------------------------------
// The reach.delegate tool

/**
 * `reach.delegate {pack, input, budget?, peer?}` for one run at `lineage`:
 * the sub-run goes one hop deeper, its fuel comes out of what the parent run
 * has left (its budget minus the fuel it burnt and what earlier children were
 * granted, so the children of a run never get more fuel in total than the
 * parent's budget), and it is cancelled when the parent's run ends. Its
 * result, with the peer's signed checkpoint, is what the log records, so the
 * parent replays offline.
 */
export function delegateTool (delegator: Delegator, lineage: Lineage, parent: Budget, runSignal: AbortSignal): Tool {
  let fuelLeft = parent.fuel
  return {
    capability: 'reach.delegate',
    idempotent: false,
    async run (args, ctx) {
      const pack = args.pack
      if (typeof pack !== 'string') throw new ReachError('RL-3018', { message: 'reach.delegate needs { pack: <cid>, input }' })
      const asked = (args.budget !== null && typeof args.budget === 'object' && !Array.isArray(args.budget) ? args.budget : {}) as WireBudget
      // What the parent has not yet burnt, and has not already handed to earlier children.
      fuelLeft = Math.min(fuelLeft, ctx.fuelLeft ?? fuelLeft)
      const fuel = Math.min(asked.fuel ?? Math.floor(fuelLeft / 2), fuelLeft)
      if (fuel < 1) throw new ReachError('RL-3016', { message: 'no fuel left in this run for a delegation' })
      fuelLeft -= fuel
      const d = await delegator.delegate({
        pack_cid: pack,
        input: (args.input ?? null) as JsonValue,
        budget: { ...asked, fuel },
        lineage,
        signal: AbortSignal.any([ctx.signal, runSignal]),
        ...(typeof args.peer === 'string' ? { peer: args.peer } : {})
      })
      return {
        peer: d.peer,
        status: d.status,
        ...(d.output === undefined ? {} : { output: d.output }),
        ...(d.error === undefined ? {} : { error: d.error }),
        run_id: d.run_id,
        fingerprint: d.record.fingerprint,
        checkpoint: d.checkpoint,
        fuel_granted: fuel
      } as JsonValue
    }
  }
}
