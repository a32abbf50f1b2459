/**
 * The policy gate (DESIGN.md §3), in its fixed order: the capability is declared in the manifest
 * (RL-3015), granted by the node's policy (RL-3009), and the run's tool-call budget is not spent
 * (RL-3016). A denial's message is a function of the call, so a replay can write it again.
 */
import type { ErrorCode } from '../../protocol/errors.ts'

export interface GateError {
  code: ErrorCode
  message: string
}

export function undeclared (tool: string): GateError {
  return { code: 'RL-3015', message: `the pack does not declare the capability ${JSON.stringify(tool)}` }
}

export function notGranted (tool: string): GateError {
  return { code: 'RL-3009', message: `this node's policy does not grant ${tool}` }
}

export function budgetSpent (toolCalls: number): GateError {
  return { code: 'RL-3016', message: `the run's budget of ${toolCalls} tool calls is spent` }
}

/** The live decision: undefined lets the call through. */
export function gate (tool: string, declared: readonly string[], granted: readonly string[], callsMade: number, maxCalls: number): GateError | undefined {
  if (!declared.includes(tool)) return undeclared(tool)
  if (!granted.includes(tool)) return notGranted(tool)
  if (callsMade >= maxCalls) return budgetSpent(maxCalls)
  return undefined
}

/**
 * What a replay accepts in place of a live decision, which it cannot repeat in full: whether
 * the capability was granted is the recording node's policy, known only by its hash. So a
 * recorded RL-3009 stands where the capability is declared and the run has not shown the
 * capability granted (called it, or been refused it for the budget: the gate checks the grant
 * first); a policy does not change during a run, so once refused, a capability is refused
 * RL-3009 every time. Every other step is the replay's own.
 *
 *   recorded denial → the denial the gate gives (RL-3015, RL-3009, RL-3016), or undefined when
 *                     the gate would have let the call through
 */
export function replayedDenial (tool: string, recordedCode: unknown, declared: readonly string[], granted: ReadonlySet<string>, refused: ReadonlySet<string>, callsMade: number, maxCalls: number): GateError | undefined {
  if (!declared.includes(tool)) return undeclared(tool)
  if (refused.has(tool)) return notGranted(tool)
  if (recordedCode === 'RL-3009' && !granted.has(tool)) return notGranted(tool)
  if (callsMade >= maxCalls) return budgetSpent(maxCalls)
  return undefined
}

/**
 * Why a recorded call could not have passed the gate, or undefined. `refused`: tools the record
 * already denied as not granted.
 */
export function replayedCallProblem (tool: string, declared: readonly string[], refused: ReadonlySet<string>, callsMade: number, maxCalls: number): GateError | undefined {
  if (!declared.includes(tool)) return { code: 'RL-3015', message: `the record calls ${JSON.stringify(tool)}, which the pack does not declare` }
  if (refused.has(tool)) return { code: 'RL-3017', message: `the record calls ${tool}, which it said earlier this node's policy does not grant` }
  if (callsMade >= maxCalls) return { code: 'RL-3016', message: `the record makes tool call ${callsMade + 1}, past the run's budget of ${maxCalls}` }
  return undefined
}
