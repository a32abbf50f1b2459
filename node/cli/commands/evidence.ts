/**
 * `reach evidence make|verify`: equivocation evidence (SPEC §6, "Equivocation evidence") as a file anyone can check
 * offline. `make` pairs two checkpoint files of one signer, log and position that disagree;
 * `verify` says what a file proves, or the code of why it proves nothing.
 */
import { readFile } from 'node:fs/promises'
import { ReachError } from '../../../protocol/errors.ts'
import { checkEquivocation, equivocationEvidence, type Equivocation } from '../../../protocol/evidence.ts'
import { peerIdOfPublicKey } from '../../../protocol/peer-id.ts'
import { writeFileAtomic } from '../../fs.ts'
import type { Report } from '../io.ts'

async function text (path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new ReachError('RL-1004', { message: `cannot read ${path}: ${(err as Error).message}`, details: { path } })
  }
}

function proven (e: Equivocation): Report['json'] {
  return { equivocation: true, signer: e.signer, peer: peerIdOfPublicKey(e.signer), log_id: e.log_id, at_seq: e.at_seq, differ: e.differ, checkpoints: [e.a.checkpoint_id, e.b.checkpoint_id] }
}

function lines (e: Equivocation): string[] {
  return [
    `EQUIVOCATION_PROVEN: ${peerIdOfPublicKey(e.signer)} signed two histories of log ${e.log_id} at seq ${e.at_seq}`,
    `  they differ in: ${e.differ.join(', ')}`,
    `  checkpoints: ${e.a.checkpoint_id}, ${e.b.checkpoint_id} (both signatures verified)`
  ]
}

export async function make (opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const evidence = equivocationEvidence(await text(args[0] as string), await text(args[1] as string))
  const e = checkEquivocation(evidence)
  if (typeof opts.output === 'string') await writeFileAtomic(opts.output, evidence + '\n', 0o644)
  return { human: [...lines(e), ...(typeof opts.output === 'string' ? [`Written to ${opts.output}`] : [evidence])], json: { ...proven(e), evidence } }
}

export async function verify (_opts: Record<string, unknown>, _io: unknown, args: string[]): Promise<Report> {
  const e = checkEquivocation((await text(args[0] as string)).replace(/\n$/, ''))
  return { human: lines(e), json: proven(e) }
}
