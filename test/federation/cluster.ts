/**
 * Real Reach nodes as child processes on 127.0.0.1, each with its own data
 * dir, driven through the `reach` executable: what an operator would type.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { BIN, reach, type CliResult } from '../node/cli/helpers.ts'

export interface MeshNode {
  name: string
  home: string
  proc: ChildProcess
  peerId: string
  addr: string
  output: string[]
  env: NodeJS.ProcessEnv
}

export async function newHome (name: string, policy: Record<string, unknown>): Promise<string> {
  const home = await mkdtemp(join(os.tmpdir(), `reach-mesh-${name}-`))
  await writeFile(join(home, 'policy.json'), JSON.stringify({ version: 1, ...policy }))
  return home
}

async function until<T> (what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await probe().catch(() => undefined)
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Start `reach node start` for a data dir and wait until its control API is up. */
export async function startNode (name: string, home: string, options: { bootstrap?: string[], env?: NodeJS.ProcessEnv } = {}): Promise<MeshNode> {
  const env = { ...process.env, REACH_HOME: home, ...options.env }
  const args = [BIN, 'node', 'start', ...(options.bootstrap === undefined ? [] : ['--bootstrap', ...options.bootstrap])]
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const output: string[] = []
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => { output.push(d) })
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => { output.push(d) })
  let exited = false
  proc.on('exit', () => { exited = true })
  const endpoint = await until(`${name} to start`, async () => {
    if (exited) throw new Error(`${name} exited: ${output.join('')}`)
    if (!output.join('').includes('ready')) return undefined
    return JSON.parse(await readFile(join(home, 'node.json'), 'utf8')) as { peer_id: string, addrs: string[] }
  }).catch((err: Error) => { throw new Error(`${err.message}\n${output.join('')}`) })
  return { name, home, proc, peerId: endpoint.peer_id, addr: endpoint.addrs[0] as string, output, env }
}

export async function stopNode (node: MeshNode, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (node.proc.exitCode !== null || node.proc.signalCode !== null) return node.proc.exitCode
  const exited = new Promise<number | null>((resolve) => node.proc.once('exit', (code) => resolve(code)))
  node.proc.kill(signal)
  return await exited
}

/** `reach <args> --json` against a node's data dir. */
export async function cli (node: { home: string, env?: NodeJS.ProcessEnv }, args: string[]): Promise<CliResult> {
  return await reach([...args, '--json'], { env: { ...node.env, REACH_HOME: node.home } })
}

export { until }
