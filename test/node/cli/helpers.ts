import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const BIN = fileURLToPath(new URL('../../../node/cli/bin.js', import.meta.url))

export interface CliResult {
  code: number
  stdout: string
  stderr: string
  /** stdout parsed as JSON when the command ran with --json. */
  json: any
}

/** Run the real `reach` executable in a child process. */
export async function reach (args: string[], options: { cwd?: string, env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (c) => resolve(c ?? -1))
  })
  let json: unknown
  if (args.includes('--json')) {
    try {
      json = JSON.parse(stdout)
    } catch {
      throw new Error(`reach ${args.join(' ')} --json printed something that is not one JSON document:\n${stdout}\n${stderr}`)
    }
  }
  return { code, stdout, stderr, json }
}
