/**
 * Abuse of the delegate and log protocols by a raw libp2p peer against a real
 * daemon (in this process, real TCP loopback): malformed, wrong-version and
 * oversized frames, forged and replayed requests, an expired deadline, a full
 * queue. Each gets its code (or a reset) and the node keeps serving.
 * (The pack protocol's own abuse tests are in packs.test.ts.)
 */
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import os from 'node:os'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import type { JsonObject, JsonValue } from '../../protocol/canonical.ts'
import { createCheckpoint, encodeCheckpoint } from '../../protocol/checkpoint.ts'
import { isReachError } from '../../protocol/errors.ts'
import { nextEvent } from '../../protocol/event.ts'
import { hashCanonical } from '../../protocol/hash.ts'
import { createSigner, generateKeyPair, signDomain } from '../../protocol/keys.ts'
import { HOP_SIGNATURE_KIND, MAX_FRAME, PROTOCOLS, hopBody, requestDigest, type DelegateRequest } from '../../protocol/wire.ts'
import { startDaemon, type Daemon } from '../../node/daemon.ts'
import { createHost, type ReachHost } from '../../node/host.ts'
import { homePaths } from '../../node/home.ts'
import { openPackStore } from '../../node/pack-store.ts'
import type { RunResult } from '../../node/node.ts'
import { fingerprintOf } from '../../node/runs.ts'
import { buildBundle } from '../../packs/bundle.ts'
import type { Tool } from '../../packs/tools/index.ts'
import { signPack } from '../../packs/trust.ts'
import { within } from '../await.ts'

let daemon: Daemon
let attacker: ReachHost
let attackerSeed: Uint8Array

let slowCid: string
/** Data dirs this file made, removed at the end. */
const dirs: string[] = []

async function tempHome (prefix: string): Promise<ReturnType<typeof homePaths>> {
  const dir = await mkdtemp(join(os.tmpdir(), prefix))
  dirs.push(dir)
  return homePaths(dir)
}

beforeAll(async () => {
  const home = await tempHome('reach-protocols-')
  // A trusted pack that asks the clock once per step: the tests hold its runs in that call (holdRuns).
  const publisher = generateKeyPair()
  await mkdir(home.root, { recursive: true })
  await writeFile(home.trust, JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'test', added_at: '2026-01-01T00:00:00.000Z' }] }))
  const built = await buildBundle(fileURLToPath(new URL('../fixtures/packs/slow', import.meta.url)))
  await openPackStore(home.packs).put(built.bytes, [signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))])
  slowCid = built.cid
  daemon = await startDaemon({ home, log: () => {}, maxConcurrent: 1, maxQueue: 0, pingIntervalMs: 200, delegateIdleMs: 1_000 })
  attackerSeed = generateKeyPair().seed
  attacker = await createHost({ seed: attackerSeed, bootstrap: [daemon.endpoint.addrs[0] as string] })
}, 30_000)

afterAll(async () => {
  await attacker?.stop()
  await daemon?.stop()
  await Promise.all(dirs.map(async (dir) => { await rm(dir, { recursive: true, force: true }) }))
})


/**
 * Runs on the daemon, held by the test: while installed, each run its node starts
 * (`daemon.node.runPack`, spied on) gets a `clock.now` that says it was called and then waits
 * until the run is cancelled, failing with the cancellation as a tool cut off does. A run is in
 * flight, holding its slot, for exactly as long as the test wants, whatever the machine's speed.
 */
function holdRuns (): { called: Promise<void>, run: (i: number) => Promise<RunResult>, runs: () => number, handled: (i: number) => Promise<void>, restore: () => void } {
  const node = daemon.node
  const real = node.runPack.bind(node)
  const called = Promise.withResolvers<void>()
  const held: Tool = {
    capability: 'clock.now',
    run: async (_args, ctx) => {
      called.resolve()
      return await new Promise<never>((_resolve, reject) => {
        const cut = (): void => { reject(ctx.signal.reason as Error) }
        if (ctx.signal.aborted) cut()
        else ctx.signal.addEventListener('abort', cut, { once: true })
      })
    }
  }
  const runPack = vi.spyOn(node, 'runPack').mockImplementation(async (req) => await real({ ...req, extraTools: [...(req.extraTools ?? []), held] }))
  // Each inbound delegation stream's handler, to know when one has let go of everything (its run slot too).
  const handle = vi.spyOn(daemon.network.server, 'handle')
  const nth = <T>(mock: { mock: { results: Array<{ value: unknown }> } }, i: number, what: string): Promise<T> => {
    const r = mock.mock.results[i]
    if (r === undefined) throw new Error(`no ${what} #${i} (${mock.mock.results.length} so far)`)
    return r.value as Promise<T>
  }
  return {
    called: called.promise,
    run: async (i) => await nth<RunResult>(runPack, i, 'run'),
    runs: () => runPack.mock.calls.length,
    handled: async (i) => { await nth<void>(handle, i, 'delegation stream') },
    restore: () => { runPack.mockRestore(); handle.mockRestore() }
  }
}

async function open (protocol: string): Promise<Stream> {
  return await attacker.dialProtocol(daemon.host.peerId, protocol)
}

/**
 * Send raw frame bytes, then read what comes back: the error frame's code, or 'reset' if the
 * stream was torn down ('timeout' after `timeoutMs`, so a refusal that never comes fails loudly;
 * null: no timeout of ours).
 */
async function exchange (protocol: string, frames: Uint8Array[], rawPrefix?: Uint8Array, timeoutMs: number | null = 5_000): Promise<string> {
  const stream = await open(protocol)
  const lp = lpStream(stream, { maxDataLength: MAX_FRAME.delegateResult })
  try {
    if (rawPrefix !== undefined) stream.send(rawPrefix)
    for (const f of frames) await lp.write(f)
    const reply = JSON.parse(Buffer.from((await lp.read(timeoutMs === null ? {} : { signal: AbortSignal.timeout(timeoutMs) })).subarray()).toString('utf8'))
    return reply.type === 'error' ? reply.code : reply.type
  } catch (err) {
    // A server that just hangs is not a server that refused: tell them apart.
    return (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError' ? 'timeout' : 'reset'
  } finally {
    stream.abort(new Error('done'))
  }
}

/**
 * Send raw bytes on a new stream and close our end, then say how the stream ends: 'frame' (the
 * node answered), 'eof' (it closed its end), 'reset' (it tore the stream down), or the name of
 * another error. No timeout of ours: our end is closed, so a node that neither answers nor lets
 * go fails the test by its timeout.
 */
async function answerTo (protocol: string, bytes: Uint8Array): Promise<string> {
  const stream = await open(protocol)
  try {
    stream.send(bytes)
    void stream.close().catch(() => {})
    return await lpStream(stream).read().then(() => 'frame', (err: Error) => err.name === 'UnexpectedEOFError' ? 'eof' : err.name === 'StreamResetError' ? 'reset' : err.name)
  } finally {
    stream.abort(new Error('done'))
  }
}

const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v))

function request (overrides: Partial<DelegateRequest> = {}, sign = true): DelegateRequest {
  const base = { delegation_id: randomBytes(16).toString('hex'), pack_cid: 'bafyreibxffe3qsib2hj3t2hnw6elkmkpedvcplhzfpacjvkyyx3dlpwjw4', input: null as unknown, budget: {}, nonce: randomBytes(16).toString('hex'), deadline: Date.now() + 10_000, ...overrides }
  const hop = { from: attacker.peerId.toString(), to: daemon.host.peerId.toString(), request: requestDigest(base) }
  const signature = sign ? Buffer.from(signDomain(createSigner(attackerSeed), HOP_SIGNATURE_KIND, hopBody(0, hop, null))).toString('base64url') : Buffer.alloc(64).toString('base64url')
  return { v: 1, type: 'delegate', depth: 1, ancestry: [{ ...hop, signature }], ...base, ...overrides }
}

async function stillServing (): Promise<void> {
  // A normal question still gets a normal answer.
  expect(await exchange(PROTOCOLS.log, [json({ v: 1, type: 'log.get', run_id: 'run_' + '0'.repeat(20) })])).toBe('RL-4017')
}

describe('delegate protocol under abuse', () => {
  it('text that is not JSON → RL-4010', async () => {
    expect(await exchange(PROTOCOLS.delegate, [Buffer.from('not json at all')])).toBe('RL-4010')
    await stillServing()
  })

  it('a frame of another version → RL-4012; unknown fields → RL-4010', async () => {
    expect(await exchange(PROTOCOLS.delegate, [json({ ...request(), v: 2 })])).toBe('RL-4012')
    expect(await exchange(PROTOCOLS.delegate, [json({ ...request(), extra: true })])).toBe('RL-4010')
    await stillServing()
  })

  it('a frame announced larger than the limit is refused before it is read → RL-4011 or a reset', async () => {
    // varint of MAX+1, then a few bytes: the server must not wait for (or buffer) the rest.
    let n = MAX_FRAME.delegateRequest + 1
    const varint: number[] = []
    while (n > 0x7f) { varint.push((n & 0x7f) | 0x80); n >>>= 7 }
    varint.push(n)
    const got = await exchange(PROTOCOLS.delegate, [], Uint8Array.from([...varint, 1, 2, 3]))
    expect(['RL-4011', 'reset']).toContain(got)
    await stillServing()
  })

  it('a forged hop signature → RL-4006; an expired deadline → RL-4008', async () => {
    expect(await exchange(PROTOCOLS.delegate, [json(request({}, false))])).toBe('RL-4006')
    expect(await exchange(PROTOCOLS.delegate, [json(request({ deadline: Date.now() - 1 }))])).toBe('RL-4008')
    await stillServing()
  })

  it('while a request holds the only slot: the same request again → RL-4009 (replay), another → RL-4007 (busy)', async () => {
    const hold = holdRuns()
    try {
      const once = request({ pack_cid: slowCid, input: { steps: 2, work: 1 } })
      const held = await open(PROTOCOLS.delegate)
      await lpStream(held).write(json(once))
      // Its run is in its first tool call: its nonce is remembered and it holds the only slot.
      await within(hold.called, 'the held run to call its tool')
      expect(await exchange(PROTOCOLS.delegate, [json(once)])).toBe('RL-4009')
      expect(await exchange(PROTOCOLS.delegate, [json(request())])).toBe('RL-4007')
      // The client going away cancels its run...
      held.abort(new Error('gone'))
      const { record } = await within(hold.run(0), 'the held run to end')
      expect(record).toMatchObject({ status: 'cancelled', error: { code: 'RL-4015' } })
      expect((await daemon.node.runs.list()).find((r) => r.run_id === record.run_id)).toMatchObject({ artifact_hash: slowCid, status: 'cancelled', error: { code: 'RL-4015' } })
      // ...and once its stream's handler has returned, the slot is free: the next request runs.
      await within(hold.handled(0), 'the held stream\'s handler to return')
      expect(hold.runs()).toBe(1)
    } finally {
      hold.restore()
    }
    expect(await exchange(PROTOCOLS.delegate, [json(request({ pack_cid: slowCid, input: { steps: 1, work: 1 } }))])).toBe('result')
    await stillServing()
  })

  it('a forged hop is the answer whatever else is wrong: no run, no nonce kept, the slot free', async () => {
    const before = (await daemon.node.runs.list()).length
    // A pack the node has and could run.
    const forged = request({ pack_cid: slowCid, input: { steps: 300, work: 3000 } }, false)
    expect(await exchange(PROTOCOLS.delegate, [json(forged)])).toBe('RL-4006')
    // Forged and a cycle (this node already in the chain): the signature is the answer, as when checked first.
    const self = daemon.host.peerId.toString()
    const me = attacker.peerId.toString()
    const base = request({ pack_cid: slowCid }, false)
    const cycle = { ...base, depth: 2, ancestry: [{ from: self, to: me, request: 'a'.repeat(64), signature: Buffer.alloc(64).toString('base64url') }, { ...(base.ancestry[0] as DelegateRequest['ancestry'][0]) }] }
    expect(await exchange(PROTOCOLS.delegate, [json(cycle)])).toBe('RL-4006')
    // The forged request's nonce was let go: the real request with it runs (and the only slot is free).
    const real = request({ nonce: forged.nonce, pack_cid: slowCid, input: { steps: 1, work: 1 } })
    expect(await exchange(PROTOCOLS.delegate, [json(real)])).toBe('result')
    // Only the real request left a run.
    expect((await daemon.node.runs.list()).length).toBe(before + 1)
    await stillServing()
  })

  it('depth that does not match the ancestry, or a hop that does not end here → RL-4006', async () => {
    expect(await exchange(PROTOCOLS.delegate, [json({ ...request(), depth: 2 })])).toBe('RL-4006')
    const r = request()
    const elsewhere = { ...r, ancestry: [{ ...(r.ancestry[0] as DelegateRequest['ancestry'][0]), to: attacker.peerId.toString() }] }
    expect(await exchange(PROTOCOLS.delegate, [json(elsewhere)])).toBe('RL-4006')
    // A captured request with a fresh nonce (to get past replay protection): its hop was signed for the old one.
    expect(await exchange(PROTOCOLS.delegate, [json({ ...request(), nonce: randomBytes(16).toString('hex') })])).toBe('RL-4006')
  })

  it('a pack nobody provides fails with a code (not found, or the request\'s deadline passed), not a hang', async () => {
    // Read with no timeout of ours: a server that hung on the fetch past the 3 s deadline fails the test by its timeout.
    const code = await exchange(PROTOCOLS.delegate, [json(request({ deadline: Date.now() + 3_000 }))], undefined, null)
    expect(['RL-4001', 'RL-4008']).toContain(code)
  }, 15_000)
})

describe('a delegation stream carries one request after another', () => {
  const frameOf = async (lp: ReturnType<typeof lpStream>, ms = 10_000): Promise<Record<string, unknown>> => JSON.parse(Buffer.from((await lp.read({ signal: AbortSignal.timeout(ms) })).subarray()).toString('utf8')) as Record<string, unknown>
  const quick = (): DelegateRequest => request({ pack_cid: slowCid, input: { steps: 1, work: 1 } })
  /**
   * How the stream's next read ends: a frame, or the error's name (UnexpectedEOFError: the server
   * closed it). No timeout of ours: a server that never closes it fails the test by its timeout.
   */
  const endOf = async (lp: ReturnType<typeof lpStream>): Promise<string> => await lp.read().then(() => 'frame', (err: Error) => err.name)
  /** `body` on a new raw delegation stream, torn down after it. */
  const onStream = async (body: (lp: ReturnType<typeof lpStream>) => Promise<void>): Promise<void> => {
    const stream = await open(PROTOCOLS.delegate)
    try {
      await body(lpStream(stream, { maxDataLength: MAX_FRAME.delegateResult }))
    } finally {
      stream.abort(new Error('done'))
    }
  }

  it('two requests in turn on one stream both run; the stream is closed once idle past the server\'s limit', async () => {
    await onStream(async (lp) => {
      for (let i = 0; i < 2; i++) {
        const r = quick()
        await lp.write(json(r))
        expect(await frameOf(lp)).toMatchObject({ type: 'result', delegation_id: r.delegation_id, status: 'completed' })
      }
      // Idle past delegateIdleMs (1 s here): the server closes its end; the read ends, it does not hang.
      expect(await endOf(lp)).toBe('UnexpectedEOFError')
    })
    await stillServing()
  }, 20_000)

  it('a request before the last one\'s result cancels that run (RL-4010) and ends the stream', async () => {
    const hold = holdRuns()
    try {
      await onStream(async (lp) => {
        const first = request({ pack_cid: slowCid, input: { steps: 2, work: 1 } })
        await lp.write(json(first))
        await within(hold.called, 'the first run to call its tool')
        await lp.write(json(quick()))
        expect(await frameOf(lp)).toMatchObject({ type: 'result', delegation_id: first.delegation_id, status: 'cancelled', error: { code: 'RL-4010' } })
        expect(await endOf(lp)).toBe('UnexpectedEOFError')
      })
      // The request out of turn was dropped, not run.
      expect(hold.runs()).toBe(1)
    } finally {
      hold.restore()
    }
    await stillServing()
  }, 20_000)

  it('cancel frames do not keep an idle stream open past the limit; a malformed later frame still gets its code', async () => {
    await onStream(async (lp) => {
      const r = quick()
      await lp.write(json(r))
      expect(await frameOf(lp)).toMatchObject({ type: 'result', status: 'completed' })
      // A cancel on every turn of the event loop until the stream ends: if each one restarted the
      // 1 s idle wait, the stream would never end, and the test would fail by its timeout.
      let ended = false
      const ticking = (async () => {
        while (!ended) {
          await lp.write(json({ v: 1, type: 'cancel', delegation_id: r.delegation_id })).catch(() => { ended = true })
          await new Promise((resolve) => setImmediate(resolve))
        }
      })()
      try {
        expect(await endOf(lp)).toBe('UnexpectedEOFError')
      } finally {
        ended = true
        await ticking
      }
    })
    await onStream(async (lp) => {
      await lp.write(json(quick()))
      expect(await frameOf(lp)).toMatchObject({ type: 'result', status: 'completed' })
      await lp.write(Buffer.from('not json at all'))
      expect(await frameOf(lp)).toMatchObject({ type: 'error', code: 'RL-4010' })
    })
    await stillServing()
  }, 20_000)

  it('a kept stream that fails after the peer got the request: the same request (same nonce) goes on a new stream, and a peer that already had it is not asked to run it twice', async () => {
    // The attacker plays a serving node: it answers the first request properly (the client keeps
    // the stream), resets the stream on the second, and on a new stream refuses a nonce it has seen.
    const answer = (req: DelegateRequest): Record<string, unknown> => {
      const output = { total: 1 }
      const head = { seq: 1, hash: 'e'.repeat(64) }
      const base = { engine_version: '1.0.0', policy_version: 'p'.repeat(64), input_hash: hashCanonical(req.input), artifact_hash: req.pack_cid, output_hash: hashCanonical(output), event_log_hash: head.hash }
      const record = { version: 1, run_id: 'run_' + '2'.repeat(20), pack_name: 'x', ...base, fingerprint: fingerprintOf(base), status: 'completed', error: null, events: 2, fuel_used: 1, checkpoint_id: null }
      // The run's first event, whose hash the checkpoint signs as the log's id.
      const started = nextEvent(null, { type: 'RunStarted', aggregate_id: 'run', payload: { pack_cid: req.pack_cid, pack_name: 'x', engine_version: base.engine_version, policy_version: base.policy_version, input: req.input as JsonValue, input_hash: base.input_hash, budget: req.budget as JsonObject, nonce: 'f'.repeat(32) } })
      const cp = createCheckpoint({ kind: 'run', log_id: started.hash, at_seq: head.seq, state_hash: hashCanonical({ status: 'completed', output_hash: base.output_hash, error: null }), log_hash: head.hash, merkle_root: 'd'.repeat(64), timestamp: 1 }, createSigner(attackerSeed))
      return { v: 1, type: 'result', delegation_id: req.delegation_id, run_id: record.run_id, status: 'completed', output, record, started, checkpoint: encodeCheckpoint(cp), log_head: head }
    }
    const seen: string[] = []
    await attacker.handle(PROTOCOLS.delegate, async (stream) => {
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME.delegateRequest })
      for (;;) {
        let req: DelegateRequest
        try {
          req = JSON.parse(Buffer.from((await lp.read()).subarray()).toString('utf8')) as DelegateRequest
        } catch {
          return
        }
        const again = seen.includes(req.nonce)
        seen.push(req.nonce)
        if (again) {
          await lp.write(json({ v: 1, type: 'error', code: 'RL-4009', message: 'this request was already received (replayed nonce)' }))
          await stream.close()
          return
        }
        if (seen.length === 2) {
          stream.abort(new Error('the peer loses the stream after reading the request'))
          return
        }
        await lp.write(json(answer(req)))
      }
    }, { maxInboundStreams: 8 })
    try {
      const peer = attacker.peerId.toString()
      await daemon.host.dial(attacker.getMultiaddrs()[0] as Parameters<ReachHost['dial']>[0])
      daemon.delegator.dropIdle(peer)
      expect((await daemon.delegator.delegate({ pack_cid: slowCid, input: { n: 1 }, peer })).status).toBe('completed')
      const err = await daemon.delegator.delegate({ pack_cid: slowCid, input: { n: 2 }, peer }).then(() => undefined, (e: unknown) => e)
      // The second request went out twice with one nonce; the peer's refusal of the repeat is
      // reported as a lost answer (not final: another peer would be tried), not as RL-4009.
      expect(seen).toHaveLength(3)
      expect(seen[2]).toBe(seen[1])
      expect(seen[1]).not.toBe(seen[0])
      expect(isReachError(err, 'RL-4002')).toBe(true)
    } finally {
      await attacker.unhandle(PROTOCOLS.delegate)
    }
  })

  it('a delegating node keeps the stream for its next request to that peer, and opens a new one once the peer closed it', async () => {
    const client = await startDaemon({ home: await tempHome('reach-client-'), log: () => {}, bootstrap: [daemon.endpoint.addrs[0] as string] })
    try {
      const peer = daemon.host.peerId.toString()
      const delegateStreams = (): Stream[] => client.host.getConnections(daemon.host.peerId).flatMap((c) => c.streams).filter((s) => s.protocol === PROTOCOLS.delegate && s.status === 'open')
      const openStreams = (): number => delegateStreams().length
      for (let i = 0; i < 3; i++) {
        const d = await client.delegator.delegate({ pack_cid: slowCid, input: { steps: 1, work: i + 1 }, peer })
        expect(d.status).toBe('completed')
        expect(openStreams()).toBe(1)
      }
      // The server closes it after 1 s idle (and the client its end): the next request goes on a new stream.
      const kept = delegateStreams()[0] as Stream
      await within(new Promise((resolve) => { kept.addEventListener('close', resolve, { once: true }) }), 'the kept stream to close')
      expect(kept.status).toBe('closed')
      expect(openStreams()).toBe(0)
      expect((await client.delegator.delegate({ pack_cid: slowCid, input: { steps: 1, work: 9 }, peer })).status).toBe('completed')
      expect(openStreams()).toBe(1)
    } finally {
      await client.stop()
    }
  }, 20_000)
})

describe('the DHT protocol (/reach/kad/1.0.0, libp2p\'s own) under abuse', () => {
  // The DHT's frames are libp2p's (protobuf), so it cannot answer with an RL- code: it resets the
  // stream or ignores what it cannot use. What matters is that it keeps answering real queries.
  it('garbage and an oversized length prefix get no answer (the stream is reset), and the DHT still answers real queries', async () => {
    // Text that is not a protobuf: its first byte reads as a length the rest does not fill; with
    // our end closed, the DHT gives up on it.
    expect(await answerTo('/reach/kad/1.0.0', Buffer.from('not a protobuf at all'))).toBe('reset')
    let n = 64 * 1024 * 1024
    const varint: number[] = []
    while (n > 0x7f) { varint.push((n & 0x7f) | 0x80); n >>>= 7 }
    varint.push(n)
    expect(await answerTo('/reach/kad/1.0.0', Uint8Array.from([...varint, 1, 2, 3]))).toBe('reset')
    // A real query afterwards: the node answers it.
    const closest = []
    for await (const event of attacker.services.dht.getClosestPeers(daemon.host.peerId.toMultihash().bytes, { signal: AbortSignal.timeout(5_000) })) closest.push(event.name)
    expect(closest).toContain('PEER_RESPONSE')
    await stillServing()
  })
})

describe('peer health', () => {
  it('the node pings its peers and keeps the result', async () => {
    const peer = attacker.peerId.toString()
    const peers = daemon.peers
    const real = peers.recordPing.bind(peers)
    const pinged = Promise.withResolvers<number | null>()
    const spy = vi.spyOn(peers, 'recordPing').mockImplementation((p, ms) => {
      real(p, ms)
      if (p === peer) pinged.resolve(ms)
    })
    try {
      // The next ping of the attacker (every 200 ms here); it answers, so it is a round trip in ms.
      const rtt = await within(pinged.promise, 'the node to ping the attacker')
      expect(Number.isFinite(rtt)).toBe(true)
      expect(peers.list().find((p) => p.peer === peer)?.last_ping).toEqual({ at: expect.any(Number), rtt_ms: rtt })
    } finally {
      spy.mockRestore()
    }
  })
})

describe('log protocol under abuse', () => {
  it('malformed, wrong-version and oversized frames get their codes; unknown runs RL-4017', async () => {
    expect(await exchange(PROTOCOLS.log, [Buffer.from('{')])).toBe('RL-4010')
    expect(await exchange(PROTOCOLS.log, [json({ v: 9, type: 'log.get', run_id: 'run_' + '0'.repeat(20) })])).toBe('RL-4012')
    expect(await exchange(PROTOCOLS.log, [json({ v: 1, type: 'log.get', run_id: '../../etc/passwd' })])).toBe('RL-4010')
    const big = await exchange(PROTOCOLS.log, [Buffer.alloc(MAX_FRAME.logBatch + 10, 0x20)])
    expect(['RL-4011', 'reset']).toContain(big)
    await stillServing()
  })
})

describe('the node as a libp2p peer', () => {
  it('a vanilla js-libp2p peer (tcp, noise, yamux, identify, ping only) connects, identifies and pings it', async () => {
    const vanilla = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { identify: identify(), ping: ping() }
    })
    try {
      const target = multiaddr(daemon.endpoint.addrs[0] as string)
      // What the node says of itself arrives with identify, which runs beside the ping.
      const identified = new Promise<void>((resolve) => {
        vanilla.addEventListener('peer:identify', (e) => { if (e.detail.peerId.equals(daemon.host.peerId)) resolve() })
      })
      const rtt = await vanilla.services.ping.ping(target)
      await within(identified, 'the node to identify itself')
      expect(Number.isFinite(rtt)).toBe(true)
      const protocols = await vanilla.peerStore.get(daemon.host.peerId).then((p) => p.protocols, () => [] as string[])
      expect(protocols).toEqual(expect.arrayContaining(['/ipfs/id/1.0.0', '/ipfs/ping/1.0.0', '/reach/delegate/1.0.0', '/reach/pack/1.0.0', '/reach/log/1.0.0', '/reach/kad/1.0.0']))
    } finally {
      await vanilla.stop()
    }
  })

  it('serves Prometheus metrics behind the token, with the delegation, breaker and DHT series', async () => {
    const token = (await readFile(join(daemon.node.home.root, 'api.token'), 'utf8')).trim()
    const res = await fetch(`${daemon.api.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })
    expect(res.status).toBe(200)
    const text = await res.text()
    for (const name of ['reach_delegations_total', 'reach_delegations_served_total', 'reach_dht_operations_total', 'reach_pack_fetches_total', 'reach_peers_connected', 'reach_gossip_messages_total']) expect(text).toContain(name)
    // The abuse above was counted: refused requests are served outcomes too.
    expect(text).toMatch(/reach_delegations_served_total\{outcome="refused"\} [1-9]/)
    expect((await fetch(`${daemon.api.url}/metrics`)).status).toBe(401)
  })
})

describe('bad arguments from the operator', () => {
  it('a peer id or CID that does not parse is RL-1011, and no peer is blamed', async () => {
    const before = daemon.peers.list().length
    const err = await daemon.delegator.delegate({ pack_cid: slowCid, input: null, peer: '12D3KooWnotapeer' }).then(() => undefined, (e: unknown) => e)
    expect(isReachError(err, 'RL-1011')).toBe(true)
    expect(daemon.peers.list().length).toBe(before)
    expect(await daemon.exchange.fetch('notacid').then(() => undefined, (e: unknown) => (e as { code?: string }).code)).toBe('RL-1011')
  })
})

describe('restart', () => {
  it('what the node published stays published after a restart', async () => {
    const token = (await readFile(join(daemon.node.home.root, 'api.token'), 'utf8')).trim()
    const res = await fetch(`${daemon.api.url}/v1/packs/publish`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ pack: slowCid }) })
    expect(res.status).toBe(200)
    const home = daemon.node.home
    await daemon.stop()
    daemon = await startDaemon({ home, log: () => {} })
    expect(daemon.exchange.published()).toEqual([slowCid])
  })
})

describe('a peer that lies in its result', () => {
  it('a result whose checkpoint is not signed by the peer that ran it → RL-4014, counted against the peer', async () => {
    const stranger = generateKeyPair()
    await attacker.handle(PROTOCOLS.delegate, async (stream) => {
      const lp = lpStream(stream, { maxDataLength: MAX_FRAME.delegateRequest })
      const req = JSON.parse(Buffer.from((await lp.read()).subarray()).toString('utf8')) as DelegateRequest
      // A well-formed checkpoint, but by another key than the peer's own.
      const cp = createCheckpoint({ kind: 'run', log_id: 'a'.repeat(64), at_seq: 1, state_hash: 'b'.repeat(64), log_hash: 'c'.repeat(64), merkle_root: 'd'.repeat(64), timestamp: 1 }, createSigner(stranger.seed))
      const record = { run_id: 'run_' + '1'.repeat(20), artifact_hash: req.pack_cid, input_hash: hashCanonical(req.input), output_hash: hashCanonical({ forged: true }), event_log_hash: 'c'.repeat(64), status: 'completed', error: null }
      await lp.write(json({ v: 1, type: 'result', delegation_id: req.delegation_id, run_id: record.run_id, status: 'completed', output: { forged: true }, record, started: {}, checkpoint: encodeCheckpoint(cp), log_head: { seq: 1, hash: 'c'.repeat(64) } }))
      await stream.close()
    })
    try {
      const peer = attacker.peerId.toString()
      // The node was restarted above (new port): connect again.
      await daemon.host.dial(attacker.getMultiaddrs()[0] as Parameters<ReachHost['dial']>[0])
      const err = await daemon.delegator.delegate({ pack_cid: slowCid, input: { steps: 1, work: 1 }, peer }).then(() => undefined, (e: unknown) => e)
      expect(isReachError(err, 'RL-4014')).toBe(true)
      expect(daemon.peers.list().find((p) => p.peer === peer)?.verification_failures).toBe(1)
      // Negative control: a naive client that takes the frame's status at its word gets the forged output.
      const raw = await daemon.host.dialProtocol(attacker.peerId, PROTOCOLS.delegate)
      const lp = lpStream(raw, { maxDataLength: MAX_FRAME.delegateResult })
      await lp.write(json({ delegation_id: 'f'.repeat(32), pack_cid: slowCid, input: null }))
      const naive = JSON.parse(Buffer.from((await lp.read()).subarray()).toString('utf8'))
      expect(naive).toMatchObject({ status: 'completed', output: { forged: true } })
      raw.abort(new Error('done'))

      // The refusal and the peer's breaker are in the node's metrics.
      const token = (await readFile(join(daemon.node.home.root, 'api.token'), 'utf8')).trim()
      const metrics = await (await fetch(`${daemon.api.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text()
      expect(metrics).toMatch(/reach_delegations_total\{outcome="refused"\} [1-9]/)
      expect(metrics).toContain(`reach_peer_breaker_state{peer="${peer}"}`)
    } finally {
      await attacker.unhandle(PROTOCOLS.delegate)
    }
  })

  it('with no peer left to try: RL-4016 naming every attempt', async () => {
    // The attacker no longer speaks the delegate protocol: the one candidate fails, nobody is left.
    const err = await daemon.delegator.delegate({ pack_cid: slowCid, input: null }).then(() => undefined, (e: unknown) => e)
    expect(isReachError(err, 'RL-4016')).toBe(true)
    expect((err as { details: { attempts: Array<{ peer: string, code: string }> } }).details.attempts).toEqual([expect.objectContaining({ peer: attacker.peerId.toString(), code: 'RL-4002' })])
  })

  it('reputation survives a restart of the node', async () => {
    const home = daemon.node.home
    const peer = attacker.peerId.toString()
    const before = daemon.peers.list().find((p) => p.peer === peer)
    expect(before?.verification_failures).toBe(1)
    await daemon.stop()
    daemon = await startDaemon({ home, log: () => {} })
    expect(daemon.peers.list().find((p) => p.peer === peer)).toMatchObject({ verification_failures: 1, failures: before?.failures, breaker: 'closed' })
  })
})
