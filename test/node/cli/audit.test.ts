/**
 * `reach audit` through the real executable: with no node running it opens `<home>/audit.db`
 * itself (to read only); while a node runs (here: the control API with the audit route, served
 * from this process, which holds the ledger, and its endpoint file) it asks `GET /v1/audit`, which
 * it must, since the ledger is locked. Flags it cannot honour are RL-1003 / RL-1011, exit 2.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createSigner, generateKeyPair } from '../../../protocol/keys.ts'
import { ensureApiToken, startApi, type ApiServer } from '../../../node/api.ts'
import { removeEndpoint, TOKEN_FILE, writeEndpoint } from '../../../node/api-client.ts'
import { AUDIT_DB, AuditLedger, auditRoute } from '../../../node/audit.ts'
import { reach } from './helpers.ts'

const PEER = '12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7'
let home: string
let env: NodeJS.ProcessEnv

beforeAll(async () => {
  home = await mkdtemp(join(os.tmpdir(), 'reach-audit-cli-'))
  env = { REACH_HOME: home }
  const ledger = await AuditLedger.open({ path: join(home, AUDIT_DB), signer: createSigner(generateKeyPair().seed) })
  ledger.record({ type: 'delegation.sent', peer: PEER, run_id: `run_${'1'.repeat(20)}`, detail: 'to the best peer' })
  ledger.record({ type: 'pack.fetched', peer: PEER, cid: 'bafyexample' })
  ledger.record({ type: 'delegation.served', peer: PEER })
  await ledger.close()
})

afterAll(async () => {
  await rm(home, { recursive: true, force: true })
})

describe('reach audit', () => {
  it('with no node running, reads audit.db itself', async () => {
    const r = await reach(['audit', '--json'], { env })
    expect(r.code).toBe(0)
    expect(r.json).toMatchObject({ ok: true, source: 'disk', status: { size: 4 } })
    expect(r.json.events.map((e: { type: string }) => e.type)).toEqual(['audit.ledger.created', 'audit.delegation.sent', 'audit.pack.fetched', 'audit.delegation.served'])
    const some = await reach(['audit', '--type', 'delegation', '--since', '1', '--limit', '1', '--json'], { env })
    expect(some.json.events.map((e: { seq: number, type: string }) => `${e.seq}:${e.type}`)).toEqual(['3:audit.delegation.served'])
    expect(some.json.next).toBe(3)
    const human = await reach(['audit'], { env })
    expect(human.code).toBe(0)
    expect(human.stdout).toMatch(/delegation\.sent\s+12D3KooW\S+\s+run_1{20}\s+to the best peer/)
    expect(human.stdout).toMatch(/pack\.fetched\s+12D3KooW\S+\s+bafyexample/)
  })

  it('a data dir without a ledger has no entries (and none is made)', async () => {
    const empty = await mkdtemp(join(os.tmpdir(), 'reach-audit-none-'))
    try {
      const r = await reach(['audit', '--json'], { env: { REACH_HOME: empty } })
      expect(r).toMatchObject({ code: 0, json: { ok: true, events: [], source: 'disk' } })
      expect((await reach(['audit'], { env: { REACH_HOME: empty } })).stdout).toBe('No audit entries\n')
    } finally {
      await rm(empty, { recursive: true, force: true })
    }
  })

  it('flags it cannot honour are refused with their code and exit 2', async () => {
    for (const [args, code] of [
      [['--limit', '0'], 'RL-1003'],
      [['--limit', 'all'], 'RL-1003'],
      [['--since', '1.5'], 'RL-1003'],
      [['--since', 'x'], 'RL-1003'],
      [['--type', 'Not A Type'], 'RL-1011']
    ] as const) {
      const r = await reach(['audit', ...args, '--json'], { env })
      expect(r.code, args.join(' ')).toBe(2)
      expect(r.json, args.join(' ')).toMatchObject({ ok: false, error: { code } })
    }
  })

  it('while a node runs (and holds the ledger), asks its control API', async () => {
    const ledger = await AuditLedger.open({ path: join(home, AUDIT_DB), signer: createSigner(generateKeyPair().seed) })
    let api: ApiServer | undefined
    try {
      ledger.record({ type: 'verification.ok', peer: PEER, run_id: `run_${'2'.repeat(20)}` })
      await ledger.flush()
      api = await startApi({ token: await ensureApiToken(join(home, TOKEN_FILE)), routes: [auditRoute(ledger)] })
      await writeEndpoint(home, { version: 1, pid: process.pid, api: api.url, peer_id: PEER, addrs: [], federation: 'default', started_at: new Date().toISOString() })
      const r = await reach(['audit', '--since', '2', '--json'], { env })
      expect(r).toMatchObject({ code: 0, json: { ok: true, source: 'node', status: { size: 5 } } })
      expect(r.json.events.map((e: { type: string }) => e.type)).toEqual(['audit.delegation.served', 'audit.verification.ok'])
      // The route refuses what the CLI does, with the same codes.
      const token = await ensureApiToken(join(home, TOKEN_FILE))
      for (const [query, code] of [['limit=0', 'RL-1003'], ['since=-1', 'RL-1003'], ['type=Not%20A%20Type', 'RL-1011']]) {
        const res = await fetch(`${api.url}/v1/audit?${query}`, { headers: { authorization: `Bearer ${token}` } })
        expect(res.status, query).toBe(400)
        expect(await res.json(), query).toMatchObject({ ok: false, error: { code } })
      }
    } finally {
      await removeEndpoint(home)
      await api?.close()
      await ledger.close()
    }
  })
})
