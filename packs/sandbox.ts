/**
 * The pack sandbox (DESIGN.md §3): QuickJS compiled to WebAssembly, with no
 * ambient authority and deterministic limits.
 *
 * A pack is an ES module exporting `init(input) → state` and
 * `reduce(state, event) → { state, effects?, output? }`. The host calls them
 * with `Sandbox.call`. Values cross the boundary only as JSON text, never as
 * host objects: the host canonicalises the arguments (so the pack sees keys in
 * the same order however the host built them), the VM parses them, and the VM
 * serialises the result, refusing anything that is not plain JSON or nests
 * deeper than canonical JSON allows, and checking its length before a byte is
 * copied out.
 *
 * What the pack sees: the ECMAScript built-ins of QuickJS minus whatever is
 * non-deterministic or observes the garbage collector. `Date` and
 * `Math.random` throw a TypeError naming the tool to use instead; `WeakRef`
 * and `FinalizationRegistry` are gone; `console` is a silent stub. There is no
 * `process`, `require`, `fetch`, timer, file system or host function of any
 * kind: nothing in the VM calls into the host except the module loader, which
 * resolves relative imports among the pack's own files and nothing else.
 *
 * Isolation. Every sandbox gets its own WebAssembly instance (and so its own
 * linear memory) as well as its own QuickJS runtime and context, used by one
 * run at a time. Making a blank instance costs about 4 ms of CPU, so a run
 * that ended cleanly hands its instance back: the memory is restored from the
 * copy taken when that instance was blank (`Snapshot`), on the next turn of
 * the event loop (or at the next createSandbox, if that comes first), and the
 * restored instance is byte for byte the blank it was, so the next
 * run cannot tell it from a new one (tested against a fresh instance's whole
 * memory). A pack that has loaded twice is kept loaded: its sandboxes are
 * reset to the state its load made (`Loaded`), which a new load would make
 * too (tested the same way), and later runs skip loading. An instance that
 * failed, was torn out or grew its memory is dropped instead, and one whose
 * run wrote outside the parts a snapshot keeps (checked by guard bands) too.
 * A separate instance is what makes the
 * memory limit real and deterministic: this QuickJS build cannot measure its
 * allocations (no malloc_usable_size under emscripten; runtime.setMemoryLimit
 * counts 8 bytes a block, and 600 MB fit under a "4 MB" limit), so the limit
 * is the instance's memory, capped when it grows (the spare room of the
 * initial memory is filled first, see `fillBase`). A fresh instance allocates
 * exactly the same way for the same code and inputs, so the same run runs out
 * of memory at the same point on every machine. Disposing a sandbox drops its
 * instance to the garbage collector; nothing is freed through QuickJS, whose
 * teardown can assert after an out-of-memory.
 *
 * Limits, each an RL-31xx error:
 *  - fuel (RL-3101): QuickJS calls an interrupt handler once every 10,000
 *    poll points (loop back-edges and calls). A tick is one such call. The
 *    count depends only on the code and its inputs. Ticks are counted from the
 *    sandbox's creation (loading the module counts) and summed over calls;
 *    QuickJS's countdown carries over from call to call, so a trivial call
 *    costs 0 or 1 tick depending on the calls before it, the same way every
 *    time the same sequence runs.
 *  - memory (RL-3102): what the pack allocates, counted as growth of the
 *    instance's memory beyond the blank sandbox.
 *  - stack (RL-3103): QuickJS's stack limit.
 *  - output (RL-3104): checked inside the VM, before any copy to the host.
 *  - wall clock (RL-3105): a backstop per call, checked in the interrupt
 *    handler; it never decides a successful result. A promise still pending
 *    once the job queue is empty fails at once with the same code.
 *
 * Containment. QuickJS's interrupt is uncatchable by `try`, but the Promise
 * constructor and async functions turn any exception into a rejection, so a
 * pack can keep running after it was told to stop (a loop of
 * `new Promise(() => { for (;;) {} })`). When the interrupt handler is called
 * again after it asked QuickJS to stop, the sandbox throws a host exception
 * through the WebAssembly frames and abandons the instance. A native stack
 * overflow inside a C built-in (`JSON.parse` of a deeply nested text, which
 * QuickJS's own stack check does not see) unwinds the same way. Either way
 * only that sandbox's instance is lost.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import {
  DefaultIntrinsics, newQuickJSWASMModuleFromVariant, newVariant,
  type QuickJSContext, type QuickJSHandle, type QuickJSRuntime, type QuickJSSyncVariant, type QuickJSWASMModule
} from 'quickjs-emscripten-core'
import * as releaseSync from '@jitl/quickjs-wasmfile-release-sync'
import { MAX_DEPTH, canonicalize, type JsonValue } from '../protocol/canonical.ts'
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import {
  BASE_MEMORY_BYTES, DEFAULT_FUEL, DEFAULT_MEMORY_BYTES, DEFAULT_OUTPUT_BYTES, DEFAULT_STACK_BYTES, DEFAULT_WALL_MS,
  LOADED_PACKS, LOADED_READY_PER_PACK, MAX_ERROR_MESSAGE, MAX_MEMORY_BYTES, MAX_STACK_BYTES, POOLED_SANDBOXES, SEEN_PACKS, SPARE_SANDBOXES
} from './sandbox-constants.ts'

export interface SandboxLimits {
  /** Deterministic budget in QuickJS interrupt ticks, summed over all calls of a run (loading included). */
  fuel: number
  /** Heap the pack may allocate: growth of the sandbox's WebAssembly memory beyond a blank sandbox's. */
  memoryBytes: number
  /** QuickJS stack limit (runtime.setMaxStackSize), at most 1 MiB; past ~450 KiB the host's stack may give out first, see sandbox-constants.ts. */
  stackBytes: number
  /** Largest canonical JSON size (UTF-8 bytes) of any value returned to the host. */
  outputBytes: number
  /** Wall-clock backstop per call (and for loading); never decides a successful result. */
  wallMs: number
}

export const DEFAULT_LIMITS: SandboxLimits = Object.freeze({
  fuel: DEFAULT_FUEL,
  memoryBytes: DEFAULT_MEMORY_BYTES,
  stackBytes: DEFAULT_STACK_BYTES,
  outputBytes: DEFAULT_OUTPUT_BYTES,
  wallMs: DEFAULT_WALL_MS
})

export interface CallResult {
  value: JsonValue
  /** Ticks used by this call. */
  fuel: number
}

/** What one step of the run loop hands the host: the state stayed in the sandbox. */
export interface StepResult {
  effects?: JsonValue
  output?: JsonValue
  /** Ticks used by this step. */
  fuel: number
}

export interface Sandbox {
  /**
   * Stateless: the state goes in and comes back as JSON. Synchronous. Throws ReachError RL-31xx;
   * the sandbox is then disposed and every later call throws the same error.
   */
  call (fn: 'init' | 'reduce', args: JsonValue[]): CallResult
  /**
   * The run loop's path. `begin(input)` runs init and keeps the state inside the sandbox; each
   * `step(event)` runs reduce on it, keeps the new state and returns only effects and output,
   * so a step copies the event in and the effects out, never the state. Returns the ticks used.
   * Same errors as `call`; a reduce result without `state` is RL-3108.
   */
  begin (input: JsonValue): number
  /** `eventText` is the event's canonical JSON text (the caller writes it once, on its hot path). */
  step (eventText: string): StepResult
  /** Ticks used so far, loading included. */
  readonly fuelUsed: number
  /** Idempotent. */
  dispose (): void
}

// ---------------------------------------------------------------------------
// Instances: one WebAssembly instance of QuickJS per sandbox.

/** The slice of the WebAssembly global we use (the project's lib settings do not declare it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer
  grow: (pages: number) => number
}
interface WasmApi {
  compile: (bytes: Uint8Array) => Promise<object>
  Instance: new (module: object, imports: unknown) => { exports: Record<string, unknown> }
  Memory: new (descriptor: { initial: number, maximum: number }) => WasmMemory
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly
const PAGE = 65536
/** Free blocks smaller than this stay free when the base is filled (see fillBase). */
const BALLAST_GRAIN = 4096

/**
 * The few functions under quickjs-emscripten's public API that the hot path calls: the public
 * wrappers allocate a dozen host objects per call (0.9 µs, against 0.05 µs for the raw call).
 * Pinned to quickjs-emscripten-core 0.32; checked when an instance is made.
 */
interface RawFfi {
  QTS_Call: (ctx: number, fn: number, thisVal: number, argc: number, argv: number) => number
  QTS_ResolveException: (ctx: number, value: number) => number
  QTS_FreeValuePointer: (ctx: number, value: number) => void
  QTS_NewString: (ctx: number, chars: number) => number
  QTS_GetString: (ctx: number, value: number) => number
  QTS_FreeCString: (ctx: number, chars: number) => void
}
interface RawModule {
  _malloc: (bytes: number) => number
  _free: (ptr: number) => void
  HEAPU8: Uint8Array
  UTF8ToString: (ptr: number) => string
  callbacks?: { shouldInterrupt?: (...args: unknown[]) => unknown }
}

interface Instance {
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

/**
 * Linear memories of released sandboxes that never grew past the base, kept for the next
 * instances. A fresh WebAssembly.Memory is 16 MiB of external memory to V8, and making one per
 * run drove a full mark-compact every few runs; a released one, zeroed, is exactly what a fresh
 * one is (all zero bytes, base size, same maximum), so reusing it changes nothing a pack can see.
 * It is zeroed when taken, not when released: a release can happen inside a callback from the
 * old instance, whose frames still run on that memory until they unwind.
 */
const freeMemories: Array<{ memory: WasmMemory, grow: (pages: number) => number }> = []
const MAX_FREE_MEMORIES = 4

function freshMemory (): { memory: WasmMemory, grow: (pages: number) => number } {
  const reused = freeMemories.pop()
  if (reused !== undefined) {
    new Uint8Array(reused.memory.buffer).fill(0)
    return reused
  }
  const memory = new Wasm.Memory({ initial: BASE_MEMORY_BYTES / PAGE, maximum: MAX_MEMORY_BYTES / PAGE })
  return { memory, grow: memory.grow.bind(memory) }
}

function recycle (instance: Instance): void {
  if (freeMemories.length >= MAX_FREE_MEMORIES || instance.memory.buffer.byteLength !== BASE_MEMORY_BYTES) return
  instance.memory.grow = instance.rawGrow
  freeMemories.push({ memory: instance.memory, grow: instance.rawGrow })
}

/** What a refused memory growth throws (emscripten catches it and reports the failure to malloc). */
const GROWTH_REFUSED = new RangeError('sandbox memory limit')

/** Thrown through the WebAssembly frames to tear a VM out mid-run. */
class HardStop extends Error {}
const HARD_STOP = new HardStop('sandbox VM torn out')

const require = createRequire(import.meta.url)
let compiled: Promise<object> | undefined

function compileWasm (): Promise<object> {
  if (compiled === undefined) {
    const compiling = readFile(require.resolve('@jitl/quickjs-wasmfile-release-sync/wasm')).then(async (bytes) => await Wasm.compile(bytes))
    compiled = compiling
    compiling.catch(() => { if (compiled === compiling) compiled = undefined })
  }
  return compiled
}

/**
 * The variant object. The package's types describe a CommonJS module while Node loads its ESM
 * build, so the number of `.default` hops differs between the two: follow them to the object.
 */
function baseVariant (): QuickJSSyncVariant {
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
function stoppedClock (imports: unknown): unknown {
  const env = (imports as Record<string, Record<string, unknown>>).a
  const clocks = env === undefined ? [] : Object.keys(env).filter((name) => String(env[name]).replace(/\s/g, '') === '()=>Date.now()')
  if (env === undefined || clocks.length !== 1) throw new Error('unsupported QuickJS build: its clock import not found')
  return { ...(imports as object), a: { ...env, [clocks[0] as string]: () => 0 } }
}

async function instantiate (): Promise<Instance> {
  const wasmModule = await compileWasm()
  // emscripten's own default: 16 MiB to start, 2 GiB at most; the sandbox's cap is enforced in grow.
  const { memory, grow } = freshMemory()
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

/**
 * Fills what is left of the initial memory (the top of the heap and the blocks freed while the
 * blank was made) with blocks that are never freed, so that what the pack allocates comes from
 * growing the memory, which the cap governs: the pack gets `memoryBytes`, not `memoryBytes`
 * plus whatever the initial 16 MiB had spare (~11 MiB). Blocks are found largest first by
 * halving; the same steps run in every blank instance, so every instance ends in the same state.
 */
function fillBase (instance: Instance): Ballast[] {
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

interface Ballast {
  ptr: number
  size: number
}

/** Ballast blocks at least this big are left out of the snapshot (a run never writes inside them). */
const SNAPSHOT_SKIP = 65536
/** Bytes kept at each end of a skipped block: the allocator's headers around it. */
const SNAPSHOT_MARGIN = 64
/** Static data and the allocator's own state lie below this (about 90 KiB in this build): restored whole. */
const DATA_BYTES = 256 * 1024
/** C stack restored beyond the run's own stack limit: the C frames QuickJS runs between its checks. */
const STACK_MARGIN = 256 * 1024
/** Zero bytes checked just outside the restored parts: a run that wrote there is not reset but dropped. */
const GUARD_BYTES = 64 * 1024
const PAGE_WORDS = 1024

function zeroIn (words: Int32Array, from: number, to: number): boolean {
  for (let i = from >> 2; i < to >> 2; i++) if (words[i] !== 0) return false
  return true
}

/**
 * Where a run can write in an instance's memory. This build lays its linear memory out as static
 * data, then the C stack (growing down from its top, which the blank's own frames leave just
 * below the heap), then the heap. A run writes to the static data, to the stack down to its stack
 * limit (plus the C frames QuickJS runs between its checks), and to the heap, except inside the
 * large ballast blocks, which belong to no one (allocated once by fillBase, never handed out).
 * Found once per blank: every blank is the same bytes, so every blank has the same layout.
 */
class Layout {
  /** Lowest page of the stack frames the blank left. */
  readonly stackFloor: number
  /** Ballast blocks left out of snapshots, by address. */
  readonly skipped: readonly Ballast[]
  static readonly deepest = MAX_STACK_BYTES + STACK_MARGIN

  constructor (memory: Uint8Array, ballast: readonly Ballast[]) {
    const words = wordsOf(memory)
    this.skipped = ballast.filter((b) => b.size >= SNAPSHOT_SKIP).sort((a, b) => a.ptr - b.ptr)
    const first = this.skipped[0]
    if (first === undefined) throw new Error('unsupported QuickJS build: no ballast to leave out of the snapshot')
    // Down from the heap's first ballast block to the first 64 KiB of zero pages: below the blank's frames.
    let floor = first.ptr - (first.ptr % (PAGE_WORDS * 4))
    for (let zeroPages = 0; zeroPages < GUARD_BYTES / (PAGE_WORDS * 4) && floor > 0;) {
      const page = floor - PAGE_WORDS * 4
      zeroPages = zeroIn(words, page, floor) ? zeroPages + 1 : 0
      floor = page
    }
    floor += GUARD_BYTES
    this.stackFloor = floor
    const low = floor - Layout.deepest
    if (low - GUARD_BYTES < DATA_BYTES + GUARD_BYTES || !zeroIn(words, DATA_BYTES, DATA_BYTES + GUARD_BYTES) || !zeroIn(words, low - GUARD_BYTES, floor)) {
      throw new Error('unsupported QuickJS build: its memory is not laid out as data, stack, heap')
    }
  }

  /** Lowest stack byte a run with this stack limit can have written. */
  low (stackBytes: number): number {
    return this.stackFloor - Math.min(Layout.deepest, stackBytes + STACK_MARGIN)
  }

  /** The guard bands are still zero: the run wrote nowhere a snapshot does not reach. */
  clean (memory: Uint8Array, stackBytes: number): boolean {
    const words = wordsOf(memory)
    const low = this.low(stackBytes)
    return zeroIn(words, DATA_BYTES, DATA_BYTES + GUARD_BYTES) && zeroIn(words, low - GUARD_BYTES, low)
  }
}

function wordsOf (memory: Uint8Array): Int32Array {
  return new Int32Array(memory.buffer, memory.byteOffset, memory.byteLength >> 2)
}

/**
 * An instance's memory wherever a run can write to it (see `Layout`): taken when the instance is
 * blank, or once a pack is loaded into it. The rest of the 16 MiB is the same in every instance at
 * those points (zero below the stack's frames, untouched inside the ballast), which `restore`
 * checks at the edges first. The one mutable WebAssembly global (the stack pointer) is back at
 * its base whenever no call runs, so memory is the whole of the instance's state.
 */
class Snapshot {
  private readonly layout: Layout
  private readonly data: Uint8Array
  /** From `stackFloor - deepest` up: the deepest stack any run may have, then the heap. */
  private readonly upper: Array<{ at: number, bytes: Uint8Array }> = []
  /** The stack limit in force when it was taken (a loaded pack's frames went that deep). */
  readonly stackBytes: number

  constructor (memory: Uint8Array, layout: Layout, stackBytes = 0) {
    this.layout = layout
    this.stackBytes = stackBytes
    this.data = memory.slice(0, DATA_BYTES)
    let from = layout.stackFloor - Layout.deepest
    for (const b of layout.skipped) {
      this.upper.push({ at: from, bytes: memory.slice(from, b.ptr + SNAPSHOT_MARGIN) })
      from = b.ptr + b.size - SNAPSHOT_MARGIN
    }
    this.upper.push({ at: from, bytes: memory.slice(from) })
  }

  /**
   * Puts this state back into an instance whose last run had the stack limit `ranWith`. False,
   * with nothing written, when that run wrote outside the parts kept (the instance must then be
   * dropped).
   */
  restore (memory: Uint8Array, ranWith: number): boolean {
    if (!this.layout.clean(memory, ranWith)) return false
    memory.set(this.data, 0)
    const low = this.layout.low(Math.max(ranWith, this.stackBytes))
    for (const { at, bytes } of this.upper) {
      if (at + bytes.length <= low) continue
      const skip = Math.max(0, low - at)
      memory.set(skip === 0 ? bytes : bytes.subarray(skip), at + skip)
    }
    return true
  }
}

/** newVariant's option type names the DOM's WebAssembly.Memory; ours is structurally the same object. */
type WebAssemblyMemoryLike = Parameters<typeof newVariant>[1]['wasmMemory']

// ---------------------------------------------------------------------------
// The prelude: evaluated in every fresh context before the pack. It edits the
// global object, then returns one function, the harness, through which the host
// does everything else. It keeps its own references to the built-ins it uses,
// so a pack that replaces JSON, Reflect or prototypes cannot subvert it.

/** Harness operations (first argument of the harness function). */
const OP_INIT = 0
const OP_REDUCE = 1
const OP_TAKE = 2
const OP_FAULT = 3
const OP_INSTALL = 4
const OP_BEGIN = 5
const OP_STEP = 6

/*
 * Harness results are strings. JSON text never starts with '!', so a '!' marks a fault:
 *   !M memory   !L string too long   !S stack   !I interrupted   !0 null thrown
 *   !Y SyntaxError   !T anything else thrown   !N not JSON   !B<n> too long   !X bad module
 *   !P pending promise (call OP_TAKE once the job queue is empty)   !W still pending
 *   !R reduce returned something that is not { state, ... }
 *
 * OP_INIT and OP_REDUCE are stateless: the host passes the state and gets it back as JSON.
 * OP_BEGIN and OP_STEP are the run loop's path: the state stays in the VM between steps
 * (the host never needs it), so a step copies only the event in and the effects and output out.
 */
const PRELUDE = `(function () {
  'use strict'
  const g = globalThis
  const apply = Reflect.apply
  const getPrototypeOf = Object.getPrototypeOf
  const defineProperty = Object.defineProperty
  const create = Object.create
  const freeze = Object.freeze
  const isArray = Array.isArray
  const parse = JSON.parse
  const stringify = JSON.stringify
  const StringCtor = String
  const stringSlice = String.prototype.slice
  const ObjectPrototype = Object.prototype
  const InternalErrorPrototype = InternalError.prototype
  const SyntaxErrorPrototype = SyntaxError.prototype
  const TypeErrorCtor = TypeError
  const PromiseCtor = Promise
  const promiseResolve = Promise.resolve
  const promiseThen = Promise.prototype.then
  const MAX_DEPTH = ${MAX_DEPTH}
  const MAX_MESSAGE = ${MAX_ERROR_MESSAGE}
  let outputLimit = 0

  function unavailable (name, instead) {
    return function () { throw new TypeErrorCtor(name + ' is not available in a Reach pack: ' + instead) }
  }
  const noClock = 'time arrives in events (request the clock.now tool)'
  const NoDate = unavailable('Date', noClock)
  NoDate.now = unavailable('Date.now', noClock)
  NoDate.parse = unavailable('Date.parse', noClock)
  NoDate.UTC = unavailable('Date.UTC', noClock)
  defineProperty(g, 'Date', { value: NoDate, writable: true, configurable: true })
  defineProperty(Math, 'random', { value: unavailable('Math.random', 'randomness arrives in events (request the random.bytes tool)'), writable: true, configurable: true })
  delete g.WeakRef
  delete g.FinalizationRegistry
  const discard = function () {}
  defineProperty(g, 'console', {
    value: freeze({ log: discard, info: discard, warn: discard, error: discard, debug: discard, trace: discard }),
    writable: true,
    configurable: true
  })

  function describe (e) {
    let s
    try {
      if (typeof e === 'symbol') s = 'a symbol'
      else if (e !== null && typeof e === 'object' && 'message' in e) s = StringCtor(e.name) + ': ' + StringCtor(e.message)
      else s = StringCtor(e)
    } catch {}
    if (typeof s !== 'string') s = 'a value that cannot be printed'
    return s.length > MAX_MESSAGE ? apply(stringSlice, s, [0, MAX_MESSAGE]) + '…' : s
  }

  function fault (e) {
    if (e === null) return '!0'
    if (typeof e === 'object') {
      let p, m
      try {
        p = getPrototypeOf(e)
        m = e.message
      } catch {}
      if (p === InternalErrorPrototype || p === SyntaxErrorPrototype) {
        if (m === 'out of memory') return '!M'
        if (m === 'stack overflow') return '!S'
        if (m === 'interrupted') return '!I'
        if (m === 'string too long') return '!L'
        if (p === SyntaxErrorPrototype) return '!Y' + describe(e)
      }
    }
    return '!T' + describe(e)
  }

  let notJson
  function reject (why) {
    notJson = new TypeErrorCtor(why)
    return notJson
  }

  // Plain JSON only, at most MAX_DEPTH levels, checked by an explicit walk before JSON.stringify
  // (a replacer would cost a call from C into JS for every key). The walk's stack is two
  // prototype-less arrays (fast arrays: a plain object with numeric keys makes a new shape per
  // key, quadratic in QuickJS), so the pack's prototypes cannot reach it; a cycle ends at MAX_DEPTH.
  // A getter may answer the walk and stringify differently: the pack only fools its own check,
  // since the host re-parses the text as JSON whatever it holds.
  const keys = Object.keys
  const items = Object.setPrototypeOf([], null)
  const depths = Object.setPrototypeOf([], null)
  function primitive (value, key, inArray) {
    const type = typeof value
    if (type === 'string' || type === 'boolean') return
    if (type === 'number') {
      if (value - value === 0) return
      throw reject(value + ' is not a finite number (at key "' + key + '")')
    }
    // An undefined property is left out, as JSON.stringify does ({ output: undefined } has no
    // output); undefined as the value itself or in an array has no JSON form.
    if (type === 'undefined' && !inArray) return
    throw reject(type + ' is not a JSON value (at key "' + key + '")')
  }
  function validate (root) {
    if (typeof root !== 'object' || root === null) {
      if (root !== null) primitive(root, '', true)
      return
    }
    let sp = 0
    items[sp] = root
    depths[sp++] = 1
    try {
      while (sp > 0) {
        const o = items[--sp]
        items[sp] = undefined
        const depth = depths[sp]
        if (depth > MAX_DEPTH) throw reject('nested deeper than ' + MAX_DEPTH + ' levels')
        if (isArray(o)) {
          const n = o.length
          for (let i = 0; i < n; i++) {
            const x = o[i]
            const t = typeof x
            if (t === 'object') { if (x !== null) { items[sp] = x; depths[sp++] = depth + 1 } } else if (t !== 'string' && t !== 'boolean') primitive(x, i, true)
          }
        } else {
          const p = getPrototypeOf(o)
          if (p !== ObjectPrototype && p !== null) throw reject('only plain objects and arrays are JSON')
          const ks = keys(o)
          for (let i = 0; i < ks.length; i++) {
            const x = o[ks[i]]
            const t = typeof x
            if (t === 'object') { if (x !== null) { items[sp] = x; depths[sp++] = depth + 1 } } else if (t !== 'string' && t !== 'boolean') primitive(x, ks[i], false)
          }
        }
      }
    } finally {
      // Let go of what we walked: the pack's memory is its own.
      for (let i = 0; i < sp; i++) items[i] = undefined
    }
  }

  function serialise (v) {
    validate(v)
    return stringify(v)
  }

  function finish (v) {
    let text
    try {
      text = serialise(v)
    } catch (e) {
      return e === notJson ? '!N' + describe(e.message) : fault(e)
    }
    if (typeof text !== 'string') return '!Nthe value is undefined'
    if (text.length > outputLimit) return '!B' + text.length
    return text
  }

  let init
  let reduce
  let state
  let settled = false
  let outcome = ''
  let after = finish
  function onFulfilled (v) { outcome = after(v); settled = true }
  function onRejected (e) { outcome = fault(e); settled = true }

  // What the stepping path keeps of a result: init's value is the state; a step's state is kept
  // and only its effects and output go to the host.
  function began (v) {
    state = v
    return ''
  }
  function stepped (r) {
    try {
      if (r === null || typeof r !== 'object' || isArray(r) || !('state' in r)) return '!R'
      state = r.state
      const effects = r.effects
      const output = r.output
      // Most steps only update the state.
      if (effects === undefined && output === undefined) return '{}'
      return finish({ effects, output })
    } catch (e) {
      return fault(e)
    }
  }

  function invoke (op, argsText) {
    let r
    try {
      const args = parse(argsText)
      if (op === ${OP_STEP}) { after = stepped; r = reduce(state, args) }
      else if (op === ${OP_BEGIN}) { after = began; r = init(args) }
      else if (op === ${OP_INIT}) { after = finish; r = init(args[0]) }
      else { after = finish; r = reduce(args[0], args[1]) }
      if (r === null || (typeof r !== 'object' && typeof r !== 'function') || typeof r.then !== 'function') return after(r)
      settled = false
      apply(promiseThen, apply(promiseResolve, PromiseCtor, [r]), [onFulfilled, onRejected])
    } catch (e) {
      return fault(e)
    }
    return '!P'
  }

  function install (ns, limit) {
    outputLimit = limit
    try {
      init = ns.init
      reduce = ns.reduce
    } catch (e) {
      return '!X' + describe(e)
    }
    if (typeof init !== 'function') return '!Xthe entry module does not export a function named init'
    if (typeof reduce !== 'function') return '!Xthe entry module does not export a function named reduce'
    return ''
  }

  return function harness (op, arg, arg2) {
    switch (op) {
      case ${OP_INIT}:
      case ${OP_REDUCE}:
      case ${OP_BEGIN}:
      case ${OP_STEP}: return invoke(op, arg)
      case ${OP_TAKE}: return settled ? outcome : '!W'
      case ${OP_FAULT}: return fault(arg)
      case ${OP_INSTALL}: return install(arg, arg2)
    }
  }
})()`

// ---------------------------------------------------------------------------
// Module resolution: relative specifiers among `files`, nothing else.

/** What the normaliser returns for a refused specifier; the loader then refuses to load it. */
const REFUSED = '<refused>'

function resolveSpecifier (base: string, specifier: string): string | undefined {
  if (!specifier.startsWith('./') && !specifier.startsWith('../')) return undefined
  const parts = base.split('/')
  parts.pop()
  for (const segment of specifier.split('/')) {
    if (segment === '.') continue
    if (segment === '') return undefined
    if (segment === '..') {
      if (parts.length === 0) return undefined
      parts.pop()
    } else {
      parts.push(segment)
    }
  }
  return parts.join('/')
}

function truncate (s: string): string {
  return s.length > MAX_ERROR_MESSAGE ? s.slice(0, MAX_ERROR_MESSAGE) + '…' : s
}

// ---------------------------------------------------------------------------

type Abort = 'fuel' | 'wall'

/** A lone surrogate is escaped by JSON.stringify as \udXXX; text with anything like it goes through canonicalize. */
const SURROGATE_ESCAPE = /\\u[dD][89abcdefABCDEF]/

const encoder = new TextEncoder()
/** A step that only updated the state (most steps): nothing to parse. */
const STATE_ONLY: JsonValue = Object.freeze({})

/**
 * A sandbox is made blank (instance, runtime, context, prelude; see `blank`) and bound to a
 * pack by `start`. Everything before `start` is the same for every sandbox, so a blank made
 * ahead of time behaves exactly like one made on demand.
 */
class QuickJSSandbox implements Sandbox {
  private readonly instance: Instance
  private readonly rt: QuickJSRuntime
  private readonly ctx: QuickJSContext
  private readonly harness: QuickJSHandle
  private readonly ops: QuickJSHandle[] = []
  private readonly layout: Layout
  /** This instance's memory when it was blank: what `reset` puts back. */
  private readonly blank: Snapshot
  /** The pack loaded into it (`loadKey`), if one is. */
  loadedKey: string | undefined
  /** Ticks the blank itself used (the prelude): a run's count starts from them, reset or not. */
  private readonly blankTicks: number
  /** Raw pointers of the hot path: the context, `undefined`, a two-slot argv. */
  private readonly ctxPtr: number
  private readonly undefinedPtr: number
  private readonly argv: number
  private argvView: Int32Array | undefined
  private limits: SandboxLimits = DEFAULT_LIMITS
  private files: Record<string, string> = {}
  private ticks = 0
  private deadline = Infinity
  private abort: Abort | undefined
  /** Set when the module loader refused an import during the current load or call. */
  private refusedImport: string | undefined
  private loading = true
  private failure: ReachError | undefined
  private released = false
  /** The VM was torn out mid-run: its C state must not be touched again. */
  private abandoned = false

  constructor (instance: Instance) {
    this.instance = instance
    this.rt = instance.wasm.newRuntime()
    this.rt.setInterruptHandler(() => this.onInterrupt())
    this.rt.setModuleLoader((name) => this.loadModule(name), (base, specifier) => this.normalize(base, specifier))
    this.ctx = this.rt.newContext({ intrinsics: { ...DefaultIntrinsics, Date: false } })
    this.ctxPtr = (this.ctx as unknown as { ctx: { value: number } }).ctx.value
    this.undefinedPtr = this.ctx.undefined.value as unknown as number
    this.argv = instance.heap._malloc(8)
    const evaluated = this.ctx.evalCode(PRELUDE, '<reach-prelude>', { type: 'global', strict: true })
    if (evaluated.error !== undefined) throw new Error(`sandbox prelude failed: ${JSON.stringify(this.ctx.dump(evaluated.error))}`)
    this.harness = evaluated.value
    // Every handle the host keeps is made now, so that it is part of the blank.
    for (let op = 0; op <= OP_STEP; op++) this.op(op)
    this.layout = new Layout(instance.heap.HEAPU8, fillBase(instance))
    this.blank = new Snapshot(instance.heap.HEAPU8, this.layout)
    this.blankTicks = this.ticks
  }

  /** Ended cleanly, its memory never grew: `reset` makes it the blank it was. */
  get reusable (): boolean {
    return this.failure === undefined && !this.abandoned && this.instance.memory.buffer.byteLength === BASE_MEMORY_BYTES
  }

  /**
   * Back to the blank this instance was, or to that blank with `loaded`'s pack loaded: its memory
   * from the snapshot, the host's side as the constructor (or `start`) left it. Only outside any
   * call into it, for a released sandbox that ended cleanly or a ready one. False when the last
   * run wrote where a snapshot does not reach: the instance is then dropped.
   */
  reset (loaded?: Loaded): boolean {
    if (this.failure !== undefined || this.abandoned || this.instance.memory.buffer.byteLength !== BASE_MEMORY_BYTES) throw new Error('only a sandbox that ended cleanly can be reset')
    if (!(loaded?.snapshot ?? this.blank).restore(this.instance.heap.HEAPU8, this.limits.stackBytes)) return false
    this.limits = loaded === undefined ? DEFAULT_LIMITS : { ...DEFAULT_LIMITS, stackBytes: loaded.snapshot.stackBytes }
    this.files = loaded?.files ?? {}
    this.ticks = loaded?.ticks ?? this.blankTicks
    this.loading = loaded === undefined
    this.loadedKey = loaded?.key
    this.deadline = Infinity
    this.abort = undefined
    this.refusedImport = undefined
    this.released = false
    this.instance.capBytes = BASE_MEMORY_BYTES
    this.instance.refused = false
    this.instance.kill = false
    return true
  }

  /** The pack as `start` left it, for later runs of the same pack; undefined if loading grew the memory or wrote out of bounds. */
  capture (key: string): Loaded | undefined {
    const memory = this.instance.heap.HEAPU8
    if (this.failure !== undefined || this.loading || this.instance.memory.buffer.byteLength !== BASE_MEMORY_BYTES || !this.layout.clean(memory, this.limits.stackBytes)) return undefined
    return { key, snapshot: new Snapshot(memory, this.layout, this.limits.stackBytes), ticks: this.ticks, files: this.files }
  }

  /** A loaded sandbox (reset to a `Loaded`) takes a run's limits: what `start` would have set after loading. */
  bind (limits: SandboxLimits): void {
    this.limits = limits
    this.instance.capBytes = this.instance.heap.HEAPU8.length + limits.memoryBytes
  }

  /** Give the instance's memory to the next new instance (it is zeroed when taken); this sandbox is done. */
  recycle (): void {
    recycle(this.instance)
  }

  /** The instance's whole linear memory (tests compare a reset instance with a new one). */
  get memory (): Uint8Array {
    return this.instance.heap.HEAPU8
  }

  get fuelUsed (): number {
    return this.ticks
  }

  get failed (): boolean {
    return this.failure !== undefined
  }

  // -- interrupt, loader ------------------------------------------------------

  private onInterrupt (): boolean {
    if (this.abort !== undefined) {
      // QuickJS was told to stop and ran another 10,000 poll points: the pack swallowed the
      // interrupt (Promise constructor, async function). Tear the VM out.
      this.instance.kill = true
      return true
    }
    this.ticks++
    if (this.ticks > this.limits.fuel) this.abort = 'fuel'
    else if (performance.now() > this.deadline) this.abort = 'wall'
    return this.abort !== undefined
  }

  private normalize (base: string, specifier: string): string {
    const resolved = resolveSpecifier(base, specifier)
    if (resolved !== undefined && Object.hasOwn(this.files, resolved)) return resolved
    this.refusedImport = `cannot import "${truncate(specifier)}" from "${base}": only relative paths to files of the pack resolve`
    return REFUSED + specifier
  }

  private loadModule (name: string): string | { error: Error } {
    if (name.startsWith(REFUSED) || !Object.hasOwn(this.files, name)) {
      this.refusedImport ??= `cannot import "${truncate(name)}": not a file of the pack`
      return { error: new Error(this.refusedImport) }
    }
    return this.files[name] as string
  }

  // -- failure ----------------------------------------------------------------

  private fail (code: ErrorCode, message: string, details: Record<string, unknown> = {}): ReachError {
    this.failure ??= new ReachError(code, {
      message,
      details: { ...details, phase: this.loading ? 'load' : 'call', fuel_used: this.ticks, fuel_limit: this.limits.fuel }
    })
    this.release()
    return this.failure
  }

  private abortError (): ReachError {
    return this.abort === 'wall'
      ? this.fail('RL-3105', `pack exceeded the wall-clock limit of ${this.limits.wallMs} ms`)
      : this.fail('RL-3101', `pack exhausted its fuel (${this.limits.fuel} ticks)`)
  }

  private memoryError (): ReachError {
    return this.fail('RL-3102', `pack exceeded the memory limit of ${this.limits.memoryBytes} bytes`)
  }

  /** The sandbox's failure for a harness fault ('!' and a kind). */
  private faultError (text: string): ReachError {
    const kind = text.charAt(1)
    const rest = text.slice(2)
    switch (kind) {
      case 'I': return this.abortError()
      case 'M': return this.memoryError()
      case 'L': return this.fail('RL-3102', 'pack built a string longer than QuickJS allows')
      case 'S': return this.fail('RL-3103', `pack exceeded the stack limit of ${this.limits.stackBytes} bytes`)
      case 'B': return this.fail('RL-3104', `pack returned ${rest} characters of JSON, more than the ${this.limits.outputBytes}-byte limit`)
      case 'W': return this.fail('RL-3105', 'pack returned a promise that never settles (the job queue is empty)')
      case 'N': return this.fail('RL-3108', `pack returned a value that is not JSON: ${rest}`)
      case 'R': return this.fail('RL-3108', 'reduce must return an object { state, effects?, output? }')
      case 'X': return this.fail('RL-3107', `pack code invalid: ${rest}`)
      // QuickJS throws null when it cannot even allocate its out-of-memory error.
      case '0': if (this.instance.refused) return this.memoryError()
    }
    if (this.refusedImport !== undefined) return this.fail('RL-3107', `pack code invalid: ${this.refusedImport}`)
    if (kind === 'Y' && this.loading) return this.fail('RL-3107', `pack code invalid: ${rest}`)
    return this.fail('RL-3106', `pack code threw ${kind === '0' ? 'null' : rest}`)
  }

  /** An exception came back from the VM: the harness names it, inside the VM, under the same limits. */
  private errorOf (error: QuickJSHandle): ReachError {
    if (this.abort !== undefined) return this.abortError()
    const result = this.vm(() => this.ctx.callFunction(this.harness, this.ctx.undefined, this.op(OP_FAULT), error))
    error.dispose()
    if (result.error !== undefined) {
      // The harness could not even describe it: only running out of memory does that.
      return this.instance.refused ? this.memoryError() : this.fail('RL-3106', 'pack code threw a value the sandbox cannot describe')
    }
    const text = this.ctx.getString(result.value)
    result.value.dispose()
    return this.faultError(text)
  }

  /** The VM was torn out (HARD_STOP), or the host's stack overflowed inside it. */
  private crash (err: unknown): never {
    this.abandoned = true
    if (err === HARD_STOP) throw this.abortError()
    if (err instanceof RangeError) throw this.fail('RL-3103', 'pack exhausted the host stack inside a built-in (a value or recursion too deep)')
    throw this.fail('RL-3106', `sandbox engine failed: ${truncate(String(err))}`, { engine_fault: true })
  }

  // -- entering the VM --------------------------------------------------------

  private op (n: number): QuickJSHandle {
    let h = this.ops[n]
    if (h === undefined) {
      h = this.ctx.newNumber(n)
      this.ops[n] = h
    }
    return h
  }

  /** Runs `body`, which enters the VM; a host exception out of it means the VM is gone. */
  private vm<T extends { dispose: () => void }> (body: () => T): T {
    let out: T
    try {
      out = body()
    } catch (err) {
      this.crash(err)
    }
    if (this.abort !== undefined) {
      // Interrupted, or the pack swallowed the interrupt and returned: a failure either way.
      out.dispose()
      throw this.abortError()
    }
    return out
  }

  /** A harness call through the public API (loading, jobs, promises): its result is a string. */
  private harnessCall (op: number, arg?: QuickJSHandle, arg2?: QuickJSHandle): string {
    const args = [this.op(op)]
    if (arg !== undefined) args.push(arg)
    if (arg2 !== undefined) args.push(arg2)
    const result = this.vm(() => this.ctx.callFunction(this.harness, this.ctx.undefined, args))
    if (result.error !== undefined) throw this.errorOf(result.error)
    const text = this.ctx.getString(result.value)
    result.value.dispose()
    return text
  }

  private drain (): void {
    while (this.rt.hasPendingJob()) {
      const result = this.vm(() => this.rt.executePendingJobs())
      if (result.error !== undefined) throw this.errorOf(result.error)
    }
  }

  private enter (): void {
    this.abort = undefined
    this.refusedImport = undefined
    this.instance.refused = false
    this.deadline = performance.now() + this.limits.wallMs
  }

  // -- start ------------------------------------------------------------------

  start (files: Record<string, string>, entry: string, limits: SandboxLimits): void {
    this.files = files
    this.limits = limits
    this.instance.capBytes = this.instance.heap.HEAPU8.length + limits.memoryBytes
    this.rt.setMaxStackSize(limits.stackBytes)
    this.enter()
    const source = Object.hasOwn(files, entry) ? files[entry] : undefined
    if (source === undefined) throw this.fail('RL-3107', `pack code invalid: entry "${truncate(entry)}" is not a file of the pack`)

    const evaluated = this.vm(() => this.ctx.evalCode(source, entry, { type: 'module' }))
    if (evaluated.error !== undefined) throw this.errorOf(evaluated.error)
    let ns = evaluated.value
    const state = this.ctx.getPromiseState(ns)
    if (!(state.type === 'fulfilled' && state.notAPromise === true)) {
      // Top-level await: the evaluation is a promise for the namespace.
      if (state.type === 'fulfilled') state.value.dispose()
      if (state.type === 'rejected') state.error.dispose()
      this.drain()
      const settled = this.ctx.getPromiseState(ns)
      ns.dispose()
      if (settled.type === 'pending') throw this.fail('RL-3105', 'pack module never finished loading (top-level await on a promise that never settles)')
      if (settled.type === 'rejected') throw this.errorOf(settled.error)
      ns = settled.value
    }
    const limit = this.ctx.newNumber(limits.outputBytes)
    const installed = this.harnessCall(OP_INSTALL, ns, limit)
    limit.dispose()
    ns.dispose()
    if (installed !== '') throw this.faultError(installed)
    this.drain()
    this.loading = false
  }

  // -- calls ------------------------------------------------------------------

  call (fn: 'init' | 'reduce', args: JsonValue[]): CallResult {
    const op = fn === 'init' ? OP_INIT : fn === 'reduce' ? OP_REDUCE : -1
    if (op < 0) throw new TypeError(`unknown pack function ${String(fn)}`)
    return this.exec(op, args)
  }

  begin (input: JsonValue): number {
    return this.exec(OP_BEGIN, input).fuel
  }

  step (eventText: string): StepResult {
    const { value, fuel } = this.exec(OP_STEP, eventText, true)
    if (value === STATE_ONLY) return { fuel }
    const v = value as { effects?: JsonValue, output?: JsonValue }
    return { effects: v.effects, output: v.output, fuel }
  }

  private exec (op: number, args: JsonValue, isText = false): CallResult {
    if (this.failure !== undefined) throw this.failure
    if (this.released) throw new Error('sandbox is disposed')
    // Canonical text: the pack sees keys in the same order however the host built the value.
    const argsText = isText ? args as string : canonicalize(args)
    const before = this.ticks
    this.enter()
    let text = this.invoke(op, argsText)
    const pending = text === '!P'
    if (!pending && text.charCodeAt(0) === 33 /* ! */) throw this.faultError(text)
    // A call is over when its job queue is empty: stray promise jobs are charged to it.
    if (this.rt.hasPendingJob()) this.drain()
    if (pending) {
      text = this.harnessCall(OP_TAKE)
      if (text.charCodeAt(0) === 33) throw this.faultError(text)
    }
    const value = op === OP_BEGIN ? null : op === OP_STEP && text === '{}' ? STATE_ONLY : this.parse(text)
    return { value, fuel: this.ticks - before }
  }

  /** harness(op, text) through the raw FFI: the hot path of every call. */
  private invoke (op: number, text: string): string {
    const { ffi, heap } = this.instance
    const ctx = this.ctxPtr
    // Small texts (every step's event): room for the worst case, 3 bytes a UTF-16 unit, instead of
    // counting the bytes first. Large ones are counted, so the pack's memory is not charged 3×.
    const room = text.length < 16384 ? text.length * 3 : Buffer.byteLength(text, 'utf8')
    const chars = heap._malloc(room + 1)
    if (chars === 0) throw this.memoryError()
    let mem = heap.HEAPU8
    const { written } = encoder.encodeInto(text, mem.subarray(chars, chars + room))
    mem[chars + written] = 0
    const arg = ffi.QTS_NewString(ctx, chars)
    heap._free(chars)
    if (this.instance.refused) throw this.memoryError()
    mem = heap.HEAPU8
    if (this.argvView?.buffer !== mem.buffer) this.argvView = new Int32Array(mem.buffer)
    this.argvView[this.argv >> 2] = this.op(op).value as unknown as number
    this.argvView[(this.argv >> 2) + 1] = arg

    let result = 0
    try {
      result = ffi.QTS_Call(ctx, this.harness.value as unknown as number, this.undefinedPtr, 2, this.argv)
    } catch (err) {
      this.crash(err)
    }
    ffi.QTS_FreeValuePointer(ctx, arg)
    const error = ffi.QTS_ResolveException(ctx, result)
    if (error !== 0) {
      ffi.QTS_FreeValuePointer(ctx, result)
      throw this.errorOf((this.ctx as unknown as { memory: { heapValueHandle: (ptr: number) => QuickJSHandle } }).memory.heapValueHandle(error))
    }
    if (this.abort !== undefined) throw this.abortError()
    const out = ffi.QTS_GetString(ctx, result)
    if (out === 0) throw this.memoryError()
    // '{}' (a step that only updated the state) is most results: skip the decoder.
    const h = heap.HEAPU8
    const s = h[out] === 0x7b && h[out + 1] === 0x7d && h[out + 2] === 0 ? '{}' : heap.UTF8ToString(out)
    ffi.QTS_FreeCString(ctx, out)
    ffi.QTS_FreeValuePointer(ctx, result)
    return s
  }

  private parse (text: string): JsonValue {
    // The VM counted UTF-16 units, never more than the UTF-8 bytes; count bytes when it matters.
    if (text.length * 3 > this.limits.outputBytes) {
      const bytes = Buffer.byteLength(text, 'utf8')
      if (bytes > this.limits.outputBytes) throw this.fail('RL-3104', `pack returned ${bytes} bytes of JSON, more than the ${this.limits.outputBytes}-byte limit`)
    }
    let value: JsonValue
    try {
      value = JSON.parse(text) as JsonValue
    } catch (err) {
      throw this.fail('RL-3108', `pack returned text that is not JSON: ${truncate((err as Error).message)}`)
    }
    // The VM already refused non-finite numbers, non-plain objects and deep nesting; a lone
    // surrogate is the one thing left that canonical JSON refuses.
    if (SURROGATE_ESCAPE.test(text)) {
      try {
        canonicalize(value)
      } catch (err) {
        if (isReachError(err, 'RL-1006')) throw this.fail('RL-3108', `pack returned a value that is not JSON: ${err.message}`)
        throw err
      }
    }
    return value
  }

  // -- teardown ---------------------------------------------------------------

  /**
   * Nothing is freed through QuickJS (its teardown asserts on objects it lost track of after an
   * out-of-memory, and an abandoned VM is mid-operation): the instance, with everything in it,
   * goes to the garbage collector once the sandbox is dropped.
   */
  private release (): void {
    if (this.released) return
    this.released = true
    this.files = {}
    // A failure can be released from inside a callback of the VM, whose frames still run on
    // this memory until they unwind; a clean end is reset once they have.
    if (this.reusable) {
      handBack(this)
    } else {
      recycle(this.instance)
      refillSoon()
    }
  }

  dispose (): void {
    this.release()
  }
}

/**
 * What createSandbox hands out: lets go of the VM (and its whole WebAssembly instance) as soon
 * as the sandbox fails or is disposed, even if the caller keeps the object.
 */
class PackSandbox implements Sandbox {
  private vm: QuickJSSandbox | undefined
  private fuel = 0
  private failure: ReachError | undefined

  constructor (vm: QuickJSSandbox) {
    this.vm = vm
  }

  get fuelUsed (): number {
    return this.vm?.fuelUsed ?? this.fuel
  }

  call (fn: 'init' | 'reduce', args: JsonValue[]): CallResult {
    return this.guard((vm) => vm.call(fn, args))
  }

  begin (input: JsonValue): number {
    return this.guard((vm) => vm.begin(input))
  }

  step (eventText: string): StepResult {
    return this.guard((vm) => vm.step(eventText))
  }

  private guard<T> (body: (vm: QuickJSSandbox) => T): T {
    if (this.failure !== undefined) throw this.failure
    const vm = this.vm
    if (vm === undefined) throw new Error('sandbox is disposed')
    try {
      return body(vm)
    } catch (err) {
      if (vm.failed && err instanceof ReachError) {
        this.failure = err
        this.dispose()
      }
      throw err
    }
  }

  dispose (): void {
    if (this.vm === undefined) return
    this.fuel = this.vm.fuelUsed
    this.vm.dispose()
    this.vm = undefined
  }
}

// ---------------------------------------------------------------------------
// Blank sandboxes ready to bind: new ones made ahead of time, and released ones reset.

const ready: QuickJSSandbox[] = []
let refilling: Promise<void> | undefined
/** Reset sandboxes handed back (tests and benches count reuse). */
let reusedCount = 0

async function blank (): Promise<QuickJSSandbox> {
  return new QuickJSSandbox(await instantiate())
}

async function fill (): Promise<void> {
  while (ready.length < SPARE_SANDBOXES) ready.push(await blank())
}

function refill (): Promise<void> {
  refilling ??= fill().finally(() => { refilling = undefined })
  return refilling
}

/** A sandbox was dropped rather than handed back: make a new blank when the loop is free. */
function refillSoon (): void {
  if (ready.length >= SPARE_SANDBOXES) return
  setImmediate(() => { refill().catch(() => {}) }).unref()
}

/**
 * A pack loaded into a blank (module evaluated, harness installed), kept once the same pack has
 * loaded twice: a released sandbox that ran it is reset to this instead of to the blank, so the
 * next run of that pack skips loading. Loading is deterministic, so the state is the one a new
 * load would make; it is used only when the run's fuel covers what loading used (a run with less
 * loads, and fails, the ordinary way).
 */
interface Loaded {
  key: string
  snapshot: Snapshot
  /** Ticks at the end of loading, the blank's included. */
  ticks: number
  files: Record<string, string>
}

const loadedPacks = new Map<string, Loaded>()
const readyLoaded = new Map<string, QuickJSSandbox[]>()
/** Packs loaded once (a second load keeps the loaded state); least recently used first. */
const seen = new Map<string, true>()
let preloadedCount = 0

/** The identity of a load: the files, the entry, and the limits that shape it (stack, output). */
function loadKey (files: Record<string, string>, entry: string, limits: SandboxLimits): string {
  // Only a frozen object's digest is kept: any other could change before the next load.
  const frozen = Object.isFrozen(files)
  let digests = frozen ? filesDigests.get(files) : undefined
  if (digests === undefined) {
    digests = new Map()
    if (frozen) filesDigests.set(files, digests)
  }
  let digest = digests.get(entry)
  if (digest === undefined) {
    digest = createHash('sha256').update(canonicalize({ entry, files })).digest('hex')
    digests.set(entry, digest)
  }
  return `${digest}:${limits.stackBytes}:${limits.outputBytes}`
}

/**
 * The digest of a frozen files object's code, per entry, hashed once per object: the run loop
 * hands the same frozen object (`runPackOf`) for every run of a pack.
 */
const filesDigests = new WeakMap<Record<string, string>, Map<string, string>>()

function readyCount (): number {
  let n = ready.length
  for (const list of readyLoaded.values()) n += list.length
  return n
}

function remember (key: string, vm: QuickJSSandbox): void {
  const known = loadedPacks.get(key)
  if (known !== undefined) {
    // Most recently used last.
    loadedPacks.delete(key)
    loadedPacks.set(key, known)
    return
  }
  if (!seen.has(key)) {
    seen.set(key, true)
    if (seen.size > SEEN_PACKS) seen.delete(seen.keys().next().value as string)
    return
  }
  const loaded = vm.capture(key)
  if (loaded === undefined) return
  loadedPacks.set(key, loaded)
  if (loadedPacks.size > LOADED_PACKS) {
    const oldest = loadedPacks.keys().next().value as string
    loadedPacks.delete(oldest)
    // Its ready instances go back to blank.
    for (const old of readyLoaded.get(oldest) ?? []) if (old.reset()) ready.push(old)
    readyLoaded.delete(oldest)
  }
}

function giveBack (vm: QuickJSSandbox): void {
  // Pool full: the instance goes, its memory stays for the next new instance.
  if (readyCount() >= POOLED_SANDBOXES) {
    vm.recycle()
    return
  }
  const loaded = vm.loadedKey === undefined ? undefined : loadedPacks.get(vm.loadedKey)
  const list = loaded === undefined ? [] : readyLoaded.get(loaded.key) ?? []
  const target = loaded !== undefined && list.length < LOADED_READY_PER_PACK ? loaded : undefined
  if (!vm.reset(target)) {
    vm.recycle()
    refillSoon()
    return
  }
  reusedCount++
  if (target === undefined) {
    ready.push(vm)
  } else {
    list.push(vm)
    readyLoaded.set(target.key, list)
  }
}

/** Released cleanly and not reset yet: that waits for the next turn of the event loop, or for the next createSandbox. */
const released: QuickJSSandbox[] = []

function handBack (vm: QuickJSSandbox): void {
  released.push(vm)
  if (released.length === 1) setImmediate(settleReleased)
}

function settleReleased (): void {
  for (const vm of released.splice(0)) giveBack(vm)
}

/** A blank: a ready one, else a ready loaded one reset to blank, else a new one. */
async function takeBlank (): Promise<QuickJSSandbox> {
  const vm = ready.pop()
  if (vm !== undefined) return vm
  for (const list of readyLoaded.values()) {
    const other = list.pop()
    if (other !== undefined && other.reset()) return other
  }
  return await blank()
}

/** How many sandboxes started with their pack already loaded since the process started. */
export function sandboxesPreloaded (): number {
  return preloadedCount
}

/** How many released sandboxes were reset and handed back since the process started. */
export function sandboxesReused (): number {
  return reusedCount
}

/** Compile the WebAssembly module and make the spare sandboxes; reused by every sandbox of the process. */
export async function loadEngine (): Promise<void> {
  await compileWasm()
  await refill()
}

function checkLimits (limits: SandboxLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value <= 0) {
      throw new ReachError('RL-1003', { message: `sandbox limit ${name} must be a positive integer, got ${String(value)}`, details: { limit: name } })
    }
  }
  const ceilings: Array<[keyof SandboxLimits, number]> = [['memoryBytes', MAX_MEMORY_BYTES - BASE_MEMORY_BYTES], ['stackBytes', MAX_STACK_BYTES]]
  for (const [name, max] of ceilings) {
    if (limits[name] > max) throw new ReachError('RL-1003', { message: `sandbox limit ${name} must be at most ${max}, got ${limits[name]}`, details: { limit: name } })
  }
}

/** files: path → source text; entry: the module to load (an ES module that exports init and reduce). */
export async function createSandbox (files: Record<string, string>, entry: string, limits: Partial<SandboxLimits> = {}): Promise<Sandbox> {
  const full: SandboxLimits = { ...DEFAULT_LIMITS }
  for (const key of Object.keys(DEFAULT_LIMITS) as Array<keyof SandboxLimits>) {
    const v = limits[key]
    if (v !== undefined) full[key] = v
  }
  checkLimits(full)
  const path = entry.startsWith('./') ? entry.slice(2) : entry
  const key = loadKey(files, path, full)
  const loaded = loadedPacks.get(key)
  // A sandbox released since the last turn of the event loop (runs back to back) is reset now.
  settleReleased()
  if (loaded !== undefined && full.fuel >= loaded.ticks) {
    const vm = readyLoaded.get(key)?.pop()
    if (vm !== undefined) {
      vm.bind(full)
      remember(key, vm)
      preloadedCount++
      return new PackSandbox(vm)
    }
  }
  const vm = await takeBlank()
  vm.start(files, path, full)
  vm.loadedKey = key
  remember(key, vm)
  return new PackSandbox(vm)
}

/**
 * For tests: a copy of the whole memory of every ready blank, and of a new blank made just for
 * the comparison (not kept). A reset blank must equal the new one byte for byte.
 */
export async function inspectBlanks (): Promise<{ ready: Uint8Array[], fresh: Uint8Array }> {
  const fresh = (await blank()).memory.slice()
  return { ready: ready.map((vm) => vm.memory.slice()), fresh }
}

/**
 * For tests: a copy of the whole memory of every ready sandbox with this pack already loaded, and
 * of a new instance that loads it now (not kept). They must be equal byte for byte.
 */
export async function inspectLoaded (files: Record<string, string>, entry: string, limits: Partial<SandboxLimits> = {}): Promise<{ ready: Uint8Array[], fresh: Uint8Array }> {
  const full = { ...DEFAULT_LIMITS, ...limits }
  const vm = await blank()
  vm.start(files, entry, full)
  return { ready: (readyLoaded.get(loadKey(files, entry, full)) ?? []).map((r) => r.memory.slice()), fresh: vm.memory.slice() }
}
