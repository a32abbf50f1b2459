/**
 * `<home>/config.json`: how this node joins its federation, written by
 * `reach init` and read by `reach node start` (flags override it). `reach init` gives a
 * `/tcp/0` listen address a free port (pinListenPorts), so the node keeps it across restarts.
 *
 *   {"version":1,"federation":"default","listen":["/ip4/127.0.0.1/tcp/41230"],"bootstrap":[]}
 */
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { ReachError } from '../protocol/errors.ts'
import { errno, writeFileAtomic } from './fs.ts'

export const CONFIG_FILE = 'config.json'
export const CONFIG_VERSION = 1

export interface NodeConfig {
  version: 1
  federation: string
  listen: string[]
  bootstrap: string[]
}

export const DEFAULT_CONFIG: Readonly<NodeConfig> = Object.freeze({ version: 1, federation: 'default', listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [] })

const FEDERATION_ID = /^[A-Za-z0-9._-]{1,64}$/

function invalid (path: string, why: string): never {
  throw new ReachError('RL-1012', { message: `config ${path} is invalid: ${why}` })
}

export function parseConfig (value: unknown, path = '(config)'): NodeConfig {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) invalid(path, 'not a JSON object')
  const v = value as Record<string, unknown>
  const unknown = Object.keys(v).filter((k) => !['version', 'federation', 'listen', 'bootstrap'].includes(k))
  if (unknown.length > 0) invalid(path, `unknown field(s) ${unknown.join(', ')}`)
  if (v.version !== CONFIG_VERSION) invalid(path, `version must be ${CONFIG_VERSION}`)
  const federation = v.federation ?? DEFAULT_CONFIG.federation
  if (typeof federation !== 'string' || !FEDERATION_ID.test(federation)) invalid(path, 'federation must be 1 to 64 letters, digits, ".", "_" or "-"')
  const list = (name: 'listen' | 'bootstrap'): string[] => {
    const l = v[name] ?? DEFAULT_CONFIG[name]
    if (!Array.isArray(l) || !l.every((x) => typeof x === 'string' && x.startsWith('/'))) invalid(path, `${name} must be a list of multiaddrs`)
    return [...l] as string[]
  }
  return { version: 1, federation, listen: list('listen'), bootstrap: list('bootstrap') }
}

/** The node's config; a missing file is the default. */
export async function readConfig (root: string): Promise<NodeConfig> {
  const path = join(root, CONFIG_FILE)
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (errno(err) === 'ENOENT') return { ...DEFAULT_CONFIG, listen: [...DEFAULT_CONFIG.listen], bootstrap: [] }
    throw err
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    invalid(path, 'not JSON')
  }
  return parseConfig(value, path)
}

export async function writeConfig (root: string, config: NodeConfig): Promise<void> {
  const path = join(root, CONFIG_FILE)
  await writeFileAtomic(path, JSON.stringify(parseConfig(config, path), null, 2) + '\n', 0o600)
}

const ANY_PORT = /^\/(ip4|ip6)\/([^/]+)\/tcp\/0(\/.*)?$/

/**
 * `listen` with each "any free port" TCP address (`/tcp/0`) given a port that is free now. A node
 * keeps its port across restarts (the address others saved to reach it stays true), so `reach
 * init` picks it once and writes it to config.json; so does the first `node start` of a data dir
 * made before, whose config still says `/tcp/0`.
 */
export async function pinListenPorts (listen: readonly string[]): Promise<string[]> {
  return await Promise.all(listen.map(async (addr) => {
    const m = ANY_PORT.exec(addr)
    if (m === null) return addr
    const port = await freePort(m[2] as string)
    return `/${m[1] as string}/${m[2] as string}/tcp/${port}${m[3] ?? ''}`
  }))
}

/** A TCP port free on `host` now (the kernel's pick, released at once). */
async function freePort (host: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(new ReachError('RL-1013', { message: `cannot find a free port on ${host}: ${err.code ?? err.message}`, cause: err }))
    })
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}
