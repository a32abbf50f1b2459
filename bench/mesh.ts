/**
 * `npm run bench:mesh` — the mesh node's figures, each beside a baseline
 * measured in the same run, with real libp2p over TCP loopback:
 *
 *   delegation round trip of a trivial pack to a warm peer (p50, p99), vs a
 *     raw libp2p request/response (new stream, one frame each way) between
 *     the same two hosts
 *   cold pack fetch through the DHT among 20 nodes (find providers, fetch,
 *     re-hash, check signature and policy, store), p50
 *   delegations/s sustained across 5 nodes, and that no run was lost: every
 *     delegation that completed names a run its peer has on disk
 *
 * Nodes run in this process (one event loop, two cores), each with its own
 * data dir. Options: --quick, --json.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { lpStream } from '@libp2p/utils'
import { createSigner, generateKeyPair } from '../protocol/keys.ts'
import { buildBundle, encodeBundle } from '../packs/bundle.ts'
import { signPack } from '../packs/trust.ts'
import { admitPack, defaultPolicy } from '../packs/policy.ts'
import { startDaemon, type Daemon } from '../node/daemon.ts'
import { homePaths } from '../node/home.ts'
import { createHost, type ReachHost } from '../node/host.ts'
import { openPackStore } from '../node/pack-store.ts'
import { PackExchange } from '../federation/packs.ts'
import { median, percentile, report, type Figure } from './report.ts'

const { values: args } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' } } })
const quick = args.quick === true
const RTT_SAMPLES = quick ? 100 : 400
const FETCH_NODES = 20
const FETCHES = quick ? 10 : 30
const THROUGHPUT_MS = quick ? 5_000 : 15_000
const figures: Figure[] = []
const root = await mkdtemp(join(os.tmpdir(), 'reach-bench-mesh-'))
const COUNTER = fileURLToPath(new URL('../packs/examples/counter', import.meta.url))
const publisher = generateKeyPair()
const quiet = (): void => {}

async function daemon (name: string, bootstrap?: string): Promise<Daemon> {
  const dir = join(root, name)
  const home = homePaths(dir)
  await (await import('node:fs/promises')).mkdir(dir, { recursive: true })
  await writeFile(home.policy, JSON.stringify({ version: 1 }))
  await writeFile(home.trust, JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'bench', added_at: '2026-01-01T00:00:00.000Z' }] }))
  return await startDaemon({ home, log: quiet, maxConcurrent: 4, maxQueue: 64, ...(bootstrap === undefined ? {} : { bootstrap: [bootstrap] }) })
}

async function signedCounter (d: Daemon): Promise<string> {
  const built = await buildBundle(COUNTER)
  const sig = signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))
  await d.node.packs.put(built.bytes, [sig])
  return built.cid
}

const stops: Array<() => Promise<void>> = []
try {
  // --- delegation round trip to a warm peer, and the raw libp2p round trip between the same hosts
  const a = await daemon('rtt-a')
  stops.push(a.stop)
  const b = await daemon('rtt-b', a.endpoint.addrs[0])
  stops.push(b.stop)
  const cid = await signedCounter(b)
  const echo = '/reach/bench-echo/1.0.0'
  await b.host.handle(echo, async (stream) => {
    const lp = lpStream(stream)
    await lp.write((await lp.read()).subarray())
    await stream.close()
  })
  const raw: number[] = []
  const payload = Buffer.from(JSON.stringify({ v: 1, type: 'delegate', input: { numbers: [1, 2, 3] } }))
  for (let i = 0; i < RTT_SAMPLES + 20; i++) {
    const t = performance.now()
    const s = await a.host.dialProtocol(b.host.peerId, echo)
    const lp = lpStream(s)
    await lp.write(payload)
    await lp.read()
    await s.close()
    if (i >= 20) raw.push(performance.now() - t)
  }
  const rtt: number[] = []
  const peer = b.host.peerId.toString()
  for (let i = 0; i < RTT_SAMPLES + 20; i++) {
    const t = performance.now()
    const d = await a.delegator.delegate({ pack_cid: cid, input: { numbers: [1, 2, 3] }, peer })
    if (d.status !== 'completed') throw new Error(`bench delegation ${d.status}`)
    if (i >= 20) rtt.push(performance.now() - t)
  }
  const rawP50 = median(raw)
  figures.push({ name: `delegation round trip, trivial pack, warm peer, p50 of ${RTT_SAMPLES}`, value: median(rtt), unit: 'ms', lowerIsBetter: true, baseline: 'raw libp2p request/response (new stream) p50', baselineValue: rawP50, bar: '<= 3.5 ms p50', pass: median(rtt) <= 3.5 })
  figures.push({ name: 'delegation round trip, p99', value: percentile(rtt, 99), unit: 'ms', lowerIsBetter: true, baseline: 'raw libp2p p99', baselineValue: percentile(raw, 99) })

  // --- delegations/s across 5 nodes: one client, four servers, 8 in flight
  const servers = [b, ...await Promise.all([1, 2, 3].map(async (i) => await daemon(`tp-${i}`, a.endpoint.addrs[0])))]
  for (const s of servers.slice(1)) stops.push(s.stop)
  for (const s of servers.slice(1)) await signedCounter(s)
  let completed = 0
  let failed = 0
  const done: Array<{ peer: string, run_id: string }> = []
  const end = performance.now() + THROUGHPUT_MS
  const started = performance.now()
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (performance.now() < end) {
      try {
        const d = await a.delegator.delegate({ pack_cid: cid, input: { numbers: [completed, 1] } })
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

  // --- cold pack fetch through the DHT among 20 nodes
  const hosts: ReachHost[] = []
  const exchanges: PackExchange[] = []
  const policy = defaultPolicy()
  const registry = { status: (k: string) => (k === publisher.publicKey ? 'trusted' as const : 'unknown' as const) }
  for (let i = 0; i < FETCH_NODES; i++) {
    const host = await createHost({ seed: generateKeyPair().seed, ...(i === 0 ? {} : { bootstrap: [hosts[0]?.getMultiaddrs()[0]?.toString() as string] }) })
    hosts.push(host)
    const packs = openPackStore(join(root, `dht-${i}`))
    const ex = new PackExchange({ host, packs, admit: (p) => { admitPack({ ...p, registry, policy }) } })
    await ex.start()
    exchanges.push(ex)
  }
  stops.push(async () => { for (const e of exchanges) await e.stop(); for (const h of hosts) await h.stop() })
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
    await openPackStore(join(root, `dht-${from}`)).put(pack.bytes, [sig])
    provideMs.push((await (exchanges[from] as PackExchange).publish(pack.cid)).provide_ms)
    const t = performance.now()
    await (exchanges[to] as PackExchange).fetch(pack.cid, { timeoutMs: 10_000 })
    fetchMs.push(performance.now() - t)
  }
  figures.push({ name: `cold pack fetch through the DHT, ${FETCH_NODES} nodes (find + fetch + verify + store), p50 of ${FETCHES}`, value: median(fetchMs), unit: 'ms', lowerIsBetter: true, baseline: 'DHT provide p50 in the same mesh', baselineValue: median(provideMs), bar: '<= 300 ms p50', pass: median(fetchMs) <= 300 })
  figures.push({ name: 'cold pack fetch p90', value: percentile(fetchMs, 90), unit: 'ms', lowerIsBetter: true })
  report('bench:mesh', figures, { json: args.json === true, extra: { raw_p50_ms: rawP50 } })
} finally {
  for (const s of stops.reverse()) await s().catch(() => {})
  await rm(root, { recursive: true, force: true })
}
