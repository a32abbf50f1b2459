/**
 * Pack exchange over real libp2p on TCP loopback: publish on one node, find
 * it through the DHT and fetch it on another; lying, silent and absent
 * providers; the node's policy; and a server that refuses malformed frames
 * yet keeps serving.
 */
import { readdir } from 'node:fs/promises'
import { lpStream } from '@libp2p/utils'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { frames } from '../../federation/frames.ts'
import type { AuditEvent } from '../../federation/components.ts'
import { PackExchange, type PackExchangeComponents, type PackExchangeMetrics } from '../../federation/pack-exchange.ts'
import type { ReachHost } from '../../node/host.ts'
import { decodeBundle, encodeBundle, parsePackCid } from '../../packs/bundle.ts'
import { MAX_FRAME, PROTOCOLS, type ErrorFrame } from '../../protocol/wire.ts'
import { ReachError } from '../../protocol/errors.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { signPack } from '../../packs/trust.ts'
import { code, failure, manifest } from '../packs/helpers.ts'
import { dialerOf, mesh, routed, signedCounter, silent, tamper, varint, type Mesh, type SignedPack, type TestNode } from './mesh-helpers.ts'

let net: Mesh
let signed: SignedPack
/** Gates still holding when a test ends: released then, so that stop() (which waits for them) is never left waiting. */
let gates: Array<() => void> = []
beforeEach(async () => {
  net = mesh()
  signed = await signedCounter()
})
afterEach(async () => {
  for (const release of gates) release()
  gates = []
  await net.stop()
})

/** A stored, signed counter pack on `node`, announced on the DHT. */
async function publishOn (node: TestNode): Promise<void> {
  await node.packs.put(signed.pack.bytes, [signed.signature])
  await node.exchange.publish(signed.pack.cid)
}

/** A peer that answers every pack.get with a valid header and `bytes` (tampered), and provides the CID. */
async function liar (host: ReachHost, bytes: Uint8Array): Promise<void> {
  await host.handle(PROTOCOLS.pack, async (stream) => {
    const fs = frames(stream, MAX_FRAME.request)
    await fs.read(['pack.get'])
    await fs.write({ v: 1, type: 'pack', cid: signed.pack.cid, size: bytes.length, signatures: [signed.signature] })
    await fs.writeBytes(bytes)
    await fs.close()
  })
  await host.contentRouting.provide(parsePackCid(signed.pack.cid))
}

/**
 * Send `bytes` as they are on a fresh /reach/pack stream from `from` to `to`
 * and return the frame the server answers with.
 */
async function answerTo (from: ReachHost, to: ReachHost, bytes: Uint8Array): Promise<ErrorFrame> {
  const stream = await from.dialProtocol(to.peerId, PROTOCOLS.pack)
  const lp = lpStream(stream, { maxDataLength: MAX_FRAME.packHeader })
  try {
    stream.send(bytes)
    const reply = await lp.read({ signal: AbortSignal.timeout(5_000) })
    return JSON.parse(Buffer.from(reply.subarray()).toString('utf8')) as ErrorFrame
  } finally {
    stream.abort(new Error('done'))
  }
}

/** One length-prefixed frame holding `text`. */
function framed (text: string): Uint8Array {
  const body = new TextEncoder().encode(text)
  return Uint8Array.from([...varint(body.length), ...body])
}

interface Counters {
  metrics: PackExchangeMetrics
  fetches: string[]
  dht: string[]
  /** Resolves when `check` holds of the DHT operations, tested at once and on each one; fails loudly after 5 s. */
  whenDht: (what: string, check: (dht: readonly string[]) => boolean) => Promise<void>
}

/** Metrics that record every increment, as "label" or "op result" strings. */
function counters (): Counters {
  const fetches: string[] = []
  const dht: string[] = []
  const waiters = new Set<() => void>()
  return {
    fetches,
    dht,
    metrics: {
      packFetches: { inc: ({ result }) => { fetches.push(result) } },
      dhtOperations: {
        inc: ({ op, result }) => {
          dht.push(`${op} ${result}`)
          for (const waiter of waiters) waiter()
        }
      }
    },
    async whenDht (what, check) {
      if (check(dht)) return
      const { promise, resolve, reject } = Promise.withResolvers<void>()
      const waiter = (): void => { if (check(dht)) resolve() }
      const timer = setTimeout(() => { reject(new Error(`timed out after 5 s waiting for ${what}; DHT operations so far: ${dht.join(', ')}`)) }, 5_000)
      waiters.add(waiter)
      try {
        await promise
      } finally {
        clearTimeout(timer)
        waiters.delete(waiter)
      }
    }
  }
}

const provided = (dht: readonly string[]): number => dht.filter((d) => d === 'provide ok').length

/**
 * Let every callback already due run (pending promise reactions and this turn's I/O callbacks),
 * without waiting for any time to pass: what a stop() that did not wait would have finished by.
 */
async function afterPendingCallbacks (): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
}

/**
 * Stands between an exchange and its host: holds the next announcement (until its signal aborts
 * and the test releases it) or the next store lookup (until released), and says when the
 * exchange has unhandled its protocol. `events` records what happened, in order.
 */
function gate (): {
  wrap: (c: PackExchangeComponents) => PackExchangeComponents
  holdAnnouncement: () => Promise<void>
  holdStore: () => Promise<void>
  release: () => void
  unhandled: Promise<void>
  events: string[]
} {
  const events: string[] = []
  const released = Promise.withResolvers<void>()
  const unhandled = Promise.withResolvers<void>()
  let announcement: PromiseWithResolvers<void> | undefined
  let lookup: PromiseWithResolvers<void> | undefined
  const wrap = (c: PackExchangeComponents): PackExchangeComponents => ({
    ...c,
    registrar: {
      handle: async (protocol, handler, options) => { await c.registrar.handle(protocol, handler, options) },
      unhandle: async (protocol) => {
        await c.registrar.unhandle(protocol)
        unhandled.resolve()
      }
    },
    routing: {
      findProviders: (cid, options) => c.routing.findProviders(cid, options),
      provide: async (cid, options) => {
        const held = announcement
        if (held === undefined) return await c.routing.provide(cid, options)
        announcement = undefined
        held.resolve()
        if (!options.signal.aborted) await new Promise((resolve) => { options.signal.addEventListener('abort', resolve, { once: true }) })
        events.push('announcement aborted')
        await released.promise
        events.push('announcement ended')
        throw options.signal.reason
      }
    },
    packs: {
      get: async (cid) => await c.packs.get(cid),
      put: async (bytes, signatures, options) => await c.packs.put(bytes, signatures, options),
      has: async (cid) => {
        const held = lookup
        if (held === undefined) return await c.packs.has(cid)
        lookup = undefined
        held.resolve()
        await released.promise
        events.push('store answered')
        return await c.packs.has(cid)
      }
    }
  })
  gates.push(() => { released.resolve() })
  return {
    wrap,
    holdAnnouncement: async () => { announcement = Promise.withResolvers(); await announcement.promise },
    holdStore: async () => { lookup = Promise.withResolvers(); await lookup.promise },
    release: () => { released.resolve() },
    unhandled: unhandled.promise,
    events
  }
}

/** Providers of a CID in the order given (then any others), once the DHT query has found all of them. */
function askInOrder (order: readonly string[]): (c: PackExchangeComponents) => PackExchangeComponents {
  return (c) => ({
    ...c,
    routing: {
      provide: async (cid, options) => { await c.routing.provide(cid, options) },
      findProviders: async function * (cid, options) {
        const found = new Map<string, { id: { toString: () => string } }>()
        for await (const provider of c.routing.findProviders(cid, options)) {
          found.set(provider.id.toString(), provider)
          if (order.every((peer) => found.has(peer))) break
        }
        for (const peer of order) {
          const provider = found.get(peer)
          if (provider !== undefined) yield provider
        }
        for (const [peer, provider] of found) if (!order.includes(peer)) yield provider
      }
    }
  })
}

describe('pack exchange', () => {
  it('given a pack published on A, when C (which reaches A only through B) fetches it, then it comes from A, verified and stored with its signature', async () => {
    const a = await net.node()
    const b = await net.node({ bootstrap: [a.host] })
    const c = await net.node({ bootstrap: [b.host], trust: [signed.publisher] })
    await routed([a.host, b.host, c.host])
    await routed([b.host], 2)

    await publishOn(a)
    const got = await c.exchange.fetch(signed.pack.cid)

    expect(got.provider).toBe(a.id)
    expect(got.tried).toEqual([])
    expect(got.pack.cid).toBe(signed.pack.cid)
    expect(got.pack.signatures.map((s) => s.publisher)).toEqual([signed.publisher])
    const stored = await c.packs.get(signed.pack.cid) // re-verifies the bytes on disk
    expect(Buffer.from(stored.bytes).equals(Buffer.from(signed.pack.bytes))).toBe(true)

    // Once stored, a fetch is local.
    const again = await c.exchange.fetch(signed.pack.cid)
    expect(again.provider).toBeNull()
  })

  it('given only a provider that sends bytes not matching the CID, then RL-4013, nothing stored, and the provider is remembered as bad', async () => {
    const a = await net.node()
    const evil = await net.host([a.host])
    const seen = counters()
    const audits: AuditEvent[] = []
    const c = await net.node({ bootstrap: [a.host], trust: [signed.publisher], exchange: { metrics: seen.metrics, audit: { record: (e) => { audits.push(e) } } } })
    await routed([a.host, evil, c.host])
    await liar(evil, tamper(signed.pack.bytes))

    const err = await failure(() => c.exchange.fetch(signed.pack.cid))
    expect(err.code).toBe('RL-4013')
    expect(err.details.tried).toEqual([{ peer: evil.peerId.toString(), code: 'RL-3003' }])
    expect(c.exchange.badProviders()).toEqual([evil.peerId.toString()])
    expect(audits).toEqual([{ type: 'provider.lied', peer: evil.peerId.toString(), code: 'RL-3003', detail: expect.stringContaining(signed.pack.cid) }])
    expect(await c.packs.has(signed.pack.cid)).toBe(false)
    expect(await readdir(c.packs.dir).catch(() => [])).toEqual([])

    // When an honest node provides it too, the liar is not asked again.
    await publishOn(a)
    const got = await c.exchange.fetch(signed.pack.cid)
    expect(got.provider).toBe(a.id)
    expect(got.tried).toEqual([])
    expect(Buffer.from((await c.packs.get(signed.pack.cid)).bytes).equals(Buffer.from(signed.pack.bytes))).toBe(true)
    expect(seen.fetches).toEqual(['bad_provider', 'failed', 'fetched'])
    expect(seen.dht).toEqual(['find_providers ok', 'find_providers ok'])
    expect(audits).toHaveLength(1) // a provider that is not asked cannot lie again
  })

  it.each([
    ['the liar', true],
    ['the honest provider', false]
  ])('given an honest and a lying provider, when a fresh node asks %s first, then it gets the honest bytes', async (_, liarFirst) => {
    const a = await net.node()
    const evil = await net.host([a.host])
    const liarId = evil.peerId.toString()
    const d = await net.node({ bootstrap: [a.host], trust: [signed.publisher], exchange: { wrap: askInOrder(liarFirst ? [liarId, a.id] : [a.id, liarId]) } })
    await routed([a.host, evil, d.host])
    await liar(evil, tamper(signed.pack.bytes))
    await publishOn(a)

    const got = await d.exchange.fetch(signed.pack.cid)
    expect(got.provider).toBe(a.id)
    // The liar, when asked first, is the only failure and is remembered; asked after the honest one, never.
    expect(got.tried).toEqual(liarFirst ? [{ peer: liarId, code: 'RL-3003' }] : [])
    expect(d.exchange.badProviders()).toEqual(liarFirst ? [liarId] : [])
    expect(Buffer.from(got.pack.bytes).equals(Buffer.from(signed.pack.bytes))).toBe(true)
  })

  it('negative control: a fetch path that keeps what the provider sent without re-hashing it against the CID accepts the tampered pack', async () => {
    const a = await net.node()
    const evil = await net.host([a.host])
    await routed([a.host, evil])
    const forged = tamper(signed.pack.bytes)
    await liar(evil, forged)

    // What the liar actually sends, read off the wire as any client would.
    const stream = await a.host.dialProtocol(evil.peerId, PROTOCOLS.pack)
    const fs = frames(stream, MAX_FRAME.packBytes)
    await fs.write({ v: 1, type: 'pack.get', cid: signed.pack.cid })
    const header = await fs.read(['pack'])
    const sent = await fs.readBytes(MAX_FRAME.packBytes)
    expect(header).toMatchObject({ type: 'pack', cid: signed.pack.cid, size: forged.length })

    // Naive: decode without the CID asked for. It is a well-formed pack, with other code in it.
    const naive = decodeBundle(sent)
    expect(naive.bundle.manifest).toEqual(signed.pack.bundle.manifest)
    expect(naive.bundle.files['index.js']).not.toEqual(signed.pack.bundle.files['index.js'])
    expect(naive.cid).not.toBe(signed.pack.cid)
    // A store that takes the bytes without the CID it asked for keeps them too.
    const naiveStore = (await net.node()).packs
    expect((await naiveStore.put(sent)).cid).toBe(naive.cid)

    // Ours: the same bytes checked against the CID asked for are refused.
    expect(await code(() => decodeBundle(sent, signed.pack.cid))).toBe('RL-3003')
  })

  it('given a provider that never answers, then it is skipped, not marked bad, and asked last by later fetches', async () => {
    const a = await net.node()
    const silent = await net.host([a.host])
    const c = await net.node({ bootstrap: [a.host], trust: [signed.publisher], exchange: { providerTimeoutMs: 300 } })
    await routed([a.host, silent, c.host])
    await silent.handle(PROTOCOLS.pack, async () => { /* keeps the stream open and says nothing */ })
    await silent.contentRouting.provide(parsePackCid(signed.pack.cid))

    const err = await failure(() => c.exchange.fetch(signed.pack.cid, { timeoutMs: 3_000 }))
    expect(err.code).toBe('RL-4013')
    expect(err.details.tried).toEqual([{ peer: silent.peerId.toString(), code: 'RL-4002' }])
    expect(c.exchange.badProviders()).toEqual([])

    // Once an honest provider exists, the silent one (remembered) is not even asked.
    await publishOn(a)
    const got = await c.exchange.fetch(signed.pack.cid, { timeoutMs: 5_000 })
    expect(got.provider).toBe(a.id)
    expect(got.tried).toEqual([])
  })

  it('given one provider whose copy carries only an untrusted signature, then another provider\'s trusted copy is fetched', async () => {
    const a = await net.node()
    const stranger = await net.host([a.host])
    const c = await net.node({ bootstrap: [a.host], trust: [signed.publisher] })
    await routed([a.host, stranger, c.host])
    // The right bytes, signed by a key c does not trust.
    const other = generateKeyPair()
    const untrusted = signPack({ cid: signed.pack.cid, manifest: signed.pack.bundle.manifest }, createSigner(other.seed))
    await stranger.handle(PROTOCOLS.pack, async (stream) => {
      const fs = frames(stream, MAX_FRAME.request)
      await fs.read(['pack.get'])
      await fs.write({ v: 1, type: 'pack', cid: signed.pack.cid, size: signed.pack.bytes.length, signatures: [untrusted] })
      await fs.writeBytes(signed.pack.bytes)
      await fs.close()
    })
    await stranger.contentRouting.provide(parsePackCid(signed.pack.cid))
    // Alone, the stranger's copy is refused by policy, and nothing is stored.
    expect((await failure(() => c.exchange.fetch(signed.pack.cid, { timeoutMs: 3_000 }))).code).toBe('RL-3006')
    expect(await c.packs.has(signed.pack.cid)).toBe(false)
    // With an honest provider too, whichever is asked first, the trusted copy is stored.
    await publishOn(a)
    const got = await c.exchange.fetch(signed.pack.cid, { timeoutMs: 5_000 })
    expect(got.provider).toBe(a.id)
    expect(got.pack.signatures.map((x) => x.publisher)).toEqual([signed.publisher])
    expect(c.exchange.badProviders()).toEqual([])
  })

  it('given nobody provides the CID, then RL-4001 within the fetch timeout', async () => {
    const a = await net.node()
    const c = await net.node({ bootstrap: [a.host] })
    await routed([a.host, c.host])
    const nobody = encodeBundle(manifest({ name: 'nobody-has-this' }), { 'index.js': new TextEncoder().encode('export {}') })

    const err = await failure(() => c.exchange.fetch(nobody.cid, { timeoutMs: 1_000 }))
    expect(err.code).toBe('RL-4001')
    // A query cut short by the timeout is the same answer.
    expect(await code(() => c.exchange.fetch(nobody.cid, { timeoutMs: 1 }))).toBe('RL-4001')
    // The caller's own cancellation is passed through as it is.
    const cancelled = new Error('cancelled by the caller')
    await expect(c.exchange.fetch(nobody.cid, { signal: AbortSignal.abort(cancelled) })).rejects.toBe(cancelled)
  })

  it('given the node policy refuses the pack (publisher not trusted), then the refusal is thrown as is and nothing is stored', async () => {
    const a = await net.node()
    const c = await net.node({ bootstrap: [a.host] }) // trusts nobody
    await routed([a.host, c.host])
    await publishOn(a)

    expect(await code(() => c.exchange.fetch(signed.pack.cid))).toBe('RL-3006')
    expect(await c.packs.has(signed.pack.cid)).toBe(false)
    expect(await readdir(c.packs.dir).catch(() => [])).toEqual([])
    expect(c.exchange.badProviders()).toEqual([]) // the provider did nothing wrong
  })

  it('given an admit that throws, then nothing reaches the store', async () => {
    const a = await net.node()
    const refusal = new ReachError('RL-3009', { message: 'capability not granted here' })
    const c = await net.node({ bootstrap: [a.host], exchange: { admit: () => { throw refusal } } })
    await routed([a.host, c.host])
    await publishOn(a)

    await expect(c.exchange.fetch(signed.pack.cid)).rejects.toBe(refusal)
    expect(await c.packs.has(signed.pack.cid)).toBe(false)
  })

  it('given malformed, wrong-version, wrong-type and oversized frames, then each gets an error frame and the server still serves', async () => {
    const a = await net.node()
    const c = await net.node({ bootstrap: [a.host], trust: [signed.publisher] })
    await routed([a.host, c.host])
    await publishOn(a)
    const ask = (bytes: Uint8Array): Promise<ErrorFrame> => answerTo(c.host, a.host, bytes)

    expect(await ask(framed('not json at all'))).toMatchObject({ type: 'error', code: 'RL-4010' })
    expect(await ask(framed(JSON.stringify({ v: 2, type: 'pack.get', cid: signed.pack.cid })))).toMatchObject({ type: 'error', code: 'RL-4012' })
    expect(await ask(framed(JSON.stringify({ v: 1, type: 'log.get', run_id: 'run_00000000000000000000' })))).toMatchObject({ type: 'error', code: 'RL-4010' })
    // A length prefix of 1 GiB with nothing behind it: refused on the prefix alone.
    expect(await ask(varint(2 ** 30))).toMatchObject({ type: 'error', code: 'RL-4011' })
    // A well-formed request for a pack the server does not have.
    const missing = encodeBundle(manifest({ name: 'missing' }), { 'index.js': new TextEncoder().encode('export {}') })
    expect(await ask(framed(JSON.stringify({ v: 1, type: 'pack.get', cid: missing.cid })))).toMatchObject({ type: 'error', code: 'RL-3012' })

    const got = await c.exchange.fetch(signed.pack.cid)
    expect(got.provider).toBe(a.id)
  })

  // lpStream buffers at most 4 MiB unless told otherwise; bundles may be 9 MiB.
  it('fetches a bundle larger than 4 MiB', async () => {
    const files: Record<string, Uint8Array> = { 'index.js': new TextEncoder().encode('export {}') }
    for (let i = 0; i < 5; i++) files[`data/${i}.bin`] = new Uint8Array(1000 * 1024).fill(i + 1)
    const big = encodeBundle(manifest({ name: 'big', capabilities: [] }), files)
    const a = await net.node()
    const c = await net.node({ bootstrap: [a.host], exchange: { admit: () => {} } })
    await routed([a.host, c.host])
    await a.packs.put(big.bytes)
    await a.exchange.publish(big.cid)

    const got = await c.exchange.fetch(big.cid)
    expect(got.pack.bytes.length).toBe(big.bytes.length)
  })

  it('adopt(): CIDs published before a restart are announced again, and one no longer stored is dropped', async () => {
    const a = await net.node()
    const c = await net.node({ bootstrap: [a.host], trust: [signed.publisher] })
    await routed([a.host, c.host])
    await a.packs.put(signed.pack.bytes, [signed.signature])
    const gone = 'bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'
    await a.exchange.adopt([signed.pack.cid, gone])
    const got = await c.exchange.fetch(signed.pack.cid, { timeoutMs: 10_000 })
    expect(got.provider).toBe(a.id)
    expect(a.exchange.published()).toEqual([signed.pack.cid])
  })

  it('re-provides every published CID periodically; stop() aborts an announcement under way and returns once it has ended', async () => {
    const seen = counters()
    const g = gate()
    const a = await net.node({ exchange: { metrics: seen.metrics, reprovideIntervalMs: 50, wrap: g.wrap } })
    await publishOn(a)
    await seen.whenDht('two re-provides', (dht) => provided(dht) >= 3)

    await g.holdAnnouncement()
    const stopping = a.exchange.stop().then(() => { g.events.push('stopped') })
    await g.unhandled
    await afterPendingCallbacks()
    // Everything else stop() does is done: it is waiting for the announcement it aborted.
    expect(g.events).toEqual(['announcement aborted'])
    g.release()
    await stopping
    expect(g.events).toEqual(['announcement aborted', 'announcement ended', 'stopped'])
    expect(seen.dht.at(-1)).toBe('provide timeout')

    // A control exchange on the same interval re-provides three more times; the stopped one, not once.
    const after = seen.dht.length
    const control = counters()
    const b = await net.node({ exchange: { metrics: control.metrics, reprovideIntervalMs: 50 } })
    await publishOn(b)
    await control.whenDht('three re-provides on the control', (dht) => provided(dht) >= 4)
    expect(seen.dht.length).toBe(after)
  })

  it('stop() resets a pack being served and returns once its handler has', async () => {
    const g = gate()
    const a = await net.node({ exchange: { wrap: g.wrap } })
    const c = await net.node({ bootstrap: [a.host] })
    await a.packs.put(signed.pack.bytes, [signed.signature])
    const lookup = g.holdStore()
    const stream = await c.host.dialProtocol(a.host.peerId, PROTOCOLS.pack)
    const fs = frames(stream, MAX_FRAME.packHeader)
    await fs.write({ v: 1, type: 'pack.get', cid: signed.pack.cid })
    await lookup // a's handler is under way, waiting for its store
    const reading = fs.read(['pack'], { timeoutMs: 5_000 })
    const answer = code(async () => await reading)

    const stopping = a.exchange.stop().then(() => { g.events.push('stopped') })
    await g.unhandled
    await afterPendingCallbacks()
    expect(g.events).toEqual([])
    g.release()
    await stopping
    expect(g.events).toEqual(['store answered', 'stopped'])
    // The stream was reset, not answered: the client sees the peer gone.
    expect(await answer).toBe('RL-4002')
  })

  it('stop() ends an adopt() under way and returns once it has, announcing nothing', async () => {
    const seen = counters()
    const g = gate()
    const a = await net.node({ exchange: { metrics: seen.metrics, wrap: g.wrap } })
    await a.packs.put(signed.pack.bytes, [signed.signature])
    const lookup = g.holdStore()
    let adopted = false
    const adopting = a.exchange.adopt([signed.pack.cid]).then(() => { adopted = true })
    await lookup

    const stopping = a.exchange.stop().then(() => { g.events.push('stopped') })
    await g.unhandled
    await afterPendingCallbacks()
    expect(g.events).toEqual([])
    expect(adopted).toBe(false)
    g.release()
    await stopping
    await adopting
    expect(g.events).toEqual(['store answered', 'stopped'])
    expect(seen.dht).toEqual([])
  })

  it('refuses to publish a pack it does not hold (RL-3012), and start/stop are idempotent', async () => {
    const a = await net.node()
    expect(await code(() => a.exchange.publish(signed.pack.cid))).toBe('RL-3012')
    await a.exchange.start()
    await a.exchange.stop()
    await a.exchange.stop()
    expect(a.host.getProtocols()).not.toContain(PROTOCOLS.pack)
    const again = new PackExchange({ self: a.id, registrar: a.host, dialer: dialerOf(a.host), routing: a.host.contentRouting, packs: a.packs, admit: () => {}, logger: silent })
    await again.start()
    expect(a.host.getProtocols()).toContain(PROTOCOLS.pack)
    await again.stop()
  })
})
