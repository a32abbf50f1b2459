/**
 * Signed checkpoints: a signer's statement "log L, up to and including event
 * at_seq, has this head, this Merkle root, and this state hash", where the
 * `kind` says what the state hash means.
 *
 * Format, version 2 (byte-exact; protocol/SPEC.md §6):
 *
 *   Checkpoint {
 *     version:       2
 *     kind:          "log"  state_hash = stateHash of the built-in reducer's state after at_seq
 *                    "run"  state_hash = sha256(canonical({status, output_hash, error})) of the
 *                           run the log records (protocol/run.ts runOutcomeHash)
 *     checkpoint_id: 64 lowercase hex = sha256(message)
 *     log_id:        64 lowercase hex, the log's id
 *     at_seq:        non-negative safe integer, the last event covered
 *     state_hash:    64 lowercase hex, as `kind` says
 *     log_hash:      64 lowercase hex, `hash` of the event at at_seq
 *     merkle_root:   64 lowercase hex, RFC 6962 root over the hashes of events 0..at_seq
 *     signer:        multibase Ed25519 public key ("z6Mk...")
 *     timestamp:     non-negative safe integer, the logical timestamp of the
 *                    event at at_seq (never the wall clock, so a checkpoint
 *                    is reproducible from the log alone)
 *     signature:     128 lowercase hex, Ed25519 over message
 *   }
 *
 *   body    = {version, kind, log_id, at_seq, state_hash, log_hash, merkle_root, signer, timestamp}
 *   message = "reach/checkpoint/v2\n" || canonical(body)      (RFC 8785, UTF-8; the exact signed bytes)
 *
 * Version 1 (still read and verified, never written) has no `kind` and signs
 * "reach/checkpoint/v1\n" || canonical(body without kind); what its state hash
 * means is left to the reader's context (a node's run checkpoints were of kind
 * "run", `reach checkpoint create` made kind "log").
 *
 * Ed25519 is deterministic, so the same input and key always give the same
 * checkpoint, byte for byte. The signer is inside the body: the id commits to
 * who signed, and two signers of the same state produce two distinct ids.
 *
 * File encoding: canonical(checkpoint) followed by one "\n". Decoding is
 * strict — the text must be exactly that encoding, with exactly these fields —
 * so any single changed byte of a checkpoint file is detected, either by the
 * decoder (RL-2105) or by `verifyCheckpoint` (RL-2108 / RL-2101).
 *
 * This module checks a checkpoint on its own. Binding it to a log (log_hash,
 * merkle_root, replayed state, RL-2102/2103/2104/2107/2109) happens where the
 * log is at hand.
 */
import { canonicalize } from './canonical.ts'
import { ReachError } from './errors.ts'
import { domainMessage, isHash, sha256Hex } from './hash.ts'
import { isPublicKey, verifySignature, type Signer } from './keys.ts'

/** The version written. */
export const CHECKPOINT_VERSION = 2
/** Versions read: 1 (no kind) and 2. */
export const CHECKPOINT_VERSIONS: readonly number[] = [1, 2]
/** The domain-separation name: signed bytes start with "reach/checkpoint/v<version>\n". */
export const CHECKPOINT_KIND = 'checkpoint'
/** What a checkpoint's state hash means. */
export const CHECKPOINT_KINDS = ['log', 'run'] as const
export type CheckpointKind = typeof CHECKPOINT_KINDS[number]
/**
 * Largest accepted encoded checkpoint. A version-1 checkpoint is at most
 * ~700 bytes (five hashes, a signature, a key, two integers); 4 KiB leaves
 * room without letting a peer make us parse megabytes.
 */
export const MAX_CHECKPOINT_BYTES = 4096

export interface CheckpointInput {
  kind: CheckpointKind
  log_id: string
  at_seq: number
  state_hash: string
  log_hash: string
  merkle_root: string
  timestamp: number
}

export interface CheckpointBody extends Omit<CheckpointInput, 'kind'> {
  version: 1 | 2
  /** Absent in version 1. */
  kind?: CheckpointKind
  signer: string
}

export interface Checkpoint extends CheckpointBody {
  checkpoint_id: string
  signature: string
}

export interface VerifyCheckpointOptions {
  /** When given, the checkpoint must be signed by this multibase key (RL-2106). */
  expectedSigner?: string
}

const CHECKPOINT_KEYS_V1 = ['at_seq', 'checkpoint_id', 'log_hash', 'log_id', 'merkle_root', 'signature', 'signer', 'state_hash', 'timestamp', 'version']
const CHECKPOINT_KEYS_V2 = [...CHECKPOINT_KEYS_V1, 'kind'].sort()
const HASH_FIELDS = ['log_id', 'state_hash', 'log_hash', 'merkle_root'] as const
const SIGNATURE_HEX = /^[0-9a-f]{128}$/

function malformed (message: string): never {
  throw new ReachError('RL-2105', { message })
}

function isSeq (value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

/** Why the input fields are unacceptable, or undefined. */
function inputProblem (input: Record<string, unknown>): string | undefined {
  for (const field of HASH_FIELDS) {
    if (!isHash(input[field])) return `${field} must be 64 lowercase hex characters`
  }
  if (!isSeq(input.at_seq)) return 'at_seq must be a non-negative safe integer'
  if (!isSeq(input.timestamp)) return 'timestamp must be a non-negative safe integer'
  return undefined
}

/** Why `value` is not a well-formed checkpoint of a version this node reads, or undefined. */
function checkpointProblem (value: unknown): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'checkpoint must be a JSON object'
  const cp = value as Record<string, unknown>
  if (cp.version !== 1 && cp.version !== 2) {
    return `unsupported checkpoint version ${JSON.stringify(cp.version) ?? 'undefined'} (this node understands versions ${CHECKPOINT_VERSIONS.join(' and ')})`
  }
  const expected = cp.version === 1 ? CHECKPOINT_KEYS_V1 : CHECKPOINT_KEYS_V2
  // The common case checked without sorting or filtering: exactly the expected members.
  let known = 0
  for (const k in cp) if (Object.hasOwn(cp, k) && expected.includes(k)) known++
  if (known !== expected.length || Object.keys(cp).length !== expected.length) {
    const missing = expected.filter(k => !Object.hasOwn(cp, k))
    if (missing.length > 0) return `checkpoint is missing ${missing.join(', ')}`
    const unknown = Object.keys(cp).sort().filter(k => !expected.includes(k))
    if (unknown.length > 0) return `checkpoint has unknown field(s) ${unknown.join(', ')}`
  }
  if (cp.version === 2 && !(CHECKPOINT_KINDS as readonly unknown[]).includes(cp.kind)) return `checkpoint kind ${JSON.stringify(cp.kind)} is not one of ${CHECKPOINT_KINDS.join(', ')}`
  const problem = inputProblem(cp)
  if (problem !== undefined) return problem
  if (!isHash(cp.checkpoint_id)) return 'checkpoint_id must be 64 lowercase hex characters'
  if (!isPublicKey(cp.signer)) return 'signer must be a multibase Ed25519 public key'
  if (typeof cp.signature !== 'string' || !SIGNATURE_HEX.test(cp.signature)) return 'signature must be 128 lowercase hex characters'
  return undefined
}

/** The signed part of a checkpoint. */
export function checkpointBody (cp: CheckpointBody): CheckpointBody {
  if (cp.version === 1) {
    return { version: 1, log_id: cp.log_id, at_seq: cp.at_seq, state_hash: cp.state_hash, log_hash: cp.log_hash, merkle_root: cp.merkle_root, signer: cp.signer, timestamp: cp.timestamp }
  }
  return {
    version: cp.version,
    kind: cp.kind,
    log_id: cp.log_id,
    at_seq: cp.at_seq,
    state_hash: cp.state_hash,
    log_hash: cp.log_hash,
    merkle_root: cp.merkle_root,
    signer: cp.signer,
    timestamp: cp.timestamp
  }
}

/** The exact bytes (as a string, UTF-8 encoded when signed) a checkpoint signature covers. */
export function checkpointMessage (cp: CheckpointBody): string {
  return domainMessage(CHECKPOINT_KIND, checkpointBody(cp), cp.version)
}

/** Build and sign a checkpoint (version 2). Deterministic. Throws RL-2105 for bad input. */
export function createCheckpoint (input: CheckpointInput, signer: Signer): Checkpoint {
  const problem = inputProblem(input as unknown as Record<string, unknown>) ??
    ((CHECKPOINT_KINDS as readonly unknown[]).includes(input.kind) ? undefined : `kind must be one of ${CHECKPOINT_KINDS.join(', ')}`)
  if (problem !== undefined) malformed(`cannot create checkpoint: ${problem}`)
  const body: CheckpointBody = checkpointBody({ ...input, version: CHECKPOINT_VERSION, signer: signer.publicKey })
  const message = domainMessage(CHECKPOINT_KIND, body, CHECKPOINT_VERSION)
  const signature = Buffer.from(signer.sign(message)).toString('hex')
  return { ...body, checkpoint_id: sha256Hex(message), signature }
}

/** The checkpoint file format: canonical JSON and one "\n". */
export function encodeCheckpoint (cp: Checkpoint): string {
  const problem = checkpointProblem(cp)
  if (problem !== undefined) malformed(problem)
  return canonicalize(cp) + '\n'
}

/**
 * Parse a checkpoint file. Strict: the text must be exactly
 * `encodeCheckpoint` of a well-formed checkpoint (version 1 or 2). Throws RL-2105.
 * Does not check the signature: call `verifyCheckpoint`.
 */
export function decodeCheckpoint (text: string): Checkpoint {
  if (typeof text !== 'string') malformed('checkpoint must be text')
  if (text.length > MAX_CHECKPOINT_BYTES) malformed(`checkpoint is larger than ${MAX_CHECKPOINT_BYTES} bytes`)
  if (!text.endsWith('\n')) malformed('checkpoint must end with a single newline')
  const json = text.slice(0, -1)
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch (err) {
    throw new ReachError('RL-2105', { message: `checkpoint is not valid JSON: ${(err as Error).message}`, cause: err })
  }
  const problem = checkpointProblem(value)
  if (problem !== undefined) malformed(problem)
  if (canonicalize(value) !== json) malformed('checkpoint is not in canonical form (RFC 8785: sorted keys, no whitespace, minimal escapes)')
  return value as Checkpoint
}

/**
 * Check a checkpoint on its own: well-formed (RL-2105), id matches the body
 * (RL-2108), signer is the expected one when given (RL-2106), signature valid
 * for `signer` (RL-2101). The signer check comes before the signature so a
 * checkpoint from an unexpected key costs no Ed25519 verification.
 */
export function verifyCheckpoint (cp: Checkpoint, opts: VerifyCheckpointOptions = {}): void {
  const problem = checkpointProblem(cp)
  if (problem !== undefined) malformed(problem)
  const message = checkpointMessage(cp)
  const id = sha256Hex(message)
  if (id !== cp.checkpoint_id) {
    throw new ReachError('RL-2108', {
      message: `checkpoint id ${cp.checkpoint_id} does not match its body (expected ${id})`,
      seq: cp.at_seq,
      details: { expected: id, actual: cp.checkpoint_id }
    })
  }
  if (opts.expectedSigner !== undefined && cp.signer !== opts.expectedSigner) {
    throw new ReachError('RL-2106', {
      message: `checkpoint ${cp.checkpoint_id} is signed by ${cp.signer}, expected ${opts.expectedSigner}`,
      seq: cp.at_seq,
      details: { expected: opts.expectedSigner, actual: cp.signer }
    })
  }
  if (!verifySignature(cp.signer, message, Buffer.from(cp.signature, 'hex'))) {
    throw new ReachError('RL-2101', {
      message: `checkpoint ${cp.checkpoint_id} has an invalid signature for ${cp.signer}`,
      seq: cp.at_seq,
      details: { checkpoint_id: cp.checkpoint_id, signer: cp.signer }
    })
  }
}

/** at_seq as 16 digits: Number.MAX_SAFE_INTEGER (9007199254740991) has 16. */
const SEQ_DIGITS = 16

/**
 * File name for a checkpoint: `<log_id[0:16]>-<at_seq, 16 digits>-<checkpoint_id[0:12]>.checkpoint`.
 *
 * Plain byte order then sorts files by log, then by at_seq ascending (the
 * zero padding makes lexical order numeric order), so `ls` and a directory
 * scan list a log's checkpoints oldest first and the newest is the last. The
 * id suffix keeps two different checkpoints at the same seq (another signer,
 * or an equivocation worth keeping as evidence) from overwriting each other.
 */
export function checkpointFileName (cp: Checkpoint): string {
  if (!isHash(cp.log_id) || !isSeq(cp.at_seq) || !isHash(cp.checkpoint_id)) malformed('checkpoint lacks log_id, at_seq or checkpoint_id')
  return `${cp.log_id.slice(0, 16)}-${String(cp.at_seq).padStart(SEQ_DIGITS, '0')}-${cp.checkpoint_id.slice(0, 12)}.checkpoint`
}
