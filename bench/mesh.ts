/**
 * `npm run bench:mesh` — the mesh node's figures, each beside a baseline
 * measured in the same run, with real libp2p over TCP loopback:
 *
 *   delegation round trip of a trivial pack to a warm peer running in its own
 *     process (p50, p99), on the stream the last delegation left open, vs a raw
 *     libp2p request/response on a kept stream of the same connection (32
 *     bytes each way on a ping stream left open), and vs a libp2p ping (a new
 *     stream per ping); the same on a new delegation stream; and the round
 *     trip in the first rounds after the peer starts, before it is warm
 *   cold pack fetch through the DHT among 20 nodes (find providers, fetch,
 *     re-hash, check signature and policy, store), p50
 *   delegations/s sustained across 5 nodes, and that no run was lost: every
 *     delegation that completed names a run its peer has on disk
 *
 * The round-trip peer is a `reach node start` child process; the other nodes
 * run in this process, each with its own data dir. Options: --quick, --json.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { byteStream, type ByteStream } from '@libp2p/utils'
import { createSigner, generateKeyPair } from '../protocol/keys.ts'
import { buildBundle, encodeBundle } from '../packs/bundle.ts'
import { signPack } from '../packs/trust.ts'
import { startDaemon, type Daemon } from '../node/daemon.ts'
import { homePaths } from '../node/home.ts'
import { openPackStore } from '../node/pack-store.ts'
import type { PackExchange } from '../federation/pack-exchange.ts'
import { createNode, type ReachNode } from '../node/create.ts'
import { silentLogger } from '../node/logger.ts'
import { median, percentile, report, startChildNode, type Figure } from './report.ts'

const { values: args } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' } } })
const quick = args.quick === true
const RTT_SAMPLES = quick ? 100 : 400
/**
 * Rounds before the round trip is measured. The first COLD_ROUNDS of them are reported as such,
 * and rounds OLD_FROM to OLD_FROM + RTT_SAMPLES as the figure was measured before the warm-up
 * (from the 21st delegation after start), for comparison in the same run.
 */
const WARMUP_ROUNDS = 1000
const COLD_ROUNDS = 100
const OLD_FROM = 20
/** A kept or new-stream exchange that takes longer than this has stalled: the bench stops. */
const EXCHANGE_TIMEOUT_MS = 10_000
const FETCH_NODES = 20
const FETCHES = quick ? 10 : 30
const THROUGHPUT_MS = quick ? 5_000 : 15_000
const figures: Figure[] = []
const root = await mkdtemp(join(os.tmpdir(), 'reach-bench-mesh-'))
const COUNTER = fileURLToPath(new URL('../packs/examples/counter', import.meta.url))
const BIN = fileURLToPath(new URL('../node/cli/bin.js', import.meta.url))
const publisher = generateKeyPair()
const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const quiet = (): void => {}

const trustFile = JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'bench', added_at: '2026-01-01T00:00:00.000Z' }] })

async function daemon (name: string, bootstrap?: string, options: { pingIntervalMs?: number } = {}): Promise<Daemon> {
  const dir = join(root, name)
  const home = homePaths(dir)
  await mkdir(dir, { recursive: true })
  await writeFile(home.policy, JSON.stringify({ version: 1 }))
  await writeFile(home.trust, trustFile)
  return await startDaemon({ home, log: quiet, maxConcurrent: 4, maxQueue: 64, ...options, ...(bootstrap === undefined ? {} : { bootstrap: [bootstrap] }) })
}

async function signedCounterIn (packsDir: string): Promise<string> {
  const built = await buildBundle(COUNTER)
  const sig = signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))
  await openPackStore(packsDir).put(built.bytes, [sig])
  return built.cid
}

async function signedCounter (d: Daemon): Promise<string> {
  return await signedCounterIn(d.node.packs.dir)
}

const stops: Array<() => Promise<void>> = []
try {
  // --- delegation round trip to a warm peer in its own process (as deployed), beside a raw
  // libp2p request/response on a kept stream and a ping (a new stream) on the same connection
  const peerHome = homePaths(join(root, 'rtt-b'))
  await mkdir(peerHome.root, { recursive: true })
  await writeFile(peerHome.trust, trustFile)
  const cid = await signedCounterIn(peerHome.packs)
  const peerNode = await startChildNode(BIN, peerHome.root)
  stops.push(peerNode.stop)
  const endpoint = peerNode.endpoint
  // No health pings from the client during the measurement: they would take the peer's second
  // inbound ping stream (the kept exchange holds one) and land in the timings.
  const a = await daemon('rtt-a', endpoint.addrs[0], { pingIntervalMs: 3_600_000 })
  stops.push(a.stop)
  const peer = endpoint.peer_id
  const peerId = peerIdFromString(peer)
  const delegate = async (): Promise<number> => {
    const t = performance.now()
    const d = await a.delegator.delegate({ pack_cid: cid, input: { numbers: [1, 2, 3] }, peer })
    if (d.status !== 'completed') throw new Error(`bench delegation ${d.status}`)
    return performance.now() - t
  }
  // A raw request/response on a kept stream: 32 bytes each way on a ping stream left open (the
  // ping protocol echoes until the stream closes). The peer ends a ping stream 10 s after it
  // opened, so the bench opens a new one every 5 s, outside the timed part.
  let echo: { bytes: ByteStream<Stream>, stream: Stream, opened: number } | undefined
  const keptExchange = async (): Promise<number> => {
    if (echo === undefined || performance.now() - echo.opened > 5_000) {
      await echo?.stream.close()
      const stream = await a.host.dialProtocol(peerId, PING_PROTOCOL, { signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS) })
      echo = { bytes: byteStream(stream), stream, opened: performance.now() }
    }
    const out = randomBytes(32)
    const signal = AbortSignal.timeout(EXCHANGE_TIMEOUT_MS)
    const t = performance.now()
    await echo.bytes.write(out, { signal })
    const back = await echo.bytes.read({ bytes: 32, signal })
    const ms = performance.now() - t
    if (!Buffer.from(back.subarray()).equals(out)) throw new Error('bench: the ping stream echoed other bytes')
    return ms
  }
  // One round: a ping (new stream), a raw exchange on the kept ping stream, a delegation on the
  // kept delegation stream, and every fourth round a delegation on a new stream (set-up and
  // protocol negotiation included). The ping goes first: the peer finishes a delegation's work
  // (sealing, closing the log, resetting the sandbox) after its result has gone, and an exchange
  // timed right after a delegation measured that work too (0.46 ms instead of 0.25 here).
  const round = async (i: number, into: { raw: number[], kept: number[], rtt: number[], fresh: number[] }): Promise<void> => {
    const t = performance.now()
    await a.host.services.ping.ping(peerId, { signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS) })
    into.raw.push(performance.now() - t)
    into.kept.push(await keptExchange())
    into.rtt.push(await delegate())
    if (i % 4 === 3) {
      a.delegator.dropIdle(peer)
      into.fresh.push(await delegate())
    }
  }
  // Warm: both processes run the same rounds first, until V8 has compiled the hot paths (the
  // round trip falls for the first few hundred rounds after start, then holds). The first
  // rounds, and the window the bench used to measure, are reported on their own.
  const samples = (): { raw: number[], kept: number[], rtt: number[], fresh: number[] } => ({ raw: [], kept: [], rtt: [], fresh: [] })
  const cold = samples()
  const old: number[] = []
  const warming = samples()
  for (let i = 0; i < WARMUP_ROUNDS; i++) {
    const into = i < COLD_ROUNDS ? cold : warming
    await round(i, into)
    if (i >= OLD_FROM && i < OLD_FROM + RTT_SAMPLES) old.push(into.rtt.at(-1) as number)
  }
  const { raw, kept, rtt, fresh } = samples()
  for (let i = 0; i < RTT_SAMPLES; i++) await round(i, { raw, kept, rtt, fresh })
  // Both baselines were measured on the connection the delegations used.
  if (a.host.getConnections(peerId).length !== 1) throw new Error('bench: more than one connection to the peer')
  await echo?.stream.close()
  const rawP50 = median(raw)
  figures.push({ name: `delegation round trip, trivial pack, warm peer in its own process (kept stream), p50 of ${RTT_SAMPLES}`, value: median(rtt), unit: 'ms', lowerIsBetter: true, baseline: 'raw libp2p request/response on a kept stream (32 bytes each way, ping protocol) on the same connection, p50', baselineValue: median(kept), bar: '<= 3.5 ms p50', pass: median(rtt) <= 3.5 })
  figures.push({ name: 'delegation round trip, p99', value: percentile(rtt, 99), unit: 'ms', lowerIsBetter: true, baseline: 'raw libp2p kept-stream p99', baselineValue: percentile(kept, 99) })
  figures.push({ name: 'the same round trip against a libp2p ping (a new stream per ping), p50', value: median(rtt), unit: 'ms', lowerIsBetter: true, baseline: 'ping p50', baselineValue: rawP50 })
  figures.push({ name: `delegation round trip in the first ${COLD_ROUNDS} rounds after start (not yet warm), p50`, value: median(cold.rtt), unit: 'ms', lowerIsBetter: true, baseline: 'raw kept-stream p50 in those rounds', baselineValue: median(cold.kept), bar: '<= 3.5 ms p50 (the warm peer\'s bar, for comparison)', pass: median(cold.rtt) <= 3.5 })
  figures.push({ name: `the first delegation after start (new stream, first run of the pack) / p90 of the first ${COLD_ROUNDS} rounds`, value: cold.rtt[0] as number, unit: 'ms', lowerIsBetter: true, baseline: `p90 of the first ${COLD_ROUNDS}`, baselineValue: percentile(cold.rtt, 90) })
  figures.push({ name: `the round trip as measured before the warm-up was added (rounds ${OLD_FROM + 1}-${OLD_FROM + RTT_SAMPLES} after start), p50`, value: median(old), unit: 'ms', lowerIsBetter: true, baseline: 'the warm figure above', baselineValue: median(rtt) })
  figures.push({ name: `delegation round trip on a new stream, p50 of ${fresh.length}`, value: median(fresh), unit: 'ms', lowerIsBetter: true, baseline: 'ping (new stream) p50', baselineValue: rawP50 })
  for (const stop of stops.splice(0).reverse()) await stop()

  // --- delegations/s across 5 nodes (in this process): one client, four servers, 8 in flight
  const client = await daemon('tp-client')
  stops.push(client.stop)
  const servers = await Promise.all([0, 1, 2, 3].map(async (i) => await daemon(`tp-${i}`, client.endpoint.addrs[0])))
  for (const s of servers) stops.push(s.stop)
  for (const s of servers) await signedCounter(s)
  let completed = 0
  let failed = 0
  const done: Array<{ peer: string, run_id: string }> = []
  const end = performance.now() + THROUGHPUT_MS
  const started = performance.now()
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (performance.now() < end) {
      try {
        const d = await client.delegator.delegate({ pack_cid: cid, input: { numbers: [completed, 1] } })
        if (d.status === 'completed') { completed++; done.push({ peer: d.peer, run_id: d.run_id }) } else failed++
      } catch {
        failed++
      }
    }
  }))
  const seconds = (performance.now() - started) / 1000
  const byPeer = new Map(servers.map((s) => [s.host.peerId.toString(), s]))
  let lost = 0
  for (const { peer: p, run_id: runId } of done) {
    const record = await byPeer.get(p)?.node.runs.record(runId).catch(() => undefined)
    if (record?.status !== 'completed') lost++
  }
  figures.push({ name: `delegations/s sustained, 1 client → 4 peers, 8 in flight, ${Math.round(seconds)} s`, value: completed / seconds, unit: 'delegations/s', bar: '0 lost runs', pass: lost === 0 && failed === 0 })
  figures.push({ name: 'lost runs (completed delegations whose run is not on the peer) / failed delegations', value: lost, unit: `lost, ${failed} failed`, lowerIsBetter: true })
  for (const s of stops.splice(0).reverse()) await s()

  // --- cold pack fetch through the DHT among 20 nodes, whole nodes built by the composition root in this process
  const mesh: ReachNode[] = []
  for (let i = 0; i < FETCH_NODES; i++) {
    const home = homePaths(join(root, `dht-${i}`))
    await mkdir(home.root, { recursive: true })
    await writeFile(home.trust, trustFile)
    const first = mesh[0]?.network?.host.getMultiaddrs()[0]?.toString()
    const n = await createNode({ home, logger: silentLogger, network: { apiPort: false, ...(first === undefined ? {} : { bootstrap: [first] }) } })
    mesh.push(n)
    await n.start()
  }
  stops.push(async () => { for (const n of mesh) await n.stop() })
  const exchanges = mesh.map((n) => (n.network as NonNullable<ReachNode['network']>).exchange)
  // Let the routing tables fill (every node has dialled node 0; the DHT finds the rest).
  await new Promise((resolve) => setTimeout(resolve, 2_000))
  const fetchMs: number[] = []
  const provideMs: number[] = []
  for (let i = 0; i < FETCHES; i++) {
    const files = { 'index.js': new TextEncoder().encode(`export function init () { return ${i} }\nexport function reduce (s) { return { state: s, output: s } }`) }
    const pack = encodeBundle({ name: `bench-${i}`, version: '1.0.0', description: 'bench:mesh fetch probe', entry: 'index.js', capabilities: [], engine: '^1.0.0', budget: { fuel: 1000, memory_bytes: 1 << 20, output_bytes: 1024, tool_calls: 1, wall_ms: 1000 } }, files)
    const sig = signPack({ cid: pack.cid, manifest: pack.bundle.manifest }, createSigner(publisher.seed))
    const from = (i * 7) % FETCH_NODES
    const to = (from + 1 + (i * 3) % (FETCH_NODES - 1)) % FETCH_NODES
    await (mesh[from] as ReachNode).local.packs.put(pack.bytes, [sig])
    provideMs.push((await (exchanges[from] as PackExchange).publish(pack.cid)).provide_ms)
    const t = performance.now()
    await (exchanges[to] as PackExchange).fetch(pack.cid, { timeoutMs: 10_000 })
    fetchMs.push(performance.now() - t)
  }
  figures.push({ name: `cold pack fetch through the DHT, ${FETCH_NODES} nodes (find + fetch + verify + store), p50 of ${FETCHES}`, value: median(fetchMs), unit: 'ms', lowerIsBetter: true, baseline: 'DHT provide p50 in the same mesh', baselineValue: median(provideMs), bar: '<= 300 ms p50', pass: median(fetchMs) <= 300 })
  figures.push({ name: 'cold pack fetch p90', value: percentile(fetchMs, 90), unit: 'ms', lowerIsBetter: true })
  report('bench:mesh', figures, { json: args.json === true, extra: { ping_p50_ms: rawP50 } })
} finally {
  for (const s of stops.reverse()) await s().catch(() => {})
  await rm(root, { recursive: true, force: true })
}
