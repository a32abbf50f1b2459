/**
 * Random sources for federation services (components.ts `Random`): the operating system's for a
 * real node, and a seeded one for simulations, where the same seed must give the same ids and
 * nonces (a seeded source is not for production: its nonces are predictable).
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Random } from '../federation/components.ts'

export const systemRandom: Random = { bytes: (n) => randomBytes(n) }

/** SHA-256 in counter mode over the seed: block i = sha256(seed || ":" || i). */
export function seededRandom (seed: string): Random {
  let counter = 0
  let pool = Buffer.alloc(0)
  return {
    bytes (n: number): Uint8Array {
      while (pool.length < n) {
        pool = Buffer.concat([pool, createHash('sha256').update(`${seed}:${counter++}`).digest()])
      }
      const out = Uint8Array.from(pool.subarray(0, n))
      pool = pool.subarray(n)
      return out
    }
  }
}
