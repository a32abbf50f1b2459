// Unbounded recursion (RL-3103).
function down (n) {
  return down(n + 1) + 1
}

export function init () {
  return down(0)
}

export function reduce (state) {
  return { state }
}
