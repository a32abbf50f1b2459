/**
 * The pack and trust commands, called in-process (they are not wired into
 * node/cli/main.ts yet; child-process tests through the real `reach` binary
 * come with the wiring). REACH_HOME points at a temp dir per test.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { keygen } from '../../node/cli/commands/keys.ts'
import * as packCmd from '../../node/cli/commands/pack.ts'
import * as trustCmd from '../../node/cli/commands/trust.ts'
import type { Io } from '../../node/cli/io.ts'
import { cidOf } from '../../packs/bundle.ts'
import { code, tempDir } from './helpers.ts'

const EXAMPLES = fileURLToPath(new URL('../../packs/examples/', import.meta.url))
const io: Io = { json: false, write: () => {} }

let tmp: { path: string, remove: () => Promise<void> }
let savedHome: string | undefined
beforeEach(async () => {
  tmp = await tempDir('cli')
  savedHome = process.env.REACH_HOME
  process.env.REACH_HOME = join(tmp.path, 'home')
})
afterEach(async () => {
  if (savedHome === undefined) delete process.env.REACH_HOME
  else process.env.REACH_HOME = savedHome
  await tmp.remove()
})

describe('reach pack / reach trust (in-process)', () => {
  it('build → inspect → sign → trust add → admitted → revoke → refused', async () => {
    const built = await packCmd.build({ output: join(tmp.path, 'counter.pack') }, io, [join(EXAMPLES, 'counter')])
    const cid = built.json.cid as string
    expect(cid).toMatch(/^bafy/)
    expect(built.json).toMatchObject({ name: 'counter', version: '1.0.0', signatures: 0 })
    expect(built.human.join('\n')).toContain(cid)
    expect(cidOf(new Uint8Array(await readFile(join(tmp.path, 'counter.pack'))))).toBe(cid)

    let info = await packCmd.inspect({}, io, [cid])
    expect(info.json.manifest).toMatchObject({ name: 'counter', entry: 'index.js' })
    expect(info.json.files).toEqual([expect.objectContaining({ path: 'index.js', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) })])
    expect(info.json.admission).toMatchObject({ admitted: false, code: 'RL-3005' })

    const keyPath = join(tmp.path, 'publisher.key')
    const key = await keygen({ output: keyPath, publisher: true })
    const signed = await packCmd.sign({ key: keyPath }, io, [cid])
    expect(signed.json).toMatchObject({ cid, trust: 'unknown' })
    info = await packCmd.inspect({}, io, ['counter'])
    expect(info.json.signatures).toEqual([{ publisher: key.json.public_key, valid: true, trust: 'unknown' }])
    expect(info.json.admission).toMatchObject({ admitted: false, code: 'RL-3006' })

    const added = await trustCmd.add({ name: 'Example Publisher' }, io, [keyPath])
    expect(added.json).toMatchObject({ previous_status: 'unknown', key: { public_key: key.json.public_key, name: 'Example Publisher' } })
    info = await packCmd.inspect({}, io, [cid])
    expect(info.json.admission).toEqual({ admitted: true, publisher: key.json.public_key, legacy_unsigned: false })
    expect(info.human.join('\n')).toContain('Admission under this node\'s policy: OK')

    const listed = await trustCmd.list()
    expect((listed.json.keys as unknown[]).length).toBe(1)

    await trustCmd.revoke({}, io, [key.json.public_key as string])
    info = await packCmd.inspect({}, io, [join(tmp.path, 'counter.pack')])
    expect(info.json).toMatchObject({ cid, source: join(tmp.path, 'counter.pack') })
    expect(info.json.signatures).toEqual([expect.objectContaining({ valid: true, trust: 'revoked' })])
    expect(info.json.admission).toMatchObject({ admitted: false, code: 'RL-3007' })
  })

  it('the report example declares http.fetch, which the default policy does not grant (RL-3009)', async () => {
    const built = await packCmd.build({}, io, [join(EXAMPLES, 'report')])
    const keyPath = join(tmp.path, 'p.key')
    await keygen({ output: keyPath, publisher: true })
    await packCmd.sign({ key: keyPath }, io, [built.json.cid as string])
    await trustCmd.add({ name: 'p' }, io, [keyPath])
    const info = await packCmd.inspect({}, io, ['report'])
    expect((info.json.manifest as { capabilities: string[] }).capabilities).toEqual(['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch'])
    expect(info.json.admission).toMatchObject({ admitted: false, code: 'RL-3009' })
  })

  it('refuses to sign with a key that is not a publisher key (RL-1009) and unknown packs (RL-3012)', async () => {
    const built = await packCmd.build({}, io, [join(EXAMPLES, 'counter')])
    const operatorKey = join(tmp.path, 'op.key')
    await keygen({ output: operatorKey })
    expect(await code(() => packCmd.sign({ key: operatorKey }, io, [built.json.cid as string]))).toBe('RL-1009')
    expect(await code(() => packCmd.inspect({}, io, ['no-such-pack']))).toBe('RL-3012')
    expect(await code(() => trustCmd.add({ name: 'x' }, io, [join(tmp.path, 'missing.key')]))).toBe('RL-1004')
  })
})
