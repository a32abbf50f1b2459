/**
 * Remote verification end to end over the log protocol, on in-memory stream pairs: a LogServer
 * serves a run, `fetchLog` streams it (each event chain-checked on arrival), `verifyRemoteRun`
 * replays it as it comes and binds it to the peer's signed checkpoint.
 *
 * The golden run (test/fixtures/runs/, a recorded run of the `report` pack) must come back
 * REPLAY_VERIFIED; each mutated twin must fail with its named code. Then: what a peer can make
 * a verifier hold (a batch at a time, whatever it announces), batches measured in bytes as sent,
 * and an event larger than a batch.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Stream } from '@libp2p/interface'
import { streamPair } from '@libp2p/utils'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { canonicalize, type JsonObject } from '../../protocol/canonical.ts'
import { createCheckpoint, decodeCheckpoint, encodeCheckpoint } from '../../protocol/checkpoint.ts'
import { digestLog } from '../../protocol/digest.ts'
import { isReachError } from '../../protocol/errors.ts'
import { computeEventHash, nextEvent, type Event } from '../../protocol/event.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { peerIdOfPublicKey } from '../../protocol/peer-id.ts'
import { recordOf, runOutcomeHash, type RunRecord } from '../../protocol/run.ts'
import { LOG_BATCH_BYTES, MAX_FRAME, PROTOCOLS } from '../../protocol/wire.ts'
import { buildBundle } from '../../packs/bundle.ts'
import { defaultPolicy } from '../../packs/policy.ts'
import type { StoredPack } from '../../packs/trust.ts'
import type { Dialer, RunSource } from '../../federation/components.ts'
import { frames } from '../../federation/frames.ts'
import { fetchLog } from '../../federation/log-client.ts'
import { LogServer } from '../../federation/log-server.ts'
import { verifyRemoteRun, type RemoteVerdict } from '../../federation/verify.ts'
import { silentLogger } from '../../node/logger.ts'
import { testEngine } from '../packs/helpers.ts'

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/runs/${name}`, import.meta.url))
const expected = JSON.parse(readFileSync(fixture('expected.json'), 'utf8'))
const GOLDEN: Event[] = readFileSync(fixture('report.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Event)
const GOLDEN_CHECKPOINT = readFileSync(fixture('report.checkpoint'), 'utf8')
const REPORT = fileURLToPath(new URL('../../packs/examples/report', import.meta.url))

let engine: Awaited<ReturnType<typeof testEngine>>
let pack: StoredPack
beforeAll(async () => {
  engine = await testEngine()
  pack = { ...await buildBundle(REPORT), signatures: [] }
})
afterAll(async () => { await engine.sandboxes.close() })

/** What a peer serves: one run, its checkpoint text, and (optionally) a header count other than its length. */
interface Served { runId: string, events: Event[], checkpoint: string, announced?: number, packCid?: string }

function source (s: Served): RunSource {
  // What the peer says of the run: finished, of this pack, this many events (it may be lying).
  const record = { ...recordOf(s.runId, GOLDEN), status: 'completed', artifact_hash: s.packCid ?? pack.cid, events: s.announced ?? s.events.length } as RunRecord
  return {
    record: async () => record,
    checkpointText: async () => s.checkpoint,
    async * stream () { yield * s.events }
  }
}

/** A LogServer for `served`, reached through a Dialer that hands it the far end of a stream pair. */
async function peer (served: Served, signer: string): Promise<{ dialer: Dialer, peer: string, server: LogServer }> {
  const server = new LogServer({ registrar: { handle: async () => {}, unhandle: async () => {} }, runs: source(served), logger: silentLogger })
  const dialer: Dialer = {
    dial: async (_peer, protocol) => {
      expect(protocol).toBe(PROTOCOLS.log)
      const [client, far] = await streamPair()
      void server.serve(far, 'client')
      return client
    },
    connectedPeers: () => []
  }
  return { dialer, peer: peerIdOfPublicKey(signer), server }
}

async function verify (served: Served, signer = decodeCheckpoint(served.checkpoint).signer, options: Parameters<typeof verifyRemoteRun>[3] = {}): Promise<RemoteVerdict | string> {
  const p = await peer(served, signer)
  try {
    const log = await fetchLog(p.dialer, p.peer, served.runId)
    return await verifyRemoteRun(log, pack, engine, options)
  } catch (err) {
    return isReachError(err) ? `${err.code}${err.seq === undefined ? '' : `@${err.seq}`}` : `not a ReachError: ${String(err)}`
  }
}

/** Rechain from the first event on (a forger's whole chain) and sign its checkpoint with `seed`. */
function forged (events: Event[], seed: Uint8Array): { events: Event[], checkpoint: string } {
  const out: Event[] = []
  for (const e of events) out.push(nextEvent(out.at(-1) ?? null, { type: e.type, aggregate_id: e.aggregate_id, payload: e.payload, metadata: e.metadata }))
  const d = digestLog(out, { reduce: false })
  const cp = createCheckpoint({ kind: 'run', log_id: d.log_id, at_seq: d.last_seq, state_hash: runOutcomeHash(recordOf('run_' + '0'.repeat(20), out)), log_hash: d.log_hash, merkle_root: d.merkle_root, timestamp: d.timestamp }, createSigner(seed))
  return { events: out, checkpoint: encodeCheckpoint(cp) }
}

const golden = (): Served => ({ runId: expected.run_id, events: structuredClone(GOLDEN), checkpoint: GOLDEN_CHECKPOINT })

describe('the golden run, fetched from a peer and replayed here', () => {
  it('is REPLAY_VERIFIED, with the recorded fingerprint and the peer\'s checkpoint', async () => {
    expect(pack.cid).toBe(expected.pack_cid)
    expect(GOLDEN.map((e) => e.type)).toEqual(expected.types)
    const verdict = await verify(golden())
    expect(verdict).toMatchObject({ verified: true, record: { fingerprint: expected.fingerprint, checkpoint_id: expected.checkpoint_id, status: 'completed' } })
  })

  it('with a signed delegation claim: the head and the fingerprint it named must be the log\'s', async () => {
    const last = GOLDEN.at(-1) as Event
    expect(await verify(golden(), undefined, { claim: { head: { seq: last.seq, hash: last.hash }, record: { fingerprint: expected.fingerprint } } })).toMatchObject({ verified: true })
    expect(await verify(golden(), undefined, { claim: { head: { seq: last.seq, hash: 'f'.repeat(64) } } })).toBe('RL-4014')
    expect(await verify(golden(), undefined, { claim: { record: { fingerprint: 'f'.repeat(64) } } })).toBe('RL-4014')
  })
})

describe('its mutated twins fail with their codes', () => {
  it('an event edited in place (its hash not recomputed): RL-2001 at that seq', async () => {
    const s = golden()
    ;((s.events[4] as Event).payload as JsonObject).result = { hex: '00'.repeat(16) }
    expect(await verify(s)).toBe('RL-2001@4')
  })

  it('the checkpoint signed by another key than the peer we asked: RL-2106', async () => {
    const other = generateKeyPair()
    const re = forged(GOLDEN, other.seed)
    // The peer we dial is the golden signer; the log it serves carries another key's checkpoint.
    expect(await verify({ runId: expected.run_id, events: re.events, checkpoint: re.checkpoint }, expected.signer)).toBe(`RL-2106@${GOLDEN.length - 1}`)
  })

  it('a forger\'s whole chain, re-signed, with an answer no tool gives: REPLAY_DIVERGED at that seq', async () => {
    const key = generateKeyPair()
    const events = structuredClone(GOLDEN)
    ;((events[4] as Event).payload as JsonObject).result = { hex: 'abc' }
    const re = forged(events, key.seed)
    const verdict = await verify({ runId: expected.run_id, events: re.events, checkpoint: re.checkpoint })
    expect(verdict).toMatchObject({ verified: false, divergence: { seq: 4, code: 'RL-3017' } })
  })

  it('a run id that is not one: RL-3019 before anything is sent (the peer would call the frame malformed)', async () => {
    const p = await peer(golden(), decodeCheckpoint(GOLDEN_CHECKPOINT).signer)
    let dials = 0
    const counting: Dialer = { ...p.dialer, dial: async (...args) => { dials++; return await p.dialer.dial(...args) } }
    for (const bad of ['run_doesnotexist', '../../etc/passwd', expected.run_id + '0']) {
      await expect(fetchLog(counting, p.peer, bad)).rejects.toMatchObject({ code: 'RL-3019' })
    }
    expect(dials).toBe(0)
    // Control: the same dialer with the real id does dial and gets the log.
    const log = await fetchLog(counting, p.peer, expected.run_id)
    log.close()
    expect(dials).toBe(1)
  })

  it('the log cut short: RL-4014 (the header already says it is not the signed one)', async () => {
    expect(await verify({ ...golden(), events: GOLDEN.slice(0, -1), announced: GOLDEN.length - 1 })).toBe('RL-4014')
  })

  it('fewer events than announced: RL-4014 at the end', async () => {
    expect(await verify({ ...golden(), events: GOLDEN.slice(0, -1) })).toBe('RL-4014')
  })

  it('more events than announced: RL-4014 as soon as they come', async () => {
    const extra = nextEvent(GOLDEN.at(-1) as Event, { type: 'RunCompleted', aggregate_id: 'run', payload: null })
    expect(await verify({ ...golden(), events: [...GOLDEN, extra] })).toBe('RL-4014')
  })

  it('a header naming another pack: RL-4014', async () => {
    expect(await verify({ ...golden(), packCid: 'bafyreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' })).toBe('RL-4014')
  })

  it('a budget over what this node spends on a replay: RL-3010 before it runs', async () => {
    const max = { ...defaultPolicy().max_budget, fuel: 10 }
    expect(await verify(golden(), undefined, { maxBudget: max })).toBe('RL-3010')
  })

  it('a checkpoint of a log, not of a run: RL-4014', async () => {
    const key = generateKeyPair()
    const d = digestLog(GOLDEN, { reduce: false })
    const cp = createCheckpoint({ kind: 'log', log_id: d.log_id, at_seq: d.last_seq, state_hash: runOutcomeHash(recordOf(expected.run_id, GOLDEN)), log_hash: d.log_hash, merkle_root: d.merkle_root, timestamp: d.timestamp }, createSigner(key.seed))
    expect(await verify({ ...golden(), checkpoint: encodeCheckpoint(cp) })).toBe('RL-4014')
  })
})

describe('what a peer can make a verifier hold', () => {
  it('a peer announcing a million events and streaming garbage is refused at the first bad event, and the stream is dropped', async () => {
    const key = generateKeyPair()
    const re = forged(GOLDEN, key.seed)
    const first = re.events[0] as Event
    // A checkpoint the peer signed for a log of a million events, so the header passes.
    const cp = encodeCheckpoint(createCheckpoint({ kind: 'run', log_id: first.hash, at_seq: 999_999, state_hash: 'a'.repeat(64), log_hash: 'b'.repeat(64), merkle_root: 'c'.repeat(64), timestamp: 999_999 }, createSigner(key.seed)))
    let asked = 0
    const [client, far] = await streamPair()
    const dialer: Dialer = { dial: async () => client, connectedPeers: () => [] }
    // A hand-rolled server: the header, then batches of 1,000 events that do not chain, until the stream breaks.
    const serving = (async () => {
      const fs = frames(far, MAX_FRAME.request)
      await fs.read(['log.get'])
      await fs.write({ v: 1, type: 'log', run_id: expected.run_id, events: 1_000_000, pack_cid: pack.cid, checkpoint: cp })
      const bad = [first, ...Array.from({ length: 999 }, (_, i) => ({ ...first, seq: i + 1 }))]
      try {
        for (;;) {
          // A batch per log.next, as the protocol says: the client asks for the next only once
          // its replay has consumed the last.
          await fs.read(['log.next'])
          asked++
          await fs.write({ v: 1, type: 'log.events', events: bad })
        }
      } catch {
        // the client reset the stream
      }
    })()
    const log = await fetchLog(dialer, peerIdOfPublicKey(key.publicKey), expected.run_id)
    expect(log.announced).toBe(1_000_000)
    const code = await verifyRemoteRun(log, pack, engine).then(() => 'verified', (err: unknown) => isReachError(err) ? `${err.code}@${String(err.seq)}` : String(err))
    // The second event does not link to the first.
    expect(code).toBe('RL-2002@1')
    await serving
    // The client asked for one batch, refused it, and dropped the stream: a million announced
    // events cost it one batch.
    expect(asked).toBe(1)
  })

  it('the server cuts batches by bytes as sent (UTF-8), and an event larger than a batch goes alone', async () => {
    // Events whose UTF-16 length is a third of their UTF-8 size: three of them fit a megabyte by
    // length, but not by bytes.
    const wide = '語'.repeat(300_000)
    const events: Event[] = [nextEvent(null, { type: 'RunStarted', aggregate_id: 'run', payload: {} })]
    for (let i = 0; i < 3; i++) events.push(nextEvent(events.at(-1) as Event, { type: 'Note', aggregate_id: 'run', payload: { wide } }))
    // And one event alone larger than a batch (1.5 MiB of UTF-8).
    events.push(nextEvent(events.at(-1) as Event, { type: 'Note', aggregate_id: 'run', payload: { wide: '語'.repeat(520_000) } }))
    const key = generateKeyPair()
    const d = digestLog(events, { reduce: false })
    const checkpoint = encodeCheckpoint(createCheckpoint({ kind: 'run', log_id: d.log_id, at_seq: d.last_seq, state_hash: 'a'.repeat(64), log_hash: d.log_hash, merkle_root: d.merkle_root, timestamp: d.timestamp }, createSigner(key.seed)))
    const server = new LogServer({ registrar: { handle: async () => {}, unhandle: async () => {} }, runs: source({ runId: expected.run_id, events, checkpoint }), logger: silentLogger })
    const [client, far] = await streamPair()
    void server.serve(far, 'client')
    const fs = frames(client as Stream, MAX_FRAME.logBatch)
    await fs.write({ v: 1, type: 'log.get', run_id: expected.run_id })
    expect((await fs.read(['log'])).type).toBe('log')
    const sizes: Array<{ events: number, bytes: number }> = []
    for (;;) {
      await fs.write({ v: 1, type: 'log.next' })
      const raw = await fs.readBytes(MAX_FRAME.logBatch)
      const frame = JSON.parse(Buffer.from(raw).toString('utf8')) as { type: string, events?: unknown[] }
      if (frame.type === 'log.end') break
      sizes.push({ events: frame.events?.length ?? 0, bytes: raw.length })
    }
    // RunStarted with the first wide event, then one wide event per batch, then the large one alone.
    expect(sizes.map((s) => s.events)).toEqual([2, 1, 1, 1])
    for (const s of sizes.slice(0, 3)) expect(s.bytes).toBeLessThanOrEqual(LOG_BATCH_BYTES + 100)
    expect(sizes[3]?.bytes).toBeGreaterThan(LOG_BATCH_BYTES)
    // And the client takes the large one whole: the chain holds across every batch.
    const p = await peer({ runId: expected.run_id, events, checkpoint }, key.publicKey)
    const log = await fetchLog(p.dialer, p.peer, expected.run_id)
    let got = 0
    for await (const batch of log.batches) got += batch.length
    expect(got).toBe(events.length)
    expect(computeEventHash(events[4] as Event)).toBe((events[4] as Event).hash)
    expect(canonicalize((events[4] as Event).payload).length).toBeGreaterThan(500_000)
  })
})
