/**
 * The VM of one sandbox: a QuickJS runtime and context in their own WebAssembly instance, the
 * prelude evaluated, bound to one pack at a time by `start` (or by a reset to a `Loaded` pack).
 *
 * Containment. QuickJS's interrupt is uncatchable by `try`, but the Promise constructor and async
 * functions turn any exception into a rejection, so a pack can keep running after it was told to
 * stop (a loop of `new Promise(() => { for (;;) {} })`). When the interrupt handler is called
 * again after it asked QuickJS to stop, the sandbox throws a host exception through the
 * WebAssembly frames and abandons the instance. A native stack overflow inside a C built-in
 * (`JSON.parse` of a deeply nested text, which QuickJS's own stack check does not see) unwinds
 * the same way. Either way only that sandbox's instance is lost. Nothing is ever freed through
 * QuickJS, whose teardown can assert after an out-of-memory: a dropped instance goes to the
 * garbage collector whole.
 */
import { DefaultIntrinsics, type QuickJSContext, type QuickJSHandle, type QuickJSRuntime } from 'quickjs-emscripten-core'
import { canonicalize, type JsonValue } from '../../protocol/canonical.ts'
import { ReachError, isReachError, type ErrorCode } from '../../protocol/errors.ts'
import { BASE_MEMORY_BYTES } from '../sandbox-constants.ts'
import { HARD_STOP, fillBase, type Instance } from './instance.ts'
import type { CallResult, Sandbox, StepResult } from './interface.ts'
import { DEFAULT_LIMITS, truncate, type SandboxLimits } from './limits.ts'
import type { Loaded } from './loaded.ts'
import type { FreeMemories } from './memories.ts'
import { OP_BEGIN, OP_FAULT, OP_INIT, OP_INSTALL, OP_REDUCE, OP_STEP, OP_TAKE, PRELUDE, PRELUDE_NAME } from './prelude.ts'
import { REFUSED, resolveSpecifier } from './resolve.ts'
import { Layout, Snapshot } from './snapshot.ts'

/** Where a sandbox goes when it is released: the pool that made it. */
export interface SandboxHome {
  /** Ended cleanly: reset it and keep it, once the VM's frames have unwound. */
  handBack (vm: QuickJSSandbox): void
  /** Failed, torn out or grew its memory: let it go (its memory may serve a new instance). */
  drop (vm: QuickJSSandbox): void
}

type Abort = 'fuel' | 'wall' | 'cancel'

/** A lone surrogate is escaped by JSON.stringify as \udXXX; text with anything like it goes through canonicalize. */
const SURROGATE_ESCAPE = /\\u[dD][89abcdefABCDEF]/

const encoder = new TextEncoder()
/** A step that only updated the state (most steps): nothing to parse. */
const STATE_ONLY: JsonValue = Object.freeze({})

/**
 * A sandbox is made blank (instance, runtime, context, prelude; see `SandboxPool.blank`) and bound to a
 * pack by `start`. Everything before `start` is the same for every sandbox, so a blank made
 * ahead of time behaves exactly like one made on demand.
 */
export class QuickJSSandbox implements Sandbox {
  private readonly instance: Instance
  /** The pool it came from, and goes back to. */
  private readonly home: SandboxHome
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
  /**
   * The run loop's cancel flag (Sandbox.watch), shared with the thread that cancels: while both
   * [0] (cancel asked) and [1] (a live step, armed by the run loop) are set, the VM stops at its
   * next tick, so a pack burning CPU in one step is cut as soon as its run is cancelled.
   */
  cancelFlag: Int32Array | undefined
  /** Set when the module loader refused an import during the current load or call. */
  private refusedImport: string | undefined
  private loading = true
  private failure: ReachError | undefined
  private released = false
  /** The VM was torn out mid-run: its C state must not be touched again. */
  private abandoned = false

  constructor (instance: Instance, home: SandboxHome) {
    this.instance = instance
    this.home = home
    this.rt = instance.wasm.newRuntime()
    this.rt.setInterruptHandler(() => this.onInterrupt())
    this.rt.setModuleLoader((name) => this.loadModule(name), (base, specifier) => this.normalize(base, specifier))
    this.ctx = this.rt.newContext({ intrinsics: { ...DefaultIntrinsics, Date: false } })
    this.ctxPtr = (this.ctx as unknown as { ctx: { value: number } }).ctx.value
    this.undefinedPtr = this.ctx.undefined.value as unknown as number
    this.argv = instance.heap._malloc(8)
    const evaluated = this.ctx.evalCode(PRELUDE, PRELUDE_NAME, { type: 'global', strict: true })
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
  recycle (memories: FreeMemories): void {
    memories.give(this.instance.memory, this.instance.rawGrow)
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
    else if (this.cancelFlag !== undefined && Atomics.load(this.cancelFlag, 0) !== 0 && Atomics.load(this.cancelFlag, 1) !== 0) this.abort = 'cancel'
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
    if (this.abort === 'cancel') return this.fail('RL-4015', 'the run was cancelled during a step', { interrupted: 'cancel' })
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
    if (this.reusable) this.home.handBack(this)
    else this.home.drop(this)
  }

  dispose (): void {
    this.release()
  }
}
