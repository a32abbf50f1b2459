import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { appendFile, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { canonicalize } from '../../../protocol/canonical.ts'
import { headOf, type Event } from '../../../protocol/event.ts'
import { JsonlEventStore } from '../../../node/store/jsonl.ts'
import { inspectJsonl, jsonlBatchText, readJsonlEvents } from '../../../node/store/jsonl-reader.ts'
import { EventLog } from '../../../node/store/log.ts'
import { collect, draft, makeEvents, rejectionCode, runEventStoreCompliance } from './compliance.ts'

runEventStoreCompliance('jsonl', {
  path: (dir) => join(dir, 'events.jsonl'),
  create: (path) => new JsonlEventStore(path),
  snapshot: async (store) => await readFile(store.path)
})

// The same suite with small reads, so lines cross chunk boundaries everywhere.
runEventStoreCompliance('jsonl, 509-byte reads', {
  path: (dir) => join(dir, 'events.jsonl'),
  create: (path) => new JsonlEventStore(path, { chunkSize: 509, tailChunkSize: 13 }),
  snapshot: async (store) => await readFile(store.path)
})

describe('JsonlEventStore', () => {
  let dir: string
  let path: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reach-jsonl-'))
    path = join(dir, 'events.jsonl')
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** A closed log holding `batches` (each one durable batch); returns all events. */
  async function seeded (...batches: number[]): Promise<Event[]> {
    const store = new JsonlEventStore(path)
    await store.open({ create: true })
    const total = batches.reduce((a, b) => a + b, 0)
    const events = makeEvents(total)
    let at = 0
    for (const n of batches) {
      await store.appendBatch(events.slice(at, at + n))
      at += n
    }
    await store.close()
    return events
  }

  async function openError (options: { repair?: boolean } = {}): Promise<unknown> {
    const store = new JsonlEventStore(path)
    try {
      await store.open(options)
    } catch (err) {
      return err
    }
    await store.close()
    throw new Error('expected open to fail')
  }

  async function readerError (): Promise<{ events: Event[], error: unknown }> {
    const events: Event[] = []
    try {
      for await (const event of readJsonlEvents(path)) events.push(event)
    } catch (error) {
      return { events, error }
    }
    throw new Error('expected the reader to fail')
  }

  /** Offset of the line of event `seq` in the file. */
  async function lineOffset (seq: number): Promise<number> {
    const text = await readFile(path, 'utf8')
    const lines = text.split('\n')
    let offset = 0
    for (const line of lines) {
      if (line.startsWith('{"aggregate_id"') && (JSON.parse(line) as Event).seq === seq) return offset
      offset += Buffer.byteLength(line) + 1
    }
    throw new Error(`no line for seq ${seq}`)
  }

  it('writes exactly the canonical lines and one commit record per durable batch', async () => {
    const events = await seeded(3, 2)
    const text = await readFile(path, 'utf8')
    expect(text).toBe(jsonlBatchText(events.slice(0, 3)) + jsonlBatchText(events.slice(3)))
    expect(text.split('\n').slice(0, 4)).toEqual([
      canonicalize(events[0]), canonicalize(events[1]), canonicalize(events[2]), '{"commit":2}'
    ])
  })

  it('group-commits concurrent appends: far fewer commit records (fsyncs) than events', async () => {
    const store = new JsonlEventStore(path)
    await store.open({ create: true })
    const log = new EventLog(store)
    await Promise.all(Array.from({ length: 500 }, async (_, i) => await log.append(draft(i))))
    // A second wave arriving while the first write is in flight.
    const first = Array.from({ length: 100 }, async (_, i) => await log.append(draft(500 + i)))
    await Promise.resolve()
    const second = Array.from({ length: 100 }, async (_, i) => await log.append(draft(600 + i)))
    await Promise.all([...first, ...second])
    await store.close()
    const lines = (await readFile(path, 'utf8')).trimEnd().split('\n')
    const commits = lines.filter((l) => l.startsWith('{"commit":'))
    expect(lines.length - commits.length).toBe(700)
    expect(commits.length).toBeLessThanOrEqual(5)
    expect(commits[0]).toBe('{"commit":499}')
  })

  it('a rejected append leaves the file byte-identical', async () => {
    const events = await seeded(4)
    const before = await readFile(path)
    const store = new JsonlEventStore(path)
    await store.open()
    const bad = { ...makeEvents(5)[4] as Event, payload: 'altered' }
    expect(await rejectionCode(store.append(bad))).toBe('RL-2001')
    expect(await rejectionCode(store.appendBatch([...makeEvents(6).slice(4), events[0] as Event]))).toBe('RL-5001')
    await store.close()
    expect(await readFile(path)).toEqual(before)
  })

  it('garbage without a newline is a torn last line (RL-5003); repair cuts it off and keeps it', async () => {
    const events = await seeded(5)
    const { size } = await stat(path)
    const garbage = '{"aggregate_id":"task-1","ha'
    await appendFile(path, garbage)
    expect(await openError()).toMatchObject({ code: 'RL-5003', seq: 5, details: { path, offset: size } })
    const read = await readerError()
    expect(read.events).toEqual(events)
    expect(read.error).toMatchObject({ code: 'RL-5003', seq: 5, details: { offset: size } })

    const store = new JsonlEventStore(path)
    await store.open({ repair: true })
    expect(store.lastRepair).toMatchObject({ code: 'RL-5003', fromSeq: 5, removedEvents: 0, removedBytes: garbage.length, head: headOf(events[4] as Event) })
    expect(await readFile(store.lastRepair?.tornPath as string, 'utf8')).toBe(garbage)
    expect((await stat(path)).size).toBe(size)
    const next = await new EventLog(store).append(draft(5))
    expect(next.seq).toBe(5)
    await store.close()
    expect((await readdir(dir)).filter((f) => f.includes('.torn-'))).toHaveLength(1)
    expect(await collect(readJsonlEvents(path))).toEqual([...events, next])
  })

  it('a file cut mid-line is RL-5003 at the first incomplete seq; repair goes back to the last commit', async () => {
    const events = await seeded(5, 5)
    const cutAt = await lineOffset(9)
    const committed = await lineOffset(5)
    await truncate(path, cutAt + 10)
    expect(await openError()).toMatchObject({ code: 'RL-5003', seq: 9, details: { offset: cutAt } })
    const read = await readerError()
    expect(read.events).toEqual(events.slice(0, 9))
    expect(read.error).toMatchObject({ code: 'RL-5003', seq: 9 })
    const before = await readFile(path)

    const store = new JsonlEventStore(path)
    await store.open({ repair: true })
    expect(store.lastRepair).toMatchObject({ code: 'RL-5003', fromSeq: 5, removedEvents: 4, removedBytes: cutAt + 10 - committed })
    expect(await readFile(store.lastRepair?.tornPath as string)).toEqual(before.subarray(committed))
    expect(store.head()).toEqual(headOf(events[4] as Event))
    await store.appendBatch(events.slice(5))
    expect(await store.readAll()).toEqual(events)
    await store.close()
  })

  it('an unparseable complete last line is RL-5003 too', async () => {
    await seeded(3)
    await appendFile(path, 'garbage\n')
    expect(await openError()).toMatchObject({ code: 'RL-5003', seq: 3 })
    expect((await readerError()).error).toMatchObject({ code: 'RL-5003', seq: 3 })
  })

  it('event lines after the last commit record are a half-written batch (RL-5004); repair removes them', async () => {
    const events = await seeded(5)
    const { size } = await stat(path)
    const extra = makeEvents(7).slice(5)
    const uncommitted = extra.map((e) => canonicalize(e) + '\n').join('')
    await appendFile(path, uncommitted)
    expect(await openError()).toMatchObject({ code: 'RL-5004', seq: 5, details: { offset: size } })
    const read = await readerError()
    expect(read.events).toEqual([...events, ...extra])
    expect(read.error).toMatchObject({ code: 'RL-5004', seq: 5 })

    const store = new JsonlEventStore(path)
    await store.open({ repair: true })
    expect(store.lastRepair).toMatchObject({ code: 'RL-5004', fromSeq: 5, removedEvents: 2 })
    expect(await readFile(store.lastRepair?.tornPath as string, 'utf8')).toBe(uncommitted)
    await store.appendBatch(extra)
    expect(await store.readAll()).toEqual([...events, ...extra])
    await store.close()
    expect(await collect(readJsonlEvents(path))).toEqual([...events, ...extra])
  })

  it('a log without any commit record is uncommitted from seq 0', async () => {
    await writeFile(path, makeEvents(3).map((e) => canonicalize(e) + '\n').join(''))
    expect(await openError()).toMatchObject({ code: 'RL-5004', seq: 0 })
    const store = new JsonlEventStore(path)
    await store.open({ repair: true })
    expect(store.head()).toBeNull()
    expect((await stat(path)).size).toBe(0)
    await store.close()
  })

  it('a commit record naming a seq that is not there means missing events (RL-2003), which repair does not touch', async () => {
    const events = makeEvents(5)
    await writeFile(path, events.map((e) => canonicalize(e) + '\n').join('') + '{"commit":7}\n')
    const before = await readFile(path)
    expect(await openError()).toMatchObject({ code: 'RL-2003', seq: 5 })
    expect(await openError({ repair: true })).toMatchObject({ code: 'RL-2003', seq: 5 })
    expect((await readerError()).error).toMatchObject({ code: 'RL-2003', seq: 5 })
    expect(await readFile(path)).toEqual(before)
    await writeFile(path, jsonlBatchText(events) + '{"commit":4}\n')
    expect(await openError()).toMatchObject({ code: 'RL-5009' })
  })

  it('a malformed line in the middle is RL-2006 at the expected seq, reported after the events before it', async () => {
    const events = await seeded(3, 3)
    const text = await readFile(path, 'utf8')
    await writeFile(path, text.replace(canonicalize(events[2]), 'not json'))
    const read = await readerError()
    expect(read.events).toEqual(events.slice(0, 2))
    expect(read.error).toMatchObject({ code: 'RL-2006', seq: 2, details: { path, line: 3 } })

    await writeFile(path, text.replace(canonicalize(events[4]), '{"seq":4,"foo":1}'))
    expect((await readerError()).error).toMatchObject({ code: 'RL-2006', seq: 4, details: { line: 6 } })
    // Without the shape check the verifier downstream sees the object (and fails it itself).
    const loose = await collect(readJsonlEvents(path, { shape: false }))
    expect(loose[4]).toEqual({ seq: 4, foo: 1 })

    // The store opens (its tail is fine) but reading reaches the bad line.
    const store = new JsonlEventStore(path)
    await store.open()
    expect(await store.get(3)).toEqual(events[3])
    expect(await rejectionCode(store.readAll())).toBe('RL-2006')
    await store.close()
  })

  it('the backward open check and the forward reader agree on every cut and appended tail', async () => {
    const events = makeEvents(12)
    const clean = jsonlBatchText(events.slice(0, 3)) + jsonlBatchText(events.slice(3, 4)) + jsonlBatchText(events.slice(4, 9))
    const extra = events.slice(9).map((e) => canonicalize(e) + '\n').join('')
    const bytes = Buffer.from(clean + extra)
    const tails = ['', 'garbage', 'garbage\n', '{"commit":11}\n', '{"commit":12}\n', '\n', '{"x":1}\n']
    await fc.assert(fc.asyncProperty(fc.integer({ min: 0, max: bytes.length }), fc.constantFrom(...tails), async (cut, tail) => {
      await writeFile(path, Buffer.concat([bytes.subarray(0, cut), Buffer.from(tail)]))
      const inspected = await inspectJsonl(path, 7)
      let streamed: unknown
      try {
        await collect(readJsonlEvents(path, { chunkSize: 61 }))
      } catch (err) {
        streamed = err
      }
      const summary = (err: unknown): unknown => err === undefined ? 'clean' : { code: (err as { code: string }).code, seq: (err as { seq?: number }).seq }
      expect(summary(inspected.problem)).toEqual(summary(streamed))
    }), { numRuns: 80 })
  })

  it('the reader honours ranges and can ignore the tail', async () => {
    const events = await seeded(4, 4)
    await appendFile(path, '{"torn')
    expect(await collect(readJsonlEvents(path, { from: 2, to: 5 }))).toEqual(events.slice(2, 6))
    expect(await collect(readJsonlEvents(path, { tail: 'ignore' }))).toEqual(events)
    expect(await rejectionCode(collect(readJsonlEvents(join(dir, 'missing.jsonl'))))).toBe('RL-5006')
  })

  it('opens by reading the tail only, not by scanning the file', async () => {
    const events = makeEvents(200)
    // A damaged first line: a full scan would fail on it; open never looks at it.
    await writeFile(path, 'not an event\n' + jsonlBatchText(events))
    const store = new JsonlEventStore(path, { tailChunkSize: 4096 })
    await store.open()
    expect(store.head()).toEqual(headOf(events[199] as Event))
    expect(await rejectionCode(store.readAll())).toBe('RL-2006')
    await store.close()
  })

  it('get and ranged reads stay correct across index boundaries, before and after reopening', async () => {
    const events = makeEvents(2300)
    const store = new JsonlEventStore(path)
    await store.open({ create: true })
    for (let i = 0; i < 2300; i += 700) await store.appendBatch(events.slice(i, i + 700))
    for (const seq of [0, 1023, 1024, 1025, 2048, 2299]) expect(await store.get(seq)).toEqual(events[seq])
    await store.close()
    await store.open()
    expect(await store.get(2050)).toEqual(events[2050])
    expect(await store.get(1030)).toEqual(events[1030])
    expect(await collect(store.read({ from: 1020, to: 1030 }))).toEqual(events.slice(1020, 1031))
    expect(await store.getSinceSeq(2047)).toEqual(events.slice(2048))
    expect(await store.readAll()).toEqual(events)
    await store.close()
  })

  it('multi-byte UTF-8 (emoji, CJK) survives every chunk boundary', async () => {
    const heavy = (i: number): string => '🚀中文🎉テスト'.repeat(1 + (i % 4)) + '𝄞é'.repeat(i % 3)
    const store = new JsonlEventStore(path, { chunkSize: 5, tailChunkSize: 3 })
    await store.open({ create: true })
    const log = new EventLog(store)
    const written = await log.appendMany(Array.from({ length: 12 }, (_, i) => ({ type: 'Note', aggregate_id: `多-${i}-🙂`, payload: { text: heavy(i) } })))
    await store.close()
    await store.open()
    expect(await store.readAll()).toEqual(written)
    expect(await store.get(9)).toEqual(written[9])
    await store.close()
    for (const chunkSize of [1, 2, 3, 5, 7, 64]) {
      expect(await collect(readJsonlEvents(path, { chunkSize }))).toEqual(written)
    }
  })

  it('takes over a stale lock left by a dead process', async () => {
    await seeded(2)
    const child = spawn(process.execPath, ['-e', ''])
    const [exitCode] = await once(child, 'exit') as [number]
    expect(exitCode).toBe(0)
    await writeFile(`${path}.lock`, `${child.pid}\n`)
    const store = new JsonlEventStore(path)
    await store.open()
    expect(await readFile(`${path}.lock`, 'utf8')).toBe(`${process.pid}\n`)
    await store.close()
    expect(await stat(`${path}.lock`).catch(() => undefined)).toBeUndefined()
  })

  it('takes over a lock naming our own pid that this process does not hold (pid reused after a restart)', async () => {
    await seeded(1)
    await writeFile(`${path}.lock`, `${process.pid}\n`)
    const store = new JsonlEventStore(path)
    await store.open()
    expect(await rejectionCode(new JsonlEventStore(path).open())).toBe('RL-5008')
    await store.close()
  })

  it('refuses a lock held by a live process with RL-5008', async () => {
    await seeded(2)
    const child = spawn(process.execPath, ['-e', 'process.stdin.resume()'], { stdio: ['pipe', 'ignore', 'ignore'] })
    await once(child, 'spawn')
    try {
      await writeFile(`${path}.lock`, `${child.pid}\n`)
      expect(await openError()).toMatchObject({ code: 'RL-5008', details: { pid: child.pid } })
      expect(await readFile(`${path}.lock`, 'utf8')).toBe(`${child.pid}\n`)
    } finally {
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
  })

  it('creates over an existing empty file, not over a log', async () => {
    await writeFile(path, '')
    const store = new JsonlEventStore(path)
    await store.open({ create: true })
    await store.close()
    await writeFile(path, 'x')
    expect(await rejectionCode(new JsonlEventStore(path).open({ create: true }))).toBe('RL-5005')
    expect(await rejectionCode(new JsonlEventStore(dir).open())).toBe('RL-5006')
  })
})
