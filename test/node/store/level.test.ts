import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { canonicalize } from '../../../protocol/canonical.ts'
import { headOf, type Event } from '../../../protocol/event.ts'
import { LevelEventStore, levelSegmentKey } from '../../../node/store/level.ts'
import { collect, makeEvents, rejectionCode, runEventStoreCompliance } from './compliance.ts'

runEventStoreCompliance('level', {
  path: (dir) => join(dir, 'events.level'),
  create: (path) => new LevelEventStore(path),
  snapshot: async (store) => ({ head: store.head(), events: (await collect(store.read())).map((e) => canonicalize(e)) })
})

describe('LevelEventStore', () => {
  let dir: string
  let path: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reach-level-'))
    path = join(dir, 'events.level')
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** Writes raw entries with LevelDB directly, bypassing the store. */
  async function raw (fn: (db: Level<string, string>) => Promise<void>): Promise<void> {
    const db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
    await db.open()
    try {
      await fn(db)
    } finally {
      await db.close()
    }
  }

  async function seeded (n: number): Promise<Event[]> {
    const store = new LevelEventStore(path)
    await store.open({ create: true })
    const events = makeEvents(n)
    await store.appendBatch(events)
    await store.close()
    return events
  }

  it('stores each batch as one segment of canonical lines under its first seq, and the head in the same batch', async () => {
    const events = await seeded(12)
    const store = new LevelEventStore(path)
    await store.open()
    await store.appendBatch(makeEvents(15, headOf(events[11] as Event)).slice(0, 3))
    expect((await store.get(13))?.seq).toBe(13)
    expect((await store.readAll()).map((e) => e.seq)).toEqual(Array.from({ length: 15 }, (_, i) => i))
    expect((await collect(store.read({ from: 5, to: 13 }))).map((e) => e.seq)).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13])
    await store.close()
    await raw(async (db) => {
      const keys = (await db.iterator().all()).map(([k]) => k)
      expect(keys).toEqual(['!meta!head', '!meta!version', '!segments!0000000000000000', '!segments!0000000000000012'])
      expect(await db.get('!segments!' + levelSegmentKey(0))).toBe(events.map((e) => canonicalize(e)).join('\n'))
      expect(await db.get('!meta!version')).toBe('1')
    })
    expect(levelSegmentKey(9007199254740991)).toBe('9007199254740991')
  })

  it('reports events beyond the head as RL-5004 and repair removes them into a .torn file', async () => {
    const events = await seeded(5)
    const extra = makeEvents(7).slice(5)
    await raw(async (db) => {
      await db.put('!segments!' + levelSegmentKey(5), extra.map((e) => canonicalize(e)).join('\n'))
    })
    const store = new LevelEventStore(path)
    const err = await store.open().catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'RL-5004', seq: 5 })
    await store.open({ repair: true })
    expect(store.lastRepair).toMatchObject({ code: 'RL-5004', fromSeq: 5, removedEvents: 2 })
    const torn = await readFile(store.lastRepair?.tornPath as string, 'utf8')
    expect(torn).toBe(extra.map((e) => canonicalize(e) + '\n').join(''))
    expect(await store.readAll()).toEqual(events)
    await store.append(extra[0] as Event)
    expect(store.head()?.seq).toBe(5)
    await store.close()
  })

  it('reports a head that does not match the last event as RL-5009 (RL-2001 if the event was altered)', async () => {
    const events = await seeded(5)
    const segment = (last?: unknown): string => [...events.slice(0, 4), ...(last === undefined ? [] : [last])].map((e) => canonicalize(e)).join('\n')
    await raw(async (db) => {
      await db.put('!segments!' + levelSegmentKey(0), segment())
    })
    expect(await rejectionCode(new LevelEventStore(path).open({ repair: true }))).toBe('RL-5009')
    const rival = makeEvents(4, headOf(events[3] as Event), 99)[0] as Event
    await raw(async (db) => {
      await db.put('!segments!' + levelSegmentKey(0), segment(rival))
    })
    expect(await rejectionCode(new LevelEventStore(path).open())).toBe('RL-5009')
    await raw(async (db) => {
      await db.put('!segments!' + levelSegmentKey(0), segment({ ...events[4], payload: 'tampered' }))
    })
    expect(await rejectionCode(new LevelEventStore(path).open())).toBe('RL-2001')
    await raw(async (db) => {
      await db.put('!meta!head', 'not json')
    })
    expect(await rejectionCode(new LevelEventStore(path).open())).toBe('RL-5009')
  })

  it('refuses a path that is a file', async () => {
    const file = join(dir, 'plain')
    await writeFile(file, 'x')
    expect(await rejectionCode(new LevelEventStore(file).open({ create: true }))).toBe('RL-5006')
  })
})
