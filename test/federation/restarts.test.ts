/**
 * Restarts rejoin the federation (issue 12 §2): five real nodes (child processes on loopback),
 * made with `reach init` once and never configured again. Each is restarted once, by SIGKILL or
 * SIGTERM; the node comes back on the port `reach init` chose, redials the peers it remembers
 * (libp2p's peer store in its data dir, keep-alive tags), and they redial it. At the end the
 * mesh is fully connected again and every node delegates to its neighbour.
 *
 * Waits are on what the nodes print ("peer <id> connected"), never on sleeps.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { callApi } from '../../node/api-client.ts'
import { cli, newHome, outputLength, startNode, stopNode, untilOutput, type MeshNode } from './cluster.ts'

const COUNTER = fileURLToPath(new URL('../../packs/examples/counter', import.meta.url))
const N = 5

const homes: string[] = []
const nodes: MeshNode[] = []
let counter = ''
let keyDir = ''

async function ok (home: string, args: string[]): Promise<any> {
  const r = await cli({ home }, args)
  if (r.code !== 0 || r.json?.ok !== true) throw new Error(`reach ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
  return r.json
}

/** The peers a node's control API says it is connected to. */
async function connected (node: MeshNode): Promise<string[]> {
  return (await callApi<{ connected: string[] }>(node.home, 'GET', '/v1/peers')).connected
}

/** Until `node` prints that it connected to each of `peers`, counting from output position `from`. */
async function untilConnected (node: MeshNode, peers: MeshNode[], from: number): Promise<void> {
  await Promise.all(peers.map(async (p) => await untilOutput(node, new RegExp(`peer ${p.peerId} connected$`), `a connection to ${p.name}`, { from, timeoutMs: 30_000 })))
}

beforeAll(async () => {
  keyDir = await mkdtemp(join(os.tmpdir(), 'reach-restarts-key-'))
  const keyPath = join(keyDir, 'publisher.key')
  for (let i = 0; i < N; i++) homes.push(await newHome(`r${i}`, { granted_capabilities: ['reach.delegate'] }))
  await ok(homes[0] as string, ['keygen', '--publisher', '--output', keyPath])
  const pub = JSON.parse(await readFile(keyPath, 'utf8')).public_key as string
  // `reach init` once per node: it chooses the listen port, and n1…n4 save n0 as their bootstrap.
  const first = await ok(homes[0] as string, ['init'])
  const bootstrap = `${first.config.listen[0] as string}/p2p/${first.peer_id as string}`
  for (const home of homes.slice(1)) await ok(home, ['init', '--bootstrap', bootstrap])
  for (const home of homes) await ok(home, ['trust', 'add', pub, '--name', 'restart test publisher'])
  counter = (await ok(homes[0] as string, ['pack', 'build', COUNTER])).cid
  await ok(homes[0] as string, ['pack', 'sign', counter, '--key', keyPath])
  nodes.push(await startNode('n0', homes[0] as string))
  nodes.push(...await Promise.all(homes.slice(1).map(async (home, i) => await startNode(`n${i + 1}`, home))))
  await ok(homes[0] as string, ['pack', 'publish', counter])
}, 120_000)

afterAll(async () => {
  await Promise.all(nodes.map(async (n) => await stopNode(n)))
  await Promise.all([...homes, keyDir].map(async (dir) => { await rm(dir, { recursive: true, force: true }) }))
})

describe('restarts rejoin the federation', () => {
  it('reach init chose each node\'s port once: the node listens on what config.json says', async () => {
    for (const n of nodes) {
      const config = JSON.parse(await readFile(join(n.home, 'config.json'), 'utf8')) as { listen: string[] }
      expect(config.listen[0]).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/[1-9]\d*$/)
      expect(n.addr).toBe(`${config.listen[0] as string}/p2p/${n.peerId}`)
    }
  })

  it('reach peers connect links the mesh at runtime; a bad address is RL-1011, a silent one RL-4002', async () => {
    for (let i = 0; i < N; i++) {
      for (let j = i + 1; j < N; j++) {
        const r = await ok(homes[i] as string, ['peers', 'connect', (nodes[j] as MeshNode).addr])
        expect(r.peer).toBe((nodes[j] as MeshNode).peerId)
      }
    }
    // Each side prints the connection (n1…n4 printed n0's at start, through their bootstrap).
    await Promise.all(nodes.map(async (n) => await untilConnected(n, nodes.filter((p) => p !== n), 0)))
    for (const n of nodes) expect((await connected(n)).sort()).toEqual(nodes.filter((p) => p !== n).map((p) => p.peerId).sort())
    const bad = await cli({ home: homes[0] as string }, ['peers', 'connect', 'not-a-multiaddr'])
    expect({ code: bad.code, error: bad.json?.error?.code }).toEqual({ code: 2, error: 'RL-1011' })
    const silent = await cli({ home: homes[0] as string }, ['peers', 'connect', '/ip4/127.0.0.1/tcp/1'])
    expect({ code: silent.code, error: silent.json?.error?.code }).toEqual({ code: 1, error: 'RL-4002' })
  }, 60_000)

  it('every node restarted once (SIGKILL and SIGTERM) ends fully connected and delegating, with no config edited', async () => {
    const configs = await Promise.all(homes.map(async (h) => await readFile(join(h, 'config.json'), 'utf8')))
    for (let k = 0; k < N; k++) {
      const old = nodes[k] as MeshNode
      const others = nodes.filter((n) => n !== old)
      const marks = others.map(outputLength)
      await stopNode(old, k % 2 === 0 ? 'SIGKILL' : 'SIGTERM')
      const back = await startNode(old.name, old.home)
      nodes[k] = back
      expect(back.addr).toBe(old.addr)
      // It redials the peers it remembers, and they redial it: each side sees the other again.
      await untilConnected(back, others, 0)
      await Promise.all(others.map(async (n, i) => await untilOutput(n, new RegExp(`peer ${back.peerId} connected$`), `${back.name} back`, { from: marks[i] as number, timeoutMs: 30_000 })))
    }
    for (const n of nodes) expect((await connected(n)).sort()).toEqual(nodes.filter((p) => p !== n).map((p) => p.peerId).sort())
    // Each node delegates to its neighbour (which fetches the pack from n0 through the DHT).
    for (let i = 0; i < N; i++) {
      const to = nodes[(i + 1) % N] as MeshNode
      const r = await ok(homes[i] as string, ['delegate', counter, '--peer', to.peerId, '--input', '{"numbers":[1,2]}'])
      expect(r.delegation).toMatchObject({ status: 'completed', peer: to.peerId, output: { count: 2, sum: 3 } })
    }
    // Nobody edited a config: what `reach init` wrote is what is there.
    expect(await Promise.all(homes.map(async (h) => await readFile(join(h, 'config.json'), 'utf8')))).toEqual(configs)
  }, 240_000)

  it('negative control: a node that forgets its peers and takes a new port (as every start did before) comes back alone; on its kept port its peers find it again', async () => {
    const n0 = nodes[0] as MeshNode
    const others = nodes.slice(1)
    await stopNode(n0, 'SIGKILL')
    await rm(join(n0.home, 'peerstore'), { recursive: true, force: true })
    const alone = await startNode('n0', n0.home, { listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes[0] = alone
    expect(alone.addr).not.toBe(n0.addr)
    // No bootstrap, no memory, an address nobody has: nobody can reach it, and it dials nobody.
    expect(await connected(alone)).toEqual([])
    const marks = others.map(outputLength)
    await stopNode(alone)
    // Its memory is still gone, but its port is the one its peers remember: they redial it.
    const back = await startNode('n0', n0.home)
    nodes[0] = back
    expect(back.addr).toBe(n0.addr)
    await Promise.all(others.map(async (n, i) => await untilOutput(n, new RegExp(`peer ${back.peerId} connected$`), 'n0 back on its port', { from: marks[i] as number, timeoutMs: 60_000 })))
    expect((await connected(back)).sort()).toEqual(others.map((p) => p.peerId).sort())
  }, 120_000)
})
