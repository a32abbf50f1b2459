/**
 * `reach trust add|list|revoke`: the publisher keys this node accepts pack
 * signatures from (`<home>/trust.json`).
 */
import { type TrustedKey } from '../../../packs/trust.ts'
import { openTrustRegistry } from '../../trust-registry.ts'
import { ensureHome } from '../../home.ts'
import { readPublicKey } from '../../keys.ts'
import type { Io, Report } from '../io.ts'
import { plural } from '../io.ts'

function describe (k: TrustedKey): string {
  const state = k.revoked_at === undefined ? `trusted since ${k.added_at}` : `REVOKED at ${k.revoked_at}`
  return `${k.public_key}  ${k.name === '' ? '(no name)' : k.name}  ${state}`
}

export async function add (opts: Record<string, unknown>, _io: Io, args: string[]): Promise<Report> {
  const publicKey = await readPublicKey(args[0] as string)
  const registry = await openTrustRegistry((await ensureHome()).trust)
  const before = registry.status(publicKey)
  const entry = await registry.add(publicKey, (opts.name as string | undefined) ?? '')
  const note = before === 'revoked' ? ' (it was revoked; it is trusted again)' : before === 'trusted' ? ' (already trusted; name updated)' : ''
  return {
    human: [`Trusted ${entry.public_key}${entry.name === '' ? '' : ` as "${entry.name}"`}${note}`, `Registry: ${registry.path}`],
    json: { key: entry, previous_status: before, path: registry.path }
  }
}

export async function list (): Promise<Report> {
  const registry = await openTrustRegistry((await ensureHome()).trust)
  const keys = registry.list()
  const trusted = keys.filter((k) => k.revoked_at === undefined).length
  return {
    human: keys.length === 0
      ? ['No publisher keys in the registry (reach trust add <key> --name <name>)']
      : [`${plural(trusted, 'trusted key')}, ${keys.length - trusted} revoked (${registry.path})`, ...keys.map(describe)],
    json: { path: registry.path, keys }
  }
}

export async function revoke (_opts: Record<string, unknown>, _io: Io, args: string[]): Promise<Report> {
  const publicKey = await readPublicKey(args[0] as string)
  const registry = await openTrustRegistry((await ensureHome()).trust)
  const before = registry.status(publicKey)
  const entry = await registry.revoke(publicKey)
  const note = before === 'unknown' ? ' (it was not in the registry; recorded as revoked so it stays refused)' : before === 'revoked' ? ' (already revoked)' : ''
  return {
    human: [`Revoked ${entry.public_key}${note}`, 'Packs signed only by this key are now refused (RL-3007).'],
    json: { key: entry, previous_status: before, path: registry.path }
  }
}
