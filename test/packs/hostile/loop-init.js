// Never returns from init: fuel must stop it (RL-3101).
export function init () {
  for (;;) {}
}

export function reduce (state) {
  return { state }
}
