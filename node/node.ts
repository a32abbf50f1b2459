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
import { buildBundle, type Pack } from '../packs/bundle.ts'
import { ENGINE_VERSION, type Budget } from '../packs/manifest.ts'
import { admitPack, checkBudget, loadPolicy, policyVersion, type Admission, type NodePolicy } from '../packs/policy.ts'
import type { RunPack } from '../packs/runner.ts'
import { hostTools, type Tool } from '../packs/tools/index.ts'
import { ensureHome, homePaths, type HomePaths } from './home.ts'
import { readKeyFile, writeKeyFile } from './keys.ts'
import { openKv, type KvStore } from './kv.ts'
import { openPackStore, type PackStore, type StoredPack } from './pack-store.ts'
import { RunStore, type RunRecord, type RunSeal } from './runs.ts'
import type { RunOutcome } from '../packs/runner.ts'
import { openTrustRegistry } from './trust-registry.ts'

/** The node identity key, created on first use (0600). */
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

/** The run loop's view of a pack, made once per pack object (a daemon reuses its verified packs). */
const runPacks = new WeakMap<Pack, RunPack>()

export function runPackOf (pack: Pack): RunPack {
  const known = runPacks.get(pack)
  if (known !== undefined) return known
  const { manifest, files } = pack.bundle
  const made: RunPack = {
    cid: pack.cid,
    name: manifest.name,
    entry: manifest.entry,
    capabilities: manifest.capabilities,
    // Frozen: the sandbox keys a loaded pack by this object's contents, hashed once.
    files: Object.freeze(Object.fromEntries(Object.entries(files).map(([path, bytes]) => [path, Buffer.from(bytes).toString('utf8')])))
  }
  runPacks.set(pack, made)
  return made
}

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
}

export type RunResult = RunSeal & { outcome: RunOutcome }

export class LocalNode {
  readonly home: HomePaths
  readonly policy: NodePolicy
  readonly packs: PackStore
  readonly runs: RunStore
  readonly seed: Uint8Array
  readonly publicKey: string
  /** Held open for the node's life when `keepKv` (the daemon); opened per run otherwise. */
  private kv: KvStore | undefined

  private constructor (home: HomePaths, policy: NodePolicy, seed: Uint8Array, spareRuns: number) {
    this.home = home
    this.policy = policy
    this.packs = openPackStore(home.packs)
    this.seed = seed
    this.publicKey = keyPairFromSeed(seed).publicKey
    this.runs = new RunStore(home, seed, { spares: spareRuns })
  }

  /**
   * `keepKv`: hold the kv store open (the daemon; otherwise it is opened per run).
   * `spareRuns`: run logs to keep open ahead of time (the daemon: a run then starts without
   * waiting for LevelDB to create its log).
   */
  static async open (options: { home?: HomePaths, keepKv?: boolean, spareRuns?: number } = {}): Promise<LocalNode> {
    const home = await ensureHome(options.home ?? homePaths())
    const node = new LocalNode(home, await loadPolicy(home.policy), await nodeSeed(home), options.spareRuns ?? 0)
    if (options.keepKv === true) node.kv = await openKv(home.root)
    return node
  }

  async close (): Promise<void> {
    await this.runs.close()
    await this.kv?.close()
    this.kv = undefined
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
  async importArchive (bytes: Uint8Array): Promise<{ record: RunRecord, events: number, pack_name: string }> {
    const { readRunArchive } = await import('./run-archive.ts')
    const a = await readRunArchive(bytes)
    await this.admit({ bundle: a.pack.bundle, cid: a.pack.cid, signatures: a.signatures })
    if (await this.runs.has(a.record.run_id)) throw new ReachError('RL-1008', { message: `run ${a.record.run_id} is already in this data dir` })
    await this.packs.put(a.pack.bytes, a.signatures)
    await this.runs.importRun(a.record.run_id, a.events, a.record, a.checkpointText)
    return { record: a.record, events: a.events.length, pack_name: a.pack.bundle.manifest.name }
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
        engineVersion: ENGINE_VERSION,
        tools,
        ...(request.signal === undefined ? {} : { signal: request.signal })
      })
    })
  }

  /**
   * Finish every run a killed process left open: recorded tool results are
   * fed back, never fetched again; a call with no recorded result runs again
   * only if its tool is idempotent.
   */
  async resumeUnfinished (extraTools: readonly Tool[] = []): Promise<RunRecord[]> {
    const done: RunRecord[] = []
    const pending = await this.runs.unfinished()
    if (pending.length === 0) return done
    await this.withKv(async (kv) => {
      const tools = hostTools({ kv, httpAllowlist: this.policy.http_allowlist ?? [] })
      for (const tool of extraTools) tools.set(tool.capability, tool)
      for (const r of pending) {
        const pack = await this.packs.get(r.artifact_hash)
        done.push((await this.runs.resume(r.run_id, runPackOf(pack), this.policy.granted_capabilities, tools)).record)
      }
    })
    return done
  }
}
