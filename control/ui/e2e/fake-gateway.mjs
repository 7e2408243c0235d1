#!/usr/bin/env node
// DEVELOPMENT AID ONLY — a fake of the Gateway's operator API (docs/control-api.md) with canned,
// slowly changing data, serving the built UI (dist/) under /ui/. It exists to check the UI and the
// mechanics of e2e/console.e2e.ts without a cluster. The real end-to-end run targets a real
// `cloudlysis dev` Gateway; nothing here is used by it.
//
//   npm run build && FAKE_GATEWAY_PORT=8089 FAKE_GATEWAY_TOKEN=fake-token node e2e/fake-gateway.mjs
//   CLOUDLYSIS_UI_URL=http://127.0.0.1:8089 CLOUDLYSIS_UI_TOKEN=fake-token \
//     CLOUDLYSIS_UI_EXPECT_POISON=1 npm run e2e
//
// Any token is accepted except the literal "bad" and an empty one (401), unless
// FAKE_GATEWAY_TOKEN is set: then only that token is accepted.

import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PORT = Number(process.env.FAKE_GATEWAY_PORT ?? 8089);
const HOST = process.env.FAKE_GATEWAY_HOST ?? '127.0.0.1';
const TOKEN = process.env.FAKE_GATEWAY_TOKEN ?? '';
const QUIET = process.env.FAKE_GATEWAY_QUIET === '1';
const DIST = resolve(fileURLToPath(new URL('../dist/', import.meta.url)));
const started = Date.now();

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

// ------------------------------------------------------------------ state

const uptime = () => Math.floor((Date.now() - started) / 1000) + 812;
const iso = (ms) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');

let streamLast = 1210;
const views = [
  { view: 'balances', generation: 2, checkpoint: 1200, rebuild: null },
  { view: 'accounts_by_owner', generation: 1, checkpoint: 1210, rebuild: null },
];

let drainState = 'serving';

const audit = [
  { time: iso(started - 3_600_000), actor: 'dev', tenant: 'demo', action: 'runner.reload', target: 'runner-7c1d', outcome: 'ok', detail: 'no changes' },
  { time: iso(started - 1_800_000), actor: 'dev', tenant: 'demo', action: 'workflow.pause', target: 'transfer/t-1002', outcome: 'ok', detail: null },
];
const record = (action, target, outcome, detail = null) =>
  audit.unshift({ time: iso(Date.now()), actor: 'dev', tenant: 'demo', action, target, outcome, detail });

const poison = new Map();
function addPoison(i, source, error, payload, payloadText = null) {
  const id = `p${String(i).padStart(4, '0')}-${source.name}`;
  poison.set(id, {
    id,
    source,
    consumer: source.kind === 'view' ? `view-${source.name}` : `effect-${source.name}`,
    stream: source.kind === 'view' ? 'EVENTS' : 'EFFECTS',
    sequence: 1000 + i * 7,
    subject: source.kind === 'view' ? `events.demo.account.acc-${i}` : `effects.demo.${source.name}`,
    error,
    attempts: 5,
    time: iso(started - i * 60_000),
    headers: {
      'tenant-id': ['demo'],
      'correlation-id': [`0193a-${i}`],
      'nats-msg-id': [`acc-${i}:${i + 3}`],
    },
    message: { available: payload !== undefined || payloadText !== null, payload: payload ?? null, payload_text: payloadText },
  });
}
addPoison(1, { kind: 'view', name: 'balances' }, 'amount overflows u64: 18446744073709551615 + 10', {
  type: 'Deposited',
  account: 'acc-1',
  amount: 10,
  meta: { by: 'teller-4', at: '2026-11-26T23:39:58Z' },
});
addPoison(2, { kind: 'effect', name: 'notify' }, 'HTTP 503 from notifier after 5 attempts', undefined, 'not json: \u0001\u0002');
addPoison(3, { kind: 'view', name: 'accounts_by_owner' }, 'decode: missing field `owner`', { type: 'Opened', account: 'acc-3' });

const instances = new Map();
for (let i = 1; i <= 7; i += 1) {
  const id = `t-${1000 + i}`;
  const status = i === 6 ? 'completed' : i === 7 ? 'failed' : 'running';
  instances.set(id, {
    workflow: 'transfer',
    instance: id,
    status,
    state: { from: `acc-${i}`, to: `acc-${i + 1}`, amount: i * 25, phase: status === 'running' ? 'withdrawn' : 'done' },
    step: i + 1,
    paused: i === 2,
    cancel_requested: false,
    pending:
      status === 'running'
        ? [{ command_id: `cmd-${i}`, effect_type: 'deposit', label: 'deposit', issued_at_ms: started - 5000, attempts: 2, ledger_status: 'in_flight', last_error: i === 3 ? 'timeout after 2 s' : null }]
        : [],
    timers: status === 'running' ? [{ name: 'timeout', fire_at_ms: started + 600_000 }] : [],
    applied_events: [{ stream_sequence: 1100 + i, index: 0 }],
    failure: status === 'failed' ? 'withdraw refused: insufficient funds' : null,
    created_at_ms: started - i * 90_000,
    updated_at_ms: started - i * 10_000,
  });
}

// ------------------------------------------------------------------ computed answers

function viewAnswer(v) {
  if (v.rebuild) {
    const done = Math.min(streamLast, Math.floor(((Date.now() - v.rebuild.startedAt) / 1000) * 350));
    if (done >= streamLast) {
      v.generation = v.rebuild.generation;
      v.checkpoint = streamLast;
      v.rebuild = null;
      record('view.rebuild', v.view, 'ok', `generation ${v.generation} active`);
    } else {
      return {
        view: v.view,
        generation: v.generation,
        checkpoint: v.checkpoint,
        stream_last_sequence: streamLast,
        lag: streamLast - v.checkpoint,
        rebuilding: { generation: v.rebuild.generation, checkpoint: done },
      };
    }
  }
  return {
    view: v.view,
    generation: v.generation,
    checkpoint: v.checkpoint,
    stream_last_sequence: streamLast,
    lag: streamLast - v.checkpoint,
    rebuilding: null,
  };
}

function wave(period, max) {
  const t = (Date.now() - started) / 1000;
  return Math.round(((Math.sin((t / period) * 2 * Math.PI) + 1) / 2) * max);
}

function supervisionTree(role) {
  const storm = Math.floor((Date.now() - started) / 4000); // one restart every 4 s
  if (role === 'aggregate') {
    return {
      name: 'root', strategy: 'one_for_one', status: 'running', restarts: 0,
      children: [
        { name: 'command-intake', kind: 'grpc_server', status: 'running', restarts: 0, mailbox: { depth: wave(7, 12), capacity: 256 } },
        { name: 'entities', kind: 'supervisor', status: 'running', restarts: 0 },
        { name: 'kv-writer', kind: 'actor', status: 'running', restarts: 0, mailbox: { depth: 3, capacity: 64 } },
      ],
      supervisors: [{
        name: 'entities', strategy: 'one_for_one', status: 'running', restarts: 0,
        children: [
          { name: 'account/acc-1', kind: 'entity', status: 'running', restarts: 0, mailbox: { depth: wave(5, 30), capacity: 32 } },
          { name: 'account/acc-2', kind: 'entity', status: 'running', restarts: 1, last_failure: 'panicked: attempt to subtract with overflow', last_failure_at: iso(started - 600_000), mailbox: { depth: 0, capacity: 32 } },
        ],
        supervisors: [],
      }],
    };
  }
  if (role === 'projection') {
    return {
      name: 'root', strategy: 'one_for_one', status: 'running', restarts: storm,
      children: [
        { name: 'consumer-balances', kind: 'jetstream_consumer', status: storm % 2 ? 'restarting' : 'running', restarts: storm, last_failure: 'panicked: boom', last_failure_at: iso(Date.now() - 1500), mailbox: { depth: wave(3, 60), capacity: 64 } },
        { name: 'consumer-accounts_by_owner', kind: 'jetstream_consumer', status: 'running', restarts: 0, mailbox: { depth: 1, capacity: 64 } },
        { name: 'query-server', kind: 'grpc_server', status: 'running', restarts: 0 },
      ],
      supervisors: [],
    };
  }
  return {
    name: 'root', strategy: 'rest_for_one', status: 'running', restarts: 0,
    children: [
      { name: 'outbox-relay', kind: 'actor', status: 'running', restarts: 0, mailbox: { depth: wave(11, 40), capacity: 128 } },
      { name: 'effect-deposit', kind: 'effect_handler', status: 'running', restarts: 2, last_failure: 'deadline exceeded', last_failure_at: iso(started - 120_000), mailbox: { depth: 7, capacity: 16 } },
      { name: 'timers', kind: 'actor', status: drainState === 'drained' ? 'stopped' : 'running', restarts: 0 },
    ],
    supervisors: [],
  };
}

const NODES = [
  { role: 'aggregate', node_id: 'aggregate-3f2a', address: 'http://127.0.0.1:50051', behaviours: ['account'] },
  { role: 'projection', node_id: 'projection-91bc', address: 'http://127.0.0.1:50052', behaviours: ['balances', 'accounts_by_owner'] },
  { role: 'runner', node_id: 'runner-7c1d', address: 'http://127.0.0.1:50053', behaviours: ['transfer'] },
];

function runnerStatus() {
  return {
    node_id: 'runner-7c1d',
    address: 'http://127.0.0.1:50053',
    version: '0.1.0',
    uptime_seconds: uptime(),
    draining: drainState !== 'serving',
    drain_state: drainState,
    in_flight: drainState === 'drained' ? 0 : 3,
    outbox_depth: drainState === 'drained' ? 0 : 1,
    enabled_workflows: ['transfer'],
    effect_types: ['deposit', 'withdraw', 'notify'],
    effects: [
      { effect_type: 'deposit', in_flight: 2, concurrency: 16, max_attempts: 5 },
      { effect_type: 'withdraw', in_flight: 1, concurrency: 16, max_attempts: 5 },
      { effect_type: 'notify', in_flight: 0, concurrency: 4, max_attempts: 3 },
    ],
    consumers: [
      { stream: 'EFFECTS', durable: 'runner-effects', pending: 4, ack_pending: 3, redelivered: 1, in_flight: 3, fetching: drainState === 'serving' },
      { stream: 'EVENTS', durable: 'runner-events-transfer', pending: 0, ack_pending: 0, redelivered: 0, in_flight: 0, fetching: drainState === 'serving' },
    ],
  };
}

// ------------------------------------------------------------------ HTTP

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function problem(res, status, slug, title, detail, headers = {}) {
  const text = JSON.stringify({ type: `urn:cloudlysis:problem:${slug}`, title, status, detail, correlation_id: `fake-${Date.now()}` });
  res.writeHead(status, { 'content-type': 'application/problem+json', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function page(list, url, defaultLimit) {
  const limit = Math.max(1, Math.min(500, Number(url.searchParams.get('limit') ?? defaultLimit) || defaultLimit));
  const offset = Number(url.searchParams.get('cursor') ?? 0) || 0;
  const items = list.slice(offset, offset + limit);
  const next = offset + limit < list.length ? String(offset + limit) : null;
  return { items, next };
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  return text === '' ? null : JSON.parse(text);
}

function serveStatic(req, res, url) {
  if (url.pathname === '/ui') {
    res.writeHead(308, { location: '/ui/' });
    res.end();
    return;
  }
  const rel = decodeURIComponent(url.pathname.slice('/ui/'.length)) || 'index.html';
  const path = normalize(join(DIST, rel));
  if (!path.startsWith(DIST)) {
    res.writeHead(403);
    res.end();
    return;
  }
  const file = existsSync(path) && statSync(path).isFile() ? path : join(DIST, 'index.html');
  if (!existsSync(file)) {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end('dist/ is missing: run `npm run build` first');
    return;
  }
  res.writeHead(200, {
    'content-type': MIME[extname(file)] ?? 'application/octet-stream',
    'cache-control': file.endsWith('index.html') ? 'no-cache' : 'public, max-age=31536000, immutable',
  });
  createReadStream(file).pipe(res);
}

async function api(req, res, url) {
  const auth = req.headers.authorization ?? '';
  const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  if (token === '' || token === 'bad' || (TOKEN !== '' && token !== TOKEN)) {
    return problem(res, 401, 'unauthorized', 'Unauthorized', token === '' ? 'missing bearer token' : 'token signature is invalid');
  }
  const m = req.method;
  const p = url.pathname;
  let match;

  if (m === 'GET' && p === '/admin/whoami') {
    return send(res, 200, {
      subject: 'dev',
      tenant: 'demo',
      rights: ['admin:read', 'admin:operate', 'runner:admin', 'workflows:*', 'workflows:*:operate', 'commands:*', 'queries:*'],
      expires_at_ms: started + 8 * 3_600_000,
    });
  }
  if (m === 'GET' && p === '/admin/nodes') {
    return send(res, 200, {
      nodes: [
        ...NODES.map((n) => ({
          ...n,
          health: n.role === 'runner' && drainState !== 'serving' ? 'not_serving' : 'serving',
          version: '0.1.0',
          uptime_seconds: uptime() + (n.role === 'projection' ? 40 : 0),
          drain_state: n.role === 'runner' ? drainState : null,
          error: null,
        })),
        { role: 'projection', node_id: null, address: 'http://127.0.0.1:50062', health: 'unreachable', version: null, uptime_seconds: null, drain_state: null, behaviours: null, error: 'transport error: connection refused' },
      ],
    });
  }
  if (m === 'GET' && p === '/admin/supervision') {
    return send(res, 200, {
      nodes: [
        ...NODES.map((n) => ({ role: n.role, node_id: n.node_id, address: n.address, tree: supervisionTree(n.role), error: null })),
        { role: 'projection', node_id: null, address: 'http://127.0.0.1:50062', tree: null, error: 'transport error: connection refused' },
      ],
    });
  }
  if (m === 'GET' && p === '/admin/views') {
    streamLast += 1;
    return send(res, 200, { views: views.map(viewAnswer), stream_last_sequence: streamLast });
  }
  if (m === 'POST' && (match = p.match(/^\/admin\/views\/([^/]+)\/rebuild$/))) {
    const v = views.find((x) => x.view === decodeURIComponent(match[1]));
    if (!v) return problem(res, 404, 'not-found', 'Not Found', `no view \`${match[1]}\``);
    viewAnswer(v);
    if (v.rebuild) return problem(res, 409, 'conflict', 'Conflict', `a rebuild of ${v.view} (generation ${v.rebuild.generation}) already runs`);
    v.rebuild = { generation: v.generation + 1, startedAt: Date.now() };
    return send(res, 202, { view: v.view, generation: v.rebuild.generation, active_generation: v.generation });
  }
  if (m === 'POST' && (match = p.match(/^\/admin\/views\/([^/]+)\/rebuild\/cancel$/))) {
    const v = views.find((x) => x.view === decodeURIComponent(match[1]));
    if (!v) return problem(res, 404, 'not-found', 'Not Found', `no view \`${match[1]}\``);
    if (!v.rebuild) return problem(res, 409, 'conflict', 'Conflict', `no rebuild of ${v.view} runs`);
    const cancelled = v.rebuild.generation;
    v.rebuild = null;
    record('view.rebuild_cancel', v.view, 'ok', `generation ${cancelled} discarded`);
    return send(res, 200, { view: v.view, cancelled_generation: cancelled, active_generation: v.generation });
  }
  if (m === 'GET' && p === '/admin/poison') {
    const source = url.searchParams.get('source') ?? '';
    const all = [...poison.values()].filter((r) => source === '' || r.source.name === source);
    const { items, next } = page(all, url, 50);
    const summary = (r) => Object.fromEntries(Object.entries(r).filter(([k]) => k !== 'headers' && k !== 'message'));
    return send(res, 200, { records: items.map(summary), next_cursor: next });
  }
  if ((match = p.match(/^\/admin\/poison\/([^/]+)(\/redrive)?$/))) {
    const id = decodeURIComponent(match[1]);
    const rec = poison.get(id);
    if (m === 'GET' && !match[2]) {
      if (!rec) return problem(res, 404, 'not-found', 'Not Found', `no poison record \`${id}\``);
      return send(res, 200, rec);
    }
    if (m === 'POST' && match[2]) {
      if (!rec) {
        record('poison.redrive', id, 'already_gone');
        return send(res, 200, { id, outcome: 'already_gone', detail: null });
      }
      if (rec.source.name === 'accounts_by_owner') {
        rec.attempts += 1;
        record('poison.redrive', id, 'failed', 'decode: missing field `owner`');
        return send(res, 200, { id, outcome: 'failed', detail: 'decode: missing field `owner` (the record is kept)' });
      }
      poison.delete(id);
      record('poison.redrive', id, 'applied', `${rec.stream} #${rec.sequence} applied to ${rec.source.name}`);
      return send(res, 200, { id, outcome: 'applied', detail: `applied to ${rec.source.name}` });
    }
    if (m === 'DELETE' && !match[2]) {
      const existed = poison.delete(id);
      record('poison.purge', id, existed ? 'purged' : 'already_gone');
      return send(res, 200, { id, outcome: existed ? 'purged' : 'already_gone' });
    }
  }
  if (m === 'GET' && p === '/admin/audit') {
    const { items, next } = page(audit, url, 100);
    return send(res, 200, { entries: items, next_cursor: next });
  }
  if (m === 'GET' && p === '/admin/runner/nodes') {
    return send(res, 200, { nodes: [runnerStatus(), { address: 'http://127.0.0.1:50063', error: 'no answer within the deadline' }] });
  }
  if ((match = p.match(/^\/admin\/runner\/nodes\/([^/]+)(?:\/([^/]+))?$/))) {
    const node = decodeURIComponent(match[1]);
    if (node !== 'runner-7c1d') return problem(res, 404, 'not-found', 'Not Found', `no runner node \`${node}\` answers this Gateway`);
    if (m === 'GET' && !match[2]) return send(res, 200, runnerStatus());
    if (m === 'POST' && match[2]) {
      const verb = match[2];
      if (verb === 'drain') {
        drainState = 'intake_stopped';
        setTimeout(() => (drainState = drainState === 'intake_stopped' ? 'in_flight_zero' : drainState), 1500);
        setTimeout(() => (drainState = drainState === 'in_flight_zero' ? 'drained' : drainState), 3000);
        record('runner.drain', node, 'ok');
        return send(res, 200, { node_id: node, state: 'intake_stopped', drained: false, in_flight: 3, pending_outbox: 1, detail: 'intake stopped; 3 in flight' });
      }
      if (verb === 'undrain') {
        drainState = 'serving';
        record('runner.undrain', node, 'ok');
        return send(res, 200, { node_id: node, state: 'serving', drained: false, in_flight: 0, pending_outbox: 0, detail: 'serving again' });
      }
      if (verb === 'reload') {
        record('runner.reload', node, 'ok', 'no changes');
        return send(res, 200, { node_id: node, changes: [], enabled_workflows: ['transfer'], effects: runnerStatus().effects.map(({ effect_type, concurrency, max_attempts }) => ({ effect_type, concurrency, max_attempts })) });
      }
      return problem(res, 404, 'not-found', 'Not Found', `\`${verb}\` is not a runner verb: use drain, undrain or reload`);
    }
  }
  if ((match = p.match(/^\/v1\/workflows\/([^/]+)(?:\/([^/]+))?(?:\/([^/]+))?$/))) {
    const name = decodeURIComponent(match[1]);
    if (name !== 'transfer') return problem(res, 404, 'not-found', 'Not Found', `no workflow \`${name}\``);
    if (m === 'GET' && !match[2]) {
      const status = url.searchParams.get('status') ?? '';
      const all = [...instances.values()].filter((i) =>
        status === '' ? true : status === 'paused' ? i.paused && i.status === 'running' : i.status === status,
      );
      const { items, next } = page(all, url, 50);
      return send(res, 200, { instances: items, next_cursor: next ?? '' });
    }
    const inst = match[2] ? instances.get(decodeURIComponent(match[2])) : undefined;
    if (!inst) return problem(res, 404, 'not-found', 'Not Found', `no instance \`${match[2]}\` of ${name}`);
    if (m === 'GET' && !match[3]) return send(res, 200, inst);
    if (m === 'POST' && match[3]) {
      const verb = match[3];
      const body = await readBody(req).catch(() => undefined);
      if (body === undefined) return problem(res, 400, 'bad-request', 'Bad Request', 'body is not {"reason": …}');
      if (inst.status !== 'running') return problem(res, 422, 'unprocessable', 'Unprocessable Content', `instance ${inst.instance} has ${inst.status}`);
      if (verb === 'pause') inst.paused = true;
      else if (verb === 'resume') inst.paused = false;
      else if (verb === 'cancel') inst.cancel_requested = true;
      else if (verb === 'retry-now') inst.pending = inst.pending.map((c) => ({ ...c, attempts: c.attempts + 1 }));
      else return problem(res, 400, 'bad-request', 'Bad Request', `\`${verb}\` is not a verb: use pause, resume, cancel or retry-now`);
      inst.updated_at_ms = Date.now();
      record(`workflow.${verb.replace('-', '_')}`, `${name}/${inst.instance}`, 'ok', body?.reason || null);
      return send(res, 200, inst);
    }
  }
  return problem(res, 404, 'not-found', 'Not Found', `no route ${m} ${p}`);
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', `http://${req.headers.host ?? 'localhost'}`);
  if (!QUIET) res.on('finish', () => console.log(`${req.method} ${url.pathname}${url.search} ${res.statusCode}`));
  if (url.pathname === '/' ) {
    res.writeHead(302, { location: '/ui/' });
    res.end();
    return;
  }
  if (url.pathname === '/ui' || url.pathname.startsWith('/ui/')) return serveStatic(req, res, url);
  api(req, res, url).catch((err) => {
    console.error(err);
    if (!res.headersSent) problem(res, 500, 'internal', 'Internal Server Error', String(err));
  });
});

server.listen(PORT, HOST, () => {
  console.log(`fake gateway (development aid) on http://${HOST}:${PORT}/ui/ — token ${TOKEN || '(any but "bad")'}`);
});
