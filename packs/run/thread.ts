/**
 * A run thread (threads.ts): a worker that runs the run loop with its own sandboxes, so that a
 * pack burning CPU burns this thread, never the node's event loop. The loop's side effects stay
 * on the node's thread: each event goes there to be made durable (the sink), each tool call to
 * be made (the tools), each batch of a record comes from there (the cursor); this thread waits
 * for the answer, as the loop would wait for a write or a tool in the node's own thread.
 *
 * Messages (structured clone), `id` naming the job:
 *   node → here   job {id, kind, ...}  ·  reply {id, ref, value | error}  ·  abort {id, reason}
 *   here → node   hold {id, draft}  ·  ask {id, ref, op: append | tool | fill, ...}  ·  done {id, value | error}
 */
import { parentPort, workerData } from 'node:worker_threads'
import type { JsonObject, JsonValue } from '../../protocol/canonical.ts'
import { nextEvent, type Event, type EventDraft } from '../../protocol/event.ts'
import { SandboxPool, type SandboxPoolInit } from '../sandbox/index.ts'
import type { Tool } from '../tools/index.ts'
import { Interpreter } from './interpreter.ts'
import { ArrayCursor, type RecordCursor } from './record.ts'
import { reviveError, wireError, type ThreadJob, type WireError } from './thread-wire.ts'
import type { Engine, RunSink } from './types.ts'
import { replayRun } from './index.ts'

const port = parentPort
if (port === null) throw new Error('packs/run/thread.ts runs in a worker thread')
const init = workerData as { version: string, build: Engine['build'], sandboxes?: SandboxPoolInit }
const sandboxes = new SandboxPool(init.sandboxes)
// No `threads`: this is where the run loop runs.
const engine: Engine = { version: init.version, build: init.build, sandboxes }

interface Pending { resolve: (value: unknown) => void, reject: (err: unknown) => void }
const pending = new Map<string, Pending>()
const aborts = new Map<number, AbortController>()
let refs = 0

/** Ask the node's thread to do `op` for job `id`; its answer. */
async function ask (id: number, op: 'append' | 'tool' | 'fill', body: Record<string, unknown>): Promise<unknown> {
  const ref = `${id}:${refs++}`
  const answer = new Promise((resolve, reject) => { pending.set(ref, { resolve, reject }) })
  port?.postMessage({ type: 'ask', id, ref, op, ...body })
  return await answer
}

function sinkFor (id: number, hold: boolean): RunSink {
  return {
    append: async (draft: EventDraft) => await ask(id, 'append', { draft }) as Event,
    // Pure: the node's sink makes the same event from the same draft (protocol/event.ts).
    ...(hold ? { hold: (draft: EventDraft) => { port?.postMessage({ type: 'hold', id, draft }); return nextEvent(null, draft) } } : {})
  }
}

function toolsFor (id: number, names: readonly string[]): Map<string, Tool> {
  return new Map(names.map((capability) => [capability, {
    capability,
    run: async (args: JsonObject, ctx) => await ask(id, 'tool', { tool: capability, args, ctx: { pack: ctx.pack, fuelLeft: ctx.fuelLeft, fuelGranted: ctx.fuelGranted } }) as JsonValue
  } satisfies Tool]))
}

/** The record, read from the node's thread a batch at a time. */
class ThreadCursor implements RecordCursor {
  private buffer: Event[] = []
  private i = 0
  private ended = false
  private readonly id: number

  constructor (id: number) {
    this.id = id
  }

  peek (): Event | undefined { return this.buffer[this.i] }
  advance (): void { this.i++ }
  needs (n: number): boolean { return !this.ended && this.buffer.length - this.i < n }

  async fill (n: number): Promise<void> {
    while (this.needs(n)) {
      const got = await ask(this.id, 'fill', { n: n - (this.buffer.length - this.i) }) as { events: Event[], ended: boolean }
      this.buffer = [...this.buffer.slice(this.i), ...got.events]
      this.i = 0
      this.ended = got.ended
    }
  }
}

async function run (job: ThreadJob, signal: AbortSignal, cancel: Int32Array): Promise<unknown> {
  if (job.kind === 'replay') return await replayRun(job.pack, engine, new ThreadCursor(job.id), job.options)
  const sink = sinkFor(job.id, job.hold)
  const tools = toolsFor(job.id, job.tools)
  let outcome
  if (job.kind === 'run') {
    outcome = await new Interpreter(job.start, engine, { kind: 'run', record: new ArrayCursor([]), sink, tools, signal, cancel }).run()
  } else {
    // The node's thread checked the record's start (startOf) and sends what that check found.
    outcome = await new Interpreter(job.start, engine, { kind: 'resume', record: new ArrayCursor(job.recorded), sink, tools, signal, cancel }, { strict: job.strict, ...(job.lineage === undefined ? {} : { lineage: job.lineage }) }).run()
  }
  // The events are the node's already (it made each durable): only the rest goes back.
  const { events: _events, ...rest } = outcome
  return rest
}

port.on('message', (m: { type: string, id: number, ref?: string, value?: unknown, error?: WireError, reason?: WireError, job?: ThreadJob, cancel?: SharedArrayBuffer }) => {
  if (m.type === 'reply') {
    const p = pending.get(m.ref as string)
    pending.delete(m.ref as string)
    if (m.error !== undefined) p?.reject(reviveError(m.error))
    else p?.resolve(m.value)
  } else if (m.type === 'abort') {
    aborts.get(m.id)?.abort(reviveError(m.reason as WireError))
  } else if (m.type === 'job') {
    const job = m.job as ThreadJob
    const abort = new AbortController()
    aborts.set(job.id, abort)
    run(job, abort.signal, new Int32Array(m.cancel as SharedArrayBuffer)).then(
      (value) => { port.postMessage({ type: 'done', id: job.id, value }) },
      (err: unknown) => { port.postMessage({ type: 'done', id: job.id, error: wireError(err) }) }
    ).finally(() => { aborts.delete(job.id) })
  } else if (m.type === 'close') {
    void sandboxes.close().finally(() => { port.close() })
  }
})
