/**
 * The node-local key-value store behind the `kv.get` / `kv.put` tools: one
 * LevelDB at `<home>/kv`, keys namespaced by pack name so no pack reads
 * another's data. Values are canonical JSON.
 */
import { join } from 'node:path'
import { canonicalize, type JsonValue } from '../protocol/canonical.ts'
import { ReachError } from '../protocol/errors.ts'
import { storageFailure } from './fs.ts'
import type { KvBackend } from '../packs/tools/index.ts'

export interface KvStore extends KvBackend {
  close (): Promise<void>
}

export async function openKv (home: string): Promise<KvStore> {
  const { Level } = await import('level')
  const path = join(home, 'kv')
  const db = new Level<string, string>(path, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
  try {
    await db.open()
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED') throw new ReachError('RL-5008', { message: `${path} is open in another process (a running node, or another reach command)`, details: { path }, cause: err })
    throw storageFailure(err, path) ?? new ReachError('RL-5009', { message: `cannot open the kv store ${path}: ${(err as Error).message}`, details: { path }, cause: err })
  }
  // "\0" cannot occur in a pack name, so namespaces never overlap.
  const key = (ns: string, k: string): string => `${ns}\u0000${k}`
  return {
    async get (ns, k) {
      const v = await db.get(key(ns, k))
      return v === undefined ? undefined : JSON.parse(v) as JsonValue
    },
    async put (ns, k, value) {
      await db.put(key(ns, k), canonicalize(value), { sync: true })
    },
    async close () {
      await db.close()
    }
  }
}
