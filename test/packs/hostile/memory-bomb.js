// Allocates until something gives (RL-3102).
export function init () {
  const hoard = []
  for (;;) hoard.push(new Array(1024).fill(hoard.length))
}

export function reduce (state) {
  return { state }
}
