import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createSigner, generateKeyPair, type Signer } from '../../protocol/keys.ts'
import { encodeBundle, type Pack } from '../../packs/bundle.ts'
import {
  admitPack, DEFAULT_MAX_BUDGET, defaultPolicy, loadPolicy, parsePolicy, policyVersion, type NodePolicy
} from '../../packs/policy.ts'
import { signPack } from '../../packs/trust.ts'
import { openTrustRegistry, type TrustRegistry } from '../../node/trust-registry.ts'
import { code, failure, manifest, tempDir } from './helpers.ts'

const enc = new TextEncoder()

function pack (over: Record<string, unknown> = {}): Pack {
  return encodeBundle(manifest(over), { 'index.js': enc.encode('export function init () {}') })
}

function signer (): Signer {
  return createSigner(generateKeyPair().seed)
}

function sign (p: Pack, s: Signer) {
  return signPack({ cid: p.cid, manifest: p.bundle.manifest }, s)
}

let tmp: { path: string, remove: () => Promise<void> }
let registry: TrustRegistry
const trusted = signer()
const revoked = signer()
const stranger = signer()

beforeEach(async () => {
  tmp = await tempDir('policy')
  registry = await openTrustRegistry(join(tmp.path, 'trust.json'))
  await registry.add(trusted.publicKey, 'trusted publisher')
  await registry.add(revoked.publicKey, 'former publisher')
  await registry.revoke(revoked.publicKey)
})
afterEach(async () => { await tmp.remove() })

function admit (p: Pack, signatures: unknown[], policy: NodePolicy = defaultPolicy()) {
  return admitPack({ bundle: p.bundle, cid: p.cid, signatures, registry, policy })
}

describe('node policy file', () => {
  it('given no file, then the defaults: signatures required, no network', async () => {
    const p = await loadPolicy(join(tmp.path, 'missing.json'))
    expect(p).toEqual(defaultPolicy())
    expect(p.allow_unsigned_legacy).toBe(false)
    expect(p.granted_capabilities).toEqual(['clock.now', 'random.bytes', 'kv.get', 'kv.put'])
    expect(p.granted_capabilities).not.toContain('http.fetch')
    expect(p.max_budget).toEqual(DEFAULT_MAX_BUDGET)
    expect(p.http_allowlist).toEqual([])
  })

  it('keeps an http allowlist of hosts, sorted', () => {
    const p = parsePolicy({ version: 1, http_allowlist: ['localhost:8080', 'api.example.org', '[::1]:9000'] })
    expect(p.http_allowlist).toEqual(['[::1]:9000', 'api.example.org', 'localhost:8080'])
  })

  it('fills missing fields with defaults; policyVersion ignores capability order and tracks changes', async () => {
    const path = join(tmp.path, 'policy.json')
    await writeFile(path, JSON.stringify({ version: 1, granted_capabilities: ['http.fetch', 'clock.now'], max_budget: { wall_ms: 10 } }))
    const p = await loadPolicy(path)
    expect(p.granted_capabilities).toEqual(['clock.now', 'http.fetch'])
    expect(p.max_budget).toEqual({ ...DEFAULT_MAX_BUDGET, wall_ms: 10 })
    expect(p.allow_unsigned_legacy).toBe(false)
    const same = parsePolicy({ version: 1, granted_capabilities: ['clock.now', 'http.fetch'], max_budget: { wall_ms: 10 } })
    expect(policyVersion(same)).toBe(policyVersion(p))
    expect(policyVersion(p)).toMatch(/^[0-9a-f]{64}$/)
    expect(policyVersion(parsePolicy({ version: 1 }))).toBe(policyVersion(defaultPolicy()))
    expect(policyVersion({ ...p, allow_unsigned_legacy: true })).not.toBe(policyVersion(p))
  })

  it('given a malformed policy, then RL-3011 naming the field', async () => {
    const path = join(tmp.path, 'policy.json')
    const cases: Array<[string, string, string | undefined]> = [
      ['not JSON', '{', undefined],
      ['no version', '{}', 'version'],
      ['version 2', '{"version":2}', 'version'],
      ['unknown field', '{"version":1,"allow_everything":true}', 'allow_everything'],
      ['unknown capability', '{"version":1,"granted_capabilities":["fs.write"]}', 'granted_capabilities[0]'],
      ['legacy flag not boolean', '{"version":1,"allow_unsigned_legacy":"yes"}', 'allow_unsigned_legacy'],
      ['budget zero', '{"version":1,"max_budget":{"fuel":0}}', 'max_budget.fuel'],
      ['allowlist entry a URL', '{"version":1,"http_allowlist":["https://example.org/"]}', 'http_allowlist[0]'],
      ['allowlist entry upper-case', '{"version":1,"http_allowlist":["ok.org","Example.org"]}', 'http_allowlist[1]'],
      ['budget unknown field', '{"version":1,"max_budget":{"cpu":1}}', 'max_budget.cpu']
    ]
    for (const [what, text, field] of cases) {
      await writeFile(path, text)
      const err = await failure(() => loadPolicy(path))
      expect(err.code, what).toBe('RL-3011')
      expect(err.details.field, what).toBe(field)
    }
  })
})

describe('admitPack (supply chain)', () => {
  it('given a pack signed by a trusted publisher, then admitted naming it', () => {
    const p = pack()
    expect(admit(p, [sign(p, trusted)])).toEqual({ publisher: trusted.publicKey, legacy_unsigned: false })
  })

  it('given an unsigned pack, then RL-3005 by default, admitted only with the legacy override', async () => {
    const p = pack()
    expect(await code(() => admit(p, []))).toBe('RL-3005')
    expect(admit(p, [], { ...defaultPolicy(), allow_unsigned_legacy: true })).toEqual({ legacy_unsigned: true })
  })

  it('given a signature by an unknown publisher, then RL-3006, even with the legacy override', async () => {
    const p = pack()
    expect(await code(() => admit(p, [sign(p, stranger)]))).toBe('RL-3006')
    expect(await code(() => admit(p, [sign(p, stranger)], { ...defaultPolicy(), allow_unsigned_legacy: true }))).toBe('RL-3006')
  })

  it('given a signature by a revoked key, then RL-3007', async () => {
    const p = pack()
    expect(await code(() => admit(p, [sign(p, revoked)]))).toBe('RL-3007')
    expect(await code(() => admit(p, [sign(p, stranger), sign(p, revoked)]))).toBe('RL-3007')
  })

  it('given a trusted signature moved from another pack, then RL-3008', async () => {
    const mine = pack({ name: 'mine' })
    const theirs = pack({ name: 'theirs' })
    const moved = sign(theirs, trusted)
    expect(admit(theirs, [moved]).publisher).toBe(trusted.publicKey)
    const err = await failure(() => admit(mine, [moved]))
    expect([err.code, err.details.reason]).toEqual(['RL-3008', 'cid'])
    // …and with its cid rewritten to this pack's, the Ed25519 signature fails.
    const rewritten = { ...moved, cid: mine.cid }
    expect(await code(() => admit(mine, [rewritten]))).toBe('RL-3008')
  })

  it('given a valid signature by an untrusted key and none trusted, then RL-3006', async () => {
    const p = pack()
    const err = await failure(() => admit(p, [sign(p, stranger)]))
    expect(err.code).toBe('RL-3006')
    expect(err.details.publishers).toEqual([stranger.publicKey])
  })

  it('given an untrusted and a trusted signature, then admitted by the trusted one', () => {
    const p = pack()
    expect(admit(p, [sign(p, stranger), sign(p, trusted)]).publisher).toBe(trusted.publicKey)
  })

  it('given a trusted signature next to an invalid one, then RL-3008 (every signature offered must verify)', async () => {
    const p = pack()
    const bad = { ...sign(p, stranger), signature: '0'.repeat(128) }
    const err = await failure(() => admit(p, [sign(p, trusted), bad]))
    expect([err.code, err.details.index]).toEqual(['RL-3008', 1])
  })

  it('given a capability the policy does not grant, then RL-3009', async () => {
    const p = pack({ capabilities: ['kv.get', 'http.fetch'] })
    const sigs = [sign(p, trusted)]
    const err = await failure(() => admit(p, sigs))
    expect([err.code, err.details.capability]).toEqual(['RL-3009', 'http.fetch'])
    const granting = { ...defaultPolicy(), granted_capabilities: [...defaultPolicy().granted_capabilities, 'http.fetch' as const] }
    expect(admit(p, sigs, granting).publisher).toBe(trusted.publicKey)
  })

  it('given a default budget over the maximum, then RL-3010 naming the field', async () => {
    const p = pack({ budget: { ...manifest().budget, wall_ms: DEFAULT_MAX_BUDGET.wall_ms + 1 } })
    const err = await failure(() => admit(p, [sign(p, trusted)]))
    expect([err.code, err.details.field]).toEqual(['RL-3010', 'wall_ms'])
    const atMax = pack({ budget: { ...DEFAULT_MAX_BUDGET } })
    expect(admit(atMax, [sign(atMax, trusted)]).publisher).toBe(trusted.publicKey)
  })

  it('given an engine range this node does not satisfy, then RL-3013', async () => {
    const p = pack({ engine: '^2.0.0' })
    expect(await code(() => admit(p, [sign(p, trusted)]))).toBe('RL-3013')
    expect(await code(() => admitPack({ bundle: p.bundle, cid: p.cid, signatures: [sign(p, trusted)], registry, policy: defaultPolicy(), engineVersion: '2.1.0' }))).toBeUndefined()
  })

  it('checks in a fixed order: engine, signatures, capabilities, budget', async () => {
    const everythingWrong = pack({ engine: '>=9', capabilities: ['http.fetch'], budget: { ...manifest().budget, fuel: DEFAULT_MAX_BUDGET.fuel + 1 } })
    expect(await code(() => admit(everythingWrong, []))).toBe('RL-3013')
    const unsignedUngranted = pack({ capabilities: ['http.fetch'], budget: { ...manifest().budget, fuel: DEFAULT_MAX_BUDGET.fuel + 1 } })
    expect(await code(() => admit(unsignedUngranted, []))).toBe('RL-3005')
    expect(await code(() => admit(unsignedUngranted, [sign(unsignedUngranted, stranger)]))).toBe('RL-3006')
    expect(await code(() => admit(unsignedUngranted, [sign(unsignedUngranted, trusted)]))).toBe('RL-3009')
    const overBudget = pack({ budget: { ...manifest().budget, fuel: DEFAULT_MAX_BUDGET.fuel + 1 } })
    expect(await code(() => admit(overBudget, [sign(overBudget, trusted)]))).toBe('RL-3010')
  })
})
