/**
 * The audit ledger (node/audit.ts, SPEC §7.4) on a real LevelDB in a temp dir:
 *
 *   given facts recorded, then they are durable events `audit.<type>` chained from the ledger's
 *     genesis, whose hash is its log id; the directory is 0700;
 *   given a restart, then the ledger continues the same chain (one genesis, consecutive seqs);
 *   a checkpoint (kind "log") verifies, and binds the ledger as `reach checkpoint verify` would;
 *   a consistency proof between two checkpoints verifies, and equals the proof merkle.ts builds
 *     from every event hash (every pair of sizes, across chunk boundaries, after a restart too);
 *   a rewritten ledger (an earlier event changed, the chain re-hashed, re-signed by the same key)
 *     gives a checkpoint the consistency check refuses (RL-2202), where a naive check of each
 *     checkpoint's signature accepts it (negative control);
 *   a disk that refuses writes is logged, counted and surfaced, never thrown at the caller, and
 *     what could not be kept is said in the ledger itself.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { checkLedgerConsistency, ledgerStateHash, LEDGER_CREATED, LEDGER_DROPPED } from '../../protocol/audit.ts'
import { decodeCheckpoint, verifyCheckpoint, type Checkpoint } from '../../protocol/checkpoint.ts'
import { checkpointBinding, digestLog } from '../../protocol/digest.ts'
import { ReachError, isReachError } from '../../protocol/errors.ts'
import type { Event } from '../../protocol/event.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { buildConsistencyProof, buildInclusionProof, verifyConsistencyJson, verifyInclusionJson } from '../../protocol/merkle.ts'
import type { AuditEvent, ComponentLogger } from '../../federation/components.ts'
import { AUDIT_DB, AuditLedger, auditQueryOf, type AuditLedgerInit } from '../../node/audit.ts'
import { seededRandom } from '../../node/random.ts'
import { LevelEventStore } from '../../node/store/level.ts'
import { deferred, within } from '../await.ts'

const dirs: string[] = []
const open: AuditLedger[] = []

async function tempDir (): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), 'reach-audit-'))
  dirs.push(dir)
  return dir
}

afterEach(async () => {
  vi.restoreAllMocks()
  await Promise.all(open.splice(0).map(async (l) => { await l.close() }))
})

afterAll(async () => {
  await Promise.all(dirs.map(async (d) => { await rm(d, { recursive: true, force: true }) }))
})

const node = generateKeyPair()
const signer = createSigner(node.seed)
const fixedClock = { now: () => 1_700_000_000_000 }

async function ledgerAt (path: string, init: Partial<AuditLedgerInit> = {}): Promise<AuditLedger> {
  const l = await AuditLedger.open({ path, signer, clock: fixedClock, random: seededRandom('audit-test'), ...init })
  open.push(l)
  return l
}

async function closeLedger (l: AuditLedger): Promise<void> {
  await l.close()
  open.splice(open.indexOf(l), 1)
}

async function all (l: AuditLedger): Promise<Event[]> {
  const out: Event[] = []
  for await (const e of l.read()) out.push(e)
  return out
}

const PEER = '12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7'
const fact = (i: number, extra: Partial<AuditEvent> = {}): AuditEvent => ({ type: 'delegation.sent', peer: PEER, run_id: `run_${String(i).padStart(20, '0')}`, detail: `delegation ${i}`, ...extra })

describe('recording', () => {
  it('facts become durable events audit.<type>, chained from the genesis whose hash is the log id, in a 0700 directory', async () => {
    const path = join(await tempDir(), AUDIT_DB)
    const l = await ledgerAt(path)
    expect((await stat(path)).mode & 0o777).toBe(0o700)
    // record returns nothing and does not wait.
    expect(l.record(fact(1))).toBeUndefined()
    l.record({ type: 'pack.fetched', peer: PEER, cid: 'bafyexample', code: 'RL-3003' })
    l.record({ type: 'trust.changed', peer: PEER, key: node.publicKey, detail: 'added' })
    expect(l.status().pending).toBe(3)
    await l.flush()
    const events = await all(l)
    expect(events.map((e) => e.type)).toEqual([LEDGER_CREATED, 'audit.delegation.sent', 'audit.pack.fetched', 'audit.trust.changed'])
    expect(events[0]?.payload).toEqual({ at: 1_700_000_000_000, format: 'reach-audit/1', nonce: expect.stringMatching(/^[0-9a-f]{32}$/), signer: node.publicKey })
    expect(events[1]).toMatchObject({ aggregate_id: PEER, payload: { at: 1_700_000_000_000, peer: PEER, run_id: fact(1).run_id, detail: 'delegation 1' } })
    expect(events[2]?.payload).toEqual({ at: 1_700_000_000_000, peer: PEER, cid: 'bafyexample', code: 'RL-3003' })
    // A valid chain from genesis (the same checks `reach verify` makes), and its id is the genesis hash.
    expect(digestLog(events).log_id).toBe(events[0]?.hash)
    expect(l.logId()).toBe(events[0]?.hash)
    expect(l.status()).toMatchObject({ size: 4, pending: 0, recorded: 3, written: 4, failed_writes: 0, dropped: 0, refused: 0 })
  })

  it('a restart continues the same chain: one genesis, the same log id, consecutive seqs', async () => {
    const path = join(await tempDir(), AUDIT_DB)
    const first = await ledgerAt(path)
    for (let i = 0; i < 3; i++) first.record(fact(i))
    await first.flush()
    const id = first.logId()
    await closeLedger(first)
    const again = await ledgerAt(path)
    expect(again.logId()).toBe(id)
    expect(again.size()).toBe(4)
    for (let i = 3; i < 6; i++) again.record(fact(i))
    await again.flush()
    const events = await all(again)
    expect(events.map((e) => e.seq)).toEqual([0, 1, 2, 3, 4, 5, 6])
    expect(events.filter((e) => e.type === LEDGER_CREATED)).toHaveLength(1)
    expect(digestLog(events).log_id).toBe(id)
  })

  it('a malformed fact is refused and counted, not thrown and not written', async () => {
    const lines: string[] = []
    const logger: ComponentLogger = { forComponent: () => ({ info: () => {}, debug: () => {}, warn: (m) => { lines.push(m) } }) }
    const l = await ledgerAt(join(await tempDir(), AUDIT_DB), { logger })
    const bad = [
      { type: 'Not A Type', peer: PEER },
      { type: 'ledger.created', peer: PEER },
      { type: 'delegation.sent', peer: '' },
      { type: 'delegation.sent', peer: PEER, detail: 42 },
      { type: 'delegation.sent', peer: PEER, run_id: 'x'.repeat(300) },
      null
    ]
    for (const e of bad) expect(() => { l.record(e as unknown as AuditEvent) }).not.toThrow()
    await l.flush()
    expect(l.status()).toMatchObject({ size: 1, refused: bad.length, pending: 0 })
    expect(lines).toHaveLength(bad.length)
    // A lone surrogate cannot be canonical JSON: refused (RL-1006), not queued to fail a write later.
    l.record({ type: 'delegation.sent', peer: PEER, run_id: '\ud800' })
    expect(l.status().refused).toBe(bad.length + 1)
    expect(lines.at(-1)).toMatch(/RL-1006/)
    // A long detail is cut, not refused.
    l.record({ type: 'delegation.sent', peer: PEER, detail: 'd'.repeat(10_000) })
    await l.flush()
    expect(((await all(l)).at(-1)?.payload as { detail: string }).detail).toHaveLength(4096)
  })
})

describe('checkpoints and proofs', () => {
  it('a checkpoint is of kind "log", signed by the node key, and binds the ledger (log id, head, Merkle root, §4 state hash)', async () => {
    const path = join(await tempDir(), AUDIT_DB)
    const l = await ledgerAt(path, { chunkSize: 4 })
    for (let i = 0; i < 9; i++) l.record(fact(i))
    // checkpoint() writes what is queued first: the head it signs includes all nine.
    const cp = decodeCheckpoint(await l.checkpoint())
    verifyCheckpoint(cp, { expectedSigner: node.publicKey })
    expect(cp).toMatchObject({ version: 2, kind: 'log', at_seq: 9, log_id: l.logId(), state_hash: ledgerStateHash(10) })
    const digest = digestLog(await all(l))
    expect(checkpointBinding(cp, digest).filter((c) => !c.ok)).toEqual([])
    // The §4 state of a ledger is what the built-in reducer gives: it handles no audit.* type.
    expect(digest.state).toEqual({ version: 10, aggregates: {} })
    // Deterministic (logical timestamp, no wall clock): the same head signs the same bytes.
    expect(await l.checkpoint()).toBe(await l.checkpoint())
    expect(l.status().checkpoint).toEqual({ checkpoint_id: cp.checkpoint_id, at_seq: 9 })
    await closeLedger(l)
    const reopened = await ledgerAt(path)
    expect(decodeCheckpoint(reopened.latestCheckpoint() as string)).toEqual(cp)
  })

  it('every consistency and inclusion proof equals what merkle.ts builds from all the event hashes, across chunks and after a restart', async () => {
    const path = join(await tempDir(), AUDIT_DB)
    let l = await ledgerAt(path, { chunkSize: 4 })
    for (let i = 0; i < 22; i++) l.record(fact(i))
    await l.flush()
    const check = async (ledger: AuditLedger): Promise<void> => {
      const hashes = (await all(ledger)).map((e) => e.hash)
      const n = hashes.length
      for (let newSize = 0; newSize <= n; newSize++) {
        for (let oldSize = 0; oldSize <= newSize; oldSize++) {
          const proof = await ledger.consistency(oldSize, newSize)
          expect(proof, `${oldSize} → ${newSize}`).toEqual(buildConsistencyProof(hashes, oldSize, newSize))
          verifyConsistencyJson(proof)
        }
      }
      for (const size of [1, 4, 5, 16, 17, n]) {
        for (let seq = 0; seq < size; seq++) {
          const proof = await ledger.inclusion(seq, size)
          expect(proof, `${seq} in ${size}`).toEqual(buildInclusionProof(hashes, seq, size))
          verifyInclusionJson(proof)
        }
      }
    }
    await check(l)
    expect(l.size()).toBe(23)
    await closeLedger(l)
    // The chunk roots are read back from disk, the tail's leaves from its events.
    l = await ledgerAt(path)
    for (let i = 22; i < 27; i++) l.record(fact(i))
    await l.flush()
    await check(l)
    for (const [a, b] of [[-1, 2], [3, 2], [0, 29], [1.5, 2]]) {
      await expect(l.consistency(a as number, b as number)).rejects.toMatchObject({ code: 'RL-1007' })
    }
    await expect(l.inclusion(28)).rejects.toMatchObject({ code: 'RL-1007' })
  })

  it('the consistency proof between two checkpoints of a growing ledger verifies against both', async () => {
    const l = await ledgerAt(join(await tempDir(), AUDIT_DB), { chunkSize: 4 })
    for (let i = 0; i < 5; i++) l.record(fact(i))
    const older = decodeCheckpoint(await l.checkpoint())
    for (let i = 5; i < 14; i++) l.record(fact(i))
    const newer = decodeCheckpoint(await l.checkpoint())
    const proof = await l.consistency(older.at_seq + 1, newer.at_seq + 1)
    expect(checkLedgerConsistency(older, newer, proof)).toEqual(proof)
    expect(proof).toMatchObject({ old_root: older.merkle_root, new_root: newer.merkle_root })
    // And the same head against itself.
    expect(checkLedgerConsistency(newer, newer, await l.consistency(newer.at_seq + 1, newer.at_seq + 1)).path).toEqual([])
  })
})

describe('a node that rewrites its own audit history', () => {
  /** The same ledger written twice by the same key, from the same genesis; the second time fact 2 says something else. */
  async function honestAndRewritten (): Promise<{ honest: AuditLedger, forged: AuditLedger, older: Checkpoint, olderText: string }> {
    const honest = await ledgerAt(join(await tempDir(), AUDIT_DB), { chunkSize: 4 })
    for (let i = 0; i < 6; i++) honest.record(fact(i))
    const olderText = await honest.checkpoint()
    const forged = await ledgerAt(join(await tempDir(), AUDIT_DB), { chunkSize: 4 })
    for (let i = 0; i < 6; i++) forged.record(i === 2 ? fact(i, { detail: 'a delegation that never happened' }) : fact(i))
    await forged.flush()
    return { honest, forged, older: decodeCheckpoint(olderText), olderText }
  }

  it('the rewrite is a whole valid ledger: same genesis and log id, a valid chain, a checkpoint that verifies', async () => {
    const { honest, forged, older } = await honestAndRewritten()
    expect(forged.logId()).toBe(honest.logId())
    const events = await all(forged)
    expect(events[3]?.payload).toMatchObject({ detail: 'a delegation that never happened' })
    expect(events[3]?.hash).not.toBe((await all(honest))[3]?.hash)
    digestLog(events)
    const newer = decodeCheckpoint(await forged.checkpoint())
    verifyCheckpoint(newer, { expectedSigner: node.publicKey })
    expect(newer.at_seq).toBe(older.at_seq)
  })

  it('negative control: a naive check of each checkpoint on its own (signature, signer, log, order) accepts the rewrite', async () => {
    const { forged, older } = await honestAndRewritten()
    for (let i = 6; i < 10; i++) forged.record(fact(i))
    const newer = decodeCheckpoint(await forged.checkpoint())
    const naive = (a: Checkpoint, b: Checkpoint): boolean => {
      verifyCheckpoint(a, { expectedSigner: node.publicKey })
      verifyCheckpoint(b, { expectedSigner: node.publicKey })
      return a.log_id === b.log_id && a.signer === b.signer && a.at_seq <= b.at_seq
    }
    expect(naive(older, newer)).toBe(true)
  })

  it('the consistency check refuses it (RL-2202, rewritten), while the honest ledger grown as far passes', async () => {
    const { honest, forged, older } = await honestAndRewritten()
    for (let i = 6; i < 10; i++) {
      honest.record(fact(i))
      forged.record(fact(i))
    }
    const honestNewer = decodeCheckpoint(await honest.checkpoint())
    const forgedNewer = decodeCheckpoint(await forged.checkpoint())
    expect(forgedNewer.at_seq).toBe(honestNewer.at_seq)
    // Control: the same check passes the honest history.
    checkLedgerConsistency(older, honestNewer, await honest.consistency(older.at_seq + 1, honestNewer.at_seq + 1))
    // The proof the rewritten ledger can give leads to its own old root, not the one it signed before.
    const served = await forged.consistency(older.at_seq + 1, forgedNewer.at_seq + 1)
    verifyConsistencyJson(served)
    let caught: unknown
    try {
      checkLedgerConsistency(older, forgedNewer, served)
    } catch (err) {
      caught = err
    }
    expect(isReachError(caught, 'RL-2202')).toBe(true)
    expect((caught as ReachError).details).toMatchObject({ rewritten: true, old_size: older.at_seq + 1, old_root: served.old_root, expected_old_root: older.merkle_root })
    // Nor can it make up a path from the old root it signed to the new one: no path leads there.
    for (const path of [served.path, (await honest.consistency(older.at_seq + 1, honestNewer.at_seq + 1)).path]) {
      expect(() => checkLedgerConsistency(older, forgedNewer, { ...served, old_root: older.merkle_root, path })).toThrow(expect.objectContaining({ code: 'RL-2202' }))
    }
  })

  it('checkpoints that are not two heads of one ledger are RL-2120', async () => {
    const { honest } = await honestAndRewritten()
    const a = decodeCheckpoint(await honest.checkpoint())
    honest.record(fact(9))
    const b = decodeCheckpoint(await honest.checkpoint())
    const proof = await honest.consistency(a.at_seq + 1, b.at_seq + 1)
    const other = await ledgerAt(join(await tempDir(), AUDIT_DB), { random: seededRandom('another ledger') })
    const elsewhere = decodeCheckpoint(await other.checkpoint())
    const stranger = decodeCheckpoint(await honest.checkpoint(createSigner(generateKeyPair().seed)))
    expect(() => checkLedgerConsistency(b, a, proof)).toThrow(expect.objectContaining({ code: 'RL-2120' }))
    expect(() => checkLedgerConsistency(elsewhere, b, proof)).toThrow(expect.objectContaining({ code: 'RL-2120' }))
    expect(() => checkLedgerConsistency(a, stranger, proof)).toThrow(expect.objectContaining({ code: 'RL-2120' }))
    checkLedgerConsistency(a, b, proof)
  })
})

describe('storage failures', () => {
  it('a write the disk refuses is logged, counted and kept, never thrown at the caller; the next write takes it', async () => {
    const lines: string[] = []
    const logger: ComponentLogger = { forComponent: () => ({ info: () => {}, debug: () => {}, warn: (m) => { lines.push(m) } }) }
    const l = await ledgerAt(join(await tempDir(), AUDIT_DB), { logger, retryMs: 60_000 })
    const write = vi.spyOn(LevelEventStore.prototype, 'appendBatchWith').mockRejectedValueOnce(new ReachError('RL-5010', { message: 'no space left on device (ENOSPC)' }))
    expect(() => { l.record(fact(1)) }).not.toThrow()
    await l.flush()
    expect(write).toHaveBeenCalledTimes(1)
    expect(l.status()).toMatchObject({ size: 1, pending: 1, failed_writes: 1, last_error: { code: 'RL-5010' } })
    expect(lines.join('\n')).toMatch(/RL-5010/)
    // The retry (here forced by flush instead of waiting out the backoff) writes it.
    await l.flush()
    expect(l.status()).toMatchObject({ size: 2, pending: 0, failed_writes: 1 })
    expect((await all(l)).map((e) => e.type)).toEqual([LEDGER_CREATED, 'audit.delegation.sent'])
  })

  it('a failed write is retried by itself after the backoff, without anyone flushing', async () => {
    const l = await ledgerAt(join(await tempDir(), AUDIT_DB), { retryMs: 5 })
    const real = LevelEventStore.prototype.appendBatchWith
    const retried = deferred()
    vi.spyOn(LevelEventStore.prototype, 'appendBatchWith')
      .mockRejectedValueOnce(new ReachError('RL-5010', { message: 'no space left on device (ENOSPC)' }))
      .mockImplementationOnce(async function (this: LevelEventStore, ...args) {
        await real.apply(this, args)
        retried.resolve()
      })
    l.record(fact(1))
    await within(retried.promise, 'the ledger to retry its failed write')
    // The retry's own bookkeeping, not a write of flush's: nothing is queued any more.
    await l.flush()
    expect(l.status()).toMatchObject({ size: 2, pending: 0, failed_writes: 1 })
  })

  it('past maxPending new entries are dropped and counted, and the ledger says how many once it can write', async () => {
    const l = await ledgerAt(join(await tempDir(), AUDIT_DB), { maxPending: 2, retryMs: 60_000 })
    const write = vi.spyOn(LevelEventStore.prototype, 'appendBatchWith').mockRejectedValue(new ReachError('RL-5010', { message: 'read-only file system (EROFS)' }))
    for (let i = 0; i < 5; i++) l.record(fact(i))
    await l.flush()
    expect(l.status()).toMatchObject({ size: 1, pending: 2, dropped: 3 })
    write.mockRestore()
    await l.flush()
    const events = await all(l)
    expect(events.map((e) => e.type)).toEqual([LEDGER_CREATED, LEDGER_DROPPED, 'audit.delegation.sent', 'audit.delegation.sent'])
    expect(events[1]?.payload).toMatchObject({ count: 3 })
    expect(events.slice(2).map((e) => (e.payload as { detail: string }).detail)).toEqual(['delegation 0', 'delegation 1'])
    digestLog(events)
  })

  it('a ledger that cannot make its first event fails to open with the storage code', async () => {
    vi.spyOn(LevelEventStore.prototype, 'appendBatchWith').mockRejectedValue(new ReachError('RL-5010', { message: 'no space left on device (ENOSPC)' }))
    await expect(AuditLedger.open({ path: join(await tempDir(), AUDIT_DB), signer })).rejects.toMatchObject({ code: 'RL-5010' })
  })
})

describe('reading', () => {
  it('since, type (exact or a kind) and limit; a full page says where the next starts', async () => {
    const l = await ledgerAt(join(await tempDir(), AUDIT_DB))
    l.record(fact(1))
    l.record({ type: 'delegation.served', peer: PEER })
    l.record({ type: 'verification.ok', peer: PEER })
    l.record(fact(2))
    await l.flush()
    const types = async (q: Parameters<AuditLedger['list']>[0]): Promise<string[]> => (await l.list(q)).events.map((e) => `${e.seq}:${e.type}`)
    expect(await types({ type: 'delegation.sent' })).toEqual(['1:audit.delegation.sent', '4:audit.delegation.sent'])
    expect(await types({ type: 'audit.delegation.sent' })).toEqual(['1:audit.delegation.sent', '4:audit.delegation.sent'])
    expect(await types({ type: 'delegation' })).toEqual(['1:audit.delegation.sent', '2:audit.delegation.served', '4:audit.delegation.sent'])
    expect(await types({ type: 'delegation.se' })).toEqual([])
    expect(await types({ since: 2 })).toEqual(['3:audit.verification.ok', '4:audit.delegation.sent'])
    const page = await l.list({ limit: 2 })
    expect(page.events.map((e) => e.seq)).toEqual([0, 1])
    expect(page.next).toBe(1)
    const rest = await l.list({ since: page.next, limit: 10 })
    expect(rest.events.map((e) => e.seq)).toEqual([2, 3, 4])
    expect(rest.next).toBeUndefined()
  })

  it('the API query parser refuses a bad seq, limit (RL-1003) or type (RL-1011)', () => {
    expect(auditQueryOf(new URLSearchParams('since=3&type=delegation.sent&limit=5'))).toEqual({ since: 3, type: 'delegation.sent', limit: 5 })
    for (const [q, c] of [['since=-1', 'RL-1003'], ['since=1.5', 'RL-1003'], ['since=x', 'RL-1003'], ['limit=0', 'RL-1003'], ['limit=all', 'RL-1003'], ['type=Bad Type', 'RL-1011'], ['type=', 'RL-1011']] as const) {
      expect(() => auditQueryOf(new URLSearchParams(q)), q).toThrow(expect.objectContaining({ code: c }))
    }
  })

  it('without a key the ledger only reads: a missing one reads as empty and is not made; one held by a node is RL-5008', async () => {
    const dir = await tempDir()
    const path = join(dir, AUDIT_DB)
    const absent = await AuditLedger.open({ path })
    expect((await absent.list()).events).toEqual([])
    absent.record(fact(1))
    expect(absent.status()).toMatchObject({ size: 0, dropped: 1 })
    await absent.close()
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' })
    const writer = await ledgerAt(path)
    writer.record(fact(1))
    await writer.flush()
    await expect(AuditLedger.open({ path })).rejects.toMatchObject({ code: 'RL-5008' })
    await closeLedger(writer)
    const reader = await AuditLedger.open({ path })
    expect((await reader.list()).events.map((e) => e.type)).toEqual([LEDGER_CREATED, 'audit.delegation.sent'])
    await expect(reader.checkpoint()).rejects.toMatchObject({ code: 'RL-1011' })
    await reader.close()
  })
})
