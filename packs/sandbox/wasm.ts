/**
 * The QuickJS engine as WebAssembly: the compiled module (shared by every
 * instance in the process) and the variant objects quickjs-emscripten needs
 * to instantiate it.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import type { QuickJSSyncVariant, newVariant } from 'quickjs-emscripten-core'
import * as releaseSync from '@jitl/quickjs-wasmfile-release-sync'

/** The slice of the WebAssembly global we use (the project's lib settings do not declare it). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow: (pages: number) => number
}
interface WasmApi {
  compile: (bytes: Uint8Array) => Promise<object>
  Instance: new (module: object, imports: unknown) => { exports: Record<string, unknown> }
  Memory: new (descriptor: { initial: number, maximum: number }) => WasmMemory
}
export const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly
export const PAGE = 65536

/** newVariant's option type names the DOM's WebAssembly.Memory; ours is structurally the same object. */
export type WebAssemblyMemoryLike = Parameters<typeof newVariant>[1]['wasmMemory']

/** The compiled engine and the SHA-256 (hex) of the exact bytes it was compiled from. */
export interface CompiledEngine {
  module: object
  sha256: string
}

const require = createRequire(import.meta.url)

/** The .wasm file every sandbox instantiates. */
export function wasmPath (): string {
  return require.resolve('@jitl/quickjs-wasmfile-release-sync/wasm')
}

// Compiled code, not state: immutable, so one compile serves every pool in the process.
let compiled: Promise<CompiledEngine> | undefined

/** Compiles the engine once per process (again after a failed attempt). */
export function compileWasm (): Promise<CompiledEngine> {
  if (compiled === undefined) {
    const compiling = readFile(wasmPath()).then(async (bytes) => {
      // Hashed while V8 compiles off the main thread.
      const module = Wasm.compile(bytes)
      const sha256 = createHash('sha256').update(bytes).digest('hex')
      return { module: await module, sha256 }
    })
    compiled = compiling
    compiling.catch(() => { if (compiled === compiling) compiled = undefined })
  }
  return compiled
}

/**
 * The variant object. The package's types describe a CommonJS module while Node loads its ESM
 * build, so the number of `.default` hops differs between the two: follow them to the object.
 */
export function baseVariant (): QuickJSSyncVariant {
  let v = releaseSync as unknown as { type?: unknown, default?: unknown }
  while (v.type === undefined && typeof v.default === 'object' && v.default !== null) v = v.default as typeof v
  return v as unknown as QuickJSSyncVariant
}

/**
 * The engine's imports with the wall clock stopped at 0. QuickJS seeds Math.random's state from
 * it when a context is made; the pack cannot reach Math.random, but the seed is in memory, and
 * with the clock stopped every blank instance is the same bytes (which is what lets a released
 * instance be reset to a blank, and a test check it).
 */
export function stoppedClock (imports: unknown): unknown {
  const env = (imports as Record<string, Record<string, unknown>>).a
  const clocks = env === undefined ? [] : Object.keys(env).filter((name) => String(env[name]).replace(/\s/g, '') === '()=>Date.now()')
  if (env === undefined || clocks.length !== 1) throw new Error('unsupported QuickJS build: its clock import not found')
  return { ...(imports as object), a: { ...env, [clocks[0] as string]: () => 0 } }
}
