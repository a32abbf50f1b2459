/**
 * Limits and sizes of the pack sandbox (packs/sandbox/), each with why it has
 * its value. The run budget of a pack (manifest `budget`, capped by node
 * policy) overrides the limits field by field; `SandboxPoolInit` overrides the
 * pool sizes.
 */

/**
 * Fuel, in QuickJS interrupt ticks. QuickJS calls its interrupt handler once
 * every 10,000 poll points (loop back-edges, calls, and one per 10,000 regexp
 * steps). Measured on the reference machine: an empty loop spends a tick in
 * ~30 µs, ordinary code (arithmetic loops, calls, array work, sorts) in
 * 150–750 µs, regexp backtracking in ~1.5 ms. 10,000 ticks stops a runaway
 * loop in well under a second and still gives ordinary code seconds of work,
 * summed over every call of a run, well inside the wall-clock backstop.
 */
export const DEFAULT_FUEL = 10_000

/**
 * 64 MiB of heap per sandbox: far above what a reducer over JSON state needs,
 * low enough that a dozen concurrent hostile packs cannot exhaust the node.
 */
export const DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024

/**
 * 256 KiB of interpreter stack: about 1,500 frames of plain recursion. QuickJS
 * checks its own (WebAssembly shadow) stack, but the same frames use about
 * twice as much of the host's native stack, and Node's main thread has under
 * 1 MiB. Above ~450 KiB deep recursion overflows the native stack first; the
 * sandbox survives that too (the instance is abandoned) but the depth at which
 * it happens depends on the host, not the pack. Keep it at or below 256 KiB.
 */
export const DEFAULT_STACK_BYTES = 256 * 1024

/**
 * Ceiling for `stackBytes`. QuickJS's frames live on emscripten's C stack in the instance's
 * memory, between 4 and 16 MiB in this build; a limit beyond it lets a pack with large frames
 * write past the stack into the heap (measured: fine at 4 MiB, corrupt at 16 MiB). 1 MiB keeps
 * well clear of that.
 */
export const MAX_STACK_BYTES = 1024 * 1024

/** Largest value (canonical JSON bytes) a call may return: a state or an output of 1 MiB. */
export const DEFAULT_OUTPUT_BYTES = 1024 * 1024

/**
 * Wall-clock backstop per call (and for loading). Never a deterministic limit:
 * the default fuel runs out first for code that reaches poll points, so this
 * only catches host-side slowness and long stretches inside one built-in.
 */
export const DEFAULT_WALL_MS = 10_000

/** Thrown messages are cut to this many characters before they reach the host. */
export const MAX_ERROR_MESSAGE = 500

/**
 * Every sandbox's WebAssembly memory starts at emscripten's 16 MiB (static
 * data, the C stack, QuickJS's own start-up heap); `memoryBytes` is granted on
 * top of it.
 */
export const BASE_MEMORY_BYTES = 16 * 1024 * 1024

/** emscripten's ceiling for this build's linear memory (2 GiB). */
export const MAX_MEMORY_BYTES = 2 * 1024 * 1024 * 1024

/**
 * Blank sandboxes made ahead of time: a new WebAssembly instance with its
 * runtime, context and prelude takes about 4 ms of CPU, a ready one about
 * 0.1 ms to bind. Two cover a burst of two runs before any has ended.
 */
export const SPARE_SANDBOXES = 2

/**
 * Blank sandboxes kept at most, counting released ones that were reset: as
 * many as a node runs at once by default (the daemon's 4 run slots), so a
 * busy node stops making instances. Each holds its 1.7 MiB snapshot and
 * about as much resident WebAssembly memory.
 */
export const POOLED_SANDBOXES = 4

/**
 * Packs kept loaded (see sandbox/loaded.ts `Loaded`): a pack that has loaded twice keeps the state its
 * load made (about 1.7 MiB each), so later runs of it skip loading (0.4 ms for a small pack).
 */
export const LOADED_PACKS = 8

/** Ready sandboxes kept with one pack loaded: enough for a run and the next one. */
export const LOADED_READY_PER_PACK = 2

/** Packs remembered as loaded once (a key each), waiting for a second load. */
export const SEEN_PACKS = 256

/**
 * Linear memories of dropped instances kept for new ones (zeroed when taken). Each is 16 MiB that
 * V8 counts as external memory, and making a new one per run drove a full mark-compact every few
 * runs. As many as POOLED_SANDBOXES: an idle pool holds at most 64 MiB of them.
 */
export const FREE_MEMORIES = 4
