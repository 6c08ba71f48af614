// The Gatehouse dashboard: reads the admin API every 2 s and draws what it says. No
// external requests, no inline script or style (the page's CSP is default-src 'self');
// every value from the API is written as text, never as markup.
'use strict';

const REFRESH_MS = 2000;
const PHASES = ['client', 'gateway', 'upstream_network', 'upstream_app'];

const $ = (id) => document.getElementById(id);

async function get(path) {
  const r = await fetch(path, { credentials: 'same-origin', headers: { accept: 'application/json' } });
  if (!r.ok) {
    throw new Error(`${path}: ${r.status}`);
  }
  return r.json();
}

function cell(text, cls) {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined ? '–' : String(text);
  if (cls) {
    td.className = cls;
  }
  return td;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement('tr');
    tr.append(...cells);
    return tr;
  }));
}

function scoreCell(q) {
  if (!q || q.score === null || q.score === undefined) {
    return cell(null, 'num score');
  }
  const grade = q.score >= 90 ? 'good' : q.score >= 70 ? 'warn' : 'bad';
  return cell(q.score.toFixed(1), `num score ${grade}`);
}

function spark(values) {
  const td = document.createElement('td');
  const c = document.createElement('canvas');
  c.className = 'spark';
  c.width = 120;
  c.height = 24;
  const g = c.getContext('2d');
  const max = Math.max(1, ...values);
  g.strokeStyle = '#26a69a';
  g.beginPath();
  values.forEach((v, i) => {
    const x = values.length > 1 ? (i / (values.length - 1)) * 118 + 1 : 60;
    const y = 23 - (v / max) * 22;
    if (i === 0) {
      g.moveTo(x, y);
    } else {
      g.lineTo(x, y);
    }
  });
  g.stroke();
  td.append(c);
  return td;
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function routes(traffic, quality) {
  const names = new Set([...Object.keys(quality.routes || {}), ...Object.keys(traffic.routes || {})]);
  names.delete('');
  fill('routes', [...names].sort().map((name) => {
    const t = (traffic.routes || {})[name];
    const q = (quality.routes || {})[name];
    const penalties = q ? `−${q.saturation.penalty} sat, −${q.security.penalty} sec` : null;
    return [
      cell(name),
      spark(t ? t.requests : []),
      cell(t ? t.rate_per_second.toFixed(2) : '0', 'num'),
      cell(t ? t.total.client_errors : 0, 'num'),
      cell(t ? t.total.errors : 0, 'num'),
      scoreCell(q),
      cell(q && q.latency.apdex !== null ? q.latency.apdex.toFixed(2) : null, 'num'),
      cell(penalties),
      cell(q ? q.reasons.join('; ') : '', 'why'),
    ];
  }));
}

function latency(data) {
  fill('latency', Object.entries(data.routes || {}).sort().map(([name, r]) => {
    const total = PHASES.reduce((s, p) => s + r.mean_ms[p], 0);
    const bar = document.createElement('div');
    bar.className = 'bar';
    for (const p of PHASES) {
      const part = document.createElement('span');
      part.className = p;
      part.title = `${p}: ${r.mean_ms[p]} ms`;
      part.style.width = `${total > 0 ? (100 * r.mean_ms[p]) / total : 0}%`;
      bar.append(part);
    }
    const td = document.createElement('td');
    td.append(bar);
    const p95 = PHASES.map((p) => (r.p95_ms[p] === null ? '–' : r.p95_ms[p])).join(' / ');
    return [cell(name), cell(`${total.toFixed(2)} ms`, 'num'), cell(p95), td, cell(r.bottleneck)];
  }));
}

function upstreams(list, quality) {
  fill('upstreams', Object.entries(list).sort().map(([name, u]) => {
    const healthy = u.targets.filter((t) => t.health === 'healthy').length;
    const q = (quality.upstreams || {})[name];
    return [
      cell(name),
      cell(`${healthy}/${u.targets.length} healthy`),
      cell(u.circuit_breaker ? u.circuit_breaker.state : 'none'),
      cell(u.in_flight, 'num'),
      scoreCell(q),
      cell(q ? q.reasons.join('; ') : '', 'why'),
    ];
  }));
}

function who(item) {
  return item.client_ip || item.consumer;
}

function clients(data) {
  fill('clients', data.items.map((i) => [
    cell(who(i)),
    cell(i.requests, 'num'),
    cell(i.errors, 'num'),
    cell(i.blocked, 'num'),
    cell(bytes(i.bytes), 'num'),
  ]));
}

function attackers(data) {
  fill('attackers', data.items.map((i) => [
    cell(who(i)),
    cell(i.blocked, 'num'),
    cell(i.client_errors, 'num'),
    cell(Object.entries(i.reasons).map(([r, n]) => `${r} ×${n}`).join(', ')),
  ]));
}

function errors(server, client) {
  const items = [...server.items, ...client.items]
    .sort((a, b) => (a.timestamp < b.timestamp ? 1 : -1))
    .slice(0, 20);
  fill('errors', items.map((t) => [
    cell(t.timestamp.slice(11, 23)),
    cell(t.status, 'num'),
    cell(t.method),
    cell(t.path),
    cell(t.route),
    cell(t.client_ip),
    cell(t.total_latency_ms.toFixed(1), 'num'),
    cell(t.short_circuit ? `${t.short_circuit.policy}: ${t.short_circuit.reason}` : '', 'why'),
  ]));
}

async function refresh() {
  const w = $('window').value;
  const status = $('status');
  try {
    const [traffic, quality, lat, ups, top, bad, server, client] = await Promise.all([
      get(`/admin/traffic?window=${w}`),
      get(`/admin/quality?window=${w}`),
      get(`/admin/latency?window=${w}`),
      get('/admin/upstreams'),
      get(`/admin/top/clients?limit=10&window=${w}`),
      get(`/admin/top/attackers?limit=10&window=${w}`),
      get('/admin/transactions?status=5xx&limit=20'),
      get('/admin/transactions?status=4xx&limit=20'),
    ]);
    routes(traffic, quality);
    latency(lat);
    upstreams(ups, quality);
    clients(top);
    attackers(bad);
    errors(server, client);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = 'muted';
  } catch (e) {
    status.textContent = `cannot read the admin API: ${e.message}`;
    status.className = 'error';
  }
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
}

$('window').addEventListener('change', refresh);
refresh();
setInterval(refresh, REFRESH_MS);
