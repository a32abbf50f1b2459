/**
 * Replay witnesses over real libp2p on loopback, nodes built by `createNode` in one process:
 * checkpoint gossip, receipts, equivocation evidence and what it does to the liar, the head
 * store's rules (stale is never equivocation; a race never rolls a head back).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { createCheckpoint, encodeCheckpoint } from '../../protocol/checkpoint.ts'
import { encodeGossip, gossipTopic } from '../../protocol/gossip.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { buildBundle } from '../../packs/bundle.ts'
import { signPack } from '../../packs/trust.ts'
import { createNode, type NetworkServices, type ReachNode } from '../../node/create.ts'
import { homePaths, type HomePaths } from '../../node/home.ts'
import { lineLogger, silentLogger } from '../../node/logger.ts'
import { within } from '../await.ts'
import type { EvidenceEntry, ReceiptEntry } from '../../federation/witness.ts'

type Whole = ReachNode & { network: NetworkServices }
const COUNTER = fileURLToPath(new URL('../../packs/examples/counter', import.meta.url))
const publisher = generateKeyPair()
const dirs: string[] = []
const nodes: Whole[] = []

async function home (name: string, policy: Record<string, unknown> = {}): Promise<HomePaths> {
  const root = await mkdtemp(join(os.tmpdir(), `reach-witness-${name}-`))
  dirs.push(root)
  const h = homePaths(root)
  await mkdir(h.root, { recursive: true })
  await writeFile(h.trust, JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'test', added_at: '2026-01-01T00:00:00.000Z' }] }))
  await writeFile(h.policy, JSON.stringify({ version: 1, ...policy }))
  return h
}

async function started (name: string, policy: Record<string, unknown> = {}, bootstrap?: Whole): Promise<Whole> {
  const addr = bootstrap?.network.host.getMultiaddrs()[0]?.toString()
  const node = await createNode({ home: await home(name, policy), logger: process.env.WDEBUG ? lineLogger({ write: (l) => { process.stderr.write(name + ' ' + l + '\n') } }) : silentLogger, network: { apiPort: false, pingIntervalMs: 3_600_000, ...(addr === undefined ? {} : { bootstrap: [addr] }) } }) as Whole
  nodes.push(node)
  await node.start()
  return node
}

async function counterIn (node: Whole): Promise<string> {
  const built = await buildBundle(COUNTER)
  await node.local.packs.put(built.bytes, [signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))])
  return built.cid
}

/** Resolves once every one of `peers` has told `node` it subscribes to `topic` (gossipsub's own event). */
async function subscribed (node: Whole, topic: string, peers: readonly Whole[]): Promise<void> {
  const pubsub = node.network.host.services.pubsub
  const want = new Set(peers.map((p) => p.network.host.peerId.toString()))
  const done = (): boolean => {
    const have = new Set(pubsub.getSubscribers(topic).map(String))
    return [...want].every((p) => have.has(p))
  }
  if (done()) return
  await within(new Promise<void>((resolve) => {
    const check = (): void => { if (done()) { pubsub.removeEventListener('subscription-change', check); resolve() } }
    pubsub.addEventListener('subscription-change', check)
  }), `${[...want].join(', ')} subscribed to ${topic}`)
}

/** The next `n` events of `type` a node's witness emits that match `filter`. */
async function next<T> (node: Whole, type: 'receipt' | 'evidence' | 'checkpoint', n: number, filter: (e: T) => boolean = () => true): Promise<T[]> {
  const seen: T[] = []
  return await within(new Promise<T[]>((resolve) => {
    const on = (e: Event): void => {
      const detail = (e as CustomEvent<T>).detail
      if (!filter(detail)) return
      seen.push(detail)
      if (seen.length >= n) { node.network.witness.removeEventListener(type, on); resolve(seen) }
    }
    node.network.witness.addEventListener(type, on)
  }), `${n} ${type} events`, 20_000)
}

afterAll(async () => {
  await Promise.allSettled(nodes.map(async (n) => { await n.stop() }))
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('replay witnesses', () => {
  it('a run on A is witnessed by B and C, and every node holds both receipts', async () => {
    const a = await started('a')
    const b = await started('b', { verify_sample_rate: 1 }, a)
    const c = await started('c', { verify_sample_rate: 1 }, a)
    const cid = await counterIn(a)
    await counterIn(b)
    await counterIn(c)
    const topic = gossipTopic('default', 'checkpoints')
    await subscribed(a, topic, [b, c])
    await subscribed(b, gossipTopic('default', 'receipts'), [a])
    await subscribed(c, gossipTopic('default', 'receipts'), [a])

    const receipts = [a, b, c].map(async (n) => await next<ReceiptEntry>(n, 'receipt', 2))
    const r = await a.network.run({ pack: await a.local.packs.get(cid), input: { numbers: [1, 2] } })
    const got = await Promise.all(receipts)
    for (const list of got) {
      expect(list.every((e) => e.run_id === r.record.run_id && e.checkpoint_id === r.checkpoint.checkpoint_id)).toBe(true)
      expect(new Set(list.map((e) => e.signer)).size).toBe(2)
    }
    const held = await a.network.witnessStore?.runs({ run: r.record.run_id })
    expect(held?.[0]?.receipts.map((e) => e.signer).sort()).toEqual([b, c].map((n) => createSigner(n.local.seed).publicKey).sort())
  }, 60_000)

  it('an equivocating signer is caught by every honest node, which then refuses to deal with it', async () => {
    const [a] = nodes as [Whole]
    const liar = await started('liar', {}, a)
    const others = nodes.filter((n) => n !== liar)
    const topic = gossipTopic('default', 'checkpoints')
    for (const n of others) await subscribed(liar, topic, [n])
    // Two signed histories of one log at one position, each told once.
    const signer = createSigner(liar.local.seed)
    const base = { kind: 'log' as const, log_id: 'a'.repeat(64), at_seq: 3, state_hash: 'b'.repeat(64), merkle_root: 'c'.repeat(64), timestamp: 10 }
    const one = encodeCheckpoint(createCheckpoint({ ...base, log_hash: 'd'.repeat(64) }, signer))
    const two = encodeCheckpoint(createCheckpoint({ ...base, log_hash: 'e'.repeat(64) }, signer))
    const evidence = others.map(async (n) => await next<EvidenceEntry>(n, 'evidence', 1))
    const pubsub = liar.network.host.services.pubsub
    await pubsub.publish(topic, encodeGossip('default', { kind: 'checkpoints', checkpoint: one }))
    await pubsub.publish(topic, encodeGossip('default', { kind: 'checkpoints', checkpoint: two }))
    const found = await Promise.all(evidence)
    const liarId = liar.network.host.peerId.toString()
    for (const [i, [e]] of found.entries()) {
      expect(e?.type).toBe('reach.equivocation')
      expect(e?.signer).toBe(signer.publicKey)
      const n = others[i] as Whole
      expect(n.network.peers.untrusted(liarId)).toBe(true)
      expect(n.network.peers.breakerState(liarId)).toBe('open')
    }
  }, 60_000)
})
