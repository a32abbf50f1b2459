// init is fine; reduce never returns: fuel must stop it (RL-3101).
export function init () {
  return { n: 0 }
}

export function reduce () {
  let i = 0
  while (true) i++
}
