import { EventEmitter } from 'node:events'
import CircuitBreaker from 'opossum'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { BreakerState } from '../../federation/peer-breaker.ts'
import type { PeerStore } from '../../federation/peer-file.ts'
import { PeerRegistry, type PeerRegistryOptions, type PeerStats } from '../../federation/peer-registry.ts'
import { peerScore } from '../../federation/peer-score.ts'
import { isReachError, ReachError, type ErrorCode } from '../../protocol/errors.ts'
import { code } from '../codes.ts'

const RESET_MS = 150
const BREAKER = { resetTimeoutMs: RESET_MS, volumeThreshold: 3, errorThresholdPercentage: 50, rollingCountTimeoutMs: 30_000 }

let registries: PeerRegistry[] = []
/** Answers still held when a test ends: given then, so that stop() (which waits for calls) is never left waiting. */
let held: Array<() => void> = []
afterEach(async () => {
  for (const release of held) release()
  held = []
  await Promise.all(registries.map(async (r) => await r.stop()))
  registries = []
  vi.restoreAllMocks()
})

/** A PeerStore in memory: the text last written (or given at the start) and every write. */
interface MemoryStore extends PeerStore {
  text: string | undefined
  writes: string[]
}

function memoryStore (text?: string, name?: string): MemoryStore {
  const store: MemoryStore = {
    text,
    writes: [],
    read: async () => store.text,
    write: async (t) => {
      store.writes.push(t)
      store.text = t
    },
    ...(name === undefined ? {} : { name })
  }
  return store
}

/** A call's answer, given when the test likes (or, failing that, after it). */
function heldAnswer (): PromiseWithResolvers<string> {
  const answer = Promise.withResolvers<string>()
  held.push(() => { answer.resolve('released after the test') })
  return answer
}

interface Harness {
  reg: PeerRegistry
  store: MemoryStore
  /** Resolves when `peer`'s breaker reaches `state`; fails loudly after 5 s. */
  until: (peer: string, state: BreakerState) => Promise<void>
}

async function open (options: PeerRegistryOptions = {}, store: MemoryStore = memoryStore()): Promise<Harness> {
  const changes = new EventEmitter()
  const { onChange, ...rest } = options
  const reg = await PeerRegistry.open(store, {
    breaker: BREAKER,
    ...rest,
    onChange: (peer, stats) => {
      onChange?.(peer, stats)
      changes.emit('change', peer, stats)
    }
  })
  registries.push(reg)
  const until = async (peer: string, state: BreakerState): Promise<void> => {
    if (reg.breakerState(peer) === state) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        changes.off('change', listener)
        reject(new Error(`breaker of ${peer} did not become ${state} within 5 s (it is ${reg.breakerState(peer)})`))
      }, 5_000)
      const listener = (p: string, stats: PeerStats): void => {
        if (p !== peer || stats.breaker !== state) return
        clearTimeout(timer)
        changes.off('change', listener)
        resolve()
      }
      changes.on('change', listener)
    })
  }
  return { reg, store, until }
}

/** `times` calls that fail with a fresh copy of `make()`; each must come back as that very error. */
async function fail (reg: PeerRegistry, peer: string, times: number, make: () => unknown = () => new ReachError('RL-4002')): Promise<void> {
  for (let i = 0; i < times; i++) {
    const err = make()
    await expect(reg.call(peer, async () => { throw err })).rejects.toBe(err)
  }
}

async function succeed (reg: PeerRegistry, peer: string, times: number): Promise<void> {
  for (let i = 0; i < times; i++) expect(await reg.call(peer, async () => i)).toBe(i)
}

function stats (reg: PeerRegistry, peer: string): PeerStats {
  const s = reg.list().find((x) => x.peer === peer)
  if (s === undefined) throw new Error(`${peer} not listed`)
  return s
}

function peers (reg: PeerRegistry): string[] {
  return reg.list().map((s) => s.peer)
}

describe('call() and the breaker', () => {
  it('given failures up to the volume threshold, then the breaker opens and call() fails fast with RL-4003', async () => {
    const { reg } = await open()
    await fail(reg, 'p', 2)
    expect(reg.breakerState('p')).toBe('closed')
    await fail(reg, 'p', 1)
    expect(reg.breakerState('p')).toBe('open')

    let called = 0
    expect(await code(reg.call('p', async () => { called++ }))).toBe('RL-4003')
    expect(called).toBe(0)
    expect(stats(reg, 'p')).toMatchObject({ failures: 3, successes: 0, breaker: 'open', last_failure: { code: 'RL-4002' } })
  })

  it('after resetTimeout the peer is half-open and selectable; a successful probe closes the breaker', async () => {
    const { reg, until } = await open()
    await fail(reg, 'p', 3)
    expect(reg.select(['p'])).toEqual([])
    await until('p', 'half-open')
    expect(reg.select(['p'])).toEqual(['p'])
    expect(await reg.call('p', async () => 'ok')).toBe('ok')
    expect(reg.breakerState('p')).toBe('closed')
    expect(stats(reg, 'p').successes).toBe(1)
  })

  it('a failed probe re-opens the breaker, and it goes half-open again after resetTimeout', async () => {
    const { reg, until } = await open()
    await fail(reg, 'p', 3)
    await until('p', 'half-open')
    await fail(reg, 'p', 1)
    expect(reg.breakerState('p')).toBe('open')
    expect(reg.select(['p'])).toEqual([])
    expect(await code(reg.call('p', async () => 'never'))).toBe('RL-4003')
    await until('p', 'half-open')
    expect(reg.select(['p'])).toEqual(['p'])
  })

  it('a policy refusal answering the half-open probe closes the breaker (the peer is up) without counting', async () => {
    const { reg, until } = await open()
    await fail(reg, 'p', 3)
    await until('p', 'half-open')
    await fail(reg, 'p', 1, () => new ReachError('RL-3009'))
    expect(reg.breakerState('p')).toBe('closed')
    expect(stats(reg, 'p')).toMatchObject({ failures: 3, successes: 0 })
  })

  it('a half-open peer lets one probe through at a time', async () => {
    const { reg, until } = await open()
    await fail(reg, 'p', 3)
    await until('p', 'half-open')
    const probe = heldAnswer()
    const inFlight = reg.call('p', async () => await probe.promise)
    expect(reg.breakerState('p')).toBe('half-open')
    expect(reg.select(['p', 'q'])).toEqual(['q'])
    let called = 0
    expect(await code(reg.call('p', async () => { called++ }))).toBe('RL-4003')
    expect(called).toBe(0)
    probe.resolve('done')
    expect(await inFlight).toBe('done')
    expect(reg.breakerState('p')).toBe('closed')
  })

  const counted: Array<[string, () => unknown]> = [
    ...(['RL-4002', 'RL-4007', 'RL-4008', 'RL-4010', 'RL-4011', 'RL-4014'] as const).map((c): [string, () => unknown] => [c, () => new ReachError(c)]),
    ['a plain Error', () => new Error('socket hang up')],
    ['a timeout', () => Object.assign(new Error('Timed out'), { code: 'ETIMEDOUT' })]
  ]
  it.each(counted)('%s counts as a failure and opens the breaker', async (_, make) => {
    const { reg } = await open()
    await fail(reg, 'p', 3, make)
    expect(reg.breakerState('p')).toBe('open')
    expect(stats(reg, 'p').failures).toBe(3)
  })

  const refusals: ErrorCode[] = ['RL-3009', 'RL-3012', 'RL-3101', 'RL-4004', 'RL-4005', 'RL-4009', 'RL-4012', 'RL-4017']
  it.each(refusals)('policy refusal %s is rethrown unchanged and never opens the breaker', async (refusal) => {
    const { reg } = await open()
    await fail(reg, 'p', 10, () => new ReachError(refusal, { details: { why: 'policy' } }))
    expect(reg.breakerState('p')).toBe('closed')
    expect(stats(reg, 'p')).toMatchObject({ failures: 0, successes: 0, last_failure: null })
    expect(await reg.call('p', async () => 'still served')).toBe('still served')
  })

  it('negative control: the same opossum settings without the errorFilter open on policy refusals', async () => {
    const raw = new CircuitBreaker(async (thunk: () => Promise<unknown>) => await thunk(), {
      timeout: false,
      resetTimeout: BREAKER.resetTimeoutMs,
      volumeThreshold: BREAKER.volumeThreshold,
      errorThresholdPercentage: BREAKER.errorThresholdPercentage,
      rollingCountTimeout: BREAKER.rollingCountTimeoutMs,
      allowWarmUp: false
    })
    try {
      for (let i = 0; i < 3; i++) await expect(raw.fire(async () => { throw new ReachError('RL-4005') })).rejects.toThrow()
      expect(raw.opened).toBe(true)
    } finally {
      raw.shutdown()
    }

    const { reg } = await open()
    await fail(reg, 'p', 3, () => new ReachError('RL-4005'))
    expect(reg.breakerState('p')).toBe('closed')
  })

  it('records latency of successes as an EWMA with alpha 0.3, and failures do not move it', async () => {
    let t = 1_000
    const { reg } = await open({ clock: { now: () => t } })
    await reg.call('p', async () => { t += 100 })
    expect(stats(reg, 'p').latency_ewma_ms).toBe(100)
    await reg.call('p', async () => { t += 200 })
    expect(stats(reg, 'p').latency_ewma_ms).toBeCloseTo(0.3 * 200 + 0.7 * 100, 9)
    await expect(reg.call('p', async () => { t += 5_000; throw new ReachError('RL-4008') })).rejects.toMatchObject({ code: 'RL-4008' })
    expect(stats(reg, 'p')).toMatchObject({ successes: 2, failures: 1, last_success: 1_300, last_failure: { at: 6_300, code: 'RL-4008' } })
    expect(stats(reg, 'p').latency_ewma_ms).toBeCloseTo(130, 9)
  })

  it('stop() shuts the breakers down: an open breaker of a stopped registry never goes half-open', async () => {
    const seen: BreakerState[] = []
    const stopped = await open({ onChange: (_, s) => seen.push(s.breaker) })
    const control = await open()
    await fail(stopped.reg, 'p', 3)
    await fail(control.reg, 'p', 3)
    await stopped.reg.stop()
    // Both reset timers have the same length and the stopped registry's started first,
    // so it would have fired by the time the control's does.
    await control.until('p', 'half-open')
    expect(seen).toEqual(['closed', 'closed', 'open'])
  })

  it('after stop() call() refuses with RL-5007 and stop() is idempotent', async () => {
    const { reg } = await open()
    await reg.stop()
    await reg.stop()
    let called = 0
    expect(await code(reg.call('p', async () => { called++ }))).toBe('RL-5007')
    expect(called).toBe(0)
  })

  it('stop() waits for calls under way and saves their outcome', async () => {
    const { reg, store } = await open()
    const answer = heldAnswer()
    const inFlight = reg.call('p', async () => await answer.promise)
    const order: string[] = []
    const stopping = reg.stop().then(() => { order.push('stopped') })
    // A call that starts now is refused; the one under way is not cut short.
    expect(await code(reg.call('q', async () => 'late'))).toBe('RL-5007')
    answer.resolve('done')
    expect(await inFlight).toBe('done')
    order.push('call returned')
    await stopping
    expect(order).toEqual(['call returned', 'stopped'])
    expect(JSON.parse(store.text ?? '{}').peers.p.successes).toBe(1)
  })
})

describe('a bounded peer table', () => {
  it('given fresh peer ids far past the cap, then the table never holds more than the cap, keeping the newest', async () => {
    let t = 0
    const { reg } = await open({ maxPeers: 8, clock: { now: () => ++t } })
    for (let i = 0; i < 100; i++) {
      reg.recordPing(`fresh-${String(i).padStart(3, '0')}`, 5)
      expect(reg.list().length).toBe(Math.min(i + 1, 8))
    }
    expect(peers(reg)).toEqual(Array.from({ length: 8 }, (_, i) => `fresh-${String(92 + i).padStart(3, '0')}`))
  })

  it('forgets peers with no record first, then the least recently seen, and a peer caught cheating last', async () => {
    let t = 0
    const evicted: string[] = []
    const { reg } = await open({ maxPeers: 4, clock: { now: () => ++t }, onEvict: (peer) => evicted.push(peer) })
    reg.recordVerificationFailure('cheat') // seen first of all
    await succeed(reg, 'old', 1)
    await succeed(reg, 'recent', 1)
    reg.recordPing('stranger', 5) // seen most recently, but has no record
    reg.recordPing('newcomer', 5)
    expect(evicted).toEqual(['stranger'])
    reg.recordPing('another', 5)
    expect(evicted).toEqual(['stranger', 'newcomer'])
    await succeed(reg, 'third', 1)
    expect(evicted).toEqual(['stranger', 'newcomer', 'another'])
    // Only peers with a record left: the least recently seen without verification failures
    // goes, never the cheat, though it was seen before all of them.
    await succeed(reg, 'fourth', 1)
    await succeed(reg, 'fifth', 1)
    expect(evicted).toEqual(['stranger', 'newcomer', 'another', 'old', 'recent'])
    expect(peers(reg)).toEqual(['cheat', 'fifth', 'fourth', 'third'])
    expect(stats(reg, 'cheat').verification_failures).toBe(1)
  })

  it('never forgets a connected peer or one with a call under way, and shrinks back once they are not', async () => {
    let t = 0
    const { reg } = await open({ maxPeers: 2, clock: { now: () => ++t } })
    const answer = heldAnswer()
    const inFlight = reg.call('busy', async () => await answer.promise)
    reg.connected('linked', true)
    for (let i = 0; i < 20; i++) reg.recordPing(`fresh-${i}`, 5)
    expect(peers(reg)).toEqual(['busy', 'fresh-19', 'linked'])

    answer.resolve('done')
    expect(await inFlight).toBe('done')
    reg.connected('linked', false)
    reg.recordPing('last', 5)
    // The peers without a record (`linked` among them) went; `busy` has one.
    expect(peers(reg)).toEqual(['busy', 'last'])
  })

  it('keeps a tripped breaker past the cap, up to twice it; there it is forgotten and its breaker shut down', async () => {
    const evicted: string[] = []
    const seen: Array<[string, BreakerState]> = []
    const shutdown = vi.spyOn(CircuitBreaker.prototype, 'shutdown')
    let t = 0
    const { reg } = await open({ maxPeers: 1, clock: { now: () => ++t }, onEvict: (peer) => evicted.push(peer), onChange: (peer, s) => seen.push([peer, s.breaker]) })
    const control = await open()
    await fail(reg, 'down', 3)
    await fail(control.reg, 'down', 3)
    expect(reg.breakerState('down')).toBe('open')
    reg.recordPing('fresh', 5)
    expect(peers(reg)).toEqual(['down', 'fresh']) // over the cap of 1, under twice it
    reg.connected('linked', true)
    expect(evicted).toEqual(['fresh'])
    expect(peers(reg)).toEqual(['down', 'linked'])
    // The table is at twice its cap with nothing else to forget: the tripped breaker goes.
    reg.recordPing('newest', 5)
    expect(evicted).toEqual(['fresh', 'down'])
    expect(peers(reg)).toEqual(['linked', 'newest'])
    expect(reg.breakerState('down')).toBe('closed') // forgotten: a fresh start if it comes back
    const shut = shutdown.mock.contexts.filter((b) => (b as CircuitBreaker).name === 'down')
    expect(shut).toHaveLength(1)
    expect((shut[0] as CircuitBreaker).isShutdown).toBe(true)
    // The control's reset timer started after the forgotten one's: had that one leaked, it
    // would have reported half-open by now.
    await control.until('down', 'half-open')
    expect(seen.filter(([peer]) => peer === 'down').map(([, b]) => b)).toEqual(['closed', 'closed', 'open'])
  })

  it('shuts down the breaker of every peer it forgets', async () => {
    const shutdown = vi.spyOn(CircuitBreaker.prototype, 'shutdown')
    const evicted: string[] = []
    let t = 0
    const { reg } = await open({ maxPeers: 2, clock: { now: () => ++t }, onEvict: (peer) => evicted.push(peer) })
    // Refusals leave no record, but each call made the peer a breaker.
    for (let i = 0; i < 6; i++) await fail(reg, `refuser-${i}`, 1, () => new ReachError('RL-3009'))
    expect(evicted).toEqual(['refuser-0', 'refuser-1', 'refuser-2', 'refuser-3'])
    const names = shutdown.mock.contexts.map((b) => (b as CircuitBreaker).name)
    expect(names).toEqual(evicted)
    expect(shutdown.mock.contexts.every((b) => (b as CircuitBreaker).isShutdown)).toBe(true)
  })

  it('given a saved file with more peers than the cap, then it opens with the most useful ones', async () => {
    const entry = (at: number, verification = 0): unknown => ({ successes: 1, failures: 0, verification_failures: verification, latency_ewma_ms: 5, last_success: at, last_failure: null })
    const text = JSON.stringify({ version: 1, peers: { a: entry(1, 1), b: entry(2), c: entry(3), d: entry(4) } })
    const { reg } = await open({ maxPeers: 2 }, memoryStore(text))
    expect(peers(reg)).toEqual(['a', 'd'])
  })

  it('refuses a cap that is not a positive integer (RL-1011)', async () => {
    for (const maxPeers of [0, -1, 1.5, Number.NaN]) {
      expect(await code(PeerRegistry.open(memoryStore(), { maxPeers }))).toBe('RL-1011')
    }
  })
})

describe('score and select()', () => {
  it('orders by score, breaks ties by peer id, and leaves out open, excluded and duplicate peers', async () => {
    const { reg } = await open()
    await succeed(reg, 'good', 2)
    await fail(reg, 'flaky', 2)
    await fail(reg, 'down', 3)
    expect(reg.breakerState('down')).toBe('open')
    expect(reg.breakerState('flaky')).toBe('closed')
    const picked = reg.select(['flaky', 'down', 'new-b', 'good', 'skip', 'new-a', 'good'], new Set(['skip']))
    expect(picked).toEqual(['good', 'new-a', 'new-b', 'flaky'])
  })

  it('a connection is a bonus and a failed last ping a penalty, cleared by the next good ping', async () => {
    const { reg } = await open()
    reg.connected('c', true)
    reg.recordPing('a', null)
    reg.recordPing('b', 20)
    expect(reg.select(['a', 'b', 'c'])).toEqual(['c', 'b', 'a'])
    reg.recordPing('a', 15)
    expect(reg.select(['a', 'b', 'c'])).toEqual(['c', 'a', 'b'])
    reg.connected('c', false)
    expect(reg.select(['a', 'b', 'c'])).toEqual(['a', 'b', 'c'])
  })

  it('latency only breaks near-ties: a faster peer wins a tie but not against a better record', async () => {
    let t = 0
    const { reg } = await open({ clock: { now: () => t } })
    await reg.call('fast', async () => { t += 10 })
    await reg.call('slow', async () => { t += 2_000 })
    expect(reg.select(['slow', 'fast'])).toEqual(['fast', 'slow'])
    await reg.call('slow', async () => { t += 2_000 })
    expect(reg.select(['slow', 'fast'])).toEqual(['slow', 'fast'])
  })

  it('one verification failure sinks a peer below one with several ordinary failures, and below a stranger', async () => {
    const { reg } = await open()
    await succeed(reg, 'cheat', 5)
    await succeed(reg, 'shaky', 5)
    await fail(reg, 'shaky', 3)
    expect(reg.breakerState('shaky')).toBe('closed')
    expect(reg.select(['shaky', 'cheat'])).toEqual(['cheat', 'shaky'])
    reg.recordVerificationFailure('cheat')
    expect(reg.select(['shaky', 'cheat', 'stranger'])).toEqual(['shaky', 'stranger', 'cheat'])
    expect(reg.score('cheat')).toBeLessThan(reg.score('shaky'))
  })

  it('follows the documented formula', () => {
    const base = { successes: 0, failures: 0, verification_failures: 0, latency_ewma_ms: null, last_success: null, last_failure: null, last_ping: null, connected: false }
    expect(peerScore(base)).toBe(0.5)
    expect(peerScore({ ...base, successes: 3, failures: 1, latency_ewma_ms: 1_000, connected: true })).toBeCloseTo(4 / 6 - 0.05 + 0.05, 12)
    expect(peerScore({ ...base, successes: 5, verification_failures: 1 })).toBeCloseTo(6 / 17, 12)
    expect(peerScore({ ...base, last_ping: { at: 1, rtt_ms: null } })).toBeCloseTo(0.3, 12)
  })

  it('reports every change through onChange, with the new stats', async () => {
    const seen: Array<[string, number, BreakerState]> = []
    const { reg, until } = await open({ onChange: (peer, s) => seen.push([peer, s.failures, s.breaker]) })
    await fail(reg, 'p', 3)
    expect(seen).toEqual([['p', 1, 'closed'], ['p', 2, 'closed'], ['p', 3, 'open']])
    await until('p', 'half-open')
    await reg.call('p', async () => 'ok')
    expect(seen.slice(3)).toEqual([['p', 3, 'half-open'], ['p', 3, 'closed']])
  })
})

describe('persistence', () => {
  it('reputation survives stop() and open(); breakers, connections and pings start fresh', async () => {
    let t = 10_000
    const first = await open({ clock: { now: () => t } })
    await fail(first.reg, 'p', 3)
    expect(first.reg.breakerState('p')).toBe('open')
    await first.reg.call('q', async () => { t += 40 })
    first.reg.recordVerificationFailure('q')
    first.reg.connected('q', true)
    first.reg.recordPing('q', null)
    first.reg.connected('seen-only', true)
    const before = first.reg.list()
    await first.reg.stop()

    const file = JSON.parse(first.store.text ?? '{}')
    expect(file.version).toBe(1)
    expect(Object.keys(file.peers)).toEqual(['p', 'q'])
    expect(file.peers.q).toEqual({ successes: 1, failures: 0, verification_failures: 1, latency_ewma_ms: 40, last_success: 10_040, last_failure: null })
    expect(first.store.text?.endsWith('}\n')).toBe(true)

    const second = await open({}, first.store)
    const reputation = ({ peer, successes, failures, verification_failures, latency_ewma_ms, last_success, last_failure }: PeerStats): unknown =>
      ({ peer, successes, failures, verification_failures, latency_ewma_ms, last_success, last_failure })
    expect(second.reg.list().map(reputation)).toEqual(before.filter((s) => s.peer !== 'seen-only').map(reputation))
    expect(second.reg.breakerState('p')).toBe('closed')
    expect(second.reg.select(['p'])).toEqual(['p'])
    expect(stats(second.reg, 'q')).toMatchObject({ connected: false, last_ping: null })
  })

  it('save() writes only when something changed', async () => {
    const { reg, store } = await open()
    reg.connected('p', true)
    await reg.save()
    expect(store.writes).toEqual([])
    await succeed(reg, 'p', 1)
    await reg.save()
    await reg.save()
    expect(store.writes).toHaveLength(1)
    expect(JSON.parse(store.text ?? '{}').peers.p.successes).toBe(1)
  })

  it('a failed write is passed on and the next save() tries again', async () => {
    const store = memoryStore()
    const refusal = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
    let refuse = true
    const flaky: PeerStore = { read: store.read, write: async (t) => { if (refuse) throw refusal; await store.write(t) } }
    const reg = await PeerRegistry.open(flaky, { breaker: BREAKER })
    registries.push(reg)
    await succeed(reg, 'p', 1)
    await expect(reg.save()).rejects.toBe(refusal)
    refuse = false
    await reg.save()
    expect(JSON.parse(store.text ?? '{}').peers.p.successes).toBe(1)
  })

  it('nothing saved is an empty registry', async () => {
    const { reg } = await open()
    expect(reg.list()).toEqual([])
    expect(reg.score('anyone')).toBe(0.5)
  })

  it('a store that cannot read fails open() with its own error', async () => {
    const unreadable = new ReachError('RL-1004', { message: 'cannot read peer registry' })
    await expect(PeerRegistry.open({ read: async () => { throw unreadable }, write: async () => {} })).rejects.toBe(unreadable)
  })

  const entry = { successes: 1, failures: 0, verification_failures: 0, latency_ewma_ms: 5, last_success: 1, last_failure: null }
  const malformed: Array<[string, string]> = [
    ['not JSON', '{"version":1,'],
    ['an array', '[]'],
    ['an unknown version', JSON.stringify({ version: 2, peers: {} })],
    ['no peers', JSON.stringify({ version: 1 })],
    ['a negative count', JSON.stringify({ version: 1, peers: { p: { ...entry, failures: -1 } } })],
    ['a fractional count', JSON.stringify({ version: 1, peers: { p: { ...entry, successes: 1.5 } } })],
    ['a missing field', JSON.stringify({ version: 1, peers: { p: { ...entry, verification_failures: undefined } } })],
    ['a string latency', JSON.stringify({ version: 1, peers: { p: { ...entry, latency_ewma_ms: '5' } } })],
    ['a bad last_failure', JSON.stringify({ version: 1, peers: { p: { ...entry, last_failure: { at: 1 } } } })],
    ['an entry that is not an object', JSON.stringify({ version: 1, peers: { p: 3 } })],
    ['an empty peer id', JSON.stringify({ version: 1, peers: { '': entry } })]
  ]
  it.each(malformed)('a text with %s is RL-1012 naming the store', async (_, text) => {
    const err = await PeerRegistry.open(memoryStore(text, '/data/peers.json')).catch((e: unknown) => e)
    expect(isReachError(err, 'RL-1012')).toBe(true)
    expect((err as ReachError).message).toContain('peer registry /data/peers.json is malformed')
  })

  it('a store without a name is RL-1012 all the same', async () => {
    const err = await PeerRegistry.open(memoryStore('[]')).catch((e: unknown) => e)
    expect(isReachError(err, 'RL-1012')).toBe(true)
    expect((err as ReachError).message).toBe('peer registry is malformed: not a JSON object')
  })

  it('the text the registry writes opens again (control for the malformed cases)', async () => {
    const { reg } = await open({}, memoryStore(JSON.stringify({ version: 1, peers: { p: entry } })))
    expect(stats(reg, 'p')).toMatchObject(entry)
  })
})
