/**
 * Packs a running node hands to runs: from its store or fetched from providers, admitted by its
 * policy and trust registry either way.
 *
 * Every delegation admits its pack. Admission is a function of the pack (fixed by its CID), its
 * signatures, the trust registry and the policy (fixed while the node runs), so the verdict is
 * kept until the signatures or the registry file change (`reach pack sign` and `reach trust add`
 * edit them while the node runs). A stat takes microseconds; through the thread pool it cost a
 * delegation more in waiting than in work.
 */
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { ReachError } from '../protocol/errors.ts'
import { admitPack } from '../packs/policy.ts'
import { isPackCid, type Bundle } from '../packs/bundle.ts'
import type { StoredPack } from '../packs/trust.ts'
import type { LocalNode } from './node.ts'
import { SIGS_SUFFIX } from './pack-store.ts'
import { openTrustRegistry } from './trust-registry.ts'

/** Verdicts kept (a pack each). */
const CACHED_PACKS = 64

export interface PackFetcher {
  fetch (cid: string, options: { signal?: AbortSignal, timeoutMs?: number, admit?: (pack: { bundle: Bundle, cid: string, signatures: readonly unknown[] }) => void }): Promise<{ pack: StoredPack, provider: string | null, tried: Array<{ peer: string, code: string }> }>
}

export type AdmittedPack = StoredPack & { provider?: string | null, tried?: Array<{ peer: string, code: string }> }

function stampOf (path: string): string {
  const s = statSync(path, { throwIfNoEntry: false })
  return s === undefined ? 'missing' : `${s.mtimeMs}:${s.size}`
}

export class AdmittedPacks {
  private readonly local: LocalNode
  private fetcher: PackFetcher | undefined
  private registry: Awaited<ReturnType<typeof openTrustRegistry>> | undefined
  private registryStamp = ''
  private readonly cache = new Map<string, { pack: StoredPack, stamp: string, admittedWith: string }>()

  constructor (local: LocalNode) {
    this.local = local
  }

  /** Where packs not in the store come from (the node's pack exchange, once its host exists). */
  fetchWith (fetcher: PackFetcher): void {
    this.fetcher = fetcher
  }

  /** The trust registry as the file is now (re-read when it changed). */
  async currentRegistry (): Promise<Awaited<ReturnType<typeof openTrustRegistry>>> {
    const stamp = stampOf(this.local.home.trust)
    if (this.registry === undefined || stamp !== this.registryStamp) {
      this.registry = await openTrustRegistry(this.local.home.trust)
      this.registryStamp = stamp
    }
    return this.registry
  }

  /** Throws the policy's refusal (admitPack) with the registry as it is now. */
  async admit (pack: { bundle: Bundle, cid: string, signatures: readonly unknown[] }): Promise<void> {
    admitPack({ ...pack, registry: await this.currentRegistry(), policy: this.local.policy })
  }

  /** The same, synchronously, with the registry last read (for the exchange, which admits before it stores). */
  admitNow (pack: { bundle: Bundle, cid: string, signatures: readonly unknown[] }): void {
    if (this.registry === undefined) throw new Error('AdmittedPacks.admitNow before the registry was read')
    admitPack({ ...pack, registry: this.registry, policy: this.local.policy })
  }

  /**
   * A pack to replay a run of, for verification only (issue 13 §2): with the policy's
   * `verify_untrusted_packs` (the default), its publisher need not be trusted, only its bytes
   * must hash to its CID; without it, the same admission as a run. Never handed to a run: a run
   * goes through `get`, which admits a stored pack again.
   */
  async forReplay (cid: string, signal?: AbortSignal, timeoutMs?: number): Promise<AdmittedPack & { trusted: boolean }> {
    if (!this.local.policy.verify_untrusted_packs) return { ...await this.get(cid, signal, timeoutMs), trusted: true }
    if (!isPackCid(cid)) throw new ReachError('RL-1011', { message: `not a pack CID: ${JSON.stringify(cid.length > 80 ? `${cid.slice(0, 79)}…` : cid)}` })
    const registry = await this.currentRegistry()
    const trusted = (pack: { bundle: Bundle, cid: string, signatures: readonly unknown[] }): boolean => {
      try {
        admitPack({ ...pack, registry, policy: this.local.policy })
        return true
      } catch {
        return false
      }
    }
    if (await this.local.packs.has(cid)) {
      const pack = await this.local.packs.get(cid)
      return { ...pack, trusted: trusted(pack) }
    }
    if (this.fetcher === undefined) return { ...await this.local.packs.get(cid), trusted: false }
    const r = await this.fetcher.fetch(cid, { ...(signal === undefined ? {} : { signal }), ...(timeoutMs === undefined ? {} : { timeoutMs }), admit: () => {} })
    return Object.assign(r.pack, { provider: r.provider, tried: r.tried, trusted: trusted(r.pack) })
  }

  /** A pack from the store, or fetched from providers (verified and admitted before it is stored). */
  async get (cid: string, signal?: AbortSignal, timeoutMs?: number): Promise<AdmittedPack> {
    // Parsed before it becomes a file name: a long non-CID was ENAMETOOLONG from stat (a 500).
    if (!isPackCid(cid)) throw new ReachError('RL-1011', { message: `not a pack CID: ${JSON.stringify(cid.length > 80 ? `${cid.slice(0, 79)}…` : cid)}` })
    const registry = await this.currentRegistry()
    const sigsStamp = stampOf(join(this.local.home.packs, cid + SIGS_SUFFIX))
    const cached = this.cache.get(cid)
    if (cached !== undefined && cached.stamp === sigsStamp) {
      if (cached.admittedWith !== this.registryStamp) {
        admitPack({ ...cached.pack, registry, policy: this.local.policy })
        cached.admittedWith = this.registryStamp
      }
      return cached.pack
    }
    if (await this.local.packs.has(cid)) {
      const pack = await this.local.packs.get(cid)
      admitPack({ ...pack, registry, policy: this.local.policy })
      if (this.cache.size >= CACHED_PACKS) this.cache.delete(this.cache.keys().next().value as string)
      this.cache.set(cid, { pack, stamp: sigsStamp, admittedWith: this.registryStamp })
      return pack
    }
    if (this.fetcher === undefined) return await this.local.packs.get(cid)
    const r = await this.fetcher.fetch(cid, { ...(signal === undefined ? {} : { signal }), ...(timeoutMs === undefined ? {} : { timeoutMs }) })
    return Object.assign(r.pack, { provider: r.provider, tried: r.tried })
  }
}
