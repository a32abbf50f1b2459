/**
 * A few in-process Reach nodes on TCP loopback for federation tests: real
 * libp2p hosts, real pack stores and trust registries in temp dirs, and a
 * signed copy of the shipped counter pack. `mesh.stop()` stops every host and
 * removes every dir it made.
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SingleKadDHT } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { createHost, type ReachHost } from '../../node/host.ts'
import { openPackStore, type PackStore } from '../../node/pack-store.ts'
import { openTrustRegistry, type TrustRegistry } from '../../node/trust-registry.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { buildBundle, type Pack } from '../../packs/bundle.ts'
import { admitPack, defaultPolicy } from '../../packs/policy.ts'
import { signPack, type PackSignature } from '../../packs/trust.ts'
import type { ComponentLogger, Dialer } from '../../federation/components.ts'
import { PackExchange, type PackExchangeComponents, type PackExchangeInit } from '../../federation/pack-exchange.ts'
import { tempDir } from '../packs/helpers.ts'

const COUNTER = fileURLToPath(new URL('../../packs/examples/counter/', import.meta.url))

export interface TestNode {
  host: ReachHost
  id: string
  packs: PackStore
  registry: TrustRegistry
  exchange: PackExchange
}

export interface NodeOptions {
  /** Hosts to dial at start. */
  bootstrap?: ReachHost[]
  /** Publisher keys this node trusts. */
  trust?: string[]
  /**
   * Overrides for the exchange (admit, metrics, audit, timeouts); `wrap` stands between it and
   * its host (to watch or hold what it asks of the DHT, the registrar or the store).
   */
  exchange?: Partial<Pick<PackExchangeComponents, 'admit' | 'metrics' | 'audit' | 'clock'>> & PackExchangeInit & {
    wrap?: (components: PackExchangeComponents) => PackExchangeComponents
  }
}

export interface Mesh {
  /** A bare host (no exchange), e.g. to play a misbehaving peer. */
  host (bootstrap?: ReachHost[]): Promise<ReachHost>
  /** A host with a pack store, a trust registry and a started PackExchange that admits by the default policy. */
  node (options?: NodeOptions): Promise<TestNode>
  stop (): Promise<void>
}

export function mesh (): Mesh {
  const hosts: ReachHost[] = []
  const exchanges: PackExchange[] = []
  const dirs: Array<{ remove: () => Promise<void> }> = []

  const host = async (bootstrap: ReachHost[] = []): Promise<ReachHost> => {
    const h = await createHost({ seed: generateKeyPair().seed, bootstrap: bootstrap.map((b) => b.getMultiaddrs()[0]?.toString() ?? '') })
    hosts.push(h)
    return h
  }

  return {
    host,
    async node (options = {}) {
      const h = await host(options.bootstrap)
      const dir = await tempDir('mesh')
      dirs.push(dir)
      const packs = openPackStore(join(dir.path, 'packs'))
      const registry = await openTrustRegistry(join(dir.path, 'trust.json'))
      for (const key of options.trust ?? []) await registry.add(key, 'test publisher')
      const policy = defaultPolicy()
      const { wrap = (c: PackExchangeComponents) => c, reprovideIntervalMs, providerTimeoutMs, ...overrides } = options.exchange ?? {}
      const exchange = new PackExchange(wrap({
        self: h.peerId.toString(),
        registrar: h,
        dialer: dialerOf(h),
        routing: h.contentRouting,
        packs,
        admit: (p) => { admitPack({ ...p, registry, policy }) },
        logger: silent,
        ...overrides
      }), {
        ...(reprovideIntervalMs === undefined ? {} : { reprovideIntervalMs }),
        ...(providerTimeoutMs === undefined ? {} : { providerTimeoutMs })
      })
      exchanges.push(exchange)
      await exchange.start()
      return { host: h, id: h.peerId.toString(), packs, registry, exchange }
    },
    async stop () {
      await Promise.allSettled(exchanges.map((e) => e.stop()))
      await Promise.allSettled(hosts.map((h) => h.stop()))
      await Promise.allSettled(dirs.map((d) => d.remove()))
    }
  }
}

/** A logger that drops everything. */
export const silent: ComponentLogger = { forComponent: () => ({ info: () => {}, warn: () => {}, debug: () => {} }) }

/** Streams to peers by peer id text, through `host`. */
export function dialerOf (host: ReachHost): Dialer {
  return {
    dial: async (peer, protocol, { signal }) => await host.dialProtocol(peerIdFromString(peer), protocol, { signal }),
    connectedPeers: () => host.getPeers().map(String)
  }
}

/**
 * The kad-dht routing table as it is (@libp2p/kad-dht/dist/src/routing-table/index.js): its
 * public type leaves out the `peer:add` event it dispatches once a peer is in.
 */
interface RoutingTable {
  size: number
  addEventListener (type: 'peer:add', listener: () => void): void
  removeEventListener (type: 'peer:add', listener: () => void): void
}

/**
 * Resolve when every host's DHT routing table holds at least `min` peers (identify and the DHT
 * topology run after connecting): checked at once and on each `peer:add`; fails loudly, naming
 * the host and what its table holds, after `timeoutMs`.
 */
export async function routed (hosts: ReachHost[], min = 1, timeoutMs = 5_000): Promise<void> {
  await Promise.all(hosts.map(async (h) => {
    const table = (h.services.dht as unknown as SingleKadDHT).routingTable as unknown as RoutingTable
    if (table.size >= min) return
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    const onAdd = (): void => { if (table.size >= min) resolve() }
    const timer = setTimeout(() => { reject(new Error(`DHT routing table of ${h.peerId.toString()} holds ${table.size} peer(s), not ${min}, after ${timeoutMs} ms`)) }, timeoutMs)
    table.addEventListener('peer:add', onAdd)
    try {
      await promise
    } finally {
      clearTimeout(timer)
      table.removeEventListener('peer:add', onAdd)
    }
  }))
}

export interface SignedPack {
  pack: Pack
  signature: PackSignature
  publisher: string
}

/** The shipped counter pack, built and signed by a fresh publisher key. */
export async function signedCounter (): Promise<SignedPack> {
  const pack = await buildBundle(COUNTER)
  const key = generateKeyPair()
  return { pack, signature: signPack({ cid: pack.cid, manifest: pack.bundle.manifest }, createSigner(key.seed)), publisher: key.publicKey }
}

/**
 * The bundle with one character of its code changed ("function" → "Function"):
 * still a well-formed bundle, so only the CID check can tell it from the real one.
 */
export function tamper (bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes)
  const at = Buffer.from(out).indexOf('function')
  if (at < 0) throw new Error('no "function" in the bundle to tamper with')
  out[at] = 'F'.charCodeAt(0)
  return out
}

/** Unsigned LEB128, as lpStream writes lengths: for sending a length prefix with no frame behind it. */
export function varint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return Uint8Array.from(out)
}
