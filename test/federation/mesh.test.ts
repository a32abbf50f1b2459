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
 */
import { spawn } from 'node:child_process'
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cli, newHome, startNode, stopNode, until, type MeshNode } from './cluster.ts'
import { BIN, reach } from '../node/cli/helpers.ts'

const EXAMPLES = fileURLToPath(new URL('../../packs/examples/', import.meta.url))
const FIXTURES = fileURLToPath(new URL('../fixtures/packs/', import.meta.url))
const GRANTS = ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'reach.delegate']
// A's breakers may open after a single request and half-open after 1.5 s, so the test sees both.
const A_ENV = { REACH_BREAKER_VOLUME: '1', REACH_BREAKER_RESET_MS: '1500' }

let a: MeshNode
let b: MeshNode
let c: MeshNode
let d: MeshNode
const cids: Record<string, string> = {}

async function ok (node: { home: string, env?: NodeJS.ProcessEnv }, args: string[]): Promise<any> {
  const r = await cli(node, args)
  if (r.code !== 0 || r.json?.ok !== true) throw new Error(`reach ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
  return r.json
}

async function serving (node: MeshNode): Promise<number> {
  return (await ok(node, ['node', 'status'])).delegations.serving as number
}

beforeAll(async () => {
  const homes = {
    a: await newHome('a', { granted_capabilities: GRANTS }),
    b: await newHome('b', { granted_capabilities: GRANTS }),
    c: await newHome('c', { granted_capabilities: GRANTS }),
    d: await newHome('d', { granted_capabilities: GRANTS, max_delegation_depth: 1 })
  }
  // One publisher, trusted by every node; its packs are built, signed and stored on A only.
  const keyPath = join(homes.a, 'publisher.key')
  await ok({ home: homes.a }, ['keygen', '--publisher', '--output', keyPath])
  const pub = JSON.parse(await readFile(keyPath, 'utf8')).public_key as string
  for (const home of Object.values(homes)) await ok({ home }, ['trust', 'add', pub, '--name', 'mesh test publisher'])
  for (const [name, dir] of [['counter', `${EXAMPLES}counter`], ['nest', `${FIXTURES}nest`], ['slow', `${FIXTURES}slow`]]) {
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
    expect(r.verification).toEqual({ verified: true })
    // The same run, verified again by another node from B's log.
    const again = await ok(c, ['verify-remote', b.peerId, r.delegation.run_id])
    expect(again.verified).toBe(true)
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
    // D has the pack already, and the run has begun (not just its pack fetch) when Ctrl-C comes.
    await ok(d, ['pack', 'fetch', cids.slow as string])
    const child = spawn(process.execPath, [BIN, 'delegate', cids.slow as string, '--peer', d.peerId, '--input', '{"steps":900,"work":30000}'], { env: { ...process.env, REACH_HOME: a.home }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (t: string) => { stderr += t })
    await until('D to start serving', async () => (await serving(d)) > 0 ? true : undefined)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    child.kill('SIGINT')
    expect(await exited).not.toBe(0)
    expect(stderr).toContain('RL-4015')
    await until('D to finish', async () => (await serving(d)) === 0 ? true : undefined)
    const runs = (await ok(d, ['runs', 'list'])).runs as Array<{ status: string, artifact_hash: string }>
    expect(runs.find((r) => r.artifact_hash === cids.slow), JSON.stringify({ runs, stderr })).toMatchObject({ status: 'cancelled' })
  })

  it('cancellation reaches the remote run: it ends with RunCancelled', async () => {
    await ok(c, ['pack', 'fetch', cids.slow as string])
    const started = reach(['delegate', cids.slow as string, '--peer', c.peerId, '--input', '{"steps":900,"work":30000}'], { env: { REACH_HOME: a.home } })
    await until('C to start serving', async () => (await serving(c)) > 0 ? true : undefined)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const status = await ok(a, ['node', 'status'])
    expect(status.delegations.outgoing).toBe(1)
    const list = await fetchDelegations(a)
    const id = list.outgoing[0] as string
    const cancelledAt = Date.now()
    await ok(a, ['cancel', id])
    const done = await started
    expect(done.code).toBe(1)
    expect(done.stdout).toContain('CANCELLED')
    expect(Date.now() - cancelledAt).toBeLessThan(3_000)
    await until('C to finish', async () => (await serving(c)) === 0 ? true : undefined)
    const runs = (await ok(c, ['runs', 'list'])).runs as Array<{ status: string, artifact_hash: string, error: { code: string } | null }>
    expect(runs.find((r) => r.artifact_hash === cids.slow)).toMatchObject({ status: 'cancelled', error: { code: 'RL-4015' } })
  })

  it('a parent run ending cancels its child: cancelling A→B cancels the sub-run B started on C', async () => {
    const cancelledOnC = async (): Promise<number> => ((await ok(c, ['runs', 'list'])).runs as Array<{ status: string, artifact_hash: string }>).filter((r) => r.artifact_hash === cids.slow && r.status === 'cancelled').length
    const before = await cancelledOnC()
    const input = JSON.stringify({ pack: cids.slow, input: { steps: 900, work: 30000 }, peer: c.peerId })
    const started = reach(['delegate', cids.nest as string, '--peer', b.peerId, '--input', input], { env: { REACH_HOME: a.home } })
    await until('C to run the child', async () => (await serving(c)) > 0 ? true : undefined)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const id = (await fetchDelegations(a)).outgoing[0] as string
    await ok(a, ['cancel', id])
    expect((await started).stdout).toContain('CANCELLED')
    await until('C to finish', async () => (await serving(c)) === 0 ? true : undefined)
    await until('the child run to end cancelled', async () => (await cancelledOnC()) === before + 1 ? true : undefined, 5_000)
  })

  it('a peer killed mid-delegation: the run completes elsewhere, the breaker opens; restarted, it half-opens and is used again', async () => {
    const running = ok(a, ['delegate', cids.slow as string, '--input', '{"steps":900,"work":30000}', '--timeout', '60000'])
    const victim = await until('a peer to take the delegation', async () => {
      for (const n of [b, c, d]) if ((await serving(n)) > 0) return n
      return undefined
    })
    await stopNode(victim, 'SIGKILL')
    const r = await running
    expect(r.delegation.status).toBe('completed')
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
    await until('the breaker to half-open', async () => {
      const p = (await ok(a, ['peers'])).peers.find((x: { peer: string }) => x.peer === victim.peerId)
      return p?.breaker === 'half-open' ? true : undefined
    }, 10_000)
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
    const car = join(await mkdtemp(join(os.tmpdir(), 'reach-mesh-car-')), 'run.car')
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
    const bad = await cli({ home: await newHome('bad', {}) }, ['node', 'start', '--bootstrap', 'not-a-multiaddr'])
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

async function fetchDelegations (node: MeshNode): Promise<{ outgoing: string[], serving: unknown[] }> {
  const endpoint = JSON.parse(await readFile(join(node.home, 'node.json'), 'utf8')) as { api: string }
  const token = (await readFile(join(node.home, 'api.token'), 'utf8')).trim()
  const res = await fetch(`${endpoint.api}/v1/delegations`, { headers: { authorization: `Bearer ${token}` } })
  return await res.json() as { outgoing: string[], serving: unknown[] }
}
