/**
 * `npm run bench:nodes` — what a whole node built by the composition root (`createNode`) costs
 * in one process, the figure a simulation of many nodes in one process is bounded by:
 *
 *   two nodes in one process, each with its own data dir, libp2p host, services and sandbox
 *     pool; one delegation from the first to the second (so both have run code), then the
 *     process's RSS and V8 heap growth per node, after a full GC
 *   the same for N nodes (the slope: what each further node adds)
 *   what is left once they have all stopped (a stopped node should give back its heap and memories)
 *
 * RSS is the least exact of the three: memory a stopped node gave back stays in the process (the
 * warm-up's, here), and new nodes reuse it before RSS grows. The heap and external figures are
 * after a full GC and are the ones to read.
 *
 * Run with `--expose-gc` (the npm script does). Options: --quick, --json.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createSigner, generateKeyPair } from '../protocol/keys.ts'
import { buildBundle } from '../packs/bundle.ts'
import { signPack } from '../packs/trust.ts'
import { createNode, type NetworkServices, type ReachNode } from '../node/create.ts'
import { homePaths } from '../node/home.ts'
import { silentLogger } from '../node/logger.ts'
import { report, type Figure } from './report.ts'

const { values: args } = parseArgs({ options: { quick: { type: 'boolean' }, json: { type: 'boolean' } } })
const MANY = args.quick === true ? 6 : 12
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench:nodes)')
const COUNTER = fileURLToPath(new URL('../packs/examples/counter', import.meta.url))
const publisher = generateKeyPair()
const trust = JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'bench', added_at: '2026-01-01T00:00:00.000Z' }] })
const root = await mkdtemp(join(os.tmpdir(), 'reach-bench-nodes-'))
const figures: Figure[] = []
const MB = 1024 * 1024

type Whole = ReachNode & { network: NetworkServices }

/** After a full GC: RSS, the V8 heap, and memory outside it (WebAssembly memories of the sandboxes, buffers). */
function memory (): { rss: number, heap: number, external: number } {
  gc?.()
  gc?.()
  const m = process.memoryUsage()
  return { rss: m.rss, heap: m.heapUsed, external: m.external }
}

/** `n` whole nodes, each bootstrapped to the first, all in this process; one delegation from each to the next. */
async function mesh (n: number, tag: string): Promise<Whole[]> {
  const built = await buildBundle(COUNTER)
  const signature = signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))
  const nodes: Whole[] = []
  for (let i = 0; i < n; i++) {
    const home = homePaths(join(root, `${tag}-${i}`))
    await mkdir(home.root, { recursive: true })
    await writeFile(home.trust, trust)
    const first = nodes[0]?.network.host.getMultiaddrs()[0]?.toString()
    const node = await createNode({ home, logger: silentLogger, network: { apiPort: false, pingIntervalMs: 3_600_000, ...(first === undefined ? {} : { bootstrap: [first] }) } }) as Whole
    await node.start()
    await node.local.packs.put(built.bytes, [signature])
    nodes.push(node)
  }
  for (let i = 0; i < n; i++) {
    const from = nodes[i] as Whole
    const to = nodes[(i + 1) % n] as Whole
    if (from === to) continue
    const peer = to.network.host.peerId.toString()
    // The first delegation dials; wait for the connection identify made usable.
    const d = await from.network.delegator.delegate({ pack_cid: built.cid, input: { numbers: [i, 1] }, peer })
    if (d.status !== 'completed') throw new Error(`delegation ${i} ended ${d.status}`)
  }
  return nodes
}

try {
  // Load everything once (modules, the compiled engine) so the figures are the nodes' own.
  for (const n of await mesh(2, 'warm')) await n.stop()
  const before = memory()
  const two = await mesh(2, 'two')
  const withTwo = memory()
  figures.push({ name: 'RSS per node, two whole nodes in one process (after a delegation each way, full GC)', value: (withTwo.rss - before.rss) / 2 / MB, unit: 'MiB', lowerIsBetter: true })
  figures.push({ name: 'V8 heap per node, the same two nodes', value: (withTwo.heap - before.heap) / 2 / MB, unit: 'MiB', lowerIsBetter: true })
  figures.push({ name: 'memory outside the V8 heap per node (sandbox WebAssembly memories, buffers), the same two nodes', value: (withTwo.external - before.external) / 2 / MB, unit: 'MiB', lowerIsBetter: true })
  const many = await mesh(MANY, 'many')
  const withMany = memory()
  figures.push({ name: `RSS each further node adds (${MANY} more whole nodes, same process)`, value: (withMany.rss - withTwo.rss) / MANY / MB, unit: 'MiB', lowerIsBetter: true })
  figures.push({ name: `V8 heap each further node adds (${MANY} more)`, value: (withMany.heap - withTwo.heap) / MANY / MB, unit: 'MiB', lowerIsBetter: true })
  figures.push({ name: `memory outside the V8 heap each further node adds (${MANY} more)`, value: (withMany.external - withTwo.external) / MANY / MB, unit: 'MiB', lowerIsBetter: true })
  const all = [...two.splice(0), ...many.splice(0)]
  for (const n of all) await n.stop()
  all.length = 0 // nothing of ours holds a stopped node now
  const after = memory()
  figures.push({ name: `RSS left once all ${2 + MANY} nodes stopped (vs before them)`, value: (after.rss - before.rss) / MB, unit: 'MiB', lowerIsBetter: true })
  // The two that say whether a stopped node leaks: RSS keeps what the allocator holds on to.
  figures.push({ name: `V8 heap left once all ${2 + MANY} nodes stopped (vs before them)`, value: (after.heap - before.heap) / MB, unit: 'MiB', lowerIsBetter: true })
  figures.push({ name: `memory outside the V8 heap left once all ${2 + MANY} nodes stopped (vs before them)`, value: (after.external - before.external) / MB, unit: 'MiB', lowerIsBetter: true })
  // libp2p keeps a stopped node reachable until its last timers fire: gossipsub 17's stop leaves
  // one heartbeat scheduled (1 s), and kad-dht leaves the listener of an inbound stream's last
  // read timeout on it (10 s). Measured again past them, what is left is what would leak.
  await new Promise((resolve) => setTimeout(resolve, 12_000))
  const later = memory()
  figures.push({ name: 'V8 heap left 12 s later (past the libp2p timers still scheduled at stop)', value: (later.heap - before.heap) / MB, unit: 'MiB', lowerIsBetter: true })
  report('bench:nodes', figures, { json: args.json === true, extra: { nodes: 2 + MANY } })
} finally {
  await rm(root, { recursive: true, force: true })
}
