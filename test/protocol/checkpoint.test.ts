import { createHash } from 'node:crypto'
import * as ed from '@noble/ed25519'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  checkpointFileName, checkpointMessage, createCheckpoint, decodeCheckpoint, encodeCheckpoint,
  verifyCheckpoint, type Checkpoint, type CheckpointInput
} from '../../protocol/checkpoint.ts'
import { canonicalize } from '../../protocol/canonical.ts'
import { isReachError } from '../../protocol/errors.ts'
import { sha256Hex } from '../../protocol/hash.ts'
import { createSigner, decodePublicKey, signDomain, verifySignature } from '../../protocol/keys.ts'

ed.hashes.sha512 = (message: Uint8Array) => new Uint8Array(createHash('sha512').update(message).digest())

// RFC 8032 TEST 1 seed: a published key, never a real one.
const SEED = Uint8Array.from(Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex'))
const signer = createSigner(SEED)
const other = createSigner(new Uint8Array(32).fill(0x42))

const INPUT: CheckpointInput = {
  kind: 'log',
  log_id: sha256Hex('log'),
  at_seq: 41,
  state_hash: sha256Hex('state'),
  log_hash: sha256Hex('event 41'),
  merkle_root: sha256Hex('root'),
  timestamp: 57
}

// Golden encoding (version 2): pins field names, canonical order, id and signature bytes.
const GOLDEN = '{"at_seq":41,"checkpoint_id":"00014391313ab29092f68c47b45c6b7fe5ddbe24fdd297baaf3dbdc70ff54ec7","kind":"log",' +
  '"log_hash":"2b5efe1b17ef34287cd751ceafca51a89be92940151d1fc45dab0e901665e3b0",' +
  '"log_id":"836ff184e7b41b1e13cb5fd89fa1de98dbbab99e9d2918913ff43b86a5c7c213",' +
  '"merkle_root":"4813494d137e1631bba301d5acab6e7bb7aa74ce1185d456565ef51d737677b2",' +
  '"signature":"b2447e5694520d6c8d60fed620a075ca8f09523999e2b32b7f9798fbd64fd8f8ca8bab57fe50c8ae28f87f009135e4f1c9b71cddc9ce2c842860c0c08aeeed01",' +
  '"signer":"z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw",' +
  '"state_hash":"4ba69735ca53765ed6a709edb56c6ea236b7193a3b29a6b390c346f0f4340e4e","timestamp":57,"version":2}\n'

// A version-1 checkpoint of the same input, as nodes wrote before checkpoints had a kind: still read and verified.
const GOLDEN_V1 = '{"at_seq":41,"checkpoint_id":"55482338c2b82371a1ef43bcc7b69f7b260ed186a28464d647f321bc5801ef6b",' +
  '"log_hash":"2b5efe1b17ef34287cd751ceafca51a89be92940151d1fc45dab0e901665e3b0",' +
  '"log_id":"836ff184e7b41b1e13cb5fd89fa1de98dbbab99e9d2918913ff43b86a5c7c213",' +
  '"merkle_root":"4813494d137e1631bba301d5acab6e7bb7aa74ce1185d456565ef51d737677b2",' +
  '"signature":"6dbab0a9cadfa2b43ad79184990be7193e68455dae7449bb0254f81a9ad12de74d5f37b00673ab1c06f332cae3cf751b9961dbba9c01b2324162a576d5e2cf03",' +
  '"signer":"z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw",' +
  '"state_hash":"4ba69735ca53765ed6a709edb56c6ea236b7193a3b29a6b390c346f0f4340e4e","timestamp":57,"version":1}\n'

function code (fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return isReachError(err) ? err.code : `not a ReachError: ${String(err)}`
  }
  return undefined
}

/** Decode then verify; the first failing code, or undefined when the text is accepted. */
function check (text: string, expectedSigner?: string): string | undefined {
  return code(() => verifyCheckpoint(decodeCheckpoint(text), expectedSigner === undefined ? {} : { expectedSigner }))
}

const hashArb = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(b => Buffer.from(b).toString('hex'))
const seqArb = fc.maxSafeNat()
const inputArb = fc.record({ kind: fc.constantFrom('log' as const, 'run' as const), log_id: hashArb, at_seq: seqArb, state_hash: hashArb, log_hash: hashArb, merkle_root: hashArb, timestamp: seqArb })

describe('createCheckpoint', () => {
  it('given the same input and key 100 times, then identical bytes every time', () => {
    const first = encodeCheckpoint(createCheckpoint(INPUT, signer))
    for (let i = 0; i < 100; i++) expect(encodeCheckpoint(createCheckpoint({ ...INPUT }, signer))).toBe(first)
  })

  it('matches the golden encoding', () => {
    const cp = createCheckpoint(INPUT, signer)
    expect(encodeCheckpoint(cp)).toBe(GOLDEN)
    expect(decodeCheckpoint(GOLDEN)).toEqual(cp)
    expect(check(GOLDEN)).toBeUndefined()
    expect(check(GOLDEN, signer.publicKey)).toBeUndefined()
  })

  it('signs exactly "reach/checkpoint/v2\\n" || canonical(body), and the id is its sha256', () => {
    const cp = createCheckpoint(INPUT, signer)
    const { checkpoint_id: _id, signature: _sig, ...body } = cp
    const message = 'reach/checkpoint/v2\n' + canonicalize(body)
    expect(checkpointMessage(cp)).toBe(message)
    expect(Object.keys(body).sort()).toEqual(['at_seq', 'kind', 'log_hash', 'log_id', 'merkle_root', 'signer', 'state_hash', 'timestamp', 'version'])
    expect(cp.checkpoint_id).toBe(sha256Hex(message))
    expect(cp.version).toBe(2)
    expect(cp.kind).toBe('log')
    expect(cp.signer).toBe(signer.publicKey)
    // an independent Ed25519 implementation produces the same signature over the same bytes
    const bytes = new TextEncoder().encode(message)
    expect(Buffer.from(ed.sign(bytes, SEED)).toString('hex')).toBe(cp.signature)
    expect(ed.verify(Buffer.from(cp.signature, 'hex'), bytes, decodePublicKey(cp.signer))).toBe(true)
  })

  it('reads and verifies a version-1 checkpoint (no kind, signed as reach/checkpoint/v1)', () => {
    const old = decodeCheckpoint(GOLDEN_V1)
    expect(old.version).toBe(1)
    expect(old.kind).toBeUndefined()
    expect(check(GOLDEN_V1, signer.publicKey)).toBeUndefined()
    const { checkpoint_id: _id, signature: _sig, ...body } = old
    expect(checkpointMessage(old)).toBe('reach/checkpoint/v1\n' + canonicalize(body))
    // The same fields under the version-2 domain are another message: a v1 signature is not a v2 one.
    expect(code(() => verifyCheckpoint({ ...old, version: 2, kind: 'log' }))).toBe('RL-2108')
    expect(code(() => verifyCheckpoint({ ...old, version: 2, kind: 'log', checkpoint_id: sha256Hex(checkpointMessage({ ...old, version: 2, kind: 'log' })) }))).toBe('RL-2101')
  })

  it('refuses malformed input with RL-2105', () => {
    const bad: Array<Partial<Record<keyof CheckpointInput, unknown>>> = [
      { kind: 'ledger' },
      { kind: undefined },
      { log_id: 'abc' },
      { state_hash: INPUT.state_hash.toUpperCase() },
      { log_hash: undefined },
      { merkle_root: 42 },
      { at_seq: -1 },
      { at_seq: 1.5 },
      { at_seq: Number.MAX_SAFE_INTEGER + 1 },
      { timestamp: '57' },
      { timestamp: Number.NaN }
    ]
    for (const change of bad) {
      expect(code(() => createCheckpoint({ ...INPUT, ...change } as CheckpointInput, signer)), JSON.stringify(change)).toBe('RL-2105')
    }
  })

  it('round-trips and verifies for any valid input (property)', () => {
    fc.assert(fc.property(inputArb, input => {
      const cp = createCheckpoint(input, signer)
      const text = encodeCheckpoint(cp)
      expect(decodeCheckpoint(text)).toEqual(cp)
      expect(check(text, signer.publicKey)).toBeUndefined()
    }), { numRuns: 200 })
  })
})

describe('tampering', () => {
  it('every single-byte change of a checkpoint file fails decode or verify', () => {
    const original = Buffer.from(encodeCheckpoint(createCheckpoint(INPUT, signer)), 'utf8')
    const seen: Record<string, number> = {}
    let tried = 0
    for (let i = 0; i < original.length; i++) {
      for (let b = 0; b < 256; b++) {
        if (b === original[i]) continue
        const mutated = Buffer.from(original)
        mutated[i] = b
        const result = check(mutated.toString('utf8'))
        if (result === undefined) throw new Error(`byte ${i} changed to 0x${b.toString(16)} was accepted`)
        seen[result] = (seen[result] ?? 0) + 1
        tried++
      }
    }
    expect(tried).toBe(original.length * 255)
    // all three detection paths are exercised, and nothing else is thrown
    expect(Object.keys(seen).sort()).toEqual(['RL-2101', 'RL-2105', 'RL-2108'])
  })

  it('given a body field changed without re-signing, then RL-2108; with a recomputed id, then RL-2101', () => {
    const cp = createCheckpoint(INPUT, signer)
    const changes: Array<Partial<Checkpoint>> = [
      { kind: 'run' },
      { at_seq: cp.at_seq + 1 },
      { timestamp: cp.timestamp + 1 },
      { state_hash: sha256Hex('other state') },
      { log_hash: sha256Hex('other event') },
      { merkle_root: sha256Hex('other root') },
      { log_id: sha256Hex('other log') },
      { signer: other.publicKey }
    ]
    for (const change of changes) {
      const tampered = { ...cp, ...change }
      expect(code(() => verifyCheckpoint(tampered)), JSON.stringify(change)).toBe('RL-2108')
      const reId = { ...tampered, checkpoint_id: sha256Hex(checkpointMessage(tampered)) }
      expect(code(() => verifyCheckpoint(reId)), JSON.stringify(change)).toBe('RL-2101')
    }
  })

  it('given a checkpoint re-signed by another key, then RL-2106 against the expected signer', () => {
    const forged = createCheckpoint(INPUT, other)
    // on its own it is a perfectly valid checkpoint by `other` ...
    expect(code(() => verifyCheckpoint(forged))).toBeUndefined()
    // ... which is why callers that know who must have signed say so
    expect(code(() => verifyCheckpoint(forged, { expectedSigner: signer.publicKey }))).toBe('RL-2106')
    expect(check(encodeCheckpoint(forged), signer.publicKey)).toBe('RL-2106')
    // swapping only the signature (keeping our signer) is a bad signature
    const swapped = { ...createCheckpoint(INPUT, signer), signature: forged.signature }
    expect(code(() => verifyCheckpoint(swapped, { expectedSigner: signer.publicKey }))).toBe('RL-2101')
  })

  it('given a signature made for another domain kind over the same body, then it does not verify as a checkpoint', () => {
    const cp = createCheckpoint(INPUT, signer)
    const { checkpoint_id: _id, signature: _sig, ...body } = cp
    for (const kind of ['receipt', 'event', 'checkpoint2', 'Checkpoint']) {
      const sig = Buffer.from(signDomain(signer, kind, body)).toString('hex')
      expect(code(() => verifyCheckpoint({ ...cp, signature: sig })), kind).toBe('RL-2101')
    }
    // nor does the same body signed under the version-1 domain
    expect(code(() => verifyCheckpoint({ ...cp, signature: Buffer.from(signDomain(signer, 'checkpoint', body, 1)).toString('hex') }))).toBe('RL-2101')
    // control: the same helper with the checkpoint kind and version gives the real signature
    expect(Buffer.from(signDomain(signer, 'checkpoint', body, 2)).toString('hex')).toBe(cp.signature)
    // and the raw body without the domain prefix is not what is signed
    expect(verifySignature(signer.publicKey, canonicalize(body), Buffer.from(cp.signature, 'hex'))).toBe(false)
  })
})

describe('decodeCheckpoint is strict', () => {
  const cp = createCheckpoint(INPUT, signer)
  const json = GOLDEN.slice(0, -1)
  const reencode = (value: unknown): string => canonicalize(value) + '\n'

  it.each([
    ['no trailing newline', json],
    ['two trailing newlines', GOLDEN + '\n'],
    ['CRLF', json + '\r\n'],
    ['leading space', ' ' + GOLDEN],
    ['space after a colon', GOLDEN.replace('"at_seq":41', '"at_seq": 41')],
    ['pretty printed', JSON.stringify(cp, null, 2) + '\n'],
    ['keys out of order', JSON.stringify(cp) + '\n'],
    ['escaped character', GOLDEN.replace('"version"', '"\\u0076ersion"')],
    ['number as 41.0', GOLDEN.replace('"at_seq":41', '"at_seq":41.0')],
    ['number as 4.1e1', GOLDEN.replace('"at_seq":41', '"at_seq":4.1e1')],
    ['duplicate key', GOLDEN.replace('{"at_seq":41,', '{"at_seq":40,"at_seq":41,')],
    ['not JSON', 'checkpoint\n'],
    ['a JSON array', '[]\n'],
    ['JSON null', 'null\n'],
    ['missing field', reencode(Object.fromEntries(Object.entries(cp).filter(([k]) => k !== 'merkle_root')))],
    ['unknown field', reencode({ ...cp, note: 'hi' })],
    ['version 3', reencode({ ...cp, version: 3 })],
    ['version "2"', reencode({ ...cp, version: '2' })],
    ['version 2 without a kind', reencode(Object.fromEntries(Object.entries(cp).filter(([k]) => k !== 'kind')))],
    ['version 1 with a kind', reencode({ ...cp, version: 1 })],
    ['an unknown kind', reencode({ ...cp, kind: 'ledger' })],
    ['at_seq as a string', reencode({ ...cp, at_seq: '41' })],
    ['negative at_seq', reencode({ ...cp, at_seq: -1 })],
    ['fractional timestamp', reencode({ ...cp, timestamp: 1.5 })],
    ['unsafe integer', reencode({ ...cp, at_seq: 2 ** 60 })],
    ['uppercase hex', reencode({ ...cp, log_id: cp.log_id.toUpperCase() })],
    ['short signature', reencode({ ...cp, signature: cp.signature.slice(2) })],
    ['signer not a key', reencode({ ...cp, signer: 'z6Mk' })],
    ['huge input', GOLDEN.slice(0, -2) + ' '.repeat(10_000) + '}\n']
  ])('rejects %s with RL-2105', (_name, text) => {
    expect(code(() => decodeCheckpoint(text))).toBe('RL-2105')
  })

  it('says which versions it understands', () => {
    try {
      decodeCheckpoint(reencode({ ...cp, version: 3 }))
      expect.unreachable()
    } catch (err) {
      expect(isReachError(err, 'RL-2105')).toBe(true)
      expect((err as Error).message).toMatch(/unsupported checkpoint version 3 \(this node understands versions 1 and 2\)/)
    }
  })

  it('verifyCheckpoint also rejects malformed in-memory checkpoints with RL-2105', () => {
    expect(code(() => verifyCheckpoint({ ...cp, signature: 'zz' }))).toBe('RL-2105')
    expect(code(() => verifyCheckpoint({ ...cp, extra: 1 } as Checkpoint))).toBe('RL-2105')
    expect(code(() => encodeCheckpoint({ ...cp, at_seq: -1 }))).toBe('RL-2105')
  })
})

describe('checkpointFileName', () => {
  it('is <log_id[0:16]>-<at_seq, 16 digits>-<checkpoint_id[0:12]>.checkpoint', () => {
    expect(checkpointFileName(createCheckpoint(INPUT, signer))).toBe('836ff184e7b41b1e-0000000000000041-00014391313a.checkpoint')
  })

  it('sorts by log, then by at_seq numerically', () => {
    const seqs = [0, 9, 10, 99, 100, 12345, Number.MAX_SAFE_INTEGER]
    const names = seqs.map(at_seq => checkpointFileName(createCheckpoint({ ...INPUT, at_seq }, signer)))
    expect([...names].sort()).toEqual(names)
    expect(names.at(-1)).toContain('-9007199254740991-')
  })

  it('keeps two checkpoints at the same seq apart', () => {
    expect(checkpointFileName(createCheckpoint(INPUT, signer))).not.toBe(checkpointFileName(createCheckpoint(INPUT, other)))
  })
})
