/**
 * The control API's routes (README "Control API"): what `reach node status`, `reach peers`,
 * `reach run` (while the node runs), `reach pack publish|fetch`, `reach delegate`, `reach cancel`
 * and `reach verify-remote` ask the running node. The node's services come from the composition
 * root (node/create.ts); every body is validated here, and a bad one is RL-6004.
 */
import type { JsonValue } from '../protocol/canonical.ts'
import { ReachError } from '../protocol/errors.ts'
import { peerIdOfPublicKey } from '../protocol/peer-id.ts'
import { isPackCid } from '../packs/bundle.ts'
import type { Budget } from '../packs/manifest.ts'
import type { Route } from './api.ts'
import { auditRoute, type AuditReader } from './audit.ts'
import type { NetworkServices, ReachNode } from './create.ts'
import { limited, parseLimit } from './limit.ts'
import { VERSION } from './version.ts'
import { listEvidence, listRuns, showCheckpoint, showEvidence } from './witness-view.ts'

export interface RouteDeps {
  node: ReachNode & { network: NetworkServices }
  savePublished: () => Promise<void>
  /** The node's audit ledger (`GET /v1/audit`); without it the route is not there. */
  audit?: AuditReader
}

/** A run archive (`reach import` while the node runs) comes base64 in JSON: at most 64 MiB of it. */
export const MAX_ARCHIVE_BODY_BYTES = 64 * 1024 * 1024

function requireString (body: unknown, field: string): string {
  const v = (body as Record<string, unknown> | null)?.[field]
  if (typeof v !== 'string' || v === '') throw new ReachError('RL-6004', { message: `${field} is required (a string)` })
  return v
}

/** A request's budget overrides: an object of integers among the budget fields, or nothing. */
function budgetOf (value: unknown): Partial<Budget> | undefined {
  if (value === undefined || value === null) return undefined
  const fields = ['fuel', 'memory_bytes', 'output_bytes', 'tool_calls', 'wall_ms']
  if (typeof value !== 'object' || Array.isArray(value) || !Object.entries(value).every(([k, v]) => fields.includes(k) && Number.isSafeInteger(v) && (v as number) >= (k === 'tool_calls' ? 0 : 1))) {
    throw new ReachError('RL-6004', { message: `budget must be an object of positive integers among ${fields.join(', ')}` })
  }
  return value as Partial<Budget>
}

function optionalNumber (body: unknown, field: string): number | undefined {
  const v = (body as Record<string, unknown> | null)?.[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new ReachError('RL-6004', { message: `${field} must be a positive integer` })
  return v
}

/** A body that must be a JSON object (`null`, an array or a string is RL-6004, not a crash on its fields). */
function objectBody (body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ReachError('RL-6004', { message: 'the request body must be a JSON object' })
  return body as Record<string, unknown>
}

function optionalString (body: Record<string, unknown>, field: string): string | undefined {
  const v = body[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || v === '') throw new ReachError('RL-6004', { message: `${field} must be a non-empty string` })
  return v
}

function optionalBoolean (body: Record<string, unknown>, field: string): boolean | undefined {
  const v = body[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'boolean') throw new ReachError('RL-6004', { message: `${field} must be true or false` })
  return v
}

/** A pack CID from a body, parsed (multiformats) before anything looks for it on disk: RL-1011 otherwise. */
function requireCid (body: unknown, field: string): string {
  const cid = requireString(body, field)
  if (!isPackCid(cid)) throw new ReachError('RL-1011', { message: `${field} is not a pack CID: ${JSON.stringify(cid.length > 80 ? `${cid.slice(0, 79)}…` : cid)}` })
  return cid
}

/** `?limit=N` of a list route (node/limit.ts, as `reach runs list --limit`); undefined when absent. */
function limitOf (query: URLSearchParams): number | undefined {
  const text = query.get('limit')
  return text === null ? undefined : parseLimit(text, 'limit')
}

export function controlRoutes (deps: RouteDeps): Route[] {
  const { savePublished } = deps
  const node = deps.node.local
  const { host, delegator, server, exchange, peers, metrics, federation, verify } = deps.node.network
  const witnessStore = (): NonNullable<typeof deps.node.network.witnessStore> => {
    const store = deps.node.network.witnessStore
    if (store === undefined) throw new ReachError('RL-5007', { message: 'the witness store is not open' })
    return store
  }
  const optionalLimit = (query: URLSearchParams): { limit?: number } => {
    const limit = limitOf(query)
    return limit === undefined ? {} : { limit }
  }
  const fetchAdmitted = async (cid: string, signal?: AbortSignal, timeoutMs?: number) => await deps.node.network.packs.get(cid, signal, timeoutMs)
  const resolvePack = async (ref: string): Promise<string> => isPackCid(ref) ? ref : (await node.packs.get(ref)).cid
return [
    {
      method: 'GET',
      path: '/v1/status',
      handler: async () => ({
        version: VERSION,
        peer_id: host.peerId.toString(),
        public_key: node.publicKey,
        federation,
        addrs: host.getMultiaddrs().map(String),
        peers_connected: host.getPeers().length,
        delegations: { outgoing: delegator.list().length, serving: server.list().length },
        uptime_s: Math.round(process.uptime())
      })
    },
    // List routes take `?limit=N` (a positive integer; anything else is RL-1003, never "all").
    { method: 'GET', path: '/v1/peers', handler: async (req) => { const limit = limitOf(req.query); return { peers: limited(peers.list(), limit), connected: limited(host.getPeers().map(String), limit) } } },
    // Dial a peer now; once connected it is remembered and redialled like any other (create.ts).
    { method: 'POST', path: '/v1/peers/connect', handler: async (req) => await deps.node.network.connect(requireString(req.body, 'addr'), req.signal) },
    { method: 'GET', path: '/v1/packs', handler: async (req) => { const limit = limitOf(req.query); return { packs: limited(await node.packs.list(), limit) } } },
    // The node holds the run database: while it runs, the CLI reads and changes runs through these.
    { method: 'GET', path: '/v1/runs', handler: async (req) => { const limit = limitOf(req.query); return { runs: limited(await node.runs.list(), limit) } } },
    { method: 'GET', path: '/v1/runs/:id', handler: async (req) => ({ record: await node.runs.record(req.params.id ?? '') }) },
    { method: 'GET', path: '/v1/runs/:id/events', handler: async (req) => ({ events: await node.runs.events(req.params.id ?? '') }) },
    { method: 'GET', path: '/v1/runs/:id/checkpoint', handler: async (req) => ({ checkpoint: await node.runs.checkpointText(req.params.id ?? '') }) },
    // What this node did (`reach audit`): its audit ledger, `?since=<seq>&type=<type>&limit=<n>`.
    ...(deps.audit === undefined ? [] : [auditRoute(deps.audit)]),
    {
      method: 'POST',
      path: '/v1/runs/gc',
      handler: async (req) => {
        const keep = (req.body as Record<string, unknown> | undefined)?.keep_last
        if (typeof keep !== 'number' || !Number.isSafeInteger(keep) || keep < 0) throw new ReachError('RL-6004', { message: 'keep_last must be a non-negative integer' })
        return await node.runs.gc(keep)
      }
    },
    {
      method: 'POST',
      path: '/v1/runs/import',
      maxBodyBytes: MAX_ARCHIVE_BODY_BYTES,
      handler: async (req) => {
        const archive = requireString(req.body, 'archive')
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(archive)) throw new ReachError('RL-6004', { message: 'archive must be the run archive\'s bytes in base64' })
        return await node.importArchive(Buffer.from(archive, 'base64'))
      }
    },
    {
      // `reach run` while the node runs: the node owns the kv store, and offers reach.delegate.
      method: 'POST',
      path: '/v1/runs',
      handler: async (req) => {
        const body = objectBody(req.body)
        const pack = await node.admitted(requireString(body, 'pack'))
        const budget: Partial<Budget> = { ...pack.bundle.manifest.budget, ...budgetOf(body.budget) }
        const { record, outcome } = await deps.node.network.run({ pack, input: (body.input ?? null) as JsonValue, budget, signal: req.signal })
        metrics.runs.inc({ status: record.status })
        return { record, ...(outcome.output === undefined ? {} : { output: outcome.output }) }
      }
    },
    {
      method: 'POST',
      path: '/v1/packs/publish',
      handler: async (req) => {
        const cid = await resolvePack(requireString(req.body, 'pack'))
        await node.admit(await node.packs.get(cid))
        const published = await exchange.publish(cid)
        await savePublished()
        return published
      }
    },
    {
      method: 'POST',
      path: '/v1/packs/fetch',
      handler: async (req) => {
        const cid = requireCid(req.body, 'cid')
        const r = await fetchAdmitted(cid, req.signal, optionalNumber(req.body, 'timeout_ms'))
        return { cid: r.cid, name: r.bundle.manifest.name, version: r.bundle.manifest.version, provider: r.provider ?? null, tried: r.tried ?? [] }
      }
    },
    {
      method: 'POST',
      path: '/v1/delegate',
      handler: async (req) => {
        const body = objectBody(req.body)
        if (body.delegation_id !== undefined && (typeof body.delegation_id !== 'string' || !/^[0-9a-f]{32}$/.test(body.delegation_id))) throw new ReachError('RL-6004', { message: 'delegation_id must be 32 lowercase hex digits' })
        const budget = budgetOf(body.budget)
        // Every field is checked before anything is resolved or sent: a `peer` of the wrong type
        // must not quietly become "any peer".
        const peer = optionalString(body, 'peer')
        const verifyLog = optionalBoolean(body, 'verify') === true
        const timeoutMs = optionalNumber(body, 'timeout_ms')
        const packCid = await resolvePack(requireString(body, 'pack'))
        const d = await delegator.delegate({
          pack_cid: packCid,
          input: (body.input ?? null) as JsonValue,
          ...(budget === undefined ? {} : { budget }),
          ...(peer === undefined ? {} : { peer }),
          ...(timeoutMs === undefined ? {} : { timeoutMs }),
          ...(typeof body.delegation_id === 'string' ? { delegation_id: body.delegation_id } : {}),
          signal: req.signal
        })
        if (!verifyLog) return { delegation: d }
        const verdict = await verify(d.peer, d.run_id, { pack_cid: d.pack_cid, head: d.log_head, record: d.record }, req.signal)
        const { record: _record, checkpoint: _checkpoint, ...verification } = verdict
        return { delegation: d, verification }
      }
    },
    {
      method: 'POST',
      path: '/v1/verify-remote',
      handler: async (req) => {
        const peer = requireString(req.body, 'peer')
        const runId = requireString(req.body, 'run_id')
        const verdict = await verify(peer, runId, {}, req.signal)
        return { peer, run_id: runId, ...verdict }
      }
    },
    // What the witness holds (`reach checkpoints`, `reach evidence`).
    { method: 'GET', path: '/v1/checkpoints', handler: async (req) => ({ runs: await listRuns(witnessStore(), { ...(req.query.get('run') === null ? {} : { run: req.query.get('run') as string }), ...optionalLimit(req.query) }) }) },
    { method: 'GET', path: '/v1/checkpoints/:id', handler: async (req) => await showCheckpoint(witnessStore(), req.params.id ?? '') },
    { method: 'GET', path: '/v1/evidence', handler: async (req) => ({ evidence: listEvidence(witnessStore(), limitOf(req.query)) }) },
    { method: 'GET', path: '/v1/evidence/:id', handler: async (req) => showEvidence(witnessStore(), req.params.id ?? '') },
    {
      method: 'POST',
      path: '/v1/evidence',
      // Evidence handed in by an operator: checked (its own RL-21xx when it proves nothing), kept, acted on, gossiped.
      handler: async (req) => {
        const text = requireString(req.body, 'evidence')
        const entry = await deps.node.network.witness.publishEvidence(text, req.signal)
        return { id: entry.id, type: entry.type, peer: peerIdOfPublicKey(entry.signer), log_id: entry.log_id, at_seq: entry.at_seq }
      }
    },
    { method: 'GET', path: '/v1/delegations', handler: async (req) => { const limit = limitOf(req.query); return { outgoing: limited(delegator.list(), limit), serving: limited(server.list(), limit) } } },
    {
      method: 'POST',
      path: '/v1/delegations/:id/cancel',
      handler: async (req) => {
        const id = req.params.id ?? ''
        if (!delegator.cancel(id)) throw new ReachError('RL-4019', { message: `no delegation ${id} in flight on this node` })
        return { cancelled: id }
      }
    }
  ]
}
