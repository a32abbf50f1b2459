/**
 * The prelude: evaluated in every fresh context before the pack. It edits the global object
 * (no Date, Math.random, WeakRef, FinalizationRegistry; a silent console), then returns one
 * function, the harness, through which the host does everything else. It keeps its own
 * references to the built-ins it uses, so a pack that replaces JSON, Reflect or prototypes cannot
 * subvert it. Its text is part of the engine build (engine-build.ts): fuel counts depend on it.
 */
import { MAX_DEPTH } from '../../protocol/canonical.ts'
import { MAX_ERROR_MESSAGE } from '../sandbox-constants.ts'

/** The file name the prelude is evaluated under. */
export const PRELUDE_NAME = '<reach-prelude>'

/** Harness operations (first argument of the harness function). */
export const OP_INIT = 0
export const OP_REDUCE = 1
export const OP_TAKE = 2
export const OP_FAULT = 3
export const OP_INSTALL = 4
export const OP_BEGIN = 5
export const OP_STEP = 6

/*
 * Harness results are strings. JSON text never starts with '!', so a '!' marks a fault:
 *   !M memory   !L string too long   !S stack   !I interrupted   !0 null thrown
 *   !Y SyntaxError   !T anything else thrown   !N not JSON   !B<n> too long   !X bad module
 *   !P pending promise (call OP_TAKE once the job queue is empty)   !W still pending
 *   !R reduce returned something that is not { state, ... }
 *
 * OP_INIT and OP_REDUCE are stateless: the host passes the state and gets it back as JSON.
 * OP_BEGIN and OP_STEP are the run loop's path: the state stays in the VM between steps
 * (the host never needs it), so a step copies only the event in and the effects and output out.
 */
export const PRELUDE = `(function () {
  'use strict'
  const g = globalThis
  const apply = Reflect.apply
  const getPrototypeOf = Object.getPrototypeOf
  const defineProperty = Object.defineProperty
  const create = Object.create
  const freeze = Object.freeze
  const isArray = Array.isArray
  const parse = JSON.parse
  const stringify = JSON.stringify
  const StringCtor = String
  const stringSlice = String.prototype.slice
  const ObjectPrototype = Object.prototype
  const InternalErrorPrototype = InternalError.prototype
  const SyntaxErrorPrototype = SyntaxError.prototype
  const TypeErrorCtor = TypeError
  const PromiseCtor = Promise
  const promiseResolve = Promise.resolve
  const promiseThen = Promise.prototype.then
  const MAX_DEPTH = ${MAX_DEPTH}
  const MAX_MESSAGE = ${MAX_ERROR_MESSAGE}
  let outputLimit = 0

  function unavailable (name, instead) {
    return function () { throw new TypeErrorCtor(name + ' is not available in a Reach pack: ' + instead) }
  }
  const noClock = 'time arrives in events (request the clock.now tool)'
  const NoDate = unavailable('Date', noClock)
  NoDate.now = unavailable('Date.now', noClock)
  NoDate.parse = unavailable('Date.parse', noClock)
  NoDate.UTC = unavailable('Date.UTC', noClock)
  defineProperty(g, 'Date', { value: NoDate, writable: true, configurable: true })
  defineProperty(Math, 'random', { value: unavailable('Math.random', 'randomness arrives in events (request the random.bytes tool)'), writable: true, configurable: true })
  delete g.WeakRef
  delete g.FinalizationRegistry
  const discard = function () {}
  defineProperty(g, 'console', {
    value: freeze({ log: discard, info: discard, warn: discard, error: discard, debug: discard, trace: discard }),
    writable: true,
    configurable: true
  })

  function describe (e) {
    let s
    try {
      if (typeof e === 'symbol') s = 'a symbol'
      else if (e !== null && typeof e === 'object' && 'message' in e) s = StringCtor(e.name) + ': ' + StringCtor(e.message)
      else s = StringCtor(e)
    } catch {}
    if (typeof s !== 'string') s = 'a value that cannot be printed'
    return s.length > MAX_MESSAGE ? apply(stringSlice, s, [0, MAX_MESSAGE]) + '…' : s
  }

  function fault (e) {
    if (e === null) return '!0'
    if (typeof e === 'object') {
      let p, m
      try {
        p = getPrototypeOf(e)
        m = e.message
      } catch {}
      if (p === InternalErrorPrototype || p === SyntaxErrorPrototype) {
        if (m === 'out of memory') return '!M'
        if (m === 'stack overflow') return '!S'
        if (m === 'interrupted') return '!I'
        if (m === 'string too long') return '!L'
        if (p === SyntaxErrorPrototype) return '!Y' + describe(e)
      }
    }
    return '!T' + describe(e)
  }

  let notJson
  function reject (why) {
    notJson = new TypeErrorCtor(why)
    return notJson
  }

  // Plain JSON only, at most MAX_DEPTH levels, checked by an explicit walk before JSON.stringify
  // (a replacer would cost a call from C into JS for every key). The walk's stack is two
  // prototype-less arrays (fast arrays: a plain object with numeric keys makes a new shape per
  // key, quadratic in QuickJS), so the pack's prototypes cannot reach it; a cycle ends at MAX_DEPTH.
  // A getter may answer the walk and stringify differently: the pack only fools its own check,
  // since the host re-parses the text as JSON whatever it holds.
  const keys = Object.keys
  const items = Object.setPrototypeOf([], null)
  const depths = Object.setPrototypeOf([], null)
  function primitive (value, key, inArray) {
    const type = typeof value
    if (type === 'string' || type === 'boolean') return
    if (type === 'number') {
      if (value - value === 0) return
      throw reject(value + ' is not a finite number (at key "' + key + '")')
    }
    // An undefined property is left out, as JSON.stringify does ({ output: undefined } has no
    // output); undefined as the value itself or in an array has no JSON form.
    if (type === 'undefined' && !inArray) return
    throw reject(type + ' is not a JSON value (at key "' + key + '")')
  }
  function validate (root) {
    if (typeof root !== 'object' || root === null) {
      if (root !== null) primitive(root, '', true)
      return
    }
    let sp = 0
    items[sp] = root
    depths[sp++] = 1
    try {
      while (sp > 0) {
        const o = items[--sp]
        items[sp] = undefined
        const depth = depths[sp]
        if (depth > MAX_DEPTH) throw reject('nested deeper than ' + MAX_DEPTH + ' levels')
        if (isArray(o)) {
          const n = o.length
          for (let i = 0; i < n; i++) {
            const x = o[i]
            const t = typeof x
            if (t === 'object') { if (x !== null) { items[sp] = x; depths[sp++] = depth + 1 } } else if (t !== 'string' && t !== 'boolean') primitive(x, i, true)
          }
        } else {
          const p = getPrototypeOf(o)
          if (p !== ObjectPrototype && p !== null) throw reject('only plain objects and arrays are JSON')
          const ks = keys(o)
          for (let i = 0; i < ks.length; i++) {
            const x = o[ks[i]]
            const t = typeof x
            if (t === 'object') { if (x !== null) { items[sp] = x; depths[sp++] = depth + 1 } } else if (t !== 'string' && t !== 'boolean') primitive(x, ks[i], false)
          }
        }
      }
    } finally {
      // Let go of what we walked: the pack's memory is its own.
      for (let i = 0; i < sp; i++) items[i] = undefined
    }
  }

  function serialise (v) {
    validate(v)
    return stringify(v)
  }

  function finish (v) {
    let text
    try {
      text = serialise(v)
    } catch (e) {
      return e === notJson ? '!N' + describe(e.message) : fault(e)
    }
    if (typeof text !== 'string') return '!Nthe value is undefined'
    if (text.length > outputLimit) return '!B' + text.length
    return text
  }

  let init
  let reduce
  let state
  let settled = false
  let outcome = ''
  let after = finish
  function onFulfilled (v) { outcome = after(v); settled = true }
  function onRejected (e) { outcome = fault(e); settled = true }

  // What the stepping path keeps of a result: init's value is the state; a step's state is kept
  // and only its effects and output go to the host.
  function began (v) {
    state = v
    return ''
  }
  function stepped (r) {
    try {
      if (r === null || typeof r !== 'object' || isArray(r) || !('state' in r)) return '!R'
      state = r.state
      const effects = r.effects
      const output = r.output
      // Most steps only update the state.
      if (effects === undefined && output === undefined) return '{}'
      return finish({ effects, output })
    } catch (e) {
      return fault(e)
    }
  }

  function invoke (op, argsText) {
    let r
    try {
      const args = parse(argsText)
      if (op === ${OP_STEP}) { after = stepped; r = reduce(state, args) }
      else if (op === ${OP_BEGIN}) { after = began; r = init(args) }
      else if (op === ${OP_INIT}) { after = finish; r = init(args[0]) }
      else { after = finish; r = reduce(args[0], args[1]) }
      if (r === null || (typeof r !== 'object' && typeof r !== 'function') || typeof r.then !== 'function') return after(r)
      settled = false
      apply(promiseThen, apply(promiseResolve, PromiseCtor, [r]), [onFulfilled, onRejected])
    } catch (e) {
      return fault(e)
    }
    return '!P'
  }

  function install (ns, limit) {
    outputLimit = limit
    try {
      init = ns.init
      reduce = ns.reduce
    } catch (e) {
      return '!X' + describe(e)
    }
    if (typeof init !== 'function') return '!Xthe entry module does not export a function named init'
    if (typeof reduce !== 'function') return '!Xthe entry module does not export a function named reduce'
    return ''
  }

  return function harness (op, arg, arg2) {
    switch (op) {
      case ${OP_INIT}:
      case ${OP_REDUCE}:
      case ${OP_BEGIN}:
      case ${OP_STEP}: return invoke(op, arg)
      case ${OP_TAKE}: return settled ? outcome : '!W'
      case ${OP_FAULT}: return fault(arg)
      case ${OP_INSTALL}: return install(arg, arg2)
    }
  }
})()`
