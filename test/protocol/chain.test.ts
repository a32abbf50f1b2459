import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { verifyChain, ChainVerifier } from '../../protocol/chain.ts'
import { computeEventHash, nextEvent, type Event } from '../../protocol/event.ts'
import { ZERO_HASH } from '../../protocol/hash.ts'
import { makeEvents } from './helpers.ts'

const clone = (events: Event[]): Event[] => structuredClone(events)

describe('chain', () => {
  it('genesis links to 64 zeros and every event to its predecessor', () => {
    const events = makeEvents(50)
    expect(events[0]!.prev_hash).toBe(ZERO_HASH)
    for (let i = 1; i < events.length; i++) expect(events[i]!.prev_hash).toBe(events[i - 1]!.hash)
    const result = verifyChain(events)
    expect(result).toMatchObject({ ok: true, count: 50, first_seq: 0, last_seq: 49 })
  })

  it('is deterministic: the same drafts give the same hashes 100 times over', () => {
    const first = makeEvents(200).map((e) => e.hash)
    for (let i = 0; i < 100; i++) expect(makeEvents(200).map((e) => e.hash)).toEqual(first)
  })

  it('the logical clock is monotonic and honours a later observed time', () => {
    const a = nextEvent(null, { type: 'X', aggregate_id: 'a' })
    const b = nextEvent({ seq: 0, hash: a.hash, timestamp: a.timestamp }, { type: 'X', aggregate_id: 'a', timestamp: 40 })
    const c = nextEvent({ seq: 1, hash: b.hash, timestamp: b.timestamp }, { type: 'X', aggregate_id: 'a', timestamp: 3 })
    expect([a.timestamp, b.timestamp, c.timestamp]).toEqual([0, 40, 41])
  })

  describe('reports the first bad seq and why', () => {
    const base = makeEvents(100)
    const cases: Array<[string, (e: Event[]) => unknown[], number, string]> = [
      ['payload changed', (e) => { (e[50] as any).payload = { evil: true }; return e }, 50, 'RL-2001'],
      ['type changed', (e) => { e[50]!.type = 'TaskFailed'; return e }, 50, 'RL-2001'],
      ['hash field changed', (e) => { e[50]!.hash = 'f'.repeat(64); return e }, 50, 'RL-2001'],
      ['prev_hash changed', (e) => { e[50]!.prev_hash = 'a'.repeat(64); return e }, 50, 'RL-2002'],
      ['seq changed', (e) => { e[50]!.seq = 5000; return e }, 50, 'RL-2001'],
      ['seq changed and rehashed (next link breaks)', (e) => { e[50]!.seq = 5000; e[50]!.hash = computeEventHash(e[50]!); return e }, 50, 'RL-2001'],
      ['event deleted', (e) => { e.splice(50, 1); return e }, 50, 'RL-2003'],
      ['two events deleted', (e) => { e.splice(50, 2); return e }, 50, 'RL-2003'],
      ['pair swapped', (e) => { [e[50], e[51]] = [e[51]!, e[50]!]; return e }, 50, 'RL-2004'],
      ['event duplicated', (e) => { e.splice(51, 0, structuredClone(e[50]!)); return e }, 50, 'RL-2005'],
      ['earlier event re-inserted', (e) => { e.splice(51, 0, structuredClone(e[10]!)); return e }, 51, 'RL-2004'],
      ['field removed', (e) => { delete (e[50] as any).metadata; return e }, 50, 'RL-2006'],
      ['not an object', (e) => { (e as unknown[])[50] = 'garbage'; return e }, 50, 'RL-2006'],
      ['genesis prev_hash not zero', (e) => { e[0]!.prev_hash = '1'.repeat(64); return e }, 0, 'RL-2002'],
      ['last event deleted in the middle of a swap at the end', (e) => { e.splice(98, 1); return e }, 98, 'RL-2003']
    ]
    for (const [name, mutate, seq, code] of cases) {
      it(name, () => {
        const result = verifyChain(mutate(clone(base)))
        expect(result).toMatchObject({ ok: false, seq, code })
      })
    }

    it('clock regression is caught even when hashes are consistent', () => {
      const events = makeEvents(3)
      const bad = { ...events[2]!, timestamp: 0 }
      bad.hash = computeEventHash(bad)
      expect(verifyChain([events[0]!, events[1]!, bad])).toMatchObject({ ok: false, seq: 2, code: 'RL-2007' })
    })
  })

  it('verifies a range from an anchor', () => {
    const events = makeEvents(30)
    const anchor = { seq: 9, hash: events[9]!.hash, timestamp: events[9]!.timestamp }
    expect(verifyChain(events.slice(10), anchor)).toMatchObject({ ok: true, count: 20, first_seq: 10 })
    expect(verifyChain(events.slice(11), anchor)).toMatchObject({ ok: false, seq: 10, code: 'RL-2003' })
  })

  it('property: any single-event mutation of a valid chain is caught at or before that event', () => {
    const events = makeEvents(40)
    fc.assert(fc.property(fc.integer({ min: 0, max: 39 }), fc.constantFrom('payload', 'type', 'aggregate_id', 'timestamp', 'metadata', 'seq', 'prev_hash', 'hash'), (index, field) => {
      const copy = clone(events)
      const e = copy[index] as any
      if (field === 'payload' || field === 'metadata') e[field] = { tampered: index }
      else if (field === 'seq' || field === 'timestamp') e[field] = e[field] + 7
      else if (field === 'prev_hash' || field === 'hash') e[field] = e[field].replace(/^./, (c: string) => c === '0' ? '1' : '0')
      else e[field] = e[field] + 'x'
      const result = verifyChain(copy)
      expect(result.ok).toBe(false)
      if (!result.ok) expect(result.seq).toBe(index)
    }), { numRuns: 300 })
  })

  it('ignores events after the first failure', () => {
    const v = new ChainVerifier()
    const events = makeEvents(5)
    v.push({ nope: true })
    const first = v.failed
    v.push(events[0])
    expect(v.end()).toBe(first)
  })
})
