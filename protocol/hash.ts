/**
 * SHA-256 helpers. Hashes travel as lowercase hex (64 characters) in every
 * JSON format; Merkle nodes are computed on raw bytes.
 */
import { createHash, hash } from 'node:crypto'
import { canonicalize } from './canonical.ts'

export const ZERO_HASH = '0'.repeat(64)

// crypto.hash is the one-shot API: for the small inputs events are it is
// several times faster than createHash().update().digest().
export function sha256Hex (data: string | Uint8Array): string {
  return hash('sha256', data, 'hex')
}

export function sha256 (data: string | Uint8Array): Uint8Array {
  return createHash('sha256').update(data).digest()
}

/** SHA-256 of the RFC 8785 canonical form of `value`, hex. */
export function hashCanonical (value: unknown): string {
  return sha256Hex(canonicalize(value))
}

/**
 * Domain-separated message: `"reach/<kind>/v<version>\n" || canonical(body)`.
 * The same prefix is what signatures cover (see protocol/SPEC.md), so a hash
 * or signature made for one kind (or version) of object can never be replayed
 * as another.
 */
export function domainMessage (kind: string, body: unknown, version = 1): string {
  return `reach/${kind}/v${version}\n${canonicalize(body)}`
}

/**
 * True for 64 lowercase hex characters. A plain loop: this runs several
 * times per event on verify, and beats the equivalent regular expression
 * (`/^[0-9a-f]{64}$/`) by an order of magnitude there.
 */
export function isHash (value: unknown): value is string {
  if (typeof value !== 'string' || value.length !== 64) return false
  for (let i = 0; i < 64; i++) {
    const c = value.charCodeAt(i)
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false
  }
  return true
}

export function hexToBytes (hex: string): Uint8Array {
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}

export function bytesToHex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}
