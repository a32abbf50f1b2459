/**
 * `/reach/delegate/1.0.0`, the asking side (SPEC §10.5): run a pack on a peer and check its
 * signed result. The client signs a hop for each request it sends, checks the result against the
 * peer's own key (the signed checkpoint must be the peer's and cover the record it sent), retries
 * on the next-best peer when one is unavailable, busy or failed, and records every outcome in the
 * peer registry. Requests go on a stream kept from the peer's last result when there is one.
 */
import { randomBytes } from 'node:crypto'
import type { Stream } from '@libp2p/interface'
import { canonicalize, preview, type JsonValue } from '../protocol/canonical.ts'
import { checkDelegatedRun } from '../protocol/delegated.ts'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { publicKeyOfPeerId } from '../protocol/peer-id.ts'
import type { Signer } from '../protocol/keys.ts'
import type { RunRecord } from '../protocol/run.ts'
import { FRAME_LIMIT, MAX_FRAME, PROTOCOLS, encodeFrame, schemaProblem, type DelegateRequest, type Hop, type ResultFrame, type WireBudget } from '../protocol/wire.ts'
import { isPackCid } from '../packs/bundle.ts'
import { systemClock, type AuditSink, type Clock, type ComponentLogger, type Dialer, type Logger, type Random } from './components.ts'
import { CANCEL_GRACE_MS, DEFAULT_ATTEMPTS, DEFAULT_DEADLINE_MS, DIAL_TIMEOUT_MS, FINAL_CODES, MAX_DEADLINE_MS, RESULT_GRACE_MS } from './delegation-constants.ts'
import { ROOT, type Delegation, type Lineage } from './delegation.ts'
import { frames, isErrorFrame, peerError, type FrameStream } from './frames.ts'
import { signHop, type HopRequest } from './hops.ts'
import { IdleStreams } from './idle-streams.ts'
import { isCallersInput } from './peer-breaker.ts'

/** What the client needs from the peer registry (federation/peers.ts). */
export interface PeerChooser {
  select (candidates: readonly string[], exclude?: ReadonlySet<string>): string[]
  call<T> (peer: string, fn: () => Promise<T>): Promise<T>
  recordVerificationFailure (peer: string): void
}

export interface DelegatorComponents {
  /** This node's peer id. */
  self: string
  /** This node's key (the one its peer id names): it signs our hops. */
  signer: Signer
  dialer: Dialer
  peers: PeerChooser
  logger: ComponentLogger
  clock?: Clock
  random?: Random
  audit?: AuditSink
  metrics?: { outcome (outcome: string, seconds: number): void, retry (): void }
  /** Every result a peer sent back, checked (the witness replays those its policy asks for). */
  onResult?: (delegation: Delegation) => void
}

export interface DelegatorInit {
  /** Attempts per delegation when the caller names no peer (default DEFAULT_ATTEMPTS). */
  attempts?: number
  /** Each attempt's deadline is now + this, capped by the parent's (default DEFAULT_DEADLINE_MS). */
  timeoutMs?: number
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
  /** The caller's own id for it (32 hex); a fresh one by default. */
  delegation_id?: string
}

type Asked = DelegateOptions & { delegation_id: string }
type Answer = Omit<Delegation, 'attempts'>

const systemRandom: Random = { bytes: (n) => randomBytes(n) }

/** A stream failed before any answer came back on it (RL-4002 inside). */
class StaleStream extends Error {
  readonly error: ReachError
  constructor (error: ReachError) {
    super(error.message)
    this.error = error
  }
}

/** A peer id the caller named: one that does not parse is the caller's mistake (RL-1011), not a peer being down. */
function checkPeerArgument (peer: string): void {
  try {
    publicKeyOfPeerId(peer)
  } catch (err) {
    if (isReachError(err, 'RL-4006')) throw new ReachError('RL-1011', { message: `cannot delegate to it: ${err.message}`, cause: err })
    throw err
  }
}

/**
 * A request every peer would refuse is the caller's mistake, not a peer failing: it is checked
 * here, against what a delegation server holds it to, before any peer is asked (so no peer's
 * breaker or score pays for it). The input must be canonical JSON (the hop signs its hash;
 * RL-1006 for one nested deeper than canonical JSON's MAX_DEPTH, say); the pack a pack CID;
 * the deadline at most MAX_DEADLINE_MS away; and the request, as it will be sent (its ancestry
 * with our hop), must pass the `delegate` frame's schema (the budget's fields among them) and
 * fit in the frame limit. RL-1011 for those.
 */
function checkRequest (options: DelegateOptions, lineage: Lineage, self: string, now: number, timeoutMs: number): void {
  canonicalize(options.input)
  if (!isPackCid(options.pack_cid)) throw new ReachError('RL-1011', { message: `cannot delegate: ${preview(options.pack_cid)} is not a pack CID` })
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_DEADLINE_MS) {
    throw new ReachError('RL-1011', { message: `cannot delegate: the timeout must be 1 to ${MAX_DEADLINE_MS} ms (a peer refuses a deadline further away), not ${preview(timeoutMs)}` })
  }
  // Our hop as it will be: every peer id is an Ed25519 key of the same length as ours, a digest
  // and a signature have fixed lengths, so the frame is as long as the one that will be sent.
  const hop = { from: self, to: self, request: '0'.repeat(64), signature: 'A'.repeat(86) }
  const asked = { ...options, delegation_id: options.delegation_id ?? '0'.repeat(32) }
  const frame = buildRequest(asked, lineage, '0'.repeat(32), Math.min(now + timeoutMs, lineage.deadline ?? Infinity), () => hop)
  const problem = schemaProblem('delegate', frame)
  if (problem !== undefined) throw new ReachError('RL-1011', { message: `cannot delegate: every peer would refuse this request: ${problem}`, details: { problem } })
  const bytes = encodeFrame(frame).byteLength
  if (bytes > FRAME_LIMIT.delegate) {
    throw new ReachError('RL-1011', { message: `cannot delegate: the request is ${bytes} bytes, over the ${FRAME_LIMIT.delegate}-byte limit of a delegate frame (make the input smaller)`, details: { bytes, limit: FRAME_LIMIT.delegate } })
  }
}

/** The `delegate` frame asking for `options`: what a hop signs (`base`), then `hop(base)`, our hop, after the lineage's. */
function buildRequest (options: Asked, lineage: Lineage, nonce: string, deadline: number, hop: (base: HopRequest) => Hop): DelegateRequest {
  const base: HopRequest = { delegation_id: options.delegation_id, pack_cid: options.pack_cid, input: options.input, budget: options.budget ?? {}, nonce, deadline }
  return { v: 1, type: 'delegate', ...base, depth: lineage.depth + 1, ancestry: [...lineage.ancestry, hop(base)] }
}

function hex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

export class Delegator {
  private readonly components: DelegatorComponents
  private readonly log: Logger
  private readonly clock: Clock
  private readonly random: Random
  private readonly attempts: number
  private readonly timeoutMs: number
  /** Delegations this node is waiting on, by delegation id (one at a time per id). */
  private readonly inflight = new Map<string, AbortController>()
  /** Every delegate() call not yet settled: stop() waits for them. */
  private readonly settling = new Set<Promise<unknown>>()
  private readonly idle: IdleStreams
  private stopped = false
  private stopping: Promise<void> | undefined

  constructor (components: DelegatorComponents, init: DelegatorInit = {}) {
    this.components = components
    this.log = components.logger.forComponent('reach:federation:delegate:client')
    this.clock = components.clock ?? systemClock
    this.random = components.random ?? systemRandom
    this.attempts = init.attempts ?? DEFAULT_ATTEMPTS
    this.timeoutMs = init.timeoutMs ?? DEFAULT_DEADLINE_MS
    this.idle = new IdleStreams(this.clock)
  }

  /** Nothing to register: the client only dials. */
  async start (): Promise<void> {
    await this.stopping
    this.stopped = false
    this.stopping = undefined
  }

  /**
   * Abort every delegation in flight (RL-4002), close the kept streams, and resolve when every
   * delegate() call has settled. delegate() is refused until the next start().
   */
  async stop (): Promise<void> {
    if (!this.stopped) {
      this.stopped = true
      this.stopping = this.shutdown()
    }
    await this.stopping
  }

  private async shutdown (): Promise<void> {
    for (const abort of this.inflight.values()) abort.abort(new ReachError('RL-4002', { message: 'node shutting down' }))
    await Promise.allSettled([...this.settling])
    await this.idle.drop()
  }

  /** Cancel a delegation this node is waiting on; false when there is none. */
  cancel (delegationId: string): boolean {
    const a = this.inflight.get(delegationId)
    a?.abort(new ReachError('RL-4015', { message: 'cancelled (reach cancel)' }))
    return a !== undefined
  }

  /** Delegation ids in flight. */
  list (): string[] {
    return [...this.inflight.keys()]
  }

  /** Close every kept stream (to `peer`, or to every peer): the next request opens a new one. */
  dropIdle (peer?: string): void {
    void this.idle.drop(peer)
  }

  /** Connected peers that could take the work, best first (never one already in the chain). */
  candidates (lineage: Lineage, tried: ReadonlySet<string>): string[] {
    const { self, dialer, peers } = this.components
    const inChain = new Set(lineage.ancestry.flatMap((h) => [h.from, h.to]))
    const connected = [...new Set(dialer.connectedPeers())].filter((p) => p !== self && !inChain.has(p))
    return peers.select(connected, tried)
  }

  /**
   * Run `options.pack_cid` on a peer. RL-1011 for a named peer that is not a peer id, a
   * delegation id already in flight here, or a request no peer would take (checkRequest; RL-1006
   * for an input that is not canonical JSON), all before any dial; RL-4002 while stopped;
   * otherwise as SPEC §10.5 says.
   */
  delegate (options: DelegateOptions): Promise<Delegation> {
    let delegationId: string
    try {
      if (this.stopped) throw new ReachError('RL-4002', { message: 'node shutting down' })
      if (options.peer !== undefined) checkPeerArgument(options.peer)
      delegationId = options.delegation_id ?? hex(this.random.bytes(16))
      // A second entry under the same id would hide the first from cancel().
      if (this.inflight.has(delegationId)) throw new ReachError('RL-1011', { message: `delegation ${delegationId} is already in flight on this node` })
      checkRequest({ ...options, delegation_id: delegationId }, options.lineage ?? ROOT, this.components.self, this.clock.now(), options.timeoutMs ?? this.timeoutMs)
    } catch (err) {
      return Promise.reject(err)
    }
    const abort = new AbortController()
    this.inflight.set(delegationId, abort)
    // The caller's own promise is the one stop() waits for: it settles before stop() resolves.
    const settled: Promise<Delegation> = this.run({ ...options, delegation_id: delegationId }, abort.signal).finally(() => {
      this.settling.delete(settled)
      if (this.inflight.get(delegationId) === abort) this.inflight.delete(delegationId)
    })
    this.settling.add(settled)
    return settled
  }

  private async run (options: Asked, cancelled: AbortSignal): Promise<Delegation> {
    const { peers, metrics, audit } = this.components
    const lineage = options.lineage ?? ROOT
    // Each attempt gets the whole timeout (capped by the parent run's deadline): a peer that
    // timed out must not leave the next one an expired deadline.
    const deadlineFor = (): number => Math.min(this.clock.now() + (options.timeoutMs ?? this.timeoutMs), lineage.deadline ?? Infinity)
    const signal = options.signal === undefined ? cancelled : AbortSignal.any([options.signal, cancelled])
    const started = performance.now()
    const seconds = (): number => (performance.now() - started) / 1000
    const attempts: Delegation['attempts'] = []
    const tried = new Set<string>()
    const maxAttempts = options.peer !== undefined ? 1 : options.attempts ?? this.attempts
    for (let i = 0; i < maxAttempts; i++) {
      signal.throwIfAborted()
      if (lineage.deadline !== undefined && this.clock.now() >= lineage.deadline) throw new ReachError('RL-4008', { message: 'the parent run\'s deadline passed' })
      const peer = options.peer ?? this.candidates(lineage, tried)[0]
      if (peer === undefined) break
      if (i > 0) metrics?.retry()
      tried.add(peer)
      try {
        const result = await peers.call(peer, async () => {
          const r = await this.attempt(peer, options, lineage, deadlineFor(), signal)
          // The peer cut the run at the deadline (not at our request): a failed attempt.
          if (r.status === 'cancelled' && !signal.aborted) throw new ReachError((r.error?.code ?? 'RL-4008') as ErrorCode, { message: `the run on ${peer} was cut: ${r.error?.message ?? 'deadline'}` })
          return r
        })
        metrics?.outcome(result.status, seconds())
        const delegation = { ...result, attempts }
        this.components.onResult?.(delegation)
        return delegation
      } catch (err) {
        const e = isReachError(err) ? err : new ReachError('RL-4002', { message: (err as Error).message, cause: err })
        attempts.push({ peer, code: e.code, message: e.message })
        this.log.info(`${options.delegation_id} on ${peer} failed: ${e.code} ${e.message}`)
        if (signal.aborted) {
          metrics?.outcome('cancelled', seconds())
          throw isReachError(signal.reason) ? signal.reason : new ReachError('RL-4015')
        }
        // A peer refusing the caller's input with an input code (peer-breaker.ts) is not blamed;
        // but that input passed checkRequest, so another peer may well take it: not final, or a
        // peer could stop every delegation by answering RL-1011.
        const ourInput = isCallersInput(e)
        // RL-4014 was audited as a verification failure; RL-4003 is our breaker, not the peer's doing.
        if (e.code !== 'RL-4014' && e.code !== 'RL-4003' && !ourInput) audit?.record({ type: 'delegation.failed', peer, code: e.code, detail: e.message })
        // A peer that found our own frame malformed or too large: every peer would.
        const ourFrame = e.details.remote === true && (e.code === 'RL-4010' || e.code === 'RL-4011')
        if (FINAL_CODES.has(e.code) || ourFrame || options.peer !== undefined) {
          metrics?.outcome('refused', seconds())
          throw e
        }
      }
    }
    metrics?.outcome('error', seconds())
    throw new ReachError('RL-4016', { message: attempts.length === 0 ? 'no connected peer can take this delegation' : `every attempt failed: ${attempts.map((a) => `${a.peer.slice(-8)} ${a.code}`).join(', ')}`, details: { attempts } })
  }

  /**
   * One request to one peer: sign our hop, send, wait for the result (or cancel), check it. On a
   * kept stream that fails before any answer, the same request (same nonce and hop) goes again on
   * a new stream: a peer that had it refuses the repeat (RL-4009), so it never runs twice there.
   */
  private async attempt (peer: string, options: Asked, lineage: Lineage, deadline: number, signal: AbortSignal): Promise<Answer> {
    const { self, signer, dialer } = this.components
    const request = buildRequest(options, lineage, hex(this.random.bytes(16)), deadline, (base) => signHop(signer, base, lineage.ancestry, self, peer))
    const kept = this.idle.take(peer)
    if (kept !== undefined) {
      try {
        return await this.exchange(peer, kept, options, request, deadline, signal)
      } catch (err) {
        if (!(err instanceof StaleStream)) throw err
      }
    }
    let stream: Stream
    try {
      stream = await dialer.dial(peer, PROTOCOLS.delegate, { signal: AbortSignal.any([signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)]) })
    } catch (err) {
      throw new ReachError('RL-4002', { message: `cannot reach ${peer}: ${(err as Error).message}`, cause: err })
    }
    try {
      return await this.exchange(peer, frames(stream, MAX_FRAME.delegateResult), options, request, deadline, signal)
    } catch (err) {
      if (err instanceof StaleStream) throw err.error
      // The kept stream failed after the peer got the request: it ran or is running it, and the
      // answer was lost with the stream. Not final: the next peer is tried.
      if (kept !== undefined && isReachError(err, 'RL-4009')) throw new ReachError('RL-4002', { message: `${peer} got this request on a stream that then failed; its answer was lost`, cause: err })
      throw err
    }
  }

  private async exchange (peer: string, fs: FrameStream, options: Asked, request: DelegateRequest, deadline: number, signal: AbortSignal): Promise<Answer> {
    const onAbort = (): void => { void fs.write({ v: 1, type: 'cancel', delegation_id: options.delegation_id }).catch(() => {}) }
    signal.addEventListener('abort', onAbort, { once: true })
    // After a cancel, CANCEL_GRACE_MS for the cancelled run's result, then we stop waiting.
    const wait = new AbortController()
    let grace: NodeJS.Timeout | undefined
    const afterCancel = (): void => {
      grace = setTimeout(() => { wait.abort(new ReachError('RL-4015', { message: `cancelled; the peer did not confirm within ${CANCEL_GRACE_MS} ms` })) }, CANCEL_GRACE_MS)
      grace.unref()
    }
    let answered = false
    try {
      try {
        await fs.write(request)
      } catch (err) {
        throw isReachError(err) ? err : new ReachError('RL-4002', { message: `stream failed: ${(err as Error).message}`, cause: err })
      }
      if (signal.aborted) afterCancel()
      else signal.addEventListener('abort', afterCancel, { once: true })
      const frame = await fs.read(['result'], { signal: wait.signal, timeoutMs: Math.max(1, deadline - this.clock.now()) + RESULT_GRACE_MS })
      answered = true
      if (isErrorFrame(frame)) throw peerError(frame, peer)
      const checked = this.check(peer, options, frame)
      // The answer is in and checked: the stream carries the next request to this peer, or winds
      // down in the background (close never throws).
      if (signal.aborted) void fs.close()
      else this.idle.keep(peer, fs)
      return checked
    } catch (err) {
      fs.reset(err as Error)
      if (signal.aborted && isReachError(err, 'RL-4002')) throw isReachError(signal.reason) ? signal.reason : new ReachError('RL-4015')
      // The stream ended or broke before any answer (not a peer that was merely slow).
      const cause = (err as { cause?: { name?: string } }).cause?.name
      if (!answered && isReachError(err, 'RL-4002') && !signal.aborted && cause !== 'TimeoutError' && cause !== 'AbortError') throw new StaleStream(err)
      throw err
    } finally {
      clearTimeout(grace)
      signal.removeEventListener('abort', onAbort)
      signal.removeEventListener('abort', afterCancel)
    }
  }

  /** The result, once it passed every check; RL-4014 (a verification failure of `peer`) otherwise. */
  private check (peer: string, options: Asked, frame: ResultFrame): Answer {
    const problem = resultProblem(peer, options, frame)
    if (problem !== undefined) {
      this.components.peers.recordVerificationFailure(peer)
      this.components.audit?.record({ type: 'verification.failed', peer, code: 'RL-4014', run_id: frame.run_id, detail: problem })
      throw new ReachError('RL-4014', { message: `result from ${peer}: ${problem}` })
    }
    return {
      delegation_id: frame.delegation_id,
      pack_cid: options.pack_cid,
      peer,
      status: frame.status,
      ...(frame.output === undefined ? {} : { output: frame.output as JsonValue }),
      ...(frame.error === undefined ? {} : { error: frame.error }),
      run_id: frame.run_id,
      record: frame.record as unknown as RunRecord,
      started: frame.started as unknown as Event,
      checkpoint: frame.checkpoint,
      log_head: frame.log_head
    }
  }
}

/**
 * Why a result is not this delegation's, signed by the peer that ran it and consistent with
 * itself (SPEC §10.5); undefined when it passes. The run itself is held to the same check a
 * replay holds a recorded `reach.delegate` result to, so nothing is accepted live that the
 * caller's replay would refuse.
 */
function resultProblem (peer: string, asked: Asked, frame: ResultFrame): string | undefined {
  if (frame.delegation_id !== asked.delegation_id) return 'it answers another delegation'
  const fuel = asked.budget?.fuel
  const checked = checkDelegatedRun({ ...frame, peer }, { pack: asked.pack_cid, input: asked.input, ...(fuel === undefined ? {} : { fuel }) })
  if (!checked.ok) return checked.problem
  if (checked.checkpoint.log_hash !== frame.log_head.hash || checked.checkpoint.at_seq !== frame.log_head.seq) return 'its checkpoint and log head disagree'
  return undefined
}
