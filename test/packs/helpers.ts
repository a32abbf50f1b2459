import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { isReachError } from '../../protocol/errors.ts'
import { ENGINE_VERSION, type PackManifest } from '../../packs/manifest.ts'
import type { Engine } from '../../packs/run/index.ts'
import { SandboxPool, engineBuild } from '../../packs/sandbox.ts'

/** A valid manifest, with overrides. */
export function manifest (over: Record<string, unknown> = {}): PackManifest {
  return {
    name: 'demo',
    version: '1.0.0',
    description: 'a test pack',
    entry: 'index.js',
    capabilities: ['kv.get'],
    engine: '^1.0.0',
    budget: { fuel: 1000, memory_bytes: 1 << 20, output_bytes: 1024, tool_calls: 4, wall_ms: 1000 },
    ...over
  } as PackManifest
}

export const INDEX_JS = 'export function init (input) { return input }\nexport function reduce (state) { return { state, output: state } }\n'

/** Write a pack folder: reach-pack.json (unless manifest is null) and files (relative paths). */
export async function writePack (dir: string, m: unknown, files: Record<string, string | Uint8Array> = { 'index.js': INDEX_JS }): Promise<string> {
  await mkdir(dir, { recursive: true })
  if (m !== null) await writeFile(join(dir, 'reach-pack.json'), typeof m === 'string' ? m : JSON.stringify(m, null, 2))
  for (const [path, data] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true })
    await writeFile(join(dir, path), data)
  }
  return dir
}

/** The RL- code a call fails with (or undefined when it succeeds). */
export async function code (fn: () => unknown): Promise<string | undefined> {
  try {
    await fn()
  } catch (err) {
    return isReachError(err) ? err.code : `not a ReachError: ${String((err as Error)?.stack ?? err)}`
  }
  return undefined
}

/** The ReachError a call fails with. */
export async function failure (fn: () => unknown): Promise<{ code: string, message: string, details: Record<string, unknown> }> {
  try {
    await fn()
  } catch (err) {
    if (isReachError(err)) return err
    throw err
  }
  throw new Error('expected a ReachError, but the call succeeded')
}

export async function tempDir (prefix: string): Promise<{ path: string, remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `reach-${prefix}-`))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

/** This build's engine with a sandbox pool of its own (close it with `engine.sandboxes.close()`). */
export async function testEngine (): Promise<Engine & { sandboxes: SandboxPool }> {
  return { version: ENGINE_VERSION, build: await engineBuild(), sandboxes: new SandboxPool() }
}
