// Each buffer is smaller than the limit; together they are not. QuickJS's own
// setMemoryLimit misses this in the WebAssembly build (it counts 8 bytes a block).
export function init () {
  const hoard = []
  for (let i = 0; i < 1000; i++) hoard.push(new Uint8Array(3 * 1024 * 1024))
  return hoard.length
}

export function reduce (state) {
  return { state }
}
