/**
 * prefect-otel exporting straight to a vendor's OTLP endpoint, configured as each vendor's
 * documentation tells an OpenTelemetry SDK: the URLs the requests go to, the headers and encoding
 * they carry, the metrics' temporality and the attribute lengths the vendor takes, as a receiver on
 * those paths decodes them. The README's "Sending to a vendor's OTLP endpoint" gives these settings.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startCli } from '../helpers/cli.js';
import { startOtlpReceiver, type AttrValue, type OtlpReceiver, type ReceivedRequest } from '../helpers/otlp-receiver.js';
import { customEvent, flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TR = '0198c7d2-6000-7abc-8def-000000000001';
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);

/** A flow run with one task; `long` gives the failed task a state message and an event payload of that many characters. */
function run(long = 0): string {
  const state = (type: string, name: string, message?: string) => ({ type, name, ...(message === undefined ? {} : { message }) });
  const task = { taskRunId: TR, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, ...FLOW, runCount: 1 };
  const events = [
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: state('RUNNING', 'Running'), from: 'PENDING', runCount: 1, occurred: T0 }),
    taskRunStateEvent({ ...task, state: state('RUNNING', 'Running'), from: 'PENDING', occurred: T0 + 1000 }),
    taskRunStateEvent({ ...task, state: state('FAILED', 'Failed', long > 0 ? `Traceback ${'x'.repeat(long)}` : undefined), from: 'RUNNING', occurred: T0 + 2000 }),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: state('COMPLETED', 'Completed'), from: 'RUNNING', runCount: 1, occurred: T0 + 3000 }),
  ];
  if (long > 0) {
    events.splice(2, 0, customEvent({ event: 'etl.rows.loaded', resourceId: 'etl.loader', related: [{ id: `prefect.task-run.${TR}`, role: 'task-run' }], payload: { rows: 'y'.repeat(long) }, occurred: T0 + 1500 }));
  }
  return events.map((e) => JSON.stringify(e)).join('\n');
}

const BASE_ENV = { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'debug', OTEL_LOGS_EXPORTER: 'otlp', OTEL_METRICS_EXPORTER: 'otlp' };

/** What each request carried that a vendor checks: its path, encoding and the headers named. */
function wire(receiver: OtlpReceiver, headers: readonly string[]) {
  const seen = new Map<string, unknown>();
  for (const r of receiver.requests) {
    const one = { path: r.path, contentType: r.contentType, contentEncoding: r.contentEncoding ?? 'none', status: r.status, ...pick(r, headers) };
    seen.set(JSON.stringify(one), one);
  }
  return [...seen.values()].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}

const pick = (r: ReceivedRequest, names: readonly string[]) => Object.fromEntries(names.map((n) => [n, r.headers[n]]));

/** What was received of each signal: spans, log records, metric exports. */
const received = (r: OtlpReceiver) => ({ spans: r.spans().length, logs: r.logs().length, metricExports: r.metrics().length > 0 });

/** Whether any of `secrets` appears in the process's output (its debug log lines included). */
function leaked(out: { stdout: string; stderr: string }, secrets: readonly string[]): string[] {
  return secrets.filter((s) => `${out.stdout}${out.stderr}`.includes(s));
}

test('Grafana Cloud: the OTLP gateway URL keeps its /otlp path (with or without a trailing slash), and its Basic credentials reach it from OTEL_EXPORTER_OTLP_HEADERS written %20-encoded or with a plain space, in no log line', async (t) => {
  const paths = { '/otlp/v1/traces': 'traces', '/otlp/v1/logs': 'logs', '/otlp/v1/metrics': 'metrics' } as const;
  const receiver = await startOtlpReceiver({ paths });
  t.after(() => receiver.close());
  // `<instance id>:<token>`, base64: Grafana's token ends in `=` padding once encoded.
  const credential = Buffer.from('123456:glc_eyJvIjoiMTIzIiwibiI6InByZWZlY3Qi').toString('base64');
  assert.ok(credential.endsWith('='));
  for (const [endpoint, headers] of [
    [`${receiver.url}/otlp`, `Authorization=Basic%20${credential}`],
    [`${receiver.url}/otlp/`, `Authorization=Basic ${credential}`],
  ] as const) {
    receiver.requests.length = 0;
    const r = await startCli(['replay', '-'], { ...BASE_ENV, OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_HEADERS: headers, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, run()).result;
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(wire(receiver, ['authorization']), ['/otlp/v1/logs', '/otlp/v1/metrics', '/otlp/v1/traces'].map((path) => ({
      path, contentType: 'application/x-protobuf', contentEncoding: 'none', status: 200, authorization: `Basic ${credential}`,
    })));
    assert.deepEqual(leaked(r, [credential, 'glc_eyJvIjoiMTIzIiwibiI6InByZWZlY3Qi']), []);
  }
  assert.deepEqual(received(receiver), { spans: 4, logs: 8, metricExports: true });
});

test('Honeycomb: the team key for every signal, the dataset header for metrics only (OTEL_EXPORTER_OTLP_METRICS_HEADERS adds to the generic ones), OTLP/JSON and gzip', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const key = 'hcaik_01hq8example0key0material0abcdefabcdef';
  const r = await startCli(['replay', '-'], {
    ...BASE_ENV,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_HEADERS: `x-honeycomb-team=${key}`,
    OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'x-honeycomb-dataset=prefect-otel-metrics',
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip',
  }, run()).result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(wire(receiver, ['x-honeycomb-team', 'x-honeycomb-dataset']), [
    { path: '/v1/logs', contentType: 'application/json', contentEncoding: 'gzip', status: 200, 'x-honeycomb-team': key, 'x-honeycomb-dataset': undefined },
    { path: '/v1/metrics', contentType: 'application/json', contentEncoding: 'gzip', status: 200, 'x-honeycomb-team': key, 'x-honeycomb-dataset': 'prefect-otel-metrics' },
    { path: '/v1/traces', contentType: 'application/json', contentEncoding: 'gzip', status: 200, 'x-honeycomb-team': key, 'x-honeycomb-dataset': undefined },
  ]);
  assert.deepEqual(received(receiver), { spans: 2, logs: 4, metricExports: true });
  assert.deepEqual(leaked(r, [key]), []);
});

/** Every metric's kind and temporality as `sum monotonic 1`, `sum 2`, `histogram 1` (1 delta, 2 cumulative). */
function temporalities(receiver: OtlpReceiver): Set<string> {
  return new Set(receiver.metrics().flat().map((m) => `${m.type}${m.type === 'sum' && m.monotonic === true ? ' monotonic' : ''} ${m.temporality}`));
}

test('Dynatrace: /api/v2/otlp kept before each signal path, an Api-Token Authorization header, OTLP/protobuf; with OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta no cumulative counter or histogram (which Dynatrace refuses) is sent', async (t) => {
  const paths = { '/api/v2/otlp/v1/traces': 'traces', '/api/v2/otlp/v1/logs': 'logs', '/api/v2/otlp/v1/metrics': 'metrics' } as const;
  const receiver = await startOtlpReceiver({ paths });
  t.after(() => receiver.close());
  const token = 'dt0c01.ST2EY72KQINMH574WMNVI7YN.G3DFPBEJYMODIDAEX454M7YWBUVEFOWKPRVMWFASS64NFH52PX6BNDVFFM572RZM';
  const r = await startCli(['replay', '-'], {
    ...BASE_ENV,
    OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.url}/api/v2/otlp`,
    OTEL_EXPORTER_OTLP_HEADERS: `Authorization=Api-Token%20${token}`,
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta',
  }, run()).result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(wire(receiver, ['authorization']), ['/api/v2/otlp/v1/logs', '/api/v2/otlp/v1/metrics', '/api/v2/otlp/v1/traces'].map((path) => ({
    path, contentType: 'application/x-protobuf', contentEncoding: 'none', status: 200, authorization: `Api-Token ${token}`,
  })));
  // Counters and the histogram as deltas; the UpDownCounters stay cumulative sums, which Dynatrace takes as gauges.
  assert.deepEqual(temporalities(receiver), new Set(['sum monotonic 1', 'sum 2', 'histogram 1']));
  assert.deepEqual(received(receiver), { spans: 2, logs: 4, metricExports: true });
  assert.deepEqual(leaked(r, [token, token.split('.')[2]!]), []);
});

test('Datadog OTLP intake: each signal to its own URL, used as is, with its own headers (dd-api-key, dd-protocol); metrics as deltas', async (t) => {
  const paths = { '/api/intake/otlp/v1/traces': 'traces', '/api/intake/otlp/v1/logs': 'logs', '/api/intake/otlp/v1/metrics': 'metrics' } as const;
  const receiver = await startOtlpReceiver({ paths });
  t.after(() => receiver.close());
  const key = '0123456789abcdef0123456789abcdef';
  const r = await startCli(['replay', '-'], {
    ...BASE_ENV,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/api/intake/otlp/v1/traces`,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: `${receiver.url}/api/intake/otlp/v1/logs`,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${receiver.url}/api/intake/otlp/v1/metrics`,
    OTEL_EXPORTER_OTLP_HEADERS: `dd-api-key=${key}`,
    OTEL_EXPORTER_OTLP_LOGS_HEADERS: 'dd-protocol=otlp',
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta',
  }, run()).result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(wire(receiver, ['dd-api-key', 'dd-protocol']), [
    { path: '/api/intake/otlp/v1/logs', contentType: 'application/x-protobuf', contentEncoding: 'none', status: 200, 'dd-api-key': key, 'dd-protocol': 'otlp' },
    { path: '/api/intake/otlp/v1/metrics', contentType: 'application/x-protobuf', contentEncoding: 'none', status: 200, 'dd-api-key': key, 'dd-protocol': undefined },
    { path: '/api/intake/otlp/v1/traces', contentType: 'application/x-protobuf', contentEncoding: 'none', status: 200, 'dd-api-key': key, 'dd-protocol': undefined },
  ]);
  assert.deepEqual(temporalities(receiver), new Set(['sum monotonic 1', 'sum 2', 'histogram 1']));
  assert.deepEqual(received(receiver), { spans: 2, logs: 4, metricExports: true });
  assert.deepEqual(leaked(r, [key]), []);
});

/** Every string (each string of an array too) among `attributes`, with where it was. */
function strings(where: string, attributes: Record<string, AttrValue>): { where: string; length: number }[] {
  const out: { where: string; length: number }[] = [];
  const visit = (key: string, v: AttrValue): void => {
    if (typeof v === 'string') out.push({ where: `${where} ${key}`, length: v.length });
    else if (Array.isArray(v)) v.forEach((x) => visit(key, x));
  };
  for (const [k, v] of Object.entries(attributes)) visit(k, v);
  return out;
}

test('New Relic: api-key header, gzip; with OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT=4095 no attribute value of a span, span event or log record is longer than New Relic keeps', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const key = 'eu01xx0123456789abcdef0123456789abcdNRAL';
  const r = await startCli(['replay', '-'], {
    ...BASE_ENV,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_HEADERS: `api-key=${key}`,
    OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip',
    OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '4095',
    PREFECT_OTEL_PAYLOAD_MAX_CHARS: '20000',
  }, run(10_000)).result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(wire(receiver, ['api-key']), ['/v1/logs', '/v1/metrics', '/v1/traces'].map((path) => ({ path, contentType: 'application/x-protobuf', contentEncoding: 'gzip', status: 200, 'api-key': key })));
  const all = [
    ...receiver.spans().flatMap((s) => [...strings(`span ${s.name}`, s.attributes), ...s.events.flatMap((e) => strings(`span ${s.name} event ${e.name}`, e.attributes))]),
    ...receiver.logs().flatMap((l) => strings('log record', l.attributes)),
  ];
  // The state message and the payload are cut to the limit on the spans; a log record has them in its body, not in an attribute.
  assert.deepEqual({ longest: Math.max(...all.map((s) => s.length)), over: all.filter((s) => s.length > 4095) }, { longest: 4095, over: [] });
  assert.deepEqual(leaked(r, [key]), []);
});

test("Google Cloud's Telemetry API takes at most 256 events a span: with OTEL_SPAN_EVENT_COUNT_LIMIT=256 a task with 400 events has 256, the oldest summarised in one of them, the state transitions kept", async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const lines = run().split('\n');
  const busy = Array.from({ length: 400 }, (_, i) =>
    JSON.stringify(customEvent({ event: 'etl.batch.done', resourceId: `etl.batch.${i}`, related: [{ id: `prefect.task-run.${TR}`, role: 'task-run' }], payload: { i }, occurred: T0 + 1000 + i })),
  );
  const r = await startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SPAN_EVENT_COUNT_LIMIT: '256' }, [...lines.slice(0, 2), ...busy, ...lines.slice(2)].join('\n')).result;
  assert.equal(r.code, 0, r.stderr);
  const task = receiver.spans().find((s) => s.name === 'extract');
  const names = task?.events.map((e) => e.name) ?? [];
  assert.deepEqual(
    { events: names.length, summaries: names.filter((n) => n === 'prefect_otel.events_summarised').length, transitions: names.filter((n) => n === 'Running' || n === 'Failed') },
    { events: 256, summaries: 1, transitions: ['Running', 'Failed'] },
  );
});

test('Elastic: an APM Server secret token (Authorization=Bearer …) or an API key (Authorization=ApiKey …, base64 with its = padding) reaches every signal, in no log line', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const apiKey = Buffer.from('VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw').toString('base64');
  for (const authorization of ['Bearer%20Zk3xQv9secretTokenValue', `ApiKey ${apiKey}`]) {
    receiver.requests.length = 0;
    const r = await startCli(['replay', '-'], { ...BASE_ENV, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_HEADERS: `Authorization=${authorization}` }, run()).result;
    assert.equal(r.code, 0, r.stderr);
    const sent = decodeURIComponent(authorization);
    assert.deepEqual(wire(receiver, ['authorization']), ['/v1/logs', '/v1/metrics', '/v1/traces'].map((path) => ({ path, contentType: 'application/x-protobuf', contentEncoding: 'none', status: 200, authorization: sent })));
    assert.deepEqual(leaked(r, [sent.split(' ')[1]!]), []);
  }
});

test("a vendor's base URL given as a signal's own endpoint is said at start, with the URL it should have been, and the vendor's 404 after it", async (t) => {
  const receiver = await startOtlpReceiver({ paths: { '/otlp/v1/traces': 'traces' } });
  t.after(() => receiver.close());
  const r = await startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/otlp` }, run()).result;
  const warned = r.stdout.split('\n').filter((l) => l.includes('"level":40')).map((l) => (JSON.parse(l) as { msg: string }).msg);
  assert.deepEqual({ code: r.code, paths: receiver.requests.map((q) => `${q.path} ${q.status}`), warned: warned.filter((m) => m.includes('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT')) }, {
    code: 1,
    paths: ['/otlp 404'],
    warned: [`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (${receiver.url}/otlp) is used as is, and has no OTLP signal path: spans are sent to it, not to ${receiver.url}/otlp/v1/traces; give that full URL, or the base URL as OTEL_EXPORTER_OTLP_ENDPOINT`],
  });
});
