/**
 * The `reach` command line. Every command accepts `--json`; every failure is
 * an RL- code with a one-line explanation and a non-zero exit (2 for usage
 * and input errors, 3 for a locked store, 1 for everything else; exitCodeFor).
 *
 * Command modules are imported lazily inside their actions so an offline
 * command never pays for code it does not run (libp2p, later, above all).
 */
import { Command, CommanderError, Option } from 'commander'
import { CODES, ReachError } from '../../protocol/errors.ts'
import type { Io, Outcome } from './io.ts'
import { parseSeqOption } from './io.ts'
import { storageFailure } from '../fs.ts'
import { parseLimit } from '../limit.ts'
import { VERSION } from '../version.ts'

type Action = (opts: Record<string, unknown>, io: Io, args: string[]) => Promise<Outcome>

const seq = (name: string) => (v: string): number => parseSeqOption(v, name)

function render (io: Io, outcome: Outcome): number {
  if (outcome === undefined) return 0
  if (io.json) io.write(JSON.stringify({ ok: outcome.exitCode === undefined || outcome.exitCode === 0, ...outcome.json }) + '\n')
  else io.write(outcome.human.join('\n') + '\n')
  return outcome.exitCode ?? 0
}

/**
 * `reach` exits 2 for usage and input (RL-1xxx), 3 for a store another process holds (RL-5008:
 * nothing was done, try again once it lets go), 1 otherwise.
 */
function exitCodeFor (code: string): number {
  return code.startsWith('RL-1') ? 2 : code === 'RL-5008' ? 3 : 1
}

function renderError (io: Io, err: unknown): number {
  // A file system that refuses writes is the storage's answer (RL-5010); anything else that is
  // not one of ours is a failure of our own (RL-6006), never a mistyped command.
  const storage = err instanceof ReachError ? undefined : storageFailure(err)
  const e = err instanceof ReachError
    ? err
    : storage ?? new ReachError('RL-6006', { message: `internal error: ${err instanceof Error ? err.message : String(err)}`, details: { internal: true } })
  if (e !== err && storage === undefined && !(err instanceof CommanderError)) {
    // Not one of ours: keep the stack for whoever files the bug.
    process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`)
  }
  if (io.json) {
    io.write(JSON.stringify({ ok: false, error: e.toJSON() }) + '\n')
  } else {
    const at = e.seq === undefined ? '' : ` (seq ${e.seq})`
    // One line whatever a library put in the message; --json keeps all of it.
    process.stderr.write(`error ${e.code}: ${e.message.split('\n', 1)[0] as string}${at}\n`)
  }
  return exitCodeFor(e.code)
}

export async function main (argv: string[]): Promise<number> {
  const io: Io = { json: argv.includes('--json'), write: (t) => process.stdout.write(t) }
  let result = 0
  const program = new Command('reach')
    .description('Reach: a federated mesh node for verifiable execution')
    .version(VERSION, '-V, --version')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ writeErr: () => {} })

  const action = (load: () => Promise<Action>) => async (...params: unknown[]) => {
    const cmd = params.at(-1) as Command
    const opts = cmd.opts()
    const args = params.slice(0, -2).filter((p): p is string => typeof p === 'string')
    result = render(io, await (await load())(opts, io, args))
  }
  const json = new Option('--json', 'machine-readable output (one JSON document)')
  const cmd = (parent: Command, name: string, description: string): Command =>
    parent.command(name).description(description).addOption(json).exitOverride()
  const logPath = (c: Command, required = true): Command => required
    ? c.requiredOption('--log-path <path>', 'event log: a .log/.jsonl file, or a LevelDB directory')
    : c.option('--log-path <path>', 'event log: a .log/.jsonl file, or a LevelDB directory')

  logPath(cmd(program, 'init', 'create the node identity, config and data dir; with --log-path, a new event log with its genesis event'), false)
    .addOption(new Option('--store <kind>', 'storage engine').choices(['jsonl', 'level']))
    .option('--federation <id>', 'the federation this node joins (saved in config.json)')
    .option('--listen <multiaddr...>', 'addresses to listen on (saved in config.json)')
    .option('--bootstrap <multiaddr...>', 'peers to join through (saved in config.json)')
    .action(action(async () => async (opts) => opts.logPath === undefined
      ? await (await import('./commands/mesh.ts')).initNode(opts)
      : await (await import('./commands/log.ts')).init(opts)))

  logPath(cmd(program, 'append', 'append one event (durable before it returns)'))
    .requiredOption('--type <type>', 'event type, e.g. AgentCreated')
    .requiredOption('--aggregate-id <id>', 'the aggregate the event is about')
    .option('--payload <json>', 'event payload (any JSON)', 'null')
    .option('--metadata <json>', 'event metadata (a JSON object)', '{}')
    .action(action(async () => (await import('./commands/log.ts')).append))

  logPath(cmd(program, 'read', 'print events in seq order'))
    .option('--from-seq <n>', 'first seq', seq('--from-seq'), 0)
    .option('--to-seq <n>', 'last seq (inclusive)', seq('--to-seq'))
    .action(action(async () => (await import('./commands/log.ts')).read))

  logPath(cmd(program, 'verify', 'verify the whole hash chain and its Merkle root (streaming)'))
    .option('--workers <n>', 'threads for a large JSONL log (0: verify on this thread only)', seq('--workers'))
    .option('--stats', 'report time, events/s and peak memory')
    .action(action(async () => (await import('./commands/log.ts')).verify))

  logPath(cmd(program, 'repair', 'cut an uncommitted or torn tail left by a crash (kept in a .torn file)'))
    .action(action(async () => (await import('./commands/log.ts')).repair))

  logPath(cmd(program, 'replay', 'replay a recorded run (by id), or a log through the reducer (--log-path)'), false)
    .argument('[run-id]', 'a run of this node: re-execute its pack against the record')
    .option('--until-seq <n>', 'stop after this seq', seq('--until-seq'))
    .option('--trace', 'print every event with its field-level state change')
    .option('--diff-with <file>', 'compare with a checkpoint (its state snapshot) or a state JSON file')
    .action(action(async () => async (opts, io, args) => {
      if (args[0] !== undefined) return await (await import('./commands/run.ts')).replayRun(args[0])
      if (opts.logPath === undefined) throw new ReachError('RL-1001', { message: 'replay needs a run id or --log-path' })
      return await (await import('./commands/log.ts')).replayCmd(opts)
    }))

  cmd(program, 'run', 'run a pack (a folder, or a CID or name from the pack store) under this node\'s policy')
    .argument('<pack>', 'pack folder, CID or name')
    .option('--input <json>', 'the input handed to init (JSON)', 'null')
    .option('--budget <json>', 'budget overrides, e.g. \'{"fuel":1000000,"tool_calls":10}\'')
    .action(action(async () => (await import('./commands/run.ts')).run))
  const runs = program.command('runs').description('runs recorded on this node').exitOverride()
  cmd(runs, 'list', 'list runs')
    .option('--limit <n>', 'at most this many (a positive integer)', (v: string) => parseLimit(v, '--limit'))
    .action(action(async () => (await import('./commands/run.ts')).list))
  cmd(runs, 'resume', 'finish runs a killed process left open (no recorded tool call runs twice)')
    .action(action(async () => (await import('./commands/run.ts')).resume))
  cmd(program, 'verify-determinism', 'replay a run N times in fresh sandboxes; all fingerprints must be equal')
    .argument('<run-id>')
    .option('--n <n>', 'replays', seq('--n'), 5)
    .action(action(async () => (await import('./commands/run.ts')).verifyDeterminism))
  cmd(program, 'explain-failure', 'why a run failed: its error, and every denied or failed tool call')
    .argument('<run-id>')
    .action(action(async () => (await import('./commands/run.ts')).explainFailure))
  cmd(program, 'export', 'a finished run as one self-verifying CAR file (pack, log, checkpoint, record)')
    .argument('<run-id>')
    .requiredOption('-o, --output <file>', 'where to write the .car file')
    .action(action(async () => (await import('./commands/run.ts')).exportRun))
  cmd(program, 'import', 'verify a run CAR file completely, then store it for offline replay')
    .argument('<file>')
    .action(action(async () => (await import('./commands/run.ts')).importRun))
  cmd(program, 'diff-run', 'compare two runs: first divergent event, output and record differences')
    .argument('<run-a>')
    .argument('<run-b>')
    .action(action(async () => (await import('./commands/run.ts')).diffRun))
  cmd(program, 'gc', 'delete finished runs beyond the newest N')
    .option('--keep-last <n>', 'runs to keep', seq('--keep-last'), 100)
    .action(action(async () => (await import('./commands/run.ts')).gc))
  cmd(program, 'doctor', 'check data dir, keys, policy, trust registry, packs, runs and sandbox')
    .action(action(async () => (await import('./commands/run.ts')).doctor))
  cmd(program, 'demo', 'zero-config: build, sign, trust, run and replay the shipped counter pack')
    .option('--mesh', 'three nodes on loopback instead: publish, fetch through the DHT, delegate, verify')
    .action(action(async () => async (opts) => opts.mesh === true
      ? await (await import('./commands/mesh.ts')).demoMesh()
      : await (await import('./commands/run.ts')).demo()))
  cmd(program, 'data-dir', 'where this node keeps its keys, packs and runs ($REACH_HOME or ~/.reach)')
    .action(action(async () => (await import('./commands/run.ts')).dataDir))
  cmd(program, 'audit', 'what this node did: its audit ledger (hash-chained, signed), oldest first')
    .option('--since <seq>', 'only entries after this seq', seq('--since'))
    .option('--type <type>', 'only entries of this type (delegation.sent), or of its kinds (delegation)')
    .option('--limit <n>', 'at most this many (a positive integer; default 100, at most 10,000)', (v: string) => parseLimit(v, '--limit'))
    .action(action(async () => (await import('./commands/audit.ts')).list))

  cmd(program, 'keygen', 'generate an Ed25519 key file (mode 0600)')
    .requiredOption('--output <path>', 'where to write the key file')
    .option('--publisher', 'a pack publisher key rather than an operator key')
    .option('--force', 'overwrite an existing key file')
    .action(action(async () => (await import('./commands/keys.ts')).keygen))

  const evidence = program.command('evidence').description('evidence against peers that signed a lie: make, verify offline, list, show, submit').exitOverride()
  cmd(evidence, 'make', 'pair two checkpoint files of one signer, log and position that disagree into evidence')
    .argument('<a>', 'a checkpoint file').argument('<b>', 'another checkpoint file')
    .option('--output <path>', 'write the evidence here (else it is printed)')
    .action(action(async () => (await import('./commands/evidence.ts')).make))
  cmd(evidence, 'verify', 'check an evidence file offline: what it proves, or the code of why it proves nothing')
    .argument('<file>', 'an evidence file')
    .action(action(async () => (await import('./commands/evidence.ts')).verify))
  cmd(evidence, 'list', 'evidence this node holds against peers that signed a lie (each is untrusted here)')
    .option('--limit <n>', 'at most this many (a positive integer)', (v: string) => parseLimit(v, '--limit'))
    .action(action(async () => (await import('./commands/witnesses.ts')).evidenceList))
  cmd(evidence, 'show', 'one piece of evidence: what it proves, against whom, and its text')
    .argument('<id>', 'its id (reach evidence list)')
    .action(action(async () => (await import('./commands/witnesses.ts')).evidenceShow))
  cmd(evidence, 'submit', 'hand an evidence file to the running node: checked, kept, acted on, gossiped')
    .argument('<file>', 'an evidence file')
    .action(action(async () => (await import('./commands/witnesses.ts')).evidenceSubmit))

  const checkpoints = program.command('checkpoints').description('run checkpoints this node heard of, and the peers that replayed them').exitOverride()
  cmd(checkpoints, 'list', 'per run: its signed checkpoint and the distinct peers whose receipts vouch for it')
    .option('--run <run-id>', 'only this run')
    .option('--limit <n>', 'at most this many, newest first (a positive integer)', (v: string) => parseLimit(v, '--limit'))
    .action(action(async () => (await import('./commands/witnesses.ts')).checkpointsList))
  cmd(checkpoints, 'show', 'one checkpoint, and every receipt for it')
    .argument('<checkpoint-id>', 'its id')
    .action(action(async () => (await import('./commands/witnesses.ts')).checkpointsShow))

  const checkpoint = program.command('checkpoint').description('signed checkpoints').exitOverride()
  logPath(cmd(checkpoint, 'create', 'sign a checkpoint of the log at a seq'))
    .requiredOption('--at-seq <n>', 'the seq the checkpoint covers', seq('--at-seq'))
    .requiredOption('--key-path <path>', 'signing key file')
    .requiredOption('--output <path>', 'a directory (file name derived) or a .checkpoint file path')
    .action(action(async () => (await import('./commands/checkpoint.ts')).create))
  logPath(cmd(checkpoint, 'verify', 'verify signature, log hash, merkle root and replayed state'))
    .requiredOption('--checkpoint-path <path>', 'the .checkpoint file')
    .option('--signer <key>', 'require this signer (multibase public key or key file)')
    .action(action(async () => (await import('./commands/checkpoint.ts')).verify))

  const proof = program.command('proof').description('RFC 6962 Merkle proofs over the event log').exitOverride()
  logPath(cmd(proof, 'inclusion', 'prove that the event at a seq is in the log'))
    .requiredOption('--seq <n>', 'the event', seq('--seq'))
    .option('--tree-size <n>', 'size of the tree to prove against (default: whole log)', seq('--tree-size'))
    .option('--output <file>', 'also write the proof to a file')
    .action(action(async () => (await import('./commands/proof.ts')).inclusion))
  logPath(cmd(proof, 'consistency', 'prove that the log of size --from is a prefix of the log of size --to'))
    .requiredOption('--from <size>', 'older tree size (number of events)', seq('--from'))
    .requiredOption('--to <size>', 'newer tree size (number of events)', seq('--to'))
    .option('--output <file>', 'also write the proof to a file')
    .action(action(async () => (await import('./commands/proof.ts')).consistency))
  logPath(cmd(proof, 'verify', 'check a proof file (and, with --log-path, its roots against the log)'), false)
    .requiredOption('--proof <file>', 'a proof written by `reach proof inclusion|consistency --output`')
    .action(action(async () => (await import('./commands/proof.ts')).verifyProof))

  const pack = program.command('pack').description('signed, content-addressed packs').exitOverride()
  cmd(pack, 'build', 'bundle a pack folder deterministically (DAG-CBOR) and print its CIDv1')
    .argument('<dir>')
    .option('--output <file>', 'also write the bundle bytes to a file')
    .action(action(async () => (await import('./commands/pack.ts')).build))
  cmd(pack, 'inspect', 'manifest, files, CID and signatures of a pack')
    .argument('<pack>', 'CID, name, name@version or bundle file')
    .action(action(async () => (await import('./commands/pack.ts')).inspect))
  cmd(pack, 'sign', 'sign a pack with a publisher key')
    .argument('<pack>', 'CID, name or name@version')
    .requiredOption('--key <file>', 'publisher key file (reach keygen --publisher)')
    .action(action(async () => (await import('./commands/pack.ts')).sign))
  const trust = program.command('trust').description('trusted publisher keys').exitOverride()
  cmd(pack, 'publish', 'provide a stored pack on the federation DHT (the node must be running)')
    .argument('<pack>', 'CID, name or name@version')
    .action(action(async () => (await import('./commands/mesh.ts')).packPublish))
  cmd(pack, 'fetch', 'find providers on the DHT, fetch, verify CID, signature and policy, then store')
    .argument('<cid>')
    .option('--timeout <ms>', 'give up after this long', seq('--timeout'))
    .action(action(async () => (await import('./commands/mesh.ts')).packFetch))

  const nodeCmd = program.command('node').description('the mesh node daemon').exitOverride()
  cmd(nodeCmd, 'start', 'run the node in the foreground (libp2p, DHT, delegation, control API) until Ctrl-C')
    .option('--listen <multiaddr...>', 'addresses to listen on (default /ip4/127.0.0.1/tcp/0)')
    .option('--bootstrap <multiaddr...>', 'peers to join through (with /p2p/<peer-id>)')
    .option('--federation <id>', 'federation id (default: config.json, else "default")')
    .option('--api-port <port>', 'control API port on 127.0.0.1 (default: any free port)')
    .action(action(async () => (await import('./commands/mesh.ts')).nodeStart))
  cmd(nodeCmd, 'status', 'the running node: peer id, addresses, peers, delegations')
    .action(action(async () => (await import('./commands/mesh.ts')).nodeStatus))
  const peersCmd = cmd(program, 'peers', 'known peers: connection, breaker, reputation')
    .action(action(async () => (await import('./commands/mesh.ts')).peers))
  cmd(peersCmd, 'list', 'known peers (what `reach peers` shows)')
    .action(action(async () => (await import('./commands/mesh.ts')).peers))
  cmd(peersCmd, 'connect', 'dial a peer now; once connected it is remembered and redialled after restarts')
    .argument('<multiaddr>', 'its address, e.g. /ip4/127.0.0.1/tcp/4001/p2p/<peer-id>')
    .action(action(async () => (await import('./commands/mesh.ts')).peersConnect))
  cmd(program, 'delegate', 'run a pack on a peer and check its signed result')
    .argument('<pack>', 'CID, name or name@version')
    .option('--input <json>', 'the input handed to init (JSON)', 'null')
    .option('--peer <peer-id>', 'this peer only (default: the best connected peer, retrying elsewhere)')
    .option('--budget <json>', 'budget overrides, e.g. \'{"fuel":100000}\'')
    .option('--timeout <ms>', 'deadline for the whole delegation', seq('--timeout'))
    .option('--verify', 'also fetch the run\'s log from the peer and replay it here')
    .action(action(async () => (await import('./commands/mesh.ts')).delegate))
  cmd(program, 'cancel', 'cancel a delegation in flight on this node')
    .argument('<delegation-id>')
    .action(action(async () => (await import('./commands/mesh.ts')).cancel))
  cmd(program, 'verify-remote', 'fetch a run\'s log from a peer, replay it here, compare with its signed checkpoint')
    .argument('<peer-id>')
    .argument('<run-id>')
    .action(action(async () => (await import('./commands/mesh.ts')).verifyRemote))

  cmd(trust, 'add', 'trust a publisher key')
    .argument('<key>', 'multibase public key or key file')
    .requiredOption('--name <name>', 'who the key belongs to')
    .action(action(async () => (await import('./commands/trust.ts')).add))
  cmd(trust, 'list', 'list trusted and revoked keys')
    .action(action(async () => (await import('./commands/trust.ts')).list))
  cmd(trust, 'revoke', 'revoke a publisher key')
    .argument('<key>', 'multibase public key or key file')
    .action(action(async () => (await import('./commands/trust.ts')).revoke))

  cmd(program, 'errors', 'list every RL- error code')
    .action(action(async () => async () => ({
      human: Object.entries(CODES).map(([c, m]) => `${c}  ${m}`),
      json: { codes: CODES }
    })))

  try {
    await program.parseAsync(argv, { from: 'user' })
    return result
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0
      if (err.code === 'commander.executeSubCommandAsync') return 0
      const message = err.message.replace(/^error: /, '')
      return renderError(io, new ReachError('RL-1001', { message }))
    }
    return renderError(io, err)
  }
}
