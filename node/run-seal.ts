/**
 * A finished run's seal (SPEC §7.3): its record and the node's signed checkpoint of its log, kept
 * under `!sealed!<run_id>` in the run database. Both are functions of the log (Ed25519 is
 * deterministic), so a seal a crash lost is rebuilt from the log, byte for byte.
 */
import { createCheckpoint, encodeCheckpoint, type Checkpoint } from '../protocol/checkpoint.ts'
import { digestLog } from '../protocol/digest.ts'
import type { Event } from '../protocol/event.ts'
import type { Signer } from '../protocol/keys.ts'
import { recordOf, runOutcomeHash, type RunRecord } from '../protocol/run.ts'

/** What the run database keeps for a finished run (`!sealed!<run_id>`). */
export interface Sealed {
  record: RunRecord
  /** The checkpoint file text (encodeCheckpoint). */
  checkpoint: string
  /** When it was sealed (ms since the epoch): runs are listed most recent first. */
  ended_at: number
}

/** A finished run's record and the node's signed checkpoint of its log (also as file text, made once). */
export interface RunSeal {
  record: RunRecord
  checkpoint: Checkpoint
  checkpointText: string
}

/** A record file's text as a record, or undefined when a crash left it empty or cut short. */
export function parseRecord (text: string): RunRecord | undefined {
  try {
    const value = JSON.parse(text) as unknown
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as RunRecord : undefined
  } catch {
    return undefined
  }
}

/**
 * A seal as stored, or undefined when it does not read as one (a damaged value): like a seal a
 * crash lost, it is rebuilt from the log.
 */
export function parseSealed (text: string): Sealed | undefined {
  try {
    const value = JSON.parse(text) as Partial<Sealed> | null
    const ok = value !== null && typeof value === 'object' && typeof value.checkpoint === 'string' && typeof value.ended_at === 'number' &&
      value.record !== null && typeof value.record === 'object'
    return ok ? value as Sealed : undefined
  } catch {
    return undefined
  }
}

/** The run's record and the node's checkpoint (kind "run": its state hash is the run's outcome) of its finished log. */
export function sealOf (runId: string, events: readonly Event[], signer: Signer): RunSeal {
  const d = digestLog(events, { reduce: false })
  const record = recordOf(runId, events)
  const checkpoint = createCheckpoint({
    kind: 'run',
    log_id: d.log_id,
    at_seq: d.last_seq,
    state_hash: runOutcomeHash(record),
    log_hash: d.log_hash,
    merkle_root: d.merkle_root,
    timestamp: d.timestamp
  }, signer)
  record.checkpoint_id = checkpoint.checkpoint_id
  return { record, checkpoint, checkpointText: encodeCheckpoint(checkpoint) }
}
