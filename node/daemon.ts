/**
 * The node daemon (`reach node start`): one process holding the data dir,
 * the libp2p host and every service, until SIGINT/SIGTERM.
 *
 *   LocalNode (policy, packs, runs, kv) ─┬─ PackExchange    /reach/pack/1.0.0 + DHT provide/find
 *                                        ├─ DelegationServer /reach/delegate/1.0.0 (runs for peers)
 *                                        ├─ serveLogs        /reach/log/1.0.0
 *   PeerRegistry (reputation, breakers) ─┴─ Delegator        (runs on peers; reach.delegate tool)
 *   control API on 127.0.0.1 (bearer token in <home>/api.token) + /metrics
 *
 * Start order: identity and data dir, unfinished runs resumed, host, services,
 * API, then the endpoint file the CLI finds the daemon by. Stop order is the
 * reverse; a second signal exits at once.
 */
import { readFile, stat } from 'node:fs/promises'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { ReachError, isReachError } from '../protocol/errors.ts'
import type { Budget } from '../packs/manifest.ts'
import { Delegator, DelegationServer, delegateTool, type Delegation, type Lineage } from '../federation/delegate.ts'
import { fetchLog, serveLogs, verifyRemoteRun, type RemoteVerdict } from '../federation/log.ts'
import { PackExchange } from '../federation/packs.ts'
import { PeerRegistry } from '../federation/peers.ts'
import { ensureApiToken, startApi, type ApiServer } from './api.ts'
import { readEndpoint, removeEndpoint, writeEndpoint, TOKEN_FILE, type Endpoint } from './api-client.ts'
import { createHost, parsePeerId, publicKeyOfPeer, type ReachHost } from './host.ts'
import { homePaths, type HomePaths } from './home.ts'
import { NodeMetrics } from './metrics.ts'
import { controlRoutes } from './routes.ts'
import { errno, writeFileAtomic } from './fs.ts'
import { LocalNode } from './node.ts'
import { openTrustRegistry } from './trust-registry.ts'
import { admitPack } from '../packs/policy.ts'
import { SIGS_SUFFIX, type StoredPack } from './pack-store.ts'

export interface DaemonOptions {
  home?: HomePaths
  listen?: string[]
  bootstrap?: string[]
  federation?: string
  apiPort?: number
  /** Delegations run at once, and waiting (RL-4007 past that). */
  maxConcurrent?: number
  maxQueue?: number
  /** How long a delegation stream may sit idle between requests before this node closes it. */
  delegateIdleMs?: number
  /** Breaker settings (tests use short ones). */
  breakerResetMs?: number
  breakerVolume?: number
  pingIntervalMs?: number
  log?: (line: string) => void
}

/** A running node, for the CLI (through its API) and for simulations and benchmarks (directly). */
export interface Daemon {
  readonly host: ReachHost
  readonly node: LocalNode
  readonly api: ApiServer
  readonly endpoint: Endpoint
  readonly delegator: Delegator
  readonly exchange: PackExchange
  readonly peers: PeerRegistry
  stop (): Promise<void>
}

function stamp (line: string): string {
  return `${new Date().toISOString()} ${line}`
}

export async function startDaemon (options: DaemonOptions = {}): Promise<Daemon> {
  const log = options.log ?? ((line: string) => process.stdout.write(stamp(line) + '\n'))
  const home = options.home ?? homePaths()
  const existing = await readEndpoint(home.root).catch(() => undefined)
  if (existing !== undefined) throw new ReachError('RL-6005', { message: `a node (pid ${existing.pid}) is already running on ${home.root}` })

  const node = await LocalNode.open({ home, keepKv: true, spareRuns: 2 })
  const metrics = new NodeMetrics()
  const federation = options.federation ?? 'default'
  let host: ReachHost | undefined
  const stops: Array<() => Promise<void>> = []
  try {
    // The node holds the run database while it runs (a command that has it open is waited for).
    await node.runs.open({ waitMs: 10_000 })
    const resumed = await node.resumeUnfinished()
    for (const r of resumed) log(`resumed unfinished run ${r.run_id}: ${r.status}`)

    host = await createHost({ seed: node.seed, ...(options.listen === undefined ? {} : { listen: options.listen }), ...(options.bootstrap === undefined ? {} : { bootstrap: options.bootstrap }) })
    const h = host
    stops.push(async () => { await h.stop() })
    log(`peer ${h.peerId.toString()} listening on ${h.getMultiaddrs().map(String).join(' ')}`)

    const breakers = new Map<string, string>()
    const peers = await PeerRegistry.open(join(home.root, 'peers.json'), {
      breaker: { resetTimeoutMs: options.breakerResetMs ?? 10_000, ...(options.breakerVolume === undefined ? {} : { volumeThreshold: options.breakerVolume }) },
      onChange: (peer, stats) => {
        metrics.breakerState.set({ peer }, stats.breaker === 'open' ? 2 : stats.breaker === 'half-open' ? 1 : 0)
        if ((breakers.get(peer) ?? 'closed') !== stats.breaker) metrics.breakerTransitions.inc({ state: stats.breaker })
        breakers.set(peer, stats.breaker)
      }
    })
    stops.push(async () => { await peers.close() })
    const onConnect = (e: CustomEvent): void => { peers.connected(String(e.detail), true); metrics.peersConnected.set(h.getPeers().length) }
    const onDisconnect = (e: CustomEvent): void => { peers.connected(String(e.detail), false); metrics.peersConnected.set(h.getPeers().length) }
    h.addEventListener('peer:connect', onConnect as never)
    h.addEventListener('peer:disconnect', onDisconnect as never)
    for (const p of h.getPeers()) peers.connected(p.toString(), true)

    // The registry the exchange admits fetched packs with; fetchAdmitted re-reads it when the
    // file changes (`reach trust add` edits it while we run).
    let registry = await openTrustRegistry(home.trust)
    const exchange = new PackExchange({
      host: h,
      packs: node.packs,
      admit: (pack) => { admitPack({ ...pack, registry, policy: node.policy }) },
      metrics: { packFetches: metrics.packFetches, dhtOperations: metrics.dhtOperations },
      log
    })
    // Every delegation admits its pack. Admission is a function of the pack (fixed by its CID),
    // its signatures, the trust registry and the policy (fixed while the node runs), so the
    // verdict is kept until the signatures or the registry file change (`reach pack sign` and
    // `reach trust add` edit them while we run). A stat takes microseconds; through the thread
    // pool it cost a delegation more in waiting than in work.
    let registryStamp = ''
    const packCache = new Map<string, { pack: StoredPack, stamp: string, admittedWith: string }>()
    const stampOf = (path: string): string => {
      const s = statSync(path, { throwIfNoEntry: false })
      return s === undefined ? 'missing' : `${s.mtimeMs}:${s.size}`
    }
    /** A pack from the store, or fetched from providers (verified and admitted before it is stored); admitted either way. */
    const fetchAdmitted = async (cid: string, signal?: AbortSignal, timeoutMs?: number): Promise<StoredPack & { provider?: string | null, tried?: Array<{ peer: string, code: string }> }> => {
      const trustStamp = stampOf(home.trust)
      if (trustStamp !== registryStamp) {
        registry = await openTrustRegistry(home.trust)
        registryStamp = trustStamp
      }
      const sigsStamp = stampOf(join(home.packs, cid + SIGS_SUFFIX))
      const cached = packCache.get(cid)
      if (cached !== undefined && cached.stamp === sigsStamp) {
        if (cached.admittedWith !== registryStamp) {
          admitPack({ ...cached.pack, registry, policy: node.policy })
          cached.admittedWith = registryStamp
        }
        return cached.pack
      }
      if (await node.packs.has(cid)) {
        const pack = await node.packs.get(cid)
        admitPack({ ...pack, registry, policy: node.policy })
        if (packCache.size >= 64) packCache.delete(packCache.keys().next().value as string)
        packCache.set(cid, { pack, stamp: sigsStamp, admittedWith: registryStamp })
        return pack
      }
      const r = await exchange.fetch(cid, { ...(signal === undefined ? {} : { signal }), ...(timeoutMs === undefined ? {} : { timeoutMs }) })
      return Object.assign(r.pack, { provider: r.provider, tried: r.tried })
    }
    await exchange.start()
    stops.push(async () => { await exchange.stop() })
    // What this node published before a restart stays published.
    const publishedPath = join(home.root, 'published.json')
    const savePublished = async (): Promise<void> => { await writeFileAtomic(publishedPath, JSON.stringify({ version: 1, cids: exchange.published() }) + '\n', 0o600) }
    try {
      const saved = JSON.parse(await readFile(publishedPath, 'utf8')) as { version?: unknown, cids?: unknown }
      if (saved.version === 1 && Array.isArray(saved.cids)) void exchange.adopt(saved.cids.filter((c): c is string => typeof c === 'string'))
    } catch (err) {
      if (errno(err) !== 'ENOENT') log(`published.json unreadable, starting with nothing published: ${(err as Error).message}`)
    }

    const delegator = new Delegator({
      host: h,
      seed: node.seed,
      peers,
      onOutcome: (outcome, seconds) => { metrics.delegations.inc({ outcome }); metrics.delegationSeconds.observe(seconds) },
      onRetry: () => { metrics.delegationRetries.inc() },
      log
    })
    const toolsFor = (lineage: Lineage, budget: Budget, signal: AbortSignal) => [delegateTool(delegator, lineage, budget, signal)]
    const server = new DelegationServer({
      host: h,
      node,
      getPack: async (cid, signal, timeoutMs) => await fetchAdmitted(cid, signal, Math.min(timeoutMs, 15_000)),
      toolsFor,
      ...(options.maxConcurrent === undefined ? {} : { maxConcurrent: options.maxConcurrent }),
      ...(options.maxQueue === undefined ? {} : { maxQueue: options.maxQueue }),
      ...(options.delegateIdleMs === undefined ? {} : { idleMs: options.delegateIdleMs }),
      onServed: (outcome) => { metrics.delegationsServed.inc({ outcome }); if (outcome === 'completed' || outcome === 'failed' || outcome === 'cancelled') metrics.runs.inc({ status: outcome }) },
      log
    })
    await server.start()
    stops.push(async () => { await server.stop() })
    const stopLogs = await serveLogs({ host: h, runs: node.runs, log })
    stops.push(stopLogs)

    // Health: ping every connected peer now and then; the registry weighs failed pings.
    const pingEvery = options.pingIntervalMs ?? 10_000
    const pinger = setInterval(() => {
      for (const peer of h.getPeers()) {
        h.services.ping.ping(peer, { signal: AbortSignal.timeout(2_000) })
          .then((ms) => { peers.recordPing(peer.toString(), ms) }, () => { peers.recordPing(peer.toString(), null) })
      }
      peers.save().catch(() => {})
    }, pingEvery)
    pinger.unref()
    stops.push(async () => { clearInterval(pinger) })

    /** Fetch a peer's log of a run and replay it here; a log that does not check out, or does not replay, costs the peer reputation. */
    const verify = async (peer: string, runId: string, claim: Partial<Pick<Delegation, 'pack_cid' | 'log_head' | 'record'>>, signal?: AbortSignal): Promise<RemoteVerdict> => {
      const fetched = await fetchLog(h, parsePeerId(peer), runId, publicKeyOfPeer(peer), signal === undefined ? {} : { signal })
      const pack = await fetchAdmitted(claim.pack_cid ?? fetched.pack_cid, signal)
      let verdict: RemoteVerdict
      try {
        verdict = await verifyRemoteRun(fetched, pack, { ...(claim.log_head === undefined ? {} : { head: claim.log_head }), ...(claim.record === undefined ? {} : { record: claim.record }) })
      } catch (err) {
        if (isReachError(err) && (err.code === 'RL-4014' || err.code.startsWith('RL-2'))) peers.recordVerificationFailure(peer)
        throw err
      }
      if (!verdict.verified) peers.recordVerificationFailure(peer)
      return verdict
    }

    const routes = controlRoutes({ host: h, node, delegator, server, exchange, peers, metrics, federation, fetchAdmitted, verify, savePublished, toolsFor })
    const token = await ensureApiToken(join(home.root, TOKEN_FILE))
    const api = await startApi({ token, routes, metrics: async () => await metrics.text(), ...(options.apiPort === undefined ? {} : { port: options.apiPort }) })
    stops.push(async () => { await api.close() })

    const endpoint: Endpoint = {
      version: 1,
      pid: process.pid,
      api: api.url,
      peer_id: h.peerId.toString(),
      addrs: h.getMultiaddrs().map(String),
      federation,
      started_at: new Date().toISOString()
    }
    await writeEndpoint(home.root, endpoint)
    stops.push(async () => { await removeEndpoint(home.root) })
    log(`control API on ${api.url} (token in ${join(home.root, TOKEN_FILE)})`)

    let stopping: Promise<void> | undefined
    const stop = async (): Promise<void> => {
      stopping ??= (async () => {
        for (const s of stops.reverse()) await s().catch((err) => { log(`shutdown: ${(err as Error).message}`) })
        await node.close()
      })()
      await stopping
    }
    return { host: h, node, api, endpoint, delegator, exchange, peers, stop }
  } catch (err) {
    for (const s of stops.reverse()) await s().catch(() => {})
    await node.close()
    throw isReachError(err) ? err : new ReachError('RL-4002', { message: `node failed to start: ${(err as Error).message}`, cause: err })
  }
}

/** Run the daemon in the foreground until SIGINT/SIGTERM; resolves when it has stopped. */
export async function runDaemon (options: DaemonOptions = {}): Promise<void> {
  const d = await startDaemon(options)
  const log = options.log ?? ((line: string) => process.stdout.write(stamp(line) + '\n'))
  log(`ready; other nodes join with: reach node start --bootstrap ${d.endpoint.addrs[0] ?? '<address>'}`)
  await new Promise<void>((resolve) => {
    let signals = 0
    const onSignal = (signal: string): void => {
      signals++
      if (signals > 1) process.exit(130)
      log(`${signal}: shutting down`)
      d.stop().then(() => { log('stopped'); resolve() }, (err) => { log(`shutdown failed: ${(err as Error).message}`); resolve() })
    }
    process.once('SIGINT', () => { onSignal('SIGINT') })
    process.once('SIGTERM', () => { onSignal('SIGTERM') })
  })
}
