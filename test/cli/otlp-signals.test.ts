import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startCli } from '../helpers/cli.js';
import { startOtlpReceiver, type ReceivedRequest } from '../helpers/otlp-receiver.js';
import { logLines } from '../helpers/watch-e2e.js';
import { flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';
import { errMessage } from '../helpers/log-err.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TR = '0198c7d2-6000-7abc-8def-000000000001';
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);

function smallRun(): string {
  const state = (type: string, name: string) => ({ type, name });
  const task = { taskRunId: TR, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, ...FLOW, runCount: 1 };
  return [
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: state('RUNNING', 'Running'), from: 'PENDING', runCount: 1, occurred: T0 }),
    taskRunStateEvent({ ...task, state: state('RUNNING', 'Running'), from: 'PENDING', occurred: T0 + 1000 }),
    taskRunStateEvent({ ...task, state: state('COMPLETED', 'Completed'), from: 'RUNNING', occurred: T0 + 2000 }),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: state('COMPLETED', 'Completed'), from: 'RUNNING', runCount: 1, occurred: T0 + 3000 }),
  ].map((e) => JSON.stringify(e)).join('\n');
}

/** Per request: path, encoding and the `x-` headers the collector saw. */
const onTheWire = (r: ReceivedRequest) => ({
  path: r.path,
  contentType: r.contentType,
  contentEncoding: r.contentEncoding ?? 'none',
  headers: Object.fromEntries(Object.entries(r.headers).filter(([name]) => name.startsWith('x-'))),
});

test('logs and metrics use their own OTLP protocol, compression and headers; what reaches the collector is what prefect-otel resolved', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const r = await startCli(['replay', '-', '--otlp-logs-headers', 'x-logs=from-flag,x-tenant=t-logs'], {
    PREFECT_API_URL: 'http://127.0.0.1:9/api',
    PREFECT_OTEL_LOG_LEVEL: 'debug',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_LOGS_EXPORTER: 'otlp',
    OTEL_METRICS_EXPORTER: 'otlp',
    OTEL_EXPORTER_OTLP_HEADERS: 'x-all=generic,x-tenant=t1',
    OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json',
    // The flag replaces this variable: none of it may reach the collector (the SDK reads it too).
    OTEL_EXPORTER_OTLP_LOGS_HEADERS: 'x-logs=from-env,x-stale=s3cret-env',
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: 'gzip',
    OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'x-metrics=m',
  }, smallRun()).result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual([receiver.spans().length, receiver.logs().length, receiver.metrics().length > 0], [2, 4, true]);
  const seen = new Map(receiver.requests.map((q) => [JSON.stringify(onTheWire(q)), onTheWire(q)]));
  assert.deepEqual([...seen.values()].sort((a, b) => a.path.localeCompare(b.path)), [
    { path: '/v1/logs', contentType: 'application/json', contentEncoding: 'none', headers: { 'x-all': 'generic', 'x-tenant': 't-logs', 'x-logs': 'from-flag' } },
    { path: '/v1/metrics', contentType: 'application/json', contentEncoding: 'gzip', headers: { 'x-all': 'generic', 'x-tenant': 't1', 'x-metrics': 'm' } },
    { path: '/v1/traces', contentType: 'application/x-protobuf', contentEncoding: 'none', headers: { 'x-all': 'generic', 'x-tenant': 't1' } },
  ]);
  // The startup line shows each signal's transport; header values never.
  const settings = logLines(r.stdout).find((l) => l.msg === 'replay starting')?.settings as Record<string, unknown> | undefined;
  assert.deepEqual(settings && [settings.protocol, settings.logsProtocol, settings.logsCompression, settings.logsHeaders, settings.metricsProtocol, settings.metricsCompression, settings.metricsHeaders], [
    'http/protobuf', 'http/json', 'none', ['x-all=[redacted]', 'x-tenant=[redacted]', 'x-logs=[redacted]'], 'http/json', 'gzip', ['x-all=[redacted]', 'x-tenant=[redacted]', 'x-metrics=[redacted]'],
  ]);
  for (const secret of ['from-flag', 's3cret-env', 't-logs']) assert.ok(!`${r.stdout}${r.stderr}`.includes(secret), `${secret} in the output`);
});

test('replay: the summary counts the OTLP log records as it counts the spans, and log records the collector refuses fail the export (exit 1), as undelivered ones do', async (t) => {
  const receiver = await startOtlpReceiver();
  const refusing = await startOtlpReceiver({ respond: () => ({ status: 401, body: JSON.stringify({ code: 16, message: 'unknown tenant' }) }) });
  t.after(() => Promise.all([receiver.close(), refusing.close()]));
  const env = { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_LOGS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json' };
  const summary = (stderr: string): string[] => stderr.split('\n').filter((l) => /^(spans|log records|export):/.test(l));

  const taken = await startCli(['replay', '-'], env, smallRun()).result;
  assert.deepEqual({ code: taken.code, summary: summary(taken.stderr) }, { code: 0, summary: ['spans: 2 exported', 'log records: 4 exported', 'export: ok'] });

  const refused = await startCli(['replay', '-'], { ...env, OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: `${refusing.url}/v1/logs` }, smallRun()).result;
  assert.deepEqual({ code: refused.code, summary: summary(refused.stderr) }, { code: 1, summary: ['spans: 2 exported', `log records: 0 exported, 4 rejected (to ${refusing.url}/v1/logs: HTTP 401 Unauthorized: unknown tenant)`, 'export: FAILED'] });
});

test('replay: a summary that counts spans or log records not delivered says where they were sent and what the collector answered (its URL without secrets)', async (t) => {
  const wrongPath = await startOtlpReceiver({ respond: () => ({ status: 404, reason: 'Not Found' }) });
  const refusing = await startOtlpReceiver({ respond: () => ({ status: 401, body: JSON.stringify({ code: 16, message: 'unknown tenant' }) }) });
  t.after(() => Promise.all([wrongPath.close(), refusing.close()]));
  const tracesUrl = `${wrongPath.url.replace('//', '//user:s3cret@')}/otlp?api_key=s3cret`;
  const env = {
    PREFECT_API_URL: 'http://127.0.0.1:9/api',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: tracesUrl,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: `${refusing.url}/v1/logs`,
    OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json',
    OTEL_LOGS_EXPORTER: 'otlp',
  };
  const r = await startCli(['replay', '-'], env, smallRun()).result;
  const summary = r.stderr.split('\n').filter((l) => /^(spans|log records|export):/.test(l));
  assert.deepEqual({ code: r.code, summary }, {
    code: 1,
    summary: [
      `spans: 0 exported, 2 rejected (to ${wrongPath.url}/otlp?api_key=[redacted]: HTTP 404 Not Found)`,
      `log records: 0 exported, 4 rejected (to ${refusing.url}/v1/logs: HTTP 401 Unauthorized: unknown tenant)`,
      'export: FAILED',
    ],
  });
  assert.ok(!r.stderr.includes('s3cret'), r.stderr);
});

test('replay: the log lines of an export the collector refuses name the URL it went to (without secrets), for each signal', async (t) => {
  const wrongPath = await startOtlpReceiver({ respond: () => ({ status: 404, reason: 'Not Found' }) });
  const refusing = await startOtlpReceiver({ respond: () => ({ status: 401, body: JSON.stringify({ code: 16, message: 'unknown tenant' }) }) });
  t.after(() => Promise.all([wrongPath.close(), refusing.close()]));
  const r = await startCli(['replay', '-'], {
    PREFECT_API_URL: 'http://127.0.0.1:9/api',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${wrongPath.url.replace('//', '//user:s3cret@')}/otlp?api_key=s3cret`,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: `${refusing.url}/v1/logs`,
    OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json',
    OTEL_LOGS_EXPORTER: 'otlp',
  }, smallRun()).result;
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(
    logLines(r.stdout).filter((l) => l.component === 'export').map((l) => ({ msg: l.msg, signal: l.signal, url: l.url, error: errMessage(l.err) })).sort((a, b) => String(a.signal).localeCompare(String(b.signal))),
    [
      { msg: 'collector rejected spans; not retried', signal: 'traces', url: `${wrongPath.url}/otlp?api_key=[redacted]`, error: 'HTTP 404 Not Found' },
      { msg: 'collector rejected log records; not retried', signal: 'logs', url: `${refusing.url}/v1/logs`, error: 'HTTP 401 Unauthorized: unknown tenant' },
    ].sort((a, b) => a.signal.localeCompare(b.signal)),
  );
  assert.ok(!r.stdout.includes('s3cret'), r.stdout);
});

test('replay: the log records are batched by OTEL_BLRP_*, the spans by OTEL_BSP_*, each on its own (one span a request; the four log records of the run in one)', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const r = await startCli(['replay', '-'], {
    PREFECT_API_URL: 'http://127.0.0.1:9/api',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_LOGS_EXPORTER: 'otlp',
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '1',
    OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: '4',
    // A partly filled batch of log records waits longer than the replay takes: only a full one, or the end, sends it.
    OTEL_BLRP_SCHEDULE_DELAY: '60000',
  }, smallRun()).result;
  assert.equal(r.code, 0, r.stderr);
  const requestsTo = (path: string) => receiver.requests.filter((q) => q.path === path).length;
  assert.deepEqual(
    { spans: receiver.spans().length, logs: receiver.logs().length, traceRequests: requestsTo('/v1/traces'), logRequests: requestsTo('/v1/logs') },
    { spans: 2, logs: 4, traceRequests: 2, logRequests: 1 },
  );
});

test('replay: one export takes at most OTEL_BSP_EXPORT_TIMEOUT (spans) and OTEL_BLRP_EXPORT_TIMEOUT (log records), below the OTLP timeout: a collector slow to answer its first request of each has it given up and sent again', async (t) => {
  // The first request to each path waits 5 s for its answer; the others are answered at once.
  const seen = new Set<string>();
  const receiver = await startOtlpReceiver({
    delayMs: (_n, path) => {
      if (seen.has(path)) return 0;
      seen.add(path);
      return 5_000;
    },
  });
  t.after(() => receiver.close());
  const env = { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_LOGS_EXPORTER: 'otlp', PREFECT_OTEL_LOG_LEVEL: 'warn' };
  const r = await startCli(['replay', '-'], { ...env, OTEL_BSP_EXPORT_TIMEOUT: '1000', OTEL_BLRP_EXPORT_TIMEOUT: '1000' }, smallRun()).result;
  // Each signal's first export given up (a busy machine may give up a retry too: said the same way).
  const warned = [...new Set(logLines(r.stdout).map((l) => JSON.stringify([l.component, l.signal, l.msg])))].map((l) => JSON.parse(l) as unknown).sort();
  assert.deepEqual(
    { code: r.code, summary: r.stderr.split('\n').filter((l) => /^(spans|log records|export):/.test(l)), warned },
    {
      code: 0,
      summary: ['spans: 2 exported', 'log records: 4 exported', 'export: ok'],
      warned: [
        ['export', 'logs', 'export of log records failed; retrying'],
        ['export', 'traces', 'export of spans failed; retrying'],
      ],
    },
  );
});

test('OTLP log records honour OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT and the count limit, each falling back to its OTEL_ATTRIBUTE_* variable; the body is not cut', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const base = { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json' };
  const input = smallRun();
  const records = async (env: Record<string, string>) => {
    const before = receiver.logs().length;
    const r = await startCli(['replay', '-'], { ...base, ...env }, input).result;
    assert.equal(r.code, 0, r.stderr);
    // The first record: the flow run's Running transition.
    const { attributes, droppedAttributesCount, body } = receiver.logs()[before]!;
    return { attributes, droppedAttributesCount, body };
  };
  const body = `STLOGGING: Flow run ${FR} (crimson-fox) state transition: PENDING -> RUNNING (state_name='Running', message='')`;
  const whole = {
    'prefect.run.id': FR, 'prefect.run.type': 'flow', 'prefect.event.id': (JSON.parse(input.split('\n')[0]!) as { id: string }).id,
    'prefect.event.name': 'prefect.flow-run.Running', occurred: new Date(T0).toISOString().replace('Z', '000Z'), 'prefect.run.name': 'crimson-fox',
    'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running',
  };
  assert.deepEqual(await records({}), { attributes: whole, droppedAttributesCount: undefined, body });
  const cut = (n: number) => Object.fromEntries(Object.entries(whole).map(([k, v]) => [k, v.slice(0, n)]));
  const firstFour = (a: Record<string, string>) => Object.fromEntries(Object.entries(a).slice(0, 4));
  const expected = { attributes: firstFour(cut(6)), droppedAttributesCount: 4, body };
  assert.deepEqual(await records({ OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT: '6', OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT: '4' }), expected);
  assert.deepEqual(await records({ OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '6', OTEL_ATTRIBUTE_COUNT_LIMIT: '4' }), expected);
  // The log record's own variables win over the generic ones; the span's do not apply to log records.
  assert.deepEqual(
    await records({ OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT: '6', OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '2', OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT: '4', OTEL_ATTRIBUTE_COUNT_LIMIT: '1', OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '2' }),
    expected,
  );
});
