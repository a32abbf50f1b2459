/**
 * `/reach/pack/1.0.0`, the fetching side (SPEC §10.4): ask one provider for a CID and check what
 * it sent, steps 1–6, trusting none of it. Step 7 (the node's policy, then the store) is the
 * caller's, as is what to remember about the provider.
 */
import { ReachError, isReachError, type ErrorCode } from '../protocol/errors.ts'
import { MAX_FRAME, PROTOCOLS } from '../protocol/wire.ts'
import { decodeBundle, MAX_BUNDLE_BYTES, type Pack } from '../packs/bundle.ts'
import { verifyPackSignature, type PackSignature } from '../packs/trust.ts'
import type { Dialer } from './components.ts'
import { frames, isErrorFrame, peerError, type FrameStream } from './frames.ts'

/** What one provider's answer came to. */
export type ProviderAnswer =
  | { ok: true, pack: Pack, signatures: PackSignature[] }
  /**
   * `lied`: the provider sent what an honest node never serves (steps 2, 3, 4's exact size, 5
   * and 6); otherwise it was unreachable, silent (RL-4002) or answered with an error or a
   * malformed frame.
   */
  | { ok: false, error: ReachError, lied: boolean }

export interface AskOptions {
  /** The whole fetch's signal. */
  signal: AbortSignal
  /** This provider's share: dial, request, header and bytes. */
  timeoutMs: number
}

function unavailable (peer: string, err: unknown): ReachError {
  if (isReachError(err)) return err
  return new ReachError('RL-4002', { message: `peer ${peer}: ${(err as Error)?.message ?? String(err)}`, details: { peer }, cause: err })
}

/** Ask `peer` for the pack `cid`. Never throws. */
export async function askProvider (dialer: Dialer, peer: string, cid: string, options: AskOptions): Promise<ProviderAnswer> {
  const signal = AbortSignal.any([options.signal, AbortSignal.timeout(options.timeoutMs)])
  const read = { signal, timeoutMs: options.timeoutMs }
  let lied = false
  const lie: (code: ErrorCode, why: string) => never = (code, why) => {
    lied = true
    throw new ReachError(code, { message: `provider ${peer} ${why}`, details: { peer, cid } })
  }
  let fs: FrameStream
  try {
    // The header is held to its own limit; the bundle that follows to the size it announced.
    fs = frames(await dialer.dial(peer, PROTOCOLS.pack, { signal }), MAX_FRAME.packHeader, { bytesMax: MAX_FRAME.packBytes })
  } catch (err) {
    return { ok: false, error: unavailable(peer, err), lied }
  }
  try {
    await fs.write({ v: 1, type: 'pack.get', cid })
    const header = await fs.read(['pack'], read)
    if (isErrorFrame(header)) throw peerError(header, peer)
    if (header.cid !== cid) lie('RL-3003', `answered with pack ${header.cid}`)
    if (header.size > MAX_BUNDLE_BYTES) lie('RL-4011', `announced ${header.size} bytes, over the ${MAX_BUNDLE_BYTES}-byte bundle limit`)
    const bytes = await fs.readBytes(header.size, read)
    if (bytes.length !== header.size) lie('RL-4010', `announced ${header.size} bytes and sent ${bytes.length}`)
    let pack: Pack
    let signatures: PackSignature[]
    try {
      pack = decodeBundle(bytes, cid)
      signatures = header.signatures.map((s) => verifyPackSignature(s, { cid, manifest: pack.bundle.manifest }))
    } catch (err) {
      // Bytes that do not hash to the CID, or signatures that do not sign it: an honest
      // provider never serves those (its store verified them when they arrived).
      lie(isReachError(err) ? err.code : 'RL-4002', (err as Error).message)
    }
    await fs.close()
    return { ok: true, pack, signatures }
  } catch (err) {
    fs.reset(err as Error)
    return { ok: false, error: unavailable(peer, err), lied }
  }
}
