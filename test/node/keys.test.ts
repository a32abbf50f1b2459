import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { encodeKeyFile, readKeyFile, readPublicKey, writeKeyFile } from '../../node/keys.ts'
import { isReachError } from '../../protocol/errors.ts'
import { generateKeyPair, keyPairFromSeed } from '../../protocol/keys.ts'
import { code } from '../codes.ts'

const posix = process.platform !== 'win32'

let dir: string
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'reach-keys-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

describe('writeKeyFile / readKeyFile', () => {
  it('round-trips a key pair and its kind', async () => {
    const kp = generateKeyPair()
    const path = join(dir, 'node.key')
    await writeKeyFile(path, kp, 'node')
    const back = await readKeyFile(path)
    expect(back.publicKey).toBe(kp.publicKey)
    expect(Buffer.from(back.seed).equals(Buffer.from(kp.seed))).toBe(true)
    expect(back.kind).toBe('node')
  })

  it('writes one JSON line in the documented format', async () => {
    const kp = keyPairFromSeed(new Uint8Array(32).fill(1))
    const path = join(dir, 'operator.key')
    await writeKeyFile(path, kp, 'operator')
    const text = await readFile(path, 'utf8')
    expect(text.endsWith('\n')).toBe(true)
    expect(text.slice(0, -1)).not.toContain('\n')
    expect(JSON.parse(text)).toEqual({
      version: 1,
      type: 'ed25519',
      public_key: kp.publicKey,
      seed: Buffer.from(kp.seed).toString('base64url'),
      kind: 'operator'
    })
    expect(text).toBe(encodeKeyFile(kp, 'operator'))
  })

  it.runIf(posix)('creates parent directories and the file with mode 0600', async () => {
    const path = join(dir, 'a', 'b', 'publisher.key')
    await writeKeyFile(path, generateKeyPair(), 'publisher')
    expect((await stat(path)).mode & 0o777).toBe(0o600)
    expect((await stat(join(dir, 'a'))).mode & 0o077).toBe(0)
    expect((await readKeyFile(path)).kind).toBe('publisher')
  })

  it('given an existing file, then RL-1008 and the file is left untouched', async () => {
    const path = join(dir, 'node.key')
    await writeKeyFile(path, generateKeyPair(), 'node')
    const before = await readFile(path)
    expect(await code(writeKeyFile(path, generateKeyPair(), 'node'))).toBe('RL-1008')
    expect((await readFile(path)).equals(before)).toBe(true)
    // no temp files are left behind
    expect(await readdir(dir)).toEqual(['node.key'])
  })

  it('replaces an existing file when asked to', async () => {
    const path = join(dir, 'node.key')
    await writeKeyFile(path, generateKeyPair(), 'node')
    const next = generateKeyPair()
    await writeKeyFile(path, next, 'node', { overwrite: true })
    expect((await readKeyFile(path)).publicKey).toBe(next.publicKey)
    expect(await readdir(dir)).toEqual(['node.key'])
  })

  it('given two concurrent writers of a new file, then exactly one wins', async () => {
    const path = join(dir, 'node.key')
    const pairs = Array.from({ length: 8 }, () => generateKeyPair())
    const results = await Promise.allSettled(pairs.map(kp => writeKeyFile(path, kp, 'node')))
    const won = results.filter(r => r.status === 'fulfilled')
    expect(won).toHaveLength(1)
    for (const r of results) {
      if (r.status === 'rejected') expect(isReachError(r.reason, 'RL-1008')).toBe(true)
    }
    const winner = pairs[results.findIndex(r => r.status === 'fulfilled')]
    expect((await readKeyFile(path)).publicKey).toBe(winner?.publicKey)
    expect(await readdir(dir)).toEqual(['node.key'])
  })

  it('refuses to encode a key pair whose public key does not match its seed', async () => {
    const kp = { ...generateKeyPair(), publicKey: generateKeyPair().publicKey }
    expect(await code(writeKeyFile(join(dir, 'x.key'), kp, 'node'))).toBe('RL-1009')
    expect(await readdir(dir)).toEqual([])
  })
})

describe('readKeyFile refuses', () => {
  it('a missing file with RL-1004', async () => {
    expect(await code(readKeyFile(join(dir, 'nope.key')))).toBe('RL-1004')
  })

  it.runIf(posix)('a 0644 file with RL-1010 and says how to fix it', async () => {
    const path = join(dir, 'node.key')
    await writeKeyFile(path, generateKeyPair(), 'node')
    await chmod(path, 0o644)
    try {
      await readKeyFile(path)
      expect.unreachable()
    } catch (err) {
      expect(isReachError(err, 'RL-1010')).toBe(true)
      expect((err as Error).message).toContain(`chmod 600 ${path}`)
    }
    for (const mode of [0o640, 0o604, 0o610, 0o601]) {
      await chmod(path, mode)
      expect(await code(readKeyFile(path)), mode.toString(8)).toBe('RL-1010')
    }
    // owner-only modes are fine
    await chmod(path, 0o400)
    expect(await code(readKeyFile(path))).toBeUndefined()
  })

  it('malformed files with RL-1009', async () => {
    const kp = keyPairFromSeed(new Uint8Array(32).fill(9))
    const good = JSON.parse(encodeKeyFile(kp, 'node')) as Record<string, unknown>
    const otherKey = generateKeyPair().publicKey
    const cases: Record<string, string> = {
      'not JSON': 'hello\n',
      empty: '',
      array: '[]\n',
      'wrong version': JSON.stringify({ ...good, version: 2 }),
      'wrong type': JSON.stringify({ ...good, type: 'rsa' }),
      'unknown kind': JSON.stringify({ ...good, kind: 'root' }),
      'unknown field': JSON.stringify({ ...good, extra: true }),
      'missing seed': JSON.stringify({ ...good, seed: undefined }),
      'short seed': JSON.stringify({ ...good, seed: Buffer.alloc(31).toString('base64url') }),
      'padded seed': JSON.stringify({ ...good, seed: Buffer.from(kp.seed).toString('base64') }),
      'seed with non-canonical trailing bits': JSON.stringify({ ...good, seed: (good.seed as string).slice(0, -1) + (good.seed as string).at(-1)!.replace(/./, c => c === 'B' ? 'C' : 'B') }),
      'bad public key': JSON.stringify({ ...good, public_key: 'z6Mk' }),
      'public key of another seed': JSON.stringify({ ...good, public_key: otherKey }),
      'too large': JSON.stringify(good) + ' '.repeat(5000)
    }
    for (const [name, text] of Object.entries(cases)) {
      const path = join(dir, `${name.replaceAll(' ', '-')}.key`)
      await writeFile(path, text, { mode: 0o600 })
      expect(await code(readKeyFile(path)), name).toBe('RL-1009')
    }
  })
})

describe('readPublicKey', () => {
  it('accepts a multibase string as is', async () => {
    const { publicKey } = generateKeyPair()
    expect(await readPublicKey(publicKey)).toBe(publicKey)
  })

  it('reads the public key of a key file, whatever its mode', async () => {
    const kp = generateKeyPair()
    const path = join(dir, 'publisher.key')
    await writeKeyFile(path, kp, 'publisher')
    expect(await readPublicKey(path)).toBe(kp.publicKey)
    await chmod(path, 0o644)
    expect(await readPublicKey(path)).toBe(kp.publicKey)
  })

  it('reads a public-only key file (no seed)', async () => {
    const kp = generateKeyPair()
    const path = join(dir, 'publisher.pub')
    await writeFile(path, JSON.stringify({ version: 1, type: 'ed25519', public_key: kp.publicKey, kind: 'publisher' }) + '\n')
    expect(await readPublicKey(path)).toBe(kp.publicKey)
    // but such a file is not a usable key file
    await chmod(path, 0o600)
    expect(await code(readKeyFile(path))).toBe('RL-1009')
  })

  it('RL-1004 for a path that does not exist, RL-1009 for a file that is not a key', async () => {
    expect(await code(readPublicKey(join(dir, 'missing.key')))).toBe('RL-1004')
    const path = join(dir, 'junk')
    await writeFile(path, '{"hello":1}\n')
    expect(await code(readPublicKey(path))).toBe('RL-1009')
  })
})
