/**
 * Four real nodes (child processes, TCP loopback, noise, yamux, kad-dht),
 * driven through the `reach` executable as an operator would:
 *
 *   A publishes signed packs; B, C and D join through A.
 *   D's policy serves delegations one hop deep only.
 *
 * Publish and fetch through the DHT, delegation with verification, nested
 * delegation, depth and cycle refusals, a peer killed mid-delegation (retry
 * elsewhere, breaker opens, half-opens and closes when the peer is back),
 * cancellation, and the control API refusing a request without its token.
 *
 * A run that must be under way while the test acts (cancelled, or its node killed) is of the
 * `hold` pack: one http.fetch of the test's own server (the gate), which holds the answer. The
 * fetch arriving says the run has begun; the run stays in that call until the test lets it go
 * or the run is cancelled, whatever the machine's speed. A served run's end is the node's
 * "served <delegation> for <peer>: <run> <status>" line.
 */
import { spawn } from 'node:child_process'
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer, type ServerResponse } from 'node:http'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callApi } from '../../node/api-client.ts'
import { decodeCheckpoint } from '../../protocol/checkpoint.ts'
import { peerIdOfPublicKey } from '../../protocol/peer-id.ts'
import { checkReceipt, encodeReceipt } from '../../protocol/receipt.ts'
import { cli, newHome, outputLength, startNode, stopNode, untilOutput, within, type MeshNode } from './cluster.ts'
import { BIN, reach } from '../node/cli/helpers.ts'

const EXAMPLES = fileURLToPath(new URL('../../packs/examples/', import.meta.url))
const FIXTURES = fileURLToPath(new URL('../fixtures/packs/', import.meta.url))
const GRANTS = ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'reach.delegate', 'http.fetch']
// A's breakers may open after a single request and half-open after 1.5 s, so the test sees both.
const A_ENV = { REACH_BREAKER_VOLUME: '1', REACH_BREAKER_RESET_MS: '1500' }

let a: MeshNode
let b: MeshNode
let c: MeshNode
let d: MeshNode
const cids: Record<string, string> = {}
/** Dirs this file made (data dirs included), removed at the end. */
const dirs: string[] = []
let gate: Gate

/** The `hold` pack: one http.fetch of `input.url`, its answer the output (or the tool's error). */
const HOLD_JS = `export function init (input) { return input }
export function reduce (state, event) {
  if (event.type === 'Start') return { state, effects: [{ tool: 'http.fetch', args: { url: state.url } }] }
  if (event.type === 'ToolResult') return { state, output: event.result }
  return { state, output: { failed: event.error } }
}
`
const HOLD_MANIFEST = {
  name: 'hold',
  version: '1.0.0',
  description: 'One http.fetch of input.url, which the mesh test holds: a run under way for as long as the test wants.',
  entry: 'index.js',
  capabilities: ['http.fetch'],
  engine: '^1.0.0',
  budget: { fuel: 100000, memory_bytes: 16777216, output_bytes: 65536, tool_calls: 1, wall_ms: 30000 }
}

/** The `spin` pack: one http.fetch of `input.url` (held by the gate), then a loop only its 30 s wall clock or a cancel ends. */
const SPIN_JS = `export function init (input) { return input }
export function reduce (state, event) {
  if (event.type === 'Start') return { state, effects: [{ tool: 'http.fetch', args: { url: state.url } }] }
  let x = 0
  for (;;) x++
}
`
const SPIN_MANIFEST = { ...HOLD_MANIFEST, name: 'spin', description: 'One held http.fetch, then a loop that burns CPU until cancelled.', budget: { ...HOLD_MANIFEST.budget, fuel: 1_000_000 } }

/**
 * The test's HTTP server on 127.0.0.1 that `hold` runs fetch `/hold/<tag>` from. Its answer is
 * held until `release(tag)`; a node's http.fetch gives up after 10 s (packs/tools), so a test
 * releases or cancels well before.
 */
interface Gate {
  /** host:port, for the nodes' http_allowlist. */
  host: string
  url: (tag: string) => string
  /** Resolves when a run has fetched `tag`: it has begun, and is in that call. */
  arrived: (tag: string) => Promise<void>
  /** Resolves when a held fetch of `tag` was given up by the run making it (its tool call was cut). */
  abandoned: (tag: string) => Promise<void>
  /** Answer the fetches of `tag` held and to come, at once. */
  release: (tag: string) => void
  close: () => Promise<void>
}

async function openGate (): Promise<Gate> {
  interface Tag { arrived: PromiseWithResolvers<void>, abandoned: PromiseWithResolvers<void>, released: boolean, held: ServerResponse[] }
  const tags = new Map<string, Tag>()
  const tag = (name: string): Tag => {
    let t = tags.get(name)
    if (t === undefined) {
      t = { arrived: Promise.withResolvers<void>(), abandoned: Promise.withResolvers<void>(), released: false, held: [] }
      tags.set(name, t)
    }
    return t
  }
  const server = createServer((req, res) => {
    const m = /^\/hold\/([\w-]+)$/.exec(req.url ?? '')
    if (m === null) {
      res.writeHead(404).end()
      return
    }
    const t = tag(m[1] as string)
    t.arrived.resolve()
    if (t.released) {
      res.end('released')
      return
    }
    t.held.push(res)
    res.on('close', () => { if (!res.writableEnded) t.abandoned.resolve() })
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', resolve) })
  const { port } = server.address() as { port: number }
  const host = `127.0.0.1:${port}`
  return {
    host,
    url: (name) => `http://${host}/hold/${name}`,
    arrived: async (name) => { await tag(name).arrived.promise },
    abandoned: async (name) => { await tag(name).abandoned.promise },
    release: (name) => {
      const t = tag(name)
      t.released = true
      for (const res of t.held.splice(0)) res.end('released')
    },
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}

/** The "served <delegation> for <peer>: <run> <status>" line a node prints when a run it served for `peer` ends. */
const servedFor = (peer: MeshNode): RegExp => new RegExp(`served \\S+ for ${peer.peerId}: (run_[0-9a-f]{20}) (\\w+)$`)

/**
 * Until a run has fetched `tag` from the gate: fails loudly if `command` (what started the run)
 * ends first, if one of `nodes` exits, or after 20 s.
 */
async function arrival (tag: string, command: Promise<unknown>, nodes: MeshNode[]): Promise<void> {
  const endedFirst = command.then((r) => { throw new Error(`the command ended first: ${JSON.stringify(r)}`) }, (err: Error) => { throw new Error(`the command failed first: ${err.message}`) })
  await within(`a run to fetch ${tag} from the gate`, Promise.race([gate.arrived(tag), endedFirst]), { nodes })
}

/** The delegations a node has in flight, from its control API. */
async function delegations (node: MeshNode): Promise<{ outgoing: string[], serving: Array<{ delegation_id: string, peer: string }> }> {
  return await callApi(node.home, 'GET', '/v1/delegations')
}

async function ok (node: { home: string, env?: NodeJS.ProcessEnv }, args: string[]): Promise<any> {
  const r = await cli(node, args)
  if (r.code !== 0 || r.json?.ok !== true) throw new Error(`reach ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
  return r.json
}

beforeAll(async () => {
  gate = await openGate()
  const policy = { granted_capabilities: GRANTS, http_allowlist: [gate.host] }
  const homes = {
    a: await newHome('a', policy),
    b: await newHome('b', policy),
    c: await newHome('c', policy),
    d: await newHome('d', { ...policy, max_delegation_depth: 1 })
  }
  dirs.push(...Object.values(homes))
  const hold = join(await mkdtemp(join(os.tmpdir(), 'reach-mesh-hold-')), 'hold')
  dirs.push(join(hold, '..'))
  await mkdir(hold)
  await writeFile(join(hold, 'index.js'), HOLD_JS)
  await writeFile(join(hold, 'reach-pack.json'), JSON.stringify(HOLD_MANIFEST))
  const spin = join(hold, '..', 'spin')
  await mkdir(spin)
  await writeFile(join(spin, 'index.js'), SPIN_JS)
  await writeFile(join(spin, 'reach-pack.json'), JSON.stringify(SPIN_MANIFEST))
  // One publisher, trusted by every node; its packs are built, signed and stored on A only.
  const keyPath = join(homes.a, 'publisher.key')
  await ok({ home: homes.a }, ['keygen', '--publisher', '--output', keyPath])
  const pub = JSON.parse(await readFile(keyPath, 'utf8')).public_key as string
  for (const home of Object.values(homes)) await ok({ home }, ['trust', 'add', pub, '--name', 'mesh test publisher'])
  for (const [name, dir] of [['counter', `${EXAMPLES}counter`], ['nest', `${FIXTURES}nest`], ['hold', hold], ['spin', spin]]) {
    const built = await ok({ home: homes.a }, ['pack', 'build', dir as string])
    cids[name as string] = built.cid
    await ok({ home: homes.a }, ['pack', 'sign', built.cid, '--key', keyPath])
  }
  a = await startNode('a', homes.a, { env: A_ENV })
  ;[b, c, d] = await Promise.all([
    startNode('b', homes.b, { bootstrap: [a.addr] }),
    startNode('c', homes.c, { bootstrap: [a.addr] }),
    startNode('d', homes.d, { bootstrap: [a.addr] })
  ])
  for (const cid of Object.values(cids)) await ok(a, ['pack', 'publish', cid])
}, 90_000)

afterAll(async () => {
  await Promise.all([a, b, c, d].filter((n) => n !== undefined).map(async (n) => await stopNode(n)))
  await gate?.close()
  await Promise.all(dirs.map(async (dir) => { await rm(dir, { recursive: true, force: true }) }))
})

describe('mesh: real nodes on loopback', () => {
  it('a pack published on A is fetched by C through the DHT, verified and stored', async () => {
    const r = await ok(c, ['pack', 'fetch', cids.counter as string])
    expect(r.provider).toBe(a.peerId)
    const inspect = await ok(c, ['pack', 'inspect', cids.counter as string])
    expect(inspect.cid).toBe(cids.counter)
  })

  it('delegates A→B (B fetches the pack it lacks), checks the signed result and replays the fetched log', async () => {
    const r = await ok(a, ['delegate', cids.counter as string, '--peer', b.peerId, '--input', '{"numbers":[1,2,3]}', '--verify'])
    expect(r.delegation).toMatchObject({ status: 'completed', peer: b.peerId, output: { count: 3, sum: 6 } })
    expect(Object.keys(r.verification).sort()).toEqual(['pack_trusted', 'receipt', 'verified'])
    expect(r.verification.pack_trusted).toBe(true)
    expect(r.verification.verified).toBe(true)
    // The same run, verified again by another node from B's log.
    const again = await ok(c, ['verify-remote', b.peerId, r.delegation.run_id])
    expect(again.verified).toBe(true)
    // Each witness signed a receipt for B's checkpoint; anyone checks it against that checkpoint.
    const checkpoint = decodeCheckpoint(r.delegation.checkpoint)
    for (const [witness, receipt] of [[a, r.verification.receipt], [c, again.receipt]] as const) {
      const checked = checkReceipt(encodeReceipt(receipt), checkpoint)
      expect(peerIdOfPublicKey(checked.signer)).toBe(witness.peerId)
      expect(checked).toMatchObject({ pack_cid: cids.counter, fingerprint: r.delegation.record.fingerprint, engine: { version: '1.0.0' } })
    }
  })

  it('nests A→B→C: the pack on B delegates to C one hop deeper, and its result is recorded', async () => {
    const input = JSON.stringify({ pack: cids.counter, input: { numbers: [5, 5] }, peer: c.peerId })
    const r = await ok(a, ['delegate', cids.nest as string, '--peer', b.peerId, '--input', input, '--verify'])
    expect(r.delegation.output.child).toMatchObject({ status: 'completed', peer: c.peerId, output: { count: 2, sum: 10 } })
    // The child's fuel came out of what the parent had left (nest's budget: 200,000).
    expect(r.delegation.output.child.fuel_granted).toBeGreaterThan(0)
    expect(r.delegation.output.child.fuel_granted).toBeLessThanOrEqual(100_000)
    expect(r.verification.verified).toBe(true)
  })

  it('reach run on a node whose daemon runs goes through it: the pack delegates, and the run replays offline', async () => {
    const input = JSON.stringify({ pack: cids.counter, input: { numbers: [4, 4] }, peer: b.peerId })
    const r = await ok(a, ['run', cids.nest as string, '--input', input])
    expect(r.output.child).toMatchObject({ status: 'completed', peer: b.peerId, output: { count: 2, sum: 8 } })
    // The child's signed result is the recorded tool result: no network needed to replay.
    const replay = await ok(a, ['replay', r.record.run_id])
    expect(replay.verified).toBe(true)
  })

  it('refuses cycles: A→B→A and A→B→C→B get RL-4005', async () => {
    const back = JSON.stringify({ pack: cids.counter, input: { numbers: [1] }, peer: a.peerId })
    const r1 = await ok(a, ['delegate', cids.nest as string, '--peer', b.peerId, '--input', back])
    expect(r1.delegation.output.refused.code).toBe('RL-4005')
    const inner = { pack: cids.counter, input: { numbers: [1] }, peer: b.peerId }
    const r2 = await ok(a, ['delegate', cids.nest as string, '--peer', b.peerId, '--input', JSON.stringify({ pack: cids.nest, input: inner, peer: c.peerId })])
    expect(r2.delegation.output.child.output.refused.code).toBe('RL-4005')
  })

  it('refuses depth over the policy: D serves one hop, so A→B→D gets RL-4004 (and A→D is fine)', async () => {
    const input = JSON.stringify({ pack: cids.counter, input: { numbers: [1] }, peer: d.peerId })
    const r = await ok(a, ['delegate', cids.nest as string, '--peer', b.peerId, '--input', input])
    expect(r.delegation.output.refused.code).toBe('RL-4004')
    const direct = await ok(a, ['delegate', cids.counter as string, '--peer', d.peerId, '--input', '{"numbers":[2]}'])
    expect(direct.delegation.status).toBe('completed')
  })

  it('refuses a pack its policy does not trust (RL-3006) and a budget over its policy (RL-3010)', async () => {
    // A trusts a second publisher; B does not. B fetches the pack through the DHT and refuses it unstored.
    const dir = await mkdtemp(join(os.tmpdir(), 'reach-untrusted-'))
    dirs.push(dir)
    await cp(`${EXAMPLES}counter`, dir, { recursive: true })
    const manifest = JSON.parse(await readFile(join(dir, 'reach-pack.json'), 'utf8'))
    await writeFile(join(dir, 'reach-pack.json'), JSON.stringify({ ...manifest, description: 'signed by someone B does not know' }))
    const keyPath = join(dir, 'other.key')
    await ok(a, ['keygen', '--publisher', '--output', keyPath])
    await ok(a, ['trust', 'add', keyPath, '--name', 'known to A only'])
    const built = await ok(a, ['pack', 'build', dir])
    await ok(a, ['pack', 'sign', built.cid, '--key', keyPath])
    await ok(a, ['pack', 'publish', built.cid])
    const refused = await cli(a, ['delegate', built.cid, '--peer', b.peerId, '--input', '{"numbers":[1]}'])
    expect(refused.code).toBe(1)
    expect(refused.json.error.code).toBe('RL-3006')
    expect((await ok(b, ['node', 'status'])).peer_id).toBe(b.peerId)
    // B's operator trusts the key while B runs: the next request is admitted.
    await ok(b, ['trust', 'add', keyPath, '--name', 'now known to B'])
    const admitted = await ok(a, ['delegate', built.cid, '--peer', b.peerId, '--input', '{"numbers":[1]}'])
    expect(admitted.delegation.status).toBe('completed')
    const greedy = await cli(a, ['delegate', cids.counter as string, '--peer', b.peerId, '--input', '{"numbers":[1]}', '--budget', '{"fuel":999999999}'])
    expect(greedy.json.error.code).toBe('RL-3010')
  })

  it('Ctrl-C on `reach delegate` cancels the remote run', async () => {
    await ok(d, ['pack', 'fetch', cids.hold as string])
    const from = outputLength(d)
    const child = spawn(process.execPath, [BIN, 'delegate', cids.hold as string, '--peer', d.peerId, '--input', JSON.stringify({ url: gate.url('ctrl-c') })], { env: { ...process.env, REACH_HOME: a.home }, stdio: ['ignore', 'pipe', 'pipe'] })
    const printed: string[] = []
    child.stdout.setEncoding('utf8').on('data', (t: string) => { printed.push(t) })
    child.stderr.setEncoding('utf8').on('data', (t: string) => { printed.push(t) })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    // The run has begun on D (not just its pack fetch): it is in its http.fetch, held by the gate.
    await within('D\'s run to fetch from the gate', gate.arrived('ctrl-c'), { nodes: [a, d, { name: 'reach delegate', proc: child, output: printed }] })
    child.kill('SIGINT')
    expect(await exited).not.toBe(0)
    expect(printed.join('')).toContain('RL-4015')
    // On D, the run's call was cut, and the run ended cancelled.
    await within('D\'s run to give up its fetch', gate.abandoned('ctrl-c'), { nodes: [a, d] })
    const [, runId, status] = await untilOutput(d, servedFor(a), 'the end of the run it served for A', { from })
    expect(status).toBe('cancelled')
    const runs = (await ok(d, ['runs', 'list'])).runs as Array<{ run_id: string, status: string, artifact_hash: string }>
    expect(runs.find((r) => r.run_id === runId), JSON.stringify(runs)).toMatchObject({ artifact_hash: cids.hold, status: 'cancelled', error: { code: 'RL-4015' } })
  })

  /**
   * A→C of `pack` (one held fetch of the gate's `tag`), cancelled with `reach cancel` once C's run
   * fetched the gate (and, first, `whileRunning`); C's run must end cancelled (RL-4015). Its run id.
   */
  async function cancelledOnC (pack: 'hold' | 'spin', tag: string, whileRunning: () => Promise<void> = async () => {}): Promise<string> {
    await ok(c, ['pack', 'fetch', cids[pack] as string])
    const from = outputLength(c)
    const started = reach(['delegate', cids[pack] as string, '--peer', c.peerId, '--input', JSON.stringify({ url: gate.url(tag) })], { env: { REACH_HOME: a.home } })
    await arrival(tag, started, [a, c])
    await whileRunning()
    const list = await delegations(a)
    expect(list.outgoing).toHaveLength(1)
    await ok(a, ['cancel', list.outgoing[0] as string])
    const done = await started
    expect(done.code).toBe(1)
    expect(done.stdout).toContain('CANCELLED')
    const [, runId, status] = await untilOutput(c, servedFor(a), 'the end of the run it served for A', { from })
    expect(status).toBe('cancelled')
    const runs = (await ok(c, ['runs', 'list'])).runs as Array<{ run_id: string, status: string, artifact_hash: string, error: { code: string } | null }>
    expect(runs.find((r) => r.run_id === runId), JSON.stringify(runs)).toMatchObject({ artifact_hash: cids[pack], status: 'cancelled', error: { code: 'RL-4015' } })
    return runId as string
  }

  it('cancellation reaches the remote run: it ends with RunCancelled', async () => {
    await cancelledOnC('hold', 'cancel')
  })

  it('a delegated run burning CPU is cancelled, not left to finish: it ends RunCancelled, C answered meanwhile, and the log replays', async () => {
    const runId = await cancelledOnC('spin', 'spin', async () => {
      // From here the run loops (its only way out is its 30 s wall clock, RL-3105, or a cancel).
      gate.release('spin')
      // C's control API answers, and the run is still being served.
      expect((await delegations(c)).serving.map((d) => d.peer)).toEqual([a.peerId])
    })
    // Where the cancel cut the loop is where its replay stops.
    expect((await ok(c, ['replay', runId])).verified).toBe(true)
  })

  it('a parent run ending cancels its child: cancelling A→B cancels the sub-run B started on C', async () => {
    const [fromB, fromC] = [outputLength(b), outputLength(c)]
    const input = JSON.stringify({ pack: cids.hold, input: { url: gate.url('child') }, peer: c.peerId })
    const started = reach(['delegate', cids.nest as string, '--peer', b.peerId, '--input', input], { env: { REACH_HOME: a.home } })
    await arrival('child', started, [a, b, c])
    const id = (await delegations(a)).outgoing[0] as string
    await ok(a, ['cancel', id])
    expect((await started).stdout).toContain('CANCELLED')
    // Only A's delegation was cancelled, and only to B: B's run ended cancelled, and B cancelled the child on C.
    expect((await untilOutput(b, servedFor(a), 'the end of the run it served for A', { from: fromB }))[2]).toBe('cancelled')
    const [, runId, status] = await untilOutput(c, servedFor(b), 'the end of the child run it served for B', { from: fromC })
    expect(status).toBe('cancelled')
    const runs = (await ok(c, ['runs', 'list'])).runs as Array<{ run_id: string, status: string, artifact_hash: string }>
    expect(runs.find((r) => r.run_id === runId), JSON.stringify(runs)).toMatchObject({ artifact_hash: cids.hold, status: 'cancelled', error: { code: 'RL-4015' } })
  })

  it('a peer killed mid-delegation: the run completes elsewhere, the breaker opens; restarted, it half-opens and is used again', async () => {
    // Its breaker may open on this first failure or on a later one: A's log is read from here.
    const watchFrom = outputLength(a)
    const running = ok(a, ['delegate', cids.hold as string, '--input', JSON.stringify({ url: gate.url('kill') }), '--timeout', '60000'])
    await arrival('kill', running, [a])
    // One of B, C, D is serving it (its run is held at the gate): ask each once.
    const serving = await Promise.all([b, c, d].map(async (n) => (await delegations(n)).serving.filter((s) => s.peer === a.peerId).length))
    expect(serving.filter((n) => n > 0), JSON.stringify(serving)).toEqual([1])
    const victim = [b, c, d][serving.findIndex((n) => n > 0)] as MeshNode
    await stopNode(victim, 'SIGKILL')
    // The next peer's run gets its answer at once.
    gate.release('kill')
    const r = await running
    expect(r.delegation).toMatchObject({ status: 'completed', output: { status: 200, body: 'released' } })
    expect(r.delegation.peer).not.toBe(victim.peerId)
    expect(r.delegation.attempts[0]).toMatchObject({ peer: victim.peerId, code: 'RL-4002' })
    const before = (await ok(a, ['peers'])).peers.find((p: { peer: string }) => p.peer === victim.peerId)
    expect(before.failures).toBeGreaterThanOrEqual(1)
    // The operator keeps asking for the dead peer: each try fails (RL-4002) until its breaker
    // opens, and from then on A refuses at once without dialling (RL-4003).
    const codes: string[] = []
    for (let i = 0; i < 12 && codes.at(-1) !== 'RL-4003'; i++) {
      const r = await cli(a, ['delegate', cids.counter as string, '--peer', victim.peerId, '--input', '{"numbers":[1]}'])
      expect(r.code).not.toBe(0)
      codes.push(r.json.error.code as string)
    }
    expect(codes.at(-1)).toBe('RL-4003')
    expect(new Set(codes)).toEqual(new Set(codes.length === 1 ? ['RL-4003'] : ['RL-4002', 'RL-4003']))
    const open = (await ok(a, ['peers'])).peers.find((p: { peer: string }) => p.peer === victim.peerId)
    expect(open.breaker).toBe('open')

    const restarted = await startNode(victim.name, victim.home, { bootstrap: [a.addr] })
    if (victim === b) b = restarted
    else if (victim === c) c = restarted
    else d = restarted
    // A's breaker half-opens on a timer of its own (1.5 s here); A logs each transition.
    await untilOutput(a, new RegExp(`breaker for peer ${victim.peerId}: open`), 'the breaker to open', { from: watchFrom })
    await untilOutput(a, new RegExp(`breaker for peer ${victim.peerId}: half-open`), 'the breaker to half-open', { from: watchFrom, timeoutMs: 10_000 })
    expect((await ok(a, ['peers'])).peers.find((p: { peer: string }) => p.peer === victim.peerId).breaker).toBe('half-open')
    const probe = await ok(a, ['delegate', cids.counter as string, '--peer', victim.peerId, '--input', '{"numbers":[7]}'])
    expect(probe.delegation).toMatchObject({ status: 'completed', peer: victim.peerId })
    const after = (await ok(a, ['peers'])).peers.find((p: { peer: string }) => p.peer === victim.peerId)
    expect(after.breaker).toBe('closed')
  })

  it('while a node runs (it holds the run database), run commands on its data dir go through it: list, replay, explain, export, import, gc', async () => {
    const listed = (await ok(c, ['runs', 'list'])).runs as Array<{ run_id: string, status: string, artifact_hash: string }>
    const run = listed.find((r) => r.status === 'completed' && r.artifact_hash === cids.counter)
    expect(run, JSON.stringify(listed)).toBeDefined()
    const runId = (run as { run_id: string }).run_id
    expect((await ok(c, ['replay', runId])).verified).toBe(true)
    expect((await ok(c, ['explain-failure', runId])).status).toBe('completed')
    const carDir = await mkdtemp(join(os.tmpdir(), 'reach-mesh-car-'))
    dirs.push(carDir)
    const car = join(carDir, 'run.car')
    await ok(c, ['export', runId, '-o', car])
    // Imported into another running node, which verifies it all before it keeps it.
    const before = (await ok(b, ['runs', 'list'])).runs as Array<{ run_id: string, status: string }>
    expect((await ok(b, ['import', car])).run_id).toBe(runId)
    expect((await cli(b, ['import', car])).json.error.code).toBe('RL-1008')
    expect((await ok(b, ['replay', runId])).verified).toBe(true)
    const after = (await ok(b, ['runs', 'list'])).runs as Array<{ run_id: string, status: string }>
    expect(after.map((r) => r.run_id).sort()).toEqual([...before.map((r) => r.run_id), runId].sort())
    // gc through the node: the oldest finished run goes, the rest stay.
    const finished = after.filter((r) => r.status !== 'running')
    const gc = await ok(b, ['gc', '--keep-last', String(finished.length - 1)])
    expect(gc.removed).toEqual([finished.at(-1)?.run_id])
    expect(((await ok(b, ['runs', 'list'])).runs as unknown[]).length).toBe(after.length - 1)
  })

  it('SIGTERM stops a node cleanly: exit 0, its endpoint file gone', async () => {
    expect(await stopNode(d, 'SIGTERM')).toBe(0)
    await expect(readFile(join(d.home, 'node.json'), 'utf8')).rejects.toThrow()
    expect(d.output.join('')).toContain('stopped')
  })

  it('a second daemon on the same data dir is refused (RL-6005), and a bad bootstrap address is RL-1011', async () => {
    const second = await cli(a, ['node', 'start'])
    expect(second.code).not.toBe(0)
    expect(second.json.error.code).toBe('RL-6005')
    const badHome = await newHome('bad', {})
    dirs.push(badHome)
    const bad = await cli({ home: badHome }, ['node', 'start', '--bootstrap', 'not-a-multiaddr'])
    expect(bad.json.error.code).toBe('RL-1011')
  })

  it('the control API refuses a request without the right token, and the node keeps serving', async () => {
    const endpoint = JSON.parse(await readFile(join(a.home, 'node.json'), 'utf8')) as { api: string }
    for (const headers of [{}, { authorization: 'Bearer wrong' }]) {
      const res = await fetch(`${endpoint.api}/v1/status`, { headers })
      expect(res.status).toBe(401)
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('RL-6001')
    }
    expect((await ok(a, ['node', 'status'])).peer_id).toBe(a.peerId)
  })
})
