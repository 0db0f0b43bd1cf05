/**
 * The live source end to end over loopback, against the small Prefect server in test/helpers: the real
 * `/events/out` handshake (sub-protocol `prefect`, auth message, 1008 on a bad token, 1002 on a bad
 * filter, `until` defaulting to now, the `since` clamp) and `POST /events/filter` paging.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { after, describe, it } from 'node:test';
import pino, { type Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { AuthError, ProtocolError } from '../../src/errors.js';
import { ERR_SERIALIZERS } from '../../src/log/err.js';
import { errMessage } from '../helpers/log-err.js';
import { createEventSubscriber, type EventSubscriber, type EventSubscriberOptions } from '../../src/source/websocket.js';
import { VERSION } from '../../src/version.js';
import { startConnectProxy, startSilentProxy } from '../helpers/connect-proxy.js';

const DAY_MS = 24 * 3600_000;
const AUTH_STRING = 'admin:s3cret-pass';
const API_KEY = 'pnu_0123456789abcdefSECRET';
/** The retry line of a failed connection attempt before live: nothing answered, or the server (or the history) answered. */
const UNREACHABLE = 'Prefect server unreachable, retrying in';
const ANSWERED = 'connecting to the Prefect event stream failed, retrying in';
const isRetry = (msg: unknown): boolean => typeof msg === 'string' && (msg.startsWith(UNREACHABLE) || msg.startsWith(ANSWERED));

// ---- a small Prefect server ----------------------------------------------------------------------

import { startMiniPrefect, type MiniOptions, type Mini, type TestEvent } from '../helpers/fake-prefect.js';

/**
 * A server of the test's own for what no Prefect does: `onSocket` gets each accepted `/events/out`
 * socket. Its `url` is a PREFECT_API_URL.
 */
async function hostileServer(onSocket: (ws: WebSocket) => void): Promise<{ url: string; close: () => Promise<void> }> {
  const http = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ server: http, handleProtocols: () => 'prefect' });
  wss.on('connection', onSocket);
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const server = {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/api`,
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => http.close(() => resolve())));
    },
  };
  hostile.push(server);
  return server;
}
const hostile: { close: () => Promise<void> }[] = [];
after(async () => {
  await Promise.all(hostile.map((s) => s.close()));
});



// ---- helpers -------------------------------------------------------------------------------------

let seq = 0;
function event(occurredMs: number, name = 'prefect.flow-run.Running'): TestEvent {
  seq += 1;
  const n = String(seq).padStart(12, '0');
  return {
    id: `0198c7d2-0000-7000-8000-${n}`,
    occurred: new Date(occurredMs).toISOString(),
    event: name,
    resource: { 'prefect.resource.id': `prefect.flow-run.0198c7d2-5b1e-7a3c-9f10-${n}`, 'prefect.resource.name': `run-${seq}` },
    related: [],
    payload: {},
  };
}

function captureLogs(): { logger: Logger; lines: string[]; records: () => Record<string, unknown>[] } {
  const lines: string[] = [];
  const logger = pino({ level: 'debug', serializers: ERR_SERIALIZERS }, { write: (line: string) => void lines.push(line) });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/**
 * Polls `cond` until it holds. The default deadline is far longer than anything here should take,
 * so that a busy machine only makes a test slower; a condition that never holds still fails it.
 */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How `done` settles: 'resolved', its rejection, or 'retried' should `retried()` hold first (a retry loop that would not end). */
function outcomeOf(sub: EventSubscriber, retried: () => boolean): Promise<unknown> {
  return Promise.race([sub.done.then(() => 'resolved', (err: unknown) => err), waitFor('more attempts', retried, 5_000).then(() => 'retried')]);
}

interface Received {
  origin: 'live' | 'history';
  value: string | object;
}

/** A subscriber whose cursor follows the events it receives, as the pipeline's does. */
function subscribe(mini: Pick<Mini, 'url'>, extra: Partial<EventSubscriberOptions> & { cursorUs?: number } = {}) {
  const logs = captureLogs();
  const received: Received[] = [];
  const statuses: string[] = [];
  const state = { cursorUs: extra.cursorUs };
  const sub: EventSubscriber = createEventSubscriber({
    apiUrl: mini.url,
    logger: logs.logger,
    resumeFromUs: () => state.cursorUs,
    resumeMarginMs: 2_000,
    initialBackoffMs: 20,
    maxBackoffMs: 200,
    handshakeTimeoutMs: 1_000,
    onEvent: (value, origin) => {
      received.push({ origin, value });
      const ev = (typeof value === 'string' ? (JSON.parse(value) as { event: TestEvent }).event : value) as TestEvent;
      const us = Date.parse(ev.occurred) * 1000;
      if (state.cursorUs === undefined || us > state.cursorUs) state.cursorUs = us;
    },
    onStatus: (s) => void statuses.push(s),
    ...extra,
  });
  const ids = (origin?: 'live' | 'history') =>
    received
      .filter((r) => origin === undefined || r.origin === origin)
      .map((r) => (typeof r.value === 'string' ? (JSON.parse(r.value) as { event: TestEvent }).event.id : (r.value as TestEvent).id));
  return { sub, logs, received, statuses, state, ids };
}

function assertNoSecrets(lines: string[], ...secrets: string[]): void {
  assert.ok(lines.length > 0, 'expected some log lines');
  for (const s of secrets) {
    const b64 = Buffer.from(s).toString('base64');
    for (const line of lines) {
      assert.ok(!line.includes(s), `secret in log line: ${line}`);
      assert.ok(!line.includes(b64), `base64 secret in log line: ${line}`);
    }
  }
}

/** The filter message with its `until` checked (> now + 300 days) and replaced by a marker. */
function filterWithCheckedUntil(msg: unknown): unknown {
  const m = msg as { filter: { occurred: { since: string; until: string } } };
  const until = Date.parse(m.filter.occurred.until);
  assert.ok(until > Date.now() + 300 * DAY_MS, `until ${m.filter.occurred.until} is not far in the future`);
  return { ...m, filter: { ...m.filter, occurred: { ...m.filter.occurred, until: '<future>' } } };
}

const servers: Mini[] = [];
/**
 * How many reads of a window of the event history the requests are: each is one `POST
 * /events/filter` followed by its pages (`GET /events/filter/next`) and by the queries of one instant
 * (since = until) that ask again for events of equal `occurred` found on both sides of a page
 * boundary. Throws on a request that is none of these, or that comes before the first read.
 */
function historyReads(requests: readonly { method: string; path: string; body?: unknown }[]): number {
  let reads = 0;
  for (const r of requests) {
    if (r.method === 'GET' && r.path.startsWith('/api/events/filter/next?') && reads > 0) continue;
    assert.equal(`${r.method} ${r.path}`, 'POST /api/events/filter');
    const { since, until } = (r.body as { filter: { occurred: { since: string; until: string } } }).filter.occurred;
    if (since !== until) reads += 1;
    else assert.ok(reads > 0, `a query of one instant (${since}) before any read`);
  }
  return reads;
}

async function mini(opts: MiniOptions = {}): Promise<Mini> {
  const m = await startMiniPrefect(opts);
  servers.push(m);
  return m;
}
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

// ---- tests ---------------------------------------------------------------------------------------

describe('event subscriber: handshake', () => {
  it('authenticates with an auth string: token, Basic header on the upgrade, sub-protocol, filter from the cursor', async () => {
    const server = await mini({ authString: AUTH_STRING });
    const cursorMs = Date.now() - 5_000;
    const backlog = [event(cursorMs - 10_000), event(cursorMs - 1_000), event(cursorMs)];
    server.store(backlog);
    const { sub, logs, statuses, ids, received } = subscribe(server, { authString: AUTH_STRING, cursorUs: cursorMs * 1000 + 456 });
    await waitFor('backfill', () => received.length === 2);
    const live = [event(Date.now()), event(Date.now())];
    server.publish(live);
    await waitFor('live events', () => received.length === 4);
    await sub.stop();
    await sub.done;

    const c = server.connections[0]!;
    assert.deepEqual(
      { path: c.path, protocol: c.protocol, authToken: c.authToken, authorization: c.headers.authorization, userAgent: c.headers['user-agent'] },
      {
        path: '/api/events/out',
        protocol: 'prefect',
        authToken: AUTH_STRING,
        authorization: `Basic ${Buffer.from(AUTH_STRING).toString('base64')}`,
        userAgent: `prefect-otel/${VERSION}`,
      },
    );
    // No `event` filter: events that name a run can have any name, and `related` is ignored live.
    assert.deepEqual(
      c.filters.map(filterWithCheckedUntil),
      [{ type: 'filter', filter: { occurred: { since: new Date(cursorMs - 2_000).toISOString(), until: '<future>' }, order: 'ASC' }, backfill: true }],
    );
    // Backfill from cursor − margin (not the older event), then live; frames are the raw text.
    assert.deepEqual(ids(), [backlog[1]!.id, backlog[2]!.id, live[0]!.id, live[1]!.id]);
    assert.deepEqual(received[2], { origin: 'live', value: JSON.stringify({ type: 'event', event: live[0] }) });
    assert.deepEqual(sub.stats, { connects: 1, reconnects: 0, frames: 4, historyEvents: 0, connected: false });
    assert.deepEqual(statuses, ['connecting', 'connected', 'disconnected']);
    assert.equal(c.closeCode, 1000);
    assert.ok(logs.records().some((r) => r.msg === 'connected to the Prefect event stream' && r.url === `ws://127.0.0.1:${server.port}/api/events/out`));
    assertNoSecrets(logs.lines, AUTH_STRING);
  });

  it('authenticates with an API key: the key as token and a Bearer header', async () => {
    const server = await mini({ apiKey: API_KEY });
    const { sub, logs } = subscribe(server, { apiKey: API_KEY, prefixes: ['prefect.flow-run.', 'prefect.task-run.'] });
    const before = Date.now();
    await waitFor('connected', () => sub.stats.connected);
    await sub.stop();
    const c = server.connections[0]!;
    assert.deepEqual(
      { authToken: c.authToken, authorization: c.headers.authorization, protocol: c.protocol },
      { authToken: API_KEY, authorization: `Bearer ${API_KEY}`, protocol: 'prefect' },
    );
    // Fresh start: since = now − 1 min; explicit prefixes become an `event` filter.
    const f = filterWithCheckedUntil(c.filters[0]) as { filter: { occurred: { since: string } } };
    const since = Date.parse(f.filter.occurred.since);
    assert.ok(since >= before - 60_000 - 50 && since <= Date.now() - 60_000, `since ${f.filter.occurred.since}`);
    assert.deepEqual(f, {
      type: 'filter',
      filter: { occurred: { since: f.filter.occurred.since, until: '<future>' }, event: { prefix: ['prefect.flow-run.', 'prefect.task-run.'] }, order: 'ASC' },
      backfill: true,
    });
    assertNoSecrets(logs.lines, API_KEY);
  });

  it('a fresh start with a resume margin longer than a minute reads back the whole margin: the live events of senders whose clocks run behind are in from the first connection', async () => {
    const server = await mini();
    const marginMs = 5 * 60_000;
    const { sub } = subscribe(server, { resumeMarginMs: marginMs });
    const before = Date.now();
    await waitFor('connected', () => sub.stats.connected);
    await sub.stop();
    const f = filterWithCheckedUntil(server.connections[0]!.filters[0]) as { filter: { occurred: { since: string } } };
    const since = Date.parse(f.filter.occurred.since);
    assert.ok(since >= before - marginMs - 50 && since <= Date.now() - marginMs, `since ${f.filter.occurred.since}`);
    assert.deepEqual(f, { type: 'filter', filter: { occurred: { since: f.filter.occurred.since, until: '<future>' }, order: 'ASC' }, backfill: true });
  });

  it('a wrong token rejects `done` with an AuthError and never reconnects', async () => {
    const server = await mini({ authString: AUTH_STRING });
    const { sub, logs } = subscribe(server, { authString: 'admin:wrong-pass' });
    await assert.rejects(sub.done, (err: unknown) => {
      assert.ok(err instanceof AuthError);
      assert.deepEqual(
        { name: err.name, code: err.code, setting: err.setting, message: err.message },
        {
          name: 'AuthError',
          code: 'PREFECT_OTEL_AUTH',
          setting: 'PREFECT_API_AUTH_STRING',
          message: 'the Prefect event stream refused authentication (close 1008: Invalid token): check PREFECT_API_AUTH_STRING',
        },
      );
      return true;
    });
    await sleep(300); // ten backoff periods
    assert.equal(server.upgrades.length, 1);
    assert.equal(server.connections[0]!.closeCode, 1008);
    await sub.stop(); // still resolves
    assert.equal(sub.stats.connects, 0);
    assertNoSecrets(logs.lines, 'admin:wrong-pass', AUTH_STRING);
  });

  it('no credentials against a server that needs them names the setting to set', async () => {
    const server = await mini({ authString: AUTH_STRING });
    const { sub } = subscribe(server);
    await assert.rejects(sub.done, (err: unknown) => err instanceof AuthError && err.setting === 'PREFECT_API_AUTH_STRING' && err.message.endsWith('set PREFECT_API_AUTH_STRING'));
    assert.equal(server.connections[0]!.authToken, null);
  });

  it('an HTTP 401 on the upgrade (a proxy), or a 403 at an API URL, is an AuthError, not a retry loop', async () => {
    for (const status of [401, 403]) {
      const server = await mini({ rejectUpgrade: status });
      const { sub, logs } = subscribe(server, { apiKey: API_KEY });
      const outcome = await outcomeOf(sub, () => server.upgrades.length > 2);
      await sub.stop();
      assert.ok(outcome instanceof AuthError, `HTTP ${status}: ${String(outcome)}`);
      assert.deepEqual(
        { setting: outcome.setting, message: outcome.message },
        { setting: 'PREFECT_API_KEY', message: `the Prefect server refused the event-stream upgrade with HTTP ${status}: check PREFECT_API_KEY (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)` },
      );
      await sleep(200);
      assert.equal(server.upgrades.length, 1);
      assertNoSecrets(logs.lines, API_KEY);
    }
  });

  it('a handshake reply that echoes the credentials keeps them out of the error and the log, even past the shown length', async () => {
    const longAuth = 'admin:a-password-far-longer-than-forty-characters-0123';
    const server = await hostileServer((ws) => ws.once('message', (m: Buffer) => ws.send(JSON.stringify({ type: (JSON.parse(m.toString('utf8')) as { token: string }).token }))));
    const { sub, logs } = subscribe(server, { authString: longAuth });
    await assert.rejects(sub.done, (err: unknown) => {
      assert.ok(err instanceof AuthError);
      assert.deepEqual(
        { setting: err.setting, message: err.message },
        { setting: 'PREFECT_API_AUTH_STRING', message: 'the Prefect event stream refused authentication (expected auth_success, got "[redacted]"): check PREFECT_API_AUTH_STRING' },
      );
      return true;
    });
    await sub.stop();
    assertNoSecrets(logs.lines, longAuth, longAuth.slice(0, 30));
  });

  it("a close with an application code (4000-4999, both ends included) in answer to the auth message is a refusal, as Prefect's own client takes it: an AuthError with its reason, not a retry loop", async () => {
    for (const code of [4000, 4003, 4999]) {
      let sockets = 0;
      const server = await hostileServer((ws) => {
        sockets += 1;
        ws.once('message', () => ws.close(code, 'workspace access denied'));
      });
      const { sub, logs } = subscribe(server, { apiKey: API_KEY });
      const outcome = await Promise.race([
        sub.done.then(() => 'resolved', (err: unknown) => err),
        waitFor('three attempts', () => sockets >= 3).then(() => 'retried'),
      ]);
      await sub.stop();
      assert.ok(outcome instanceof AuthError, `close ${code}: expected an AuthError, got ${String(outcome)}`);
      assert.deepEqual(
        { setting: outcome.setting, message: outcome.message, sockets },
        { setting: 'PREFECT_API_KEY', message: `the Prefect event stream refused authentication (close ${code}: workspace access denied): check PREFECT_API_KEY (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)`, sockets: 1 },
      );
      assertNoSecrets(logs.lines, API_KEY);
    }
  });

  it("the close reason of a refusal is shown as server text on one line: line breaks as one space, control characters escaped, a credential it quotes redacted, also one the reason's 123-byte limit cut short", async () => {
    const longAuth = `admin:${'p'.repeat(150)}`;
    const reasons = [`Invalid token\r\n\u001b[2J for ${longAuth}`, `Invalid token\u2028for ${longAuth}`];
    const server = await hostileServer((ws) => {
      let reason = reasons.shift()!;
      while (Buffer.byteLength(reason) > 123) reason = reason.slice(0, -1);
      ws.once('message', () => ws.close(1008, reason));
    });
    const messages: string[] = [];
    for (let i = 0; i < 2; i++) {
      const { sub, logs } = subscribe(server, { authString: longAuth });
      await assert.rejects(sub.done, (err: unknown) => err instanceof AuthError && messages.push(err.message) > 0);
      await sub.stop();
      assertNoSecrets([...logs.lines, ...messages], longAuth, longAuth.slice(0, 20));
    }
    assert.deepEqual(messages, [
      'the Prefect event stream refused authentication (close 1008: Invalid token \\x1b[2J for [redacted]): check PREFECT_API_AUTH_STRING',
      'the Prefect event stream refused authentication (close 1008: Invalid token for [redacted]): check PREFECT_API_AUTH_STRING',
    ]);
  });

  it("a refusal sent as a message says its reason, as Prefect's own client does, and the code and reason of the close that follows it", async () => {
    const server = await hostileServer((ws) =>
      ws.once('message', () => {
        ws.send(JSON.stringify({ type: 'auth_failure', reason: 'API key expired\n' }));
        ws.close(1008, 'Invalid token');
      }),
    );
    const { sub, logs } = subscribe(server, { apiKey: API_KEY });
    await assert.rejects(sub.done, (err: unknown) => {
      assert.ok(err instanceof AuthError);
      assert.deepEqual(
        { setting: err.setting, message: err.message },
        {
          setting: 'PREFECT_API_KEY',
          message: 'the Prefect event stream refused authentication (expected auth_success, got "auth_failure": API key expired; close 1008: Invalid token): check PREFECT_API_KEY (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)',
        },
      );
      return true;
    });
    await sub.stop();
    assertNoSecrets(logs.lines, API_KEY);
  });

  it("a reply to the auth message that is not Prefect's (a proxy's page, a garbled frame, JSON without a type) is no refused credentials: it is retried, and three in a row stop with a ProtocolError quoting the last", async () => {
    const page = `<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>${'x'.repeat(300)} ${API_KEY}</body></html>`;
    const server = await mini({ apiKey: API_KEY });
    server.switches.authReplies = ['not JSON {', '{"detail":"Not authenticated"}', page];
    const { sub, logs } = subscribe(server, { apiKey: API_KEY });
    const outcome = await outcomeOf(sub, () => server.upgrades.length > 3);
    assert.ok(outcome instanceof ProtocolError, String(outcome));
    {
      const err = outcome;
      assert.equal(
        err.message,
        `the Prefect event stream answered the auth message with something other than Prefect's protocol (expected {"type":"auth_success"}, got "<html> <head><title>502 Bad Gateway</title></head> <body>${'x'.repeat(63)}…")`,
      );
    }
    await sleep(200);
    const retries = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith(ANSWERED));
    assert.deepEqual(
      { upgrades: server.upgrades.length, connects: sub.stats.connects, retries: retries.map((r) => errMessage(r.err)) },
      {
        upgrades: 3,
        connects: 0,
        retries: [
          `the Prefect event stream answered the auth message with something other than Prefect's protocol (expected {"type":"auth_success"}, got "not JSON {")`,
          `the Prefect event stream answered the auth message with something other than Prefect's protocol (expected {"type":"auth_success"}, got "{"detail":"Not authenticated"}")`,
        ],
      },
    );
    await sub.stop();
    assertNoSecrets(logs.lines, API_KEY);
  });

  it("one reply to the auth message that is not Prefect's, then Prefect's own: the stream is followed", async () => {
    const server = await mini({ apiKey: API_KEY });
    server.switches.authReplies = ['<html>502 Bad Gateway</html>'];
    const { sub } = subscribe(server, { apiKey: API_KEY });
    await waitFor('connected', () => sub.stats.connected);
    await sub.stop();
    await sub.done;
    assert.deepEqual({ upgrades: server.upgrades.length, connects: sub.stats.connects, reconnects: sub.stats.reconnects }, { upgrades: 2, connects: 1, reconnects: 1 });
  });

  it("an upgrade answered without the sub-protocol `prefect` (a proxy or ingress that drops Sec-WebSocket-Protocol) is retried, and three in a row stop with a ProtocolError naming the cause", async () => {
    const server = await mini({ apiKey: API_KEY });
    server.switches.stripSubprotocol = Infinity;
    const { sub, logs } = subscribe(server, { apiKey: API_KEY });
    const expected =
      'the event stream\'s websocket upgrade was answered without the sub-protocol "prefect" (no Sec-WebSocket-Protocol header in the HTTP 101 answer): a proxy or ingress in front of the Prefect server drops that header; it must pass Sec-WebSocket-Protocol through, on the request and on the answer';
    const outcome = await outcomeOf(sub, () => server.upgrades.length > 3);
    assert.ok(outcome instanceof ProtocolError, String(outcome));
    assert.equal(outcome.message, expected);
    await sleep(200);
    const retries = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith(ANSWERED));
    assert.deepEqual({ upgrades: server.upgrades.length, connects: sub.stats.connects, retries: retries.map((r) => errMessage(r.err)) }, { upgrades: 3, connects: 0, retries: [expected, expected] });
    await sub.stop();
  });

  it('two upgrades answered without the sub-protocol, then one with it: the stream is followed', async () => {
    const server = await mini({ apiKey: API_KEY });
    server.switches.stripSubprotocol = 2;
    const { sub } = subscribe(server, { apiKey: API_KEY });
    await waitFor('connected', () => sub.stats.connected);
    await sub.stop();
    await sub.done;
    assert.deepEqual({ upgrades: server.upgrades.length, connects: sub.stats.connects, reconnects: sub.stats.reconnects }, { upgrades: 3, connects: 1, reconnects: 2 });
  });

  it('an upgrade answered with another sub-protocol says which', async () => {
    const http = createServer((_req, res) => res.writeHead(404).end());
    const wss = new WebSocketServer({ server: http, handleProtocols: () => 'prefect' });
    wss.on('headers', (headers) => headers.splice(headers.findIndex((h) => h.startsWith('Sec-WebSocket-Protocol:')), 1, 'Sec-WebSocket-Protocol: graphql-ws'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    hostile.push({ close: () => new Promise<void>((resolve) => wss.close(() => http.close(() => resolve()))) });
    const { sub } = subscribe({ url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/api` }, { apiKey: API_KEY });
    const outcome = await outcomeOf(sub, () => sub.stats.reconnects > 3);
    assert.ok(outcome instanceof ProtocolError, String(outcome));
    assert.equal(
      outcome.message,
      'the event stream\'s websocket upgrade was answered without the sub-protocol "prefect" (Sec-WebSocket-Protocol "graphql-ws" in the HTTP 101 answer): a proxy or ingress in front of the Prefect server changes that header; it must pass Sec-WebSocket-Protocol through, on the request and on the answer',
    );
    await sub.stop();
  });

  it('a connection dropped (1006) or closed with a server error (1011) in answer to the auth message is retried', async () => {
    for (const close of [(ws: WebSocket) => ws.terminate(), (ws: WebSocket) => ws.close(1011)]) {
      let sockets = 0;
      const server = await hostileServer((ws) => {
        sockets += 1;
        ws.once('message', () => close(ws));
      });
      const { sub } = subscribe(server, { apiKey: API_KEY });
      try {
        await waitFor('three attempts', () => sockets >= 3);
      } finally {
        await sub.stop();
      }
      assert.deepEqual({ connects: sub.stats.connects, lastError: sub.stats.lastError?.replace(/\d{4}/, 'CODE') }, { connects: 0, lastError: 'closed with CODE in answer to the auth message, before any reply' });
    }
  });

  it('a connection closed in answer to the auth message without a reply ten times in a row (a proxy that ends it on refused credentials) stops with an AuthError naming the setting; fewer, then a reply, are followed', async () => {
    for (const [close, shown] of [[(ws: WebSocket) => ws.terminate(), 'close 1006'], [(ws: WebSocket) => ws.close(1011, 'auth backend'), 'close 1011: auth backend']] as const) {
      let sockets = 0;
      const server = await hostileServer((ws) => {
        sockets += 1;
        ws.once('message', () => close(ws));
      });
      const { sub, logs } = subscribe(server, { apiKey: API_KEY });
      try {
        await assert.rejects(sub.done, (err: unknown) => {
          assert.ok(err instanceof AuthError);
          assert.deepEqual(
            { message: err.message, setting: err.setting, sockets, connects: sub.stats.connects },
            {
              message: `the Prefect event stream closed the connection in answer to the auth message 10 times in a row, without a reply (last: ${shown}); Prefect's own client takes that as refused credentials, as a proxy or gateway that checks them may end the connection so: check PREFECT_API_KEY (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)`,
              setting: 'PREFECT_API_KEY',
              sockets: 10,
              connects: 0,
            },
          );
          return true;
        });
      } finally {
        await sub.stop();
      }
      assertNoSecrets(logs.lines, API_KEY);
    }

    // Nine drops, then Prefect's answer: the subscription is made; nothing given up.
    let sockets = 0;
    let filters = 0;
    const server = await hostileServer((ws) => {
      sockets += 1;
      const n = sockets;
      ws.once('message', () => {
        if (n < 10) return void ws.terminate();
        ws.send(JSON.stringify({ type: 'auth_success' }));
        ws.once('message', () => void (filters += 1));
      });
    });
    const { sub } = subscribe(server, { apiKey: API_KEY });
    let rejected: unknown;
    sub.done.catch((err: unknown) => void (rejected = err));
    try {
      await waitFor('the filter', () => filters === 1);
    } finally {
      await sub.stop();
    }
    assert.deepEqual({ sockets, connects: sub.stats.connects, rejected }, { sockets: 10, connects: 1, rejected: undefined });
  });

  it('handshake failures count in a row per kind: a close without a reply, a reply in no Prefect form and an auth reply that never comes each start the others\' count again, and a reply that never comes is not taken for refused credentials', async () => {
    // What each connection gets in answer to the auth message, in turn: P a reply in no Prefect form,
    // D the connection dropped, T nothing at all (the subscriber's handshake timeout ends it).
    const plan = ['P', 'P', ...Array<string>(9).fill('D'), 'T', ...Array<string>(9).fill('D'), 'P', ...Array<string>(10).fill('D')];
    const page = '<html>502 Bad Gateway</html>';
    let sockets = 0;
    const server = await hostileServer((ws) => {
      const kind = plan[sockets] ?? 'D';
      sockets += 1;
      ws.once('message', () => {
        if (kind === 'P') ws.send(page);
        else if (kind === 'D') ws.terminate();
      });
    });
    const { sub, logs } = subscribe(server, { apiKey: API_KEY, handshakeTimeoutMs: 500, initialBackoffMs: 5, maxBackoffMs: 10 });
    const outcome = await Promise.race([
      sub.done.then(() => 'resolved', (err: unknown) => err),
      waitFor('more attempts than planned', () => sockets > plan.length, 30_000).then(() => 'retried'),
    ]);
    await sub.stop();
    assert.ok(outcome instanceof AuthError, String(outcome));
    const why: Record<string, string> = {
      P: `the Prefect event stream answered the auth message with something other than Prefect's protocol (expected {"type":"auth_success"}, got "${page}")`,
      D: 'closed with 1006 in answer to the auth message, before any reply',
      T: 'no auth reply within 500 ms',
    };
    const retries = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith(ANSWERED));
    assert.deepEqual(
      { message: outcome.message, setting: outcome.setting, sockets, connects: sub.stats.connects, retries: retries.map((r) => ({ attempt: r.attempt, err: errMessage(r.err) })) },
      {
        message: "the Prefect event stream closed the connection in answer to the auth message 10 times in a row, without a reply (last: close 1006); Prefect's own client takes that as refused credentials, as a proxy or gateway that checks them may end the connection so: check PREFECT_API_KEY (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)",
        setting: 'PREFECT_API_KEY',
        sockets: plan.length,
        connects: 0,
        // The last connection's failure gives up instead of retrying.
        retries: plan.slice(0, -1).map((kind, i) => ({ attempt: i + 1, err: why[kind] })),
      },
    );
    assertNoSecrets(logs.lines, API_KEY);
  });

  it('a redirect on the upgrade is not followed; the retries say where it points, without its query, and the API URL setting as it was given', async () => {
    const http = createServer((_req, res) => res.writeHead(404).end());
    let upgrades = 0;
    http.on('upgrade', (_req, socket: Duplex) => {
      upgrades += 1;
      socket.on('error', () => undefined).end('HTTP/1.1 301 Moved Permanently\r\nLocation: https://prefect.example.com/api/events/out?sso=abc\r\nContent-Length: 0\r\n\r\n');
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    hostile.push({ close: () => new Promise<void>((resolve) => http.close(() => resolve())) });
    const { sub, logs } = subscribe({ url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/api` }, { apiKey: API_KEY, apiUrlName: 'option apiUrl' });
    try {
      await waitFor('two attempts', () => upgrades >= 2);
    } finally {
      await sub.stop();
    }
    const retries = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith(ANSWERED));
    assert.deepEqual(new Set(retries.map((r) => errMessage(r.err))), new Set(['HTTP 301 on the upgrade, redirected to https://prefect.example.com/api/events/out (not followed: option apiUrl may have to name that server)']));
    assert.equal(sub.stats.connects, 0);
    assertNoSecrets(logs.lines, API_KEY, 'sso=abc');
  });

  it('PREFECT_API_URL without its /api: the HTTP 403 a Prefect server answers to a websocket at another path (or a 404 from a proxy) is retried, each retry saying what the API URL must be, named as it was given, not taken as refused credentials', async () => {
    const server = await mini({});
    const http = createServer((_req, res) => res.writeHead(404).end());
    http.on('upgrade', (_req, socket: Duplex) => socket.on('error', () => undefined).end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    hostile.push({ close: () => new Promise<void>((resolve) => http.close(() => resolve())) });
    for (const [status, url, apiUrlName] of [[403, server.url.replace(/\/api$/, ''), undefined], [404, `http://127.0.0.1:${(http.address() as AddressInfo).port}`, '--api-url']] as const) {
      const { sub, logs } = subscribe({ url }, { apiKey: API_KEY, apiUrlName });
      const before = server.upgrades.length;
      let outcome: unknown = 'retried';
      sub.done.catch((err: unknown) => void (outcome = err));
      try {
        await waitFor('two attempts', () => (status === 403 ? server.upgrades.length - before : sub.stats.reconnects) >= 2 || outcome !== 'retried');
      } finally {
        await sub.stop();
      }
      const retries = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith(ANSWERED));
      assert.deepEqual(
        { outcome: outcome instanceof Error ? outcome.message : outcome, connects: sub.stats.connects, errs: new Set(retries.map((r) => errMessage(r.err))) },
        {
          outcome: 'retried',
          connects: 0,
          errs: new Set([`HTTP ${status} on the upgrade: no Prefect event stream there (${apiUrlName ?? 'PREFECT_API_URL'} must be the API's URL, which for a self-hosted server ends in /api, e.g. http://host:4200/api)`]),
        },
        `HTTP ${status}`,
      );
      assertNoSecrets(logs.lines, API_KEY);
    }
  });

  it('a URL whose server answers the upgrade with a page (HTTP 200: a UI\'s catch-all route, a proxy that drops the upgrade) is retried, each retry saying what the API URL must be', async () => {
    const http = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>Prefect</title>'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    hostile.push({ close: () => new Promise<void>((resolve) => http.close(() => resolve())) });
    const { sub, logs } = subscribe({ url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/api` }, { apiKey: API_KEY });
    try {
      await waitFor('two attempts', () => sub.stats.reconnects >= 2);
    } finally {
      await sub.stop();
    }
    const retries = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith(ANSWERED));
    assert.deepEqual(
      { connects: sub.stats.connects, errs: new Set(retries.map((r) => errMessage(r.err))) },
      {
        connects: 0,
        errs: new Set(["HTTP 200 on the upgrade: a page, not an event stream (PREFECT_API_URL must be the API's URL, which for a self-hosted server ends in /api, e.g. http://host:4200/api; a proxy on the way must pass websocket upgrades)"]),
      },
    );
  });

  it("a machine clock 20 minutes ahead of the server's: a fresh start asks from the server's time (its upgrade Date), says so, and gets the live events", async () => {
    const serverNowMs = Date.UTC(2026, 7, 21, 12, 0, 0);
    const aheadMs = 20 * 60_000;
    const server = await mini({ now: () => serverNowMs });
    const { sub, logs, ids } = subscribe(server, { now: () => serverNowMs + aheadMs });
    try {
      await waitFor('subscription', () => server.connections.some((c) => c.live));
      const live = event(serverNowMs);
      server.publish([live]);
      await waitFor('the live event', () => ids('live').length === 1);
      assert.deepEqual(
        {
          occurred: (server.connections[0]!.filters[0] as { filter: { occurred: unknown } }).filter.occurred,
          live: ids('live'),
          warnings: logs.records().filter((r) => r.level === 40).map((r) => ({ aheadMs: r.aheadMs, msg: r.msg })),
        },
        {
          // `until` stays a year past our own clock: it only has to be far ahead.
          // The Date header is whole seconds: the skew is taken as at least 1 s less than it may be.
          occurred: { since: new Date(serverNowMs + 1_000 - 60_000).toISOString(), until: new Date(serverNowMs + aheadMs + 365 * DAY_MS).toISOString() },
          live: [live.id],
          warnings: [{ aheadMs: aheadMs - 1_000, msg: "this machine's clock runs ahead of the Prefect server's; the event stream is asked for from the server's time" }],
        },
      );
    } finally {
      await sub.stop();
    }
  });

  it('an HTTP 429 or 503 on the upgrade with Retry-After is not asked again before it (at most 5 minutes); without one, the usual backoff', async () => {
    const retryAfter = ['7', '86400', undefined];
    const http = createServer((_req, res) => res.writeHead(404).end());
    let upgrades = 0;
    http.on('upgrade', (_req, socket: Duplex) => {
      const header = retryAfter[upgrades];
      upgrades += 1;
      socket.on('error', () => undefined).end(`HTTP/1.1 ${header === '86400' ? '503 Service Unavailable' : '429 Too Many Requests'}\r\n${header === undefined ? '' : `Retry-After: ${header}\r\n`}Content-Length: 0\r\n\r\n`);
    });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    hostile.push({ close: () => new Promise<void>((resolve) => http.close(() => resolve())) });
    const delays = async (header: string | undefined): Promise<unknown> => {
      retryAfter[0] = header;
      upgrades = 0;
      const { sub, logs } = subscribe({ url: `http://127.0.0.1:${(http.address() as AddressInfo).port}/api` }, { apiKey: API_KEY });
      try {
        await waitFor('a retry planned', () => logs.records().some((r) => typeof r.msg === 'string' && isRetry(r.msg)));
      } finally {
        await sub.stop();
      }
      const r = logs.records().find((x) => isRetry(x.msg))!;
      return { line: String(r.msg).replace(/\d+ ms$/, 'N ms'), err: errMessage(r.err), delay: (r.delayMs as number) <= 200 ? 'backoff' : r.delayMs };
    };
    assert.deepEqual(
      { seconds: await delays('7'), long: await delays('86400'), none: await delays(undefined) },
      {
        seconds: { line: `${ANSWERED} N ms`, err: 'HTTP 429 on the upgrade', delay: 7_000 },
        long: { line: `${UNREACHABLE} N ms`, err: 'HTTP 503 on the upgrade', delay: 300_000 },
        none: { line: `${ANSWERED} N ms`, err: 'HTTP 429 on the upgrade', delay: 'backoff' },
      },
    );
  });

  it('Prefect Cloud down for maintenance (HTTP 503 with Prefect-Maintenance: true, on the upgrade or on the history read first after a long gap) is said as such and waited for, however long it lasts; then the stream resumes, nothing given up', async () => {
    const follow = async (cursorUs: number | undefined): Promise<unknown> => {
      const server = await mini();
      server.switches.maintenance = true;
      server.switches.restStatus = 503;
      server.switches.restRetryAfter = '0';
      const { sub, logs, ids } = subscribe(server, { cursorUs });
      try {
        const retries = () => logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith('the Prefect API is down for maintenance, retrying in'));
        // More rounds than the history's failures in a row that give a window up.
        await waitFor('maintenance waited for', () => retries().length >= 5);
        server.switches.maintenance = false;
        server.switches.restStatus = 0;
        await waitFor('live', () => server.connections.some((c) => c.live));
        const ev = event(Date.now());
        server.publish([ev]);
        await waitFor('the live event', () => ids('live').includes(ev.id));
        return {
          said: [...new Set(retries().map((r) => errMessage(r.err)))],
          warnings: logs.records().filter((r) => (r.level as number) >= 40 && !String(r.msg).startsWith('the Prefect API is down for maintenance')).map((r) => r.msg),
        };
      } finally {
        await sub.stop();
      }
    };
    assert.deepEqual(
      { fresh: await follow(undefined), gap: await follow((Date.now() - 30 * 60_000) * 1000) },
      {
        fresh: { said: ['HTTP 503 on the upgrade, marked Prefect-Maintenance: true'], warnings: [] },
        gap: { said: ['event history: POST /events/filter: HTTP 503, marked Prefect-Maintenance: true'], warnings: [] },
      },
    );
  });

  it('a close 1002 after the filter (bad filter) is a ProtocolError and stops', async () => {
    const server = await mini({ rejectFilters: true });
    const { sub, logs } = subscribe(server);
    await assert.rejects(sub.done, (err: unknown) => {
      assert.ok(err instanceof ProtocolError);
      assert.equal(err.message, 'the Prefect server rejected the subscription (close 1002: Invalid filter: forced)');
      return true;
    });
    await sleep(200);
    assert.equal(server.connections.length, 1);
    // The rejection carries it; the caller reports it once.
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 50), []);
  });

  it('a close 1002 after the stream sent events (a proxy or a garbled frame, not a filter refused) is a dropped connection: it reconnects and resumes', async () => {
    const server = await mini();
    const { sub, ids } = subscribe(server);
    const first = [event(Date.now()), event(Date.now())];
    server.publish(first);
    await waitFor('live events', () => ids().length === 2);
    server.dropConnections(1002);
    await waitFor('a second connection', () => server.connections.length === 2 && server.connections[1]!.live);
    const second = [event(Date.now() + 2)];
    server.publish(second);
    await waitFor('the event after the reconnect', () => ids().includes(second[0]!.id));
    await sub.stop();
    await sub.done;
    // The second backfill overlaps the first connection's events (the caller dedupes by id).
    assert.deepEqual([...new Set(ids())], [...first, ...second].map((e) => e.id));
  });
});

describe('event subscriber: frames', () => {
  it('an onEvent that throws and a binary frame do not disturb the socket', async () => {
    const server = await mini();
    const got: string[] = [];
    const { sub, logs } = subscribe(server, {
      onEvent: (value) => {
        got.push(value as string);
        throw new Error('callback bug');
      },
    });
    await waitFor('connected', () => sub.stats.connected);
    // Raw frames go only to subscriptions the server has taken the filter of; the client counts
    // itself connected once it has sent the filter, which the server may not have read yet.
    await server.waitForConnections(1);
    server.sendRaw('{"type":"event","event":{"id":"first"}}');
    server.sendRaw(Buffer.from('{"type":"event","event":{"id":"binary"}}'), true);
    server.sendRaw('not json at all');
    await waitFor('three frames', () => got.length === 3);
    await sub.stop();
    assert.deepEqual(got, ['{"type":"event","event":{"id":"first"}}', '{"type":"event","event":{"id":"binary"}}', 'not json at all']);
    assert.deepEqual(sub.stats, { connects: 1, reconnects: 0, frames: 3, historyEvents: 0, connected: false });
    assert.equal(server.connections.length, 1);
    // Logged once (then at most every 10 s with a count), not once per frame.
    assert.deepEqual(
      logs.records().filter((r) => r.msg === 'onEvent callback threw; event skipped').map((r) => [r.level, r.origin, r.count, (r.err as { message: string }).message]),
      [[50, 'live', 1, 'callback bug']],
    );
  });

  it('at debug, each live frame is logged raw: cut to its first 4096 characters, credentials redacted; at info, none', async () => {
    const server = await mini({ authString: AUTH_STRING });
    const frames = [
      '{"type":"event","event":{"id":"short"}}',
      `{"type":"event","event":{"id":"long","payload":{"x":"${'y'.repeat(5_000)}"}}}`,
      `{"type":"event","event":{"id":"echo","payload":{"said":"${AUTH_STRING}"}}}`,
    ];
    const debug = subscribe(server, { authString: AUTH_STRING });
    const infoLines: string[] = [];
    const info = subscribe(server, { authString: AUTH_STRING, logger: pino({ level: 'info' }, { write: (line: string) => void infoLines.push(line) }) });
    await server.waitForConnections(2);
    for (const f of frames) server.sendRaw(f);
    await waitFor('the frames on both', () => debug.received.length === 3 && info.received.length === 3);
    await debug.sub.stop();
    await info.sub.stop();
    assert.deepEqual(
      debug.logs.records().filter((r) => r.msg === 'event stream frame').map(({ level, frame }) => ({ level, frame })),
      [
        { level: 20, frame: frames[0] },
        { level: 20, frame: `${frames[1]!.slice(0, 4096)}…` },
        { level: 20, frame: '{"type":"event","event":{"id":"echo","payload":{"said":"[redacted]"}}}' },
      ],
    );
    assert.deepEqual(infoLines.filter((l) => l.includes('event stream frame')), []);
  });

  it('a frame past the 16 MiB bound drops the connection with that reason logged, and the stream is followed again', async () => {
    let sockets = 0;
    const next = event(Date.now());
    const server = await hostileServer((ws) => {
      sockets += 1;
      const first = sockets === 1;
      ws.once('message', () => {
        ws.send(JSON.stringify({ type: 'auth_success' }));
        ws.once('message', () => ws.send(first ? 'x'.repeat(16 * 1024 * 1024 + 1) : JSON.stringify({ type: 'event', event: next })));
      });
    });
    const { sub, logs, ids } = subscribe(server);
    try {
      await waitFor('the event after the reconnect', () => ids('live').includes(next.id));
    } finally {
      await sub.stop();
    }
    const closed = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith('event stream closed, reconnecting'));
    assert.deepEqual(
      // (The close code is ws's: it ends the socket without waiting for the server's close frame.)
      closed.map(({ level, reason, attempt }) => ({ level, reason, attempt })),
      [{ level: 40, reason: 'a frame larger than 16777216 bytes', attempt: 1 }],
    );
  });
});

describe('event subscriber: reconnects', () => {
  it('reconnects after the server drops the socket, resuming from the cursor − margin', async () => {
    const server = await mini();
    const t0 = Date.now();
    server.store([event(t0 - 30_000)]);
    const { sub, logs, ids, state } = subscribe(server, { cursorUs: (t0 - 20_000) * 1000 });
    await waitFor('connected', () => sub.stats.connected);
    const first = [event(Date.now()), event(Date.now() + 1)];
    server.publish(first);
    await waitFor('first events', () => ids().length === 2);
    const cursorAtDrop = state.cursorUs!;
    server.dropConnections(1011);
    await waitFor('second connection', () => server.connections.length === 2 && server.connections[1]!.live);
    const second = [event(Date.now() + 2)];
    server.publish(second);
    await waitFor('event after the reconnect', () => ids().includes(second[0]!.id));
    await sub.stop();

    assert.deepEqual(
      server.connections.map((c) => (filterWithCheckedUntil(c.filters[0]) as { filter: { occurred: { since: string } } }).filter.occurred.since),
      [new Date(t0 - 20_000 - 2_000).toISOString(), new Date(Math.floor(cursorAtDrop / 1000) - 2_000).toISOString()],
    );
    // The second backfill overlaps (the caller dedupes by id); nothing is lost.
    assert.deepEqual([...new Set(ids())], [first[0]!.id, first[1]!.id, second[0]!.id]);
    assert.deepEqual({ ...sub.stats, frames: undefined }, { connects: 2, reconnects: 1, frames: undefined, historyEvents: 0, connected: false, lastError: 'closed 1011 dropped by the test' });
    const warn = logs.records().find((r) => typeof r.msg === 'string' && r.msg.startsWith('event stream closed, reconnecting in'));
    assert.deepEqual(warn && { level: warn.level, closeCode: warn.closeCode, reason: warn.reason, attempt: warn.attempt }, { level: 40, closeCode: 1011, reason: 'dropped by the test', attempt: 1 });
  });

  it("events published just before a restart's or a reconnect's subscription, not yet written by the server's EventPersister (so in neither the backfill nor the live stream), are read from the history once it has written them", async (t) => {
    const server = await mini();
    const t0 = Date.now();
    const beforeStart = event(t0 - 1_000);
    server.switches.holdPersist = true;
    server.publish(beforeStart); // while no prefect-otel process runs
    const { sub, ids, logs } = subscribe(server, { cursorUs: (t0 - 30_000) * 1000, persistLagMs: 500, backfillQuietMs: 200 });
    t.after(() => sub.stop());
    await server.waitForConnections(1);
    const connectedAt = Date.now();
    server.switches.holdPersist = false;
    await waitFor('the event published before the start', () => ids().includes(beforeStart.id));

    server.switches.holdPersist = true;
    server.dropConnections();
    const duringDrop = event(Date.now());
    server.publish(duringDrop); // no socket to deliver it to
    await server.waitForConnections(2);
    const reconnectedAt = Date.now();
    server.switches.holdPersist = false;
    await waitFor('the event published during the drop', () => ids().includes(duringDrop.id));
    await sub.stop();

    // Read again by the second subscription too (its window reaches back over the first): the caller dedupes.
    assert.deepEqual([...new Set(ids('history'))], [beforeStart.id, duringDrop.id]);
    // Neither came live: the second subscription's backfill has only the one written before it.
    assert.deepEqual(ids('live'), [beforeStart.id]);
    // One read per subscription, of the end of its backfill window: from the resume margin (2 s,
    // here longer than the lag) before the subscription (later than the filter's `since`), to when it is read.
    const windows = server.restRequests.map((r) => {
      assert.equal(`${r.method} ${r.path}`, 'POST /api/events/filter');
      return (r.body as { filter: { occurred: { since: string; until: string } } }).filter.occurred;
    });
    assert.equal(windows.length, 2);
    [connectedAt, reconnectedAt].forEach((at, i) => {
      const { since, until } = windows[i]!;
      assert.ok(Date.parse(since) >= at - 2_000 - 1_000 && Date.parse(since) <= at - 2_000, `read ${i + 1} since ${since}`);
      assert.ok(Date.parse(until) > at, `read ${i + 1} until ${until}`);
    });
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 50).map((r) => r.msg), []);
  });

  it('with a persist lag longer than the resume margin, the end of the backfill window is read again from the lag before the subscription: an event published a second before it, not yet written then, comes from the history', async (t) => {
    const server = await mini();
    const t0 = Date.now();
    const beforeStart = event(t0 - 1_000);
    server.switches.holdPersist = true;
    server.publish(beforeStart); // while no prefect-otel process runs
    const { sub, ids } = subscribe(server, { cursorUs: (t0 - 30_000) * 1000, resumeMarginMs: 200, persistLagMs: 1_500, backfillQuietMs: 200 });
    t.after(() => sub.stop());
    await server.waitForConnections(1);
    const connectedAt = Date.now();
    server.switches.holdPersist = false;
    await waitFor('the re-read', () => server.restRequests.length > 0);
    await waitFor('the event published before the start', () => ids().includes(beforeStart.id), 5_000).catch(() => undefined);
    await sub.stop();
    const [window, ...more] = server.restRequests.map((r) => (r.body as { filter: { occurred: { since: string; until: string } } }).filter.occurred);
    assert.deepEqual({ more, history: ids('history'), live: ids('live') }, { more: [], history: [beforeStart.id], live: [] });
    assert.ok(Date.parse(window!.since) >= connectedAt - 1_500 - 1_000 && Date.parse(window!.since) <= connectedAt - 1_500, `since ${window!.since}`);
    assert.ok(Date.parse(window!.until) > connectedAt, `until ${window!.until}`);
  });

  it('a re-read of the end of the backfill window whose server fails now and then (HTTP 500 on every other request) while each request gets further is read to its end, not given up after three failures in all', async (t) => {
    const server = await mini();
    const t0 = Date.now();
    // Six pages of the history, all within the resume margin before the subscription.
    const recent = Array.from({ length: 300 }, (_, i) => event(t0 - 1_000 + i));
    server.store(recent);
    server.switches.restFailEvery = 2;
    const { sub, ids, logs } = subscribe(server, { cursorUs: (t0 - 30_000) * 1000, resumeMarginMs: 5_000, persistLagMs: 300, backfillQuietMs: 200 });
    t.after(() => sub.stop());
    const warned = () => logs.records().some((r) => (r.level as number) >= 40);
    await waitFor('every event read again from the history, or a warning', () => new Set(ids('history')).size === recent.length || warned());
    await sub.stop();
    assert.deepEqual(
      { history: [...new Set(ids('history'))], warnings: logs.records().filter((r) => (r.level as number) >= 40).map((r) => r.msg) },
      { history: recent.map((e) => e.id), warnings: [] },
    );
    // Each request after the first resumes from the last event read: it fails every other time, and is asked again.
    assert.ok(server.restRequests.length >= 8, `${server.restRequests.length} requests`);
  });

  it('a connection that closes right after an event newer than its subscription showed its backfill sent, before that was next checked, still has the end of its window read again', async (t) => {
    const server = await mini();
    // A long quiet time: the backfill is checked for being sent once a second.
    const { sub, ids } = subscribe(server, { cursorUs: (Date.now() - 30_000) * 1000, persistLagMs: 300, backfillQuietMs: 60_000 });
    t.after(() => sub.stop());
    const subscribedAt: number[] = [];
    for (let n = 1; n <= 2; n++) {
      await server.waitForConnections(n);
      subscribedAt.push(Date.now());
      const next = event(Date.now() + 5);
      server.publish(next);
      await waitFor('the live event', () => ids('live').includes(next.id));
      if (n === 1) server.dropConnections();
    }
    await waitFor('two re-reads', () => server.restRequests.length >= 2, 5_000).catch(() => undefined);
    await sub.stop();
    const windows = server.restRequests.map((r) => (r.body as { filter: { occurred: { since: string; until: string } } }).filter.occurred);
    assert.equal(windows.length, 2, JSON.stringify(windows));
    subscribedAt.forEach((at, i) => {
      const { since } = windows[i]!;
      assert.ok(Date.parse(since) >= at - 2_000 - 1_000 && Date.parse(since) <= at - 2_000, `read ${i + 1} since ${since}`);
    });
  });

  it('a fresh start (no cursor, nothing followed before) reads no history after connecting', async (t) => {
    const server = await mini();
    const { sub } = subscribe(server, { persistLagMs: 200 });
    t.after(() => sub.stop());
    await waitFor('connected', () => sub.stats.connected);
    await sleep(600);
    await sub.stop();
    assert.deepEqual(server.restRequests, []);
  });

  /**
   * A long backfill (its pages slow to query) while live events keep coming: the server queues at most
   * 256 of them for the subscriber and silently drops the rest (Prefect's SUBSCRIPTION_BACKLOG). Each
   * of those must come from the history once the backfill is sent. Returns what came and what was asked.
   */
  async function liveDuringLongBackfill(t: { after: (fn: () => unknown) => void }, cursor: boolean, historyFailures = 0) {
    const server = await mini({ backfillPageDelayMs: 150 });
    // The first requests of the history fail, as on a server whose database is busy.
    for (let i = 0; i < historyFailures; i++) server.switches.restReplies.push({ status: 500, contentType: 'application/json', body: '{"exception_message":"Internal Server Error"}' });
    const t0 = Date.now();
    const older = Array.from({ length: 2_000 }, (_, i) => event(t0 - 50_000 + i));
    server.store(older);
    const { sub, ids, logs } = subscribe(server, { persistLagMs: 300, backfillQuietMs: 200, ...(cursor ? { cursorUs: (t0 - 55_000) * 1000 } : {}) });
    t.after(() => sub.stop());
    await server.waitForConnections(1);
    // Live events for longer than the backfill takes (and than the lag after the subscription).
    const live: TestEvent[] = [];
    for (let i = 0; i < 12; i++) {
      const batch = Array.from({ length: 100 }, () => event(Date.now()));
      live.push(...batch);
      server.publish(batch);
      await sleep(100);
    }
    const all = [...older, ...live].map((e) => e.id);
    // Every event, or a warning (the re-read given up): the callers' assertions then say what is missing.
    const warned = () => logs.lines.some((l) => /^\{"level":[456]0,/.test(l));
    await waitFor('every event, or a warning', () => new Set(ids()).size === all.length || warned(), 30_000).catch(() => undefined);
    await sub.stop();
    return { server, ids, logs, all, live };
  }

  it('live events that the server dropped while it sent a long backfill after a reconnect or a restart (its 256-event queue full) are read from the history once the backfill is sent, also when it took longer than the lag', async (t) => {
    const { server, ids, logs, all, live } = await liveDuringLongBackfill(t, true);
    assert.ok(server.connections[0]!.dropped > 0 && server.connections[0]!.dropped < live.length, `dropped ${server.connections[0]!.dropped}`);
    assert.deepEqual([...new Set(ids())].sort(), [...all].sort());
    // The dropped ones came from the history; what the server sent came live.
    assert.equal(new Set(ids('live')).size, all.length - server.connections[0]!.dropped);
    // One read of the end of the backfill window, paged (200 a page), none before the backfill was sent.
    assert.deepEqual(historyReads(server.restRequests), 1);
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 40).map((r) => r.msg), []);
  });

  it('a fresh start whose backfill was long enough for the server to drop live events (256 queued) reads them from the history too', async (t) => {
    const { server, ids, logs, all, live } = await liveDuringLongBackfill(t, false);
    assert.ok(server.connections[0]!.dropped > 0 && server.connections[0]!.dropped < live.length, `dropped ${server.connections[0]!.dropped}`);
    assert.deepEqual([...new Set(ids())].sort(), [...all].sort());
    assert.deepEqual(historyReads(server.restRequests), 1);
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 40).map((r) => r.msg), []);
  });

  it('a re-read of the end of the backfill window whose request fails (a busy database) is asked again, and the events the server dropped come', async (t) => {
    const { server, ids, logs, all, live } = await liveDuringLongBackfill(t, true, 2);
    assert.ok(server.connections[0]!.dropped > 0 && server.connections[0]!.dropped < live.length, `dropped ${server.connections[0]!.dropped}`);
    assert.deepEqual([...new Set(ids())].sort(), [...all].sort());
    assert.deepEqual(server.restRequests.map((r) => r.method).slice(0, 3), ['POST', 'POST', 'POST']);
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 40).map((r) => r.msg), []);
  });

  it('a re-read of the end of the backfill window is given up after three failed requests in a row, with a warning', async (t) => {
    const { server, logs } = await liveDuringLongBackfill(t, true, 3);
    assert.deepEqual(server.restRequests.map((r) => `${r.method} ${r.path}`), Array<string>(3).fill('POST /api/events/filter'));
    assert.deepEqual(
      logs.records().filter((r) => (r.level as number) >= 40).map(({ msg, err, eventsRead }) => ({ msg, err: errMessage(err), eventsRead })),
      [{ msg: 'reading the end of the backfill window again from the event history failed; events published just before the connection may be missing', err: 'POST /events/filter: HTTP 500', eventsRead: 0 }],
    );
  });

  it('a connection that drops after its long backfill was sent, before the end of its window was read again, still has it read: the next one resumes only from its last event minus the margin, past what the server dropped', async (t) => {
    const server = await mini({ backfillPageDelayMs: 150 });
    const t0 = Date.now();
    const older = Array.from({ length: 2_000 }, (_, i) => event(t0 - 50_000 + i));
    server.store(older);
    const { sub, ids, logs } = subscribe(server, { cursorUs: (t0 - 55_000) * 1000, persistLagMs: 5_000, backfillQuietMs: 200 });
    t.after(() => sub.stop());
    await server.waitForConnections(1);
    const burst: TestEvent[] = [];
    for (let i = 0; i < 12; i++) {
      const batch = Array.from({ length: 100 }, () => event(Date.now()));
      burst.push(...batch);
      server.publish(batch);
      await sleep(100);
    }
    const has = (events: TestEvent[]) => () => {
      const got = new Set(ids());
      return events.every((e) => got.has(e.id));
    };
    await waitFor('the backfill', has(older));
    // An event more than the margin (2 s) after those the server dropped, and the connection drops.
    await sleep(Math.max(0, t0 + 3_500 - Date.now()));
    const late = event(Date.now());
    server.publish(late);
    await waitFor('the late event', has([late]));
    assert.ok(server.connections[0]!.dropped > 0, `dropped ${server.connections[0]!.dropped}`);
    server.dropConnections();
    await server.waitForConnections(2);
    const all = [...older, ...burst, late];
    await waitFor('every event', has(all), 30_000).catch(() => undefined);
    await sub.stop();
    assert.deepEqual([...new Set(ids())].sort(), all.map((e) => e.id).sort());
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 50).map((r) => r.msg), []);
  });

  it('on a busy server whose live frames never pause and all occurred before the connection (the backfill never seen as sent), the events it dropped during a long backfill are still read from the history, once the longest wait for a backfill is over', async (t) => {
    const server = await mini({ backfillPageDelayMs: 150 });
    const t0 = Date.now();
    const older = Array.from({ length: 2_000 }, (_, i) => event(t0 - 50_000 + i));
    server.store(older);
    const { sub, ids, logs } = subscribe(server, { cursorUs: (t0 - 55_000) * 1000, persistLagMs: 300, backfillQuietMs: 500, backfillMaxWaitMs: 2_500 });
    t.after(() => sub.stop());
    await server.waitForConnections(1);
    // Stamped before the connection (a server or sender clock lagging a little), within the resume margin.
    const stamped = () => event(t0 - 500);
    const burst: TestEvent[] = [];
    for (let i = 0; i < 12; i++) {
      const batch = Array.from({ length: 100 }, stamped);
      burst.push(...batch);
      server.publish(batch);
      await sleep(100);
    }
    // Then a frame every 30 ms, never the pause that would show the backfill as sent.
    const trickle: TestEvent[] = [];
    const publisher = setInterval(() => {
      const ev = stamped();
      trickle.push(ev);
      server.publish(ev);
    }, 30);
    const has = (events: TestEvent[]) => () => {
      const got = new Set(ids());
      return events.every((e) => got.has(e.id));
    };
    try {
      await waitFor('every event of the backfill and the burst', has([...older, ...burst]), 30_000).catch(() => undefined);
    } finally {
      clearInterval(publisher);
    }
    await waitFor('the last live events', has(trickle)).catch(() => undefined);
    await sub.stop();
    const all = [...older, ...burst, ...trickle].map((e) => e.id);
    assert.ok(server.connections[0]!.dropped > 0 && server.connections[0]!.dropped < burst.length, `dropped ${server.connections[0]!.dropped}`);
    assert.deepEqual([...new Set(ids())].sort(), [...all].sort());
    // One read of the end of the backfill window, paged, after the wait.
    assert.deepEqual(historyReads(server.restRequests), 1);
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 40).map((r) => r.msg), []);
  });

  it('retries an unreachable server with growing, jittered delays and connects once it is up', async () => {
    const probe = await startMiniPrefect();
    const port = probe.port;
    await probe.close();
    const { sub, logs } = subscribe({ url: `http://127.0.0.1:${port}/api` }, { initialBackoffMs: 40, maxBackoffMs: 160 });
    const retries = () => logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith('Prefect server unreachable, retrying in'));
    await waitFor('four retries', () => retries().length >= 4);
    const server = await mini({ port });
    await waitFor('connected', () => sub.stats.connected);
    await sub.stop();
    const first4 = retries().slice(0, 4);
    assert.deepEqual(first4.map((r) => [r.level, r.attempt]), [[40, 1], [40, 2], [40, 3], [40, 4]]);
    first4.forEach((r, i) => {
      const base = Math.min(160, 40 * 2 ** i);
      const delay = r.delayMs as number;
      assert.ok(delay >= base * 0.5 - 1 && delay <= base, `attempt ${i + 1}: ${delay} ms not in [${base / 2}, ${base}]`);
      assert.equal(r.msg, `Prefect server unreachable, retrying in ${delay} ms`);
      assert.match(errMessage(r.err) ?? '', /ECONNREFUSED/);
    });
    assert.equal(server.connections.length, 1);
    assert.ok(sub.stats.reconnects >= 4);
  });

  it('a connection that closes soon after it went live, again and again, is reconnected with delays that keep growing, jittered, up to the maximum: a short-lived connection does not start the backoff over', async () => {
    const server = await mini();
    server.switches.closeAfter = 1;
    const t0 = Date.now();
    server.store([event(t0 - 1_000)]);
    const { sub, logs } = subscribe(server, { cursorUs: (t0 - 5_000) * 1000, initialBackoffMs: 20, maxBackoffMs: 160 });
    const closes = () => logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith('event stream closed, reconnecting in'));
    try {
      await waitFor('twelve closes', () => closes().length >= 12);
    } finally {
      await sub.stop();
    }
    const first = closes().slice(0, 12);
    assert.deepEqual(
      first.map((r) => ({ level: r.level, closeCode: r.closeCode, attempt: r.attempt, msg: r.msg })),
      first.map((r, i) => ({ level: 40, closeCode: 1006, attempt: i + 1, msg: `event stream closed, reconnecting in ${String(r.delayMs)} ms` })),
    );
    first.forEach((r, i) => {
      const base = Math.min(160, 20 * 2 ** i);
      const delay = r.delayMs as number;
      assert.ok(delay >= base / 2 && delay <= base, `attempt ${i + 1}: ${delay} ms not in [${base / 2}, ${base}]`);
    });
    // Jittered: the nine delays at the maximum (each one of 81 values) are not all the same.
    assert.ok(new Set(first.slice(3).map((r) => r.delayMs)).size > 1, `delays ${JSON.stringify(first.map((r) => r.delayMs))}`);
    assert.ok(sub.stats.connects >= 12, `connects ${sub.stats.connects}`);
  });

  it('a proxy that takes the connection but never answers CONNECT is given up after the handshake timeout and retried, its connections closed', async () => {
    const proxy = await startSilentProxy();
    const { sub, logs } = subscribe({ url: 'http://127.0.0.1:9/api' }, { handshakeTimeoutMs: 200, initialBackoffMs: 5, maxBackoffMs: 20, proxy: { httpProxy: proxy.url, httpsProxy: undefined, noProxy: undefined } });
    const retries = () => logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith('Prefect server unreachable, retrying in'));
    try {
      await waitFor('two retries', () => retries().length >= 2, 10_000);
    } finally {
      await sub.stop();
    }
    await waitFor('the proxy connections closed', () => proxy.open() === 0);
    await proxy.close();
    assert.deepEqual(
      retries().slice(0, 2).map((r) => ({ level: r.level, err: errMessage(r.err) })),
      Array.from({ length: 2 }, () => ({ level: 40, err: `the proxy ${proxy.url} did not answer CONNECT 127.0.0.1:9 within 200 ms` })),
    );
  });

  it('a proxy that answers CONNECT with 407 (its credentials missing or wrong) is refused credentials: an AuthError naming the proxy variable, said once, not a retry loop', async () => {
    const server = await mini();
    const proxy = await startConnectProxy({ credentials: 'otel:proxy-pass' });
    after(() => proxy.close());
    for (const proxyUrl of [proxy.url, `http://otel:wrong-pass@127.0.0.1:${proxy.port}`]) {
      const { sub, logs } = subscribe(server, { initialBackoffMs: 5, maxBackoffMs: 20, proxy: { httpProxy: proxyUrl, httpsProxy: undefined, noProxy: undefined } });
      const outcome = await Promise.race([sub.done.then(() => 'resolved', (err: unknown) => err), sleep(5_000).then(() => 'still retrying')]);
      await sub.stop();
      assert.ok(outcome instanceof AuthError, String(outcome));
      assert.deepEqual(
        { message: outcome.message, setting: outcome.setting, attempts: sub.stats.reconnects, severe: logs.records().filter((r) => (r.level as number) >= 40) },
        {
          message: `the proxy ${proxy.url} refused CONNECT 127.0.0.1:${server.port} with HTTP 407 (it wants credentials: add a user and password to the proxy URL)`,
          setting: 'HTTP_PROXY',
          attempts: 0,
          severe: [],
        },
      );
      assertNoSecrets(logs.lines, 'wrong-pass');
    }
    assert.deepEqual(server.connections, []);
  });

  it('stop() while the proxy has not answered CONNECT closes the proxy connection at once, not at the handshake timeout', async () => {
    const proxy = await startSilentProxy();
    const { sub } = subscribe({ url: 'http://127.0.0.1:9/api' }, { handshakeTimeoutMs: 60_000, proxy: { httpProxy: proxy.url, httpsProxy: undefined, noProxy: undefined } });
    try {
      await waitFor('the CONNECT', () => proxy.accepted() === 1);
    } finally {
      await sub.stop();
    }
    await waitFor('the proxy connection closed', () => proxy.open() === 0);
    await proxy.close();
    assert.deepEqual({ accepted: proxy.accepted(), open: proxy.open(), connects: sub.stats.connects }, { accepted: 1, open: 0, connects: 0 });
  });

  it('terminates a socket that stays silent (no pong) for idleTimeoutMs, then reconnects', async () => {
    const server = await mini({ autoPong: false });
    server.switches.stall = true; // half-open: no events, no pongs
    const { sub, logs } = subscribe(server, { pingIntervalMs: 30, idleTimeoutMs: 150, initialBackoffMs: 10, maxBackoffMs: 20 });
    await waitFor('a second connection', () => server.connections.length >= 2);
    await sub.stop();
    const silent = logs.records().find((r) => r.msg === 'the event stream went silent; dropping the connection');
    assert.ok(silent !== undefined, `no idle-timeout log line; got ${JSON.stringify(logs.records().map((r) => r.msg))}`);
    assert.equal(silent.idleTimeoutMs, 150);
    assert.ok((silent.silentMs as number) >= 150, `silentMs ${String(silent.silentMs)}`);
    assert.equal(server.connections[0]!.closeCode, 1006);
  });

  it('keeps a quiet socket whose pings are answered', async () => {
    const server = await mini({ autoPong: true });
    // Three idle windows long; a window of half a second leaves room for a busy machine's pauses.
    const { sub, logs } = subscribe(server, { pingIntervalMs: 30, idleTimeoutMs: 500 });
    await waitFor('connected', () => sub.stats.connected);
    await sleep(1_500);
    assert.equal(sub.stats.connected, true);
    await sub.stop();
    assert.equal(server.connections.length, 1);
    assert.equal(logs.records().filter((r) => r.msg === 'the event stream went silent; dropping the connection').length, 0);
  });

  it('stop() during a backoff resolves done at once', async () => {
    const probe = await startMiniPrefect();
    await probe.close();
    // A backoff of ten minutes: a stop that waited for it would outlast the test's timeout.
    const { sub } = subscribe({ url: probe.url }, { initialBackoffMs: 600_000, maxBackoffMs: 600_000 });
    await waitFor('first failure', () => sub.stats.lastError !== undefined);
    await sub.stop();
    await sub.done;
    assert.equal(sub.stats.connected, false);
  });
});

/**
 * A subscriber resuming an hour back from a server that holds three events since, its event history
 * answered first with `replies` (as by a proxy in front of it), followed until it is live: the events
 * stored, the requests, and the subscriber's logs and events.
 */
async function resumeThroughReplies(replies: readonly { status: number; contentType: string; body: string }[], authString?: string) {
  const server = await mini(authString === undefined ? {} : { authString });
  const cursorMs = Date.now() - 60 * 60_000;
  const old = Array.from({ length: 3 }, (_, i) => event(cursorMs + 60_000 + i * 60_000));
  server.store(old);
  server.switches.restReplies.push(...replies);
  const { sub, logs, ids } = subscribe(server, { ...(authString === undefined ? {} : { authString }), cursorUs: cursorMs * 1000, initialBackoffMs: 5, maxBackoffMs: 20 });
  try {
    await waitFor('live', () => sub.stats.connected, 10_000);
  } finally {
    await sub.stop();
  }
  return { server, old, logs, ids };
}

describe('event subscriber: gap fill from history', () => {
  it('reads history pages over REST before connecting when the cursor is older than the backfill window', async () => {
    const server = await mini({ authString: AUTH_STRING });
    const now = Date.now();
    const cursorMs = now - 60 * 60_000;
    const old = Array.from({ length: 60 }, (_, i) => event(now - 55 * 60_000 + i * 50_000));
    server.store([event(cursorMs - 10 * 60_000), ...old]);
    const { sub, logs, received, ids, state } = subscribe(server, { authString: AUTH_STRING, cursorUs: cursorMs * 1000 });
    await waitFor('connected', () => sub.stats.connected);
    const live = [event(Date.now())];
    server.publish(live);
    await waitFor('live event', () => ids('live').includes(live[0]!.id));
    await sub.stop();

    assert.deepEqual(
      server.restRequests.map((r) => [r.method, r.path, r.headers.authorization]),
      [
        ['POST', '/api/events/filter', `Basic ${Buffer.from(AUTH_STRING).toString('base64')}`],
        // our API base, not the wrong absolute URL the server returned
        ['GET', `/api/events/filter/next?page-token=${encodeURIComponent('tok+/1==')}`, `Basic ${Buffer.from(AUTH_STRING).toString('base64')}`],
      ],
    );
    const body = server.restRequests[0]!.body as { filter: { occurred: { since: string; until: string } } };
    const until = Date.parse(body.filter.occurred.until);
    assert.ok(until >= now && until <= Date.now());
    assert.deepEqual(body, {
      filter: { occurred: { since: new Date(cursorMs - 2_000).toISOString(), until: body.filter.occurred.until }, order: 'ASC' },
      limit: 50,
    });
    // All of history first, in order, then the websocket (whose backfill overlaps; the caller dedupes).
    assert.deepEqual(ids('history'), old.map((e) => e.id));
    assert.ok(received.slice(0, 60).every((r) => r.origin === 'history'));
    assert.equal(typeof received[0]!.value, 'object');
    // The socket resumes from the cursor the history moved forward.
    const since = (filterWithCheckedUntil(server.connections[0]!.filters[0]) as { filter: { occurred: { since: string } } }).filter.occurred.since;
    assert.equal(since, new Date(Date.parse(old[59]!.occurred) - 2_000).toISOString());
    assert.ok(state.cursorUs! >= Date.parse(live[0]!.occurred) * 1000);
    assert.equal(sub.stats.historyEvents, 60);
    const read = logs.records().find((r) => r.msg === 'event history read');
    assert.deepEqual(read && { eventsRead: read.eventsRead, pages: read.pages }, { eventsRead: 60, pages: 2 });
    assertNoSecrets(logs.lines, AUTH_STRING);
  });

  it('a Prefect server with CSRF protection (PREFECT_SERVER_CSRF_PROTECTION_ENABLED) has its history read with a CSRF token, not refused as bad credentials', async () => {
    const server = await mini({ authString: AUTH_STRING, csrfProtection: true });
    const now = Date.now();
    const old = Array.from({ length: 3 }, (_, i) => event(now - 50 * 60_000 + i * 60_000));
    server.store(old);
    const { sub, logs, ids } = subscribe(server, { authString: AUTH_STRING, cursorUs: (now - 60 * 60_000) * 1000 });
    let outcome = 'running';
    sub.done.then(() => (outcome = 'stopped'), (err: Error) => (outcome = `${err.name}: ${err.message}`));
    await waitFor('connected or failed', () => sub.stats.connected || outcome !== 'running');
    await sub.stop();
    await sub.done.catch(() => undefined);
    assert.equal(outcome, 'stopped');
    assert.deepEqual(ids('history'), old.map((e) => e.id));
    assert.deepEqual(
      server.restRequests.map((r) => [r.method, r.path.replace(/client=[0-9a-f-]+/, 'client=…'), r.headers['prefect-csrf-token'] === undefined ? 'no token' : 'token']),
      [
        ['POST', '/api/events/filter', 'no token'],
        ['GET', '/api/csrf-token?client=…', 'no token'],
        ['POST', '/api/events/filter', 'token'],
      ],
    );
    assert.deepEqual(logs.records().filter((r) => (r.level as number) >= 40).map((r) => r.msg), []);
  });

  it('reads no history when the cursor is within the backfill window, and reads it when the gap comes within a minute of the window (the server clamps on its own clock, after the connection is made)', async () => {
    for (const [minutesBack, history] of [[5, false], [13.5, false], [14.5, true]] as const) {
      const server = await mini();
      const cursorMs = Date.now() - minutesBack * 60_000;
      const { sub } = subscribe(server, { cursorUs: cursorMs * 1000 });
      await waitFor('connected', () => sub.stats.connected);
      await sub.stop();
      assert.deepEqual(
        { minutesBack, requests: server.restRequests.map((r) => `${r.method} ${r.path} since ${(r.body as { filter: { occurred: { since: string } } }).filter.occurred.since}`) },
        { minutesBack, requests: history ? [`POST /api/events/filter since ${new Date(cursorMs - 2_000).toISOString()}`] : [] },
      );
    }
  });

  it('with no event seen yet, a reconnect resumes from where the stream was followed, history included', async () => {
    for (const outageMin of [10, 20]) {
      const first = await startMiniPrefect();
      const port = first.port;
      let offsetMs = 0;
      const clock = () => Date.now() + offsetMs;
      let dropMs = 0;
      const { sub, ids } = subscribe(first, { now: clock, backfillQuietMs: 50 });
      const second = await (async () => {
        try {
          await waitFor('connected', () => sub.stats.connected);
          // The (empty) backfill is over once the socket has been quiet for backfillQuietMs.
          await waitFor('the backfill sent', () => sub.coveredUntilMs() !== undefined);
          dropMs = Date.now();
          await first.close();
          await waitFor('disconnected', () => !sub.stats.connected);
          offsetMs = outageMin * 60_000; // the subscriber's clock says the outage lasted this long
          const restarted = await mini({ port });
          const during = event(dropMs + 1_000);
          restarted.store([during]);
          await waitFor(`the event of a ${outageMin}-minute outage`, () => ids().includes(during.id));
          return restarted;
        } finally {
          await sub.stop();
        }
      })();
      // The websocket backfill (or, past its 15 minutes, the history) starts at the drop − margin.
      const sinceMs = outageMin < 15
        ? Date.parse((second.connections[0]!.filters[0] as { filter: { occurred: { since: string } } }).filter.occurred.since)
        : Date.parse((second.restRequests[0]!.body as { filter: { occurred: { since: string } } }).filter.occurred.since);
      assert.ok(Math.abs(sinceMs - (dropMs - 2_000)) <= 200, `${outageMin} min: since ${new Date(sinceMs).toISOString()}, drop ${new Date(dropMs).toISOString()}`);
      assert.deepEqual({ rest: second.restRequests.length, history: sub.stats.historyEvents }, outageMin < 15 ? { rest: 0, history: 0 } : { rest: 1, history: 1 });
    }
  });

  it("a machine clock ahead of the server's: how far the stream was followed is kept on the server's clock, so a restart after a long outage reads the history from there", async () => {
    const aheadMs = 5 * 60_000;
    let serverOffsetMs = 0;
    const serverNow = () => Date.now() + serverOffsetMs;
    const server = await mini({ now: serverNow });
    const first = subscribe(server, { now: () => serverNow() + aheadMs, backfillQuietMs: 50 });
    let covered: number | undefined;
    let stoppedMs = 0;
    try {
      await waitFor('connected', () => first.sub.stats.connected);
      await waitFor('the backfill sent', () => first.sub.coveredUntilMs() !== undefined);
      covered = first.sub.coveredUntilMs();
      stoppedMs = serverNow();
    } finally {
      await first.sub.stop();
    }
    // Nothing watched for 20 minutes; an event a second after the stop, by the server's clock, is in the history only.
    const during = event(stoppedMs + 1_000);
    server.store([during]);
    serverOffsetMs = 20 * 60_000;
    const second = subscribe(server, { now: () => serverNow() + aheadMs, coveredUntilMs: covered });
    try {
      await waitFor('connected', () => second.sub.stats.connected);
    } finally {
      await second.sub.stop();
    }
    assert.deepEqual({ history: second.ids('history'), live: second.ids('live') }, { history: [during.id], live: [] });
    // Within the second that the server's `Date` header is cut to (the resume margin covers it), not minutes ahead.
    assert.ok(covered !== undefined && Math.abs(covered - stoppedMs) <= 2_000, `covered ${covered}, stopped at ${stoppedMs} on the server's clock`);
  });

  it("the Prefect server's clock 5 minutes ahead of this machine's: a reconnect after an outage that its clamp cuts into reads the history, and a warning says so", async () => {
    const serverAheadMs = 5 * 60_000;
    let offsetMs = 0;
    const serverNow = () => Date.now() + serverAheadMs + offsetMs;
    const first = await startMiniPrefect({ now: serverNow });
    const port = first.port;
    const { sub, ids, logs } = subscribe(first, { now: () => Date.now() + offsetMs, backfillQuietMs: 50 });
    let during: TestEvent | undefined;
    try {
      await waitFor('connected', () => sub.stats.connected);
      // The cursor is on the server's clock: the event's occurred (and received) are its.
      const seen = event(serverNow());
      first.publish([seen]);
      await waitFor('the live event', () => ids('live').includes(seen.id));
      await first.close();
      await waitFor('disconnected', () => !sub.stats.connected);
      // A 17-minute outage: past the server's 15-minute clamp, but only 12 minutes on this machine's clock.
      offsetMs = 17 * 60_000;
      const second = await mini({ port, now: serverNow });
      during = event(Date.parse(seen.occurred) + 60_000);
      second.store([during]);
      await waitFor('connected again', () => sub.stats.connects === 2, 10_000);
    } finally {
      await sub.stop();
    }
    assert.deepEqual(
      {
        history: ids('history'),
        // The Date header is whole seconds: the skew is taken as up to a second less than it is.
        warnings: logs.records().filter((r) => r.level === 40 && typeof r.msg === 'string' && r.msg.includes('clock')).map((r) => ({ behindMs: (r.behindMs as number) > serverAheadMs - 1_500 && (r.behindMs as number) <= serverAheadMs, msg: r.msg })),
      },
      {
        history: [during.id],
        warnings: [{ behindMs: true, msg: "the Prefect server's clock runs ahead of this machine's; gaps in the event stream are measured on the server's time" }],
      },
    );
  });

  it("the Prefect server's clock 5 minutes ahead of this machine's: a start whose gap only the server's clock shows past the clamp reads the history once the upgrade has told the server's time", async () => {
    const serverAheadMs = 5 * 60_000;
    const serverNow = () => Date.now() + serverAheadMs;
    const server = await mini({ now: serverNow });
    // Left by an earlier process 17 minutes ago on the server's clock: 12 on this one's.
    const cursorMs = serverNow() - 17 * 60_000;
    const during = event(cursorMs + 60_000);
    server.store([during]);
    const { sub, ids } = subscribe(server, { cursorUs: cursorMs * 1000 });
    try {
      await waitFor('connected', () => sub.stats.connected, 10_000);
    } finally {
      await sub.stop();
    }
    assert.deepEqual(
      { history: ids('history'), upgrades: server.upgrades.length, subscriptions: server.connections.filter((c) => c.filters.length > 0).length },
      // The first upgrade, which told the server's clock, is closed before its filter: the history comes first.
      { history: [during.id], upgrades: 2, subscriptions: 1 },
    );
  });

  it('a history that reads slower than events come (every round takes longer than the backfill window) goes live after five rounds and says which window may be missing', async () => {
    const roundMs = 20 * 60_000;
    let offsetMs = 0;
    // A clock that moves a millisecond on every reading: a window's end and the coverage it gives come from one.
    let ticks = 0;
    const clock = () => Date.now() + offsetMs + ++ticks;
    const server = await mini({ now: clock });
    const cursorMs = Date.now() - 20 * 60_000;
    // One event in each round's window; each one read makes that round take 20 minutes.
    server.store(Array.from({ length: 7 }, (_, k) => event(cursorMs + 60_000 + k * roundMs)));
    const received = new Set<string>();
    const { sub, logs } = subscribe(server, {
      cursorUs: cursorMs * 1000,
      now: clock,
      onEvent: (value, origin) => {
        const ev = (typeof value === 'string' ? (JSON.parse(value) as { event: TestEvent }).event : value) as TestEvent;
        if (origin === 'history' && !received.has(ev.id)) offsetMs += roundMs;
        received.add(ev.id);
      },
    });
    try {
      await waitFor('connected', () => sub.stats.connected, 10_000);
    } finally {
      await sub.stop();
    }
    const records = logs.records();
    const rounds = records.filter((r) => r.msg === 'event history read');
    const lastUntilMs = Date.parse(rounds[4]?.until as string);
    assert.deepEqual(
      {
        rounds: rounds.length,
        errors: records.filter((r) => (r.level as number) >= 50).map((r) => ({
          msg: r.msg,
          since: r.since,
          // The server's now when the sixth round was due (the fifth's end, 20 minutes on) less the backfill window.
          untilAtBackfillStart: Math.abs(Date.parse(r.until as string) - (lastUntilMs + roundMs - 15 * 60_000)) < 5_000,
        })),
      },
      {
        rounds: 5,
        // From the fifth round's end (minus the margin) to where the websocket's backfill starts.
        errors: [{ msg: 'the event history could not be read up to now in 5 rounds (it reads slower than events come); events in this window may be missing', since: new Date(lastUntilMs - 2_000).toISOString(), untilAtBackfillStart: true }],
      },
    );
  });

  it('a cursor ahead of the clock (from a sender whose clock runs fast) resumes from now − margin, not from the future', async () => {
    const server = await mini();
    const { sub, ids } = subscribe(server, { cursorUs: (Date.now() + 3_600_000) * 1000 });
    try {
      await waitFor('connected', () => sub.stats.connected);
      const next = event(Date.now());
      server.publish([next]);
      await waitFor('an event of now', () => ids().includes(next.id));
    } finally {
      await sub.stop();
    }
    const since = Date.parse((server.connections[0]!.filters[0] as { filter: { occurred: { since: string } } }).filter.occurred.since);
    assert.ok(since <= Date.now() - 2_000 && since >= Date.now() - 10_000, `since ${new Date(since).toISOString()}`);
  });

  it('a history that never answers is tried three times, then the stream goes live without it and says what may be missing', async () => {
    const server = await mini();
    server.switches.holdRest = true; // every POST /events/filter times out
    const cursorMs = Date.now() - 20 * 60_000;
    const { sub, logs, ids } = subscribe(server, { cursorUs: cursorMs * 1000, requestTimeoutMs: 300 });
    try {
      await waitFor('live', () => sub.stats.connected, 10_000);
      const next = event(Date.now());
      server.publish([next]);
      await waitFor('a live event', () => ids('live').includes(next.id));
    } finally {
      await sub.stop();
      server.switches.holdRest = false;
    }
    assert.deepEqual(
      server.restRequests.map((r) => [r.method, r.path]),
      Array.from({ length: 3 }, () => ['POST', '/api/events/filter']),
    );
    const failed = logs.records().filter((r) => r.msg === 'reading the event history failed; events in this window may be missing');
    assert.deepEqual(
      failed.map(({ level, eventsRead, err }) => ({ level, eventsRead, err: errMessage(err) })),
      [{ level: 50, eventsRead: 0, err: 'POST /events/filter failed: timed out after 300 ms' }],
    );
  });

  it('a window given up after three failed history requests that the server answered is not read again when the websocket fails too: the next attempts only connect, and the stream counts as followed from when it was given up', async () => {
    const server = await mini({ rejectUpgrade: 500 });
    server.switches.restStatus = 500;
    const cursorMs = Date.now() - 20 * 60_000;
    const before = Date.now();
    const { sub, logs } = subscribe(server, { cursorUs: cursorMs * 1000, initialBackoffMs: 5, maxBackoffMs: 20 });
    try {
      await waitFor('three upgrades', () => server.upgrades.length >= 3);
    } finally {
      await sub.stop();
    }
    const coveredUntilMs = sub.coveredUntilMs();
    assert.ok(coveredUntilMs !== undefined && coveredUntilMs >= before && coveredUntilMs <= Date.now(), `covered until ${String(coveredUntilMs)}`);
    assert.deepEqual(
      {
        requests: server.restRequests.map((r) => `${r.method} ${r.path}`),
        failed: logs.records().filter((r) => r.msg === 'reading the event history failed; events in this window may be missing').map(({ level, err }) => ({ level, err: errMessage(err) })),
      },
      { requests: Array<string>(3).fill('POST /api/events/filter'), failed: [{ level: 50, err: 'POST /events/filter: HTTP 500' }] },
    );
  });

  it('a history request is given PREFECT_API_REQUEST_TIMEOUT, not the handshake timeout: a server slower to answer it than to accept a websocket is read', async () => {
    const server = await mini();
    const cursorMs = Date.now() - 60 * 60_000;
    const old = Array.from({ length: 3 }, (_, i) => event(cursorMs + 60_000 + i * 60_000));
    server.store(old);
    server.switches.holdRest = true; // a busy database: the history takes a second
    const { sub, logs, ids } = subscribe(server, { cursorUs: cursorMs * 1000, handshakeTimeoutMs: 300, requestTimeoutMs: 5_000 });
    try {
      await waitFor('the history request', () => server.restRequests.length === 1);
      await sleep(1_000);
      server.switches.holdRest = false;
      await waitFor('live', () => sub.stats.connected, 10_000);
    } finally {
      await sub.stop();
      server.switches.holdRest = false;
    }
    assert.deepEqual(
      {
        requests: server.restRequests.map((r) => [r.method, r.path]),
        history: ids('history'),
        failures: logs.records().filter((r) => typeof r.msg === 'string' && r.msg.includes('history failed')).length,
      },
      { requests: [['POST', '/api/events/filter']], history: old.map((e) => e.id), failures: 0 },
    );
  });

  it('a history whose server fails now and then (HTTP 500 on every other request) while each read gets further is read to its end, not given up after three failures in all', async () => {
    const server = await mini();
    const cursorMs = Date.now() - 60 * 60_000;
    // Six pages, all of them older than the websocket's backfill reaches.
    const old = Array.from({ length: 300 }, (_, i) => event(cursorMs + 60_000 + i * 8_000));
    server.store(old);
    server.switches.restFailEvery = 2;
    const { sub, logs, ids } = subscribe(server, { cursorUs: cursorMs * 1000, initialBackoffMs: 5, maxBackoffMs: 20 });
    try {
      await waitFor('live', () => sub.stats.connected, 20_000);
    } finally {
      await sub.stop();
    }
    assert.deepEqual(
      {
        // Each read resumes from the last event received (minus the margin), so that event comes again.
        history: [...new Set(ids('history'))],
        errors: logs.records().filter((r) => (r.level as number) >= 50),
        retries: new Set(logs.records().filter((r) => r.level === 40).map((r) => `${String(r.msg).replace(/\d+ ms$/, 'N ms')}: ${errMessage(r.err)}`)),
        // A read that got further starts the backoff over: every retry waits the first delay.
        attempts: new Set(logs.records().filter((r) => r.level === 40).map((r) => r.attempt)),
      },
      {
        history: old.map((e) => e.id),
        errors: [],
        retries: new Set([`${ANSWERED} N ms: event history: GET /events/filter/next: HTTP 500`]),
        attempts: new Set([1]),
      },
    );
  });

  it("one answer that is not an event page (a proxy's HTML sign-in page, or JSON of another shape, with HTTP 200) is asked again like any failed history request, its body shown once, short and redacted; the window is read", async () => {
    const basic = Buffer.from(AUTH_STRING).toString('base64');
    // A sign-in page that repeats the request's Authorization header (as some debug pages do).
    const signIn = `<!DOCTYPE html>\n<html>\n  <head><title>Sign in</title><meta name="seen" content="Basic ${basic}"></head>\n  <body>\n    <form method="post" action="/oauth2/start?rd=%2Fapi%2Fevents%2Ffilter"><button>Sign in with SSO</button></form>\n  </body>\n</html>\n`;
    const cases = [
      {
        reply: { status: 200, contentType: 'text/html; charset=utf-8', body: signIn },
        shown: '<!DOCTYPE html> <html> <head><title>Sign in</title><meta name="seen" content="Basic [redacted]"></head> <body> <form method="post" action="/oauth2/start?rd=%2Fa…',
      },
      { reply: { status: 200, contentType: 'application/json', body: '{"data":[],"token":"x"}' }, shown: '{"data":[],"token":"x"}' },
    ];
    for (const { reply, shown } of cases) {
      const { server, old, logs, ids } = await resumeThroughReplies([reply], AUTH_STRING);
      const records = logs.records();
      assert.deepEqual(
        {
          requests: server.restRequests.map((r) => `${r.method} ${r.path}`),
          history: ids('history'),
          errors: records.filter((r) => (r.level as number) >= 50),
          warnings: records.filter((r) => r.level === 40).map(({ msg, err, status, body }) => ({ msg: String(msg).replace(/\d+ ms$/, 'N ms'), err: errMessage(err), status, body })),
        },
        {
          requests: ['POST /api/events/filter', 'POST /api/events/filter'],
          history: old.map((e) => e.id),
          errors: [],
          warnings: [
            { msg: 'the event history answered with something that is not an event page (a proxy in the way?); it is asked again', err: 'POST /events/filter: HTTP 200 with a body that is not an event page', status: 200, body: shown },
            { msg: `${ANSWERED} N ms`, err: 'event history: POST /events/filter: HTTP 200 with a body that is not an event page', status: undefined, body: undefined },
          ],
        },
      );
      assertNoSecrets(logs.lines, AUTH_STRING);
    }
  });

  it('answers that are not an event page three times in a row give the window up, as other failed history requests do', async () => {
    const { server, logs, ids } = await resumeThroughReplies(Array.from({ length: 3 }, () => ({ status: 200, contentType: 'text/html', body: '<html>Sign in</html>' })));
    const records = logs.records();
    assert.deepEqual(
      {
        requests: server.restRequests.map((r) => `${r.method} ${r.path}`),
        history: ids('history'),
        errors: records.filter((r) => (r.level as number) >= 50).map(({ msg, err }) => ({ msg, err: errMessage(err) })),
        shown: records.filter((r) => r.body !== undefined).map((r) => r.body),
      },
      {
        requests: Array<string>(3).fill('POST /api/events/filter'),
        history: [],
        errors: [{ msg: 'reading the event history failed; events in this window may be missing', err: 'POST /events/filter: HTTP 200 with a body that is not an event page' }],
        shown: ['<html>Sign in</html>'],
      },
    );
  });

  it('a history that fails now and then and reads slower than time goes (the gap grows between failures) is still given up after three failures, and the stream goes live', async () => {
    const server = await mini();
    const cursorMs = Date.now() - 60 * 60_000;
    const old = Array.from({ length: 300 }, (_, i) => event(cursorMs + 60_000 + i * 8_000));
    server.store(old);
    server.switches.restFailEvery = 2;
    // Every event read takes a minute on this clock: each page moves the cursor less than time goes on.
    let read: Received[] = [];
    const { sub, logs, received } = subscribe(server, { cursorUs: cursorMs * 1000, initialBackoffMs: 5, maxBackoffMs: 20, now: () => Date.now() + 60_000 * read.length });
    read = received;
    try {
      await waitFor('live', () => sub.stats.connected, 20_000);
    } finally {
      await sub.stop();
    }
    assert.deepEqual(
      {
        requests: server.restRequests.map((r) => `${r.method} ${r.path.split('?')[0]}`),
        errors: logs.records().filter((r) => (r.level as number) >= 50).map((r) => ({ msg: r.msg, err: errMessage(r.err) })),
      },
      {
        requests: Array.from({ length: 3 }, () => ['POST /api/events/filter', 'GET /api/events/filter/next']).flat(),
        errors: [{ msg: 'reading the event history failed; events in this window may be missing', err: 'GET /events/filter/next: HTTP 500' }],
      },
    );
  });

  it('a server that refuses connections keeps its history window: it is read once the server is back, however long that takes', async () => {
    const probe = await startMiniPrefect();
    const port = probe.port;
    await probe.close();
    const cursorMs = Date.now() - 20 * 60_000;
    const { sub, logs, ids } = subscribe({ url: probe.url }, { cursorUs: cursorMs * 1000, handshakeTimeoutMs: 300, initialBackoffMs: 5, maxBackoffMs: 20 });
    try {
      // Refused connections are waited out: more than three of them, and the history is not given up.
      await waitFor('a later attempt', () => sub.stats.reconnects >= 5);
      const server = await mini({ port });
      const old = event(cursorMs + 60_000);
      server.store([old]);
      await waitFor('the old event from history', () => ids('history').includes(old.id));
      const since = (server.restRequests[0]!.body as { filter: { occurred: { since: string } } }).filter.occurred.since;
      assert.equal(since, new Date(cursorMs - 2_000).toISOString());
    } finally {
      await sub.stop();
    }
    assert.deepEqual(
      logs.records().filter((r) => r.level === 50),
      [],
    );
  });

  it('a gateway that answers 502, 503 or 504 while the Prefect server behind it is down: the history window is kept and read once the server is back', async () => {
    for (const status of [502, 503, 504]) {
      // An ingress whose upstream is gone: the same status for REST and for the upgrade.
      const gateway = createServer((req, res) => {
        req.resume();
        res.writeHead(status, { 'Retry-After': '0' }).end();
      });
      let upgrades = 0;
      gateway.on('upgrade', (_req, socket: Duplex) => {
        upgrades += 1;
        socket.on('error', () => undefined).end(`HTTP/1.1 ${status} Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      });
      await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve));
      const port = (gateway.address() as AddressInfo).port;
      const closeGateway = async (): Promise<void> => {
        gateway.closeAllConnections();
        await new Promise<void>((resolve) => gateway.close(() => resolve()));
      };
      const cursorMs = Date.now() - 20 * 60_000;
      const { sub, ids, logs } = subscribe({ url: `http://127.0.0.1:${port}/api` }, { cursorUs: cursorMs * 1000, handshakeTimeoutMs: 300, initialBackoffMs: 5, maxBackoffMs: 20 });
      let server: Mini | undefined;
      const old = event(cursorMs + 60_000);
      try {
        // The stream goes live without the history after three failed reads: past that, the upgrades fail
        // too, and the history is tried again, round after round.
        await waitFor('upgrades after the history failed', () => upgrades >= 3, 20_000);
        await closeGateway();
        server = await mini({ port });
        server.store([old]);
        await waitFor('connected', () => sub.stats.connected, 10_000);
      } finally {
        await sub.stop();
        if (gateway.listening) await closeGateway();
      }
      // Nothing was lost, so no error says so: one warning that the stream went on without the history.
      const said = logs.records().filter((r) => typeof r.msg === 'string' && r.msg.startsWith('reading the event history failed'));
      assert.deepEqual(
        {
          history: ids('history'),
          since: (server.restRequests[0]?.body as { filter: { occurred: { since: string } } } | undefined)?.filter.occurred.since,
          said: said.map((r) => [r.level, r.msg, r.since]),
        },
        {
          history: [old.id],
          since: new Date(cursorMs - 2_000).toISOString(),
          said: [[40, 'reading the event history failed; trying the live stream without it (the window is read again if that fails too)', new Date(cursorMs - 2_000).toISOString()]],
        },
        `HTTP ${status}`,
      );
    }
  });

  it("a rate-limited history (HTTP 429, Prefect Cloud's limit) is waited for, however many times, and read once the limit lifts; its window is not given up", async () => {
    const server = await mini();
    server.switches.restStatus = 429;
    server.switches.restRetryAfter = '0';
    const cursorMs = Date.now() - 20 * 60_000;
    const old = event(cursorMs + 60_000);
    server.store([old]);
    const { sub, ids, logs } = subscribe(server, { cursorUs: cursorMs * 1000, initialBackoffMs: 5, maxBackoffMs: 20 });
    try {
      // Past three failed reads (each a request and its four retries), after which a failing history is given up.
      await waitFor('a sixteenth request, or live without the history', () => server.restRequests.length >= 16 || sub.stats.connected, 10_000);
      server.switches.restStatus = 0;
      await waitFor('connected', () => sub.stats.connected, 10_000);
    } finally {
      await sub.stop();
    }
    assert.deepEqual(
      {
        history: ids('history'),
        errors: logs.records().filter((r) => (r.level as number) >= 50),
        retries: new Set(logs.records().filter((r) => r.level === 40).map((r) => `${String(r.msg).replace(/\d+ ms$/, 'N ms')}: ${errMessage(r.err)}`)),
      },
      {
        history: [old.id],
        errors: [],
        retries: new Set([`${ANSWERED} N ms: event history: POST /events/filter: HTTP 429`]),
      },
    );
  });

  it('a proxy that refuses connections is waited for as a server that does: the history window is kept, no history failure is reported', async () => {
    const probe = await startMiniPrefect();
    const proxyPort = probe.port;
    await probe.close();
    const cursorMs = Date.now() - 20 * 60_000;
    const proxy = { httpProxy: `http://127.0.0.1:${proxyPort}`, httpsProxy: undefined, noProxy: undefined };
    const { sub, logs } = subscribe({ url: 'http://127.0.0.1:9/api' }, { cursorUs: cursorMs * 1000, handshakeTimeoutMs: 300, initialBackoffMs: 5, maxBackoffMs: 20, proxy });
    try {
      await waitFor('a later attempt', () => sub.stats.reconnects >= 5);
    } finally {
      await sub.stop();
    }
    const unreachable = `the proxy http://127.0.0.1:${proxyPort} could not be reached: connect ECONNREFUSED 127.0.0.1:${proxyPort}`;
    assert.deepEqual(
      new Set(logs.records().filter((r) => (r.level as number) >= 40).map((r) => `${r.level as number} ${String(r.msg).replace(/\d+ ms$/, 'N ms')}: ${errMessage(r.err)}`)),
      new Set([`40 Prefect server unreachable, retrying in N ms: event history: POST /events/filter failed: ${unreachable}`]),
    );
  });

  it('a proxy that answers CONNECT with 502 or 503 (it cannot reach the server) is waited for as a server that is not there: the history window is kept', async () => {
    for (const status of [502, 503]) {
      const proxyServer = createServer();
      proxyServer.on('connect', (_req, socket: Duplex) => socket.on('error', () => undefined).end(`HTTP/1.1 ${status} Bad Gateway\r\nContent-Length: 0\r\n\r\n`));
      await new Promise<void>((resolve) => proxyServer.listen(0, '127.0.0.1', resolve));
      const proxyUrl = `http://127.0.0.1:${(proxyServer.address() as AddressInfo).port}`;
      const cursorMs = Date.now() - 20 * 60_000;
      const proxy = { httpProxy: proxyUrl, httpsProxy: undefined, noProxy: undefined };
      const { sub, logs } = subscribe({ url: 'http://127.0.0.1:9/api' }, { cursorUs: cursorMs * 1000, handshakeTimeoutMs: 300, initialBackoffMs: 5, maxBackoffMs: 20, proxy });
      try {
        await waitFor('a later attempt', () => sub.stats.reconnects >= 5);
      } finally {
        await sub.stop();
        proxyServer.closeAllConnections();
        await new Promise<void>((resolve) => proxyServer.close(() => resolve()));
      }
      assert.deepEqual(
        new Set(logs.records().filter((r) => (r.level as number) >= 40).map((r) => `${r.level as number} ${String(r.msg).replace(/\d+ ms$/, 'N ms')}: ${errMessage(r.err)}`)),
        new Set([`40 Prefect server unreachable, retrying in N ms: event history: POST /events/filter failed: the proxy ${proxyUrl} refused CONNECT 127.0.0.1:9 with HTTP ${status}`]),
      );
    }
  });

  it('a socket dropped during its backfill resumes from the last event received: from history once that is past the window', async () => {
    let offsetMs = 0;
    const clock = () => Date.now() + offsetMs;
    const server = await mini({ now: clock });
    const startMs = Date.now() - 12 * 60_000;
    const backlog = Array.from({ length: 20 }, (_, i) => event(startMs + i * 3_000));
    server.store(backlog);
    server.switches.closeAfter = 5; // the first socket drops after 5 of the 20 backfilled events…
    const { sub, logs, ids } = subscribe(server, {
      now: clock,
      cursorUs: (startMs - 1_000) * 1000,
      onStatus: (s) => {
        if (s !== 'disconnected' || offsetMs !== 0) return;
        offsetMs = 5 * 60_000; // …and the next connection comes 5 minutes later, 17 minutes after the cursor
        server.switches.closeAfter = 0;
      },
    });
    try {
      await waitFor('every backlogged event', () => backlog.every((e) => ids().includes(e.id)));
      await waitFor('the second connection live', () => server.connections.length === 2 && server.connections[1]!.live);
      // The second socket's backfill came and has not been followed by a pause or a newer event yet:
      // the stream counts as followed only up to what the history read.
      const historyUntil = Date.parse((server.restRequests[0]!.body as { filter: { occurred: { until: string } } }).filter.occurred.until);
      assert.equal(sub.coveredUntilMs(), historyUntil);
      const next = event(clock());
      server.publish([next]);
      await waitFor('a live event', () => ids('live').includes(next.id));
      const covered = sub.coveredUntilMs()!;
      assert.ok(covered > historyUntil && covered <= clock(), `covered ${covered}, history until ${historyUntil}`);
    } finally {
      await sub.stop();
    }
    assert.deepEqual(server.restRequests.map((r) => [r.method, r.path]), [['POST', '/api/events/filter']]);
    const since = (server.restRequests[0]!.body as { filter: { occurred: { since: string } } }).filter.occurred.since;
    assert.equal(since, new Date(Date.parse(backlog[4]!.occurred) - 2_000).toISOString());
    assert.deepEqual(ids('history'), backlog.slice(4).map((e) => e.id));
    assert.deepEqual(
      logs.records().filter((r) => r.msg === 'the event stream closed during its backfill; the next connection resumes from the last event received').map((r) => r.cursor),
      [backlog[4]!.occurred],
    );
  });

  it('a connection that closes during its backfill before any event says so without a cursor, and the next asks for its window again', async () => {
    const server = await mini();
    const { sub, logs } = subscribe(server);
    try {
      await server.waitForConnections(1);
      server.dropConnections();
      await server.waitForConnections(2);
    } finally {
      await sub.stop();
    }
    const sinces = server.connections.map((c) => Date.parse((c.filters[0] as { filter: { occurred: { since: string } } }).filter.occurred.since));
    assert.ok(sinces[1]! >= sinces[0]! && sinces[1]! - sinces[0]! < 5_000, `since ${sinces.join(', ')}`);
    assert.deepEqual(
      logs.records().filter((r) => String(r.msg).startsWith('the event stream closed during its backfill')).map((r) => [r.msg, 'cursor' in r]),
      [['the event stream closed during its backfill, before any event arrived; the next connection asks for its window again', false]],
    );
  });

  it('fills the gap again on a reconnect after an outage longer than the window', async () => {
    const first = await startMiniPrefect();
    const port = first.port;
    let offsetMs = 0;
    const clock = () => Date.now() + offsetMs;
    const { sub, logs } = subscribe(first, { now: clock, cursorUs: (Date.now() - 30_000) * 1000, backfillQuietMs: 50 });
    await waitFor('connected', () => sub.stats.connected);
    await waitFor('the backfill sent', () => sub.coveredUntilMs() !== undefined);
    assert.equal(first.restRequests.length, 0);
    const dropMs = Date.now();
    await first.close(); // the server goes away…
    await waitFor('disconnected', () => !sub.stats.connected);
    offsetMs = 20 * 60_000; // …for 20 minutes (the subscriber's clock says so)
    const second = await mini({ port });
    second.store([event(dropMs + 1_000)]);
    await waitFor('reconnected', () => second.connections.length === 1 && second.connections[0]!.live);
    await sub.stop();
    assert.deepEqual(second.restRequests.map((r) => [r.method, r.path]), [['POST', '/api/events/filter']]);
    // From where the stream was last followed (minus the margin) to the subscriber's now.
    const occurred = (second.restRequests[0]!.body as { filter: { occurred: { since: string; until: string } } }).filter.occurred;
    const sinceMs = Date.parse(occurred.since);
    assert.ok(sinceMs >= dropMs - 2_000 - 200 && sinceMs <= dropMs - 2_000 + 200, `since ${occurred.since}, drop ${new Date(dropMs).toISOString()}`);
    assert.ok(Date.parse(occurred.until) >= dropMs + offsetMs);
    assert.equal(sub.stats.historyEvents, 1);
    assert.ok(logs.records().some((r) => r.msg === 'the gap is longer than the websocket backfill; reading the event history'));
  });
});
