/** A chunk-checking thread: summarise each chunk it is sent, and send the buffer back for reuse. */
import { parentPort } from 'node:worker_threads'
import { summariseChunk } from './chunk.ts'

parentPort?.on('message', (msg: { id: number, buffer: ArrayBuffer, length: number }) => {
  const summary = summariseChunk(new Uint8Array(msg.buffer, 0, msg.length))
  parentPort?.postMessage({ id: msg.id, summary, buffer: msg.buffer }, [msg.buffer])
})
