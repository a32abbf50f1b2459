/**
 * RFC 8785 canonical JSON: the RFC's own examples and Appendix B number
 * table, the reference implementations' test data, and property tests for
 * idempotence, key order, round-tripping and refusal (RL-1006).
 */
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { canonicalBytes, canonicalize, isCanonical, MAX_DEPTH, parseJson } from '../../protocol/canonical.ts'
import { isReachError } from '../../protocol/errors.ts'

interface Rfc8785Vectors {
  documents: Array<{ name: string, input: string, output: string, utf8_hex?: string, value_order?: string[] }>
  numbers: Array<{ ieee754: string, expected: string | null, comment: string }>
}

interface CyberphoneVectors {
  cases: Array<{ name: string, input: string, output: string }>
}

function fixture<T> (name: string): T {
  return JSON.parse(readFileSync(new URL(`../fixtures/canonical/${name}`, import.meta.url), 'utf8')) as T
}

const RFC = fixture<Rfc8785Vectors>('rfc8785-vectors.json')
const CYBERPHONE = fixture<CyberphoneVectors>('cyberphone-testdata.json')

/** An IEEE 754 binary64 from its big-endian hex bit pattern. */
function double (bits: string): number {
  const view = new DataView(new ArrayBuffer(8))
  view.setBigUint64(0, BigInt(`0x${bits}`))
  return view.getFloat64(0)
}

/** The RL-1006 error `fn` throws, or a test failure. */
function refusal (fn: () => unknown): { message: string, details: Record<string, unknown> } {
  try {
    fn()
  } catch (err) {
    if (isReachError(err, 'RL-1006')) return err
    throw err
  }
  throw new Error('expected RL-1006, nothing was thrown')
}

/** JSON has no -0: it reads back as 0. */
function withoutNegativeZero (v: unknown): unknown {
  if (Object.is(v, -0)) return 0
  if (Array.isArray(v)) return v.map(withoutNegativeZero)
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, withoutNegativeZero(x)]))
  }
  return v
}

/** The same value with every object's members inserted in another order. */
function reordered (v: unknown, seed: number): unknown {
  if (Array.isArray(v)) return v.map((x, i) => reordered(x, seed + i))
  if (v === null || typeof v !== 'object') return v
  const entries = Object.entries(v)
  const turn = entries.length === 0 ? 0 : seed % entries.length
  const order = [...entries.slice(turn), ...entries.slice(0, turn)].reverse()
  const out: Record<string, unknown> = {}
  // defineProperty, not assignment: a "__proto__" member must stay an own
  // property (as JSON.parse makes it), not become the prototype.
  for (const [k, x] of order) Object.defineProperty(out, k, { value: reordered(x, seed * 31 + 7), enumerable: true, writable: true, configurable: true })
  return out
}

/** JCS member order written out by hand: compare UTF-16 code units one by one. */
function byCodeUnits (a: string, b: string): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const d = a.charCodeAt(i) - b.charCodeAt(i)
    if (d !== 0) return d
  }
  return a.length - b.length
}

const arbJson = fc.oneof(
  fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }),
  fc.jsonValue({ maxDepth: 4, stringUnit: 'grapheme' })
)

// --- RFC 8785 and reference test data --------------------------------------

describe('RFC 8785 examples', () => {
  it.each(RFC.documents)('$name', ({ input, output, utf8_hex: utf8, value_order: order }) => {
    expect(canonicalize(JSON.parse(input))).toBe(output)
    if (utf8 !== undefined) expect(Buffer.from(canonicalBytes(JSON.parse(input))).toString('hex')).toBe(utf8)
    if (order !== undefined) expect([...output.matchAll(/":"([^"]*)"/g)].map((m) => m[1])).toEqual(order)
    expect(isCanonical(output)).toBe(true)
    expect(isCanonical(input)).toBe(false)
  })

  it.each(RFC.numbers.filter((n) => n.expected !== null))('Appendix B: 0x$ieee754 → $expected', ({ ieee754, expected }) => {
    const x = double(ieee754)
    expect(canonicalize(x)).toBe(expected)
    expect(canonicalize({ n: x, a: [x] })).toBe(`{"a":[${expected}],"n":${expected}}`)
    // The text reads back as the same double (-0 excepted: JSON has no -0).
    expect(Object.is(JSON.parse(expected as string), x) || Object.is(x, -0)).toBe(true)
  })

  it.each(RFC.numbers.filter((n) => n.expected === null))('Appendix B: 0x$ieee754 ($comment) is refused', ({ ieee754 }) => {
    expect(refusal(() => canonicalize(double(ieee754))).message).toMatch(/not a finite number/)
    expect(refusal(() => canonicalize({ n: double(ieee754) })).details).toEqual({ path: 'n' })
  })

  it('-Infinity is refused too', () => {
    refusal(() => canonicalize(Number.NEGATIVE_INFINITY))
  })
})

describe('cyberphone/json-canonicalization test data', () => {
  it.each(CYBERPHONE.cases)('$name', ({ input, output }) => {
    expect(canonicalize(JSON.parse(input))).toBe(output)
    expect(canonicalize(JSON.parse(output))).toBe(output)
    expect(isCanonical(output)).toBe(true)
  })
})

describe('member order', () => {
  it('is by UTF-16 code units, not code points or locale', () => {
    // U+1F600 is D83D DE00 in UTF-16, so it sorts before U+FB33 although its
    // code point is larger; integer-like keys sort as strings ("10" < "9").
    const value = { '\ufb33': 1, '\ud83d\ude00': 2, 9: 3, 10: 4, a: 5, B: 6, '\u00e9': 7, e: 8 }
    expect(canonicalize(value)).toBe('{"10":4,"9":3,"B":6,"a":5,"e":8,"\u00e9":7,"\ud83d\ude00":2,"\ufb33":1}')
  })

  it('matches a hand-written code unit sort for any keys (property)', () => {
    fc.assert(fc.property(fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), fc.integer(), { maxKeys: 12 }), (obj) => {
      const expected = '{' + Object.keys(obj).sort(byCodeUnits).map((k) => `${JSON.stringify(k)}:${obj[k] as number}`).join(',') + '}'
      expect(canonicalize(obj)).toBe(expected)
    }))
  })
})

// --- Properties -------------------------------------------------------------

describe('properties', () => {
  it('idempotent: canonicalize(JSON.parse(c)) === c, and c is canonical', () => {
    fc.assert(fc.property(arbJson, (v) => {
      const c = canonicalize(v)
      expect(canonicalize(JSON.parse(c))).toBe(c)
      expect(isCanonical(c)).toBe(true)
    }))
  })

  it('a "__proto__" member is an ordinary member', () => {
    const v = JSON.parse('{"b":1,"__proto__":{"x":2},"a":3}')
    expect(canonicalize(v)).toBe('{"__proto__":{"x":2},"a":3,"b":1}')
    expect(canonicalize(reordered(v, 1))).toBe(canonicalize(v))
  })

  it('independent of member insertion order', () => {
    fc.assert(fc.property(arbJson, fc.nat(), (v, seed) => {
      expect(canonicalize(reordered(v, seed))).toBe(canonicalize(v))
    }))
  })

  it('valid JSON that reads back as an equal value, UTF-8 encoded as such', () => {
    fc.assert(fc.property(arbJson, (v) => {
      const c = canonicalize(v)
      expect(parseJson(c)).toEqual(withoutNegativeZero(v))
      expect(Buffer.from(canonicalBytes(v)).toString('utf8')).toBe(c)
    }))
  })

  it('numbers: JSON number grammar, shortest round-trip form', () => {
    fc.assert(fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (x) => {
      const c = canonicalize(x)
      expect(c).toMatch(/^-?(0|[1-9][0-9]*)(\.[0-9]+)?(e[+-][1-9][0-9]*)?$/)
      expect(Object.is(Number(c), x) || Object.is(x, -0)).toBe(true)
    }))
  })

  it('no whitespace outside strings', () => {
    fc.assert(fc.property(arbJson, (v) => {
      const outside = canonicalize(v).replace(/"(?:[^"\\]|\\.)*"/g, '')
      expect(outside).not.toMatch(/\s/)
    }))
  })
})

// --- Refusal ---------------------------------------------------------------

class Point {
  x = 1
}

/** Values JSON cannot carry; each must be refused, never coerced. */
const UNREPRESENTABLE: Array<[string, () => unknown]> = [
  ['undefined', () => undefined],
  ['a function', () => () => 1],
  ['a bigint', () => 1n],
  ['a symbol', () => Symbol('s')],
  ['NaN', () => Number.NaN],
  ['Infinity', () => Number.POSITIVE_INFINITY],
  ['a Date', () => new Date(0)],
  ['a Map', () => new Map([['a', 1]])],
  ['a Set', () => new Set([1])],
  ['a RegExp', () => /x/],
  ['a class instance', () => new Point()],
  ['a boxed number', () => Object(1)],
  ['a boxed string', () => Object('s')],
  ['a Uint8Array', () => new Uint8Array(1)],
  ['an Error', () => new Error('e')],
  ['a lone high surrogate', () => 'a\ud800b'],
  ['a lone low surrogate', () => 'a\udc00b'],
  ['a reversed surrogate pair', () => '\ude00\ud83d'],
  ['a trailing high surrogate', () => 'abc\ud83d']
]

describe('refusal (RL-1006)', () => {
  it.each(UNREPRESENTABLE)('refuses %s, at the top and nested', (_, make) => {
    refusal(() => canonicalize(make()))
    expect(refusal(() => canonicalize({ a: [1, { b: make() }] })).details).toEqual({ path: 'a[1].b' })
    expect(refusal(() => canonicalize([null, make()])).details).toEqual({ path: '[1]' })
  })

  it('refuses sparse arrays, naming the hole', () => {
    expect(refusal(() => canonicalize({ list: [1, , 3] })).details).toEqual({ path: 'list[1]' })
    expect(refusal(() => canonicalize(new Array(3))).details).toEqual({ path: '[0]' })
  })

  it('refuses a lone surrogate in a key', () => {
    expect(refusal(() => canonicalize({ ok: { 'k\udfff': 1 } })).message).toMatch(/lone UTF-16 surrogate/)
  })

  it('accepts what is plain JSON even if built unusually', () => {
    const bare = Object.create(null) as Record<string, unknown>
    bare.b = 1
    bare.a = [true, null, 'x']
    expect(canonicalize(bare)).toBe('{"a":[true,null,"x"],"b":1}')
    expect(canonicalize(JSON.parse('{"__proto__":{"x":1}}'))).toBe('{"__proto__":{"x":1}}')
    expect(canonicalize('\ud83d\ude00')).toBe('"\ud83d\ude00"')
  })

  it('negative control: JSON.stringify coerces silently, so distinct values would hash the same', () => {
    // The naive path: NaN and undefined both become null, a Date a string.
    expect(JSON.stringify({ n: Number.NaN })).toBe(JSON.stringify({ n: null }))
    expect(JSON.stringify([undefined])).toBe(JSON.stringify([null]))
    expect(JSON.stringify({ d: new Date(0) })).toBe(JSON.stringify({ d: '1970-01-01T00:00:00.000Z' }))
    // Ours refuses the first of each pair and keeps the second.
    refusal(() => canonicalize({ n: Number.NaN }))
    refusal(() => canonicalize([undefined]))
    refusal(() => canonicalize({ d: new Date(0) }))
    expect(canonicalize({ n: null })).toBe('{"n":null}')
  })

  it('a lone surrogate anywhere in any string is refused (property)', () => {
    const arbLone = fc.tuple(
      fc.string({ unit: 'grapheme-ascii' }),
      fc.integer({ min: 0xd800, max: 0xdfff }),
      fc.string({ unit: 'grapheme-ascii' })
    ).map(([a, unit, b]) => a + String.fromCharCode(unit) + b)
    fc.assert(fc.property(arbLone, fc.boolean(), (s, asKey) => {
      refusal(() => canonicalize(asKey ? { [s]: 1 } : { k: [s] }))
    }))
  })

  it('one bad value deep inside valid JSON is refused and located (property)', () => {
    const arbKey = fc.stringMatching(/^[a-z][a-z0-9_]{0,5}$/)
    const arbWrap = fc.array(fc.oneof(
      arbKey.map((k) => ({ kind: 'object' as const, key: k })),
      fc.nat({ max: 3 }).map((at) => ({ kind: 'array' as const, at }))
    ), { maxLength: 5 })
    fc.assert(fc.property(arbJson, fc.constantFrom(...UNREPRESENTABLE), arbWrap, (sibling, [, make], wraps) => {
      // Build the value inside out and the expected path outside in.
      let value: unknown = make()
      for (const w of [...wraps].reverse()) {
        if (w.kind === 'object') value = { [w.key]: value, [`${w.key}_sibling`]: sibling }
        else value = [...Array<unknown>(w.at).fill(sibling), value, sibling]
      }
      let path = ''
      for (const w of wraps) path = w.kind === 'object' ? (path === '' ? w.key : `${path}.${w.key}`) : `${path}[${w.at}]`
      expect(refusal(() => canonicalize(value)).details).toEqual({ path })
    }))
  })

  it('cyclic values and nesting deeper than MAX_DEPTH are refused with RL-1006, not a RangeError', () => {
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic.self = cyclic
    expect(refusal(() => canonicalize(cyclic)).message).toMatch(/nested deeper than 1000 levels \(or cyclic\)/)
    const deep = JSON.parse('['.repeat(20_000) + ']'.repeat(20_000))
    expect(refusal(() => canonicalize(deep)).message).toMatch(/nested deeper than 1000 levels/)
    const ok = JSON.parse('['.repeat(MAX_DEPTH) + ']'.repeat(MAX_DEPTH))
    expect(canonicalize(ok)).toBe('['.repeat(MAX_DEPTH) + ']'.repeat(MAX_DEPTH))
  })
})

describe('isCanonical and parseJson', () => {
  it('rejects non-canonical spellings of the same value', () => {
    for (const text of ['{"b":1,"a":2}', '{ "a":1}', ' 1', '{}\n', '1.0', '1E3', '-0', '"\\u0041"', '{"a":1,"a":1}', '[1 ]', '\ufeff{}', '']) {
      expect(isCanonical(text), text).toBe(false)
    }
    for (const text of ['{"a":2,"b":1}', '1000', '0', '"A"', '[1]', '{}', 'null']) {
      expect(isCanonical(text), text).toBe(true)
    }
  })

  it('parseJson reports bad text as RL-1002', () => {
    try {
      parseJson('{"a":', 'payload')
      expect.unreachable()
    } catch (err) {
      expect(isReachError(err, 'RL-1002')).toBe(true)
      expect((err as Error).message).toMatch(/^payload is not valid JSON/)
    }
  })
})
