import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { canonicalize } from '../../../protocol/canonical.ts'
import { EventLog, openStore, storeKindFor } from '../../../node/store/index.ts'
import { checkArrival, hashAndLine } from '../../../node/store/arrival.ts'
import { mintedEventText, nextEvent } from '../../../protocol/event.ts'
import { draft, makeEvents } from './compliance.ts'

describe('openStore', () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reach-open-'))
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('picks the store from the option, the name, or what is at the path', async () => {
    expect(await storeKindFor(join(dir, 'run.log'))).toBe('jsonl')
    expect(await storeKindFor(join(dir, 'run.jsonl'))).toBe('jsonl')
    expect(await storeKindFor(join(dir, 'data'))).toBe('level')
    await writeFile(join(dir, 'plain'), '')
    expect(await storeKindFor(join(dir, 'plain'))).toBe('jsonl')
    await mkdir(join(dir, 'folder.d'))
    expect(await storeKindFor(join(dir, 'folder.d'))).toBe('level')

    const jsonl = await openStore(join(dir, 'a.log'), { create: true })
    const level = await openStore(join(dir, 'db'), { create: true })
    const forced = await openStore(join(dir, 'b.log'), { create: true, kind: 'level' })
    expect([jsonl.kind, level.kind, forced.kind]).toEqual(['jsonl', 'level', 'level'])
    for (const store of [jsonl, level, forced]) {
      await new EventLog(store).append(draft(0))
      await store.close()
    }
    const again = await openStore(join(dir, 'db'))
    expect(again.head()?.seq).toBe(0)
    await again.close()
  })
})

describe('arrival fast path', () => {
  it('agrees with the generic canonical form and hash', () => {
    for (const event of [...makeEvents(200), nextEvent(null, { type: 'Probe', aggregate_id: 'a"\\u2028✓𝄞', payload: { b: [1, 'x'], a: null }, metadata: { z: 1, y: 'é' } })]) {
      expect(mintedEventText(event)).toBe(canonicalize(event))
      const { hash, line } = hashAndLine(event)
      expect(hash).toBe(event.hash)
      expect(line).toBe(canonicalize(event))
    }
  })

  it('a minted event is frozen, and what is stored is what was hashed even if its payload changes later', () => {
    const payload = { n: 1 }
    const event = nextEvent(null, { type: 'X', aggregate_id: 'a', payload })
    expect(() => { (event as any).seq = 5 }).toThrow(TypeError)
    payload.n = 2
    const line = checkArrival(null, event)
    expect(JSON.parse(line).payload).toEqual({ n: 1 })
    expect(hashAndLine(JSON.parse(line)).hash).toBe(event.hash)
  })

  it('a copy of a minted event is verified in full', () => {
    const event = nextEvent(null, { type: 'X', aggregate_id: 'a' })
    expect(() => checkArrival(null, { ...event, payload: 'changed' })).toThrow(expect.objectContaining({ code: 'RL-2001' }))
  })
})
