/**
 * How the CLI finds and talks to a running daemon.
 *
 * A running daemon publishes `<data dir>/node.json` (its pid, API URL, peer
 * id and addresses) and keeps its bearer token in `<data dir>/api.token`,
 * both 0600. `callApi` reads the two, calls the API with global fetch and
 * turns a `{"ok":false,"error":{...}}` answer back into the daemon's
 * ReachError, so the CLI prints the daemon's own code.
 */
import { readFileSync } from 'node:fs'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { CODES, ReachError, type ErrorCode } from '../protocol/errors.ts'
import type { Event } from '../protocol/event.ts'
import { readApiToken } from './api.ts'
import { errno, writeFileAtomic } from './fs.ts'
import { checkHome, homePaths } from './home.ts'
import type { RunReader, RunRecord } from './runs.ts'

export interface Endpoint {
  version: 1
  pid: number
  /** `http://127.0.0.1:<port>` */
  api: string
  peer_id: string
  addrs: string[]
  federation: string
  started_at: string
}

export const ENDPOINT_FILE = 'node.json'
export const TOKEN_FILE = 'api.token'
/**
 * Without a caller's timeout, give up after two minutes: long enough for a
 * delegation the daemon waits on, short enough that a wedged daemon does not
 * hang a script forever.
 */
export const DEFAULT_API_TIMEOUT_MS = 120_000

export interface CallApiOptions {
  signal?: AbortSignal
  timeoutMs?: number
}

/** Publish the endpoint (atomic, 0600: it sits beside the token and names the node's addresses). */
export async function writeEndpoint (root: string, endpoint: Endpoint): Promise<void> {
  await writeFileAtomic(join(root, ENDPOINT_FILE), JSON.stringify(endpoint, null, 2) + '\n', 0o600)
}

function notRunning (message: string, details: Record<string, unknown> = {}, cause?: unknown): ReachError {
  return new ReachError('RL-6002', { message, details, cause })
}

/**
 * Whether a process with this pid exists. EPERM means it does, under another user. A zombie (a
 * daemon killed with SIGKILL whose parent has not reaped it yet, for a moment or, under an init
 * that reaps slowly, for seconds) is gone: on Linux its state in /proc says so.
 */
function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    return errno(err) !== 'ESRCH'
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return true
  }
}

/** Only loopback URLs: the bearer token must never be sent off the machine, whatever node.json says. */
function isLoopbackApi (api: unknown): api is string {
  if (typeof api !== 'string') return false
  try {
    const url = new URL(api)
    return url.protocol === 'http:' && (url.hostname === '127.0.0.1' || url.hostname === '[::1]')
  } catch {
    return false
  }
}

/**
 * The running daemon's endpoint. RL-6002 when there is no node.json, when it
 * cannot be read as one, or when its pid is gone (a daemon that crashed
 * leaves the file behind). RL-1014 when another user owns or can write the
 * data dir, node.json or api.token: they would choose where the token goes.
 */
export async function readEndpoint (root: string): Promise<Endpoint> {
  await checkHome(homePaths(root))
  const path = join(root, ENDPOINT_FILE)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (errno(err) === 'ENOENT') throw notRunning(`node is not running (no ${path}); start it: reach node start`, { path })
    throw notRunning(`cannot read ${path} (${errno(err) ?? 'error'})`, { path }, err)
  }
  let value: Partial<Endpoint> | undefined
  try {
    value = JSON.parse(text) as Partial<Endpoint>
  } catch {}
  if (value?.version !== 1 || !Number.isSafeInteger(value.pid) || (value.pid ?? 0) <= 0 || !isLoopbackApi(value.api)) {
    throw notRunning(`${path} is not a valid endpoint file; if no node is running, delete it`, { path })
  }
  const endpoint = value as Endpoint
  if (!alive(endpoint.pid)) throw notRunning(`node is not running (pid ${endpoint.pid} from ${path} has exited)`, { path, pid: endpoint.pid })
  return endpoint
}

export async function removeEndpoint (root: string): Promise<void> {
  await rm(join(root, ENDPOINT_FILE), { force: true })
}

/** The `error` of a failed answer as a ReachError with the daemon's code, message and details. */
function remoteError (status: number, error: unknown): ReachError {
  const e = (error !== null && typeof error === 'object' ? error : {}) as Record<string, unknown>
  const message = typeof e.message === 'string' ? e.message : `control API answered ${status}`
  const details = e.details !== null && typeof e.details === 'object' && !Array.isArray(e.details) ? e.details as Record<string, unknown> : undefined
  const seq = typeof e.seq === 'number' ? e.seq : undefined
  if (typeof e.code === 'string' && Object.hasOwn(CODES, e.code)) return new ReachError(e.code as ErrorCode, { message, details, seq })
  // A code this CLI does not know (a newer daemon): keep it visible in details.
  return new ReachError('RL-6004', { message, details: { ...details, remote_code: e.code, status } })
}

/**
 * Call the daemon's API at `root`. Returns the parsed `{"ok":true, ...}`
 * body; throws the daemon's ReachError for `{"ok":false}`, RL-6002 when no
 * daemon answers (connection refused or lost, or the timeout passed), and the
 * signal's reason when the caller aborts (Ctrl-C).
 */
export async function callApi<T = Record<string, unknown>> (
  root: string,
  method: 'GET' | 'POST' | 'DELETE',
  path: string,
  body?: unknown,
  options: CallApiOptions = {}
): Promise<T> {
  const endpoint = await readEndpoint(root)
  const token = await readApiToken(join(root, TOKEN_FILE))
  const timeoutMs = options.timeoutMs ?? DEFAULT_API_TIMEOUT_MS
  const timeout = AbortSignal.timeout(timeoutMs)
  const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout])
  const url = endpoint.api + path

  let text: string
  let status: number
  try {
    const res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal
    })
    status = res.status
    text = await res.text()
  } catch (err) {
    if (options.signal?.aborted === true) throw options.signal.reason
    if (timeout.aborted) throw notRunning(`the node at ${endpoint.api} did not answer within ${timeoutMs} ms`, { api: endpoint.api, timeout_ms: timeoutMs }, err)
    const code = errno((err as Error).cause)
    const why = code === 'ECONNREFUSED' ? 'node is not running' : 'lost the connection to the node'
    throw notRunning(`${why} (${endpoint.api}: ${code ?? (err as Error).message})`, { api: endpoint.api, pid: endpoint.pid }, err)
  }

  let parsed: { ok?: unknown, error?: unknown } | undefined
  try {
    parsed = JSON.parse(text) as { ok?: unknown, error?: unknown }
  } catch {}
  if (parsed === null || typeof parsed !== 'object') {
    throw new ReachError('RL-6004', { message: `the node answered ${status} with a body that is not JSON`, details: { status } })
  }
  if (parsed.ok !== true) throw remoteError(status, parsed.error)
  return parsed as T
}

/**
 * The runs of the node running at `root`, read through its control API: the running node holds
 * the run database, so the CLI reads runs this way while it runs. RL-6002 when none is running.
 */
export async function daemonRuns (root: string): Promise<RunReader> {
  await readEndpoint(root)
  const path = (runId: string, rest = ''): string => `/v1/runs/${encodeURIComponent(runId)}${rest}`
  return {
    list: async () => (await callApi<{ runs: RunRecord[] }>(root, 'GET', '/v1/runs')).runs,
    record: async (runId) => (await callApi<{ record: RunRecord }>(root, 'GET', path(runId))).record,
    events: async (runId) => (await callApi<{ events: Event[] }>(root, 'GET', path(runId, '/events'))).events,
    checkpointText: async (runId) => (await callApi<{ checkpoint: string }>(root, 'GET', path(runId, '/checkpoint'))).checkpoint
  }
}
