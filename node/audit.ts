/**
 * The node's audit ledger (SPEC §7.4): what this node did (packs fetched and trusted, trust
 * changes, delegations sent and served, checkpoints and receipts received, verifications and
 * their outcomes, evidence, refusals), as an ordinary hash-chained event log of its own,
 * checkpointed and signed with the node key like any log (kind "log"), so that a node that
 * rewrites its own history is caught by an RFC 6962 consistency check (protocol/audit.ts).
 *
 * `<home>/audit.db`, a LevelDB of its own (never a run in runs.db), made 0700:
 *
 *   !meta!version              `1`
 *   !meta!chunk                the chunk size below (1024), fixed when the ledger is made
 *   !meta!checkpoint           the latest checkpoint text this node signed of the ledger
 *   !segments!audit!<seq>      the ledger's events, one durable batch per key (SPEC §7.2 values)
 *   !heads!audit               its head, written with each segment in one synced batch
 *   !chunks!<i, 16 digits>     the RFC 6962 root (hex) of leaves [i·chunk, (i+1)·chunk), written
 *                              in the same synced batch as the events that complete it
 *
 * Recording never waits and never throws: `record(e)` turns the fact into an event draft at
 * once (a malformed one is refused, counted and logged) and queues it; one write at a time takes
 * everything queued (group commit: one fsync for all that arrived during the previous write). A
 * write the disk refuses is logged, counted (`status()`), kept and retried with backoff; past
 * `maxPending` queued entries new ones are dropped, counted, and the ledger says so itself with
 * an `audit.ledger.dropped {count}` event once it can write again.
 *
 * Proofs need no pass over the ledger: the roots of complete chunks are kept (in the database
 * and in memory, 32 bytes per 1,024 events) with the leaves of the last, partial one, so a root
 * or a consistency proof costs O(size / chunk) hashes at most (perfect subtrees are memoised)
 * and reads at most a chunk or two of events from disk.
 */
import { mkdir } from 'node:fs/promises'
import { AUDIT_FORMAT, AUDIT_TYPE_PREFIX, LEDGER_CREATED, LEDGER_DROPPED, isAuditKind, ledgerStateHash } from '../protocol/audit.ts'
import { canonicalize, type JsonObject } from '../protocol/canonical.ts'
import { createCheckpoint, encodeCheckpoint } from '../protocol/checkpoint.ts'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import { draftProblem, headOf, nextEvent, type ChainHead, type Event, type EventDraft } from '../protocol/event.ts'
import type { Signer } from '../protocol/keys.ts'
import { MerkleAccumulator, leafHashHex, nodeHash, type ConsistencyProofJson, type InclusionProofJson } from '../protocol/merkle.ts'
import { systemClock, type AuditEvent, type AuditSink, type AuditSource, type Clock, type ComponentLogger, type Logger, type Random } from '../federation/components.ts'
import type { Route } from './api.ts'
import { errno, pathExists, storageFailure } from './fs.ts'
import { parseLimit } from './limit.ts'
import { systemRandom } from './random.ts'
import type { Db, LevelEventStore, LevelRider, SharedLogs, Sub } from './store/level.ts'

/** The ledger's directory in the data dir. */
export const AUDIT_DB = 'audit.db'
export const AUDIT_DB_VERSION = 1
/** The ledger's name among the database's logs (its keys' prefix). */
const LOG_NAME = 'audit'
/**
 * Leaves per cached subtree root. 1,024 keeps the cache at 32 bytes per 1,024 events (32 MB for
 * a billion) while a proof reads at most about two chunks of events from disk.
 */
export const AUDIT_CHUNK = 1024
/**
 * Entries kept in memory while the disk refuses writes. About 10,000 × a few hundred bytes: a
 * node whose disk stays full for long loses entries (counted, and said in the ledger) rather
 * than its memory.
 */
export const AUDIT_MAX_PENDING = 10_000
/** Events per write: the store's own batch caps split larger writes anyway. */
const AUDIT_WRITE_EVENTS = 4096
/** First retry after a failed write, doubling to AUDIT_RETRY_MAX_MS. */
export const AUDIT_RETRY_MS = 1000
export const AUDIT_RETRY_MAX_MS = 30_000
/** Entries one `list` returns by default and at most (page on with `since`). */
export const AUDIT_LIST_DEFAULT = 100
export const AUDIT_LIST_MAX = 10_000
/** Longest `detail` kept (characters); longer ones are cut. Other strings: MAX_FIELD. */
const MAX_DETAIL = 4096
const MAX_FIELD = 256
const OPTIONAL_FIELDS = ['code', 'run_id', 'cid', 'key', 'detail'] as const

export interface AuditLedgerInit {
  /** The ledger's directory: `<home>/audit.db`. */
  path: string
  /**
   * The node key: named in the ledger's first event, and the default signer of its checkpoints.
   * Without one the ledger only reads (`reach audit` on a stopped node): nothing is made, a
   * missing ledger reads as empty, and `record` drops what it is given.
   */
  signer?: Signer
  clock?: Clock
  /** The genesis nonce (a simulation seeds it). */
  random?: Random
  logger?: ComponentLogger
  /** Leaves per cached root, a power of two (default AUDIT_CHUNK; fixed when the ledger is made). */
  chunkSize?: number
  /** Entries queued while writes fail, before new ones are dropped (default AUDIT_MAX_PENDING). */
  maxPending?: number
  /** First retry delay after a failed write (default AUDIT_RETRY_MS). */
  retryMs?: number
}

export interface AuditQuery {
  /** Only entries after this seq. */
  since?: number
  /** Only entries of this type (`delegation.sent`), or of its kinds (`delegation` matches `delegation.*`). */
  type?: string
  /** At most this many (list: default AUDIT_LIST_DEFAULT, at most AUDIT_LIST_MAX). */
  limit?: number
}

export interface AuditPage {
  events: Event[]
  /** When the page is full: the `since` of the next page. */
  next?: number
}

/** What the ledger has and what it could not do. */
export interface AuditStatus {
  log_id: string | null
  /** Durable events. */
  size: number
  /** Entries queued, not yet durable. */
  pending: number
  /** Entries handed to `record`. */
  recorded: number
  /** Events made durable since the ledger was opened (genesis and drop notices included). */
  written: number
  /** Writes the store refused. */
  failed_writes: number
  /** Entries dropped: the queue was full, or the ledger read-only or closed. */
  dropped: number
  /** Entries refused as malformed. */
  refused: number
  last_error?: { code: ErrorCode, message: string }
  /** The latest checkpoint this node signed of the ledger. */
  checkpoint?: { checkpoint_id: string, at_seq: number }
}

/** The part of the ledger a control API route reads. */
export type AuditReader = Pick<AuditLedger, 'list' | 'status'>

/** Where the ledger's tree stands: replaced whole after each write, so a proof under way sees one state. */
interface TreeView {
  size: number
  head: ChainHead | null
  /** Complete chunks (their roots are `#chunks[0 .. chunkCount)`). */
  chunkCount: number
  /** Leaf hashes (hex) of the events after the last complete chunk. */
  tail: readonly string[]
}

interface Opened {
  db: Db
  store: LevelEventStore
  meta: Sub
  chunks: Sub
  chunkSize: number
}

/** Largest power of two strictly smaller than n (n ≥ 2): RFC 6962's split point. */
function split (n: number): number {
  let k = 1
  while (k * 2 < n) k *= 2
  return k
}

/** Arithmetic, not bitwise: sizes pass 2^31. */
function isPowerOfTwo (n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 1) return false
  let k = 1
  while (k < n) k *= 2
  return k === n
}

function hashNodes (left: string, right: string): string {
  return Buffer.from(nodeHash(Buffer.from(left, 'hex'), Buffer.from(right, 'hex'))).toString('hex')
}

function rootOfLeaves (leaves: readonly string[]): string {
  const acc = new MerkleAccumulator()
  for (const leaf of leaves) acc.pushLeafHex(leaf)
  return acc.rootHex()
}

const EMPTY_ROOT = new MerkleAccumulator().rootHex()
const KEY_WIDTH = 16

function chunkKey (i: number): string {
  return String(i).padStart(KEY_WIDTH, '0')
}

function refuse (message: string): never {
  throw new ReachError('RL-1005', { message: `not an audit entry: ${message}` })
}

/** The event draft for one fact: `audit.<type>`, about `peer`, its other members and `at` as payload. Throws RL-1005 / RL-1006. */
export function auditDraft (e: AuditEvent, at: number): EventDraft {
  if (e === null || typeof e !== 'object') refuse('not an object')
  if (!isAuditKind(e.type) || e.type.startsWith('ledger.')) refuse(`type ${JSON.stringify(e.type)} is not an audit type (ledger.* is the ledger's own)`)
  if (typeof e.peer !== 'string' || e.peer.length === 0 || e.peer.length > MAX_FIELD) refuse(`peer must be a string of 1 to ${MAX_FIELD} characters`)
  const payload: JsonObject = { at: Math.floor(at), peer: e.peer }
  for (const field of OPTIONAL_FIELDS) {
    const value = e[field]
    if (value === undefined) continue
    if (typeof value !== 'string') refuse(`${field} must be a string`)
    if (field === 'detail') {
      const points = [...value.toWellFormed()]
      payload.detail = points.length > MAX_DETAIL ? points.slice(0, MAX_DETAIL - 1).join('') + '…' : points.join('')
    } else {
      if (value.length > MAX_FIELD) refuse(`${field} is longer than ${MAX_FIELD} characters`)
      payload[field] = value
    }
  }
  const draft: EventDraft = { type: AUDIT_TYPE_PREFIX + e.type, aggregate_id: e.peer, payload }
  const problem = draftProblem(draft)
  if (problem !== undefined) refuse(problem)
  // RL-1006 here, not inside a write: what JSON cannot carry is refused before it is queued.
  canonicalize(payload)
  return draft
}

/** `--type` / `?type=`: an audit type, with or without its `audit.` prefix. RL-1011 otherwise. */
export function parseAuditType (text: string, name = 'type'): string {
  const kind = text.startsWith(AUDIT_TYPE_PREFIX) ? text.slice(AUDIT_TYPE_PREFIX.length) : text
  if (!isAuditKind(kind)) throw new ReachError('RL-1011', { message: `${name} must be an audit type such as delegation.sent (lower-case words joined by dots), got ${JSON.stringify(text.slice(0, 60))}`, details: { option: name } })
  return kind
}

/** A seq option (`--since`, `?since=`): a non-negative integer. RL-1003 otherwise. */
function parseSeq (text: string, name: string): number {
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) throw new ReachError('RL-1003', { message: `${name} must be a non-negative integer, got ${JSON.stringify(text.slice(0, 40))}`, details: { option: name } })
  return Number(text)
}

/** `GET /v1/audit?since=&type=&limit=` as a query (RL-1003 for a bad seq or limit, RL-1011 for a bad type). */
export function auditQueryOf (params: URLSearchParams): AuditQuery {
  const since = params.get('since')
  const type = params.get('type')
  const limit = params.get('limit')
  return {
    ...(since === null ? {} : { since: parseSeq(since, 'since') }),
    ...(type === null ? {} : { type: parseAuditType(type, 'type') }),
    ...(limit === null ? {} : { limit: parseLimit(limit, 'limit') })
  }
}

/** The control API's read of the ledger: `GET /v1/audit`. */
export function auditRoute (audit: AuditReader): Route {
  return { method: 'GET', path: '/v1/audit', handler: async (req) => ({ ...(await audit.list(auditQueryOf(req.query))), status: audit.status() }) }
}

export class AuditLedger implements AuditSink, AuditSource {
  readonly path: string
  readonly #o: Opened | undefined
  readonly #signer: Signer | undefined
  readonly #clock: Clock
  readonly #random: Random
  readonly #log: Logger
  readonly #maxPending: number
  readonly #retryMs: number
  readonly #chunkSize: number
  readonly #chunks: string[] = []
  /** Roots of perfect subtrees larger than a chunk, by `lo:size`: they never change once complete. */
  readonly #memo = new Map<string, string>()
  #view: TreeView = { size: 0, head: null, chunkCount: 0, tail: [] }
  #logId: string | undefined
  #queue: EventDraft[] = []
  /** Entries dropped that no `audit.ledger.dropped` event has told of yet. */
  #untold = 0
  #flushing: Promise<void> | undefined
  #retry: NodeJS.Timeout | undefined
  #backoff: number
  #closed = false
  #closing: Promise<void> | undefined
  #latest: { text: string, checkpoint_id: string, at_seq: number } | undefined
  #lastError: { code: ErrorCode, message: string } | undefined
  /** Whether the ledger's drops have been said in the node's log since it last wrote. */
  #dropsLogged = false
  readonly #stats = { recorded: 0, written: 0, failed_writes: 0, dropped: 0, refused: 0 }

  private constructor (init: AuditLedgerInit, opened: Opened | undefined) {
    this.path = init.path
    this.#o = opened
    this.#signer = init.signer
    this.#clock = init.clock ?? systemClock
    this.#random = init.random ?? systemRandom
    this.#log = (init.logger ?? { forComponent: () => ({ info: () => {}, warn: () => {}, debug: () => {} }) }).forComponent('reach:node:audit')
    this.#maxPending = init.maxPending ?? AUDIT_MAX_PENDING
    this.#retryMs = init.retryMs ?? AUDIT_RETRY_MS
    this.#backoff = this.#retryMs
    this.#chunkSize = opened?.chunkSize ?? AUDIT_CHUNK
  }

  /**
   * Open the ledger at `init.path`, making it (0700, with its genesis event) when there is none
   * and a signer is given; a ledger reopened continues its chain. RL-5008 while another process
   * holds it, RL-5009 for one that is not a ledger or is damaged, RL-5010 for a disk that
   * refuses the first write.
   */
  static async open (init: AuditLedgerInit): Promise<AuditLedger> {
    const path = init.path
    const readOnly = init.signer === undefined
    if (readOnly && !(await pathExists(path))) return new AuditLedger(init, undefined)
    const chunkSize = init.chunkSize ?? AUDIT_CHUNK
    if (!isPowerOfTwo(chunkSize)) throw new ReachError('RL-1011', { message: `the ledger's chunk size must be a power of two, got ${chunkSize}` })
    if (!readOnly) {
      // Like the rest of the data dir: only its user reads what this node did.
      await mkdir(path, { mode: 0o700 }).catch((err: unknown) => {
        if (errno(err) !== 'EEXIST') throw storageFailure(err, path) ?? err
      })
    }
    const { Level } = await import('level')
    const { LevelEventStore, sublevel } = await import('./store/level.ts')
    const db: Db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
    try {
      await db.open({ createIfMissing: !readOnly })
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED') {
        throw new ReachError('RL-5008', { message: `${path} is open in another process (a running node, or another reach command)`, details: { path }, cause: err })
      }
      throw storageFailure(err, path) ?? new ReachError('RL-5009', { message: `cannot open the audit ledger ${path}: ${(err as Error).message}`, details: { path }, cause: err })
    }
    let store: LevelEventStore | undefined
    try {
      const meta = sublevel(db, 'meta')
      const [version, chunkText] = await Promise.all([meta.get('version'), meta.get('chunk')])
      const logs: SharedLogs = { path, db, segments: sublevel(db, 'segments'), heads: sublevel(db, 'heads'), inUse: new Set() }
      const headText = await logs.heads.get(LOG_NAME)
      if (version === undefined && headText !== undefined) throw new ReachError('RL-5009', { message: `${path} has events but no format version`, details: { path } })
      if (version !== undefined && version !== String(AUDIT_DB_VERSION)) throw new ReachError('RL-5009', { message: `${path} has format version ${version}; this node reads version ${AUDIT_DB_VERSION}`, details: { path } })
      const chunk = chunkText === undefined ? chunkSize : Number(chunkText)
      if (!isPowerOfTwo(chunk)) throw new ReachError('RL-5009', { message: `${path} names a chunk size of ${chunkText ?? ''}`, details: { path } })
      if (headText === undefined && readOnly) {
        await db.close()
        return new AuditLedger(init, undefined)
      }
      if (version === undefined) {
        await db.batch([{ type: 'put', sublevel: meta, key: 'version', value: String(AUDIT_DB_VERSION) }, { type: 'put', sublevel: meta, key: 'chunk', value: String(chunk) }], { sync: true })
      }
      store = LevelEventStore.within(logs, LOG_NAME)
      await store.open({ create: headText === undefined })
      const ledger = new AuditLedger(init, { db, store, meta, chunks: sublevel(db, 'chunks'), chunkSize: chunk })
      await ledger.#load()
      if (ledger.#view.size === 0 && init.signer !== undefined) await ledger.#create(init.signer)
      return ledger
    } catch (err) {
      await store?.close().catch(() => {})
      await db.close().catch(() => {})
      throw err
    }
  }

  /** The chunk roots, the last partial chunk's leaves, the log id and the latest checkpoint, from disk. */
  async #load (): Promise<void> {
    const o = this.#o as Opened
    const head = o.store.head()
    const size = head === null ? 0 : head.seq + 1
    const complete = Math.floor(size / this.#chunkSize)
    let i = 0
    for await (const [key, root] of o.chunks.iterator()) {
      if (key !== chunkKey(i) || !/^[0-9a-f]{64}$/.test(root)) throw new ReachError('RL-5009', { message: `${this.path}: chunk root ${key} is out of place or malformed`, details: { path: this.path } })
      this.#chunks.push(root)
      i++
    }
    if (this.#chunks.length > complete) throw new ReachError('RL-5009', { message: `${this.path}: ${this.#chunks.length} chunk roots for ${size} events`, details: { path: this.path } })
    // Roots a crash cannot lose (they go with their events), but a ledger from elsewhere may lack: made again.
    const missing: LevelRider[] = []
    while (this.#chunks.length < complete) {
      const lo = this.#chunks.length * this.#chunkSize
      const root = rootOfLeaves(await this.#diskLeaves(lo, lo + this.#chunkSize))
      missing.push({ sublevel: o.chunks, key: chunkKey(this.#chunks.length), value: root })
      this.#chunks.push(root)
    }
    if (missing.length > 0) await o.db.batch(missing.map((r) => ({ type: 'put' as const, sublevel: r.sublevel, key: r.key, value: r.value })), { sync: true })
    const tail = await this.#diskLeaves(complete * this.#chunkSize, size)
    this.#view = { size, head, chunkCount: complete, tail }
    if (size > 0) {
      const genesis = await o.store.get(0)
      if (genesis?.type !== LEDGER_CREATED) throw new ReachError('RL-5009', { message: `${this.path} is not an audit ledger (its first event is ${genesis?.type ?? 'missing'})`, details: { path: this.path } })
      this.#logId = genesis.hash
    }
    const text = await o.meta.get('checkpoint')
    if (text !== undefined) {
      try {
        const cp = JSON.parse(text) as { checkpoint_id: string, at_seq: number }
        this.#latest = { text, checkpoint_id: cp.checkpoint_id, at_seq: cp.at_seq }
      } catch {}
    }
  }

  /** The ledger's first event, made durable before `open` returns. */
  async #create (signer: Signer): Promise<void> {
    const nonce = Buffer.from(this.#random.bytes(16)).toString('hex')
    this.#queue.unshift({ type: LEDGER_CREATED, aggregate_id: 'node', payload: { at: Math.floor(this.#clock.now()), format: AUDIT_FORMAT, nonce, signer: signer.publicKey } })
    await this.flush()
    if (this.#view.size === 0) {
      throw new ReachError(this.#lastError?.code ?? 'RL-5009', { message: `cannot make the audit ledger ${this.path}: ${this.#lastError?.message ?? 'its first write failed'}`, details: { path: this.path } })
    }
  }

  /** The ledger's log id: its first event's hash. RL-5006 while it has none. */
  logId (): string {
    if (this.#logId === undefined) throw new ReachError('RL-5006', { message: `the audit ledger ${this.path} has no events` })
    return this.#logId
  }

  /** Durable events. */
  size (): number {
    return this.#view.size
  }

  /** Record one fact; returns at once and never throws (see the file's comment). */
  record (e: AuditEvent): void {
    this.#stats.recorded++
    try {
      if (this.#o === undefined || this.#signer === undefined || this.#closed) {
        this.#stats.dropped++
        this.#log.debug(`not recorded (the ledger is ${this.#closed ? 'closed' : 'read-only'}): ${String(e?.type)}`)
        return
      }
      const draft = auditDraft(e, this.#clock.now())
      if (this.#queue.length >= this.#maxPending) {
        this.#stats.dropped++
        this.#untold++
        if (!this.#dropsLogged) {
          this.#dropsLogged = true
          this.#log.warn(`dropping audit entries: ${this.#queue.length} wait for a disk that refuses writes (${this.#lastError?.code ?? ''} ${this.#lastError?.message ?? ''})`)
        }
        return
      }
      this.#queue.push(draft)
      this.#kick()
    } catch (err) {
      this.#stats.refused++
      this.#log.warn(`refused to record ${String((e as { type?: unknown } | null)?.type)}: ${isReachError(err) ? `${err.code} ` : ''}${(err as Error).message}`)
    }
  }

  /**
   * Write what is queued now (a retry waiting is tried at once) and resolve when it is durable or
   * the write failed; never throws (a failure is in `status()`).
   */
  async flush (): Promise<void> {
    if (this.#retry !== undefined) {
      clearTimeout(this.#retry)
      this.#retry = undefined
    }
    this.#kick()
    while (this.#flushing !== undefined) await this.#flushing
  }

  #kick (): void {
    if (this.#flushing !== undefined || this.#retry !== undefined || this.#o === undefined) return
    if (this.#queue.length === 0 && this.#untold === 0) return
    this.#flushing = (async () => {
      // Yield once so a synchronous burst of records joins the first write.
      await undefined
      while (this.#queue.length > 0 || this.#untold > 0) {
        if (!(await this.#write())) {
          this.#scheduleRetry()
          return
        }
      }
    })().finally(() => {
      this.#flushing = undefined
      if (this.#queue.length > 0) this.#kick()
    })
  }

  #scheduleRetry (): void {
    if (this.#closed) return
    const delay = this.#backoff
    this.#backoff = Math.min(this.#backoff * 2, AUDIT_RETRY_MAX_MS)
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      this.#kick()
    }, delay)
    this.#retry.unref()
  }

  /** One durable write of what is queued (a drop notice first); false when the store refused it. */
  async #write (): Promise<boolean> {
    const o = this.#o as Opened
    const taken = Math.min(this.#queue.length, AUDIT_WRITE_EVENTS)
    const drafts = this.#queue.slice(0, taken)
    const told = this.#untold
    if (told > 0) drafts.unshift({ type: LEDGER_DROPPED, aggregate_id: 'node', payload: { at: Math.floor(this.#clock.now()), count: told } })
    const view = this.#view
    let head = view.head
    const events: Event[] = []
    for (const draft of drafts) {
      const event = nextEvent(head, draft)
      events.push(event)
      head = headOf(event)
    }
    // The chunks these events complete go in the same synced batch as the events.
    let tail = [...view.tail, ...events.map((e) => leafHashHex(e.hash))]
    const roots: string[] = []
    while (tail.length >= this.#chunkSize) {
      roots.push(rootOfLeaves(tail.slice(0, this.#chunkSize)))
      tail = tail.slice(this.#chunkSize)
    }
    const riders: LevelRider[] = roots.map((root, i) => ({ sublevel: o.chunks, key: chunkKey(view.chunkCount + i), value: root }))
    try {
      await o.store.appendBatchWith(events, riders)
    } catch (err) {
      const e = storageFailure(err, this.path) ?? (isReachError(err) ? err : new ReachError('RL-5009', { message: (err as Error).message, cause: err }))
      this.#stats.failed_writes++
      this.#lastError = { code: e.code, message: e.message }
      this.#log.warn(`cannot write ${events.length} audit entries (${this.#queue.length} waiting; retrying in ${this.#backoff} ms): ${e.code} ${e.message}`)
      return false
    }
    this.#queue.splice(0, taken)
    this.#untold -= told
    if (told > 0) {
      this.#dropsLogged = false
      this.#log.warn(`${told} audit entries were dropped while the disk refused writes; the ledger says so at seq ${events[0]?.seq ?? ''}`)
    }
    this.#chunks.push(...roots)
    this.#view = { size: (head as ChainHead).seq + 1, head, chunkCount: this.#chunks.length, tail }
    this.#logId ??= events[0]?.hash
    this.#stats.written += events.length
    this.#backoff = this.#retryMs
    return true
  }

  /**
   * Sign a checkpoint (SPEC §6, kind "log") of the ledger at its head, after writing what is
   * queued; remember it as the latest and return its file text. RL-5006 for an empty ledger,
   * RL-1011 without a key.
   */
  async checkpoint (signer: Signer | undefined = this.#signer): Promise<string> {
    if (signer === undefined) throw new ReachError('RL-1011', { message: 'no key to sign the audit ledger with (it was opened to read)' })
    await this.flush()
    const view = this.#view
    if (view.head === null || this.#logId === undefined) throw new ReachError('RL-5006', { message: `the audit ledger ${this.path} has no events` })
    const cp = createCheckpoint({
      kind: 'log',
      log_id: this.#logId,
      at_seq: view.head.seq,
      state_hash: ledgerStateHash(view.size),
      log_hash: view.head.hash,
      merkle_root: await this.#root(view, 0, view.size),
      timestamp: view.head.timestamp
    }, signer)
    const text = encodeCheckpoint(cp)
    if (this.#latest === undefined || this.#latest.at_seq <= cp.at_seq) {
      this.#latest = { text, checkpoint_id: cp.checkpoint_id, at_seq: cp.at_seq }
      // A function of the ledger and the key: losing it to a crash loses nothing.
      await (this.#o as Opened).meta.put('checkpoint', text).catch((err: unknown) => { this.#log.warn(`cannot keep the latest ledger checkpoint: ${(err as Error).message}`) })
    }
    return text
  }

  /** The latest checkpoint this node signed of the ledger (kept across restarts), if any. */
  latestCheckpoint (): string | undefined {
    return this.#latest?.text
  }

  /** Durable entries in seq order, filtered (see AuditQuery), read from the store as they are consumed. */
  async * read (query: AuditQuery = {}): AsyncGenerator<Event> {
    const o = this.#o
    const size = this.#view.size
    if (o === undefined || size === 0) return
    const wanted = query.type === undefined ? undefined : AUDIT_TYPE_PREFIX + parseAuditType(query.type)
    const limit = query.limit ?? Number.POSITIVE_INFINITY
    if (limit <= 0) return
    let n = 0
    for await (const e of o.store.read({ from: query.since === undefined ? 0 : query.since + 1, to: size - 1 })) {
      if (wanted !== undefined && e.type !== wanted && !e.type.startsWith(wanted + '.')) continue
      yield e
      if (++n >= limit) return
    }
  }

  /** One page of entries: at most `limit` (default AUDIT_LIST_DEFAULT, at most AUDIT_LIST_MAX). */
  async list (query: AuditQuery = {}): Promise<AuditPage> {
    const limit = Math.min(query.limit ?? AUDIT_LIST_DEFAULT, AUDIT_LIST_MAX)
    const events: Event[] = []
    for await (const e of this.read({ ...query, limit })) events.push(e)
    const last = events.at(-1)
    return { events, ...(events.length === limit && last !== undefined ? { next: last.seq } : {}) }
  }

  /** Events 0 .. `toSeq` (what `/reach/log/1.0.0` serves under a checkpoint at `toSeq`). */
  stream (toSeq: number): AsyncIterable<Event> {
    const o = this.#o
    if (o === undefined) return (async function * () {})()
    return o.store.read({ from: 0, to: toSeq })
  }

  /**
   * RFC 6962 consistency proof between the ledger's first `oldSize` and first `newSize` events
   * (the merkle.ts JSON form, with both roots). RL-1007 unless 0 ≤ oldSize ≤ newSize ≤ size.
   */
  async consistency (oldSize: number, newSize: number): Promise<ConsistencyProofJson> {
    const view = this.#view
    if (!Number.isSafeInteger(oldSize) || !Number.isSafeInteger(newSize) || oldSize < 0 || oldSize > newSize || newSize > view.size) {
      throw new ReachError('RL-1007', { message: `no consistency proof from size ${oldSize} to size ${newSize}: the audit ledger has ${view.size} events`, details: { old_size: oldSize, new_size: newSize, size: view.size } })
    }
    const path: string[] = []
    if (oldSize > 0 && oldSize < newSize) await this.#subproof(view, oldSize, 0, newSize, true, path)
    return {
      version: 1,
      kind: 'consistency',
      old_size: oldSize,
      new_size: newSize,
      old_root: oldSize === 0 ? EMPTY_ROOT : await this.#root(view, 0, oldSize),
      new_root: newSize === 0 ? EMPTY_ROOT : await this.#root(view, 0, newSize),
      path
    }
  }

  /** RFC 6962 inclusion proof of event `seq` in the ledger's first `size` events (default: all). RL-1007 out of range. */
  async inclusion (seq: number, size = this.#view.size): Promise<InclusionProofJson> {
    const view = this.#view
    if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(size) || seq < 0 || seq >= size || size > view.size) {
      throw new ReachError('RL-1007', { message: `no inclusion proof of seq ${seq} in size ${size}: the audit ledger has ${view.size} events`, seq, details: { size, ledger_size: view.size } })
    }
    const event = await (this.#o as Opened).store.get(seq)
    if (event === undefined) throw new ReachError('RL-5009', { message: `${this.path}: event ${seq} is missing`, seq })
    const path: string[] = []
    await this.#path(view, seq, 0, size, path)
    return { version: 1, kind: 'inclusion', leaf_index: seq, tree_size: size, event_hash: event.hash, root: await this.#root(view, 0, size), path }
  }

  /** RFC 6962 MTH(D[lo:hi]), hi − lo ≥ 1, from cached chunk roots and at most a chunk of leaves. */
  async #root (view: TreeView, lo: number, hi: number): Promise<string> {
    const n = hi - lo
    const c = this.#chunkSize
    if (n === c && lo % c === 0 && lo / c < view.chunkCount) return this.#chunks[lo / c] as string
    if (n > c) {
      const complete = isPowerOfTwo(n) && hi <= view.chunkCount * c
      const key = `${lo}:${n}`
      const known = complete ? this.#memo.get(key) : undefined
      if (known !== undefined) return known
      const k = split(n)
      const root = hashNodes(await this.#root(view, lo, lo + k), await this.#root(view, lo + k, hi))
      if (complete) this.#memo.set(key, root)
      return root
    }
    return rootOfLeaves(await this.#leaves(view, lo, hi))
  }

  /** RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], complete), appended leaf-side first. */
  async #subproof (view: TreeView, m: number, lo: number, hi: number, complete: boolean, out: string[]): Promise<void> {
    const n = hi - lo
    if (m === n) {
      if (!complete) out.push(await this.#root(view, lo, hi))
      return
    }
    const k = split(n)
    if (m <= k) {
      await this.#subproof(view, m, lo, lo + k, complete, out)
      out.push(await this.#root(view, lo + k, hi))
    } else {
      await this.#subproof(view, m - k, lo + k, hi, false, out)
      out.push(await this.#root(view, lo, lo + k))
    }
  }

  /** RFC 6962 §2.1.1 PATH(index, D[lo:hi]), appended leaf-side first. */
  async #path (view: TreeView, index: number, lo: number, hi: number, out: string[]): Promise<void> {
    if (hi - lo <= 1) return
    const k = split(hi - lo)
    if (index < lo + k) {
      await this.#path(view, index, lo, lo + k, out)
      out.push(await this.#root(view, lo + k, hi))
    } else {
      await this.#path(view, index, lo + k, hi, out)
      out.push(await this.#root(view, lo, lo + k))
    }
  }

  /** Leaf hashes of [lo, hi): the tail's from memory, the rest from disk. */
  async #leaves (view: TreeView, lo: number, hi: number): Promise<string[]> {
    const tailStart = view.chunkCount * this.#chunkSize
    const out = lo < Math.min(hi, tailStart) ? await this.#diskLeaves(lo, Math.min(hi, tailStart)) : []
    for (let i = Math.max(lo, tailStart); i < hi; i++) out.push(view.tail[i - tailStart] as string)
    return out
  }

  async #diskLeaves (lo: number, hi: number): Promise<string[]> {
    const out: string[] = []
    if (hi <= lo) return out
    for await (const e of (this.#o as Opened).store.read({ from: lo, to: hi - 1 })) out.push(leafHashHex(e.hash))
    if (out.length !== hi - lo) throw new ReachError('RL-5009', { message: `${this.path}: events ${lo}..${hi - 1} are not all there`, seq: lo + out.length })
    return out
  }

  status (): AuditStatus {
    return {
      log_id: this.#logId ?? null,
      size: this.#view.size,
      pending: this.#queue.length,
      ...this.#stats,
      ...(this.#lastError === undefined ? {} : { last_error: this.#lastError }),
      ...(this.#latest === undefined ? {} : { checkpoint: { checkpoint_id: this.#latest.checkpoint_id, at_seq: this.#latest.at_seq } })
    }
  }

  /** Write what is queued (one last try), then let go of the database. Idempotent; never throws. */
  async close (): Promise<void> {
    this.#closing ??= (async () => {
      const o = this.#o
      if (o === undefined) {
        this.#closed = true
        return
      }
      await this.flush()
      this.#closed = true
      clearTimeout(this.#retry)
      this.#retry = undefined
      while (this.#flushing !== undefined) await this.#flushing
      const lost = this.#queue.length + this.#untold
      if (lost > 0) this.#log.warn(`closing the audit ledger with ${lost} entries not written: ${this.#lastError?.code ?? ''} ${this.#lastError?.message ?? ''}`)
      try {
        await o.store.close()
        await o.db.close()
      } catch (err) {
        this.#log.warn(`closing the audit ledger: ${(err as Error).message}`)
      }
    })()
    await this.#closing
  }
}
