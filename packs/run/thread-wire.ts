/**
 * What goes between the node's thread and a run thread (threads.ts, thread.ts): the jobs, and
 * errors as plain data (a ReachError keeps its code, seq and details; a resume's divergence its
 * divergence), since structured clone keeps only an Error's message.
 */
import { ReachError, isErrorCode, isReachError } from '../../protocol/errors.ts'
import type { Event } from '../../protocol/event.ts'
import type { LineageFacts, StartedOptions } from './started.ts'
import type { RunPack, RunStart } from './types.ts'

export type ThreadJob =
  | { id: number, kind: 'run', start: RunStart, tools: string[], hold: boolean }
  | { id: number, kind: 'resume', start: RunStart, strict: boolean, lineage?: LineageFacts, recorded: Event[], tools: string[], hold: boolean }
  | { id: number, kind: 'replay', pack: RunPack, options: StartedOptions }

export interface WireError {
  code?: string
  message: string
  seq?: number
  details?: Record<string, unknown>
  divergence?: unknown
}

export function wireError (err: unknown): WireError {
  if (isReachError(err)) return { code: err.code, message: err.message, ...(err.seq === undefined ? {} : { seq: err.seq }), details: err.details }
  const divergence = (err as { divergence?: unknown } | null)?.divergence
  return { message: err instanceof Error ? err.message : String(err), ...(divergence === undefined ? {} : { divergence }) }
}

export function reviveError (w: WireError): Error {
  if (w.code !== undefined && isErrorCode(w.code)) return new ReachError(w.code, { message: w.message, ...(w.seq === undefined ? {} : { seq: w.seq }), ...(w.details === undefined ? {} : { details: w.details }) })
  return Object.assign(new Error(w.message), w.divergence === undefined ? {} : { divergence: w.divergence })
}
