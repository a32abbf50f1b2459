/**
 * Runs on this node: their logs, records and closing checkpoints, in the
 * run database (`<home>/runs.db`, node/run-db.ts): each run's hash-chained
 * event log, and once it ends its record (below) and the node's signed
 * checkpoint of its finished log. Runs that older versions kept in a
 * directory each (`<home>/runs/<run_id>/`) are moved in when the database
 * is first opened.
 *
 * Run record: run_id, engine_version, policy_version, input_hash,
 * artifact_hash (the pack CID), output_hash, event_log_hash (hash of the
 * last event), fingerprint = sha256(canonical of those six), plus status,
 * error and counts. The fingerprint is what two replays must agree on.
 */
import { randomBytes } from 'node:crypto'
import { readdir, readFile, rm, rmdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { JsonObject, JsonValue } from '../protocol/canonical.ts'
import { createCheckpoint, type Checkpoint } from '../protocol/checkpoint.ts'
import { chainError, verifyChain } from '../protocol/chain.ts'
import { digestLog } from '../protocol/digest.ts'
import { ReachError, type ErrorCode } from '../protocol/errors.ts'
import { headOf, nextEvent, type Event, type EventDraft } from '../protocol/event.ts'
import { hashCanonical } from '../protocol/hash.ts'
import { createSigner } from '../protocol/keys.ts'
import { executeRun, replayRecordedRun, resumeRun, startOf, type RunBudget, type RunOutcome, type RunPack, type RunPolicy, type RunSink, type ReplayVerdict } from '../packs/runner.ts'
import type { Tool } from '../packs/tools/index.ts'
import { encodeCheckpoint } from '../protocol/checkpoint.ts'
import type { HomePaths } from './home.ts'
import type { RunDatabase } from './run-db.ts'
import { EventLog, openStore } from './store/index.ts'
import type { EventStore, OpenOptions } from './store/types.ts'

export interface RunRecord {
  version: 1
  run_id: string
  pack_name: string
  engine_version: string
  policy_version: string
  input_hash: string
  artifact_hash: string
  output_hash: string | null
  event_log_hash: string
  fingerprint: string
  status: 'running' | 'completed' | 'failed' | 'cancelled'
  error: { code: ErrorCode, message: string } | null
  events: number
  fuel_used: number
  checkpoint_id: string | null
}

const TERMINAL: ReadonlySet<string> = new Set(['RunCompleted', 'RunFailed', 'RunCancelled'])
const RUN_ID = /^run_[0-9a-f]{20}$/

/** What the run database keeps for a finished run (`!sealed!<run_id>`). */
interface Sealed {
  record: RunRecord
  /** The checkpoint file text (encodeCheckpoint). */
  checkpoint: string
  /** When it was sealed (ms since the epoch): runs are listed most recent first. */
  ended_at: number
}

/** A record file's text as a record, or undefined when a crash left it empty or cut short. */
function parseRecord (text: string): RunRecord | undefined {
  try {
    const value = JSON.parse(text) as unknown
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as RunRecord : undefined
  } catch {
    return undefined
  }
}

/**
 * A seal as stored, or undefined when it does not read as one (a damaged value): like a seal a
 * crash lost, it is rebuilt from the log.
 */
function parseSealed (text: string): Sealed | undefined {
  try {
    const value = JSON.parse(text) as Partial<Sealed> | null
    const ok = value !== null && typeof value === 'object' && typeof value.checkpoint === 'string' && typeof value.ended_at === 'number' &&
      value.record !== null && typeof value.record === 'object'
    return ok ? value as Sealed : undefined
  } catch {
    return undefined
  }
}

/** A finished run's record and the node's signed checkpoint of its log (also as file text, made once). */
export interface RunSeal {
  record: RunRecord
  checkpoint: Checkpoint
  checkpointText: string
}

/** What reading a node's runs needs: the RunStore here, or a running node's (its control API). */
export interface RunReader {
  list (): Promise<RunRecord[]>
  record (runId: string): Promise<RunRecord>
  events (runId: string): Promise<Event[]>
  checkpointText (runId: string): Promise<string>
}

export function fingerprintOf (r: Pick<RunRecord, 'engine_version' | 'policy_version' | 'input_hash' | 'artifact_hash' | 'output_hash' | 'event_log_hash'>): string {
  return hashCanonical({ engine_version: r.engine_version, policy_version: r.policy_version, input_hash: r.input_hash, artifact_hash: r.artifact_hash, output_hash: r.output_hash, event_log_hash: r.event_log_hash })
}

/** The record a log implies. Pure: a replay computes the same record from the same events. */
export function recordOf (runId: string, events: readonly Event[], outcome?: RunOutcome): RunRecord {
  const started = events[0]?.payload as JsonObject
  const last = events.at(-1) as Event
  const end = last.type === 'RunCompleted' || last.type === 'RunFailed' || last.type === 'RunCancelled' ? last.payload as JsonObject : undefined
  const base = {
    engine_version: started.engine_version as string,
    policy_version: started.policy_version as string,
    input_hash: started.input_hash as string,
    artifact_hash: started.pack_cid as string,
    output_hash: last.type === 'RunCompleted' ? (end?.output_hash as string) : null,
    event_log_hash: last.hash
  }
  return {
    version: 1,
    run_id: runId,
    pack_name: started.pack_name as string,
    ...base,
    fingerprint: fingerprintOf(base),
    status: last.type === 'RunCompleted' ? 'completed' : last.type === 'RunFailed' ? 'failed' : last.type === 'RunCancelled' ? 'cancelled' : 'running',
    error: last.type === 'RunFailed' || last.type === 'RunCancelled' ? (end?.error as RunRecord['error']) : null,
    events: events.length,
    fuel_used: (end?.fuel_used as number | undefined) ?? outcome?.fuel_used ?? 0,
    checkpoint_id: null
  }
}

/** Test hook: `REACH_FAULT=exit-after:<EventType>` kills the process right after that event is durable. */
function faultAfter (): string | undefined {
  const f = process.env.REACH_FAULT
  return f?.startsWith('exit-after:') === true ? f.slice('exit-after:'.length) : undefined
}

export interface NewRun {
  pack: RunPack
  input: JsonValue
  budget: RunBudget
  policy: RunPolicy
  engineVersion: string
  tools: Map<string, Tool>
  signal?: AbortSignal
}

/** A run log opened ahead of time (its id chosen then), so starting a run does not wait for LevelDB to create it. */
interface SpareLog {
  runId: string
  nonce: string
  store: EventStore
}

export interface RunStoreOptions {
  /** Keep this many empty run logs open and ready (the daemon: a run then starts without reading the database first). 0: open per run. */
  spares?: number
  /** Wraps the opening of a new run's log (tests wrap the store to make its writes fail). */
  openLog?: (open: () => Promise<EventStore>) => Promise<EventStore>
}

export class RunStore implements RunReader {
  private readonly home: HomePaths
  private readonly spareTarget: number
  private readonly openLog: RunStoreOptions['openLog']
  private readonly spares: SpareLog[] = []
  private refilling: Promise<void> | undefined
  private closed = false
  /** The run database, opened on first use (and held until close). */
  private db: Promise<RunDatabase> | undefined
  /**
   * The node's checkpoint signer, made once (a private KeyObject per run cost 0.25 ms). Without
   * one (a store opened only to read, by `reach doctor`), a finished run whose seal a crash lost
   * is listed from its log but not sealed again: only the node's own key may sign its runs.
   */
  private readonly signer: ReturnType<typeof createSigner> | undefined
  /**
   * Runs whose result is known but whose log is still being closed and whose record and
   * checkpoint are still being written: that happens after the result is handed back, off the
   * run's path. Every reader of a run waits for its entry.
   */
  private readonly settling = new Map<string, Promise<void>>()

  /** `nodeSeed`: the node's key, which signs its runs' checkpoints; undefined to only read. */
  constructor (home: HomePaths, nodeSeed: Uint8Array | undefined, options: RunStoreOptions = {}) {
    this.home = home
    this.signer = nodeSeed === undefined ? undefined : createSigner(nodeSeed)
    this.spareTarget = options.spares ?? 0
    this.openLog = options.openLog
  }

  /**
   * Open the run database now (it is otherwise opened on first use), moving in runs an older
   * version kept in a directory each. RL-5008 while another process holds it: a running node (for
   * as long as it runs), or another command (`waitMs`: wait that long for it to let go).
   */
  async open (options: { waitMs?: number } = {}): Promise<void> {
    const until = Date.now() + (options.waitMs ?? 0)
    for (;;) {
      try {
        await this.database()
        if (this.spareTarget > 0) this.refill()
        return
      } catch (err) {
        if ((err as ReachError).code !== 'RL-5008' || Date.now() >= until) throw err
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }

  private async database (): Promise<RunDatabase> {
    if (this.closed) throw new ReachError('RL-5007', { message: `the run store of ${this.home.root} is closed` })
    const opening = this.db ??= (async () => {
      const { openRunDatabase } = await import('./run-db.ts')
      const db = await openRunDatabase(this.home.runDb)
      try {
        await this.moveLegacyRuns(db)
      } catch (err) {
        await db.close()
        throw err
      }
      return db
    })()
    try {
      return await opening
    } catch (err) {
      // Not remembered (the process that held the database may let it go), unless a newer
      // attempt has already taken its place.
      if (this.db === opening) this.db = undefined
      throw err
    }
  }

  /** Run `runId`'s log in the database; RL-5006 when there is none and `create` is not set. */
  private async log (runId: string, options: OpenOptions): Promise<EventStore> {
    const db = await this.database()
    const { LevelEventStore } = await import('./store/level.ts')
    const open = async (): Promise<EventStore> => {
      const store = LevelEventStore.within(db, runId)
      await store.open(options)
      return store
    }
    return options.create === true && this.openLog !== undefined ? await this.openLog(open) : await open()
  }

  /**
   * Runs from before the run database, one directory each (`<home>/runs/<run_id>/log/`,
   * `record.json`, `final.checkpoint`), copied in and then removed. A copy cut short by a crash
   * is finished the next time: a log already in the database is not written again. A directory
   * whose log cannot be read as it is (held by an older node still running, cut short by a
   * crash, damaged) is left where it is, untouched, and named by `legacyLeft` (`reach doctor`);
   * the move is tried again the next time the database is opened.
   */
  private async moveLegacyRuns (db: RunDatabase): Promise<void> {
    const names = (await readdir(this.home.runs).catch(() => [] as string[])).filter((n) => RUN_ID.test(n))
    this.legacyLeft = []
    if (names.length === 0) return
    const { LevelEventStore } = await import('./store/level.ts')
    for (const runId of names) {
      const dir = join(this.home.runs, runId)
      let events: Event[]
      try {
        const old = await openStore(join(dir, 'log'), { kind: 'level' })
        try {
          events = await old.readAll()
        } finally {
          await old.close()
        }
      } catch (err) {
        // No log at all: a run that died before its log was made. Nothing to move.
        if ((err as ReachError).code === 'RL-5006') {
          await rm(dir, { recursive: true, force: true })
          continue
        }
        this.legacyLeft.push({ run_id: runId, path: dir, code: (err as ReachError).code ?? 'RL-5009', message: (err as Error).message })
        continue
      }
      if (events.length > 0) {
        const into = LevelEventStore.within(db, runId)
        try {
          await into.open({ create: true })
          await into.appendBatch(events)
        } catch (err) {
          if ((err as ReachError).code !== 'RL-5005') throw err
        } finally {
          await into.close()
        }
        const [record, checkpoint, info] = await Promise.all([
          readFile(join(dir, 'record.json'), 'utf8').then(parseRecord, () => undefined),
          readFile(join(dir, 'final.checkpoint'), 'utf8').catch(() => undefined),
          stat(dir)
        ])
        // Kept as they were (an imported run's checkpoint is its origin's, not a rebuild by this
        // node). Without either (a crash lost it: older versions wrote both without fsync), the
        // seal is rebuilt from the log when the run is next read.
        if (record !== undefined && checkpoint !== undefined) {
          await this.putSealed(runId, { record, checkpoint, ended_at: info.mtimeMs }, { sync: true }, db)
        }
      }
      await rm(dir, { recursive: true, force: true })
    }
    await rmdir(this.home.runs).catch(() => {})
  }

  /** Runs the last `list` left out because their log does not read (`reach doctor` names them). */
  unreadable: Array<{ run_id: string, code: string, message: string }> = []

  /** Run directories of an older version that the last open could not move in (see moveLegacyRuns). */
  legacyLeft: Array<{ run_id: string, path: string, code: string, message: string }> = []

  private async newLog (): Promise<SpareLog> {
    const nonce = randomBytes(16).toString('hex')
    const runId = `run_${nonce.slice(0, 20)}`
    return { runId, nonce, store: await this.log(runId, { create: true }) }
  }

  private refill (): void {
    this.refilling ??= (async () => {
      while (!this.closed && this.spares.length < this.spareTarget) this.spares.push(await this.newLog())
    })().catch(() => {}).finally(() => { this.refilling = undefined })
  }

  /**
   * A spare log, or a new one. The spare taken is replaced once the run has settled, not now:
   * its reads would queue beside the run's own writes. Only a node with no spare left starts
   * replacing at once.
   */
  private async takeLog (): Promise<SpareLog> {
    const spare = this.spares.shift()
    if (this.spareTarget > 0 && this.spares.length === 0) this.refill()
    return spare ?? await this.newLog()
  }

  /** Close the spare logs (they hold nothing) and the run database. */
  async close (): Promise<void> {
    this.closed = true
    await this.refilling
    await this.settled()
    for (const spare of this.spares.splice(0)) await spare.store.close()
    const db = await this.db?.catch(() => undefined)
    this.db = undefined
    await db?.close()
  }

  private check (runId: string): string {
    if (!RUN_ID.test(runId)) throw new ReachError('RL-3019', { message: `${runId} is not a run id` })
    return runId
  }

  async start (run: NewRun): Promise<RunSeal & { outcome: RunOutcome }> {
    const { runId, nonce, store } = await this.takeLog()
    // Open (the log is in it); held here so that the seal goes in even when close() has begun.
    const db = await this.database()
    let early: RunSeal | undefined
    let ended = false
    let outcome: RunOutcome
    let sealed: RunSeal
    try {
      // Not sealed twice: once the run has ended, whatever seal there is stands.
      const sink = this.sink(new EventLog(store), (events) => { if (!ended) early = this.sealOf(runId, events) })
      outcome = await executeRun({ pack: run.pack, input: run.input, budget: run.budget, policy: run.policy, engineVersion: run.engineVersion, nonce }, sink, run.tools, run.signal)
      // The log is durable up to its last event: the result can go back now. Closing the log and
      // writing the record and checkpoint (functions of the log) follow off the run's path.
      // Sealed while the last write was syncing, from the same events (checked, cheaply).
      ended = true
      const last = outcome.events.at(-1)
      sealed = early !== undefined && early.record.events === outcome.events.length && early.record.event_log_hash === last?.hash ? early : this.sealOf(runId, outcome.events, outcome)
    } catch (err) {
      ended = true
      await store.close()
      if (this.spareTarget > 0) this.refill()
      throw err
    }
    this.settle(runId, async () => {
      await store.close()
      await this.putSeal(runId, sealed, {}, db)
      if (this.spareTarget > 0 && !this.closed) this.refill()
    })
    return { ...sealed, outcome }
  }

  private settle (runId: string, work: () => Promise<void>): void {
    const done = work().catch(() => {
      // A record or checkpoint not written is rebuilt from the log when it is next read.
    }).finally(() => { if (this.settling.get(runId) === done) this.settling.delete(runId) })
    this.settling.set(runId, done)
  }

  /** Wait until `runId` (or every run) is settled: its log closed, its record and checkpoint written. */
  async settled (runId?: string): Promise<void> {
    if (runId !== undefined) await this.settling.get(runId)
    else await Promise.all([...this.settling.values()])
  }

  /** Continue a run a dead process left unfinished (no tool whose result was recorded runs again). */
  async resume (runId: string, pack: RunPack, granted: readonly string[], tools: Map<string, Tool>): Promise<RunSeal & { outcome: RunOutcome }> {
    const store = await this.log(this.check(runId), { repair: true })
    try {
      const recorded = await store.readAll()
      const outcome = await resumeRun(startOf(recorded, pack, granted), recorded, this.sink(new EventLog(store)), tools)
      return await this.finish(runId, outcome)
    } finally {
      await store.close()
    }
  }

  /**
   * The sink a run writes through. `onLast`, when given, gets the whole log as soon as its last
   * event (RunCompleted, RunFailed, RunCancelled) is built, while that event's write is still on
   * its way to disk: sealing (hashing the log, signing the checkpoint) then overlaps the fsync.
   */
  private sink (log: EventLog, onLast?: (events: readonly Event[]) => void): RunSink {
    const fault = faultAfter()
    let held: Event | undefined
    /** Events whose write succeeded. */
    const written: Event[] = []
    const crashAfter = (type: string): void => { if (fault === type) process.kill(process.pid, 'SIGKILL') }
    const write = async (events: Event[]): Promise<void> => {
      const durable = log.store.appendBatch(events)
      const last = events.at(-1) as Event
      if (onLast !== undefined && TERMINAL.has(last.type)) {
        // After this turn's microtasks, by which time the write has gone to the thread pool
        // (sealing first would hold it back). A guess until the write succeeds: the caller
        // checks it against the run's events, and seals itself when it is missing or stale.
        const whole = [...written, ...events]
        setImmediate(() => {
          try {
            onLast(whole)
          } catch {
            // the caller seals itself
          }
        })
      }
      await durable
      written.push(...events)
      for (const e of events) crashAfter(e.type)
    }
    return {
      hold: (draft) => {
        if (held !== undefined || log.pendingHead() !== null) throw new Error('only a run\'s first event is held')
        held = nextEvent(null, draft)
        return held
      },
      append: async (draft) => {
        const first = held
        held = undefined
        // The held first event goes in the same durable write; if that write fails, it is held
        // again, so the run's next event (its RunFailed) still follows it.
        const event = nextEvent(first === undefined ? log.pendingHead() : headOf(first), draft)
        try {
          await write(first === undefined ? [event] : [first, event])
        } catch (err) {
          held = first
          throw err
        }
        return event
      }
    }
  }

  private async finish (runId: string, outcome: RunOutcome): Promise<RunSeal & { outcome: RunOutcome }> {
    return { ...await this.seal(runId, outcome.events, outcome), outcome }
  }

  private async seal (runId: string, events: readonly Event[], outcome?: RunOutcome): Promise<RunSeal> {
    const sealed = this.sealOf(runId, events, outcome)
    await this.putSeal(runId, sealed)
    return sealed
  }

  /**
   * The run's record and the node's signed checkpoint of its finished log, kept beside the log.
   * Both are functions of the log (Ed25519 is deterministic), so they are written without
   * fsync: the log is the durable part, and a record or checkpoint lost in a crash is rebuilt
   * from it, byte for byte, the next time it is read (`checkpointText`).
   */
  private sealOf (runId: string, events: readonly Event[], outcome?: RunOutcome): RunSeal {
    const d = digestLog(events, { reduce: false })
    const record = recordOf(runId, events, outcome)
    // The node signs what the log is at its end; its state hash is the
    // run's outcome (output or error), the part a verifier compares.
    const checkpoint = createCheckpoint({
      log_id: d.log_id,
      at_seq: d.last_seq,
      state_hash: hashCanonical({ status: record.status, output_hash: record.output_hash, error: record.error }),
      log_hash: d.log_hash,
      merkle_root: d.merkle_root,
      timestamp: d.timestamp
    }, this.signerFor(runId))
    record.checkpoint_id = checkpoint.checkpoint_id
    return { record, checkpoint, checkpointText: encodeCheckpoint(checkpoint) }
  }

  private signerFor (runId: string): ReturnType<typeof createSigner> {
    if (this.signer === undefined) throw new ReachError('RL-1004', { message: `${runId} has no stored checkpoint, and this store was opened without the node's key to sign one` })
    return this.signer
  }

  private async putSeal (runId: string, { record, checkpointText }: RunSeal, options: { sync?: boolean } = {}, db?: RunDatabase): Promise<void> {
    await this.putSealed(runId, { record, checkpoint: checkpointText, ended_at: Date.now() }, options, db)
  }

  private async putSealed (runId: string, sealed: Sealed, options: { sync?: boolean } = {}, db?: RunDatabase): Promise<void> {
    const into = db ?? await this.database()
    await into.db.batch([{ type: 'put', sublevel: into.sealed, key: runId, value: JSON.stringify(sealed) }], { sync: options.sync === true })
  }

  /** What the database keeps of a finished run, if it was sealed (and the seal survived). */
  private async sealedOf (runId: string): Promise<Sealed | undefined> {
    const text = await (await this.database()).sealed.get(runId)
    return text === undefined ? undefined : parseSealed(text)
  }

  async events (runId: string): Promise<Event[]> {
    this.check(runId)
    await this.settled(runId)
    let store
    try {
      store = await this.log(runId, {})
    } catch (err) {
      if ((err as ReachError).code === 'RL-5006') throw new ReachError('RL-3019', { message: `no run ${runId} in ${this.home.runDb}` })
      // Its log is open for writing in this process: the run is under way here.
      if ((err as ReachError).code === 'RL-5008' && (await this.database()).inUse.has(runId)) {
        throw new ReachError('RL-3019', { message: `${runId} is still running on this node; it can be read once it ends`, details: { running: true } })
      }
      throw err
    }
    try {
      return await store.readAll()
    } finally {
      await store.close()
    }
  }

  async record (runId: string): Promise<RunRecord> {
    this.check(runId)
    await this.settled(runId)
    // No seal: the run has not ended, or a crash lost its seal. The log says what happened.
    return (await this.sealedOf(runId))?.record ?? recordOf(runId, await this.events(runId))
  }

  /**
   * Every run, most recently ended first; unfinished runs (cut off by a crash) before them. A
   * finished run whose seal a crash lost is sealed again now. Runs under way in this process are
   * left out until they end; runs whose log does not read are left out and named in `unreadable`.
   */
  async list (): Promise<RunRecord[]> {
    await this.settled()
    const db = await this.database()
    const sealed = new Map<string, Sealed>()
    for (const [runId, text] of await db.sealed.iterator().all()) {
      const s = parseSealed(text)
      if (s !== undefined) sealed.set(runId, s)
    }
    const found: Array<{ record: RunRecord, at: number }> = []
    const unreadable: RunStore['unreadable'] = []
    // A run exists once its first write is durable: its head says so.
    for (const runId of await db.heads.keys().all()) {
      const s = sealed.get(runId)
      if (s !== undefined) {
        found.push({ record: s.record, at: s.ended_at })
        continue
      }
      let events: Event[]
      try {
        events = await this.events(runId)
      } catch (err) {
        if ((err as ReachError).details?.running !== true) unreadable.push({ run_id: runId, code: (err as ReachError).code ?? 'RL-5009', message: (err as Error).message })
        continue
      }
      if (TERMINAL.has(events.at(-1)?.type ?? '')) {
        // When it ended is lost with its seal: it counts from now.
        found.push({ record: this.signer === undefined ? recordOf(runId, events) : (await this.seal(runId, events)).record, at: Date.now() })
      } else {
        found.push({ record: recordOf(runId, events), at: Number.POSITIVE_INFINITY })
      }
    }
    this.unreadable = unreadable
    return found.sort((a, b) => b.at - a.at || (a.record.run_id < b.record.run_id ? -1 : 1)).map((f) => f.record)
  }

  /** The node's signed checkpoint of a finished run; rebuilt from the log if a crash lost it. */
  async checkpointText (runId: string): Promise<string> {
    this.check(runId)
    await this.settled(runId)
    const sealed = await this.sealedOf(runId)
    if (sealed !== undefined) return sealed.checkpoint
    const events = await this.events(runId)
    const last = events.at(-1)
    if (last === undefined || !TERMINAL.has(last.type)) throw new ReachError('RL-3019', { message: `${runId} has not finished` })
    return (await this.seal(runId, events)).checkpointText
  }

  /**
   * Store a run verified elsewhere (readRunArchive); RL-1008 for a run id already here. Its
   * record and checkpoint (the origin's signature, which this node cannot rebuild) are written
   * durably first, then its log: a run is there once its log is.
   */
  async importRun (runId: string, events: readonly Event[], record: RunRecord, checkpointText: string): Promise<void> {
    this.check(runId)
    // One import of a run at a time (the database keeps other processes out): a second one
    // arriving meanwhile must not overwrite the first one's seal.
    const already = (): ReachError => new ReachError('RL-1008', { message: `run ${runId} is already in this data dir` })
    if (this.importing.has(runId)) throw already()
    this.importing.add(runId)
    try {
      if (await this.has(runId)) throw already()
      await this.putSealed(runId, { record, checkpoint: checkpointText, ended_at: Date.now() }, { sync: true })
      const store = await this.log(runId, { create: true })
      try {
        await store.appendBatch(events)
      } finally {
        await store.close()
      }
    } finally {
      this.importing.delete(runId)
    }
  }

  private readonly importing = new Set<string>()

  /**
   * Delete finished runs beyond the newest `keep` (runs not finished are never deleted: they
   * still resume). Each run goes in one atomic batch: its head, its seal and its log.
   */
  async gc (keep: number): Promise<{ removed: string[], kept: number }> {
    const finished = (await this.list()).filter((r) => r.status !== 'running')
    const db = await this.database()
    const removed: string[] = []
    for (const r of finished.slice(keep)) {
      const segments = await db.segments.keys({ gt: `${r.run_id}!`, lt: `${r.run_id}"` }).all()
      await db.db.batch([
        { type: 'del', sublevel: db.heads, key: r.run_id },
        { type: 'del', sublevel: db.sealed, key: r.run_id },
        ...segments.map((key) => ({ type: 'del' as const, sublevel: db.segments, key }))
      ], { sync: true })
      removed.push(r.run_id)
    }
    return { removed, kept: Math.min(keep, finished.length) }
  }

  /** Runs a dead process left without an end (their log stops before RunCompleted / RunFailed). */
  async unfinished (): Promise<RunRecord[]> {
    return (await this.list()).filter((r) => r.status === 'running')
  }

  /** Replay a recorded run with `pack`; the verdict and the fingerprint the replay computes. */
  async replay (runId: string, pack: RunPack): Promise<{ verdict: ReplayVerdict, record: RunRecord, fingerprint?: string }> {
    return await replayEvents(runId, await this.events(runId), pack)
  }

  /** Whether a run `runId` is here (its first write is durable). */
  async has (runId: string): Promise<boolean> {
    return await (await this.database()).heads.get(this.check(runId)) !== undefined
  }
}

/** Replay a recorded run's events with `pack`; the verdict and the fingerprint the replay computes. */
export async function replayEvents (runId: string, events: readonly Event[], pack: RunPack): Promise<{ verdict: ReplayVerdict, record: RunRecord, fingerprint?: string }> {
  // The record is evidence only if its chain holds: verify before replaying.
  const chain = verifyChain(events)
  if (!chain.ok) throw chainError(chain)
  const record = recordOf(runId, events)
  const verdict = await replayRecordedRun(startOf(events, pack), events)
  return verdict.ok ? { verdict, record, fingerprint: recordOf(runId, verdict.outcome.events).fingerprint } : { verdict, record }
}
