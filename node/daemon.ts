/**
 * The node daemon (`reach node start`): a whole node (node/create.ts) in the foreground of this
 * process, until SIGINT/SIGTERM; a second signal exits at once.
 */
import type { ApiServer } from './api.ts'
import type { Endpoint } from './api-client.ts'
import { createNode, type NetworkInit, type NetworkServices, type ReachNode } from './create.ts'
import type { HomePaths } from './home.ts'
import type { ReachHost } from './host.ts'
import { lineLogger } from './logger.ts'
import type { LocalNode } from './node.ts'
import type { ComponentLogger } from '../federation/components.ts'

export interface DaemonOptions extends NetworkInit {
  home?: HomePaths
  /** Where log lines go (default: stdout); a function of one line, or a logger. */
  log?: ((line: string) => void) | ComponentLogger
}

/** A running node, for the CLI (through its API), and for tests, benches and simulations (directly). */
export interface Daemon {
  readonly node: LocalNode
  readonly host: ReachHost
  readonly api: ApiServer
  readonly endpoint: Endpoint
  readonly delegator: NetworkServices['delegator']
  readonly exchange: NetworkServices['exchange']
  readonly peers: NetworkServices['peers']
  readonly network: NetworkServices
  readonly reach: ReachNode
  stop (): Promise<void>
}

function loggerOf (log: DaemonOptions['log']): ComponentLogger {
  if (log === undefined) return lineLogger({ write: (line) => { process.stdout.write(line + '\n') } })
  if (typeof log === 'function') return lineLogger({ write: log })
  return log
}

/** Build and start a node with its control API. */
export async function startDaemon (options: DaemonOptions = {}): Promise<Daemon> {
  const { home, log, ...network } = options
  const reach = await createNode({ ...(home === undefined ? {} : { home }), network: { ...network, apiPort: network.apiPort ?? 0 }, logger: loggerOf(log) })
  await reach.start()
  const net = reach.network as NetworkServices
  return {
    node: reach.local,
    host: net.host,
    api: net.api as ApiServer,
    endpoint: net.endpoint as Endpoint,
    delegator: net.delegator,
    exchange: net.exchange,
    peers: net.peers,
    network: net,
    reach,
    stop: async () => { await reach.stop() }
  }
}

/** Run the daemon in the foreground until SIGINT/SIGTERM; resolves when it has stopped. */
export async function runDaemon (options: DaemonOptions = {}): Promise<void> {
  const d = await startDaemon(options)
  const log = loggerOf(options.log).forComponent('reach:node')
  log.info(`ready; other nodes join with: reach node start --bootstrap ${d.endpoint.addrs[0] ?? '<address>'}`)
  await new Promise<void>((resolve) => {
    let signals = 0
    const onSignal = (signal: string): void => {
      signals++
      if (signals > 1) process.exit(130)
      log.info(`${signal}: shutting down`)
      d.stop().then(() => { log.info('stopped'); resolve() }, (err) => { log.warn(`shutdown failed: ${(err as Error).message}`); resolve() })
    }
    process.once('SIGINT', () => { onSignal('SIGINT') })
    process.once('SIGTERM', () => { onSignal('SIGTERM') })
  })
}
