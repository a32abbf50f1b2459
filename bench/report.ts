/** Printing and small statistics shared by the bench scripts. */
import os from 'node:os'

export interface Figure {
  name: string
  value: number
  unit: string
  baseline?: string
  baselineValue?: number | undefined
  bar?: string
  pass?: boolean
  lowerIsBetter?: boolean
}

export function median (xs: number[]): number {
  return percentile(xs, 50)
}

export function percentile (xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN
}

export function machine (): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown cpu'
  return `${os.cpus().length} x ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Node ${process.version}`
}

function fmt (v: number, unit: string): string {
  // Two decimals below 10 ms: a figure beside a 3.5 ms bar must show which side it is on.
  if (unit === 'ms' && v < 10) return `${v.toFixed(2)} ${unit}`
  if (unit === 'ms' || unit === 'MB' || unit === 'MiB') return `${v.toFixed(1)} ${unit}`
  return v >= 10_000 ? `${(v / 1000).toFixed(1)}k ${unit}` : `${v.toFixed(0)} ${unit}`
}

export function report (title: string, figures: Figure[], options: { json?: boolean, extra?: Record<string, unknown> } = {}): void {
  if (options.json === true) {
    process.stdout.write(JSON.stringify({ title, machine: machine(), date: new Date().toISOString(), ...options.extra, figures }, null, 2) + '\n')
    return
  }
  process.stdout.write(`${title} on ${machine()}\n\n`)
  for (const f of figures) {
    const ratio = f.baselineValue === undefined ? '' : f.lowerIsBetter === true ? `  (${(f.value / f.baselineValue).toFixed(2)}x the time of ${f.baseline}: ${fmt(f.baselineValue, f.unit)})` : `  (${(f.value / f.baselineValue).toFixed(2)}x ${f.baseline}: ${fmt(f.baselineValue, f.unit)})`
    const missing = f.baseline !== undefined && f.baselineValue === undefined ? `  (baseline ${f.baseline} unavailable)` : ''
    const bar = f.bar === undefined ? '' : `  bar ${f.bar}: ${f.pass === true ? 'MET' : 'NOT MET'}`
    process.stdout.write(`${f.name}\n  ${fmt(f.value, f.unit)}${ratio}${missing}${bar}\n`)
  }
}

/**
 * `reach node start` on `home` as a child process (as deployed), once it says it is ready; its
 * endpoint file (node.json) and a stop that sends SIGTERM and waits for the exit.
 */
export async function startChildNode (bin: string, home: string): Promise<{ endpoint: { api: string, peer_id: string, addrs: string[] }, stop: () => Promise<void> }> {
  const { spawn } = await import('node:child_process')
  const { readFile } = await import('node:fs/promises')
  const { join } = await import('node:path')
  const child = spawn(process.execPath, [bin, 'node', 'start'], { env: { ...process.env, REACH_HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] })
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve() })
      child.once('exit', (code) => { reject(new Error(`the node on ${home} exited (${String(code)})`)) })
    })
  } catch (err) {
    await stop()
    throw err
  }
  return { endpoint: JSON.parse(await readFile(join(home, 'node.json'), 'utf8')), stop }
}
