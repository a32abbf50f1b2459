// No reduce (RL-3107).
export function init () {
  return {}
}
