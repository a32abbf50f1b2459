/**
 * `reach audit [--since seq] [--type t] [--limit n]`: what this node did, from its audit ledger
 * (node/audit.ts, SPEC §7.4). While the node runs it holds the ledger, so this asks its control
 * API (`GET /v1/audit`); otherwise it opens `<home>/audit.db` itself, to read only.
 */
import { join } from 'node:path'
import type { JsonObject } from '../../../protocol/canonical.ts'
import { isReachError } from '../../../protocol/errors.ts'
import type { Event } from '../../../protocol/event.ts'
import { AUDIT_DB, AuditLedger, parseAuditType, type AuditPage, type AuditQuery, type AuditStatus } from '../../audit.ts'
import { checkHome, homePaths } from '../../home.ts'
import type { Report } from '../io.ts'
import { plural } from '../io.ts'

type Answer = AuditPage & { status: AuditStatus }

/** The running node's answer; undefined when no node runs here, or it serves no ledger (an older node). */
async function fromNode (root: string, query: AuditQuery): Promise<Answer | undefined> {
  const { callApi } = await import('../../api-client.ts')
  const params = new URLSearchParams()
  if (query.since !== undefined) params.set('since', String(query.since))
  if (query.type !== undefined) params.set('type', query.type)
  if (query.limit !== undefined) params.set('limit', String(query.limit))
  const search = params.toString()
  try {
    return await callApi<Answer>(root, 'GET', `/v1/audit${search === '' ? '' : `?${search}`}`)
  } catch (err) {
    if (isReachError(err, 'RL-6002') || isReachError(err, 'RL-6003')) return undefined
    throw err
  }
}

async function fromDisk (root: string, query: AuditQuery): Promise<Answer> {
  const ledger = await AuditLedger.open({ path: join(root, AUDIT_DB) })
  try {
    return { ...(await ledger.list(query)), status: ledger.status() }
  } finally {
    await ledger.close()
  }
}

function line (e: Event): string {
  const p = (e.payload ?? {}) as JsonObject
  const at = typeof p.at === 'number' ? new Date(p.at).toISOString() : '-'
  const about = [p.code, p.run_id, p.cid, p.key].filter((v): v is string => typeof v === 'string')
  const detail = typeof p.detail === 'string' ? `  ${p.detail}` : typeof p.count === 'number' ? `  ${plural(p.count, 'entry')} not kept` : ''
  return `${String(e.seq).padStart(6)}  ${at}  ${e.type.replace(/^audit\./, '').padEnd(20)}  ${typeof p.peer === 'string' ? p.peer : e.aggregate_id}${about.length === 0 ? '' : `  ${about.join(' ')}`}${detail}`
}

export async function list (opts: Record<string, unknown>): Promise<Report> {
  const query: AuditQuery = {
    ...(opts.since === undefined ? {} : { since: opts.since as number }),
    ...(opts.type === undefined ? {} : { type: parseAuditType(opts.type as string, '--type') }),
    ...(opts.limit === undefined ? {} : { limit: opts.limit as number })
  }
  const paths = homePaths()
  await checkHome(paths)
  let answer = await fromNode(paths.root, query)
  let source: 'node' | 'disk' = 'node'
  if (answer === undefined) {
    source = 'disk'
    try {
      answer = await fromDisk(paths.root, query)
    } catch (err) {
      // A node that started meanwhile holds the ledger: ask it.
      if (!isReachError(err, 'RL-5008')) throw err
      answer = await fromNode(paths.root, query)
      source = 'node'
      if (answer === undefined) throw err
    }
  }
  const { events, next, status } = answer
  const problems = status.failed_writes + status.dropped + status.refused
  const human = events.length === 0 ? ['No audit entries'] : events.map(line)
  if (next !== undefined) human.push(`(more: reach audit --since ${next})`)
  if (problems > 0) {
    human.push(`warning: ${status.failed_writes} failed writes, ${status.dropped} entries dropped, ${status.refused} refused since the ledger was opened${status.last_error === undefined ? '' : ` (last: ${status.last_error.code} ${status.last_error.message})`}`)
  }
  return { human, json: { events, ...(next === undefined ? {} : { next }), status, source } }
}
