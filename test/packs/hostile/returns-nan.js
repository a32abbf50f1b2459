// NaN is not JSON: JSON.stringify would quietly write null (RL-3108).
export function init () {
  return {}
}

export function reduce () {
  return { state: { total: NaN } }
}
