// Host modules do not resolve (RL-3107).
import { readFileSync } from 'node:fs'

export function init () {
  return readFileSync('/etc/passwd', 'utf8')
}

export function reduce (state) {
  return { state }
}
