/**
 * The node's data directory: `$REACH_HOME`, else `~/.reach`.
 *
 *   <home>/keys/node.key        the node identity (Ed25519; later its libp2p PeerId), 0600
 *   <home>/policy.json          node policy (packs, capabilities, budgets)
 *   <home>/trust.json           trusted publisher keys
 *   <home>/packs/<cid>.pack     verified pack bundles (DAG-CBOR bytes)
 *   <home>/packs/<cid>.sigs.json  their publisher signatures
 *   <home>/runs.db/             every run: its log, record and closing checkpoint (LevelDB, node/run-db.ts)
 *   <home>/runs/                runs as older versions kept them (a directory each), moved into runs.db on open
 *
 * Every command resolves paths through here; nothing else reads the
 * environment for locations.
 */
import { mkdir } from 'node:fs/promises'
import os from 'node:os'
import { join, resolve } from 'node:path'

export interface HomePaths {
  root: string
  keys: string
  nodeKey: string
  policy: string
  trust: string
  packs: string
  /** Where older versions kept a directory per run (read once, to move them into `runDb`). */
  runs: string
  runDb: string
}

export function homeDir (env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.REACH_HOME
  return resolve(configured !== undefined && configured !== '' ? configured : join(os.homedir(), '.reach'))
}

export function homePaths (root = homeDir()): HomePaths {
  return {
    root,
    keys: join(root, 'keys'),
    nodeKey: join(root, 'keys', 'node.key'),
    policy: join(root, 'policy.json'),
    trust: join(root, 'trust.json'),
    packs: join(root, 'packs'),
    runs: join(root, 'runs'),
    runDb: join(root, 'runs.db')
  }
}

/** Create the directory layout (0700: it holds keys and private state). */
export async function ensureHome (paths: HomePaths = homePaths()): Promise<HomePaths> {
  for (const dir of [paths.root, paths.keys, paths.packs]) await mkdir(dir, { recursive: true, mode: 0o700 })
  return paths
}
