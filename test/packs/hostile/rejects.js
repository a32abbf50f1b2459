// reduce rejects after an await (RL-3106).
export function init () {
  return {}
}

export async function reduce () {
  await null
  throw new RangeError('late failure')
}
