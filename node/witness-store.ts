/**
 * What the witness learned, kept across restarts: one LevelDB at `<home>/witness.db`.
 *
 *   !meta!version                    `1`
 *   !heads!<signer> <log_id>         {checkpoint_id, at_seq, text}: the newest checkpoint held per (signer, log)
 *   !checkpoints!<checkpoint_id>     CheckpointEntry (federation/witness.ts)
 *   !receipts!<checkpoint_id> <key>  ReceiptEntry, one per witness of a checkpoint
 *   !evidence!<id>                   EvidenceEntry
 *
 * Heads and evidence are few (one per signer and log; one per liar) and are held in memory, so
 * the witness's compare-and-set of a head is synchronous: two messages racing can never roll a
 * head back. Writes go out in order, one synced batch at a time; `close()` waits for them.
 * Checkpoints and receipts stay on disk; the ids seen lately are remembered so a duplicate
 * costs no read.
 *
 * While a node runs it holds the database (LevelDB's lock); `reach checkpoints` and `reach
 * evidence` read it through the node's control API then, and open it themselves otherwise.
 */
import { Level } from 'level'
import { ReachError } from '../protocol/errors.ts'
import type { CheckpointEntry, EvidenceEntry, HeadEntry, ReceiptEntry, WitnessRecords } from '../federation/witness.ts'
import { storageFailure } from './fs.ts'
import { sublevel, type Db, type Sub } from './store/level.ts'

export const WITNESS_DB = 'witness.db'
export const WITNESS_DB_VERSION = 1
/** Ids of checkpoints and receipts remembered in memory (a duplicate found here costs no read). */
const SEEN = 65_536

export interface RunCheckpoints {
  checkpoint: CheckpointEntry
  receipts: ReceiptEntry[]
}

export class WitnessStore implements WitnessRecords {
  readonly path: string
  readonly #db: Db
  readonly #heads = new Map<string, HeadEntry>()
  readonly #evidence = new Map<string, EvidenceEntry>()
  readonly #seen = new Set<string>()
  #writing: Promise<void> = Promise.resolve()
  #failed: unknown

  private constructor (path: string, db: Db) {
    this.path = path
    this.#db = db
  }

  /** Open (creating it) the store at `path`; RL-5008 when another process holds it. */
  static async open (path: string): Promise<WitnessStore> {
    const db: Db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
    try {
      await db.open({ createIfMissing: true })
    } catch (err) {
      if ((err as { cause?: { code?: string } }).cause?.code === 'LEVEL_LOCKED') {
        throw new ReachError('RL-5008', { message: `${path} is open in another process (a running node, or another reach command)`, details: { path }, cause: err })
      }
      throw storageFailure(err, path) ?? new ReachError('RL-5009', { message: `cannot open the witness store ${path}: ${(err as Error).message}`, details: { path }, cause: err })
    }
    const store = new WitnessStore(path, db)
    try {
      const version = await store.#sub('meta').get('version')
      if (version === undefined) await db.batch([{ type: 'put', key: 'version', value: String(WITNESS_DB_VERSION), sublevel: store.#sub('meta') }], { sync: true })
      else if (version !== String(WITNESS_DB_VERSION)) throw new ReachError('RL-5009', { message: `${path} has format version ${version}; this node reads version ${WITNESS_DB_VERSION}`, details: { path } })
      for await (const [key, value] of store.#sub('heads').iterator()) store.#heads.set(key, JSON.parse(value) as HeadEntry)
      for await (const [key, value] of store.#sub('evidence').iterator()) store.#evidence.set(key, JSON.parse(value) as EvidenceEntry)
    } catch (err) {
      await db.close()
      if (err instanceof ReachError) throw err
      throw new ReachError('RL-5009', { message: `the witness store ${path} is unreadable: ${(err as Error).message}`, details: { path }, cause: err })
    }
    return store
  }

  #sub (name: string): Sub {
    return sublevel(this.#db, name)
  }

  /** Queue one synced write after those before it; a failed write is reported by `flush`/`close` and logged by the caller's next write. */
  #write (ops: Array<{ sub: string, key: string, value: unknown }>): Promise<void> {
    const next = this.#writing.then(async () => {
      await this.#db.batch(ops.map((o) => ({ type: 'put' as const, sublevel: this.#sub(o.sub), key: o.key, value: JSON.stringify(o.value) })), { sync: true })
    })
    this.#writing = next.catch((err: unknown) => { this.#failed = err })
    return next.catch((err: unknown) => { throw storageFailure(err, this.path) ?? err })
  }

  #see (key: string): void {
    if (this.#seen.size >= SEEN) this.#seen.delete(this.#seen.values().next().value as string)
    this.#seen.add(key)
  }

  head (signer: string, logId: string): HeadEntry | undefined {
    return this.#heads.get(`${signer} ${logId}`)
  }

  advance (signer: string, logId: string, entry: HeadEntry): boolean {
    const key = `${signer} ${logId}`
    const held = this.#heads.get(key)
    if (held !== undefined && held.at_seq >= entry.at_seq) return false
    this.#heads.set(key, entry)
    void this.#write([{ sub: 'heads', key, value: entry }]).catch(() => {})
    return true
  }

  async hasCheckpoint (id: string): Promise<boolean> {
    if (this.#seen.has(`c ${id}`)) return true
    return (await this.#sub('checkpoints').get(id)) !== undefined
  }

  async putCheckpoint (entry: CheckpointEntry): Promise<void> {
    this.#see(`c ${entry.checkpoint_id}`)
    await this.#write([{ sub: 'checkpoints', key: entry.checkpoint_id, value: entry }])
  }

  async hasReceipt (checkpointId: string, signer: string): Promise<boolean> {
    if (this.#seen.has(`r ${checkpointId} ${signer}`)) return true
    return (await this.#sub('receipts').get(`${checkpointId} ${signer}`)) !== undefined
  }

  async putReceipt (entry: ReceiptEntry): Promise<void> {
    this.#see(`r ${entry.checkpoint_id} ${entry.signer}`)
    await this.#write([{ sub: 'receipts', key: `${entry.checkpoint_id} ${entry.signer}`, value: entry }])
  }

  async hasEvidence (id: string): Promise<boolean> {
    return this.#evidence.has(id)
  }

  async putEvidence (entry: EvidenceEntry): Promise<void> {
    this.#evidence.set(entry.id, entry)
    await this.#write([{ sub: 'evidence', key: entry.id, value: entry }])
  }

  convicted (): Iterable<{ signer: string, type: string, id: string }> {
    const first = new Map<string, EvidenceEntry>()
    for (const e of this.evidenceList()) if (!first.has(e.signer)) first.set(e.signer, e)
    return [...first.values()].map((e) => ({ signer: e.signer, type: e.type, id: e.id }))
  }

  // — reading (the control API and the CLI) —

  async checkpoint (id: string): Promise<RunCheckpoints | undefined> {
    const text = await this.#sub('checkpoints').get(id)
    if (text === undefined) return undefined
    return { checkpoint: JSON.parse(text) as CheckpointEntry, receipts: await this.receipts(id) }
  }

  async receipts (checkpointId: string): Promise<ReceiptEntry[]> {
    const out: ReceiptEntry[] = []
    for await (const value of this.#sub('receipts').values({ gt: `${checkpointId} `, lt: `${checkpointId}!` })) out.push(JSON.parse(value) as ReceiptEntry)
    return out
  }

  /** Run checkpoints held, each with the receipts of its witnesses; `run` narrows to one run, `limit` to the newest. */
  async runs (options: { run?: string, limit?: number } = {}): Promise<RunCheckpoints[]> {
    const found: CheckpointEntry[] = []
    for await (const value of this.#sub('checkpoints').values()) {
      const e = JSON.parse(value) as CheckpointEntry
      if (e.kind !== 'run' || (options.run !== undefined && e.run_id !== options.run)) continue
      found.push(e)
    }
    found.sort((a, b) => b.received_at - a.received_at || (a.checkpoint_id < b.checkpoint_id ? -1 : 1))
    const chosen = options.limit === undefined ? found : found.slice(0, options.limit)
    return await Promise.all(chosen.map(async (checkpoint) => ({ checkpoint, receipts: await this.receipts(checkpoint.checkpoint_id) })))
  }

  evidenceList (): EvidenceEntry[] {
    return [...this.#evidence.values()].sort((a, b) => a.received_at - b.received_at || (a.id < b.id ? -1 : 1))
  }

  evidence (id: string): EvidenceEntry | undefined {
    return this.#evidence.get(id)
  }

  /** Wait for the writes queued so far; the first that failed is thrown. */
  async flush (): Promise<void> {
    await this.#writing
    if (this.#failed !== undefined) throw storageFailure(this.#failed, this.path) ?? this.#failed
  }

  async close (): Promise<void> {
    await this.#writing
    await this.#db.close()
  }
}
