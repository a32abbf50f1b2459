/**
 * The composition root: `createNode` builds whole nodes that share nothing, starts and stops
 * them in order (idempotently), and a node that cannot start says why with its own code.
 * Real LevelDB, real libp2p over TCP loopback, real child processes for the CLI.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { createSigner, generateKeyPair } from '../../protocol/keys.ts'
import { isReachError } from '../../protocol/errors.ts'
import { buildBundle } from '../../packs/bundle.ts'
import { signPack } from '../../packs/trust.ts'
import { createNode, type NetworkServices, type ReachNode } from '../../node/create.ts'
import { homePaths, type HomePaths } from '../../node/home.ts'
import { silentLogger } from '../../node/logger.ts'
import { reach } from './cli/helpers.ts'

type Whole = ReachNode & { network: NetworkServices }
const COUNTER = fileURLToPath(new URL('../../packs/examples/counter', import.meta.url))
const publisher = generateKeyPair()
const dirs: string[] = []

async function home (name: string): Promise<HomePaths> {
  const root = await mkdtemp(join(os.tmpdir(), `reach-create-${name}-`))
  dirs.push(root)
  const h = homePaths(root)
  await mkdir(h.root, { recursive: true })
  await writeFile(h.trust, JSON.stringify({ version: 1, keys: [{ public_key: publisher.publicKey, name: 'test', added_at: '2026-01-01T00:00:00.000Z' }] }))
  return h
}

async function whole (h: HomePaths, bootstrap?: string): Promise<Whole> {
  return await createNode({ home: h, logger: silentLogger, network: { apiPort: false, pingIntervalMs: 3_600_000, ...(bootstrap === undefined ? {} : { bootstrap: [bootstrap] }) } }) as Whole
}

async function counterIn (node: Whole): Promise<string> {
  const built = await buildBundle(COUNTER)
  await node.local.packs.put(built.bytes, [signPack({ cid: built.cid, manifest: built.bundle.manifest }, createSigner(publisher.seed))])
  return built.cid
}

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('two nodes built by createNode in one process', () => {
  it('share no state: each has its own sandboxes, metrics and services, and each serves the other', async () => {
    const a = await whole(await home('a'))
    await a.start()
    const b = await whole(await home('b'), a.network.host.getMultiaddrs()[0]?.toString())
    await b.start()
    try {
      expect(a.local.sandboxes).not.toBe(b.local.sandboxes)
      expect(a.network.metrics.registry).not.toBe(b.network.metrics.registry)
      expect(a.network.delegator).not.toBe(b.network.delegator)
      const cid = await counterIn(a)
      await counterIn(b)
      const ab = await a.network.delegator.delegate({ pack_cid: cid, input: { numbers: [1, 2] }, peer: b.network.host.peerId.toString() })
      const ba = await b.network.delegator.delegate({ pack_cid: cid, input: { numbers: [3] }, peer: a.network.host.peerId.toString() })
      expect([ab.status, ba.status]).toEqual(['completed', 'completed'])
      // The run A served came from A's pool, the one B served from B's.
      expect(await a.local.runs.record(ba.run_id)).toMatchObject({ status: 'completed' })
      expect(await b.local.runs.record(ab.run_id)).toMatchObject({ status: 'completed' })
      expect(await a.local.runs.has(ab.run_id)).toBe(false)
      // Each node counts only what it did.
      const served = async (n: Whole): Promise<number> => (await n.network.metrics.delegationsServed.get()).values.find((v) => v.labels.outcome === 'completed')?.value ?? -1
      expect(await served(a)).toBe(1)
      expect(await served(b)).toBe(1)
      // A's verification of B's run replays on A's own engine.
      const verdict = await a.network.verify(b.network.host.peerId.toString(), ab.run_id, { pack_cid: cid, head: ab.log_head, record: ab.record })
      expect(verdict.verified).toBe(true)
      // Runs and replays went to each node's own run threads (packs/run/threads.ts).
      expect(a.local.engine.threads).toBeDefined()
      expect(a.local.engine.threads).not.toBe(b.local.engine.threads)
      expect(a.local.engine.threads?.load().length).toBeGreaterThan(0)
      expect(b.local.engine.threads?.load().length).toBeGreaterThan(0)
      // Stopping one leaves the other working.
      await a.stop()
      const alone = await b.network.run({ pack: await b.local.packs.get(cid), input: { numbers: [7] } })
      expect(alone.outcome).toMatchObject({ status: 'completed', output: { sum: 7 } })
    } finally {
      await a.stop()
      await b.stop()
    }
  })
})

describe('lifecycle', () => {
  it('start and stop are idempotent, and a stopped node cannot be started again', async () => {
    const n = await whole(await home('life'))
    await Promise.all([n.start(), n.start()])
    expect(n.network.host.status).toBe('started')
    await Promise.all([n.stop(), n.stop()])
    await n.stop()
    expect(n.network.host.status).toBe('stopped')
    const again = await n.start().then(() => 'started', (err: unknown) => isReachError(err) ? err.code : String(err))
    expect(again).toBe('RL-5007')
  })

  it('a node stopped before it started releases its data dir', async () => {
    const h = await home('unstarted')
    const n = await whole(h)
    await n.stop()
    const next = await whole(h)
    await next.start()
    await next.stop()
    expect(next.network.host.status).toBe('stopped')
  })
})

describe('a node that cannot start says why', () => {
  let busy: Server
  afterAll(async () => { await new Promise((resolve) => busy?.close(resolve)) })

  it('its listen port in use: RL-1013, nothing left held (the data dir opens again)', async () => {
    busy = createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const port = (busy.address() as { port: number }).port
    const h = await home('port')
    const n = await createNode({ home: h, logger: silentLogger, network: { apiPort: false, listen: [`/ip4/127.0.0.1/tcp/${port}`] } })
    const failure = await n.start().then(() => 'started', (err: unknown) => isReachError(err) ? `${err.code} ${err.message}` : `not a ReachError: ${String(err)}`)
    // One line, in the operator's words, naming the address (libp2p's own text is several lines).
    expect(failure).toBe(`RL-1013 listening on /ip4/127.0.0.1/tcp/${port}: the address is already in use (EADDRINUSE)`)
    // The failed start let go of the stores: another node opens the same data dir at once.
    const next = await whole(h)
    await next.start()
    await next.stop()
  })

  it('its stores held by another node: RL-5008, not "peer unavailable"', async () => {
    const h = await home('locked')
    const first = await whole(h)
    await first.start()
    try {
      const code = await whole(h).then(async (n) => { await n.start(); return 'started' }, (err: unknown) => isReachError(err) ? err.code : `not a ReachError: ${String(err)}`)
      expect(code).toBe('RL-5008')
    } finally {
      await first.stop()
    }
  })

  it('through the CLI: `reach node start` on a port in use exits 2 with RL-1013', async () => {
    const root = (await home('cli')).root
    const port = (busy.address() as { port: number }).port
    const r = await reach(['node', 'start', '--listen', `/ip4/127.0.0.1/tcp/${port}`, '--json'], { env: { REACH_HOME: root } })
    expect(r.code).toBe(2)
    expect(r.json.error).toMatchObject({ code: 'RL-1013', message: `listening on /ip4/127.0.0.1/tcp/${port}: the address is already in use (EADDRINUSE)` })
    expect(r.stderr + r.stdout).not.toMatch(/\n\s+at /) // no stack trace for the operator
  })
})
