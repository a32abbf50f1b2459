/**
 * The daemon's control API: JSON over `node:http`, bound to 127.0.0.1 only.
 *
 * Every request, `/metrics` included, must carry `Authorization: Bearer
 * <token>` with the token from `<data dir>/api.token` (0600, like a key
 * file). The token is checked before routing, so a caller without it learns
 * nothing about which routes exist: it gets 401 RL-6001 and nothing else.
 *
 * Responses are one JSON object: `{"ok":true, ...result}` (a result that is
 * not an object comes back as `{"ok":true,"result":...}`) or
 * `{"ok":false,"error":{"code":"RL-XXXX","message":...}}`, with an HTTP
 * status derived from the code's range (`statusFor`).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { link, open, rename, unlink } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { basename, dirname, join } from 'node:path'
import { ReachError, isReachError } from '../protocol/errors.ts'
import { errno, pathExists, storageFailure, writeFileAtomic } from './fs.ts'

export interface ApiRequest {
  method: string
  path: string
  params: Record<string, string>
  query: URLSearchParams
  body: unknown
  /** Aborted when the client disconnects or the server closes. */
  signal: AbortSignal
}

export interface Route {
  method: 'GET' | 'POST' | 'DELETE'
  /** Literal segments and `:name` parameters, e.g. `/v1/delegations/:id/cancel`. */
  path: string
  /** Returns a JSON-serialisable result. */
  handler: (req: ApiRequest) => Promise<unknown>
  /** This route's body limit, when it takes more than the server's (a run archive). */
  maxBodyBytes?: number
}

export interface ApiServer {
  readonly url: string
  readonly port: number
  close (): Promise<void>
}

export interface ApiInit {
  token: string
  routes: Route[]
  /** Prometheus text for `GET /metrics`; without it the route does not exist. */
  metrics?: () => Promise<string>
  /** Default 0: the OS picks a free port (the daemon publishes it in node.json). */
  port?: number
  maxBodyBytes?: number
}

/** Requests are small JSON commands; 1 MiB is far above any of them and bounds what a client can make us hold. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
/** Loopback only: the API controls the node, so it must never face the network. */
export const API_HOST = '127.0.0.1'
const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
/** 32 random bytes: the token is the only thing guarding the API from other local users' processes. */
const TOKEN_BYTES = 32
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{16,256}$/
/** A token file holds one token; anything larger is not one. */
const MAX_TOKEN_FILE_BYTES = 1024
/** Permission bits a token file must not have (group and other), as for key files. */
const OPEN_MODE_BITS = 0o077

/**
 * The HTTP status for an error code. Only the control API's own codes are
 * mapped one by one, and the "not found" codes (a pack, run, remote run or
 * delegation this id names does not exist) are 404; the rest go by range:
 * input 400, integrity and packs 422 (well-formed but refused), federation 502
 * (a peer failed us) except "peer busy" 503 (retry later), storage 500.
 */
export function statusFor (code: string): number {
  switch (code) {
    case 'RL-1015': return 404
    case 'RL-3012': return 404
    case 'RL-3019': return 404
    case 'RL-4017': return 404
    case 'RL-4019': return 404
    case 'RL-4007': return 503
    case 'RL-6001': return 401
    case 'RL-6002': return 503
    case 'RL-6003': return 404
    case 'RL-6004': return 400
    case 'RL-6006': return 500
    case 'RL-6005': return 409
  }
  switch (code.slice(0, 4)) {
    case 'RL-1': return 400
    case 'RL-2': return 422
    case 'RL-3': return 422
    case 'RL-4': return 502
    default: return 500
  }
}

/**
 * An error that is not a ReachError is a bug or an unexpected environment failure inside a
 * handler: 500 with RL-6006, so it is told apart from a client mistake (400, RL-6004).
 */
function internalError (err: unknown): { status: number, error: ReachError } {
  // The daemon's disk refusing a write is storage (RL-5010), not a bug.
  const storage = storageFailure(err)
  if (storage !== undefined) return { status: statusFor(storage.code), error: storage }
  const message = err instanceof Error ? err.message : String(err)
  return { status: 500, error: new ReachError('RL-6006', { message: `internal error: ${message}`, details: { internal: true }, cause: err }) }
}

interface CompiledRoute {
  method: string
  segments: string[]
  handler: Route['handler']
  maxBodyBytes: number | undefined
}

function compile (route: Route): CompiledRoute {
  if (!route.path.startsWith('/')) throw new ReachError('RL-1001', { message: `route path must start with "/": ${route.path}` })
  return { method: route.method, segments: route.path.split('/'), handler: route.handler, maxBodyBytes: route.maxBodyBytes }
}

/** The route and its decoded parameters, or undefined. Throws RL-6004 for a malformed escape. */
function match (routes: CompiledRoute[], method: string, path: string): { route: CompiledRoute, params: Record<string, string> } | undefined {
  const parts = path.split('/')
  for (const route of routes) {
    if (route.method !== method || route.segments.length !== parts.length) continue
    const params: Record<string, string> = {}
    const ok = route.segments.every((segment, i) => {
      if (!segment.startsWith(':')) return segment === parts[i]
      if (parts[i] === '') return false
      params[segment.slice(1)] = decodeSegment(parts[i])
      return true
    })
    if (ok) return { route, params }
  }
  return undefined
}

function decodeSegment (segment: string): string {
  try {
    return decodeURIComponent(segment)
  } catch {
    throw new ReachError('RL-6004', { message: `malformed percent-escape in path segment "${segment}"` })
  }
}

/** Split `req.url` by hand: `new URL('//x', base)` would read "x" as a host. */
function splitUrl (url: string): { path: string, query: URLSearchParams } {
  const q = url.indexOf('?')
  return q === -1
    ? { path: url, query: new URLSearchParams() }
    : { path: url.slice(0, q), query: new URLSearchParams(url.slice(q + 1)) }
}

function digest (text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/**
 * Compare the presented token with ours in constant time. timingSafeEqual
 * needs equal lengths (it throws otherwise, and comparing lengths first would
 * leak the token's length), so both sides are hashed to 32 bytes first.
 */
function authorized (header: string | undefined, expected: Buffer): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '')
  return m !== null && timingSafeEqual(digest(m[1]), expected)
}

/** The body bytes, or undefined when they exceed `max` (reading stops there). */
async function readBody (req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > max) return undefined
  return await new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > max) {
        // Stop pulling bytes: the response closes the connection.
        req.off('data', onData)
        req.pause()
        resolve(undefined)
        return
      }
      chunks.push(chunk)
    }
    req.on('data', onData)
    req.once('end', () => { resolve(Buffer.concat(chunks)) })
    req.once('error', reject)
  })
}

function parseBody (bytes: Buffer): unknown {
  if (bytes.length === 0) return undefined
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    throw new ReachError('RL-6004', { message: `request body is not JSON: ${(err as Error).message}` })
  }
}

function send (res: ServerResponse, status: number, contentType: string, text: string, close = false): void {
  if (res.headersSent || res.destroyed) return
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...(close ? { connection: 'close' } : {})
  })
  res.end(text)
}

function sendJson (res: ServerResponse, status: number, value: unknown, close = false): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), close)
}

function sendError (res: ServerResponse, status: number, error: ReachError, close = false): void {
  sendJson(res, status, { ok: false, error: error.toJSON() }, close)
}

/** `{"ok":true, ...result}`; `ok` stays first and cannot be overridden by the result. */
function okBody (result: unknown): Record<string, unknown> {
  if (result === null || typeof result !== 'object' || Array.isArray(result)) return { ok: true, result }
  const body: Record<string, unknown> = { ok: true, ...result }
  body.ok = true
  return body
}

export async function startApi (init: ApiInit): Promise<ApiServer> {
  if (!TOKEN_PATTERN.test(init.token)) throw new ReachError('RL-6001', { message: 'the control API token is malformed' })
  const expected = digest(init.token)
  const routes = init.routes.map(compile)
  const maxBodyBytes = init.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  // Aborts every in-flight handler when the server closes.
  const closing = new AbortController()

  async function serve (req: IncomingMessage, res: ServerResponse, signal: AbortSignal): Promise<void> {
    if (!authorized(req.headers.authorization, expected)) {
      res.setHeader('www-authenticate', 'Bearer')
      // Close rather than read an unauthenticated client's body.
      sendError(res, 401, new ReachError('RL-6001', { message: 'missing or wrong bearer token' }), true)
      return
    }
    const method = req.method ?? 'GET'
    const { path, query } = splitUrl(req.url ?? '/')
    if (method === 'GET' && path === '/metrics' && init.metrics !== undefined) {
      send(res, 200, METRICS_CONTENT_TYPE, await init.metrics())
      return
    }
    const found = match(routes, method, path)
    if (found === undefined) {
      sendError(res, 404, new ReachError('RL-6003', { message: `no route ${method} ${path}` }))
      return
    }
    const limit = found.route.maxBodyBytes ?? maxBodyBytes
    const bytes = await readBody(req, limit)
    if (bytes === undefined) {
      sendError(res, 413, new ReachError('RL-6004', { message: `request body is larger than ${limit} bytes`, details: { max_bytes: limit } }), true)
      return
    }
    const result = await found.route.handler({ method, path, params: found.params, query, body: parseBody(bytes), signal })
    sendJson(res, 200, okBody(result))
  }

  const server = createServer((req, res) => {
    const disconnected = new AbortController()
    // 'close' before the response finished means the client went away.
    res.once('close', () => { if (!res.writableFinished) disconnected.abort(new ReachError('RL-6004', { message: 'client disconnected' })) })
    const signal = AbortSignal.any([disconnected.signal, closing.signal])
    // Once the server is closing, answer and hang up: a kept-alive idle
    // connection would hold close() until the client drops it.
    const hangUp = (): void => { if (!res.headersSent) res.setHeader('connection', 'close') }
    if (closing.signal.aborted) hangUp()
    closing.signal.addEventListener('abort', hangUp, { once: true })
    res.once('close', () => { closing.signal.removeEventListener('abort', hangUp) })
    serve(req, res, signal).catch((err: unknown) => {
      // A handler that gave up because the node is stopping reports that, not its own abort error.
      const reason: unknown = signal.aborted ? signal.reason : undefined
      const failure = isReachError(reason) ? { status: statusFor(reason.code), error: reason } : isReachError(err) ? { status: statusFor(err.code), error: err } : internalError(err)
      sendError(res, failure.status, failure.error)
    })
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(init.port ?? 0, API_HOST, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  let closed: Promise<void> | undefined

  return {
    url: `http://${API_HOST}:${port}`,
    port,
    async close () {
      closed ??= new Promise<void>((resolve, reject) => {
        server.close(err => { if (err === undefined) resolve(); else reject(err) })
        closing.abort(new ReachError('RL-6002', { message: 'node is stopping' }))
        server.closeIdleConnections()
      })
      await closed
    }
  }
}

/** A new token: 32 random bytes, unpadded base64url (safe in a header, no quoting). */
function newToken (): string {
  return randomBytes(TOKEN_BYTES).toString('base64url')
}

/**
 * The API token at `path`, created (0600) when missing. The file is written
 * in full to a temp name and then linked into place, so a reader never sees
 * half a token and two starters cannot both create one: the second links onto
 * an existing file, gets EEXIST and reads the first one's token.
 */
export async function ensureApiToken (path: string): Promise<string> {
  if (await pathExists(path)) return await readApiToken(path)
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  await writeFileAtomic(temp, newToken() + '\n', 0o600)
  try {
    await link(temp, path)
  } catch (err) {
    // File systems without hard links: fall back to check + rename.
    if (errno(err) !== 'EEXIST' && !await pathExists(path)) await rename(temp, path)
  } finally {
    await unlink(temp).catch(() => {})
  }
  return await readApiToken(path)
}

/**
 * Read the API token: RL-1004 when missing or unreadable, RL-1010 when group
 * or others have any permission on the file (it grants control of the node),
 * RL-1009 when it does not hold a token.
 */
export async function readApiToken (path: string): Promise<string> {
  let handle
  try {
    handle = await open(path, 'r')
  } catch (err) {
    throw new ReachError('RL-1004', { message: `API token file ${path} not found or unreadable (${errno(err) ?? 'error'})`, details: { path }, cause: err })
  }
  try {
    // fstat the open descriptor: what we check is what we read.
    const st = await handle.stat()
    if (process.platform !== 'win32' && (st.mode & OPEN_MODE_BITS) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
      throw new ReachError('RL-1010', {
        message: `API token file ${path} has mode ${mode}, which lets other users read it; run: chmod 600 ${path}`,
        details: { path, mode }
      })
    }
    const token = st.isFile() && st.size <= MAX_TOKEN_FILE_BYTES ? (await handle.readFile('utf8')).trim() : ''
    if (!TOKEN_PATTERN.test(token)) throw new ReachError('RL-1009', { message: `API token file ${path} does not hold a token`, details: { path } })
    return token
  } finally {
    await handle.close()
  }
}
