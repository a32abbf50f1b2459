/**
 * Runs on this node: their logs, records and closing checkpoints, in the
 * run database (`<home>/runs.db`, node/run-db.ts): each run's hash-chained
 * event log, and once it ends its seal (node/run-seal.ts: the record,
 * protocol/run.ts, and the node's signed checkpoint of its finished log).
 * Runs that older versions kept in a directory each are moved in when the
 * database is first opened (node/run-legacy.ts).
 */
import { randomBytes } from 'node:crypto'
import type { JsonObject, JsonValue } from '../protocol/canonical.ts'
import { chainError, verifyChain } from '../protocol/chain.ts'
import { ReachError } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { createSigner, type Signer } from '../protocol/keys.ts'
import { TERMINAL_EVENTS, isRunId, recordOf, type RunRecord } from '../protocol/run.ts'
import { ArrayCursor, executeRun, replayRun, resumeRun, startOf, RUN_AGGREGATE, type Engine, type ReplayVerdict, type RunBudget, type RunOutcome, type RunPack, type RunPolicy } from '../packs/run/index.ts'
import type { Tool } from '../packs/tools/index.ts'
import type { HomePaths } from './home.ts'
import type { RunDatabase } from './run-db.ts'
import { moveLegacyRuns, type LegacyLeft } from './run-legacy.ts'
import { parseSealed, sealOf, type RunSeal, type Sealed } from './run-seal.ts'
import { runSink } from './run-sink.ts'
import { EventLog } from './store/index.ts'
import type { LevelEventStore } from './store/level.ts'
import type { EventStore, OpenOptions } from './store/types.ts'

export { fingerprintOf, recordOf, type RunRecord } from '../protocol/run.ts'
export type { RunSeal } from './run-seal.ts'

const TERMINAL = TERMINAL_EVENTS

/** What reading a node's runs needs: the RunStore here, or a running node's (its control API). */
export interface RunReader {
  list (): Promise<RunRecord[]>
  record (runId: string): Promise<RunRecord>
  events (runId: string): Promise<Event[]>
  checkpointText (runId: string): Promise<string>
}

export interface NewRun {
  pack: RunPack
  input: JsonValue
  budget: RunBudget
  policy: RunPolicy
  engine: Engine
  tools: Map<string, Tool>
  signal?: AbortSignal
  /** Where the run sits in a delegation chain (recorded in RunStarted, handed back on resume). */
  lineage?: JsonObject
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
  private readonly signer: Signer | undefined
  /**
   * Runs whose result is known but whose log is still being closed and whose record and
   * checkpoint are still being written: that happens after the result is handed back, off the
   * run's path. Every reader of a run waits for its entry.
   */
  private readonly settling = new Map<string, Promise<void>>()
  /** Finished runs being read, one open log each however many read it (`lease`). */
  private readonly readers = new Map<string, { store: Promise<EventStore>, users: number }>()

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
        this.legacyLeft = await moveLegacyRuns(db, this.home.runs)
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

  /** Runs the last `list` left out because their log does not read (`reach doctor` names them). */
  unreadable: Array<{ run_id: string, code: string, message: string }> = []

  /** Run directories of an older version that the last open could not move in (see moveLegacyRuns). */
  legacyLeft: LegacyLeft[] = []

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

  /**
   * Runs and resumes under way here. Closing cancels them (RL-5007: the node is stopping) and
   * waits until each has ended and written its end, so a stop never leaves a run that reads as
   * cut short by a crash.
   */
  private readonly inflight = new Set<Promise<unknown>>()
  private readonly stopping = new AbortController()

  private track<T> (work: Promise<T>): Promise<T> {
    this.inflight.add(work)
    void work.catch(() => {}).finally(() => { this.inflight.delete(work) })
    return work
  }

  /** Cancel the runs under way, wait for their ends, then close the spare logs and the run database. */
  async close (): Promise<void> {
    this.closed = true
    this.stopping.abort(new ReachError('RL-5007', { message: 'the node is stopping: runs under way are cancelled' }))
    await Promise.allSettled([...this.inflight])
    await this.refilling
    await this.settled()
    for (const spare of this.spares.splice(0)) await spare.store.close()
    const db = await this.db?.catch(() => undefined)
    this.db = undefined
    await db?.close()
  }

  private check (runId: string): string {
    if (!isRunId(runId)) throw new ReachError('RL-3019', { message: `${runId} is not a run id` })
    return runId
  }

  async start (run: NewRun): Promise<RunSeal & { outcome: RunOutcome }> {
    if (this.closed) throw new ReachError('RL-5007', { message: 'the run store is closed: the node is stopping' })
    return await this.track(this.startRun({ ...run, signal: run.signal === undefined ? this.stopping.signal : AbortSignal.any([run.signal, this.stopping.signal]) }))
  }

  private async startRun (run: NewRun): Promise<RunSeal & { outcome: RunOutcome }> {
    const { runId, nonce, store } = await this.takeLog()
    // Open (the log is in it); held here so that the seal goes in even when close() has begun.
    const db = await this.database()
    let early: RunSeal | undefined
    let ended = false
    let outcome: RunOutcome
    let sealed: RunSeal
    try {
      // Not sealed twice: once the run has ended, whatever seal there is stands.
      const sink = runSink(new EventLog(store), (events) => { if (!ended) early = sealOf(runId, events, this.signerFor(runId)) })
      outcome = await executeRun({ pack: run.pack, input: run.input, budget: run.budget, policy: run.policy, nonce, ...(run.lineage === undefined ? {} : { lineage: run.lineage }) }, run.engine, sink, run.tools, run.signal)
      // The log is durable up to its last event: the result can go back now. Closing the log and
      // writing the record and checkpoint (functions of the log) follow off the run's path.
      // Sealed while the last write was syncing, from the same events (checked, cheaply).
      ended = true
      const last = outcome.events.at(-1)
      sealed = early !== undefined && early.record.events === outcome.events.length && early.record.event_log_hash === last?.hash ? early : sealOf(runId, outcome.events, this.signerFor(runId))
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

  /**
   * Continue a run a dead process left unfinished (no tool whose result was recorded runs again).
   * `tools`: given the run's recorded lineage, the tools a new run there would get. A run that
   * another engine build started cannot be finished here (its fuel count would mix two builds):
   * it ends with RunFailed RL-3021. One whose policy has changed since ends RunCancelled RL-3022
   * where its record ends (that still replays). A recorded prefix this pack does not reproduce is
   * RL-3017.
   */
  async resume (runId: string, pack: RunPack, engine: Engine, policy: RunPolicy, tools: (lineage: JsonObject | undefined) => Map<string, Tool>, signalFor?: (lineage: JsonObject | undefined) => AbortSignal | undefined): Promise<RunSeal & { outcome: RunOutcome }> {
    if (this.closed) throw new ReachError('RL-5007', { message: 'the run store is closed: the node is stopping' })
    const stopping = this.stopping.signal
    const signals = (lineage: JsonObject | undefined): AbortSignal => {
      const own = signalFor?.(lineage)
      return own === undefined ? stopping : AbortSignal.any([own, stopping])
    }
    return await this.track(this.resumeRun(runId, pack, engine, policy, tools, signals))
  }

  private async resumeRun (runId: string, pack: RunPack, engine: Engine, policy: RunPolicy, tools: (lineage: JsonObject | undefined) => Map<string, Tool>, signalFor: (lineage: JsonObject | undefined) => AbortSignal): Promise<RunSeal & { outcome: RunOutcome }> {
    const store = await this.log(this.check(runId), { repair: true })
    try {
      const recorded = await store.readAll()
      const started = startOf(recorded, pack, engine, policy.granted)
      const sink = runSink(new EventLog(store))
      let outcome: RunOutcome
      if (!started.ok) {
        const d = started.divergence
        if (d.code !== 'RL-3021') throw new ReachError('RL-3017', { message: `cannot resume ${runId}: ${d.reason}`, seq: d.seq })
        const error = { code: d.code, message: `not resumed: ${d.reason}` }
        const events = [...recorded, await sink.append({ type: 'RunFailed', aggregate_id: RUN_AGGREGATE, payload: { error, fuel_used: 0 } })]
        outcome = { status: 'failed', error, fuel_used: 0, events }
      } else {
        try {
          const lineage = started.start.lineage
          // A run goes on only under the policy it started with (a replay holds its gate decisions
          // to one policy): under another, it ends where its record ends, cancelled (RL-3022).
          const changed = started.start.policy.version !== policy.version
            ? AbortSignal.abort(new ReachError('RL-3022', { message: `the node's policy changed while ${runId} was unfinished (recorded ${started.start.policy.version.slice(0, 12)}…, now ${policy.version.slice(0, 12)}…): not continued under another policy` }))
            : undefined
          const signal = changed ?? signalFor(lineage)
          outcome = await resumeRun(started, recorded, engine, sink, tools(lineage), signal)
        } catch (err) {
          const d = (err as { divergence?: { seq: number, reason: string } }).divergence
          if (d === undefined) throw err
          throw new ReachError('RL-3017', { message: `cannot resume ${runId}: ${d.reason}`, seq: d.seq })
        }
      }
      return await this.finish(runId, outcome)
    } finally {
      await store.close()
    }
  }

  private async finish (runId: string, outcome: RunOutcome): Promise<RunSeal & { outcome: RunOutcome }> {
    return { ...await this.seal(runId, outcome.events), outcome }
  }

  private async seal (runId: string, events: readonly Event[]): Promise<RunSeal> {
    const sealed = sealOf(runId, events, this.signerFor(runId))
    await this.putSeal(runId, sealed)
    return sealed
  }

  private signerFor (runId: string): Signer {
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

  /** A finished (or abandoned) run's log, opened to read; RL-3019 when there is none, or while it runs here. */
  private async openToRead (runId: string): Promise<EventStore> {
    this.check(runId)
    await this.settled(runId)
    try {
      return await this.log(runId, {})
    } catch (err) {
      if ((err as ReachError).code === 'RL-5006') throw new ReachError('RL-3019', { message: `no run ${runId} in ${this.home.runDb}` })
      // Its log is open for writing in this process: the run is under way here.
      if ((err as ReachError).code === 'RL-5008' && (await this.database()).inUse.has(runId)) {
        throw new ReachError('RL-3019', { message: `${runId} is still running on this node; it can be read once it ends`, details: { running: true } })
      }
      throw err
    }
  }

  /**
   * A finished run's log, opened once for all who read it at the same time (two witnesses
   * fetching one run were refused as "still running": a log is open once per process), closed
   * when the last lets go.
   */
  private async lease (runId: string): Promise<{ store: EventStore, release: () => Promise<void> }> {
    let reader = this.readers.get(runId)
    if (reader === undefined) {
      const opening = { store: this.openToRead(runId), users: 0 }
      opening.store.catch(() => { if (this.readers.get(runId) === opening) this.readers.delete(runId) })
      this.readers.set(runId, opening)
      reader = opening
    }
    const held = reader
    held.users++
    let store: EventStore
    try {
      store = await held.store
    } catch (err) {
      held.users--
      throw err
    }
    let released = false
    return {
      store,
      release: async () => {
        if (released) return
        released = true
        if (--held.users > 0) return
        if (this.readers.get(runId) === held) this.readers.delete(runId)
        await store.close()
      }
    }
  }

  async events (runId: string): Promise<Event[]> {
    const { store, release } = await this.lease(runId)
    try {
      return await store.readAll()
    } finally {
      await release()
    }
  }

  /** A run's events in seq order, read from the database as they are consumed. */
  async * stream (runId: string): AsyncGenerator<Event> {
    const { store, release } = await this.lease(runId)
    try {
      yield * store.read()
    } finally {
      await release()
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
   * Store a run verified elsewhere (readRunArchive); RL-1008 for a run id already here. Its log
   * and its seal (the origin's signed checkpoint, which this node cannot rebuild) go in one
   * synced write: a crash leaves both or neither.
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
      const db = await this.database()
      const sealed: Sealed = { record, checkpoint: checkpointText, ended_at: Date.now() }
      const store = await this.log(runId, { create: true }) as LevelEventStore
      try {
        await store.appendBatchWith(events, [{ sublevel: db.sealed, key: runId, value: JSON.stringify(sealed) }])
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

  /**
   * Replay a recorded run with `pack`; the verdict and the fingerprint the replay computes. A
   * run this node recorded before runs named their engine build (a version-1 record: imports are
   * stored as version 2, readRunArchive) replays under the rules of then.
   */
  async replay (runId: string, pack: RunPack, engine: Engine): Promise<{ verdict: ReplayVerdict, record: RunRecord, fingerprint?: string }> {
    const legacy = (await this.record(runId)).version === 1
    return await replayEvents(runId, await this.events(runId), pack, engine, { legacy })
  }

  /** Whether a run `runId` is here (its first write is durable). */
  async has (runId: string): Promise<boolean> {
    return await (await this.database()).heads.get(this.check(runId)) !== undefined
  }
}

/**
 * Replay a recorded run's events with `pack`; the verdict and, when it verified, the fingerprint
 * (the replay matched every event, so the record the log implies is the replay's own).
 */
export async function replayEvents (runId: string, events: readonly Event[], pack: RunPack, engine: Engine, options: { legacy?: boolean } = {}): Promise<{ verdict: ReplayVerdict, record: RunRecord, fingerprint?: string }> {
  // The record is evidence only if its chain holds: verify before replaying.
  const chain = verifyChain(events)
  if (!chain.ok) throw chainError(chain)
  const record = recordOf(runId, events)
  const verdict = await replayRun(pack, engine, new ArrayCursor(events), options)
  return verdict.ok ? { verdict, record, fingerprint: record.fingerprint } : { verdict, record }
}
