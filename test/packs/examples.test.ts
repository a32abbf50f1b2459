/**
 * The example packs build into valid bundles and follow the pack contract
 * (DESIGN.md §3). Their code is exercised here directly as ES modules; running
 * them in the sandbox is the runner's test.
 */
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { describe, expect, it } from 'vitest'
import { buildBundle } from '../../packs/bundle.ts'
import { defaultPolicy, checkBudget, checkCapabilities } from '../../packs/policy.ts'

const EXAMPLES = fileURLToPath(new URL('../../packs/examples/', import.meta.url))

interface PackModule {
  init (input: unknown): unknown
  reduce (state: unknown, event: Record<string, unknown>): { state: unknown, effects?: Array<{ tool: string, args: Record<string, unknown> }>, output?: unknown }
}

async function load (name: string): Promise<PackModule> {
  return await import(pathToFileURL(join(EXAMPLES, name, 'index.js')).href) as PackModule
}

describe('example packs', () => {
  it('both build, and fit the default maximum budget', async () => {
    for (const name of ['counter', 'report']) {
      const p = await buildBundle(join(EXAMPLES, name))
      expect(p.bundle.manifest.name).toBe(name)
      expect(Object.keys(p.bundle.files)).toEqual(['index.js'])
      checkBudget(p.bundle.manifest.budget, defaultPolicy())
    }
  })

  it('counter: a pure aggregation with no capabilities', async () => {
    const p = await buildBundle(join(EXAMPLES, 'counter'))
    expect(p.bundle.manifest.capabilities).toEqual([])
    checkCapabilities(p.bundle.manifest.capabilities, defaultPolicy())
    const m = await load('counter')
    const step = m.reduce(m.init({ items: [3, { key: 'b', value: 2 }, { key: 'a' }, { key: 'b', value: -1 }, 'junk'] }), { type: 'Start' })
    expect(step.effects).toBeUndefined()
    expect(step.output).toEqual({
      count: 4,
      sum: 5,
      skipped: 1,
      keys: { a: { count: 1, sum: 1, min: 1, max: 1 }, b: { count: 2, sum: 1, min: -1, max: 2 }, total: { count: 1, sum: 3, min: 3, max: 3 } }
    })
  })

  it('counter: also takes {numbers: [...]} or a bare array', async () => {
    const m = await load('counter')
    for (const input of [{ numbers: [1, 2, 3] }, [1, 2, 3]]) {
      expect(m.reduce(m.init(input), { type: 'Start' }).output).toMatchObject({ count: 3, sum: 6 })
    }
  })

  it('report: asks for each tool in turn and survives denied and failed tools', async () => {
    const m = await load('report')
    const outcomes: Record<string, Record<string, unknown>> = {
      'clock.now': { type: 'ToolResult', result: { now_ms: 1_700_000_000_000 } },
      'random.bytes': { type: 'ToolResult', result: { hex: '0011223344556677' } },
      'kv.get': { type: 'ToolResult', result: { value: 41 } },
      'http.fetch': { type: 'ToolDenied', error: { code: 'RL-3009', message: 'http.fetch not granted' } },
      'kv.put': { type: 'ToolFailed', error: { code: 'RL-3018', message: 'disk full' } }
    }
    let state = m.init({ title: 'daily', values: [3, 1, 4], url: 'https://example.org/' })
    let event: Record<string, unknown> = { type: 'Start' }
    const asked: string[] = []
    for (let i = 0; i < 10; i++) {
      const step = m.reduce(state, event)
      state = step.state
      if (step.output !== undefined) {
        expect(asked).toEqual(['clock.now', 'random.bytes', 'kv.get', 'http.fetch', 'kv.put'])
        expect(step.output).toMatchObject({
          title: 'daily',
          report_id: '0011223344556677',
          number: 42,
          generated_at_ms: 1_700_000_000_000,
          summary: { count: 3, sum: 8, min: 1, max: 4 },
          source: { url: 'https://example.org/', error: { code: 'RL-3009' } },
          persisted: false
        })
        expect((step.output as { notes: string[] }).notes).toHaveLength(2)
        return
      }
      expect(step.effects).toHaveLength(1)
      const effect = step.effects?.[0] as { tool: string, args: Record<string, unknown> }
      asked.push(effect.tool)
      event = { ...outcomes[effect.tool], tool: effect.tool, call_id: `call-${i}` }
    }
    throw new Error('the report pack never produced an output')
  })
})
