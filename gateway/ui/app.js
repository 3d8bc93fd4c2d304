// distributed-sync console: a small single-page app over the gateway's own
// routes. No framework, no build step: DOM built with h()/svg() (text only,
// never innerHTML, so names and payloads cannot inject markup), hash routes,
// one poll loop. The API token lives in sessionStorage and goes out as
// `Authorization: Bearer …` on every call.
'use strict';

const SVGNS = 'http://www.w3.org/2000/svg';
const TOKEN_KEY = 'dsync.token';
const POLL_MS = 3000;
const HISTORY_MS = 5 * 60 * 1000;
const SERVICES = ['lock', 'queue', 'cache'];
const LIST_LIMIT = 100;

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  setAttrs(el, attrs);
  append(el, kids);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

function fill(el, ...kids) {
  el.replaceChildren();
  append(el, kids);
}

const $ = (id) => document.getElementById(id);
const empty = (text) => h('div', { class: 'empty' }, text);
const fmtNum = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString('en-US'));

function fmtMs(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return '–';
  if (ms <= 0) return 'expired';
  if (ms < 1000) return ms + ' ms';
  if (ms < 120000) return (ms / 1000).toFixed(1) + ' s';
  if (ms < 7200000) return Math.round(ms / 60000) + ' min';
  return (ms / 3600000).toFixed(1) + ' h';
}

function fmtTime(ms) {
  if (!ms) return '–';
  return new Date(ms).toLocaleTimeString('en-GB');
}

function short(value, max = 120) {
  const s = typeof value === 'string' ? value : JSON.stringify(value);
  return s.length > max ? s.slice(0, max) + '…' : s;
}

// The first array found under one of `keys` (or the value itself): list
// answers are read leniently, whatever the wrapper's name.
function listOf(d, keys) {
  if (Array.isArray(d)) return d;
  for (const k of keys) if (d && Array.isArray(d[k])) return d[k];
  return [];
}

// ---------------------------------------------------------------- API calls

class ApiError extends Error {
  constructor(status, code, message, path) {
    super(message);
    this.status = status;
    this.code = code;
    this.path = path;
  }
}

let authFailed = false;

async function api(path, { method = 'GET', json, isPublic = false } = {}) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let r;
  try {
    r = await fetch(path, { method, headers, body, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'the gateway did not answer (' + e.message + ')', path);
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (r.status === 401) {
    setAuth(false, method + ' ' + path);
    throw new ApiError(401, 'unauthorized', tokenMessage(), path);
  }
  if (!isPublic) setAuth(true);
  if (!r.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(r.status, err.code || 'http_' + r.status, err.message || text || r.statusText, path);
  }
  return data;
}

function tokenMessage() {
  return sessionStorage.getItem(TOKEN_KEY)
    ? 'Token invalid: the gateway refused the API token given above.'
    : 'Token required: this gateway runs with API_TOKENS; enter a token above.';
}

function setAuth(ok, what) {
  const el = $('auth');
  if (ok) {
    if (authFailed) el.hidden = true;
    authFailed = false;
    return;
  }
  authFailed = true;
  fill(el, tokenMessage(), what ? h('span', { class: 'muted' }, ' (401 on ' + what + ')') : null);
  el.hidden = false;
}

// A list route that is not there yet answers the gateway's JSON 404.
const missingRoute = (e) => e instanceof ApiError && e.status === 404 && /no route/i.test(e.message);

function errorBox(e, what) {
  if (e instanceof ApiError && e.status === 401) {
    return h('div', { class: 'error' }, (what ? what + ': ' : '') + tokenMessage());
  }
  const status = e instanceof ApiError && e.status ? e.status + ' ' + e.code + ': ' : '';
  return h('div', { class: 'error' }, (what ? what + ' failed: ' : '') + status + e.message);
}

let noticeTimer;
function notice(text, isError) {
  const el = $('notice');
  fill(el, text);
  el.className = 'banner' + (isError ? ' error' : '');
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (el.hidden = true), 10000);
}

function confirmDialog(text, okLabel) {
  const dlg = $('confirm');
  fill($('confirm-text'), text);
  fill($('confirm-ok'), okLabel);
  return new Promise((resolve) => {
    const done = (v) => () => {
      $('confirm-ok').onclick = null;
      $('confirm-cancel').onclick = null;
      dlg.close();
      resolve(v);
    };
    $('confirm-ok').onclick = done(true);
    $('confirm-cancel').onclick = done(false);
    dlg.oncancel = done(false);
    dlg.showModal();
  });
}

// ---------------------------------------------------------------- metrics history

// Prometheus text → [{name, labels, value}].
function parseProm(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let l;
    while ((l = re.exec(m[2] || ''))) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: parseFloat(m[3]) });
  }
  return out;
}

function serviceOf(route) {
  const m = /^\/api\/(lock|queue|cache)/.exec(route || '');
  return m ? m[1] : null;
}

// One scrape: requests and latency buckets per service, summed over routes.
function sampleOf(text) {
  const s = { t: Date.now(), count: {}, buckets: {} };
  for (const svc of SERVICES) {
    s.count[svc] = 0;
    s.buckets[svc] = {};
  }
  for (const m of parseProm(text)) {
    const svc = serviceOf(m.labels.route);
    if (!svc) continue;
    if (m.name === 'http_requests_total') s.count[svc] += m.value;
    else if (m.name === 'http_request_duration_seconds_bucket') {
      const le = m.labels.le === '+Inf' ? Infinity : parseFloat(m.labels.le);
      s.buckets[svc][le] = (s.buckets[svc][le] || 0) + m.value;
    }
  }
  return s;
}

// The 0.99 quantile of the requests between two scrapes, interpolated in
// the bucket it falls in (as Prometheus' histogram_quantile does).
function p99(prev, cur) {
  const les = Object.keys(cur).map(Number).sort((a, b) => a - b);
  const deltas = les.map((le) => (cur[le] || 0) - (prev[le] || 0));
  const total = deltas[deltas.length - 1];
  if (!total || total <= 0) return null;
  const rank = 0.99 * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < les.length; i++) {
    if (deltas[i] >= rank) {
      if (les[i] === Infinity) return lower * 1000;
      const inBucket = deltas[i] - below;
      const frac = inBucket > 0 ? (rank - below) / inBucket : 1;
      return (lower + (les[i] - lower) * frac) * 1000;
    }
    lower = les[i];
    below = deltas[i];
  }
  return null;
}

const history = { samples: [], error: null };

async function pollMetrics() {
  try {
    const text = await fetchMetrics();
    history.samples.push(sampleOf(text));
    const cutoff = Date.now() - HISTORY_MS - POLL_MS;
    while (history.samples.length > 2 && history.samples[0].t < cutoff) history.samples.shift();
    history.error = null;
  } catch (e) {
    history.error = e;
  }
}

async function fetchMetrics() {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  let r;
  try {
    r = await fetch('/metrics', { headers, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'the gateway did not answer (' + e.message + ')', '/metrics');
  }
  if (r.status === 401) {
    setAuth(false, 'GET /metrics');
    throw new ApiError(401, 'unauthorized', tokenMessage(), '/metrics');
  }
  if (!r.ok) throw new ApiError(r.status, 'http_' + r.status, await r.text(), '/metrics');
  setAuth(true);
  return r.text();
}

// Per service: [{t, rate, p99}] between consecutive scrapes.
function series(svc) {
  const out = [];
  const s = history.samples;
  for (let i = 1; i < s.length; i++) {
    const dt = (s[i].t - s[i - 1].t) / 1000;
    const dc = s[i].count[svc] - s[i - 1].count[svc];
    if (dt <= 0 || dc < 0) continue; // the gateway restarted
    out.push({ t: s[i].t, rate: dc / dt, p99: p99(s[i - 1].buckets[svc], s[i].buckets[svc]) });
  }
  return out;
}

function chart(points, key, unit, color) {
  const W = 300;
  const H = 100;
  const now = Date.now();
  // The x axis spans the history kept so far, up to five minutes.
  const first = history.samples.length ? history.samples[0].t : now;
  const t0 = Math.min(now - 10000, Math.max(now - HISTORY_MS, first));
  const span = now - t0;
  const vals = points.filter((p) => p[key] !== null && p.t >= t0);
  const max = Math.max(1e-9, ...vals.map((p) => p[key]));
  const top = max * 1.15;
  const x = (t) => ((t - t0) / span) * W;
  const y = (v) => H - 12 - (v / top) * (H - 24);
  const lines = [];
  let cur = [];
  for (const p of points) {
    if (p.t < t0) continue;
    if (p[key] === null) {
      if (cur.length) lines.push(cur);
      cur = [];
    } else cur.push(x(p.t).toFixed(1) + ',' + y(p[key]).toFixed(1));
  }
  if (cur.length) lines.push(cur);
  const last = vals.length ? vals[vals.length - 1][key] : null;
  return svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' },
    svg('line', { class: 'axis', x1: 0, y1: H - 12, x2: W, y2: H - 12 }),
    lines.map((pts) => pts.length === 1
      ? svg('circle', { cx: pts[0].split(',')[0], cy: pts[0].split(',')[1], r: 2, fill: color })
      : svg('polyline', { points: pts.join(' '), fill: 'none', stroke: color, 'stroke-width': 1.5, 'vector-effect': 'non-scaling-stroke' })),
    svg('text', { x: 2, y: 10 }, vals.length ? 'max ' + max.toFixed(max < 10 ? 2 : 0) + ' ' + unit : 'no requests'),
    svg('text', { x: 2, y: H - 1 }, span >= HISTORY_MS - POLL_MS ? '−5 min' : '−' + Math.round(span / 1000) + ' s'),
    svg('text', { x: W - 2, y: H - 1, 'text-anchor': 'end' }, last === null ? 'now' : 'now ' + last.toFixed(last < 10 ? 2 : 0) + ' ' + unit));
}

// ---------------------------------------------------------------- overview

let lastCluster = null;

async function refreshOverview() {
  const [health, cluster] = await Promise.allSettled([api('/health', { isPublic: true }), api('/cluster')]);
  const h0 = health.status === 'fulfilled' ? health.value : null;
  const c0 = cluster.status === 'fulfilled' ? cluster.value : null;
  if (c0) lastCluster = c0;
  renderOverview(h0, health.reason, c0, cluster.reason);
  renderCharts();
  await renderEvents($('overview-events'), null);
}

function healthOf(h0, svc, addr) {
  const n = h0 && h0[svc] && (h0[svc].nodes || []).find((x) => x.addr === addr);
  return n || null;
}

function nodeRow(svc, addr, up, role, detail) {
  return h('div', { class: 'node ' + (up ? 'up' : 'down'), 'data-service': svc, 'data-addr': addr, 'data-up': up ? 'true' : 'false' },
    h('span', { class: 'dot', title: up ? 'up' : 'down' }),
    h('span', { class: 'addr' }, addr),
    role ? h('span', { class: 'tag' + (role === 'leader' ? ' leader' : '') }, role) : null,
    h('span', { class: 'detail ' + (up ? 'muted' : 'down') }, detail || (up ? '' : 'down')));
}

function renderOverview(h0, hErr, c0, cErr) {
  const cards = [];
  // The gateway: up when it answered /health at all.
  cards.push(h('div', { class: 'card' }, h('h3', {}, 'gateway', h('span', { class: 'muted' }, '1 node')),
    nodeRow('gateway', location.host, !!h0, null, h0 ? 'serving this page' : 'no answer: ' + (hErr ? hErr.message : '?'))));
  const addrs = (svc) => {
    const set = new Set();
    ((h0 && h0[svc] && h0[svc].nodes) || []).forEach((n) => set.add(n.addr));
    if (c0 && svc === 'lock') (c0.lock.nodes || []).forEach((n) => set.add(n.addr));
    if (c0 && svc === 'queue') (c0.queue.members || []).forEach((a) => set.add(a));
    if (c0 && svc === 'cache') (c0.cache.members || []).forEach((a) => set.add(a));
    return [...set].sort();
  };
  let up = h0 ? 1 : 0;
  let total = 1;
  for (const svc of SERVICES) {
    const rows = addrs(svc).map((addr) => {
      const hn = healthOf(h0, svc, addr);
      let ok = hn ? hn.healthy : false;
      let role = null;
      let detail = hn && !hn.healthy ? hn.error || 'unhealthy' : '';
      if (svc === 'lock' && c0) {
        const ln = (c0.lock.nodes || []).find((n) => n.addr === addr);
        if (ln && ln.reachable) {
          role = (ln.state || '').toLowerCase() || null;
          detail = detail || `id ${ln.id} · term ${ln.term} · applied ${fmtNum(ln.applied_index)}`;
        } else if (ln) {
          ok = false;
          detail = detail || 'unreachable';
        }
      }
      if (svc === 'queue' && ok) detail = 'on the ring';
      if (svc === 'cache' && c0) {
        const peer = (c0.cache.peers || []).find((p) => p.addr === addr);
        if (ok) detail = peer ? (peer.alive ? 'in the directory' : 'peers see it dead') : '';
      }
      if (!hn && !detail) detail = h0 ? 'not in /health' : 'health unknown';
      total++;
      if (ok) up++;
      return nodeRow(svc, addr, ok, role, detail);
    });
    const sh = h0 && h0[svc];
    cards.push(h('div', { class: 'card', 'data-card': svc },
      h('h3', {}, svc + ' service', h('span', { class: sh && sh.ok ? 'ok' : 'error' }, sh ? (sh.ok ? 'ok' : sh.reason || 'down') : 'unknown')),
      rows.length ? rows : empty('no ' + svc + ' nodes known')));
  }
  fill($('nodes'), cards);

  const lock = c0 && c0.lock;
  fill($('summary'),
    h('div', { class: 'card' }, h('div', { class: 'muted' }, 'status'),
      h('div', { class: 'big ' + (h0 && h0.status === 'ok' ? 'ok' : 'error'), id: 'status' }, h0 ? h0.status : 'gateway unreachable'),
      h0 && h0.down && h0.down.length ? h('div', { class: 'error' }, 'down: ' + h0.down.join(', ')) : null),
    h('div', { class: 'card' }, h('div', { class: 'muted' }, 'nodes up'), h('div', { class: 'big', id: 'nodes-up' }, up + ' / ' + total)),
    h('div', { class: 'card' }, h('div', { class: 'muted' }, 'lock leader'),
      h('div', { class: 'big', id: 'leader' }, lock ? (lock.leader_addr ? `${lock.leader_addr} (id ${lock.leader_id})` : 'none') : '–')),
    h('div', { class: 'card' }, h('div', { class: 'muted' }, 'term'), h('div', { class: 'big', id: 'term' }, lock && lock.term !== undefined ? lock.term : '–')),
    cErr ? h('div', { class: 'card' }, errorBox(cErr, 'GET /cluster')) : null);
}

function renderCharts() {
  const el = $('charts');
  if (history.error && !history.samples.length) {
    fill(el, errorBox(history.error, 'GET /metrics'));
    return;
  }
  const colors = { lock: '#0969da', queue: '#8250df', cache: '#1a7f37' };
  fill(el, SERVICES.map((svc) => {
    const pts = series(svc);
    return h('div', { class: 'card' },
      h('h3', {}, svc, h('span', { class: 'muted' }, pts.length ? '' : 'collecting…')),
      h('div', { class: 'muted' }, 'requests / s'), chart(pts, 'rate', 'req/s', colors[svc]),
      h('div', { class: 'muted' }, 'p99 latency (ms)'), chart(pts, 'p99', 'ms', colors[svc]));
  }), history.error ? errorBox(history.error, 'GET /metrics') : null);
}

// ---------------------------------------------------------------- events

function eventKind(e) {
  return String(e.kind || '');
}

// Wait-for edges of a deadlock event (`deadlock.edges`: waiter → blocker
// on resources), else consecutive owners of its cycle (the last waits for
// the first).
function edgesOf(d) {
  if (Array.isArray(d.edges) && d.edges.length) {
    return d.edges.map((x) => ({ from: x.waiter, to: x.blocker, resources: x.resources || [] }));
  }
  const cycle = d.cycle || [];
  return cycle.map((o, i) => ({ from: o, to: cycle[(i + 1) % cycle.length], resources: [] }));
}

async function renderEvents(el, onlyKind) {
  let d;
  try {
    d = await api('/api/events?limit=50');
  } catch (e) {
    fill(el, missingRoute(e) ? empty('Recent events are not available on this gateway (GET /api/events answered 404).') : errorBox(e, 'GET /api/events'));
    return;
  }
  let events = listOf(d, ['events']);
  if (onlyKind) events = events.filter((e) => eventKind(e) === onlyKind);
  const missing = d && d.unavailable && d.unavailable.length
    ? h('div', { class: 'error' }, 'No answer from ' + d.unavailable.join(', ') + ': their events are missing.') : null;
  if (!events.length) {
    fill(el, empty(onlyKind ? 'No deadlock was detected recently.' : 'No recent events (deadlock aborts, leader changes, dead letters, redrives).'), missing);
    return;
  }
  fill(el, h('table', {},
    h('tr', {}, h('th', {}, 'time'), h('th', {}, 'event'), h('th', {}, 'node'), h('th', {}, 'details')),
    events.map((e) => {
      const kind = eventKind(e);
      const dl = e.deadlock;
      const details = dl
        ? h('div', {},
          h('div', {}, 'aborted ', h('b', {}, dl.victim), ' waiting for ', h('code', {}, dl.resource)),
          edgesOf(dl).map((x) => h('div', { class: 'edge' }, `${x.from} → waits for → ${x.to}`, x.resources.length ? ` (on ${x.resources.join(', ')})` : '')))
        : e.summary || short(e.leader || e.queue || e, 300);
      return h('tr', { 'data-kind': kind }, h('td', {}, fmtTime(e.at_ms)), h('td', {}, kind.replace('_', ' ') || '?'),
        h('td', { class: 'muted' }, (e.service ? e.service + ' ' : '') + (e.node || '')), h('td', {}, details));
    })), missing);
}

// ---------------------------------------------------------------- locks

function holdersCell(holders, clock) {
  if (!holders || !holders.length) return h('span', { class: 'muted' }, 'free');
  return holders.map((x) => h('div', { class: 'holder' },
    h('b', {}, x.owner), ' · ', x.mode || 'exclusive', ' · token ', h('code', { class: 'token' }, x.token),
    ' · ', h('span', { class: 'left' }, fmtMs(x.expires_at_ms - clock) + ' left')));
}

function waitersCell(waiters) {
  if (!waiters || !waiters.length) return h('span', { class: 'muted' }, 'none');
  return h('ol', {}, waiters.map((w) => h('li', {}, h('b', {}, w.owner), ' (' + (w.mode || 'exclusive') + ')',
    w.deadline_ms ? ' · waits until ' + fmtTime(w.deadline_ms) : '')));
}

function locksTable(items, clockOf) {
  return h('table', {},
    h('tr', {}, h('th', {}, 'resource'), h('th', {}, 'holders (owner · mode · token · time left)'), h('th', {}, 'waiters, in order')),
    items.map((l) => h('tr', { 'data-resource': l.resource },
      h('td', {}, h('code', {}, l.resource)), h('td', {}, holdersCell(l.holders, clockOf(l))), h('td', {}, waitersCell(l.waiters)))));
}

async function refreshLocks() {
  const prefix = $('locks-prefix').value;
  const list = $('locks-list');
  try {
    const d = await api(`/api/locks?prefix=${encodeURIComponent(prefix)}&limit=${LIST_LIMIT}`);
    const items = listOf(d, ['locks', 'items', 'resources']);
    const clock = (l) => l.clock_ms || (d && d.clock_ms) || Date.now();
    fill(list, items.length ? locksTable(items, clock) : empty(prefix ? `No lock is held or waited on under "${prefix}".` : 'No lock is held or waited on.'),
      d && d.next ? h('div', { class: 'muted' }, `Showing the first ${items.length}; narrow the prefix to see more.`) : null);
  } catch (e) {
    fill(list, missingRoute(e) ? empty('Listing locks is not available on this gateway (GET /api/locks answered 404); look a resource up below.') : errorBox(e, 'GET /api/locks'));
  }
  await lookupLock();
  await renderEvents($('deadlocks'), 'deadlock');
}

async function lookupLock() {
  const resource = sessionStorage.getItem('dsync.lock') || '';
  const el = $('lock-result');
  if (!resource) {
    fill(el, empty('Enter a resource name to see its holders and waiters.'));
    return;
  }
  try {
    const d = await api('/api/lock/' + encodeURIComponent(resource));
    const free = (!d.holders || !d.holders.length) && (!d.waiters || !d.waiters.length);
    fill(el, free ? empty(`"${resource}" is not held and nobody waits for it.`) : locksTable([d], () => d.clock_ms || Date.now()));
  } catch (e) {
    fill(el, errorBox(e, 'GET /api/lock/' + resource));
  }
}

// ---------------------------------------------------------------- queues

const watched = () => JSON.parse(sessionStorage.getItem('dsync.queues') || '[]');
const setWatched = (qs) => sessionStorage.setItem('dsync.queues', JSON.stringify(qs));

function queueRow(q, extra) {
  const name = q.queue || q.name;
  const dead = q.dead_lettered || 0;
  return h('tr', { 'data-queue': name },
    h('td', {}, h('code', {}, name)),
    h('td', { class: 'num depth' }, fmtNum(q.ready)),
    h('td', { class: 'num' }, fmtNum(q.delayed)),
    h('td', { class: 'num' }, fmtNum(q.in_flight)),
    h('td', { class: 'num dead' + (dead ? ' error' : '') }, fmtNum(q.dead_lettered)),
    h('td', { class: 'muted' }, q.node || ''),
    h('td', {},
      h('button', { type: 'button', class: 'peek', onclick: () => showDead(name) }, 'Dead letters'), ' ',
      h('button', { type: 'button', class: 'redrive', disabled: dead ? null : true, onclick: () => redrive(name, dead) }, 'Redrive'),
      extra || null));
}

function queuesTable(rows) {
  return h('table', {},
    h('tr', {}, h('th', {}, 'queue'), h('th', { class: 'num' }, 'depth (ready)'), h('th', { class: 'num' }, 'delayed'),
      h('th', { class: 'num' }, 'in flight'), h('th', { class: 'num' }, 'dead-lettered'), h('th', {}, 'node'), h('th', {}, '')),
    rows);
}

async function refreshQueues() {
  const prefix = $('queues-prefix').value;
  const list = $('queues-list');
  try {
    const d = await api(`/api/queues?prefix=${encodeURIComponent(prefix)}&limit=${LIST_LIMIT}`);
    const items = listOf(d, ['queues', 'items']);
    fill(list, items.length ? queuesTable(items.map((q) => queueRow(q))) : empty(prefix ? `No queue under "${prefix}".` : 'No queues yet: enqueue a message and it shows here.'),
      d && d.next ? h('div', { class: 'muted' }, `Showing the first ${items.length}; narrow the prefix to see more.`) : null,
      d && d.unavailable && d.unavailable.length ? h('div', { class: 'error' }, 'No answer from ' + d.unavailable.join(', ') + ': the queues they own are missing.') : null);
  } catch (e) {
    fill(list, missingRoute(e) ? empty('Listing queues is not available on this gateway (GET /api/queues answered 404); look a queue up by name below.') : errorBox(e, 'GET /api/queues'));
  }
  const names = watched();
  const el = $('queue-watched');
  if (!names.length) {
    fill(el, empty('Look a queue up by name to keep it on this page.'));
  } else {
    const rows = await Promise.all(names.map(async (name) => {
      const forget = h('button', { type: 'button', title: 'stop watching', onclick: () => { setWatched(watched().filter((x) => x !== name)); refreshQueues(); } }, '×');
      try {
        return queueRow(await api('/api/queue/' + encodeURIComponent(name)), [' ', forget]);
      } catch (e) {
        return h('tr', { 'data-queue': name }, h('td', {}, h('code', {}, name)), h('td', { colspan: 5 }, errorBox(e, 'GET /api/queue/' + name)), h('td', {}, forget));
      }
    }));
    fill(el, queuesTable(rows));
  }
  if (deadShown) await showDead(deadShown, true);
}

let deadShown = null;

async function showDead(name, quiet) {
  deadShown = name;
  const el = $('dead-panel');
  try {
    const d = await api(`/api/queue/${encodeURIComponent(name)}/dead?limit=50`);
    const msgs = listOf(d, ['messages', 'items']);
    fill(el, h('h2', {}, `Dead letters of "${name}"`, ' ', h('button', { type: 'button', onclick: () => { deadShown = null; fill(el); } }, 'close')),
      msgs.length
        ? [h('div', { class: 'row' }, h('button', { type: 'button', class: 'danger', id: 'redrive-shown', onclick: () => redrive(name, msgs.length) }, `Redrive ${msgs.length === 50 ? '50+' : msgs.length} to ready…`)),
          h('table', { id: 'dead-table' },
            h('tr', {}, h('th', {}, 'id'), h('th', { class: 'num' }, 'attempts'), h('th', {}, 'enqueued'), h('th', {}, 'dead-lettered'), h('th', {}, 'payload')),
            msgs.map((m) => h('tr', {}, h('td', {}, h('code', {}, m.id)), h('td', { class: 'num' }, m.attempts), h('td', {}, fmtTime(m.enqueued_at_ms)),
              h('td', {}, fmtTime(m.dead_lettered_at_ms)), h('td', {}, h('pre', {}, short(m.payload, 400))))))]
        : empty(`No dead letters in "${name}".`));
  } catch (e) {
    if (!quiet) fill(el, errorBox(e, `GET /api/queue/${name}/dead`));
  }
}

async function redrive(name, count) {
  const ok = await confirmDialog(`Move ${count === 1 ? 'the dead letter' : 'up to 1000 dead letters'} of queue "${name}" back to ready? They will be delivered again.`, 'Redrive');
  if (!ok) return;
  try {
    const d = await api('/api/queue/redrive', { method: 'POST', json: { queue: name, max: 1000 } });
    const n = (d && d.redriven ? d.redriven.length : 0);
    notice(`Redriven ${n} message${n === 1 ? '' : 's'} of "${name}" back to ready.`);
  } catch (e) {
    notice(`Redrive of "${name}" failed: ${e.message}`, true);
  }
  await refreshQueues();
}

// ---------------------------------------------------------------- cache

async function refreshCache() {
  const key = sessionStorage.getItem('dsync.key') || '';
  const lineEl = $('cache-line');
  if (!key) fill(lineEl, empty('Enter a key to see its MESI state on every cache node.'));
  else {
    try {
      const d = await api('/api/cache/line?key=' + encodeURIComponent(key));
      const nodes = d.nodes || [];
      const dir = d.directory || {};
      fill(lineEl,
        h('div', { class: 'muted' }, `key "${d.key}" · home ${d.home || '?'} · directory: ${short(dir.holders === undefined ? dir : dir.holders, 200)}`),
        nodes.length ? h('table', {},
          h('tr', {}, h('th', {}, 'node'), h('th', {}, 'alive'), h('th', {}, 'state'), h('th', {}, 'version'), h('th', {}, 'grant epoch')),
          nodes.map((n) => h('tr', { class: n.alive === false ? 'down' : '', 'data-node': n.node },
            h('td', {}, h('code', {}, n.node), n.node === d.home ? h('span', { class: 'tag' }, 'home') : null),
            h('td', {}, h('span', { class: 'dot ' + (n.alive === false ? 'down' : 'up') }), n.alive === false ? ' down' : ' yes'),
            h('td', {}, h('span', { class: 'state state-' + (n.state || 'I') }, n.state || '?')),
            h('td', {}, n.version ? short(n.version) : '–'),
            h('td', {}, n.grant_epoch === null || n.grant_epoch === undefined ? '–' : n.grant_epoch))))
          : empty('No cache node answered for this key.'));
    } catch (e) {
      fill(lineEl, errorBox(e, 'GET /api/cache/line'));
    }
  }

  const statsEl = $('cache-stats');
  let members = lastCluster && lastCluster.cache ? lastCluster.cache.members : null;
  try {
    lastCluster = await api('/cluster');
    members = lastCluster.cache.members;
  } catch (e) {
    if (!members) {
      fill(statsEl, errorBox(e, 'GET /cluster'));
      return;
    }
  }
  if (!members.length) {
    fill(statsEl, empty('The gateway knows no cache nodes.'));
    return;
  }
  const rows = await Promise.all(members.map(async (node) => {
    try {
      const s = await api('/api/cache/stats?node=' + encodeURIComponent(node));
      const lines = s.lines || {};
      const rate = s.hit_rate !== undefined ? s.hit_rate : (s.hits + s.misses ? s.hits / (s.hits + s.misses) : 0);
      return h('tr', { 'data-node': node, class: 'up' },
        h('td', {}, h('span', { class: 'dot up' }), ' ', h('code', {}, node)),
        h('td', { class: 'num' }, fmtNum(s.hits)), h('td', { class: 'num' }, fmtNum(s.misses)),
        h('td', { class: 'num' }, (rate * 100).toFixed(1) + ' %'),
        h('td', { class: 'num' }, fmtNum(s.invalidations_sent)), h('td', { class: 'num' }, fmtNum(s.invalidations_received)),
        h('td', { class: 'num' }, fmtNum(s.evictions)),
        h('td', {}, `M ${fmtNum(lines.M)} · E ${fmtNum(lines.E)} · S ${fmtNum(lines.S)}`),
        h('td', { class: 'num' }, fmtNum(s.entries)));
    } catch (e) {
      return h('tr', { 'data-node': node, class: 'down' },
        h('td', {}, h('span', { class: 'dot down' }), ' ', h('code', {}, node)), h('td', { colspan: 8 }, errorBox(e, 'stats')));
    }
  }));
  fill(statsEl, h('table', {},
    h('tr', {}, h('th', {}, 'node'), h('th', { class: 'num' }, 'hits'), h('th', { class: 'num' }, 'misses'), h('th', { class: 'num' }, 'hit rate'),
      h('th', { class: 'num' }, 'invalidations sent'), h('th', { class: 'num' }, 'received'), h('th', { class: 'num' }, 'evictions'),
      h('th', {}, 'lines'), h('th', { class: 'num' }, 'entries')),
    rows));
}

// ---------------------------------------------------------------- routing and polling

const PAGES = { overview: refreshOverview, locks: refreshLocks, queues: refreshQueues, cache: refreshCache };

function currentPage() {
  const name = location.hash.replace(/^#\/?/, '').split(/[/?]/)[0];
  return PAGES[name] ? name : 'overview';
}

let running = null;

// Refresh the page shown (at most one refresh at a time; the next tick
// catches up).
async function refresh() {
  if (running) return running;
  running = (async () => {
    try {
      await PAGES[currentPage()]();
    } catch (e) {
      notice('Refreshing the page failed: ' + e.message, true);
    } finally {
      document.body.dataset.refreshed = String(Date.now());
      running = null;
    }
  })();
  return running;
}

function show() {
  const page = currentPage();
  for (const name of Object.keys(PAGES)) {
    $('page-' + name).hidden = name !== page;
    $('nav-' + name).classList.toggle('active', name === page);
  }
  document.body.dataset.page = page;
  refresh();
}

function onSubmit(id, fn) {
  $(id).addEventListener('submit', (ev) => {
    ev.preventDefault();
    fn();
  });
}

function start() {
  $('token').value = sessionStorage.getItem(TOKEN_KEY) || '';
  onSubmit('token-form', () => {
    const t = $('token').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    setAuth(true);
    notice(t ? 'Token kept for this tab (session storage).' : 'Token cleared.');
    pollMetrics().then(refresh);
  });
  $('token-clear').addEventListener('click', () => {
    $('token').value = '';
    sessionStorage.removeItem(TOKEN_KEY);
    notice('Token cleared.');
    refresh();
  });
  onSubmit('locks-filter', refresh);
  onSubmit('queues-filter', refresh);
  onSubmit('lock-lookup', () => {
    sessionStorage.setItem('dsync.lock', $('lock-resource').value.trim());
    lookupLock();
  });
  onSubmit('queue-lookup', () => {
    const q = $('queue-name').value.trim();
    if (q && !watched().includes(q)) setWatched([q, ...watched()].slice(0, 20));
    refresh();
  });
  onSubmit('cache-lookup', () => {
    sessionStorage.setItem('dsync.key', $('cache-key').value.trim());
    refresh();
  });
  $('lock-resource').value = sessionStorage.getItem('dsync.lock') || '';
  $('cache-key').value = sessionStorage.getItem('dsync.key') || '';
  window.addEventListener('hashchange', show);
  pollMetrics().then(show);
  setInterval(async () => {
    await pollMetrics();
    if (!document.querySelector('dialog[open]')) refresh();
  }, POLL_MS);
}

start();
