/**
 * The control API's routes on a real daemon (`reach node start` in a child process, its data dir
 * set up by `reach demo`): what a caller gets wrong is a 4xx with its code, never a 500 or a 502.
 *
 *   a CID that is not one is parsed before it becomes a file name (400 RL-1011, not 500 ENAMETOOLONG);
 *   an id that names nothing is 404 (runs, delegations, cancel);
 *   `?limit=` is one parser (node/limit.ts) for every list route and `reach runs list --limit`:
 *     0, -1, 1.5 and words are refused (400 / exit 2, RL-1003), never read as "all";
 *   a body that is `null`, or a field of the wrong type, is 400 RL-6004, not a crash on its fields.
 */
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openPackStore } from '../../node/pack-store.ts'
import { cli, newHome, startNode, stopNode, type MeshNode } from '../federation/cluster.ts'

let node: MeshNode
let home: string
let cid: string

interface Reply { status: number, json: any }

/** One request to the daemon's API with its token, the status and JSON as they came. */
async function request (method: 'GET' | 'POST', path: string, body?: string): Promise<Reply> {
  const { api } = JSON.parse(await readFile(join(home, 'node.json'), 'utf8')) as { api: string }
  const token = (await readFile(join(home, 'api.token'), 'utf8')).trim()
  const res = await fetch(api + path, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body })
  return { status: res.status, json: await res.json() }
}

beforeAll(async () => {
  home = await newHome('routes', {})
  // Two runs of the shipped counter pack (signed, trusted, stored), before the daemon takes the data dir.
  for (let i = 0; i < 2; i++) {
    const demo = await cli({ home }, ['demo'])
    if (demo.code !== 0) throw new Error(`reach demo failed: ${demo.stdout}${demo.stderr}`)
    cid = demo.json.pack as string
  }
  node = await startNode('routes', home)
}, 60_000)

afterAll(async () => {
  if (node !== undefined) await stopNode(node)
  await rm(home, { recursive: true, force: true })
})

describe('a CID or run id is checked before anything is looked up', () => {
  it('POST /v1/packs/fetch with a long non-CID: 400 RL-1011, and the node keeps serving', async () => {
    const long = 'x'.repeat(5000)
    // Negative control: the pack store, handed the text unparsed (as the route did before), makes a
    // file name of it and fails with a raw ENAMETOOLONG, which the API answers 500 (RL-6006).
    await expect(openPackStore(join(home, 'packs')).addSignature(long, {})).rejects.toMatchObject({ code: 'ENAMETOOLONG' })
    for (const bad of [long, 'notacid0123456789', 'bafy' + 'a'.repeat(300)]) {
      const r = await request('POST', '/v1/packs/fetch', JSON.stringify({ cid: bad }))
      expect(r.status, bad.slice(0, 20)).toBe(400)
      expect(r.json).toMatchObject({ ok: false, error: { code: 'RL-1011' } })
    }
    // A real CID is fetched (here: already stored).
    const ok = await request('POST', '/v1/packs/fetch', JSON.stringify({ cid }))
    expect(ok).toMatchObject({ status: 200, json: { ok: true, cid, provider: null } })
  })

  it('run ids that are not one, or name no run: 404 RL-3019 on every run route', async () => {
    for (const id of ['not-a-run', 'x'.repeat(5000), `run_${'0'.repeat(20)}`]) {
      for (const rest of ['', '/events', '/checkpoint']) {
        const r = await request('GET', `/v1/runs/${id}${rest}`)
        expect(r.status, `${id.slice(0, 20)}${rest}`).toBe(404)
        expect(r.json.error.code).toBe('RL-3019')
      }
    }
    const runs = (await request('GET', '/v1/runs')).json.runs as Array<{ run_id: string }>
    expect((await request('GET', `/v1/runs/${runs[0]?.run_id}`)).status).toBe(200)
  })
})

describe('unknown ids are 404, not 502', () => {
  it('cancel of a delegation not in flight: 404 RL-4019; `reach cancel` of it exits 1 with RL-4019', async () => {
    for (const id of ['f'.repeat(32), 'nope']) {
      const r = await request('POST', `/v1/delegations/${id}/cancel`)
      expect(r.status).toBe(404)
      expect(r.json.error.code).toBe('RL-4019')
    }
    const c = await cli(node, ['cancel', 'f'.repeat(32)])
    expect(c.code).toBe(1)
    expect(c.json.error.code).toBe('RL-4019')
  })

  it('a pack name the node does not have: 404 RL-3012', async () => {
    const r = await request('POST', '/v1/runs', JSON.stringify({ pack: 'no-such-pack' }))
    expect(r.status).toBe(404)
    expect(r.json.error.code).toBe('RL-3012')
  })
})

describe('one parser for limit', () => {
  it('every list route refuses limit=0, -1, 1.5, abc and empty with 400 RL-1003, and honours limit=1', async () => {
    for (const route of ['/v1/runs', '/v1/packs', '/v1/peers', '/v1/delegations']) {
      for (const limit of ['0', '-1', '1.5', 'abc', '', '1e3']) {
        const r = await request('GET', `${route}?limit=${limit}`)
        expect(r.status, `${route}?limit=${limit}`).toBe(400)
        expect(r.json.error.code).toBe('RL-1003')
      }
    }
    const all = (await request('GET', '/v1/runs')).json.runs as unknown[]
    expect(all.length).toBe(2)
    const one = await request('GET', '/v1/runs?limit=1')
    expect(one.status).toBe(200)
    expect(one.json.runs).toEqual(all.slice(0, 1))
    expect(((await request('GET', '/v1/packs?limit=1')).json.packs as Array<{ cid: string }>).map((p) => p.cid)).toEqual([cid])
  })

  it('`reach runs list --limit 0 | -1 | abc` exits 2 with RL-1003; --limit 1 lists one run', async () => {
    for (const limit of ['0', '-1', 'abc']) {
      const r = await cli(node, ['runs', 'list', '--limit', limit])
      expect(r.code, limit).toBe(2)
      expect(r.json.error.code).toBe('RL-1003')
    }
    const one = await cli(node, ['runs', 'list', '--limit', '1'])
    expect(one.code).toBe(0)
    expect(one.json.runs.length).toBe(1)
    expect((await cli(node, ['runs', 'list'])).json.runs.length).toBe(2)
  })
})

describe('bodies of the wrong shape are 400 RL-6004', () => {
  it('POST /v1/delegate with a null body, a non-string peer or a non-boolean verify; POST /v1/runs with a null body', async () => {
    const cases: Array<[string, string]> = [
      ['/v1/delegate', 'null'],
      ['/v1/delegate', '[]'],
      ['/v1/delegate', JSON.stringify({ pack: cid, peer: 42 })],
      ['/v1/delegate', JSON.stringify({ pack: cid, peer: { id: 'x' } })],
      ['/v1/delegate', JSON.stringify({ pack: cid, verify: 'yes' })],
      ['/v1/delegate', JSON.stringify({ pack: cid, verify: 1 })],
      ['/v1/runs', 'null']
    ]
    for (const [route, body] of cases) {
      const r = await request('POST', route, body)
      expect(r.status, `${route} ${body}`).toBe(400)
      expect(r.json.error.code, `${route} ${body}`).toBe('RL-6004')
    }
    // Control: the same request with the fields right gets past the body: this node has no peer to ask.
    const right = await request('POST', '/v1/delegate', JSON.stringify({ pack: cid, verify: false }))
    expect(right.status).toBe(502)
    expect(right.json.error.code).toBe('RL-4016')
  })
})
