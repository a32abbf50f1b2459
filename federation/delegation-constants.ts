/**
 * Limits and defaults of `/reach/delegate/1.0.0` (SPEC §10.5), each with why it has its value.
 */

/**
 * Codes that say something about the request itself, so every peer would answer the same: a
 * replayed nonce, a version nobody speaks, our own cancellation. Policy refusals (depth, budget,
 * trust, engine) are each peer's own policy, so the next peer is tried.
 */
export const FINAL_CODES: ReadonlySet<string> = new Set(['RL-4009', 'RL-4012', 'RL-4015'])

/** Each attempt's deadline is now + this, unless the caller says otherwise. */
export const DEFAULT_DEADLINE_MS = 30_000
/** Attempts per delegation (one when the caller names the peer). */
export const DEFAULT_ATTEMPTS = 3
/** A delegation may ask for at most an hour (and the timer stays within setTimeout's range). */
export const MAX_DEADLINE_MS = 3_600_000
/** How long a nonce is remembered past its deadline (clock skew between nodes). */
export const NONCE_GRACE_MS = 60_000
/** Live nonces remembered at most (each ~100 bytes): past this the node answers busy. */
export const MAX_NONCES = 100_000

/** A delegation stream idle this long between requests is closed by the server ... */
export const SERVER_IDLE_MS = 30_000
/** ... and given up by the client well before, so that the client is not the one racing the close. */
export const CLIENT_IDLE_MS = 10_000
/** Idle delegation streams a client keeps per peer. */
export const IDLE_STREAMS_PER_PEER = 2

/** Runs a server runs at once, and requests it lets wait for a slot (RL-4007 past that). */
export const DEFAULT_MAX_CONCURRENT = 4
export const DEFAULT_MAX_QUEUE = 16
/** Streams a connection may open beyond runs + waiting: room for kept idle streams and refusals. */
export const EXTRA_INBOUND_STREAMS = 4

/** A dial to a delegate gets this long (RL-4002 past it). */
export const DIAL_TIMEOUT_MS = 5_000
/** The client waits for a result until the deadline plus this: time for the peer to say it ran out. */
export const RESULT_GRACE_MS = 1_000
/** After a cancel, how long the client waits for the cancelled run's result (a later one is dropped). */
export const CANCEL_GRACE_MS = 1_000
/** A server fetches a missing pack within min(time to the deadline, this) (SPEC §10.4's fetch bound). */
export const PACK_FETCH_MS = 15_000
/** How long a stopping server waits for aborted runs to record RunCancelled before the stores close. */
export const STOP_TIMEOUT_MS = 5_000
/** The inbox's own read bound: the real deadlines are its callers', and a stream stays open between requests. */
export const INBOX_READ_MS = MAX_DEADLINE_MS + 60_000
