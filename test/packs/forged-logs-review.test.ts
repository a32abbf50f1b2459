/**
 * A security review of the replay verifier, after the first corpus (forged-logs.test.ts) was
 * refused: twenty more forged logs that the replay of then called REPLAY_VERIFIED, and verdicts
 * that named the wrong cause. Each block is one hole, graded by the review; each test shows the
 * forgery fools the naive replay (the negative control) and is refused here with code and seq.
 * The "controls" show the set-up is honest (a log of the same shape verifies), so each refusal
 * is the forgery's, not the fixture's.
 *
 * The attacker is the node that ran the pack: it holds its own key (and can mint others), so its
 * logs are whole chains with valid signatures. The forger's run loop and the naive replay are in
 * forgery.ts.
 */
import { mkdtemp } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { streamPair } from '@libp2p/utils'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JsonObject, JsonValue } from '../../protocol/canonical.ts'
import { createCheckpoint, encodeCheckpoint } from '../../protocol/checkpoint.ts'
import { verifyChain } from '../../protocol/chain.ts'
import { isReachError, ReachError } from '../../protocol/errors.ts'
import { nextEvent, type Event } from '../../protocol/event.ts'
import { hashCanonical } from '../../protocol/hash.ts'
import { createSigner, generateKeyPair, signDomain } from '../../protocol/keys.ts'
import { HOP_SIGNATURE_KIND, hopBody } from '../../protocol/wire.ts'
import { peerIdOfPublicKey } from '../../protocol/peer-id.ts'
import { fingerprintOf, runOutcomeHash } from '../../protocol/run.ts'
import { MAX_FRAME } from '../../protocol/wire.ts'
import { buildBundle } from '../../packs/bundle.ts'
import type { StoredPack } from '../../packs/trust.ts'
import { ArrayCursor, replayRun, runPackOf, type RunPack } from '../../packs/run/index.ts'
import { hostTools } from '../../packs/tools/index.ts'
import type { Dialer } from '../../federation/components.ts'
import { frames } from '../../federation/frames.ts'
import { fetchLog } from '../../federation/log-client.ts'
import { verifyRemoteRun } from '../../federation/verify.ts'
import { ensureHome, homePaths } from '../../node/home.ts'
import { RunStore } from '../../node/runs.ts'
import { manifest, testEngine, writePack } from './helpers.ts'
import { BUDGET, DELEGATING, LEDGER, forge as forgeLog, memoryKv, naive as naiveReplay, pack, type ForgeOptions } from './forgery.ts'
import type { Budget } from '../../packs/manifest.ts'

const POLICY = { version: 'c'.repeat(64), granted: ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch'] }

/** Some other pack an honest peer ran for the forger earlier: a big balance. */
const OTHER_CHILD = `
export function init (input) { return { input } }
export function reduce (s) { return { state: s, output: { balance: s.input * 1000 } } }`

/** kv.get (within a budget of 1 call), then clock.now twice: past the budget. The output is the codes seen. */
const GATED = `
export function init () { return { seen: [] } }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [{ tool: 'kv.get', args: { key: 'k' } }, { tool: 'clock.now', args: {} }, { tool: 'clock.now', args: {} }] }
  const seen = [...s.seen, e.error ? e.error.code : 'ok']
  if (seen.length === 3) return { state: s, output: seen }
  return { state: { ...s, seen } }
}`

/** Makes the one effect its input names; the output is the answer it got. */
const ONE = `
export function init (input) { return input }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [s] }
  return { state: s, output: { type: e.type, result: e.result === undefined ? null : e.result, code: e.error ? e.error.code : null } }
}`

const ledger = pack('ledger', LEDGER, ['clock.now', 'random.bytes', 'kv.put', 'kv.get'], 'bafyledgerpackaaaa')
const delegating = pack('parent', DELEGATING, ['reach.delegate'], 'bafyparentpackcccc')
const otherChild = pack('other', OTHER_CHILD, [], 'bafyotherchildpackdd')
const gated = pack('gated', GATED, ['kv.get', 'clock.now'], 'bafygatedpackeeee')
const one = pack('one', ONE, ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch'], 'bafyonepackffff')

let engine: Awaited<ReturnType<typeof testEngine>>
const storeKey = generateKeyPair()
let store: RunStore
/** An honest peer P, with its own run store (its runs are signed with its key). */
const honestPeerKey = generateKeyPair()
let honestPeerStore: RunStore
/** The ledger pack as a real bundle (remote verification needs a CID it can check). */
let ledgerBundle: StoredPack

beforeAll(async () => {
  engine = await testEngine()
  store = new RunStore(await ensureHome(homePaths(await mkdtemp(join(os.tmpdir(), 'reach-review-')))), storeKey.seed)
  honestPeerStore = new RunStore(await ensureHome(homePaths(await mkdtemp(join(os.tmpdir(), 'reach-review-peer-')))), honestPeerKey.seed)
  const dir = await writePack(await mkdtemp(join(os.tmpdir(), 'reach-review-pack-')), manifest({ name: 'ledger', capabilities: ['clock.now', 'random.bytes', 'kv.put', 'kv.get'], budget: BUDGET }), { 'index.js': LEDGER })
  ledgerBundle = { ...await buildBundle(dir), signatures: [] }
})
afterAll(async () => {
  await store.close()
  await honestPeerStore.close()
  await engine.sandboxes.close()
})

/** The forger's run loop and the naive replay (forgery.ts), with this file's budget and policy. */
const forge = async (p: RunPack, o: Omit<ForgeOptions, 'budget' | 'policy'> & { budget?: Budget }): Promise<Event[]> =>
  await forgeLog(engine, p, { budget: BUDGET, policy: POLICY, ...o })
const naive = async (events: Event[], packs: Map<string, RunPack>): Promise<boolean> => await naiveReplay(engine, events, packs)

const byName = new Map([['ledger', ledger], ['parent', delegating], ['gated', gated], ['one', one]])

/** A whole chain that fools the naive replay, and is refused here with code@seq. */
async function expectRefused (events: Event[], p: RunPack, code: string, seq: number, because?: RegExp): Promise<void> {
  expect(verifyChain(events).ok).toBe(true)
  expect(await naive(events, byName)).toBe(true)
  const verdict = await replayRun(p, engine, new ArrayCursor(events))
  expect(verdict.ok ? { verified: true, output: verdict.outcome.output ?? null } : { code: verdict.divergence.code, seq: verdict.divergence.seq }).toEqual({ code, seq })
  if (because !== undefined && !verdict.ok) expect(verdict.divergence.reason).toMatch(because)
}

/** A run started as a node starts one of its own (a root lineage: it may delegate). */
const root = (p: JsonObject): JsonObject => ({ ...p, lineage: { depth: 0, ancestry: [] } })

/** The grant the run loop computes for DELEGATING's one call (half of what is left). */
const grantOf = (used: number): number => Math.floor((BUDGET.fuel - used) / 2)

/** A checkpoint of a run that never existed, signed by `seed`, for this outcome. */
function mintedCheckpoint (seed: Uint8Array, output: JsonValue, over: { kind?: 'run' | 'log', at_seq?: number } = {}): string {
  const atSeq = over.at_seq ?? 3
  return encodeCheckpoint(createCheckpoint({ kind: over.kind ?? 'run', log_id: 'a'.repeat(64), at_seq: atSeq, state_hash: runOutcomeHash({ status: 'completed', output_hash: hashCanonical(output), error: null }), log_hash: 'b'.repeat(64), merkle_root: 'c'.repeat(64), timestamp: atSeq }, createSigner(seed)))
}

/** A lineage as the delegation server records it: one hop, from `from` to `to` (the node running this run). */
/** A one-hop lineage `from` → `to`, signed by `from` (whose seed is given), as a delegation server records it. */
function lineage (fromSeed: Uint8Array, to: string): JsonObject {
  const from = peerIdOfPublicKey(createSigner(fromSeed).publicKey)
  const hop = { from, to, request: '0'.repeat(64) }
  const signature = Buffer.from(signDomain(createSigner(fromSeed), HOP_SIGNATURE_KIND, hopBody(0, hop, null))).toString('base64url')
  return { depth: 1, ancestry: [{ ...hop, signature }], deadline: 4_000_000_000_000 }
}

// ---------------------------------------------------------------------------------------------

describe('controls', () => {
  it('an honest GATED run (clock.now granted, past the budget: RL-3016 twice) verifies', async () => {
    const spent = { code: 'RL-3016', message: "the run's budget of 1 tool calls is spent" }
    const events = await forge(gated, { input: null, budget: { ...BUDGET, tool_calls: 1 }, decide: (r) => r.tool === 'kv.get' ? { result: { value: null } } : { deny: spent } })
    expect(await replayRun(gated, engine, new ArrayCursor(events))).toMatchObject({ ok: true, outcome: { output: ['ok', 'RL-3016', 'RL-3016'] } })
  })

  it('an honest ONE run (random.bytes n=8) verifies', async () => {
    const events = await forge(one, { input: { tool: 'random.bytes', args: { n: 8 } }, decide: () => ({ result: { hex: '00'.repeat(8) } }) })
    expect((await replayRun(one, engine, new ArrayCursor(events))).ok).toBe(true)
  })

  it('an honest ledger log streamed one event a batch and ended with log.end verifies remotely', async () => {
    expect(await served('end')).toMatchObject({ verified: true })
  })
})

describe('CRITICAL: a delegated result must be the child run it claims to be', () => {
  it('a genuine result an honest peer signed for ANOTHER pack, input and fuel budget, given as the answer to this call', async () => {
    // P really ran `other` (not bafyexamplechild) on input 999 (not 1) with 1,000,000 fuel (ten
    // times the parent's whole budget), and signed it. The forger replays that answer here.
    const child = await honestPeerStore.start({ pack: otherChild, input: 999, budget: { ...BUDGET, fuel: 1_000_000 }, policy: POLICY, engine, tools: new Map() })
    expect(child.record.artifact_hash).not.toBe('bafyexamplechild')
    expect(child.record.input_hash).not.toBe(hashCanonical(1))
    const peer = peerIdOfPublicKey(honestPeerKey.publicKey)
    const events = await forge(delegating, {
      input: null,
      decide: (_r, _i, used) => ({ result: { peer, status: 'completed', output: child.outcome.output as JsonValue, run_id: child.record.run_id, fingerprint: child.record.fingerprint, checkpoint: child.checkpointText, fuel_granted: grantOf(used) } })
    })
    // The replay of then said { verified: true, output: { child: { balance: 999000 } } }. Now
    // RL-3017 at the ToolResult (seq 2): the signed child run is not of args.pack / args.input.
    await expectRefused(events, delegating, 'RL-3017', 2)
  })

  it("fingerprint and run_id taken as free: a minted key's checkpoint with a fingerprint of nothing", async () => {
    const minted = generateKeyPair()
    const output = { balance: 1_000_000 }
    const events = await forge(delegating, {
      input: null,
      decide: (_r, _i, used) => ({ result: { peer: peerIdOfPublicKey(minted.publicKey), status: 'completed', output, run_id: 'run_' + '1'.repeat(20), fingerprint: hashCanonical('nothing'), checkpoint: mintedCheckpoint(minted.seed, output), fuel_granted: grantOf(used) } })
    })
    // RL-3017 at seq 2 (the fingerprint is not that of a record whose
    // event_log_hash is the checkpoint's log_hash, artifact_hash args.pack, input_hash hash(args.input)).
    await expectRefused(events, delegating, 'RL-3017', 2)
  })
})

/** A reach.delegate answer signed by `signer` (a key the forger minted) for a child run that never existed. */
function mintedAnswer (signer = generateKeyPair(), checkpoint: { kind?: 'run' | 'log', at_seq?: number } = {}): ForgeOptions['decide'] {
  const output = 7
  const peer = peerIdOfPublicKey(signer.publicKey)
  // `record` and `started` are there (junk), so the refusal is the check under test, not a missing member.
  return (_r, _i, used) => ({ result: { peer, status: 'completed', output, run_id: 'run_' + '1'.repeat(20), fingerprint: 'd'.repeat(64), checkpoint: mintedCheckpoint(signer.seed, output, checkpoint), fuel_granted: grantOf(used), record: {}, started: {} } })
}

describe('HIGH: delegated results no engine could have recorded are refused', () => {
  it("a checkpoint of kind 'log' (not a run's) as the child run's", async () => {
    const events = await forge(delegating, { input: null, started: root, decide: mintedAnswer(undefined, { kind: 'log' }) })
    await expectRefused(events, delegating, 'RL-3017', 2, /is not of a run \(kind "log"\)/)
  })

  it('a checkpoint at seq 0 (a log of one event cannot be a finished run)', async () => {
    const events = await forge(delegating, { input: null, started: root, decide: mintedAnswer(undefined, { at_seq: 0 }) })
    await expectRefused(events, delegating, 'RL-3017', 2, /covers one event/)
  })

  it('a delegation answered in a run with no lineage (this implementation gives such a run no reach.delegate provider)', async () => {
    const events = await forge(delegating, { input: null, decide: mintedAnswer() })
    expect(Object.hasOwn(events[0]?.payload as JsonObject, 'lineage')).toBe(false)
    // The only outcome a real engine records here is ToolFailed RL-3018 "no host tool provides reach.delegate".
    await expectRefused(events, delegating, 'RL-3017', 2, /without a lineage/)
  })

  it('a delegation "answered" by the node that ran the parent (the last hop\'s `to`), which the delegator never picks', async () => {
    const self = generateKeyPair()
    const caller = generateKeyPair()
    const events = await forge(delegating, {
      input: null,
      started: (p) => ({ ...p, lineage: lineage(caller.seed, peerIdOfPublicKey(self.publicKey)) }),
      decide: mintedAnswer(self)
    })
    await expectRefused(events, delegating, 'RL-3017', 2, /already in this run's delegation chain/)
  })
})

describe('HIGH (second review): what binds a delegated result is what its peer signed', () => {
  it("an honest peer's real checkpoint for another pack, with a record and a first event the forger rewrote to name this call's pack, input and fuel", async () => {
    // P really ran `other` on input 999 and signed it. The forger keeps P's checkpoint (so the
    // signature, log hash and outcome are P's) and writes the rest to fit the call: a record whose
    // pack, input and log hash are the call's and the checkpoint's (its fingerprint recomputed), and
    // a RunStarted for bafyexamplechild on input 1. Every member the old check compared agrees.
    const child = await honestPeerStore.start({ pack: otherChild, input: 999, budget: BUDGET, policy: POLICY, engine, tools: new Map() })
    const peer = peerIdOfPublicKey(honestPeerKey.publicKey)
    const decide: ForgeOptions['decide'] = (_r, _i, used) => {
      const fuel = grantOf(used)
      const started = nextEvent(null, { type: 'RunStarted', aggregate_id: 'run', payload: { ...(child.outcome.events[0]?.payload as JsonObject), pack_cid: 'bafyexamplechild', input: 1, input_hash: hashCanonical(1), budget: { ...BUDGET, fuel } } })
      const fields = { ...child.record, artifact_hash: 'bafyexamplechild', input_hash: hashCanonical(1) }
      const record = { ...fields, fingerprint: fingerprintOf(fields) }
      return { result: { peer, status: 'completed', output: child.outcome.output as JsonValue, run_id: child.record.run_id, fingerprint: record.fingerprint, checkpoint: child.checkpointText, fuel_granted: fuel, record: record as unknown as JsonValue, started: started as unknown as JsonValue } }
    }
    const events = await forge(delegating, { input: null, started: root, decide })
    // The replay of then verified it ({ child: { balance: 999000 } }): the record was the forger's to write.
    // Now the first event is not the one whose hash P signed as the log's id.
    await expectRefused(events, delegating, 'RL-3017', 2, /first event is not the one .* signed as its log's id/)
    // With P's real first event instead, the pack it names is not the one asked for.
    const real = await forge(delegating, {
      input: null,
      started: root,
      decide: (r, i, used) => {
        const d = decide(r, i, used) as { result: JsonObject }
        return { result: { ...d.result, started: child.outcome.events[0] as unknown as JsonValue } }
      }
    })
    await expectRefused(real, delegating, 'RL-3017', 2, /is of pack "bafyotherchildpackdd", not the bafyexamplechild asked for/)
  })

  it('a log whose RunStarted drops engine_build, to be replayed under the laxer rules of runs from before engine builds', async () => {
    // The minted answer carries no record and no first event: only a legacy run may record that.
    const minted = generateKeyPair()
    const output = 7
    const decide: ForgeOptions['decide'] = (_r, _i, used) => ({ result: { peer: peerIdOfPublicKey(minted.publicKey), status: 'completed', output, run_id: 'run_' + '1'.repeat(20), fingerprint: 'd'.repeat(64), checkpoint: mintedCheckpoint(minted.seed, output), fuel_granted: grantOf(used) } })
    const events = await forge(delegating, { input: null, started: (p) => { const { engine_build: _, ...rest } = p; return rest }, decide })
    expect(Object.hasOwn(events[0]?.payload as JsonObject, 'engine_build')).toBe(false)
    // Negative control: read as one of this node's own older runs (legacy), it verifies.
    expect(await replayRun(delegating, engine, new ArrayCursor(events), { legacy: true })).toMatchObject({ ok: true, outcome: { output: { child: 7 } } })
    // Any other log that names no engine build is refused at its first event.
    await expectRefused(events, delegating, 'RL-3021', 0, /names no engine build/)
  })

  it('values that throw when a message quotes them ({"toString": 1}) are a divergence with their text, not a failure of the pack', async () => {
    const poison = { toString: 1 } as unknown as JsonValue
    const decide: ForgeOptions['decide'] = () => ({ result: { peer: peerIdOfPublicKey(generateKeyPair().publicKey), status: 'completed', output: 7, run_id: 'run_' + '1'.repeat(20), fingerprint: 'd'.repeat(64), checkpoint: 'x', fuel_granted: poison, record: {}, started: {} } })
    const events = await forge(delegating, { input: null, started: root, decide })
    // String() of such a value throws a TypeError: the replay of then turned it into a RunFailed of the pack.
    expect(() => String(poison)).toThrow(TypeError)
    await expectRefused(events, delegating, 'RL-3017', 2, /fuel_granted \{"toString":1\} is not the \d+ the run loop granted/)
  })
})

describe('MEDIUM (second review): a refused call can only have failed with the tool\'s own refusal', () => {
  it('random.bytes n: 0 recorded as failed with another code or message is refused; with its own refusal it verifies', async () => {
    const tools = hostTools({ kv: memoryKv() })
    const own = await (tools.get('random.bytes')?.run({ n: 0 }, { pack: 'one', signal: new AbortController().signal }) as Promise<JsonValue>).then(() => undefined, (err: unknown) => err as ReachError)
    expect(own?.code).toBe('RL-3018')
    const input = { tool: 'random.bytes', args: { n: 0 } } as unknown as JsonValue
    const honest = await forge(one, { input, decide: () => ({ error: { code: 'RL-3018', message: (own as ReachError).message } }) })
    expect(await replayRun(one, engine, new ArrayCursor(honest))).toMatchObject({ ok: true, outcome: { output: { code: 'RL-3018' } } })
    // A failure the tool never gives for these arguments (the pack then takes another branch on it).
    const other = await forge(one, { input, decide: () => ({ error: { code: 'RL-3106', message: 'the sandbox failed' } }) })
    await expectRefused(other, one, 'RL-3017', 2)
  })
})

describe('HIGH: gate decisions no engine makes are refused (RL-3009 and RL-3016 mixed for one tool)', () => {
  const spent = { code: 'RL-3016', message: "the run's budget of 1 tool calls is spent" }
  const ungranted = { code: 'RL-3009', message: "this node's policy does not grant clock.now" }

  it('RL-3016 for clock.now (so the policy granted it), then RL-3009 for clock.now (not granted)', async () => {
    const events = await forge(gated, { input: null, budget: { ...BUDGET, tool_calls: 1 }, decide: (r, i) => r.tool === 'kv.get' ? { result: { value: null } } : { deny: i === 1 ? spent : ungranted } })
    // The replay of then verified it, output ['ok', 'RL-3016', 'RL-3009']. The gate checks `granted` before the
    // budget, so a tool once denied RL-3016 is granted: a later RL-3009 for it is RL-3017 at seq 4.
    await expectRefused(events, gated, 'RL-3017', 4)
  })

  it('RL-3009 for clock.now (not granted), then RL-3016 for clock.now (the gate would say RL-3009 again)', async () => {
    const events = await forge(gated, { input: null, budget: { ...BUDGET, tool_calls: 1 }, decide: (r, i) => r.tool === 'kv.get' ? { result: { value: null } } : { deny: i === 1 ? ungranted : spent } })
    await expectRefused(events, gated, 'RL-3017', 4)
  })
})

describe('HIGH: no result is accepted for arguments the tool always refuses', () => {
  const tools = hostTools({ kv: memoryKv(), httpAllowlist: ['example.test'] })
  const cases: Array<{ name: string, effect: { tool: string, args: JsonObject }, result: JsonValue }> = [
    { name: 'random.bytes n: 0 answered with no bytes', effect: { tool: 'random.bytes', args: { n: 0 } }, result: { hex: '' } },
    { name: 'random.bytes n: 2000 (over the 1024 maximum) answered with 2000 bytes', effect: { tool: 'random.bytes', args: { n: 2000 } }, result: { hex: 'ab'.repeat(2000) } },
    { name: 'random.bytes n: 2.5 answered with 5 hex digits', effect: { tool: 'random.bytes', args: { n: 2.5 } }, result: { hex: 'abcde' } },
    { name: 'random.bytes n: true (not a number) answered with 32 bytes', effect: { tool: 'random.bytes', args: { n: true } }, result: { hex: 'ab'.repeat(32) } },
    { name: "kv.get with the empty key answered with a value", effect: { tool: 'kv.get', args: { key: '' } }, result: { value: { balance: 1_000_000 } } },
    { name: 'kv.get with a numeric key answered with a value', effect: { tool: 'kv.get', args: { key: 5 } }, result: { value: 'forged' } },
    { name: 'kv.put without a value answered ok', effect: { tool: 'kv.put', args: { key: 'k' } }, result: { ok: true } },
    { name: 'http.fetch of a file: URL answered 200', effect: { tool: 'http.fetch', args: { url: 'file:///etc/passwd' } }, result: { status: 200, body: 'root:x:0:0' } },
    { name: 'http.fetch of a non-URL answered 200', effect: { tool: 'http.fetch', args: { url: 'not a url' } }, result: { status: 200, body: 'ok' } }
  ]
  for (const c of cases) {
    it(c.name, async () => {
      // The host tool itself refuses these arguments, whatever the world looks like.
      const refused = await (tools.get(c.effect.tool)?.run(c.effect.args, { pack: 'one', signal: new AbortController().signal }) as Promise<JsonValue>).then(() => 'answered', (err: unknown) => isReachError(err) ? err.code : String(err))
      expect(refused).toBe('RL-3018')
      const events = await forge(one, { input: c.effect as unknown as JsonValue, decide: () => ({ result: c.result }) })
      // RL-3017 at the ToolResult (seq 2): not an answer the tool gives for those args.
      await expectRefused(events, one, 'RL-3017', 2)
    })
  }
})

// ---------------------------------------------------------------------------------------------
// The streamed verifier: errors of the stream are taken for the pack's failure.

let honestLedger: { runId: string, events: Event[], checkpoint: string } | undefined
async function honestLedgerRun (): Promise<{ runId: string, events: Event[], checkpoint: string }> {
  if (honestLedger !== undefined) return honestLedger
  const p = runPackOf(ledgerBundle)
  const { record } = await store.start({ pack: p, input: { who: 'alice' }, budget: BUDGET, policy: POLICY, engine, tools: hostTools({ kv: memoryKv() }) })
  honestLedger = { runId: record.run_id, events: await store.events(record.run_id), checkpoint: await store.checkpointText(record.run_id) }
  return honestLedger
}

/**
 * A hand-rolled log server: the honest ledger run, one event a batch, then `ending`: log.end
 * (the protocol), the stream closed instead, one event more than announced, or an error frame.
 */
async function served (ending: 'end' | 'close' | 'extra' | 'error'): Promise<unknown> {
  const { runId, events, checkpoint } = await honestLedgerRun()
  const [client, far] = await streamPair()
  const dialer: Dialer = { dial: async () => client, connectedPeers: () => [] }
  const serving = (async () => {
    const fs = frames(far, MAX_FRAME.request)
    try {
      await fs.read(['log.get'])
      await fs.write({ v: 1, type: 'log', run_id: runId, events: events.length, pack_cid: ledgerBundle.cid, checkpoint })
      for (const e of events) {
        await fs.read(['log.next'])
        await fs.write({ v: 1, type: 'log.events', events: [e] })
      }
      await fs.read(['log.next'])
      if (ending === 'end') {
        await fs.write({ v: 1, type: 'log.end' })
      } else if (ending === 'extra') {
        await fs.write({ v: 1, type: 'log.events', events: [nextEvent(events.at(-1) as Event, { type: 'Note', aggregate_id: 'run', payload: null })] })
        await fs.read(['log.next'])
      } else if (ending === 'error') {
        await fs.refuse(new ReachError('RL-3101', { message: 'pack exhausted its fuel' }))
        return
      }
      await fs.close()
    } catch {
      // the client reset the stream
    }
  })()
  try {
    const log = await fetchLog(dialer, peerIdOfPublicKey(storeKey.publicKey), runId)
    return await verifyRemoteRun(log, ledgerBundle, engine)
  } catch (err) {
    return isReachError(err) ? err.code : `not a ReachError: ${String(err)}`
  } finally {
    await serving
  }
}

describe('MEDIUM: a stream failure during replay is the stream\'s error, not a divergence of the signed log', () => {
  it('the stream closed after the last batch instead of log.end: RL-4002, not REPLAY_DIVERGED', async () => {
    // The replay of then: { verified: false, divergence: { code: 'RL-3017', reason: "... the pack fails here (RL-4002: ...)" } }
    expect(await served('close')).toBe('RL-4002')
  })

  it('one event more than announced: RL-4014 at once (SPEC §10.6), not REPLAY_DIVERGED', async () => {
    expect(await served('extra')).toBe('RL-4014')
  })

  it("a peer's error frame with a pack code (RL-3101) is the peer's error, not a divergence blaming the pack", async () => {
    // The replay of then said REPLAY_DIVERGED with divergence code RL-3101 ("the pack fails here").
    expect(await served('error')).toBe('RL-3101')
  })
})
