/**
 * A peer's audit ledger over `/reach/log/1.0.0` (SPEC §10.6, §7.4), between two real libp2p hosts
 * on TCP loopback: `log.audit` streams the ledger under a checkpoint the peer signs (each event
 * chain-checked on arrival, the whole bound to the checkpoint at the end); `log.consistency`
 * proves a newer head extends an older one. A peer that rewrote its ledger (same key, same
 * genesis, one earlier event changed, the chain re-hashed and re-signed) serves a ledger whose
 * checkpoint verifies on its own, and is caught by the consistency check (RL-2202); one that
 * serves events that are not its checkpoint's, or a forged path, is caught too; requests it cannot
 * answer are refused with their codes.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCheckpoint, verifyCheckpoint, type Checkpoint } from '../../protocol/checkpoint.ts'
import { ReachError, isReachError } from '../../protocol/errors.ts'
import type { Event } from '../../protocol/event.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { verifyConsistencyJson } from '../../protocol/merkle.ts'
import type { AuditEvent, AuditSource, Dialer, RunSource } from '../../federation/components.ts'
import { fetchConsistency, fetchLedger, fetchLedgerConsistency, type LedgerStream } from '../../federation/log-client.ts'
import { LogServer } from '../../federation/log-server.ts'
import { AUDIT_DB, AuditLedger } from '../../node/audit.ts'
import { createHost, parsePeerId, type ReachHost } from '../../node/host.ts'
import { silentLogger } from '../../node/logger.ts'
import { seededRandom } from '../../node/random.ts'
import { code } from '../codes.ts'

const dirs: string[] = []
const seed = generateKeyPair().seed
const signer = createSigner(seed)
const clock = { now: () => 1_700_000_000_000 }
let server: ReachHost
let client: ReachHost
let peer: string
let dialer: Dialer
let honest: AuditLedger
let forged: AuditLedger
let logs: LogServer

const noRuns: RunSource = {
  record: async () => { throw new ReachError('RL-3019', { message: 'no runs here' }) },
  checkpointText: async () => { throw new ReachError('RL-3019', { message: 'no runs here' }) },
  stream: () => (async function * () {})()
}

const fact = (i: number, detail = `delegation ${i}`): AuditEvent => ({ type: 'delegation.sent', peer: 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N', run_id: `run_${String(i).padStart(20, '0')}`, detail })

async function ledger (): Promise<AuditLedger> {
  const dir = await mkdtemp(join(os.tmpdir(), 'reach-audit-fed-'))
  dirs.push(dir)
  // The same key, clock and genesis nonce: a rewrite starts from the very same first event.
  return await AuditLedger.open({ path: join(dir, AUDIT_DB), signer, clock, random: seededRandom('ledger'), chunkSize: 4 })
}

/** Serve `source` as the node's ledger on the server host (stopping whatever served it before). */
async function serve (source: AuditSource | undefined): Promise<void> {
  await logs?.stop()
  logs = new LogServer({ registrar: server, runs: noRuns, logger: silentLogger, ...(source === undefined ? {} : { ledger: source }) })
  await logs.start()
}

async function drain (stream: LedgerStream): Promise<Event[]> {
  const out: Event[] = []
  for await (const batch of stream.batches) out.push(...batch)
  return out
}

beforeAll(async () => {
  honest = await ledger()
  forged = await ledger()
  for (let i = 0; i < 2500; i++) honest.record(fact(i))
  await honest.flush()
  server = await createHost({ seed })
  peer = server.peerId.toString()
  await serve(honest)
  client = await createHost({ seed: generateKeyPair().seed, bootstrap: [server.getMultiaddrs()[0]?.toString() as string] })
  dialer = {
    dial: async (p, protocol, options) => await client.dialProtocol(parsePeerId(p), protocol, options),
    connectedPeers: () => client.getPeers().map(String)
  }
}, 30_000)

afterAll(async () => {
  await logs?.stop()
  await client?.stop()
  await server?.stop()
  await honest?.close()
  await forged?.close()
  await Promise.all(dirs.map(async (d) => { await rm(d, { recursive: true, force: true }) }))
})

describe('a peer\'s audit ledger over /reach/log/1.0.0', () => {
  let older: Checkpoint

  it('streams under a checkpoint the peer signs now, in batches, each event checked, the whole bound to it', async () => {
    const stream = await fetchLedger(dialer, peer)
    older = stream.checkpoint
    verifyCheckpoint(older, { expectedSigner: signer.publicKey })
    expect(stream).toMatchObject({ log_id: honest.logId(), announced: 2501, checkpoint: { kind: 'log', at_seq: 2500 } })
    let batches = 0
    const events: Event[] = []
    for await (const batch of stream.batches) {
      batches++
      events.push(...batch)
    }
    expect(batches).toBeGreaterThan(1)
    const local: Event[] = []
    for await (const e of honest.read()) local.push(e)
    expect(events).toEqual(local)
    // What the peer signed is what it keeps as its latest.
    expect(honest.latestCheckpoint()).toBe(stream.checkpointText)
  })

  it('proves that its newer head extends the older one, checked against both checkpoints', async () => {
    for (let i = 2500; i < 2510; i++) honest.record(fact(i))
    const newer = (await fetchLedger(dialer, peer)).checkpoint
    expect(newer.at_seq).toBe(2510)
    const proof = await fetchLedgerConsistency(dialer, peer, older, newer)
    verifyConsistencyJson(proof)
    expect(proof).toMatchObject({ old_size: 2501, new_size: 2511, old_root: older.merkle_root, new_root: newer.merkle_root })
    // The raw request, with the roots the caller trusts, passes too.
    await fetchConsistency(dialer, peer, { log_id: older.log_id, old_size: 2501, new_size: 2511, old_root: older.merkle_root, new_root: newer.merkle_root })
  })

  it('a peer that rewrote its ledger is caught: its new checkpoint verifies on its own, its proof does not bind the old one (RL-2202)', async () => {
    // The same node, its ledger written again from the same genesis, fact 7 changed, then grown.
    for (let i = 0; i < 2520; i++) forged.record(i === 7 ? fact(i, 'nothing was sent') : fact(i))
    await forged.flush()
    expect(forged.logId()).toBe(honest.logId())
    await serve(forged)
    try {
      const stream = await fetchLedger(dialer, peer)
      const newer = stream.checkpoint
      // It reads as a whole valid ledger under a valid signature of the same key...
      expect((await drain(stream)).length).toBe(2521)
      verifyCheckpoint(newer, { expectedSigner: signer.publicKey })
      expect([newer.log_id, newer.signer]).toEqual([older.log_id, older.signer])
      // ... and only the consistency check catches it.
      let caught: unknown
      try {
        await fetchLedgerConsistency(dialer, peer, older, newer)
      } catch (err) {
        caught = err
      }
      expect(isReachError(caught, 'RL-2202')).toBe(true)
      expect((caught as ReachError).details).toMatchObject({ rewritten: true, expected_old_root: older.merkle_root })
      // Given the root it trusts, the raw request refuses it the same way.
      expect(await code(fetchConsistency(dialer, peer, { log_id: older.log_id, old_size: 2501, new_size: 2521, old_root: older.merkle_root }))).toBe('RL-2202')
    } finally {
      await serve(honest)
    }
  })

  it('events that are not the checkpoint\'s, or a forged path, are refused', async () => {
    const text = await honest.checkpoint()
    const cp = decodeCheckpoint(text)
    // The honest checkpoint over the rewritten ledger's events (same length, same genesis).
    await serve({ logId: () => honest.logId(), checkpoint: async () => text, stream: (to) => forged.stream(to), consistency: async (a, b) => await honest.consistency(a, b) })
    try {
      expect(await code(drain(await fetchLedger(dialer, peer)))).toBe('RL-2102')
      // A path with one hash changed leads nowhere.
      await serve({
        logId: () => honest.logId(),
        checkpoint: async () => text,
        stream: (to) => honest.stream(to),
        consistency: async (a, b) => {
          const p = await honest.consistency(a, b)
          return { ...p, path: p.path.map((h, i) => i === 0 ? (h[0] === '0' ? '1' : '0') + h.slice(1) : h) }
        }
      })
      expect(await code(fetchConsistency(dialer, peer, { log_id: cp.log_id, old_size: 100, new_size: cp.at_seq + 1 }))).toBe('RL-2202')
    } finally {
      await serve(honest)
    }
  })

  it('what it cannot answer is refused with its code', async () => {
    const id = honest.logId()
    const size = honest.size()
    expect(await code(fetchConsistency(dialer, peer, { log_id: 'a'.repeat(64), old_size: 1, new_size: 2 }))).toBe('RL-4017')
    expect(await code(fetchConsistency(dialer, peer, { log_id: id, old_size: 1, new_size: size + 1 }))).toBe('RL-1007')
    // Asked wrong, said here before any dial.
    expect(await code(fetchConsistency(dialer, peer, { log_id: 'not a log id', old_size: 1, new_size: 2 }))).toBe('RL-1011')
    expect(await code(fetchConsistency(dialer, peer, { log_id: id, old_size: 3, new_size: 2 }))).toBe('RL-1007')
    // A header of another ledger than asked for.
    expect(await code(fetchLedger(dialer, peer, { logId: 'b'.repeat(64) }))).toBe('RL-4014')
    expect(await code(fetchLedger(dialer, peer, { maxEvents: 10 }))).toBe('RL-4014')
    // A node that keeps no ledger.
    await serve(undefined)
    try {
      expect(await code(fetchLedger(dialer, peer))).toBe('RL-4017')
      expect(await code(fetchConsistency(dialer, peer, { log_id: id, old_size: 1, new_size: 2 }))).toBe('RL-4017')
    } finally {
      await serve(honest)
    }
    // And it still serves.
    expect((await fetchLedger(dialer, peer)).announced).toBe(honest.size())
  })
})
