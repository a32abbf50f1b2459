/**
 * Checkpoint files on disk: `<name>.checkpoint` (the canonical signed
 * checkpoint, see protocol/SPEC.md) and beside it `<name>.state.json`, the
 * canonical state the checkpoint's state_hash covers. The snapshot lets
 * `reach replay --diff-with` show field-level differences; it needs no
 * signature of its own because its hash must equal the signed state_hash.
 */
import { readFile } from 'node:fs/promises'
import { canonicalize } from '../protocol/canonical.ts'
import { decodeCheckpoint, encodeCheckpoint, type Checkpoint } from '../protocol/checkpoint.ts'
import { ReachError } from '../protocol/errors.ts'
import type { State } from '../protocol/state.ts'
import { writeFileAtomic } from './fs.ts'

export function snapshotPathFor (checkpointPath: string): string {
  return checkpointPath.replace(/\.checkpoint$/, '') + '.state.json'
}

export async function writeCheckpointFiles (path: string, cp: Checkpoint, state: State): Promise<void> {
  // Snapshot first: a checkpoint file never exists without its snapshot.
  await writeFileAtomic(snapshotPathFor(path), canonicalize(state) + '\n')
  await writeFileAtomic(path, encodeCheckpoint(cp))
}

export async function readCheckpointFile (path: string): Promise<Checkpoint> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ReachError('RL-1004', { message: `cannot read checkpoint ${path}: ${(err as Error).message}`, cause: err })
  }
  return decodeCheckpoint(text)
}
