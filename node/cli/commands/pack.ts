/**
 * `reach pack build|inspect|sign`: make a content-addressed bundle of a pack
 * folder, look inside one, and vouch for one as a publisher.
 */
import { readFile, stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { ReachError } from '../../../protocol/errors.ts'
import { sha256Hex } from '../../../protocol/hash.ts'
import { createSigner } from '../../../protocol/keys.ts'
import { buildBundle, decodeBundle, isPackCid, MAX_BUNDLE_BYTES, type Pack } from '../../../packs/bundle.ts'
import { BUDGET_FIELDS, ENGINE_VERSION, engineSatisfies } from '../../../packs/manifest.ts'
import { admitPack, loadPolicy } from '../../../packs/policy.ts'
import { signPack, verifyPackSignature, type PackSignature } from '../../../packs/trust.ts'
import { openTrustRegistry, type TrustRegistry } from '../../trust-registry.ts'
import { writeFileAtomic } from '../../fs.ts'
import { ensureHome } from '../../home.ts'
import { readKeyFile } from '../../keys.ts'
import { openPackStore, type PackStore } from '../../pack-store.ts'
import type { Io, Report } from '../io.ts'
import { plural } from '../io.ts'

/** This data dir's pack store, once the data dir is checked (RL-1014). */
async function store (): Promise<PackStore> {
  return openPackStore((await ensureHome()).packs)
}

function fileCount (pack: Pack): number {
  return Object.keys(pack.bundle.files).length
}

export async function build (opts: Record<string, unknown>, _io: Io, args: string[]): Promise<Report> {
  const dir = args[0] as string
  const pack = await buildBundle(dir)
  const packs = await store()
  const stored = await packs.put(pack.bytes)
  const output = opts.output as string | undefined
  if (output !== undefined) await writeFileAtomic(output, pack.bytes)
  const m = pack.bundle.manifest
  return {
    human: [
      `Built ${m.name}@${m.version} from ${dir}`,
      `CID: ${pack.cid}`,
      `Size: ${pack.bytes.length} bytes (${plural(fileCount(pack), 'file')})`,
      `Stored in ${packs.dir}${stored.signatures.length === 0 ? ' (unsigned: run reach pack sign ' + pack.cid + ' --key <publisher key>)' : ''}`,
      ...(output === undefined ? [] : [`Wrote ${output}`])
    ],
    json: {
      cid: pack.cid,
      name: m.name,
      version: m.version,
      size: pack.bytes.length,
      files: fileCount(pack),
      signatures: stored.signatures.length,
      ...(output === undefined ? {} : { output })
    }
  }
}

async function isFile (path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile()
  } catch {
    return false
  }
}

/** A pack from a bundle file (checked against a `<cid>.pack` name) or from the store. */
async function loadPack (ref: string): Promise<{ pack: Pack, signatures: PackSignature[], source: string }> {
  if (!isPackCid(ref) && await isFile(ref)) {
    const st = await stat(ref)
    if (st.size > MAX_BUNDLE_BYTES) throw new ReachError('RL-3004', { message: `${ref} is larger than any pack bundle (${st.size} bytes)` })
    const named = basename(ref).replace(/\.pack$/, '')
    const pack = decodeBundle(new Uint8Array(await readFile(ref)), isPackCid(named) ? named : undefined)
    const s = await store()
    const signatures = await s.has(pack.cid) ? (await s.get(pack.cid)).signatures : []
    return { pack, signatures, source: ref }
  }
  const stored = await (await store()).get(ref)
  return { pack: stored, signatures: stored.signatures, source: 'store' }
}

function signatureStatus (sig: PackSignature, pack: Pack, registry: TrustRegistry) {
  let valid = true
  let reason: string | undefined
  try {
    verifyPackSignature(sig, { cid: pack.cid, manifest: pack.bundle.manifest })
  } catch (err) {
    valid = false
    reason = err instanceof ReachError ? String(err.details.reason ?? err.message) : String(err)
  }
  const name = registry.get(sig.publisher)?.name
  return { publisher: sig.publisher, valid, ...(reason === undefined ? {} : { reason }), trust: registry.status(sig.publisher), ...(name === undefined || name === '' ? {} : { name }) }
}

export async function inspect (_opts: Record<string, unknown>, _io: Io, args: string[]): Promise<Report> {
  const { pack, signatures, source } = await loadPack(args[0] as string)
  const paths = await ensureHome()
  const registry = await openTrustRegistry(paths.trust)
  const policy = await loadPolicy(paths.policy)
  const m = pack.bundle.manifest
  const files = Object.entries(pack.bundle.files)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([path, data]) => ({ path, size: data.length, sha256: sha256Hex(data) }))
  const sigs = signatures.map((s) => signatureStatus(s, pack, registry))
  let admission: Record<string, unknown>
  try {
    admission = { admitted: true, ...admitPack({ bundle: pack.bundle, cid: pack.cid, signatures, registry, policy }) }
  } catch (err) {
    if (!(err instanceof ReachError)) throw err
    admission = { admitted: false, code: err.code, message: err.message }
  }
  const engineOk = engineSatisfies(m)
  return {
    human: [
      `Pack ${m.name}@${m.version}${m.description === '' ? '' : ` - ${m.description}`}`,
      `CID: ${pack.cid}`,
      `Size: ${pack.bytes.length} bytes (${plural(files.length, 'file')})`,
      `Entry: ${m.entry}`,
      `Engine: ${m.engine} (this node: ${ENGINE_VERSION}, ${engineOk ? 'compatible' : 'INCOMPATIBLE'})`,
      `Capabilities: ${m.capabilities.length === 0 ? '(none)' : m.capabilities.join(', ')}`,
      `Budget: ${BUDGET_FIELDS.map((f) => `${f}=${m.budget[f]}`).join(' ')}`,
      'Files:',
      ...files.map((f) => `  ${f.path}  ${f.size} bytes  sha256 ${f.sha256}`),
      signatures.length === 0 ? 'Signatures: none' : 'Signatures:',
      ...sigs.map((s) => `  ${s.publisher}${s.name === undefined ? '' : ` (${s.name})`}: ${s.valid ? 'valid' : `INVALID (${s.reason})`}, ${s.trust}`),
      admission.admitted === true
        ? `Admission under this node's policy: OK${admission.legacy_unsigned === true ? ' (unsigned, legacy override)' : ` (publisher ${String(admission.publisher)})`}`
        : `Admission under this node's policy: REFUSED ${String(admission.code)}: ${String(admission.message)}`
    ],
    json: {
      cid: pack.cid,
      source,
      size: pack.bytes.length,
      manifest: m,
      engine_compatible: engineOk,
      files,
      signatures: sigs,
      admission
    }
  }
}

export async function sign (opts: Record<string, unknown>, _io: Io, args: string[]): Promise<Report> {
  const keyPath = opts.key as string
  const key = await readKeyFile(keyPath)
  if (key.kind !== 'publisher') {
    throw new ReachError('RL-1009', { message: `${keyPath} is a ${key.kind} key; sign packs with a publisher key (reach keygen --publisher --output <file>)`, details: { path: keyPath } })
  }
  const s = await store()
  const pack = await s.get(args[0] as string)
  const envelope = signPack({ cid: pack.cid, manifest: pack.bundle.manifest }, createSigner(key.seed))
  await s.addSignature(pack.cid, envelope)
  const trust = (await openTrustRegistry((await ensureHome()).trust)).status(envelope.publisher)
  const m = pack.bundle.manifest
  return {
    human: [
      `Signed ${m.name}@${m.version} (${pack.cid})`,
      `Publisher: ${envelope.publisher} (${trust} on this node${trust === 'trusted' ? '' : `; run reach trust add ${envelope.publisher} --name <name> to trust it`})`
    ],
    json: { cid: pack.cid, name: m.name, version: m.version, signature: envelope, trust }
  }
}
