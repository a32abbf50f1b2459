/**
 * Delegation streams a client keeps after a result, per peer, for its next request to that peer
 * (no new stream, no protocol negotiation round trip). At most IDLE_STREAMS_PER_PEER per peer,
 * each for at most CLIENT_IDLE_MS, let go as soon as the peer closes its end.
 */
import type { Clock } from './components.ts'
import { CLIENT_IDLE_MS, IDLE_STREAMS_PER_PEER } from './delegation-constants.ts'
import type { FrameStream } from './frames.ts'

interface IdleStream {
  fs: FrameStream
  since: number
  /** Stop watching it for the peer's close. */
  forget: () => void
}

export class IdleStreams {
  private readonly clock: Clock
  private readonly kept = new Map<string, IdleStream[]>()

  constructor (clock: Clock) {
    this.clock = clock
  }

  /** An idle stream to `peer` that is still open both ways, if one is kept. */
  take (peer: string): FrameStream | undefined {
    const kept = this.kept.get(peer)
    while (kept !== undefined && kept.length > 0) {
      const { fs, since, forget } = kept.pop() as IdleStream
      forget()
      const s = fs.stream
      if (this.clock.now() - since < CLIENT_IDLE_MS && s.status === 'open' && s.writeStatus === 'writable' && s.remoteWriteStatus === 'writable') return fs
      void fs.close()
    }
    this.prune(peer)
    return undefined
  }

  /** Keep `fs` for the next request to `peer`, or close it when it cannot be kept. */
  keep (peer: string, fs: FrameStream): void {
    const s = fs.stream
    const kept = this.kept.get(peer) ?? []
    // The peer closes a stream it will not read again (a refusal, an old server): not kept.
    if (kept.length >= IDLE_STREAMS_PER_PEER || s.status !== 'open' || s.remoteWriteStatus !== 'writable') {
      void fs.close()
      return
    }
    // Closed by the peer (idle too long on its side) or torn down while kept: let it go at once.
    const gone = (): void => {
      const i = kept.indexOf(entry)
      if (i >= 0) kept.splice(i, 1)
      this.prune(peer)
      forget()
      void fs.close()
    }
    const forget = (): void => {
      s.removeEventListener('remoteCloseWrite', gone)
      s.removeEventListener('close', gone)
    }
    const entry: IdleStream = { fs, since: this.clock.now(), forget }
    s.addEventListener('remoteCloseWrite', gone)
    s.addEventListener('close', gone)
    kept.push(entry)
    this.kept.set(peer, kept)
  }

  /** No entry for a peer with nothing kept: the map stays as small as what is kept. */
  private prune (peer: string): void {
    if (this.kept.get(peer)?.length === 0) this.kept.delete(peer)
  }

  /** Close every kept stream (to `peer`, or to every peer); resolves when they are closed (never rejects). */
  async drop (peer?: string): Promise<void> {
    const closing: Array<Promise<void>> = []
    for (const [p, kept] of this.kept) {
      if (peer !== undefined && p !== peer) continue
      for (const { fs, forget } of kept.splice(0)) {
        forget()
        closing.push(fs.close())
      }
      this.kept.delete(p)
    }
    await Promise.all(closing)
  }
}
