// report: a small report over its input that uses every host tool.
//
// input:  {"title": "daily", "values": [3, 1, 4], "url": "https://example.org/"}   (url optional)
// steps:  clock.now → random.bytes → kv.get(counter) → http.fetch(url)? → kv.put(counter + 1) → output
//
// The pack never performs I/O itself: reduce returns effects {tool, args}; the
// engine checks each against the manifest and the node policy, records it, runs
// the tool and feeds the outcome back as an event:
//   {type: "ToolResult", tool, call_id, result}
//   {type: "ToolFailed" | "ToolDenied", tool, call_id, error: {code, message}}
// A failed or denied tool never ends the report: the step is noted and skipped.
// Replaying the run feeds back the recorded outcomes, so the report is the same.

const COUNTER_KEY = 'reports.count'
const PREVIEW_CHARS = 200

function summary (values) {
  const nums = Array.isArray(values) ? values.filter((v) => typeof v === 'number' && Number.isFinite(v)) : []
  if (nums.length === 0) return { count: 0 }
  let sum = 0
  let min = nums[0]
  let max = nums[0]
  for (const v of nums) {
    sum += v
    if (v < min) min = v
    if (v > max) max = v
  }
  return { count: nums.length, sum, min, max, mean: sum / nums.length }
}

export function init (input) {
  const o = input !== null && typeof input === 'object' && !Array.isArray(input) ? input : {}
  return {
    phase: 'start',
    title: typeof o.title === 'string' ? o.title : 'report',
    url: typeof o.url === 'string' && o.url !== '' ? o.url : null,
    summary: summary(o.values),
    generated_at_ms: null,
    report_id: null,
    number: null,
    source: null,
    persisted: false,
    notes: []
  }
}

function call (state, phase, tool, args) {
  return { state: { ...state, phase }, effects: [{ tool, args }] }
}

function note (state, event) {
  const e = event.error !== null && typeof event.error === 'object' ? event.error : {}
  return { ...state, notes: [...state.notes, `${event.tool}: ${event.type} ${e.code ?? ''} ${e.message ?? ''}`.trim()] }
}

function afterCount (state) {
  if (state.url !== null) return call(state, 'fetch', 'http.fetch', { url: state.url })
  return call(state, 'put', 'kv.put', { key: COUNTER_KEY, value: state.number })
}

function finish (state) {
  const output = {
    title: state.title,
    report_id: state.report_id,
    number: state.number,
    generated_at_ms: state.generated_at_ms,
    summary: state.summary,
    source: state.source,
    persisted: state.persisted,
    notes: state.notes
  }
  return { state: { ...state, phase: 'done' }, output }
}

export function reduce (state, event) {
  const ok = event.type === 'ToolResult'
  const result = ok && event.result !== null && typeof event.result === 'object' ? event.result : {}
  const s = ok || event.type === 'Start' ? state : note(state, event)

  switch (s.phase) {
    case 'start':
      return call(s, 'clock', 'clock.now', {})
    case 'clock':
      return call({ ...s, generated_at_ms: typeof result.now_ms === 'number' ? result.now_ms : null }, 'random', 'random.bytes', { n: 8 })
    case 'random':
      return call({ ...s, report_id: typeof result.hex === 'string' ? result.hex : null }, 'count', 'kv.get', { key: COUNTER_KEY })
    case 'count': {
      const previous = typeof result.value === 'number' ? result.value : 0
      return afterCount({ ...s, number: previous + 1 })
    }
    case 'fetch': {
      const source = ok
        ? { url: s.url, status: result.status, chars: typeof result.body === 'string' ? result.body.length : 0, preview: typeof result.body === 'string' ? result.body.slice(0, PREVIEW_CHARS) : '' }
        : { url: s.url, error: event.error ?? null }
      return call({ ...s, source }, 'put', 'kv.put', { key: COUNTER_KEY, value: s.number })
    }
    case 'put':
      return finish({ ...s, persisted: ok })
    default:
      return { state: s, output: { error: `unexpected event ${String(event.type)} in phase ${String(s.phase)}` } }
  }
}
