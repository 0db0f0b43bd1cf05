/**
 * The REST client over loopback against a small HTTP server that answers like Prefect's API.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { AuthError, ProtocolError } from '../../src/errors.js';
import { createPrefectRestClient, pageToken, RestRequestError, retryAfterMs } from '../../src/source/rest.js';
import { VERSION } from '../../src/version.js';
import { startConnectProxy, startSilentProxy } from '../helpers/connect-proxy.js';
import { startFakePrefect, type WireEvent } from '../helpers/fake-prefect.js';
import { flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';

const AUTH_STRING = 'admin:s3cret-pass';
const API_KEY = 'pnu_0123456789abcdefSECRET';
const TASK_RUN = '0198c7d2-6000-7abc-8def-0123456789ab';
const FLOW_RUN = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TRACKING_TASK = '0198c7d1-ffff-7e00-8a00-aaaaaaaaaaaa';

interface Seen {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body?: unknown;
}

type Handler = (req: Seen) => { status: number; body?: unknown; headers?: Record<string, string> } | 'hang';

let server: ReturnType<typeof createServer>;
let port: number;
let handler: Handler;
const seen: Seen[] = [];
const hanging: ServerResponse[] = [];

before(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const s: Seen = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, ...(text ? { body: JSON.parse(text) as unknown } : {}) };
      seen.push(s);
      const r = handler(s);
      if (r === 'hang') {
        hanging.push(res);
        return;
      }
      res.writeHead(r.status, { 'content-type': 'application/json', ...r.headers });
      res.end(r.body === undefined ? '' : typeof r.body === 'string' ? r.body : JSON.stringify(r.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function reset(h: Handler): void {
  seen.length = 0;
  handler = h;
}

const basic = `Basic ${Buffer.from(AUTH_STRING).toString('base64')}`;

describe('rest client: runs', () => {
  it('getTaskRun sends Basic auth and the user agent, and maps the fields', async () => {
    reset(() => ({ status: 200, body: { id: TASK_RUN, flow_run_id: FLOW_RUN, name: 'extract-3f2', task_key: 'extract-9a8b7c6d', tags: [] } }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api/`, authString: AUTH_STRING });
    assert.deepEqual(await rest.getTaskRun(TASK_RUN), {
      ok: true,
      value: { id: TASK_RUN, flowRunId: FLOW_RUN, name: 'extract-3f2', taskKey: 'extract-9a8b7c6d' },
    });
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.headers.authorization, s.headers['user-agent']]),
      [['GET', `/api/task_runs/${TASK_RUN}`, basic, `prefect-otel/${VERSION}`]],
    );
  });

  it('getTaskRun: a task run outside any flow has flowRunId null', async () => {
    reset(() => ({ status: 200, body: { id: TASK_RUN, flow_run_id: null } }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api` });
    assert.deepEqual(await rest.getTaskRun(TASK_RUN), { ok: true, value: { id: TASK_RUN, flowRunId: null } });
    assert.equal(seen[0]!.headers.authorization, undefined);
  });

  it('getFlowRun sends Bearer auth for a key and maps parent_task_run_id and the labels', async () => {
    const labels = { 'prefect.flow.id': '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', __OTEL_TRACEPARENT: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', retries: 3, pinned: true };
    reset(() => ({ status: 200, body: { id: FLOW_RUN, name: 'crimson-fox', parent_task_run_id: TRACKING_TASK, labels: { ...labels, nested: { no: 1 }, none: null } } }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, apiKey: API_KEY });
    assert.deepEqual(await rest.getFlowRun(FLOW_RUN), { ok: true, value: { id: FLOW_RUN, name: 'crimson-fox', parentTaskRunId: TRACKING_TASK, labels } });
    assert.deepEqual(seen.map((s) => [s.path, s.headers.authorization]), [[`/api/flow_runs/${FLOW_RUN}`, `Bearer ${API_KEY}`]]);
    reset(() => ({ status: 200, body: { id: FLOW_RUN, parent_task_run_id: null } }));
    assert.deepEqual(await rest.getFlowRun(FLOW_RUN), { ok: true, value: { id: FLOW_RUN, parentTaskRunId: null, labels: {} } });
  });

  it('getRunStates asks GET /flow_run_states/?flow_run_id=… and GET /task_run_states/?task_run_id=… (the fake Prefect server answers from the state events), in the server\'s order by timestamp', async () => {
    const prefect = await startFakePrefect({ authString: AUTH_STRING });
    try {
      const t0 = Date.UTC(2026, 10, 21, 6, 0, 0);
      const ids = ['0198c7d2-f000-7000-8000-000000000001', '0198c7d2-f000-7000-8000-000000000002', '0198c7d2-f000-7000-8000-000000000003'];
      const flow = { flowRunId: FLOW_RUN, flowRunName: 'crimson-fox', flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
      // Stored out of order, and one twice: the server keeps one row per state, ordered by timestamp.
      const failed = flowRunStateEvent({ ...flow, state: { type: 'FAILED', name: 'Failed', message: 'boom' }, from: 'RUNNING', runCount: 1, occurred: t0 + 2_000, id: ids[1]! });
      prefect.store([
        failed,
        flowRunStateEvent({ ...flow, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 + 1_000, id: ids[0]! }),
        flowRunStateEvent({ ...flow, state: { type: 'SCHEDULED', name: 'AwaitingRetry' }, from: 'FAILED', runCount: 1, occurred: t0 + 3_000, id: ids[2]! }),
        { ...failed },
        taskRunStateEvent({ taskRunId: TASK_RUN, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', ...flow, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 + 1_500, id: '0198c7d2-f000-7000-8000-0000000000aa' }),
      ]);
      const rest = createPrefectRestClient({ apiUrl: prefect.url, authString: AUTH_STRING });
      const us = (ms: number): number => (t0 + ms) * 1000;
      assert.deepEqual(await rest.getRunStates('flow', FLOW_RUN), { ok: true, value: [
        { id: ids[0], type: 'RUNNING', timestampUs: us(1_000) }, { id: ids[1], type: 'FAILED', timestampUs: us(2_000) }, { id: ids[2], type: 'SCHEDULED', timestampUs: us(3_000) },
      ] });
      assert.deepEqual(await rest.getRunStates('task', TASK_RUN), { ok: true, value: [{ id: '0198c7d2-f000-7000-8000-0000000000aa', type: 'RUNNING', timestampUs: us(1_500) }] });
      // A run the server does not have: no states.
      assert.deepEqual(await rest.getRunStates('task', FLOW_RUN), { ok: true, value: [] });
      assert.deepEqual(prefect.restRequests.map((r) => `${r.method} ${r.path}`), [
        `GET /api/flow_run_states/?flow_run_id=${FLOW_RUN}`, `GET /api/task_run_states/?task_run_id=${TASK_RUN}`, `GET /api/task_run_states/?task_run_id=${FLOW_RUN}`,
      ]);
      // What the server sends: Prefect's `State` list.
      const raw = await fetch(`${prefect.url}/flow_run_states/?flow_run_id=${FLOW_RUN}`, { headers: { authorization: basic } });
      const body = await raw.json() as Record<string, unknown>[];
      assert.deepEqual(body[1], {
        id: ids[1], created: failed.received, updated: failed.received, type: 'FAILED', name: 'Failed', timestamp: failed.occurred, message: 'boom', data: null,
        state_details: { flow_run_id: FLOW_RUN },
      });
      // The query parameter is required, as FastAPI has it.
      const missing = await fetch(`${prefect.url}/flow_run_states/`, { headers: { authorization: basic } });
      assert.deepEqual([missing.status, ((await missing.json()) as { exception_detail: unknown }).exception_detail], [422, [{ loc: ['query', 'flow_run_id'], msg: 'Field required', type: 'missing' }]]);
    } finally {
      await prefect.close();
    }
  });

  it('getRunStates: a body that is no list of states, or a list with anything but a state with an id and a type in it, is an unexpected answer', async () => {
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api` });
    const state = { id: '0198c7d2-f000-7000-8000-000000000001', type: 'FAILED', timestamp: '2026-11-21T06:00:02.000000Z' };
    const got = [];
    for (const body of [{ states: [] }, [state, null], [state, { ...state, id: 7 }], [state, { id: state.id, timestamp: state.timestamp }], [{ type: 'FAILED' }, state]]) {
      reset(() => ({ status: 200, body }));
      got.push(await rest.getRunStates('flow', FLOW_RUN));
    }
    const unexpected = { ok: false, status: 200, message: `GET /flow_run_states/?flow_run_id=${FLOW_RUN}: unexpected response body` };
    assert.deepEqual(got, [unexpected, unexpected, unexpected, unexpected, unexpected]);
  });

  it('getRunStates: a state id in capitals is read as the id of its state event; a timestamp missing or unreadable is undefined', async () => {
    reset(() => ({ status: 200, body: [{ id: '0198C7D2-F000-7000-8000-00000000000A', type: 'RUNNING', timestamp: null }, { id: '0198c7d2-f000-7000-8000-00000000000b', type: 'FAILED' }] }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api` });
    assert.deepEqual(await rest.getRunStates('task', TASK_RUN), { ok: true, value: [
      { id: '0198c7d2-f000-7000-8000-00000000000a', type: 'RUNNING', timestampUs: undefined }, { id: '0198c7d2-f000-7000-8000-00000000000b', type: 'FAILED', timestampUs: undefined },
    ] });
    assert.deepEqual(seen.map((r) => `${r.method} ${r.path}`), [`GET /api/task_run_states/?task_run_id=${TASK_RUN}`]);
  });

  it('getFlowRuns asks POST /flow_runs/filter by id with a limit of the ids, and maps every run with an id (its expected start time when it has one)', async () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    reset(() => ({
      status: 200,
      body: [
        { id: FLOW_RUN, name: 'crimson-fox', parent_task_run_id: null, labels: { __OTEL_TRACEPARENT: tp }, expected_start_time: '2026-11-21T06:00:00.250000Z' },
        { name: 'no id' },
        'not a run',
        { id: TRACKING_TASK, parent_task_run_id: TASK_RUN, labels: null, expected_start_time: null },
      ],
    }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, authString: AUTH_STRING });
    assert.deepEqual(await rest.getFlowRuns([FLOW_RUN, TRACKING_TASK]), {
      ok: true,
      value: [
        { id: FLOW_RUN, name: 'crimson-fox', parentTaskRunId: null, labels: { __OTEL_TRACEPARENT: tp }, expectedStartTime: '2026-11-21T06:00:00.250000Z' },
        { id: TRACKING_TASK, parentTaskRunId: TASK_RUN, labels: {} },
      ],
    });
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.headers.authorization, s.headers['content-type'], s.body]),
      [['POST', '/api/flow_runs/filter', basic, 'application/json', { flow_runs: { id: { any_: [FLOW_RUN, TRACKING_TASK] } }, limit: 2 }]],
    );
    reset(() => ({ status: 422, body: { detail: 'Invalid limit: must be less than or equal to 1.' } }));
    assert.deepEqual(await rest.getFlowRuns([FLOW_RUN, TRACKING_TASK]), { ok: false, status: 422, message: 'POST /flow_runs/filter: HTTP 422' });
    reset(() => ({ status: 200, body: { id: FLOW_RUN } }));
    assert.deepEqual(await rest.getFlowRuns([FLOW_RUN]), { ok: false, status: 200, message: 'POST /flow_runs/filter: unexpected response body' });
    reset(() => ({ status: 403, body: { detail: 'Forbidden' } }));
    await assert.rejects(rest.getFlowRuns([FLOW_RUN]), (err: unknown) => err instanceof AuthError && err.message === 'the Prefect API refused POST /flow_runs/filter with HTTP 403: check PREFECT_API_AUTH_STRING');
  });

  it('404, 500 and an unexpected body are results, not exceptions', async () => {
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api` });
    reset(() => ({ status: 404, body: { detail: 'Task not found' } }));
    assert.deepEqual(await rest.getTaskRun(TASK_RUN), { ok: false, status: 404, message: `GET /task_runs/${TASK_RUN}: not found` });
    reset(() => ({ status: 500, body: 'Internal Server Error' }));
    assert.deepEqual(await rest.getFlowRun(FLOW_RUN), { ok: false, status: 500, message: `GET /flow_runs/${FLOW_RUN}: HTTP 500` });
    reset(() => ({ status: 200, body: [] }));
    assert.deepEqual(await rest.getFlowRun(FLOW_RUN), { ok: false, status: 200, message: `GET /flow_runs/${FLOW_RUN}: unexpected response body` });
  });

  it("answers that are no Prefect API's (a route it does not have, a web page) are results marked noApi; Prefect's own 404s are not found", async () => {
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}`, authString: AUTH_STRING });
    const answers: [number, unknown, Record<string, string>?][] = [
      [404, { detail: 'Task not found' }],
      [404, { exception_message: 'Task run not found' }],
      [404, { detail: 'Not Found' }],
      [404, `<html>\r\n<body>404 page for ${AUTH_STRING}</body></html>`, { 'content-type': 'text/html' }],
      [404, ''],
      [200, '<!doctype html><title>Prefect</title>', { 'content-type': 'text/html' }],
    ];
    const got = [];
    for (const [status, body, headers] of answers) {
      reset(() => ({ status, body, ...(headers === undefined ? {} : { headers }) }));
      got.push(await rest.getTaskRun(TASK_RUN));
    }
    const what = `GET /task_runs/${TASK_RUN}`;
    assert.deepEqual(got, [
      { ok: false, status: 404, message: `${what}: not found` },
      { ok: false, status: 404, message: `${what}: not found` },
      { ok: false, status: 404, message: `${what}: HTTP 404, no such route ({"detail":"Not Found"})`, noApi: true },
      { ok: false, status: 404, message: `${what}: HTTP 404, no such route (<html> <body>404 page for [redacted]</body></html>)`, noApi: true },
      { ok: false, status: 404, message: `${what}: HTTP 404, no such route`, noApi: true },
      { ok: false, status: 200, message: `${what}: HTTP 200 with a body that is not JSON (<!doctype html><title>Prefect</title>)`, noApi: true },
    ]);
    // At an API's path, a "Not Found" is taken as Prefect's word that the run is not there.
    reset(() => ({ status: 404, body: { detail: 'Not Found' } }));
    const atApi = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api` });
    assert.deepEqual(await atApi.getTaskRun(TASK_RUN), { ok: false, status: 404, message: `${what}: not found` });
  });

  it('401/403 throw an AuthError naming the setting and never the secret', async () => {
    reset(() => ({ status: 401, body: { detail: 'Unauthorized' } }));
    const withString = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, authString: AUTH_STRING });
    await assert.rejects(withString.getTaskRun(TASK_RUN), (err: unknown) => {
      assert.ok(err instanceof AuthError);
      assert.deepEqual(
        { setting: err.setting, code: err.code, message: err.message },
        { setting: 'PREFECT_API_AUTH_STRING', code: 'PREFECT_OTEL_AUTH', message: `the Prefect API refused GET /task_runs/${TASK_RUN} with HTTP 401: check PREFECT_API_AUTH_STRING` },
      );
      return true;
    });
    reset(() => ({ status: 403, body: { detail: 'Forbidden' } }));
    const withKey = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, apiKey: API_KEY });
    await assert.rejects(withKey.getFlowRun(FLOW_RUN), (err: unknown) => {
      assert.ok(err instanceof AuthError);
      assert.equal(err.setting, 'PREFECT_API_KEY');
      assert.ok(!err.message.includes(API_KEY) && err.message.endsWith('check PREFECT_API_KEY (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)'));
      return true;
    });
  });

  it('a network error or a timeout is {ok:false} without a status', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const dead = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${deadPort}/api`, authString: AUTH_STRING });
    const r = await dead.getTaskRun(TASK_RUN);
    assert.equal(r.ok, false);
    assert.ok(!r.ok && r.status === undefined && /ECONNREFUSED/.test(r.message), JSON.stringify(r));

    reset(() => 'hang');
    const slow = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, timeoutMs: 100 });
    assert.deepEqual(await slow.getTaskRun(TASK_RUN), { ok: false, message: `GET /task_runs/${TASK_RUN} failed: timed out after 100 ms` });
    for (const res of hanging.splice(0)) res.destroy();
  });
});

describe('rest client: a redirect to another host', () => {
  it('carries neither the credentials nor the custom headers (an access proxy\'s client secret) there; a redirect within the server carries both', async () => {
    // Another origin: the sign-in page an access proxy sends a request it does not take on to.
    const elsewhere: IncomingHttpHeaders[] = [];
    const signIn = createServer((req, res) => {
      elsewhere.push(req.headers);
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html>sign in</html>');
    });
    await new Promise<void>((resolve) => signIn.listen(0, '127.0.0.1', resolve));
    after(() => new Promise<void>((resolve) => signIn.close(() => resolve())));
    const signInUrl = `http://localhost:${(signIn.address() as AddressInfo).port}/login`;
    reset((req) =>
      req.path === `/api/task_runs/${TASK_RUN}` ? { status: 307, headers: { location: `/api/moved/${TASK_RUN}` } } : { status: 302, headers: { location: signInUrl } },
    );
    const custom = { 'CF-Access-Client-Id': 'client-id.access', 'CF-Access-Client-Secret': 'CfAccessSecret5551234' };
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, apiKey: API_KEY, customHeaders: custom });
    const r = await rest.getTaskRun(TASK_RUN);
    rest.close();
    assert.equal(r.ok, false);
    const sent = (h: IncomingHttpHeaders): Record<string, unknown> => {
      const { host: _host, connection: _connection, ...rest } = h;
      return rest;
    };
    const own = { accept: 'application/json', 'user-agent': `prefect-otel/${VERSION}`, 'accept-encoding': 'gzip, deflate, br' };
    const credentials = { authorization: `Bearer ${API_KEY}`, 'cf-access-client-id': 'client-id.access', 'cf-access-client-secret': 'CfAccessSecret5551234' };
    assert.deepEqual(
      { prefect: seen.map((s) => [s.path, sent(s.headers)]), elsewhere: elsewhere.map(sent) },
      {
        prefect: [
          [`/api/task_runs/${TASK_RUN}`, { ...own, ...credentials }],
          [`/api/moved/${TASK_RUN}`, { ...own, ...credentials }],
        ],
        elsewhere: [own],
      },
    );
  });
});

describe('rest client: through a proxy', () => {
  it('close() while the proxy has not answered CONNECT ends the request and closes the proxy connection at once, not at the request timeout', async () => {
    const proxy = await startSilentProxy();
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, timeoutMs: 60_000, proxy: { httpProxy: proxy.url, httpsProxy: undefined, noProxy: undefined } });
    const pending = rest.getTaskRun(TASK_RUN);
    // Far longer than either wait takes, far shorter than the request's timeout (60 s) that a close() which left the connection open would wait for.
    const deadline = Date.now() + 20_000;
    while (proxy.accepted() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    rest.close();
    const result = await pending;
    while (proxy.open() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await proxy.close();
    assert.deepEqual({ ok: result.ok, accepted: proxy.accepted(), open: proxy.open() }, { ok: false, accepted: 1, open: 0 });
  });
});

describe('rest client: through a proxy that wants credentials', () => {
  it('a 407 to CONNECT (the proxy credentials missing or wrong) throws an AuthError naming the proxy variable, from a look-up and the history alike, never with the password', async () => {
    const proxy = await startConnectProxy({ credentials: 'otel:proxy-pass' });
    after(() => proxy.close());
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, proxy: { httpProxy: `http://otel:wrong-pass@127.0.0.1:${proxy.port}`, httpsProxy: undefined, noProxy: undefined } });
    const caught = async (p: Promise<unknown>): Promise<unknown> => p.then(() => 'no error', (err: unknown) => err);
    const errors = [await caught(rest.getFlowRun(FLOW_RUN)), await caught(rest.readEvents({ sinceIso: '2026-01-01T00:00:00Z', untilIso: '2026-01-02T00:00:00Z' }).next())];
    rest.close();
    const message = `the proxy ${proxy.url} refused CONNECT 127.0.0.1:${port} with HTTP 407 (it wants credentials: add a user and password to the proxy URL)`;
    assert.deepEqual(
      errors.map((e) => (e instanceof AuthError ? { auth: true, message: e.message, setting: e.setting } : { auth: false, value: String(e) })),
      Array.from({ length: 2 }, () => ({ auth: true, message, setting: 'HTTP_PROXY' })),
    );
    assert.deepEqual(proxy.tunnels.map((x) => x.status), [407, 407]);
  });
});

describe('rest client: event history', () => {
  const events = Array.from({ length: 120 }, (_, i) => ({ id: `ev-${i}`, occurred: new Date(Date.UTC(2026, 7, 21, 12, 0, i)).toISOString(), event: 'x' }));
  const tokens = ['first+token/==', 'second+token/=='];

  /** Pages of 50 with next_page URLs on a host and path we must not use. */
  const pager: Handler = (req) => {
    const url = new URL(req.path, 'http://x');
    let offset = 0;
    if (req.method === 'GET') {
      const i = tokens.indexOf(url.searchParams.get('page-token') ?? '');
      if (i < 0) return { status: 403, body: { detail: 'bad token' } };
      offset = (i + 1) * 50;
    }
    const next = offset + 50 < events.length ? `http://10.255.255.1:9/wrong/api/events/filter/next?page-token=${encodeURIComponent(tokens[offset / 50]!)}` : null;
    return { status: 200, body: { events: events.slice(offset, offset + 50), total: events.length, next_page: next } };
  };

  it('pages POST /events/filter then GET /events/filter/next on our own API base', async () => {
    reset(pager);
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/prefix/api//`, authString: AUTH_STRING });
    const pages: unknown[][] = [];
    for await (const page of rest.readEvents({ sinceIso: '2026-08-21T12:00:00.000Z', untilIso: '2026-08-21T13:00:00.000Z', prefixes: ['prefect.flow-run.'] })) {
      pages.push(page);
    }
    assert.deepEqual(pages, [events.slice(0, 50), events.slice(50, 100), events.slice(100)]);
    assert.deepEqual(
      seen.map((s) => [s.method, s.path, s.headers.authorization]),
      [
        ['POST', '/prefix/api/events/filter', basic],
        ['GET', `/prefix/api/events/filter/next?page-token=${encodeURIComponent(tokens[0]!)}`, basic],
        ['GET', `/prefix/api/events/filter/next?page-token=${encodeURIComponent(tokens[1]!)}`, basic],
      ],
    );
    assert.deepEqual(seen[0]!.body, {
      filter: {
        occurred: { since: '2026-08-21T12:00:00.000Z', until: '2026-08-21T13:00:00.000Z' },
        event: { prefix: ['prefect.flow-run.'] },
        order: 'ASC',
      },
      limit: 50,
    });
    assert.equal(seen[0]!.headers['content-type'], 'application/json');
  });

  it('sends no event filter without prefixes, and yields nothing for an empty page', async () => {
    reset(() => ({ status: 200, body: { events: [], total: 0, next_page: null } }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api` });
    const pages: unknown[][] = [];
    for await (const page of rest.readEvents({ sinceIso: 'a', untilIso: 'b' })) pages.push(page);
    assert.deepEqual(pages, []);
    assert.deepEqual(seen[0]!.body, { filter: { occurred: { since: 'a', until: 'b' }, order: 'ASC' }, limit: 50 });
  });

  it('401 is an AuthError; a 403 on a later page is a rejected page token; other failures are RestRequestErrors', async () => {
    const drain = async (apiUrl: string): Promise<void> => {
      const rest = createPrefectRestClient({ apiUrl, apiKey: API_KEY });
      for await (const _ of rest.readEvents({ sinceIso: 'a', untilIso: 'b' })) {
        // drain
      }
    };
    reset(() => ({ status: 401 }));
    await assert.rejects(drain(`http://127.0.0.1:${port}/api`), (err: unknown) => err instanceof AuthError && err.setting === 'PREFECT_API_KEY' && !err.message.includes(API_KEY));

    reset((req) => (req.method === 'POST' ? { status: 200, body: { events: [{ id: 1 }], next_page: 'http://x/api/events/filter/next?page-token=zzz' } } : { status: 403 }));
    await assert.rejects(drain(`http://127.0.0.1:${port}/api`), (err: unknown) => {
      assert.ok(err instanceof ProtocolError);
      assert.equal(err.message, 'GET /events/filter/next: the server rejected its own page token (HTTP 403)');
      return true;
    });

    reset(() => ({ status: 503 }));
    await assert.rejects(drain(`http://127.0.0.1:${port}/api`), (err: unknown) => err instanceof RestRequestError && err.status === 503);

    // Not Prefect's answer (a proxy's page, say): a failed request, whose body is shown short and redacted.
    reset(() => ({ status: 200, body: { detail: 'not a page', key: API_KEY } }));
    await assert.rejects(drain(`http://127.0.0.1:${port}/api`), (err: unknown) => {
      assert.ok(err instanceof RestRequestError);
      assert.deepEqual({ message: err.message, status: err.status, body: err.body }, { message: 'POST /events/filter: HTTP 200 with a body that is not an event page', status: 200, body: '{"detail":"not a page","key":"[redacted]"}' });
      return true;
    });

    reset(() => ({ status: 200, body: { events: [{ id: 1 }], next_page: 'http://x/api/events/filter/next?page-token=same' } }));
    await assert.rejects(drain(`http://127.0.0.1:${port}/api`), /repeated a page token/);
  });

  it('a 429 or 503 with Retry-After is asked again after it, on every page and look-up; a history page\'s bounded, and not waited out when it is longer than a minute', async () => {
    const limited = new Map<string, number>();
    /** The first answer to each request is a rate limit (the second page's a 503 with a past HTTP date); then the pager answers. */
    reset((req) => {
      const key = `${req.method} ${req.path}`;
      const n = limited.get(key) ?? 0;
      limited.set(key, n + 1);
      if (n > 0) return req.path.includes('/flow_runs/') ? { status: 200, body: { id: FLOW_RUN, parent_task_run_id: null } } : pager(req);
      return key.includes(encodeURIComponent(tokens[0]!))
        ? { status: 503, body: { detail: 'restarting' }, headers: { 'retry-after': 'Thu, 01 Jan 2026 00:00:00 GMT' } }
        : { status: 429, body: { detail: 'rate limited' }, headers: { 'retry-after': '0' } };
    });
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, apiKey: API_KEY });
    const pages: unknown[][] = [];
    for await (const page of rest.readEvents({ sinceIso: '2026-08-21T12:00:00.000Z', untilIso: '2026-08-21T13:00:00.000Z' })) pages.push(page);
    const run = await rest.getFlowRun(FLOW_RUN);
    assert.deepEqual(
      { pages, run, requests: seen.map((s) => `${s.method} ${s.path}`) },
      {
        pages: [events.slice(0, 50), events.slice(50, 100), events.slice(100)],
        run: { ok: true, value: { id: FLOW_RUN, parentTaskRunId: null, labels: {} } },
        requests: [
          'POST /api/events/filter', 'POST /api/events/filter',
          `GET /api/events/filter/next?page-token=${encodeURIComponent(tokens[0]!)}`, `GET /api/events/filter/next?page-token=${encodeURIComponent(tokens[0]!)}`,
          `GET /api/events/filter/next?page-token=${encodeURIComponent(tokens[1]!)}`, `GET /api/events/filter/next?page-token=${encodeURIComponent(tokens[1]!)}`,
          `GET /api/flow_runs/${FLOW_RUN}`, `GET /api/flow_runs/${FLOW_RUN}`,
        ],
      },
    );

    reset(() => ({ status: 429, body: { detail: 'rate limited' }, headers: { 'retry-after': '0' } }));
    await assert.rejects(async () => {
      for await (const _ of rest.readEvents({ sinceIso: '2026-08-21T12:00:00.000Z', untilIso: '2026-08-21T13:00:00.000Z' })) void _;
    }, (err: unknown) => err instanceof RestRequestError && err.status === 429 && err.message === 'POST /events/filter: HTTP 429');
    assert.equal(seen.length, 5);

    rest.close();
  });

  it('a run look-up answered 408, 429, 502 or 503 is asked again as Prefect\'s client asks: up to 5 times, after the Retry-After (a longer one cut to the longest wait) or else 2, 4, 8… s; Prefect Cloud\'s maintenance answers as often as they come', async () => {
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, apiKey: API_KEY, lookupMaxWaitMs: 50 });
    const found = { status: 200, body: { id: TASK_RUN, flow_run_id: FLOW_RUN } };
    const run = { ok: true, value: { id: TASK_RUN, flowRunId: FLOW_RUN } };
    /** Each answer in turn, then the run. */
    const answers = (...first: { status: number; headers?: Record<string, string> }[]): void => {
      let n = 0;
      reset(() => first[n++] ?? found);
    };

    // An hour asked for: waited for as long as a look-up waits (here 50 ms), then asked again.
    answers({ status: 429, headers: { 'retry-after': '3600' } });
    assert.deepEqual({ run: await rest.getTaskRun(TASK_RUN), requests: seen.length }, { run, requests: 2 });
    // No Retry-After: the backoff, cut to the same bound; a gateway's 502 and a 408 as well.
    answers({ status: 502 }, { status: 408 }, { status: 503 });
    assert.deepEqual({ run: await rest.getTaskRun(TASK_RUN), requests: seen.length }, { run, requests: 4 });
    // Past 5 retries the answer is the caller's.
    reset(() => ({ status: 429, headers: { 'retry-after': '0' } }));
    assert.deepEqual({ run: await rest.getTaskRun(TASK_RUN), requests: seen.length }, { run: { ok: false, status: 429, message: `GET /task_runs/${TASK_RUN}: HTTP 429` }, requests: 6 });
    // Maintenance (Prefect-Maintenance: true) is not counted against them.
    const maintenance = { status: 503, headers: { 'retry-after': '0', 'prefect-maintenance': 'true' } };
    answers(...Array.from({ length: 8 }, () => maintenance));
    assert.deepEqual({ run: await rest.getTaskRun(TASK_RUN), requests: seen.length }, { run, requests: 9 });
    // A 500 is no "not now": answered at once.
    answers({ status: 500 });
    assert.deepEqual({ run: await rest.getTaskRun(TASK_RUN), requests: seen.length }, { run: { ok: false, status: 500, message: `GET /task_runs/${TASK_RUN}: HTTP 500` }, requests: 1 });
    rest.close();
  });

  it('a run look-up waiting to ask again ends at once when the client closes (the process stops): its answer is the last one', async () => {
    reset(() => ({ status: 503, headers: { 'retry-after': '3600', 'prefect-maintenance': 'true' } }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, apiKey: API_KEY });
    const answer = rest.getFlowRun(FLOW_RUN);
    await new Promise((r) => setTimeout(r, 100));
    rest.close();
    assert.deepEqual({ answer: await answer, requests: seen.length }, { answer: { ok: false, status: 503, message: `GET /flow_runs/${FLOW_RUN}: HTTP 503` }, requests: 1 });
  });

  it('a Retry-After in seconds with a fraction (as Prefect\'s client reads it, with float()) is that long, not a date long past', async () => {
    // 120.5 s is longer than a request waits here: the answer goes to the caller at once, with the wait it asked for.
    reset(() => ({ status: 429, body: { detail: 'rate limited' }, headers: { 'retry-after': '120.5' } }));
    const rest = createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api`, apiKey: API_KEY });
    let thrown: unknown;
    try {
      for await (const _ of rest.readEvents({ sinceIso: '2026-08-21T12:00:00.000Z', untilIso: '2026-08-21T13:00:00.000Z' })) void _;
    } catch (err) {
      thrown = err;
    }
    assert.ok(thrown instanceof RestRequestError);
    assert.deepEqual(
      { message: thrown.message, status: thrown.status, retryAfterMs: thrown.retryAfterMs, requests: seen.map((s) => `${s.method} ${s.path}`) },
      { message: 'POST /events/filter: HTTP 429', status: 429, retryAfterMs: 120_500, requests: ['POST /api/events/filter'] },
    );

    rest.close();
  });

  it('retryAfterMs reads seconds (with or without a fraction) and HTTP dates, and nothing else', () => {
    const now = Date.parse('2026-08-21T12:00:00.000Z');
    assert.deepEqual(
      ['0', '5', ' 3 ', '1.5', '0.25', '2.', '120.5', 'Fri, 21 Aug 2026 12:00:30 GMT', 'Friday, 21-Aug-26 12:00:30 GMT', 'Fri Aug 21 12:00:30 2026', 'Thu, 01 Jan 2026 00:00:00 GMT', '-1', '+5', '1e3', '.5', 'soon', '', undefined].map((h) => [h, retryAfterMs(h, now)]),
      [
        ['0', 0], ['5', 5_000], [' 3 ', 3_000], ['1.5', 1_500], ['0.25', 250], ['2.', 2_000], ['120.5', 120_500],
        ['Fri, 21 Aug 2026 12:00:30 GMT', 30_000], ['Friday, 21-Aug-26 12:00:30 GMT', 30_000], ['Fri Aug 21 12:00:30 2026', Date.parse('Fri Aug 21 12:00:30 2026') - now],
        ['Thu, 01 Jan 2026 00:00:00 GMT', 0],
        ['-1', undefined], ['+5', undefined], ['1e3', undefined], ['.5', undefined], ['soon', undefined], ['', undefined], [undefined, undefined],
      ],
    );
  });

  it('pageToken reads the page-token of absolute and relative URLs', () => {
    assert.deepEqual(
      [
        pageToken('http://127.0.0.1:4200/api/events/filter/next?page-token=YWJj%2B%2F%3D'),
        pageToken('/api/events/filter/next?page-token=abc'),
        pageToken('http://h/api/events/filter/next'),
      ],
      ['YWJj+/=', 'abc', undefined],
    );
  });
});

describe('rest client: a Prefect server with CSRF protection (PREFECT_SERVER_CSRF_PROTECTION_ENABLED)', () => {
  const event = (i: number): WireEvent => ({
    id: `0198c7d2-0000-7000-8000-${String(i).padStart(12, '0')}`,
    occurred: new Date(Date.UTC(2026, 7, 21, 12, 0, i)).toISOString(),
    event: 'prefect.flow-run.Running',
    resource: { 'prefect.resource.id': `prefect.flow-run.${FLOW_RUN}` },
    related: [],
    payload: {},
  });
  const window = { sinceIso: '2026-08-21T12:00:00.000Z', untilIso: '2026-08-21T13:00:00.000Z' };
  const readAll = async (rest: ReturnType<typeof createPrefectRestClient>): Promise<string[]> => {
    const ids: string[] = [];
    for await (const page of rest.readEvents(window)) for (const ev of page) ids.push((ev as WireEvent).id);
    return ids;
  };

  it('the history and the run look-ups by filter are asked with a CSRF token from GET /csrf-token, fetched once the server asks for one and again when it no longer takes it', async () => {
    const server = await startFakePrefect({ csrfProtection: true, authString: AUTH_STRING });
    after(() => server.close());
    const events = Array.from({ length: 60 }, (_, i) => event(i));
    server.store(events);
    server.addFlowRun({ id: FLOW_RUN, name: 'crimson-fox' });
    const rest = createPrefectRestClient({ apiUrl: server.url, authString: AUTH_STRING });

    assert.deepEqual(await readAll(rest), events.map((e) => e.id));
    const lookup = await rest.getFlowRuns([FLOW_RUN]);
    assert.deepEqual(lookup.ok && lookup.value.map((r) => r.id), [FLOW_RUN]);
    server.expireCsrfTokens();
    assert.deepEqual(await readAll(rest), events.map((e) => e.id));

    const client = new URL(server.restRequests.find((r) => r.path.includes('/csrf-token'))!.path, 'http://x').searchParams.get('client');
    assert.match(client ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const tokens: string[] = [];
    const shown = server.restRequests.map((r) => {
      const csrf = r.headers['prefect-csrf-token'];
      if (typeof csrf === 'string' && !tokens.includes(csrf)) tokens.push(csrf);
      return [
        r.method,
        r.path.replace(/page-token=[^&]+/, 'page-token=…'),
        r.headers.authorization,
        csrf === undefined ? null : `token ${tokens.indexOf(String(csrf)) + 1}`,
        r.headers['prefect-csrf-client'] ?? null,
      ];
    });
    assert.deepEqual(shown, [
      ['POST', '/api/events/filter', basic, null, null],
      ['GET', `/api/csrf-token?client=${client}`, basic, null, null],
      ['POST', '/api/events/filter', basic, 'token 1', client],
      ['GET', '/api/events/filter/next?page-token=…', basic, null, null],
      ['POST', '/api/flow_runs/filter', basic, 'token 1', client],
      ['POST', '/api/events/filter', basic, 'token 1', client],
      ['GET', `/api/csrf-token?client=${client}`, basic, null, null],
      ['POST', '/api/events/filter', basic, 'token 2', client],
      ['GET', '/api/events/filter/next?page-token=…', basic, null, null],
    ]);
    rest.close();
  });

  it('a server without it (the default) is asked no CSRF token: its GET /csrf-token would only say it is disabled', async () => {
    const server = await startFakePrefect();
    after(() => server.close());
    server.store([event(1)]);
    const rest = createPrefectRestClient({ apiUrl: server.url });
    assert.deepEqual(await readAll(rest), [event(1).id]);
    assert.deepEqual(server.restRequests.map((r) => [r.method, r.path, r.headers['prefect-csrf-token'] ?? null]), [['POST', '/api/events/filter', null]]);
    rest.close();
  });
});

describe('rest client: events of equal `occurred` across a page boundary', () => {
  const event = (i: number, second: number): WireEvent => ({
    id: `0198c7d2-0000-7000-8000-${String(i).padStart(12, '0')}`,
    occurred: new Date(Date.UTC(2026, 7, 21, 12, 0, second)).toISOString(),
    event: 'prefect.flow-run.Running',
    resource: { 'prefect.resource.id': `prefect.flow-run.${FLOW_RUN}` },
    related: [],
    payload: {},
  });
  const window = { sinceIso: '2026-08-21T12:00:00.000Z', untilIso: '2026-08-21T13:00:00.000Z' };
  const read = async (events: WireEvent[]) => {
    const server = await startFakePrefect();
    after(() => server.close());
    // Prefect orders by `occurred` alone; this server orders the ties differently in each query.
    server.switches.tiesVary = true;
    server.store(events);
    const rest = createPrefectRestClient({ apiUrl: server.url });
    const pages: string[][] = [];
    for await (const page of rest.readEvents(window)) pages.push(page.map((ev) => (ev as WireEvent).id));
    rest.close();
    const requests = server.restRequests.map((r) => (r.method === 'GET' ? 'GET next' : `POST ${JSON.stringify((r.body as { filter: { occurred: unknown } }).filter.occurred)}`));
    return { ids: pages.flat(), pages: pages.map((p) => p.length), requests };
  };

  it('are each read once, in order: the instant they share is asked for on its own', async () => {
    // 130 events; the 12 from the 46th on share one second, across the first page's end (50).
    const events = Array.from({ length: 130 }, (_, i) => event(i, i < 45 ? i : i < 57 ? 45 : i - 11));
    const { ids, pages, requests } = await read(events);
    assert.deepEqual(ids.slice().sort(), events.map((e) => e.id).sort());
    assert.equal(ids.length, 130);
    assert.deepEqual(ids.slice(0, 45), events.slice(0, 45).map((e) => e.id));
    assert.deepEqual(ids.slice(57), events.slice(57).map((e) => e.id));
    assert.deepEqual(pages, [50, 50, 30]);
    const instant = JSON.stringify({ since: '2026-08-21T12:00:45.000Z', until: '2026-08-21T12:00:45.000Z' });
    assert.deepEqual(requests, [`POST ${JSON.stringify({ since: window.sinceIso, until: window.untilIso })}`, 'GET next', `POST ${instant}`, 'GET next']);
  });

  it('at two page boundaries, one after the other: each instant is asked for on its own and each event read once, in order', async () => {
    // 130 events; 12 share second 45 across the first page's end (positions 45–56), and 8 share
    // second 85 across the second page's end (positions 96–103), after a page that asked for its instant.
    const second = (i: number): number => (i < 45 ? i : i < 57 ? 45 : i < 96 ? i - 11 : i < 104 ? 85 : i - 18);
    const events = Array.from({ length: 130 }, (_, i) => event(i, second(i)));
    const { ids, pages, requests } = await read(events);
    assert.deepEqual(ids.slice().sort(), events.map((e) => e.id).sort());
    assert.equal(ids.length, 130);
    // Ascending: each position holds an event of the instant the history has there (ties in any order).
    const secondOf = new Map(events.map((e, i) => [e.id, second(i)]));
    assert.deepEqual(ids.map((id) => secondOf.get(id)), events.map((_, i) => second(i)));
    assert.deepEqual(pages, [50, 50, 30]);
    const instant = (s: string) => `POST ${JSON.stringify({ since: s, until: s })}`;
    assert.deepEqual(requests, [
      `POST ${JSON.stringify({ since: window.sinceIso, until: window.untilIso })}`,
      'GET next',
      instant('2026-08-21T12:00:45.000Z'),
      'GET next',
      instant('2026-08-21T12:01:25.000Z'),
    ]);
  });

  it('events of distinct `occurred` are paged as the server pages them, with no other request', async () => {
    const events = Array.from({ length: 130 }, (_, i) => event(i, i));
    const { ids, pages, requests } = await read(events);
    assert.deepEqual(ids, events.map((e) => e.id));
    assert.deepEqual(pages, [50, 50, 30]);
    assert.deepEqual(requests, [`POST ${JSON.stringify({ since: window.sinceIso, until: window.untilIso })}`, 'GET next', 'GET next']);
  });
});
