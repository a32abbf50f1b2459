/**
 * Replay witnesses across real processes (issue 13, "Must hold"): five `reach node start`
 * daemons on loopback and one attacker process (test/fixtures/attackers/), driven through the
 * CLI an operator types. A run on n0 is witnessed by n1 and n2 and every node ends up holding
 * both receipts; an equivocating node is caught, its evidence reaches every honest node (and
 * survives a restart), and delegation to it is refused.
 *
 * Waits are on what the nodes print, never on sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cli, newHome, outputLength, startNode, stopNode, untilOutput, type MeshNode } from './cluster.ts'

const COUNTER = fileURLToPath(new URL('../../packs/examples/counter', import.meta.url))
const EQUIVOCATE = fileURLToPath(new URL('../fixtures/attackers/equivocate.ts', import.meta.url))
const N = 5
/** n1 and n2 witness every run checkpoint they hear of; the others none. */
const WITNESSES = new Set([1, 2])

const homes: string[] = []
const nodes: MeshNode[] = []
const attackers: ChildProcess[] = []
let counter = ''
let keyDir = ''

async function ok (home: string, args: string[]): Promise<any> {
  const r = await cli({ home }, args)
  if (r.code !== 0 || r.json?.ok !== true) throw new Error(`reach ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`)
  return r.json
}

beforeAll(async () => {
  keyDir = await mkdtemp(join(os.tmpdir(), 'reach-witnesses-key-'))
  const keyPath = join(keyDir, 'publisher.key')
  for (let i = 0; i < N; i++) homes.push(await newHome(`w${i}`, WITNESSES.has(i) ? { verify_sample_rate: 1 } : { verify_sample_rate: 0 }))
  await ok(homes[0] as string, ['keygen', '--publisher', '--output', keyPath])
  const pub = JSON.parse(await readFile(keyPath, 'utf8')).public_key as string
  const first = await ok(homes[0] as string, ['init'])
  const bootstrap = `${first.config.listen[0] as string}/p2p/${first.peer_id as string}`
  for (const home of homes.slice(1)) await ok(home, ['init', '--bootstrap', bootstrap])
  for (const home of homes) await ok(home, ['trust', 'add', pub, '--name', 'witness test publisher'])
  counter = (await ok(homes[0] as string, ['pack', 'build', COUNTER])).cid
  await ok(homes[0] as string, ['pack', 'sign', counter, '--key', keyPath])
  nodes.push(await startNode('n0', homes[0] as string))
  nodes.push(...await Promise.all(homes.slice(1).map(async (home, i) => await startNode(`n${i + 1}`, home))))
  await ok(homes[0] as string, ['pack', 'publish', counter])
}, 120_000)

afterAll(async () => {
  for (const a of attackers) a.kill('SIGKILL')
  await Promise.all(nodes.map(async (n) => await stopNode(n)))
  for (const dir of [...homes, keyDir]) await rm(dir, { recursive: true, force: true })
})

/** Until every node has printed that it joined gossip with `count` others (a graft is the first message path there is). */
async function untilReceipts (runId: string, from: number[]): Promise<void> {
  const witnesses = [...WITNESSES].map((i) => (nodes[i] as MeshNode).peerId)
  await Promise.all(nodes.flatMap((n, i) => witnesses.map(async (w) => await untilOutput(n, new RegExp(`receipt for run ${runId} by ${w}:`), `${n.name} to hold ${w}'s receipt`, { from: from[i], timeoutMs: 45_000 }))))
}

describe('replay witnesses, five processes', () => {
  it('a run on n0 is replayed by n1 and n2, and every node shows both receipts', async () => {
    const from = nodes.map(outputLength)
    // Gossip reaches a peer once gossipsub has a stream to it; the run's checkpoint goes out when the run ends.
    await Promise.all(nodes.slice(1).map(async (n) => await untilOutput(nodes[0] as MeshNode, new RegExp(`peer ${n.peerId} connected$`), `n0 to see ${n.name}`, { from: 0 })))
    const run = await ok(homes[0] as string, ['run', counter, '--input', '{"numbers":[4,5,6]}'])
    const runId = run.record.run_id as string
    await untilReceipts(runId, from)
    for (const home of homes) {
      const list = await ok(home, ['checkpoints', 'list', '--run', runId])
      const entry = list.runs[0]
      expect(entry.run_id).toBe(runId)
      expect(entry.checkpoint_id).toBe(run.record.checkpoint_id)
      expect(new Set(entry.receipts.map((r: { peer: string }) => r.peer))).toEqual(new Set([...WITNESSES].map((i) => (nodes[i] as MeshNode).peerId)))
    }
  }, 120_000)

  it('an equivocating node is caught: its evidence reaches every honest node, survives a restart, and delegation to it is refused', async () => {
    const from = nodes.map(outputLength)
    const home = await mkdtemp(join(os.tmpdir(), 'reach-witnesses-liar-'))
    homes.push(home)
    const liar = spawn(process.execPath, [EQUIVOCATE, (nodes[3] as MeshNode).addr], { env: { ...process.env, REACH_HOME: home, MESH: '1' }, stdio: ['ignore', 'pipe', 'pipe'] })
    attackers.push(liar)
    const printed: string[] = []
    liar.stdout?.setEncoding('utf8').on('data', (d: string) => { printed.push(d) })
    liar.stderr?.setEncoding('utf8').on('data', (d: string) => { printed.push(d) })
    const liarNode: MeshNode = { name: 'liar', home, proc: liar, peerId: '', addr: '', output: printed, env: {} }
    const ready = await untilOutput(liarNode, /^ready (\S+)$/, 'the liar to start', { from: 0, timeoutMs: 30_000 })
    const liarId = ready[1] as string
    await untilOutput(liarNode, /^published /, 'the liar to publish both histories', { from: 0, timeoutMs: 30_000 })

    await Promise.all(nodes.map(async (n, i) => await untilOutput(n, new RegExp(`evidence \\S+: reach.equivocation by ${liarId} `), `${n.name} to hold the evidence`, { from: from[i], timeoutMs: 30_000 })))
    for (const h of homes.slice(0, N)) {
      const list = await ok(h, ['evidence', 'list'])
      expect(list.evidence.map((e: { peer: string, type: string }) => `${e.type} ${e.peer}`)).toEqual([`reach.equivocation ${liarId}`])
    }
    // n4 restarts: what it holds is acted on again before any message.
    await stopNode(nodes[4] as MeshNode)
    nodes[4] = await startNode('n4', homes[4] as string)
    const peers = await ok(homes[4] as string, ['peers'])
    const entry = peers.peers.find((p: { peer: string }) => p.peer === liarId)
    expect(entry?.untrusted).toMatch(/reach.equivocation evidence/)
    expect(entry?.breaker).toBe('open')
    const refused = await cli({ home: homes[4] as string }, ['delegate', counter, '--peer', liarId, '--input', '{"numbers":[1]}'])
    expect(refused.code).not.toBe(0)
    expect(refused.json?.error?.code).toBe('RL-4021')
  }, 120_000)
})
