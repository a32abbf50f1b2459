/**
 * Linear memories of dropped instances that never grew past the base, kept for the next new
 * instances of the same pool. A released memory, zeroed, is exactly what a fresh one is (all zero
 * bytes, base size, same maximum), so reusing it changes nothing a pack can see. It is zeroed when
 * taken, not when given: a release can happen inside a callback from the old instance, whose
 * frames still run on that memory until they unwind.
 */
import { BASE_MEMORY_BYTES, MAX_MEMORY_BYTES } from '../sandbox-constants.ts'
import { PAGE, Wasm, type WasmMemory } from './wasm.ts'

/** A memory and its own grow (before an instance put its cap on it). */
export interface FreeMemory {
  memory: WasmMemory
  grow: (pages: number) => number
}

export class FreeMemories {
  private readonly free: FreeMemory[] = []
  private readonly max: number

  constructor (max: number) {
    this.max = max
  }

  /** A kept memory, zeroed, or a new one at the base size. */
  take (): FreeMemory {
    const reused = this.free.pop()
    if (reused !== undefined) {
      new Uint8Array(reused.memory.buffer).fill(0)
      return reused
    }
    const memory = new Wasm.Memory({ initial: BASE_MEMORY_BYTES / PAGE, maximum: MAX_MEMORY_BYTES / PAGE })
    return { memory, grow: memory.grow.bind(memory) }
  }

  /** Keeps `memory` if there is room and it is still at the base size; its own grow is put back. */
  give (memory: WasmMemory, grow: (pages: number) => number): void {
    if (this.free.length >= this.max || memory.buffer.byteLength !== BASE_MEMORY_BYTES) return
    memory.grow = grow
    this.free.push({ memory, grow })
  }

  clear (): void {
    this.free.length = 0
  }
}
