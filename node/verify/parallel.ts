/**
 * Verifying a JSON-lines log on every core.
 *
 * A coordinator thread reads the file in line-aligned chunks and hands them
 * to chunk threads, which parse, shape-check and hash every event and check
 * the links inside their chunk (chunk.ts); the coordinator checks the links
 * between chunks in file order and folds the leaf hashes into the Merkle
 * accumulator (coordinator.ts). All of it runs off the main thread, in
 * threads with small heaps, so peak memory stays bounded whatever the size
 * of the log.
 *
 * This path only certifies a clean log: on anything unclean it returns
 * undefined and the caller runs the exact sequential verifier, which reports
 * the first bad seq and its code as SPEC.md §3 defines. The diagnosis never
 * depends on how the file was split.
 */
import os from 'node:os'
import { Worker } from 'node:worker_threads'
import type { LogDigest } from '../../protocol/digest.ts'
import { CHUNK_BYTES, MAX_WORKERS, THREAD_LIMITS, WORKER_ENTRY } from './constants.ts'

export interface ParallelVerifyOptions {
  /** Chunk threads (default: the cores available, at most MAX_WORKERS). */
  workers?: number
  chunkBytes?: number
}

export async function verifyJsonlParallel (path: string, options: ParallelVerifyOptions = {}): Promise<LogDigest | undefined> {
  const workerData = {
    entry: './coordinator-worker.ts',
    path,
    workers: Math.max(1, options.workers ?? Math.min(MAX_WORKERS, os.availableParallelism())),
    chunkBytes: options.chunkBytes ?? CHUNK_BYTES
  }
  const coordinator = new Worker(WORKER_ENTRY, { workerData, resourceLimits: THREAD_LIMITS })
  try {
    return await new Promise<LogDigest | undefined>((resolve, reject) => {
      coordinator.once('message', (d: LogDigest | null) => resolve(d ?? undefined))
      coordinator.once('error', reject)
      coordinator.once('exit', (code) => reject(new Error(`verifier thread exited with code ${code}`)))
    })
  } finally {
    await coordinator.terminate()
  }
}
