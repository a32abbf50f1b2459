// QuickJS's interrupt cannot be caught by try, but the Promise constructor turns any
// exception thrown by its executor into a rejection. This loop keeps running after the
// engine told it to stop; the sandbox must tear the VM out (RL-3101), not hang.
export function init () {
  for (;;) {
    try {
      new Promise(() => { for (;;) {} })
    } catch {}
  }
}

export function reduce (state) {
  return { state }
}
