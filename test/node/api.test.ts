import { spawn } from 'node:child_process'
import { timingSafeEqual } from 'node:crypto'
import { once } from 'node:events'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { connect, createServer, type AddressInfo } from 'node:net'
import { networkInterfaces, tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { callApi, ENDPOINT_FILE, readEndpoint, removeEndpoint, TOKEN_FILE, writeEndpoint, type Endpoint } from '../../node/api-client.ts'
import { ensureApiToken, readApiToken, startApi, type ApiRequest, type ApiServer, type Route } from '../../node/api.ts'
import { NodeMetrics } from '../../node/metrics.ts'
import { isReachError, ReachError } from '../../protocol/errors.ts'
import { code } from '../codes.ts'
import { deferred, within } from '../await.ts'

const posix = process.platform !== 'win32'
const TOKEN = 'A'.repeat(43)



interface Reply { status: number, headers: Headers, text: string, json: any }

async function request (api: ApiServer, method: string, path: string, opts: { token?: string | null, body?: string | Buffer | ReadableStream, headers?: Record<string, string>, signal?: AbortSignal } = {}): Promise<Reply> {
  const token = opts.token === undefined ? TOKEN : opts.token
  const res = await fetch(api.url + path, {
    method,
    headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...opts.headers },
    body: opts.body,
    signal: opts.signal,
    ...(opts.body instanceof ReadableStream ? { duplex: 'half' } : {})
  } as RequestInit)
  const text = await res.text()
  let json: unknown
  try { json = JSON.parse(text) } catch {}
  return { status: res.status, headers: res.headers, text, json }
}

let dir: string
const servers: ApiServer[] = []
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'reach-api-')) })
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close()
  await rm(dir, { recursive: true, force: true })
})

async function serve (routes: Route[], extra: { metrics?: () => Promise<string>, maxBodyBytes?: number, token?: string } = {}): Promise<ApiServer> {
  const api = await startApi({ token: extra.token ?? TOKEN, routes, metrics: extra.metrics, maxBodyBytes: extra.maxBodyBytes })
  servers.push(api)
  return api
}

const echo: Route[] = [
  { method: 'GET', path: '/v1/runs/:id', handler: async req => ({ id: req.params.id, limit: req.query.get('limit') }) },
  { method: 'POST', path: '/v1/delegations/:id/cancel', handler: async req => ({ id: req.params.id, body: req.body }) },
  { method: 'POST', path: '/v1/echo', handler: async req => ({ body: req.body }) },
  { method: 'GET', path: '/v1/count', handler: async () => 42 },
  { method: 'DELETE', path: '/v1/things/:name', handler: async req => ({ deleted: req.params.name, ok: false }) }
]

describe('control API: authentication', () => {
  it('answers 401 RL-6001 without a token, and the body names no route', async () => {
    const api = await serve(echo)
    const known = await request(api, 'GET', '/v1/runs/r1', { token: null })
    const unknown = await request(api, 'GET', '/nope', { token: null })
    expect(known.status).toBe(401)
    expect(known.headers.get('www-authenticate')).toBe('Bearer')
    expect(known.json).toEqual({ ok: false, error: { code: 'RL-6001', message: expect.any(String) } })
    expect(known.text).not.toMatch(/v1|runs|route/)
    // A known and an unknown route look the same to a caller without the token.
    expect(unknown.status).toBe(401)
    expect(unknown.text).toBe(known.text)
  })

  it('refuses a wrong token of the same length, of another length, and another scheme', async () => {
    const api = await serve(echo)
    for (const headers of [
      { authorization: `Bearer ${'B'.repeat(43)}` },
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: `Bearer ${TOKEN.slice(1)}` },
      { authorization: 'Bearer ' },
      { authorization: `Basic ${TOKEN}` },
      { authorization: TOKEN }
    ]) {
      const r = await request(api, 'GET', '/v1/runs/r1', { token: null, headers })
      expect(r.status, headers.authorization).toBe(401)
      expect(r.json.error.code).toBe('RL-6001')
    }
    expect((await request(api, 'GET', '/v1/runs/r1')).status).toBe(200)
  })

  it('negative control: comparing raw tokens with timingSafeEqual throws on a length mismatch; the API answers 401', async () => {
    // The naive path (timingSafeEqual straight on the header bytes) turns a
    // shorter token into an exception, i.e. a 500 that tells the caller the
    // length was wrong. Hashing both sides first keeps every refusal a 401.
    expect(() => timingSafeEqual(Buffer.from(TOKEN), Buffer.from('short'))).toThrow(RangeError)
    const api = await serve(echo)
    expect((await request(api, 'GET', '/v1/runs/r1', { token: 'short' })).status).toBe(401)
  })

  it('requires the token for /metrics too, and serves Prometheus text with it', async () => {
    const metrics = new NodeMetrics()
    metrics.runs.inc({ status: 'completed' })
    const api = await serve(echo, { metrics: async () => await metrics.text() })
    const denied = await request(api, 'GET', '/metrics', { token: null })
    expect(denied.status).toBe(401)
    expect(denied.text).not.toContain('reach_')
    const r = await request(api, 'GET', '/metrics')
    expect(r.status).toBe(200)
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/)
    expect(r.text).toContain('reach_runs_total{status="completed"} 1')
  })
})

describe('control API: routing and bodies', () => {
  it('routes GET with path parameters and query, POST with a JSON body, DELETE', async () => {
    const api = await serve(echo)
    expect((await request(api, 'GET', '/v1/runs/run%2F7?limit=5')).json).toEqual({ ok: true, id: 'run/7', limit: '5' })
    const posted = await request(api, 'POST', '/v1/delegations/d1/cancel', { body: JSON.stringify({ reason: 'user' }), headers: { 'content-type': 'application/json' } })
    expect(posted.status).toBe(200)
    expect(posted.headers.get('content-type')).toMatch(/^application\/json/)
    expect(posted.json).toEqual({ ok: true, id: 'd1', body: { reason: 'user' } })
    expect((await request(api, 'POST', '/v1/echo')).json).toEqual({ ok: true })
    // A result that is not an object is wrapped; a result cannot claim ok: false.
    expect((await request(api, 'GET', '/v1/count')).json).toEqual({ ok: true, result: 42 })
    expect((await request(api, 'DELETE', '/v1/things/x')).json).toEqual({ ok: true, deleted: 'x' })
  })

  it('answers 404 RL-6003 for an unknown path or method', async () => {
    const api = await serve(echo)
    for (const [method, path] of [['GET', '/v1/nope'], ['DELETE', '/v1/runs/r1'], ['GET', '/v1/runs/'], ['GET', '/v1/runs/r1/x'], ['GET', '/metrics']]) {
      const r = await request(api, method, path)
      expect(r.status, `${method} ${path}`).toBe(404)
      expect(r.json.error.code).toBe('RL-6003')
    }
  })

  it('answers 400 RL-6004 for a body that is not JSON, and a malformed escape', async () => {
    const api = await serve(echo)
    for (const body of ['{"a":', 'hello', Buffer.from([0x22, 0xff, 0x22])]) {
      const r = await request(api, 'POST', '/v1/echo', { body })
      expect(r.status).toBe(400)
      expect(r.json.error.code).toBe('RL-6004')
    }
    expect((await request(api, 'GET', '/v1/runs/%E0%A4%A')).json.error.code).toBe('RL-6004')
  })

  it('answers 413 RL-6004 for an oversized body, without calling the handler, and keeps serving', async () => {
    let calls = 0
    const api = await serve([{ method: 'POST', path: '/v1/echo', handler: async req => { calls++; return { body: req.body } } }], { maxBodyBytes: 1024 })
    const big = JSON.stringify({ data: 'x'.repeat(4 * 1024 * 1024) })
    const declared = await request(api, 'POST', '/v1/echo', { body: big })
    expect(declared.status).toBe(413)
    expect(declared.json.error).toMatchObject({ code: 'RL-6004', details: { max_bytes: 1024 } })
    // Chunked: no Content-Length, so the limit is hit while reading.
    const stream = new ReadableStream({ start (c) { c.enqueue(new TextEncoder().encode(big)); c.close() } })
    const chunked = await request(api, 'POST', '/v1/echo', { body: stream })
    expect(chunked.status).toBe(413)
    expect(calls).toBe(0)
    const next = await request(api, 'POST', '/v1/echo', { body: '{"a":1}' })
    expect(next.json).toEqual({ ok: true, body: { a: 1 } })
  })

  it('a route may take more than the server\'s limit (a run archive), and only that route', async () => {
    const api = await serve([
      { method: 'POST', path: '/v1/echo', handler: async req => ({ size: JSON.stringify(req.body).length }) },
      { method: 'POST', path: '/v1/big', maxBodyBytes: 8192, handler: async req => ({ size: JSON.stringify(req.body).length }) }
    ], { maxBodyBytes: 1024 })
    const mid = JSON.stringify({ data: 'x'.repeat(4000) })
    expect((await request(api, 'POST', '/v1/echo', { body: mid })).status).toBe(413)
    expect((await request(api, 'POST', '/v1/big', { body: mid })).json).toEqual({ ok: true, size: mid.length })
    const over = await request(api, 'POST', '/v1/big', { body: JSON.stringify({ data: 'x'.repeat(9000) }) })
    expect(over.status).toBe(413)
    expect(over.json.error).toMatchObject({ code: 'RL-6004', details: { max_bytes: 8192 } })
  })
})

describe('control API: handler failures', () => {
  const failing = (err: unknown): Route[] => [{ method: 'GET', path: '/v1/fail', handler: async () => { throw err } }]

  it('maps a ReachError to its status and code', async () => {
    for (const [err, status] of [
      [new ReachError('RL-4007', { message: 'peer busy', details: { peer: 'p1' } }), 503],
      [new ReachError('RL-4002'), 502],
      [new ReachError('RL-1004'), 400],
      [new ReachError('RL-3010'), 422],
      // What an id names but does not exist: a pack, a run, a peer's run, a delegation.
      [new ReachError('RL-3012'), 404],
      [new ReachError('RL-3019'), 404],
      [new ReachError('RL-4017'), 404],
      [new ReachError('RL-4019'), 404],
      [new ReachError('RL-2001', { seq: 3 }), 422],
      [new ReachError('RL-5009'), 500],
      [new ReachError('RL-6005'), 409]
    ] as const) {
      const api = await serve(failing(err))
      const r = await request(api, 'GET', '/v1/fail')
      expect(r.status, err.code).toBe(status)
      expect(r.json).toEqual({ ok: false, error: err.toJSON() })
    }
  })

  it('answers 500 with an RL code and the message for any other error', async () => {
    const api = await serve(failing(new TypeError('boom')))
    const r = await request(api, 'GET', '/v1/fail')
    expect(r.status).toBe(500)
    expect(r.json.error).toMatchObject({ code: 'RL-6006', message: 'internal error: boom' })
    expect((await request(api, 'GET', '/v1/fail')).status).toBe(500)
  })

  it('a file system refusing a write is RL-5010 (storage), not an internal error', async () => {
    const erofs = Object.assign(new Error('EROFS: read-only file system, open \'/data/x.tmp\''), { code: 'EROFS', syscall: 'open', path: '/data/x.tmp' })
    const r = await request(await serve(failing(erofs)), 'GET', '/v1/fail')
    expect(r.status).toBe(500)
    expect(r.json.error).toMatchObject({ code: 'RL-5010', details: { errno: 'EROFS', path: '/data/x.tmp' } })
    // Control: EACCES from a socket (no path) is not storage.
    const socket = Object.assign(new Error('listen EACCES: permission denied 0.0.0.0:80'), { code: 'EACCES', syscall: 'listen' })
    expect((await request(await serve(failing(socket)), 'GET', '/v1/fail')).json.error.code).toBe('RL-6006')
  })
})

describe('control API: concurrency and lifecycle', () => {
  it('serves other requests while a handler is slow', async () => {
    const release = deferred()
    const started = deferred()
    const api = await serve([
      { method: 'GET', path: '/v1/slow', handler: async () => { started.resolve(); await release.promise; return { slow: true } } },
      { method: 'GET', path: '/v1/fast', handler: async () => ({ fast: true }) }
    ])
    const slow = request(api, 'GET', '/v1/slow')
    await within(started.promise, 'the slow handler to start')
    expect((await within(request(api, 'GET', '/v1/fast'), 'the fast request')).json).toEqual({ ok: true, fast: true })
    release.resolve()
    expect((await within(slow, 'the slow request')).json).toEqual({ ok: true, slow: true })
  })

  it('aborts the handler signal when the client disconnects', async () => {
    const started = deferred()
    const aborted = deferred()
    const api = await serve([{
      method: 'GET',
      path: '/v1/wait',
      handler: async (req: ApiRequest) => {
        req.signal.addEventListener('abort', () => { aborted.resolve() })
        started.resolve()
        await aborted.promise
        return {}
      }
    }])
    const client = new AbortController()
    const pending = request(api, 'GET', '/v1/wait', { signal: client.signal })
    await within(started.promise, 'the handler to start')
    client.abort()
    await expect(pending).rejects.toThrow()
    await within(aborted.promise, 'the handler signal to abort')
  })

  it('close() aborts in-flight handlers with RL-6002 and stops listening', async () => {
    const started = deferred()
    const api = await startApi({
      token: TOKEN,
      routes: [{
        method: 'GET',
        path: '/v1/wait',
        handler: async (req: ApiRequest) => {
          started.resolve()
          await once(req.signal, 'abort')
          throw new Error('aborted')
        }
      }]
    })
    const pending = request(api, 'GET', '/v1/wait')
    await within(started.promise, 'the handler to start')
    await within(api.close(), 'close()')
    const r = await pending
    expect(r.status).toBe(503)
    expect(r.json.error.code).toBe('RL-6002')
    await expect(fetch(api.url + '/v1/wait')).rejects.toThrow()
  })

  /** Whether a TCP connection to host:port is accepted. */
  const reachable = async (host: string, port: number): Promise<boolean> => await new Promise(resolve => {
    const socket = connect({ host, port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })

  it('listens on 127.0.0.1 only', async () => {
    const api = await serve(echo)
    expect(new URL(api.url).hostname).toBe('127.0.0.1')
    expect(await reachable('127.0.0.1', api.port)).toBe(true)
    expect(await reachable('::1', api.port)).toBe(false)
  })

  // Linux routes all of 127.0.0.0/8 to the loopback interface: 127.0.0.2 reaches a socket bound to
  // every address, but not one bound to 127.0.0.1 (a check that needs no external interface).
  it.runIf(process.platform === 'linux')('is not bound to every address: 127.0.0.2 reaches a wildcard listener (negative control), not the API', async () => {
    const wildcard = createServer()
    await new Promise<void>(resolve => { wildcard.listen(0, '0.0.0.0', resolve) })
    try {
      expect(await reachable('127.0.0.2', (wildcard.address() as AddressInfo).port)).toBe(true)
    } finally {
      await new Promise(resolve => { wildcard.close(resolve) })
    }
    const api = await serve(echo)
    expect(await reachable('127.0.0.2', api.port)).toBe(false)
  })

  // This machine's external addresses, if it has any (a sandbox may have none: then there is nothing to try).
  const external = Object.values(networkInterfaces()).flat().flatMap(i => i === undefined || i.internal ? [] : [i.address])
  it.skipIf(external.length === 0)('is not reachable on this machine\'s external addresses', async () => {
    const api = await serve(echo)
    for (const address of external) expect(await reachable(address, api.port), address).toBe(false)
  })
})

describe('API token file', () => {
  it('is created 0600 with a 32-byte token, and read back unchanged', async () => {
    const path = join(dir, 'api.token')
    const token = await ensureApiToken(path)
    expect(Buffer.from(token, 'base64url').length).toBe(32)
    if (posix) expect((await stat(path)).mode & 0o777).toBe(0o600)
    expect(await ensureApiToken(path)).toBe(token)
    expect(await readApiToken(path)).toBe(token)
    expect((await readFile(path, 'utf8')).trim()).toBe(token)
  })

  it('has one token when several starters race to create it', async () => {
    const path = join(dir, 'api.token')
    const tokens = await Promise.all(Array.from({ length: 8 }, async () => await ensureApiToken(path)))
    expect(new Set(tokens).size).toBe(1)
    expect(await readApiToken(path)).toBe(tokens[0])
  })

  it.runIf(posix)('refuses a token file that group or others can read (RL-1010)', async () => {
    const path = join(dir, 'api.token')
    await ensureApiToken(path)
    await chmod(path, 0o644)
    expect(await code(ensureApiToken(path))).toBe('RL-1010')
    expect(await code(readApiToken(path))).toBe('RL-1010')
  })

  it('reports a missing (RL-1004) or malformed (RL-1009) token file', async () => {
    expect(await code(readApiToken(join(dir, 'none')))).toBe('RL-1004')
    const path = join(dir, 'bad.token')
    await writeFile(path, 'not a token!\n', { mode: 0o600 })
    expect(await code(readApiToken(path))).toBe('RL-1009')
  })
})

describe('api-client', () => {
  function endpointFor (api: ApiServer, pid = process.pid): Endpoint {
    return { version: 1, pid, api: api.url, peer_id: '12D3KooWtest', addrs: [], federation: 'test', started_at: new Date(0).toISOString() }
  }

  /** A daemon-like setup in `dir`: token file, API, node.json. */
  async function daemon (routes: Route[]): Promise<ApiServer> {
    const token = await ensureApiToken(join(dir, TOKEN_FILE))
    const api = await serve(routes, { token })
    await writeEndpoint(dir, endpointFor(api))
    return api
  }

  it('writes node.json 0600 and reads it back', async () => {
    const api = await daemon([])
    if (posix) expect((await stat(join(dir, ENDPOINT_FILE))).mode & 0o777).toBe(0o600)
    expect(await readEndpoint(dir)).toEqual(endpointFor(api))
    await removeEndpoint(dir)
    expect(await code(readEndpoint(dir))).toBe('RL-6002')
    await removeEndpoint(dir)
  })

  it('readEndpoint: RL-6002 when node.json is missing, its pid has exited, or it is not an endpoint', async () => {
    expect(await code(readEndpoint(dir))).toBe('RL-6002')

    const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' })
    const pid = child.pid
    if (pid === undefined) throw new Error('child did not start')
    await within(once(child, 'exit'), 'the child to exit')
    const api = await serve([])
    await writeEndpoint(dir, endpointFor(api, pid))
    const err = await readEndpoint(dir).catch((e: unknown) => e)
    expect(isReachError(err, 'RL-6002')).toBe(true)
    expect((err as ReachError).details.pid).toBe(pid)

    // node.json must point at loopback: the token is never sent elsewhere.
    await writeEndpoint(dir, { ...endpointFor(api), api: 'http://example.com:80' })
    expect(await code(readEndpoint(dir))).toBe('RL-6002')
    await writeFile(join(dir, ENDPOINT_FILE), '{', { mode: 0o600 })
    expect(await code(readEndpoint(dir))).toBe('RL-6002')
  })

  it('callApi returns the body, sends JSON, and maps error bodies back into the same ReachError', async () => {
    await daemon([
      ...echo,
      { method: 'GET', path: '/v1/fail', handler: async () => { throw new ReachError('RL-3012', { message: 'pack counter not found', details: { name: 'counter' } }) } }
    ])
    expect(await callApi(dir, 'GET', '/v1/runs/r1')).toEqual({ ok: true, id: 'r1', limit: null })
    expect(await callApi(dir, 'POST', '/v1/echo', { a: [1, 2] })).toEqual({ ok: true, body: { a: [1, 2] } })
    const err = await callApi(dir, 'GET', '/v1/fail').catch((e: unknown) => e)
    expect(isReachError(err, 'RL-3012')).toBe(true)
    expect((err as ReachError).message).toBe('pack counter not found')
    expect((err as ReachError).details).toEqual({ name: 'counter' })
    expect(await code(callApi(dir, 'GET', '/v1/nope'))).toBe('RL-6003')
  })

  it('callApi with the wrong token gets RL-6001', async () => {
    await daemon(echo)
    await rm(join(dir, TOKEN_FILE))
    await ensureApiToken(join(dir, TOKEN_FILE))
    expect(await code(callApi(dir, 'GET', '/v1/runs/r1'))).toBe('RL-6001')
  })

  it('callApi against a closed port is RL-6002', async () => {
    const api = await daemon(echo)
    await api.close()
    const err = await callApi(dir, 'GET', '/v1/runs/r1').catch((e: unknown) => e)
    expect(isReachError(err, 'RL-6002')).toBe(true)
    expect((err as ReachError).message).toMatch(/not running/)
  })

  it('callApi rejects with the caller\'s reason on abort, and RL-6002 on timeout', async () => {
    const started = deferred()
    await daemon([{ method: 'GET', path: '/v1/wait', handler: async req => { started.resolve(); await once(req.signal, 'abort'); return {} } }])
    const controller = new AbortController()
    const pending = callApi(dir, 'GET', '/v1/wait', undefined, { signal: controller.signal })
    await within(started.promise, 'the handler to start')
    const reason = new Error('ctrl-c')
    controller.abort(reason)
    await expect(pending).rejects.toBe(reason)
    expect(await code(callApi(dir, 'GET', '/v1/wait', undefined, { timeoutMs: 100 }))).toBe('RL-6002')
  })
})
