/** `reach keygen`: a fresh Ed25519 key in a 0600 file. */
import { generateKeyPair } from '../../../protocol/keys.ts'
import { writeKeyFile } from '../../keys.ts'
import type { Report } from '../io.ts'

export async function keygen (opts: Record<string, unknown>): Promise<Report> {
  const path = opts.output as string
  const kind = opts.publisher === true ? 'publisher' : 'operator'
  const pair = generateKeyPair()
  await writeKeyFile(path, pair, kind, { overwrite: opts.force === true })
  return {
    human: [`Wrote ${kind} key to ${path} (mode 0600)`, `Public key: ${pair.publicKey}`],
    json: { path, kind, public_key: pair.publicKey }
  }
}
