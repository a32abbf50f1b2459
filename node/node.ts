/**
 * A node's local services, without the network: data dir, identity, policy,
 * trust registry, pack store, runs and the kv store behind the kv tools.
 *
 * The CLI's offline commands open one per command; the daemon opens one for
 * its whole life and shares it between the control API and the federation
 * protocols, so a run started by a peer and one started by the operator go
 * through the same admission and the same run loop.
 */
import { stat } from 'node:fs/promises'
import type { JsonValue } from '../protocol/canonical.ts'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { generateKeyPair, keyPairFromSeed } from '../protocol/keys.ts'
import type { JsonObject } from '../protocol/canonical.ts'
import { buildBundle, type Pack } from '../packs/bundle.ts'
import { ENGINE_VERSION, type Budget } from '../packs/manifest.ts'
import { admitPack, checkBudget, loadPolicy, policyVersion, type Admission, type NodePolicy } from '../packs/policy.ts'
import { RunThreads, runPackOf, type Engine, type RunOutcome } from '../packs/run/index.ts'
import { SandboxPool, engineBuild, type SandboxPoolInit } from '../packs/sandbox.ts'
import { hostTools, type Tool } from '../packs/tools/index.ts'
import { ensureHome, homePaths, type HomePaths } from './home.ts'
import { readKeyFile, writeKeyFile } from './keys.ts'
import { openKv, type KvStore } from './kv.ts'
import { openPackStore, type PackStore, type StoredPack } from './pack-store.ts'
import { RunStore, type RunRecord, type RunSeal } from './runs.ts'
import { openTrustRegistry } from './trust-registry.ts'

/** The node identity key, created on first use (0600). */

/** Admission refusals that only say nobody here vouches for the pack: a replay, which calls no tool, needs no voucher. */
const VERIFY_ONLY: ReadonlySet<string> = new Set(['RL-3005', 'RL-3006', 'RL-3007', 'RL-3009'])
export async function nodeSeed (home: HomePaths): Promise<Uint8Array> {
  try {
    return (await readKeyFile(home.nodeKey)).seed
  } catch (err) {
    if (!isReachError(err, 'RL-1004')) throw err
    const pair = generateKeyPair()
    await writeKeyFile(home.nodeKey, pair, 'node')
    return pair.seed
  }
}

export { runPackOf }

async function isDirectory (path: string): Promise<boolean> {
  return await stat(path).then((s) => s.isDirectory(), () => false)
}

export interface RunRequest {
  pack: Pack
  input: JsonValue
  budget?: Partial<Budget>
  signal?: AbortSignal
  /** Tools beyond the host's own (the daemon adds `reach.delegate`). */
  extraTools?: readonly Tool[]
  /** Where the run sits in a delegation chain: recorded, and handed back to `resumeUnfinished`. */
  lineage?: JsonObject
}

export type RunResult = RunSeal & { outcome: RunOutcome }

export class LocalNode {
  readonly home: HomePaths
  readonly policy: NodePolicy
  readonly packs: PackStore
  readonly runs: RunStore
  readonly seed: Uint8Array
  readonly publicKey: string
  /** This node's sandboxes (nothing is shared with another node in the process). */
  readonly sandboxes: SandboxPool
  /** The engine runs are made and replayed with: version, build, and this node's sandboxes. */
  readonly engine: Engine
  /** Held open for the node's life when `keepKv` (the daemon); opened per run otherwise. */
  private kv: KvStore | undefined

  /** The worker threads runs go to, when the node runs them off its event loop (the daemon). */
  private readonly threads: RunThreads | undefined

  private constructor (home: HomePaths, policy: NodePolicy, seed: Uint8Array, spareRuns: number, sandboxes: SandboxPool, build: Engine['build'], threads: boolean) {
    this.home = home
    this.policy = policy
    this.packs = openPackStore(home.packs)
    this.seed = seed
    this.publicKey = keyPairFromSeed(seed).publicKey
    this.runs = new RunStore(home, seed, { spares: spareRuns })
    this.sandboxes = sandboxes
    this.threads = threads ? new RunThreads({ version: ENGINE_VERSION, build }, { size: policy.run_threads }) : undefined
    this.engine = { version: ENGINE_VERSION, build, sandboxes, ...(this.threads === undefined ? {} : { threads: this.threads }) }
  }

  /**
   * `keepKv`: hold the kv store open (the daemon; otherwise it is opened per run).
   * `spareRuns`: run logs to keep open ahead of time (the daemon: a run then starts without
   * waiting for LevelDB to create its log).
   */
  static async open (options: { home?: HomePaths, keepKv?: boolean, spareRuns?: number, sandboxes?: SandboxPoolInit, threads?: boolean } = {}): Promise<LocalNode> {
    const home = await ensureHome(options.home ?? homePaths())
    const node = new LocalNode(home, await loadPolicy(home.policy), await nodeSeed(home), options.spareRuns ?? 0, new SandboxPool(options.sandboxes), await engineBuild(), options.threads === true)
    if (options.keepKv === true) node.kv = await openKv(home.root)
    return node
  }

  async close (): Promise<void> {
    await this.runs.close()
    await this.kv?.close()
    this.kv = undefined
    await this.threads?.close()
    await this.sandboxes.close()
  }

  /** Admit a pack by this node's policy and trust registry; throws the refusal (RL-30xx). */
  async admit (pack: { bundle: Pack['bundle'], cid: string, signatures: readonly unknown[] }): Promise<Admission> {
    const registry = await openTrustRegistry(this.home.trust)
    return admitPack({ bundle: pack.bundle, cid: pack.cid, signatures: pack.signatures, registry, policy: this.policy })
  }

  /** A pack by directory (built, admitted, then stored) or by CID / name from the store, admitted by policy. */
  async admitted (ref: string): Promise<StoredPack> {
    if (await isDirectory(ref)) {
      // Admitted before it is stored: nothing rejected is kept. A folder
      // carries no signatures, so only the legacy override runs it unsigned.
      const built = await buildBundle(ref)
      const signatures = await this.packs.has(built.cid) ? (await this.packs.get(built.cid)).signatures : []
      await this.admit({ bundle: built.bundle, cid: built.cid, signatures })
      return await this.packs.put(built.bytes, signatures)
    }
    const stored = await this.packs.get(ref)
    await this.admit(stored)
    return stored
  }

  private async withKv<T> (body: (kv: KvStore) => Promise<T>): Promise<T> {
    if (this.kv !== undefined) return await body(this.kv)
    const kv = await openKv(this.home.root)
    try {
      return await body(kv)
    } finally {
      await kv.close()
    }
  }

  /**
   * Store a run exported elsewhere (`reach export`), once all of it verifies: every block, the
   * pack against this node's policy and trust registry (a replay runs its code here), the chain,
   * the checkpoint and the record. RL-1008 when the run is already here.
   */
  async importArchive (bytes: Uint8Array): Promise<{ record: RunRecord, events: number, pack_name: string, pack_trusted: boolean }> {
    const { readRunArchive } = await import('./run-archive.ts')
    const a = await readRunArchive(bytes)
    // Importing is for replaying (verifying), never for running: with verify_untrusted_packs a
    // pack nobody here trusts (unsigned, unknown or revoked publisher, capabilities not granted)
    // comes in to be replayed, and is still refused by policy when a run asks for it.
    let trusted = true
    try {
      await this.admit({ bundle: a.pack.bundle, cid: a.pack.cid, signatures: a.signatures })
    } catch (err) {
      if (!this.policy.verify_untrusted_packs || !isReachError(err) || !VERIFY_ONLY.has(err.code)) throw err
      trusted = false
    }
    if (await this.runs.has(a.record.run_id)) throw new ReachError('RL-1008', { message: `run ${a.record.run_id} is already in this data dir` })
    await this.packs.put(a.pack.bytes, a.signatures)
    await this.runs.importRun(a.record.run_id, a.events, a.record, a.checkpointText)
    return { record: a.record, events: a.events.length, pack_name: a.pack.bundle.manifest.name, pack_trusted: trusted }
  }

  /** Run an admitted pack to its end (the budget is checked against the policy first: RL-3010). */
  async runPack (request: RunRequest): Promise<RunResult> {
    const { pack } = request
    const budget = { ...pack.bundle.manifest.budget, ...request.budget }
    checkBudget(budget, this.policy)
    return await this.withKv(async (kv) => {
      const tools = hostTools({ kv, httpAllowlist: this.policy.http_allowlist ?? [] })
      for (const tool of request.extraTools ?? []) tools.set(tool.capability, tool)
      return await this.runs.start({
        pack: runPackOf(pack),
        input: request.input,
        budget,
        policy: { version: policyVersion(this.policy), granted: this.policy.granted_capabilities },
        engine: this.engine,
        tools,
        ...(request.signal === undefined ? {} : { signal: request.signal }),
        ...(request.lineage === undefined ? {} : { lineage: request.lineage })
      })
    })
  }

  /**
   * Finish every run a killed process left open: recorded tool results are
   * fed back, never fetched again; a call with no recorded result runs again
   * only if its tool is idempotent. A run gets the tools a new run with its
   * recorded lineage gets (`toolsFor`), and the signal that cuts it
   * (`signalFor`: a delegated run's deadline).
   */
  async resumeUnfinished (options: { toolsFor?: (lineage: JsonObject | undefined) => readonly Tool[], signalFor?: (lineage: JsonObject | undefined) => AbortSignal | undefined, onError?: (runId: string, err: unknown) => void } = {}): Promise<RunRecord[]> {
    const done: RunRecord[] = []
    const pending = await this.runs.unfinished()
    if (pending.length === 0) return done
    await this.withKv(async (kv) => {
      for (const r of pending) {
        const tools = (lineage: JsonObject | undefined): Map<string, Tool> => {
          const all = hostTools({ kv, httpAllowlist: this.policy.http_allowlist ?? [] })
          for (const tool of options.toolsFor?.(lineage) ?? []) all.set(tool.capability, tool)
          return all
        }
        try {
          const pack = await this.packs.get(r.artifact_hash)
          done.push((await this.runs.resume(r.run_id, runPackOf(pack), this.engine, { version: policyVersion(this.policy), granted: this.policy.granted_capabilities }, tools, options.signalFor)).record)
        } catch (err) {
          // A run that cannot be resumed (its pack gone, its record foreign) must not keep the
          // others, or the node, from going on: the caller says so, or the error stands.
          if (options.onError === undefined) throw err
          options.onError(r.run_id, err)
        }
      }
    })
    return done
  }
}
