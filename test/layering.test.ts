/**
 * Layers point one way (DESIGN.md §2): protocol/ imports nothing of ours, packs/ only protocol/,
 * federation/ never node/, and simulations/ builds nodes through the composition root. Read from
 * the sources' import statements (static and dynamic), so a new file cannot slip past it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const LAYERS = ['protocol', 'packs', 'federation', 'node', 'simulations'] as const
type Layer = typeof LAYERS[number]

/** What each layer may import of ours. */
const ALLOWED: Record<Layer, readonly Layer[]> = {
  protocol: ['protocol'],
  packs: ['packs', 'protocol'],
  federation: ['federation', 'packs', 'protocol'],
  node: ['node', 'federation', 'packs', 'protocol'],
  simulations: ['simulations', 'node', 'federation', 'packs', 'protocol']
}

function sources (dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) out.push(...sources(path))
    else if (/\.(ts|js)$/.test(name)) out.push(path)
  }
  return out
}

/** Relative specifiers a file imports: `import … from '…'`, `export … from '…'`, `import('…')`. */
export function importsOf (text: string): string[] {
  const found: string[] = []
  const patterns = [/\bfrom\s+['"](\.[^'"]+)['"]/g, /\bimport\s*\(\s*['"](\.[^'"]+)['"]\s*\)/g, /^\s*import\s+['"](\.[^'"]+)['"]/gm]
  for (const re of patterns) for (const m of text.matchAll(re)) found.push(m[1] as string)
  return found
}

function layerOf (path: string): Layer | 'other' {
  const top = relative(ROOT, path).split(sep)[0]
  return (LAYERS as readonly string[]).includes(top ?? '') ? top as Layer : 'other'
}

/** Every import that crosses layers the wrong way, as `file → target`. */
function violations (): string[] {
  const out: string[] = []
  for (const layer of LAYERS) {
    let files: string[]
    try {
      files = sources(join(ROOT, layer))
    } catch {
      continue
    }
    for (const file of files) {
      for (const spec of importsOf(readFileSync(file, 'utf8'))) {
        const path = resolve(dirname(file), spec)
        // The package's own metadata (the version a node reports) belongs to no layer.
        if (path === join(ROOT, 'package.json')) continue
        const target = layerOf(path)
        if (target === 'other' || !ALLOWED[layer].includes(target)) out.push(`${relative(ROOT, file)} → ${spec}`)
      }
    }
  }
  return out
}

/** Where the sources build a node's services: only the composition root may. */
function builders (): string[] {
  const out: string[] = []
  const built = /new (Delegator|DelegationServer|PackExchange|LogServer|PackServer)\(|PeerRegistry\.open\(|LocalNode\.open\(|\bcreateHost\(/g
  for (const layer of ['protocol', 'packs', 'federation', 'node'] as const) {
    for (const file of sources(join(ROOT, layer))) {
      const name = relative(ROOT, file)
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        // Definitions and comments name them too.
        if (/^\s*(\*|\/\/)|export (async )?function createHost|static async open/.test(line)) continue
        for (const m of line.matchAll(built)) out.push(`${name}: ${m[0]}`)
      }
    }
  }
  return out
}

describe('layering', () => {
  it('no source imports a layer above its own (protocol ← packs ← federation ← node ← simulations)', () => {
    expect(violations()).toEqual([])
  })

  it('one composition root: only node/create.ts builds a node and its services', () => {
    const found = builders()
    expect(found.filter((b) => !b.startsWith(`node${sep}create.ts`) && !b.startsWith(`federation${sep}pack-exchange.ts: new PackServer(`))).toEqual([])
    // And it does build them (the search would find one elsewhere).
    expect(found.some((b) => b.includes('new Delegator('))).toBe(true)
    expect(found.some((b) => b.includes('LocalNode.open('))).toBe(true)
  })

  it('the check finds the imports a layering mistake would add (negative control)', () => {
    // The same reading, on text that breaks each rule.
    expect(importsOf("import { createNode } from '../node/create.ts'")).toEqual(['../node/create.ts'])
    expect(importsOf("const { x } = await import('../../node/host.ts')")).toEqual(['../../node/host.ts'])
    expect(importsOf("export { y } from '../federation/frames.ts'")).toEqual(['../federation/frames.ts'])
    expect(importsOf("import '../packs/run/index.ts'")).toEqual(['../packs/run/index.ts'])
    // Where such an import would land: federation/x.ts importing node/ is reported.
    const fake = join(ROOT, 'federation', 'x.ts')
    expect(layerOf(resolve(dirname(fake), '../node/create.ts'))).toBe('node')
    expect(ALLOWED.federation.includes('node')).toBe(false)
    expect(ALLOWED.packs.includes('federation')).toBe(false)
    expect(ALLOWED.protocol).toEqual(['protocol'])
  })
})
