/**
 * Where a run can write in an instance's memory (`Layout`, with guard bands around it) and a copy
 * of those parts (`Snapshot`) that puts an instance back to a blank, or to a pack just loaded.
 */
import { MAX_STACK_BYTES } from '../sandbox-constants.ts'
import type { Ballast } from './instance.ts'

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

function wordsOf (memory: Uint8Array): Int32Array {
  return new Int32Array(memory.buffer, memory.byteOffset, memory.byteLength >> 2)
}

/**
 * Where a run can write in an instance's memory. This build lays its linear memory out as static
 * data, then the C stack (growing down from its top, which the blank's own frames leave just
 * below the heap), then the heap. A run writes to the static data, to the stack down to its stack
 * limit (plus the C frames QuickJS runs between its checks), and to the heap, except inside the
 * large ballast blocks, which belong to no one (allocated once by fillBase, never handed out).
 * Found once per blank: every blank is the same bytes, so every blank has the same layout.
 */
export class Layout {
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

/**
 * An instance's memory wherever a run can write to it (see `Layout`): taken when the instance is
 * blank, or once a pack is loaded into it. The rest of the 16 MiB is the same in every instance at
 * those points (zero below the stack's frames, untouched inside the ballast), which `restore`
 * checks at the edges first. The one mutable WebAssembly global (the stack pointer) is back at
 * its base whenever no call runs, so memory is the whole of the instance's state.
 */
export class Snapshot {
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
