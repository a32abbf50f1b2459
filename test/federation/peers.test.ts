import { EventEmitter } from 'node:events'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import CircuitBreaker from 'opossum'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { PeerRegistry, peerScore, type BreakerState, type PeerRegistryOptions, type PeerStats } from '../../federation/peers.ts'
import { isReachError, ReachError, type ErrorCode } from '../../protocol/errors.ts'
import { code } from '../codes.ts'

const posix = process.platform !== 'win32'
const RESET_MS = 150
const BREAKER = { resetTimeoutMs: RESET_MS, volumeThreshold: 3, errorThresholdPercentage: 50, rollingCountTimeoutMs: 30_000 }

let dir: string
let registries: PeerRegistry[] = []
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'reach-peers-')) })
afterEach(async () => {
  await Promise.all(registries.map(async (r) => await r.close()))
  registries = []
  await rm(dir, { recursive: true, force: true })
})

interface Harness {
  reg: PeerRegistry
  /** Resolves when `peer`'s breaker reaches `state`; fails loudly after 5 s. */
  until: (peer: string, state: BreakerState) => Promise<void>
}

async function open (options: PeerRegistryOptions = {}): Promise<Harness> {
  const changes = new EventEmitter()
  const { onChange, ...rest } = options
  const reg = await PeerRegistry.open(join(dir, 'peers.json'), {
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
  return { reg, until }
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
    const probe = Promise.withResolvers<string>()
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
    const { reg } = await open({ now: () => t })
    await reg.call('p', async () => { t += 100 })
    expect(stats(reg, 'p').latency_ewma_ms).toBe(100)
    await reg.call('p', async () => { t += 200 })
    expect(stats(reg, 'p').latency_ewma_ms).toBeCloseTo(0.3 * 200 + 0.7 * 100, 9)
    await expect(reg.call('p', async () => { t += 5_000; throw new ReachError('RL-4008') })).rejects.toMatchObject({ code: 'RL-4008' })
    expect(stats(reg, 'p')).toMatchObject({ successes: 2, failures: 1, last_success: 1_300, last_failure: { at: 6_300, code: 'RL-4008' } })
    expect(stats(reg, 'p').latency_ewma_ms).toBeCloseTo(130, 9)
  })

  it('close() shuts the breakers down: an open breaker of a closed registry never goes half-open', async () => {
    const seen: BreakerState[] = []
    const closed = await open({ onChange: (_, s) => seen.push(s.breaker) })
    const control = await open()
    await fail(closed.reg, 'p', 3)
    await fail(control.reg, 'p', 3)
    await closed.reg.close()
    // Both reset timers have the same length and the closed registry's started first,
    // so it would have fired by the time the control's does.
    await control.until('p', 'half-open')
    expect(seen).toEqual(['closed', 'closed', 'open'])
  })

  it('after close() call() refuses with RL-5007 and close() is idempotent', async () => {
    const { reg } = await open()
    await reg.close()
    await reg.close()
    let called = 0
    expect(await code(reg.call('p', async () => { called++ }))).toBe('RL-5007')
    expect(called).toBe(0)
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
    const { reg } = await open({ now: () => t })
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
  it('reputation survives close() and open(); breakers, connections and pings start fresh', async () => {
    let t = 10_000
    const first = await open({ now: () => t })
    await fail(first.reg, 'p', 3)
    expect(first.reg.breakerState('p')).toBe('open')
    await first.reg.call('q', async () => { t += 40 })
    first.reg.recordVerificationFailure('q')
    first.reg.connected('q', true)
    first.reg.recordPing('q', null)
    first.reg.connected('seen-only', true)
    const before = first.reg.list()
    await first.reg.close()

    const path = join(dir, 'peers.json')
    const file = JSON.parse(await readFile(path, 'utf8'))
    expect(file.version).toBe(1)
    expect(Object.keys(file.peers)).toEqual(['p', 'q'])
    expect(file.peers.q).toEqual({ successes: 1, failures: 0, verification_failures: 1, latency_ewma_ms: 40, last_success: 10_040, last_failure: null })
    expect(await readdir(dir)).toEqual(['peers.json'])
    if (posix) expect((await stat(path)).mode & 0o777).toBe(0o600)

    const second = await open()
    const reputation = ({ peer, successes, failures, verification_failures, latency_ewma_ms, last_success, last_failure }: PeerStats): unknown =>
      ({ peer, successes, failures, verification_failures, latency_ewma_ms, last_success, last_failure })
    expect(second.reg.list().map(reputation)).toEqual(before.filter((s) => s.peer !== 'seen-only').map(reputation))
    expect(second.reg.breakerState('p')).toBe('closed')
    expect(second.reg.select(['p'])).toEqual(['p'])
    expect(stats(second.reg, 'q')).toMatchObject({ connected: false, last_ping: null })
  })

  it('save() writes only when something changed', async () => {
    const { reg } = await open()
    reg.connected('p', true)
    await reg.save()
    expect(await readdir(dir)).toEqual([])
    await succeed(reg, 'p', 1)
    await reg.save()
    expect(JSON.parse(await readFile(join(dir, 'peers.json'), 'utf8')).peers.p.successes).toBe(1)
  })

  it('a missing file is an empty registry', async () => {
    const { reg } = await open()
    expect(reg.list()).toEqual([])
    expect(reg.score('anyone')).toBe(0.5)
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
    ['an entry that is not an object', JSON.stringify({ version: 1, peers: { p: 3 } })]
  ]
  it.each(malformed)('a file with %s is RL-1012 naming the path', async (_, text) => {
    const path = join(dir, 'peers.json')
    await writeFile(path, text)
    const err = await PeerRegistry.open(path).catch((e: unknown) => e)
    expect(isReachError(err, 'RL-1012')).toBe(true)
    expect((err as ReachError).message).toContain(`peer registry ${path} is malformed`)
  })

  it('the file the registry writes opens again (control for the malformed cases)', async () => {
    const path = join(dir, 'peers.json')
    await writeFile(path, JSON.stringify({ version: 1, peers: { p: entry } }))
    const reg = await PeerRegistry.open(path)
    registries.push(reg)
    expect(stats(reg, 'p')).toMatchObject(entry)
  })
})
