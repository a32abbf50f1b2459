// A 2 MiB string: over the output limit, refused before it is copied out (RL-3104).
export function init () {
  return 'x'.repeat(2 * 1024 * 1024)
}

// Few UTF-16 units, many UTF-8 bytes: caught by the host's byte count.
export function reduce (state, event) {
  return { state, output: 'é'.repeat(event.n) }
}
