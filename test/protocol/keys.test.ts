import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import * as ed from '@noble/ed25519'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isReachError } from '../../protocol/errors.ts'
import {
  createSigner, decodePublicKey, encodePublicKey, generateKeyPair, isPublicKey, keyPairFromSeed,
  signDomain, verifyDomain, verifySignature, VERIFY_KEY_CACHE_SIZE
} from '../../protocol/keys.ts'
import { base58btc } from 'multiformats/bases/base58'

// @noble/ed25519 v3 needs a SHA-512 for its sync API; node:crypto's is independent of noble's curve code.
ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest())

interface Vector { name: string, secret_key: string, public_key: string, public_key_multibase: string, message: string, signature: string }
const fixture = JSON.parse(readFileSync(new URL('../fixtures/ed25519/rfc8032.json', import.meta.url), 'utf8')) as { vectors: Vector[] }
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const bytes = (h: string): Uint8Array => Uint8Array.from(Buffer.from(h, 'hex'))

function code (fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return isReachError(err) ? err.code : 'not a ReachError'
  }
  return undefined
}

function nobleVerify (sig: Uint8Array, msg: Uint8Array, pub: Uint8Array): boolean {
  try {
    return ed.verify(sig, msg, pub)
  } catch {
    return false
  }
}

function flipBit (b: Uint8Array, bit: number): Uint8Array {
  const out = Uint8Array.from(b)
  out[bit >> 3] = (out[bit >> 3] as number) ^ (1 << (bit & 7))
  return out
}

describe('RFC 8032 §7.1 test vectors', () => {
  it('has the five vectors', () => {
    expect(fixture.vectors.map(v => v.name)).toEqual(['TEST 1', 'TEST 2', 'TEST 3', 'TEST 1024', 'TEST SHA(abc)'])
    expect(fixture.vectors[3]?.message.length).toBe(1023 * 2)
  })

  for (const v of fixture.vectors) {
    it(`${v.name}: public key and signature are exactly the published ones`, () => {
      const signer = createSigner(bytes(v.secret_key))
      expect(hex(decodePublicKey(signer.publicKey))).toBe(v.public_key)
      expect(signer.publicKey).toBe(v.public_key_multibase)
      expect(keyPairFromSeed(bytes(v.secret_key)).publicKey).toBe(v.public_key_multibase)
      expect(hex(signer.sign(bytes(v.message)))).toBe(v.signature)
      expect(verifySignature(v.public_key_multibase, bytes(v.message), bytes(v.signature))).toBe(true)
      // and the independent implementation agrees on the same vector
      expect(hex(ed.getPublicKey(bytes(v.secret_key)))).toBe(v.public_key)
      expect(hex(ed.sign(bytes(v.message), bytes(v.secret_key)))).toBe(v.signature)
    })
  }
})

describe('node:crypto and @noble/ed25519 agree byte for byte', () => {
  const seedArb = fc.uint8Array({ minLength: 32, maxLength: 32 })
  const msgArb = fc.uint8Array({ minLength: 0, maxLength: 512 })

  it('same public keys, identical signatures, each verifies the other', () => {
    fc.assert(fc.property(seedArb, msgArb, (seed, msg) => {
      const signer = createSigner(seed)
      const noblePub = ed.getPublicKey(seed)
      expect(hex(decodePublicKey(signer.publicKey))).toBe(hex(noblePub))
      expect(signer.publicKey).toBe(encodePublicKey(noblePub))
      const ours = signer.sign(msg)
      const theirs = ed.sign(msg, seed)
      expect(hex(ours)).toBe(hex(theirs))
      expect(nobleVerify(ours, msg, noblePub)).toBe(true)
      expect(verifySignature(signer.publicKey, msg, theirs)).toBe(true)
    }), { numRuns: 300 })
  })

  it('string messages are signed as UTF-8', () => {
    fc.assert(fc.property(seedArb, fc.string({ unit: 'grapheme' }), (seed, text) => {
      const utf8 = new TextEncoder().encode(text)
      expect(hex(createSigner(seed).sign(text))).toBe(hex(ed.sign(utf8, seed)))
    }), { numRuns: 100 })
  })

  it('async noble API agrees too', async () => {
    await fc.assert(fc.asyncProperty(seedArb, msgArb, async (seed, msg) => {
      const signer = createSigner(seed)
      expect(hex(await ed.getPublicKeyAsync(seed))).toBe(hex(decodePublicKey(signer.publicKey)))
      expect(hex(await ed.signAsync(msg, seed))).toBe(hex(signer.sign(msg)))
      expect(await ed.verifyAsync(signer.sign(msg), msg, decodePublicKey(signer.publicKey))).toBe(true)
    }), { numRuns: 30 })
  })

  it('a flipped bit in signature, message or public key is rejected by both', () => {
    fc.assert(fc.property(seedArb, fc.uint8Array({ minLength: 1, maxLength: 256 }), fc.nat(), (seed, msg, r) => {
      const signer = createSigner(seed)
      const pub = decodePublicKey(signer.publicKey)
      const sig = signer.sign(msg)

      const badSig = flipBit(sig, r % 512)
      expect(verifySignature(signer.publicKey, msg, badSig)).toBe(false)
      expect(nobleVerify(badSig, msg, pub)).toBe(false)

      const badMsg = flipBit(msg, r % (msg.length * 8))
      expect(verifySignature(signer.publicKey, badMsg, sig)).toBe(false)
      expect(nobleVerify(sig, badMsg, pub)).toBe(false)

      const badPub = flipBit(pub, r % 256)
      expect(verifySignature(encodePublicKey(badPub), msg, sig)).toBe(false)
      expect(nobleVerify(sig, msg, badPub)).toBe(false)
    }), { numRuns: 300 })
  })
})

describe('multibase public keys', () => {
  it('encodes as did:key multibase ("z6Mk...") and round-trips', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), raw => {
      const s = encodePublicKey(raw)
      expect(s.startsWith('z6Mk')).toBe(true)
      expect(hex(decodePublicKey(s))).toBe(hex(raw))
      expect(isPublicKey(s)).toBe(true)
    }))
  })

  it('rejects a bad base, prefix or length with RL-1009', () => {
    const raw = new Uint8Array(32).fill(7)
    const good = encodePublicKey(raw)
    const withPrefix = (prefix: number[], body: Uint8Array): string => base58btc.encode(Uint8Array.from([...prefix, ...body]))
    const bad = [
      '',
      good.slice(1), // no multibase prefix
      'f' + Buffer.from([0xed, 0x01, ...raw]).toString('hex'), // base16 multibase
      good.slice(0, -1), // truncated
      good + '1', // extra byte
      good.slice(0, 10) + '0' + good.slice(11), // '0' is not in the base58 alphabet
      withPrefix([0xe7, 0x01], raw), // secp256k1-pub multicodec
      withPrefix([0xed, 0x01], raw.slice(1)), // 31 bytes
      withPrefix([0xed, 0x01], new Uint8Array(33)), // 33 bytes
      'z1' + good.slice(1) // leading zero byte
    ]
    for (const s of bad) {
      expect(code(() => decodePublicKey(s)), s).toBe('RL-1009')
      expect(isPublicKey(s)).toBe(false)
    }
    expect(code(() => encodePublicKey(new Uint8Array(31)))).toBe('RL-1009')
    expect(code(() => decodePublicKey(42 as unknown as string))).toBe('RL-1009')
  })
})

describe('key pairs and signers', () => {
  it('generateKeyPair gives distinct keys that re-derive from their seeds', () => {
    const a = generateKeyPair()
    const b = generateKeyPair()
    expect(a.seed.length).toBe(32)
    expect(a.publicKey).not.toBe(b.publicKey)
    expect(keyPairFromSeed(a.seed).publicKey).toBe(a.publicKey)
    expect(createSigner(a.seed).publicKey).toBe(a.publicKey)
  })

  it('rejects a seed that is not 32 bytes with RL-1009', () => {
    expect(code(() => keyPairFromSeed(new Uint8Array(31)))).toBe('RL-1009')
    expect(code(() => createSigner(new Uint8Array(64)))).toBe('RL-1009')
  })

  it('keyPairFromSeed copies the seed', () => {
    const seed = new Uint8Array(32).fill(1)
    const kp = keyPairFromSeed(seed)
    seed.fill(2)
    expect(kp.seed.every(x => x === 1)).toBe(true)
  })

  it('signatures are deterministic', () => {
    const signer = createSigner(new Uint8Array(32).fill(9))
    expect(hex(signer.sign('same'))).toBe(hex(signer.sign('same')))
    expect(signer.sign('same').length).toBe(64)
  })
})

describe('verifySignature never throws', () => {
  const signer = createSigner(new Uint8Array(32).fill(3))
  const sig = signer.sign('m')

  it('returns false for malformed keys and signatures', () => {
    const cases: Array<[unknown, unknown]> = [
      ['not a key', sig],
      ['', sig],
      [undefined, sig],
      [signer.publicKey, sig.slice(0, 63)],
      [signer.publicKey, new Uint8Array(65)],
      [signer.publicKey, 'not bytes'],
      [signer.publicKey, null],
      [encodePublicKey(new Uint8Array(32).fill(0xff)), sig] // not a curve point
    ]
    for (const [key, s] of cases) {
      expect(verifySignature(key as string, 'm', s as Uint8Array)).toBe(false)
    }
    expect(verifySignature(signer.publicKey, 'm', sig)).toBe(true)
  })

  it('keeps working past the key cache bound', () => {
    const signers = Array.from({ length: VERIFY_KEY_CACHE_SIZE + 50 }, (_, i) => {
      const seed = new Uint8Array(32)
      new DataView(seed.buffer).setUint32(0, i + 1)
      return createSigner(seed)
    })
    for (const s of signers) expect(verifySignature(s.publicKey, 'x', s.sign('x'))).toBe(true)
    // evicted keys are rebuilt on demand; a signature never verifies under another key
    expect(verifySignature(signers[0]!.publicKey, 'x', signers[0]!.sign('x'))).toBe(true)
    expect(verifySignature(signers[1]!.publicKey, 'x', signers[0]!.sign('x'))).toBe(false)
  })
})

describe('domain-separated signatures', () => {
  const signer = createSigner(new Uint8Array(32).fill(5))
  const body = { b: [1, 2, 3], a: 'x' }

  it('covers "reach/<kind>/v1\\n" || canonical(body)', () => {
    const sig = signDomain(signer, 'receipt', body)
    expect(hex(sig)).toBe(hex(signer.sign('reach/receipt/v1\n{"a":"x","b":[1,2,3]}')))
    expect(verifyDomain(signer.publicKey, 'receipt', body, sig)).toBe(true)
    // key order does not matter: the body is canonicalised
    expect(verifyDomain(signer.publicKey, 'receipt', { a: 'x', b: [1, 2, 3] }, sig)).toBe(true)
  })

  it('a signature for one kind does not verify as another, nor for another body', () => {
    const sig = signDomain(signer, 'receipt', body)
    expect(verifyDomain(signer.publicKey, 'checkpoint', body, sig)).toBe(false)
    expect(verifyDomain(signer.publicKey, 'receipt', { ...body, a: 'y' }, sig)).toBe(false)
    expect(verifySignature(signer.publicKey, '{"a":"x","b":[1,2,3]}', sig)).toBe(false)
  })

  it('verifyDomain returns false for a body canonical JSON cannot carry', () => {
    const sig = signDomain(signer, 'receipt', body)
    expect(verifyDomain(signer.publicKey, 'receipt', { a: Number.NaN }, sig)).toBe(false)
    expect(code(() => signDomain(signer, 'receipt', { a: 1n }))).toBe('RL-1006')
  })
})
