import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { encodeBundle, type Pack } from '../../packs/bundle.ts'
import { signPack } from '../../packs/trust.ts'
import { openPackStore, type PackStore } from '../../node/pack-store.ts'
import { code, failure, manifest, tempDir } from './helpers.ts'

const enc = new TextEncoder()
const pack = (over: Record<string, unknown> = {}, body = 'export {}'): Pack =>
  encodeBundle(manifest(over), { 'index.js': enc.encode(body) })
const sign = (p: Pack, seed = generateKeyPair().seed) => signPack({ cid: p.cid, manifest: p.bundle.manifest }, createSigner(seed))

let tmp: { path: string, remove: () => Promise<void> }
let store: PackStore
beforeEach(async () => {
  tmp = await tempDir('store')
  store = openPackStore(join(tmp.path, 'packs'))
})
afterEach(async () => { await tmp.remove() })

describe('pack store', () => {
  it('stores <cid>.pack (the exact bytes) and <cid>.sigs.json, and reads them back verified', async () => {
    const p = pack()
    const stored = await store.put(p.bytes)
    expect(stored.cid).toBe(p.cid)
    expect(stored.signatures).toEqual([])
    expect((await readdir(store.dir)).sort()).toEqual([`${p.cid}.pack`, `${p.cid}.sigs.json`])
    expect(Buffer.from(await readFile(join(store.dir, `${p.cid}.pack`))).equals(Buffer.from(p.bytes))).toBe(true)
    const back = await store.get(p.cid)
    expect(back.bundle).toEqual(p.bundle)
    expect(await store.has(p.cid)).toBe(true)
    expect(await store.has('nope')).toBe(false)
  })

  it('given bytes that do not hash to the expected CID, then RL-3003 and nothing is written', async () => {
    const a = pack({ name: 'a' })
    const b = pack({ name: 'b' })
    expect(await code(() => store.put(a.bytes, [], { cid: b.cid }))).toBe('RL-3003')
    expect(await readdir(store.dir).catch(() => [])).toEqual([])
  })

  it('given an invalid signature, then RL-3008 and nothing is written', async () => {
    const a = pack({ name: 'a' })
    const b = pack({ name: 'b' })
    expect(await code(() => store.put(a.bytes, [sign(b)]))).toBe('RL-3008')
    expect(await readdir(store.dir).catch(() => [])).toEqual([])
  })

  it('merges signatures: one per publisher, sorted by publisher', async () => {
    const p = pack()
    const k1 = generateKeyPair().seed
    const k2 = generateKeyPair().seed
    await store.put(p.bytes, [sign(p, k1)])
    await store.put(p.bytes, [sign(p, k1)])
    const after = await store.addSignature(p.cid, sign(p, k2))
    expect(after.signatures).toHaveLength(2)
    const publishers = after.signatures.map((s) => s.publisher)
    expect(publishers).toEqual([...publishers].sort())
    expect((await store.get(p.cid)).signatures).toEqual(after.signatures)
    expect(JSON.parse(await readFile(join(store.dir, `${p.cid}.sigs.json`), 'utf8'))).toEqual(after.signatures)
  })

  it('given a signature of another pack, then addSignature refuses it (RL-3008) and keeps what it had', async () => {
    const p = pack({ name: 'p' })
    const q = pack({ name: 'q' })
    await store.put(p.bytes)
    expect(await code(() => store.addSignature(p.cid, sign(q)))).toBe('RL-3008')
    expect((await store.get(p.cid)).signatures).toEqual([])
  })

  it('finds a pack by name (highest semver), by name@version, and refuses what it lacks (RL-3012)', async () => {
    const v = (version: string) => pack({ name: 'tool', version })
    for (const version of ['1.2.0', '1.10.0', '1.9.9', '0.9.0']) await store.put(v(version).bytes)
    await store.put(pack({ name: 'other', version: '9.0.0' }).bytes)
    expect((await store.get('tool')).bundle.manifest.version).toBe('1.10.0')
    expect((await store.get('tool@1.2.0')).cid).toBe(v('1.2.0').cid)
    expect(await code(() => store.get('tool@2.0.0'))).toBe('RL-3012')
    expect(await code(() => store.get('missing'))).toBe('RL-3012')
    expect(await code(() => store.get(pack({ name: 'never-stored' }).cid))).toBe('RL-3012')
    expect((await store.list()).map((s) => `${s.name}@${s.version}`)).toEqual(['other@9.0.0', 'tool@0.9.0', 'tool@1.2.0', 'tool@1.9.9', 'tool@1.10.0'])
  })

  it('given a bundle damaged on disk, then reading it by CID is RL-3003', async () => {
    const p = pack()
    await store.put(p.bytes)
    const path = join(store.dir, `${p.cid}.pack`)
    const bytes = await readFile(path)
    bytes[bytes.length - 3] ^= 0x20
    await writeFile(path, bytes)
    expect(await code(() => store.get(p.cid))).toBe('RL-3003')
    // Searching by name skips it rather than running it.
    expect(await code(() => store.get('demo'))).toBe('RL-3012')
  })

  it('given a corrupt signature file, then RL-5009', async () => {
    const p = pack()
    await store.put(p.bytes)
    await writeFile(join(store.dir, `${p.cid}.sigs.json`), '{"not":"an array"}')
    const err = await failure(() => store.get(p.cid))
    expect(err.code).toBe('RL-5009')
  })
})
