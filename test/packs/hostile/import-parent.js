// Paths outside the pack do not resolve (RL-3107).
import secret from '../outside.js'

export function init () {
  return secret
}

export function reduce (state) {
  return { state }
}
