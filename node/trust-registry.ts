/**
 * The trusted-key registry file (`<home>/trust.json`): which publisher keys
 * this node trusts, and which it has revoked. The format and its parser are
 * in packs/trust.ts (pure); this is the node's copy on disk.
 */
import { readFile } from 'node:fs/promises'
import { ReachError } from '../protocol/errors.ts'
import { isPublicKey } from '../protocol/keys.ts'
import { malformedRegistry, MAX_TRUST_NAME_LENGTH, parseTrustFile, TRUST_FILE_VERSION, type TrustedKey, type TrustFile, type TrustStatus } from '../packs/trust.ts'
import { writeFileAtomic } from './fs.ts'

export interface TrustRegistry {
  readonly path: string
  /** Every key, trusted and revoked, in the order they were first added. */
  list (): TrustedKey[]
  get (publicKey: string): TrustedKey | undefined
  status (publicKey: string): TrustStatus
  /**
   * Trust `publicKey` under `name` and save. Adding a revoked key trusts it
   * again (an explicit operator decision); adding a trusted key renames it.
   */
  add (publicKey: string, name: string): Promise<TrustedKey>
  /** Revoke and save. A key never seen is recorded as revoked, so it stays refused. */
  revoke (publicKey: string): Promise<TrustedKey>
}

export interface TrustRegistryInit {
  /** Source of wall-clock time for added_at / revoked_at (default: new Date()). */
  now?: () => Date
}

function checkKey (publicKey: string): void {
  if (!isPublicKey(publicKey)) throw new ReachError('RL-1009', { message: `${JSON.stringify(publicKey)} is not a multibase Ed25519 public key` })
}

/**
 * Open the registry at `path` (a missing file is an empty registry; a
 * malformed one is RL-3014). Changes are saved atomically, whole.
 */
export async function openTrustRegistry (path: string, init: TrustRegistryInit = {}): Promise<TrustRegistry> {
  const now = init.now ?? (() => new Date())
  let file: TrustFile = { version: TRUST_FILE_VERSION, keys: [] }
  let text: string | undefined
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ReachError('RL-1004', { message: `cannot read trust registry ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, details: { path }, cause: err })
    }
  }
  if (text !== undefined) {
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (err) {
      malformedRegistry(path, `not valid JSON (${(err as Error).message})`)
    }
    file = parseTrustFile(value, path)
  }
  const byKey = new Map(file.keys.map((k) => [k.public_key, k]))

  const save = async (): Promise<void> => {
    const out: TrustFile = { version: TRUST_FILE_VERSION, keys: [...byKey.values()] }
    // Pretty-printed: the file is meant to be read (and, carefully, edited) by people.
    await writeFileAtomic(path, JSON.stringify(out, null, 2) + '\n', 0o600)
  }
  const copy = (k: TrustedKey): TrustedKey => ({ ...k })

  return {
    path,
    list: () => [...byKey.values()].map(copy),
    get: (publicKey) => {
      const k = byKey.get(publicKey)
      return k === undefined ? undefined : copy(k)
    },
    status: (publicKey) => {
      const k = byKey.get(publicKey)
      return k === undefined ? 'unknown' : k.revoked_at === undefined ? 'trusted' : 'revoked'
    },
    add: async (publicKey, name) => {
      checkKey(publicKey)
      if (typeof name !== 'string' || name.length > MAX_TRUST_NAME_LENGTH) {
        throw new ReachError('RL-1011', { message: `a trusted key's name is at most ${MAX_TRUST_NAME_LENGTH} characters` })
      }
      const existing = byKey.get(publicKey)
      const entry: TrustedKey = existing !== undefined && existing.revoked_at === undefined
        ? { ...existing, name }
        : { public_key: publicKey, name, added_at: now().toISOString() }
      byKey.set(publicKey, entry)
      await save()
      return copy(entry)
    },
    revoke: async (publicKey) => {
      checkKey(publicKey)
      const at = now().toISOString()
      const existing = byKey.get(publicKey)
      const entry: TrustedKey = existing === undefined
        ? { public_key: publicKey, name: '', added_at: at, revoked_at: at }
        : { ...existing, revoked_at: existing.revoked_at ?? at }
      byKey.set(publicKey, entry)
      await save()
      return copy(entry)
    }
  }
}
