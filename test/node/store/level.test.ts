import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Level } from 'level'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { canonicalize } from '../../../protocol/canonical.ts'
import { headOf, type Event } from '../../../protocol/event.ts'
import { LevelEventStore, levelEventKey } from '../../../node/store/level.ts'
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

  it('stores canonical JSON under 16-digit keys and the head in the same batch', async () => {
    const events = await seeded(12)
    await raw(async (db) => {
      const entries = await db.iterator().all()
      const keys = entries.map(([k]) => k)
      expect(keys).toContain('!events!0000000000000000')
      expect(keys).toContain('!events!0000000000000011')
      expect(await db.get('!events!' + levelEventKey(10))).toBe(canonicalize(events[10]))
      expect(await db.get('!meta!head')).toBe(canonicalize(headOf(events[11] as Event)))
      expect(await db.get('!meta!version')).toBe('1')
    })
    expect(levelEventKey(9007199254740991)).toBe('9007199254740991')
  })

  it('reports events beyond the head as RL-5004 and repair removes them into a .torn file', async () => {
    const events = await seeded(5)
    const extra = makeEvents(7).slice(5)
    await raw(async (db) => {
      for (const e of extra) await db.put('!events!' + levelEventKey(e.seq), canonicalize(e))
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
    await raw(async (db) => {
      await db.del('!events!' + levelEventKey(4))
    })
    expect(await rejectionCode(new LevelEventStore(path).open({ repair: true }))).toBe('RL-5009')
    const rival = makeEvents(4, headOf(events[3] as Event), 99)[0] as Event
    await raw(async (db) => {
      await db.put('!events!' + levelEventKey(4), canonicalize(rival))
    })
    expect(await rejectionCode(new LevelEventStore(path).open())).toBe('RL-5009')
    await raw(async (db) => {
      await db.put('!events!' + levelEventKey(4), canonicalize({ ...events[4], payload: 'tampered' }))
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
