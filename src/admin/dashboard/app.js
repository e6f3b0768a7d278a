// The Nimbus dashboard: a small client of the admin API (docs/operations.md#dashboard). The
// page itself holds no data; every number comes from /metrics (open) and /admin/* (with the
// token, kept in this tab's sessionStorage only). Text from the host (names, log lines,
// errors) is only ever set as text, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'nimbus-admin-token';
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let tab = 'functions';
let poller = null;
let samples = [];  // the last few /metrics samples, oldest first

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'style') Object.assign(e.style, v);  // through the CSSOM: the page's CSP allows no inline style
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
  return e;
}

function showError(message) {
  $('error').textContent = message || '';
  $('error').hidden = !message;
}

class Unauthorized extends Error {}

async function api(method, path) {
  const r = await fetch(path, { method, headers: { authorization: `Bearer ${token}` } });
  if (r.status === 401) throw new Unauthorized('the token is not valid');
  const text = await r.text();
  let data = null;
  try { data = JSON.parse(text); } catch { /* not JSON: said below */ }
  if (!r.ok) {
    const message = data?.error?.message || data?.message || `${method} ${path} answered ${r.status}`;
    const err = new Error(message);
    err.status = r.status;
    throw err;
  }
  return data;
}

// ---- functions: counters from /metrics, rates over the last samples ------------------------

function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sampleOf(metrics) {
  const fns = new Map();
  const fn = (name) => {
    if (!fns.has(name)) fns.set(name, { total: 0, errors: 0, buckets: new Map(), instances: 0, cold: 0 });
    return fns.get(name);
  };
  for (const s of metrics) {
    const name = s.labels.function;
    if (name === undefined) continue;
    if (s.name === 'nimbus_invocations_total') {
      fn(name).total += s.value;
      if (s.labels.outcome !== 'success') fn(name).errors += s.value;
    } else if (s.name === 'nimbus_invocation_duration_seconds_bucket') {
      const b = fn(name).buckets;
      b.set(s.labels.le, (b.get(s.labels.le) || 0) + s.value);
    } else if (s.name === 'nimbus_instances') {
      fn(name).instances = s.value;
    } else if (s.name === 'nimbus_cold_starts_total') {
      fn(name).cold = s.value;
    }
  }
  return { at: performance.now(), fns };
}

// The q-quantile of what the histogram counted between two samples (linear within a bucket).
function quantile(q, now, before) {
  const delta = (le) => (now.get(le) || 0) - (before?.get(le) || 0);
  const total = delta('+Inf');
  if (!(total > 0)) return null;
  const rank = q * total;
  const bounds = [...now.keys()].filter((k) => k !== '+Inf').sort((a, b) => Number(a) - Number(b));
  let lower = 0;
  let below = 0;
  for (const k of bounds) {
    const count = delta(k);
    if (count >= rank) {
      const inside = count - below;
      return inside > 0 ? lower + (Number(k) - lower) * ((rank - below) / inside) : Number(k);
    }
    lower = Number(k);
    below = count;
  }
  return lower;
}

const ms = (seconds) => (seconds === null ? '—' : `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`);

async function refreshFunctions() {
  await api('GET', '/admin/status');  // /metrics needs no token; a revoked one should still sign out
  const r = await fetch('/metrics');
  if (!r.ok) throw new Error(`GET /metrics answered ${r.status}`);
  const now = sampleOf(parseMetrics(await r.text()));
  // Rates over about the last 6 s: three polls back. A sample from longer ago (the tab was
  // hidden, or on another view) is no "last few seconds".
  samples = samples.filter((x) => now.at - x.at < 7000);
  samples.push(now);
  while (samples.length > 4) samples.shift();
  const before = samples.length > 1 ? samples[0] : null;
  const seconds = before ? (now.at - before.at) / 1000 : 0;
  const rows = [];
  for (const [name, f] of [...now.fns.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    // Counters only go down when the host restarted: then there is no rate to show yet.
    const b = before?.fns.get(name)?.total <= f.total ? before.fns.get(name) : undefined;
    const calls = b ? f.total - b.total : 0;
    const errors = b ? Math.max(0, f.errors - b.errors) : 0;
    const rate = seconds > 0 ? calls / seconds : 0;
    const errorRate = calls > 0 ? errors / calls : 0;
    rows.push(el('tr', { dataset: { testid: 'fn-row', function: name, total: String(f.total), rate: rate.toFixed(2) } },
      el('td', {}, name),
      el('td', { dataset: { testid: 'fn-total' } }, f.total),
      el('td', { dataset: { testid: 'fn-rate' } }, rate.toFixed(1)),
      el('td', { class: errorRate > 0 ? 'bad' : '' }, calls > 0 ? `${(errorRate * 100).toFixed(1)}%` : '—'),
      el('td', {}, ms(b ? quantile(0.5, f.buckets, b.buckets) : null)),
      el('td', {}, ms(b ? quantile(0.99, f.buckets, b.buckets) : null)),
      el('td', {}, f.instances),
      el('td', {}, f.cold)));
  }
  $('function-rows').replaceChildren(...rows);
}

// ---- queues, streams, timers ------------------------------------------------------------------

async function refreshQueues() {
  const { queues } = await api('GET', '/admin/queues');
  $('queue-rows').replaceChildren(...queues.map((q) => el('tr', { dataset: { testid: 'queue-row', queue: q.queue } },
    el('td', {}, q.queue), el('td', {}, q.ready), el('td', {}, q.delayed), el('td', {}, q.in_flight),
    el('td', { class: q.dead > 0 ? 'bad' : '', dataset: { testid: 'queue-dead' } }, q.dead),
    el('td', {}, q.dead > 0
      ? el('button', { dataset: { testid: 'replay' }, onclick: () => replay(q.queue, q.dead) }, 'Replay dead letters')
      : ''))));
}

async function replay(queue, count) {
  if (!window.confirm(`Move ${count} dead letter(s) of ${queue} back to the queue?`)) return;
  try {
    const { replayed } = await api('POST', `/admin/queues/${encodeURIComponent(queue)}/replay`);
    $('queue-note').textContent = `Moved ${replayed} dead letter(s) back to ${queue}.`;
    await refreshQueues();
  } catch (err) {
    showError(`Replay failed: ${err.message}`);
  }
}

async function refreshStreams() {
  const { streams } = await api('GET', '/admin/streams');
  if (streams.length === 0) {
    $('stream-list').replaceChildren(el('p', { class: 'hint' }, 'This app has no streams.'));
    return;
  }
  const card = (s) => {
    const groups = s.groups.map((g) => el('tr', { dataset: { testid: 'stream-group', group: g.group, lag: String(g.lag) } },
      el('td', {}, g.group),
      el('td', { class: g.lag > 0 ? 'bad' : '' }, g.lag),
      el('td', {}, g.partitions.map((p) => `${p.partition}: ${p.offset} / ${p.lag}`).join(', '))));
    const head = el('thead', {}, el('tr', {}, el('th', {}, 'Group'), el('th', {}, 'Lag'), el('th', {}, 'Per partition (offset / lag)')));
    return el('div', { class: 'card', dataset: { testid: 'stream', stream: s.stream } },
      el('h3', {}, `${s.stream}: ${s.records} records in ${s.partitions} partitions`),
      el('div', { class: 'scroll' }, el('table', {}, head, el('tbody', {}, ...groups))));
  };
  $('stream-list').replaceChildren(...streams.map(card));
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

async function refreshTimers() {
  const { timers } = await api('GET', '/admin/timers');
  $('timer-rows').replaceChildren(...timers.map((t) => el('tr', { dataset: { testid: 'timer-row', function: t.function } },
    el('td', {}, t.function), el('td', {}, `${t.schedule} (${t.time_zone})`), el('td', {}, when(t.last)), el('td', {}, when(t.next)))));
}

// ---- invocations and traces -------------------------------------------------------------------

function invocationQuery() {
  const q = new URLSearchParams({ limit: '50' });
  if ($('failed-only').checked) q.set('failed', '1');
  const trace = $('trace-search').value.trim().toLowerCase();
  if (trace) q.set('trace', trace);
  return q;
}

async function refreshInvocations() {
  let list;
  try {
    ({ invocations: list } = await api('GET', `/admin/invocations?${invocationQuery()}`));
  } catch (err) {
    if (err.status === 409) {
      $('invocation-rows').replaceChildren(el('tr', {}, el('td', { colspan: '6' }, err.message)));
      return;
    }
    throw err;
  }
  $('invocation-rows').replaceChildren(...list.map((i) => el('tr', {
    class: 'pick', dataset: { testid: 'invocation-row', id: i.invocation_id, trace: i.trace_id || '' },
    onclick: () => showInvocation(i),
  },
  el('td', {}, new Date(i.time).toLocaleTimeString()), el('td', {}, i.function), el('td', {}, i.trigger),
  el('td', { class: i.outcome === 'success' ? '' : 'bad' }, i.outcome), el('td', {}, Number(i.duration_ms).toFixed(1)),
  el('td', {}, i.trace_id
    ? el('button', { dataset: { testid: 'open-trace' }, onclick: (e) => { e.stopPropagation(); showTrace(i.trace_id); } },
      i.trace_id.slice(0, 8))
    : '—'))));
}

function showInvocation(i) {
  const fields = ['invocation_id', 'function', 'trigger', 'outcome', 'status', 'attempt', 'duration_ms', 'time', 'version',
    'trace_id', 'error_type', 'error'].filter((k) => i[k] !== undefined && i[k] !== '');
  const logs = (i.logs || []).map((l) => `${l.time} ${l.level.padEnd(5)} ${l.msg}`).join('\n');
  $('invocation-detail').replaceChildren(
    el('h3', {}, `Invocation ${i.invocation_id}`),
    el('table', {}, el('tbody', {}, ...fields.map((k) => el('tr', {}, el('th', {}, k), el('td', {}, String(i[k])))))),
    el('h4', {}, 'Log lines'),
    el('pre', { class: 'logs', dataset: { testid: 'invocation-logs' } }, logs || '(none)'),
    i.trace_id ? el('button', { dataset: { testid: 'detail-trace' }, onclick: () => showTrace(i.trace_id) }, 'Open its trace') : '');
  $('invocation-detail').hidden = false;
}

async function showTrace(traceId) {
  try {
    await drawTrace(traceId);
  } catch (err) {
    if (err instanceof Unauthorized) return signOut('The token is no longer valid; sign in again.');
    showError(`Cannot show trace ${traceId}: ${err.message}`);
  }
}

async function drawTrace(traceId) {
  const { invocations } = await api('GET', `/admin/invocations?trace=${encodeURIComponent(traceId)}&limit=1000`);
  if (invocations.length === 0) {
    $('trace-view').replaceChildren(el('p', { class: 'hint' }, `No invocation of trace ${traceId} is in the history.`));
    $('trace-view').hidden = false;
    return;
  }
  const spans = invocations.map((i) => ({ ...i, end: i.time_us, start: i.time_us - Math.round(Number(i.duration_ms) * 1000) }));
  spans.sort((a, b) => a.start - b.start);
  const byId = new Map(spans.filter((s) => s.span_id).map((s) => [s.span_id, s]));
  // Children under their parents, each level in start order; a span whose parent is not here
  // (or that an older record leaves without ids) is a root. Each is drawn once.
  const ordered = [];
  const drawn = new Set();
  const visit = (s, depth) => {
    if (drawn.has(s)) return;
    drawn.add(s);
    ordered.push({ s, depth });
    if (!s.span_id) return;
    for (const c of spans) if (c.parent_span_id === s.span_id) visit(c, depth + 1);
  };
  for (const s of spans) if (!s.parent_span_id || !byId.has(s.parent_span_id)) visit(s, 0);
  for (const s of spans) visit(s, 0);  // what a cycle of parents left out
  const t0 = Math.min(...spans.map((s) => s.start));
  const t1 = Math.max(...spans.map((s) => s.end));
  const width = Math.max(1, t1 - t0);
  $('trace-view').replaceChildren(
    el('h3', {}, `Trace ${traceId}: ${spans.length} invocation(s) in ${((t1 - t0) / 1000).toFixed(1)} ms`),
    ...ordered.map(({ s, depth }) => el('div', { class: 'span', dataset: { testid: 'span', function: s.function, depth: String(depth) } },
      el('span', { class: 'name', style: { paddingLeft: `${depth}rem` } }, `${s.function} (${s.trigger})`),
      el('span', { class: 'track' }, el('span', {
        class: s.outcome === 'success' ? 'bar' : 'bar failed',
        style: { left: `${(100 * (s.start - t0)) / width}%`, width: `${(100 * (s.end - s.start)) / width}%` },
      })),
      el('span', { class: 'ms' }, `${Number(s.duration_ms).toFixed(1)} ms`))));
  $('trace-view').hidden = false;
  $('trace-view').scrollIntoView({ block: 'nearest' });
}

// ---- versions, orchestrations -----------------------------------------------------------------

async function refreshVersions() {
  const { versions, aliases } = await api('GET', '/admin/versions');
  if (versions.length === 0) {
    $('version-list').replaceChildren(el('p', { class: 'hint' }, 'Nothing is deployed: the host runs its folder (nimbus deploy makes the first version).'));
    return;
  }
  $('version-list').replaceChildren(
    el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'Version'), el('th', {}, 'Digest'), el('th', {}, 'Message'))),
      el('tbody', {}, ...versions.map((v) => el('tr', { dataset: { testid: 'version-row' } },
        el('td', {}, v.version), el('td', {}, String(v.digest).slice(0, 12)), el('td', {}, v.message)))))),
    ...aliases.map((a) => el('p', {}, `${a.alias} = ${a.targets.map((t) => `${t.version} ${t.weight}%`).join(', ')}`)));
}

async function refreshOrchestrations() {
  let instances;
  try {
    ({ instances } = await api('GET', '/admin/orchestrations?limit=20'));
  } catch (err) {
    $('orchestration-list').replaceChildren(el('p', { class: 'hint' }, err.message));
    return;
  }
  $('orchestration-list').replaceChildren(instances.length === 0
    ? el('p', { class: 'hint' }, 'No orchestration instances.')
    : el('div', { class: 'scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'Instance'), el('th', {}, 'Name'), el('th', {}, 'Status'), el('th', {}, 'Updated'))),
      el('tbody', {}, ...instances.map((o) => el('tr', {},
        el('td', {}, o.instanceId), el('td', {}, o.name), el('td', {}, o.runtimeStatus), el('td', {}, o.lastUpdatedTime)))))));
}

// ---- the frame: sign in, tabs, polling --------------------------------------------------------

const refreshers = {
  functions: refreshFunctions, queues: refreshQueues, streams: refreshStreams, timers: refreshTimers,
  invocations: refreshInvocations, versions: refreshVersions, orchestrations: refreshOrchestrations,
};

async function refresh() {
  try {
    await refreshers[tab]();
    showError('');
  } catch (err) {
    if (err instanceof Unauthorized) return signOut('The token is no longer valid; sign in again.');
    showError(err.message);
  }
}

function show(name) {
  tab = name;
  samples = [];
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('on', b.dataset.tab === name);
  for (const s of Object.keys(refreshers)) $(s).hidden = s !== name;
  refresh();
}

function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('sign-out').hidden = false;
  api('GET', '/admin/status').then((s) => { $('app-name').textContent = s.app; }, () => {});
  show(tab);
  clearInterval(poller);
  // Live tabs refresh every 2 s; the invocation list refreshes on demand (it would move under the reader).
  poller = setInterval(() => { if (tab !== 'invocations' && !document.hidden) refresh(); }, 2000);
}

function signOut(message) {
  token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(poller);
  $('app').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('login-error').hidden = !message;
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', async (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    try {
      await api('GET', '/admin/status');
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      $('login-error').hidden = true;
      start();
    } catch (err) {
      $('token').value = '';
      signOut(err instanceof Unauthorized ? 'That is not the admin token.' : `Cannot reach the host: ${err.message}`);
    }
  });
  $('sign-out').addEventListener('click', () => signOut(''));
  for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => show(b.dataset.tab));
  $('invocation-filter').addEventListener('submit', (e) => {
    e.preventDefault();
    refresh();
  });
  if (token) start();
  else signOut('');
});
