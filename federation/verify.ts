/**
 * Remote verification (SPEC §10.6): turn a peer's signed claim about a run into something this
 * node checked. The log streams in from `fetchLog`; each batch is chain-checked as it arrives,
 * folded into the Merkle root and the run record, and replayed with the pack as it goes, so a
 * log of any length costs a bounded amount of memory. What can only be known at the end (the
 * length, the root, the last event, the outcome) is compared with the signed checkpoint then.
 *
 * Order of verdicts: a log that is not exactly the one the peer signed fails with its integrity
 * or binding code (RL-2xxx, RL-4014), whatever the replay found; only a log the peer did sign
 * can come back REPLAY_DIVERGED. So after a divergence the rest of the log is still read and
 * checked (not replayed).
 */
import type { JsonObject } from '../protocol/canonical.ts'
import { ReachError, isReachError } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { MerkleAccumulator } from '../protocol/merkle.ts'
import { RunRecordFold, TERMINAL_EVENTS, runOutcomeHash, type RunRecord } from '../protocol/run.ts'
import { BUDGET_FIELDS, type Budget } from '../packs/manifest.ts'
import { replayRun, runPackOf, StreamCursor, type Divergence, type Engine } from '../packs/run/index.ts'
import type { StoredPack } from '../packs/trust.ts'
import type { Checkpoint } from '../protocol/checkpoint.ts'
import type { LogStream } from './log-client.ts'

export interface RemoteClaim {
  /** The log head a signed delegation result named. */
  head?: { seq: number, hash: string }
  /** The record a signed delegation result carried. */
  record?: Pick<RunRecord, 'fingerprint'>
}

export interface RemoteVerdict {
  verified: boolean
  record: RunRecord
  /** The peer's signed checkpoint the log was held to. */
  checkpoint: Checkpoint
  /** The first divergence, when the replay did not verify. */
  divergence?: Pick<Divergence, 'seq' | 'code' | 'reason'>
  /** Delegated results the run used, checked against their peers' signatures but not replayed here (ReplayOutcome.delegated). */
  delegated?: Array<{ seq: number, peer: string, run_id: string, fingerprint: string }>
}

export interface VerifyOptions {
  claim?: RemoteClaim
  /** The most this node spends replaying one run (its policy's max_budget): a larger recorded budget is RL-3010. */
  maxBudget?: Budget
}

function invalid (message: string): never {
  throw new ReachError('RL-4014', { message })
}

/**
 * Check a fetched log against what the peer signed and replay it with `pack` on `engine`.
 * Throws RL-2xxx when the log's chain is broken, RL-4014 when the log is not the one the peer
 * signed or not the run that was claimed, RL-3010 when it asks for more than `maxBudget`;
 * returns verified: false with the first divergence when the pack does not reproduce it.
 */
export async function verifyRemoteRun (log: LogStream, pack: StoredPack, engine: Engine, options: VerifyOptions = {}): Promise<RemoteVerdict> {
  const { checkpoint } = log
  const claim = options.claim
  try {
    // What the header already settles, before an event is read.
    if (checkpoint.kind !== undefined && checkpoint.kind !== 'run') invalid(`the peer's checkpoint is of a ${checkpoint.kind} log, not of a run`)
    if (log.announced !== checkpoint.at_seq + 1) invalid(`the peer announced ${log.announced} events, its checkpoint covers ${checkpoint.at_seq + 1}`)
    if (claim?.head !== undefined && (claim.head.seq !== checkpoint.at_seq || claim.head.hash !== checkpoint.log_hash)) invalid('the log is not the one the signed result named')
    if (log.pack_cid !== pack.cid) invalid(`the log is of pack ${log.pack_cid}, not ${pack.cid}`)

    const tree = new MerkleAccumulator()
    const fold = new RunRecordFold()
    let first: Event | undefined
    let last: Event | undefined
    async function * folded (): AsyncGenerator<readonly Event[]> {
      for await (const batch of log.batches) {
        for (const e of batch) {
          first ??= e
          last = e
          tree.pushEventHash(e.hash)
          fold.push(e)
        }
        yield batch
      }
    }
    const cursor = new StreamCursor(folded())
    await cursor.fill(1)
    const started = cursor.peek()
    if (started === undefined) invalid('the peer sent an empty log')
    if (started.type !== 'RunStarted') invalid(`the log begins with ${started.type}, not RunStarted`)
    if ((started.payload as JsonObject | null)?.pack_cid !== pack.cid) invalid('the log was recorded with another pack')
    if (options.maxBudget !== undefined) overBudget(started, options.maxBudget)

    // Never legacy: a remote log that names no engine build diverges at seq 0 (RL-3021).
    let verdict: Awaited<ReturnType<typeof replayRun>> | undefined
    let inconclusive: unknown
    try {
      verdict = await replayRun(runPackOf(pack), engine, cursor, { recorder: log.peer })
    } catch (err) {
      // This node's wall clock cut the replay: no verdict, but the log is still held to its
      // checkpoint below, so a forged one is refused as such rather than called inconclusive.
      if (!isReachError(err, 'RL-3105')) throw err
      inconclusive = err
    }
    // Read and check the rest (after a divergence, or events past the run's end) without replaying it.
    await cursor.drain()

    if (last === undefined || first === undefined) return invalid('the peer sent an empty log')
    if (last.seq !== checkpoint.at_seq || last.hash !== checkpoint.log_hash) {
      invalid(`the log ends at seq ${last.seq} (${last.hash.slice(0, 12)}…), the peer's checkpoint says seq ${checkpoint.at_seq} (${checkpoint.log_hash.slice(0, 12)}…)`)
    }
    if (!TERMINAL_EVENTS.has(last.type)) invalid('the log is not a finished run')
    const record = fold.finish(log.run_id)
    const differ: string[] = []
    if (checkpoint.log_id !== first.hash) differ.push('log_id')
    if (checkpoint.merkle_root !== tree.rootHex()) differ.push('merkle_root')
    if (checkpoint.state_hash !== runOutcomeHash(record)) differ.push('state_hash')
    if (differ.length > 0) invalid(`the peer's checkpoint does not sign this log (${differ.join(', ')} differ)`)
    if (claim?.record !== undefined && claim.record.fingerprint !== record.fingerprint) {
      invalid(`the signed record's fingerprint ${claim.record.fingerprint} is not the log's ${record.fingerprint}`)
    }
    record.checkpoint_id = checkpoint.checkpoint_id
    if (verdict === undefined) throw inconclusive
    if (!verdict.ok) {
      const { seq, code, reason } = verdict.divergence
      return { verified: false, record, checkpoint, divergence: { seq, code, reason } }
    }
    return {
      verified: true,
      record,
      checkpoint,
      ...(verdict.outcome.delegated.length === 0 ? {} : { delegated: verdict.outcome.delegated })
    }
  } finally {
    log.close()
  }
}

/** RL-3010 when the recorded budget asks for more than this node spends on a replay. */
function overBudget (started: Event, max: Budget): void {
  const budget = (started.payload as JsonObject | null)?.budget
  if (budget === null || typeof budget !== 'object' || Array.isArray(budget)) return
  for (const f of BUDGET_FIELDS) {
    const v = (budget as JsonObject)[f]
    if (typeof v === 'number' && v > max[f]) {
      throw new ReachError('RL-3010', { message: `the run's budget ${f} ${v} is over the ${max[f]} this node spends on a replay`, details: { field: f, requested: v, max: max[f] } })
    }
  }
}
