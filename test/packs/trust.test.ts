import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as ed from '@noble/ed25519'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { canonicalize } from '../../protocol/canonical.ts'
import { sha256Hex } from '../../protocol/hash.ts'
import { createSigner, decodePublicKey, generateKeyPair, keyPairFromSeed, verifyDomain } from '../../protocol/keys.ts'
import { encodeBundle } from '../../packs/bundle.ts'
import { manifestHash, parsePackSignature, signPack, verifyPackSignature } from '../../packs/trust.ts'
import { openTrustRegistry } from '../../node/trust-registry.ts'
import { code, failure, manifest, tempDir } from './helpers.ts'

const enc = new TextEncoder()
const packA = encodeBundle(manifest({ name: 'alpha' }), { 'index.js': enc.encode('export {}') })
const packB = encodeBundle(manifest({ name: 'beta' }), { 'index.js': enc.encode('export {}') })
const subjectA = { cid: packA.cid, manifest: packA.bundle.manifest }
const subjectB = { cid: packB.cid, manifest: packB.bundle.manifest }
const publisher = createSigner(keyPairFromSeed(new Uint8Array(32).fill(7)).seed)

describe('pack signature envelopes', () => {
  it('binds version, kind, CID, manifest hash and publisher', () => {
    const sig = signPack(subjectA, publisher)
    expect(Object.keys(sig).sort()).toEqual(['cid', 'kind', 'manifest_hash', 'publisher', 'signature', 'version'])
    expect(sig).toMatchObject({ version: 1, kind: 'pack-signature', cid: packA.cid, publisher: publisher.publicKey })
    expect(sig.manifest_hash).toBe(sha256Hex(canonicalize(packA.bundle.manifest)))
    expect(sig.manifest_hash).toBe(manifestHash(packA.bundle.manifest))
    expect(sig.signature).toMatch(/^[0-9a-f]{128}$/)
    expect(verifyPackSignature(sig, subjectA)).toEqual(sig)
    // Deterministic: the same key signs the same pack identically.
    expect(signPack(subjectA, publisher)).toEqual(sig)
  })

  it('is an Ed25519 signature over "reach/pack-signature/v1\\n" || canonical(body), checked by @noble/ed25519', async () => {
    const { signature, ...body } = signPack(subjectA, publisher)
    const message = enc.encode(`reach/pack-signature/v1\n${canonicalize(body)}`)
    expect(await ed.verifyAsync(Buffer.from(signature, 'hex'), message, decodePublicKey(publisher.publicKey))).toBe(true)
    // Domain separation: the same body does not verify as another kind.
    expect(verifyDomain(publisher.publicKey, 'checkpoint', body, Buffer.from(signature, 'hex'))).toBe(false)
  })

  it('given a signature moved to another pack by the same publisher, then RL-3008', async () => {
    const sig = signPack(subjectA, publisher)
    const moved = await failure(() => verifyPackSignature(sig, subjectB))
    expect([moved.code, moved.details.reason]).toEqual(['RL-3008', 'cid'])
    // Rewriting the CID and manifest hash to the other pack breaks the signature itself.
    const rewritten = { ...sig, cid: packB.cid, manifest_hash: manifestHash(packB.bundle.manifest) }
    const forged = await failure(() => verifyPackSignature(rewritten, subjectB))
    expect([forged.code, forged.details.reason]).toEqual(['RL-3008', 'signature'])
  })

  it('given a signature checked against another manifest under the same CID, then RL-3008 (manifest)', async () => {
    const sig = signPack(subjectA, publisher)
    const err = await failure(() => verifyPackSignature(sig, { cid: packA.cid, manifest: packB.bundle.manifest }))
    expect([err.code, err.details.reason]).toEqual(['RL-3008', 'manifest'])
  })

  it('given any field altered, then RL-3008', async () => {
    const sig = signPack(subjectA, publisher)
    const other = generateKeyPair().publicKey
    const flip = (hex: string): string => (hex[0] === '0' ? '1' : '0') + hex.slice(1)
    const cases: Array<[string, unknown, string]> = [
      ['publisher swapped', { ...sig, publisher: other }, 'signature'],
      ['signature flipped', { ...sig, signature: flip(sig.signature) }, 'signature'],
      ['manifest hash flipped', { ...sig, manifest_hash: flip(sig.manifest_hash) }, 'manifest'],
      ['cid changed', { ...sig, cid: packB.cid }, 'cid'],
      ['version 2', { ...sig, version: 2 }, 'malformed'],
      ['another kind', { ...sig, kind: 'checkpoint' }, 'malformed'],
      ['extra field', { ...sig, note: 'x' }, 'malformed'],
      ['publisher not a key', { ...sig, publisher: 'z6MkNope' }, 'malformed'],
      ['signature too short', { ...sig, signature: sig.signature.slice(2) }, 'malformed'],
      ['signature upper-case', { ...sig, signature: sig.signature.toUpperCase() }, 'malformed'],
      ['not an object', 'signature', 'malformed']
    ]
    for (const [what, value, reason] of cases) {
      const err = await failure(() => verifyPackSignature(value, subjectA))
      expect([err.code, err.details.reason], what).toEqual(['RL-3008', reason])
    }
    expect(await code(() => parsePackSignature(null))).toBe('RL-3008')
  })
})

describe('TrustRegistry', () => {
  let tmp: { path: string, remove: () => Promise<void> }
  let path: string
  beforeEach(async () => { tmp = await tempDir('trust'); path = join(tmp.path, 'home', 'trust.json') })
  afterEach(async () => { await tmp.remove() })
  const clock = (iso: string) => () => new Date(iso)

  it('given no file, then an empty registry and every key unknown', async () => {
    const r = await openTrustRegistry(path)
    expect(r.list()).toEqual([])
    expect(r.status(publisher.publicKey)).toBe('unknown')
  })

  it('round-trips add, list, status and revoke through the file', async () => {
    const alice = generateKeyPair().publicKey
    const bob = generateKeyPair().publicKey
    const r = await openTrustRegistry(path, { now: clock('2025-01-02T03:04:05.000Z') })
    await r.add(alice, 'Alice')
    await r.add(bob, 'Bob')
    const r2 = await openTrustRegistry(path, { now: clock('2025-02-01T00:00:00.000Z') })
    expect(r2.list()).toEqual([
      { public_key: alice, name: 'Alice', added_at: '2025-01-02T03:04:05.000Z' },
      { public_key: bob, name: 'Bob', added_at: '2025-01-02T03:04:05.000Z' }
    ])
    expect(r2.status(alice)).toBe('trusted')
    await r2.revoke(bob)
    const r3 = await openTrustRegistry(path)
    expect(r3.status(bob)).toBe('revoked')
    expect(r3.get(bob)?.revoked_at).toBe('2025-02-01T00:00:00.000Z')
    expect(r3.status(alice)).toBe('trusted')
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({ version: 1, keys: r3.list() })
  })

  it('renames a trusted key without changing added_at; re-adding a revoked key trusts it again', async () => {
    const k = generateKeyPair().publicKey
    const r = await openTrustRegistry(path, { now: clock('2025-01-01T00:00:00.000Z') })
    await r.add(k, 'old')
    const r2 = await openTrustRegistry(path, { now: clock('2025-03-01T00:00:00.000Z') })
    expect(await r2.add(k, 'new')).toEqual({ public_key: k, name: 'new', added_at: '2025-01-01T00:00:00.000Z' })
    await r2.revoke(k)
    expect(r2.status(k)).toBe('revoked')
    expect(await r2.add(k, 'again')).toEqual({ public_key: k, name: 'again', added_at: '2025-03-01T00:00:00.000Z' })
    expect((await openTrustRegistry(path)).status(k)).toBe('trusted')
  })

  it('records a key never seen as revoked, so it stays refused', async () => {
    const k = generateKeyPair().publicKey
    const r = await openTrustRegistry(path)
    await r.revoke(k)
    expect((await openTrustRegistry(path)).status(k)).toBe('revoked')
  })

  it('given a string that is not a key, then RL-1009 and nothing is written', async () => {
    const r = await openTrustRegistry(path)
    expect(await code(() => r.add('not-a-key', 'x'))).toBe('RL-1009')
    await expect(readFile(path)).rejects.toMatchObject({ code: 'ENOENT' })
  })

  it('given a malformed registry file, then RL-3014', async () => {
    const k = generateKeyPair().publicKey
    const ok = { public_key: k, name: 'k', added_at: '2025-01-01T00:00:00.000Z' }
    const files: Array<[string, string]> = [
      ['not JSON', '{"version":1,'],
      ['an array', '[]'],
      ['version 2', JSON.stringify({ version: 2, keys: [] })],
      ['no keys', JSON.stringify({ version: 1 })],
      ['extra field', JSON.stringify({ version: 1, keys: [], x: 1 })],
      ['bad key', JSON.stringify({ version: 1, keys: [{ ...ok, public_key: 'z6MkBAD' }] })],
      ['duplicate key', JSON.stringify({ version: 1, keys: [ok, ok] })],
      ['bad time', JSON.stringify({ version: 1, keys: [{ ...ok, added_at: 'yesterday' }] })],
      ['bad revoked_at', JSON.stringify({ version: 1, keys: [{ ...ok, revoked_at: 5 }] })],
      ['name not a string', JSON.stringify({ version: 1, keys: [{ ...ok, name: null }] })],
      ['unknown key field', JSON.stringify({ version: 1, keys: [{ ...ok, trusted: true }] })]
    ]
    await openTrustRegistry(path).then((r) => r.add(k, 'k')) // creates the folder
    for (const [what, text] of files) {
      await writeFile(path, text)
      expect(await code(() => openTrustRegistry(path)), what).toBe('RL-3014')
    }
  })
})
