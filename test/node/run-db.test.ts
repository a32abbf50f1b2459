/**
 * The run database (node/run-db.ts): every run's log in one LevelDB. Its logs
 * pass the EventStore compliance suite with neighbours on both sides of them,
 * never see each other's keys, and the RunStore over it moves runs in from the
 * older one-directory-per-run layout and deletes runs atomically (gc).
 */
import { mkdtemp, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { canonicalize } from '../../protocol/canonical.ts'
import { decodeCheckpoint } from '../../protocol/checkpoint.ts'
import { ReachError } from '../../protocol/errors.ts'
import { computeEventHash } from '../../protocol/event.ts'
import { generateKeyPair } from '../../protocol/keys.ts'
import type { RunPack } from '../../packs/run/index.ts'
import { testEngine } from '../packs/helpers.ts'
import { ensureHome, homePaths } from '../../node/home.ts'
import { openRunDatabase, type RunDatabase } from '../../node/run-db.ts'
import { RunStore } from '../../node/runs.ts'
import { openStore } from '../../node/store/index.ts'
import { LevelEventStore, levelSegmentKey } from '../../node/store/level.ts'
import type { EventStore } from '../../node/store/types.ts'
import { collect, makeEvents, rejectionCode, runEventStoreCompliance } from './store/compliance.ts'

const databases = new Map<string, Promise<RunDatabase>>()
/** Dirs this file made, removed once their databases are closed. */
const dirs: string[] = []
afterAll(async () => {
  for (const db of databases.values()) await (await db).close()
  await Promise.all(dirs.map(async (dir) => { await rm(dir, { recursive: true, force: true }) }))
})

/** The run database at `path`, opened once, with a log on each side of the one under test. */
async function database (path: string): Promise<RunDatabase> {
  let db = databases.get(path)
  if (db === undefined) {
    db = (async () => {
      const opened = await openRunDatabase(path)
      for (const name of ['run_a', 'run_z']) {
        const neighbour = LevelEventStore.within(opened, name)
        await neighbour.open({ create: true })
        await neighbour.appendBatch(makeEvents(3, null, 100))
        await neighbour.close()
      }
      return opened
    })()
    databases.set(path, db)
  }
  return await db
}

/** The log `run_m` of the database at `path`, as a store not yet opened (the compliance suite's factory). */
function inDatabase (path: string): EventStore {
  let inner: EventStore | undefined
  return new Proxy({} as EventStore, {
    get (_target, key) {
      if (key === 'kind') return 'level'
      if (key === 'path') return path
      if (key === 'open') {
        return async (options?: Parameters<EventStore['open']>[0]) => {
          inner ??= LevelEventStore.within(await database(path), 'run_m')
          await inner.open(options)
        }
      }
      if (inner === undefined) {
        if (key === 'close') return async () => {}
        return () => { throw new ReachError('RL-5007', { message: `${path} is not open` }) }
      }
      const value = Reflect.get(inner, key) as unknown
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(inner) : value
    }
  })
}

runEventStoreCompliance('level, a log among others in a run database', {
  path: (dir) => join(dir, 'runs.db'),
  create: inDatabase,
  snapshot: async (store) => ({ head: store.head(), events: (await collect(store.read())).map((e) => canonicalize(e)) })
})

async function tempDir (prefix: string): Promise<string> {
  const dir = await mkdtemp(join(os.tmpdir(), prefix))
  dirs.push(dir)
  return dir
}

describe('logs in a run database', () => {
  it('a log never reads its neighbours\' keys (a naive reverse scan would land on the one before)', async () => {
    const db = await openRunDatabase(join(await tempDir('reach-rundb-'), 'runs.db'))
    try {
      const before = LevelEventStore.within(db, 'run_1')
      await before.open({ create: true })
      await before.appendBatch(makeEvents(5))
      await before.close()
      // Negative control: the last segment at or before run_2's last possible key, unbounded
      // below, is run_1's.
      const naive = await db.segments.iterator({ lte: `run_2!${'9'.repeat(16)}`, reverse: true, limit: 1 }).all()
      expect(naive[0]?.[0]).toBe(`run_1!${levelSegmentKey(0)}`)
      // The store bounds every scan to its own keys: run_2 is new and empty.
      const after = LevelEventStore.within(db, 'run_2')
      await after.open({ create: true })
      expect(after.head()).toBeNull()
      expect(await after.readAll()).toEqual([])
      expect(await after.get(0)).toBeUndefined()
      const events = makeEvents(2, null, 50)
      await after.appendBatch(events)
      expect(await after.readAll()).toEqual(events)
      await after.close()
      const again = LevelEventStore.within(db, 'run_1')
      await again.open()
      expect((await again.readAll()).length).toBe(5)
      await again.close()
    } finally {
      await db.close()
    }
  })

  it('refuses a name that could reach into another log\'s keys (RL-5006)', async () => {
    const db = await openRunDatabase(join(await tempDir('reach-rundb-'), 'runs.db'))
    try {
      for (const name of ['', 'a!b', 'run/..', 'x'.repeat(129)]) expect(() => LevelEventStore.within(db, name)).toThrow(expect.objectContaining({ code: 'RL-5006' }))
    } finally {
      await db.close()
    }
  })

  it('one process at a time (RL-5008), and a database of another format version is refused (RL-5009)', async () => {
    const path = join(await tempDir('reach-rundb-'), 'runs.db')
    const db = await openRunDatabase(path)
    expect(await rejectionCode(openRunDatabase(path))).toBe('RL-5008')
    await db.db.batch([{ type: 'put', sublevel: db.db.sublevel<string, string>('meta', { keyEncoding: 'utf8', valueEncoding: 'utf8' }), key: 'version', value: '2' }])
    await db.close()
    expect(await rejectionCode(openRunDatabase(path))).toBe('RL-5009')
  })
})

// ---------------------------------------------------------------------------

const BUDGET = { fuel: 100_000, memory_bytes: 16 << 20, output_bytes: 65536, tool_calls: 10, wall_ms: 5000 }
const POLICY = { version: 'a'.repeat(64), granted: [] }
let engine: Awaited<ReturnType<typeof testEngine>>
beforeAll(async () => { engine = await testEngine() })
afterAll(async () => { await engine.sandboxes.close() })
const COUNTER: RunPack = {
  cid: 'bafy-test-' + computeEventHash({ seq: 0, type: 'X', aggregate_id: 'counter', timestamp: 0, payload: null, metadata: {}, prev_hash: '0'.repeat(64) }).slice(0, 16),
  name: 'test-counter',
  entry: 'index.js',
  capabilities: [],
  files: { 'index.js': 'export function init (n) { return n }\nexport function reduce (s) { return { state: s, output: { n: s } } }' }
}

async function runs (store: RunStore, n: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < n; i++) ids.push((await store.start({ pack: COUNTER, input: i, budget: BUDGET, policy: POLICY, engine, tools: new Map() })).record.run_id)
  return ids
}

describe('the RunStore over the run database', () => {
  it('moves runs in from the one-directory-per-run layout: same events, record and the origin\'s checkpoint bytes', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-legacy-')))
    const seed = generateKeyPair().seed
    // The store that opens them signs with another key: a checkpoint it rebuilt would differ.
    const other = generateKeyPair().seed
    // What an older version left: <home>/runs/<run_id>/{log/, record.json, final.checkpoint}.
    const source = new RunStore(homePaths(await tempDir('reach-legacy-src-')), seed)
    const [done, unfinished] = await runs(source, 2) as [string, string]
    const legacy = new Map<string, { events: unknown, record: unknown, checkpoint: string }>()
    for (const runId of [done, unfinished]) {
      const events = await source.events(runId)
      const kept = runId === unfinished ? events.slice(0, 1) : events
      const log = await openStore(join(home.runs, runId, 'log'), { kind: 'level', create: true })
      await log.appendBatch(kept)
      await log.close()
      if (runId === done) {
        await writeFile(join(home.runs, runId, 'record.json'), JSON.stringify(await source.record(runId)))
        await writeFile(join(home.runs, runId, 'final.checkpoint'), await source.checkpointText(runId))
      }
      legacy.set(runId, { events: kept, record: runId === done ? await source.record(runId) : undefined, checkpoint: await source.checkpointText(done) })
    }
    // A directory a run left before its first write: nothing to move, and it goes too.
    await mkdir(join(home.runs, 'run_00000000000000000000'), { recursive: true })
    await source.close()

    const store = new RunStore(home, other)
    const listed = await store.list()
    expect(listed.map((r) => r.run_id).sort()).toEqual([done, unfinished].sort())
    expect(listed.find((r) => r.run_id === unfinished)?.status).toBe('running')
    expect(await store.events(done)).toEqual(legacy.get(done)?.events)
    expect(await store.events(unfinished)).toEqual(legacy.get(unfinished)?.events)
    expect(await store.record(done)).toEqual(legacy.get(done)?.record)
    expect(await store.checkpointText(done)).toBe(legacy.get(done)?.checkpoint)
    expect(await stat(home.runs).catch(() => undefined)).toBeUndefined()
    expect(store.legacyLeft).toEqual([])
    await store.close()
  })

  it('a legacy run whose log cannot be read is left in place, untouched, and moved once it can be; a damaged record.json is rebuilt', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-legacy-held-')))
    const seed = generateKeyPair().seed
    const source = new RunStore(homePaths(await tempDir('reach-legacy-src-')), seed)
    const [held, torn] = await runs(source, 2) as [string, string]
    for (const runId of [held, torn]) {
      const log = await openStore(join(home.runs, runId, 'log'), { kind: 'level', create: true })
      await log.appendBatch(await source.events(runId))
      await log.close()
    }
    // A crash left torn's record.json empty (older versions wrote it without fsync).
    await writeFile(join(home.runs, torn, 'record.json'), '')
    await writeFile(join(home.runs, torn, 'final.checkpoint'), await source.checkpointText(torn))
    const expected = await source.record(torn)
    await source.close()
    // An older node still running holds held's log.
    const holder = await openStore(join(home.runs, held, 'log'), { kind: 'level' })
    const store = new RunStore(home, seed)
    expect((await store.list()).map((r) => r.run_id)).toEqual([torn])
    expect(store.legacyLeft).toMatchObject([{ run_id: held, code: 'RL-5008' }])
    expect(await readdir(join(home.runs, held))).toContain('log')
    expect(await store.record(torn)).toEqual(expected)
    await store.close()
    // Negative control: once the holder lets go, the next open moves it.
    await holder.close()
    const again = new RunStore(home, seed)
    expect((await again.list()).map((r) => r.run_id).sort()).toEqual([held, torn].sort())
    expect(again.legacyLeft).toEqual([])
    expect(await stat(home.runs).catch(() => undefined)).toBeUndefined()
    await again.close()
  })

  it('gc keeps the newest N finished runs and deletes the rest whole: head, seal and every segment', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-gc-')))
    const store = new RunStore(home, generateKeyPair().seed)
    const ids = await runs(store, 4)
    const { removed, kept } = await store.gc(1)
    expect(kept).toBe(1)
    expect(removed.sort()).toEqual(ids.slice(0, 3).sort())
    expect((await store.list()).map((r) => r.run_id)).toEqual([ids[3]])
    const db = await store['database']()
    for (const runId of removed) {
      expect(await db.heads.get(runId)).toBeUndefined()
      expect(await db.sealed.get(runId)).toBeUndefined()
      // A full scan, not gc's own key range: a wrong range would pass a check that used it.
      expect((await db.segments.keys().all()).filter((k) => k.startsWith(`${runId}!`))).toEqual([])
      expect(await rejectionCode(store.events(runId))).toBe('RL-3019')
    }
    expect((await db.segments.keys().all()).filter((k) => k.startsWith(`${ids[3] as string}!`))).toHaveLength(1)
    expect((await store.replay(ids[3] as string, COUNTER, engine)).verdict.ok).toBe(true)
    await store.close()
  })

  it('a damaged seal is treated as a lost one: the run is still listed, and its record and checkpoint are rebuilt', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-damaged-')))
    const store = new RunStore(home, generateKeyPair().seed)
    const [runId] = await runs(store, 1) as [string]
    const [record, checkpoint] = [await store.record(runId), await store.checkpointText(runId)]
    const db = await store['database']()
    for (const damaged of ['not json', '{"record":null}']) {
      await db.sealed.put(runId, damaged)
      expect((await store.list()).map((r) => r.run_id)).toEqual([runId])
      expect(await store.checkpointText(runId)).toBe(checkpoint)
      expect(await store.record(runId)).toEqual(record)
    }
    await store.close()
  })

  it('a store opened without the node key (reach doctor) lists a run whose seal was lost, and signs nothing', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-reader-')))
    const node = generateKeyPair()
    const store = new RunStore(home, node.seed)
    const [runId] = await runs(store, 1) as [string]
    const record = await store.record(runId)
    await (await store['database']()).sealed.del(runId)
    await store.close()

    const reader = new RunStore(home, undefined)
    expect((await reader.list()).map((r) => r.fingerprint)).toEqual([record.fingerprint])
    expect(await (await reader['database']()).sealed.get(runId)).toBeUndefined()
    await expect(reader.checkpointText(runId)).rejects.toMatchObject({ code: 'RL-1004' })
    await reader.close()

    // The node rebuilds the seal with its own key.
    const again = new RunStore(home, node.seed)
    expect(decodeCheckpoint(await again.checkpointText(runId)).signer).toBe(node.publicKey)
    await again.close()
  })

  it('a run that ends as the store closes still gets its seal', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-close-')))
    const seed = generateKeyPair().seed
    const store = new RunStore(home, seed)
    const [runId] = await runs(store, 1) as [string]
    // The seal goes in after the result: close() comes before it has.
    await store.close()
    const again = new RunStore(home, seed)
    const db = await again['database']()
    const sealed = await db.sealed.get(runId)
    expect(sealed, 'no seal for the run').toBeTypeOf('string')
    expect(JSON.parse(sealed as string)).toMatchObject({ record: { run_id: runId, status: 'completed' }, checkpoint: expect.any(String) })
    await again.close()
  })

  it('two imports of one run at once: one goes in, the other is RL-1008', async () => {
    const seed = generateKeyPair().seed
    const source = new RunStore(homePaths(await tempDir('reach-import-src-')), seed)
    const [runId] = await runs(source, 1) as [string]
    const [events, record, checkpoint] = [await source.events(runId), await source.record(runId), await source.checkpointText(runId)]
    await source.close()
    const store = new RunStore(await ensureHome(homePaths(await tempDir('reach-import-'))), generateKeyPair().seed)
    const results = await Promise.allSettled([store.importRun(runId, events, record, checkpoint), store.importRun(runId, events, record, checkpoint)])
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1)
    expect(results.map((r) => r.status === 'rejected' ? (r.reason as ReachError).code : 'ok').sort()).toEqual(['RL-1008', 'ok'])
    expect(await store.checkpointText(runId)).toBe(checkpoint)
    expect(await store.events(runId)).toEqual(events)
    await store.close()
  })

  it('a log in use in this process cannot be opened twice (RL-5008; a reader is told the run is still running, RL-3019), and a closed store refuses work (RL-5007)', async () => {
    const home = await ensureHome(homePaths(await tempDir('reach-twice-')))
    const store = new RunStore(home, generateKeyPair().seed)
    const [runId] = await runs(store, 1) as [string]
    const db = await store['database']()
    const held = LevelEventStore.within(db, runId)
    await held.open()
    expect(await rejectionCode(LevelEventStore.within(db, runId).open())).toBe('RL-5008')
    expect(await store.events(runId).catch((e: ReachError) => e)).toMatchObject({ code: 'RL-3019', details: { running: true } })
    await held.close()
    expect((await store.events(runId)).length).toBeGreaterThan(1)
    await store.close()
    expect(await rejectionCode(store.list())).toBe('RL-5007')
    expect(await readdir(home.root)).toContain('runs.db')
  })
})
