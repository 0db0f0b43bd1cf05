/**
 * The health endpoint and the counters as a probe and a scraper read them, over HTTP, from a
 * library instance against the fake Prefect server and the decoding OTLP receiver.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { pino } from 'pino';
import { startHealthServer } from '../src/health.js';
import { spanIdForRun } from '../src/model/ids.js';
import { startPrefectTracing } from '../src/index.js';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { startCli } from './helpers/cli.js';
import { startFakePrefect } from './helpers/fake-prefect.js';
import { startOtlpReceiver } from './helpers/otlp-receiver.js';
import { flowRunStateEvent } from './helpers/prefect-events.js';
import { parsePrometheusText, type Family } from './helpers/prometheus-text.js';
import { liveConnections, startWatch, tempDir, until } from './helpers/watch-e2e.js';

/** Whether this machine has an IPv6 loopback to listen on. */
const IPV6 = await new Promise<boolean>((resolve) => {
  const server = createServer();
  server.once('error', () => resolve(false));
  server.listen(0, '::1', () => server.close(() => resolve(true)));
});

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };

/** One finished flow run, just before now. */
function oneRun(): ReturnType<typeof flowRunStateEvent>[] {
  const id = randomUUID();
  const t = Date.now() - 1_000;
  const run = { flowRunId: id, flowRunName: 'crimson-fox', ...FLOW, runCount: 1 };
  return [
    flowRunStateEvent({ ...run, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', occurred: t }),
    flowRunStateEvent({ ...run, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', occurred: t + 10 }),
  ];
}

/** The unlabelled samples of a `/metrics` page whose names start with `prefix`, by the rest of their name. */
async function samples(port: number, prefix: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+) (\S+)$/.exec(line);
    if (m !== null && m[1]!.startsWith(prefix)) out[m[1]!.slice(prefix.length)] = Number(m[2]);
  }
  return out;
}

/** The `prefect_otel_spans_*` samples of a `/metrics` page. */
const spanSamples = (port: number): Promise<Record<string, number>> => samples(port, 'prefect_otel_spans_');

/**
 * A library instance with its health port, subscribed to a fake Prefect server, that has sent one
 * run's span to a collector holding its answer until `release()`.
 */
async function oneSpanHeldAtTheCollector(t: TestContext) {
  const prefect = await startFakePrefect();
  const receiver = await startOtlpReceiver();
  const release = receiver.hold();
  const tracing = startPrefectTracing({
    env: {}, logger: pino({ level: 'silent' }), apiUrl: prefect.url, otlpEndpoint: receiver.url, stateFile: join(tempDir(), 'state.json'),
    settleMs: 50, statsIntervalMs: 0, httpPort: 0, scheduleDelayMs: 10,
  });
  t.after(async () => {
    release();
    await tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  await tracing.ready;
  await until('subscribed', () => liveConnections(prefect) === 1);
  prefect.publish(oneRun());
  await until('the export request at the collector', () => receiver.counts.requests === 1);
  return { prefect, receiver, release, tracing };
}

test('a span sent to a collector that has not answered yet counts as buffered (stats and /metrics) until the collector takes it', async (t) => {
  const { receiver, release, tracing } = await oneSpanHeldAtTheCollector(t);
  const port = tracing.httpPort!;
  const { exportLag: _lag, ...waiting } = tracing.stats().spans;
  assert.deepEqual(
    { stats: waiting, metrics: await spanSamples(port) },
    {
      stats: { finished: 1, exported: 0, buffered: 1, dropped: 0, rejected: 0, exportFailures: 0, exporting: true, hookErrors: 0, unsampled: 0 },
      metrics: { finished_total: 1, exported_total: 0, buffered: 1, dropped_total: 0, rejected_total: 0, unsampled_total: 0 },
    },
  );
  release();
  await receiver.waitForSpans(1);
  await until('the answer seen', () => tracing.stats().spans.exported === 1);
  assert.deepEqual(await spanSamples(port), { finished_total: 1, exported_total: 1, buffered: 0, dropped_total: 0, rejected_total: 0, unsampled_total: 0 });
});

/** `/metrics` read by the strict reader (it throws on any line Prometheus would refuse or misread), by family. */
async function scrape(port: number): Promise<Map<string, Family>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return new Map(parsePrometheusText(await res.text()).map((f) => [f.name, f]));
}

/** A labelled family's samples as `label=value` → value. */
const byLabel = (f: Family | undefined): Record<string, number> => Object.fromEntries((f?.samples ?? []).map((s) => [Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(','), s.value]));

/** prefect-otel in this process with /metrics on a free port, subscribed to a fake Prefect server and exporting to a receiver; all stopped when `t` ends. */
async function subscribedWithMetrics(t: TestContext) {
  const prefect = await startFakePrefect();
  const receiver = await startOtlpReceiver();
  const tracing = startPrefectTracing({
    env: {}, logger: pino({ level: 'silent' }), apiUrl: prefect.url, otlpEndpoint: receiver.url, stateFile: join(tempDir(), 'state.json'),
    settleMs: 50, statsIntervalMs: 0, httpPort: 0, scheduleDelayMs: 10,
  });
  t.after(async () => {
    await tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  await tracing.ready;
  await until('subscribed', () => liveConnections(prefect) === 1);
  return { prefect, receiver, tracing };
}

test('/metrics reads strictly as Prometheus text, and a labelled counter has every label value from the first scrape on, at 0 until it counts: increase() sees its first skip', async (t) => {
  const { prefect, tracing } = await subscribedWithMetrics(t);
  const before = await scrape(tracing.httpPort!);
  prefect.publish(oneRun());
  prefect.sendRaw('{"id": "cut short');
  await until('the span taken and the frame skipped', () => tracing.stats().spans.exported === 1 && tracing.stats().events.skipped.invalid_json === 1);
  const after = await scrape(tracing.httpPort!);
  const skipped = (n: number) => ({
    'reason=invalid_json': n, 'reason=not_an_object': 0, 'reason=not_an_event_message': 0, 'reason=missing_field': 0, 'reason=wrong_type': 0,
    'reason=bad_timestamp': 0, 'reason=bad_id': 0, 'reason=bad_run_id': 0, 'reason=unknown_state': 0, 'reason=too_large': 0, 'reason=too_deep': 0,
  });
  const labelled = (m: Map<string, Family>) => ({
    skipped: byLabel(m.get('prefect_otel_events_skipped_total')),
    parents: byLabel(m.get('prefect_otel_parent_lookups_total')),
    families: m.size,
  });
  assert.deepEqual(
    { before: labelled(before), after: labelled(after) },
    {
      before: { skipped: skipped(0), parents: { 'outcome=found': 0, 'outcome=failed': 0, 'outcome=abandoned': 0 }, families: 37 },
      after: { skipped: skipped(1), parents: { 'outcome=found': 0, 'outcome=failed': 0, 'outcome=abandoned': 0 }, families: 37 },
    },
  );
  // The handle's stats and the stats line keep to the reasons that counted.
  assert.deepEqual(tracing.stats().events.skipped, { invalid_json: 1 });
});

test('/metrics counts the lookups of the state history of runs first seen leaving a terminal state by outcome: those the server answers number the rerun from it, one it fails numbers it the first', async (t) => {
  const { prefect, receiver, tracing } = await subscribedWithMetrics(t);
  const t0 = Date.now() - 60_000;
  /** `attempts` attempts of a flow run, each Scheduled → Running → Failed (the first from no state). */
  const attempts = (id: string, attempts: number) => Array.from({ length: attempts }, (_, k) => [['SCHEDULED', 'Scheduled', k === 0 ? null : 'FAILED'], ['RUNNING', 'Running', 'SCHEDULED'], ['FAILED', 'Failed', 'RUNNING']] as const)
    .flat()
    .map(([type, name, from], i) => flowRunStateEvent({ flowRunId: id, flowRunName: 'crimson-fox', ...FLOW, runCount: Math.floor(i / 3) + 1, state: { type, name }, from, occurred: t0 + i * 1_000, id: randomUUID() }));
  // The server has the attempts before a second rerun and before a first; prefect-otel sees only those reruns.
  const answered = [attempts(randomUUID(), 3), attempts(randomUUID(), 2)] as const;
  for (const run of answered) {
    prefect.store(run.slice(0, run.length - 3));
    prefect.publish(run.slice(run.length - 3));
  }
  await until('the reruns exported', () => receiver.spans().length === 2);
  // A server that fails the lookup: the rerun is numbered the first.
  prefect.switches.restStatus = 500;
  const failed = attempts(randomUUID(), 2);
  prefect.publish(failed.slice(3));
  await until('the rerun whose lookup failed exported', () => receiver.spans().length === 3);
  const runOf = (events: typeof failed) => (events[0]!.resource['prefect.resource.id'] as string).slice('prefect.flow-run.'.length);
  assert.deepEqual(
    { spans: receiver.spans().map((x) => x.spanId).sort(), lookups: byLabel((await scrape(tracing.httpPort!)).get('prefect_otel_rerun_lookups_total')) },
    {
      spans: [spanIdForRun(runOf(answered[0]), 2), spanIdForRun(runOf(answered[1]), 1), spanIdForRun(runOf(failed), 1)].sort(),
      lookups: { 'outcome=found': 2, 'outcome=failed': 1, 'outcome=abandoned': 0 },
    },
  );
});

test('the health endpoint answers on IPv6 as on IPv4 (a probe to the pod address of an IPv6 cluster)', { skip: IPV6 ? false : 'no IPv6 loopback on this machine' }, async (t) => {
  const tracing = startPrefectTracing({
    env: {}, logger: pino({ level: 'silent' }), apiUrl: 'http://127.0.0.1:9/api', tracesExporter: 'none', stateFile: join(tempDir(), 'state.json'),
    statsIntervalMs: 0, httpPort: 0,
  });
  t.after(() => tracing.shutdown());
  await tracing.ready;
  const probe = async (host: string) => {
    const res = await fetch(`http://${host}:${tracing.httpPort!}/healthz`);
    return { status: res.status, body: await res.json() };
  };
  const down = { status: 503, body: { status: 'unavailable', problems: ['not connected to the Prefect event stream'], connected: false, exporting: true } };
  assert.deepEqual({ v4: await probe('127.0.0.1'), v6: await probe('[::1]') }, { v4: down, v6: down });
});

test('replay with a health port already in use: the reason and the setting to change on one line, exit 1, as watch says it', async (t) => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, resolve));
  t.after(() => new Promise((resolve) => taken.close(resolve)));
  const port = (taken.address() as AddressInfo).port;
  const r = await startCli(['replay', '-'], { PREFECT_OTEL_HTTP_PORT: String(port), OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'silent' }, '').result;
  assert.deepEqual(
    { code: r.code, stderr: r.stderr },
    { code: 1, stderr: `prefect-otel: the health endpoint cannot listen on port ${port} (PREFECT_OTEL_HTTP_PORT, option httpPort): the port is in use; choose a free one, or 0 for any\n` },
  );
});

test('a stats read that throws (process.memoryUsage() out of file descriptors, say) answers 500 with the reason; the server and its process go on', async (t) => {
  let fail = true;
  const tracing = startPrefectTracing({ env: {}, logger: pino({ level: 'silent' }), apiUrl: 'http://127.0.0.1:9/api', tracesExporter: 'none', stateFile: join(tempDir(), 'state.json'), statsIntervalMs: 0 });
  t.after(() => tracing.shutdown());
  const server = await startHealthServer(0, () => {
    if (fail) throw Object.assign(new Error('EMFILE: too many open files, uv_resident_set_memory'), { code: 'EMFILE' });
    return tracing.stats();
  });
  t.after(() => server.close());
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${server.port}${path}`);
    return { status: res.status, type: res.headers.get('content-type'), body: await res.text() };
  };
  const failed = { status: 500, type: 'text/plain; charset=utf-8', body: 'cannot read the stats: EMFILE: too many open files, uv_resident_set_memory\n' };
  assert.deepEqual({ metrics: await get('/metrics'), healthz: await get('/healthz') }, { metrics: failed, healthz: failed });
  fail = false;
  const metrics = await get('/metrics');
  assert.deepEqual({ status: metrics.status, type: metrics.type }, { status: 200, type: 'text/plain; version=0.0.4; charset=utf-8' });
});

test('HTTP as probes and scrapers use it: HEAD like GET without a body, a query string ignored, another method 405 with Allow, an unknown path 404 whatever the method', async (t) => {
  const tracing = startPrefectTracing({ env: {}, logger: pino({ level: 'silent' }), apiUrl: 'http://127.0.0.1:9/api', tracesExporter: 'none', stateFile: join(tempDir(), 'state.json'), statsIntervalMs: 0, httpPort: 0 });
  t.after(() => tracing.shutdown());
  await tracing.ready;
  const ask = async (method: string, path: string) => {
    const res = await fetch(`http://127.0.0.1:${tracing.httpPort!}${path}`, { method });
    const body = await res.text();
    return `${method} ${path} ${res.status} ${res.headers.get('content-type') ?? '-'} ${res.headers.get('allow') ?? '-'} ${body === '' ? 'empty' : 'body'}`;
  };
  const answers = [];
  for (const [method, path] of [['GET', '/metrics?name[]=x'], ['HEAD', '/metrics'], ['HEAD', '/healthz'], ['POST', '/metrics'], ['DELETE', '/healthz'], ['GET', '/nope'], ['POST', '/nope'], ['GET', '/metrics/']] as const) {
    answers.push(await ask(method, path));
  }
  assert.deepEqual(answers, [
    'GET /metrics?name[]=x 200 text/plain; version=0.0.4; charset=utf-8 - body',
    'HEAD /metrics 200 text/plain; version=0.0.4; charset=utf-8 - empty',
    'HEAD /healthz 503 application/json - empty',
    'POST /metrics 405 - GET, HEAD empty',
    'DELETE /healthz 405 - GET, HEAD empty',
    'GET /nope 404 text/plain - body',
    'POST /nope 404 text/plain - body',
    'GET /metrics/ 404 text/plain - body',
  ]);
});

test('/healthz while shutting down (delivering to a collector that has not answered yet) says so, not "not connected": a probe or an operator reads why the process is going away', async (t) => {
  const { prefect, release, tracing } = await oneSpanHeldAtTheCollector(t);
  const port = tracing.httpPort!;
  const stopped = tracing.shutdown();
  await until('unsubscribed', () => liveConnections(prefect) === 0);
  const res = await fetch(`http://127.0.0.1:${port}/healthz`);
  assert.deepEqual(
    { status: res.status, body: await res.json() },
    { status: 503, body: { status: 'stopping', problems: ['shutting down: delivering what is buffered'], connected: false, exporting: true } },
  );
  release();
  await stopped;
});

/** The `prefect_otel_log_*` samples of a `/metrics` page. */
const logSamples = (port: number): Promise<Record<string, number>> => samples(port, 'prefect_otel_log_');

test('OTLP log records (OTEL_LOGS_EXPORTER=otlp) are counted as spans are, in the stats and on /metrics: a failed export, records the collector refuses, records it takes; the spans and /healthz are not disturbed', async (t) => {
  const prefect = await startFakePrefect();
  let logRequests = 0;
  let logsRefused = true;
  // The first logs request fails (503, retried), the next ones are refused (400) until `logsRefused` is false.
  const receiver = await startOtlpReceiver({ respond: (_n, path) => (path !== '/v1/logs' ? 200 : ++logRequests === 1 ? 503 : logsRefused ? 400 : 200) });
  const tracing = startPrefectTracing({
    env: {}, logger: pino({ level: 'silent' }), apiUrl: prefect.url, otlpEndpoint: receiver.url, stateFile: join(tempDir(), 'state.json'),
    settleMs: 50, statsIntervalMs: 0, httpPort: 0, scheduleDelayMs: 10, logsExporter: 'otlp', otlpLogsTimeoutMs: 500,
  });
  t.after(async () => {
    await tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  await tracing.ready;
  await until('subscribed', () => liveConnections(prefect) === 1);
  const port = tracing.httpPort!;
  const seen = async () => ({
    stats: tracing.stats().logRecords,
    metrics: await logSamples(port),
    spansExported: tracing.stats().spans.exported,
    healthz: (await fetch(`http://127.0.0.1:${port}/healthz`)).status,
  });

  prefect.publish(oneRun());
  await until('the two log records refused, the span taken', () => tracing.stats().logRecords.rejected === 2 && tracing.stats().spans.exported === 1);
  assert.deepEqual(await seen(), {
    stats: { exported: 0, buffered: 0, dropped: 0, rejected: 2, exportFailures: 1 },
    metrics: { records_exported_total: 0, records_buffered: 0, records_dropped_total: 0, records_rejected_total: 2, export_failures_total: 1 },
    spansExported: 1,
    healthz: 200,
  });

  logsRefused = false;
  prefect.publish(oneRun());
  await receiver.waitForLogs(2);
  await until('the answers seen', () => tracing.stats().logRecords.exported === 2 && tracing.stats().spans.exported === 2);
  assert.deepEqual(await seen(), {
    stats: { exported: 2, buffered: 0, dropped: 0, rejected: 2, exportFailures: 1 },
    metrics: { records_exported_total: 2, records_buffered: 0, records_dropped_total: 0, records_rejected_total: 2, export_failures_total: 1 },
    spansExported: 2,
    healthz: 200,
  });
});

test('/livez answers 200 while the process only waits (a standby, the Prefect server down, the collector failing), where /healthz says 503: a liveness probe does not restart it', async (t) => {
  const prefect = await startFakePrefect();
  const failing = await startOtlpReceiver({ respond: () => 503 });
  t.after(async () => {
    await failing.close();
    await prefect.close();
  });
  const start = (name: string, options: Parameters<typeof startPrefectTracing>[0]) => {
    const tracing = startPrefectTracing({ env: {}, logger: pino({ level: 'silent' }), tracesExporter: 'none', stateFile: join(tempDir(), `${name}.json`), statsIntervalMs: 0, httpPort: 0, ...options });
    t.after(() => tracing.shutdown());
    return tracing;
  };
  // Another host's process holds the state file's lock, and renews it.
  const standbyState = join(tempDir(), 'state.json');
  writeFileSync(`${standbyState}.lock`, `${JSON.stringify({ pid: 4242, host: 'other-host', pidNamespace: null, token: randomUUID(), since: new Date().toISOString() })}\n`);
  const standby = start('standby', { apiUrl: prefect.url, stateFile: standbyState });
  const prefectDown = start('down', { apiUrl: 'http://127.0.0.1:9/api' });
  // An export given up after a second: by default its retries of the 503s take up to the 10 s of
  // the OTLP timeout, as long as the test would wait for it.
  const collectorDown = start('collector', { apiUrl: prefect.url, tracesExporter: 'otlp', otlpEndpoint: failing.url, settleMs: 50, scheduleDelayMs: 10, exportTimeoutMs: 1_000 });
  await Promise.all([prefectDown.ready, collectorDown.ready]);
  await until('standby', () => standby.stats().standby);
  await until('subscribed', () => liveConnections(prefect) === 1);
  prefect.publish(oneRun());
  await until('an export failed', () => collectorDown.stats().spans.exportFailures > 0);

  const probe = async (port: number) => {
    const get = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      return { code: res.status, type: res.headers.get('content-type'), body: (await res.json()) };
    };
    const healthz = await get('/healthz');
    return { healthz: { code: healthz.code, status: (healthz.body as { status: string }).status }, livez: await get('/livez') };
  };
  const alive = { code: 200, type: 'application/json', body: { status: 'ok' } };
  assert.deepEqual(
    { standby: await probe(standby.httpPort!), prefectDown: await probe(prefectDown.httpPort!), collectorDown: await probe(collectorDown.httpPort!) },
    {
      standby: { healthz: { code: 503, status: 'standby' }, livez: alive },
      prefectDown: { healthz: { code: 503, status: 'unavailable' }, livez: alive },
      collectorDown: { healthz: { code: 503, status: 'unavailable' }, livez: alive },
    },
  );
});

/** Where a CLI child serves /healthz, from its log (rejects if the child ends first). */
function healthLine(child: ChildProcess): Promise<{ port: number; address: string }> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! })
      .on('line', (l) => {
        if (l.includes('"serving /healthz, /livez and /metrics"')) resolve(JSON.parse(l) as { port: number; address: string });
      })
      .on('close', () => reject(new Error('prefect-otel ended before it served /healthz')));
  });
}

test('watch: after the collector refused spans for good, /healthz stays 503 while the collector refuses, and is 200 again as soon as it takes exports again, with no further span on a quiet stream', async (t) => {
  const prefect = await startFakePrefect();
  let refusing = true;
  const receiver = await startOtlpReceiver({ respond: () => (refusing ? { status: 401, body: '{"message":"unauthorized"}' } : 200) });
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const watch = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_HTTP_PORT: '0' }, t);
  const { port } = await healthLine(watch.child);
  const healthz = async () => {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    return { status: res.status, body: await res.json() };
  };
  await until('subscribed', () => liveConnections(prefect) === 1);
  prefect.publish(oneRun());
  await until('the span refused', () => receiver.requests.length === 1);
  const failing = { status: 503, body: { status: 'unavailable', problems: ['exports to the collector are failing'], connected: true, exporting: false } };
  // The refusal reaches /healthz once the export thread has the collector's answer: a moment after the receiver sent it.
  let afterRefusal = await healthz();
  for (const deadline = Date.now() + 20_000; afterRefusal.status === 200 && Date.now() < deadline; afterRefusal = await healthz()) await new Promise((r) => setTimeout(r, 20));
  // The collector asked again (an empty request, after a second or so) and refusing still.
  for (const deadline = Date.now() + 20_000; receiver.requests.length < 2 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 20));
  const whileRefusing = { healthz: await healthz(), requests: receiver.requests.map((r) => `${r.path} ${r.status}`).slice(0, 2) };

  refusing = false;
  // Rechecked with backoff from 1 s, doubling: a few seconds at most here.
  let seen = await healthz();
  for (const deadline = Date.now() + 30_000; seen.status !== 200 && Date.now() < deadline; seen = await healthz()) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    { afterRefusal, whileRefusing, healthz: seen, spansAccepted: receiver.counts.spans, paths: [...new Set(receiver.requests.map((r) => r.path))] },
    {
      afterRefusal: failing,
      whileRefusing: { healthz: failing, requests: ['/v1/traces 401', '/v1/traces 401'] },
      healthz: { status: 200, body: { status: 'ok', problems: [], connected: true, exporting: true } },
      // The refused span is not sent again.
      spansAccepted: 0,
      paths: ['/v1/traces'],
    },
  );
  watch.child.kill('SIGTERM');
  assert.equal((await watch.result).code, 0);
});

/** A connection to `host:port` opened (true) or refused. */
function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

test('watch: PREFECT_OTEL_HTTP_HOST=127.0.0.1 serves /healthz, /livez and /metrics on that address only; unset, on every address as before', async (t) => {
  const env = { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_HTTP_PORT: '0' };
  const local = startWatch({ ...env, PREFECT_OTEL_HTTP_HOST: '127.0.0.1' }, t);
  const every = startWatch(env, t);
  // Both logs followed from the start: a line said before its reader is attached would be missed.
  const lines = [healthLine(local.child), healthLine(every.child)];
  const served = async (at: Promise<{ port: number; address: string }>) => {
    const line = await at;
    const livez = await fetch(`http://127.0.0.1:${line.port}/livez`);
    return { address: line.address, livez: livez.status, ipv6Loopback: IPV6 ? await connects('::1', line.port) : 'no IPv6' };
  };
  assert.deepEqual(
    { local: await served(lines[0]!), every: await served(lines[1]!) },
    {
      local: { address: '127.0.0.1', livez: 200, ipv6Loopback: IPV6 ? false : 'no IPv6' },
      every: { address: IPV6 ? '::' : '0.0.0.0', livez: 200, ipv6Loopback: IPV6 ? true : 'no IPv6' },
    },
  );
  for (const w of [local, every]) {
    w.child.kill('SIGTERM');
    assert.equal((await w.result).code, 0);
  }
});

test('a bad PREFECT_OTEL_HTTP_HOST or --http-host is a configuration error listed with the others (exit 2); an address this machine does not have is said with the setting to change (exit 1)', async () => {
  const bad = await startCli(['replay', '-', '--http-host', 'http://0.0.0.0:9464', '--settle-ms=-1'], { OTEL_TRACES_EXPORTER: 'none' }, '').result;
  const badEnv = await startCli(['replay', '-'], { PREFECT_OTEL_HTTP_HOST: '[::1]', PREFECT_OTEL_HTTP_PORT: 'x', OTEL_TRACES_EXPORTER: 'none' }, '').result;
  // 192.0.2.1 is TEST-NET-1: documentation only, on no machine's interface.
  const absent = await startCli(['replay', '-'], { PREFECT_OTEL_HTTP_HOST: '192.0.2.1', PREFECT_OTEL_HTTP_PORT: '0', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'silent' }, '').result;
  assert.deepEqual(
    [bad, badEnv, absent].map((r) => ({ code: r.code, stderr: r.stderr })),
    [
      {
        code: 2,
        stderr: [
          'prefect-otel: invalid configuration:',
          '  - --settle-ms: must be between 0 and 600000 ms, got -1',
          '  - --http-host: expected an IP address or a host name of this machine (127.0.0.1, ::, localhost), without a scheme or port, got "http://0.0.0.0:9464"',
          '',
          '',
        ].join('\n'),
      },
      {
        code: 2,
        stderr: [
          'prefect-otel: invalid configuration:',
          '  - PREFECT_OTEL_HTTP_PORT: expected a whole number, got "x"',
          '  - PREFECT_OTEL_HTTP_HOST: write an IPv6 address without brackets: ::1',
          '',
          '',
        ].join('\n'),
      },
      {
        code: 1,
        stderr: 'prefect-otel: the health endpoint cannot listen on 192.0.2.1:0 (PREFECT_OTEL_HTTP_HOST, option httpHost): no network interface of this machine has this address; choose one it has, or leave it unset for every address\n',
      },
    ],
  );
});
