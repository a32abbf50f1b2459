/**
 * Reading the JSONL log format (the format itself is described in jsonl.ts).
 *
 * - `readJsonlEvents` / `readJsonlBatches` stream a log without opening or
 *   locking it (read-only: for `reach verify` of a log another process holds,
 *   and for tamper tests). They check JSON and event shape only (hashes and
 *   links are the chain verifier's business) and report problems of the tail
 *   (torn line, uncommitted events, missing events) at the END of the stream,
 *   after every parseable event was yielded, so a verifier reports a broken
 *   chain in the middle of the log first.
 * - `inspectJsonlTail` finds the committed head by reading the file
 *   backwards from its end, so opening a log of any size costs about one read.
 *
 * Both apply the same rules and report the same code and seq for the same
 * damage, in this order: a malformed line that is not the last line RL-2006;
 * a final commit record not preceded by an event, or naming a seq below it
 * RL-5009; naming a seq above it RL-2003 (events are missing); an incomplete
 * or unparseable last line RL-5003; events after the last commit record RL-5004.
 */
import { open, type FileHandle } from 'node:fs/promises'
import { canonicalize } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'
import { computeEventHash, eventShapeProblem, type Event } from '../../protocol/event.ts'
import { INDEX_EVERY, READ_CHUNK_SIZE, TAIL_CHUNK_SIZE, YIELD_EVENTS } from './constants.ts'
import type { ReadRange } from './types.ts'

const NEWLINE = 0x0a
const LOWER_C = 0x63

/** The commit record closing a durable batch whose last event is `seq`. */
export function commitRecord (seq: number): string {
  return `{"commit":${seq}}`
}

/**
 * The exact text one durable batch appends: each event's canonical form and
 * a newline, then the commit record and a newline. Handy for writing
 * fixtures; the events are not checked here.
 */
export function jsonlBatchText (events: readonly Event[]): string {
  if (events.length === 0) return ''
  let text = ''
  for (const event of events) text += canonicalize(event) + '\n'
  return text + commitRecord((events[events.length - 1] as Event).seq) + '\n'
}

export type JsonlLine =
  | { kind: 'event', event: Event }
  | { kind: 'commit', seq: number }
  /** Not JSON: what a torn write leaves. */
  | { kind: 'invalid', reason: string }
  /** JSON, but neither an event nor a commit record. */
  | { kind: 'malformed', reason: string }

/**
 * What one line of a JSONL log is. With `shape` false only "a JSON object
 * with an integer seq" is required of an event (for callers that run the
 * chain verifier, which checks shape itself, on every event anyway).
 */
export function classifyLine (text: string, shape = true): JsonlLine {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return { kind: 'invalid', reason: `not JSON: ${(err as Error).message}` }
  }
  if (value !== null && typeof value === 'object' && 'commit' in value) {
    const commit = (value as { commit: unknown }).commit
    if (Object.keys(value).length === 1 && Number.isSafeInteger(commit) && (commit as number) >= 0) {
      return { kind: 'commit', seq: commit as number }
    }
    return { kind: 'malformed', reason: 'commit record must be {"commit":<seq>}' }
  }
  if (!shape) {
    if (value !== null && typeof value === 'object' && Number.isSafeInteger((value as { seq?: unknown }).seq)) return { kind: 'event', event: value as Event }
    return { kind: 'malformed', reason: 'not an object with an integer seq' }
  }
  const problem = eventShapeProblem(value)
  if (problem !== undefined) return { kind: 'malformed', reason: problem }
  return { kind: 'event', event: value as Event }
}

export interface JsonlReadOptions extends ReadRange {
  /** Bytes per read; 1 MiB by default. Small values are for tests. */
  chunkSize?: number
  /**
   * 'throw' (default): after the last event, throw the tail's problem if it
   * has one. 'ignore': end quietly. Only checked when the stream reaches the
   * end of the file (not when it stops early at `to`).
   */
  tail?: 'throw' | 'ignore'
  /**
   * true (default): a line that is JSON but not event-shaped is RL-2006 here.
   * false: only require a JSON object with an integer seq and leave the shape
   * to a chain verifier (protocol/chain.ts checks it first, at the same seq);
   * saves about a third of the reader's time.
   */
  shape?: boolean
}

/**
 * Streams the events of a JSONL log in file order, in batches (one per
 * chunk read), without opening or locking it. Reads the file as it is when
 * the stream starts: bytes appended later are not seen, and a write in
 * progress at that moment looks like a torn or uncommitted tail.
 * Throws RL-5006 if the file does not exist, RL-2006 at the expected seq for
 * a line that is not an event, and the tail problem at the end (see above).
 */
export async function * readJsonlBatches (path: string, options: JsonlReadOptions = {}): AsyncGenerator<Event[]> {
  const fh = await openForReading(path)
  try {
    const { size } = await fh.stat()
    yield * scanJsonl({
      fh,
      path,
      start: 0,
      end: size,
      chunkSize: options.chunkSize ?? READ_CHUNK_SIZE,
      from: options.from ?? 0,
      to: options.to ?? Number.POSITIVE_INFINITY,
      tail: options.tail !== 'ignore',
      shape: options.shape !== false
    })
  } finally {
    await fh.close()
  }
}

/** `readJsonlBatches`, one event at a time. */
export async function * readJsonlEvents (path: string, options: JsonlReadOptions = {}): AsyncGenerator<Event> {
  for await (const batch of readJsonlBatches(path, options)) {
    for (const event of batch) yield event
  }
}

export async function openForReading (path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ReachError('RL-5006', { message: `no log at ${path}`, details: { path }, cause: err })
    }
    throw err
  }
}

export interface ScanInit {
  fh: FileHandle
  path: string
  /** Byte offset of a line start. */
  start: number
  /** Bytes past this offset are not read. */
  end: number
  chunkSize: number
  from: number
  to: number
  /** Throw the tail problem at the end of the file (reader mode). */
  tail: boolean
  /** Check event shape (see JsonlReadOptions.shape); default true. */
  shape?: boolean
  /**
   * Store mode: the file is our own, checked at open. The first event line
   * at `start` has seq `seq`; event lines before `from` are counted, not
   * parsed, every parsed event must carry the counted seq, and `onIndex`
   * learns the offset of every INDEX_EVERY-th event line passed.
   */
  counted?: { seq: number, onIndex?: (seq: number, offset: number) => void }
}

/**
 * The scanner behind every forward read: large reads into one reused buffer,
 * lines split on the 0x0A byte (which never occurs inside a multi-byte UTF-8
 * sequence), only complete lines decoded.
 */
export async function * scanJsonl (init: ScanInit): AsyncGenerator<Event[]> {
  const { fh, path, end, chunkSize, from, to, counted } = init
  const shape = init.shape !== false
  let buf = Buffer.allocUnsafe(Math.max(chunkSize * 2, 256))
  let filled = 0 // bytes of buf holding file data, which starts at file offset `base`
  let base = init.start
  let pos = init.start
  let lineNo: number | undefined = init.start === 0 ? 1 : undefined
  let nextSeq = counted?.seq ?? 0
  // Reader-mode state for the tail rules.
  let lastSeq: number | undefined
  let prevEvent: number | undefined
  let lastCommit: { seq: number, eventBefore: number | undefined, end: number } | undefined
  let uncommitted = false
  let bad: { offset: number, line: number | undefined, reason: string, seq: number } | undefined
  let stopped = false
  let failure: ReachError | undefined

  while (!stopped && pos < end) {
    if (filled + chunkSize > buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(buf.length * 2, filled + chunkSize))
      buf.copy(bigger, 0, 0, filled)
      buf = bigger
    }
    const { bytesRead } = await fh.read(buf, filled, Math.min(chunkSize, end - pos), pos)
    if (bytesRead === 0) break // the file is shorter than `end`
    pos += bytesRead
    filled += bytesRead
    const view = buf.subarray(0, filled)
    let out: Event[] = []
    let s = 0
    for (let nl = view.indexOf(NEWLINE, s); nl !== -1; nl = view.indexOf(NEWLINE, s)) {
      const offset = base + s
      const line = lineNo
      const lineStart = s
      s = nl + 1
      if (lineNo !== undefined) lineNo++
      if (counted !== undefined) {
        if (nl - lineStart > 2 && view[lineStart + 2] === LOWER_C) continue // {"commit":...}
        const seq = nextSeq++
        if (seq % INDEX_EVERY === 0) counted.onIndex?.(seq, offset)
        if (seq < from) continue
        if (seq > to) {
          stopped = true
          break
        }
        const parsed = classifyLine(view.toString('utf8', lineStart, nl))
        if (parsed.kind !== 'event') {
          failure = malformedLine(path, seq, offset, line, parsed.kind === 'commit' ? 'unexpected commit record' : parsed.reason)
          break
        }
        if (parsed.event.seq !== seq) {
          failure = new ReachError(parsed.event.seq > seq ? 'RL-2003' : 'RL-2004', {
            message: `${path} at byte ${offset}: expected seq ${seq}, found ${parsed.event.seq}`,
            seq,
            details: { path, offset, expected: seq, actual: parsed.event.seq }
          })
          break
        }
        out.push(parsed.event)
        if (out.length >= YIELD_EVENTS) {
          yield out
          out = []
        }
        continue
      }
      if (bad !== undefined) {
        failure = malformedLine(path, bad.seq, bad.offset, bad.line, bad.reason)
        break
      }
      const parsed = classifyLine(view.toString('utf8', lineStart, nl), shape)
      switch (parsed.kind) {
        case 'invalid':
          // Torn if it is the last line, malformed if anything follows.
          bad = { offset, line, reason: parsed.reason, seq: (lastSeq ?? -1) + 1 }
          break
        case 'malformed':
          failure = malformedLine(path, (lastSeq ?? -1) + 1, offset, line, parsed.reason)
          break
        case 'commit':
          lastCommit = { seq: parsed.seq, eventBefore: prevEvent, end: base + s }
          prevEvent = undefined
          uncommitted = false
          break
        case 'event': {
          const seq = parsed.event.seq
          if (seq > to) {
            stopped = true
            break
          }
          prevEvent = seq
          lastSeq = seq
          uncommitted = true
          if (seq >= from) out.push(parsed.event)
          break
        }
      }
      if (stopped || failure !== undefined) break
      if (out.length >= YIELD_EVENTS) {
        yield out
        out = []
      }
    }
    if (s > 0) {
      buf.copy(buf, 0, s, filled)
      base += s
      filled -= s
    }
    if (out.length > 0) yield out
    // Events before a bad line are handed out first: a verifier reports the earliest problem.
    if (failure !== undefined) throw failure
  }
  if (stopped) return
  if (counted !== undefined) {
    if (filled > 0 || pos < end) {
      throw new ReachError('RL-5009', { message: `${path} ends before byte ${end}, or mid-line`, details: { path, offset: base } })
    }
    return
  }
  if (!init.tail) return
  const problem = tailProblem({
    path,
    malformed: undefined,
    commit: lastCommit === undefined ? undefined : { seq: lastCommit.seq, eventBefore: lastCommit.eventBefore },
    tornAt: bad?.offset ?? (filled > 0 ? base : undefined),
    lastSeq,
    uncommittedAt: uncommitted ? (lastCommit?.end ?? 0) : undefined
  })
  if (problem !== undefined) throw problem
}

function malformedLine (path: string, seq: number, offset: number, line: number | undefined, reason: string): ReachError {
  return new ReachError('RL-2006', {
    message: `${path}${line === undefined ? '' : ` line ${line}`} (byte ${offset}): ${reason}`,
    seq,
    details: { path, ...(line === undefined ? {} : { line }), offset, reason }
  })
}

interface TailFacts {
  path: string
  /** A malformed line in the tail region (backward inspection only). */
  malformed: { seq: number, offset: number, reason: string } | undefined
  /** The last commit record and the seq of the event line just before it. */
  commit: { seq: number, eventBefore: number | undefined } | undefined
  /** Offset of an incomplete or unparseable last line. */
  tornAt: number | undefined
  /** Seq of the last complete event line. */
  lastSeq: number | undefined
  /** Offset of the first event line after the last commit record, if any. */
  uncommittedAt: number | undefined
}

function tailProblem (facts: TailFacts): ReachError | undefined {
  const { path, commit } = facts
  if (facts.malformed !== undefined) {
    return malformedLine(path, facts.malformed.seq, facts.malformed.offset, undefined, facts.malformed.reason)
  }
  if (commit !== undefined) {
    if (commit.eventBefore === undefined && facts.lastSeq !== undefined && commit.seq > facts.lastSeq) {
      // The event(s) the last commit record names were deleted: the same
      // damage as a deleted event in the middle of the log.
      return new ReachError('RL-2003', {
        message: `${path}: the last commit record names seq ${commit.seq} but the log's last event is ${facts.lastSeq}: events are missing`,
        seq: facts.lastSeq + 1,
        details: { path, commit: commit.seq, last_event: facts.lastSeq }
      })
    }
    if (commit.eventBefore === undefined) {
      return new ReachError('RL-5009', { message: `${path}: the last commit record (${commit.seq}) does not follow an event`, details: { path, commit: commit.seq } })
    }
    if (commit.seq > commit.eventBefore) {
      return new ReachError('RL-2003', {
        message: `${path}: the last commit record names seq ${commit.seq} but the last event before it is ${commit.eventBefore}: events are missing`,
        seq: commit.eventBefore + 1,
        details: { path, commit: commit.seq, last_event: commit.eventBefore }
      })
    }
    if (commit.seq < commit.eventBefore) {
      return new ReachError('RL-5009', {
        message: `${path}: the last commit record names seq ${commit.seq} but follows seq ${commit.eventBefore}`,
        details: { path, commit: commit.seq, last_event: commit.eventBefore }
      })
    }
  }
  if (facts.tornAt !== undefined) {
    return new ReachError('RL-5003', {
      message: `${path}: the last line (byte ${facts.tornAt}) is incomplete; open with repair to cut it off`,
      seq: (facts.lastSeq ?? -1) + 1,
      details: { path, offset: facts.tornAt }
    })
  }
  if (facts.uncommittedAt !== undefined) {
    const seq = (commit?.eventBefore ?? -1) + 1
    return new ReachError('RL-5004', {
      message: `${path}: events from seq ${seq} (byte ${facts.uncommittedAt}) have no commit record; open with repair to cut them off`,
      seq,
      details: { path, offset: facts.uncommittedAt }
    })
  }
  return undefined
}

/** What the end of a JSONL log says about it. */
export interface JsonlTail {
  /** File size inspected. */
  size: number
  /** The last committed event, or null. */
  head: Event | null
  /** Byte offset just past the head's commit record (0 when nothing is committed): where repair cuts. */
  committedEnd: number
  /** Complete event lines after the last commit record. */
  uncommittedEvents: number
  /** The tail's problem, if any; RL-5003 and RL-5004 are repairable. */
  problem: ReachError | undefined
}

/**
 * Finds the committed head of a JSONL log by reading backwards from `size`
 * in chunks, stopping at the first commit record and the event before it.
 * Checks the head event's shape and hash too (RL-2006, RL-2001).
 */
export async function inspectJsonlTail (fh: FileHandle, path: string, size: number, chunkSize = TAIL_CHUNK_SIZE): Promise<JsonlTail> {
  let tornAt: number | undefined
  let sawParseable = false
  let lastSeq: number | undefined
  let uncommittedEvents = 0
  let uncommittedAt: number | undefined
  let malformed: { seq: number | undefined, offset: number, reason: string } | undefined
  let commit: { seq: number, end: number } | undefined
  let commitOrphaned = false
  let head: Event | null = null
  for await (const seg of linesBackward(fh, size, chunkSize)) {
    if (!seg.complete) {
      tornAt = seg.start
      continue
    }
    const parsed = classifyLine(seg.text)
    if (parsed.kind === 'invalid' || parsed.kind === 'malformed') {
      if (parsed.kind === 'invalid' && !sawParseable) {
        tornAt = seg.start
        continue
      }
      malformed = { seq: undefined, offset: seg.start, reason: parsed.reason }
      sawParseable = true
      continue
    }
    sawParseable = true
    if (parsed.kind === 'commit') {
      // A second commit record before any event: the last one follows no event.
      if (commit !== undefined) commitOrphaned = true
      else commit = { seq: parsed.seq, end: seg.end + 1 }
      continue
    }
    const event = parsed.event
    if (malformed !== undefined && malformed.seq === undefined) malformed.seq = event.seq + 1
    lastSeq ??= event.seq
    if (commit === undefined) {
      uncommittedEvents++
      uncommittedAt = seg.start
      continue
    }
    head = event
    break
  }
  if (commit !== undefined && head === null) commitOrphaned = true
  const problem = tailProblem({
    path,
    malformed: malformed === undefined ? undefined : { seq: malformed.seq ?? 0, offset: malformed.offset, reason: malformed.reason },
    commit: commit === undefined ? undefined : { seq: commit.seq, eventBefore: commitOrphaned ? undefined : head?.seq },
    tornAt,
    lastSeq,
    uncommittedAt
  }) ?? headProblem(path, head)
  return { size, head, committedEnd: head === null ? 0 : (commit as { end: number }).end, uncommittedEvents, problem }
}

/** `inspectJsonlTail` of the file at `path`, read-only and without locking it. RL-5006 if it is missing. */
export async function inspectJsonl (path: string, chunkSize = TAIL_CHUNK_SIZE): Promise<JsonlTail> {
  const fh = await openForReading(path)
  try {
    const { size } = await fh.stat()
    return await inspectJsonlTail(fh, path, size, chunkSize)
  } finally {
    await fh.close()
  }
}

function headProblem (path: string, head: Event | null): ReachError | undefined {
  if (head === null) return undefined
  // Shape was checked by classifyLine; the hash is cheap and the next append links to it.
  let hash: string
  try {
    hash = computeEventHash(head)
  } catch (err) {
    return new ReachError('RL-2006', { message: `${path}: the head event cannot be canonicalised`, seq: head.seq, details: { path }, cause: err })
  }
  if (hash !== head.hash) return new ReachError('RL-2001', { message: `${path}: the head event (seq ${head.seq}) does not match its hash`, seq: head.seq, details: { path, expected: hash, actual: head.hash } })
  return undefined
}

interface Segment {
  /** Byte offsets of the line, without its newline. */
  start: number
  end: number
  /** False for trailing bytes with no newline after them. */
  complete: boolean
  text: string
}

/** The lines of [0, size) from the last to the first, reading backwards in chunks. */
async function * linesBackward (fh: FileHandle, size: number, chunkSize: number): AsyncGenerator<Segment> {
  let bufStart = size
  let buf = Buffer.alloc(0) // file bytes [bufStart, segEnd)
  let segEnd = size
  let complete = false
  for (;;) {
    const i = buf.lastIndexOf(NEWLINE)
    if (i !== -1) {
      const start = bufStart + i + 1
      if (complete || start < segEnd) yield { start, end: segEnd, complete, text: buf.toString('utf8', i + 1) }
      segEnd = bufStart + i
      complete = true
      buf = buf.subarray(0, i)
      continue
    }
    if (bufStart === 0) {
      if (complete || segEnd > 0) yield { start: 0, end: segEnd, complete, text: buf.toString('utf8') }
      return
    }
    const n = Math.min(chunkSize, bufStart)
    const chunk = Buffer.allocUnsafe(n)
    await readFully(fh, chunk, bufStart - n)
    bufStart -= n
    buf = buf.length === 0 ? chunk : Buffer.concat([chunk, buf])
  }
}

export async function readFully (fh: FileHandle, into: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done)
    if (bytesRead === 0) throw new ReachError('RL-5009', { message: `unexpected end of file at byte ${position + done}` })
    done += bytesRead
  }
}
