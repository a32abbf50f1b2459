/**
 * The delegation server and client in one process, over in-memory stream pairs: a real
 * DelegationServer whose RunExecutor returns real signed runs, a real Delegator, a real peer
 * registry. Given a request (crafted or sent by the client), when the server answers, then this
 * result or this code.
 */
import { createHash } from 'node:crypto'
import { streamPair } from '@libp2p/utils'
import { afterEach, describe, expect, it } from 'vitest'
import { MAX_DEPTH, type JsonObject, type JsonValue } from '../../protocol/canonical.ts'
import { createCheckpoint, decodeCheckpoint, encodeCheckpoint, verifyCheckpoint } from '../../protocol/checkpoint.ts'
import { ReachError, isReachError, type ErrorCode } from '../../protocol/errors.ts'
import { headOf, nextEvent, type ChainHead, type Event } from '../../protocol/event.ts'
import { hashCanonical, sha256Hex } from '../../protocol/hash.ts'
import { createSigner, generateKeyPair, type Signer } from '../../protocol/keys.ts'
import { MerkleAccumulator } from '../../protocol/merkle.ts'
import { peerIdOfPublicKey } from '../../protocol/peer-id.ts'
import { fingerprintOf, recordOf, runOutcomeHash } from '../../protocol/run.ts'
import { MAX_FRAME, type DelegateRequest, type Hop, type WireBudget } from '../../protocol/wire.ts'
import { encodeBundle } from '../../packs/bundle.ts'
import type { StoredPack } from '../../packs/trust.ts'
import type { AuditEvent, Clock, ComponentLogger, Dialer, ExecutedRun, Random, Registrar, RunExecutor } from '../../federation/components.ts'
import { DelegationServer, type DelegationServerInit } from '../../federation/delegation-server.ts'
import { ROOT, lineageJson, lineageOf, type Lineage } from '../../federation/delegation.ts'
import { Delegator, type DelegateOptions } from '../../federation/delegator.ts'
import { frames, type FrameStream } from '../../federation/frames.ts'
import { signHop } from '../../federation/hops.ts'
import type { PeerStore } from '../../federation/peer-file.ts'
import { PeerRegistry } from '../../federation/peer-registry.ts'
import { deferred, within } from '../await.ts'

// ---------------------------------------------------------------------------
// Given: identities, a pack, a clock and a seeded random source

interface Identity { peer: string, signer: Signer }

function identity (): Identity {
  const { publicKey, seed } = generateKeyPair()
  return { peer: peerIdOfPublicKey(publicKey), signer: createSigner(seed) }
}

/** A fixed wall clock far from today: a service that read Date.now() instead would see every deadline as past or an hour away. */
const NOW = 1_700_000_000_000
const clock: Clock = { now: () => NOW }
const DEADLINE = NOW + 30_000

/** sha256(seed ‖ counter) as a byte stream: the same seed gives the same ids and nonces. */
function seededRandom (seed: string): Random {
  let counter = 0
  return {
    bytes (n) {
      const out = new Uint8Array(n)
      for (let at = 0; at < n; at += 32) out.set(createHash('sha256').update(`${seed}/${counter++}`).digest().subarray(0, n - at), at)
      return out
    }
  }
}

const logger: ComponentLogger = { forComponent: () => ({ info () {}, warn () {}, debug () {} }) }

const pack: StoredPack = {
  ...encodeBundle({
    name: 'echo',
    version: '1.0.0',
    description: 'answers with its input',
    entry: 'index.js',
    capabilities: [],
    engine: '^1.0.0',
    budget: { fuel: 1000, memory_bytes: 1 << 20, output_bytes: 1024, tool_calls: 4, wall_ms: 1000 }
  }, { 'index.js': new TextEncoder().encode('export {}') }),
  signatures: []
}

async function packs (cid: string): Promise<StoredPack> {
  if (cid !== pack.cid) throw new ReachError('RL-3012', { message: `no pack ${cid}` })
  return pack
}



async function codeOf (promise: Promise<unknown>): Promise<string> {
  try {
    await within(promise, 'a settled promise')
  } catch (err) {
    if (isReachError(err)) return err.code
    throw err
  }
  return 'resolved'
}

// ---------------------------------------------------------------------------
// Given: a run, as a node that ran a pack would hand it back (real log, record, checkpoint)

function executedRun (signer: Signer, input: JsonValue, end: { output: JsonValue } | { status: 'failed' | 'cancelled', error: { code: ErrorCode, message: string } }, budget: JsonObject = {}): ExecutedRun {
  const events: Event[] = []
  let head: ChainHead | null = null
  const append = (type: string, payload: JsonObject): void => {
    const e = nextEvent(head, { type, aggregate_id: 'run', payload })
    events.push(e)
    head = headOf(e)
  }
  append('RunStarted', { pack_cid: pack.cid, pack_name: 'echo', engine_version: '1.0.0', policy_version: hashCanonical({ policy: 1 }), input, input_hash: hashCanonical(input), budget, nonce: sha256Hex(JSON.stringify(input)) })
  if ('output' in end) append('RunCompleted', { output: end.output, output_hash: hashCanonical(end.output), fuel_used: 7 })
  else append(end.status === 'failed' ? 'RunFailed' : 'RunCancelled', { error: end.error, fuel_used: 7 })
  const runId = 'run_' + sha256Hex(`${events[0]?.hash}`).slice(0, 20)
  const record = recordOf(runId, events)
  const last = events.at(-1) as Event
  const merkle = new MerkleAccumulator()
  for (const e of events) merkle.pushEventHash(e.hash)
  const checkpoint = createCheckpoint({ kind: 'run', log_id: (events[0] as Event).hash, at_seq: last.seq, state_hash: runOutcomeHash(record), log_hash: last.hash, merkle_root: merkle.rootHex(), timestamp: last.timestamp }, signer)
  record.checkpoint_id = checkpoint.checkpoint_id
  return {
    record,
    started: events[0] as Event,
    status: record.status as ExecutedRun['status'],
    ...('output' in end ? { output: end.output } : { error: end.error }),
    checkpoint,
    checkpointText: encodeCheckpoint(checkpoint),
    head: { seq: last.seq, hash: last.hash }
  }
}

type Call = Parameters<RunExecutor['run']>[0]

/** A RunExecutor from a function, remembering every call; `started(n)` resolves once n runs began. */
function executor (run: (call: Call) => Promise<ExecutedRun>, maxDepth = 4): RunExecutor & { calls: Call[], started: (n: number) => Promise<void> } {
  const calls: Call[] = []
  const waiting: Array<{ n: number, resolve: () => void }> = []
  return {
    calls,
    maxDepth: () => maxDepth,
    async run (call) {
      calls.push(call)
      for (const w of waiting.filter((w) => calls.length >= w.n)) w.resolve()
      return await run(call)
    },
    async started (n) {
      if (calls.length >= n) return
      const d = deferred()
      waiting.push({ n, resolve: d.resolve })
      await within(d.promise, `${n} run(s) to start`)
    }
  }
}

/** Answers `{echo: input}`. */
const echo = (signer: Signer) => async (call: Call): Promise<ExecutedRun> => executedRun(signer, call.input, { output: { echo: call.input } }, call.budget as JsonObject)

/** Runs until its signal aborts, then ends cancelled with the abort's code (as the run loop records RunCancelled). */
const untilAborted = (signer: Signer, after?: () => Promise<void>) => async (call: Call): Promise<ExecutedRun> => {
  await new Promise<void>((resolve) => {
    if (call.signal.aborted) resolve()
    else call.signal.addEventListener('abort', () => { resolve() }, { once: true })
  })
  await after?.()
  const reason = call.signal.reason as ReachError
  return executedRun(signer, call.input, { status: 'cancelled', error: { code: reason.code, message: reason.message } }, call.budget as JsonObject)
}

// ---------------------------------------------------------------------------
// Given: servers, a dialer that hands each new stream pair's far end to a server, a client

class MemoryRegistrar implements Registrar {
  readonly handled: Array<{ protocol: string, maxInboundStreams: number | undefined }> = []
  readonly unhandled: string[] = []
  async handle (protocol: string, _handler: unknown, options?: { maxInboundStreams?: number }): Promise<void> {
    this.handled.push({ protocol, maxInboundStreams: options?.maxInboundStreams })
  }

  async unhandle (protocol: string): Promise<void> {
    this.unhandled.push(protocol)
  }
}

interface Served { id: Identity, server: DelegationServer, registrar: MemoryRegistrar, exec: ReturnType<typeof executor>, audit: AuditEvent[] }

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

function serve (exec: ReturnType<typeof executor>, init: DelegationServerInit = {}, id = identity()): Served {
  const registrar = new MemoryRegistrar()
  const audit: AuditEvent[] = []
  const server = new DelegationServer({ self: id.peer, registrar, executor: exec, packs, logger, clock, audit: { record: (e) => { audit.push(e) } } }, init)
  cleanups.push(async () => { await server.stop() })
  return { id, server, registrar, exec, audit }
}

interface Client { id: Identity, delegator: Delegator, registry: PeerRegistry, dials: string[] }

async function client (servers: Served[], id = identity()): Promise<Client> {
  let saved: string | undefined
  const store: PeerStore = { read: async () => saved, write: async (text) => { saved = text } }
  const registry = await PeerRegistry.open(store)
  const dials: string[] = []
  const dialer: Dialer = {
    async dial (peer) {
      const s = servers.find((s) => s.id.peer === peer)
      if (s === undefined) throw new ReachError('RL-4002', { message: `no route to ${peer}` })
      dials.push(peer)
      const [near, far] = await streamPair()
      void s.server.handle(far, id.peer)
      return near
    },
    connectedPeers: () => servers.map((s) => s.id.peer)
  }
  const delegator = new Delegator({ self: id.peer, signer: id.signer, dialer, peers: registry, logger, clock, random: seededRandom(id.peer) })
  cleanups.push(async () => { await delegator.stop(); await registry.stop() })
  return { id, delegator, registry, dials }
}

// ---------------------------------------------------------------------------
// Given: requests crafted by hand, sent on a raw stream pair

let nonces = 0

function craft (from: Identity, to: string, over: Partial<DelegateRequest> & { before?: Hop[], signer?: Signer } = {}): DelegateRequest {
  const { before = [], signer = from.signer, ...fields } = over
  const base = { delegation_id: 'a'.repeat(32), pack_cid: pack.cid, input: { n: 1 } as unknown, budget: {} as WireBudget, nonce: sha256Hex(`nonce/${nonces++}`).slice(0, 32), deadline: DEADLINE, ...fields }
  const hop = signHop(signer, base, before, from.peer, to)
  return { v: 1, type: 'delegate', depth: before.length + 1, ancestry: [...before, hop], ...base }
}

async function open (s: Served, caller: string): Promise<{ fs: FrameStream, handled: Promise<void> }> {
  const [near, far] = await streamPair()
  return { fs: frames(near, MAX_FRAME.delegateResult), handled: s.server.handle(far, caller) }
}

/** The server's answer to `request` from `caller`: `result`, or the error frame's code. */
async function ask (s: Served, caller: string, request: DelegateRequest): Promise<string> {
  const { fs, handled } = await open(s, caller)
  await fs.write(request)
  const reply = await fs.read(['result'])
  await fs.close()
  await within(handled, 'the server to let the stream go')
  return reply.type === 'error' ? reply.code : reply.type
}

// ---------------------------------------------------------------------------

describe('lineage codec', () => {
  it('round-trips a lineage and reads anything else as ROOT', () => {
    const a = identity()
    const b = identity()
    const hop = signHop(a.signer, { delegation_id: 'a'.repeat(32), pack_cid: pack.cid, input: null, budget: {}, nonce: 'b'.repeat(32), deadline: DEADLINE }, [], a.peer, b.peer)
    const l: Lineage = { depth: 1, ancestry: [hop], deadline: DEADLINE }
    expect(lineageOf(lineageJson(l))).toEqual(l)
    expect(lineageOf(lineageJson(ROOT))).toEqual(ROOT)
    expect(lineageOf(undefined)).toBe(ROOT)
    expect(lineageOf({ depth: 2, ancestry: lineageJson(l).ancestry as JsonValue[] })).toBe(ROOT)
    expect(lineageOf({ depth: 1, ancestry: [{ from: a.peer }] })).toBe(ROOT)
    expect(lineageOf({ depth: 1, ancestry: lineageJson(l).ancestry as JsonValue[], deadline: 'soon' })).toBe(ROOT)
  })
})

describe('delegation server and client', () => {
  it('a delegation: the peer runs it one hop deeper and its signed result checks out', async () => {
    const b = serve(executor((call) => echo(b.id.signer)(call)))
    const c = await client([b])
    const d = await c.delegator.delegate({ pack_cid: pack.cid, input: { n: 41 }, budget: { fuel: 500 } })

    expect(d).toMatchObject({ peer: b.id.peer, pack_cid: pack.cid, status: 'completed', output: { echo: { n: 41 } }, attempts: [] })
    expect(d.record.fingerprint).toBe(fingerprintOf(d.record))
    const cp = decodeCheckpoint(d.checkpoint)
    expect(() => { verifyCheckpoint(cp, { expectedSigner: b.id.signer.publicKey }) }).not.toThrow()
    expect(d.log_head).toEqual({ seq: cp.at_seq, hash: cp.log_hash })
    // What the executor was handed: the request's budget and a lineage one hop deeper, signed by the client.
    const [call] = b.exec.calls
    expect(call?.budget).toEqual({ fuel: 500 })
    const lineage = lineageOf(call?.lineage)
    expect(lineage).toMatchObject({ depth: 1, deadline: NOW + 30_000 })
    expect(lineage.ancestry.map((h) => [h.from, h.to])).toEqual([[c.id.peer, b.id.peer]])
    // Nothing left in flight on either side.
    expect(c.delegator.list()).toEqual([])
    expect(b.server.list()).toEqual([])
  })

  it('a second delegation to the same peer goes on the stream kept from the first', async () => {
    const b = serve(executor((call) => echo(b.id.signer)(call)))
    const c = await client([b])
    await c.delegator.delegate({ pack_cid: pack.cid, input: 1 })
    const second = await c.delegator.delegate({ pack_cid: pack.cid, input: 2 })
    expect(second.output).toEqual({ echo: 2 })
    expect(c.dials).toEqual([b.id.peer])
    expect(b.exec.calls.length).toBe(2)
  })

  it('start() and stop() are idempotent', async () => {
    const b = serve(executor((call) => echo(b.id.signer)(call)), { maxConcurrent: 2, maxQueue: 3 })
    await b.server.start()
    await b.server.start()
    expect(b.registrar.handled).toEqual([{ protocol: '/reach/delegate/1.0.0', maxInboundStreams: 2 + 3 + 4 }])
    await Promise.all([b.server.stop(), b.server.stop()])
    await b.server.stop()
    expect(b.registrar.unhandled).toEqual(['/reach/delegate/1.0.0'])
  })

  describe('refusals, in SPEC order', () => {
    it('an expired deadline → RL-4008, even with a forged hop (the deadline is checked first)', async () => {
      const b = serve(executor((call) => echo(b.id.signer)(call)))
      const a = identity()
      expect(await ask(b, a.peer, craft(a, b.id.peer, { deadline: NOW - 1 }))).toBe('RL-4008')
      expect(await ask(b, a.peer, craft(a, b.id.peer, { deadline: NOW - 1, signer: identity().signer }))).toBe('RL-4008')
      expect(await ask(b, a.peer, craft(a, b.id.peer, { deadline: NOW + 3_600_001 }))).toBe('RL-4008')
      expect(b.exec.calls).toEqual([])
      expect(b.audit.map((e) => [e.type, e.peer, e.code])).toEqual([['delegation.refused', a.peer, 'RL-4008'], ['delegation.refused', a.peer, 'RL-4008'], ['delegation.refused', a.peer, 'RL-4008']])
    })

    it('a hop not signed by its `from`, or not by the caller → RL-4006, before the nonce is looked at', async () => {
      const b = serve(executor((call) => echo(b.id.signer)(call)))
      const a = identity()
      const good = craft(a, b.id.peer)
      expect(await ask(b, a.peer, good)).toBe('result')
      // The same nonce again, with a forged hop: the hop is what is wrong.
      expect(await ask(b, a.peer, craft(a, b.id.peer, { nonce: good.nonce, signer: identity().signer }))).toBe('RL-4006')
      // A real request from `a`, replayed by someone else.
      expect(await ask(b, identity().peer, craft(a, b.id.peer))).toBe('RL-4006')
      // A hop for another request.
      expect(await ask(b, a.peer, { ...craft(a, b.id.peer), input: { n: 2 } })).toBe('RL-4006')
      expect(b.exec.calls.length).toBe(1)
    })

    it('the same request twice → RL-4009', async () => {
      const b = serve(executor((call) => echo(b.id.signer)(call)))
      const a = identity()
      const once = craft(a, b.id.peer)
      expect(await ask(b, a.peer, once)).toBe('result')
      expect(await ask(b, a.peer, once)).toBe('RL-4009')
      expect(b.exec.calls.length).toBe(1)
    })

    it('deeper than the policy allows → RL-4004, checked before the cycle (RL-4005)', async () => {
      const a = identity()
      const x = identity()
      const shallow = serve(executor((call) => echo(shallow.id.signer)(call), 1))
      // x → a → server: depth 2 over a maximum of 1.
      const before = [signHop(x.signer, { delegation_id: 'a'.repeat(32), pack_cid: pack.cid, input: null, budget: {}, nonce: 'c'.repeat(32), deadline: DEADLINE }, [], x.peer, a.peer)]
      expect(await ask(shallow, a.peer, craft(a, shallow.id.peer, { before }))).toBe('RL-4004')
      // server → a → server at depth 2: too deep is the first answer, not the cycle.
      const back = [signHop(shallow.id.signer, { delegation_id: 'a'.repeat(32), pack_cid: pack.cid, input: null, budget: {}, nonce: 'd'.repeat(32), deadline: DEADLINE }, [], shallow.id.peer, a.peer)]
      expect(await ask(shallow, a.peer, craft(a, shallow.id.peer, { before: back }))).toBe('RL-4004')
      expect(shallow.exec.calls).toEqual([])
    })

    it('a server already in the ancestry → RL-4005 (A→B→A)', async () => {
      const a = identity()
      const b = serve(executor((call) => echo(b.id.signer)(call)))
      const before = [signHop(b.id.signer, { delegation_id: 'a'.repeat(32), pack_cid: pack.cid, input: null, budget: {}, nonce: 'e'.repeat(32), deadline: DEADLINE }, [], b.id.peer, a.peer)]
      expect(await ask(b, a.peer, craft(a, b.id.peer, { before }))).toBe('RL-4005')
      expect(b.exec.calls).toEqual([])
    })

    it('every run slot taken and no queue → RL-4007; a cancel frees the slot', async () => {
      const b = serve(executor((call) => untilAborted(b.id.signer)(call)), { maxConcurrent: 1, maxQueue: 0 })
      const a = identity()
      const held = await open(b, a.peer)
      const first = craft(a, b.id.peer, { delegation_id: '1'.repeat(32) })
      await held.fs.write(first)
      await b.exec.started(1)
      expect(await ask(b, a.peer, craft(a, b.id.peer))).toBe('RL-4007')
      // Busy is this node's state, not the peer's doing: not audited.
      expect(b.audit).toEqual([])
      await held.fs.write({ v: 1, type: 'cancel', delegation_id: first.delegation_id })
      const result = await held.fs.read(['result'])
      expect(result).toMatchObject({ type: 'result', status: 'cancelled', error: { code: 'RL-4015' } })
      await within(held.handled, 'the server to close the cancelled run\'s stream')
      expect(b.server.list()).toEqual([])
    })
  })

  it('the client cancels mid-run → the peer ends the run and the result is `cancelled`', async () => {
    const b = serve(executor((call) => untilAborted(b.id.signer)(call)))
    const c = await client([b])
    const id = 'f'.repeat(32)
    const running = c.delegator.delegate({ pack_cid: pack.cid, input: 3, delegation_id: id })
    await b.exec.started(1)
    expect(c.delegator.list()).toEqual([id])
    expect(b.server.list()).toEqual([{ delegation_id: id, peer: c.id.peer, started: NOW }])
    expect(c.delegator.cancel(id)).toBe(true)
    const d = await within(running, 'the cancelled delegation')
    expect(d).toMatchObject({ status: 'cancelled', error: { code: 'RL-4015' }, peer: b.id.peer })
    expect(b.exec.calls[0]?.signal.aborted).toBe(true)
    expect(c.delegator.cancel(id)).toBe(false)
  })

  it('a delegation id comes from the seeded random source', async () => {
    const b = serve(executor((call) => untilAborted(b.id.signer)(call)))
    const c = await client([b])
    const running = c.delegator.delegate({ pack_cid: pack.cid, input: 3 })
    await b.exec.started(1)
    const expected = Buffer.from(seededRandom(c.id.peer).bytes(16)).toString('hex')
    expect(c.delegator.list()).toEqual([expected])
    expect(c.delegator.cancel(expected)).toBe(true)
    await within(running, 'the cancelled delegation')
  })

  it('a result whose checkpoint another key signed → RL-4014, and the peer is marked', async () => {
    const forger = identity()
    const b = serve(executor(echo(forger.signer)))
    const c = await client([b])
    expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: 1, peer: b.id.peer }))).toBe('RL-4014')
    expect(c.registry.list().find((p) => p.peer === b.id.peer)?.verification_failures).toBe(1)
  })

  it('a named peer that is not a peer id → RL-1011 before anything is dialled', async () => {
    const b = serve(executor((call) => echo(b.id.signer)(call)))
    const c = await client([b])
    expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: 1, peer: 'not-a-peer' }))).toBe('RL-1011')
    expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: 1, peer: 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N' }))).toBe('RL-1011')
    expect(c.dials).toEqual([])
  })

  describe('a duplicate delegation id', () => {
    it('on the client: refused (RL-1011) before anything is sent, and the first stays cancellable', async () => {
      const b = serve(executor((call) => untilAborted(b.id.signer)(call)))
      const c = await client([b])
      const id = '7'.repeat(32)
      const first = c.delegator.delegate({ pack_cid: pack.cid, input: 'first', delegation_id: id })
      await b.exec.started(1)
      expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: 'second', delegation_id: id }))).toBe('RL-1011')
      expect(c.dials.length).toBe(1)
      expect(b.exec.calls.length).toBe(1)
      expect(c.delegator.list()).toEqual([id])
      // `reach cancel` still reaches the first one.
      expect(c.delegator.cancel(id)).toBe(true)
      expect(await within(first, 'the first delegation')).toMatchObject({ status: 'cancelled', error: { code: 'RL-4015' } })
      expect(b.exec.calls[0]?.input).toBe('first')
    })

    it('on the server: two requests with one id (two peers) are both listed, and ending one leaves the other', async () => {
      const b = serve(executor((call) => untilAborted(b.id.signer)(call)))
      const p = identity()
      const q = identity()
      const id = '9'.repeat(32)
      const fromP = await open(b, p.peer)
      const fromQ = await open(b, q.peer)
      await fromP.fs.write(craft(p, b.id.peer, { delegation_id: id }))
      await fromQ.fs.write(craft(q, b.id.peer, { delegation_id: id }))
      await b.exec.started(2)
      expect(b.server.list().map((d) => [d.delegation_id, d.peer]).sort()).toEqual([[id, p.peer], [id, q.peer]].sort())
      await fromP.fs.write({ v: 1, type: 'cancel', delegation_id: id })
      expect(await fromP.fs.read(['result'])).toMatchObject({ status: 'cancelled' })
      await within(fromP.handled, 'p\'s stream to close')
      expect(b.server.list().map((d) => [d.delegation_id, d.peer])).toEqual([[id, q.peer]])
      await fromQ.fs.write({ v: 1, type: 'cancel', delegation_id: id })
      expect(await fromQ.fs.read(['result'])).toMatchObject({ status: 'cancelled' })
      await within(fromQ.handled, 'q\'s stream to close')
      expect(b.server.list()).toEqual([])
    })
  })

  it('a peer that fails internally (RL-4020) is a failed attempt: counted against it, and the next peer serves', async () => {
    // Equal scores are ordered by peer id: the broken peer is the first choice.
    const [first, second] = [identity(), identity()].sort((x, y) => (x.peer < y.peer ? -1 : 1)) as [Identity, Identity]
    const bad = serve(executor(async () => { throw new Error('disk on fire') }), {}, first)
    const ok = serve(executor((call) => echo(ok.id.signer)(call)), {}, second)
    const c = await client([bad, ok])

    const d = await c.delegator.delegate({ pack_cid: pack.cid, input: 2 })
    expect(d.peer).toBe(ok.id.peer)
    expect(d.output).toEqual({ echo: 2 })
    expect(d.attempts.map((a) => [a.peer, a.code])).toEqual([[bad.id.peer, 'RL-4020']])
    expect(bad.exec.calls.length).toBe(1)
    const stats = c.registry.list().find((p) => p.peer === bad.id.peer)
    expect(stats?.failures).toBe(1)
    expect(stats?.last_failure?.code).toBe('RL-4020')
    expect(c.registry.list().find((p) => p.peer === ok.id.peer)?.successes).toBe(1)
    // Named, the same peer's failure is the answer.
    expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: 3, peer: bad.id.peer }))).toBe('RL-4020')
  })

  it('server stop(): aborts the run in flight (RL-4002, so the client looks elsewhere) and resolves only after it has ended', async () => {
    const order: string[] = []
    const release = deferred()
    const aborted = deferred()
    const b = serve(executor((call) => untilAborted(b.id.signer, async () => {
      aborted.resolve()
      await release.promise
      order.push('run ended')
    })(call)))
    await b.server.start()
    const c = await client([b])
    const running = codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: 1, peer: b.id.peer }))
    await b.exec.started(1)
    const stopping = b.server.stop().then(() => { order.push('stop resolved') })
    await within(aborted.promise, 'the run to see the abort')
    // Let everything that is not waiting on the run finish first.
    setImmediate(() => { order.push('released'); release.resolve() })
    await within(stopping, 'stop()')
    expect(order).toEqual(['released', 'run ended', 'stop resolved'])
    expect((b.exec.calls[0]?.signal.reason as ReachError).code).toBe('RL-4002')
    expect(await running).toBe('RL-4002')
    // A stopped server refuses what still arrives on kept streams.
    expect(await ask(b, c.id.peer, craft(c.id, b.id.peer))).toBe('RL-4002')
    // This node stopping is not something the peer did.
    expect(b.audit).toEqual([])
  })

  it('client stop(): aborts every delegation in flight and resolves once each delegate() has settled', async () => {
    const order: string[] = []
    const b = serve(executor((call) => untilAborted(b.id.signer)(call)))
    const c = await client([b])
    const running = c.delegator.delegate({ pack_cid: pack.cid, input: 1 }).then((d) => { order.push(`delegate settled ${d.status}`) })
    await b.exec.started(1)
    await within(Promise.all([c.delegator.stop(), c.delegator.stop()]).then(() => { order.push('stop resolved') }), 'stop()')
    expect(order).toEqual(['delegate settled cancelled', 'stop resolved'])
    await running
    expect(c.delegator.list()).toEqual([])
    expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: 2 }))).toBe('RL-4002')
    await c.delegator.start()
    const again = c.delegator.delegate({ pack_cid: pack.cid, input: 2, delegation_id: '2'.repeat(32) })
    await b.exec.started(2)
    expect(c.delegator.cancel('2'.repeat(32))).toBe(true)
    expect(await within(again, 'the delegation after a restart')).toMatchObject({ status: 'cancelled' })
  })
})

describe('blame where blame is due: a request the caller got wrong costs no peer anything', () => {
  /** An input nested one level deeper than canonical JSON takes (MAX_DEPTH): the hop cannot sign its hash. */
  const tooDeep = (): JsonValue => {
    let v: JsonValue = 0
    for (let i = 0; i <= MAX_DEPTH; i++) v = [v]
    return v
  }
  const health = (c: Client, peer: string): { breaker: string, score: number, failures: number } => ({
    breaker: c.registry.breakerState(peer),
    score: c.registry.score(peer),
    failures: c.registry.list().find((p) => p.peer === peer)?.failures ?? 0
  })
  /** Two identities, the first one first in the registry's order when scores tie. */
  const ordered = (): [Identity, Identity] => [identity(), identity()].sort((x, y) => (x.peer < y.peer ? -1 : 1)) as [Identity, Identity]

  it('an input too deep for canonical JSON: RL-1006 before any dial, however often; the peer\'s breaker stays closed and its score unchanged', async () => {
    const b = serve(executor((call) => echo(b.id.signer)(call)))
    const c = await client([b])
    const before = health(c, b.id.peer)
    // More times than the breaker's volume threshold (3) at a 100% failure rate, had they counted.
    for (let i = 0; i < 4; i++) {
      expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: tooDeep() }))).toBe('RL-1006')
      expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: tooDeep(), peer: b.id.peer }))).toBe('RL-1006')
    }
    expect(c.dials).toEqual([])
    expect(b.exec.calls).toEqual([])
    expect(before.breaker).toBe('closed')
    expect(health(c, b.id.peer)).toEqual(before)
    expect(c.delegator.list()).toEqual([])
    // The peer is as good as it was: the next delegation goes to it.
    expect((await c.delegator.delegate({ pack_cid: pack.cid, input: 1 })).peer).toBe(b.id.peer)
  })

  it('control: that input, sent to the peer by hand, is refused there with RL-1006 (so every peer would refuse it)', async () => {
    const b = serve(executor((call) => echo(b.id.signer)(call)))
    const a = identity()
    const hop: Hop = { from: a.peer, to: b.id.peer, request: '0'.repeat(64), signature: 'A'.repeat(86) }
    const request: DelegateRequest = { v: 1, type: 'delegate', delegation_id: 'b'.repeat(32), pack_cid: pack.cid, input: tooDeep(), budget: {}, depth: 1, ancestry: [hop], deadline: DEADLINE, nonce: 'c'.repeat(32) }
    expect(await ask(b, a.peer, request)).toBe('RL-1006')
    expect(b.exec.calls).toEqual([])
  })

  it('other requests no peer would take are RL-1011 before any dial: over the frame limit, a budget the wire refuses, not a pack CID, a deadline over an hour', async () => {
    const b = serve(executor((call) => echo(b.id.signer)(call)))
    const c = await client([b])
    const cases: Array<[string, DelegateOptions]> = [
      ['an input over the 1 MiB delegate frame', { pack_cid: pack.cid, input: 'x'.repeat(MAX_FRAME.delegateRequest) }],
      ['zero fuel', { pack_cid: pack.cid, input: 1, budget: { fuel: 0 } }],
      ['a fraction of a byte', { pack_cid: pack.cid, input: 1, budget: { memory_bytes: 1.5 } }],
      ['a budget field the wire does not have', { pack_cid: pack.cid, input: 1, budget: { gas: 1 } as WireBudget }],
      // Lowercase letters and digits: the frame schema's pattern takes it, only parsing it as a CID does not.
      ['not a pack CID', { pack_cid: 'notacid0123456789', input: 1 }],
      ['a deadline further away than a peer takes', { pack_cid: pack.cid, input: 1, timeoutMs: 3_600_001 }]
    ]
    for (const [what, options] of cases) expect(await codeOf(c.delegator.delegate(options)), what).toBe('RL-1011')
    expect(c.dials).toEqual([])
    expect(health(c, b.id.peer)).toMatchObject({ breaker: 'closed', failures: 0 })
    // The size check is where the peer's limit is: an input a few KiB under it goes, and runs.
    const near = await c.delegator.delegate({ pack_cid: pack.cid, input: 'x'.repeat(MAX_FRAME.delegateRequest - 4096) })
    expect(near.status).toBe('completed')
    expect(b.exec.calls.length).toBe(1)
  })

  it('a peer refusing with an RL-1xxx input code an input that passed the local check is not blamed (breaker closed, score unchanged), and the next peer serves it', async () => {
    const [first, second] = ordered()
    const picky = serve(executor(async () => { throw new ReachError('RL-1006', { message: 'value at payload.input cannot be canonicalised: nested deeper than 1000 levels' }) }), {}, first)
    const other = serve(executor((call) => echo(other.id.signer)(call)), {}, second)
    const c = await client([picky, other])
    const before = health(c, picky.id.peer)
    for (let i = 0; i < 4; i++) expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: i }))).toBe('resolved')
    // Asked first (the first by order), then, having served, the other peer comes first.
    expect(picky.exec.calls.length).toBeGreaterThanOrEqual(1)
    // Not final: a peer answering RL-1011 to everything must not stop every delegation.
    expect(other.exec.calls.length).toBe(4)
    expect(health(c, picky.id.peer)).toEqual(before)
    expect(health(c, picky.id.peer).breaker).toBe('closed')
  })

  it('negative control: a real failure of the same kind of peer counts: failures recorded, the breaker opens, the score drops', async () => {
    const broken = serve(executor(async () => { throw new Error('disk on fire') }))
    const c = await client([broken])
    const before = health(c, broken.id.peer)
    for (let i = 0; i < 3; i++) expect(await codeOf(c.delegator.delegate({ pack_cid: pack.cid, input: i, peer: broken.id.peer }))).toBe('RL-4020')
    const after = health(c, broken.id.peer)
    expect(after.failures).toBe(3)
    expect(after.breaker).toBe('open')
    expect(after.score).toBeLessThan(before.score)
  })
})
