/**
 * JSONL file store: the event log as one append-only file of JSON lines (the
 * CLI's `--log-path` mode).
 *
 * Format (UTF-8, byte for byte):
 *
 *   - Each event is one line: exactly `canonicalize(event)` (RFC 8785) then
 *     `\n` (0x0A). Events appear in seq order from seq 0, with no gaps.
 *   - Each durable batch of events is followed by a commit record
 *     `{"commit":<seq of the last event of the batch>}\n`, written in the
 *     same write(2) as the batch and then fdatasync'ed. A commit record marks
 *     a durability boundary: every event before it was acknowledged.
 *   - A clean log is empty or ends with a commit record naming the seq of the
 *     event line just before it. Readers skip commit records; only the last
 *     one matters for crash detection.
 *   - Tail damage a crash can leave: an incomplete or unparseable last line
 *     (RL-5003, at seq = last complete event + 1, details {path, offset}) or
 *     event lines after the last commit record (RL-5004, at the first seq not
 *     committed). A last commit record naming a seq above the event before it
 *     means events are missing (RL-2003); below it, or with no event before
 *     it, the file is corrupt (RL-5009). A line that is not an event in the
 *     middle of the file is RL-2006.
 *   - `open({ repair: true })` cuts an RL-5003 / RL-5004 tail back to just
 *     after the last commit record (to byte 0 if there is none), copying the
 *     removed bytes to `<path>.torn-<UTC timestamp>` first. Nothing else is
 *     ever changed: entries are never rewritten or deleted.
 *   - A writer holds `<path>.lock` (created O_EXCL, containing its pid and a
 *     newline); a lock naming a pid that no longer runs is stale and taken over.
 *
 * Open reads the file backwards from its end to find the head, so it costs
 * about one read whatever the size of the log.
 */
import { constants } from 'node:fs'
import { mkdir, open, stat, writeFile, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ReachError } from '../../protocol/errors.ts'
import { headOf, type Event } from '../../protocol/event.ts'
import { storageFailure } from '../fs.ts'
import { INDEX_EVERY, READ_CHUNK_SIZE, TAIL_CHUNK_SIZE } from './constants.ts'
import { CommittedStore } from './committed.ts'
import { StoreLifecycle } from './lifecycle.ts'
import { GroupCommit, type CommitBatch } from './group-commit.ts'
import { commitRecord, inspectJsonlTail, openForReading, readFully, scanJsonl } from './jsonl-reader.ts'
import { acquireLock, type LockFile } from './lock-file.ts'
import type { EventStore, OpenOptions, ReadRange, RepairReport } from './types.ts'

export interface JsonlStoreInit {
  /** Bytes per read when streaming; 1 MiB by default. Small values are for tests. */
  chunkSize?: number
  /** Bytes per step when reading the tail backwards at open; 64 KiB by default. */
  tailChunkSize?: number
  maxBatchEvents?: number
  maxBatchBytes?: number
}

export class JsonlEventStore extends CommittedStore implements EventStore {
  readonly kind = 'jsonl'
  readonly path: string
  #lastRepair: RepairReport | undefined
  readonly #init: JsonlStoreInit
  readonly #life: StoreLifecycle
  #fh: FileHandle | undefined
  #lock: LockFile | undefined
  #commit: GroupCommit | undefined
  /** Bytes of the file that are durable: the end of the last commit record. */
  #size = 0
  /** seq (a multiple of INDEX_EVERY) → byte offset of its line. */
  readonly #index = new Map<number, number>()
  /** Set when a failed write could not be undone: no more appends this session. */
  #broken: ReachError | undefined

  constructor (path: string, init: JsonlStoreInit = {}) {
    super()
    this.path = path
    this.#life = new StoreLifecycle(path)
    this.#init = init
  }

  get lastRepair (): RepairReport | undefined {
    return this.#lastRepair
  }

  async open (options: OpenOptions = {}): Promise<void> {
    await this.#life.open(async () => await this.#open(options), async () => await this.#release())
  }

  async #open (options: OpenOptions): Promise<void> {
    const path = this.path
    const existing = await stat(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined
      throw err
    })
    if (existing === undefined) {
      if (options.create !== true) throw new ReachError('RL-5006', { message: `no log at ${path} (create it with create: true)`, details: { path } })
      await mkdir(dirname(path), { recursive: true })
    } else if (!existing.isFile()) {
      throw new ReachError('RL-5006', { message: `${path} is not a regular file`, details: { path } })
    }
    this.#lock = await acquireLock(`${path}.lock`)
    const flags = options.create === true ? constants.O_RDWR | constants.O_CREAT : constants.O_RDWR
    try {
      this.#fh = await open(path, flags, 0o644)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ReachError('RL-5006', { message: `no log at ${path}`, details: { path }, cause: err })
      throw err
    }
    const { size } = await this.#fh.stat()
    if (options.create === true && size > 0) throw new ReachError('RL-5005', { message: `${path} already holds a log`, details: { path } })
    if (existing === undefined) await syncDir(dirname(path))
    this.#lastRepair = undefined
    this.#index.clear()
    this.#broken = undefined
    const tail = await inspectJsonlTail(this.#fh, path, size, this.#init.tailChunkSize ?? TAIL_CHUNK_SIZE)
    this.#size = size
    if (tail.problem !== undefined) {
      const repairable = tail.problem.code === 'RL-5003' || tail.problem.code === 'RL-5004'
      if (options.repair !== true || !repairable) throw tail.problem
      this.#lastRepair = await this.#repair(this.#fh, tail.committedEnd, size, tail.problem, tail.uncommittedEvents, tail.head)
      this.#size = tail.committedEnd
    }
    const head = tail.head === null ? null : headOf(tail.head)
    this.#commit = new GroupCommit({
      head,
      write: async (batch) => await this.#write(batch),
      maxEvents: this.#init.maxBatchEvents,
      maxBytes: this.#init.maxBatchBytes
    })
  }

  async #repair (fh: FileHandle, cut: number, size: number, problem: ReachError, removedEvents: number, head: Event | null): Promise<RepairReport> {
    const removed = Buffer.allocUnsafe(size - cut)
    await readFully(fh, removed, cut)
    const tornPath = `${this.path}.torn-${new Date().toISOString().replaceAll(':', '-')}`
    await writeFile(tornPath, removed, { flag: 'wx', flush: true })
    await fh.truncate(cut)
    await fh.datasync()
    await syncDir(dirname(this.path))
    return {
      code: problem.code,
      fromSeq: head === null ? 0 : head.seq + 1,
      removedEvents,
      removedBytes: size - cut,
      tornPath,
      head: head === null ? null : headOf(head)
    }
  }

  async close (): Promise<void> {
    await this.#life.close(async () => await this.#commit?.idle(), async () => await this.#release())
  }

  async #release (): Promise<void> {
    const fh = this.#fh
    const lock = this.#lock
    this.#fh = undefined
    this.#lock = undefined
    try {
      await fh?.close()
    } finally {
      await lock?.release()
    }
  }

  async * read (range: ReadRange = {}): AsyncGenerator<Event> {
    const span = this.span(range)
    if (span === undefined) return
    const { from, to } = span
    const end = this.#size
    let startSeq = 0
    let start = 0
    for (let k = Math.floor(from / INDEX_EVERY) * INDEX_EVERY; k > 0; k -= INDEX_EVERY) {
      const offset = this.#index.get(k)
      if (offset !== undefined && offset < end) {
        startSeq = k
        start = offset
        break
      }
    }
    const fh = await openForReading(this.path)
    try {
      const batches = scanJsonl({
        fh,
        path: this.path,
        start,
        end,
        chunkSize: this.#init.chunkSize ?? READ_CHUNK_SIZE,
        from,
        to,
        tail: false,
        counted: { seq: startSeq, onIndex: (seq, offset) => this.#index.set(seq, offset) }
      })
      for await (const batch of batches) {
        for (const event of batch) yield event
      }
    } finally {
      await fh.close()
    }
  }

  async get (seq: number): Promise<Event | undefined> {
    if (!Number.isSafeInteger(seq) || seq < 0) {
      this.committer()
      return undefined
    }
    for await (const event of this.read({ from: seq, to: seq })) return event
    return undefined
  }

  protected committer (): GroupCommit {
    return this.#life.require(this.#commit)
  }

  /** One batch: its lines and commit record in one write at the durable end, then fdatasync. */
  async #write (batch: CommitBatch): Promise<void> {
    if (this.#broken !== undefined) throw this.#broken
    const fh = this.#fh as FileHandle
    const start = this.#size
    const text = batch.lines.join('\n') + '\n' + commitRecord(batch.head.seq) + '\n'
    const bytes = Buffer.from(text, 'utf8')
    try {
      let done = 0
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, start + done)
        done += bytesWritten
      }
    } catch (err) {
      // Undo a partial write so the file ends at the last commit record again.
      try {
        await fh.truncate(start)
      } catch (undo) {
        this.#broken = new ReachError('RL-5009', { message: `${this.path}: a failed write could not be undone; reopen (with repair) to continue`, cause: undo })
      }
      // A full or read-only disk is not a damaged log: the write was undone (unless #broken says otherwise).
      throw (this.#broken === undefined ? storageFailure(err, this.path) : undefined) ?? new ReachError('RL-5009', { message: `${this.path}: write failed: ${(err as Error).message}`, seq: batch.firstSeq, cause: err })
    }
    try {
      await fh.datasync()
    } catch (err) {
      // After a failed fsync the kernel may have dropped the dirty pages: nothing is known any more.
      this.#broken = new ReachError('RL-5009', { message: `${this.path}: fdatasync failed; reopen (with repair) to continue`, cause: err })
      throw this.#broken
    }
    this.#size = start + bytes.length
    this.#indexBatch(batch, start)
  }

  #indexBatch (batch: CommitBatch, start: number): void {
    let k = Math.ceil(batch.firstSeq / INDEX_EVERY) * INDEX_EVERY
    if (k > batch.head.seq) return
    let offset = start
    let i = 0
    for (; k <= batch.head.seq; k += INDEX_EVERY) {
      for (; i < k - batch.firstSeq; i++) offset += Buffer.byteLength(batch.lines[i] as string) + 1
      this.#index.set(k, offset)
    }
  }
}

/** fsync a directory so a file created or renamed in it survives a crash. */
async function syncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try {
    await fh.sync()
  } finally {
    await fh.close()
  }
}
