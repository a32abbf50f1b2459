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
import { routed } from './mesh-helpers.ts'
import type { AuditEvent, RunSource } from '../../federation/components.ts'
import { LogServer } from '../../federation/log-server.ts'
import { AUDIT_DB, AuditLedger } from '../../node/audit.ts'
import { createHost } from '../../node/host.ts'
import { seededRandom } from '../../node/random.ts'
import type { EvidenceEntry, ReceiptEntry } from '../../federation/witness.ts'

type Whole = ReachNode & { network: NetworkServices }
const COUNTER = fileURLToPath(new URL('../../packs/examples/counter', import.meta.url))
const publisher = generateKeyPair()
const dirs: string[] = []
const nodes: Whole[] = []

async function home (name: string, policy: Record<string, unknown> = {}, trusting = true): Promise<HomePaths> {
  const root = await mkdtemp(join(os.tmpdir(), `reach-witness-${name}-`))
  dirs.push(root)
  const h = homePaths(root)
  await mkdir(h.root, { recursive: true })
  await writeFile(h.trust, JSON.stringify({ version: 1, keys: trusting ? [{ public_key: publisher.publicKey, name: 'test', added_at: '2026-01-01T00:00:00.000Z' }] : [] }))
  await writeFile(h.policy, JSON.stringify({ version: 1, ...policy }))
  return h
}

async function started (name: string, policy: Record<string, unknown> = {}, bootstrap?: Whole, trusting = true): Promise<Whole> {
  const addr = bootstrap?.network.host.getMultiaddrs()[0]?.toString()
  const node = await createNode({ home: await home(name, policy, trusting), logger: process.env.WDEBUG ? lineLogger({ write: (l) => { process.stderr.write(name + ' ' + l + '\n') } }) : silentLogger, network: { apiPort: false, pingIntervalMs: 3_600_000, ...(addr === undefined ? {} : { bootstrap: [addr] }) } }) as Whole
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

/**
 * Resolves once `peer` is in `node`'s mesh for `topic`: only then does a publish right after
 * connecting reach it (before, the outbound stream may not be open yet). The mesh changes at
 * gossipsub's heartbeat, so that is the event to wait on.
 */
async function meshed (node: Whole, topic: string, peer: Whole): Promise<void> {
  const pubsub = node.network.host.services.pubsub as unknown as EventTarget & { getMeshPeers (topic: string): unknown[] }
  const id = peer.network.host.peerId.toString()
  const done = (): boolean => pubsub.getMeshPeers(topic).map(String).includes(id)
  if (done()) return
  await within(new Promise<void>((resolve) => {
    const check = (): void => { if (done()) { pubsub.removeEventListener('gossipsub:heartbeat', check); resolve() } }
    pubsub.addEventListener('gossipsub:heartbeat', check)
  }), `${id} in the mesh of ${topic}`)
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
    // B's receipt reaches C through A: A forwards to its mesh, so wait until both are in it.
    const receipts = gossipTopic('default', 'receipts')
    for (const n of [b, c]) {
      await meshed(a, topic, n)
      await meshed(a, receipts, n)
      await meshed(n, receipts, a)
    }

    const held = [a, b, c].map(async (n) => await next<ReceiptEntry>(n, 'receipt', 2))
    const r = await a.network.run({ pack: await a.local.packs.get(cid), input: { numbers: [1, 2] } })
    const got = await Promise.all(held)
    for (const list of got) {
      expect(list.every((e) => e.run_id === r.record.run_id && e.checkpoint_id === r.checkpoint.checkpoint_id)).toBe(true)
      expect(new Set(list.map((e) => e.signer)).size).toBe(2)
    }
    const stored = await a.network.witnessStore?.runs({ run: r.record.run_id })
    expect(stored?.[0]?.receipts.map((e) => e.signer).sort()).toEqual([b, c].map((n) => createSigner(n.local.seed).publicKey).sort())
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

  it('an older checkpoint of a log is stale: ignored, never a new head, never equivocation', async () => {
    const [a, b] = nodes as [Whole, Whole]
    const topic = gossipTopic('default', 'checkpoints')
    await subscribed(a, topic, [b])
    const signer = createSigner(a.local.seed)
    const log = 'f'.repeat(64)
    const at = (seq: number, hash: string): string => encodeCheckpoint(createCheckpoint({ kind: 'log', log_id: log, at_seq: seq, state_hash: hash, log_hash: hash, merkle_root: hash, timestamp: seq }, signer))
    const newer = at(5, '1'.repeat(64))
    const older = at(3, '2'.repeat(64))
    const pubsub = a.network.host.services.pubsub
    const head = next<{ checkpoint_id: string }>(b, 'checkpoint', 1, (e) => e.checkpoint_id === JSON.parse(newer).checkpoint_id)
    await pubsub.publish(topic, encodeGossip('default', { kind: 'checkpoints', checkpoint: newer }))
    await head
    const ignored = b.network.metrics.gossipMessages.get()
    let evidence = 0
    const onEvidence = (): void => { evidence++ }
    b.network.witness.addEventListener('evidence', onEvidence)
    // The stale one, then a marker after it (a new log: no consistency proof to ask for): once
    // the marker is in, the stale one was handled.
    const marker = encodeCheckpoint(createCheckpoint({ kind: 'log', log_id: 'e'.repeat(64), at_seq: 0, state_hash: '3'.repeat(64), log_hash: '3'.repeat(64), merkle_root: '3'.repeat(64), timestamp: 0 }, signer))
    const markerSeen = next<{ checkpoint_id: string }>(b, 'checkpoint', 1, (e) => e.checkpoint_id === JSON.parse(marker).checkpoint_id)
    await pubsub.publish(topic, encodeGossip('default', { kind: 'checkpoints', checkpoint: older }))
    await pubsub.publish(topic, encodeGossip('default', { kind: 'checkpoints', checkpoint: marker }))
    await markerSeen
    b.network.witness.removeEventListener('evidence', onEvidence)
    expect(evidence).toBe(0)
    expect(b.network.witnessStore?.head(signer.publicKey, log)?.at_seq).toBe(5)
    expect(await b.network.witnessStore?.hasCheckpoint(JSON.parse(older).checkpoint_id)).toBe(false)
    expect(b.network.peers.untrusted(a.network.host.peerId.toString())).toBe(false)
    const after = await b.network.metrics.gossipMessages.get()
    const count = (m: Awaited<typeof ignored>, result: string): number => m.values.filter((v) => v.labels.direction === 'in' && v.labels.result === result).reduce((n, v) => n + v.value, 0)
    expect(count(after, 'checkpoints:ignore') - count(await ignored, 'checkpoints:ignore')).toBeGreaterThanOrEqual(1)
  }, 60_000)

  it('a peer flooding invalid checkpoints is rejected and scored down, and honest checkpoints still reach everyone', async () => {
    const [a, b, c] = nodes as [Whole, Whole, Whole]
    const flooder = await started('flooder', {}, b)
    const topic = gossipTopic('default', 'checkpoints')
    await meshed(flooder, topic, b)
    await subscribed(a, topic, [b, c])
    const signer = createSigner(flooder.local.seed)
    const bad = (i: number): Uint8Array => {
      const hash = i.toString(16).padStart(64, '0')
      const cp = JSON.parse(encodeCheckpoint(createCheckpoint({ kind: 'log', log_id: '9'.repeat(64), at_seq: i, state_hash: hash, log_hash: hash, merkle_root: hash, timestamp: i }, signer)))
      cp.signature = cp.signature.slice(0, -2) + (cp.signature.endsWith('00') ? '11' : '00')
      return encodeGossip('default', { kind: 'checkpoints', checkpoint: JSON.stringify(cp, Object.keys(cp).sort()) + '\n' })
    }
    const honest = createSigner(a.local.seed)
    const good = encodeCheckpoint(createCheckpoint({ kind: 'log', log_id: '8'.repeat(64), at_seq: 0, state_hash: '7'.repeat(64), log_hash: '7'.repeat(64), merkle_root: '7'.repeat(64), timestamp: 0 }, honest))
    const id = JSON.parse(good).checkpoint_id as string
    const arrivals = [b, c].map(async (n) => await next<{ checkpoint_id: string }>(n, 'checkpoint', 1, (e) => e.checkpoint_id === id))
    const pubsub = flooder.network.host.services.pubsub
    const flooderId = flooder.network.host.peerId.toString()
    const firstReject = within(new Promise<string>((resolve) => {
      b.network.witness.addEventListener('validated', (e) => {
        const d = (e as CustomEvent<{ from: string, result: string, why: string }>).detail
        if (d.from === flooderId && d.result === 'reject') resolve(d.why)
      })
    }), 'the flood rejected at b')
    await Promise.all(Array.from({ length: 200 }, async (_, i) => { await pubsub.publish(topic, bad(i + 1)) }))
    expect(await firstReject).toMatch(/^RL-2101 /)
    await a.network.host.services.pubsub.publish(topic, encodeGossip('default', { kind: 'checkpoints', checkpoint: good }))
    await Promise.all(arrivals)
    const rejected = (await b.network.metrics.gossipMessages.get()).values.filter((v) => v.labels.direction === 'in' && v.labels.result === 'checkpoints:reject').reduce((n, v) => n + v.value, 0)
    expect(rejected).toBeGreaterThan(0)
    // gossipsub caches a score for one heartbeat: read it after the next ones.
    const bPubsub = b.network.host.services.pubsub as unknown as EventTarget & { getScore (peer: string): number }
    const score = await within(new Promise<number>((resolve) => {
      let beats = 0
      const beat = (): void => {
        const now = bPubsub.getScore(flooderId)
        if (now < -80 || ++beats >= 3) { bPubsub.removeEventListener('gossipsub:heartbeat', beat); resolve(now) }
      }
      bPubsub.addEventListener('gossipsub:heartbeat', beat)
    }), 'heartbeats at b')
    // Under the graylist threshold: what it sends now is dropped before it is parsed.
    expect(score).toBeLessThan(-80)
    // None of the garbage became a head anywhere.
    expect(b.network.witnessStore?.head(signer.publicKey, '9'.repeat(64))).toBeUndefined()
    expect(c.network.witnessStore?.head(signer.publicKey, '9'.repeat(64))).toBeUndefined()
  }, 60_000)

  it('a node that does not trust a pack\'s publisher still verifies a run of it (and says so), but never runs it; with verify_untrusted_packs off it refuses', async () => {
    const [a] = nodes as [Whole]
    const cid = await counterIn(a)
    const r = await a.network.run({ pack: await a.local.packs.get(cid), input: { numbers: [9] } })
    const sceptic = await started('sceptic', {}, a, false)
    const strict = await started('strict', { verify_untrusted_packs: false }, a, false)
    const aId = a.network.host.peerId.toString()
    await routed([a, sceptic, strict].map((n) => n.network.host))
    await a.network.exchange.publish(cid)
    const verdict = await sceptic.network.verify(aId, r.record.run_id)
    expect(verdict.verified).toBe(true)
    expect(verdict.pack_trusted).toBe(false)
    expect(verdict.receipt?.checkpoint_id).toBe(r.checkpoint.checkpoint_id)
    // Replayed, not admitted: a run of it here is still refused by policy.
    const run = await sceptic.network.packs.get(cid).then(() => 'admitted', (err: { code?: string }) => err.code)
    expect(run).toBe('RL-3006')
    // The control: without the policy, verification needs trust like a run.
    const refused = await strict.network.verify(aId, r.record.run_id).then(() => 'verified', (err: { code?: string }) => err.code)
    expect(refused).toBe('RL-3006')
  }, 60_000)

  it('a node that rewrites its audit ledger is caught by the next witness that compares its heads, and its evidence reaches everyone', async () => {
    const [a, b, c] = nodes as [Whole, Whole, Whole]
    // The liar: a host with the Reach gossip topics and a log server for its ledger, and two
    // ledgers under one key from one genesis: the honest one, and one with fact 7 rewritten.
    const seed = generateKeyPair().seed
    const key = createSigner(seed)
    const clock = { now: () => 1_700_000_000_000 }
    const open = async (): Promise<AuditLedger> => {
      const dir = await mkdtemp(join(os.tmpdir(), 'reach-witness-ledger-'))
      dirs.push(dir)
      return await AuditLedger.open({ path: join(dir, AUDIT_DB), signer: key, clock, random: seededRandom('liar ledger') })
    }
    const fact = (i: number, detail = `delegation ${i}`): AuditEvent => ({ type: 'delegation.sent', peer: a.network.host.peerId.toString(), detail })
    const honest = await open()
    const forged = await open()
    for (let i = 0; i < 20; i++) honest.record(fact(i))
    for (let i = 0; i < 30; i++) forged.record(i === 7 ? fact(i, 'nothing was sent') : fact(i))
    await honest.flush()
    await forged.flush()
    const topics = (['checkpoints', 'receipts', 'evidence'] as const).map((k) => gossipTopic('default', k))
    const host = await createHost({ seed, topics, bootstrap: [String(b.network.host.getMultiaddrs()[0])] })
    const noRuns = { record: async () => { throw new Error('none') }, checkpointText: async () => { throw new Error('none') }, stream: () => (async function * () {})() } as unknown as RunSource
    let logs = new LogServer({ registrar: host, runs: noRuns, logger: silentLogger, ledger: honest })
    await logs.start()
    const pubsub = host.services.pubsub as unknown as { subscribe (t: string): void, publish (t: string, d: Uint8Array): Promise<unknown> }
    for (const t of topics) pubsub.subscribe(t)
    const liar = { network: { host } } as unknown as Whole
    try {
      await meshed(liar, topics[0] as string, b)
      const first = await honest.checkpoint()
      const accepted = next<{ checkpoint_id: string }>(b, 'checkpoint', 1, (e) => e.checkpoint_id === JSON.parse(first).checkpoint_id)
      await pubsub.publish(topics[0] as string, encodeGossip('default', { kind: 'checkpoints', checkpoint: first }))
      await accepted
      // Rewritten and grown: it serves the forged ledger and announces its head.
      await logs.stop()
      logs = new LogServer({ registrar: host, runs: noRuns, logger: silentLogger, ledger: forged })
      await logs.start()
      const caught = [b, c].map(async (n) => await next<EvidenceEntry>(n, 'evidence', 1, (e) => e.signer === key.publicKey))
      await pubsub.publish(topics[0] as string, encodeGossip('default', { kind: 'checkpoints', checkpoint: await forged.checkpoint() }))
      for (const [e] of await Promise.all(caught)) {
        expect(e?.type).toBe('reach.inconsistency')
        expect(e?.at_seq).toBe(20)
      }
      expect(b.network.peers.untrusted(host.peerId.toString())).toBe(true)
      // The newer head was not taken: the head b holds is still the honest one.
      expect(b.network.witnessStore?.head(key.publicKey, honest.logId())?.checkpoint_id).toBe(JSON.parse(first).checkpoint_id)
    } finally {
      await logs.stop()
      await host.stop()
      await honest.close()
      await forged.close()
    }
  }, 60_000)
})

