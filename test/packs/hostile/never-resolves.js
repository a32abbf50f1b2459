// A promise nothing will ever settle: fails at once, without waiting (RL-3105).
export function init () {
  return new Promise(() => {})
}

export function reduce (state) {
  return { state }
}
