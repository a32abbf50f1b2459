/**
 * The mesh commands: `reach init` (node identity), `reach node start|status`,
 * `reach peers`, `reach pack publish|fetch`, `reach delegate`, `reach cancel`,
 * `reach verify-remote`.
 *
 * `node start` runs the daemon in the foreground; every other command here
 * talks to that daemon through its control API (node/api-client.ts), so they
 * start as fast as any offline command and never load libp2p themselves.
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { JsonObject } from '../../../protocol/canonical.ts'
import { ReachError } from '../../../protocol/errors.ts'
import { keyPairFromSeed } from '../../../protocol/keys.ts'
import { peerIdOfPublicKey } from '../../../protocol/peer-id.ts'
import { ensureHome, homePaths } from '../../home.ts'
import type { Report } from '../io.ts'
import { parseJsonOption, parseObjectOption, short } from '../io.ts'

type Delegated = { seq: number, peer: string, run_id: string }

/** A verified run's delegated results rest on their peers' signatures: say so, and how to check them. */
function delegatedNote (delegated: Delegated[] | undefined): string {
  if (delegated === undefined || delegated.length === 0) return ''
  return `; ${delegated.length} delegated result(s) checked against their peers' signatures, not replayed here: ${delegated.map((d) => `reach verify-remote ${d.peer} ${d.run_id}`).join('; ')}`
}

/** How long a delegation runs before `reach delegate` says how to cancel it. */
const CANCEL_HINT_MS = 300

async function api<T = Record<string, unknown>> (method: 'GET' | 'POST', path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  const { callApi } = await import('../../api-client.ts')
  return await callApi<T>(homePaths().root, method, path, body, signal === undefined ? {} : { signal, timeoutMs: 24 * 3600_000 })
}

/** `reach init` without --log-path: the node's identity (its libp2p PeerId), config and data dir. */
export async function initNode (opts: Record<string, unknown> = {}): Promise<Report> {
  const home = await ensureHome(homePaths())
  const { nodeSeed } = await import('../../node.ts')
  const seed = await nodeSeed(home)
  const { pinListenPorts, readConfig, writeConfig } = await import('../../config.ts')
  const config = await readConfig(home.root)
  const bootstrap = list(opts, 'bootstrap')
  await writeConfig(home.root, {
    ...config,
    ...(typeof opts.federation === 'string' ? { federation: opts.federation } : {}),
    // The port is chosen once, here: the node listens on it at every start.
    listen: await pinListenPorts(list(opts, 'listen') ?? config.listen),
    ...(bootstrap === undefined ? {} : { bootstrap })
  })
  const { ensureApiToken } = await import('../../api.ts')
  await ensureApiToken(join(home.root, 'api.token'))
  const publicKey = keyPairFromSeed(seed).publicKey
  // The node key is the PeerId (SPEC §10.2).
  const peerId = peerIdOfPublicKey(publicKey)
  const saved = await readConfig(home.root)
  return {
    human: [`Data dir: ${home.root}`, `Node key: ${home.nodeKey} (0600)`, `Peer id: ${peerId.toString()}`, `Public key: ${publicKey}`, `Federation: ${saved.federation}; listen ${saved.listen.join(' ')}; bootstrap ${saved.bootstrap.length === 0 ? '(none)' : saved.bootstrap.join(' ')}`, 'Start it: reach node start'],
    json: { home: home.root, peer_id: peerId.toString(), public_key: publicKey, config: saved }
  }
}

function list (opts: Record<string, unknown>, name: string): string[] | undefined {
  const v = opts[name]
  if (v === undefined) return undefined
  return (Array.isArray(v) ? v : [v]).flatMap((s) => String(s).split(',')).map((s) => s.trim()).filter((s) => s !== '')
}

export async function nodeStart (opts: Record<string, unknown>): Promise<Report | undefined> {
  const { runDaemon } = await import('../../daemon.ts')
  const { pinListenPorts, readConfig, writeConfig } = await import('../../config.ts')
  // Flags win over the config written by `reach init`.
  // Checked (RL-1014) before its config is read or written.
  const root = (await ensureHome()).root
  let config = await readConfig(root)
  const flagListen = list(opts, 'listen')
  if (flagListen === undefined) {
    // A data dir from before ports were kept: the port chosen now is kept from now on. With
    // --listen the config's addresses are not used, so neither probed nor rewritten.
    const pinned = await pinListenPorts(config.listen)
    if (pinned.join() !== config.listen.join()) {
      config = { ...config, listen: pinned }
      await writeConfig(root, config)
    }
  }
  const listen = flagListen ?? config.listen
  const bootstrap = list(opts, 'bootstrap') ?? config.bootstrap
  opts.federation ??= config.federation
  const apiPort = opts.apiPort === undefined ? undefined : Number(opts.apiPort)
  if (apiPort !== undefined && (!Number.isInteger(apiPort) || apiPort < 0 || apiPort > 65535)) throw new ReachError('RL-1011', { message: '--api-port must be a port number' })
  await runDaemon({
    ...(listen === undefined ? {} : { listen }),
    ...(bootstrap === undefined ? {} : { bootstrap }),
    ...(typeof opts.federation === 'string' ? { federation: opts.federation } : {}),
    ...(apiPort === undefined ? {} : { apiPort }),
    // Operator knobs without a flag yet (tests and simulations use short breakers).
    ...(process.env.REACH_BREAKER_RESET_MS === undefined ? {} : { breakerResetMs: Number(process.env.REACH_BREAKER_RESET_MS) }),
    ...(process.env.REACH_BREAKER_VOLUME === undefined ? {} : { breakerVolume: Number(process.env.REACH_BREAKER_VOLUME) }),
    ...(process.env.REACH_MAX_CONCURRENT === undefined ? {} : { maxConcurrent: Number(process.env.REACH_MAX_CONCURRENT) }),
    ...(process.env.REACH_MAX_QUEUE === undefined ? {} : { maxQueue: Number(process.env.REACH_MAX_QUEUE) })
  })
  return undefined
}

export async function nodeStatus (): Promise<Report> {
  const s = await api<Record<string, unknown>>('GET', '/v1/status')
  const d = s.delegations as { outgoing: number, serving: number }
  return {
    human: [
      `Node ${String(s.peer_id)} (federation ${String(s.federation)}), up ${String(s.uptime_s)} s`,
      `Listening: ${(s.addrs as string[]).join(' ')}`,
      `Peers connected: ${String(s.peers_connected)}; delegations: ${d.outgoing} outgoing, ${d.serving} serving`
    ],
    json: s
  }
}

export async function peers (): Promise<Report> {
  const r = await api<{ peers: Array<Record<string, unknown>>, connected: string[] }>('GET', '/v1/peers')
  const rows = r.peers.map((p) => `${String(p.peer)}  ${p.connected === true ? 'connected   ' : 'disconnected'}  breaker ${String(p.breaker).padEnd(9)}  ok ${String(p.successes)}  failed ${String(p.failures)}  bad results ${String(p.verification_failures)}  score ${Number(p.score).toFixed(3)}`)
  return { human: rows.length === 0 ? ['No peers known yet'] : rows, json: r }
}

export async function peersConnect (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const r = await api<{ peer: string, addr: string }>('POST', '/v1/peers/connect', { addr: args[0] })
  return { human: [`Connected to ${r.peer} at ${r.addr}; it is remembered and redialled after restarts`], json: r }
}

export async function packPublish (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const r = await api<{ cid: string, provide_ms: number }>('POST', '/v1/packs/publish', { pack: args[0] })
  return { human: [`Published ${r.cid} on the DHT (provide took ${Math.round(r.provide_ms)} ms)`], json: r }
}

export async function packFetch (opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const r = await api<{ cid: string, name: string, version: string, provider: string | null, tried: Array<{ peer: string, code: string }> }>('POST', '/v1/packs/fetch', { cid: args[0], ...(opts.timeout === undefined ? {} : { timeout_ms: Number(opts.timeout) }) })
  const skipped = r.tried.map((t) => `  skipped ${t.peer}: ${t.code}`)
  return { human: [r.provider === null ? `${r.cid} (${r.name}@${r.version}) was already here` : `Fetched ${r.name}@${r.version} ${r.cid} from ${r.provider}; CID, signature and policy checked`, ...skipped], json: r }
}

export async function delegate (opts: Record<string, unknown>, io: { json: boolean }, args: string[]): Promise<Report> {
  const input = parseJsonOption((opts.input as string | undefined) ?? 'null', '--input')
  const budget = opts.budget === undefined ? undefined : parseObjectOption(opts.budget as string, '--budget')
  const delegationId = randomBytes(16).toString('hex')
  // No running node: say so before anything else.
  await (await import('../../api-client.ts')).readEndpoint(homePaths().root)
  // The id (for `reach cancel`) is said once the delegation is under way for a moment: a request
  // the node refuses (a bad peer id, say) or a quick answer needs no way to cancel it.
  const hint = io.json ? undefined : setTimeout(() => { process.stderr.write(`Delegation ${delegationId} (Ctrl-C or \`reach cancel ${delegationId}\` to cancel)\n`) }, CANCEL_HINT_MS)
  // Ctrl-C closes the request; the daemon sees its client go and cancels the remote run.
  const abort = new AbortController()
  const onSigint = (): void => { abort.abort(new ReachError('RL-4015', { message: 'cancelled (Ctrl-C)' })) }
  process.once('SIGINT', onSigint)
  try {
    const r = await api<{ delegation: Record<string, unknown> & { record: JsonObject }, verification?: { verified: boolean, divergence?: { seq: number, code: string, reason: string }, delegated?: Delegated[] } }>('POST', '/v1/delegate', {
      pack: args[0],
      input,
      delegation_id: delegationId,
      ...(budget === undefined ? {} : { budget }),
      ...(typeof opts.peer === 'string' ? { peer: opts.peer } : {}),
      ...(opts.timeout === undefined ? {} : { timeout_ms: Number(opts.timeout) }),
      ...(opts.verify === true ? { verify: true } : {})
    }, abort.signal)
    const d = r.delegation
    const human = [
      `Delegation ${String(d.delegation_id)}: ${String(d.status).toUpperCase()} on ${String(d.peer)}`,
      ...(d.output === undefined ? [] : [`Output: ${JSON.stringify(d.output)}`]),
      ...(d.error === undefined ? [] : [`Error: ${JSON.stringify(d.error)}`]),
      `Run ${String(d.run_id)}, fingerprint ${short(String(d.record.fingerprint))}, signed checkpoint by the peer verified`
    ]
    const attempts = d.attempts as Array<{ peer: string, code: string }>
    for (const a of attempts) human.push(`  retried after ${a.peer}: ${a.code}`)
    if (r.verification !== undefined) {
      human.push(r.verification.verified ? `REPLAY_VERIFIED (log fetched from the peer and replayed here)${delegatedNote(r.verification.delegated)}` : `REPLAY_DIVERGED at seq ${r.verification.divergence?.seq ?? '?'} (RL-4018, ${r.verification.divergence?.code ?? 'RL-3017'}): ${r.verification.divergence?.reason ?? ''}`)
    }
    const failed = d.status !== 'completed' || r.verification?.verified === false
    const diverged = r.verification?.verified === false ? { error: { code: 'RL-4018', message: `the fetched log does not replay: ${r.verification.divergence?.reason ?? ''}`, seq: r.verification.divergence?.seq } } : {}
    return { human, json: { ...r, ...diverged }, ...(failed ? { exitCode: 1 } : {}) }
  } catch (err) {
    if (abort.signal.aborted) throw abort.signal.reason
    throw err
  } finally {
    clearTimeout(hint)
    process.off('SIGINT', onSigint)
  }
}

export async function cancel (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const r = await api('POST', `/v1/delegations/${encodeURIComponent(args[0] as string)}/cancel`)
  return { human: [`Cancelled ${args[0] as string}`], json: r }
}

export async function verifyRemote (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const r = await api<{ verified: boolean, divergence?: { seq: number, code: string, reason: string }, delegated?: Delegated[], record: JsonObject, receipt?: { checkpoint_id: string }, pack_trusted?: boolean }>('POST', '/v1/verify-remote', { peer: args[0], run_id: args[1] })
  return {
    human: [
      r.verified ? `REPLAY_VERIFIED${delegatedNote(r.delegated)}` : `REPLAY_DIVERGED at seq ${r.divergence?.seq ?? '?'} (RL-4018, ${r.divergence?.code ?? 'RL-3017'}): ${r.divergence?.reason ?? ''}`,
      `Fingerprint: ${String(r.record.fingerprint)}`,
      ...(r.pack_trusted === false ? [`Pack ${String(r.record.artifact_hash)}: its publisher is not trusted here; replayed to verify only (this node would not run it)`] : []),
      ...(r.receipt === undefined ? [] : [`Receipt: signed by this node for checkpoint ${r.receipt.checkpoint_id} (in --json)`])
    ],
    json: { ...r, ...(r.verified ? {} : { error: { code: 'RL-4018', message: `the fetched log does not replay: ${r.divergence?.reason ?? ''}`, seq: r.divergence?.seq } }) },
    ...(r.verified ? {} : { exitCode: 1 })
  }
}

/**
 * `reach demo --mesh`: zero-config, three nodes on this machine (temporary data dirs, real
 * libp2p over loopback). A publishes the signed counter pack on the DHT; C fetches it through the
 * DHT; A delegates a run to B, checks B's signed result, fetches B's log and replays it here.
 */
export async function demoMesh (): Promise<Report> {
  const { mkdtemp, mkdir, rm, writeFile } = await import('node:fs/promises')
  const os = await import('node:os')
  const { fileURLToPath } = await import('node:url')
  const { createSigner, generateKeyPair } = await import('../../../protocol/keys.ts')
  const { buildBundle } = await import('../../../packs/bundle.ts')
  const { signPack } = await import('../../../packs/trust.ts')
  const { createNode } = await import('../../create.ts')
  const { silentLogger } = await import('../../logger.ts')
  type MeshNode = Awaited<ReturnType<typeof createNode>> & { network: NonNullable<Awaited<ReturnType<typeof createNode>>['network']> }
  const root = await mkdtemp(join(os.tmpdir(), 'reach-demo-mesh-'))
  const publisher = generateKeyPair()
  const trust = JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'demo publisher', added_at: new Date().toISOString() }] })
  const nodes: MeshNode[] = []
  try {
    // Three whole nodes in this process, built by the composition root (no control API: nothing outside asks them).
    const start = async (name: string, bootstrap?: string): Promise<MeshNode> => {
      const home = homePaths(join(root, name))
      await mkdir(home.root, { recursive: true, mode: 0o700 })
      await writeFile(home.trust, trust, { mode: 0o600 })
      const n = await createNode({ home, logger: silentLogger, network: { apiPort: false, ...(bootstrap === undefined ? {} : { bootstrap: [bootstrap] }) } }) as MeshNode
      nodes.push(n)
      await n.start()
      return n
    }
    const addr = (n: MeshNode): string => n.network.host.getMultiaddrs()[0]?.toString() ?? ''
    const a = await start('a')
    const b = await start('b', addr(a))
    const c = await start('c', addr(a))
    const built = await buildBundle(fileURLToPath(new URL('../../../packs/examples/counter', import.meta.url)))
    const signature = signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))
    await a.local.packs.put(built.bytes, [signature])
    const published = await a.network.exchange.publish(built.cid)
    const fetched = await c.network.exchange.fetch(built.cid)
    const peer = b.network.host.peerId.toString()
    const input = { numbers: [3, 1, 4, 1, 5, 9, 2, 6] }
    const d = await a.network.delegator.delegate({ pack_cid: built.cid, input, peer })
    const verdict = await a.network.verify(peer, d.run_id, { pack_cid: built.cid, head: d.log_head, record: d.record })
    const name = (n: MeshNode): string => n.network.host.peerId.toString()
    return {
      human: [
        `Three nodes on loopback (data dirs under ${root}, removed afterwards):`,
        `  A ${name(a)}`, `  B ${name(b)}`, `  C ${name(c)}`,
        `A published counter ${built.cid} on the DHT (${Math.round(published.provide_ms)} ms)`,
        `C fetched it through the DHT from ${fetched.provider ?? '(local)'}: CID, signature and policy checked`,
        `A delegated a run to B (B fetched the pack it lacked the same way): ${d.status.toUpperCase()}`,
        `Output: ${JSON.stringify(d.output)}`,
        'B\'s signed checkpoint checked against B\'s peer id; B\'s log streamed to A and replayed there:',
        verdict.verified ? 'REPLAY_VERIFIED' : `REPLAY_DIVERGED at seq ${verdict.divergence?.seq ?? '?'} (${verdict.divergence?.code ?? 'RL-4018'})`,
        `Fingerprint: ${verdict.record.fingerprint}`
      ],
      json: { nodes: nodes.map((n) => name(n)), pack: built.cid, fetched_from: fetched.provider, delegation: d, verified: verdict.verified },
      ...(verdict.verified && d.status === 'completed' ? {} : { exitCode: 1 })
    }
  } finally {
    for (const n of nodes.reverse()) await n.stop().catch(() => {})
    await rm(root, { recursive: true, force: true })
  }
}
