// A dynamic import of a host module, at call time (RL-3107).
export function init () {
  return {}
}

export async function reduce () {
  const os = await import('os')
  return { state: os.hostname() }
}
