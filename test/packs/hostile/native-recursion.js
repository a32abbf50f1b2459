// Deep recursion inside a C built-in: JSON.parse of 200,000 nested arrays. QuickJS's
// stack check does not see these frames; the host's stack overflows inside the
// WebAssembly instance (RL-3103, and the instance is abandoned).
export function init () {
  const depth = 200000
  return JSON.parse('['.repeat(depth) + ']'.repeat(depth)).length
}

export function reduce (state) {
  return { state }
}
