/**
 * The parallel verifier's coordinator (runs in its own thread, see
 * parallel.ts).
 *
 * The main thread reads the file in line-aligned chunks and hands them to
 * worker threads, which parse, shape-check and hash every event and check
 * the links inside their chunk (chunk.ts). The main thread checks the links
 * between chunks in file order and folds the workers' leaf hashes into the
 * Merkle accumulator. Memory stays bounded: at most two chunks per worker
 * are in flight, and each worker runs with a small heap.
 *
 * This path only certifies a clean log. On anything unclean it returns
 * undefined and the caller runs the exact sequential verifier, which reports
 * the first bad seq and its code exactly as SPEC.md §3 defines; so the
 * diagnosis never depends on how the file was split.
 */
import { open } from 'node:fs/promises'
import { Worker } from 'node:worker_threads'
import type { LogDigest } from '../../protocol/digest.ts'
import { ZERO_HASH } from '../../protocol/hash.ts'
import { MerkleAccumulator } from '../../protocol/merkle.ts'
import type { ChunkSummary } from './chunk.ts'
import { THREAD_LIMITS, WORKER_ENTRY } from './constants.ts'

/** Chunks in flight per worker: one being checked, one queued, so a worker never waits for a read. */
const IN_FLIGHT_PER_WORKER = 2

/** Digest (chain + Merkle root, no state) of a clean JSONL log, or undefined when it is not clean. */
export async function coordinate (path: string, options: { workers: number, chunkBytes: number }): Promise<LogDigest | undefined> {
  const { chunkBytes } = options
  const workers = Array.from({ length: options.workers }, () =>
    new Worker(WORKER_ENTRY, { workerData: { entry: './chunk-worker.ts' }, resourceLimits: THREAD_LIMITS }))
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    const pending = new Map<number, { resolve: (s: ChunkSummary) => void, reject: (err: unknown) => void }>()
    // Chunk buffers travel to a worker and back (transferred, never copied)
    // and are reused, so the file's bytes live in a fixed pool.
    const pool: ArrayBuffer[] = []
    for (const w of workers) {
      w.on('message', (m: { id: number, summary: ChunkSummary, buffer: ArrayBuffer }) => {
        pool.push(m.buffer)
        pending.get(m.id)?.resolve(m.summary)
        pending.delete(m.id)
      })
      // A dead thread fails every chunk still out. (Not a race against a
      // never-settling promise: each race would keep its result alive.)
      w.once('error', (err) => {
        for (const p of pending.values()) p.reject(err)
        pending.clear()
      })
    }

    let pos = 0
    let carry = Buffer.alloc(0)
    let nextId = 0
    /**
     * Read the next line-aligned chunk and send it to a worker; undefined at
     * the end of the file. The summary's promise is boxed: an async function
     * returning a bare promise would make the caller wait for the worker.
     */
    const dispatch = async (): Promise<{ summary: Promise<ChunkSummary> } | 'torn' | undefined> => {
      if (pos >= size) return carry.length === 0 ? undefined : 'torn'
      const want = carry.length + chunkBytes
      const reused = pool.pop()
      const buf = reused !== undefined && reused.byteLength >= want ? Buffer.from(reused) : Buffer.allocUnsafeSlow(want)
      carry.copy(buf, 0)
      const { bytesRead } = await fh.read(buf, carry.length, Math.min(chunkBytes, size - pos), pos)
      pos += bytesRead
      const filled = carry.length + bytesRead
      const nl = buf.lastIndexOf(0x0a, filled - 1)
      if (nl === -1) {
        if (pos >= size) return 'torn'
        carry = Buffer.from(buf.subarray(0, filled))
        return dispatch()
      }
      carry = Buffer.from(buf.subarray(nl + 1, filled))
      const id = nextId++
      const summary = new Promise<ChunkSummary>((resolve, reject) => pending.set(id, { resolve, reject }))
      workers[id % workers.length]?.postMessage({ id, buffer: buf.buffer, length: nl + 1 }, [buf.buffer])
      return { summary }
    }

    const tree = new MerkleAccumulator()
    let head: { seq: number, hash: string, timestamp: number } | undefined
    let logId: string | undefined
    let lastCommit = -1
    let uncommitted = 0
    const queue: Array<{ summary: Promise<ChunkSummary> } | 'torn'> = []
    let eof = false
    const fill = async (): Promise<void> => {
      while (!eof && queue.length < workers.length * IN_FLIGHT_PER_WORKER) {
        const next = await dispatch()
        if (next === undefined) eof = true
        else queue.push(next)
        if (next === 'torn') eof = true
      }
    }
    await fill()
    while (queue.length > 0) {
      const next = queue.shift() as { summary: Promise<ChunkSummary> } | 'torn'
      if (next === 'torn') return undefined
      const s = await next.summary
      await fill()
      if (!s.clean) return undefined
      if (s.first !== undefined && s.last !== undefined) {
        const expected = head === undefined ? { seq: 0, hash: ZERO_HASH, timestamp: -1 } : head
        const seq = head === undefined ? 0 : head.seq + 1
        if (s.first.seq !== seq || s.first.prev_hash !== expected.hash || s.first.timestamp <= expected.timestamp) return undefined
        if (head === undefined) logId = s.first.hash
        for (const leaf of s.leaves) tree.pushLeafHex(leaf)
        head = s.last
        uncommitted = s.uncommitted
      } else {
        uncommitted += s.uncommitted
      }
      if (s.lastCommit >= 0) lastCommit = s.lastCommit
    }
    // A clean log ends with the commit record of its last event.
    if (head === undefined || logId === undefined || uncommitted !== 0 || lastCommit !== head.seq) return undefined
    return { log_id: logId, count: tree.size, last_seq: head.seq, log_hash: head.hash, timestamp: head.timestamp, merkle_root: tree.rootHex() }
  } finally {
    await fh.close()
    await Promise.all(workers.map(async (w) => await w.terminate()))
  }
}
