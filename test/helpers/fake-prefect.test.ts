/**
 * The fake Prefect server with a plain `ws` client and fetch: the handshake and its failures, the
 * filter's `until`/`since` defaults and clamp, backfill then live, the bounded queue, misbehaviour
 * switches, and the REST endpoints with auth. The clock is injected; no test sleeps past 100 ms.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { startFakePrefect, type ConnectionRecord, type FakePrefect, type FakePrefectOptions, type WireEvent } from './fake-prefect.js';
import { customEvent, flowRunStateEvent } from './prefect-events.js';

const T = Date.UTC(2026, 10, 25, 12, 0, 0);
const MIN = 60_000;
const DAY = 24 * 60 * MIN;
const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const iso = (ms: number) => new Date(ms).toISOString();

let n = 0;
/** A flow-run Running event at `ms`, with a predictable id. */
function ev(ms: number): WireEvent {
  n += 1;
  const id = `0198c7d2-0000-7000-8000-${String(n).padStart(12, '0')}`;
  return flowRunStateEvent({ flowRunId: `0198c7d2-5b1e-7a3c-9f10-${String(n).padStart(12, '0')}`, flowRunName: `run-${n}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: ms, id, received: ms + 15 });
}

const servers: FakePrefect[] = [];
async function fake(opts: FakePrefectOptions = {}): Promise<FakePrefect> {
  const f = await startFakePrefect({ now: () => T, ...opts });
  servers.push(f);
  return f;
}
after(() => Promise.all(servers.map((s) => s.close())));

interface Client {
  ws: WebSocket;
  frames: unknown[];
  closed: Promise<{ code: number; reason: string }>;
  waitFrames(count: number): Promise<unknown[]>;
}

/** A `ws` client; resolves once open (or rejects with the HTTP status of a refused upgrade). */
function connect(f: FakePrefect, protocols: string[] = ['prefect'], path = '/events/out'): Promise<Client> {
  const ws = new WebSocket(`${f.url.replace(/^http/, 'ws')}${path}`, protocols);
  const frames: unknown[] = [];
  ws.on('message', (data: Buffer, binary: boolean) => frames.push(binary ? { binary: data.toString('hex') } : tryJson(data.toString('utf8'))));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  const waitFrames = async (count: number) => {
    const deadline = Date.now() + 2_000;
    while (frames.length < count) {
      if (Date.now() > deadline) throw new Error(`expected ${count} frames, got ${JSON.stringify(frames)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return frames;
  };
  return new Promise((resolve, reject) => {
    ws.on('open', () => resolve({ ws, frames, closed, waitFrames }));
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      reject(new Error(`HTTP ${res.statusCode}`));
    });
    ws.on('error', reject);
  });
}
const tryJson = (s: string): unknown => {
  try {
    return JSON.parse(s);
  } catch {
    return { text: s };
  }
};

/** Handshake and filter; resolves when the server has accepted the filter. */
async function subscribe(f: FakePrefect, filter: unknown, opts: { token?: string | null; backfill?: boolean } = {}): Promise<Client> {
  const c = await connect(f);
  const rec = f.connections.at(-1)!; // the server records a connection before the client sees it open
  c.ws.send(JSON.stringify({ type: 'auth', token: opts.token ?? null }));
  await c.waitFrames(1);
  c.frames.shift(); // auth_success
  c.ws.send(JSON.stringify({ type: 'filter', filter, ...(opts.backfill === undefined ? {} : { backfill: opts.backfill }) }));
  const deadline = Date.now() + 1_000;
  while (!rec.live) {
    if (Date.now() > deadline) throw new Error(`subscription refused: ${rec.closeCode} ${rec.closeReason}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return c;
}

const withoutHeaders = ({ headers: _h, ...rec }: ConnectionRecord) => rec;
const events = (frames: unknown[]) => frames.map((m) => (m as { event: WireEvent }).event.id);
const FUTURE = { occurred: { since: iso(T - 5 * MIN), until: iso(T + 365 * DAY) } };

describe('fake Prefect: handshake', () => {
  it('sub-protocol prefect, auth message with the raw auth string, auth_success, then the filter', async () => {
    const f = await fake({ authString: 'admin:pass' });
    const c = await connect(f);
    c.ws.send(JSON.stringify({ type: 'auth', token: 'admin:pass' }));
    assert.deepEqual(await c.waitFrames(1), [{ type: 'auth_success' }]);
    const filter = { type: 'filter', filter: FUTURE, backfill: false };
    c.ws.send(JSON.stringify(filter));
    await f.waitForConnections(1, 1_000);
    c.ws.close(1000);
    await c.closed;
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(f.connections.map(withoutHeaders), [
      { path: '/api/events/out', protocol: 'prefect', authToken: 'admin:pass', filters: [filter], live: false, dropped: 0, queued: 0, closeCode: 1000, closeReason: '' },
    ]);
    assert.equal(f.connections[0]!.headers['sec-websocket-protocol'], 'prefect');
  });

  it('auth failures close with 1008 and the server reason', async () => {
    const f = await fake({ apiKey: 'pnu_key' });
    const attempt = async (msg: unknown) => {
      const c = await connect(f);
      c.ws.send(JSON.stringify(msg));
      return c.closed;
    };
    assert.deepEqual(
      [await attempt({ type: 'auth', token: 'pnu_wrong' }), await attempt({ type: 'auth', token: null }), await attempt({ type: 'auth' }), await attempt({ type: 'filter', filter: {} })],
      [
        { code: 1008, reason: 'Invalid token' },
        { code: 1008, reason: 'Auth required but no token provided' },
        { code: 1008, reason: 'Auth required but no token provided' },
        { code: 1008, reason: "Expected 'auth' message" },
      ],
    );
    assert.deepEqual(f.connections.map((c) => c.authToken), ['pnu_wrong', null, undefined, undefined]);
  });

  it('without the sub-protocol: HTTP 403 when auth is configured, legacy mode (filter first) when not', async () => {
    const secured = await fake({ authString: 'admin:pass' });
    await assert.rejects(connect(secured, []), { message: 'HTTP 403' });
    const open = await fake();
    const c = await connect(open, []);
    open.store(ev(T - MIN));
    c.ws.send(JSON.stringify({ type: 'filter', filter: FUTURE }));
    await c.waitFrames(1);
    assert.deepEqual({ protocol: open.connections[0]!.protocol, token: open.connections[0]!.authToken, frames: c.frames.length }, { protocol: '', token: undefined, frames: 1 });
    const refused = await fake({ rejectUpgrade: 401 });
    await assert.rejects(connect(refused), { message: 'HTTP 401' });
    assert.equal(refused.upgrades.length, 1);
  });

  it('the sub-protocol offered among others, separated by ", " or in headers of their own, as Python\'s websockets client and browsers write them: accepted as prefect, as Prefect trims each', async () => {
    const f = await fake({ authString: 'admin:pass' });
    const { request } = await import('node:http');
    const upgrade = (headers: [string, string][]) => new Promise<{ status: number; protocol: unknown }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: f.port, path: '/api/events/out', headers: [
        ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ...headers,
      ].flat() });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        resolve({ status: res.statusCode ?? 0, protocol: res.headers['sec-websocket-protocol'] });
      });
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, protocol: res.headers['sec-websocket-protocol'] });
      });
      req.on('error', reject);
      req.end();
    });
    assert.deepEqual([
      await upgrade([['Sec-WebSocket-Protocol', 'chat, prefect']]),
      await upgrade([['Sec-WebSocket-Protocol', 'chat'], ['Sec-WebSocket-Protocol', 'prefect']]),
      await upgrade([['Sec-WebSocket-Protocol', 'chat, prefectx']]),
    ], [{ status: 101, protocol: 'prefect' }, { status: 101, protocol: 'prefect' }, { status: 403, protocol: undefined }]);
  });

  it('switches: the sub-protocol header dropped from the next n upgrade answers (as by a proxy); raw replies to the auth message in place of auth_success, one per connection', async () => {
    const f = await fake({ authString: 'admin:pass' });
    f.switches.stripSubprotocol = 1;
    await assert.rejects(connect(f), { message: 'Server sent no subprotocol' });
    f.switches.authReplies = ['<html>502</html>'];
    const replies: unknown[] = [];
    for (let i = 0; i < 2; i++) {
      const c = await connect(f);
      c.ws.send(JSON.stringify({ type: 'auth', token: 'admin:pass' }));
      replies.push(...(await c.waitFrames(1)));
      c.ws.close(1000);
      await c.closed;
    }
    assert.deepEqual(
      { replies, protocols: f.connections.map((c) => c.protocol), stripSubprotocol: f.switches.stripSubprotocol, authReplies: f.switches.authReplies },
      { replies: [{ text: '<html>502</html>' }, { type: 'auth_success' }], protocols: ['prefect', 'prefect', 'prefect'], stripSubprotocol: 0, authReplies: [] },
    );
  });

  it('filter errors close with 1002: wrong type, unknown keys at any level, bad values', async () => {
    const f = await fake();
    const attempt = async (msg: unknown) => {
      const c = await connect(f);
      c.ws.send(JSON.stringify({ type: 'auth', token: null }));
      c.ws.send(JSON.stringify(msg));
      return c.closed;
    };
    const invalid = (loc: string, msg: string, type: string) => `Invalid filter: 1 validation error for EventFilter\n${loc}\n  ${msg} [type=${type}]`.slice(0, 123);
    assert.deepEqual(
      [
        await attempt({ type: 'subscribe', filter: {} }),
        await attempt({ type: 'filter', filter: { occurred: {}, events: { prefix: ['prefect.'] } } }),
        await attempt({ type: 'filter', filter: { event: { prefixes: ['prefect.'] } } }),
        await attempt({ type: 'filter', filter: { occurred: { since: 'yesterday' } } }),
        await attempt({ type: 'filter' }),
      ],
      [
        { code: 1002, reason: "Expected 'filter' message" },
        { code: 1002, reason: invalid('events', 'Extra inputs are not permitted', 'extra_forbidden') },
        { code: 1002, reason: invalid('event.prefixes', 'Extra inputs are not permitted', 'extra_forbidden') },
        { code: 1002, reason: invalid('occurred.since', 'Input should be a valid datetime', 'datetime_parsing') },
        { code: 1002, reason: "Invalid filter: 'filter'" },
      ],
    );
    assert.equal(f.stats.sent, 0);
  });
});

describe('fake Prefect: backfill and live', () => {
  it('a filter without `until` gets the backfill but no later live events (until = now at parse time)', async () => {
    let now = T;
    const f = await fake({ now: () => now });
    const old = ev(T - MIN);
    f.store(old);
    const c = await subscribe(f, { occurred: { since: iso(T - 5 * MIN) } });
    now = T + 1_000;
    const later = ev(T + 1_000);
    const late = ev(T - 2_000); // flushed late by an offline client: still inside [since, until]
    f.publish([later, late]);
    await c.waitFrames(2);
    assert.deepEqual(c.frames, [{ type: 'event', event: old }, { type: 'event', event: late }]);
    assert.deepEqual(f.stats, { droppedForBacklog: 0, sent: 2 });
  });

  it('a filter with a future `until` gets the backfill (ascending) then live events, each once', async () => {
    const f = await fake();
    const stored = [ev(T - 2 * MIN), ev(T - 3 * MIN), ev(T - MIN)];
    f.store(stored);
    const c = await subscribe(f, { ...FUTURE, event: { prefix: ['prefect.flow-run.'] } });
    const live = [ev(T + 1), customEvent({ event: 'acme.other', resourceId: 'acme.x', related: [], occurred: T + 2 }), ev(T + 3)];
    f.publish(live);
    f.publish(stored[2]!); // a live copy of a backfilled event is skipped once
    await c.waitFrames(5);
    assert.deepEqual(c.frames, [stored[1], stored[0], stored[2], live[0], live[2]].map((event) => ({ type: 'event', event })));
    const none = await subscribe(f, FUTURE, { backfill: false });
    const only = ev(T + 4);
    f.publish(only);
    await none.waitFrames(1);
    assert.deepEqual(events(none.frames), [only.id]);
  });

  it('`since` is clamped to the backfill window: events 20 min old are not backfilled (REST /events/filter still has them)', async () => {
    const f = await fake();
    const tooOld = ev(T - 20 * MIN);
    const inWindow = ev(T - 10 * MIN);
    f.store([tooOld, inWindow]);
    const c = await subscribe(f, { occurred: { since: iso(T - 30 * MIN), until: iso(T + DAY) } });
    const stale = ev(T - 16 * MIN);
    f.publish(stale); // live, but older than the clamped since: never delivered
    const marker = ev(T);
    f.publish(marker);
    await c.waitFrames(2);
    assert.deepEqual(events(c.frames), [inWindow.id, marker.id]);
    const page = (await (await fetch(`${f.url}/events/filter`, { method: 'POST', body: JSON.stringify({ filter: { occurred: { since: iso(T - 30 * MIN) }, order: 'ASC' } }) })).json()) as { events: WireEvent[] };
    assert.deepEqual(page.events.map((e) => e.id), [tooOld.id, stale.id, inWindow.id, marker.id]);
  });

  it('related filters are ignored live and applied to the backfill', async () => {
    const f = await fake();
    const mine = customEvent({ event: 'acme.a', resourceId: 'acme.1', related: [{ id: 'prefect.flow-run.x', role: 'flow-run' }], occurred: T - MIN });
    const other = customEvent({ event: 'acme.b', resourceId: 'acme.2', related: [], occurred: T - MIN });
    f.store([mine, other]);
    const c = await subscribe(f, { ...FUTURE, related: { id: ['prefect.flow-run.x'] }, any_resource: [{ id_prefix: ['acme.'] }] });
    const liveOther = customEvent({ event: 'acme.c', resourceId: 'acme.3', related: [], occurred: T });
    f.publish([liveOther, customEvent({ event: 'x.d', resourceId: 'x.4', related: [], occurred: T })]);
    await c.waitFrames(2);
    assert.deepEqual(events(c.frames), [mine.id, liveOther.id]);
  });

  it('a stalled stream queues up to the backlog and drops the rest silently; sending resumes', async () => {
    const f = await fake({ backlog: 4 });
    const c = await subscribe(f, FUTURE);
    f.switches.stall = true;
    const live = Array.from({ length: 10 }, (_, i) => ev(T + i));
    f.publish(live);
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual({ frames: c.frames.length, stats: f.stats }, { frames: 0, stats: { droppedForBacklog: 6, sent: 0 } });
    assert.deepEqual({ dropped: f.connections[0]!.dropped, queued: f.connections[0]!.queued }, { dropped: 6, queued: 4 }, 'counted for the subscriber too');
    f.switches.stall = false;
    await c.waitFrames(4);
    assert.equal(f.connections[0]!.queued, 0);
    assert.deepEqual({ ids: events(c.frames), stats: f.stats }, { ids: live.slice(0, 4).map((e) => e.id), stats: { droppedForBacklog: 6, sent: 4 } });
  });

  it('backfill pages slow to query: live events published meanwhile wait behind the backfill, up to the backlog; the rest are dropped silently', async () => {
    const f = await fake({ backlog: 4, pageSize: 2, backfillPageDelayMs: 40 });
    const stored = [ev(T - 6), ev(T - 5), ev(T - 4), ev(T - 3), ev(T - 2), ev(T - 1)];
    f.store(stored);
    const c = await subscribe(f, FUTURE);
    const live = Array.from({ length: 10 }, (_, i) => ev(T + i));
    f.publish(live);
    await c.waitFrames(10);
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(events(c.frames), [...stored, ...live.slice(0, 4)].map((e) => e.id));
    assert.deepEqual({ dropped: f.connections[0]!.dropped, queued: f.connections[0]!.queued, stats: f.stats }, { dropped: 6, queued: 0, stats: { droppedForBacklog: 6, sent: 10 } });
  });

  it('switches: duplicates, swapped pairs, malformed frames, close after N events', async () => {
    const f = await fake();
    const c = await subscribe(f, FUTURE);
    f.switches.reorder = true;
    const [a, b, d] = [ev(T + 1), ev(T + 2), ev(T + 3)];
    f.publish([a, b, d]);
    await c.waitFrames(3); // the odd one follows after ~50 ms
    assert.deepEqual(events(c.frames), [b.id, a.id, d.id]);
    f.switches.reorder = false;
    f.switches.duplicate = true;
    f.switches.badFrames = 5;
    const twice = ev(T + 4);
    f.publish(twice);
    await c.waitFrames(10);
    assert.deepEqual(c.frames.slice(3), [
      { text: 'this is not JSON {' }, [1, 2, 3], { type: 'event' }, { type: 'event', event: { id: 1 } }, { binary: 'deadbeef' },
      { type: 'event', event: twice }, { type: 'event', event: twice },
    ]);
    f.switches.duplicate = false;
    f.switches.badFrames = 0;
    const d2 = await subscribe(f, FUTURE, { backfill: false });
    f.switches.closeAfter = 2; // counts every event frame sent on a connection, backfill included
    f.publish([ev(T + 5), ev(T + 6), ev(T + 7)]);
    assert.deepEqual(await d2.closed, { code: 1006, reason: '' });
    assert.equal(d2.frames.length, 2);
  });

  it('/events/in: each frame is an event, published with received = now; invalid JSON kills the socket', async () => {
    const f = await fake({ authString: 'admin:pass' });
    const out = await subscribe(f, FUTURE, { token: 'admin:pass' });
    const inbound = await connect(f, ['prefect'], '/events/in');
    inbound.ws.send(JSON.stringify({ type: 'auth', token: 'admin:pass' }));
    const e = customEvent({ event: 'acme.pushed', resourceId: 'acme.1', related: [], occurred: iso(T - 1_000).replace('Z', '+00:00'), id: '0198C7D2-0000-7000-8000-0000000000AA' });
    inbound.ws.send(JSON.stringify(e));
    await out.waitFrames(1);
    // As the server re-serialises it: canonical id, `Z` times (no fraction when it is zero).
    assert.deepEqual(out.frames, [{ type: 'event', event: { occurred: '2026-11-25T11:59:59Z', event: 'acme.pushed', resource: e.resource, related: [], payload: {}, id: '0198c7d2-0000-7000-8000-0000000000aa', follows: null, received: '2026-11-25T12:00:00Z' } }]);
    inbound.ws.send('{not json');
    assert.deepEqual(await inbound.closed, { code: 1011, reason: '' });
  });
});

describe('fake Prefect: REST', () => {
  it('auth: Basic for the auth string, Bearer for an API key under a Cloud base path; 401 otherwise', async () => {
    const self = await fake({ authString: 'admin:pass' });
    const basic = `Basic ${Buffer.from('admin:pass').toString('base64')}`;
    self.addTaskRun({ id: '0198c7d2-7000-7000-8000-0000000000d1', flow_run_id: '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', name: 'child-0' });
    const get = async (f: FakePrefect, path: string, auth?: string) => {
      const r = await fetch(`${f.url}${path}`, { headers: auth === undefined ? {} : { authorization: auth } });
      return [r.status, await r.json()];
    };
    assert.deepEqual(
      [await get(self, '/task_runs/0198c7d2-7000-7000-8000-0000000000d1'), await get(self, '/task_runs/0198c7d2-7000-7000-8000-0000000000d1', basic), await get(self, '/task_runs/0198c7d2-7000-7000-8000-0000000000d2', basic), await get(self, '/flow_runs/0198c7d2-7000-7000-8000-0000000000d2', basic)],
      [
        [401, { exception_message: 'Unauthorized' }],
        [200, { id: '0198c7d2-7000-7000-8000-0000000000d1', flow_run_id: '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', name: 'child-0' }],
        [404, { detail: 'Task not found' }],
        [404, { detail: 'Flow run not found' }],
      ],
    );
    const base = '/api/accounts/11111111-1111-4111-8111-111111111111/workspaces/22222222-2222-4222-8222-222222222222';
    const cloud = await fake({ apiKey: 'pnu_key', basePath: base });
    cloud.addFlowRun({ id: '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', name: 'crimson-fox', parent_task_run_id: null });
    assert.equal(cloud.url, `http://127.0.0.1:${cloud.port}${base}`);
    const [status, run] = (await get(cloud, '/flow_runs/0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', 'Bearer pnu_key')) as [number, Record<string, unknown>];
    assert.deepEqual(
      [status, run.id, run.name, run.parent_task_run_id, run.labels, await get(cloud, '/flow_runs/0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', basic)],
      [200, '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', 'crimson-fox', null, { 'prefect.flow.id': '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d' }, [401, { exception_message: 'Unauthorized' }]],
    );
    cloud.switches.restStatus = 500;
    assert.deepEqual(await get(cloud, '/flow_runs/0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', 'Bearer pnu_key'), [500, { detail: 'Internal Server Error' }]);
  });

  it('maintenance: the restStatus answers carry Prefect-Maintenance: true and its Retry-After, and every websocket upgrade is answered 503 with them; off again, both are served', async () => {
    const f = await fake();
    f.switches.maintenance = true;
    f.switches.restStatus = 503;
    f.switches.restRetryAfter = '30';
    const rest = await fetch(`${f.url}/flow_runs/0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70`);
    const upgrade = await new Promise<Record<string, unknown>>((resolve) => {
      const ws = new WebSocket(`${f.url.replace('http', 'ws')}/events/out`, ['prefect']);
      ws.on('unexpected-response', (_req, res) => {
        resolve({ status: res.statusCode, maintenance: res.headers['prefect-maintenance'], retryAfter: res.headers['retry-after'] });
        res.resume();
        ws.terminate();
      });
      ws.on('error', () => undefined);
    });
    f.switches.maintenance = false;
    f.switches.restStatus = 0;
    const opened = await new Promise<boolean>((resolve) => {
      const ws = new WebSocket(`${f.url.replace('http', 'ws')}/events/out`, ['prefect']);
      ws.on('open', () => {
        ws.terminate();
        resolve(true);
      });
      ws.on('error', () => resolve(false));
    });
    assert.deepEqual(
      { rest: { status: rest.status, maintenance: rest.headers.get('prefect-maintenance'), retryAfter: rest.headers.get('retry-after') }, upgrade, opened },
      { rest: { status: 503, maintenance: 'true', retryAfter: '30' }, upgrade: { status: 503, maintenance: 'true', retryAfter: '30' }, opened: true },
    );
  });

  it('flow runs: the whole FlowRunResponse with the server default labels; PATCH …/labels merges as the flow engine sends its traceparent', async () => {
    const f = await fake();
    const FR_ID = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
    f.addFlowRun({ id: FR_ID, name: 'crimson-fox', flow_id: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', deployment_id: '7b2e1d8f-2222-4b3c-8d4e-1f2a3b4c5d6e', labels: { team: 'data' } });
    const read = async () => (await (await fetch(`${f.url}/flow_runs/${FR_ID}`)).json()) as Record<string, unknown>;
    const before = await read();
    // The fields of FlowRunResponse (reference §5), nothing else.
    assert.deepEqual(Object.keys(before).sort(), [
      'auto_scheduled', 'context', 'created', 'created_by', 'deployment_id', 'deployment_version', 'empirical_policy', 'end_time', 'estimated_run_time',
      'estimated_start_time_delta', 'expected_start_time', 'flow_id', 'flow_version', 'id', 'idempotency_key', 'infrastructure_document_id', 'infrastructure_pid',
      'job_variables', 'labels', 'name', 'next_scheduled_start_time', 'parameters', 'parent_task_run_id', 'run_count', 'start_time', 'state', 'state_id',
      'state_name', 'state_type', 'tags', 'total_run_time', 'updated', 'work_pool_id', 'work_pool_name', 'work_queue_id', 'work_queue_name',
    ]);
    assert.deepEqual(before.labels, { 'prefect.flow.id': '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', 'prefect.deployment.id': '7b2e1d8f-2222-4b3c-8d4e-1f2a3b4c5d6e', team: 'data' });
    const patch = (id: string, body: unknown) => fetch(`${f.url}/flow_runs/${id}/labels`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    assert.deepEqual(
      [(await patch(FR_ID, { __OTEL_TRACEPARENT: tp })).status, (await patch('0198c7d2-0000-7000-8000-000000000000', { a: 'b' })).status, (await patch(FR_ID, ['x'])).status],
      [204, 404, 422],
    );
    assert.deepEqual((await read()).labels, { ...(before.labels as object), __OTEL_TRACEPARENT: tp });

    f.switches.holdRest = true;
    let answered = false;
    const slow = read().then((r) => ((answered = true), r));
    while (f.restRequests.length < 6) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(answered, false, 'held while holdRest is set');
    f.switches.holdRest = false;
    assert.equal((await slow).id, FR_ID);
  });

  it('POST /flow_runs/filter: by id (any_, not_any_) and parent task run, newest id first, offset and limit up to PREFECT_API_DEFAULT_LIMIT', async () => {
    const f = await fake({ defaultLimit: 3 });
    const id = (i: number): string => `0198c7d2-5b1e-7a3c-9f10-00000000000${i}`;
    const parent = '0198c7d2-7000-7000-8000-0000000000d1';
    for (let i = 1; i <= 4; i++) f.addFlowRun({ id: id(i), name: `run-${i}`, parent_task_run_id: i === 2 ? parent : null });
    const filter = async (body: unknown): Promise<[number, unknown]> => {
      const r = await fetch(`${f.url}/flow_runs/filter`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const json: unknown = await r.json();
      return [r.status, Array.isArray(json) ? json.map((x: { name: string }) => x.name) : json];
    };
    assert.deepEqual(
      [
        await filter({ flow_runs: { id: { any_: [id(1), id(3).toUpperCase(), '0198c7d2-0000-7000-8000-000000000000'] } }, limit: 2 }),
        await filter({ flow_runs: { id: { not_any_: [id(4)] } } }),
        await filter({ flow_runs: { id: { not_any_: [id(4)] } }, offset: 1 }),
        await filter({ flow_runs: { parent_task_run_id: { any_: [parent] } } }),
        await filter({}),
        await filter({ flow_runs: { id: { any_: [id(1)] } }, limit: 4 }),
        (await filter({ flow_runs: { id: { any_: ['not-a-uuid'] } } }))[0],
      ],
      [
        [200, ['run-3', 'run-1']],
        [200, ['run-3', 'run-2', 'run-1']],
        [200, ['run-2', 'run-1']],
        [200, ['run-2']],
        [200, ['run-4', 'run-3', 'run-2']],
        [422, { detail: 'Invalid limit: must be less than or equal to 3.' }],
        422,
      ],
    );
    // Task runs the same way, linked to their flow run.
    for (let i = 1; i <= 3; i++) f.addTaskRun({ id: `0198c7d2-7000-7000-8000-00000000000${i}`, flow_run_id: i === 3 ? null : id(i), name: `task-${i}` });
    const tasks = async (body: unknown): Promise<unknown> => {
      const r = await fetch(`${f.url}/task_runs/filter`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return [r.status, ((await r.json()) as { name: string }[]).map((x) => x.name)];
    };
    assert.deepEqual(
      [await tasks({ task_runs: { id: { any_: ['0198c7d2-7000-7000-8000-000000000001', '0198c7d2-7000-7000-8000-000000000003'] } } }), await tasks({ task_runs: { flow_run_id: { any_: [id(2)] } } })],
      [[200, ['task-3', 'task-1']], [200, ['task-2']]],
    );
  });

  it('/events/filter pages (DESC by default) with an absolute next_page; a bad token is 403; limit > 50 is 422', async () => {
    const f = await fake();
    const stored = Array.from({ length: 5 }, (_, i) => ev(T - (5 - i) * MIN));
    f.store(stored);
    const post = async (body: unknown) => {
      const r = await fetch(`${f.url}/events/filter`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, body: (await r.json()) as { events: WireEvent[]; total: number; next_page: string | null } };
    };
    const first = await post({ filter: { occurred: { since: iso(T - DAY) } }, limit: 2 });
    const next = `${f.url}/events/filter/next?page-token=${encodeURIComponent('tok+/1==')}`;
    assert.deepEqual(first, { status: 200, body: { events: [stored[4], stored[3]], total: 5, next_page: next } });
    const second: unknown = await (await fetch(next)).json();
    assert.deepEqual(second, { events: [stored[2], stored[1]], total: 5, next_page: `${f.url}/events/filter/next?page-token=${encodeURIComponent('tok+/2==')}` });
    const third: unknown = await (await fetch(`${f.url}/events/filter/next?page-token=${encodeURIComponent('tok+/2==')}`)).json();
    assert.deepEqual(third, { events: [stored[0]], total: 5, next_page: null });
    assert.equal((await fetch(`${f.url}/events/filter/next?page-token=tok+/2==`)).status, 403); // '+' unencoded reads as a space
    assert.deepEqual((await post({ limit: 51 })).status, 422);
    assert.deepEqual((await post({ filter: { occurred: {}, nope: 1 } })).status, 422);
    assert.deepEqual((await post({ filter: { order: 'ASC' } })).body, { events: stored, total: 5, next_page: null });
    assert.deepEqual(f.restRequests.map((r) => [r.method, r.path]).slice(0, 3), [['POST', '/api/events/filter'], ['GET', `/api/events/filter/next?page-token=${encodeURIComponent('tok+/1==')}`], ['GET', `/api/events/filter/next?page-token=${encodeURIComponent('tok+/2==')}`]]);
  });

  it("CSRF protection as Prefect's middleware: a POST needs a token from GET /csrf-token and its client id (403 with the server's detail otherwise); off, GET /csrf-token is 422", async () => {
    const off = await fake();
    const offToken = await fetch(`${off.url}/csrf-token?client=c1`);
    assert.deepEqual([offToken.status, await offToken.json()], [422, { detail: 'CSRF protection is disabled.' }]);

    const f = await fake({ csrfProtection: true });
    const post = async (headers: Record<string, string>) => {
      const r = await fetch(`${f.url}/events/filter`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ limit: 1 }) });
      return [r.status, ((await r.json()) as { detail?: string }).detail ?? 'page'];
    };
    const issued = (await (await fetch(`${f.url}/csrf-token?client=c1`)).json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(issued).sort(), ['client', 'created', 'expiration', 'id', 'token', 'updated']);
    assert.deepEqual([issued.client, issued.expiration], ['c1', '2026-11-25T13:00:00Z']);
    const token = String(issued.token);
    assert.deepEqual(
      [
        await post({}),
        await post({ 'prefect-csrf-token': token }),
        await post({ 'prefect-csrf-token': token, 'prefect-csrf-client': 'c2' }),
        await post({ 'prefect-csrf-token': token, 'prefect-csrf-client': 'c1' }),
      ],
      [[403, 'Missing CSRF token.'], [403, 'Missing client identifier.'], [403, 'Invalid CSRF token or client identifier.'], [200, 'page']],
    );
    assert.equal((await fetch(`${f.url}/events/filter/next?page-token=x`)).status, 403); // a GET passes the middleware: the bad page token answers
    f.expireCsrfTokens();
    assert.deepEqual(await post({ 'prefect-csrf-token': token, 'prefect-csrf-client': 'c1' }), [403, 'Invalid CSRF token or client identifier.']);
  });

  it('POST /events validates like the server (422) and otherwise stores and publishes with received = now', async () => {
    const f = await fake();
    const c = await subscribe(f, FUTURE);
    const post = (body: unknown) => fetch(`${f.url}/events`, { method: 'POST', body: JSON.stringify(body) });
    const good = customEvent({ event: 'acme.ok', resourceId: 'acme.1', related: [{ id: 'prefect.flow-run.x', role: 'flow-run' }], occurred: T, id: '0198c7d2-0000-7000-8000-0000000000bb' });
    const bad = await post([{ ...good, id: undefined }, { ...good, related: [{ 'prefect.resource.id': 'x' }] }, { ...good, resource: { 'prefect.resource.id': 'a', n: 1 } }]);
    assert.deepEqual([bad.status, ((await bad.json()) as { exception_detail: { loc: unknown[]; type: string }[] }).exception_detail.map((d) => [d.loc.join('.'), d.type])], [
      422,
      [['body.0.id', 'missing'], ['body.1.related.0', 'value_error'], ['body.2.resource.n', 'string_type']],
    ]);
    assert.equal((await post([{ ...good, received: iso(T - DAY) }])).status, 204);
    await c.waitFrames(1);
    assert.deepEqual(c.frames, [{ type: 'event', event: { ...good, received: '2026-11-25T12:00:00Z' } }]);
  });
});
