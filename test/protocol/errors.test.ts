import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { CODES, ReachError } from '../../protocol/errors.ts'

describe('error registry', () => {
  const doc = readFileSync(new URL('../../docs/ERRORS.md', import.meta.url), 'utf8')
  const documented = new Set([...doc.matchAll(/^\| (RL-\d{4}) \|/gm)].map((m) => m[1]))

  it('every registered code is documented in docs/ERRORS.md, and nothing else is', () => {
    expect([...documented].sort()).toEqual(Object.keys(CODES).sort())
  })

  it('codes are in their ranges and errors serialise with their code', () => {
    for (const code of Object.keys(CODES)) expect(code).toMatch(/^RL-[1-6]\d{3}$/)
    const e = new ReachError('RL-2001', { seq: 5, details: { expected: 'a' } })
    expect(e.toJSON()).toEqual({ code: 'RL-2001', message: CODES['RL-2001'], seq: 5, details: { expected: 'a' } })
  })
})
