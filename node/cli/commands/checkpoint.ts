/**
 * `reach checkpoint create|verify`: sign what the log means at a seq, and
 * check such a claim against a log by replaying it.
 */
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { checkpointFileName, createCheckpoint, verifyCheckpoint, type CheckpointKind } from '../../../protocol/checkpoint.ts'
import { checkpointBinding, digestBatchesAsync } from '../../../protocol/digest.ts'
import { ReachError, isReachError } from '../../../protocol/errors.ts'
import { createSigner } from '../../../protocol/keys.ts'
import { RunRecordFold, runOutcomeHash } from '../../../protocol/run.ts'
import { readCheckpointFile, writeCheckpointFiles } from '../../checkpoint-files.ts'
import { readKeyFile, readPublicKey } from '../../keys.ts'
import { streamBatches } from '../../log-source.ts'
import type { Report } from '../io.ts'
import { short } from '../io.ts'

async function isDirectory (path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory()
  } catch {
    return false
  }
}

/**
 * Digest the log up to `atSeq`; a log that ends earlier is RL-2107 for a checkpoint. The state
 * hash is what a checkpoint of `kind` means by it: the built-in reducer's state ("log", and a
 * version-1 checkpoint), or the outcome of the run the log records ("run").
 */
async function digestTo (logPath: string, atSeq: number, kind?: CheckpointKind) {
  try {
    if (kind !== 'run') return await digestBatchesAsync(streamBatches(logPath, { to: atSeq }), { untilSeq: atSeq })
    const fold = new RunRecordFold()
    const d = await digestBatchesAsync(streamBatches(logPath, { to: atSeq }), { untilSeq: atSeq, reduce: false, onEvent: (e) => { fold.push(e) } })
    return { ...d, state_hash: runOutcomeHash(fold.finish('run_00000000000000000000')) }
  } catch (err) {
    if (isReachError(err, 'RL-1007')) throw new ReachError('RL-2107', { message: `the log has no seq ${atSeq}: ${err.message}`, seq: atSeq })
    throw err
  }
}

export async function create (opts: Record<string, unknown>): Promise<Report> {
  const atSeq = opts.atSeq as number
  const key = await readKeyFile(opts.keyPath as string)
  const d = await digestTo(opts.logPath as string, atSeq)
  const cp = createCheckpoint({
    kind: 'log',
    log_id: d.log_id,
    at_seq: d.last_seq,
    state_hash: d.state_hash as string,
    log_hash: d.log_hash,
    merkle_root: d.merkle_root,
    timestamp: d.timestamp
  }, createSigner(key.seed))
  const output = opts.output as string
  const path = output.endsWith('.checkpoint') && !(await isDirectory(output)) ? output : join(output, checkpointFileName(cp))
  await writeCheckpointFiles(path, cp, d.state as never)
  return {
    human: [
      `Checkpoint at seq ${cp.at_seq} written to ${path}`,
      `Checkpoint id: ${cp.checkpoint_id}`,
      `State hash: ${cp.state_hash}`,
      `Merkle root: ${cp.merkle_root}`,
      `Signer: ${cp.signer}`
    ],
    json: { path, checkpoint: cp }
  }
}

export async function verify (opts: Record<string, unknown>): Promise<Report> {
  const cp = await readCheckpointFile(opts.checkpointPath as string)
  const expectedSigner = opts.signer === undefined ? undefined : await readPublicKey(opts.signer as string)
  verifyCheckpoint(cp, expectedSigner === undefined ? {} : { expectedSigner })
  const d = await digestTo(opts.logPath as string, cp.at_seq, cp.kind)
  const checks = checkpointBinding(cp, d)
  const failed = checks.find((c) => !c.ok)
  const label: Record<string, string> = { log_id: 'Log id', log_hash: `Log hash at seq ${cp.at_seq}`, merkle_root: 'Merkle root', state_hash: cp.kind === 'run' ? 'Run outcome hash' : 'Replayed state hash' }
  const human = [`Signature: OK (signer ${cp.signer}${expectedSigner === undefined ? ', not pinned: pass --signer to require a key' : ''})`]
  for (const c of checks) human.push(`${label[c.check]}: ${c.ok ? 'OK' : `MISMATCH (${c.code}: checkpoint says ${short(c.expected)}, log gives ${short(c.actual)})`}`)
  human.push(failed === undefined ? `Checkpoint ${short(cp.checkpoint_id)}: VERIFIED` : `Checkpoint ${short(cp.checkpoint_id)}: FAILED`)
  return {
    human,
    json: {
      verified: failed === undefined,
      checkpoint: cp,
      signature: 'ok',
      signer_pinned: expectedSigner !== undefined,
      checks,
      ...(failed === undefined ? {} : { error: new ReachError(failed.code, { seq: cp.at_seq }).toJSON() })
    },
    ...(failed === undefined ? {} : { exitCode: 1 })
  }
}
