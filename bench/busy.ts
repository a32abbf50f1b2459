/**
 * `npm run bench:busy` — does a node keep answering while packs burn CPU? A `reach node start`
 * child process runs four runs of a hostile pack at once (one http.fetch, then a loop that only
 * its 30 s wall clock or a cancel ends), started through its control API as `reach run` does.
 * Figures, in one run: `GET /v1/status` latency (p50, p99 of sequential requests) idle and while
 * the four loops run, and how long cancelling all four takes (the client goes, the node cancels
 * each run, each ends RunCancelled). Bar: busy p99 ≤ 5× idle p99 and ≤ 50 ms.
 *
 * Options: --requests N (default 300), --loops N (default 4), --json.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createSigner, generateKeyPair } from '../protocol/keys.ts'
import { buildBundle } from '../packs/bundle.ts'
import { signPack } from '../packs/trust.ts'
import { homePaths } from '../node/home.ts'
import { openPackStore } from '../node/pack-store.ts'
import { percentile, report, startChildNode, type Figure } from './report.ts'

const { values: args } = parseArgs({ options: { requests: { type: 'string' }, loops: { type: 'string' }, json: { type: 'boolean' } } })
const REQUESTS = Number(args.requests ?? 300)
const LOOPS = Number(args.loops ?? 4)
const BIN = fileURLToPath(new URL('../node/cli/bin.js', import.meta.url))

const SPIN = `export function init (input) { return input }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [{ tool: 'http.fetch', args: { url: s.url } }] }
  let x = 0
  for (;;) x++
}
`

const root = await mkdtemp(join(os.tmpdir(), 'reach-bench-busy-'))
const stops: Array<() => Promise<void>> = []
try {
  // The gate: each run fetches it once (so we know it began), and gets its answer at once.
  let arrived = 0
  const arrivals: Array<() => void> = []
  const gate = createServer((_req, res) => { arrived++; for (const f of arrivals.splice(0)) f(); res.end('go') })
  await new Promise<void>((resolve) => { gate.listen(0, '127.0.0.1', resolve) })
  stops.push(async () => { gate.closeAllConnections(); await new Promise((resolve) => gate.close(resolve)) })
  const gateHost = `127.0.0.1:${(gate.address() as { port: number }).port}`

  const home = homePaths(join(root, 'node'))
  await mkdir(home.root, { recursive: true, mode: 0o700 })
  const publisher = generateKeyPair()
  await writeFile(home.policy, JSON.stringify({ version: 1, granted_capabilities: ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch'], http_allowlist: [gateHost] }), { mode: 0o600 })
  await writeFile(home.trust, JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'bench', added_at: '2026-01-01T00:00:00.000Z' }] }), { mode: 0o600 })
  const dir = join(root, 'spin')
  await mkdir(dir)
  await writeFile(join(dir, 'index.js'), SPIN)
  await writeFile(join(dir, 'reach-pack.json'), JSON.stringify({
    name: 'spin', version: '1.0.0', description: 'one http.fetch, then a loop only the wall clock or a cancel ends', entry: 'index.js', capabilities: ['http.fetch'], engine: '^1.0.0',
    budget: { fuel: 1_000_000, memory_bytes: 16_777_216, output_bytes: 65_536, tool_calls: 1, wall_ms: 30_000 }
  }))
  const built = await buildBundle(dir)
  await openPackStore(home.packs).put(built.bytes, [signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))])

  const node = await startChildNode(BIN, home.root)
  stops.push(node.stop)
  const endpoint = node.endpoint
  const token = (await readFile(join(home.root, 'api.token'), 'utf8')).trim()
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }

  /** Requests that got no 200 (a reset, a timeout): each counts with the time it took to fail. */
  let unanswered = 0
  /** `REQUESTS` sequential GET /v1/status; each one's latency in ms. */
  const statusLatencies = async (): Promise<number[]> => {
    const out: number[] = []
    for (let i = 0; i < REQUESTS; i++) {
      const t = performance.now()
      try {
        const res = await fetch(`${endpoint.api}/v1/status`, { headers })
        await res.arrayBuffer()
        if (res.status !== 200) unanswered++
      } catch {
        unanswered++
      }
      out.push(performance.now() - t)
    }
    return out
  }

  await statusLatencies() // warm-up: connection, JIT
  const idle = await statusLatencies()

  // Four hostile runs, each until its client goes (as `reach run` does on Ctrl-C).
  const clients = Array.from({ length: LOOPS }, () => new AbortController())
  const runs = clients.map(async (c) => await fetch(`${endpoint.api}/v1/runs`, { method: 'POST', headers, body: JSON.stringify({ pack: built.cid, input: { url: `http://${gateHost}/` } }), signal: c.signal }).then((r) => r.status, () => 'aborted'))
  while (arrived < LOOPS) await new Promise<void>((resolve) => { arrivals.push(resolve) })
  const busy = await statusLatencies()

  // Cancel: the clients go; the node cancels each run, and each ends RunCancelled.
  const cancelledAt = performance.now()
  for (const c of clients) c.abort()
  await Promise.all(runs)
  let ended: Array<{ status: string }> = []
  for (;;) {
    const list = await (await fetch(`${endpoint.api}/v1/runs`, { headers })).json() as { runs: Array<{ status: string, pack_name: string }> }
    ended = list.runs.filter((r) => r.pack_name === 'spin' && r.status !== 'running')
    if (ended.length >= LOOPS) break
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  const cancelMs = performance.now() - cancelledAt
  const statuses = ended.map((r) => r.status)

  const idleP99 = percentile(idle, 99)
  const busyP99 = percentile(busy, 99)
  const figures: Figure[] = [
    { name: `GET /v1/status p50, idle (${REQUESTS} sequential)`, value: percentile(idle, 50), unit: 'ms' },
    { name: `GET /v1/status p99, idle (${REQUESTS} sequential)`, value: idleP99, unit: 'ms' },
    { name: `GET /v1/status p50, while ${LOOPS} packs loop`, value: percentile(busy, 50), unit: 'ms', baseline: 'idle p50', baselineValue: percentile(idle, 50), lowerIsBetter: true },
    { name: `GET /v1/status p99, while ${LOOPS} packs loop`, value: busyP99, unit: 'ms', baseline: 'idle p99', baselineValue: idleP99, lowerIsBetter: true, bar: '≤ 5× idle p99 and ≤ 50 ms', pass: busyP99 <= 5 * idleP99 && busyP99 <= 50 },
    { name: 'GET /v1/status requests not answered 200 (reset or failed)', value: unanswered, unit: 'requests', bar: 'none', pass: unanswered === 0 },
    { name: `cancel ${LOOPS} looping runs: until each has ended (${statuses.join(', ')})`, value: cancelMs, unit: 'ms', bar: 'each ends cancelled', pass: statuses.every((s) => s === 'cancelled') }
  ]
  report('bench:busy — a node answering while packs burn CPU', figures, { json: args.json === true, extra: { run_threads: 2, loops: LOOPS, requests: REQUESTS } })
} finally {
  for (const stop of stops.reverse()) await stop().catch(() => {})
  await rm(root, { recursive: true, force: true })
}
