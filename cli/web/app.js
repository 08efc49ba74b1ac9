/* taskq dashboard: plain JavaScript, no framework.  Views: overview, jobs,
 * job.  Data from /api/..., live refresh on /events (Server-Sent Events),
 * charts and the dependency graph drawn as SVG here. */
'use strict';

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const SVGNS = 'http://www.w3.org/2000/svg';
const STATUS_COLORS = {
  blocked: '#9aa3ae', pending: '#d9a21b', running: '#2f6fde',
  succeeded: '#2e9d5b', failed: '#d6453d', cancelled: '#7a5fb0'
};
const STATUSES = ['blocked', 'pending', 'running', 'succeeded', 'failed', 'cancelled'];
const PRIORITIES = ['critical', 'high', 'normal', 'low'];
let me = { role: '', admin: false };
let view = null;          /* {refresh: fn} of the page shown */
let refreshTimer = null;

/* ---------- helpers ---------- */

/* h('td', {class: 'num'}, 'text', child...): an element, text as text only */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function fmtTime(t) {
  if (!t) return '';
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  const p = n => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function fmtSecs(x) {
  if (x === null || x === undefined) return '-';
  if (x < 1) return (x * 1000).toFixed(0) + ' ms';
  if (x < 120) return x.toFixed(1) + ' s';
  if (x < 7200) return (x / 60).toFixed(1) + ' min';
  return (x / 3600).toFixed(1) + ' h';
}

function badge(status) {
  return h('span', { class: 'badge s-' + status }, status);
}

function jobLink(id) {
  return h('a', { href: '/job/' + id, 'data-link': true }, '#' + id);
}

function toast(msg, isError) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.className = isError ? 'error' : '';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.add('hidden'), 4000);
}

async function api(path) {
  const r = await fetch('/api/' + path, { headers: { Accept: 'application/json' } });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) { const e = new Error(body.error || r.statusText); e.status = r.status; throw e; }
  return body;
}

async function action(name, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  const r = await fetch('/api/action/' + name + '?' + q, {
    method: 'POST', headers: { 'X-CSRF-Token': CSRF, Accept: 'application/json' }
  });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

/* a confirmation in the page; resolves true when confirmed */
function confirmBox(text) {
  return new Promise(resolve => {
    const box = document.getElementById('confirm');
    const ok = document.getElementById('confirm-ok');
    const cancel = document.getElementById('confirm-cancel');
    document.getElementById('confirm-text').textContent = text;
    box.classList.remove('hidden');
    const done = v => {
      box.classList.add('hidden');
      ok.removeEventListener('click', yes);
      cancel.removeEventListener('click', no);
      resolve(v);
    };
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener('click', yes);
    cancel.addEventListener('click', no);
    ok.focus();
  });
}

/* run an action after its confirmation, then refresh the view */
async function confirmed(text, name, params) {
  if (!await confirmBox(text)) return;
  try {
    const res = await action(name, params);
    toast(Object.entries(res).map(([k, v]) => `${k}: ${v}`).join(', '));
  } catch (e) {
    toast(e.message, true);
  }
  scheduleRefresh(0);
}

function section(title, ...content) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...content);
}

function partError(part) {
  return part && !Array.isArray(part) && part.error ? h('p', { class: 'muted' }, part.error) : null;
}

/* ---------- overview ---------- */

function queuesCard(queues) {
  if (partError(queues)) return section('Queues', partError(queues));
  const head = h('tr', {}, h('th', {}, 'queue'),
    ['blocked', 'pending', 'running'].map(st => h('th', { class: 'num' }, st)),
    PRIORITIES.map(p => h('th', { class: 'num' }, p)), h('th', {}, 'state'), h('th', {}, ''));
  const rows = queues.map(q => {
    const by = (k, v) => q.depth.filter(d => d[k] === v).reduce((a, d) => a + d.jobs, 0);
    const btn = me.admin ? h('button', {
      class: 'q-' + (q.paused ? 'resume' : 'pause'), 'data-queue': q.queue,
      onclick: () => confirmed(`${q.paused ? 'Resume' : 'Pause'} queue "${q.queue}"?`,
        q.paused ? 'resume' : 'pause', { queue: q.queue })
    }, q.paused ? 'Resume' : 'Pause') : '';
    return h('tr', { 'data-queue': q.queue },
      h('td', {}, h('a', { href: '/jobs?queue=' + encodeURIComponent(q.queue), 'data-link': true }, q.queue)),
      ['blocked', 'pending', 'running'].map(st => h('td', { class: 'num' }, by('status', st))),
      PRIORITIES.map(p => h('td', { class: 'num' }, by('priority', p))),
      h('td', {}, q.paused ? h('span', { class: 'badge s-failed' }, 'paused') : h('span', { class: 'muted' }, 'active')),
      h('td', {}, btn));
  });
  return h('section', { class: 'card wide', id: 'queues' }, h('h2', {}, 'Queues (unfinished jobs by status and priority)'),
    queues.length ? h('table', {}, h('thead', {}, head), h('tbody', {}, rows)) : h('p', { class: 'muted' }, 'no queues'));
}

/* bars of succeeded/failed per minute over the last hour, and the failure rate */
function historyCharts(history, now) {
  if (partError(history)) return [section('Throughput', partError(history))];
  const end = Math.floor(new Date(now).getTime() / 60000) * 60;
  const mins = [];
  const by = new Map(history.map(m => [m.minute, m]));
  for (let i = 59; i >= 0; i--) {
    const m = by.get(end - i * 60) || { succeeded: 0, failed: 0, cancelled: 0 };
    mins.push({ t: end - i * 60, ok: m.succeeded, bad: m.failed });
  }
  const W = 600, H = 160, P = 30;
  const max = Math.max(1, ...mins.map(m => m.ok + m.bad));
  const bw = (W - P) / 60;
  const bars = s('svg', { viewBox: `0 0 ${W} ${H + 20}`, width: '100%', id: 'chart-throughput', role: 'img' });
  bars.append(s('line', { x1: P, y1: H, x2: W, y2: H, stroke: '#ccc' }));
  bars.append(s('text', { x: 0, y: 12, fill: '#6b7483' }, String(max)));
  bars.append(s('text', { x: 0, y: H, fill: '#6b7483' }, '0'));
  mins.forEach((m, i) => {
    const x = P + i * bw;
    const hOk = (m.ok / max) * (H - 10), hBad = (m.bad / max) * (H - 10);
    const title = s('title', {}, `${fmtTime(m.t * 1000)}: ${m.ok} succeeded, ${m.bad} failed`);
    const g = s('g', {}, title);
    if (m.ok) g.append(s('rect', { x, y: H - hOk, width: bw - 1, height: hOk, fill: STATUS_COLORS.succeeded }));
    if (m.bad) g.append(s('rect', { x, y: H - hOk - hBad, width: bw - 1, height: hBad, fill: STATUS_COLORS.failed }));
    bars.append(g);
  });
  bars.append(s('text', { x: P, y: H + 16, fill: '#6b7483' }, '-60 min'));
  bars.append(s('text', { x: W - 30, y: H + 16, fill: '#6b7483' }, 'now'));

  const rate = s('svg', { viewBox: `0 0 ${W} ${H + 20}`, width: '100%', id: 'chart-failure', role: 'img' });
  rate.append(s('line', { x1: P, y1: H, x2: W, y2: H, stroke: '#ccc' }));
  rate.append(s('text', { x: 0, y: 12, fill: '#6b7483' }, '100%'));
  rate.append(s('text', { x: 0, y: H, fill: '#6b7483' }, '0%'));
  const pts = mins.map((m, i) => {
    const n = m.ok + m.bad;
    return n ? `${P + i * bw + bw / 2},${H - (m.bad / n) * (H - 10)}` : null;
  }).filter(Boolean);
  if (pts.length) rate.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: STATUS_COLORS.failed, 'stroke-width': 2 }));
  pts.forEach(p => { const [cx, cy] = p.split(','); rate.append(s('circle', { cx, cy, r: 3, fill: STATUS_COLORS.failed })); });
  rate.append(s('text', { x: P, y: H + 16, fill: '#6b7483' }, '-60 min'));
  rate.append(s('text', { x: W - 30, y: H + 16, fill: '#6b7483' }, 'now'));
  const total = mins.reduce((a, m) => [a[0] + m.ok, a[1] + m.bad], [0, 0]);
  return [
    section('Finished jobs per minute, last hour', bars,
      h('div', { class: 'legend' }, h('span', {}, h('span', { class: 'badge s-succeeded' }, 'succeeded'), ' ', total[0]),
        h('span', {}, h('span', { class: 'badge s-failed' }, 'failed'), ' ', total[1]))),
    section('Failure rate per minute, last hour', rate,
      h('p', { class: 'muted' }, total[0] + total[1] ? `${(100 * total[1] / (total[0] + total[1])).toFixed(1)} % of finished jobs failed` : 'no finished jobs'))
  ];
}

function latencyCard(lat, tp) {
  const parts = [];
  if (partError(lat)) parts.push(partError(lat));
  else parts.push(lat.length ? h('table', {},
    h('thead', {}, h('tr', {}, ['queue', 'jobs', 'wait p50', 'wait p95', 'wait p99', 'run p50', 'run p95', 'run p99']
      .map((c, i) => h('th', { class: i ? 'num' : '' }, c)))),
    h('tbody', {}, lat.map(l => h('tr', {}, h('td', {}, l.queue), h('td', { class: 'num' }, l.jobs),
      ['wait_p50', 'wait_p95', 'wait_p99', 'run_p50', 'run_p95', 'run_p99'].map(k => h('td', { class: 'num' }, fmtSecs(l[k]))))))
  ) : h('p', { class: 'muted' }, 'no jobs ran in the last hour'));
  if (tp && Array.isArray(tp) && tp.length)
    parts.push(h('p', { class: 'muted' }, tp.map(t => `${t.window_minutes} min: ${t.succeeded_per_s.toFixed(2)}/s ok, ${t.failed_per_s.toFixed(2)}/s failed`).join(' · ')));
  return h('section', { class: 'card wide', id: 'latency' }, h('h2', {}, 'Wait and run time, last hour'), ...parts);
}

function workersCard(ex, ext) {
  const parts = [];
  if (partError(ex)) parts.push(partError(ex));
  else parts.push(h('table', { id: 'executors' },
    h('thead', {}, h('tr', {}, ['pid', 'kind', 'state', 'current job', 'since', 'done'].map(c => h('th', {}, c)))),
    h('tbody', {}, ex.map(w => h('tr', {}, h('td', {}, w.pid), h('td', {}, w.kind), h('td', {}, w.state),
      h('td', {}, w.job_id ? [jobLink(w.job_id), ' ', w.job_type || ''] : ''), h('td', {}, fmtTime(w.since).slice(11)), h('td', { class: 'num' }, w.jobs_done))))));
  parts.push(h('h2', {}, 'External workers'));
  if (partError(ext)) parts.push(partError(ext));
  else parts.push(ext.length ? h('table', { id: 'external' },
    h('thead', {}, h('tr', {}, ['worker', 'running', 'jobs', 'lease until'].map(c => h('th', {}, c)))),
    h('tbody', {}, ext.map(w => h('tr', {}, h('td', {}, w.worker || '(unnamed)'), h('td', { class: 'num' }, w.jobs),
      h('td', {}, w.job_ids.map(id => [jobLink(id), ' '])), h('td', {}, fmtTime(w.lease_expires_at))))))
    : h('p', { class: 'muted' }, 'no external job running'));
  return section('Executors', ...parts);
}

function resourcesCard(r) {
  if (!r || r.error) return section('Resources', h('p', { class: 'muted' }, r ? r.error : 'none'));
  const row = (name, used, max) => h('tr', {}, h('td', {}, name),
    h('td', {}, h('span', { class: 'bar' }, h('span', { 'data-pct': max ? Math.round(100 * used / max) : 0 }))),
    h('td', { class: 'num' }, `${used} / ${max}`));
  const t = h('table', {}, h('tbody', {}, row('CPU units', r.cpu_units_used, r.cpu_units_max),
    row('memory MB', r.memory_mb_used, r.memory_mb_max)));
  /* widths through the CSSOM (style attributes are refused by the CSP) */
  t.querySelectorAll('[data-pct]').forEach(e => { e.style.width = Math.min(100, e.dataset.pct) + '%'; });
  return section('Resources in use', t);
}

function healthCard(hc) {
  if (partError(hc)) return section('Health', partError(hc));
  return h('section', { class: 'card', id: 'health' }, h('h2', {}, 'Health'), h('table', {}, h('tbody', {},
    hc.map(c => h('tr', {}, h('td', {}, c.check_name), h('td', { class: 'h-' + c.status }, c.status), h('td', { class: 'msg' }, c.message))))));
}

function dlqCard() {
  const q = h('input', { id: 'dlq-queue', placeholder: 'queue (all)' });
  const t = h('input', { id: 'dlq-type', placeholder: 'job type (all)' });
  const e = h('input', { id: 'dlq-error', placeholder: 'error LIKE (all)' });
  const age = h('input', { id: 'dlq-older', placeholder: 'older than, e.g. 7 days' });
  return section('Dead-letter queue',
    h('div', { class: 'actions' }, q, t, e,
      h('button', {
        id: 'dlq-retry', onclick: () => confirmed(`Retry every failed job${q.value ? ' of queue ' + q.value : ''}${t.value ? ' of type ' + t.value : ''}${e.value ? ' whose error is like ' + e.value : ''}?`,
          'dlq_retry', { queue: q.value, type: t.value, error: e.value })
      }, 'Retry failed')),
    h('div', { class: 'actions' }, age,
      h('button', {
        id: 'dlq-purge', class: 'danger', onclick: () => confirmed(`Delete failed jobs${age.value ? ' older than ' + age.value : ''}${q.value ? ' of queue ' + q.value : ''}${t.value ? ' of type ' + t.value : ''}? This cannot be undone.`,
          'dlq_purge', { older_than: age.value, queue: q.value, type: t.value })
      }, 'Purge failed')),
    h('p', { class: 'muted' }, h('a', { href: '/jobs?status=failed', 'data-link': true }, 'list failed jobs')));
}

function recentCard() {
  const list = h('tbody', { id: 'recent' });
  recent.forEach(ev => list.append(recentRow(ev)));
  return h('section', { class: 'card' }, h('h2', {}, 'Live transitions'), h('table', {}, list));
}

function recentRow(ev) {
  return h('tr', {}, h('td', {}, fmtTime(ev.at)), h('td', {}, ev.id ? jobLink(ev.id) : ''),
    h('td', {}, ev.job_type || ''), h('td', {}, ev.queue || ''), h('td', {}, ev.status ? badge(ev.status) : ''));
}

function overviewView(main) {
  let data = null;
  let dlq = null;   /* kept across refreshes so typed filters survive */
  async function refresh() {
    data = await api('overview');
    if (data.me && !data.me.error) setMe(data.me);
    if (!dlq) dlq = dlqCard();
    const grid = h('div', { class: 'grid', id: 'overview' },
      queuesCard(data.queues), ...historyCharts(data.history, data.me.now || Date.now()),
      resourcesCard(data.resources), latencyCard(data.latency, data.throughput),
      workersCard(data.executors, data.external), healthCard(data.health), dlq, recentCard());
    main.replaceChildren(h('h1', {}, 'Overview'), grid);
  }
  return { refresh, onEvent: ev => {
    const tb = document.getElementById('recent');
    if (tb && ev.id) { tb.prepend(recentRow(ev)); while (tb.children.length > 15) tb.lastChild.remove(); }
    scheduleRefresh();
  } };
}

/* ---------- jobs list ---------- */

function jobsView(main) {
  const params = new URLSearchParams(location.search);
  const cursors = [];       /* the "before" of each page shown before this one */
  let before = params.get('before') || '';
  const f = {};
  const field = (name, label, el) => { f[name] = el; el.id = 'f-' + name; el.value = params.get(name) || ''; return h('label', {}, label, el); };
  const status = h('select', {}, h('option', { value: '' }, 'any'), STATUSES.map(st => h('option', { value: st }, st)));
  const toLocal = v => { if (!v) return ''; const d = new Date(v); return isNaN(d) ? '' : new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); };
  const form = h('div', { class: 'filters' },
    field('queue', 'queue', h('input', { size: 12 })),
    field('type', 'job type', h('input', { size: 14 })),
    field('status', 'status', status),
    me.admin ? field('owner', 'owner', h('input', { size: 12 })) : null,
    field('from', 'created from', h('input', { type: 'datetime-local' })),
    field('to', 'created before', h('input', { type: 'datetime-local' })),
    field('q', 'text in payload or error', h('input', { size: 18 })),
    h('button', { class: 'primary', id: 'f-apply', onclick: () => { cursors.length = 0; before = ''; apply(); } }, 'Apply'),
    h('button', { id: 'f-clear', onclick: () => { Object.values(f).forEach(e => { e.value = ''; }); cursors.length = 0; before = ''; apply(); } }, 'Clear'));
  f.from.value = toLocal(params.get('from'));
  f.to.value = toLocal(params.get('to'));
  const table = h('div', { id: 'jobs-list' });
  const info = h('span', { class: 'muted', id: 'page-info' });
  const newer = h('button', { id: 'page-newer', onclick: () => { before = cursors.pop() || ''; apply(true); } }, '← newer');
  const older = h('button', { id: 'page-older' }, 'older →');
  main.replaceChildren(h('h1', {}, 'Jobs'), form, h('section', { class: 'card' }, table, h('div', { class: 'pager' }, newer, older, info)));
  for (const e of Object.values(f)) e.addEventListener('keydown', ev => { if (ev.key === 'Enter') { cursors.length = 0; before = ''; apply(); } });

  function query() {
    const q = new URLSearchParams();
    for (const [k, e] of Object.entries(f)) {
      let v = e.value.trim();
      if (v && (k === 'from' || k === 'to')) v = new Date(v).toISOString();
      if (v) q.set(k, v);
    }
    return q;
  }
  function apply(keepCursors) {
    const q = query();
    if (before) q.set('before', before);
    history.replaceState(null, '', '/jobs' + (q.toString() ? '?' + q : ''));
    if (!keepCursors) cursors.length = 0;
    return refresh();
  }
  async function refresh() {
    const q = query();
    if (before) q.set('before', before);
    let page;
    try {
      page = await api('jobs?' + q);
    } catch (e) {
      table.replaceChildren(h('p', { class: 'error-box', id: 'jobs-error' }, e.message));
      return;
    }
    const cols = ['id', 'status', 'queue', 'job type', 'priority', me.admin ? 'owner' : null, 'attempts', 'created', 'finished', 'last error'].filter(Boolean);
    table.replaceChildren(page.jobs.length ? h('table', { id: 'jobs-table' },
      h('thead', {}, h('tr', {}, cols.map(c => h('th', {}, c)))),
      h('tbody', {}, page.jobs.map(j => h('tr', { 'data-id': j.id },
        h('td', {}, jobLink(j.id)), h('td', {}, badge(j.status)), h('td', {}, j.queue), h('td', {}, j.job_type),
        h('td', {}, j.priority), me.admin ? h('td', {}, j.owner) : null, h('td', { class: 'num' }, `${j.attempts}/${j.max_attempts}`),
        h('td', {}, fmtTime(j.created_at)), h('td', {}, fmtTime(j.finished_at)), h('td', { class: 'err' }, j.last_error || '')))))
      : h('p', { class: 'muted', id: 'jobs-empty' }, 'no jobs match'));
    newer.disabled = !before;
    older.disabled = !page.next;
    older.onclick = () => { cursors.push(before); before = page.next; apply(true); };
    const limit = 50;
    info.textContent = `${page.jobs.length} jobs` + (before ? ` older than #${before}` : '') +
      (page.jobs.length < limit && page.next ? ` (searched down to #${page.searched_to}; older → searches further)` : '');
  }
  /* live: the first page follows new jobs; later pages stay put */
  return { refresh, onEvent: () => { if (!before) scheduleRefresh(); } };
}

/* ---------- one job ---------- */

/* layered layout: a node's layer is its longest path from a root; each layer
 * is ordered by the mean position of its parents (two sweeps) */
function layoutDag(nodes, edges) {
  const ids = nodes.map(n => n.id);
  const parents = new Map(ids.map(i => [i, []]));
  const children = new Map(ids.map(i => [i, []]));
  for (const [p, c] of edges) { if (parents.has(c) && children.has(p)) { parents.get(c).push(p); children.get(p).push(c); } }
  const layer = new Map();
  const indeg = new Map(ids.map(i => [i, parents.get(i).length]));
  const queue = ids.filter(i => indeg.get(i) === 0);
  queue.forEach(i => layer.set(i, 0));
  while (queue.length) {
    const n = queue.shift();
    for (const c of children.get(n)) {
      layer.set(c, Math.max(layer.get(c) || 0, layer.get(n) + 1));
      indeg.set(c, indeg.get(c) - 1);
      if (indeg.get(c) === 0) queue.push(c);
    }
  }
  ids.forEach(i => { if (!layer.has(i)) layer.set(i, 0); });   /* (a cycle cannot happen) */
  const layers = [];
  ids.forEach(i => { (layers[layer.get(i)] = layers[layer.get(i)] || []).push(i); });
  const pos = new Map();
  layers.forEach(l => l.forEach((i, k) => pos.set(i, k)));
  for (let sweep = 0; sweep < 2; sweep++) {
    for (let li = 1; li < layers.length; li++) {
      const mean = i => { const ps = parents.get(i); return ps.length ? ps.reduce((a, p) => a + pos.get(p), 0) / ps.length : pos.get(i); };
      layers[li].sort((a, b) => mean(a) - mean(b) || a - b);
      layers[li].forEach((i, k) => pos.set(i, k));
    }
  }
  return { layers, pos, layer };
}

function drawDag(dag, rootId) {
  const byId = new Map(dag.nodes.map(n => [n.id, n]));
  const { layers, pos, layer } = layoutDag(dag.nodes, dag.edges);
  const NW = 150, NH = 44, GX = 30, GY = 60, M = 12;
  const widest = Math.max(1, ...layers.map(l => l.length));
  const W = M * 2 + widest * NW + (widest - 1) * GX;
  const Hh = M * 2 + layers.length * NH + (layers.length - 1) * GY;
  const xy = i => {
    const l = layers[layer.get(i)];
    const off = (W - (l.length * NW + (l.length - 1) * GX)) / 2;
    return [off + pos.get(i) * (NW + GX), M + layer.get(i) * (NH + GY)];
  };
  const svg = s('svg', { id: 'dag', viewBox: `0 0 ${W} ${Hh}`, width: Math.min(W, 1300), role: 'img' });
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse' },
    s('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#8a93a0' }))));
  for (const [p, c] of dag.edges) {
    if (!byId.has(p) || !byId.has(c)) continue;
    const [x1, y1] = xy(p), [x2, y2] = xy(c);
    const ax = x1 + NW / 2, ay = y1 + NH, bx = x2 + NW / 2, by = y2;
    svg.append(s('path', { class: 'edge', d: `M ${ax} ${ay} C ${ax} ${ay + GY / 2}, ${bx} ${by - GY / 2}, ${bx} ${by}`, fill: 'none', stroke: '#8a93a0', 'stroke-width': 1.5, 'marker-end': 'url(#arrow)' }));
  }
  for (const n of dag.nodes) {
    const [x, y] = xy(n.id);
    const g = s('g', { class: 'node' + (n.id === rootId ? ' root' : ''), 'data-id': n.id, 'data-status': n.status, transform: `translate(${x},${y})`,
      onclick: () => navigate('/job/' + n.id) },
      s('title', {}, `#${n.id} ${n.job_type} (${n.queue}): ${n.status}`),
      s('rect', { width: NW, height: NH, rx: 6, fill: STATUS_COLORS[n.status] || '#999' }),
      s('text', { x: 8, y: 18, fill: '#fff', 'font-weight': 700 }, `#${n.id} ${n.status}`),
      s('text', { x: 8, y: 35, fill: '#fff' }, n.job_type.length > 20 ? n.job_type.slice(0, 19) + '…' : n.job_type));
    svg.append(g);
  }
  return svg;
}

function jobView(main, id) {
  async function refresh() {
    let d, dag;
    try {
      [d, dag] = await Promise.all([api('job/' + id), api('job/' + id + '/dag')]);
    } catch (e) {
      main.replaceChildren(h('h1', {}, 'Job #' + id), h('p', { class: 'error-box', id: 'job-error' }, e.status === 404 ? 'no such job (or not yours)' : e.message));
      return;
    }
    const j = d.job;
    const buttons = [];
    if (j.status === 'failed')
      buttons.push(h('button', { id: 'btn-retry', class: 'primary', onclick: () => confirmed(`Retry job #${id}?`, 'retry', { id }) }, 'Retry'));
    if (['blocked', 'pending', 'running'].includes(j.status))
      buttons.push(h('button', { id: 'btn-cancel', class: 'danger', onclick: () => confirmed(`Cancel job #${id} and its dependents?`, 'cancel', { id }) }, 'Cancel'));
    const wait = j.started_at ? (new Date(j.started_at) - new Date(j.run_at)) / 1000 : null;
    const run = j.started_at && j.finished_at ? (new Date(j.finished_at) - new Date(j.started_at)) / 1000 : null;
    const kv = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    const info = h('dl', { class: 'kv' },
      kv('status', h('span', { id: 'job-status' }, badge(j.status))), kv('queue', j.queue), kv('job type', j.job_type),
      kv('priority', `${j.priority} (effective ${j.effective_priority})`), kv('owner', j.owner),
      kv('attempts', `${j.attempts} of ${j.max_attempts}`), kv('worker', j.worker || (j.in_database ? 'in-database executor' : '')),
      kv('created', fmtTime(j.created_at)), kv('run at', fmtTime(j.run_at)), kv('started', fmtTime(j.started_at)),
      kv('finished', fmtTime(j.finished_at)), kv('waited', fmtSecs(wait)), kv('ran', fmtSecs(run)),
      kv('parents', d.parents.length ? d.parents.map(p => [jobLink(p), ' ']) : '-'),
      kv('children', d.children.length ? d.children.map(c => [jobLink(c), ' ']) : '-'));
    const logs = h('table', { id: 'job-logs' }, h('thead', {}, h('tr', {}, ['time', 'status', 'attempt', 'message', 'error'].map(c => h('th', {}, c)))),
      h('tbody', {}, d.logs.map(l => h('tr', {}, h('td', {}, fmtTime(l.logged_at)), h('td', {}, badge(l.status)), h('td', { class: 'num' }, l.attempt),
        h('td', {}, l.message), h('td', { class: 'err' }, l.error || '')))));
    main.replaceChildren(
      h('h1', {}, `Job #${j.id} `, badge(j.status)),
      h('div', { class: 'grid' },
        section('Details', info, h('div', { class: 'actions' }, buttons)),
        h('section', { class: 'card', id: 'dag-card' }, h('h2', {}, 'Dependency graph'),
          dag.nodes.length > 1 ? drawDag(dag, j.id) : h('p', { class: 'muted' }, 'no dependencies'),
          h('div', { class: 'legend' }, STATUSES.map(st => badge(st)))),
        section('Payload', h('pre', { id: 'job-payload' }, JSON.stringify(j.payload, null, 2))),
        section('Result', h('pre', { id: 'job-result' }, j.result === null ? '(none)' : JSON.stringify(j.result, null, 2))),
        h('section', { class: 'card wide' }, h('h2', {}, 'Attempts and log'), j.last_error ? h('p', { class: 'err' }, j.last_error) : null, logs)));
  }
  let shown = new Set();
  return { refresh, onEvent: ev => {
    /* this job or one in its graph changed: reload it */
    shown = new Set([...document.querySelectorAll('#dag .node')].map(n => Number(n.dataset.id)));
    if (!ev.id || ev.id === Number(id) || shown.has(ev.id)) scheduleRefresh();
  } };
}

/* ---------- routing and live updates ---------- */

function setMe(m) {
  me = m;
  document.getElementById('whoami').textContent = m.role + (m.admin ? ' (admin)' : '');
}

function route() {
  const main = document.getElementById('main');
  const path = location.pathname;
  document.querySelectorAll('header nav a').forEach(a => a.classList.toggle('active', a.getAttribute('href') === path));
  const m = path.match(/^\/job\/(\d+)$/);
  if (path === '/') view = overviewView(main);
  else if (path === '/jobs') view = jobsView(main);
  else if (m) view = jobView(main, m[1]);
  else { main.replaceChildren(h('h1', {}, 'Not found')); view = null; return; }
  view.refresh().catch(e => main.replaceChildren(h('p', { class: 'error-box' }, e.message)));
}

function navigate(url) {
  history.pushState(null, '', url);
  route();
}

/* a burst of events makes one refresh, and a busy queue at most about one
 * a second: each event is shown within a second, the server is not hammered */
let lastRefresh = 0;
function scheduleRefresh(delay) {
  if (refreshTimer && delay === undefined) return;
  clearTimeout(refreshTimer);
  const wait = delay !== undefined ? delay : Math.max(100, lastRefresh + 800 - Date.now());
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    lastRefresh = Date.now();
    if (view) view.refresh().catch(e => toast(e.message, true));
  }, wait);
}

const recent = [];

function connectEvents() {
  const live = document.getElementById('live');
  const es = new EventSource('/events');
  es.onopen = () => { live.textContent = 'live'; live.className = 'live on'; };
  es.onerror = () => { live.textContent = 'reconnecting'; live.className = 'live off'; };
  es.onmessage = msg => {
    let ev;
    try { ev = JSON.parse(msg.data); } catch (e) { return; }
    ev.at = Date.now();
    if (ev.id) { recent.unshift(ev); recent.length = Math.min(recent.length, 15); }
    if (view && view.onEvent) view.onEvent(ev);
  };
}

document.addEventListener('click', e => {
  const a = e.target.closest('a[data-link]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', route);

(async () => {
  try { const o = await api('overview'); if (o.me && !o.me.error) setMe(o.me); } catch (e) { /* shown by the view */ }
  route();
  connectEvents();
})();
