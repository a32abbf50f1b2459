/**
 * Crash safety with a real process: a child appends with group commit and is
 * SIGKILLed mid-stream. Every append it saw resolve must survive: the log
 * either opens cleanly, or reports a torn tail (RL-5003 / RL-5004) that
 * `repair` cuts off, leaving a valid chain with every acknowledged event. A kill
 * lands inside a write only now and then, so one case tears the tail itself.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isReachError } from '../../../protocol/errors.ts'
import { EventLog, openStore, type EventStore, type StoreKind } from '../../../node/store/index.ts'
import { expectValidChain } from './compliance.ts'

const WRITER = fileURLToPath(new URL('./fixtures/crash-writer.ts', import.meta.url))

/**
 * Runs the writer until it has acknowledged `acks` appends, then SIGKILLs it; returns every seq
 * it acknowledged (those still in the pipe at the kill included), in the order it printed them.
 */
async function crashWriter (kind: StoreKind, path: string, acks: number, payload: number): Promise<number[]> {
  const child = spawn(process.execPath, [WRITER, kind, path, String(payload)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const exited = once(child, 'exit')
  const acked: number[] = []
  let rest = ''
  let sent = false
  const killed = new Promise<void>((resolve, reject) => {
    // Each ack is one write(2) of a few bytes to a pipe, so lines never tear.
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const lines = (rest + chunk).split('\n')
      rest = lines.pop() ?? ''
      for (const line of lines) acked.push(Number(line))
      if (acked.length >= acks && !sent) {
        sent = true
        child.kill('SIGKILL')
        resolve()
      }
    })
    child.on('exit', (code) => { if (acked.length < acks) reject(new Error(`writer exited early (${code}): ${stderr}`)) })
  })
  await killed
  const [, signal] = await exited as [number | null, string | null]
  expect(signal).toBe('SIGKILL')
  // Acks written before the kill may still be in the pipe: drain them.
  if (!child.stdout.readableEnded) await once(child.stdout, 'end')
  return acked
}

/** Opens the log, repairing a torn tail (and only that) if the kill left one; says which it repaired. */
async function reopen (kind: StoreKind, path: string): Promise<{ store: EventStore, repaired?: string }> {
  try {
    return { store: await openStore(path, { kind }) }
  } catch (err) {
    if (!isReachError(err) || !['RL-5003', 'RL-5004'].includes(err.code)) throw err
    const store = await openStore(path, { kind, repair: true })
    expect(store.lastRepair?.code).toBe(err.code)
    return { store, repaired: err.code }
  }
}

/**
 * Every acknowledged append is in the reopened log, its chain is whole, and appends carry on.
 * Appends resolve in seq order, so what was acknowledged is exactly seqs 0 to n-1.
 */
async function expectSurvived (store: EventStore, acked: number[], acks: number): Promise<void> {
  expect(acked.length).toBeGreaterThanOrEqual(acks)
  expect(acked).toEqual(Array.from({ length: acked.length }, (_, i) => i))
  const head = store.head()
  expect(head?.seq).toBeGreaterThanOrEqual(acked.length - 1)
  const events = await store.readAll()
  expect(events).toHaveLength((head?.seq ?? -1) + 1)
  expectValidChain(events)
  // The writer's stale lock is taken over and appends carry on.
  const more = await new EventLog(store).append({ type: 'After', aggregate_id: 'x' })
  expect(more.seq).toBe((head?.seq ?? -1) + 1)
}

describe('crash safety (SIGKILL of a real writer process)', () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reach-crash-'))
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  // [store, file, acks before the kill, payload bytes]. With 200 kB payloads a kill sometimes
  // lands inside a write(2) and leaves a torn tail (the case below makes one every time).
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
      const { store } = await reopen(kind, path)
      try {
        await expectSurvived(store, acked, acks)
      } finally {
        await store.close()
      }
    })
  }

  it('jsonl: a torn last line after the kill (what a kill inside write(2) leaves) is repaired, and every acknowledged append survives', async () => {
    const path = join(dir, 'events.jsonl')
    const acked = await crashWriter('jsonl', path, 40, 200_000)
    // What a kill inside write(2) leaves, made sure of: the start of a line, no newline after it.
    const torn = '{"aggregate_id":"w-3","hash":"' + 'f'.repeat(40)
    await appendFile(path, torn)
    const { store, repaired } = await reopen('jsonl', path)
    try {
      expect(repaired).toBe('RL-5003')
      // What was cut off is kept beside the log, our torn line last.
      expect((await readFile(store.lastRepair?.tornPath as string, 'utf8')).endsWith(torn)).toBe(true)
      await expectSurvived(store, acked, 40)
    } finally {
      await store.close()
    }
  })
})
