/**
 * RFC 6962 Merkle tree: published vectors, an independent reference built
 * straight from the RFC 6962 §2.1 definitions, property tests, and golden
 * JSON proofs with mutated twins.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isReachError, type ErrorCode } from '../../protocol/errors.ts'
import {
  buildConsistencyProof,
  buildInclusionProof,
  consistencyProof,
  inclusionProof,
  leafHash,
  MerkleAccumulator,
  merkleRoot,
  nodeHash,
  verifyConsistency,
  verifyConsistencyJson,
  verifyInclusion,
  verifyInclusionJson
} from '../../protocol/merkle.ts'

interface Vectors {
  leaf_data_hex: string[]
  roots: string[]
  node_hashes: string[][]
  inclusion: Array<{ leaf_index: number, tree_size: number, path: string[] }>
  consistency: Array<{ old_size: number, new_size: number, path: string[] }>
  inclusion_nodes: Array<{ leaf_index: number, tree_size: number, nodes: Array<[number, number]> }>
  consistency_nodes: Array<{ old_size: number, new_size: number, nodes: Array<[number, number]> }>
}

interface GoldenProofs {
  event_hashes: string[]
  inclusion: { leaf_index: number, tree_size: number, proof: unknown }
  consistency: { old_size: number, new_size: number, proof: unknown }
  mutated: Array<{ name: string, kind: 'inclusion' | 'consistency', code: ErrorCode, proof: unknown }>
}

function fixture<T> (name: string): T {
  return JSON.parse(readFileSync(new URL(`../fixtures/merkle/${name}`, import.meta.url), 'utf8')) as T
}

const V = fixture<Vectors>('rfc6962-vectors.json')
const GOLDEN = fixture<GoldenProofs>('proofs.json')

// --- Reference, written from RFC 6962 §2.1 and nothing else ----------------

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'))

function sha256 (...parts: Uint8Array[]): Uint8Array {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return new Uint8Array(h.digest())
}

/** Leaf hash of raw leaf data, as the published vectors define leaves. */
const dataLeaf = (data: Uint8Array): Uint8Array => sha256(Uint8Array.of(0x00), data)

/** RFC 6962's k for n >= 2: the largest power of two smaller than n. */
const splitOf = (n: number): number => 2 ** Math.ceil(Math.log2(n)) / 2

type Range = readonly [number, number]
const rangeKey = (r: Range): string => `${r[0]}:${r[1]}`

/** MTH(D[lo:hi]) over a fixed list of leaf hashes, memoised. */
class RefTree {
  readonly leaves: readonly Uint8Array[]
  readonly #memo = new Map<string, Uint8Array>()

  constructor (leaves: readonly Uint8Array[]) {
    this.leaves = leaves
  }

  mth (lo: number, hi: number): Uint8Array {
    if (hi === lo) return sha256()
    if (hi - lo === 1) return this.leaves[lo] as Uint8Array
    const key = rangeKey([lo, hi])
    let h = this.#memo.get(key)
    if (h === undefined) {
      const k = splitOf(hi - lo)
      h = sha256(Uint8Array.of(0x01), this.mth(lo, lo + k), this.mth(lo + k, hi))
      this.#memo.set(key, h)
    }
    return h
  }
}

/** RFC 6962 §2.1.1 PATH(m, D[lo:hi]) as the ranges of the subtrees it lists. */
function pathRanges (m: number, lo: number, hi: number): Range[] {
  if (hi - lo <= 1) return []
  const k = splitOf(hi - lo)
  return m < lo + k
    ? [...pathRanges(m, lo, lo + k), [lo + k, hi]]
    : [...pathRanges(m, lo + k, hi), [lo, lo + k]]
}

/** RFC 6962 §2.1.2 SUBPROOF(m, D[lo:hi], b) as ranges; m counts from lo. */
function subproofRanges (m: number, lo: number, hi: number, b: boolean): Range[] {
  const n = hi - lo
  if (m === n) return b ? [] : [[lo, hi]]
  const k = splitOf(n)
  return m <= k
    ? [...subproofRanges(m, lo, lo + k, b), [lo + k, hi]]
    : [...subproofRanges(m - k, lo + k, hi, false), [lo, lo + k]]
}

const consistencyRanges = (m: number, n: number): Range[] => (m === 0 || m === n ? [] : subproofRanges(m, 0, n, true))

/**
 * How a verifier that believes the proof is for these sizes combines its
 * inputs into the root of D[lo:hi]: an expression over labels ('L' the leaf,
 * 'O' the old root, 'p<i>' proof element i). Two claims give the same
 * verdict on the same proof exactly when their expressions are equal, which
 * predicts, independently of the code under test, when tampering with a size
 * or index must be caught.
 */
function expression (lo: number, hi: number, labels: ReadonlyMap<string, string>): string | undefined {
  const label = labels.get(rangeKey([lo, hi]))
  if (label !== undefined) return label
  if (hi - lo <= 1) return undefined
  const k = splitOf(hi - lo)
  const a = expression(lo, lo + k, labels)
  const b = expression(lo + k, hi, labels)
  return a === undefined || b === undefined ? undefined : `H(${a},${b})`
}

function inclusionMeaning (index: number, size: number, proofLength: number): string | undefined {
  if (!(index >= 0 && index < size)) return undefined
  const ranges = pathRanges(index, 0, size)
  if (ranges.length !== proofLength) return undefined
  const labels = new Map<string, string>([[rangeKey([index, index + 1]), 'L']])
  ranges.forEach((r, i) => labels.set(rangeKey(r), `p${i}`))
  return expression(0, size, labels)
}

const isPow2 = (n: number): boolean => n > 0 && 2 ** Math.round(Math.log2(n)) === n

function consistencyMeaning (m: number, n: number, proofLength: number): { old: string, new: string } | undefined {
  if (!(m > 0 && m < n)) return undefined
  const ranges = consistencyRanges(m, n)
  if (ranges.length !== proofLength) return undefined
  const labels = new Map<string, string>()
  ranges.forEach((r, i) => labels.set(rangeKey(r), `p${i}`))
  if (isPow2(m)) labels.set(rangeKey([0, m]), 'O')
  const old = expression(0, m, labels)
  const neu = expression(0, n, labels)
  return old === undefined || neu === undefined ? undefined : { old, new: neu }
}

/** Whether a consistency proof made for (m, n) must verify when claimed for (m2, n2). */
function consistencyClaimHolds (m: number, n: number, m2: number, n2: number, proofLength: number): boolean {
  const truth = consistencyMeaning(m, n, proofLength)
  const claim = consistencyMeaning(m2, n2, proofLength)
  if (truth === undefined || claim === undefined) return false
  // 'O' is the old root the verifier is handed: an atom when m is a power of
  // two (the proof leaves it out), otherwise the expression it stands for.
  const o = isPow2(m) ? 'O' : truth.old
  const resolve = (e: string): string => e.replaceAll('O', o)
  return resolve(claim.old) === resolve(truth.old) && resolve(claim.new) === resolve(truth.new)
}

// --- Helpers ---------------------------------------------------------------

function randomLeaves (seed: number, n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => sha256(Buffer.from(`leaf ${seed} ${i}`)))
}

function flipped (bytes: Uint8Array, at: number, mask: number): Uint8Array {
  const copy = new Uint8Array(bytes)
  copy[at % copy.length] = (copy[at % copy.length] as number) ^ mask
  return copy
}

function withElement (proof: readonly Uint8Array[], at: number, replace: (b: Uint8Array) => Uint8Array): Uint8Array[] {
  return proof.map((p, i) => (i === at ? replace(p) : p))
}

function codeOf (fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (isReachError(err)) return err.code
    throw err
  }
  return undefined
}

const VECTOR_LEAVES = V.leaf_data_hex.map((d) => dataLeaf(unhex(d)))
const node = ([level, index]: [number, number]): string => V.node_hashes[level]?.[index] as string

// --- Published vectors -----------------------------------------------------

describe('RFC 6962 published vectors (transparency-dev/merkle)', () => {
  it('leaf hashes of the vector data are the published level-0 node hashes', () => {
    expect(VECTOR_LEAVES.map(hex)).toEqual(V.node_hashes[0])
  })

  it('merkleRoot matches the published root for every size 0..8, and so does the accumulator', () => {
    const acc = new MerkleAccumulator()
    expect(hex(acc.root())).toBe(V.roots[0])
    for (let n = 0; n <= 8; n++) {
      expect(hex(merkleRoot(VECTOR_LEAVES, n)), `size ${n}`).toBe(V.roots[n])
      if (n > 0) {
        acc.push(VECTOR_LEAVES[n - 1] as Uint8Array)
        expect(hex(acc.root()), `accumulator size ${n}`).toBe(V.roots[n])
      }
    }
    expect(hex(merkleRoot(VECTOR_LEAVES))).toBe('5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328')
  })

  it('interior nodes are sha256(0x01 || left || right)', () => {
    for (let level = 1; level < V.node_hashes.length; level++) {
      const below = V.node_hashes[level - 1] as string[]
      V.node_hashes[level]?.forEach((h, i) => {
        expect(hex(nodeHash(unhex(below[2 * i] as string), unhex(below[2 * i + 1] as string)))).toBe(h)
      })
    }
  })

  it.each(V.inclusion)('inclusion path for leaf $leaf_index of $tree_size', ({ leaf_index: i, tree_size: n, path }) => {
    expect(inclusionProof(VECTOR_LEAVES, i, n).map(hex)).toEqual(path)
    const root = unhex(V.roots[n] as string)
    const leaf = VECTOR_LEAVES[i] as Uint8Array
    const proof = path.map(unhex)
    expect(verifyInclusion(leaf, i, n, proof, root)).toBe(true)
    // The corruptions transparency-dev's verifier tests apply.
    const some = unhex('abacaba000000000000000000000000000000000000000000060061e00123456')
    const empty = unhex(V.roots[0] as string)
    const rejected: Array<[string, boolean]> = [
      ['index - 1', verifyInclusion(leaf, i - 1, n, proof, root)],
      ['index + 1', verifyInclusion(leaf, i + 1, n, proof, root)],
      ['index ^ 2', verifyInclusion(leaf, i ^ 2, n, proof, root)],
      ['size * 2', verifyInclusion(leaf, i, n * 2, proof, root)],
      ['size / 2', verifyInclusion(leaf, i, Math.floor(n / 2), proof, root)],
      ['wrong leaf', verifyInclusion(dataLeaf(Buffer.from('WrongLeaf')), i, n, proof, root)],
      ['empty root', verifyInclusion(leaf, i, n, proof, empty)],
      ['random root', verifyInclusion(leaf, i, n, proof, some)],
      ['trailing garbage', verifyInclusion(leaf, i, n, [...proof, new Uint8Array(0)], root)],
      ['trailing root', verifyInclusion(leaf, i, n, [...proof, root], root)],
      ['preceding garbage', verifyInclusion(leaf, i, n, [new Uint8Array(0), ...proof], root)],
      ['preceding root', verifyInclusion(leaf, i, n, [root, ...proof], root)],
      ...proof.map((_, k): [string, boolean] => [`proof[${k}] bit 3`, verifyInclusion(leaf, i, n, withElement(proof, k, (b) => flipped(b, 0, 8)), root)]),
      ...(proof.length > 0 ? [['removed component', verifyInclusion(leaf, i, n, proof.slice(0, -1), root)] as [string, boolean]] : []),
      ...(proof.length > 1 ? [['inserted component', verifyInclusion(leaf, i, n, [proof[0] as Uint8Array, some, ...proof.slice(1)], root)] as [string, boolean]] : [])
    ]
    expect(rejected.filter(([, ok]) => ok).map(([why]) => why)).toEqual([])
  })

  it.each(V.consistency)('consistency proof $old_size → $new_size', ({ old_size: m, new_size: n, path }) => {
    expect(consistencyProof(VECTOR_LEAVES, m, n).map(hex)).toEqual(path)
    const r1 = unhex(V.roots[m] as string)
    const r2 = unhex(V.roots[n] as string)
    const proof = path.map(unhex)
    expect(verifyConsistency(m, n, r1, r2, proof)).toBe(true)
    if (proof.length === 0) return
    const rejected: Array<[string, boolean]> = [
      ['size1 - 1', verifyConsistency(m - 1, n, r1, r2, proof)],
      ['size1 + 1', verifyConsistency(m + 1, n, r1, r2, proof)],
      ['size1 ^ 2', verifyConsistency(m ^ 2, n, r1, r2, proof)],
      ['size2 * 2', verifyConsistency(m, n * 2, r1, r2, proof)],
      ['size2 / 2', verifyConsistency(m, Math.floor(n / 2), r1, r2, proof)],
      ['wrong root1', verifyConsistency(m, n, flipped(r1, 0, 1), r2, proof)],
      ['wrong root2', verifyConsistency(m, n, r1, flipped(r2, 0, 1), proof)],
      ['swapped roots', verifyConsistency(m, n, r2, r1, proof)],
      ['empty proof', verifyConsistency(m, n, r1, r2, [])],
      ['trailing garbage', verifyConsistency(m, n, r1, r2, [...proof, new Uint8Array(0)])],
      ['trailing root1', verifyConsistency(m, n, r1, r2, [...proof, r1])],
      ['trailing root2', verifyConsistency(m, n, r1, r2, [...proof, r2])],
      ['preceding garbage', verifyConsistency(m, n, r1, r2, [new Uint8Array(0), ...proof])],
      ['preceding root1', verifyConsistency(m, n, r1, r2, [r1, ...proof])],
      ['preceding root2', verifyConsistency(m, n, r1, r2, [r2, ...proof])],
      ['preceding proof[0]', verifyConsistency(m, n, r1, r2, [proof[0] as Uint8Array, ...proof])],
      ['truncated proof', verifyConsistency(m, n, r1, r2, proof.slice(0, -1))],
      ...proof.map((_, k): [string, boolean] => [`proof[${k}] bit 4`, verifyConsistency(m, n, r1, r2, withElement(proof, k, (b) => flipped(b, 0, 16)))])
    ]
    expect(rejected.filter(([, ok]) => ok).map(([why]) => why)).toEqual([])
  })

  it.each(V.inclusion_nodes)('inclusion path for leaf $leaf_index of $tree_size lists the published nodes', ({ leaf_index: i, tree_size: n, nodes }) => {
    const path = nodes.map(node)
    expect(inclusionProof(VECTOR_LEAVES, i, n).map(hex)).toEqual(path)
    expect(verifyInclusion(VECTOR_LEAVES[i] as Uint8Array, i, n, path.map(unhex), unhex(V.roots[n] as string))).toBe(true)
  })

  it.each(V.consistency_nodes)('consistency proof $old_size → $new_size lists the published nodes', ({ old_size: m, new_size: n, nodes }) => {
    const path = nodes.map(node)
    expect(consistencyProof(VECTOR_LEAVES, m, n).map(hex)).toEqual(path)
    expect(verifyConsistency(m, n, unhex(V.roots[m] as string), unhex(V.roots[n] as string), path.map(unhex))).toBe(true)
  })
})

// --- Edge cases of the verifiers -------------------------------------------

describe('verifier edge cases', () => {
  const leaf = VECTOR_LEAVES[0] as Uint8Array
  const root1 = unhex(V.roots[1] as string)
  const empty = unhex(V.roots[0] as string)

  it('a one-leaf tree: the root is the leaf hash and the path is empty', () => {
    expect(verifyInclusion(leaf, 0, 1, [], root1)).toBe(true)
    expect(verifyInclusion(leaf, 0, 1, [], new Uint8Array(0))).toBe(false)
    expect(verifyInclusion(new Uint8Array(0), 0, 1, [], root1)).toBe(false)
    expect(verifyInclusion(leaf, 0, 1, [leaf], root1)).toBe(false)
  })

  it('inclusion in an empty tree or past its end never verifies', () => {
    for (const [i, n] of [[0, 0], [1, 0], [1, 1], [2, 1]] as const) {
      expect(verifyInclusion(leaf, i, n, [], root1)).toBe(false)
      expect(verifyInclusion(leaf, i, n, [], empty)).toBe(false)
    }
  })

  it('nonsense numbers are rejected, not thrown', () => {
    for (const [i, n] of [[-1, 1], [0.5, 1], [0, 1.5], [Number.NaN, 1], [0, Number.POSITIVE_INFINITY], [0, 2 ** 53]] as const) {
      expect(verifyInclusion(leaf, i, n, [], root1)).toBe(false)
      expect(verifyConsistency(i, n, root1, root1, [])).toBe(false)
    }
  })

  it('consistency: sizes that are always consistent need an empty path and matching roots', () => {
    const r2 = unhex(V.roots[2] as string)
    expect(verifyConsistency(0, 0, empty, empty, [])).toBe(true)
    expect(verifyConsistency(0, 5, empty, r2, [])).toBe(true)
    expect(verifyConsistency(1, 1, root1, root1, [])).toBe(true)
    expect(verifyConsistency(0, 0, empty, root1, [])).toBe(false)
    expect(verifyConsistency(0, 5, root1, r2, [])).toBe(false) // the size-0 root is fixed
    expect(verifyConsistency(1, 1, root1, r2, [])).toBe(false)
    expect(verifyConsistency(0, 5, empty, r2, [empty])).toBe(false)
    expect(verifyConsistency(1, 1, root1, root1, [empty])).toBe(false)
    expect(verifyConsistency(1, 2, root1, r2, [])).toBe(false)
    expect(verifyConsistency(2, 1, r2, root1, [])).toBe(false)
  })

  it('a crafted proof cannot shrink a log (old size larger than new)', () => {
    // Without the size check, RFC 9162's loop accepts this "time travel":
    // fr stays the old root and sr becomes H(old root, c).
    const old = unhex(V.roots[3] as string)
    const c = unhex(V.roots[1] as string)
    const forged = sha256(Uint8Array.of(0x01), old, c)
    expect(verifyConsistency(3, 2, old, forged, [old, c])).toBe(false)
    expect(codeOf(() => verifyConsistencyJson({ version: 1, kind: 'consistency', old_size: 3, new_size: 2, old_root: hex(old), new_root: hex(forged), path: [hex(old), hex(c)] }))).toBe('RL-2202')
  })

  it('an over-long path is refused before hashing past the root', () => {
    const leaves = VECTOR_LEAVES
    const proof = inclusionProof(leaves, 5, 8).map(hex)
    const p = { version: 1, kind: 'inclusion', leaf_index: 5, tree_size: 8, event_hash: '00'.repeat(32), root: V.roots[8], path: [...proof, ...Array<string>(1000).fill('11'.repeat(32))] }
    expect(() => verifyInclusionJson(p)).toThrow('more than a tree of 8 leaves needs')
    const c = buildConsistencyProof(GOLDEN.event_hashes, 3, 7)
    expect(() => verifyConsistencyJson({ ...c, path: [...c.path, ...Array<string>(1000).fill('11'.repeat(32))] })).toThrow('more than sizes 3 to 7 need')
  })

  it('documented limit: a size that gives the leaf the same path shape is indistinguishable', () => {
    // Leaf 0 of 3 and of 4 both climb "sibling right, sibling right": the
    // verifier cannot tell leaf 2 from the node over leaves 2..3. Any RFC 9162
    // verifier shares this; checkpoints sign (size, root) together.
    const leaves = VECTOR_LEAVES.slice(0, 4)
    const proof = inclusionProof(leaves, 0, 3)
    const root = merkleRoot(leaves, 3)
    expect(verifyInclusion(leaves[0] as Uint8Array, 0, 3, proof, root)).toBe(true)
    expect(verifyInclusion(leaves[0] as Uint8Array, 0, 4, proof, root)).toBe(true)
    expect(inclusionMeaning(0, 4, proof.length)).toBe(inclusionMeaning(0, 3, proof.length))
  })
})

// --- Property tests against the reference ----------------------------------

describe('properties', () => {
  const arbTree = fc.record({ seed: fc.nat(), size: fc.integer({ min: 1, max: 300 }) })

  it('merkleRoot equals the RFC 6962 definition, and the accumulator agrees at every size', () => {
    fc.assert(fc.property(arbTree, ({ seed, size }) => {
      const leaves = randomLeaves(seed, size)
      const ref = new RefTree(leaves)
      const acc = new MerkleAccumulator()
      expect(hex(acc.root())).toBe(hex(sha256()))
      for (let n = 1; n <= size; n++) {
        acc.push(leaves[n - 1] as Uint8Array)
        expect(acc.size).toBe(n)
        const root = hex(acc.root())
        expect(root).toBe(hex(merkleRoot(leaves, n)))
        expect(root).toBe(hex(ref.mth(0, n)))
        expect(hex(acc.root())).toBe(root) // root() leaves the accumulator unchanged
      }
    }), { numRuns: 60 })
  })

  it('every inclusion proof is RFC 6962 PATH, verifies, and fails under any tampering', () => {
    fc.assert(fc.property(
      arbTree, fc.nat(), fc.nat(), fc.nat(), fc.integer({ min: 1, max: 255 }), fc.nat(), fc.nat(),
      ({ seed, size }, at, element, byte, mask, otherIndex, otherSize) => {
        const leaves = randomLeaves(seed, size)
        const ref = new RefTree(leaves)
        const i = at % size
        const leaf = leaves[i] as Uint8Array
        const root = merkleRoot(leaves, size)
        const proof = inclusionProof(leaves, i, size)
        expect(proof.map(hex)).toEqual(pathRanges(i, 0, size).map(([lo, hi]) => hex(ref.mth(lo, hi))))
        expect(verifyInclusion(leaf, i, size, proof, root)).toBe(true)

        if (proof.length > 0) {
          const k = element % proof.length
          expect(verifyInclusion(leaf, i, size, withElement(proof, k, (b) => flipped(b, byte, mask)), root)).toBe(false)
          expect(verifyInclusion(leaf, i, size, proof.slice(1), root)).toBe(false)
          expect(verifyInclusion(leaf, i, size, proof.slice(0, -1), root)).toBe(false)
        }
        expect(verifyInclusion(leaf, i, size, proof, flipped(root, byte, mask))).toBe(false)
        expect(verifyInclusion(flipped(leaf, byte, mask), i, size, proof, root)).toBe(false)
        expect(verifyInclusion(leaf, i, size, [...proof, root], root)).toBe(false)
        expect(verifyInclusion(leaf, i, size, [root, ...proof], root)).toBe(false)

        const j = otherIndex % (size + 2)
        if (j !== i) expect(verifyInclusion(leaf, j, size, proof, root)).toBe(false)
        // A different size is caught exactly when it changes what the path
        // means (see the documented limit above); the reference says which.
        const n2 = otherSize % (2 * size + 2)
        if (n2 !== size) {
          const same = inclusionMeaning(i, n2, proof.length) === inclusionMeaning(i, size, proof.length)
          expect(verifyInclusion(leaf, i, n2, proof, root)).toBe(same)
        }
      }
    ))
  })

  it('every leaf of every tree up to 64 verifies and no single-bit flip of its path does', () => {
    const leaves = randomLeaves(7, 64)
    for (let n = 1; n <= 64; n++) {
      const root = merkleRoot(leaves, n)
      for (let i = 0; i < n; i++) {
        const proof = inclusionProof(leaves, i, n)
        expect(verifyInclusion(leaves[i] as Uint8Array, i, n, proof, root)).toBe(true)
        for (let k = 0; k < proof.length; k++) {
          for (const bit of [0, 7]) {
            expect(verifyInclusion(leaves[i] as Uint8Array, i, n, withElement(proof, k, (b) => flipped(b, 31 * (bit & 1), 1 << bit)), root)).toBe(false)
          }
        }
        for (let j = 0; j < n; j++) {
          if (j !== i) expect(verifyInclusion(leaves[j] as Uint8Array, j, n, proof, root)).toBe(false)
        }
      }
    }
  })

  it('every consistency proof is RFC 6962 PROOF, verifies, and fails under any tampering', () => {
    fc.assert(fc.property(
      arbTree, fc.nat(), fc.nat(), fc.nat(), fc.integer({ min: 1, max: 255 }), fc.nat(), fc.nat(),
      ({ seed, size: n }, old, element, byte, mask, otherOld, otherNew) => {
        const leaves = randomLeaves(seed, n)
        const ref = new RefTree(leaves)
        const m = old % (n + 1)
        const r1 = merkleRoot(leaves, m)
        const r2 = merkleRoot(leaves, n)
        const proof = consistencyProof(leaves, m, n)
        expect(proof.map(hex)).toEqual(consistencyRanges(m, n).map(([lo, hi]) => hex(ref.mth(lo, hi))))
        expect(verifyConsistency(m, n, r1, r2, proof)).toBe(true)

        expect(verifyConsistency(m, n, flipped(r1, byte, mask), r2, proof)).toBe(false)
        // From size 0 the proof says nothing about the new root (any tree
        // extends the empty one); everywhere else the new root is bound.
        if (m > 0) expect(verifyConsistency(m, n, r1, flipped(r2, byte, mask), proof)).toBe(false)
        if (hex(r1) !== hex(r2)) expect(verifyConsistency(m, n, r2, r1, proof)).toBe(false)
        expect(verifyConsistency(m, n, r1, r2, [...proof, r2])).toBe(false)
        expect(verifyConsistency(m, n, r1, r2, [r1, ...proof])).toBe(false)
        if (proof.length === 0) return

        const k = element % proof.length
        expect(verifyConsistency(m, n, r1, r2, withElement(proof, k, (b) => flipped(b, byte, mask)))).toBe(false)
        expect(verifyConsistency(m, n, r1, r2, proof.slice(1))).toBe(false)
        expect(verifyConsistency(m, n, r1, r2, proof.slice(0, -1))).toBe(false)
        expect(verifyConsistency(m, n, r1, r2, [])).toBe(false)

        const m2 = otherOld % (n + 2)
        const n2 = otherNew % (2 * n + 2)
        if (m2 !== m || n2 !== n) {
          expect(verifyConsistency(m2, n2, r1, r2, proof)).toBe(consistencyClaimHolds(m, n, m2, n2, proof.length))
        }
      }
    ))
  })

  it('the accumulator takes a million leaves and matches the RFC 6962 root', () => {
    // One repeated leaf keeps the reference cheap: MTH of k equal leaves
    // depends on k only, so it memoises to O(log² n) hashes while the
    // accumulator still does all the carries a real log would.
    const leaf = dataLeaf(Buffer.from('event'))
    const memo = new Map<number, Uint8Array>()
    const refEqual = (n: number): Uint8Array => {
      if (n === 1) return leaf
      let h = memo.get(n)
      if (h === undefined) {
        const k = splitOf(n)
        h = sha256(Uint8Array.of(0x01), refEqual(k), refEqual(n - k))
        memo.set(n, h)
      }
      return h
    }
    const N = 1_000_000
    const checkpoints = new Set([1, 2, 3, 1023, 1024, 1025, 65_535, 65_536, 524_288, 524_289, 999_999, N])
    const acc = new MerkleAccumulator()
    for (let n = 1; n <= N; n++) {
      acc.push(leaf)
      if (checkpoints.has(n)) expect(hex(acc.root()), `size ${n}`).toBe(hex(refEqual(n)))
    }
    expect(acc.size).toBe(N)
  })
})

// --- Argument checking -----------------------------------------------------

describe('out-of-range arguments', () => {
  const leaves = VECTOR_LEAVES

  it('builders throw RL-1007', () => {
    const cases: Array<[string, () => unknown]> = [
      ['root of more leaves than given', () => merkleRoot(leaves, 9)],
      ['negative size', () => merkleRoot(leaves, -1)],
      ['fractional size', () => merkleRoot(leaves, 1.5)],
      ['NaN size', () => merkleRoot(leaves, Number.NaN)],
      ['index == size', () => inclusionProof(leaves, 3, 3)],
      ['index > size', () => inclusionProof(leaves, 4, 3)],
      ['negative index', () => inclusionProof(leaves, -1, 3)],
      ['fractional index', () => inclusionProof(leaves, 0.5, 3)],
      ['size beyond leaves', () => inclusionProof(leaves, 0, 9)],
      ['inclusion in empty tree', () => inclusionProof(leaves, 0, 0)],
      ['old > new', () => consistencyProof(leaves, 5, 4)],
      ['new beyond leaves', () => consistencyProof(leaves, 1, 9)],
      ['negative old', () => consistencyProof(leaves, -1, 4)],
      ['fractional new', () => consistencyProof(leaves, 1, 4.5)],
      ['JSON inclusion index == size', () => buildInclusionProof(GOLDEN.event_hashes, 2, 2)],
      ['JSON inclusion size beyond log', () => buildInclusionProof(GOLDEN.event_hashes, 0, GOLDEN.event_hashes.length + 1)],
      ['JSON consistency old > new', () => buildConsistencyProof(GOLDEN.event_hashes, 3, 2)],
      ['JSON consistency new beyond log', () => buildConsistencyProof(GOLDEN.event_hashes, 1, GOLDEN.event_hashes.length + 1)]
    ]
    expect(cases.map(([why, fn]) => [why, codeOf(fn)])).toEqual(cases.map(([why]) => [why, 'RL-1007']))
  })

  it('the messages say what was out of range', () => {
    expect(() => inclusionProof(leaves, 3, 3)).toThrow('leaf index 3 is out of range for a tree of 3 leaves')
    expect(() => consistencyProof(leaves, 5, 4)).toThrow('old tree size 5 is larger than new tree size 4')
  })

  it('hashes of the wrong shape throw RL-1005', () => {
    expect(codeOf(() => leafHash('AB'.repeat(32)))).toBe('RL-1005')
    expect(codeOf(() => leafHash('ab'.repeat(31)))).toBe('RL-1005')
    expect(codeOf(() => leafHash('zz'.repeat(32)))).toBe('RL-1005')
    expect(codeOf(() => new MerkleAccumulator().push(new Uint8Array(31)))).toBe('RL-1005')
    expect(codeOf(() => nodeHash(new Uint8Array(32), new Uint8Array(33)))).toBe('RL-1005')
    expect(codeOf(() => merkleRoot([new Uint8Array(32), new Uint8Array(0)]))).toBe('RL-1005')
    expect(codeOf(() => leafHash('ab'.repeat(32)))).toBeUndefined()
  })

  it('leafHash is sha256(0x00 || event hash bytes)', () => {
    const e = sha256(Buffer.from('an event'))
    expect(hex(leafHash(hex(e)))).toBe(hex(dataLeaf(e)))
  })

  it('the accumulator copies what it is given', () => {
    const buf = new Uint8Array(VECTOR_LEAVES[0] as Uint8Array)
    const acc = new MerkleAccumulator()
    acc.push(buf)
    buf.fill(0)
    expect(hex(acc.root())).toBe(V.roots[1])
    acc.root().fill(0)
    expect(hex(acc.root())).toBe(V.roots[1])
  })
})

// --- JSON proofs -----------------------------------------------------------

describe('JSON proofs', () => {
  it('the builders reproduce the golden proofs byte for byte', () => {
    const { event_hashes: hashes, inclusion, consistency } = GOLDEN
    expect(buildInclusionProof(hashes, inclusion.leaf_index, inclusion.tree_size)).toEqual(inclusion.proof)
    expect(buildConsistencyProof(hashes, consistency.old_size, consistency.new_size)).toEqual(consistency.proof)
  })

  it('the golden proofs verify', () => {
    expect(() => verifyInclusionJson(GOLDEN.inclusion.proof)).not.toThrow()
    expect(() => verifyConsistencyJson(GOLDEN.consistency.proof)).not.toThrow()
  })

  it.each(GOLDEN.mutated)('mutated twin fails with $code: $name', ({ kind, code, proof }) => {
    const verify = kind === 'inclusion' ? verifyInclusionJson : verifyConsistencyJson
    expect(codeOf(() => verify(proof))).toBe(code)
  })

  it('every built proof verifies, for every index and size pair of a small log', () => {
    const hashes = GOLDEN.event_hashes
    for (let n = 1; n <= hashes.length; n++) {
      for (let i = 0; i < n; i++) expect(() => verifyInclusionJson(buildInclusionProof(hashes, i, n))).not.toThrow()
      for (let m = 0; m <= n; m++) expect(() => verifyConsistencyJson(buildConsistencyProof(hashes, m, n))).not.toThrow()
    }
  })

  it('the error says which roots disagree', () => {
    const bad = { ...(GOLDEN.inclusion.proof as Record<string, unknown>), root: '00'.repeat(32) }
    try {
      verifyInclusionJson(bad)
      expect.unreachable()
    } catch (err) {
      expect(isReachError(err, 'RL-2201')).toBe(true)
      expect((err as { details: Record<string, unknown> }).details).toMatchObject({ expected_root: '00'.repeat(32), computed_root: (GOLDEN.inclusion.proof as { root: string }).root })
    }
  })

  it('a tampered JSON proof never verifies (property)', () => {
    const hashes = GOLDEN.event_hashes
    fc.assert(fc.property(fc.integer({ min: 1, max: hashes.length }), fc.nat(), fc.nat(), fc.nat(), fc.integer({ min: 1, max: 15 }), (n, a, k, at, mask) => {
      const i = a % n
      const p = buildInclusionProof(hashes, i, n)
      const tamper = (h: string): string => h.slice(0, at % 64) + (parseInt(h[at % 64] as string, 16) ^ mask).toString(16) + h.slice(at % 64 + 1)
      expect(codeOf(() => verifyInclusionJson({ ...p, root: tamper(p.root) }))).toBe('RL-2201')
      expect(codeOf(() => verifyInclusionJson({ ...p, event_hash: tamper(p.event_hash) }))).toBe('RL-2201')
      if (p.path.length > 0) {
        const j = k % p.path.length
        expect(codeOf(() => verifyInclusionJson({ ...p, path: p.path.map((h, x) => (x === j ? tamper(h) : h)) }))).toBe('RL-2201')
      }
      const m = 1 + (a % n)
      const c = buildConsistencyProof(hashes, m, n)
      expect(codeOf(() => verifyConsistencyJson({ ...c, old_root: tamper(c.old_root) }))).toBe('RL-2202')
      expect(codeOf(() => verifyConsistencyJson({ ...c, new_root: tamper(c.new_root) }))).toBe('RL-2202')
      if (c.path.length > 0) {
        const j = k % c.path.length
        expect(codeOf(() => verifyConsistencyJson({ ...c, path: c.path.map((h, x) => (x === j ? tamper(h) : h)) }))).toBe('RL-2202')
      }
    }))
  })
})

describe('MerkleAccumulator.pushEventHash', () => {
  it('equals push(leafHash(h)) at every size, and refuses a malformed event hash', () => {
    const a = new MerkleAccumulator()
    const b = new MerkleAccumulator()
    for (let i = 0; i < 70; i++) {
      const h = createHash('sha256').update(`event ${i}`).digest('hex')
      a.push(leafHash(h))
      b.pushEventHash(h)
      expect(b.rootHex()).toBe(hex(a.root()))
    }
    expect(() => b.pushEventHash('A'.repeat(64))).toThrow(expect.objectContaining({ code: 'RL-1005' }))
    expect(b.size).toBe(70)
  })
})
