/**
 * The parallel verifier only ever certifies a clean log, and certifies it
 * with exactly the digest the sequential verifier computes; anything else
 * falls back to the sequential verifier for the diagnosis.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { streamBatches } from '../../../node/log-source.ts'
import { EventLog, openStore } from '../../../node/store/index.ts'
import { verifyJsonlParallel } from '../../../node/verify/parallel.ts'
import { summariseChunk } from '../../../node/verify/chunk.ts'
import { digestBatchesAsync } from '../../../protocol/digest.ts'
import { workloadDraft } from '../../protocol/helpers.ts'

const N = 3000
let dir: string
let path: string
let text: string

beforeAll(async () => {
  dir = await mkdtemp(join(os.tmpdir(), 'reach-parallel-'))
  path = join(dir, 'clean.log')
  const store = await openStore(path, { kind: 'jsonl', create: true })
  const log = new EventLog(store)
  for (let i = 0; i < N; i += 97) await log.appendMany(Array.from({ length: Math.min(97, N - i) }, (_, k) => workloadDraft(i + k)))
  await store.close()
  text = await readFile(path, 'utf8')
})

describe('parallel verify', () => {
  it('gives the sequential digest for any chunk size and thread count', async () => {
    const expected = await digestBatchesAsync(streamBatches(path), { reduce: false })
    for (const [workers, chunkBytes] of [[1, 4096], [2, 777], [3, 65536], [2, 1 << 20]] as const) {
      const d = await verifyJsonlParallel(path, { workers, chunkBytes })
      expect(d, `${workers} threads, ${chunkBytes}-byte chunks`).toEqual(expected)
    }
  })

  it('refuses to certify damaged logs (the caller then reports the exact seq)', async () => {
    const lines = text.slice(0, -1).split('\n')
    const event = (seq: number): number => lines.findIndex((l) => l.startsWith('{"agg') && JSON.parse(l).seq === seq)
    const at1500 = event(1500)
    const at2000 = event(2000)
    const damaged: Record<string, string> = {
      'payload edited': lines.map((l, i) => i === at1500 ? l.replace('"payload":', '"payload":{"x":1,"y":').replace(/,"prev_hash"/, '},"prev_hash"') : l).join('\n') + '\n',
      'event deleted': lines.filter((_, i) => i !== at2000).join('\n') + '\n',
      'pair swapped across a chunk boundary': (() => { const c = [...lines]; const a = event(1000); const b = event(1001); [c[a], c[b]] = [c[b]!, c[a]!]; return c.join('\n') + '\n' })(),
      'torn last line': text + '{"aggregate_id":"x"',
      'uncommitted tail': text + lines[event(5)] + '\n'
    }
    for (const [name, content] of Object.entries(damaged)) {
      const p = join(dir, 'damaged.log')
      await writeFile(p, content)
      expect(await verifyJsonlParallel(p, { workers: 2, chunkBytes: 8192 }), name).toBeUndefined()
    }
  })

  it('a chunk summary flags a hash it cannot reproduce', () => {
    const lines = text.split('\n').slice(0, 10)
    const clean = summariseChunk(Buffer.from(lines.join('\n') + '\n'))
    expect(clean.clean).toBe(true)
    const bad = lines.map((l) => l.replace('"seq":3,', '"seq":3 ,'))
    expect(summariseChunk(Buffer.from(bad.join('\n') + '\n')).clean).toBe(true) // whitespace is not content
    const edited = lines.map((l) => l.replace('"type":"TaskAssigned"', '"type":"TaskCreated"'))
    expect(summariseChunk(Buffer.from(edited.join('\n') + '\n')).clean).toBe(false)
  })
})
