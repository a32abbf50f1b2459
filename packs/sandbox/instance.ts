/**
 * One WebAssembly instance of QuickJS per sandbox, with its own linear memory. The instance's
 * memory is what makes the memory limit real and deterministic: this QuickJS build cannot measure
 * its allocations, so the limit is the memory's growth, refused past a cap (`instantiate`), after
 * the spare room of the initial memory was filled (`fillBase`).
 */
import { newQuickJSWASMModuleFromVariant, newVariant, type QuickJSWASMModule } from 'quickjs-emscripten-core'
import { MAX_MEMORY_BYTES } from '../sandbox-constants.ts'
import type { FreeMemories } from './memories.ts'
import { PAGE, Wasm, baseVariant, compileWasm, stoppedClock, type WasmMemory, type WebAssemblyMemoryLike } from './wasm.ts'

/** Free blocks smaller than this stay free when the base is filled (see fillBase). */
const BALLAST_GRAIN = 4096

/**
 * The few functions under quickjs-emscripten's public API that the hot path calls: the public
 * wrappers allocate a dozen host objects per call (0.9 µs, against 0.05 µs for the raw call).
 * Pinned to quickjs-emscripten-core 0.32; checked when an instance is made.
 */
export interface RawFfi {
  QTS_Call: (ctx: number, fn: number, thisVal: number, argc: number, argv: number) => number
  QTS_ResolveException: (ctx: number, value: number) => number
  QTS_FreeValuePointer: (ctx: number, value: number) => void
  QTS_NewString: (ctx: number, chars: number) => number
  QTS_GetString: (ctx: number, value: number) => number
  QTS_FreeCString: (ctx: number, chars: number) => void
}
export interface RawModule {
  _malloc: (bytes: number) => number
  _free: (ptr: number) => void
  HEAPU8: Uint8Array
  UTF8ToString: (ptr: number) => string
  callbacks?: { shouldInterrupt?: (...args: unknown[]) => unknown }
}

export interface Instance {
  wasm: QuickJSWASMModule
  ffi: RawFfi
  heap: RawModule
  /** Growth of the linear memory beyond this is refused (malloc then fails inside QuickJS). */
  capBytes: number
  /** A growth was refused since the last reset: an out-of-memory is ours, not a thrown value. */
  refused: boolean
  /** Tear the VM out at the next interrupt callback (the pack swallowed an interrupt). */
  kill: boolean
  /** The instance's linear memory, and its own grow (before the cap was put on it). */
  memory: WasmMemory
  rawGrow: (pages: number) => number
}

/** What a refused memory growth throws (emscripten catches it and reports the failure to malloc). */
const GROWTH_REFUSED = new RangeError('sandbox memory limit')

/** Thrown through the WebAssembly frames to tear a VM out mid-run. */
class HardStop extends Error {}
export const HARD_STOP = new HardStop('sandbox VM torn out')

/** A new instance on a memory from `memories`, uncapped until `fillBase`. */
export async function instantiate (memories: FreeMemories): Promise<Instance> {
  const { module: wasmModule } = await compileWasm()
  // emscripten's own default: 16 MiB to start, 2 GiB at most; the sandbox's cap is enforced in grow.
  const { memory, grow } = memories.take()
  const variant = newVariant(baseVariant(), {
    wasmMemory: memory as unknown as WebAssemblyMemoryLike,
    emscriptenModule: {
      instantiateWasm (imports: unknown, onSuccess: (instance: object) => void) {
        const instance = new Wasm.Instance(wasmModule, stoppedClock(imports))
        onSuccess(instance)
        return instance.exports
      },
      // Nothing the engine prints reaches the node's output.
      print: () => {},
      printErr: () => {}
    } as Record<string, unknown>
  })
  const wasm = await newQuickJSWASMModuleFromVariant(variant)
  const ffi = wasm.getFFI() as unknown as RawFfi
  const heap = (wasm as unknown as { module: RawModule }).module
  for (const name of ['QTS_Call', 'QTS_ResolveException', 'QTS_FreeValuePointer', 'QTS_NewString', 'QTS_GetString', 'QTS_FreeCString'] as const) {
    if (typeof ffi[name] !== 'function') throw new Error(`unsupported QuickJS build: ${name} not found`)
  }
  if (typeof heap._malloc !== 'function' || typeof heap._free !== 'function' || typeof heap.UTF8ToString !== 'function' || !(heap.HEAPU8 instanceof Uint8Array)) {
    throw new Error('unsupported QuickJS build: heap helpers not found')
  }
  // Uncapped while the blank is made; fillBase, then start, set the cap.
  const instance: Instance = { wasm, ffi, heap, capBytes: MAX_MEMORY_BYTES, refused: false, kill: false, memory, rawGrow: grow }

  memory.grow = (pages: number) => {
    if (memory.buffer.byteLength + pages * PAGE > instance.capBytes) {
      instance.refused = true
      throw GROWTH_REFUSED
    }
    return grow(pages)
  }
  // quickjs-emscripten's C → host interrupt callback swallows host exceptions; wrap it so the
  // sandbox can throw through the WebAssembly frames when a pack ignores an interrupt.
  const callbacks = heap.callbacks
  const original = callbacks?.shouldInterrupt
  if (callbacks === undefined || typeof original !== 'function') throw new Error('unsupported QuickJS build: interrupt callback not found')
  callbacks.shouldInterrupt = (...args: unknown[]) => {
    const stop = original(...args)
    if (instance.kill) throw HARD_STOP
    return stop
  }
  return instance
}

export interface Ballast {
  ptr: number
  size: number
}

/**
 * Fills what is left of the initial memory (the top of the heap and the blocks freed while the
 * blank was made) with blocks that are never freed, so that what the pack allocates comes from
 * growing the memory, which the cap governs: the pack gets `memoryBytes`, not `memoryBytes`
 * plus whatever the initial 16 MiB had spare (~11 MiB). Blocks are found largest first by
 * halving; the same steps run in every blank instance, so every instance ends in the same state.
 */
export function fillBase (instance: Instance): Ballast[] {
  const { heap } = instance
  const ballast: Ballast[] = []
  instance.capBytes = heap.HEAPU8.length
  for (;;) {
    let fits = 0
    let tooBig = heap.HEAPU8.length
    while (tooBig - fits > BALLAST_GRAIN) {
      const size = fits + Math.floor((tooBig - fits) / 2)
      const ptr = heap._malloc(size)
      if (ptr === 0) {
        tooBig = size
      } else {
        heap._free(ptr)
        fits = size
      }
    }
    if (fits === 0) break
    ballast.push({ ptr: heap._malloc(fits), size: fits })
  }
  instance.refused = false
  return ballast
}
