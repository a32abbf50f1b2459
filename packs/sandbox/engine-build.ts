/**
 * The engine build a run's fuel counts depend on: the WebAssembly module every sandbox
 * instantiates (QuickJS, with its interrupt counter) and the prelude every VM evaluates before
 * the pack. Replay binds both hashes: a log recorded on another build may spend other ticks.
 */
import { createHash } from 'node:crypto'
import type { EngineBuild } from '../../protocol/run.ts'
import { PRELUDE } from './prelude.ts'
import { compileWasm } from './wasm.ts'

// The shape is the run record's (SPEC §8): `wasm` is the SHA-256 of the exact .wasm bytes compiled
// (wasm.ts `wasmPath`), `prelude` of the prelude's JavaScript text (UTF-8), the only code the host
// evaluates in the VM.
export type { EngineBuild }

// A pure function of shipped files: computed once per process.
let build: Promise<EngineBuild> | undefined

/** The build's identity; compiles the engine if no pool has yet. */
export async function engineBuild (): Promise<EngineBuild> {
  if (build === undefined) {
    const computing = compileWasm().then(({ sha256 }) => Object.freeze({
      wasm: sha256,
      prelude: createHash('sha256').update(PRELUDE, 'utf8').digest('hex')
    }))
    build = computing
    computing.catch(() => { if (build === computing) build = undefined })
  }
  return await build
}
