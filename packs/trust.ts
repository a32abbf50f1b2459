/**
 * Who vouches for a pack: publisher signature envelopes, and the node's
 * registry of publisher keys it trusts.
 *
 * Envelope (version 1), stored beside a pack and sent with it:
 *
 *   body      = {version: 1, kind: "pack-signature", cid, manifest_hash, publisher}
 *   message   = "reach/pack-signature/v1\n" || canonical(body)
 *   envelope  = body + {signature: hex(Ed25519(publisher seed, message))}
 *
 * `manifest_hash = sha256(canonical(manifest))`. The CID already covers the
 * manifest; naming both binds the publisher, the exact bytes and what they
 * claim together, so a signature moved to another pack or another manifest
 * fails (RL-3008), and a reader can see what was signed without the bundle.
 *
 * Registry (`<home>/trust.json`, node-local; wall-clock times are fine here,
 * nothing in it is replayed):
 *
 *   {"version": 1, "keys": [{"public_key": "z6Mk…", "name": "…", "added_at": ISO-8601, "revoked_at"?: ISO-8601}]}
 *
 * A key is trusted, revoked (kept so it stays refused) or unknown.
 */
import { canonicalize } from '../protocol/canonical.ts'
import type { Pack } from './bundle.ts'
import { ReachError } from '../protocol/errors.ts'
import { bytesToHex, hexToBytes, sha256Hex } from '../protocol/hash.ts'
import { isPublicKey, signDomain, verifyDomain, type Signer } from '../protocol/keys.ts'
import type { PackManifest } from './manifest.ts'

export const SIGNATURE_VERSION = 1
/** Domain of pack signatures: they sign "reach/pack-signature/v1\n" || canonical(body). */
export const SIGNATURE_KIND = 'pack-signature'
export const TRUST_FILE_VERSION = 1
/** A registry names people and organisations it trusts; 128 characters is plenty for a label. */
export const MAX_TRUST_NAME_LENGTH = 128

/** A pack with the publisher signatures that came with it (as a node stores and serves it). */
export interface StoredPack extends Pack {
  signatures: PackSignature[]
}

export interface PackSignature {
  version: 1
  kind: 'pack-signature'
  /** The pack's CIDv1 (base32). */
  cid: string
  /** sha256(canonical(manifest)), hex. */
  manifest_hash: string
  /** Multibase Ed25519 public key of the publisher. */
  publisher: string
  /** Ed25519 signature, 128 hex characters. */
  signature: string
}

export type SignatureBody = Omit<PackSignature, 'signature'>

/** What a signature is checked against: the pack's CID and its manifest. */
export interface SignedSubject {
  cid: string
  manifest: PackManifest
}

export type TrustStatus = 'trusted' | 'revoked' | 'unknown'

export interface TrustedKey {
  public_key: string
  name: string
  added_at: string
  revoked_at?: string
}

export interface TrustFile {
  version: 1
  keys: TrustedKey[]
}

const ENVELOPE_FIELDS = ['cid', 'kind', 'manifest_hash', 'publisher', 'signature', 'version']
const HEX64 = /^[0-9a-f]{64}$/
const HEX128 = /^[0-9a-f]{128}$/

/** `sha256(canonical(manifest))`, hex: the manifest a signature vouches for. */
export function manifestHash (manifest: PackManifest): string {
  return sha256Hex(canonicalize(manifest))
}

function invalid (why: string, details: Record<string, unknown>): never {
  throw new ReachError('RL-3008', { message: `pack signature invalid: ${why}`, details })
}

/** Sign a pack (its CID and manifest) as `signer`. */
export function signPack (subject: SignedSubject, signer: Signer): PackSignature {
  const body: SignatureBody = {
    version: SIGNATURE_VERSION,
    kind: SIGNATURE_KIND,
    cid: subject.cid,
    manifest_hash: manifestHash(subject.manifest),
    publisher: signer.publicKey
  }
  return { ...body, signature: bytesToHex(signDomain(signer, SIGNATURE_KIND, body)) }
}

/** Check an envelope's shape (not its signature). Throws RL-3008 with `reason: "malformed"`. */
export function parsePackSignature (value: unknown): PackSignature {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) invalid('not a JSON object', { reason: 'malformed' })
  const v = value as Record<string, unknown>
  const extra = Object.keys(v).filter((k) => !ENVELOPE_FIELDS.includes(k))
  if (extra.length > 0) invalid(`unknown field(s) ${extra.join(', ')}`, { reason: 'malformed' })
  if (v.version !== SIGNATURE_VERSION) invalid(`unsupported version ${JSON.stringify(v.version)}`, { reason: 'malformed' })
  if (v.kind !== SIGNATURE_KIND) invalid(`kind must be "${SIGNATURE_KIND}"`, { reason: 'malformed' })
  if (typeof v.cid !== 'string' || v.cid === '') invalid('cid must be a CID string', { reason: 'malformed' })
  if (typeof v.manifest_hash !== 'string' || !HEX64.test(v.manifest_hash)) invalid('manifest_hash must be 64 hex characters', { reason: 'malformed' })
  if (!isPublicKey(v.publisher)) invalid('publisher must be a multibase Ed25519 public key', { reason: 'malformed' })
  if (typeof v.signature !== 'string' || !HEX128.test(v.signature)) invalid('signature must be 128 hex characters', { reason: 'malformed' })
  return {
    version: SIGNATURE_VERSION,
    kind: SIGNATURE_KIND,
    cid: v.cid,
    manifest_hash: v.manifest_hash,
    publisher: v.publisher,
    signature: v.signature
  }
}

/**
 * Verify an envelope for this pack: well-formed, same CID, same manifest,
 * and an Ed25519 signature by `publisher` over the body. Throws RL-3008 with
 * `details.reason` one of malformed | cid | manifest | signature.
 */
export function verifyPackSignature (value: unknown, subject: SignedSubject): PackSignature {
  const sig = parsePackSignature(value)
  const details = { publisher: sig.publisher, cid: subject.cid }
  if (sig.cid !== subject.cid) invalid(`it signs pack ${sig.cid}, not ${subject.cid}`, { ...details, reason: 'cid' })
  if (sig.manifest_hash !== manifestHash(subject.manifest)) invalid('it signs another manifest', { ...details, reason: 'manifest' })
  const { signature, ...body } = sig
  if (!verifyDomain(sig.publisher, SIGNATURE_KIND, body, hexToBytes(signature))) {
    invalid(`the Ed25519 signature by ${sig.publisher} does not verify`, { ...details, reason: 'signature' })
  }
  return sig
}

// ---------------------------------------------------------------- registry

export function malformedRegistry (path: string, why: string): never {
  throw new ReachError('RL-3014', { message: `trust registry ${path} is invalid: ${why}`, details: { path } })
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/

function isTime (v: unknown): v is string {
  return typeof v === 'string' && ISO_TIME.test(v) && !Number.isNaN(Date.parse(v))
}

/** Validate a parsed trust file. Throws RL-3014. */
export function parseTrustFile (value: unknown, path = '(trust registry)'): TrustFile {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) malformedRegistry(path, 'not a JSON object')
  const v = value as Record<string, unknown>
  const extra = Object.keys(v).filter((k) => k !== 'version' && k !== 'keys')
  if (extra.length > 0) malformedRegistry(path, `unknown field(s) ${extra.join(', ')}`)
  if (v.version !== TRUST_FILE_VERSION) malformedRegistry(path, `unsupported version ${JSON.stringify(v.version)} (expected ${TRUST_FILE_VERSION})`)
  if (!Array.isArray(v.keys)) malformedRegistry(path, '`keys` must be an array')
  const seen = new Set<string>()
  const keys: TrustedKey[] = []
  v.keys.forEach((k: unknown, i: number) => {
    const at = `keys[${i}]`
    if (k === null || typeof k !== 'object' || Array.isArray(k)) malformedRegistry(path, `${at} is not an object`)
    const e = k as Record<string, unknown>
    const unknown = Object.keys(e).filter((f) => !['public_key', 'name', 'added_at', 'revoked_at'].includes(f))
    if (unknown.length > 0) malformedRegistry(path, `${at} has unknown field(s) ${unknown.join(', ')}`)
    if (!isPublicKey(e.public_key)) malformedRegistry(path, `${at}.public_key is not a multibase Ed25519 public key`)
    if (seen.has(e.public_key)) malformedRegistry(path, `${at}.public_key appears twice`)
    seen.add(e.public_key)
    if (typeof e.name !== 'string' || e.name.length > MAX_TRUST_NAME_LENGTH) malformedRegistry(path, `${at}.name must be a string of at most ${MAX_TRUST_NAME_LENGTH} characters`)
    if (!isTime(e.added_at)) malformedRegistry(path, `${at}.added_at must be an ISO-8601 UTC time`)
    if (e.revoked_at !== undefined && !isTime(e.revoked_at)) malformedRegistry(path, `${at}.revoked_at must be an ISO-8601 UTC time`)
    keys.push({ public_key: e.public_key, name: e.name, added_at: e.added_at, ...(e.revoked_at === undefined ? {} : { revoked_at: e.revoked_at as string }) })
  })
  return { version: TRUST_FILE_VERSION, keys }
}
