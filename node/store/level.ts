/**
 * LevelDB store (via `level` / classic-level): a log in its own directory,
 * or one of many logs in a shared database (`LevelEventStore.within`, the
 * node's run database: node/run-db.ts).
 *
 * Format of a log in its own directory (keys and values UTF-8, abstract-level
 * sublevel prefixes):
 *
 *   - `!segments!<first seq>`: one durable batch (a "segment"): the
 *     canonical text of its events, `canonicalize(event)`, joined by "\n",
 *     consecutive seqs starting at <first seq>, which is 16-digit zero-padded
 *     decimal (Number.MAX_SAFE_INTEGER has 16 digits) so keys sort
 *     numerically. One key per batch rather than per event: LevelDB's cost is
 *     per entry, and a key per event held batched appends to ~125k events/s
 *     on this machine, below the 150k we promise.
 *   - `!meta!head`: `canonicalize({hash, seq, timestamp})` of the last event,
 *     written in the same atomic batch as the segment, with `sync: true`.
 *   - `!meta!version`: the format version, `1`.
 *
 * On open the head must name the last event of the last segment (otherwise
 * RL-5009); segments beyond the head (written without their head) are
 * RL-5004, which `open({ repair: true })` deletes after copying their lines
 * to `<path>.torn-<UTC timestamp>`. LevelDB's own LOCK file keeps a second
 * process out (RL-5008).
 *
 * A log in a shared database keeps the same values under the shared
 * database's sublevels, its keys prefixed by the log's name: segments at
 * `<name>!<first seq>`, its head at `<name>`. The shared database holds the
 * format version (for all its logs) and the lock; it also keeps a second
 * store of the same log out within the process (RL-5008).
 */
import { stat, writeFile } from 'node:fs/promises'
import { Level } from 'level'
import { canonicalize } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'
import { computeEventHash, eventShapeProblem, type ChainHead, type Event } from '../../protocol/event.ts'
import { isHash } from '../../protocol/hash.ts'
import { storageFailure } from '../fs.ts'
import { LEVEL_FORMAT_VERSION, LEVEL_KEY_WIDTH, LEVEL_READ_BATCH } from './constants.ts'
import { CommittedStore } from './committed.ts'
import { StoreLifecycle } from './lifecycle.ts'
import { GroupCommit, type CommitBatch } from './group-commit.ts'
import type { EventStore, OpenOptions, ReadRange, RepairReport } from './types.ts'

export interface LevelStoreInit {
  maxBatchEvents?: number
  maxBatchBytes?: number
}

export type Db = Level<string, string>
export type Sub = ReturnType<typeof sublevel>

export function sublevel (db: Db, name: string) {
  return db.sublevel<string, string>(name, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
}

/** An open database holding many logs (node/run-db.ts): where their keys go, and who has which open. */
export interface SharedLogs {
  /** Where the database is, for messages and for the `.torn-` copies of a repair. */
  readonly path: string
  readonly db: Db
  /** Every log's segments, keyed `<name>!<first seq>`. */
  readonly segments: Sub
  /** Every log's head, keyed `<name>`. */
  readonly heads: Sub
  /** Names of the logs a store has open in this process. */
  readonly inUse: Set<string>
}

/** The keys of one log: its own database's, or its share of a shared one. */
interface Keys {
  db: Db
  segments: Sub
  /** Prefix of this log's segment keys ('' in its own database). */
  prefix: string
  heads: Sub
  head: string
  /** The per-log format version key (own database only: a shared one keeps its own). */
  meta: Sub | undefined
}

/** A key of the same database written with a batch of events (`appendBatchWith`). */
export interface LevelRider {
  sublevel: Sub
  key: string
  value: string
}

/** A log name in a shared database: it must not reach into another log's keys. */
const NAME = /^[A-Za-z0-9_.-]{1,128}$/

/** The key of a segment: its first seq as 16-digit zero-padded decimal. */
export function levelSegmentKey (seq: number): string {
  return String(seq).padStart(LEVEL_KEY_WIDTH, '0')
}

export class LevelEventStore extends CommittedStore implements EventStore {
  readonly kind = 'level'
  readonly path: string
  readonly #init: LevelStoreInit
  readonly #life: StoreLifecycle
  /** The shared database and this log's name in it, for a log that has no directory of its own. */
  readonly #shared: { logs: SharedLogs, name: string } | undefined
  #keys: Keys | undefined
  #commit: GroupCommit | undefined
  #lastRepair: RepairReport | undefined

  constructor (path: string, init: LevelStoreInit = {}, shared?: { logs: SharedLogs, name: string }) {
    super()
    this.path = path
    this.#life = new StoreLifecycle(path)
    this.#init = init
    this.#shared = shared
  }

  /** The log `name` in a shared database (which stays open when this store closes). */
  static within (logs: SharedLogs, name: string, init: LevelStoreInit = {}): LevelEventStore {
    if (!NAME.test(name)) throw new ReachError('RL-5006', { message: `${JSON.stringify(name)} cannot name a log (letters, digits, _ . - only)` })
    return new LevelEventStore(`${logs.path}#${name}`, init, { logs, name })
  }

  get lastRepair (): RepairReport | undefined {
    return this.#lastRepair
  }

  async open (options: OpenOptions = {}): Promise<void> {
    // A failed open must not hide its own error behind one from closing.
    await this.#life.open(async () => await this.#open(options), async () => await this.#releaseDb().catch(() => {}))
  }

  async #open (options: OpenOptions): Promise<void> {
    const path = this.path
    const keys = this.#shared === undefined ? await this.#openOwn(options) : this.#take(this.#shared)
    this.#keys = keys
    this.#lastRepair = undefined

    const { segments, meta } = keys
    const [version, headText] = await Promise.all([meta?.get('version'), keys.heads.get(keys.head)])
    const last = await segments.iterator({ ...this.#bounds(), reverse: true, limit: 1 }).all()
    const lastSeq = last.length === 0 ? undefined : this.#seqOf(last[0]?.[0] as string) + (last[0]?.[1] ?? '').split('\n').length - 1
    const empty = headText === undefined && lastSeq === undefined
    if (options.create === true && !empty) throw new ReachError('RL-5005', { message: `${path} already holds a log`, details: { path } })
    if (this.#shared !== undefined && empty && options.create !== true) {
      throw new ReachError('RL-5006', { message: `no log ${this.#shared.name} in ${this.#shared.logs.path} (create it with create: true)`, details: { path } })
    }
    // A log of its own keeps its format version; a shared database checked its own when it opened.
    if (meta !== undefined && version === undefined) {
      if (!empty) throw new ReachError('RL-5009', { message: `${path} has events but no format version`, details: { path } })
      // Not synced on its own: the first append's synced write carries it to disk (LevelDB writes
      // its log in order), and a log that dies empty is simply opened again without a version.
      await keys.db.batch([{ type: 'put', sublevel: meta, key: 'version', value: String(LEVEL_FORMAT_VERSION) }], { sync: false })
    } else if (meta !== undefined && version !== String(LEVEL_FORMAT_VERSION)) {
      throw new ReachError('RL-5009', { message: `${path} has format version ${version as string}; this node reads version ${LEVEL_FORMAT_VERSION}`, details: { path, version } })
    }

    let head = headText === undefined ? null : parseHead(path, headText)
    if (head !== null) await this.#checkHeadEvent(head)
    if (lastSeq !== undefined && (head === null || lastSeq > head.seq)) {
      const fromSeq = head === null ? 0 : head.seq + 1
      const problem = new ReachError('RL-5004', {
        message: `${path}: events from seq ${fromSeq} are not covered by the head; open with repair to remove them`,
        seq: fromSeq,
        details: { path, head: head?.seq ?? null, last_key: lastSeq }
      })
      if (options.repair !== true) throw problem
      this.#lastRepair = await this.#repair(fromSeq, head)
    }
    head = head === null ? null : { seq: head.seq, hash: head.hash, timestamp: head.timestamp }
    this.#commit = new GroupCommit({
      head,
      write: async (batch) => await this.#write(batch),
      maxEvents: this.#init.maxBatchEvents,
      maxBytes: this.#init.maxBatchBytes
    })
  }

  /** This log's keys in the shared database; RL-5008 while another store in this process has it open. */
  #take ({ logs, name }: { logs: SharedLogs, name: string }): Keys {
    if (logs.inUse.has(name)) throw new ReachError('RL-5008', { message: `${this.path} is already open in this process`, details: { path: this.path } })
    logs.inUse.add(name)
    return { db: logs.db, segments: logs.segments, prefix: `${name}!`, heads: logs.heads, head: name, meta: undefined }
  }

  /** The log's own database, opened (created with `create`). */
  async #openOwn (options: OpenOptions): Promise<Keys> {
    const path = this.path
    const existing = await stat(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    if (existing === undefined && options.create !== true) {
      throw new ReachError('RL-5006', { message: `no log at ${path} (create it with create: true)`, details: { path } })
    }
    if (existing !== undefined && !existing.isDirectory()) {
      throw new ReachError('RL-5006', { message: `${path} is not a LevelDB directory`, details: { path } })
    }
    const db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
    // Held from here, so that a failed open releases it.
    this.#keys = { db, segments: sublevel(db, 'segments'), prefix: '', heads: sublevel(db, 'meta'), head: 'head', meta: sublevel(db, 'meta') }
    try {
      await db.open({ createIfMissing: options.create === true })
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED') {
        throw new ReachError('RL-5008', { message: `${path} is open in another process (LevelDB lock)`, details: { path }, cause: err })
      }
      // A log on a read-only or full disk is there: it cannot be opened (LevelDB writes its LOCK file).
      const storage = storageFailure(err, path)
      if (storage !== undefined) throw storage
      if (options.create !== true) throw new ReachError('RL-5006', { message: `no LevelDB log at ${path}`, details: { path }, cause: err })
      throw err
    }
    return this.#keys
  }

  /** The key range of this log's segments. */
  #bounds (): { gte: string, lte: string } {
    const { prefix } = this.#keys as Keys
    return { gte: prefix + levelSegmentKey(0), lte: prefix + '9'.repeat(LEVEL_KEY_WIDTH) }
  }

  #segmentKey (seq: number): string {
    return (this.#keys as Keys).prefix + levelSegmentKey(seq)
  }

  #seqOf (key: string): number {
    return Number(key.slice((this.#keys as Keys).prefix.length))
  }

  async #checkHeadEvent (head: ChainHead): Promise<void> {
    const corrupt = (why: string): ReachError => new ReachError('RL-5009', { message: `${this.path}: head names seq ${head.seq} but ${why}`, seq: head.seq, details: { path: this.path } })
    const text = await this.#lineAt(head.seq)
    if (text === undefined) throw corrupt('that event is missing')
    let event: unknown
    try {
      event = JSON.parse(text)
    } catch {
      throw corrupt('that event is not JSON')
    }
    if (eventShapeProblem(event) !== undefined) throw corrupt('that event is malformed')
    const e = event as Event
    if (e.seq !== head.seq || e.hash !== head.hash || e.timestamp !== head.timestamp) throw corrupt('that event does not match it')
    if (computeEventHash(e) !== e.hash) throw new ReachError('RL-2001', { message: `${this.path}: the head event (seq ${head.seq}) does not match its hash`, seq: head.seq, details: { path: this.path } })
  }

  /** The segment holding `seq` (the last segment starting at or before it), if any. */
  async #segmentAt (seq: number): Promise<[number, string] | undefined> {
    const keys = this.#keys as Keys
    // Bounded below too: in a shared database the key before this log's first is another log's.
    const found = await keys.segments.iterator({ gte: this.#bounds().gte, lte: this.#segmentKey(seq), reverse: true, limit: 1 }).all()
    const entry = found[0]
    return entry === undefined ? undefined : [this.#seqOf(entry[0]), entry[1]]
  }

  /** The stored text of event `seq`, if a segment holds it. */
  async #lineAt (seq: number): Promise<string | undefined> {
    const segment = await this.#segmentAt(seq)
    if (segment === undefined) return undefined
    return segment[1].split('\n')[seq - segment[0]]
  }

  async #repair (fromSeq: number, head: ChainHead | null): Promise<RepairReport> {
    const { db, segments } = this.#keys as Keys
    const entries = await segments.iterator({ gte: this.#segmentKey(fromSeq), lte: this.#bounds().lte }).all()
    const lines = entries.flatMap(([, value]) => value.split('\n'))
    const at = new Date().toISOString().replaceAll(':', '-')
    const tornPath = this.#shared === undefined ? `${this.path}.torn-${at}` : `${this.#shared.logs.path}.torn-${this.#shared.name}-${at}`
    await writeFile(tornPath, lines.map((line) => line + '\n').join(''), { flag: 'wx', flush: true })
    await db.batch(entries.map(([key]) => ({ type: 'del' as const, sublevel: segments, key })), { sync: true })
    return { code: 'RL-5004', fromSeq, removedEvents: lines.length, removedBytes: 0, tornPath, head }
  }

  async close (): Promise<void> {
    await this.#life.close(async () => await this.#commit?.idle(), async () => await this.#releaseDb())
  }

  /** Let go of the keys: close the log's own database, or hand its name back to the shared one. */
  async #releaseDb (): Promise<void> {
    const keys = this.#keys
    this.#keys = undefined
    if (keys === undefined) return
    if (this.#shared === undefined) await keys.db.close()
    else this.#shared.logs.inUse.delete(this.#shared.name)
  }

  async * read (range: ReadRange = {}): AsyncGenerator<Event> {
    const span = this.span(range)
    if (span === undefined) return
    const { from, to } = span
    const first = await this.#segmentAt(from)
    const it = (this.#keys as Keys).segments.iterator({ gte: this.#segmentKey(first?.[0] ?? from), lte: this.#segmentKey(to) })
    try {
      let expected = from
      for (;;) {
        const entries = await it.nextv(LEVEL_READ_BATCH)
        if (entries.length === 0) break
        for (const [key, value] of entries) {
          const lines = value.split('\n')
          const firstSeq = this.#seqOf(key)
          for (let i = Math.max(0, expected - firstSeq); i < lines.length && expected <= to; i++) {
            if (firstSeq + i !== expected) {
              throw new ReachError('RL-2003', { message: `${this.path}: event ${expected} is missing`, seq: expected, details: { path: this.path } })
            }
            yield this.#parse(lines[i] as string, expected)
            expected++
          }
        }
      }
      if (expected !== to + 1) throw new ReachError('RL-2003', { message: `${this.path}: event ${expected} is missing`, seq: expected, details: { path: this.path } })
    } finally {
      await it.close()
    }
  }

  async get (seq: number): Promise<Event | undefined> {
    const head = this.committer().durableHead()
    if (!Number.isSafeInteger(seq) || seq < 0 || head === null || seq > head.seq) return undefined
    const value = await this.#lineAt(seq)
    return value === undefined ? undefined : this.#parse(value, seq)
  }

  #parse (value: string, seq: number): Event {
    let event: unknown
    try {
      event = JSON.parse(value)
    } catch (err) {
      throw new ReachError('RL-2006', { message: `${this.path}: event ${seq} is not JSON`, seq, details: { path: this.path }, cause: err })
    }
    const problem = eventShapeProblem(event)
    if (problem !== undefined) throw new ReachError('RL-2006', { message: `${this.path}: event ${seq}: ${problem}`, seq, details: { path: this.path, reason: problem } })
    if ((event as Event).seq !== seq) {
      throw new ReachError('RL-5009', { message: `${this.path}: key ${seq} holds seq ${(event as Event).seq}`, seq, details: { path: this.path } })
    }
    return event as Event
  }

  protected committer (): GroupCommit {
    return this.#life.require(this.#commit)
  }

  /**
   * Append events all-or-nothing with other keys of the same database (`riders`) in the same
   * synced LevelDB batch: both are on disk, or neither is.
   */
  async appendBatchWith (events: readonly Event[], riders: readonly LevelRider[]): Promise<void> {
    await this.committer().submit(events, riders)
  }

  /** One batch: its segment and the new head in one atomic, synced LevelDB batch. */
  async #write (batch: CommitBatch): Promise<void> {
    const keys = this.#keys as Keys
    const ops = [
      { type: 'put' as const, sublevel: keys.segments, key: this.#segmentKey(batch.firstSeq), value: batch.lines.join('\n') },
      { type: 'put' as const, sublevel: keys.heads, key: keys.head, value: canonicalize(batch.head) },
      ...((batch.riders ?? []) as readonly LevelRider[]).map((r) => ({ type: 'put' as const, sublevel: r.sublevel, key: r.key, value: r.value }))
    ]
    try {
      await keys.db.batch(ops, { sync: true })
    } catch (err) {
      throw new ReachError('RL-5009', { message: `${this.path}: write failed: ${(err as Error).message}`, seq: batch.firstSeq, cause: err })
    }
  }
}

function parseHead (path: string, text: string): ChainHead {
  let head: unknown
  try {
    head = JSON.parse(text)
  } catch {
    head = undefined
  }
  const h = head as ChainHead | undefined
  if (h === undefined || h === null || typeof h !== 'object' || !Number.isSafeInteger(h.seq) || h.seq < 0 ||
    !isHash(h.hash) || !Number.isSafeInteger(h.timestamp) || h.timestamp < 0) {
    throw new ReachError('RL-5009', { message: `${path}: the head record is malformed`, details: { path } })
  }
  return { seq: h.seq, hash: h.hash, timestamp: h.timestamp }
}

