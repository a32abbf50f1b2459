/**
 * `reach checkpoints list|show` and `reach evidence list|show|submit`: what this node's witness
 * holds (federation/witness.ts, node/witness-store.ts): run checkpoints with the peers that
 * replayed them, and evidence against peers that signed a lie. While the node runs it holds
 * `<home>/witness.db`, so these ask its control API; otherwise they read the file themselves
 * (a data dir whose node never ran holds nothing yet: empty lists).
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ReachError, isReachError } from '../../../protocol/errors.ts'
import { checkHome, homePaths } from '../../home.ts'
import { WITNESS_DB, WitnessStore } from '../../witness-store.ts'
import { listEvidence, listRuns, showCheckpoint, showEvidence, type EvidenceView, type RunView } from '../../witness-view.ts'
import type { Report } from '../io.ts'
import { plural } from '../io.ts'

/** Through the running node; undefined when none runs here. */
async function fromNode<T> (root: string, path: string): Promise<T | undefined> {
  const { callApi } = await import('../../api-client.ts')
  try {
    return await callApi<T>(root, 'GET', path)
  } catch (err) {
    if (isReachError(err, 'RL-6002') || isReachError(err, 'RL-6003')) return undefined
    throw err
  }
}

/** From witness.db, or `empty` when the node never ran; a node that started meanwhile is asked instead. */
async function read<T> (path: string, fromStore: (store: WitnessStore) => Promise<T>, empty: () => T): Promise<T> {
  const paths = homePaths()
  await checkHome(paths)
  const answer = await fromNode<T>(paths.root, path)
  if (answer !== undefined) return answer
  const file = join(paths.root, WITNESS_DB)
  if (!existsSync(file)) return empty()
  let store: WitnessStore
  try {
    store = await WitnessStore.open(file)
  } catch (err) {
    if (!isReachError(err, 'RL-5008')) throw err
    const again = await fromNode<T>(paths.root, path)
    if (again === undefined) throw err
    return again
  }
  try {
    return await fromStore(store)
  } finally {
    await store.close()
  }
}

const short = (s: string | undefined, n = 16): string => s === undefined ? '-' : s.length <= n ? s : `${s.slice(0, n)}…`

export async function checkpointsList (opts: Record<string, unknown>): Promise<Report> {
  const run = opts.run as string | undefined
  const limit = opts.limit as number | undefined
  const query = new URLSearchParams({ ...(run === undefined ? {} : { run }), ...(limit === undefined ? {} : { limit: String(limit) }) }).toString()
  const { runs } = await read<{ runs: RunView[] }>(`/v1/checkpoints${query === '' ? '' : `?${query}`}`, async (s) => ({ runs: await listRuns(s, { ...(run === undefined ? {} : { run }), ...(limit === undefined ? {} : { limit }) }) }), () => ({ runs: [] }))
  const human = runs.length === 0
    ? [run === undefined ? 'No run checkpoints held yet' : `No checkpoint of ${run} held here`]
    : runs.map((r) => `${r.run_id ?? '-'}  checkpoint ${short(r.checkpoint_id)}  by ${r.peer}  at seq ${r.at_seq}  ${plural(r.receipts.length, 'receipt')}${r.receipts.length === 0 ? '' : ` (${r.receipts.map((x) => x.peer).join(', ')})`}`)
  return { human, json: { runs } }
}

export async function checkpointsShow (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const id = args[0] as string
  const r = await read<RunView & { checkpoint?: string }>(`/v1/checkpoints/${encodeURIComponent(id)}`, async (s) => await showCheckpoint(s, id), () => { throw new ReachError('RL-1015', { message: `no checkpoint ${id} here` }) })
  return {
    human: [
      `Checkpoint ${r.checkpoint_id} of run ${r.run_id ?? '-'} (pack ${r.pack_cid ?? '-'}), signed by ${r.peer}, at seq ${r.at_seq}`,
      r.receipts.length === 0 ? 'No witness has replayed it yet' : `Replayed and vouched for by ${`${r.receipts.length} witness${r.receipts.length === 1 ? '' : 'es'}`}:`,
      ...r.receipts.map((x) => `  ${x.peer}  ${new Date(x.received_at).toISOString()}`),
      ...(r.checkpoint === undefined ? [] : [r.checkpoint.trimEnd()])
    ],
    json: { ...r }
  }
}

export async function evidenceList (opts: Record<string, unknown>): Promise<Report> {
  const limit = opts.limit as number | undefined
  const { evidence } = await read<{ evidence: EvidenceView[] }>(`/v1/evidence${limit === undefined ? '' : `?limit=${limit}`}`, async (s) => ({ evidence: listEvidence(s, limit) }), () => ({ evidence: [] }))
  const human = evidence.length === 0 ? ['No evidence held: no peer has been caught signing a lie'] : evidence.map((e) => `${e.id}  ${e.type}  against ${e.peer}  (log ${short(e.log_id)} at seq ${e.at_seq})`)
  return { human, json: { evidence } }
}

export async function evidenceShow (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const id = args[0] as string
  const e = await read<EvidenceView>(`/v1/evidence/${encodeURIComponent(id)}`, async (s) => showEvidence(s, id), () => { throw new ReachError('RL-1015', { message: `no evidence ${id} here` }) })
  return {
    human: [
      `Evidence ${e.id}: ${e.type} against ${e.peer} (key ${e.signer})`,
      `Log ${e.log_id} at seq ${e.at_seq}; received ${new Date(e.received_at).toISOString()} from ${e.from}`,
      'Check it offline: save the text below and run reach evidence verify <file>',
      e.text ?? ''
    ],
    json: { ...e }
  }
}

export async function evidenceSubmit (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const file = args[0] as string
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ReachError('RL-1004', { message: `cannot read ${file}: ${(err as Error).message}` })
  }
  const paths = homePaths()
  await checkHome(paths)
  const { callApi } = await import('../../api-client.ts')
  const r = await callApi<{ id: string, type: string, peer: string }>(paths.root, 'POST', '/v1/evidence', { evidence: text.trimEnd() })
  return { human: [`Evidence ${r.id} (${r.type}) against ${r.peer}: checked, kept and told to the federation; the peer is untrusted here from now on`], json: r }
}
