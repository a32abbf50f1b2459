/**
 * The node's logger (federation/components.ts `ComponentLogger`): one line per message, stamped
 * with the clock's time and the component, written where the process says (the daemon: stdout).
 * Debug lines are written only when asked for.
 */
import type { Clock, ComponentLogger, Logger } from '../federation/components.ts'

export interface LineLoggerInit {
  write: (line: string) => void
  clock?: Clock
  /** Write debug lines too (default: only info and warn). */
  debug?: boolean
}

/** Lines like `2026-12-02T15:28:11.000Z delegate: refused 12D3…: …` (the component's last name part). */
export function lineLogger (init: LineLoggerInit): ComponentLogger {
  const now = init.clock === undefined ? () => Date.now() : () => init.clock?.now() ?? Date.now()
  return {
    forComponent (name: string): Logger {
      const tag = name.split(':').at(-1) ?? name
      const line = (level: string, message: string): void => { init.write(`${new Date(now()).toISOString()} ${level}${tag}: ${message}`) }
      return {
        info: (message) => { line('', message) },
        warn: (message) => { line('warning: ', message) },
        debug: init.debug === true ? (message) => { line('debug: ', message) } : () => {}
      }
    }
  }
}

/** A logger that drops everything (tests, benches). */
export const silentLogger: ComponentLogger = {
  forComponent: () => ({ info: () => {}, warn: () => {}, debug: () => {} })
}
