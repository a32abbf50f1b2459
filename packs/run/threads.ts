/**
 * Runs off the node's event loop: a pool of worker threads (thread.ts), each with its own
 * sandboxes, that run the run loop for runs, resumes and replays. A pack looping within its
 * budget then burns a run thread while the node's own thread goes on answering its control
 * API, libp2p, gossip and pings. What a run does to the world stays on the node's thread: each
 * event is made durable there (the run's sink), each tool is called there, and a replay's record
 * is read there, a batch at a time, each when the run thread asks.
 *
 * Cancelling a run that is in a step: its signal sets a flag shared with the run thread, the
 * sandbox stops the step at its next tick, and the run ends with RunCancelled as if the cancel
 * had come just before that step (interpreter.ts), which its replay reproduces.
 *
 * A thread hosts any number of runs (they interleave where the loop waits, as on one thread
 * before); a job goes to the thread with the fewest. Threads start with the first job and are
 * unreferenced while idle, so a command that ran one run exits without closing the pool.
 */
import { Worker } from 'node:worker_threads'
import type { Event } from '../../protocol/event.ts'
import { ReachError } from '../../protocol/errors.ts'
import type { SandboxPoolInit } from '../sandbox/index.ts'
import type { Tool } from '../tools/index.ts'
import type { RecordCursor } from './record.ts'
import type { StartedCheck, StartedOptions } from './started.ts'
import { reviveError, wireError, type ThreadJob, type WireError } from './thread-wire.ts'
import type { Engine, ReplayVerdict, RunOutcome, RunPack, RunSink, RunStart } from './types.ts'

export interface RunThreadsInit {
  /** Threads at most (the node's policy says how many: `run_threads`). */
  size: number
  /** Each thread's sandbox pool (its sizes; a thread holds few runs at once). */
  sandboxes?: SandboxPoolInit
}

/** What a job needs of the node's thread while it runs. */
interface Host {
  sink?: RunSink
  tools?: Map<string, Tool>
  signal?: AbortSignal
  record?: RecordCursor
  /** Events made durable for it (the held first one included), in order. */
  written: Event[]
}

interface Thread {
  worker: Worker
  jobs: Map<number, { host: Host, resolve: (v: unknown) => void, reject: (e: unknown) => void }>
}

const NEVER = new AbortController().signal

export class RunThreads {
  private readonly init: RunThreadsInit
  private readonly engine: Pick<Engine, 'version' | 'build'>
  private readonly threads: Thread[] = []
  private next = 0
  private closed = false

  constructor (engine: Pick<Engine, 'version' | 'build'>, init: RunThreadsInit) {
    if (!Number.isSafeInteger(init.size) || init.size < 1) throw new ReachError('RL-1011', { message: `run threads must be a positive integer, not ${String(init.size)}` })
    this.engine = { version: engine.version, build: engine.build }
    this.init = init
  }

  /** Runs in flight on each thread (tests and metrics). */
  load (): number[] {
    return this.threads.map((t) => t.jobs.size)
  }

  async execute (start: RunStart, sink: RunSink, tools: Map<string, Tool>, signal: AbortSignal = NEVER): Promise<RunOutcome> {
    const host: Host = { sink, tools, signal, written: [] }
    const rest = await this.submit({ kind: 'run', start, tools: [...tools.keys()], hold: sink.hold !== undefined }, host) as Omit<RunOutcome, 'events'>
    return { ...rest, events: host.written }
  }

  async resume (started: StartedCheck & { ok: true }, recorded: readonly Event[], sink: RunSink, tools: Map<string, Tool>, signal: AbortSignal = NEVER): Promise<RunOutcome> {
    const host: Host = { sink, tools, signal, written: [] }
    const rest = await this.submit({ kind: 'resume', start: started.start, strict: started.build !== null, ...(started.lineage === undefined ? {} : { lineage: started.lineage }), recorded: [...recorded], tools: [...tools.keys()], hold: false }, host) as Omit<RunOutcome, 'events'>
    return { ...rest, events: [...recorded, ...host.written] }
  }

  async replay (pack: RunPack, record: RecordCursor, options: StartedOptions): Promise<ReplayVerdict> {
    return await this.submit({ kind: 'replay', pack, options }, { record, written: [] }) as ReplayVerdict
  }

  async close (): Promise<void> {
    this.closed = true
    const threads = this.threads.splice(0)
    await Promise.all(threads.map(async (t) => {
      for (const job of t.jobs.values()) job.reject(new ReachError('RL-5007', { message: 'the node is stopping: its run threads are closed' }))
      t.jobs.clear()
      await t.worker.terminate()
    }))
  }

  private async submit (body: DistributiveOmit<ThreadJob, 'id'>, host: Host): Promise<unknown> {
    if (this.closed) throw new ReachError('RL-5007', { message: 'the run threads are closed' })
    const thread = this.pick()
    const id = this.next++
    const cancel = new SharedArrayBuffer(8)
    const flag = new Int32Array(cancel)
    const signal = host.signal ?? NEVER
    const onAbort = (): void => {
      // The flag first: a thread inside a step sees it at its next tick; the message, for the
      // reason, when it is free.
      Atomics.store(flag, 0, 1)
      thread.worker.postMessage({ type: 'abort', id, reason: wireError(signal.reason) })
    }
    try {
      return await new Promise((resolve, reject) => {
        thread.jobs.set(id, { host, resolve, reject })
        thread.worker.ref()
        thread.worker.postMessage({ type: 'job', job: { ...body, id }, cancel })
        if (signal.aborted) onAbort()
        else signal.addEventListener('abort', onAbort, { once: true })
      })
    } finally {
      signal.removeEventListener('abort', onAbort)
      thread.jobs.delete(id)
      if (thread.jobs.size === 0) thread.worker.unref()
    }
  }

  /** The thread with the fewest jobs; a new one while there are fewer than `size` and all are busy. */
  private pick (): Thread {
    let best: Thread | undefined
    for (const t of this.threads) if (best === undefined || t.jobs.size < best.jobs.size) best = t
    if (best !== undefined && (best.jobs.size === 0 || this.threads.length >= this.init.size)) return best
    return this.spawn()
  }

  private spawn (): Thread {
    const worker = new Worker(new URL('./thread.ts', import.meta.url), {
      workerData: { version: this.engine.version, build: this.engine.build, ...(this.init.sandboxes === undefined ? {} : { sandboxes: this.init.sandboxes }) }
    })
    const thread: Thread = { worker, jobs: new Map() }
    worker.unref()
    worker.on('message', (m: Message) => { this.onMessage(thread, m) })
    const fail = (why: string): void => {
      const i = this.threads.indexOf(thread)
      if (i >= 0) this.threads.splice(i, 1)
      for (const job of thread.jobs.values()) job.reject(new ReachError('RL-3106', { message: `the run thread stopped: ${why}` }))
      thread.jobs.clear()
    }
    worker.on('error', (err) => { fail(err.message) })
    worker.on('exit', (code) => { fail(`it exited (${code})`) })
    this.threads.push(thread)
    return thread
  }

  private onMessage (thread: Thread, m: Message): void {
    const job = thread.jobs.get(m.id)
    if (job === undefined) return
    const { host } = job
    if (m.type === 'done') {
      if (m.error !== undefined) job.reject(reviveError(m.error))
      else job.resolve(m.value)
      return
    }
    if (m.type === 'hold') {
      const event = host.sink?.hold?.(m.draft as never)
      if (event !== undefined) host.written.push(event)
      return
    }
    const answer = async (): Promise<unknown> => {
      if (m.op === 'append') {
        const event = await (host.sink as RunSink).append(m.draft as never)
        host.written.push(event)
        return event
      }
      if (m.op === 'tool') {
        const tool = host.tools?.get(m.tool as string)
        if (tool === undefined) throw new ReachError('RL-3018', { message: `no host tool provides ${String(m.tool)}` })
        const ctx = m.ctx as { pack: string, fuelLeft?: number, fuelGranted?: number }
        return await tool.run(m.args as never, { pack: ctx.pack, signal: host.signal ?? NEVER, ...(ctx.fuelLeft === undefined ? {} : { fuelLeft: ctx.fuelLeft }), ...(ctx.fuelGranted === undefined ? {} : { fuelGranted: ctx.fuelGranted }) })
      }
      // fill: what the record has buffered once it holds n more (all of an array at once).
      const record = host.record as RecordCursor
      await record.fill(m.n as number)
      const events: Event[] = []
      for (let e = record.peek(); e !== undefined; e = record.peek()) {
        events.push(e)
        record.advance()
      }
      return { events, ended: !record.needs(1) }
    }
    answer().then(
      (value) => { thread.worker.postMessage({ type: 'reply', id: m.id, ref: m.ref, value }) },
      (err: unknown) => { thread.worker.postMessage({ type: 'reply', id: m.id, ref: m.ref, error: wireError(err) }) }
    )
  }
}

type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never

type Message =
  | { type: 'done', id: number, value?: unknown, error?: WireError }
  | { type: 'hold', id: number, draft: unknown }
  | { type: 'ask', id: number, ref: string, op: 'append' | 'tool' | 'fill', draft?: unknown, tool?: string, args?: unknown, ctx?: unknown, n?: number }
