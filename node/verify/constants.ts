/** Limits of the parallel verifier, with why each has its value. */

/** 1 MiB reads: large enough that messaging costs little per event (~3,000 events a chunk). */
export const CHUNK_BYTES = 1024 * 1024

/** More threads than this stop paying: the coordinator's Merkle fold becomes the bottleneck. */
export const MAX_WORKERS = 4

/**
 * Heap limits for every verifier thread. The data is short-lived garbage;
 * a small young generation keeps peak RSS low (V8's default lets it grow to
 * ~100 MB per thread under this allocation rate) at no measurable cost.
 */
export const THREAD_LIMITS = { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 32 }

export const WORKER_ENTRY = new URL('./worker.js', import.meta.url)
