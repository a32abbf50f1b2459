/**
 * Checking one chunk of a JSON-lines log on its own: everything about a run
 * of complete lines that does not need the lines before it.
 *
 * Used by the parallel verifier's worker threads. Each event is checked for
 * shape and hash, consecutive events in the chunk for seq, link and clock;
 * what spans chunks (the first event's link to the previous chunk, the
 * Merkle tree, the tail's commit record) is left to the caller. The answer is
 * only "clean" or "not clean": on anything unclean the caller re-runs the
 * exact sequential verifier, which names the first bad seq and its code
 * (protocol/SPEC.md §3). Pure: no I/O.
 */
import { computeEventHash, eventShapeProblemExceptHashes, type Event } from '../../protocol/event.ts'
import { leafHashHex } from '../../protocol/merkle.ts'

export interface ChunkSummary {
  /** False when anything in the chunk is not a clean, committed run of events. */
  clean: boolean
  count: number
  first?: { seq: number, prev_hash: string, timestamp: number, hash: string }
  last?: { seq: number, hash: string, timestamp: number }
  /** RFC 6962 leaf hashes (hex) of the chunk's events, in order. */
  leaves: string[]
  /** Seq named by the chunk's last commit record, or -1. */
  lastCommit: number
  /** Events after the chunk's last commit record. */
  uncommitted: number
}

const NEWLINE = 0x0a

/** Summarise the complete lines in `bytes` (which must end with a newline). */
export function summariseChunk (bytes: Uint8Array): ChunkSummary {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out: ChunkSummary = { clean: true, count: 0, leaves: [], lastCommit: -1, uncommitted: 0 }
  let prev: Event | undefined
  let start = 0
  for (let nl = buf.indexOf(NEWLINE, start); nl !== -1; nl = buf.indexOf(NEWLINE, start)) {
    const line = buf.toString('utf8', start, nl)
    start = nl + 1
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch {
      return { ...out, clean: false }
    }
    if (value !== null && typeof value === 'object' && 'commit' in value) {
      const commit = (value as { commit: unknown }).commit
      if (Object.keys(value).length !== 1 || !Number.isSafeInteger(commit)) return { ...out, clean: false }
      out.lastCommit = commit as number
      out.uncommitted = 0
      continue
    }
    // The hash fields' hex form is proven by the equality checks below (and,
    // for the chunk's first prev_hash, by the caller's link check).
    if (eventShapeProblemExceptHashes(value) !== undefined) return { ...out, clean: false }
    const e = value as Event
    if (computeEventHash(e) !== e.hash) return { ...out, clean: false }
    if (prev === undefined) {
      out.first = { seq: e.seq, prev_hash: e.prev_hash, timestamp: e.timestamp, hash: e.hash }
    } else if (e.seq !== prev.seq + 1 || e.prev_hash !== prev.hash || e.timestamp <= prev.timestamp) {
      return { ...out, clean: false }
    }
    out.leaves.push(leafHashHex(e.hash))
    out.count++
    out.uncommitted++
    prev = e
  }
  if (start !== buf.length) return { ...out, clean: false }
  if (prev !== undefined) out.last = { seq: prev.seq, hash: prev.hash, timestamp: prev.timestamp }
  return out
}
