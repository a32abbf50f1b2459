#!/usr/bin/env node
// The `reach` executable. Sources are TypeScript run by Node's type
// stripping (Node >= 22.18). npm scripts and `npx reach` put the project's
// pinned Node 24 first on PATH; anywhere else (a machine whose `node` is
// older) we hand over to that pinned Node instead of failing obscurely.
// `./reach` in the checkout starts the pinned Node on this file directly.
// Built-ins beyond node:fs are imported where they are used: each one a path does not need
// costs that path a few milliseconds of start.
import { existsSync, readFileSync } from 'node:fs'

const argv = process.argv.slice(2)
// `reach --version` needs only package.json (where node/version.ts reads it too), not the CLI,
// nor, on an older Node, a second Node: answered here it costs one Node start.
const versionOnly = argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')
const printVersion = () => {
  process.stdout.write(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version + '\n')
}

const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  const { fileURLToPath } = await import('node:url')
  const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/[\\/]$/, '')
  const pinned = fileURLToPath(new URL('../../node_modules/.bin/node', import.meta.url))
  if (!existsSync(pinned) || process.env.REACH_REEXEC === '1') {
    process.stderr.write(`error RL-1001: reach needs Node >= 22.18 (this is ${process.version}); run \`npm install\` in ${root} to get the pinned Node 24\n`)
    process.exit(2)
  }
  if (!versionOnly) {
    const { spawnSync } = await import('node:child_process')
    const r = spawnSync(pinned, [fileURLToPath(import.meta.url), ...argv], { stdio: 'inherit', env: { ...process.env, REACH_REEXEC: '1' } })
    process.exit(r.status ?? 1)
  }
}
if (versionOnly) {
  printVersion()
} else {
  // Cache compiled modules between runs: most commands are short-lived, so
  // startup is most of their cost.
  const { default: module } = await import('node:module')
  module.enableCompileCache?.()
  // libp2p's logger asks whether stderr is a terminal for every stream it opens (to colour debug
  // output); ask once, here, before it loads.
  const { default: tty } = await import('node:tty')
  process.env.DEBUG_COLORS ??= String(tty.isatty(2))
  const { main } = await import('./main.ts')
  process.exitCode = await main(argv)
}
