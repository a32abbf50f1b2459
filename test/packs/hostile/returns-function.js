// A function is not JSON (RL-3108).
export function init () {
  return () => 'a function'
}

export function reduce (state) {
  return { state }
}
