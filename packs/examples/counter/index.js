// counter: aggregates its input without calling any tool.
//
// input:  {"items": [{"key": "a", "value": 2}, {"key": "b"}, 5, ...]}
//         ({"numbers": [...]} or a bare array work too); an item is a number
//         (key "total") or {key?, value?} (value defaults to 1)
// output: {"count": n, "sum": s, "keys": {"a": {"count", "sum", "min", "max"}, ...}}
//
// The engine calls init(input) once, then reduce(state, event) for each event;
// a pack never performs I/O and sees no clock or randomness, so the same input
// always gives the same output.

function itemOf (raw) {
  if (typeof raw === 'number') return { key: 'total', value: raw }
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
    const key = typeof raw.key === 'string' && raw.key !== '' ? raw.key : 'total'
    const value = typeof raw.value === 'number' && Number.isFinite(raw.value) ? raw.value : 1
    return { key, value }
  }
  return null
}

export function init (input) {
  const o = input !== null && typeof input === 'object' ? input : {}
  const items = Array.isArray(o) ? o : Array.isArray(o.items) ? o.items : Array.isArray(o.numbers) ? o.numbers : []
  return { items, count: 0, sum: 0, skipped: 0, keys: {} }
}

function add (state, raw) {
  const item = itemOf(raw)
  if (item === null) return { ...state, skipped: state.skipped + 1 }
  const prev = state.keys[item.key] ?? { count: 0, sum: 0, min: item.value, max: item.value }
  const next = {
    count: prev.count + 1,
    sum: prev.sum + item.value,
    min: Math.min(prev.min, item.value),
    max: Math.max(prev.max, item.value)
  }
  return { ...state, count: state.count + 1, sum: state.sum + item.value, keys: { ...state.keys, [item.key]: next } }
}

export function reduce (state, event) {
  switch (event.type) {
    case 'Start': {
      let s = state
      for (const raw of state.items) s = add(s, raw)
      // Sorted keys: the output is hashed, and its meaning must not depend on input order.
      const keys = {}
      for (const k of Object.keys(s.keys).sort()) keys[k] = s.keys[k]
      return { state: { ...s, items: [] }, output: { count: s.count, sum: s.sum, skipped: s.skipped, keys } }
    }
    default:
      // This pack asks for no tools, so no other event should reach it.
      return { state, output: { error: `unexpected event ${String(event.type)}` } }
  }
}
