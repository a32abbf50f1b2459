/**
 * A node's sandboxes. Every sandbox has its own WebAssembly instance (so its own linear memory),
 * QuickJS runtime and context, used by one run at a time. Making a blank costs about 4 ms of CPU,
 * so the pool makes spares ahead of time, and a run that ended cleanly hands its instance back:
 * on the next turn of the event loop (or at the next `create`, if that comes first) its memory
 * is restored from the copy taken when it was blank (`Snapshot`), byte for byte, so the next run
 * cannot tell it from a new one. A pack that has loaded twice is kept loaded: its sandboxes are
 * reset to the state its load made (`Loaded`), and later runs skip loading. An instance that
 * failed, was torn out, grew its memory, or wrote outside what a snapshot keeps is dropped.
 *
 * All of that is this object's state: two pools in one process share nothing but the compiled
 * engine (immutable) and a memo of pack digests (a pure hash), and a sandbox released after its
 * pool closed is simply dropped.
 */
import { ReachError } from '../../protocol/errors.ts'
import {
  FREE_MEMORIES, LOADED_PACKS, LOADED_READY_PER_PACK, POOLED_SANDBOXES, SEEN_PACKS, SPARE_SANDBOXES
} from '../sandbox-constants.ts'
import { instantiate } from './instance.ts'
import type { Sandbox, SandboxFactory } from './interface.ts'
import { DEFAULT_LIMITS, fullLimits, type SandboxLimits } from './limits.ts'
import { loadKey, type Loaded } from './loaded.ts'
import { FreeMemories } from './memories.ts'
import { PackSandbox } from './pack-sandbox.ts'
import { QuickJSSandbox, type SandboxHome } from './vm.ts'
import { compileWasm } from './wasm.ts'

/** Pool sizes; each defaults to its constant in sandbox-constants.ts, which says why. */
export interface SandboxPoolInit {
  /** Blank sandboxes made ahead of time (SPARE_SANDBOXES). */
  spareSandboxes?: number
  /** Ready sandboxes kept at most, blank or with a pack loaded (POOLED_SANDBOXES). */
  pooledSandboxes?: number
  /** Packs kept loaded (LOADED_PACKS). */
  loadedPacks?: number
  /** Ready sandboxes kept per loaded pack (LOADED_READY_PER_PACK). */
  loadedReadyPerPack?: number
  /** Packs remembered as loaded once, waiting for a second load (SEEN_PACKS). */
  seenPacks?: number
  /** Memories of dropped instances kept for new ones (FREE_MEMORIES). */
  freeMemories?: number
}

export interface SandboxPoolStats {
  /** Released sandboxes reset and kept since the pool was made. */
  reused: number
  /** Sandboxes handed out with their pack already loaded since the pool was made. */
  preloaded: number
  /** Sandboxes ready to hand out now, blank or with a pack loaded. */
  ready: number
  /** Packs kept loaded now. */
  loaded: number
}

const DEFAULT_INIT: Required<SandboxPoolInit> = Object.freeze({
  spareSandboxes: SPARE_SANDBOXES,
  pooledSandboxes: POOLED_SANDBOXES,
  loadedPacks: LOADED_PACKS,
  loadedReadyPerPack: LOADED_READY_PER_PACK,
  seenPacks: SEEN_PACKS,
  freeMemories: FREE_MEMORIES
})

export class SandboxPool implements SandboxFactory {
  private readonly sizes: Required<SandboxPoolInit>
  private readonly memories: FreeMemories
  /** What the pool's sandboxes call when they are released. */
  private readonly home: SandboxHome
  /** Blank sandboxes ready to bind: made ahead of time, or released and reset. */
  private readonly ready: QuickJSSandbox[] = []
  private readonly loadedPacks = new Map<string, Loaded>()
  private readonly readyLoaded = new Map<string, QuickJSSandbox[]>()
  /** Packs loaded once (a second load keeps the loaded state); least recently used first. */
  private readonly seen = new Map<string, true>()
  /** Released cleanly and not reset yet: that waits for the next turn of the event loop, or for the next `create`. */
  private readonly released: QuickJSSandbox[] = []
  /** Instances being made, awaited by `close`. */
  private readonly making = new Set<Promise<QuickJSSandbox>>()
  private refilling: Promise<void> | undefined
  private settling: NodeJS.Immediate | undefined
  private refillTimer: NodeJS.Immediate | undefined
  private reused = 0
  private preloaded = 0
  private closed = false

  constructor (init: SandboxPoolInit = {}) {
    const sizes = { ...DEFAULT_INIT }
    for (const name of Object.keys(DEFAULT_INIT) as Array<keyof SandboxPoolInit>) {
      const v = init[name]
      if (v === undefined) continue
      if (!Number.isSafeInteger(v) || v < 0) throw new ReachError('RL-1011', { message: `sandbox pool size ${name} must be a non-negative integer, got ${String(v)}`, details: { size: name } })
      sizes[name] = v
    }
    this.sizes = sizes
    this.memories = new FreeMemories(sizes.freeMemories)
    this.home = { handBack: (vm) => this.handBack(vm), drop: (vm) => this.drop(vm) }
  }

  /** Compiles the engine (once per process) and makes the spare sandboxes. */
  async load (): Promise<void> {
    this.assertOpen()
    await compileWasm()
    await this.refill()
    this.assertOpen()
  }

  /** files: path → source text; entry: the module to load (an ES module that exports init and reduce). */
  async create (files: Record<string, string>, entry: string, limits: Partial<SandboxLimits> = {}): Promise<Sandbox> {
    this.assertOpen()
    const full = fullLimits(limits)
    const path = entry.startsWith('./') ? entry.slice(2) : entry
    const key = loadKey(files, path, full)
    const loaded = this.loadedPacks.get(key)
    // A sandbox released since the last turn of the event loop (runs back to back) is reset now.
    this.settleReleased()
    if (loaded !== undefined && full.fuel >= loaded.ticks) {
      const vm = this.readyLoaded.get(key)?.pop()
      if (vm !== undefined) {
        vm.bind(full)
        this.remember(key, vm)
        this.preloaded++
        return new PackSandbox(vm)
      }
    }
    const vm = await this.takeBlank()
    this.assertOpen()
    vm.start(files, path, full)
    vm.loadedKey = key
    this.remember(key, vm)
    return new PackSandbox(vm)
  }

  stats (): SandboxPoolStats {
    return { reused: this.reused, preloaded: this.preloaded, ready: this.readyCount(), loaded: this.loadedPacks.size }
  }

  /**
   * Idempotent. Drops every pooled sandbox and cancels the pool's pending work; resolves once no
   * instance is being made. Sandboxes still in use keep working and are dropped when released.
   */
  async close (): Promise<void> {
    if (!this.closed) {
      this.closed = true
      if (this.settling !== undefined) clearImmediate(this.settling)
      if (this.refillTimer !== undefined) clearImmediate(this.refillTimer)
      this.settling = undefined
      this.refillTimer = undefined
      this.released.length = 0
      this.ready.length = 0
      this.readyLoaded.clear()
      this.loadedPacks.clear()
      this.seen.clear()
      this.memories.clear()
    }
    await Promise.allSettled([...this.making, this.refilling])
  }

  /**
   * For tests: a copy of the whole memory of every ready blank, and of a new blank made just for
   * the comparison (not kept). A reset blank must equal the new one byte for byte.
   */
  async inspectBlanks (): Promise<{ ready: Uint8Array[], fresh: Uint8Array }> {
    this.assertOpen()
    const fresh = (await this.blank()).memory.slice()
    return { ready: this.ready.map((vm) => vm.memory.slice()), fresh }
  }

  /**
   * For tests: a copy of the whole memory of every ready sandbox with this pack already loaded, and
   * of a new instance that loads it now (not kept). They must be equal byte for byte.
   */
  async inspectLoaded (files: Record<string, string>, entry: string, limits: Partial<SandboxLimits> = {}): Promise<{ ready: Uint8Array[], fresh: Uint8Array }> {
    this.assertOpen()
    const full = { ...DEFAULT_LIMITS, ...limits }
    const vm = await this.blank()
    vm.start(files, entry, full)
    return { ready: (this.readyLoaded.get(loadKey(files, entry, full)) ?? []).map((r) => r.memory.slice()), fresh: vm.memory.slice() }
  }

  private assertOpen (): void {
    if (this.closed) throw new ReachError('RL-5007', { message: 'sandbox pool is closed: its node has stopped' })
  }

  // -- making blanks ----------------------------------------------------------

  private async blank (): Promise<QuickJSSandbox> {
    const making = instantiate(this.memories).then((instance) => new QuickJSSandbox(instance, this.home))
    this.making.add(making)
    try {
      return await making
    } finally {
      this.making.delete(making)
    }
  }

  private async fill (): Promise<void> {
    while (!this.closed && this.ready.length < this.sizes.spareSandboxes) {
      const vm = await this.blank()
      if (!this.closed) this.ready.push(vm)
    }
  }

  private refill (): Promise<void> {
    this.refilling ??= this.fill().finally(() => { this.refilling = undefined })
    return this.refilling
  }

  /** A sandbox was dropped rather than handed back: make a new blank when the loop is free. */
  private refillSoon (): void {
    if (this.closed || this.refillTimer !== undefined || this.ready.length >= this.sizes.spareSandboxes) return
    this.refillTimer = setImmediate(() => {
      this.refillTimer = undefined
      this.refill().catch(() => {})
    }).unref()
  }

  /** A blank: a ready one, else a ready loaded one reset to blank, else a new one. */
  private async takeBlank (): Promise<QuickJSSandbox> {
    const vm = this.ready.pop()
    if (vm !== undefined) return vm
    for (const list of this.readyLoaded.values()) {
      const other = list.pop()
      if (other !== undefined && other.reset()) return other
    }
    return await this.blank()
  }

  // -- released sandboxes -----------------------------------------------------

  private handBack (vm: QuickJSSandbox): void {
    if (this.closed) return
    this.released.push(vm)
    this.settling ??= setImmediate(() => {
      this.settling = undefined
      this.settleReleased()
    })
  }

  private drop (vm: QuickJSSandbox): void {
    if (this.closed) return
    vm.recycle(this.memories)
    this.refillSoon()
  }

  private settleReleased (): void {
    for (const vm of this.released.splice(0)) this.giveBack(vm)
  }

  private giveBack (vm: QuickJSSandbox): void {
    // Pool full: the instance goes, its memory stays for the next new instance.
    if (this.readyCount() >= this.sizes.pooledSandboxes) {
      vm.recycle(this.memories)
      return
    }
    const loaded = vm.loadedKey === undefined ? undefined : this.loadedPacks.get(vm.loadedKey)
    const list = loaded === undefined ? [] : this.readyLoaded.get(loaded.key) ?? []
    const target = loaded !== undefined && list.length < this.sizes.loadedReadyPerPack ? loaded : undefined
    if (!vm.reset(target)) {
      vm.recycle(this.memories)
      this.refillSoon()
      return
    }
    this.reused++
    if (target === undefined) {
      this.ready.push(vm)
    } else {
      list.push(vm)
      this.readyLoaded.set(target.key, list)
    }
  }

  // -- packs kept loaded ------------------------------------------------------

  private readyCount (): number {
    let n = this.ready.length
    for (const list of this.readyLoaded.values()) n += list.length
    return n
  }

  private remember (key: string, vm: QuickJSSandbox): void {
    const known = this.loadedPacks.get(key)
    if (known !== undefined) {
      // Most recently used last.
      this.loadedPacks.delete(key)
      this.loadedPacks.set(key, known)
      return
    }
    if (!this.seen.has(key)) {
      this.seen.set(key, true)
      if (this.seen.size > this.sizes.seenPacks) this.seen.delete(this.seen.keys().next().value as string)
      return
    }
    const loaded = vm.capture(key)
    if (loaded === undefined) return
    this.loadedPacks.set(key, loaded)
    if (this.loadedPacks.size > this.sizes.loadedPacks) {
      const oldest = this.loadedPacks.keys().next().value as string
      this.loadedPacks.delete(oldest)
      // Its ready instances go back to blank.
      for (const old of this.readyLoaded.get(oldest) ?? []) if (old.reset()) this.ready.push(old)
      this.readyLoaded.delete(oldest)
    }
  }
}
