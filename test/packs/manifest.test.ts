import { describe, expect, it } from 'vitest'
import { ENGINE_VERSION, engineSatisfies, isPackPath, parseManifest, parseManifestText } from '../../packs/manifest.ts'
import { failure, manifest } from './helpers.ts'

describe('parseManifest', () => {
  it('accepts a valid manifest and returns a copy', () => {
    const m = manifest({ capabilities: ['clock.now', 'random.bytes', 'kv.get', 'kv.put', 'http.fetch', 'reach.delegate'] })
    const parsed = parseManifest(m)
    expect(parsed).toEqual(m)
    expect(parsed).not.toBe(m)
    expect(parsed.budget).not.toBe(m.budget)
  })

  const budget = manifest().budget
  const cases: Array<[string, unknown, string]> = [
    ['not an object', [], '(root)'],
    ['null', null, '(root)'],
    ['name missing', { ...manifest(), name: undefined }, 'name'],
    ['name with capitals', manifest({ name: 'Demo' }), 'name'],
    ['name with underscore', manifest({ name: 'my_pack' }), 'name'],
    ['name starting with "-"', manifest({ name: '-pack' }), 'name'],
    ['name of 65 characters', manifest({ name: 'a'.repeat(65) }), 'name'],
    ['empty name', manifest({ name: '' }), 'name'],
    ['version with "v"', manifest({ version: 'v1.0.0' }), 'version'],
    ['version 1.0', manifest({ version: '1.0' }), 'version'],
    ['version with spaces', manifest({ version: ' 1.0.0' }), 'version'],
    ['description not a string', manifest({ description: 7 }), 'description'],
    ['description too long', manifest({ description: 'x'.repeat(1025) }), 'description'],
    ['entry escaping the pack', manifest({ entry: '../index.js' }), 'entry'],
    ['entry absolute', manifest({ entry: '/index.js' }), 'entry'],
    ['entry ./', manifest({ entry: './index.js' }), 'entry'],
    ['entry with backslash', manifest({ entry: 'lib\\index.js' }), 'entry'],
    ['entry with empty segment', manifest({ entry: 'lib//index.js' }), 'entry'],
    ['entry a dot-file', manifest({ entry: '.index.js' }), 'entry'],
    ['entry not .js', manifest({ entry: 'index.ts' }), 'entry'],
    ['entry with a drive letter', manifest({ entry: 'C:index.js' }), 'entry'],
    ['unknown capability', manifest({ capabilities: ['fs.write'] }), 'capabilities[0]'],
    ['repeated capability', manifest({ capabilities: ['kv.get', 'kv.get'] }), 'capabilities'],
    ['capabilities not an array', manifest({ capabilities: 'kv.get' }), 'capabilities'],
    ['engine not a range', manifest({ engine: 'newest' }), 'engine'],
    ['engine empty', manifest({ engine: '' }), 'engine'],
    ['budget field missing', manifest({ budget: { ...budget, wall_ms: undefined } }), 'budget.wall_ms'],
    ['budget zero', manifest({ budget: { ...budget, fuel: 0 } }), 'budget.fuel'],
    ['budget negative', manifest({ budget: { ...budget, tool_calls: -1 } }), 'budget.tool_calls'],
    ['budget fractional', manifest({ budget: { ...budget, memory_bytes: 1.5 } }), 'budget.memory_bytes'],
    ['budget a string', manifest({ budget: { ...budget, output_bytes: '10' } }), 'budget.output_bytes'],
    ['budget unsafe integer', manifest({ budget: { ...budget, fuel: 2 ** 60 } }), 'budget.fuel'],
    ['budget extra field', manifest({ budget: { ...budget, cpu: 1 } }), 'budget.cpu'],
    ['unknown top-level field', manifest({ author: 'x' }), 'author']
  ]
  for (const [what, value, field] of cases) {
    it(`given ${what}, then RL-3001 naming ${field}`, async () => {
      const v = value !== null && typeof value === 'object' && !Array.isArray(value) ? JSON.parse(JSON.stringify(value)) : value
      const err = await failure(() => parseManifest(v))
      expect(err.code).toBe('RL-3001')
      expect(err.details.field).toBe(field)
      expect(err.message).toContain(field)
    })
  }

  it('given text that is not JSON, then RL-3001', async () => {
    expect((await failure(() => parseManifestText('{"name":'))).code).toBe('RL-3001')
  })
})

describe('engine range', () => {
  it('checks ENGINE_VERSION against the range', () => {
    expect(ENGINE_VERSION).toBe('1.0.0')
    expect(engineSatisfies({ engine: '^1.0.0' })).toBe(true)
    expect(engineSatisfies({ engine: '>=1.0.0 <2' })).toBe(true)
    expect(engineSatisfies({ engine: '^2.0.0' })).toBe(false)
    expect(engineSatisfies({ engine: '^1.0.0' }, '2.0.0')).toBe(false)
  })
})

describe('isPackPath', () => {
  it('accepts nested relative paths and refuses everything that could escape', () => {
    for (const p of ['index.js', 'lib/util.js', 'a/b/c/d.json', 'x-y_z.txt']) expect(isPackPath(p), p).toBe(true)
    for (const p of ['', '/a', 'a/', '../a', 'a/../b', './a', 'a/./b', '.env', 'a/.git/config', 'a\\b', 'c:x', 'a\nb', 'a'.repeat(257), 'e\u0301.js']) {
      expect(isPackPath(p), JSON.stringify(p)).toBe(false)
    }
  })
})
