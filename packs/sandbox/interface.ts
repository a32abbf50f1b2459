/** What the host holds: a sandbox bound to one pack for one run, and what makes them. */
import type { JsonValue } from '../../protocol/canonical.ts'
import type { SandboxLimits } from './limits.ts'

export interface CallResult {
  value: JsonValue
  /** Ticks used by this call. */
  fuel: number
}

/** What one step of the run loop hands the host: the state stayed in the sandbox. */
export interface StepResult {
  effects?: JsonValue
  output?: JsonValue
  /** Ticks used by this step. */
  fuel: number
}

export interface Sandbox {
  /**
   * Stateless: the state goes in and comes back as JSON. Synchronous. Throws ReachError RL-31xx;
   * the sandbox is then disposed and every later call throws the same error.
   */
  call (fn: 'init' | 'reduce', args: JsonValue[]): CallResult
  /**
   * The run loop's path. `begin(input)` runs init and keeps the state inside the sandbox; each
   * `step(event)` runs reduce on it, keeps the new state and returns only effects and output,
   * so a step copies the event in and the effects out, never the state. Returns the ticks used.
   * Same errors as `call`; a reduce result without `state` is RL-3108.
   */
  begin (input: JsonValue): number
  /** `eventText` is the event's canonical JSON text (the caller writes it once, on its hot path). */
  step (eventText: string): StepResult
  /**
   * Let `cancel` stop a step: while its [0] (cancel asked, set by whichever thread cancels) and
   * [1] (armed by the run loop for a live step) are both non-zero, the running step ends at its
   * next tick with RL-4015 (`details.interrupted: 'cancel'`), and the sandbox is disposed.
   */
  watch? (cancel: Int32Array): void
  /** Ticks used so far, loading included. */
  readonly fuelUsed: number
  /** Idempotent. */
  dispose (): void
}

/** What the run loop is given to make its sandboxes (a `SandboxPool` owned by the node). */
export interface SandboxFactory {
  /**
   * files: path → source text; entry: the module to load (an ES module that exports init and
   * reduce). Throws RL-1003 for limits it cannot honour, RL-31xx if loading fails.
   */
  create (files: Record<string, string>, entry: string, limits?: Partial<SandboxLimits>): Promise<Sandbox>
}
