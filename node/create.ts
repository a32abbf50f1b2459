/**
 * The composition root (DESIGN.md §2): `createNode(init)` builds a whole node, and nothing else
 * does. The CLI's offline commands take its local half (data dir, keys, policy, packs, runs,
 * sandboxes); `reach node start`, the benches and simulations take all of it:
 *
 *   LocalNode (policy, packs, runs, kv, sandboxes, engine) ─┬─ PackExchange     /reach/pack/1.0.0 + DHT
 *                                                          ├─ DelegationServer /reach/delegate/1.0.0
 *                                                          ├─ LogServer        /reach/log/1.0.0
 *   PeerRegistry (reputation, breakers) ───────────────────┴─ Delegator        (reach.delegate, retries)
 *   libp2p host · control API on 127.0.0.1 (bearer token) · metrics · audit
 *
 * Everything a node holds is its own: two nodes built in one process share no state (the
 * sandbox pools, metrics registries and caches are per node). Services start in dependency order
 * and stop in reverse; `start()` and `stop()` are idempotent, and `stop()` awaits the work each
 * service has in flight.
 */
import { join } from 'node:path'
import type { JsonObject } from '../protocol/canonical.ts'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { createSigner } from '../protocol/keys.ts'
import { encodeCheckpoint } from '../protocol/checkpoint.ts'
import { gossipTopic, GOSSIP_KINDS } from '../protocol/gossip.ts'
import { peerIdOfPublicKey } from '../protocol/peer-id.ts'
import { encodeReceipt, signReceipt, type Receipt } from '../protocol/receipt.ts'
import type { SandboxPoolInit } from '../packs/sandbox.ts'
import type { Tool } from '../packs/tools/index.ts'
import { systemClock, type AuditEvent, type AuditSink, type AuditSource, type Clock, type ComponentLogger, type Dialer, type Random, type RunExecutor } from '../federation/components.ts'
import { delegateTool } from '../federation/delegate-tool.ts'
import { ROOT, lineageJson, lineageOf, type Lineage } from '../federation/delegation.ts'
import { DelegationServer } from '../federation/delegation-server.ts'
import { Delegator } from '../federation/delegator.ts'
import { fetchLog } from '../federation/log-client.ts'
import { LogServer } from '../federation/log-server.ts'
import { PackExchange } from '../federation/pack-exchange.ts'
import { PeerRegistry } from '../federation/peer-registry.ts'
import { verifyRemoteRun, type RemoteClaim, type RemoteVerdict } from '../federation/verify.ts'
import { ledgerConsistency } from '../federation/ledger-evidence.ts'
import { Witness, type VerifyOutcome } from '../federation/witness.ts'
import { ensureApiToken, startApi, type ApiServer } from './api.ts'
import { AUDIT_DB, AuditLedger } from './audit.ts'
import { readEndpoint, removeEndpoint, writeEndpoint, TOKEN_FILE, type Endpoint } from './api-client.ts'
import { errno, storageFailure, writeFileAtomic } from './fs.ts'
import { homePaths, type HomePaths } from './home.ts'
import type { ReachHost } from './host.ts'
import { lineLogger } from './logger.ts'
import { NodeMetrics } from './metrics.ts'
import { LocalNode, type RunRequest, type RunResult } from './node.ts'
import { AdmittedPacks } from './pack-admission.ts'
import { systemRandom } from './random.ts'
import { controlRoutes } from './routes.ts'
import { WITNESS_DB, WitnessStore } from './witness-store.ts'
import { readFile } from 'node:fs/promises'

/** How long `start()` waits for another process (a `reach` command) to let go of the run database. */
const RUN_DB_WAIT_MS = 10_000
/** libp2p's datastore in the data dir (LevelDB): the peers this node knew, and DHT records. */
const PEERSTORE_DIR = 'peerstore'

export interface NetworkInit {
  listen?: string[]
  bootstrap?: string[]
  federation?: string
  /** The control API's port (0: any free port, the default); false: no control API (in-process meshes). */
  apiPort?: number | false
  /** Delegations run at once, and waiting (RL-4007 past that). */
  maxConcurrent?: number
  maxQueue?: number
  /** How long a delegation stream may sit idle between requests before this node closes it. */
  delegateIdleMs?: number
  /** Breaker settings (tests use short ones). */
  breakerResetMs?: number
  breakerVolume?: number
  /** How often every connected peer is pinged (health). */
  pingIntervalMs?: number
  /** How often the audit ledger's head is signed and gossiped when it grew (default LEDGER_CHECKPOINT_MS). */
  ledgerCheckpointMs?: number
}

export interface NodeInit {
  /** The data dir (default `$REACH_HOME`, else `~/.reach`). */
  home?: HomePaths
  /** The network half: a libp2p host, the federation services and the control API. Without it, only the local half. */
  network?: NetworkInit
  /** Where log lines go (default: stamped lines on stdout). */
  logger?: ComponentLogger
  clock?: Clock
  /** Delegation ids and nonces (a simulation seeds it). */
  random?: Random
  sandboxes?: SandboxPoolInit
}

/** The network half of a node, once `createNode` has built it (its services start with `start()`). */
export interface NetworkServices {
  readonly host: ReachHost
  readonly federation: string
  readonly delegator: Delegator
  readonly server: DelegationServer
  readonly exchange: PackExchange
  readonly peers: PeerRegistry
  readonly logs: LogServer
  readonly packs: AdmittedPacks
  readonly metrics: NodeMetrics
  /** Checkpoint, receipt and evidence gossip; the verification queue (federation/witness.ts). */
  readonly witness: Witness
  /** What the witness keeps (heads, checkpoints, receipts, evidence), while the node runs. */
  readonly witnessStore: WitnessStore | undefined
  /** This node's audit ledger (node/audit.ts), while it runs. */
  readonly auditLedger: AuditLedger | undefined
  /**
   * Fetch a peer's log of a run and replay it here; a log that does not check out costs the peer
   * reputation, one that does gets this node's signed verification receipt (protocol/receipt.ts).
   */
  verify (peer: string, runId: string, claim?: RemoteClaim & { pack_cid?: string }, signal?: AbortSignal): Promise<RemoteVerdict & { receipt?: Receipt, pack_trusted: boolean }>
  /** A run the operator starts here (`reach run` on a running node): a root run that may delegate. */
  run (request: Omit<RunRequest, 'extraTools' | 'lineage'>): Promise<RunResult>
  /** Dial a peer now (`reach peers connect`): RL-1011 for a bad multiaddr, RL-4002 when it does not answer. */
  connect (addr: string, signal?: AbortSignal): Promise<{ peer: string, addr: string }>
  /** The control API and its endpoint file, while the node runs (undefined without one). */
  readonly api: ApiServer | undefined
  readonly endpoint: Endpoint | undefined
}

export interface ReachNode {
  readonly local: LocalNode
  readonly network: NetworkServices | undefined
  /** Start every service (the local half needs none); RL-6005 when a node already runs on the data dir. */
  start (): Promise<void>
  stop (): Promise<void>
}

/** What peers did wrong: kept as a warning line as well as in the ledger. */
const MISBEHAVIOUR: ReadonlySet<AuditEvent['type']> = new Set(['delegation.refused', 'delegation.failed', 'verification.failed', 'provider.lied', 'log.refused'])

/** What this node did and saw: into its audit ledger (node/audit.ts) while it runs, a counter, and a line. */
function auditSink (logger: ComponentLogger, metrics: NodeMetrics, ledger: () => AuditLedger | undefined): AuditSink {
  const log = logger.forComponent('reach:node:audit')
  return {
    record (e: AuditEvent): void {
      metrics.auditEvents.inc({ type: e.type })
      ledger()?.record(e)
      const line = `${e.type} ${e.peer}${e.code === undefined ? '' : ` ${e.code}`}${e.run_id === undefined ? '' : ` ${e.run_id}`}${e.cid === undefined ? '' : ` ${e.cid}`}${e.detail === undefined ? '' : `: ${e.detail}`}`
      if (MISBEHAVIOUR.has(e.type)) log.warn(line)
      else log.info(line)
    }
  }
}

/** How often a running node signs its ledger's head and gossips it, when the ledger grew. */
export const LEDGER_CHECKPOINT_MS = 30_000

/** A failure to start, in the words of the part that failed (not "peer unavailable"). */
function startError (err: unknown, what: string): ReachError {
  if (isReachError(err)) return err
  const message = (err as Error)?.message ?? String(err)
  // libp2p names the socket's errno only inside a multi-line message; the operator gets one line.
  const code = errno(err) ?? errno((err as { cause?: unknown })?.cause) ?? /\b(EADDRINUSE|EADDRNOTAVAIL|EACCES)\b/.exec(message)?.[1]
  const reason = code === undefined ? undefined : LISTEN_ERRORS[code]
  if (reason !== undefined) return new ReachError('RL-1013', { message: `${what}: ${reason} (${code as string})`, cause: err })
  return storageFailure(err) ?? new ReachError('RL-6006', { message: `${what} failed: ${message.split('\n', 1)[0] as string}`, cause: err })
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use',
  EADDRNOTAVAIL: 'the address is not one of this machine\'s',
  EACCES: 'not permitted to listen there'
}

/** Build a node: its local half now, its network half (host and services, not started) when asked. */
export async function createNode (init: NodeInit = {}): Promise<ReachNode> {
  const home = init.home ?? homePaths()
  // A node already running on this data dir holds its stores: say so before they refuse us.
  if (init.network !== undefined && init.network.apiPort !== false) await notRunning(home)
  // A node on the network runs packs on worker threads: a pack burning CPU never holds up its
  // control API, libp2p, gossip or pings (packs/run/threads.ts).
  const local = await LocalNode.open({ home, keepKv: init.network !== undefined, spareRuns: init.network === undefined ? 0 : 2, threads: init.network !== undefined, ...(init.sandboxes === undefined ? {} : { sandboxes: init.sandboxes }) })
  if (init.network === undefined) {
    return { local, network: undefined, start: async () => {}, stop: async () => { await local.close() } }
  }
  try {
    return await networkNode(local, init, init.network)
  } catch (err) {
    await local.close()
    throw startError(err, 'building the node')
  }
}

async function networkNode (local: LocalNode, init: NodeInit, net: NetworkInit): Promise<ReachNode> {
  const clock = init.clock ?? systemClock
  const random = init.random ?? systemRandom
  const logger = init.logger ?? lineLogger({ write: (line) => { process.stdout.write(line + '\n') }, clock })
  const log = logger.forComponent('reach:node')
  const metrics = new NodeMetrics()
  let ledger: AuditLedger | undefined
  const openLedger = (): AuditLedger => {
    if (ledger === undefined) throw new ReachError('RL-5007', { message: 'the audit ledger is not open: the node is not running' })
    return ledger
  }
  const audit = auditSink(logger, metrics, () => ledger)
  const ledgerSource: AuditSource = {
    logId: () => openLedger().logId(),
    checkpoint: async () => await openLedger().checkpoint(),
    stream: (toSeq) => openLedger().stream(toSeq),
    consistency: async (oldSize, newSize) => await openLedger().consistency(oldSize, newSize)
  }
  const federation = net.federation ?? 'default'
  const { createHost, dialBootstrap, parsePeerId, KEEP_ALIVE_TAG, RECONNECT } = await import('./host.ts')
  const { multiaddr } = await import('@multiformats/multiaddr')
  // What libp2p learns of peers (their addresses, our keep-alive tags) outlives a restart.
  // A LevelDB opens itself once made, so it is made when the node starts (a node built and never
  // started holds no lock); libp2p reaches it only once started.
  const { LevelDatastore } = await import('datastore-level')
  let peerstore: InstanceType<typeof LevelDatastore> | undefined
  const datastore = new Proxy({} as InstanceType<typeof LevelDatastore>, {
    get: (_target, prop) => {
      if (peerstore !== undefined) {
        const value = Reflect.get(peerstore, prop) as unknown
        return typeof value === 'function' ? value.bind(peerstore) : value
      }
      // Not a promise; any method is the open store's, looked up when it is called.
      if (prop === 'then' || typeof prop === 'symbol') return undefined
      return (...args: unknown[]) => {
        if (peerstore === undefined) throw new ReachError('RL-5007', { message: 'the peer store is not open: the node is not running' })
        return (Reflect.get(peerstore, prop) as (...a: unknown[]) => unknown).apply(peerstore, args)
      }
    }
  })
  const topics = GOSSIP_KINDS.map((k) => gossipTopic(federation, k))
  const host = await createHost({ seed: local.seed, start: false, datastore, topics, ...(net.listen === undefined ? {} : { listen: net.listen }), ...(net.bootstrap === undefined ? {} : { bootstrap: net.bootstrap }) })
  const self = host.peerId.toString()
  const dialer: Dialer = {
    dial: async (peer, protocol, options) => await host.dialProtocol(parsePeerId(peer), protocol, options),
    connectedPeers: () => [...new Set(host.getConnections().map((c) => c.remotePeer.toString()))]
  }

  const peersFile = join(local.home.root, 'peers.json')
  const breakers = new Map<string, string>()
  const peers = await PeerRegistry.open({
    name: peersFile,
    read: async () => await readFile(peersFile, 'utf8').catch((err: unknown) => {
      if (errno(err) === 'ENOENT') return undefined
      throw new ReachError('RL-1004', { message: `cannot read peer registry ${peersFile} (${errno(err) ?? 'error'})`, details: { path: peersFile }, cause: err })
    }),
    write: async (text) => { await writeFileAtomic(peersFile, text, 0o600) }
  }, {
    clock,
    breaker: { resetTimeoutMs: net.breakerResetMs ?? 10_000, ...(net.breakerVolume === undefined ? {} : { volumeThreshold: net.breakerVolume }) },
    onChange: (peer, stats) => {
      metrics.breakerState.set({ peer }, stats.breaker === 'open' ? 2 : stats.breaker === 'half-open' ? 1 : 0)
      if ((breakers.get(peer) ?? 'closed') !== stats.breaker) {
        metrics.breakerTransitions.inc({ state: stats.breaker })
        // An operator's view of a peer going away and coming back (also what tests wait on).
        log.info(`breaker for peer ${peer}: ${stats.breaker}`)
      }
      breakers.set(peer, stats.breaker)
    },
    // A peer the registry forgot leaves no series behind (the table is capped; so is this).
    onEvict: (peer) => {
      breakers.delete(peer)
      metrics.breakerState.remove({ peer })
    }
  })

  const packs = new AdmittedPacks(local)
  await packs.currentRegistry()
  const exchange = new PackExchange({
    self,
    registrar: host,
    dialer,
    routing: host.contentRouting,
    packs: local.packs,
    admit: (pack) => { packs.admitNow(pack) },
    logger,
    clock,
    audit,
    metrics: { packFetches: metrics.packFetches, dhtOperations: metrics.dhtOperations }
  })
  packs.fetchWith(exchange)

  const delegator = new Delegator({
    self,
    signer: createSigner(local.seed),
    dialer,
    peers,
    logger,
    clock,
    random,
    audit,
    metrics: {
      outcome: (outcome, seconds) => { metrics.delegations.inc({ outcome }); metrics.delegationSeconds.observe(seconds) },
      retry: () => { metrics.delegationRetries.inc() }
    },
    // Policy's verify_delegated: every result a peer sent back is replayed here, off the run's path.
    onResult: (d) => { witness.delegated(d.peer, { run_id: d.run_id, pack_cid: d.pack_cid, checkpoint: d.checkpoint }) }
  })
  /** The tools a run gets beyond the host's own: `reach.delegate` one hop deeper, cancelled with the run. */
  const toolsFor = (lineage: Lineage, signal: AbortSignal): Tool[] => [delegateTool(delegator, lineage, signal)]
  const executor: RunExecutor = {
    maxDepth: () => local.policy.max_delegation_depth,
    run: async ({ pack, input, budget, signal, lineage }) => {
      const r = await local.runPack({ pack, input, budget, signal, lineage, extraTools: toolsFor(lineageOf(lineage), signal) })
      announce(r)
      const first = r.outcome.events[0]
      const last = r.outcome.events.at(-1)
      if (first === undefined) throw new ReachError('RL-4020', { message: `run ${r.record.run_id} has no events` })
      return {
        record: r.record,
        status: r.outcome.status,
        ...(r.outcome.output === undefined ? {} : { output: r.outcome.output }),
        ...(r.outcome.error === undefined ? {} : { error: r.outcome.error }),
        checkpoint: r.checkpoint,
        checkpointText: r.checkpointText,
        started: first,
        head: { seq: last?.seq ?? r.checkpoint.at_seq, hash: last?.hash ?? r.checkpoint.log_hash }
      }
    }
  }
  const server = new DelegationServer({
    self,
    registrar: host,
    executor,
    packs: async (cid, signal, timeoutMs) => await packs.get(cid, signal, Math.min(timeoutMs, 15_000)),
    logger,
    clock,
    audit,
    untrusted: (peer) => peers.untrusted(peer),
    metrics: {
      served: (outcome) => {
        metrics.delegationsServed.inc({ outcome })
        if (outcome === 'completed' || outcome === 'failed' || outcome === 'cancelled') metrics.runs.inc({ status: outcome })
      }
    }
  }, {
    ...(net.maxConcurrent === undefined ? {} : { maxConcurrent: net.maxConcurrent }),
    ...(net.maxQueue === undefined ? {} : { maxQueue: net.maxQueue }),
    ...(net.delegateIdleMs === undefined ? {} : { idleMs: net.delegateIdleMs })
  })
  const logs = new LogServer({ registrar: host, runs: local.runs, logger, audit, ledger: ledgerSource })

  /** Fetch a peer's log of a run, check it and replay it here; a verdict that holds carries this node's receipt (not yet told to anyone). */
  const replayRemote = async (peer: string, runId: string, claim: RemoteClaim & { pack_cid?: string }, signal?: AbortSignal): Promise<RemoteVerdict & { receipt?: Receipt, pack_trusted: boolean }> => {
    const stream = await fetchLog(dialer, peer, runId, signal === undefined ? {} : { signal })
    let verdict: RemoteVerdict
    let trusted = false
    try {
      // Verified, not run: the publisher need not be trusted (policy's verify_untrusted_packs).
      const pack = await packs.forReplay(claim.pack_cid ?? stream.pack_cid, signal)
      trusted = pack.trusted
      verdict = await verifyRemoteRun(stream, pack, local.engine, { claim, maxBudget: local.policy.max_budget })
    } catch (err) {
      stream.close()
      if (isReachError(err) && (err.code === 'RL-4014' || err.code.startsWith('RL-2'))) {
        peers.recordVerificationFailure(peer)
        audit.record({ type: 'verification.failed', peer, code: err.code, run_id: runId, detail: err.message })
      }
      throw err
    }
    if (!verdict.verified) {
      peers.recordVerificationFailure(peer)
      audit.record({ type: 'verification.failed', peer, code: verdict.divergence?.code ?? 'RL-3017', run_id: runId, detail: verdict.divergence?.reason ?? '' })
      return { ...verdict, pack_trusted: trusted }
    }
    // This node replayed it: it says so under its own key (a verification receipt).
    const receipt = signReceipt(createSigner(local.seed), verdict.checkpoint, { pack_cid: verdict.record.artifact_hash, fingerprint: verdict.record.fingerprint, engine: { version: local.engine.version, ...local.engine.build }, timestamp: clock.now() })
    return { ...verdict, receipt, pack_trusted: trusted }
  }
  const verify: NetworkServices['verify'] = async (peer, runId, claim = {}, signal) => {
    const verdict = await replayRemote(peer, runId, claim, signal)
    // A receipt is kept and gossiped whoever asked for the verification (issue 13 §2).
    if (verdict.receipt !== undefined) await witness.publishReceipt(encodeReceipt(verdict.receipt), runId).catch((err: unknown) => { log.warn(`cannot keep the receipt of run ${runId}: ${(err as Error).message}`) })
    return verdict
  }

  // The witness: what it keeps lives in <home>/witness.db, opened when the node starts.
  let witnessStore: WitnessStore | undefined
  const store = (): WitnessStore => {
    if (witnessStore === undefined) throw new ReachError('RL-5007', { message: 'the witness store is not open: the node is not running' })
    return witnessStore
  }
  const pubsub = host.services.pubsub
  // The implementation has it; gossipsub's exported interface leaves it out (asyncValidation's other half).
  const validated = pubsub as unknown as { reportMessageValidationResult (msgId: string, from: string, result: string): void }
  const witness = new Witness({
    self,
    federation,
    gossip: {
      subscribe: (topic) => { pubsub.subscribe(topic) },
      unsubscribe: (topic) => { pubsub.unsubscribe(topic) },
      publish: async (topic, data) => { await pubsub.publish(topic, data) },
      onMessage: (handler) => {
        const listener = (e: CustomEvent<{ propagationSource: { toString: () => string }, msgId: string, msg: { topic: string, data: Uint8Array } }>): void => {
          const { propagationSource, msgId, msg } = e.detail
          const from = propagationSource.toString()
          handler({ topic: msg.topic, data: msg.data, from, report: (result) => { validated.reportMessageValidationResult(msgId, from, result) } })
        }
        pubsub.addEventListener('gossipsub:message', listener as never)
        return () => { pubsub.removeEventListener('gossipsub:message', listener as never) }
      }
    },
    records: {
      head: (signer, logId) => store().head(signer, logId),
      advance: (signer, logId, entry) => store().advance(signer, logId, entry),
      hasCheckpoint: async (id) => await store().hasCheckpoint(id),
      putCheckpoint: async (entry) => { await store().putCheckpoint(entry) },
      hasReceipt: async (id, signer) => await store().hasReceipt(id, signer),
      putReceipt: async (entry) => { await store().putReceipt(entry) },
      hasEvidence: async (id) => await store().hasEvidence(id),
      putEvidence: async (entry) => { await store().putEvidence(entry) },
      convicted: () => store().convicted()
    },
    peers: {
      knows: (peer) => peers.knows(peer) || dialer.connectedPeers().includes(peer),
      untrusted: (peer) => peers.untrusted(peer),
      distrust: (peer, reason) => {
        peers.distrust(peer, reason)
        peers.save().catch(() => {})
      },
      recordVerificationFailure: (peer) => { peers.recordVerificationFailure(peer) }
    },
    verify: async (job, signal): Promise<VerifyOutcome> => {
      const v = await replayRemote(job.peer, job.run_id, { pack_cid: job.pack_cid }, signal)
      return {
        verified: v.verified,
        servedCheckpoint: encodeCheckpoint(v.checkpoint),
        ...(v.receipt === undefined ? {} : { receipt: encodeReceipt(v.receipt) }),
        ...(v.divergence === undefined ? {} : { code: v.divergence.code, reason: v.divergence.reason })
      }
    },
    // A newer head of a peer's audit ledger must extend the older one (SPEC §6, §10.8).
    consistency: async (peer, older, olderText, newer, newerText, signal) => await ledgerConsistency(dialer, peer, { checkpoint: older, text: olderText }, { checkpoint: newer, text: newerText }, signal),
    logger,
    clock,
    audit,
    metrics: {
      message: (direction, kind, result) => { metrics.gossipMessages.inc({ direction, result: `${kind}:${result}` }) },
      verification: (result) => { metrics.verifications.inc({ result }) }
    }
  }, {
    verify_delegated: local.policy.verify_delegated,
    verify_sample_rate: local.policy.verify_sample_rate,
    verify_concurrency: local.policy.verify_concurrency,
    verify_queue: local.policy.verify_queue
  })
  /** A run that ended here is told to the federation: its signed checkpoint, with what to fetch and replay. */
  const announce = (r: RunResult): void => {
    // Once the log server can serve it (its log closed, its seal written): a witness asks at once.
    local.runs.settled(r.record.run_id)
      .then(async () => { await witness.publishCheckpoint(r.checkpointText, { run_id: r.record.run_id, pack_cid: r.record.artifact_hash }) })
      .catch((err: unknown) => { log.warn(`cannot announce the checkpoint of run ${r.record.run_id}: ${(err as Error).message}`) })
  }

  const publishedPath = join(local.home.root, 'published.json')
  const savePublished = async (): Promise<void> => { await writeFileAtomic(publishedPath, JSON.stringify({ version: 1, cids: exchange.published() }) + '\n', 0o600) }

  let api: ApiServer | undefined
  let endpoint: Endpoint | undefined
  let pinger: ReturnType<typeof setInterval> | undefined
  let ledgerTimer: ReturnType<typeof setInterval> | undefined
  const onConnect = (e: CustomEvent): void => {
    peers.connected(String(e.detail), true)
    metrics.peersConnected.set(host.getPeers().length)
    log.info(`peer ${String(e.detail)} connected`)
    // A peer we were connected to is redialled after a restart and whenever it goes away (host.ts).
    host.peerStore.merge(e.detail, { tags: { [KEEP_ALIVE_TAG]: { value: 1 } } }).catch((err: unknown) => { log.warn(`cannot remember peer ${String(e.detail)}: ${(err as Error).message}`) })
  }
  const onReconnectFailure = (e: CustomEvent): void => { log.warn(`peer ${String(e.detail)} did not answer redials for about 4 minutes; it is redialled again once it connects`) }
  const onDisconnect = (e: CustomEvent): void => {
    peers.connected(String(e.detail), false)
    metrics.peersConnected.set(host.getPeers().length)
    log.info(`peer ${String(e.detail)} disconnected`)
  }

  /** Undo, in reverse, each step `start` took; never throws. */
  const stops: Array<{ what: string, stop: () => Promise<void> }> = []
  const unwind = async (): Promise<void> => {
    for (const s of stops.splice(0).reverse()) {
      await s.stop().catch((err: unknown) => { log.warn(`stopping ${s.what}: ${(err as Error).message}`) })
    }
  }
  const step = async (what: string, start: () => Promise<void>, stop: () => Promise<void>): Promise<void> => {
    try {
      await start()
    } catch (err) {
      throw startError(err, what)
    }
    stops.push({ what, stop })
  }

  let state: 'built' | 'starting' | 'running' | 'stopped' = 'built'
  let starting: Promise<void> | undefined
  let stopping: Promise<void> | undefined

  const start = async (): Promise<void> => {
    if (state === 'running') return
    if (state === 'stopped') throw new ReachError('RL-5007', { message: 'this node was stopped; build a new one' })
    starting ??= (async () => {
      state = 'starting'
      try {
        if (net.apiPort !== false) await notRunning(local.home)
        // The node holds the run database while it runs (a command that has it open is waited for).
        await step('opening the run database', async () => { await local.runs.open({ waitMs: RUN_DB_WAIT_MS }) }, async () => {})
        await step('opening the audit ledger', async () => {
          ledger = await AuditLedger.open({ path: join(local.home.root, AUDIT_DB), signer: createSigner(local.seed), clock, random, logger })
        }, async () => {
          const open = ledger
          ledger = undefined
          await open?.close()
        })
        await step('opening the peer store', async () => {
          peerstore = new LevelDatastore(join(local.home.root, PEERSTORE_DIR))
          await peerstore.open()
        }, async () => { await peerstore?.close() })
        host.addEventListener('peer:connect', onConnect as never)
        host.addEventListener('peer:disconnect', onDisconnect as never)
        host.addEventListener('peer:reconnect-failure', onReconnectFailure as never)
        await step(`listening on ${(net.listen ?? ['/ip4/127.0.0.1/tcp/0']).join(' ')}`, async () => { await host.start() }, async () => { await host.stop() })
        await step('the peer registry', async () => {}, async () => { await peers.stop() })
        await step('the pack exchange', async () => { await exchange.start() }, async () => { await exchange.stop() })
        await step('the delegator', async () => { await delegator.start() }, async () => { await delegator.stop() })
        await step('the delegation server', async () => { await server.start() }, async () => { await server.stop() })
        await step('the log server', async () => { await logs.start() }, async () => { await logs.stop() })
        await step('opening the witness store', async () => { witnessStore = await WitnessStore.open(join(local.home.root, WITNESS_DB)) }, async () => {
          const open = witnessStore
          witnessStore = undefined
          await open?.close()
        })
        await step('the witness', async () => { await witness.start() }, async () => { await witness.stop() })
        // The ledger's head, signed and gossiped when it grew: a node that rewrites its own
        // history is caught by the next witness that compares two heads (SPEC §10.8).
        let announcedSize = 0
        const announceLedger = async (): Promise<void> => {
          const l = ledger
          if (l === undefined || l.size() === announcedSize) return
          await l.flush()
          announcedSize = l.size()
          await witness.publishCheckpoint(await l.checkpoint())
        }
        ledgerTimer = setInterval(() => { announceLedger().catch((err: unknown) => { log.warn(`cannot announce the audit ledger's head: ${(err as Error).message}`) }) }, net.ledgerCheckpointMs ?? LEDGER_CHECKPOINT_MS)
        ledgerTimer.unref()
        stops.push({ what: 'the ledger announcements', stop: async () => { clearInterval(ledgerTimer) } })
        const bootstrap = net.bootstrap ?? []
        const silent = await dialBootstrap(host, bootstrap, lifetime.signal)
        for (const p of host.getPeers()) peers.connected(p.toString(), true)
        if (bootstrap.length > 0 && silent.length === bootstrap.length) log.warn(`none of the ${bootstrap.length} bootstrap peers answered (${silent.join(' ')}); retrying them with backoff, and other nodes can still dial this one`)
        else for (const addr of silent) log.warn(`bootstrap peer ${addr} did not answer; retrying it with backoff`)
        for (const addr of silent) retryBootstrap(addr)
        stops.push({ what: 'the bootstrap retries', stop: async () => { lifetime.abort() } })
        log.info(`peer ${self} listening on ${host.getMultiaddrs().map(String).join(' ')}`)


        // What this node published before a restart stays published.
        try {
          const saved = JSON.parse(await readFile(publishedPath, 'utf8')) as { version?: unknown, cids?: unknown }
          if (saved.version === 1 && Array.isArray(saved.cids)) void exchange.adopt(saved.cids.filter((c): c is string => typeof c === 'string'))
        } catch (err) {
          if (errno(err) !== 'ENOENT') log.warn(`published.json unreadable, starting with nothing published: ${(err as Error).message}`)
        }

        // Health: ping every connected peer now and then; the registry weighs failed pings.
        const pingEvery = net.pingIntervalMs ?? 10_000
        pinger = setInterval(() => {
          for (const peer of host.getPeers()) {
            host.services.ping.ping(peer, { signal: AbortSignal.timeout(2_000) })
              .then((ms) => { peers.recordPing(peer.toString(), ms) }, () => { peers.recordPing(peer.toString(), null) })
          }
          peers.save().catch(() => {})
        }, pingEvery)
        pinger.unref()
        stops.push({ what: 'the pinger', stop: async () => { clearInterval(pinger) } })

        if (net.apiPort !== false) {
          const routes = controlRoutes({ node: handle, savePublished, ...(ledger === undefined ? {} : { audit: ledger }) })
          const token = await ensureApiToken(join(local.home.root, TOKEN_FILE))
          await step('the control API', async () => {
            api = await startApi({ token, routes, metrics: async () => await metrics.text(), ...(typeof net.apiPort === 'number' ? { port: net.apiPort } : {}) })
          }, async () => { await api?.close() })
          endpoint = {
            version: 1,
            pid: process.pid,
            api: (api as ApiServer).url,
            peer_id: self,
            addrs: host.getMultiaddrs().map(String),
            federation,
            started_at: new Date(clock.now()).toISOString()
          }
          await writeEndpoint(local.home.root, endpoint)
          stops.push({ what: 'the endpoint file', stop: async () => { await removeEndpoint(local.home.root) } })
          log.info(`control API on ${(api as ApiServer).url} (token in ${join(local.home.root, TOKEN_FILE)})`)
        }
        // Runs a killed process left unfinished, with the tools a new run there gets: in the
        // background, once the node serves (a resumed run may take as long as any run), each
        // cancelled when the node stops, one that cannot resume named and left.
        const resuming = local.resumeUnfinished({
          toolsFor: (lineage) => lineage === undefined ? [] : toolsFor(lineageOf(lineage), lifetime.signal),
          signalFor: (lineage) => {
            const deadline = deadlineSignal(lineage, clock)
            return deadline === undefined ? lifetime.signal : AbortSignal.any([deadline, lifetime.signal])
          },
          onError: (runId, err) => { log.warn(`cannot resume unfinished run ${runId}: ${isReachError(err) ? `${err.code} ` : ''}${(err as Error).message}`) }
        }).then(
          (resumed) => { for (const r of resumed) log.info(`resumed unfinished run ${r.run_id}: ${r.status}`) },
          (err: unknown) => { log.warn(`resuming unfinished runs failed: ${(err as Error).message}`) }
        )
        stops.push({ what: 'the resumed runs', stop: async () => { lifetime.abort(new ReachError('RL-5007', { message: 'the node is stopping' })); await resuming } })
        state = 'running'
      } catch (err) {
        await unwind()
        await local.close()
        state = 'stopped'
        throw err
      }
    })()
    await starting
  }

  const stop = async (): Promise<void> => {
    stopping ??= (async () => {
      if (state === 'starting') await starting?.catch(() => {})
      host.removeEventListener('peer:connect', onConnect as never)
      host.removeEventListener('peer:disconnect', onDisconnect as never)
      await unwind()
      if (state === 'built') await Promise.resolve(host.stop()).catch(() => {})
      await local.close()
      state = 'stopped'
    })()
    await stopping
  }

  /** Everything started for the node's lifetime (bootstrap retries) stops with it. */
  const lifetime = new AbortController()
  /** Dial a bootstrap address that did not answer at start again, with host.ts's backoff, until it does once. */
  const retryBootstrap = (addr: string, attempt = 0): void => {
    if (lifetime.signal.aborted || attempt >= RECONNECT.retries) return
    const timer = setTimeout(() => {
      dialBootstrap(host, [addr], lifetime.signal).then((silent) => {
        if (silent.length === 0) log.info(`bootstrap peer ${addr} answered`)
        else retryBootstrap(addr, attempt + 1)
      }, () => {})
    }, RECONNECT.intervalMs * RECONNECT.factor ** attempt)
    timer.unref()
    lifetime.signal.addEventListener('abort', () => { clearTimeout(timer) }, { once: true })
  }

  const connect: NetworkServices['connect'] = async (addr, signal) => {
    let target: ReturnType<typeof multiaddr>
    try {
      target = multiaddr(addr)
    } catch (err) {
      throw new ReachError('RL-1011', { message: `not a multiaddr: ${addr}`, cause: err })
    }
    try {
      const connection = await host.dial(target, signal === undefined ? {} : { signal })
      return { peer: connection.remotePeer.toString(), addr: connection.remoteAddr.toString() }
    } catch (err) {
      if (isReachError(err)) throw err
      throw new ReachError('RL-4002', { message: `${addr} did not answer: ${((err as Error).message ?? String(err)).split('\n', 1)[0] as string}`, cause: err })
    }
  }

  const run: NetworkServices['run'] = async (request) => {
    const signal = request.signal ?? new AbortController().signal
    const r = await local.runPack({ ...request, signal, lineage: lineageJson(ROOT), extraTools: toolsFor(ROOT, signal) })
    announce(r)
    return r
  }

  const network: NetworkServices = {
    run,
    connect,
    host,
    federation,
    delegator,
    server,
    exchange,
    peers,
    logs,
    packs,
    metrics,
    witness,
    get witnessStore () { return witnessStore },
    get auditLedger () { return ledger },
    verify,
    get api () { return api },
    get endpoint () { return endpoint }
  }
  const handle: ReachNode & { network: NetworkServices } = { local, network, start, stop }
  return handle
}

/** RL-6005 when a node runs on this data dir (its endpoint file names a live process). */
async function notRunning (home: HomePaths): Promise<void> {
  const existing = await readEndpoint(home.root).catch(() => undefined)
  if (existing !== undefined) throw new ReachError('RL-6005', { message: `a node (pid ${existing.pid}) is already running on ${home.root}` })
}

/** A run's lineage deadline as a signal that aborts with RL-4008 then (resumed delegated runs). */
function deadlineSignal (lineage: JsonObject | undefined, clock: Clock): AbortSignal | undefined {
  const deadline = lineageOf(lineage).deadline
  if (deadline === undefined) return undefined
  const abort = new AbortController()
  const ms = deadline - clock.now()
  if (ms <= 0) abort.abort(new ReachError('RL-4008', { message: 'the delegation deadline passed while the node was down' }))
  else setTimeout(() => { abort.abort(new ReachError('RL-4008', { message: 'the delegation deadline passed' })) }, Math.min(ms, 2 ** 31 - 1)).unref()
  return abort.signal
}

