/**
 * The open/close life of a store, shared by both implementations: open is
 * idempotent, a failed open leaves nothing held, close waits for writes in
 * flight and is idempotent too, and anything used while not open is RL-5007.
 */
import { ReachError } from '../../protocol/errors.ts'

type State = 'closed' | 'opening' | 'open' | 'closing'

export class StoreLifecycle {
  readonly #path: string
  #state: State = 'closed'
  #closing: Promise<void> | undefined

  constructor (path: string) {
    this.#path = path
  }

  /** Run `open`; on failure run `release` and stay closed. */
  async open (open: () => Promise<void>, release: () => Promise<void>): Promise<void> {
    if (this.#state !== 'closed') {
      if (this.#state === 'open') return
      throw new ReachError('RL-5007', { message: `${this.#path} is ${this.#state}` })
    }
    this.#state = 'opening'
    try {
      await open()
      this.#state = 'open'
    } catch (err) {
      await release()
      this.#state = 'closed'
      throw err
    }
  }

  /** Wait for `drain` (writes in flight), then `release`, whatever drain did. */
  async close (drain: () => Promise<void>, release: () => Promise<void>): Promise<void> {
    if (this.#state === 'closed') return
    if (this.#closing !== undefined) return await this.#closing
    this.#state = 'closing'
    this.#closing = (async () => {
      try {
        await drain()
      } finally {
        this.#closing = undefined
        try {
          await release()
        } finally {
          this.#state = 'closed'
        }
      }
    })()
    return await this.#closing
  }

  /** `value` when the store is open, else RL-5007. */
  require<T> (value: T | undefined): T {
    if (this.#state !== 'open' || value === undefined) {
      throw new ReachError('RL-5007', { message: `${this.#path} is ${this.#state === 'open' ? 'not open' : this.#state}` })
    }
    return value
  }
}
