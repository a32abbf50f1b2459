/**
 * The tamper corpus: a 200-event JSON-lines log, and every single-event
 * mutation of it, at every seq. Each must be caught by `reach verify` at the
 * right seq with the right code (protocol/SPEC.md §3 and §7.1 define both).
 *
 * Negative control: a naive verifier that only re-hashes each event and
 * ignores links, order and commit records accepts most of these files.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { verify } from '../../node/cli/commands/log.ts'
import { EventLog, openStore } from '../../node/store/index.ts'
import { computeEventHash } from '../../protocol/event.ts'
import { workloadDraft } from '../protocol/helpers.ts'

const N = 200
let dir: string
let original: string[]

/** Index of the line holding event `seq`. */
const lineOf = (lines: string[], seq: number): number => lines.findIndex((l) => l.startsWith('{"aggregate_id"') && JSON.parse(l).seq === seq)

function edit (line: string, change: (e: any) => void): string {
  const e = JSON.parse(line)
  change(e)
  // Keep canonical key order so only the intended field differs.
  return JSON.stringify(Object.fromEntries(Object.entries(e).sort(([a], [b]) => a < b ? -1 : 1)))
}

const flipHex = (h: string): string => (h[0] === '0' ? '1' : '0') + h.slice(1)

type Mutation = (lines: string[], seq: number) => string
const mutations: Array<[string, Mutation, (seq: number) => { code: string, seq: number }, number[]?]> = [
  ['payload byte', (l, s) => { const i = lineOf(l, s); l[i] = edit(l[i]!, (e) => { e.payload = JSON.parse(JSON.stringify(e.payload).replace(/\d|[a-z]/, (c) => c === '1' ? '2' : c === 'a' ? 'b' : c === '0' ? '9' : '1')) }); return l.join('\n') }, (s) => ({ code: 'RL-2001', seq: s })],
  ['type', (l, s) => { const i = lineOf(l, s); l[i] = edit(l[i]!, (e) => { e.type = e.type + 'X' }); return l.join('\n') }, (s) => ({ code: 'RL-2001', seq: s })],
  ['seq', (l, s) => { const i = lineOf(l, s); l[i] = edit(l[i]!, (e) => { e.seq = e.seq + 1000 }); return l.join('\n') }, (s) => ({ code: 'RL-2001', seq: s })],
  ['prev_hash', (l, s) => { const i = lineOf(l, s); l[i] = edit(l[i]!, (e) => { e.prev_hash = flipHex(e.prev_hash) }); return l.join('\n') }, (s) => ({ code: 'RL-2002', seq: s })],
  ['hash', (l, s) => { const i = lineOf(l, s); l[i] = edit(l[i]!, (e) => { e.hash = flipHex(e.hash) }); return l.join('\n') }, (s) => ({ code: 'RL-2001', seq: s })],
  ['deleted event', (l, s) => { l.splice(lineOf(l, s), 1); return l.join('\n') }, (s) => ({ code: 'RL-2003', seq: s })],
  ['swapped pair', (l, s) => { const i = lineOf(l, s); const j = lineOf(l, s + 1); [l[i], l[j]] = [l[j]!, l[i]!]; return l.join('\n') }, (s) => ({ code: 'RL-2004', seq: s }), Array.from({ length: N - 1 }, (_, i) => i)],
  ['duplicated event', (l, s) => { const i = lineOf(l, s); l.splice(i + 1, 0, l[i]!); return l.join('\n') }, (s) => ({ code: 'RL-2005', seq: s })],
  ['truncated file (cut inside the event)', (l, s) => { const i = lineOf(l, s); return l.slice(0, i).join('\n') + '\n' + l[i]!.slice(0, 40) }, (s) => ({ code: 'RL-5003', seq: s })],
  ['torn last line', (l) => l.join('\n') + '{"aggregate_id":"x","hash":"ab', () => ({ code: 'RL-5003', seq: N }), [N]],
  ['uncommitted tail (commit record lost)', (l, s) => { const i = lineOf(l, s); return l.slice(0, i + 1).join('\n') + '\n' }, (s) => ({ code: 'RL-5004', seq: firstUncommitted(s) })]
]

/** The first seq after the last commit record that precedes event `seq`'s line, i.e. what a crash after writing `seq` leaves uncommitted. */
let commits: number[] = []
function firstUncommitted (seq: number): number {
  const before = commits.filter((c) => c < seq)
  return before.length === 0 ? 0 : Math.max(...before) + 1
}

beforeAll(async () => {
  dir = await mkdtemp(join(os.tmpdir(), 'reach-tamper-'))
  const path = join(dir, 'clean.log')
  const store = await openStore(path, { kind: 'jsonl', create: true })
  const log = new EventLog(store)
  // Batches of 1, 3 and 9 events, so commit records fall both between single
  // events and after multi-event batches.
  for (let i = 0, b = 0; i < N; b++) {
    const size = Math.min([1, 3, 9][b % 3]!, N - i)
    await log.appendMany(Array.from({ length: size }, (_, k) => workloadDraft(i + k)))
    i += size
  }
  await store.close()
  const text = await readFile(path, 'utf8')
  expect(text.endsWith('\n')).toBe(true)
  original = text.slice(0, -1).split('\n')
  commits = original.filter((l) => l.startsWith('{"commit"')).map((l) => JSON.parse(l).commit)
  const clean = await verify({ logPath: path })
  expect(clean.json).toMatchObject({ valid: true, count: N })
})

describe('tamper corpus: every single-event mutation at every seq', () => {
  for (const [name, mutate, expected, seqs] of mutations) {
    it(name, async () => {
      const targets = seqs ?? Array.from({ length: N }, (_, i) => i)
      const path = join(dir, `${name.replace(/\W+/g, '-')}.log`)
      for (const seq of targets) {
        const text = mutate([...original], seq)
        await writeFile(path, text.endsWith('\n') || name.startsWith('t') ? text : text + '\n')
        const r = await verify({ logPath: path })
        expect({ seq, valid: r.json.valid, error: (r.json.error as any)?.code, at: (r.json.error as any)?.seq }).toEqual({ seq, valid: false, error: expected(seq).code, at: expected(seq).seq })
      }
    })
  }

  it('the last commit record naming a missing event is a gap', async () => {
    const lines = [...original]
    const last = lineOf(lines, N - 1)
    lines.splice(last, 1)
    const path = join(dir, 'lost-last.log')
    await writeFile(path, lines.join('\n') + '\n')
    const r = await verify({ logPath: path })
    expect(r.json.error).toMatchObject({ code: 'RL-2003', seq: N - 1 })
  })
})

describe('negative control: a naive verifier misses most of the corpus', () => {
  /** Re-hashes each event on its own; no link, order, gap or tail checks. */
  function naiveVerify (text: string): boolean {
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('{"commit"')) continue
      let e
      try { e = JSON.parse(line) } catch { return false }
      if (computeEventHash(e) !== e.hash) return false
    }
    return true
  }

  it('accepts deletions, swaps, duplicates, uncommitted tails and prev_hash rewrites that ours rejects', async () => {
    const missed: string[] = []
    for (const [name, mutate] of mutations) {
      const text = mutate([...original], 100)
      if (naiveVerify(text)) missed.push(name)
    }
    expect(missed).toEqual(expect.arrayContaining(['deleted event', 'swapped pair', 'duplicated event', 'uncommitted tail (commit record lost)']))
  })
})
