/**
 * `/reach/delegate/1.0.0`, the serving side (SPEC §10.5): run a pack for a peer.
 *
 *   client → delegate {delegation_id, pack_cid, input, budget, depth, ancestry, deadline, nonce}
 *   client → cancel {delegation_id}                (optional, any time before the result)
 *   server → result {delegation_id, run_id, status, output?, error?, record, checkpoint, log_head}
 *          | error {code, message}                 (refused; the stream is then closed)
 *
 * Refusal order (the same answer from every node): malformed frame (RL-4010/4011/4012), an
 * untrusted caller or hop (RL-4021: evidence convicts it), deadline
 * (RL-4008), ancestry (RL-4006), replayed nonce (RL-4009), depth (RL-4004), cycle (RL-4005), full
 * queue (RL-4007); then the pack (RL-4001/4013/30xx) and budget (RL-3010), which the PackSource
 * and RunExecutor check. The run is cancelled by a `cancel`, the client going away, the deadline,
 * or this node stopping (RL-4002).
 */
import type { Stream } from '@libp2p/interface'
import type { JsonValue } from '../protocol/canonical.ts'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { MAX_FRAME, PROTOCOLS, type DelegateRequest, type ResultFrame } from '../protocol/wire.ts'
import { systemClock, type AuditSink, type Clock, type ComponentLogger, type Logger, type PackSource, type Registrar, type RunExecutor } from './components.ts'
import { DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_QUEUE, EXTRA_INBOUND_STREAMS, MAX_DEADLINE_MS, MAX_NONCES, NONCE_GRACE_MS, PACK_FETCH_MS, SERVER_IDLE_MS, STOP_TIMEOUT_MS } from './delegation-constants.ts'
import { lineageJson } from './delegation.ts'
import { DEFAULT_READ_TIMEOUT_MS, frames, isErrorFrame, type FrameStream } from './frames.ts'
import { checkAncestry } from './hops.ts'
import { Inbox, type ClientFrame } from './inbox.ts'

export interface DelegationServerComponents {
  /** This node's peer id. */
  self: string
  registrar: Registrar
  executor: RunExecutor
  packs: PackSource
  logger: ComponentLogger
  clock?: Clock
  audit?: AuditSink
  metrics?: { served (outcome: string): void }
  /** Peers evidence convicts (federation/witness.ts): nothing they ask is served. */
  untrusted?: (peer: string) => boolean
}

export interface DelegationServerInit {
  /** Runs at once (default DEFAULT_MAX_CONCURRENT). */
  maxConcurrent?: number
  /** Requests waiting for a run slot before RL-4007 (default DEFAULT_MAX_QUEUE). */
  maxQueue?: number
  /** How long a stream may wait between one result and the next request (default SERVER_IDLE_MS). */
  idleMs?: number
}

/** A delegation this node is serving. */
export interface ServedDelegation {
  delegation_id: string
  peer: string
  started: number
}

interface Active extends ServedDelegation {
  abort: AbortController
}

const MALFORMED: ReadonlySet<string> = new Set(['RL-4010', 'RL-4011', 'RL-4012'])
/** Refusals that say how this node is (busy, stopping), not what the peer sent: not audited. */
const OUR_STATE: ReadonlySet<string> = new Set(['RL-4002', 'RL-4007'])

function shuttingDown (): ReachError {
  return new ReachError('RL-4002', { message: 'the serving node is shutting down' })
}

export class DelegationServer {
  private readonly components: DelegationServerComponents
  private readonly log: Logger
  private readonly clock: Clock
  private readonly maxConcurrent: number
  private readonly maxQueue: number
  private readonly idleMs: number
  private readonly nonces = new Map<string, number>()
  /** Runs in flight by nonce: the client chooses the delegation id, a nonce is one request's own. */
  private readonly active = new Map<string, Active>()
  /** Every request being served, until its result or refusal is sent. */
  private readonly serving = new Set<Promise<boolean>>()
  private running = 0
  private readonly waiting: Array<() => void> = []
  private started = false
  private stopped = false
  private stopping: Promise<void> | undefined

  constructor (components: DelegationServerComponents, init: DelegationServerInit = {}) {
    this.components = components
    this.log = components.logger.forComponent('reach:federation:delegate:server')
    this.clock = components.clock ?? systemClock
    this.maxConcurrent = init.maxConcurrent ?? DEFAULT_MAX_CONCURRENT
    this.maxQueue = init.maxQueue ?? DEFAULT_MAX_QUEUE
    this.idleMs = init.idleMs ?? SERVER_IDLE_MS
  }

  async start (): Promise<void> {
    if (this.started) return
    await this.stopping
    this.started = true
    this.stopped = false
    try {
      await this.components.registrar.handle(PROTOCOLS.delegate, (stream, connection) => { void this.handle(stream, connection.remotePeer.toString()) }, { maxInboundStreams: this.maxConcurrent + this.maxQueue + EXTRA_INBOUND_STREAMS })
    } catch (err) {
      this.started = false
      throw err
    }
  }

  /**
   * Stop taking requests, abort the runs in flight (RL-4002: the client tries another peer) and
   * wait, at most STOP_TIMEOUT_MS, until each has sent its answer.
   */
  async stop (): Promise<void> {
    if (this.started) {
      this.started = false
      this.stopped = true
      this.stopping = this.shutdown()
    }
    await this.stopping
  }

  private async shutdown (): Promise<void> {
    try {
      // Kept streams may still bring requests until the host closes them: refused from now on.
      await this.components.registrar.unhandle(PROTOCOLS.delegate)
    } finally {
      for (const a of this.active.values()) a.abort.abort(shuttingDown())
      let timer: NodeJS.Timeout | undefined
      const bound = new Promise<void>((resolve) => { timer = setTimeout(resolve, STOP_TIMEOUT_MS) })
      await Promise.race([Promise.allSettled([...this.serving]), bound])
      clearTimeout(timer)
    }
  }

  /** The delegations being served now, one entry per request. */
  list (): ServedDelegation[] {
    return [...this.active.values()].map(({ delegation_id, peer, started }) => ({ delegation_id, peer, started }))
  }

  /**
   * Serve one inbound stream from `remotePeer`, its delegations one after another: after a
   * result the client may send its next request on it, or close it. A refusal or a failure
   * closes the stream; so does a stream idle for `idleMs` between requests. Never throws.
   */
  async handle (stream: Stream, remotePeer: string): Promise<void> {
    const fs = frames(stream, MAX_FRAME.delegateRequest)
    const inbox = new Inbox(fs)
    let first = true
    // The first request must come within DEFAULT_READ_TIMEOUT_MS, each later one within idleMs of
    // the last result; frames in between (a late cancel) do not extend it.
    let until = this.clock.now() + DEFAULT_READ_TIMEOUT_MS
    try {
      for (;;) {
        let frame: ClientFrame
        try {
          frame = await inbox.next(AbortSignal.timeout(Math.max(1, until - this.clock.now())))
        } catch (err) {
          // A frame that does not parse gets its code, first or not; a stream that went quiet or
          // away is closed (the first time, with RL-4002: nothing was asked in time).
          const malformed = isReachError(err) && MALFORMED.has(err.code)
          if (first || malformed) {
            this.refused(remotePeer, err)
            return await fs.refuse(err)
          }
          return await fs.close()
        }
        if (isErrorFrame(frame)) return await fs.close()
        // A cancel that crossed the result on the wire: nothing left to cancel.
        if (frame.type === 'cancel') continue
        first = false
        const served = this.serveOne(fs, inbox, frame, remotePeer)
        this.serving.add(served)
        let more: boolean
        try {
          more = await served
        } finally {
          this.serving.delete(served)
        }
        if (!more) return
        until = this.clock.now() + this.idleMs
      }
    } catch (err) {
      this.log.warn(`stream from ${remotePeer} failed: ${(err as Error).message}`)
      stream.abort(err as Error)
    }
  }

  private refused (peer: string, err: unknown): void {
    this.components.metrics?.served('refused')
    this.log.info(`refused ${peer}: ${(err as Error).message}`)
    if (isReachError(err) && !OUR_STATE.has(err.code)) this.components.audit?.record({ type: 'delegation.refused', peer, code: err.code, detail: err.message })
  }

  private rememberNonce (nonce: string, deadline: number): void {
    if (this.nonces.has(nonce)) throw new ReachError('RL-4009', { message: 'this request was already received (replayed nonce)' })
    if (this.nonces.size >= MAX_NONCES) {
      // Sweep only when full (a sweep per request was a scan per request).
      const now = this.clock.now()
      for (const [n, until] of this.nonces) if (until < now) this.nonces.delete(n)
      if (this.nonces.size >= MAX_NONCES) throw new ReachError('RL-4007', { message: 'busy: too many live requests remembered' })
    }
    this.nonces.set(nonce, deadline + NONCE_GRACE_MS)
  }

  /** The checks before a run, in SPEC order (steps 2-6). */
  private admit (request: DelegateRequest, caller: string): void {
    const { self, executor } = this.components
    if (this.stopped) throw shuttingDown()
    const untrusted = this.components.untrusted
    if (untrusted !== undefined) {
      const liar = [caller, ...request.ancestry.map((hop) => hop.from)].find((peer) => untrusted(peer))
      if (liar !== undefined) throw new ReachError('RL-4021', { message: `${liar === caller ? 'the caller' : 'a hop of this delegation'}, ${liar}, is untrusted: evidence shows it signed a lie`, details: { peer: liar } })
    }
    const now = this.clock.now()
    if (request.deadline <= now) throw new ReachError('RL-4008', { message: 'the request arrived after its deadline' })
    if (request.deadline > now + MAX_DEADLINE_MS) throw new ReachError('RL-4008', { message: `the deadline is more than ${MAX_DEADLINE_MS / 60_000} minutes away` })
    checkAncestry(request, caller, self)
    // Only signed requests are remembered: garbage cannot fill the nonce table.
    this.rememberNonce(request.nonce, request.deadline)
    const max = executor.maxDepth()
    if (request.depth > max) throw new ReachError('RL-4004', { message: `depth ${request.depth} is over this node's maximum of ${max}` })
    if (request.ancestry.some((hop) => hop.from === self)) throw new ReachError('RL-4005', { message: `${self} is already in this delegation's ancestry` })
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

  /** Serve one request; true when its result went back and the stream may carry the next one. */
  private async serveOne (fs: FrameStream, inbox: Inbox, request: DelegateRequest, caller: string): Promise<boolean> {
    const { executor, packs, metrics } = this.components
    try {
      this.admit(request, caller)
    } catch (err) {
      this.refused(caller, err)
      await fs.refuse(err)
      return false
    }

    const abort = new AbortController()
    const deadline = setTimeout(() => abort.abort(new ReachError('RL-4008', { message: 'the delegation deadline passed' })), Math.max(0, request.deadline - this.clock.now()))
    this.active.set(request.nonce, { delegation_id: request.delegation_id, peer: caller, abort, started: this.clock.now() })
    // The client may cancel at any time: a `cancel` frame, or the stream going away.
    const watching = this.watchCancel(inbox, request.delegation_id, abort)
    let release: (() => void) | undefined
    try {
      release = await this.slot(abort.signal)
      const pack = await packs(request.pack_cid, abort.signal, Math.max(1, Math.min(request.deadline - this.clock.now(), PACK_FETCH_MS)))
      const run = await executor.run({
        pack,
        input: request.input as JsonValue,
        budget: request.budget,
        signal: abort.signal,
        lineage: lineageJson({ depth: request.depth, ancestry: request.ancestry, deadline: request.deadline })
      })
      // The run has ended here, whatever becomes of its answer (the client may have stopped waiting).
      this.log.info(`served ${request.delegation_id} for ${caller}: ${run.record.run_id} ${run.status}`)
      const result: ResultFrame = {
        v: 1,
        type: 'result',
        delegation_id: request.delegation_id,
        run_id: run.record.run_id,
        status: run.status,
        ...(run.output === undefined ? {} : { output: run.output }),
        ...(run.error === undefined ? {} : { error: run.error }),
        record: run.record as unknown as Record<string, unknown>,
        started: run.started as unknown as Record<string, unknown>,
        checkpoint: run.checkpointText,
        log_head: run.head
      }
      metrics?.served(run.status)
      await fs.write(result)
      // A run the client cancelled, or a client that broke the protocol: this stream is done.
      if (abort.signal.aborted) {
        await fs.close()
        return false
      }
      return true
    } catch (err) {
      metrics?.served('error')
      this.log.info(`${request.delegation_id} from ${caller} failed: ${(err as Error).message}`)
      await fs.refuse(abort.signal.aborted && !isReachError(err) ? abort.signal.reason : err)
      return false
    } finally {
      clearTimeout(deadline)
      release?.()
      this.active.delete(request.nonce)
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
