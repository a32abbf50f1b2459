// Constructor-chain escapes. On node:vm these reach the host (the test's negative control
// runs the same expressions there); in QuickJS every constructor is the VM's own, so they
// reach only the VM's global object, which has no process and no require.
export function init () {
  const probe = {
    viaThis () {
      return this.constructor.constructor('return process')()
    }
  }
  let viaThis
  try {
    viaThis = typeof probe.viaThis()
  } catch (e) {
    viaThis = 'threw ' + e.name + ': ' + e.message
  }
  const g = ({}).constructor.constructor('return globalThis')()
  return {
    viaThis,
    reachedOwnGlobal: g === globalThis,
    processThroughIt: typeof g.process,
    requireThroughIt: typeof g.require,
    processThroughFunction: (function () {}).constructor('return typeof process')()
  }
}

export function reduce (state) {
  return { state }
}
