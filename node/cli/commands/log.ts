/**
 * Event log commands: init, append, read, verify, repair, replay.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { parseJson, type JsonValue } from '../../../protocol/canonical.ts'
import { decodeCheckpoint, verifyCheckpoint } from '../../../protocol/checkpoint.ts'
import { digestBatchesAsync, type LogDigest } from '../../../protocol/digest.ts'
import { diffValues, type FieldChange } from '../../../protocol/diff.ts'
import { ReachError } from '../../../protocol/errors.ts'
import { replayAsync } from '../../../protocol/replay.ts'
import { aggregateCounts, stateHash, type State } from '../../../protocol/state.ts'
import { storeKind, streamBatches, streamEvents } from '../../log-source.ts'
import { EventLog, openStore } from '../../store/index.ts'
import { snapshotPathFor } from '../../checkpoint-files.ts'
import type { Io, Outcome, Report } from '../io.ts'
import { parseJsonOption, parseObjectOption, plural, short } from '../io.ts'

export const GENESIS_TYPE = 'LogCreated'

export async function init (opts: Record<string, unknown>): Promise<Report> {
  const path = opts.logPath as string
  const kind = (opts.store as 'jsonl' | 'level' | undefined) ?? (/\.(log|jsonl)$/.test(path) ? 'jsonl' : 'level')
  await mkdir(dirname(path), { recursive: true })
  const store = await openStore(path, { kind, create: true })
  try {
    // The nonce makes every log's genesis, and so its log_id, unique. It is
    // recorded in the event, so replay never needs randomness.
    const genesis = await new EventLog(store).append({
      type: GENESIS_TYPE,
      aggregate_id: 'log',
      payload: { format: 'reach-log/1', nonce: randomBytes(16).toString('hex') }
    })
    return {
      human: [`Created ${kind} log at ${path}`, `Log id: ${genesis.hash}`],
      json: { path, store: kind, log_id: genesis.hash, genesis }
    }
  } finally {
    await store.close()
  }
}

export async function append (opts: Record<string, unknown>): Promise<Report> {
  const payload = parseJsonOption(opts.payload as string, '--payload')
  const metadata = parseObjectOption(opts.metadata as string, '--metadata')
  const store = await openStore(opts.logPath as string)
  try {
    const event = await new EventLog(store).append({ type: opts.type as string, aggregate_id: opts.aggregateId as string, payload, metadata })
    return {
      human: [`Appended seq ${event.seq} (${event.type} ${event.aggregate_id})`, `Hash: ${event.hash}`],
      json: { event }
    }
  } finally {
    await store.close()
  }
}

export async function read (opts: Record<string, unknown>, io: Io): Promise<Outcome> {
  const from = opts.fromSeq as number
  const to = opts.toSeq as number | undefined
  if (to !== undefined && to < from) throw new ReachError('RL-1003', { message: `--to-seq ${to} is before --from-seq ${from}` })
  let n = 0
  // Stream: a log can be larger than memory. With --json the output is
  // still one JSON document, written as it is read.
  if (io.json) io.write(`{"ok":true,"from_seq":${from},"events":[`)
  for await (const e of streamEvents(opts.logPath as string, { from, ...(to === undefined ? {} : { to }) })) {
    if (io.json) io.write((n === 0 ? '' : ',') + JSON.stringify(e))
    else io.write(`${e.seq}\t${e.timestamp}\t${e.type}\t${e.aggregate_id}\t${JSON.stringify(e.payload)}\t${short(e.hash)}\n`)
    n++
  }
  if (io.json) io.write(`],"count":${n}}\n`)
  else if (n === 0) io.write(`No events from seq ${from}\n`)
  return undefined
}

/** Below this size worker start-up costs more than it saves. */
const PARALLEL_VERIFY_MIN_BYTES = 16 * 1024 * 1024

/**
 * Digest a log for `reach verify`: a large JSONL log on every core first;
 * if that path finds anything unclean (or the log is LevelDB or small), the
 * exact sequential verifier, whose report names the first bad seq.
 */
async function verifyDigest (path: string, kind: 'jsonl' | 'level', workers: number | undefined): Promise<LogDigest & { mode: 'parallel' | 'sequential' }> {
  if (kind === 'jsonl' && workers !== 0 && (await stat(path)).size >= PARALLEL_VERIFY_MIN_BYTES) {
    const { verifyJsonlParallel } = await import('../../verify/parallel.ts')
    const d = await verifyJsonlParallel(path, workers === undefined ? {} : { workers })
    if (d !== undefined) return { ...d, mode: 'parallel' }
  }
  return { ...await digestBatchesAsync(streamBatches(path), { reduce: false }), mode: 'sequential' }
}

/**
 * The codes that are a verdict on the log's bytes: integrity (RL-2xxx), a torn or half-written
 * tail (RL-5003, RL-5004), a corrupt store (RL-5009). A lock (RL-5008), a closed store, a
 * refused write (RL-5010) say nothing about the log.
 */
const INTEGRITY_VERDICT = /^RL-(2\d{3}|500[349])$/

export async function verify (opts: Record<string, unknown>): Promise<Report> {
  const path = opts.logPath as string
  const kind = await storeKind(path)
  const started = performance.now()
  try {
    const d = await verifyDigest(path, kind, opts.workers as number | undefined)
    const seconds = (performance.now() - started) / 1000
    const stats = {
      seconds: Number(seconds.toFixed(3)),
      events_per_second: Math.round(d.count / seconds),
      peak_rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
      mode: d.mode
    }
    return {
      human: [
        `Hash chain valid: 0 -> ${d.last_seq} (${plural(d.count, 'event')})`,
        `Log id: ${d.log_id}`,
        `Head: ${d.log_hash}`,
        `Merkle root: ${d.merkle_root}`,
        'Integrity: OK',
        ...(opts.stats === true ? [`Verified in ${stats.seconds} s (${stats.events_per_second} events/s, ${stats.mode}), peak RSS ${stats.peak_rss_mb} MB`] : [])
      ],
      json: { valid: true, path, store: kind, count: d.count, first_seq: 0, last_seq: d.last_seq, log_id: d.log_id, head: d.log_hash, merkle_root: d.merkle_root, ...(opts.stats === true ? { stats } : {}) }
    }
  } catch (err) {
    if (!(err instanceof ReachError) || !/^RL-(2|5)/.test(err.code)) throw err
    // A log another process holds (or a disk that refuses LevelDB its LOCK file) was not read:
    // no verdict, and no "INVALID" for a log nobody looked at. main.ts gives RL-5008 its own exit code.
    if (!INTEGRITY_VERDICT.test(err.code)) {
      const why = err.code === 'RL-5008' ? ' (a lock says nothing about the log\'s integrity: verify it once that process lets go)' : ''
      throw new ReachError(err.code, { message: `not verified: ${err.message}${why}`, details: { ...err.details, path, verified: false }, cause: err })
    }
    const at = err.seq === undefined ? '' : ` at seq ${err.seq}`
    return {
      human: [`Hash chain INVALID${at}: ${err.code} ${err.message}`, 'Integrity: FAILED'],
      json: { valid: false, path, store: kind, error: err.toJSON() },
      exitCode: 1
    }
  }
}

export async function repair (opts: Record<string, unknown>): Promise<Report> {
  const path = opts.logPath as string
  const store = await openStore(path, { repair: true })
  try {
    const r = store.lastRepair
    const head = store.head()
    const human = r === undefined
      ? [`Nothing to repair: the log ends cleanly at seq ${head?.seq ?? -1}`]
      : [`Removed ${plural(r.removedBytes, 'byte')} after seq ${head?.seq ?? -1} (${r.code}: ${r.removedEvents} unacknowledged events)`, `Kept for inspection in ${r.tornPath}`]
    return { human, json: { repaired: r !== undefined, head, ...(r === undefined ? {} : { repair: r }) } }
  } finally {
    await store.close()
  }
}

function describeState (state: State): string {
  const counts = aggregateCounts(state)
  const parts = Object.entries(counts).map(([kind, n]) => `${n} ${kind}`)
  return parts.length === 0 ? 'no aggregates' : parts.join(', ')
}

function formatChange (c: FieldChange): string {
  const v = (x: JsonValue | undefined): string => JSON.stringify(x)
  if (c.op === 'added') return `  + ${c.path} = ${v(c.after)}`
  if (c.op === 'removed') return `  - ${c.path} (was ${v(c.before)})`
  return `  ~ ${c.path}: ${v(c.before)} -> ${v(c.after)}`
}

interface Expected { state?: State, state_hash: string, source: string, at_seq?: number, log_id?: string }

async function loadExpected (file: string): Promise<Expected> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ReachError('RL-1004', { message: `cannot read ${file}: ${(err as Error).message}`, cause: err })
  }
  if (file.endsWith('.checkpoint')) {
    const cp = decodeCheckpoint(text)
    verifyCheckpoint(cp)
    // The snapshot beside a checkpoint is optional; when present it is bound
    // to the signature through the state hash, so a forged one is refused.
    let state: State | undefined
    try {
      state = parseJson(await readFile(snapshotPathFor(file), 'utf8'), 'state snapshot') as unknown as State
      if (stateHash(state) !== cp.state_hash) throw new ReachError('RL-2104', { message: `the state snapshot beside ${file} does not match the checkpoint's state hash` })
    } catch (err) {
      if (err instanceof ReachError) throw err
      state = undefined
    }
    return { state_hash: cp.state_hash, source: `checkpoint ${short(cp.checkpoint_id)} (seq ${cp.at_seq})`, at_seq: cp.at_seq, log_id: cp.log_id, ...(state === undefined ? {} : { state }) }
  }
  const state = parseJson(text, file) as unknown as State
  return { state, state_hash: stateHash(state), source: file }
}

export async function replayCmd (opts: Record<string, unknown>): Promise<Report> {
  const path = opts.logPath as string
  const expected = opts.diffWith === undefined ? undefined : await loadExpected(opts.diffWith as string)
  const untilSeq = (opts.untilSeq as number | undefined) ?? expected?.at_seq
  if (expected?.at_seq !== undefined && untilSeq !== expected.at_seq) {
    throw new ReachError('RL-1003', { message: `--until-seq ${untilSeq} differs from the checkpoint's at_seq ${expected.at_seq}` })
  }
  let logId: string | undefined
  const r = await replayAsync(tap(streamEvents(path), (e) => { if (e.seq === 0) logId = e.hash }), {
    ...(untilSeq === undefined ? {} : { untilSeq }),
    trace: opts.trace === true
  })
  const human: string[] = []
  for (const t of r.trace ?? []) {
    human.push(`seq ${t.seq} ${t.type} ${t.aggregate_id}`)
    for (const c of t.changes) human.push(formatChange(c))
  }
  human.push(`Replayed ${plural(r.events_applied, 'event')}${r.last_seq >= 0 ? ` (seq 0 -> ${r.last_seq})` : ''}`)
  human.push(`Final state: ${describeState(r.state)}`)
  human.push(`State hash: ${r.state_hash}`)
  const json: Record<string, unknown> = { events_applied: r.events_applied, last_seq: r.last_seq, state_hash: r.state_hash, counts: aggregateCounts(r.state), ...(r.trace === undefined ? {} : { trace: r.trace }) }
  if (expected === undefined) return { human, json: { ...json, state: r.state } }

  if (expected.log_id !== undefined && logId !== undefined && expected.log_id !== logId) {
    throw new ReachError('RL-2109', { message: `the checkpoint is for log ${short(expected.log_id)}, this log is ${short(logId)}` })
  }
  const match = r.state_hash === expected.state_hash
  const changes = match || expected.state === undefined ? [] : diffValues(expected.state as never, r.state as never)
  human.push(`Compared with ${expected.source}`)
  if (match) {
    human.push('State diff: MATCH (no differences)', 'Deterministic replay: VERIFIED')
  } else {
    human.push(`State diff: MISMATCH (expected state hash ${expected.state_hash})`)
    if (expected.state === undefined) human.push('  (no state snapshot beside the checkpoint: field-level differences unavailable)')
    for (const c of changes) human.push(formatChange(c))
    human.push('Deterministic replay: FAILED (RL-2203)')
  }
  return {
    human,
    json: { ...json, diff_with: expected.source, expected_state_hash: expected.state_hash, match, differences: changes, ...(match ? {} : { error: new ReachError('RL-2203').toJSON() }) },
    ...(match ? {} : { exitCode: 1 })
  }
}

async function * tap<T> (source: AsyncIterable<T>, fn: (item: T) => void): AsyncGenerator<T> {
  for await (const item of source) {
    fn(item)
    yield item
  }
}
