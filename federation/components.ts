/**
 * What federation services need from the node they run in, as narrow interfaces (STYLE.md: a
 * service's `Components`). federation/ never imports node/: the composition root (node/create.ts)
 * builds each service from these, so a simulation can build many nodes in one process and a
 * test can hand a service a stream pair instead of a host.
 */
import type { Connection, Stream } from '@libp2p/interface'
import type { JsonObject, JsonValue } from '../protocol/canonical.ts'
import type { Checkpoint } from '../protocol/checkpoint.ts'
import type { ErrorCode } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import type { ConsistencyProofJson } from '../protocol/merkle.ts'
import type { RunRecord } from '../protocol/run.ts'
import type { Budget } from '../packs/manifest.ts'
import type { StoredPack } from '../packs/trust.ts'

/** A scoped log line sink (`reach:federation:delegate`); the node decides where lines go. */
export interface Logger {
  info (message: string): void
  warn (message: string): void
  debug (message: string): void
}

export interface ComponentLogger {
  forComponent (name: string): Logger
}

/** Wall-clock milliseconds since the epoch (deadlines, nonce expiry, breaker timestamps). */
export interface Clock {
  now (): number
}

/** Random bytes (delegation ids, nonces); a simulation seeds it. */
export interface Random {
  bytes (n: number): Uint8Array
}

/** Protocol handlers on the node's host. */
export interface Registrar {
  handle (protocol: string, handler: (stream: Stream, connection: Connection) => void | Promise<void>, options?: { maxInboundStreams?: number }): Promise<void>
  unhandle (protocol: string): Promise<void>
}

/** Streams to peers, by peer id text. */
export interface Dialer {
  /** RL-1011 for a peer id that does not parse; the dial's own error otherwise. */
  dial (peer: string, protocol: string, options: { signal: AbortSignal }): Promise<Stream>
  /** Peers with an open connection now. */
  connectedPeers (): string[]
}

/** A finished run, as a delegation server hands it back. */
export interface ExecutedRun {
  record: RunRecord
  status: 'completed' | 'failed' | 'cancelled'
  output?: JsonValue
  error?: { code: ErrorCode, message: string }
  checkpoint: Checkpoint
  checkpointText: string
  /** The run log's first event, its RunStarted (the checkpoint signs its hash as the log's id). */
  started: Event
  /** The run log's last event. */
  head: { seq: number, hash: string }
}

/** Runs a pack for a peer (the node adds its host tools and `reach.delegate` one hop deeper). */
export interface RunExecutor {
  /** The policy's `max_delegation_depth`. */
  maxDepth (): number
  run (request: { pack: StoredPack, input: JsonValue, budget: Partial<Budget>, signal: AbortSignal, lineage: JsonObject }): Promise<ExecutedRun>
}

/** Finished runs a node serves over /reach/log/1.0.0. */
export interface RunSource {
  /** RL-3019 when the run is not here. */
  record (runId: string): Promise<RunRecord>
  /** The node's signed checkpoint text of a finished run. */
  checkpointText (runId: string): Promise<string>
  /** The run's events in seq order, read as they are sent (never the whole log at once). */
  stream (runId: string): AsyncIterable<Event>
}

/** A pack by CID from the store, or fetched from providers, admitted by the node's policy. */
export type PackSource = (cid: string, signal: AbortSignal, timeoutMs: number) => Promise<StoredPack>

/**
 * Facts a node keeps about what it did and what peers did (a refusal, a result or log that did
 * not verify, a provider that lied; packs fetched and trusted, trust changes, delegations sent
 * and served, checkpoints and receipts received, verifications, evidence). The node logs and
 * counts them, and its audit ledger (node/audit.ts, SPEC §7.4) records each as an event
 * `audit.<type>` whose payload is the other members and the time (`at`).
 */
export interface AuditEvent {
  type: 'delegation.refused' | 'delegation.failed' | 'verification.failed' | 'provider.lied' | 'log.refused'
    | 'checkpoint.received' | 'receipt.received' | 'verification.ok' | 'evidence.stored'
    | 'delegation.sent' | 'delegation.served' | 'pack.fetched' | 'pack.trusted' | 'trust.changed'
  /** The peer the fact is about; this node's own peer id for what only this node did (a trust change). */
  peer: string
  code?: ErrorCode
  run_id?: string
  /** A pack's CID (pack.fetched, pack.trusted, delegations). */
  cid?: string
  /** A publisher key (trust.changed, pack.trusted). */
  key?: string
  detail?: string
}

export interface AuditSink {
  record (event: AuditEvent): void
}

/** The node's audit ledger as `/reach/log/1.0.0` serves it (SPEC §10.6; node/audit.ts implements it). */
export interface AuditSource {
  /** The ledger's log id (its first event's hash); RL-5006 while it has none. */
  logId (): string
  /** A checkpoint (kind "log") of the ledger at its head, signed by the node key: its file text. */
  checkpoint (): Promise<string>
  /** Events 0 .. `toSeq` in seq order, read from the store as they are sent. */
  stream (toSeq: number): AsyncIterable<Event>
  /** RFC 6962 consistency proof between two sizes of the ledger; RL-1007 for sizes it does not have. */
  consistency (oldSize: number, newSize: number): Promise<ConsistencyProofJson>
}

/** The defaults a service falls back to when the node gives none. */
export const systemClock: Clock = { now: () => Date.now() }

/** What gossipsub does for the witness (the node adapts its pubsub service to this). */
export type GossipResult = 'accept' | 'reject' | 'ignore'

export interface GossipMessageIn {
  topic: string
  data: Uint8Array
  /** The peer that passed it to us (not necessarily who made it). */
  from: string
  /** Tell gossipsub whether to forward it (accept) and how to score `from` (reject penalises). */
  report (result: GossipResult): void
}

export interface GossipBus {
  subscribe (topic: string): void
  unsubscribe (topic: string): void
  /** Publish to the topic's mesh; resolves once sent (to nobody, when no peer subscribes). */
  publish (topic: string, data: Uint8Array): Promise<void>
  /** Every message gossipsub hands up on a subscribed topic, to be validated; returns how to stop listening. */
  onMessage (handler: (message: GossipMessageIn) => void): () => void
}
