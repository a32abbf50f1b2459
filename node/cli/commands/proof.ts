/**
 * `reach proof inclusion|consistency|verify`: RFC 6962 proofs a third party
 * can check with nothing but the proof and a trusted (size, root) pair, for
 * instance a signed checkpoint's (at_seq + 1, merkle_root).
 */
import { readFile } from 'node:fs/promises'
import { parseJson } from '../../../protocol/canonical.ts'
import { digestBatchesAsync } from '../../../protocol/digest.ts'
import { ReachError } from '../../../protocol/errors.ts'
import {
  buildConsistencyProof, buildInclusionProof, verifyConsistencyJson, verifyInclusionJson,
  type ConsistencyProofJson, type InclusionProofJson
} from '../../../protocol/merkle.ts'
import { writeFileAtomic } from '../../fs.ts'
import { streamBatches } from '../../log-source.ts'
import type { Report } from '../io.ts'

/** Verified event hashes of the log's first `size` events (the whole log when undefined). */
async function eventHashes (logPath: string, size?: number): Promise<string[]> {
  const hashes: string[] = []
  if (size === 0) return hashes
  const to = size === undefined ? undefined : size - 1
  await digestBatchesAsync(streamBatches(logPath, to === undefined ? {} : { to }), {
    reduce: false,
    ...(to === undefined ? {} : { untilSeq: to }),
    onEvent: (e) => { hashes.push(e.hash) }
  })
  return hashes
}

async function emit (proof: InclusionProofJson | ConsistencyProofJson, output: unknown): Promise<string[]> {
  if (typeof output !== 'string') return []
  await writeFileAtomic(output, JSON.stringify(proof, null, 2) + '\n')
  return [`Proof written to ${output}`]
}

export async function inclusion (opts: Record<string, unknown>): Promise<Report> {
  const seq = opts.seq as number
  const size = opts.treeSize as number | undefined
  if (size !== undefined && seq >= size) throw new ReachError('RL-1007', { message: `seq ${seq} is not in a tree of ${size} events` })
  const hashes = await eventHashes(opts.logPath as string, size)
  const proof = buildInclusionProof(hashes, seq, size ?? hashes.length)
  verifyInclusionJson(proof)
  return {
    human: [
      `Inclusion proof for seq ${seq} in a tree of ${proof.tree_size} events`,
      `Event hash: ${proof.event_hash}`,
      `Root: ${proof.root}`,
      `Path (${proof.path.length} hashes):`,
      ...proof.path.map((h) => `  ${h}`),
      ...(await emit(proof, opts.output))
    ],
    json: { proof }
  }
}

export async function consistency (opts: Record<string, unknown>): Promise<Report> {
  const from = opts.from as number
  const to = opts.to as number
  if (from > to) throw new ReachError('RL-1007', { message: `--from ${from} is larger than --to ${to}` })
  const hashes = await eventHashes(opts.logPath as string, to)
  const proof = buildConsistencyProof(hashes, from, to)
  verifyConsistencyJson(proof)
  return {
    human: [
      `Consistency proof: the first ${from} events are a prefix of the first ${to}`,
      `Old root (${from}): ${proof.old_root}`,
      `New root (${to}): ${proof.new_root}`,
      `Path (${proof.path.length} hashes):`,
      ...proof.path.map((h) => `  ${h}`),
      ...(await emit(proof, opts.output))
    ],
    json: { proof }
  }
}

export async function verifyProof (opts: Record<string, unknown>): Promise<Report> {
  let text: string
  try {
    text = await readFile(opts.proof as string, 'utf8')
  } catch (err) {
    throw new ReachError('RL-1004', { message: `cannot read ${opts.proof as string}: ${(err as Error).message}`, cause: err })
  }
  const proof = parseJson(text, 'proof file') as unknown as InclusionProofJson | ConsistencyProofJson
  const human: string[] = []
  if (proof?.kind === 'consistency') {
    verifyConsistencyJson(proof)
    human.push(`Consistency proof ${proof.old_size} -> ${proof.new_size}: VALID`)
  } else {
    verifyInclusionJson(proof)
    human.push(`Inclusion proof for seq ${proof.leaf_index} in ${proof.tree_size} events: VALID`)
  }
  if (typeof opts.logPath === 'string') {
    // Anchor the proof's roots in the actual log: a valid proof about some
    // other tree proves nothing about this one.
    const sizes = proof.kind === 'consistency' ? [[proof.old_size, proof.old_root], [proof.new_size, proof.new_root]] as const : [[proof.tree_size, proof.root]] as const
    for (const [size, root] of sizes) {
      if (size === 0) continue
      const d = await digestBatchesAsync(streamBatches(opts.logPath, { to: size - 1 }), { reduce: false, untilSeq: size - 1 })
      if (d.merkle_root !== root) {
        throw new ReachError(proof.kind === 'consistency' ? 'RL-2202' : 'RL-2201', { message: `the log's root at size ${size} is ${d.merkle_root}, not the proof's ${root}` })
      }
      human.push(`Root at size ${size} matches ${opts.logPath}`)
    }
  }
  return { human, json: { valid: true, proof } }
}
