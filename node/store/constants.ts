/**
 * Limits and defaults of the event stores, with the reason for each value.
 */

/**
 * Most events one group-commit write carries. Past a few thousand events the
 * fsync (0.3-5 ms) is already spread so thin that bigger batches add no
 * throughput, while they do add latency for the first waiter in the batch
 * and widen the tail a crash can leave uncommitted. An `appendBatch` larger
 * than this is still written whole: all-or-nothing needs one write.
 */
export const MAX_BATCH_EVENTS = 4096

/**
 * Most bytes (approximately: UTF-16 code units of the canonical lines) one
 * group-commit write carries, for the same reasons as MAX_BATCH_EVENTS when
 * events are large; it also bounds the write buffer a batch allocates.
 */
export const MAX_BATCH_BYTES = 4 * 1024 * 1024

/**
 * Bytes a JSONL read asks the file for at a time. 1 MiB amortises the
 * syscall and promise cost over ~3,000 typical events while keeping the
 * reused buffer (and so RSS) small when verifying a million events.
 */
export const READ_CHUNK_SIZE = 1024 * 1024

/**
 * Events per batch a JSONL read hands out. Reads stay large (READ_CHUNK_SIZE)
 * but parsed events are handed over in small groups: events still held
 * when the consumer awaits survive young-generation GCs and get promoted, and
 * with a whole 1 MiB chunk (~3,000 events) per batch the old generation grows
 * to ~200 MB RSS over a million events; 256 keeps it near 100 MB.
 */
export const YIELD_EVENTS = 256

/**
 * Bytes read per step when scanning a JSONL file backwards for its head at
 * open. A clean tail is one event line plus one commit record, so 64 KiB
 * almost always finds it in a single read, whatever the size of the log.
 */
export const TAIL_CHUNK_SIZE = 64 * 1024

/**
 * A JSONL store remembers the byte offset of every INDEX_EVERY-th event it
 * has seen (on append, or while reading), so `get` and ranged reads skip to
 * within INDEX_EVERY lines of their start instead of scanning from byte 0.
 * 1024 keeps the index under 1,000 entries for a million events.
 */
export const INDEX_EVERY = 1024

/**
 * Attempts to take over a stale JSONL lock file before giving up: another
 * process may be racing us for the same stale lock.
 */
export const LOCK_ATTEMPTS = 5

/** Width of a LevelDB event key: Number.MAX_SAFE_INTEGER has 16 digits. */
export const LEVEL_KEY_WIDTH = 16

/** Events fetched per LevelDB iterator step (`nextv`) when reading. */
export const LEVEL_READ_BATCH = 1024

/** Format version written in a LevelDB store's `version` meta key. */
export const LEVEL_FORMAT_VERSION = 1
