/**
 * Runs: `reach run`, `reach runs list`, `reach replay <run-id>`,
 * `reach verify-determinism`, `reach explain-failure`, `reach demo`,
 * `reach data-dir`.
 */
import { readFile, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { JsonObject, JsonValue } from '../../../protocol/canonical.ts'
import { ReachError, isReachError } from '../../../protocol/errors.ts'
import type { Event } from '../../../protocol/event.ts'
import { generateKeyPair, createSigner } from '../../../protocol/keys.ts'
import { buildBundle, type Pack } from '../../../packs/bundle.ts'
import type { Budget } from '../../../packs/manifest.ts'
import { admitPack, loadPolicy, policyVersion } from '../../../packs/policy.ts'
import { signPack } from '../../../packs/trust.ts'
import { openTrustRegistry } from '../../trust-registry.ts'
import { ensureHome, homePaths, homeProblems } from '../../home.ts'
import { writeFileAtomic } from '../../fs.ts'
import { readKeyFile, writeKeyFile } from '../../keys.ts'
import { openPackStore } from '../../pack-store.ts'
import { LocalNode, nodeSeed, runPackOf } from '../../node.ts'
import { RunStore, replayEvents, type RunReader, type RunRecord } from '../../runs.ts'
import type { Report } from '../io.ts'
import { parseJsonOption, parseObjectOption, short } from '../io.ts'

type Node = LocalNode

async function isFolder (path: string): Promise<boolean> {
  return await stat(path).then((s) => s.isDirectory(), () => false)
}

/** This data dir's node, its local half (the composition root, node/create.ts). */
async function openNode (): Promise<Node> {
  const { createNode } = await import('../../create.ts')
  return (await createNode()).local
}

/** How long a command waits for another command to let go of the run database. */
const RUN_DB_WAIT_MS = 10_000

/**
 * This data dir's runs: here, or, while the node runs (it holds the run database), through its
 * control API. Another command holding the database is waited for (RUN_DB_WAIT_MS), then RL-5008.
 */
async function runsOf (node: Node): Promise<{ runs: RunReader, daemon: boolean }> {
  return await runsIn(node.runs, node.home.root)
}

async function runsIn (store: RunStore, root: string): Promise<{ runs: RunReader, daemon: boolean }> {
  try {
    await store.open()
    return { runs: store, daemon: false }
  } catch (err) {
    if (!isReachError(err, 'RL-5008')) throw err
  }
  const { daemonRuns } = await import('../../api-client.ts')
  const remote = await daemonRuns(root).catch(() => undefined)
  if (remote !== undefined) return { runs: remote, daemon: true }
  await store.open({ waitMs: RUN_DB_WAIT_MS })
  return { runs: store, daemon: false }
}

/**
 * When this data dir's daemon is running, it owns the kv store (and offers `reach.delegate`):
 * the run goes through its control API. `ref` is a CID, a name or an absolute folder path.
 */
async function runOnDaemon (ref: string, input: JsonValue, budget: Partial<Budget>): Promise<{ record: RunRecord, output?: JsonValue } | undefined> {
  const { callApi, readEndpoint } = await import('../../api-client.ts')
  const root = homePaths().root
  try {
    await readEndpoint(root)
  } catch (err) {
    if (isReachError(err, 'RL-6002')) return undefined
    throw err
  }
  const abort = new AbortController()
  const onSignal = (): void => { abort.abort(new ReachError('RL-4015', { message: 'run cancelled (interrupted)' })) }
  process.once('SIGINT', onSignal)
  try {
    return await callApi<{ record: RunRecord, output?: JsonValue }>(root, 'POST', '/v1/runs', { pack: ref, input, budget }, { signal: abort.signal, timeoutMs: 24 * 3600_000 })
  } finally {
    process.off('SIGINT', onSignal)
  }
}

async function runPack (node: Node, pack: Pack, input: JsonValue, budget: Partial<Budget>): Promise<{ record: RunRecord, output?: JsonValue }> {
  const viaDaemon = await runOnDaemon(pack.cid, input, budget)
  if (viaDaemon !== undefined) return viaDaemon
  const abort = new AbortController()
  const onSignal = (): void => abort.abort(new ReachError('RL-4015', { message: 'run cancelled (interrupted)' }))
  process.once('SIGINT', onSignal)
  try {
    const { record, outcome } = await node.runPack({ pack, input, budget, signal: abort.signal })
    return { record, ...(outcome.output === undefined ? {} : { output: outcome.output }) }
  } finally {
    process.off('SIGINT', onSignal)
  }
}

function describe (record: RunRecord, output: JsonValue | undefined): string[] {
  const lines = [`Run ${record.run_id}: ${record.status.toUpperCase()} (${record.events} events, fuel ${record.fuel_used})`]
  if (output !== undefined) lines.push(`Output: ${JSON.stringify(output)}`)
  if (record.error !== null) lines.push(`Error: ${record.error.code} ${record.error.message}`)
  lines.push(`Fingerprint: ${record.fingerprint}`, `Checkpoint: ${record.checkpoint_id ?? '(none)'}`)
  return lines
}

export async function resume (): Promise<Report> {
  const node = await openNode()
  if ((await runsOf(node)).daemon) return { human: ['The running node resumed its unfinished runs when it started; none is left'], json: { resumed: [] } }
  const done = await node.resumeUnfinished()
  return {
    human: done.length === 0 ? ['No unfinished runs'] : done.map((r) => `Resumed ${r.run_id}: ${r.status.toUpperCase()} (${r.events} events), fingerprint ${short(r.fingerprint)}`),
    json: { resumed: done }
  }
}

export async function run (opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const ref = args[0] as string
  const input = parseJsonOption((opts.input as string | undefined) ?? 'null', '--input')
  const budget = opts.budget === undefined ? {} : parseObjectOption(opts.budget as string, '--budget') as Partial<Budget>
  // A running node owns the data dir's kv store: it runs the pack (and resumed its own runs at start).
  const viaDaemon = await runOnDaemon(await isFolder(ref) ? resolve(ref) : ref, input, budget)
  if (viaDaemon !== undefined) {
    return { human: describe(viaDaemon.record, viaDaemon.output), json: viaDaemon, ...(viaDaemon.record.status === 'completed' ? {} : { exitCode: 1 }) }
  }
  const node = await openNode()
  if ((await runsOf(node)).daemon) {
    // The node started meanwhile: it runs the pack.
    const started = await runOnDaemon(await isFolder(ref) ? resolve(ref) : ref, input, budget)
    if (started !== undefined) return { human: describe(started.record, started.output), json: started, ...(started.record.status === 'completed' ? {} : { exitCode: 1 }) }
  }
  // A node resumes what it was doing before it takes on new work.
  const resumed = await node.resumeUnfinished()
  const pack = await node.admitted(ref)
  const { record, output } = await runPack(node, pack, input, budget)
  return {
    human: [...resumed.map((r) => `Resumed unfinished ${r.run_id}: ${r.status}`), ...describe(record, output)],
    json: { record, ...(output === undefined ? {} : { output }), ...(resumed.length === 0 ? {} : { resumed }) },
    ...(record.status === 'completed' ? {} : { exitCode: 1 })
  }
}

export async function list (opts: Record<string, unknown>): Promise<Report> {
  const { runs } = await runsOf(await openNode())
  const records = (await runs.list()).slice(0, (opts.limit as number | undefined) ?? Number.MAX_SAFE_INTEGER)
  return {
    human: records.length === 0 ? ['No runs yet'] : records.map((r) => `${r.run_id}  ${r.status.padEnd(9)}  ${r.pack_name}  ${short(r.artifact_hash, 20)}  ${short(r.fingerprint)}`),
    json: { runs: records }
  }
}

/** Replay one recorded run with the pack it names; REPLAY_VERIFIED or the first divergent seq. */
async function replayOnce (node: Node, runId: string, events: Event[]): Promise<{ ok: boolean, lines: string[], json: Record<string, unknown>, fingerprint?: string }> {
  const cid = (events[0]?.payload as JsonObject | undefined)?.pack_cid as string
  const pack = await node.packs.get(cid)
  // Only a run this node recorded before engine builds (a version-1 record) replays without one.
  const legacy = (await (await runsOf(node)).runs.record(runId)).version === 1
  const { verdict, record, fingerprint } = await replayEvents(runId, events, runPackOf(pack), node.engine, { legacy })
  if (verdict.ok) {
    const legacy = verdict.outcome.legacyEngine
    return {
      ok: true,
      fingerprint,
      lines: ['REPLAY_VERIFIED', `Fingerprint: ${fingerprint ?? ''}`, ...(legacy ? ['(recorded before runs named their engine build: only the engine version was compared)'] : [])],
      json: { verified: true, run_id: runId, fingerprint, record, ...(legacy ? { legacy_engine: true } : {}) }
    }
  }
  const d = verdict.divergence
  return {
    ok: false,
    lines: [`REPLAY_DIVERGED at seq ${d.seq} (${d.code}): ${d.reason}`, `  recorded: ${JSON.stringify(d.recorded)}`, `  replayed: ${JSON.stringify(d.replayed)}`],
    json: { verified: false, run_id: runId, divergence: d, error: new ReachError(d.code, { seq: d.seq, message: d.reason }).toJSON() }
  }
}

export async function replayRun (runId: string): Promise<Report> {
  const node = await openNode()
  const r = await replayOnce(node, runId, await (await runsOf(node)).runs.events(runId))
  return { human: r.lines, json: r.json, ...(r.ok ? {} : { exitCode: 1 }) }
}

export async function verifyDeterminism (opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const node = await openNode()
  const runId = args[0] as string
  const n = (opts.n as number | undefined) ?? 5
  const { runs } = await runsOf(node)
  const record = await runs.record(runId)
  const events = await runs.events(runId)
  const prints: string[] = []
  for (let i = 0; i < n; i++) {
    // Each replay builds a fresh sandbox and feeds the recorded tool results.
    const r = await replayOnce(node, runId, events)
    if (!r.ok) return { human: [`Replay ${i + 1} of ${n}:`, ...r.lines], json: r.json, exitCode: 1 }
    prints.push(r.fingerprint as string)
  }
  const allEqual = prints.every((p) => p === record.fingerprint)
  return {
    human: [`${n} replays in fresh sandboxes: ${allEqual ? 'all fingerprints equal' : 'FINGERPRINTS DIFFER'}`, `Fingerprint: ${record.fingerprint}`, allEqual ? 'DETERMINISM_VERIFIED' : 'DETERMINISM_FAILED (RL-3017)'],
    json: { verified: allEqual, runs: n, fingerprints: prints, expected: record.fingerprint },
    ...(allEqual ? {} : { exitCode: 1 })
  }
}

export async function explainFailure (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const { runs } = await runsOf(await openNode())
  const runId = args[0] as string
  const events = await runs.events(runId)
  const record = await runs.record(runId)
  const last = events.at(-1) as Event
  const troubles = events.filter((e) => e.type === 'ToolDenied' || e.type === 'ToolFailed')
  const human = [`Run ${runId}: ${record.status}`]
  if (record.error !== null) human.push(`Failed at seq ${last.seq} with ${record.error.code}: ${record.error.message}`)
  else if (record.status === 'running') human.push(`The run never finished: its log ends at seq ${last.seq} (${last.type}); the process was stopped. \`reach run\` resumes it.`)
  else human.push('The run completed; nothing failed.')
  for (const e of troubles) {
    const p = e.payload as JsonObject
    const err = p.error as JsonObject
    human.push(`  seq ${e.seq} ${e.type} ${String(p.tool ?? p.call_id)}: ${String(err.code)} ${String(err.message)}`)
  }
  return { human, json: { run_id: runId, status: record.status, error: record.error, last_event: { seq: last.seq, type: last.type }, tool_problems: troubles.map((e) => ({ seq: e.seq, type: e.type, payload: e.payload })) } }
}

export async function dataDir (): Promise<Report> {
  const home = homePaths()
  return { human: [home.root], json: { home } }
}

const EXAMPLES = fileURLToPath(new URL('../../../packs/examples/', import.meta.url))

/**
 * Zero-config demo: build the shipped counter pack, sign it with a demo
 * publisher key (created once in the data dir), trust that key, run the
 * pack, replay the run, print REPLAY_VERIFIED and the fingerprint.
 */
export async function demo (): Promise<Report> {
  const node = await openNode()
  const keyPath = `${node.home.keys}/demo-publisher.key`
  let publisher
  try {
    publisher = await readKeyFile(keyPath)
  } catch (err) {
    if (!isReachError(err, 'RL-1004')) throw err
    await writeKeyFile(keyPath, generateKeyPair(), 'publisher')
    publisher = await readKeyFile(keyPath)
  }
  const registry = await openTrustRegistry(node.home.trust)
  if (registry.status(publisher.publicKey) !== 'trusted') await registry.add(publisher.publicKey, 'reach demo publisher')
  const built = await buildBundle(`${EXAMPLES}counter`)
  const signature = signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))
  admitPack({ bundle: built.bundle, cid: built.cid, signatures: [signature], registry, policy: node.policy })
  const pack = await node.packs.put(built.bytes, [signature])
  const input = { numbers: [3, 1, 4, 1, 5, 9, 2, 6] }
  const { record, output } = await runPack(node, pack, input, {})
  const replay = await replayOnce(node, record.run_id, await (await runsOf(node)).runs.events(record.run_id))
  return {
    human: [
      `Data dir: ${node.home.root}`,
      `Pack ${pack.bundle.manifest.name}@${pack.bundle.manifest.version}: ${pack.cid}`,
      `Signed by ${publisher.publicKey} (trusted)`,
      ...describe(record, output),
      ...replay.lines
    ],
    json: { pack: pack.cid, record, output, replay: replay.json },
    ...(replay.ok && record.status === 'completed' ? {} : { exitCode: 1 })
  }
}

export async function exportRun (opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const node = await openNode()
  const { runs } = await runsOf(node)
  const runId = args[0] as string
  const { writeRunArchive } = await import('../../run-archive.ts')
  const record = await runs.record(runId)
  if (record.status === 'running') throw new ReachError('RL-3019', { message: `${runId} has not finished; resume it first (reach runs resume)` })
  const pack = await node.packs.get(record.artifact_hash)
  const bytes = writeRunArchive({ record, pack, signatures: pack.signatures, events: await runs.events(runId), checkpointText: await runs.checkpointText(runId) })
  const output = opts.output as string
  await writeFileAtomic(output, bytes)
  return { human: [`Exported ${runId} to ${output} (${bytes.length} bytes)`], json: { run_id: runId, path: output, bytes: bytes.length } }
}

export async function importRun (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const node = await openNode()
  let bytes: Uint8Array
  try {
    bytes = await readFile(args[0] as string)
  } catch (err) {
    throw new ReachError('RL-1004', { message: `cannot read ${args[0] as string}: ${(err as Error).message}` })
  }
  // Replaying runs the pack's code here, so it must pass this node's policy (checked by whichever
  // process holds the run database: this one, or the running node).
  let imported: { record: RunRecord, events: number, pack_name: string, pack_trusted?: boolean }
  if ((await runsOf(node)).daemon) {
    const { callApi } = await import('../../api-client.ts')
    imported = await callApi(node.home.root, 'POST', '/v1/runs/import', { archive: Buffer.from(bytes).toString('base64') })
  } else {
    imported = await node.importArchive(bytes)
  }
  const runId = imported.record.run_id
  const verifyOnly = imported.pack_trusted === false ? [`Pack ${imported.record.artifact_hash}: its publisher is not trusted here; imported to verify only (replay works, a run of it is refused)`] : []
  return { human: [`Imported ${runId} (${imported.events} events, pack ${imported.pack_name}); verified: chain, checkpoint, record, pack`, ...verifyOnly, `Replay it offline: reach replay ${runId}`], json: { run_id: runId, record: imported.record, pack_trusted: imported.pack_trusted !== false } }
}

/** Field-level comparison of two runs: first divergent event, record, output. */
export async function diffRun (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const { runs } = await runsOf(await openNode())
  const [a, b] = args as [string, string]
  const [ea, eb] = [await runs.events(a), await runs.events(b)]
  const { diffValues } = await import('../../../protocol/diff.ts')
  // Seq 0 differs by its nonce in every pair of runs; compare what the pack did.
  const comparable = (e: Event): JsonValue => ({ type: e.type, payload: e.type === 'RunStarted' ? { ...(e.payload as JsonObject), nonce: null } : e.payload })
  let first: { seq: number, a: JsonValue, b: JsonValue } | undefined
  for (let i = 0; i < Math.max(ea.length, eb.length); i++) {
    const x = ea[i] === undefined ? null : comparable(ea[i] as Event)
    const y = eb[i] === undefined ? null : comparable(eb[i] as Event)
    if (JSON.stringify(x) !== JSON.stringify(y)) {
      first = { seq: i, a: x, b: y }
      break
    }
  }
  const [ra, rb] = [await runs.record(a), await runs.record(b)]
  const outputOf = (es: Event[]): JsonValue => ((es.at(-1)?.payload as JsonObject | undefined)?.output ?? null) as JsonValue
  const recordDiff = diffValues(ra as unknown as JsonValue, rb as unknown as JsonValue).filter((c) => c.path !== '/run_id')
  const outputDiff = diffValues(outputOf(ea), outputOf(eb))
  const human = first === undefined ? ['Events: identical (apart from the run nonce)'] : [`First divergent event: seq ${first.seq}`, `  ${a}: ${JSON.stringify(first.a)}`, `  ${b}: ${JSON.stringify(first.b)}`]
  human.push(outputDiff.length === 0 ? 'Output: identical' : 'Output differs:', ...outputDiff.map((c) => `  ${c.op} ${c.path}: ${JSON.stringify(c.before)} -> ${JSON.stringify(c.after)}`))
  human.push(...recordDiff.map((c) => `  record ${c.path}: ${JSON.stringify(c.before)} -> ${JSON.stringify(c.after)}`))
  return { human, json: { first_divergence: first ?? null, output_diff: outputDiff, record_diff: recordDiff } }
}

/** Delete finished runs beyond the newest N (unfinished runs are never deleted: they still resume). */
export async function gc (opts: Record<string, unknown>): Promise<Report> {
  const node = await openNode()
  const keep = (opts.keepLast as number | undefined) ?? 100
  let done: { removed: string[], kept: number }
  if ((await runsOf(node)).daemon) {
    const { callApi } = await import('../../api-client.ts')
    done = await callApi(node.home.root, 'POST', '/v1/runs/gc', { keep_last: keep })
  } else {
    done = await node.runs.gc(keep)
  }
  return { human: [`Removed ${done.removed.length} finished run(s), kept ${done.kept}`], json: { removed: done.removed, kept: done.kept } }
}

/** Check the node's data dir, keys, policy, registry, packs, runs and sandbox, one line each. */
export async function doctor (): Promise<Report> {
  const checks: Array<{ check: string, ok: boolean, detail: string }> = []
  const failure = (err: unknown): string => isReachError(err) ? `${err.code} ${err.message}` : String(err)
  const probe = async (check: string, fn: () => Promise<string>): Promise<void> => {
    try {
      checks.push({ check, ok: true, detail: await fn() })
    } catch (err) {
      checks.push({ check, ok: false, detail: failure(err) })
    }
  }
  const home = homePaths()
  await probe('node', async () => process.version)
  // Each path another user owns or can write is a problem of its own (RL-1014): nothing is created
  // in such a data dir, and nothing read from it is vouched for, until it is fixed.
  const unsafe = await homeProblems(home).then(
    (problems) => problems.map((p) => ({ check: p.what, ok: false, detail: `RL-1014 ${p.message}` })),
    (err: unknown) => [{ check: 'data dir', ok: false, detail: failure(err) }]
  )
  checks.push(...unsafe)
  const skipped: string[] = []
  const probeHome = async (check: string, fn: () => Promise<string>): Promise<void> => {
    if (unsafe.length === 0) await probe(check, fn)
    else skipped.push(check)
  }
  if (unsafe.length === 0) await probe('data dir', async () => (await ensureHome(home)).root)
  await probeHome('node key', async () => (await readKeyFile(home.nodeKey).catch(async (err) => {
    if (!isReachError(err, 'RL-1004')) throw err
    await nodeSeed(home)
    return await readKeyFile(home.nodeKey)
  })).publicKey)
  await probeHome('policy', async () => { const p = await loadPolicy(home.policy); return `version ${short(policyVersion(p))}, grants ${p.granted_capabilities.join(', ')}${p.allow_unsigned_legacy ? ', UNSIGNED PACKS ALLOWED' : ''}` })
  await probeHome('trust registry', async () => `${(await openTrustRegistry(home.trust)).list().length} key(s)`)
  await probeHome('packs', async () => `${(await openPackStore(home.packs).list()).length} pack(s), all matching their CIDs`)
  await probeHome('runs', async () => {
    // Only to read: without the node's key it signs nothing (a lost seal is rebuilt by the node).
    const store = new RunStore(home, undefined)
    try {
      const runs = await (await runsIn(store, home.root)).runs.list()
      const open = runs.filter((r) => r.status === 'running').length
      // What this process could not read (a running node's own store is not seen from here).
      const left = [...store.legacyLeft.map((l) => `${l.path} (${l.code}: ${l.message})`), ...store.unreadable.map((u) => `${u.run_id} (${u.code}: ${u.message})`)]
      if (left.length > 0) throw new ReachError('RL-5009', { message: `${left.length} run(s) cannot be read: ${left.join('; ')}` })
      return `${runs.length} run(s)${open > 0 ? `, ${open} unfinished (reach runs resume)` : ''}`
    } finally {
      await store.close()
    }
  })
  await probe('sandbox', async () => { const { SandboxPool, engineBuild } = await import('../../../packs/sandbox/index.ts'); const pool = new SandboxPool(); try { await pool.load() } finally { await pool.close() } const build = await engineBuild(); return `QuickJS engine loads (wasm ${short(build.wasm)}, prelude ${short(build.prelude)})` })
  const failed = checks.filter((c) => !c.ok)
  return {
    human: [
      ...checks.map((c) => `${c.ok ? 'OK  ' : 'FAIL'} ${c.check}: ${c.detail}`),
      ...(skipped.length === 0 ? [] : [`Not checked until the data dir is fixed: ${skipped.join(', ')}`]),
      failed.length === 0 ? 'Healthy' : `${failed.length} problem(s)`
    ],
    json: { healthy: failed.length === 0, checks, ...(skipped.length === 0 ? {} : { skipped }) },
    ...(failed.length === 0 ? {} : { exitCode: 1 })
  }
}
