/**
 * Where a live run writes: an EventLog over the run's store, with the run loop's two tricks
 * (ARCHITECTURE.md): the run's first event is held and goes out with its second in one durable
 * write, and its last event is handed to the sealer while its write is still syncing.
 */
import { headOf, nextEvent, type Event } from '../protocol/event.ts'
import { TERMINAL_EVENTS } from '../protocol/run.ts'
import type { RunSink } from '../packs/run/index.ts'
import type { EventLog } from './store/index.ts'

/** Test hook: `REACH_FAULT=exit-after:<EventType>` kills the process right after that event is durable. */
function faultAfter (): string | undefined {
  const f = process.env.REACH_FAULT
  return f?.startsWith('exit-after:') === true ? f.slice('exit-after:'.length) : undefined
}

/**
 * The sink a run writes through. `onLast`, when given, gets the whole log as soon as its last
 * event (RunCompleted, RunFailed, RunCancelled) is built, while that event's write is still on
 * its way to disk: sealing (hashing the log, signing the checkpoint) then overlaps the fsync.
 */
export function runSink (log: EventLog, onLast?: (events: readonly Event[]) => void): RunSink {
  const fault = faultAfter()
  let held: Event | undefined
  /** Events whose write succeeded. */
  const written: Event[] = []
  const crashAfter = (type: string): void => { if (fault === type) process.kill(process.pid, 'SIGKILL') }
  const write = async (events: Event[]): Promise<void> => {
    const durable = log.store.appendBatch(events)
    const last = events.at(-1) as Event
    if (onLast !== undefined && TERMINAL_EVENTS.has(last.type)) {
      // After this turn's microtasks, by which time the write has gone to the thread pool
      // (sealing first would hold it back). A guess until the write succeeds: the caller
      // checks it against the run's events, and seals itself when it is missing or stale.
      const whole = [...written, ...events]
      setImmediate(() => {
        try {
          onLast(whole)
        } catch {
          // the caller seals itself
        }
      })
    }
    await durable
    written.push(...events)
    for (const e of events) crashAfter(e.type)
  }
  return {
    hold: (draft) => {
      if (held !== undefined || log.pendingHead() !== null) throw new Error('only a run\'s first event is held')
      held = nextEvent(null, draft)
      return held
    },
    append: async (draft) => {
      const first = held
      held = undefined
      // The held first event goes in the same durable write; if that write fails, it is held
      // again, so the run's next event (its RunFailed) still follows it.
      const event = nextEvent(first === undefined ? log.pendingHead() : headOf(first), draft)
      try {
        await write(first === undefined ? [event] : [first, event])
      } catch (err) {
        held = first
        throw err
      }
      return event
    }
  }
}
