/**
 * The pack sandbox (DESIGN.md §3): QuickJS compiled to WebAssembly, with no ambient authority and
 * deterministic limits.
 *
 * A pack is an ES module exporting `init(input) → state` and
 * `reduce(state, event) → { state, effects?, output? }`. The host calls them through a `Sandbox`
 * made by a `SandboxPool`, which the node owns and the run loop sees as a `SandboxFactory`. Values
 * cross the boundary only as JSON text, never as host objects: the host canonicalises the
 * arguments (so the pack sees keys in the same order however the host built them), the VM parses
 * them, and the VM serialises the result, refusing anything that is not plain JSON or nests
 * deeper than canonical JSON allows, and checking its length before a byte is copied out.
 *
 * What the pack sees: the ECMAScript built-ins of QuickJS minus whatever is non-deterministic or
 * observes the garbage collector. `Date` and `Math.random` throw a TypeError naming the tool to
 * use instead; `WeakRef` and `FinalizationRegistry` are gone; `console` is a silent stub. There is
 * no `process`, `require`, `fetch`, timer, file system or host function of any kind: nothing in
 * the VM calls into the host except the module loader, which resolves relative imports among the
 * pack's own files and nothing else.
 *
 * Limits, each an RL-31xx error:
 *  - fuel (RL-3101): QuickJS calls an interrupt handler once every 10,000 poll points (loop
 *    back-edges and calls); a tick is one such call, and the count depends only on the code, its
 *    inputs and the engine build (`engineBuild`). Ticks are counted from the sandbox's creation
 *    (loading counts) and summed over calls; QuickJS's countdown carries over from call to call,
 *    so a trivial call costs 0 or 1 tick depending on the calls before it, the same way every
 *    time the same sequence runs.
 *  - memory (RL-3102): growth of the instance's memory beyond the blank sandbox. A fresh instance
 *    allocates exactly the same way for the same code and inputs, so the same run runs out of
 *    memory at the same point on every machine.
 *  - stack (RL-3103): QuickJS's stack limit.
 *  - output (RL-3104): checked inside the VM, before any copy to the host.
 *  - wall clock (RL-3105): a backstop per call, checked in the interrupt handler; it never decides
 *    a successful result. A promise still pending once the job queue is empty fails at once with
 *    the same code.
 *
 * Files: pool.ts (the pool, reuse of instances), vm.ts (one VM, containment), pack-sandbox.ts
 * (the per-run facade), instance.ts (WebAssembly instance, memory cap), memories.ts, snapshot.ts
 * (layout, guard bands, reset), loaded.ts (packs kept loaded), prelude.ts (the harness in the VM),
 * resolve.ts (imports), limits.ts, wasm.ts (the compiled engine), engine-build.ts.
 */
export type { CallResult, Sandbox, SandboxFactory, StepResult } from './interface.ts'
export { DEFAULT_LIMITS, type SandboxLimits } from './limits.ts'
export { SandboxPool, type SandboxPoolInit, type SandboxPoolStats } from './pool.ts'
export { engineBuild, type EngineBuild } from './engine-build.ts'
