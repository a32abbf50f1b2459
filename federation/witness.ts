/**
 * The witness (issue 13, SPEC §10.8): checkpoint, receipt and evidence gossip, the head store's
 * rules, the verification queue, and what a node does about a peer caught lying.
 *
 *   reach/<fed>/checkpoints/1 ─ validate ─┬─ new head ──────── sample? ─ verification queue ─ replay
 *                                         ├─ same position, other history ─ equivocation evidence
 *                                         └─ newer ledger head ─ consistency proof from its signer
 *   reach/<fed>/receipts/1    ─ validate ─ stored per checkpoint (per run)
 *   reach/<fed>/evidence/1    ─ validate ─ stored; its signer untrusted (breaker forced open)
 *
 * Every message is checked cheapest first: the envelope (protocol/gossip.ts), who signed it (a
 * peer we know, not one we distrust), whether it is news (a duplicate or an older position is
 * IGNOREd: never a new head, never equivocation), and only then the Ed25519 signature. Whatever
 * fails a check the sender could have made is REJECTed, so gossipsub's score (node/host.ts)
 * penalises whoever forwards garbage; what is merely not news, or what this node could not
 * check itself (a peer it could not reach), is IGNOREd and costs the sender nothing.
 *
 * Heads move forward only: `advance` is a compare-and-set, and every check that awaits (the
 * consistency proof of a ledger head) runs in a per-(signer, log) queue, so two racing messages
 * cannot roll a head back.
 */
import { decodeCheckpoint, verifyCheckpoint, type Checkpoint } from '../protocol/checkpoint.ts'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import { checkEquivocation, checkInconsistency, equivocationEvidence, evidenceId, EQUIVOCATION, INCONSISTENCY } from '../protocol/evidence.ts'
import { decodeGossip, encodeGossip, gossipTopic, GOSSIP_KINDS, type GossipKind, type GossipMessage } from '../protocol/gossip.ts'
import { sha256 } from '../protocol/hash.ts'
import { peerIdOfPublicKey, publicKeyOfPeerId } from '../protocol/peer-id.ts'
import { checkReceipt, type Receipt } from '../protocol/receipt.ts'
import type { AuditSink, Clock, ComponentLogger, GossipBus, GossipResult, Logger } from './components.ts'
import { systemClock } from './components.ts'

export interface HeadEntry {
  checkpoint_id: string
  at_seq: number
  text: string
}

export interface CheckpointEntry {
  checkpoint_id: string
  text: string
  signer: string
  log_id: string
  at_seq: number
  kind: 'log' | 'run'
  run_id?: string
  pack_cid?: string
  /** The peer that passed it on (ourselves for our own). */
  from: string
  received_at: number
}

export interface ReceiptEntry {
  checkpoint_id: string
  run_id: string
  /** The witness's key. */
  signer: string
  text: string
  received_at: number
}

export interface EvidenceEntry {
  id: string
  type: string
  /** The key the evidence convicts. */
  signer: string
  log_id: string
  at_seq: number
  text: string
  from: string
  received_at: number
}

/** Where the witness keeps what it learned (node/witness-store.ts: a LevelDB that survives restarts). */
export interface WitnessRecords {
  head (signer: string, logId: string): HeadEntry | undefined
  /** Compare-and-set: `entry` becomes the head unless one at its position or later is held. */
  advance (signer: string, logId: string, entry: HeadEntry): boolean
  hasCheckpoint (id: string): Promise<boolean>
  putCheckpoint (entry: CheckpointEntry): Promise<void>
  hasReceipt (checkpointId: string, signer: string): Promise<boolean>
  putReceipt (entry: ReceiptEntry): Promise<void>
  hasEvidence (id: string): Promise<boolean>
  putEvidence (entry: EvidenceEntry): Promise<void>
  /** Keys convicted by stored evidence, each with the first evidence against it. */
  convicted (): Iterable<{ signer: string, type: string, id: string }>
}

/** A verification the witness asks the node for: fetch `run_id` from `peer`, replay it, sign a receipt when it holds. */
export interface VerifyJob {
  peer: string
  run_id: string
  pack_cid: string
  checkpoint: Checkpoint
  checkpointText: string
  reason: 'delegated' | 'sampled'
}

export interface VerifyOutcome {
  verified: boolean
  /** The served checkpoint's text (a different one at the same position is equivocation). */
  servedCheckpoint?: string
  /** A signed receipt, when verified. */
  receipt?: string
  /** Evidence of the lie (a divergence proof), when the replay diverged. */
  evidence?: string
  code?: ErrorCode
  reason?: string
}

export interface WitnessComponents {
  self: string
  federation: string
  gossip: GossipBus
  records: WitnessRecords
  peers: {
    /** A peer this node has heard of (connected once, or in its registry). */
    knows (peer: string): boolean
    untrusted (peer: string): boolean
    /** Evidence convicts `peer`: its breaker is forced open, delegation to and from it refused. */
    distrust (peer: string, reason: string): void
    recordVerificationFailure (peer: string): void
  }
  /** The verification a witness does (the node's `verify`: fetch, replay, sign). */
  verify (job: VerifyJob, signal: AbortSignal): Promise<VerifyOutcome>
  /** The check of evidence that needs more than the text (a divergence proof's pack replay); RL-2xxx when it proves nothing. */
  checkEvidence?: (type: string, text: string, signal: AbortSignal) => Promise<{ signer: string, log_id: string, at_seq: number }>
  /** A consistency check of a growing log's newer head against the older: resolves with evidence text when the signer's newer head is not an extension, undefined when it is; throws when it could not tell. */
  consistency?: (peer: string, older: Checkpoint, olderText: string, newer: Checkpoint, newerText: string, signal: AbortSignal) => Promise<string | undefined>
  logger: ComponentLogger
  clock?: Clock
  audit?: AuditSink
  metrics?: {
    message (direction: 'in' | 'out', kind: GossipKind, result: string): void
    verification (result: 'verified' | 'diverged' | 'failed' | 'dropped'): void
  }
}

export interface WitnessPolicy {
  /** Witness every delegated result this node receives. */
  verify_delegated: boolean
  /** The share of gossiped run checkpoints this node witnesses, sampled by a seed (0 to 1). */
  verify_sample_rate: number
  /** Verifications at once, and waiting; past that, work is dropped (counted). */
  verify_concurrency: number
  verify_queue: number
}

export const DEFAULT_WITNESS_POLICY: Readonly<WitnessPolicy> = Object.freeze({ verify_delegated: true, verify_sample_rate: 0, verify_concurrency: 1, verify_queue: 64 })

/** How long a ledger head's consistency check may take: gossipsub keeps an unvalidated message only ~5 heartbeats. */
export const CONSISTENCY_TIMEOUT_MS = 3_000
/** How long one verification may take (fetch and replay). */
export const VERIFY_TIMEOUT_MS = 120_000

/** Why a message was not accepted (the REJECT carries the sender's fault, IGNORE does not). */
class Verdict extends Error {
  readonly result: Exclude<GossipResult, 'accept'>
  readonly why: string
  constructor (result: Exclude<GossipResult, 'accept'>, why: string) {
    super(why)
    this.result = result
    this.why = why
  }
}
const ignore = (why: string): never => { throw new Verdict('ignore', why) }

function keyOf (peer: string): string | undefined {
  try {
    return publicKeyOfPeerId(peer)
  } catch {
    return undefined
  }
}

/** What a witness tells its node (and tests, benches, simulations) as it happens. */
export interface WitnessEvents {
  checkpoint: CustomEvent<CheckpointEntry>
  receipt: CustomEvent<ReceiptEntry>
  evidence: CustomEvent<EvidenceEntry>
  /** Every message checked, with its verdict (benches and tests watch floods with it). */
  validated: CustomEvent<{ kind: GossipKind, from: string, result: GossipResult, why: string }>
}

export class Witness extends EventTarget {
  readonly #c: WitnessComponents
  readonly #log: Logger
  readonly #clock: Clock
  #policy: WitnessPolicy
  readonly #sampleSeed: Uint8Array
  /** This node's key, as its receipts name it. */
  readonly #selfKey: string | undefined
  readonly #topics: Record<GossipKind, string>
  readonly #byTopic: Map<string, GossipKind>
  /** Per (signer, log): the checks that await run one after another. */
  readonly #lanes = new Map<string, Promise<unknown>>()
  readonly #queue: VerifyJob[] = []
  readonly #queued = new Set<string>()
  #running = 0
  readonly #inFlight = new Set<Promise<void>>()
  readonly #abort = new AbortController()
  #unlisten: (() => void) | undefined

  constructor (components: WitnessComponents, policy: Partial<WitnessPolicy> = {}) {
    super()
    this.#c = components
    this.#log = components.logger.forComponent('reach:federation:witness')
    this.#clock = components.clock ?? systemClock
    this.#policy = { ...DEFAULT_WITNESS_POLICY, ...policy }
    this.#sampleSeed = sha256(`reach/witness-sample/v1\n${components.self}`)
    this.#selfKey = keyOf(components.self)
    this.#topics = Object.fromEntries(GOSSIP_KINDS.map((k) => [k, gossipTopic(components.federation, k)])) as Record<GossipKind, string>
    this.#byTopic = new Map(GOSSIP_KINDS.map((k) => [this.#topics[k], k]))
  }

  set policy (policy: Partial<WitnessPolicy>) { this.#policy = { ...this.#policy, ...policy } }
  get policy (): WitnessPolicy { return { ...this.#policy } }

  topic (kind: GossipKind): string { return this.#topics[kind] }

  async start (): Promise<void> {
    if (this.#unlisten !== undefined) return
    // Convictions outlive restarts: what stored evidence proves is acted on before any message.
    for (const c of this.#c.records.convicted()) this.#distrust(c.signer, `${c.type} evidence ${c.id}`)
    this.#unlisten = this.#c.gossip.onMessage((m) => {
      const kind = this.#byTopic.get(m.topic)
      if (kind === undefined) return
      const done = this.#receive(kind, m.data, m.from).then((result) => { m.report(result) })
      this.#track(done)
    })
    for (const topic of Object.values(this.#topics)) this.#c.gossip.subscribe(topic)
  }

  async stop (): Promise<void> {
    if (this.#unlisten === undefined) return
    this.#unlisten()
    this.#unlisten = undefined
    for (const topic of Object.values(this.#topics)) this.#c.gossip.unsubscribe(topic)
    this.#abort.abort(new ReachError('RL-5007', { message: 'the node is stopping' }))
    this.#queue.length = 0
    await Promise.allSettled([...this.#inFlight])
  }

  /** Tell the federation about a checkpoint this node signed (a run's, at its end; the ledger's). */
  async publishCheckpoint (text: string, run?: { run_id: string, pack_cid: string }): Promise<void> {
    const cp = decodeCheckpoint(text)
    this.#c.records.advance(cp.signer, cp.log_id, { checkpoint_id: cp.checkpoint_id, at_seq: cp.at_seq, text })
    await this.#storeCheckpoint(this.#entry(cp, text, this.#c.self, run))
    await this.#publish({ kind: 'checkpoints', checkpoint: text, ...(run === undefined ? {} : run) })
  }

  /** A run this node delegated came back: witness it when policy says so. */
  delegated (peer: string, result: { run_id: string, pack_cid: string, checkpoint: string }): void {
    if (!this.#policy.verify_delegated) return
    const cp = decodeCheckpoint(result.checkpoint)
    this.#enqueue({ peer, run_id: result.run_id, pack_cid: result.pack_cid, checkpoint: cp, checkpointText: result.checkpoint, reason: 'delegated' })
  }

  /** Store a receipt this node signed and gossip it. */
  async publishReceipt (text: string, runId: string): Promise<void> {
    const r = checkReceipt(text)
    await this.#storeReceipt({ checkpoint_id: r.checkpoint_id, run_id: runId, signer: r.signer, text, received_at: this.#clock.now() })
    await this.#publish({ kind: 'receipts', receipt: text, run_id: runId })
  }

  /** Evidence this node found or was handed (`reach evidence`): stored, acted on, gossiped. */
  async publishEvidence (text: string, signal: AbortSignal = this.#abort.signal): Promise<EvidenceEntry> {
    const entry = await this.#checkEvidence(text, this.#c.self, signal)
    await this.#convict(entry)
    await this.#publish({ kind: 'evidence', evidence: text })
    return entry
  }

  /** Verifications waiting and under way. */
  get pending (): number { return this.#queue.length + this.#running }

  // — receiving —

  async #receive (kind: GossipKind, data: Uint8Array, from: string): Promise<GossipResult> {
    let result: GossipResult = 'accept'
    let why = ''
    try {
      const message = decodeGossip(kind, data, this.#c.federation)
      if (message.kind === 'checkpoints') await this.#onCheckpoint(message.checkpoint, message.run_id === undefined ? undefined : { run_id: message.run_id, pack_cid: message.pack_cid as string }, from)
      else if (message.kind === 'receipts') await this.#onReceipt(message.receipt, message.run_id)
      else await this.#onEvidence(message.evidence, from)
    } catch (err) {
      if (err instanceof Verdict) {
        result = err.result
        why = err.why
      } else if (isReachError(err) && (err.code.startsWith('RL-2') || err.code === 'RL-1011')) {
        // The message is not what it says it is: its sender passed on something that cannot be true.
        result = 'reject'
        why = `${err.code} ${err.message}`
      } else {
        // Our own failure (storage, a peer we could not reach): not the sender's fault.
        result = 'ignore'
        why = `${isReachError(err) ? `${err.code} ` : ''}${(err as Error).message}`
        this.#log.warn(`${kind} message from ${from} not checked: ${why}`)
      }
    }
    this.#c.metrics?.message('in', kind, result)
    this.dispatchEvent(new CustomEvent('validated', { detail: { kind, from, result, why } }))
    if (result === 'reject') this.#log.debug(`rejected ${kind} message from ${from}: ${why}`)
    return result
  }

  /** The signer as a peer: ignored when we distrust it, or have never heard of it. */
  #vouch (signer: string): string {
    const peer = peerIdOfPublicKey(signer)
    if (this.#c.peers.untrusted(peer)) ignore(`${peer} is untrusted`)
    if (peer !== this.#c.self && !this.#c.peers.knows(peer)) ignore(`${peer} is not a peer this node knows`)
    return peer
  }

  async #onCheckpoint (text: string, run: { run_id: string, pack_cid: string } | undefined, from: string): Promise<void> {
    const cp = decodeCheckpoint(text)
    const kind = cp.kind ?? 'log'
    if ((kind === 'run') !== (run !== undefined)) throw new ReachError('RL-2125', { message: `a ${kind} checkpoint ${run === undefined ? 'without' : 'with'} run_id and pack_cid` })
    const signer = this.#vouch(cp.signer)
    if (await this.#c.records.hasCheckpoint(cp.checkpoint_id)) ignore('duplicate')
    const held = this.#c.records.head(cp.signer, cp.log_id)
    if (held !== undefined && cp.at_seq < held.at_seq) ignore(`stale: at seq ${cp.at_seq}, the head is at ${held.at_seq}`)
    verifyCheckpoint(cp)
    await this.#lane(`${cp.signer} ${cp.log_id}`, async () => {
      const head = this.#c.records.head(cp.signer, cp.log_id)
      if (head?.checkpoint_id === cp.checkpoint_id) ignore('duplicate')
      if (head !== undefined && cp.at_seq < head.at_seq) ignore(`stale: at seq ${cp.at_seq}, the head is at ${head.at_seq}`)
      if (head !== undefined && cp.at_seq === head.at_seq) {
        // Signed, at the position we hold, another history: equivocation. The message goes on, so
        // every node sees both; the evidence goes out too.
        await this.#storeCheckpoint(this.#entry(cp, text, from, run))
        await this.#found(equivocationEvidence(head.text, text))
        return
      }
      if (head !== undefined && kind === 'log' && this.#c.consistency !== undefined) {
        const older = decodeCheckpoint(head.text)
        const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(CONSISTENCY_TIMEOUT_MS)])
        const evidence = await this.#c.consistency(signer, older, head.text, cp, text, signal)
        if (evidence !== undefined) {
          await this.#found(evidence)
          ignore(`${signer}'s newer head of ${cp.log_id} is not an extension of the older`)
        }
      }
      this.#c.records.advance(cp.signer, cp.log_id, { checkpoint_id: cp.checkpoint_id, at_seq: cp.at_seq, text })
      await this.#storeCheckpoint(this.#entry(cp, text, from, run))
      this.#c.audit?.record({ type: 'checkpoint.received', peer: signer, detail: `${kind} ${cp.checkpoint_id} at seq ${cp.at_seq}`, ...(run === undefined ? {} : { run_id: run.run_id }) })
      if (run !== undefined && signer !== this.#c.self && this.#sampled(cp.checkpoint_id)) {
        this.#enqueue({ peer: signer, run_id: run.run_id, pack_cid: run.pack_cid, checkpoint: cp, checkpointText: text, reason: 'sampled' })
      }
    })
  }

  async #onReceipt (text: string, runId: string): Promise<void> {
    let claimed: { signer?: unknown, checkpoint_id?: unknown }
    try {
      claimed = JSON.parse(text) as typeof claimed
    } catch {
      throw new ReachError('RL-2113', { message: 'verification receipt: not JSON' })
    }
    if (typeof claimed?.signer !== 'string' || typeof claimed.checkpoint_id !== 'string') throw new ReachError('RL-2113', { message: 'verification receipt: no signer or checkpoint_id' })
    this.#vouch(claimed.signer)
    if (await this.#c.records.hasReceipt(claimed.checkpoint_id, claimed.signer)) ignore('duplicate')
    const r: Receipt = checkReceipt(text)
    await this.#storeReceipt({ checkpoint_id: r.checkpoint_id, run_id: runId, signer: r.signer, text, received_at: this.#clock.now() })
    this.#c.audit?.record({ type: 'receipt.received', peer: peerIdOfPublicKey(r.signer), run_id: runId, detail: `of checkpoint ${r.checkpoint_id}` })
  }

  async #onEvidence (text: string, from: string): Promise<void> {
    if (await this.#c.records.hasEvidence(evidenceId(text))) ignore('duplicate')
    const entry = await this.#checkEvidence(text, from, this.#abort.signal)
    await this.#convict(entry)
  }

  /** Evidence checked for what it proves; RL-2xxx when it proves nothing. */
  async #checkEvidence (text: string, from: string, signal: AbortSignal): Promise<EvidenceEntry> {
    let type: unknown
    try {
      type = (JSON.parse(text) as { type?: unknown }).type
    } catch {
      throw new ReachError('RL-2110', { message: 'evidence is not JSON' })
    }
    let proves: { signer: string, log_id: string, at_seq: number }
    if (type === EQUIVOCATION) proves = checkEquivocation(text)
    else if (type === INCONSISTENCY) proves = checkInconsistency(text)
    else if (typeof type === 'string' && this.#c.checkEvidence !== undefined) proves = await this.#c.checkEvidence(type, text, signal)
    else throw new ReachError('RL-2110', { message: `evidence of type ${JSON.stringify(type)} is not one this node checks` })
    return { id: evidenceId(text), type: type as string, signer: proves.signer, log_id: proves.log_id, at_seq: proves.at_seq, text, from, received_at: this.#clock.now() }
  }

  /** Evidence this node made itself: kept, acted on and told to everyone. */
  async #found (text: string): Promise<void> {
    if (await this.#c.records.hasEvidence(evidenceId(text))) return
    await this.publishEvidence(text)
  }

  async #storeReceipt (entry: ReceiptEntry): Promise<void> {
    await this.#c.records.putReceipt(entry)
    this.#log.info(`receipt for run ${entry.run_id} by ${peerIdOfPublicKey(entry.signer)}: checkpoint ${entry.checkpoint_id} replayed`)
    this.dispatchEvent(new CustomEvent('receipt', { detail: entry }))
  }

  async #storeCheckpoint (entry: CheckpointEntry): Promise<void> {
    await this.#c.records.putCheckpoint(entry)
    this.dispatchEvent(new CustomEvent('checkpoint', { detail: entry }))
  }

  async #convict (entry: EvidenceEntry): Promise<void> {
    if (!(await this.#c.records.hasEvidence(entry.id))) {
      await this.#c.records.putEvidence(entry)
      this.#log.warn(`evidence ${entry.id}: ${entry.type} by ${peerIdOfPublicKey(entry.signer)} (log ${entry.log_id} at seq ${entry.at_seq}), from ${entry.from}`)
      this.dispatchEvent(new CustomEvent('evidence', { detail: entry }))
    }
    const peer = peerIdOfPublicKey(entry.signer)
    this.#c.audit?.record({ type: 'evidence.stored', peer, detail: `${entry.type} ${entry.id} (log ${entry.log_id} at seq ${entry.at_seq})` })
    this.#distrust(entry.signer, `${entry.type} evidence ${entry.id}`)
  }

  #distrust (signer: string, reason: string): void {
    const peer = peerIdOfPublicKey(signer)
    if (peer === this.#c.self || this.#c.peers.untrusted(peer)) return
    this.#c.peers.distrust(peer, reason)
    this.#log.warn(`peer ${peer} is untrusted from now on: ${reason}`)
  }

  // — verification queue —

  /** A seeded sample: the same checkpoint is always in or always out for this node, and another node's sample is another. */
  #sampled (checkpointId: string): boolean {
    const rate = this.#policy.verify_sample_rate
    if (rate <= 0) return false
    if (rate >= 1) return true
    const h = sha256(new Uint8Array([...this.#sampleSeed, ...Buffer.from(checkpointId, 'hex')]))
    return new DataView(h.buffer, h.byteOffset, 4).getUint32(0) / 2 ** 32 < rate
  }

  #enqueue (job: VerifyJob): void {
    if (this.#abort.signal.aborted || this.#queued.has(job.checkpoint.checkpoint_id)) return
    if (this.#queue.length >= this.#policy.verify_queue) {
      this.#c.metrics?.verification('dropped')
      this.#log.debug(`verification queue full: ${job.reason} run ${job.run_id} of ${job.peer} not witnessed`)
      return
    }
    this.#queued.add(job.checkpoint.checkpoint_id)
    this.#queue.push(job)
    this.#pump()
  }

  #pump (): void {
    while (this.#running < this.#policy.verify_concurrency && this.#queue.length > 0) {
      const job = this.#queue.shift() as VerifyJob
      this.#running++
      const done = this.#witness(job).finally(() => {
        this.#running--
        this.#queued.delete(job.checkpoint.checkpoint_id)
        this.#pump()
      })
      this.#track(done)
    }
  }

  async #witness (job: VerifyJob): Promise<void> {
    // Verified here already (`reach delegate --verify`, `reach verify-remote`): nothing to add.
    if (this.#selfKey !== undefined && await this.#c.records.hasReceipt(job.checkpoint.checkpoint_id, this.#selfKey).catch(() => false)) return
    const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(VERIFY_TIMEOUT_MS)])
    let outcome: VerifyOutcome
    try {
      outcome = await this.#c.verify(job, signal)
    } catch (err) {
      if (this.#abort.signal.aborted) return
      this.#c.metrics?.verification('failed')
      this.#log.warn(`could not witness run ${job.run_id} of ${job.peer}: ${isReachError(err) ? `${err.code} ` : ''}${(err as Error).message}`)
      return
    }
    if (outcome.servedCheckpoint !== undefined && outcome.servedCheckpoint !== job.checkpointText) {
      const served = decodeCheckpoint(outcome.servedCheckpoint)
      if (served.log_id === job.checkpoint.log_id && served.at_seq === job.checkpoint.at_seq && served.checkpoint_id !== job.checkpoint.checkpoint_id) {
        await this.#found(equivocationEvidence(job.checkpointText, outcome.servedCheckpoint)).catch((err: unknown) => { this.#log.warn(`equivocation evidence: ${(err as Error).message}`) })
      }
    }
    if (outcome.verified && outcome.receipt !== undefined) {
      this.#c.metrics?.verification('verified')
      this.#c.audit?.record({ type: 'verification.ok', peer: job.peer, run_id: job.run_id, detail: `${job.reason}: checkpoint ${job.checkpoint.checkpoint_id}` })
      await this.publishReceipt(outcome.receipt, job.run_id).catch((err: unknown) => { this.#log.warn(`cannot publish receipt: ${(err as Error).message}`) })
      return
    }
    this.#c.metrics?.verification(outcome.verified ? 'failed' : 'diverged')
    if (outcome.evidence !== undefined) {
      await this.publishEvidence(outcome.evidence).catch((err: unknown) => { this.#log.warn(`cannot publish the divergence proof against ${job.peer}: ${isReachError(err) ? `${err.code} ` : ''}${(err as Error).message}`) })
    }
  }

  // — helpers —

  async #publish (message: GossipMessage): Promise<void> {
    const data = encodeGossip(this.#c.federation, message)
    try {
      await this.#c.gossip.publish(this.#topics[message.kind], data)
      this.#c.metrics?.message('out', message.kind, 'sent')
    } catch (err) {
      this.#c.metrics?.message('out', message.kind, 'failed')
      this.#log.warn(`publishing on ${this.#topics[message.kind]}: ${(err as Error).message}`)
    }
  }

  #entry (cp: Checkpoint, text: string, from: string, run?: { run_id: string, pack_cid: string }): CheckpointEntry {
    return { checkpoint_id: cp.checkpoint_id, text, signer: cp.signer, log_id: cp.log_id, at_seq: cp.at_seq, kind: cp.kind ?? 'log', ...(run === undefined ? {} : run), from, received_at: this.#clock.now() }
  }

  async #lane<T> (key: string, work: () => Promise<T>): Promise<T> {
    const before = this.#lanes.get(key) ?? Promise.resolve()
    const mine = before.catch(() => {}).then(work)
    const tail = mine.catch(() => {})
    this.#lanes.set(key, tail)
    try {
      return await mine
    } finally {
      if (this.#lanes.get(key) === tail) this.#lanes.delete(key)
    }
  }

  #track (p: Promise<void>): void {
    const tracked = p.catch((err: unknown) => { this.#log.warn(`witness: ${(err as Error).message}`) })
    this.#inFlight.add(tracked)
    void tracked.finally(() => { this.#inFlight.delete(tracked) })
  }
}
