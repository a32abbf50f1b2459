import { isReachError } from '../protocol/errors.ts'

/** The RL- code a promise rejects with; undefined when it resolves; a marker when it throws something else. */
export async function code (promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise
  } catch (err) {
    return isReachError(err) ? err.code : `not a ReachError: ${String(err)}`
  }
  return undefined
}
