/**
 * `/reach/log/1.0.0`, the serving side (SPEC §10.6): a finished run's log, streamed from the
 * run store in batches cut by their size in bytes as sent.
 *
 *   client → log.get {run_id}
 *   server → log {run_id, events, pack_cid, checkpoint}
 *   client → log.next            server → log.events {events}      … one batch per log.next
 *   client → log.next            server → log.end
 *
 * A batch goes only when the client asks for it, so neither side holds more than one: the
 * server reads the store as it sends, and the client reads as its replay consumes.
 *
 * The node's audit ledger (SPEC §7.4) is served the same way, and proves itself append-only:
 *
 *   client → log.audit            server → log.ledger {log_id, events, checkpoint}, then batches
 *   client → log.consistency {log_id, old_size, new_size}
 *                                 server → log.proof {log_id, old_size, new_size, old_root, new_root, path}
 */
import type { Connection, Stream } from '@libp2p/interface'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { LOG_BATCH_BYTES, LOG_BATCH_EVENTS, MAX_FRAME, PROTOCOLS } from '../protocol/wire.ts'
import { decodeCheckpoint } from '../protocol/checkpoint.ts'
import type { Event } from '../protocol/event.ts'
import type { AuditSink, AuditSource, ComponentLogger, Logger, Registrar, RunSource } from './components.ts'
import { frames, isErrorFrame, type FrameStream } from './frames.ts'

/** Streams one connection may hold open on this protocol. */
export const MAX_LOG_STREAMS = 16
/**
 * How long the server waits for the next `log.next`: the client replays each batch before it
 * asks for the next, and one batch of a pack at its fuel limit may take a while; a stream idle
 * longer than this is given up (it holds a store iterator open).
 */
export const LOG_NEXT_TIMEOUT_MS = 120_000

export interface LogServerComponents {
  registrar: Registrar
  runs: RunSource
  logger: ComponentLogger
  audit?: AuditSink
  /** The node's audit ledger, served with `log.audit` and `log.consistency` (none: RL-4017). */
  ledger?: AuditSource
}

const encoder = new TextEncoder()
const HEAD = encoder.encode('{"v":1,"type":"log.events","events":[')
const COMMA = encoder.encode(',')
const TAIL = encoder.encode(']}')

/** A `log.events` frame from events already serialised (each is stringified once, to measure it). */
function batchFrame (texts: readonly Uint8Array[], bytes: number): Uint8Array {
  const out = new Uint8Array(HEAD.length + bytes + Math.max(0, texts.length - 1) + TAIL.length)
  let at = 0
  out.set(HEAD, at)
  at += HEAD.length
  texts.forEach((t, i) => {
    if (i > 0) out.set(COMMA, at++)
    out.set(t, at)
    at += t.length
  })
  out.set(TAIL, at)
  return out
}

export class LogServer {
  private readonly components: LogServerComponents
  private readonly log: Logger
  private readonly serving = new Set<{ stream: Stream, done: Promise<void> }>()
  private started = false

  constructor (components: LogServerComponents) {
    this.components = components
    this.log = components.logger.forComponent('reach:federation:log')
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.components.registrar.handle(PROTOCOLS.log, (stream, connection) => { this.track(stream, connection) }, { maxInboundStreams: MAX_LOG_STREAMS })
  }

  /** Stops taking streams, resets those being served and waits until their handlers have returned. */
  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    await this.components.registrar.unhandle(PROTOCOLS.log)
    for (const s of this.serving) s.stream.abort(new ReachError('RL-4002', { message: 'the node is shutting down' }))
    await Promise.all([...this.serving].map(async (s) => await s.done))
  }

  private track (stream: Stream, connection: Connection): void {
    const entry = { stream, done: this.serve(stream, connection.remotePeer.toString()) }
    this.serving.add(entry)
    void entry.done.finally(() => this.serving.delete(entry))
  }

  /** Serve one request; never throws (a failure is the peer's error frame). */
  async serve (stream: Stream, peer: string): Promise<void> {
    const { runs } = this.components
    // The client sends one small frame: read it with the small limit.
    const fs = frames(stream, MAX_FRAME.request)
    try {
      const ask = await fs.read(['log.get', 'log.audit', 'log.consistency'])
      if (isErrorFrame(ask)) return await fs.close()
      if (ask.type === 'log.audit') {
        const ledger = this.ledgerOrRefuse()
        // A head signed now: the client gets every event up to it, and a checkpoint to hold us to.
        const text = await ledger.checkpoint()
        const cp = decodeCheckpoint(text)
        await fs.write({ v: 1, type: 'log.ledger', log_id: cp.log_id, events: cp.at_seq + 1, checkpoint: text })
        return await this.sendEvents(fs, ledger.stream(cp.at_seq))
      }
      if (ask.type === 'log.consistency') {
        const ledger = this.ledgerOrRefuse()
        if (ask.log_id !== ledger.logId()) throw new ReachError('RL-4017', { message: `no audit ledger ${ask.log_id} here` })
        const p = await ledger.consistency(ask.old_size, ask.new_size)
        await fs.write({ v: 1, type: 'log.proof', log_id: ask.log_id, old_size: p.old_size, new_size: p.new_size, old_root: p.old_root, new_root: p.new_root, path: p.path })
        return await fs.close()
      }
      let record
      try {
        record = await runs.record(ask.run_id)
      } catch (err) {
        throw isReachError(err, 'RL-3019') ? new ReachError('RL-4017', { message: `no run ${ask.run_id} here` }) : err
      }
      if (record.status === 'running') throw new ReachError('RL-4017', { message: `run ${ask.run_id} has not finished` })
      await fs.write({ v: 1, type: 'log', run_id: ask.run_id, events: record.events, pack_cid: record.artifact_hash, checkpoint: await runs.checkpointText(ask.run_id) })
      await this.sendEvents(fs, runs.stream(ask.run_id))
    } catch (err) {
      this.log.info(`refused ${peer}: ${(err as Error).message}`)
      // A request this protocol cannot parse is the peer's doing; a run we do not have is not.
      if (isReachError(err) && ['RL-4010', 'RL-4011', 'RL-4012'].includes(err.code)) this.components.audit?.record({ type: 'log.refused', peer, code: err.code, detail: err.message })
      await fs.refuse(err)
    }
  }

  private ledgerOrRefuse (): AuditSource {
    const ledger = this.components.ledger
    if (ledger === undefined) throw new ReachError('RL-4017', { message: 'this node serves no audit ledger' })
    return ledger
  }

  /**
   * After a header: one batch of `source` per `log.next`, then `log.end`, and close. A client that
   * sends an error frame instead of `log.next` ends it (the stream is closed, nothing more sent).
   */
  private async sendEvents (fs: FrameStream, source: AsyncIterable<Event>): Promise<void> {
    const events = source[Symbol.asyncIterator]()
    try {
      // An event read past a full batch starts the next one.
      let carry: Uint8Array | undefined
      let done = false
      for (;;) {
        const next = await fs.read(['log.next'], { timeoutMs: LOG_NEXT_TIMEOUT_MS })
        if (isErrorFrame(next)) return await fs.close()
        const texts: Uint8Array[] = carry === undefined ? [] : [carry]
        let bytes = carry?.length ?? 0
        carry = undefined
        while (!done && texts.length < LOG_BATCH_EVENTS) {
          const item = await events.next()
          if (item.done === true) {
            done = true
            break
          }
          const text = encoder.encode(JSON.stringify(item.value))
          if (texts.length > 0 && bytes + text.length > LOG_BATCH_BYTES) {
            carry = text
            break
          }
          texts.push(text)
          bytes += text.length
        }
        if (texts.length === 0) break
        await fs.writeEncoded('log.events', batchFrame(texts, bytes))
      }
    } finally {
      await events.return?.()
    }
    await fs.write({ v: 1, type: 'log.end' })
    await fs.close()
  }
}
