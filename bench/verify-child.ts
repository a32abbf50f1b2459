/**
 * Runs `reach verify` (the CLI's own code path) on one log in a fresh
 * process and prints its wall time and peak RSS as JSON, so the parent can
 * measure memory without its own heap in the way.
 */
import { verify } from '../node/cli/commands/log.ts'

const path = process.argv[2] as string
const t = performance.now()
const r = await verify({ logPath: path })
const ms = performance.now() - t
process.stdout.write(JSON.stringify({ ms, maxRssKb: process.resourceUsage().maxRSS, result: { ok: r.json.valid === true, count: r.json.count ?? 0, error: r.json.error } }) + '\n')
