/**
 * Crash safety with a real process: a child appends with group commit and is
 * SIGKILLed mid-stream. Every append it saw resolve must survive: the log
 * either opens cleanly, or reports a torn tail (RL-5003 / RL-5004) that
 * `repair` cuts off, leaving a valid chain with every acknowledged event.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isReachError } from '../../../protocol/errors.ts'
import { EventLog, openStore, type EventStore, type StoreKind } from '../../../node/store/index.ts'
import { expectValidChain } from './compliance.ts'

const WRITER = fileURLToPath(new URL('./fixtures/crash-writer.ts', import.meta.url))

/** Runs the writer until it has acknowledged `acks` appends, then SIGKILLs it; returns the highest acknowledged seq. */
async function crashWriter (kind: StoreKind, path: string, acks: number, payload: number): Promise<number> {
  const child = spawn(process.execPath, [WRITER, kind, path, String(payload)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const exited = once(child, 'exit')
  let acked = -1
  let count = 0
  let rest = ''
  let sent = false
  const killed = new Promise<void>((resolve, reject) => {
    // Each ack is one write(2) of a few bytes to a pipe, so lines never tear.
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (rest + chunk).split('\n')
      rest = lines.pop() ?? ''
      for (const line of lines) {
        acked = Math.max(acked, Number(line))
        count++
      }
      if (count >= acks && !sent) {
        sent = true
        child.kill('SIGKILL')
        resolve()
      }
    })
    child.on('exit', (code) => { if (count < acks) reject(new Error(`writer exited early (${code}): ${stderr}`)) })
  })
  await killed
  const [, signal] = await exited as [number | null, string | null]
  expect(signal).toBe('SIGKILL')
  // Acks written before the kill may still be in the pipe: drain them.
  if (!child.stdout.readableEnded) await once(child.stdout, 'end')
  return acked
}

/** Opens the log, repairing a torn tail (and only that) if the kill left one. */
async function reopen (kind: StoreKind, path: string): Promise<EventStore> {
  try {
    return await openStore(path, { kind })
  } catch (err) {
    if (!isReachError(err) || !['RL-5003', 'RL-5004'].includes(err.code)) throw err
    const store = await openStore(path, { kind, repair: true })
    expect(store.lastRepair?.code).toBe(err.code)
    return store
  }
}

describe('crash safety (SIGKILL of a real writer process)', () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reach-crash-'))
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  // [store, file, acks before the kill, payload bytes]. With 200 kB payloads a
  // kill lands inside a write(2) about one time in ten, leaving a torn tail.
  const runs: Array<[StoreKind, string, number, number]> = [
    ['jsonl', 'events.jsonl', 2000, 2000],
    ['jsonl', 'events.jsonl', 25, 200_000],
    ['jsonl', 'events.jsonl', 40, 200_000],
    ['jsonl', 'events.jsonl', 55, 200_000],
    ['level', 'events.level', 2000, 2000],
    ['level', 'events.level', 40, 200_000]
  ]
  for (const [kind, file, acks, payload] of runs) {
    it(`${kind}: every acknowledged append survives a kill after ${acks} acks of ${payload}-byte events`, async () => {
      const path = join(dir, file)
      const acked = await crashWriter(kind, path, acks, payload)
      expect(acked).toBeGreaterThanOrEqual(acks - 1)
      const store = await reopen(kind, path)
      try {
        const head = store.head()
        expect(head?.seq).toBeGreaterThanOrEqual(acked)
        const events = await store.readAll()
        expect(events).toHaveLength((head?.seq ?? -1) + 1)
        expectValidChain(events)
        // The writer's stale lock is taken over and appends carry on.
        const more = await new EventLog(store).append({ type: 'After', aggregate_id: 'x' })
        expect(more.seq).toBe((head?.seq ?? -1) + 1)
      } finally {
        await store.close()
      }
    })
  }
})
