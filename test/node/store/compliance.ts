/**
 * The EventStore compliance suite: every implementation runs it (libp2p
 * interface-compliance-tests style). Real files and real LevelDB in temp dirs.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { ErrorCode } from '../../../protocol/errors.ts'
import { computeEventHash, headOf, nextEvent, type ChainHead, type Event, type EventDraft } from '../../../protocol/event.ts'
import { ZERO_HASH } from '../../../protocol/hash.ts'
import { EventLog } from '../../../node/store/log.ts'
import type { EventStore } from '../../../node/store/types.ts'

export interface StoreFactory {
  /** Path of a new (not yet existing) log inside `dir`. */
  path: (dir: string) => string
  /** A store for `path`, not yet opened. */
  create: (path: string) => EventStore
  /** Everything the store holds, for before/after comparisons (the file's bytes for JSONL). */
  snapshot: (store: EventStore) => Promise<unknown>
}

const PAYLOADS = ['plain', 'émoji 🚀🎉', '中文字符 テスト', { nested: [1, 2.5, null, true] }, 'a\nb\t"q"\\']

export function draft (i: number): EventDraft {
  return {
    type: i % 3 === 0 ? 'TaskCreated' : 'TaskUpdated',
    aggregate_id: `task-${i % 17}`,
    payload: { i, note: PAYLOADS[i % PAYLOADS.length] ?? null },
    ...(i % 4 === 0 ? { metadata: { actor: `agent-${i % 5}` } } : {})
  }
}

/** `n` chained events after `head`. */
export function makeEvents (n: number, head: ChainHead | null = null, offset = 0): Event[] {
  const events: Event[] = []
  for (let i = 0; i < n; i++) {
    const event = nextEvent(head, draft(offset + i))
    events.push(event)
    head = headOf(event)
  }
  return events
}

export function expectValidChain (events: readonly Event[]): void {
  let prev = ZERO_HASH
  let timestamp = -1
  events.forEach((event, i) => {
    expect(event.seq).toBe(i)
    expect(event.prev_hash).toBe(prev)
    expect(computeEventHash(event)).toBe(event.hash)
    expect(event.timestamp).toBeGreaterThan(timestamp)
    prev = event.hash
    timestamp = event.timestamp
  })
}

export async function collect<T> (items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of items) out.push(item)
  return out
}

/** The RL- code `p` rejects with (fails the test if it resolves). */
export async function rejectionCode (p: Promise<unknown>): Promise<ErrorCode | string> {
  try {
    await p
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
  throw new Error('expected a rejection')
}

export function throwCode (fn: () => unknown): ErrorCode | string {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
  throw new Error('expected a throw')
}

/** An event for `seq` with arbitrary fields, hashed correctly unless told otherwise. */
function forge (fields: Omit<Event, 'hash'>, hash?: string): Event {
  return { ...fields, hash: hash ?? computeEventHash(fields) }
}

export function runEventStoreCompliance (name: string, factory: StoreFactory): void {
  describe(`EventStore compliance: ${name}`, () => {
    let dir: string
    let path: string
    let opened: EventStore[]

    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'reach-store-'))
      path = factory.path(dir)
      opened = []
    })

    afterEach(async () => {
      for (const store of opened) await store.close()
      await rm(dir, { recursive: true, force: true })
    })

    async function open (options: { create?: boolean } = { create: true }): Promise<EventStore> {
      const store = factory.create(path)
      await store.open(options)
      opened.push(store)
      return store
    }

    async function seeded (n: number): Promise<{ store: EventStore, events: Event[] }> {
      const store = await open()
      const events = makeEvents(n)
      if (n > 0) await store.appendBatch(events)
      return { store, events }
    }

    it('appends 1000 events and reads them back in order every way', async () => {
      const store = await open()
      expect(store.head()).toBeNull()
      const events = makeEvents(1000)
      for (const event of events.slice(0, 10)) await store.append(event)
      for (let i = 10; i < 1000; i += 330) await store.appendBatch(events.slice(i, i + 330))
      expect(store.head()).toEqual(headOf(events[999] as Event))
      expect(store.pendingHead()).toEqual(store.head())

      expect(await store.readAll()).toEqual(events)
      expect(await collect(store.read())).toEqual(events)
      expect(await collect(store.read({ from: 100, to: 199 }))).toEqual(events.slice(100, 200))
      expect(await collect(store.read({ from: 990 }))).toEqual(events.slice(990))
      expect(await collect(store.read({ to: 4 }))).toEqual(events.slice(0, 5))
      expect(await collect(store.read({ from: 500, to: 500 }))).toEqual([events[500]])
      expect(await collect(store.read({ from: 1000 }))).toEqual([])
      expect(await collect(store.read({ from: 7, to: 3 }))).toEqual([])
      expect(await store.getSinceSeq(994)).toEqual(events.slice(995))
      expect(await store.getSinceSeq(-1)).toEqual(events)
      expect(await store.getSinceSeq(999)).toEqual([])
      for (const seq of [0, 1, 511, 512, 999]) expect(await store.get(seq)).toEqual(events[seq])
      expect(await store.get(1000)).toBeUndefined()
      expect(await store.get(-1)).toBeUndefined()
      expectValidChain(await store.readAll())
    })

    it('rejects a duplicate seq with RL-5001 and never overwrites the entry', async () => {
      const { store, events } = await seeded(5)
      const before = await factory.snapshot(store)
      const e2 = events[2] as Event
      const rival = forge({ ...e2, payload: { evil: true } })
      expect(await rejectionCode(store.append(rival))).toBe('RL-5001')
      expect(await rejectionCode(store.append(events[4] as Event))).toBe('RL-5001')
      expect(await rejectionCode(store.append(events[0] as Event))).toBe('RL-5001')
      expect(await rejectionCode(store.appendBatch([rival]))).toBe('RL-5001')
      expect(await factory.snapshot(store)).toEqual(before)
      expect(await store.get(3)).toEqual(events[3])
      expect(await store.get(2)).toEqual(e2)
      expect(store.head()).toEqual(headOf(events[4] as Event))
    })

    it('rejects appends that do not extend the head and leaves the store untouched', async () => {
      const { store, events } = await seeded(5)
      const head = headOf(events[4] as Event)
      const good = nextEvent(head, draft(5))
      const { hash: _hash, ...unhashed } = good
      const cases: Array<[string, unknown, ErrorCode]> = [
        ['gap', nextEvent({ ...head, seq: 6 }, draft(7)), 'RL-5002'],
        ['wrong prev_hash', forge({ ...unhashed, prev_hash: 'a'.repeat(64) }), 'RL-5002'],
        ['genesis again', nextEvent(null, draft(0)), 'RL-5001'],
        ['bad hash', { ...good, hash: 'b'.repeat(64) }, 'RL-2001'],
        ['payload changed after hashing', { ...good, payload: 'changed' }, 'RL-2001'],
        ['clock not increasing', forge({ ...unhashed, timestamp: head.timestamp }), 'RL-2007'],
        ['missing field', { ...good, metadata: undefined }, 'RL-2006'],
        ['unknown field', { ...good, extra: 1 }, 'RL-2006'],
        ['not an object', 'event', 'RL-2006']
      ]
      const before = await factory.snapshot(store)
      for (const [label, event, code] of cases) {
        expect(await rejectionCode(store.append(event as Event)), label).toBe(code)
        expect(store.pendingHead(), label).toEqual(head)
      }
      expect(await factory.snapshot(store)).toEqual(before)
      expect(store.head()).toEqual(head)
      await store.append(good)
      expect(await store.readAll()).toEqual([...events, good])
    })

    it('appendBatch is all-or-nothing', async () => {
      const { store, events } = await seeded(3)
      const before = await factory.snapshot(store)
      const batch = makeEvents(10, headOf(events[2] as Event), 3)
      const broken = batch.map((e, i) => i === 7 ? { ...e, hash: 'c'.repeat(64) } : e)
      expect(await rejectionCode(store.appendBatch(broken))).toBe('RL-2001')
      const gapped = [...batch.slice(0, 4), ...batch.slice(5)]
      expect(await rejectionCode(store.appendBatch(gapped))).toBe('RL-5002')
      expect(await factory.snapshot(store)).toEqual(before)
      expect(store.pendingHead()).toEqual(headOf(events[2] as Event))
      await store.appendBatch([])
      await store.appendBatch(batch)
      expect(await store.readAll()).toEqual([...events, ...batch])
    })

    it('group-commits 500 concurrent EventLog appends into one valid chain', async () => {
      const store = await open()
      const log = new EventLog(store)
      const results = await Promise.all(Array.from({ length: 500 }, async (_, i) => await log.append(draft(i))))
      expect(results.map((e) => e.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i))
      const stored = await store.readAll()
      expect(stored).toEqual(results)
      expectValidChain(stored)
      expect(log.head()).toEqual(headOf(results[499] as Event))
      const more = await log.appendMany([draft(500), draft(501)])
      expect(more.map((e) => e.seq)).toEqual([500, 501])
      expectValidChain(await store.readAll())
    })

    it('accepts pre-built consecutive events appended concurrently', async () => {
      const store = await open()
      const events = makeEvents(50)
      await Promise.all(events.map(async (e) => { await store.append(e) }))
      expect(await store.readAll()).toEqual(events)
    })

    it('does not let a read observe events that are not yet durable', async () => {
      const { store, events } = await seeded(20)
      const log = new EventLog(store)
      const pending = log.append(draft(20))
      expect(store.pendingHead()?.seq).toBe(20)
      expect(store.head()?.seq).toBe(19)
      const read = store.readAll()
      const [seen, appended] = await Promise.all([read, pending])
      expect(seen).toEqual(events)
      expect(store.head()).toEqual(headOf(appended))
    })

    it('preserves the head across close and reopen', async () => {
      const { store, events } = await seeded(30)
      await store.close()
      await store.close()
      const again = await open({})
      expect(again.head()).toEqual(headOf(events[29] as Event))
      expect(await again.readAll()).toEqual(events)
      const log = new EventLog(again)
      const next = await log.append(draft(30))
      expect(next.seq).toBe(30)
      expect(next.prev_hash).toBe((events[29] as Event).hash)
      await again.close()
      await store.open()
      expect(store.head()).toEqual(headOf(next))
    })

    it('waits for writes in flight when closing', async () => {
      const store = await open()
      const log = new EventLog(store)
      const appends = Array.from({ length: 20 }, async (_, i) => await log.append(draft(i)))
      await store.close()
      await Promise.all(appends)
      const again = await open({})
      expect(again.head()?.seq).toBe(19)
    })

    it('refuses every use of a closed store with RL-5007', async () => {
      const never = factory.create(path)
      expect(throwCode(() => never.head())).toBe('RL-5007')
      const { store, events } = await seeded(3)
      await store.close()
      const next = nextEvent(headOf(events[2] as Event), draft(3))
      expect(throwCode(() => store.head())).toBe('RL-5007')
      expect(throwCode(() => store.pendingHead())).toBe('RL-5007')
      expect(await rejectionCode(store.append(next))).toBe('RL-5007')
      expect(await rejectionCode(store.appendBatch([next]))).toBe('RL-5007')
      expect(await rejectionCode(collect(store.read()))).toBe('RL-5007')
      expect(await rejectionCode(store.readAll())).toBe('RL-5007')
      expect(await rejectionCode(store.get(0))).toBe('RL-5007')
      expect(await rejectionCode(store.getSinceSeq(0))).toBe('RL-5007')
      expect(await rejectionCode(new EventLog(store).append(draft(3)))).toBe('RL-5007')
    })

    it('keeps a second opener out with RL-5008 until the first closes', async () => {
      const { store } = await seeded(2)
      const second = factory.create(path)
      expect(await rejectionCode(second.open())).toBe('RL-5008')
      expect(await rejectionCode(second.open({ repair: true }))).toBe('RL-5008')
      await new EventLog(store).append(draft(2))
      await store.close()
      await second.open()
      opened.push(second)
      expect(second.head()?.seq).toBe(2)
    })

    it('creates only new logs: RL-5006 without create, RL-5005 over an existing log', async () => {
      expect(await rejectionCode(factory.create(path).open())).toBe('RL-5006')
      const { store } = await seeded(1)
      await store.close()
      expect(await rejectionCode(factory.create(path).open({ create: true }))).toBe('RL-5005')
      const again = await open({})
      expect(again.head()?.seq).toBe(0)
    })
  })
}
