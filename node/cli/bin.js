#!/usr/bin/env node
// The `reach` executable. Sources are TypeScript run by Node's type
// stripping (Node >= 22.18). npm scripts and `npx reach` put the project's
// pinned Node 24 first on PATH; anywhere else (a machine whose `node` is
// older) we hand over to that pinned Node instead of failing obscurely.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import module from 'node:module'
import tty from 'node:tty'

const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
  const pinned = join(root, 'node_modules', '.bin', 'node')
  if (!existsSync(pinned) || process.env.REACH_REEXEC === '1') {
    process.stderr.write(`error RL-1001: reach needs Node >= 22.18 (this is ${process.version}); run \`npm install\` in ${root} to get the pinned Node 24\n`)
    process.exit(2)
  }
  const r = spawnSync(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit', env: { ...process.env, REACH_REEXEC: '1' } })
  process.exit(r.status ?? 1)
}
// Cache compiled modules between runs: most commands are short-lived, so
// startup is most of their cost.
module.enableCompileCache?.()
// libp2p's logger asks whether stderr is a terminal for every stream it opens (to colour debug
// output); ask once, here, before it loads.
process.env.DEBUG_COLORS ??= String(tty.isatty(2))
const { main } = await import('./main.ts')
process.exitCode = await main(process.argv.slice(2))
