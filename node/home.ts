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
 *
 * The data dir belongs to the user running the node: whoever else can write
 * it, or `keys/`, `policy.json`, `trust.json`, `config.json`, `api.token` or
 * `node.json`, could swap the node's identity, what it trusts and grants, or
 * where the CLI sends its API token. `ensureHome` (every command that opens
 * the data dir goes through it) and the CLI's API client refuse such a dir
 * with RL-1014 before reading or writing anything in it; `reach doctor` lists
 * each problem (`homeProblems`). POSIX only: Windows has no uid or mode bits.
 */
import type { Stats } from 'node:fs'
import { lstat, mkdir, readdir, stat } from 'node:fs/promises'
import os from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { ReachError } from '../protocol/errors.ts'
import { errno } from './fs.ts'

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

/**
 * Open the data dir: create it (0700: it holds keys and private state) or
 * check the one there (RL-1014, nothing written into it), then its layout.
 */
export async function ensureHome (paths: HomePaths = homePaths()): Promise<HomePaths> {
  try {
    await mkdir(paths.root, { recursive: true, mode: 0o700 })
  } catch (err) {
    // A symlink to nowhere, say: another user's link is theirs to explain.
    await checkHome(paths)
    throw (await notADirectory('data dir', paths.root, err)) ?? err
  }
  // Checked after mkdir, not before: a dir someone else made in between is refused too.
  await checkHome(paths)
  for (const [what, dir] of [['keys dir', paths.keys], ['packs dir', paths.packs]] as const) {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 })
    } catch (err) {
      throw (await notADirectory(what, dir, err)) ?? err
    }
  }
  return paths
}

/**
 * RL-1004 when `mkdir` of `dir` failed (EEXIST, ENOTDIR) because `dir`, or a path above it, is
 * something other than a directory: it names that path. Undefined for any other failure.
 */
async function notADirectory (what: string, dir: string, err: unknown): Promise<ReachError | undefined> {
  if (errno(err) !== 'EEXIST' && errno(err) !== 'ENOTDIR') return undefined
  for (let path = dir; ; path = dirname(path)) {
    const st = await statOf(path, stat)
    if (st?.isDirectory() === true) return undefined
    if (st !== undefined) {
      const found = path === dir ? `the ${what} ${dir} is not a directory` : `the ${what} ${dir} cannot be made: ${path} is ${st.isFile() ? 'a file' : 'not a directory'}`
      return new ReachError('RL-1004', { message: `${found}; move it away, or set REACH_HOME to another data dir`, details: { path }, cause: err })
    }
    if (dirname(path) === path) return undefined
  }
}

/** Files in the data dir that decide what the node is, trusts and grants, or where the CLI sends its token. */
const SENSITIVE_FILES: Readonly<Record<string, string>> = {
  'policy.json': 'policy',
  'trust.json': 'trust registry',
  'config.json': 'config',
  'api.token': 'API token',
  'node.json': 'endpoint file'
}
/** Group and other write: whoever has them can replace what the node reads. */
const FOREIGN_WRITE_BITS = 0o022

/** A path in the data dir that another user owns or can write (RL-1014). */
export interface HomeProblem {
  /** What it is: `data dir`, `keys dir`, `key file`, `policy` … */
  what: string
  path: string
  /** Its owner and mode (octal) as found. */
  uid: number
  mode: string
  /** One line: the path, what was found, and the command that fixes it. */
  message: string
}

/**
 * Every path of the data dir that is not this user's alone: owned by another
 * uid, writable by group or others, or a symlink another user owns (what a
 * link points to is checked like the path itself). Missing files are fine.
 * Empty where there are no uids (Windows).
 */
export async function homeProblems (paths: HomePaths = homePaths()): Promise<HomeProblem[]> {
  const uid = process.getuid?.()
  if (uid === undefined) return []
  const found: HomeProblem[] = []
  const check = async (what: string, path: string): Promise<void> => {
    const problem = await ownerProblem(what, path, uid)
    if (problem !== undefined) found.push(problem)
  }
  await check('data dir', paths.root)
  await check('keys dir', paths.keys)
  for (const name of await entries(paths.keys)) await check('key file', join(paths.keys, name))
  for (const [name, what] of Object.entries(SENSITIVE_FILES)) await check(what, join(paths.root, name))
  return found
}

/** Refuse a data dir with any `homeProblems` (RL-1014: the first, and how many more). */
export async function checkHome (paths: HomePaths = homePaths()): Promise<HomePaths> {
  const problems = await homeProblems(paths)
  const first = problems[0]
  if (first === undefined) return paths
  const more = problems.length === 1 ? '' : ` (and ${problems.length - 1} more: reach doctor lists them)`
  throw new ReachError('RL-1014', { message: first.message + more, details: { path: first.path, problems: problems.map(({ what, path, uid, mode }) => ({ what, path, uid, mode })) } })
}

async function ownerProblem (what: string, path: string, uid: number): Promise<HomeProblem | undefined> {
  const link = await statOf(path, lstat)
  if (link === undefined) return undefined
  const mode = (s: Stats): string => (s.mode & 0o7777).toString(8).padStart(4, '0')
  if (link.isSymbolicLink() && link.uid !== uid) {
    return { what, path, uid: link.uid, mode: mode(link), message: `${what} ${path} is a symlink owned by uid ${link.uid}, not by this user (uid ${uid}), who can point it elsewhere; replace it with what it points to, or run: chown -h ${uid} ${shellWord(path)}` }
  }
  const st = link.isSymbolicLink() ? await statOf(path, stat) : link
  if (st === undefined) return undefined
  const foreign = st.uid !== uid
  const writable = (st.mode & FOREIGN_WRITE_BITS) !== 0
  if (!foreign && !writable) return undefined
  const dir = st.isDirectory()
  const why = [foreign ? `not owned by this user (uid ${uid})` : '', writable ? 'writable by group or others' : ''].filter((w) => w !== '').join(' and ')
  const fix = [foreign ? `chown ${dir ? '-R ' : ''}${uid} ${shellWord(path)}` : '', writable ? `chmod ${dir ? '700' : '600'} ${shellWord(path)}` : ''].filter((f) => f !== '').join(' && ')
  return {
    what,
    path,
    uid: st.uid,
    mode: mode(st),
    message: `${what} ${path} (owner uid ${st.uid}, mode ${mode(st)}) is ${why}: another user could swap the node's keys, trust or policy; run: ${fix}${foreign ? ', or use a data dir of your own' : ''}`
  }
}

/** A path's stats; undefined when there is nothing there. RL-1004 when it cannot be looked at. */
async function statOf (path: string, how: typeof stat | typeof lstat): Promise<Stats | undefined> {
  try {
    return await how(path)
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined
    throw new ReachError('RL-1004', { message: `cannot check ${path} (${errno(err) ?? 'error'})`, details: { path }, cause: err })
  }
}

async function entries (dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort()
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return []
    throw new ReachError('RL-1004', { message: `cannot check ${dir} (${errno(err) ?? 'error'})`, details: { path: dir }, cause: err })
  }
}

/** A path as one shell word, for a fix the operator pastes. */
function shellWord (path: string): string {
  return /^[\w@%+=:,./~-]+$/.test(path) ? path : `'${path.replaceAll("'", "'\\''")}'`
}
