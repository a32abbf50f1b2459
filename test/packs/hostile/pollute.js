// Rewrites the VM's prototypes and the built-ins the sandbox's own plumbing uses. None of it
// may leak to the host, and JSON in and out of the VM must keep working.
export function init () {
  Object.prototype.polluted = 'yes'
  Array.prototype.polluted = 'yes'
  JSON.parse = () => ({ hijacked: true })
  JSON.stringify = () => '"hijacked"'
  Reflect.apply = () => 'hijacked'
  Object.getPrototypeOf = () => null
  Array.isArray = () => false
  Promise.prototype.then = function () { throw new Error('then hijacked') }
  return { polluted: ({}).polluted }
}

export async function reduce (state, event) {
  await null
  return { state: { seen: event.n, polluted: [].polluted } }
}
