// Does not parse (RL-3107).
export function init (input {
  return input
}

export function reduce (state) {
  return { state }
}
