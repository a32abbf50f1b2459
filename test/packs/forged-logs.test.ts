/**
 * Replay is a security check: when it says VERIFIED, the log is what the pack does. A forger
 * here is the node that ran the pack: it controls its own key, so its logs are consistent
 * chains and would carry valid signatures. The only thing that can catch it is re-execution.
 *
 * Each forgery below is built the way a forger would: by running the pack with the decisions it
 * wants (a call the gate refused recorded as made, a budget it did not have, a result no tool
 * returns), so the log is self-consistent. Each is shown
 *  - to be accepted by a naive replay (the negative control: the attack works there), and
 *  - to be refused by ours, with a code and the seq.
 *
 * The forger's run loop and the naive replay are in forgery.ts.
 */
import { mkdtemp } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JsonObject, JsonValue } from '../../protocol/canonical.ts'
import { createCheckpoint, encodeCheckpoint } from '../../protocol/checkpoint.ts'
import { verifyChain } from '../../protocol/chain.ts'
import { nextEvent, type Event } from '../../protocol/event.ts'
import { hashCanonical } from '../../protocol/hash.ts'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { peerIdOfPublicKey } from '../../protocol/peer-id.ts'
import { runOutcomeHash } from '../../protocol/run.ts'
import { ArrayCursor, replayRun, type RunPack } from '../../packs/run/index.ts'
import { hostTools } from '../../packs/tools/index.ts'
import { ensureHome, homePaths } from '../../node/home.ts'
import { RunStore } from '../../node/runs.ts'
import { testEngine } from './helpers.ts'
import { BUDGET, DELEGATING, LEDGER, forge as forgeLog, memoryKv, naive as naiveReplay, pack, type Decision, type ForgeOptions } from './forgery.ts'
import type { Budget } from '../../packs/manifest.ts'

const POLICY = { version: 'c'.repeat(64), granted: ['clock.now', 'random.bytes', 'kv.get', 'kv.put'] }

/** Same name, other code: always reports a forged balance. */
const IMPOSTOR = `
export function init (input) { return { input } }
export function reduce (s, e) {
  if (e.type === 'Start') return { state: s, effects: [{ tool: 'clock.now', args: {} }] }
  return { state: s, output: [{ forged: true }] }
}`

const ledger = pack('ledger', LEDGER, ['clock.now', 'random.bytes', 'kv.put', 'kv.get'], 'bafyledgerpackaaaa')
const impostor = pack('ledger', IMPOSTOR, ['clock.now'], 'bafyimpostorpackbb')
const delegating = pack('parent', DELEGATING, ['reach.delegate'], 'bafyparentpackcccc')

let engine: Awaited<ReturnType<typeof testEngine>>
let store: RunStore

beforeAll(async () => {
  engine = await testEngine()
  store = new RunStore(await ensureHome(homePaths(await mkdtemp(join(os.tmpdir(), 'reach-forged-')))), generateKeyPair().seed)
})
afterAll(async () => {
  await store.close()
  await engine.sandboxes.close()
})

/** The forger's run loop and the naive replay (forgery.ts), with this file's budget and policy. */
const forge = async (p: RunPack, o: Omit<ForgeOptions, 'budget' | 'policy'> & { budget?: Budget }): Promise<Event[]> =>
  await forgeLog(engine, p, { budget: BUDGET, policy: POLICY, ...o })
const naive = async (events: Event[], packs: Map<string, RunPack>): Promise<boolean> => await naiveReplay(engine, events, packs)

/** The decisions an honest node running LEDGER makes (the gate's, then the tools' answers). */
function honest (request: { tool: string }, index: number): Decision {
  if (request.tool === 'http.fetch') return { deny: { code: 'RL-3015', message: 'the pack does not declare the capability "http.fetch"' } }
  if (index === 5) return { deny: { code: 'RL-3016', message: "the run's budget of 4 tool calls is spent" } }
  switch (request.tool) {
    case 'clock.now': return { result: { now_ms: 1_700_000_000_000 + index } }
    case 'random.bytes': return { result: { hex: '00112233aabbccdd' } }
    case 'kv.put': return { result: { ok: true } }
    default: return { result: { value: { balance: 10 } } }
  }
}

const byName = new Map([['ledger', ledger], ['parent', delegating]])

/** REACH_DUMP_FORGERIES=<dir>: write each forged log there (to try it on another build of the replay). */
async function dump (name: string, events: Event[]): Promise<void> {
  const { mkdir, writeFile } = await import('node:fs/promises')
  const dir = process.env.REACH_DUMP_FORGERIES as string
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, `${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.json`), JSON.stringify({ name, events }))
}

describe('the controls', () => {
  it('a real run of the ledger pack replays VERIFIED here and in the naive replay', async () => {
    const { record } = await store.start({ pack: ledger, input: { who: 'alice' }, budget: BUDGET, policy: POLICY, engine, tools: hostTools({ kv: memoryKv() }) })
    const events = await store.events(record.run_id)
    expect(events.map((e) => e.type)).toEqual(['RunStarted', 'ToolCalled', 'ToolResult', 'ToolCalled', 'ToolResult', 'ToolDenied', 'ToolCalled', 'ToolResult', 'ToolCalled', 'ToolResult', 'ToolDenied', 'RunCompleted'])
    expect((await replayRun(ledger, engine, new ArrayCursor(events))).ok).toBe(true)
    expect(await naive(events, byName)).toBe(true)
  })

  it("the forger's run loop with an honest node's decisions writes a log that verifies (so every refusal below is the forgery's)", async () => {
    const events = await forge(ledger, { input: { who: 'alice' }, decide: honest })
    expect(verifyChain(events).ok).toBe(true)
    const verdict = await replayRun(ledger, engine, new ArrayCursor(events))
    expect(verdict).toMatchObject({ ok: true })
  })
})

interface Forgery {
  name: string
  make: () => Promise<Event[]>
  /** The pack the verifier replays with (what the log claims to be a run of). */
  pack?: RunPack
  /** The packs the naive replay finds by name (default: the real ones). */
  naivePacks?: Map<string, RunPack>
  code: string
  seq: number
}

const forgeries: Forgery[] = [
  {
    name: 'a call the pack never declared, recorded as made (http.fetch answered)',
    make: async () => await forge(ledger, { input: 1, decide: (r, i) => r.tool === 'http.fetch' ? { result: { status: 200, body: 'internal secrets' } } : honest(r, i) }),
    code: 'RL-3015',
    seq: 5
  },
  {
    name: 'a call past the tool-call budget, recorded as made',
    make: async () => await forge(ledger, { input: 1, decide: (r, i) => i === 5 ? { result: { now_ms: 1 } } : honest(r, i) }),
    code: 'RL-3016',
    seq: 10
  },
  {
    name: 'the budget in RunStarted lowered below the calls the log makes',
    make: async () => await forge(ledger, { input: 1, decide: honest, started: (p) => ({ ...p, budget: { ...BUDGET, tool_calls: 2 } }) }),
    code: 'RL-3016',
    seq: 6
  },
  {
    name: 'the fuel budget in RunStarted lowered below what the run burnt',
    make: async () => await forge(ledger, { input: 1, decide: honest, started: (p) => ({ ...p, budget: { ...BUDGET, fuel: 5 } }) }),
    code: 'RL-3101',
    seq: 1
  },
  {
    name: "an outcome whose call_id is not its call's",
    make: async () => await forge(ledger, { input: 1, decide: honest, edit: (d) => { if (d.type === 'ToolResult' && (d.payload as JsonObject).call_id === 'call-3') (d.payload as JsonObject).call_id = 'call-1' } }),
    code: 'RL-3017',
    seq: 4
  },
  {
    name: 'tool results reordered (each kept with its own call id)',
    make: async () => {
      const a = honest({ tool: 'clock.now' }, 0)
      const b = honest({ tool: 'random.bytes' }, 1)
      return await forge(ledger, {
        input: 1,
        decide: (r, i) => i === 0 ? b : i === 1 ? a : honest(r, i),
        edit: (d) => {
          const p = d.payload as JsonObject
          if (d.type === 'ToolResult' && p.call_id === 'call-1') p.call_id = 'call-3'
          else if (d.type === 'ToolResult' && p.call_id === 'call-3') p.call_id = 'call-1'
        }
      })
    },
    code: 'RL-3017',
    seq: 2
  },
  {
    name: "an edited effect (kv.put's value) the pack never asked for",
    make: async () => await forge(ledger, { input: 1, decide: honest, edit: (d) => { if (d.type === 'ToolCalled' && (d.payload as JsonObject).tool === 'kv.put') (d.payload as JsonObject).args = { key: 'k', value: 'attacker' } } }),
    code: 'RL-3017',
    seq: 6
  },
  {
    name: 'an edited outcome no tool gives (4 random bytes for a request of 8)',
    make: async () => await forge(ledger, { input: 1, decide: (r, i) => r.tool === 'random.bytes' ? { result: { hex: 'abcdef01' } } : honest(r, i) }),
    code: 'RL-3017',
    seq: 4
  },
  {
    name: 'an edited outcome with a member no tool writes',
    make: async () => await forge(ledger, { input: 1, decide: honest, edit: (d) => { if (d.type === 'ToolResult' && (d.payload as JsonObject).call_id === 'call-8') (d.payload as JsonObject).verified_by = 'me' } }),
    code: 'RL-3017',
    seq: 9
  },
  {
    name: 'a denial the gate would not make (RL-3015 for a declared capability)',
    make: async () => await forge(ledger, { input: 1, decide: (r, i) => i === 3 ? { deny: { code: 'RL-3015', message: 'the pack does not declare the capability "kv.put"' } } : honest(r, i) }),
    code: 'RL-3017',
    seq: 6
  },
  {
    name: 'a tool refused as not granted after the run already called it',
    make: async () => await forge(ledger, { input: 1, decide: (r, i) => i === 5 ? { deny: { code: 'RL-3009', message: "this node's policy does not grant clock.now" } } : honest(r, i) }),
    code: 'RL-3017',
    seq: 10
  },
  {
    name: 'an edited output (the output_hash left as the pack computes it)',
    make: async () => await forge(ledger, { input: 1, decide: honest, end: (p) => ({ ...p, output: [{ balance: 1_000_000 }] }) }),
    code: 'RL-3017',
    seq: 11
  },
  {
    name: 'an edited fuel count in RunCompleted',
    make: async () => await forge(ledger, { input: 1, decide: honest, end: (p) => ({ ...p, fuel_used: 0 }) }),
    code: 'RL-3017',
    seq: 11
  },
  {
    name: 'RunStarted whose input_hash is not its input',
    make: async () => await forge(ledger, { input: 1, decide: honest, started: (p) => ({ ...p, input_hash: hashCanonical(2) }) }),
    code: 'RL-3017',
    seq: 0
  },
  {
    name: 'another engine build claimed (its WebAssembly hash edited)',
    make: async () => await forge(ledger, { input: 1, decide: honest, started: (p) => ({ ...p, engine_build: { ...(p.engine_build as JsonObject), wasm: '0'.repeat(64) } }) }),
    code: 'RL-3021',
    seq: 0
  },
  {
    name: 'a call marked idempotent that is not (a resume would repeat it)',
    make: async () => await forge(delegating, { input: null, decide: () => ({ error: { code: 'RL-3018', message: 'no host tool provides reach.delegate' } }), edit: (d) => { if (d.type === 'ToolCalled') (d.payload as JsonObject).idempotent = true } }),
    pack: delegating,
    code: 'RL-3017',
    seq: 1
  },
  {
    name: 'an event with metadata the run loop never writes',
    make: async () => await forge(ledger, { input: 1, decide: honest, edit: (d, seq) => { if (seq === 2) d.metadata = { note: 'trust me' } } }),
    code: 'RL-3017',
    seq: 2
  },
  {
    name: 'a pack swapped for another with the same name (the log claims the real one)',
    make: async () => await forge(impostor, { input: 1, decide: () => ({ result: { now_ms: 5 } }), started: (p) => ({ ...p, pack_cid: ledger.cid }) }),
    naivePacks: new Map([['ledger', impostor]]),
    code: 'RL-3017',
    seq: 3
  },
  {
    name: "a delegated result its peer never signed (another key's checkpoint)",
    make: async () => {
      const peer = peerIdOfPublicKey(generateKeyPair().publicKey)
      const other = createSigner(generateKeyPair().seed)
      const output = { balance: 1_000_000 }
      const checkpoint = encodeCheckpoint(createCheckpoint({ kind: 'run', log_id: 'a'.repeat(64), at_seq: 3, state_hash: runOutcomeHash({ status: 'completed', output_hash: hashCanonical(output), error: null }), log_hash: 'b'.repeat(64), merkle_root: 'c'.repeat(64), timestamp: 3 }, other))
      return await forge(delegating, { input: null, decide: () => ({ result: { peer, status: 'completed', output, run_id: 'run_' + '1'.repeat(20), fingerprint: 'd'.repeat(64), checkpoint, fuel_granted: 50_000 } }) })
    },
    pack: delegating,
    code: 'RL-3017',
    seq: 2
  },
  {
    name: 'a delegated result signed by its peer, claiming more fuel than the run loop granted',
    make: async () => {
      const key = generateKeyPair()
      const peer = peerIdOfPublicKey(key.publicKey)
      const output = 7
      const checkpoint = encodeCheckpoint(createCheckpoint({ kind: 'run', log_id: 'a'.repeat(64), at_seq: 3, state_hash: runOutcomeHash({ status: 'completed', output_hash: hashCanonical(output), error: null }), log_hash: 'b'.repeat(64), merkle_root: 'c'.repeat(64), timestamp: 3 }, createSigner(key.seed)))
      return await forge(delegating, { input: null, decide: (_r, _i, used) => ({ result: { peer, status: 'completed', output, run_id: 'run_' + '1'.repeat(20), fingerprint: 'd'.repeat(64), checkpoint, fuel_granted: BUDGET.fuel - used } }) })
    },
    pack: delegating,
    code: 'RL-3017',
    seq: 2
  }
]

describe('the forged-log corpus: each forgery is a whole chain, fools the naive replay, and is refused here', () => {
  for (const f of forgeries) {
    it(f.name, async () => {
      const events = await f.make()
      if (process.env.REACH_DUMP_FORGERIES !== undefined) await dump(f.name, events)
      expect(verifyChain(events).ok).toBe(true)
      expect(await naive(events, f.naivePacks ?? byName)).toBe(true)
      const verdict = await replayRun(f.pack ?? ledger, engine, new ArrayCursor(events))
      expect(verdict.ok).toBe(false)
      if (verdict.ok) return
      expect({ code: verdict.divergence.code, seq: verdict.divergence.seq }).toEqual({ code: f.code, seq: f.seq })
    })
  }
})

describe('a delegated result the run loop accepts', () => {
  it('is the child run its peer signed, of the pack and input asked for, with the fuel the loop granted', async () => {
    // A real child run on another node (its own key), of the pack and input the parent asks for.
    const key = generateKeyPair()
    const peerStore = new RunStore(await ensureHome(homePaths(await mkdtemp(join(os.tmpdir(), 'reach-forged-peer-')))), key.seed)
    const child = pack('child', 'export function init (n) { return n }\nexport function reduce (s) { return { state: s, output: s * 7 } }', [], 'bafyexamplechild')
    const root = (p: JsonObject): JsonObject => ({ ...p, lineage: { depth: 0, ancestry: [] } })
    // The grant is half of what the parent has left when it calls (its budget minus the fuel it
    // used so far), and the child runs with exactly that fuel: learn it from a first pass.
    let used = -1
    await forge(delegating, { input: null, started: root, decide: (_r, _i, u) => { used = u; return { error: { code: 'RL-3018', message: 'probe' } } } })
    const granted = Math.floor((BUDGET.fuel - used) / 2)
    const run = await peerStore.start({ pack: child, input: 1, budget: { ...BUDGET, fuel: granted }, policy: POLICY, engine, tools: new Map() })
    await peerStore.close()
    const result = (): Decision => ({
      result: {
        peer: peerIdOfPublicKey(key.publicKey),
        status: run.record.status,
        output: run.outcome.output as JsonValue,
        run_id: run.record.run_id,
        fingerprint: run.record.fingerprint,
        checkpoint: run.checkpointText,
        fuel_granted: granted,
        record: run.record as unknown as JsonValue,
        started: run.outcome.events[0] as unknown as JsonValue
      }
    })
    const events = await forge(delegating, { input: null, started: root, decide: () => result() })
    const verdict = await replayRun(delegating, engine, new ArrayCursor(events))
    expect(verdict).toMatchObject({ ok: true, outcome: { output: { child: 7, status: 'completed' } } })
    // The same answer to a call for another input is refused: the record binds it to its call.
    const other = pack('parent', DELEGATING.replace('input: 1', 'input: 2'), ['reach.delegate'], delegating.cid)
    const moved = await forge(other, { input: null, started: root, decide: () => result() })
    const refused = await replayRun(other, engine, new ArrayCursor(moved))
    expect(refused).toMatchObject({ ok: false, divergence: { seq: 2, code: 'RL-3017' } })
  })
})

describe('a run cut by its wall clock', () => {
  it('is neither verified nor diverged: the replay is inconclusive (RL-3105 thrown), whatever the fuel it claims', async () => {
    // A node cut the run at its third effect by its wall clock (a backstop, not a deterministic limit).
    const cut = await forge(ledger, { input: 1, decide: honest })
    const at = cut.findIndex((e) => e.type === 'ToolDenied')
    const drafts = cut.slice(0, at).map((e) => ({ type: e.type, aggregate_id: e.aggregate_id, payload: e.payload }))
    drafts.push({ type: 'RunFailed', aggregate_id: 'run', payload: { error: { code: 'RL-3105', message: 'wall clock' }, fuel_used: 12 } })
    const events: Event[] = []
    for (const d of drafts) events.push(nextEvent(events.at(-1) ?? null, d))
    const outcome = await replayRun(ledger, engine, new ArrayCursor(events)).then((v) => v.ok ? 'verified' : `diverged ${v.divergence.code}`, (err: unknown) => (err as { code?: string }).code ?? String(err))
    expect(outcome).toBe('RL-3105')
  })
})
