// Entry for the verifier's worker threads. Plain JavaScript so it can turn
// on the compile cache before any TypeScript loads: with a warm cache a
// thread never starts the type stripper (~30 MB per thread). The module to
// run is named in workerData.entry, relative to this folder.
import module from 'node:module'
import { workerData } from 'node:worker_threads'
module.enableCompileCache?.()
await import(new URL(workerData.entry, import.meta.url).href)
