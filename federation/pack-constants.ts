/**
 * Limits and defaults of `/reach/pack/1.0.0` and of announcing packs on the DHT (SPEC §10.4,
 * §10.7), each with why it has its value.
 */

/** How long a provider that did not answer is asked last (it may be down, or just busy). */
export const SILENT_MEMORY_MS = 10 * 60_000

/** A whole fetch (find + every provider tried): long enough for a few providers of a full-size bundle. */
export const DEFAULT_FETCH_TIMEOUT_MS = 15_000
/**
 * One provider's share of a fetch (dial, request, header and bytes): with 6 s at least two
 * providers get a turn within the default fetch timeout, and 6 s moves a full 9 MiB bundle at
 * ~1.5 MB/s.
 */
export const DEFAULT_PROVIDER_TIMEOUT_MS = 6_000
/** How long the server waits for a peer's request before giving up on the stream. */
export const REQUEST_TIMEOUT_MS = 10_000
/** How long the server spends sending one pack: a peer that reads slowly gives its slot back. */
export const SERVE_TIMEOUT_MS = 60_000
/** Announcing a CID on the DHT: a query to the closest peers; a mesh that does not answer in 30 s is not there. */
export const PROVIDE_TIMEOUT_MS = 30_000
/**
 * Provider records expire (kad-dht keeps them 48 h) and the peers closest to a CID change as
 * nodes join; every 10 min keeps a new node findable soon after it joins without flooding the DHT.
 */
export const DEFAULT_REPROVIDE_INTERVAL_MS = 10 * 60_000
/**
 * Packs served at once, across all peers. Each holds a bundle (≤ 9 MiB) in memory while it is
 * sent; 32 bounds that to ~300 MB, and a peer beyond it is told RL-4007 (busy) rather than left waiting.
 */
export const MAX_CONCURRENT_SERVES = 32
/** Open /reach/pack streams per connection: a fetch needs one; a few allow retries without letting one peer take every slot. */
export const MAX_INBOUND_STREAMS = 4
/** A `pack` header carries at most this many signature envelopes (the wire schema's limit). */
export const MAX_HEADER_SIGNATURES = 64
