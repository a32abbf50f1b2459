/**
 * GroupCommit on its own: the write function is the injection point, so the
 * tests drive it directly (hold a write in flight, make one fail).
 */
import { describe, expect, it } from 'vitest'
import { headOf, type Event } from '../../../protocol/event.ts'
import { MAX_BATCH_EVENTS } from '../../../node/store/constants.ts'
import { GroupCommit, type CommitBatch } from '../../../node/store/group-commit.ts'
import { canonicalize } from '../../../protocol/canonical.ts'
import { makeEvents, rejectionCode } from './compliance.ts'

/** A write function that records batches and completes each when told to. */
function controlledWrite (): { write: (b: CommitBatch) => Promise<void>, batches: CommitBatch[], settle: (err?: Error) => void, started: () => Promise<void> } {
  const batches: CommitBatch[] = []
  const pending: Array<{ resolve: () => void, reject: (e: Error) => void }> = []
  let onStart: (() => void) | undefined
  return {
    batches,
    write: async (batch) => {
      batches.push(batch)
      onStart?.()
      await new Promise<void>((resolve, reject) => { pending.push({ resolve, reject }) })
    },
    settle: (err) => {
      const next = pending.shift()
      if (next === undefined) throw new Error('no write in flight')
      if (err === undefined) next.resolve()
      else next.reject(err)
    },
    started: async () => { await new Promise<void>((resolve) => { onStart = resolve }) }
  }
}

describe('GroupCommit', () => {
  it('coalesces a synchronous burst into one write, and everything queued meanwhile into the next', async () => {
    const io = controlledWrite()
    const gc = new GroupCommit({ head: null, write: io.write })
    const events = makeEvents(300)
    const started = io.started()
    const first = events.slice(0, 100).map(async (e) => { await gc.submit([e]) })
    await started
    expect(io.batches).toHaveLength(1)
    expect(gc.pendingHead()).toEqual(headOf(events[99] as Event))
    expect(gc.durableHead()).toBeNull()

    const next = io.started()
    const second = events.slice(100, 300).map(async (e) => { await gc.submit([e]) })
    io.settle()
    await Promise.all(first)
    expect(gc.durableHead()).toEqual(headOf(events[99] as Event))
    await next
    io.settle()
    await Promise.all(second)
    expect(io.batches.map((b) => [b.firstSeq, b.lines.length])).toEqual([[0, 100], [100, 200]])
    expect(io.batches[1]?.lines[0]).toBe(canonicalize(events[100]))
    expect(gc.durableHead()).toEqual(headOf(events[299] as Event))
    expect(gc.busy).toBe(false)
  })

  it('caps a batch by events and bytes but never splits a submission', async () => {
    const batches: CommitBatch[] = []
    const gc = new GroupCommit({ head: null, write: async (b) => { batches.push(b) }, maxEvents: 10, maxBytes: 1_000_000 })
    const events = makeEvents(40)
    await Promise.all([
      ...events.slice(0, 25).map(async (e) => { await gc.submit([e]) }),
      gc.submit(events.slice(25, 40))
    ])
    expect(batches.map((b) => b.lines.length)).toEqual([10, 10, 5, 15])
    const small = new GroupCommit({ head: null, write: async (b) => { batches.push(b) }, maxBytes: 1 })
    batches.length = 0
    await Promise.all(events.slice(0, 3).map(async (e) => { await small.submit([e]) }))
    expect(batches.map((b) => b.lines.length)).toEqual([1, 1, 1])
    expect(MAX_BATCH_EVENTS).toBe(4096)
  })

  it('a failed write rejects its batch and everything queued behind it, and the pending head falls back', async () => {
    const io = controlledWrite()
    const gc = new GroupCommit({ head: null, write: io.write })
    const events = makeEvents(10)
    let started = io.started()
    const base = gc.submit(events.slice(0, 2))
    await started
    io.settle()
    await base

    started = io.started()
    const failing = gc.submit(events.slice(2, 5))
    await started
    const behind = [gc.submit([events[5] as Event]), gc.submit([events[6] as Event])]
    expect(gc.pendingHead()).toEqual(headOf(events[6] as Event))
    io.settle(new Error('disk on fire'))
    await expect(failing).rejects.toThrow('disk on fire')
    for (const p of behind) expect(await rejectionCode(p)).toBe('RL-5002')
    expect(gc.pendingHead()).toEqual(headOf(events[1] as Event))
    expect(gc.durableHead()).toEqual(headOf(events[1] as Event))

    // The next submission extends the durable head again.
    started = io.started()
    const retry = gc.submit(events.slice(2, 4))
    await started
    io.settle()
    await retry
    expect(gc.durableHead()).toEqual(headOf(events[3] as Event))
    expect(io.batches.map((b) => b.firstSeq)).toEqual([0, 2, 2])
  })

  it('verifies synchronously, in call order, against the pending head', () => {
    const gc = new GroupCommit({ head: null, write: async () => {} })
    const events = makeEvents(3)
    expect(() => gc.submit([events[1] as Event])).toThrow(expect.objectContaining({ code: 'RL-5002' }))
    void gc.submit([events[0] as Event])
    void gc.submit([events[1] as Event])
    expect(() => gc.submit([events[1] as Event])).toThrow(expect.objectContaining({ code: 'RL-5001' }))
    expect(gc.pendingHead()).toEqual(headOf(events[1] as Event))
  })
})
