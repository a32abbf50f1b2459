/**
 * The head store under racing messages (issue 13 §1): a ledger head's check waits (a consistency
 * proof from its signer), and a message for an older position arriving meanwhile must never roll
 * the head back. The witness and a real WitnessStore (LevelDB) are driven through the gossip
 * interface they are given; the negative control is the naive check-then-set, which the same
 * two messages do roll back. Evidence and heads survive a reopen.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { createCheckpoint, encodeCheckpoint, type Checkpoint } from '../../protocol/checkpoint.ts'
import { encodeGossip } from '../../protocol/gossip.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { peerIdOfPublicKey } from '../../protocol/peer-id.ts'
import type { GossipMessageIn, GossipResult } from '../../federation/components.ts'
import { Witness } from '../../federation/witness.ts'
import { silentLogger } from '../../node/logger.ts'
import { WitnessStore } from '../../node/witness-store.ts'
import { deferred, within } from '../await.ts'

const dirs: string[] = []
afterAll(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }) })

const signer = createSigner(generateKeyPair().seed)
const peer = peerIdOfPublicKey(signer.publicKey)
const LOG = '4'.repeat(64)
const head = (seq: number): string => {
  const h = (seq + 1).toString(16).padStart(64, '0')
  return encodeCheckpoint(createCheckpoint({ kind: 'log', log_id: LOG, at_seq: seq, state_hash: h, log_hash: h, merkle_root: h, timestamp: seq }, signer))
}

async function store (): Promise<WitnessStore> {
  const dir = await mkdtemp(join(os.tmpdir(), 'reach-witness-store-'))
  dirs.push(dir)
  return await WitnessStore.open(join(dir, 'witness.db'))
}

/** A witness on `records`, fed by hand; each consistency check waits for the gate its newer position names. */
function witnessOn (records: WitnessStore, gates: Map<number, Promise<void>>): { witness: Witness, deliver: (text: string) => Promise<GossipResult> } {
  let handler: ((m: GossipMessageIn) => void) | undefined
  const witness = new Witness({
    self: 'self',
    federation: 'f',
    gossip: { subscribe: () => {}, unsubscribe: () => {}, publish: async () => {}, onMessage: (h) => { handler = h; return () => {} } },
    records,
    peers: { knows: () => true, untrusted: () => false, distrust: () => {}, recordVerificationFailure: () => {} },
    verify: async () => { throw new Error('not asked') },
    consistency: async (_peer, _older, _olderText, newer: Checkpoint) => { await gates.get(newer.at_seq); return undefined },
    logger: silentLogger
  })
  const deliver = async (text: string): Promise<GossipResult> => await new Promise((resolve) => {
    handler?.({ topic: witness.topic('checkpoints'), data: encodeGossip('f', { kind: 'checkpoints', checkpoint: text }), from: peer, report: resolve })
  })
  return { witness, deliver }
}

describe('the head store under racing messages', () => {
  it('a newer head whose check is slow, and an older one whose check is fast: the head ends at the newer', async () => {
    const records = await store()
    const slow = deferred()
    const { witness, deliver } = witnessOn(records, new Map([[5, slow.promise]]))
    await witness.start()
    try {
      expect(await deliver(head(1))).toBe('accept')
      const newer = deliver(head(5))
      const older = deliver(head(3))
      slow.resolve()
      expect(await within(newer, 'the newer head')).toBe('accept')
      expect(await within(older, 'the older head')).toBe('ignore')
      expect(records.head(signer.publicKey, LOG)?.at_seq).toBe(5)
    } finally {
      await witness.stop()
      await records.close()
    }
  })

  it('the naive check-then-set (no queue, a plain set) rolls the same head back: the race is real', async () => {
    const held = new Map<string, number>()
    const slow = deferred()
    const naive = async (seq: number, check: Promise<void>): Promise<void> => {
      const before = held.get(LOG)
      if (before !== undefined && seq < before) return
      await check
      held.set(LOG, seq)
    }
    held.set(LOG, 1)
    const newer = naive(5, slow.promise)
    const older = naive(3, Promise.resolve())
    await older
    slow.resolve()
    await newer
    // The older message's check finished first and the newer one's set came last... then the
    // other order: the older one checked before the newer was set, and sets after it.
    const again = deferred()
    held.set(LOG, 1)
    const n2 = naive(5, Promise.resolve())
    const o2 = naive(3, again.promise)
    await n2
    again.resolve()
    await o2
    expect(held.get(LOG)).toBe(3)
  })

  it('an older message checked while a newer one was set is still not a new head, with the store\'s compare-and-set alone', async () => {
    const records = await store()
    expect(records.advance(signer.publicKey, LOG, { checkpoint_id: 'a', at_seq: 5, text: head(5) })).toBe(true)
    expect(records.advance(signer.publicKey, LOG, { checkpoint_id: 'b', at_seq: 3, text: head(3) })).toBe(false)
    expect(records.advance(signer.publicKey, LOG, { checkpoint_id: 'c', at_seq: 5, text: head(5) })).toBe(false)
    expect(records.head(signer.publicKey, LOG)?.checkpoint_id).toBe('a')
    await records.close()
  })

  it('heads and evidence survive a reopen, and convict their signer again', async () => {
    const dir = await mkdtemp(join(os.tmpdir(), 'reach-witness-reopen-'))
    dirs.push(dir)
    const path = join(dir, 'witness.db')
    const first = await WitnessStore.open(path)
    first.advance(signer.publicKey, LOG, { checkpoint_id: 'x', at_seq: 9, text: head(9) })
    await first.putEvidence({ id: 'e1', type: 'reach.equivocation', signer: signer.publicKey, log_id: LOG, at_seq: 9, text: '{}', from: 'p', received_at: 1 })
    await first.close()
    const again = await WitnessStore.open(path)
    try {
      expect(again.head(signer.publicKey, LOG)?.at_seq).toBe(9)
      expect([...again.convicted()]).toEqual([{ signer: signer.publicKey, type: 'reach.equivocation', id: 'e1' }])
      expect(again.evidence('e1')?.type).toBe('reach.equivocation')
    } finally {
      await again.close()
    }
  })
})
