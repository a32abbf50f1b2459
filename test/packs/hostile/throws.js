// Throws from init, with a long message (RL-3106, truncated).
export function init () {
  throw new Error('boom: ' + 'x'.repeat(10000))
}

export function reduce (state) {
  return { state }
}
