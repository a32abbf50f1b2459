/** The coordinating thread: runs one parallel verification and posts its digest (or null). */
import { parentPort, workerData } from 'node:worker_threads'
import { coordinate } from './coordinator.ts'

const { path, workers, chunkBytes } = workerData as { path: string, workers: number, chunkBytes: number }
const digest = await coordinate(path, { workers, chunkBytes })
parentPort?.postMessage(digest ?? null)
