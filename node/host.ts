/**
 * The libp2p host of a Reach node (DESIGN.md §2, §4): TCP, noise, yamux,
 * identify, ping, a federation-private Kademlia DHT and gossipsub.
 *
 * The node's Ed25519 key is its PeerId: the libp2p private key is made from
 * the same 32-byte seed as the checkpoint signer, so a peer id names the key
 * that signs that node's checkpoints and results (`publicKeyOfPeer`).
 *
 * Everything here is imported lazily by callers (`await import('./host.ts')`):
 * libp2p's modules cost ~400 ms to load and offline commands never need them.
 */
import { createHash } from 'node:crypto'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { KEEP_ALIVE, type Libp2p, type PeerId } from '@libp2p/interface'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping, type Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import type { Datastore } from 'interface-datastore'
import { createLibp2p } from 'libp2p'
import { encodePublicKey } from '../protocol/keys.ts'
import { ReachError } from '../protocol/errors.ts'

/** The DHT of a Reach federation is its own: it never mixes with the public IPFS DHT. */
export const DHT_PROTOCOL = '/reach/kad/1.0.0'

export interface HostOptions {
  /** The node key's 32-byte seed. */
  seed: Uint8Array
  /** Multiaddrs to listen on (default: TCP on 127.0.0.1, a free port). */
  listen?: string[]
  /** Peers to dial at start (multiaddrs with /p2p/<id>). */
  bootstrap?: string[]
  /** Connection limits (explicit, so a busy mesh degrades predictably). */
  maxConnections?: number
  /** Start listening at once (default true); false: the caller starts it (`host.start()`). */
  start?: boolean
  /**
   * Where libp2p keeps what it knows of peers (addresses, tags) and DHT records; in memory by
   * default. A node passes a LevelDB in its data dir, opened, so that it remembers its peers.
   */
  datastore?: Datastore
  /** The gossip topics this node validates and scores (federation/witness.ts); none: gossipsub with defaults. */
  topics?: string[]
}

/**
 * gossipsub's peer score (v1.1), set explicitly rather than left to defaults that were tuned
 * for Ethereum's block gossip. What a Reach topic carries is sparse (a checkpoint per run, a
 * receipt per witness), every message is validated before it is forwarded (asyncValidation),
 * and an honest node therefore never forwards an invalid one. So:
 *
 * - P4, invalid messages, is what matters: each REJECT counts, squared, at weight −100. One
 *   invalid message puts its sender under the graylist threshold (−80) at once, where everything
 *   it sends is dropped before it is parsed; the counter decays by 0.99 a second, so a sender
 *   that stops is heard again after about 11 s (one message) to minutes (a flood).
 * - P2, first deliveries, rewards a peer that brings news (+1 each, capped at +10, decaying), so
 *   an honest forwarder is never pushed under a threshold by another's garbage.
 * - P3 (mesh delivery deficits) is off: a quiet honest topic would read as a failing peer.
 * - P6, IP colocation, is off: a federation on one host (tests, simulations, a lab) shares one
 *   address, and the penalty would graylist every peer. An operator on a public network should
 *   set it back (weight −5, threshold 10 in go-libp2p's examples).
 * - P7, behaviour (IWANT promises broken, re-grafts inside backoff): weight −10 past 6, as the
 *   spec's examples.
 *
 * Thresholds: gossip −10, publish −50, graylist −80; PX accepted only from peers above +10.
 */
function gossipScoring (topics: readonly string[]): Record<string, unknown> {
  const topic = {
    topicWeight: 1,
    timeInMeshWeight: 0.01,
    timeInMeshQuantum: 1_000,
    timeInMeshCap: 100,
    firstMessageDeliveriesWeight: 1,
    firstMessageDeliveriesDecay: 0.9,
    firstMessageDeliveriesCap: 10,
    meshMessageDeliveriesWeight: 0,
    meshMessageDeliveriesDecay: 0.9,
    meshMessageDeliveriesCap: 10,
    meshMessageDeliveriesThreshold: 1,
    meshMessageDeliveriesWindow: 10,
    meshMessageDeliveriesActivation: 5_000,
    meshFailurePenaltyWeight: 0,
    meshFailurePenaltyDecay: 0.9,
    invalidMessageDeliveriesWeight: -100,
    invalidMessageDeliveriesDecay: 0.99
  }
  return {
    scoreParams: {
      topics: Object.fromEntries(topics.map((t) => [t, topic])),
      topicScoreCap: 20,
      appSpecificWeight: 0,
      IPColocationFactorWeight: 0,
      behaviourPenaltyWeight: -10,
      behaviourPenaltyThreshold: 6,
      behaviourPenaltyDecay: 0.9,
      decayInterval: 1_000,
      decayToZero: 0.01,
      retainScore: 10 * 60_000
    },
    scoreThresholds: { gossipThreshold: -10, publishThreshold: -50, graylistThreshold: -80, acceptPXThreshold: 10, opportunisticGraftThreshold: 5 }
  }
}

/** A message's id is its content's hash: the same statement published by two nodes is one message. */
function contentId (msg: { topic: string, data: Uint8Array }): Uint8Array {
  return createHash('sha256').update(msg.topic).update('\n').update(msg.data).digest()
}

/**
 * The peer store tag that makes libp2p redial a peer: after every start (its reconnect queue's
 * `afterStart`) and whenever it disconnects, with backoff (RECONNECT below). A node tags each peer
 * it connects to, so a restart, of either side, rejoins without anyone editing a config.
 */
export const KEEP_ALIVE_TAG = `${KEEP_ALIVE}-reach`

/**
 * Redial backoff (p-retry, through libp2p's connection manager): 1 s, then ×1.5 each time, 12
 * retries, so a peer that went away is looked for for about 4 minutes (1 s · (1.5¹² − 1) / 0.5);
 * then libp2p drops its tag and emits `peer:reconnect-failure`. It is tagged again when it
 * comes back by itself (it remembers us too).
 */
export const RECONNECT = { retries: 12, intervalMs: 1_000, factor: 1.5 } as const

export type ReachServices = {
  identify: ReturnType<ReturnType<typeof identify>>
  ping: Ping
  dht: KadDHT
  pubsub: ReturnType<ReturnType<typeof gossipsub>>
}

export type ReachHost = Libp2p<ReachServices>

export const DEFAULT_LISTEN = ['/ip4/127.0.0.1/tcp/0']
export const DEFAULT_MAX_CONNECTIONS = 128

export async function createHost (options: HostOptions): Promise<ReachHost> {
  const privateKey = await generateKeyPairFromSeed('Ed25519', options.seed)
  const listen = options.listen ?? DEFAULT_LISTEN
  for (const addr of [...listen, ...(options.bootstrap ?? [])]) {
    try {
      multiaddr(addr)
    } catch (err) {
      throw new ReachError('RL-1011', { message: `not a multiaddr: ${addr}`, cause: err })
    }
  }
  const host = await createLibp2p({
    start: options.start ?? true,
    privateKey,
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(options.datastore === undefined ? {} : { datastore: options.datastore }),
    connectionManager: {
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      reconnectRetries: RECONNECT.retries,
      reconnectRetryInterval: RECONNECT.intervalMs,
      reconnectBackoffFactor: RECONNECT.factor,
      // Local meshes dial the same host many times a second; the default (5/s per host) resets them.
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 64,
      dialTimeout: 5_000
    },
    services: {
      identify: identify(),
      // The health loop and an operator (or bench) may ping the same peer at once.
      ping: ping({ maxInboundStreams: 4, maxOutboundStreams: 4 }),
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: false,
        // Loopback and LAN addresses are how a private federation reaches itself.
        peerInfoMapper: passthroughMapper,
        allowQueryWithZeroPeers: true
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        ignoreDuplicatePublishError: true,
        emitSelf: false,
        // Nothing is forwarded until the witness has checked it (reportMessageValidationResult).
        asyncValidation: true,
        msgIdFn: contentId,
        ...gossipScoring(options.topics ?? [])
      })
    }
  }) as unknown as ReachHost
  if (options.start ?? true) await dialBootstrap(host, options.bootstrap ?? [])
  return host
}

/**
 * Dial every bootstrap address at once; the ones that did not answer. A peer that is down does
 * not stop the node (the caller retries those, and says when none answered).
 */
export async function dialBootstrap (host: ReachHost, bootstrap: readonly string[], signal?: AbortSignal): Promise<string[]> {
  const tried = await Promise.allSettled(bootstrap.map(async (addr) => await host.dial(multiaddr(addr), signal === undefined ? {} : { signal })))
  return bootstrap.filter((_, i) => tried[i]?.status === 'rejected')
}

/**
 * Peer ids already parsed, and the keys they name: every delegation parses its peer's id and
 * checks a signature against the key it names (base58 both ways, about 40 µs a time). Bounded;
 * oldest first out.
 */
const parsed = new Map<string, { id: PeerId, key?: string }>()
const PARSED_PEERS = 1024

function parsedPeer (text: string): { id: PeerId, key?: string } {
  let entry = parsed.get(text)
  if (entry === undefined) {
    entry = { id: peerIdFromString(text) }
    if (parsed.size >= PARSED_PEERS) parsed.delete(parsed.keys().next().value as string)
    parsed.set(text, entry)
  }
  return entry
}

/** The multibase Ed25519 key (as in checkpoints and signatures) that a peer id names. */
export function publicKeyOfPeer (peer: PeerId | string): string {
  const entry = typeof peer === 'string' ? parsedPeer(peer) : { id: peer }
  if (entry.key !== undefined) return entry.key
  const id = entry.id
  if (id.type !== 'Ed25519' || id.publicKey === undefined) throw new ReachError('RL-4006', { message: `peer ${id.toString()} does not have an Ed25519 identity` })
  entry.key = encodePublicKey(id.publicKey.raw)
  return entry.key
}

export function parsePeerId (text: string): PeerId {
  try {
    return parsedPeer(text).id
  } catch (err) {
    throw new ReachError('RL-1011', { message: `not a peer id: ${text}`, cause: err })
  }
}
