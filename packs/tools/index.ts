/**
 * Host tools: the only way a pack reaches the world. Each tool is named by
 * the capability a pack must declare and a node must grant. Whether a repeat
 * is harmless, and what a tool can answer, are the engine's to say
 * (contracts.ts), not the tool's.
 *
 * Tools run outside the sandbox and outside replay: their results are
 * recorded as events, and a replay reads them back instead.
 */
import { randomBytes } from 'node:crypto'
import type { JsonObject, JsonValue } from '../../protocol/canonical.ts'
import { ReachError } from '../../protocol/errors.ts'
import type { Capability } from '../manifest.ts'
import { MAX_KV_KEY_LENGTH, MAX_RANDOM_BYTES, TOOL_CONTRACTS, httpUrl, randomBytesAsked } from './contracts.ts'

export { MAX_KV_KEY_LENGTH, MAX_RANDOM_BYTES }

export interface ToolContext {
  /** The pack's namespace (its manifest name): kv keys never cross packs. */
  pack: string
  signal: AbortSignal
  /** Fuel the calling run has left (its budget minus what it used so far). */
  fuelLeft?: number
  /** reach.delegate: the fuel the run loop granted this call's sub-run (delegate-fuel.ts). */
  fuelGranted?: number
}

export interface Tool {
  capability: string
  run (args: JsonObject, ctx: ToolContext): Promise<JsonValue>
}

export interface KvBackend {
  get (namespace: string, key: string): Promise<JsonValue | undefined>
  put (namespace: string, key: string, value: JsonValue): Promise<void>
}

export interface ToolsInit {
  kv: KvBackend
  /** Hosts `http.fetch` may reach (exact host[:port] matches). Empty: none. */
  httpAllowlist?: readonly string[]
  /** Largest response body returned to a pack. */
  httpMaxBytes?: number
}

/** Response bodies handed to a pack are capped: they are recorded in the log. */
export const DEFAULT_HTTP_MAX_BYTES = 64 * 1024

function fail (message: string): never {
  throw new ReachError('RL-3018', { message })
}

/** The tool's arguments as its contract requires them (contracts.ts: the replay checks the same). */
function checked (tool: Capability, args: JsonObject): JsonObject {
  const problem = TOOL_CONTRACTS[tool].argsProblem(args)
  if (problem !== undefined) fail(problem)
  return args
}

export function hostTools (init: ToolsInit): Map<string, Tool> {
  const allow = new Set(init.httpAllowlist ?? [])
  const maxBytes = init.httpMaxBytes ?? DEFAULT_HTTP_MAX_BYTES
  const tools: Tool[] = [
    {
      capability: 'clock.now',
      run: async () => ({ now_ms: Date.now() })
    },
    {
      capability: 'random.bytes',
      run: async (args) => ({ hex: randomBytes(randomBytesAsked(checked('random.bytes', args)) as number).toString('hex') })
    },
    {
      capability: 'kv.get',
      run: async (args, ctx) => ({ value: (await init.kv.get(ctx.pack, checked('kv.get', args).key as string)) ?? null })
    },
    {
      capability: 'kv.put',
      run: async (args, ctx) => {
        await init.kv.put(ctx.pack, checked('kv.put', args).key as string, args.value as JsonValue)
        return { ok: true }
      }
    },
    {
      capability: 'http.fetch',
      run: async (args, ctx) => {
        const url = httpUrl(checked('http.fetch', args)) as URL
        if (!allow.has(url.host)) fail(`http.fetch: host ${url.host} is not on this node's allowlist`)
        const res = await fetch(url, { method: 'GET', redirect: 'error', signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(10_000)]) })
          .catch((err: Error) => fail(`http.fetch ${url.host}: ${err.message}`))
        const body = Buffer.from(await res.arrayBuffer())
        if (body.length > maxBytes) fail(`http.fetch: response of ${body.length} bytes is over the ${maxBytes}-byte limit`)
        return { status: res.status, body: body.toString('utf8') }
      }
    }
  ]
  return new Map(tools.map((t) => [t.capability, t]))
}
