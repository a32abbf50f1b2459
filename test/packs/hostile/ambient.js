// Reports what the global scope offers, and what happens when the pack reaches for time,
// randomness, timers and I/O. The test asserts on every line.
function attempt (fn) {
  try {
    return { value: typeof fn() }
  } catch (e) {
    return { threw: e.name + ': ' + e.message }
  }
}

export function init () {
  return {
    typeofProcess: typeof process,
    typeofRequire: typeof require,
    globalProcess: typeof globalThis.process,
    typeofFetch: typeof fetch,
    typeofSetTimeout: typeof setTimeout,
    typeofSetInterval: typeof setInterval,
    typeofWeakRef: typeof WeakRef,
    typeofFinalizationRegistry: typeof FinalizationRegistry,
    typeofConsole: typeof console,
    consoleLog: attempt(() => console.log('discarded')),
    mathRandom: attempt(() => Math.random()),
    dateNow: attempt(() => Date.now()),
    newDate: attempt(() => new Date()),
    callProcess: attempt(() => process.exit(1)),
    callRequire: attempt(() => require('fs')),
    callFetch: attempt(() => fetch('http://example.com'))
  }
}

export function reduce (state) {
  return { state }
}
