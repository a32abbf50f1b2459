// The same escape through async functions: each interrupted call becomes a rejected
// promise that the outer loop catches, job after job.
async function spin () {
  for (;;) {}
}

export async function init () {
  for (;;) {
    try { await spin() } catch {}
  }
}

export function reduce (state) {
  return { state }
}
