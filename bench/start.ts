/**
 * `npm run bench:start` — how long the `reach` a user types takes to start and exit, measured
 * the way a shell starts it: a child process with the user's PATH (the entries npm run adds are
 * taken out again, so `node` is the machine's own) and no npm_* variables.
 *
 *   ./reach --version                  the checkout's launcher: sh, then the pinned Node on bin.js
 *   npx reach --version                inside the checkout: npm's CLI on the machine's Node first
 *   reach --version on the PATH        what `npm link` gives (run here into a temporary global
 *                                      prefix): a symlink to node/cli/bin.js, whose
 *                                      `#!/usr/bin/env node` is the machine's Node. npm does not
 *                                      link a package's own bin into its node_modules/.bin, so
 *                                      there is no node_modules/.bin/reach to measure
 *   pinned node node/cli/bin.js        no launcher at all (the floor for the three above)
 *   reach errors --json, both ways     a command that loads the CLI: on an older machine Node the
 *                                      linked bin starts the pinned Node a second time
 *   baselines                          each Node's bare start (`-e 0`), npx's own (`npx --version`)
 *
 * Runs are interleaved (one of each command, then the next round), so a busier moment of the
 * machine falls on all of them alike. Prints a table, then the figures as one JSON line.
 * Options: --runs N (default 20), --warmup N (default 2), --quick (5 runs).
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { machine, percentile } from './report.ts'

const { values: args } = parseArgs({ options: { runs: { type: 'string' }, warmup: { type: 'string' }, quick: { type: 'boolean' } } })
const RUNS = Number(args.runs ?? (args.quick === true ? 5 : 20))
const WARMUP = Number(args.warmup ?? 2)
const BAR_MS = 150
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const PINNED = join(ROOT, 'node_modules', '.bin', 'node')
const BIN = join(ROOT, 'node', 'cli', 'bin.js')
const VERSION: string = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version

/** The environment of the shell the user types in: what npm run added, taken out. */
function userEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('npm_') || k === 'INIT_CWD' || k === 'NODE' || k === 'COLOR') continue
    env[k] = v
  }
  env.PATH = (process.env.PATH ?? '').split(delimiter).filter((p) => !/node_modules[\\/]\.bin$|node-gyp-bin$/.test(p)).join(delimiter)
  return env
}

interface Command {
  name: string
  file: string
  args: string[]
  /** What a user types (the 150 ms bar is for these), rather than a reference point. */
  typed: boolean
  env?: NodeJS.ProcessEnv
  expect: (stdout: string) => boolean
}

const env = userEnv()
const tmp = await mkdtemp(join(os.tmpdir(), 'reach-bench-start-'))
try {
  const run = (file: string, argv: string[], e: NodeJS.ProcessEnv = env) => spawnSync(file, argv, { cwd: ROOT, env: e, encoding: 'utf8' })
  const link = run('npm', ['link', '--offline', '--no-audit', '--no-fund', '--loglevel=error'], { ...env, npm_config_prefix: tmp })
  const linked = join(tmp, 'bin', 'reach')
  if (link.status !== 0 || !existsSync(linked)) throw new Error(`npm link into ${tmp} failed: ${link.stderr}`)
  const machineNode = run('node', ['-p', 'process.version + " " + process.execPath']).stdout.trim()
  const npxVersion = run('npx', ['--version']).stdout.trim()
  const isVersion = (out: string) => out === `${VERSION}\n`
  const isJson = (out: string) => JSON.parse(out).ok === true
  const noCa = { ...env }
  delete noCa.NODE_EXTRA_CA_CERTS

  const commands: Command[] = [
    { name: './reach --version', file: join(ROOT, 'reach'), args: ['--version'], typed: true, expect: isVersion },
    { name: 'npx reach --version (in the checkout)', file: 'npx', args: ['reach', '--version'], typed: true, expect: isVersion },
    { name: 'reach --version (npm link: bin.js on the machine\'s node)', file: linked, args: ['--version'], typed: true, expect: isVersion },
    { name: 'pinned node node/cli/bin.js --version', file: PINNED, args: [BIN, '--version'], typed: false, expect: isVersion },
    { name: './reach errors --json', file: join(ROOT, 'reach'), args: ['errors', '--json'], typed: false, expect: isJson },
    { name: 'reach errors --json (npm link)', file: linked, args: ['errors', '--json'], typed: false, expect: isJson },
    { name: 'baseline: pinned node -e 0', file: PINNED, args: ['-e', '0'], typed: false, expect: () => true },
    { name: 'baseline: machine node -e 0', file: 'node', args: ['-e', '0'], typed: false, expect: () => true },
    { name: 'baseline: npx --version (npx\'s own start)', file: 'npx', args: ['--version'], typed: false, expect: () => true }
  ]
  if (env.NODE_EXTRA_CA_CERTS !== undefined) {
    // Node 20 reads that bundle at every start; Node 24 only when it first makes a TLS connection.
    commands.push({ name: 'reach --version (npm link) without NODE_EXTRA_CA_CERTS', file: linked, args: ['--version'], typed: false, env: noCa, expect: isVersion })
    commands.push({ name: 'baseline: machine node -e 0 without NODE_EXTRA_CA_CERTS', file: 'node', args: ['-e', '0'], typed: false, env: noCa, expect: () => true })
  }

  const times = commands.map((): number[] => [])
  for (let round = 0; round < WARMUP + RUNS; round++) {
    commands.forEach((c, i) => {
      const t = performance.now()
      const r = run(c.file, c.args, c.env)
      const ms = performance.now() - t
      if (r.status !== 0 || !c.expect(r.stdout)) {
        throw new Error(`${c.name} exited ${String(r.status)} (${r.error?.message ?? ''}), printed ${JSON.stringify(r.stdout.slice(0, 200))}: ${r.stderr}`)
      }
      if (round >= WARMUP) times[i]!.push(ms)
    })
  }

  const figures = commands.map((c, i) => {
    const xs = times[i]!
    const p50 = percentile(xs, 50)
    return {
      name: c.name,
      typed: c.typed,
      p50: Number(p50.toFixed(1)),
      p90: Number(percentile(xs, 90).toFixed(1)),
      max: Number(Math.max(...xs).toFixed(1)),
      unit: 'ms',
      ...(c.typed ? { bar: `p50 <= ${BAR_MS} ms`, pass: p50 <= BAR_MS } : {})
    }
  })

  const width = Math.max(...figures.map((f) => f.name.length))
  const col = (v: number) => `${v.toFixed(1)} ms`.padStart(10)
  process.stdout.write(`bench:start on ${machine()}\nmachine node ${machineNode}, npx ${npxVersion}; ${RUNS} runs of each after ${WARMUP} warm-up rounds, interleaved\n\n`)
  process.stdout.write(`${'command'.padEnd(width)}  ${'p50'.padStart(10)}${'p90'.padStart(10)}${'max'.padStart(10)}  bar\n`)
  for (const f of figures) {
    const bar = f.bar === undefined ? '' : `  ${f.bar}: ${f.pass === true ? 'MET' : 'NOT MET'}`
    process.stdout.write(`${f.name.padEnd(width)}  ${col(f.p50)}${col(f.p90)}${col(f.max)}${bar}\n`)
  }
  process.stdout.write('\n' + JSON.stringify({ title: 'bench:start', machine: machine(), machine_node: machineNode, npx: npxVersion, nproc: os.availableParallelism(), node_extra_ca_certs: env.NODE_EXTRA_CA_CERTS !== undefined, date: new Date().toISOString(), runs: RUNS, warmup: WARMUP, figures }) + '\n')
} finally {
  await rm(tmp, { recursive: true, force: true })
}
