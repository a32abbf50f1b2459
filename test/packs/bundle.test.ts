import { chmod, mkdir, symlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import {
  buildBundle, cidOf, decodeBundle, encodeBundle, MAX_BUNDLE_BYTES, MAX_FILE_BYTES, MAX_TOTAL_BYTES, parsePackCid
} from '../../packs/bundle.ts'
import { code, failure, INDEX_JS, manifest, tempDir, writePack } from './helpers.ts'

const posix = process.platform !== 'win32'
const enc = new TextEncoder()

let tmp: { path: string, remove: () => Promise<void> }
beforeEach(async () => { tmp = await tempDir('bundle') })
afterEach(async () => { await tmp.remove() })

/** A bundle's bytes with its CID recomputed: what a careful attacker would publish. */
function forge (value: unknown): { bytes: Uint8Array, cid: string } {
  const bytes = dagCbor.encode(value)
  return { bytes, cid: cidOf(bytes) }
}

describe('golden bundle (SPEC §8 test vector)', () => {
  it('encodes a fixed pack to fixed bytes and CID', () => {
    const m = { name: 'golden', version: '1.0.0', description: '', entry: 'index.js', capabilities: [], engine: '^1.0.0', budget: { fuel: 1, memory_bytes: 2, output_bytes: 3, tool_calls: 4, wall_ms: 5 } }
    const p = encodeBundle(m, { 'lib/a.txt': Uint8Array.of(0, 255), 'index.js': enc.encode('export {}\n') })
    expect(p.cid).toBe('bafyreibl7dle4fn22alkbp237t6lybtffrn73amssfh43dwcll6eeukudu')
    // Map keys in DAG-CBOR order (length, then bytes): files, version, manifest.
    expect(Buffer.from(p.bytes).toString('hex')).toBe(
      'a36566696c6573a268696e6465782e6a734a6578706f7274207b7d0a696c69622f612e7478744200ff6776657273696f6e01686d616e6966657374a7' +
      '646e616d6566676f6c64656e65656e74727968696e6465782e6a7366627564676574a5646675656c016777616c6c5f6d73056a746f6f6c5f63616c6c73' +
      '046c6d656d6f72795f6279746573026c6f75747075745f62797465730366656e67696e65665e312e302e306776657273696f6e65312e302e306b6465' +
      '736372697074696f6e606c6361706162696c697469657380')
    expect(decodeBundle(p.bytes, p.cid).bundle).toEqual(p.bundle)
  })
})

describe('buildBundle', () => {
  const files: Record<string, string> = {
    'index.js': INDEX_JS,
    'lib/util.js': 'export const x = 1\n',
    'lib/deep/data.json': '{"a":1}\n',
    'README.md': '# demo\n',
    'z.txt': 'last\n'
  }

  it('reads the folder: manifest apart, every other file by relative POSIX path', async () => {
    const dir = await writePack(join(tmp.path, 'p'), manifest(), files)
    const p = await buildBundle(dir)
    expect(p.cid).toMatch(/^bafy/)
    expect(p.cid).toBe(cidOf(p.bytes))
    expect(Object.keys(p.bundle.files).sort()).toEqual(Object.keys(files).sort())
    expect(p.bundle.files['reach-pack.json']).toBeUndefined()
    expect(Buffer.from(p.bundle.files['lib/deep/data.json'] as Uint8Array).toString()).toBe('{"a":1}\n')
    expect(p.bundle.manifest).toEqual(manifest())
    expect(decodeBundle(p.bytes, p.cid).bundle).toEqual(p.bundle)
  })

  it('given the same folder written 20 times in different orders, mtimes and modes, then the same bytes and CID', async () => {
    const first = await buildBundle(await writePack(join(tmp.path, 'ref'), manifest(), files))
    const names = Object.keys(files)
    for (let i = 0; i < 20; i++) {
      const dir = join(tmp.path, `copy-${i}`)
      // Rotate and reverse the write order; manifest written first or last.
      const order = names.slice(i % names.length).concat(names.slice(0, i % names.length))
      if (i % 2 === 1) order.reverse()
      if (i % 3 === 0) await writePack(dir, manifest(), {})
      for (const name of order) await writePack(dir, null, { [name]: files[name] as string })
      if (i % 3 !== 0) await writePack(dir, manifest(), {})
      for (const [k, name] of names.entries()) {
        const t = new Date(Date.UTC(2000 + i, k, 1 + k))
        await utimes(join(dir, name), t, t)
        if (posix) await chmod(join(dir, name), [0o600, 0o644, 0o755, 0o400][(i + k) % 4] as number)
      }
      // The manifest's key order in the file does not matter either.
      if (i % 4 === 2) await writeFile(join(dir, 'reach-pack.json'), JSON.stringify(Object.fromEntries(Object.entries(manifest()).reverse())))
      const p = await buildBundle(dir)
      expect(p.cid).toBe(first.cid)
      expect(Buffer.from(p.bytes).equals(Buffer.from(first.bytes))).toBe(true)
    }
  })

  it('given a different file content, then a different CID', async () => {
    const a = await buildBundle(await writePack(join(tmp.path, 'a'), manifest(), files))
    const b = await buildBundle(await writePack(join(tmp.path, 'b'), manifest(), { ...files, 'z.txt': 'last!\n' }))
    expect(b.cid).not.toBe(a.cid)
  })

  it('given a missing folder, then RL-1004; a missing or invalid manifest, then RL-3001', async () => {
    expect(await code(() => buildBundle(join(tmp.path, 'nope')))).toBe('RL-1004')
    expect(await code(async () => buildBundle(await writePack(join(tmp.path, 'm'), null)))).toBe('RL-3001')
    expect(await code(async () => buildBundle(await writePack(join(tmp.path, 'j'), '{not json')))).toBe('RL-3001')
    const err = await failure(async () => buildBundle(await writePack(join(tmp.path, 'v'), manifest({ version: 'one' }))))
    expect([err.code, err.details.field]).toEqual(['RL-3001', 'version'])
  })

  it('given an entry that is not in the folder, then RL-3001 naming entry', async () => {
    const err = await failure(async () => buildBundle(await writePack(join(tmp.path, 'e'), manifest({ entry: 'main.js' }))))
    expect([err.code, err.details.field]).toEqual(['RL-3001', 'entry'])
  })

  it('given an entry escaping the folder, then RL-3001 naming entry', async () => {
    await writeFile(join(tmp.path, 'outside.js'), INDEX_JS)
    const err = await failure(async () => buildBundle(await writePack(join(tmp.path, 'esc'), manifest({ entry: '../outside.js' }))))
    expect([err.code, err.details.field]).toEqual(['RL-3001', 'entry'])
  })

  it('given a dot-file anywhere, then RL-3002', async () => {
    expect(await code(async () => buildBundle(await writePack(join(tmp.path, 'd1'), manifest(), { 'index.js': INDEX_JS, '.env': 'SECRET=1' })))).toBe('RL-3002')
    expect(await code(async () => buildBundle(await writePack(join(tmp.path, 'd2'), manifest(), { 'index.js': INDEX_JS, 'lib/.git/config': 'x' })))).toBe('RL-3002')
  })

  it.runIf(posix)('given a symlink to a file outside the folder, then RL-3002', async () => {
    await writeFile(join(tmp.path, 'secret.txt'), 'do not ship')
    const dir = await writePack(join(tmp.path, 's1'), manifest())
    await symlink(join(tmp.path, 'secret.txt'), join(dir, 'data.txt'))
    const err = await failure(() => buildBundle(dir))
    expect([err.code, err.details.path]).toEqual(['RL-3002', 'data.txt'])
  })

  it.runIf(posix)('given a symlink inside the folder, a symlinked directory, or a symlinked entry, then RL-3002', async () => {
    const a = await writePack(join(tmp.path, 's2'), manifest())
    await symlink('index.js', join(a, 'alias.js'))
    expect(await code(() => buildBundle(a))).toBe('RL-3002')

    await mkdir(join(tmp.path, 'elsewhere'))
    await writeFile(join(tmp.path, 'elsewhere', 'x.js'), 'x')
    const b = await writePack(join(tmp.path, 's3'), manifest())
    await symlink(join(tmp.path, 'elsewhere'), join(b, 'lib'))
    expect(await code(() => buildBundle(b))).toBe('RL-3002')

    const c = await writePack(join(tmp.path, 's4'), manifest(), {})
    await writeFile(join(tmp.path, 'real.js'), INDEX_JS)
    await symlink(join(tmp.path, 'real.js'), join(c, 'index.js'))
    expect(await code(() => buildBundle(c))).toBe('RL-3002')
  })

  it.runIf(posix)('given a symlinked reach-pack.json, then RL-3001', async () => {
    const dir = await writePack(join(tmp.path, 's5'), null)
    await writeFile(join(tmp.path, 'm.json'), JSON.stringify(manifest()))
    await symlink(join(tmp.path, 'm.json'), join(dir, 'reach-pack.json'))
    expect(await code(() => buildBundle(dir))).toBe('RL-3001')
  })

  it.runIf(posix)('accepts a pack folder that is itself reached through a link', async () => {
    const dir = await writePack(join(tmp.path, 'real'), manifest())
    await symlink(dir, join(tmp.path, 'link'))
    expect((await buildBundle(join(tmp.path, 'link'))).cid).toBe((await buildBundle(dir)).cid)
  })

  it('given a file over 1 MiB, or files over 8 MiB in total, then RL-3002', async () => {
    const big = new Uint8Array(MAX_FILE_BYTES + 1)
    expect(await code(async () => buildBundle(await writePack(join(tmp.path, 'big'), manifest(), { 'index.js': INDEX_JS, 'big.bin': big })))).toBe('RL-3002')
    const chunk = new Uint8Array(MAX_FILE_BYTES)
    const many: Record<string, Uint8Array | string> = { 'index.js': INDEX_JS }
    for (let i = 0; i < MAX_TOTAL_BYTES / MAX_FILE_BYTES; i++) many[`part-${i}.bin`] = chunk
    const err = await failure(async () => buildBundle(await writePack(join(tmp.path, 'many'), manifest(), many)))
    expect(err.code).toBe('RL-3002')
    expect(err.message).toContain('in total')
  })

  it('a file of exactly 1 MiB is accepted', async () => {
    const p = await buildBundle(await writePack(join(tmp.path, 'edge'), manifest(), { 'index.js': INDEX_JS, 'edge.bin': new Uint8Array(MAX_FILE_BYTES) }))
    expect(p.bundle.files['edge.bin']?.length).toBe(MAX_FILE_BYTES)
    expect(p.bytes.length).toBeLessThan(MAX_BUNDLE_BYTES)
  })
})

describe('decodeBundle', () => {
  const small = () => encodeBundle(manifest({ name: 'tiny' }), { 'index.js': enc.encode('export {}') })

  it('given any single byte of a bundle flipped, then RL-3003 against its CID', () => {
    const p = small()
    expect(p.bytes.length).toBeGreaterThan(100)
    for (let i = 0; i < p.bytes.length; i++) {
      for (const mask of [0x01, 0x80]) {
        const bad = Uint8Array.from(p.bytes)
        bad[i] = (bad[i] as number) ^ mask
        let thrown: unknown
        try { decodeBundle(bad, p.cid) } catch (err) { thrown = err }
        expect((thrown as { code?: string })?.code, `byte ${i} ^ ${mask}`).toBe('RL-3003')
      }
    }
    expect(decodeBundle(p.bytes, p.cid).cid).toBe(p.cid)
  })

  it('given truncated or extended bytes, then RL-3003', async () => {
    const p = small()
    expect(await code(() => decodeBundle(p.bytes.subarray(0, p.bytes.length - 1), p.cid))).toBe('RL-3003')
    expect(await code(() => decodeBundle(Uint8Array.from([...p.bytes, 0]), p.cid))).toBe('RL-3003')
  })

  it('given a CID that is not a pack CID, then RL-3004', async () => {
    const p = small()
    expect(await code(() => decodeBundle(p.bytes, 'hello'))).toBe('RL-3004')
    // The same digest as raw (0x55) rather than dag-cbor.
    const raw = parsePackCid(p.cid)
    const other = (await import('multiformats/cid')).CID.createV1(0x55, raw.multihash).toString()
    expect(await code(() => decodeBundle(p.bytes, other))).toBe('RL-3004')
    expect(await code(() => parsePackCid(raw.toString().toUpperCase()))).toBe('RL-3004')
  })

  it('given bytes that are not DAG-CBOR, then RL-3004 (without an expected CID)', async () => {
    expect(await code(() => decodeBundle(enc.encode('{"version":1}')))).toBe('RL-3004')
  })

  it('given another version or unknown fields, then RL-3004', async () => {
    const files = { 'index.js': enc.encode('x') }
    for (const value of [
      { version: 2, manifest: manifest(), files },
      { version: '1', manifest: manifest(), files },
      { version: 1, manifest: manifest(), files, extra: true },
      { version: 1, manifest: manifest(), files: [] },
      { version: 1, manifest: manifest(), files: { 'index.js': 'text, not bytes' } },
      [1, 2, 3]
    ]) {
      const f = forge(value)
      expect(await code(() => decodeBundle(f.bytes, f.cid)), JSON.stringify(value)).toBe('RL-3004')
    }
  })

  it('given a non-canonical encoding of a valid bundle, then RL-3004', async () => {
    const p = small()
    // Same value, map keys in another order than DAG-CBOR's (length, then bytes).
    const e = (v: unknown): number[] => [...dagCbor.encode(v)]
    const bytes = Uint8Array.from([0xa3, ...e('manifest'), ...e(p.bundle.manifest), ...e('files'), ...e(p.bundle.files), ...e('version'), ...e(1)])
    expect(dagCbor.decode(bytes)).toEqual({ version: 1, manifest: p.bundle.manifest, files: p.bundle.files })
    expect(Buffer.from(bytes).equals(Buffer.from(p.bytes))).toBe(false)
    expect(await code(() => decodeBundle(bytes, cidOf(bytes)))).toBe('RL-3004')
  })

  it('given a forged bundle with a path escaping the pack, then RL-3002', async () => {
    for (const path of ['../evil.js', '/etc/passwd', 'a/../../b', '.hidden', 'reach-pack.json', 'a\\..\\b']) {
      const f = forge({ version: 1, manifest: manifest(), files: { 'index.js': enc.encode('x'), [path]: enc.encode('x') } })
      expect(await code(() => decodeBundle(f.bytes, f.cid)), path).toBe('RL-3002')
    }
  })

  it('given a forged bundle with a file over the limit, then RL-3002', async () => {
    const f = forge({ version: 1, manifest: manifest(), files: { 'index.js': new Uint8Array(MAX_FILE_BYTES + 1) } })
    expect(await code(() => decodeBundle(f.bytes, f.cid))).toBe('RL-3002')
  })

  it('given bytes over the bundle limit, then RL-3004 before hashing', async () => {
    expect(await code(() => decodeBundle(new Uint8Array(MAX_BUNDLE_BYTES + 1)))).toBe('RL-3004')
  })

  it('given a forged bundle with a bad manifest or a missing entry, then RL-3001', async () => {
    const f1 = forge({ version: 1, manifest: manifest({ name: 'BAD' }), files: { 'index.js': enc.encode('x') } })
    expect(await code(() => decodeBundle(f1.bytes, f1.cid))).toBe('RL-3001')
    const f2 = forge({ version: 1, manifest: manifest(), files: { 'main.js': enc.encode('x') } })
    expect(await code(() => decodeBundle(f2.bytes, f2.cid))).toBe('RL-3001')
    const f3 = forge({ version: 1, files: { 'index.js': enc.encode('x') } })
    expect(await code(() => decodeBundle(f3.bytes, f3.cid))).toBe('RL-3001')
  })
})
