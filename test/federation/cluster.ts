/**
 * Real Reach nodes as child processes on 127.0.0.1, each with its own data
 * dir, driven through the `reach` executable: what an operator would type.
 * Waits are on what a node prints (`untilOutput`) or on a promise (`within`);
 * both fail at once, with the node's output, if a node they watch exits.
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
  /** Everything the process printed (stdout and stderr), chunk by chunk. */
  output: string[]
  env: NodeJS.ProcessEnv
}

export async function newHome (name: string, policy: Record<string, unknown>): Promise<string> {
  const home = await mkdtemp(join(os.tmpdir(), `reach-mesh-${name}-`))
  await writeFile(join(home, 'policy.json'), JSON.stringify({ version: 1, ...policy }))
  return home
}

function gone (proc: ChildProcess): boolean {
  return proc.exitCode !== null || proc.signalCode !== null
}

/** A process whose exit fails a wait: a node, or a CLI child with what it printed. */
export interface Watched { name: string, proc: ChildProcess, output: string[] }

/** Resolves once a node's process has exited and its output is all read ('close'). */
const closed = new WeakMap<ChildProcess, Promise<void>>()

/**
 * Rejects when `node`'s process has exited and its output is all read (at once if it has),
 * naming it and what it printed. For racing a wait against a crash, so that a dead node fails
 * the wait at once instead of after its timeout.
 */
async function exitOf (node: Watched): Promise<never> {
  const proc = node.proc
  await (closed.get(proc) ?? (gone(proc) ? Promise.resolve() : new Promise<void>((resolve) => { proc.once('exit', () => { resolve() }) })))
  throw new Error(`${node.name} exited (${proc.exitCode ?? proc.signalCode}):\n${node.output.join('')}`)
}

/**
 * `work`, raced against `timeoutMs` (default 20 s) and the exit of each of `nodes`: a hang or a
 * crash fails it loudly, naming `what` (and what a crashed process printed).
 */
export async function within<T> (what: string, work: Promise<T>, options: { nodes?: readonly Watched[], timeoutMs?: number } = {}): Promise<T> {
  return await watched(what, work, options.timeoutMs ?? 20_000, options.nodes ?? [])
}

async function watched<T> (what: string, work: Promise<T>, ms: number, nodes: readonly Watched[]): Promise<T> {
  const exits = nodes.map(exitOf)
  for (const e of exits) e.catch(() => {})
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`timed out after ${ms} ms`)) }, ms) })
  try {
    return await Promise.race([work, timeout, ...exits])
  } catch (err) {
    throw new Error(`waiting for ${what}: ${(err as Error).message}`, { cause: err })
  } finally {
    clearTimeout(timer)
  }
}

/**
 * The first line `node` prints from character `from` of its output on (default: from now on)
 * that matches `pattern`; fails after `timeoutMs`, or at once if the node exits first.
 */
export async function untilOutput (node: MeshNode, pattern: RegExp, what: string, options: { from?: number, timeoutMs?: number } = {}): Promise<RegExpExecArray> {
  const from = options.from ?? outputLength(node)
  const find = (): RegExpExecArray | undefined => {
    // Whole lines only: a line still being written could match too soon (a status cut short).
    const text = node.output.join('').slice(from)
    for (const line of text.slice(0, text.lastIndexOf('\n') + 1).split('\n')) {
      const m = pattern.exec(line)
      if (m !== null) return m
    }
    return undefined
  }
  const found = find()
  if (found !== undefined) return found
  let onData = (): void => {}
  const seen = new Promise<RegExpExecArray>((resolve) => {
    // Listeners run in the order they were added: cluster's own, which appends to `output`, first.
    onData = () => { const m = find(); if (m !== undefined) resolve(m) }
    node.proc.stdout?.on('data', onData)
    node.proc.stderr?.on('data', onData)
  })
  try {
    return await watched(`${node.name} to print ${what}`, seen, options.timeoutMs ?? 20_000, [node])
  } finally {
    node.proc.stdout?.off('data', onData)
    node.proc.stderr?.off('data', onData)
  }
}

/** How much `node` has printed so far: pass it as `from` to `untilOutput` to match only what comes after. */
export function outputLength (node: MeshNode): number {
  return node.output.reduce((n, chunk) => n + chunk.length, 0)
}

/**
 * Start `reach node start` for a data dir and wait until it prints that it is ready (it has
 * written node.json and its control API is up by then); fails at once, with its output, if it
 * exits first.
 */
export async function startNode (name: string, home: string, options: { bootstrap?: string[], listen?: string[], env?: NodeJS.ProcessEnv } = {}): Promise<MeshNode> {
  const env = { ...process.env, REACH_HOME: home, ...options.env }
  const args = [BIN, 'node', 'start', ...(options.bootstrap === undefined ? [] : ['--bootstrap', ...options.bootstrap]), ...(options.listen === undefined ? [] : ['--listen', ...options.listen])]
  const proc = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  closed.set(proc, new Promise((resolve) => { proc.once('close', () => { resolve() }) }))
  const output: string[] = []
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => { output.push(d) })
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => { output.push(d) })
  const starting: MeshNode = { name, home, proc, peerId: '', addr: '', output, env }
  await untilOutput(starting, /\bready\b/, 'that it is ready', { from: 0 })
  const endpoint = JSON.parse(await readFile(join(home, 'node.json'), 'utf8')) as { peer_id: string, addrs: string[] }
  return { ...starting, peerId: endpoint.peer_id, addr: endpoint.addrs[0] as string }
}

export async function stopNode (node: MeshNode, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (gone(node.proc)) return node.proc.exitCode
  const exited = new Promise<number | null>((resolve) => node.proc.once('exit', (code) => resolve(code)))
  node.proc.kill(signal)
  return await exited
}

/** `reach <args> --json` against a node's data dir. */
export async function cli (node: { home: string, env?: NodeJS.ProcessEnv }, args: string[]): Promise<CliResult> {
  return await reach([...args, '--json'], { env: { ...node.env, REACH_HOME: node.home } })
}

