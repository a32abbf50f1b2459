/**
 * Peer ids (SPEC §10.2): a node's libp2p PeerId is its Ed25519 key, so a peer id names the key
 * that signs its checkpoints, results and hops. Pure: base58btc and bytes, no libp2p.
 *
 *   base58btc( 0x00 0x24 | 0x08 0x01 0x12 0x20 | 32-byte Ed25519 public key )   → "12D3KooW…"
 *   (identity multihash of length 36, of the protobuf PublicKey {Type: Ed25519, Data: key})
 */
import { base58btc } from 'multiformats/bases/base58'
import { ReachError } from './errors.ts'
import { decodePublicKey, encodePublicKey } from './keys.ts'

/** Identity multihash (0x00, 36 bytes) of the protobuf PublicKey {Type: 1 (Ed25519), Data: 32 bytes}. */
const ED25519_PEER_PREFIX = Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20)
const PEER_ID_BYTES = ED25519_PEER_PREFIX.length + 32

/** The multibase Ed25519 key a peer id names. RL-4006 for anything but an Ed25519 peer id. */
export function publicKeyOfPeerId (peer: string): string {
  let bytes: Uint8Array
  try {
    bytes = base58btc.baseDecode(peer)
  } catch {
    throw new ReachError('RL-4006', { message: `${peer} is not a peer id (base58btc)` })
  }
  if (bytes.length !== PEER_ID_BYTES || !ED25519_PEER_PREFIX.every((b, i) => bytes[i] === b)) {
    throw new ReachError('RL-4006', { message: `peer ${peer} does not have an Ed25519 identity` })
  }
  return encodePublicKey(bytes.subarray(ED25519_PEER_PREFIX.length))
}

/** The peer id of a multibase Ed25519 key. */
export function peerIdOfPublicKey (publicKey: string): string {
  const raw = decodePublicKey(publicKey)
  const bytes = new Uint8Array(PEER_ID_BYTES)
  bytes.set(ED25519_PEER_PREFIX)
  bytes.set(raw, ED25519_PEER_PREFIX.length)
  return base58btc.baseEncode(bytes)
}
