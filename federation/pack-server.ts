/**
 * `/reach/pack/1.0.0`, the serving side (SPEC §10.4): a stored pack, asked for by CID, as a
 * `pack` header and one raw frame of its bundle bytes.
 *
 *   client → pack.get {cid}
 *   server → pack {cid, size, signatures}, then `size` bundle bytes | error (RL-3012, RL-4007, …)
 */
import type { Connection, Stream } from '@libp2p/interface'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { MAX_FRAME, PROTOCOLS } from '../protocol/wire.ts'
import type { StoredPack } from '../packs/trust.ts'
import type { ComponentLogger, Logger, Registrar } from './components.ts'
import { frames, isErrorFrame } from './frames.ts'
import { MAX_CONCURRENT_SERVES, MAX_HEADER_SIGNATURES, MAX_INBOUND_STREAMS, REQUEST_TIMEOUT_MS, SERVE_TIMEOUT_MS } from './pack-constants.ts'

/** What the server reads from the node's pack store. */
export interface PackReader {
  has (cid: string): Promise<boolean>
  /** The stored pack, its bytes re-verified as they are read (throws when they do not verify). */
  get (cid: string): Promise<StoredPack>
}

export interface PackServerComponents {
  registrar: Registrar
  packs: PackReader
  logger: ComponentLogger
}

function codeOf (err: unknown): string {
  return isReachError(err) ? err.code : 'RL-4002'
}

export class PackServer {
  readonly #registrar: Registrar
  readonly #packs: PackReader
  readonly #log: Logger
  /** Every handler under way (refusals included), so stop() can reset their streams and await them. */
  readonly #handlers = new Set<{ stream: Stream, done: Promise<void> }>()
  /** Handlers past the concurrency check, holding a slot. */
  #sending = 0
  #started = false

  constructor (components: PackServerComponents) {
    this.#registrar = components.registrar
    this.#packs = components.packs
    this.#log = components.logger.forComponent('reach:federation:pack-server')
  }

  async start (): Promise<void> {
    if (this.#started) return
    this.#started = true
    await this.#registrar.handle(PROTOCOLS.pack, (stream, connection) => { this.#track(stream, connection) }, { maxInboundStreams: MAX_INBOUND_STREAMS })
  }

  /** Stops taking streams, resets those being served and returns once their handlers have. */
  async stop (): Promise<void> {
    if (!this.#started) return
    this.#started = false
    try {
      await this.#registrar.unhandle(PROTOCOLS.pack)
    } catch {
      // the host may already be stopped, which removes every handler anyway
    }
    const shutdown = new ReachError('RL-4002', { message: 'the node is shutting down' })
    for (const h of this.#handlers) h.stream.abort(shutdown)
    await Promise.all([...this.#handlers].map(async (h) => { await h.done }))
  }

  #track (stream: Stream, connection: Connection): void {
    if (!this.#started) {
      stream.abort(new ReachError('RL-4002', { message: 'the node is shutting down' }))
      return
    }
    const handler = { stream, done: this.#serve(stream, connection.remotePeer.toString()) }
    this.#handlers.add(handler)
    void handler.done.finally(() => this.#handlers.delete(handler))
  }

  /** Serve one pack.get. Never throws: a bad request costs the peer its stream, never the node. */
  async #serve (stream: Stream, peer: string): Promise<void> {
    const fs = frames(stream, MAX_FRAME.request)
    if (this.#sending >= MAX_CONCURRENT_SERVES) {
      await fs.refuse(new ReachError('RL-4007', { message: `serving ${this.#sending} packs already; try again shortly` }))
      return
    }
    this.#sending++
    const timer = setTimeout(() => { fs.reset(new ReachError('RL-4002', { message: `sending to ${peer} took over ${SERVE_TIMEOUT_MS} ms` })) }, SERVE_TIMEOUT_MS)
    try {
      let request
      try {
        request = await fs.read(['pack.get'], { timeoutMs: REQUEST_TIMEOUT_MS })
      } catch (err) {
        this.#log.info(`refused a request from ${peer} (${codeOf(err)}: ${(err as Error)?.message})`)
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
          this.#log.warn(`stored pack ${cid} is unreadable (${codeOf(err)}: ${(err as Error)?.message})`)
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
      this.#sending--
    }
  }
}
