import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { renderMetrics } from '../../src/health.js';
import { startPrefectTracing } from '../../src/index.js';
import { LAG_METRIC, METRIC_DEFS } from '../../src/metric-defs.js';
import type { TracingStats } from '../../src/stats.js';
import { VERSION } from '../../src/version.js';
import { startCli } from '../helpers/cli.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type ReceivedMetric } from '../helpers/otlp-receiver.js';
import { flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';
import { logLines, startWatch, tempDir, until } from '../helpers/watch-e2e.js';
import { errMessage } from '../helpers/log-err.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);

function runLines(i: number): string[] {
  const fr = `0198c7d2-5b1e-7a3c-9f10-${i.toString(16).padStart(12, '0')}`;
  const tr = `0198c7d2-6000-7abc-8def-${i.toString(16).padStart(12, '0')}`;
  const t = T0 + i * 10_000;
  const state = (type: string, name: string) => ({ type, name });
  return [
    flowRunStateEvent({ flowRunId: fr, flowRunName: `run-${i}`, ...FLOW, state: state('RUNNING', 'Running'), from: 'PENDING', runCount: 1, occurred: t }),
    taskRunStateEvent({ taskRunId: tr, taskRunName: 'extract-1', taskKey: 'extract-9a8b', flowRunId: fr, ...FLOW, state: state('RUNNING', 'Running'), from: 'PENDING', runCount: 1, occurred: t + 100 }),
    taskRunStateEvent({ taskRunId: tr, taskRunName: 'extract-1', taskKey: 'extract-9a8b', flowRunId: fr, ...FLOW, state: state('COMPLETED', 'Completed'), from: 'RUNNING', runCount: 1, occurred: t + 200 }),
    flowRunStateEvent({ flowRunId: fr, flowRunName: `run-${i}`, ...FLOW, state: state('COMPLETED', 'Completed'), from: 'RUNNING', runCount: 1, occurred: t + 300 }),
  ].map((e) => JSON.stringify(e));
}

/**
 * The unit suffixes of the Collector's Prometheus exporter (its default translation strategy,
 * UnderscoreEscapingWithSuffixes), for the units prefect-otel uses: `{…}` annotations add nothing,
 * and unit `1` adds `_ratio`, to gauges only.
 */
const UNIT_SUFFIXES: Record<string, string> = { s: 'seconds', ms: 'milliseconds', By: 'bytes' };

/** An OTel metric's name as the Collector's Prometheus exporter exposes it. */
function prometheusName(name: string, unit: string, kind: 'counter' | 'gauge' | 'histogram'): string {
  const suffixes: string[] = [];
  if (unit === '1') {
    if (kind === 'gauge') suffixes.push('ratio');
  } else if (unit !== '' && !/^\{[^}]*\}$/.test(unit)) {
    suffixes.push(UNIT_SUFFIXES[unit] ?? unit);
  }
  if (kind === 'counter') suffixes.push('total');
  return [name.replace(/[^A-Za-z0-9_]/g, '_'), ...suffixes].join('_');
}

/** The Collector's usual OTLP → Prometheus translation, applied to one metrics export. */
function asPrometheus(metrics: ReceivedMetric[]): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  const labels = (a: Record<string, unknown>): string => {
    const entries = Object.entries(a);
    return entries.length === 0 ? '' : `{${entries.map(([k, v]) => `${k}="${String(v)}"`).join(',')}}`;
  };
  for (const m of metrics) {
    if (m.type === 'histogram') {
      const base = prometheusName(m.name, m.unit, 'histogram');
      out[`# TYPE ${base}`] = 'histogram';
      for (const p of m.points) {
        let cumulative = 0;
        p.bucketCounts!.forEach((n, i) => {
          cumulative += n;
          out[`${base}_bucket{le="${i < p.explicitBounds!.length ? String(p.explicitBounds![i]) : '+Inf'}"}`] = cumulative;
        });
        out[`${base}_sum`] = p.sum ?? 0;
        out[`${base}_count`] = p.count!;
      }
      continue;
    }
    const counter = m.type === 'sum' && m.monotonic === true && m.temporality === 2;
    const name = prometheusName(m.name, m.unit, counter ? 'counter' : 'gauge');
    out[`# TYPE ${name}`] = counter ? 'counter' : 'gauge';
    for (const p of m.points) out[`${name}${labels(p.attributes)}`] = p.value!;
  }
  return out;
}

/**
 * A histogram's `_sum` to the microsecond: the SDK adds each collection's observations to the sum
 * it had, so the same lags summed in other groups may differ in the last bit.
 */
function sumsToMicroseconds(samples: Record<string, number | string>): Record<string, number | string> {
  return Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, k.endsWith('_sum') && typeof v === 'number' ? Math.round(v * 1e6) / 1e6 : v]));
}

/** Samples of a Prometheus text exposition, minus the families that are only on `/metrics`. */
function parsePrometheus(text: string, skip: readonly string[]): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP')) continue;
    if (skip.some((s) => line.startsWith(s) || line.startsWith(`# TYPE ${s}`))) continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      out[`# TYPE ${name}`] = type!;
    } else {
      const at = line.lastIndexOf(' ');
      out[line.slice(0, at)] = Number(line.slice(at + 1));
    }
  }
  return out;
}

test("every metric exported over OTLP has, at the Collector's Prometheus endpoint, the name prefect-otel's own /metrics gives it", () => {
  const exported = [
    ...METRIC_DEFS.flatMap((d) => (d.otel === undefined ? [] : [{ otel: d.otel, unit: d.unit, kind: d.type, prometheus: d.prometheus }])),
    { otel: LAG_METRIC.otel, unit: LAG_METRIC.unit, kind: 'histogram' as const, prometheus: LAG_METRIC.prometheus },
  ];
  assert.deepEqual(
    exported.map((m) => prometheusName(m.otel, m.unit, m.kind)),
    exported.map((m) => m.prometheus),
  );
});

test('OTEL_METRICS_EXPORTER=otlp: replay exports the /metrics counters and the lag histogram as OTel metrics, periodically and once more at the end', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const first = [...runLines(1), '{not json', '[1,2]', ...runLines(2)];
  const dup = runLines(3);
  const second = [...dup, dup[0]!, '{"id":"x","event":"e","occurred":"2026-11-20T09:00:00Z","resource":{"prefect.resource.id":"x"}}', '{"also not json'];
  const cli = startCli(
    ['replay', '-'],
    {
      PREFECT_API_URL: 'http://127.0.0.1:9/api',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_METRIC_EXPORT_INTERVAL: '400',
      OTEL_SERVICE_NAME: 'prefect-test',
      PREFECT_OTEL_LOG_LEVEL: 'info',
    },
    `${first.join('\n')}\n`,
    { keepStdinOpen: true },
  );
  // A periodic export arrives while the replay is still reading.
  await receiver.waitForMetricExports(1);
  cli.child.stdin!.end(`${second.join('\n')}\n`);
  const r = await cli.result;
  assert.equal(r.code, 0, r.stderr);

  const statsLines = r.stdout.split('\n').filter((l) => l.includes('"msg":"stats"')).map((l) => JSON.parse(l) as TracingStats & { component: string });
  assert.equal(statsLines.length, 1, 'one final stats line (the interval is a minute)');
  // The line gives the lag buckets as `{ le, count }` objects; `stats()` as `[le, count]` pairs.
  const line = statsLines[0]!;
  const buckets = (line.spans.exportLag.buckets as unknown as { le: string; count: number }[]).map(({ le, count }) => [le, count] as const);
  const final: TracingStats = { ...line, spans: { ...line.spans, exportLag: { ...line.spans.exportLag, buckets } } };
  const exports = receiver.metrics();
  assert.ok(exports.length >= 2);
  const last = exports.at(-1)!;

  // The last export says exactly what /metrics would say of the final stats (process facts aside).
  const expected = parsePrometheus(renderMetrics(final), ['prefect_otel_up_seconds', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']);
  assert.deepEqual(sumsToMicroseconds(asPrometheus(last)), sumsToMicroseconds(expected));
  assert.equal(Object.keys(expected).filter((k) => k.startsWith('# TYPE ')).length, METRIC_DEFS.filter((d) => d.otel !== undefined).length + 1, 'every family but the process facts, and the histogram');
  // …which is what the summary reports.
  assert.match(r.stderr, /skipped: 4 \(invalid_json: 2, not_an_object: 1, bad_id: 1\)/);
  assert.match(r.stderr, /runs: 6 {2}spans: 6 \(0 incomplete\)/);
  assert.match(r.stderr, /spans: 6 exported/);
  assert.deepEqual(
    {
      received: expected.prefect_otel_events_received_total,
      duplicates: expected.prefect_otel_events_duplicate_total,
      exported: expected.prefect_otel_spans_exported_total,
      lagCount: expected.prefect_otel_export_lag_seconds_count,
      beyondADay: expected['prefect_otel_export_lag_seconds_bucket{le="+Inf"}'] as number - (expected['prefect_otel_export_lag_seconds_bucket{le="86400"}'] as number),
      skipped: Object.fromEntries(Object.entries(expected).filter(([k]) => k.startsWith('prefect_otel_events_skipped_total{'))),
    },
    {
      received: first.length + second.length,
      duplicates: 1,
      exported: 6,
      lagCount: 6,
      beyondADay: 6, // the replayed runs ended in November 2026's past, far more than a day before their export
      // Every reason, those never seen at 0.
      skipped: {
        'prefect_otel_events_skipped_total{reason="invalid_json"}': 2,
        'prefect_otel_events_skipped_total{reason="not_an_object"}': 1,
        'prefect_otel_events_skipped_total{reason="not_an_event_message"}': 0,
        'prefect_otel_events_skipped_total{reason="missing_field"}': 0,
        'prefect_otel_events_skipped_total{reason="wrong_type"}': 0,
        'prefect_otel_events_skipped_total{reason="bad_timestamp"}': 0,
        'prefect_otel_events_skipped_total{reason="bad_id"}': 1,
        'prefect_otel_events_skipped_total{reason="bad_run_id"}': 0,
        'prefect_otel_events_skipped_total{reason="unknown_state"}': 0,
        'prefect_otel_events_skipped_total{reason="too_large"}': 0,
        'prefect_otel_events_skipped_total{reason="too_deep"}': 0,
      },
    },
  );
  for (const m of last) {
    assert.equal(m.resource['service.name'], 'prefect-test');
    assert.deepEqual(m.scope, { name: 'prefect-otel', version: VERSION });
  }
  assert.ok(receiver.requests.filter((q) => q.path === '/v1/metrics').every((q) => q.contentType === 'application/x-protobuf' && q.status === 200));
});

test('a bad OTEL_METRIC_EXPORT_INTERVAL, OTEL_METRIC_EXPORT_TIMEOUT or OTEL_METRICS_EXPORTER warns and falls back, as OTel components do', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const r = await startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_METRICS_EXPORTER: 'prometheus', OTEL_METRIC_EXPORT_INTERVAL: 'soon', OTEL_METRIC_EXPORT_TIMEOUT: '-5' }, runLines(1).join('\n')).result;
  assert.equal(r.code, 0, r.stderr);
  const warnings = r.stdout.split('\n').filter((l) => l.includes('"component":"config"')).map((l) => (JSON.parse(l) as { msg: string }).msg);
  assert.deepEqual(warnings, [
    'OTEL_METRICS_EXPORTER: must be one of otlp, none, got "prometheus"; using the default (none)',
    'OTEL_METRIC_EXPORT_INTERVAL: expected a whole number ms, got "soon"; using the default (60000)',
    'OTEL_METRIC_EXPORT_TIMEOUT: must be between 1 and 86400000 ms, got -5; using the default (30000)',
  ]);
  // The collector was reached (the run's spans arrived), and no metrics came with them.
  assert.deepEqual([...new Set(receiver.requests.map((q) => `${q.path} ${q.status}`))], ['/v1/traces 200']);
  assert.deepEqual(receiver.spans().map((s) => s.name).sort(), ['etl', 'extract']);
});

test('watch: a collector that refuses every metrics export is said once, when it starts failing, and once for the last export at shutdown; not at every interval', async (t) => {
  const prefect = await startFakePrefect();
  const receiver = await startOtlpReceiver({ respond: (_n, path) => (path === '/v1/metrics' ? { status: 400, body: 'metrics refused' } : 200) });
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const { child, result } = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_INTERVAL: '400' }, t);
  await until('four refused metrics exports', () => receiver.requests.filter((q) => q.path === '/v1/metrics').length >= 4);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  const said = logLines(r.stdout)
    .filter((l) => l.signal === 'metrics' || l.component === 'otel-sdk')
    .filter((l) => Number(l.level) >= 40)
    .map((l) => ({ level: l.level, msg: l.msg, error: errMessage(l.err) }));
  assert.deepEqual(said, [
    { level: 40, msg: 'metrics export failing; tried again at the next interval', error: 'HTTP 400 Bad Request: metrics refused' },
    { level: 40, msg: 'final metrics export failed', error: 'HTTP 400 Bad Request: metrics refused' },
  ]);
});

test('a collector that refuses the metrics quoting their credential: the warnings give its status and message, the credential redacted, as for spans', async (t) => {
  const credential = 'Bearer m3trics-t0ken-0123456789';
  const receiver = await startOtlpReceiver({
    respond: (_n, path) => (path === '/v1/metrics' ? { status: 401, reason: `no access for ${credential}`, body: JSON.stringify({ code: 16, message: `token ${credential} unknown` }) } : 200),
  });
  t.after(() => receiver.close());
  const cli = startCli(
    ['replay', '-'],
    {
      PREFECT_API_URL: 'http://127.0.0.1:9/api',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_METRICS_HEADERS: `authorization=${encodeURIComponent(credential)}`,
      OTEL_METRIC_EXPORT_INTERVAL: '400',
    },
    `${runLines(1).join('\n')}\n`,
    { keepStdinOpen: true },
  );
  t.after(() => cli.child.kill('SIGKILL'));
  // A periodic export is refused while the replay still reads; the last one at its end.
  await until('a refused metrics export', () => receiver.requests.some((q) => q.path === '/v1/metrics'));
  cli.child.stdin!.end();
  const r = await cli.result;
  assert.equal(r.code, 0, r.stderr);
  const said = logLines(r.stdout)
    .filter((l) => Number(l.level) >= 40)
    .map((l) => ({ msg: l.msg, error: errMessage(l.err) }));
  const error = 'HTTP 401 no access for [redacted]: token [redacted] unknown';
  assert.deepEqual(said, [
    { msg: 'metrics export failing; tried again at the next interval', error },
    { msg: 'final metrics export failed', error },
  ]);
  assert.ok(!`${r.stdout}${r.stderr}`.includes('m3trics-t0ken'), 'the credential in the output');
});

test('watch: a metrics collector that never answers is said once, when exports start failing, and once at shutdown; not as an error at every interval', async (t) => {
  const prefect = await startFakePrefect();
  const receiver = await startOtlpReceiver();
  const metricsCollector = await startOtlpReceiver();
  const release = metricsCollector.hold();
  t.after(async () => {
    release();
    await Promise.all([receiver.close(), metricsCollector.close(), prefect.close()]);
  });
  const { child, result } = startWatch({
    PREFECT_API_URL: prefect.url,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_METRICS_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${metricsCollector.url}/v1/metrics`,
    OTEL_METRIC_EXPORT_INTERVAL: '400',
  }, t);
  await until('four metrics exports left unanswered', () => metricsCollector.counts.requests >= 4);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  const said = logLines(r.stdout)
    .filter((l) => Number(l.level) >= 40)
    .map((l) => ({ level: l.level, component: l.component, msg: l.msg, url: l.url, error: errMessage(l.err) }));
  assert.deepEqual(said, [
    { level: 40, component: 'export', msg: 'metrics export failing; tried again at the next interval', url: `${metricsCollector.url}/v1/metrics`, error: 'Request timed out' },
    { level: 40, component: 'export', msg: 'final metrics export failed', url: `${metricsCollector.url}/v1/metrics`, error: 'Request timed out' },
  ]);
});

test('OTEL_METRIC_EXPORT_TIMEOUT bounds a metrics export: a collector slower than it fails the export, which is said, with the collector\'s spans unaffected', async (t) => {
  const receiver = await startOtlpReceiver();
  // Answers after 3 s: within the OTLP timeout (10 s) and three quarters of the interval (45 s).
  const slowMetrics = await startOtlpReceiver({ delayMs: 3_000 });
  t.after(() => Promise.all([receiver.close(), slowMetrics.close()]));
  const env = { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${slowMetrics.url}/v1/metrics` };
  const r = await startCli(['replay', '-'], { ...env, OTEL_METRIC_EXPORT_TIMEOUT: '300' }, runLines(1).join('\n')).result;
  assert.equal(r.code, 0, r.stderr);
  const said = logLines(r.stdout)
    .filter((l) => Number(l.level) >= 40)
    .map((l) => ({ msg: l.msg, error: errMessage(l.err) }));
  assert.deepEqual(
    { said, metricsTaken: slowMetrics.counts.metricExports, spans: receiver.spans().map((s) => s.name).sort() },
    { said: [{ msg: 'final metrics export failed', error: 'Request timed out' }], metricsTaken: 0, spans: ['etl', 'extract'] },
  );
});

for (const preference of ['delta', 'lowmemory'] as const) {
  test(`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=${preference}: the temporality of each metric is the spec's for it, and the deltas of the exports add up to the totals`, async () => {
    const receiver = await startOtlpReceiver();
    const first = [...runLines(1), '{not json'];
    const second = [...runLines(2), ...runLines(3)];
    const cli = startCli(
      ['replay', '-'],
      { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_METRICS_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_INTERVAL: '400', OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: preference },
      `${first.join('\n')}\n`,
      { keepStdinOpen: true },
    );
    // An export while the replay still reads, then the rest of the input.
    await receiver.waitForMetricExports(1);
    cli.child.stdin!.end(`${second.join('\n')}\n`);
    const r = await cli.result;
    await receiver.close();
    assert.equal(r.code, 0, r.stderr);
    const exports = receiver.metrics();
    // Sums and the histogram: 1 delta, 2 cumulative. `delta` makes the observable counters deltas too; `lowmemory` only the histogram.
    // The UpDownCounters (non-monotonic sums) stay cumulative under both.
    const counterTemporality = preference === 'delta' ? 1 : 2;
    const temporalities = new Set(exports.flat().filter((m) => m.type !== 'gauge').map((m) => `${m.type}${m.type === 'sum' ? (m.monotonic === true ? ' monotonic' : '') : ''} ${m.temporality}`));
    assert.deepEqual(temporalities, new Set([`sum monotonic ${counterTemporality}`, 'sum 2', 'histogram 1']));
    const values = (name: string): number[] => exports.map((e) => e.find((m) => m.name === name)?.points.reduce((n, p) => n + (p.value ?? 0), 0) ?? 0);
    const received = values('prefect_otel.events.received');
    const lagCounts = exports.map((e) => e.find((m) => m.name === LAG_METRIC.otel)?.points[0]?.count ?? 0);
    assert.deepEqual(
      {
        received: preference === 'delta' ? received.reduce((a, b) => a + b, 0) : received.at(-1),
        // A histogram of deltas: each span's lag in exactly one export.
        lagCount: lagCounts.reduce((a, b) => a + b, 0),
      },
      { received: first.length + second.length, lagCount: 6 },
    );
  });
}

test('OTLP metrics of two prefect-otel processes (a holder and its standby) are two series: each carries its own service.instance.id, kept across its exports, unless OTEL_RESOURCE_ATTRIBUTES sets one', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const start = (resourceAttributes: string) => {
    const tracing = startPrefectTracing({
      env: { OTEL_RESOURCE_ATTRIBUTES: resourceAttributes }, logger: pino({ level: 'silent' }), apiUrl: 'http://127.0.0.1:9/api', tracesExporter: 'none',
      stateFile: join(tempDir(), 'state.json'), statsIntervalMs: 0, otlpEndpoint: receiver.url, metricsExporter: 'otlp', metricExportIntervalMs: 100,
    });
    t.after(() => tracing.shutdown());
    return tracing;
  };
  start('deployment.environment.name=prod');
  start('deployment.environment.name=prod');
  start('deployment.environment.name=staging,service.instance.id=pod-7');
  await until('three exports of each process', () => receiver.metrics().length >= 9);
  const ids = (env: string) => new Set(receiver.metrics().filter((m) => m[0]!.resource['deployment.environment.name'] === env).map((m) => m[0]!.resource['service.instance.id']));
  const prod = [...ids('prod')];
  assert.deepEqual(
    { prod: prod.length, uuids: prod.every((id) => typeof id === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(id)), staging: [...ids('staging')] },
    { prod: 2, uuids: true, staging: ['pod-7'] },
  );
});
