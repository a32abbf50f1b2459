/**
 * Ed25519 keys and signatures.
 *
 * Keys travel as multibase strings in the did:key form:
 *
 *   'z' + base58btc(0xed 0x01 || 32-byte public key)      → always starts with "z6Mk"
 *
 * (0xed 0x01 is the unsigned-varint multicodec `ed25519-pub`.) The secret that
 * is stored is the 32-byte RFC 8032 seed; a node's libp2p PeerId key is derived
 * from the same seed, so one secret names the node everywhere.
 *
 * Signing and verifying run on node:crypto (OpenSSL), which is an order of
 * magnitude faster than pure-JS Ed25519 here (DESIGN.md §4). Both key objects
 * are built once and cached: a Signer holds its private KeyObject, and
 * `verifySignature` keeps a bounded cache of public KeyObjects, so the cost per
 * call is OpenSSL's verify plus a Map lookup.
 *
 * Every signature Reach makes is domain separated: the signed bytes are
 * `"reach/<kind>/v1\n" || canonical(body)` (see `domainMessage`), so a
 * signature made for one kind of object never verifies as another.
 *
 * This module is pure except `generateKeyPair`, which draws 32 random bytes.
 * That is the one use of randomness in protocol/ and it is sound: a key is
 * created once, stored, and never re-derived during replay.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { base58btc } from 'multiformats/bases/base58'
import { ReachError } from './errors.ts'
import { domainMessage } from './hash.ts'

export const SEED_LENGTH = 32
export const PUBLIC_KEY_LENGTH = 32
export const SIGNATURE_LENGTH = 64

/** Multicodec `ed25519-pub` (0xed) as an unsigned varint. */
const ED25519_PUB_PREFIX = Uint8Array.of(0xed, 0x01)
/** DER prefixes that wrap a raw seed as PKCS#8 and a raw public key as SPKI (RFC 8410). */
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
/**
 * Public KeyObjects kept for verification. A node verifies checkpoints and
 * receipts from a bounded set of peers; 1024 covers a large federation while
 * keeping memory small (a KeyObject is a few hundred bytes) and bounding what
 * a peer can make us hold by sending many keys.
 */
export const VERIFY_KEY_CACHE_SIZE = 1024

export interface KeyPair {
  /** Multibase (did:key form) public key, "z6Mk...". */
  publicKey: string
  /** The 32-byte RFC 8032 private seed: the only stored secret. */
  seed: Uint8Array
}

export interface Signer {
  /** Multibase public key of this signer. */
  readonly publicKey: string
  /** Ed25519 signature (64 bytes) over `message` (a string is signed as UTF-8). */
  sign (message: Uint8Array | string): Uint8Array
}

/** Public KeyObjects by multibase key; see VERIFY_KEY_CACHE_SIZE. */
const verifyKeys = new Map<string, KeyObject>()

function malformed (message: string): never {
  throw new ReachError('RL-1009', { message })
}

function toBuffer (message: Uint8Array | string): Buffer {
  return typeof message === 'string'
    ? Buffer.from(message, 'utf8')
    : Buffer.from(message.buffer, message.byteOffset, message.byteLength)
}

/** Multibase string for a raw 32-byte Ed25519 public key. */
export function encodePublicKey (raw: Uint8Array): string {
  if (!(raw instanceof Uint8Array) || raw.length !== PUBLIC_KEY_LENGTH) {
    malformed(`an Ed25519 public key is ${PUBLIC_KEY_LENGTH} bytes`)
  }
  const bytes = new Uint8Array(ED25519_PUB_PREFIX.length + PUBLIC_KEY_LENGTH)
  bytes.set(ED25519_PUB_PREFIX, 0)
  bytes.set(raw, ED25519_PUB_PREFIX.length)
  return base58btc.encode(bytes)
}

/** Raw 32-byte public key from its multibase string. Throws RL-1009. */
export function decodePublicKey (s: string): Uint8Array {
  if (typeof s !== 'string' || !s.startsWith('z')) malformed('public key must be a base58btc multibase string starting with "z"')
  let bytes: Uint8Array
  try {
    bytes = base58btc.decode(s)
  } catch (err) {
    throw new ReachError('RL-1009', { message: `public key is not valid base58btc: ${(err as Error).message}`, cause: err })
  }
  if (bytes.length !== ED25519_PUB_PREFIX.length + PUBLIC_KEY_LENGTH || bytes[0] !== 0xed || bytes[1] !== 0x01) {
    malformed('public key is not a multicodec ed25519-pub key (0xed01 followed by 32 bytes)')
  }
  // base58 has a single encoding per byte string, but leading "1"s map to
  // zero bytes; re-encode so only the canonical spelling is accepted.
  if (base58btc.encode(bytes) !== s) malformed('public key is not in canonical base58btc form')
  return bytes.slice(ED25519_PUB_PREFIX.length)
}

/** True when `s` is a well-formed multibase Ed25519 public key. */
export function isPublicKey (s: unknown): s is string {
  if (typeof s !== 'string') return false
  // Keys in the verification cache were decoded when they were added.
  if (verifyKeys.has(s)) return true
  try {
    decodePublicKey(s)
    return true
  } catch {
    return false
  }
}

function privateKeyObject (seed: Uint8Array): KeyObject {
  if (!(seed instanceof Uint8Array) || seed.length !== SEED_LENGTH) malformed(`an Ed25519 seed is ${SEED_LENGTH} bytes`)
  // PKCS#8 from the seed, not JWK {d, x}: OpenSSL trusts a JWK's `x` without
  // checking it against `d`, so a wrong `x` would silently yield bad signatures.
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' })
}

function rawPublicKey (privateKey: KeyObject): Uint8Array {
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' })
  return Uint8Array.from(Buffer.from(jwk.x as string, 'base64url'))
}

/** The key pair for a 32-byte seed (RFC 8032 §5.1.5). Throws RL-1009 for a bad seed. */
export function keyPairFromSeed (seed: Uint8Array): KeyPair {
  const publicKey = encodePublicKey(rawPublicKey(privateKeyObject(seed)))
  return { publicKey, seed: Uint8Array.from(seed) }
}

/**
 * A fresh key pair from 32 random bytes. The only randomness in protocol/:
 * keys are generated once and stored, never re-derived in a replay.
 */
export function generateKeyPair (): KeyPair {
  return keyPairFromSeed(Uint8Array.from(randomBytes(SEED_LENGTH)))
}

/** A Signer for `seed`, holding its private KeyObject (built once). */
export function createSigner (seed: Uint8Array): Signer {
  const key = privateKeyObject(seed)
  const publicKey = encodePublicKey(rawPublicKey(key))
  return {
    publicKey,
    sign (message: Uint8Array | string): Uint8Array {
      const sig = cryptoSign(null, toBuffer(message), key)
      return new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength)
    }
  }
}

function publicKeyObject (publicKey: string): KeyObject {
  let key = verifyKeys.get(publicKey)
  if (key === undefined) {
    const raw = decodePublicKey(publicKey)
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
    if (verifyKeys.size >= VERIFY_KEY_CACHE_SIZE) {
      // Evict the oldest entry (Map keeps insertion order).
      const oldest = verifyKeys.keys().next().value
      if (oldest !== undefined) verifyKeys.delete(oldest)
    }
    verifyKeys.set(publicKey, key)
  }
  return key
}

/**
 * True when `signature` is a valid Ed25519 signature by `publicKey` over
 * `message` (a string is verified as UTF-8). Never throws: a malformed key or
 * signature is simply not valid.
 */
export function verifySignature (publicKey: string, message: Uint8Array | string, signature: Uint8Array): boolean {
  if (!(signature instanceof Uint8Array) || signature.length !== SIGNATURE_LENGTH) return false
  try {
    return cryptoVerify(null, toBuffer(message), publicKeyObject(publicKey), signature)
  } catch {
    return false
  }
}

/** Sign `"reach/<kind>/v<version>\n" || canonical(body)`. Throws RL-1006 if body is not canonical JSON. */
export function signDomain (signer: Signer, kind: string, body: unknown, version = 1): Uint8Array {
  return signer.sign(domainMessage(kind, body, version))
}

/** Verify a `signDomain` signature. Never throws. */
export function verifyDomain (publicKey: string, kind: string, body: unknown, signature: Uint8Array, version = 1): boolean {
  let message: string
  try {
    message = domainMessage(kind, body, version)
  } catch {
    return false
  }
  return verifySignature(publicKey, message, signature)
}
