/** Awaiting in tests without sleeping: a promise with its resolver, and a wait that fails loudly. */

/** A promise with its resolver, to let a test step a handler along without sleeping. */
export function deferred<T = void> (): { promise: Promise<T>, resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => { resolve = r })
  return { promise, resolve }
}

/** Await `promise`, failing loudly (not by the test runner's timeout) if it never settles. */
export async function within<T> (promise: Promise<T>, what: string, ms = 10_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`timed out waiting for ${what}`)) }, ms) })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}
