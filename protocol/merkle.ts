/**
 * RFC 6962 Merkle tree over event hashes.
 *
 *   leaf  = sha256(0x00 || event_hash_bytes)
 *   node  = sha256(0x01 || left || right)
 *   empty = sha256("")
 *
 * The tree over n leaves splits at the largest power of two smaller than n
 * (RFC 6962 §2.1), so a log's root at size n never changes as the log grows
 * and old roots can be proven to be prefixes of new ones. Proofs are built as
 * RFC 6962 §2.1.1 PATH and §2.1.2 PROOF, and verified with the RFC 9162
 * §2.1.3.2 and §2.1.4.2 algorithms, which need only the sizes and the path.
 *
 * The tree functions take leaf hashes (32 bytes), not event hashes, so the
 * same code checks the published RFC 6962 vectors (raw leaf data) and Reach
 * logs (event hashes, through `leafHash`). Builders throw RL-1007 for
 * arguments out of range; the boolean verifiers judge untrusted input and
 * return false for anything wrong, never throw; the JSON verifiers throw
 * RL-2201 / RL-2202 with the reason.
 *
 * Sizes are JS numbers, so shifts are done with arithmetic (`/ 2`, `% 2`):
 * bitwise operators would truncate sizes above 2^31.
 */
import { hash } from 'node:crypto'
import { ReachError } from './errors.ts'
import { bytesToHex, hexToBytes, isHash } from './hash.ts'

const HASH_SIZE = 32

// One-shot `crypto.hash` over a reused input buffer measured ~1.5x faster
// than `createHash().update().digest()` per node (1M nodes: ~1.0 s against
// ~1.5 s), and the accumulator is on the verify hot path. Reuse is safe: the
// functions below are synchronous and copy the inputs in before hashing.
const LEAF_INPUT = Buffer.alloc(1 + HASH_SIZE)
const NODE_INPUT = Buffer.alloc(1 + 2 * HASH_SIZE)
LEAF_INPUT[0] = 0x00
NODE_INPUT[0] = 0x01

const EMPTY_ROOT: Uint8Array = hash('sha256', '', 'buffer')

function hashChildren (left: Uint8Array, right: Uint8Array): Uint8Array {
  NODE_INPUT.set(left, 1)
  NODE_INPUT.set(right, 1 + HASH_SIZE)
  return hash('sha256', NODE_INPUT, 'buffer')
}

function hashChildrenHex (left: string, right: string): string {
  NODE_INPUT.write(left, 1, 'hex')
  NODE_INPUT.write(right, 1 + HASH_SIZE, 'hex')
  return hash('sha256', NODE_INPUT, 'hex')
}

function equal (a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function isHashBytes (value: unknown): value is Uint8Array {
  return value instanceof Uint8Array && value.length === HASH_SIZE
}

function isSize (n: unknown): n is number {
  return Number.isSafeInteger(n) && (n as number) >= 0
}

function outOfRange (message: string, details: Record<string, unknown>): never {
  throw new ReachError('RL-1007', { message, details })
}

function checkSize (what: string, n: number): void {
  if (!isSize(n)) outOfRange(`${what} must be a non-negative integer, got ${String(n)}`, { [what]: n })
}

function checkHash (value: Uint8Array | undefined, what: string): Uint8Array {
  if (!isHashBytes(value)) throw new ReachError('RL-1005', { message: `${what} must be ${HASH_SIZE} bytes`, details: { what } })
  return value
}

/** Largest power of two strictly smaller than n (n >= 2): RFC 6962's split point. */
function split (n: number): number {
  let k = 1
  while (k * 2 < n) k *= 2
  return k
}

function isPowerOfTwo (n: number): boolean {
  let k = 1
  while (k < n) k *= 2
  return k === n
}

/** `leafHash` as hex, without allocating bytes. Throws RL-1005. */
export function leafHashHex (eventHashHex: string): string {
  if (!isHash(eventHashHex)) {
    throw new ReachError('RL-1005', { message: 'event hash must be 64 lowercase hex characters', details: { event_hash: eventHashHex } })
  }
  LEAF_INPUT.write(eventHashHex, 1, 'hex')
  return hash('sha256', LEAF_INPUT, 'hex')
}

/** The RFC 6962 leaf hash of an event hash (64 lowercase hex). Throws RL-1005. */
export function leafHash (eventHashHex: string): Uint8Array {
  // Buffer's hex decoder stops silently at the first bad character, so an
  // unchecked string would hash a truncated value instead of failing.
  if (!isHash(eventHashHex)) {
    throw new ReachError('RL-1005', { message: 'event hash must be 64 lowercase hex characters', details: { event_hash: eventHashHex } })
  }
  LEAF_INPUT.write(eventHashHex, 1, 'hex')
  return hash('sha256', LEAF_INPUT, 'buffer')
}

/** The RFC 6962 interior node hash. Throws RL-1005 unless both inputs are 32 bytes. */
export function nodeHash (left: Uint8Array, right: Uint8Array): Uint8Array {
  checkHash(left, 'left child hash')
  checkHash(right, 'right child hash')
  return hashChildren(left, right)
}

/**
 * Streaming root computation in O(log n) memory: the roots of the perfect
 * subtrees the leaves so far decompose into (a "compact range"), largest
 * first, one per set bit of `size`. Pushing a leaf merges equal-height
 * subtrees like carrying in binary addition, one hash per carry; `root()`
 * folds the stack right to left, which is the RFC 6962 split applied
 * recursively.
 */
export class MerkleAccumulator {
  // Subtree roots as hex strings, not byte arrays: on the verify hot path a
  // fresh Buffer per hash (malloc'd outside the JS heap) cost more than the
  // hashing itself; hex in and out of one reused input buffer is ~3x faster.
  #stack: string[] = []
  #size = 0

  get size (): number {
    return this.#size
  }

  /** Append a leaf hash (32 bytes; see `leafHash`). Throws RL-1005 otherwise. */
  push (leaf: Uint8Array): void {
    checkHash(leaf, `leaf hash ${this.#size}`)
    this.#pushLeafHex(bytesToHex(leaf))
  }

  /** Append the leaf of an event: `leafHash(eventHashHex)` without the round trip through bytes. */
  pushEventHash (eventHashHex: string): void {
    this.#pushLeafHex(leafHashHex(eventHashHex))
  }

  /**
   * Append a leaf hash given as 64 lowercase hex (e.g. computed in another
   * thread). The caller vouches for its form: this is the hot path.
   */
  pushLeafHex (leaf: string): void {
    this.#pushLeafHex(leaf)
  }

  #pushLeafHex (leaf: string): void {
    let s = this.#size
    this.#size++
    // Each trailing 1 bit of the old size is a subtree of the height the new
    // node has just reached: merge, and carry.
    let node = leaf
    for (; s % 2 === 1; s = (s - 1) / 2) node = hashChildrenHex(this.#stack.pop() as string, node)
    this.#stack.push(node)
  }

  /** Root over every leaf pushed so far, as hex; the empty-tree root for none. */
  rootHex (): string {
    const stack = this.#stack
    if (stack.length === 0) return bytesToHex(EMPTY_ROOT)
    let r = stack[stack.length - 1] as string
    for (let i = stack.length - 2; i >= 0; i--) r = hashChildrenHex(stack[i] as string, r)
    return r
  }

  /** Root over every leaf pushed so far; the empty-tree root for none. A fresh array each call. */
  root (): Uint8Array {
    return hexToBytes(this.rootHex())
  }
}

/** Root of the first `size` leaf hashes. Throws RL-1007 when size is out of range. */
export function merkleRoot (leaves: readonly Uint8Array[], size = leaves.length): Uint8Array {
  checkSize('size', size)
  if (size > leaves.length) outOfRange(`tree size ${size} is larger than the ${leaves.length} leaves given`, { size, leaves: leaves.length })
  const acc = new MerkleAccumulator()
  for (let i = 0; i < size; i++) acc.push(leaves[i] as Uint8Array)
  return acc.root()
}

/** MTH(D[lo:hi]) for hi - lo >= 1. */
function subtreeRoot (leaves: readonly Uint8Array[], lo: number, hi: number): Uint8Array {
  if (hi - lo === 1) return checkHash(leaves[lo], `leaf hash ${lo}`)
  const k = split(hi - lo)
  return hashChildren(subtreeRoot(leaves, lo, lo + k), subtreeRoot(leaves, lo + k, hi))
}

/** RFC 6962 §2.1.1 PATH(index, D[lo:hi]), appended leaf-side first. */
function path (leaves: readonly Uint8Array[], index: number, lo: number, hi: number, out: Uint8Array[]): void {
  if (hi - lo <= 1) return
  const k = split(hi - lo)
  if (index < lo + k) {
    path(leaves, index, lo, lo + k, out)
    out.push(new Uint8Array(subtreeRoot(leaves, lo + k, hi)))
  } else {
    path(leaves, index, lo + k, hi, out)
    out.push(new Uint8Array(subtreeRoot(leaves, lo, lo + k)))
  }
}

/**
 * RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b). `complete` (b) is true while the
 * old tree's root is a node of the new tree that the verifier already has.
 */
function subproof (leaves: readonly Uint8Array[], m: number, lo: number, hi: number, complete: boolean, out: Uint8Array[]): void {
  const n = hi - lo
  if (m === n) {
    if (!complete) out.push(new Uint8Array(subtreeRoot(leaves, lo, hi)))
    return
  }
  const k = split(n)
  if (m <= k) {
    subproof(leaves, m, lo, lo + k, complete, out)
    out.push(new Uint8Array(subtreeRoot(leaves, lo + k, hi)))
  } else {
    subproof(leaves, m - k, lo + k, hi, false, out)
    out.push(new Uint8Array(subtreeRoot(leaves, lo, lo + k)))
  }
}

/**
 * Audit path of leaf `index` in the tree of the first `size` leaf hashes
 * (RFC 6962 §2.1.1). Throws RL-1007 unless 0 <= index < size <= leaves.length.
 */
export function inclusionProof (leaves: readonly Uint8Array[], index: number, size: number): Uint8Array[] {
  checkSize('index', index)
  checkSize('size', size)
  if (size > leaves.length) outOfRange(`tree size ${size} is larger than the ${leaves.length} leaves given`, { size, leaves: leaves.length })
  if (index >= size) outOfRange(`leaf index ${index} is out of range for a tree of ${size} leaves`, { index, size })
  const out: Uint8Array[] = []
  path(leaves, index, 0, size, out)
  return out
}

/**
 * Proof that the tree of the first `oldSize` leaves is a prefix of the tree
 * of the first `newSize` (RFC 6962 §2.1.2); empty when oldSize is 0 or equal
 * to newSize. Throws RL-1007 unless 0 <= oldSize <= newSize <= leaves.length.
 */
export function consistencyProof (leaves: readonly Uint8Array[], oldSize: number, newSize: number): Uint8Array[] {
  checkSize('oldSize', oldSize)
  checkSize('newSize', newSize)
  if (newSize > leaves.length) outOfRange(`tree size ${newSize} is larger than the ${leaves.length} leaves given`, { newSize, leaves: leaves.length })
  if (oldSize > newSize) outOfRange(`old tree size ${oldSize} is larger than new tree size ${newSize}`, { oldSize, newSize })
  const out: Uint8Array[] = []
  if (oldSize > 0 && oldSize < newSize) subproof(leaves, oldSize, 0, newSize, true, out)
  return out
}

type Computed<T> = { ok: true, value: T } | { ok: false, reason: string }

/** RFC 9162 §2.1.3.2: the root the path leads to, or why it leads nowhere. */
function rootFromInclusion (leaf: Uint8Array, index: number, size: number, proof: readonly Uint8Array[]): Computed<Uint8Array> {
  if (!isSize(index) || !isSize(size)) return { ok: false, reason: 'leaf index and tree size must be non-negative integers' }
  if (index >= size) return { ok: false, reason: `leaf index ${index} is out of range for a tree of ${size} leaves` }
  if (!isHashBytes(leaf)) return { ok: false, reason: `leaf hash must be ${HASH_SIZE} bytes` }
  let fn = index
  let sn = size - 1
  let r = leaf
  for (let i = 0; i < proof.length; i++) {
    const p = proof[i]
    if (!isHashBytes(p)) return { ok: false, reason: `path element ${i} must be ${HASH_SIZE} bytes` }
    if (sn === 0) return { ok: false, reason: `path has ${proof.length} elements, more than a tree of ${size} leaves needs` }
    if (fn % 2 === 1 || fn === sn) {
      r = hashChildren(p, r)
      // A right-edge node with no right sibling at this level: climb past
      // the levels where it is promoted unchanged.
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2
        sn = Math.floor(sn / 2)
      }
    } else {
      r = hashChildren(r, p)
    }
    fn = Math.floor(fn / 2)
    sn = Math.floor(sn / 2)
  }
  if (sn !== 0) return { ok: false, reason: `path has ${proof.length} elements, fewer than a tree of ${size} leaves needs` }
  return { ok: true, value: r }
}

/**
 * True when `proof` shows leaf hash `leaf` at `index` in the tree of `size`
 * leaves whose root is `root` (RFC 9162 §2.1.3.2). Never throws.
 *
 * The size is bound only as far as it shapes the path: sizes that give leaf
 * `index` the same path shape (e.g. index 0 in sizes 3 and 4) are
 * indistinguishable to any RFC 9162 verifier. Trust (size, root) together,
 * from a signed checkpoint, never a root alone.
 */
export function verifyInclusion (leaf: Uint8Array, index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!isHashBytes(root) || !Array.isArray(proof)) return false
  const computed = rootFromInclusion(leaf, index, size, proof)
  return computed.ok && equal(computed.value, root)
}

/** Roots a consistency proof leads to; no `newRoot` when the proof cannot constrain it (from size 0). */
interface ConsistencyRoots { oldRoot: Uint8Array, newRoot?: Uint8Array }

/** RFC 9162 §2.1.4.2: the (old, new) roots the proof leads to, or why it leads nowhere. */
function rootsFromConsistency (oldSize: number, newSize: number, oldRoot: Uint8Array, proof: readonly Uint8Array[]): Computed<ConsistencyRoots> {
  if (!isSize(oldSize) || !isSize(newSize)) return { ok: false, reason: 'tree sizes must be non-negative integers' }
  if (oldSize > newSize) return { ok: false, reason: `old tree size ${oldSize} is larger than new tree size ${newSize}` }
  for (let i = 0; i < proof.length; i++) {
    if (!isHashBytes(proof[i])) return { ok: false, reason: `path element ${i} must be ${HASH_SIZE} bytes` }
  }
  // The trivial cases carry no path: the empty tree is a prefix of every
  // tree (its root is fixed), and a tree is consistent only with itself.
  if (oldSize === 0 || oldSize === newSize) {
    if (proof.length !== 0) return { ok: false, reason: `path must be empty from size ${oldSize} to ${newSize}, it has ${proof.length} elements` }
    if (oldSize === 0) return { ok: true, value: newSize === 0 ? { oldRoot: EMPTY_ROOT, newRoot: EMPTY_ROOT } : { oldRoot: EMPTY_ROOT } }
    return { ok: true, value: { oldRoot, newRoot: oldRoot } }
  }
  if (proof.length === 0) return { ok: false, reason: 'path is empty' }
  // When the old tree is perfect its root is a node of the new tree, and
  // the proof leaves it out: the verifier starts from the root it has.
  const startsWithOld = isPowerOfTwo(oldSize)
  let fn = oldSize - 1
  let sn = newSize - 1
  while (fn % 2 === 1) {
    fn = (fn - 1) / 2
    sn = Math.floor(sn / 2)
  }
  const first = startsWithOld ? oldRoot : proof[0] as Uint8Array
  let fr = first
  let sr = first
  for (let i = startsWithOld ? 0 : 1; i < proof.length; i++) {
    const c = proof[i] as Uint8Array
    if (sn === 0) return { ok: false, reason: `path has ${proof.length} elements, more than sizes ${oldSize} to ${newSize} need` }
    if (fn % 2 === 1 || fn === sn) {
      fr = hashChildren(c, fr)
      sr = hashChildren(c, sr)
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2
        sn = Math.floor(sn / 2)
      }
    } else {
      sr = hashChildren(sr, c)
    }
    fn = Math.floor(fn / 2)
    sn = Math.floor(sn / 2)
  }
  if (sn !== 0) return { ok: false, reason: `path has ${proof.length} elements, fewer than sizes ${oldSize} to ${newSize} need` }
  return { ok: true, value: { oldRoot: fr, newRoot: sr } }
}

function rootsMatch (computed: ConsistencyRoots, oldRoot: Uint8Array, newRoot: Uint8Array): boolean {
  return equal(computed.oldRoot, oldRoot) && (computed.newRoot === undefined || equal(computed.newRoot, newRoot))
}

/**
 * True when `proof` shows the tree of `oldSize` leaves with root `oldRoot`
 * is a prefix of the tree of `newSize` leaves with root `newRoot` (RFC 9162
 * §2.1.4.2). From size 0, `oldRoot` must be the empty-tree root and the
 * proof empty. Never throws.
 */
export function verifyConsistency (oldSize: number, newSize: number, oldRoot: Uint8Array, newRoot: Uint8Array, proof: readonly Uint8Array[]): boolean {
  if (!isHashBytes(oldRoot) || !isHashBytes(newRoot) || !Array.isArray(proof)) return false
  const computed = rootsFromConsistency(oldSize, newSize, oldRoot, proof)
  return computed.ok && rootsMatch(computed.value, oldRoot, newRoot)
}

// ---------------------------------------------------------------------------
// JSON proofs: what the CLI prints and peers send. Hashes are lowercase hex.

export interface InclusionProofJson {
  version: 1
  kind: 'inclusion'
  leaf_index: number
  tree_size: number
  /** The event hash; the leaf is `leafHash(event_hash)`. */
  event_hash: string
  root: string
  path: string[]
}

export interface ConsistencyProofJson {
  version: 1
  kind: 'consistency'
  old_size: number
  new_size: number
  old_root: string
  new_root: string
  path: string[]
}

const INCLUSION_KEYS = ['event_hash', 'kind', 'leaf_index', 'path', 'root', 'tree_size', 'version']
const CONSISTENCY_KEYS = ['kind', 'new_root', 'new_size', 'old_root', 'old_size', 'path', 'version']

function eventLeaves (eventHashes: readonly string[], size: number): Uint8Array[] {
  const leaves = new Array<Uint8Array>(size)
  for (let i = 0; i < size; i++) leaves[i] = leafHash(eventHashes[i] as string)
  return leaves
}

/**
 * Inclusion proof for the event at `index` among the first `size` event
 * hashes of a log. Throws RL-1007 for out-of-range arguments, RL-1005 for a
 * malformed event hash.
 */
export function buildInclusionProof (eventHashes: readonly string[], index: number, size: number): InclusionProofJson {
  checkSize('index', index)
  checkSize('size', size)
  if (size > eventHashes.length) outOfRange(`tree size ${size} is larger than the ${eventHashes.length} event hashes given`, { size, leaves: eventHashes.length })
  if (index >= size) outOfRange(`leaf index ${index} is out of range for a tree of ${size} leaves`, { index, size })
  const leaves = eventLeaves(eventHashes, size)
  return {
    version: 1,
    kind: 'inclusion',
    leaf_index: index,
    tree_size: size,
    event_hash: eventHashes[index] as string,
    root: bytesToHex(merkleRoot(leaves)),
    path: inclusionProof(leaves, index, size).map(bytesToHex)
  }
}

/**
 * Consistency proof between the first `oldSize` and the first `newSize`
 * event hashes of a log. Throws RL-1007 for out-of-range arguments.
 */
export function buildConsistencyProof (eventHashes: readonly string[], oldSize: number, newSize: number): ConsistencyProofJson {
  checkSize('oldSize', oldSize)
  checkSize('newSize', newSize)
  if (newSize > eventHashes.length) outOfRange(`tree size ${newSize} is larger than the ${eventHashes.length} event hashes given`, { newSize, leaves: eventHashes.length })
  if (oldSize > newSize) outOfRange(`old tree size ${oldSize} is larger than new tree size ${newSize}`, { oldSize, newSize })
  const leaves = eventLeaves(eventHashes, newSize)
  return {
    version: 1,
    kind: 'consistency',
    old_size: oldSize,
    new_size: newSize,
    old_root: bytesToHex(merkleRoot(leaves, oldSize)),
    new_root: bytesToHex(merkleRoot(leaves)),
    path: consistencyProof(leaves, oldSize, newSize).map(bytesToHex)
  }
}

/** Why `value` is not shaped like a proof of `kind` with these fields, or undefined. */
function shapeProblem (value: unknown, kind: string, keys: readonly string[], sizes: readonly string[], hashes: readonly string[]): string | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return 'not a JSON object'
  const p = value as Record<string, unknown>
  for (const key of Object.keys(p)) if (!keys.includes(key)) return `unknown field "${key}"`
  for (const key of keys) if (!(key in p)) return `missing field "${key}"`
  if (p.version !== 1) return `unsupported version ${JSON.stringify(p.version)}`
  if (p.kind !== kind) return `kind must be "${kind}"`
  for (const key of sizes) if (!isSize(p[key])) return `${key} must be a non-negative integer`
  for (const key of hashes) if (!isHash(p[key])) return `${key} must be 64 lowercase hex characters`
  if (!Array.isArray(p.path)) return 'path must be an array'
  for (let i = 0; i < p.path.length; i++) {
    if (!isHash(p.path[i])) return `path[${i}] must be 64 lowercase hex characters`
  }
  return undefined
}

/**
 * Checks an inclusion proof object; throws RL-2201 with the reason when it
 * is malformed or does not verify. What it proves: `event_hash` is leaf
 * `leaf_index` of the tree of `tree_size` leaves with root `root`. The caller
 * must still check that (tree_size, root) is one it trusts, e.g. a signed
 * checkpoint's (at_seq + 1, merkle_root).
 */
export function verifyInclusionJson (p: unknown): void {
  const problem = shapeProblem(p, 'inclusion', INCLUSION_KEYS, ['leaf_index', 'tree_size'], ['event_hash', 'root'])
  if (problem !== undefined) {
    throw new ReachError('RL-2201', { message: `inclusion proof malformed: ${problem}`, details: { reason: problem } })
  }
  const proof = p as InclusionProofJson
  const details = { leaf_index: proof.leaf_index, tree_size: proof.tree_size, event_hash: proof.event_hash }
  const computed = rootFromInclusion(leafHash(proof.event_hash), proof.leaf_index, proof.tree_size, proof.path.map(hexToBytes))
  if (!computed.ok) {
    throw new ReachError('RL-2201', { message: `inclusion proof invalid: ${computed.reason}`, details: { ...details, reason: computed.reason } })
  }
  const root = bytesToHex(computed.value)
  if (root !== proof.root) {
    throw new ReachError('RL-2201', {
      message: `inclusion proof invalid: the path leads to root ${root}, not ${proof.root}`,
      details: { ...details, expected_root: proof.root, computed_root: root }
    })
  }
}

/**
 * Checks a consistency proof object; throws RL-2202 with the reason when it
 * is malformed or does not verify. What it proves: the tree with `old_root`
 * is a prefix of the tree with `new_root`; the caller must still trust both
 * (size, root) pairs.
 */
export function verifyConsistencyJson (p: unknown): void {
  const problem = shapeProblem(p, 'consistency', CONSISTENCY_KEYS, ['old_size', 'new_size'], ['old_root', 'new_root'])
  if (problem !== undefined) {
    throw new ReachError('RL-2202', { message: `consistency proof malformed: ${problem}`, details: { reason: problem } })
  }
  const proof = p as ConsistencyProofJson
  const details = { old_size: proof.old_size, new_size: proof.new_size }
  const oldRoot = hexToBytes(proof.old_root)
  const newRoot = hexToBytes(proof.new_root)
  const computed = rootsFromConsistency(proof.old_size, proof.new_size, oldRoot, proof.path.map(hexToBytes))
  if (!computed.ok) {
    throw new ReachError('RL-2202', { message: `consistency proof invalid: ${computed.reason}`, details: { ...details, reason: computed.reason } })
  }
  if (!rootsMatch(computed.value, oldRoot, newRoot)) {
    const old = bytesToHex(computed.value.oldRoot)
    const neu = computed.value.newRoot === undefined ? proof.new_root : bytesToHex(computed.value.newRoot)
    throw new ReachError('RL-2202', {
      message: `consistency proof invalid: the path leads to roots ${old} → ${neu}, not ${proof.old_root} → ${proof.new_root}`,
      details: { ...details, expected_old_root: proof.old_root, expected_new_root: proof.new_root, computed_old_root: old, computed_new_root: neu }
    })
  }
}
