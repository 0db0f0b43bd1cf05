/**
 * The OTLP receiver against the real exporters: the same hand-built span (and log record) sent as
 * protobuf, JSON, and both gzipped decodes to the same whole ReceivedSpan; a 503 is retried and the
 * span arrives once; unknown paths, bad bodies and discard mode.
 */
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { describe, it } from 'node:test';
import { SpanKind, SpanStatusCode, TraceFlags, type HrTime } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { ExportResultCode, hrTimeDuration, type ExportResult } from '@opentelemetry/core';
import { OTLPLogExporter as JsonLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as ProtoLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { startOtlpReceiver, type ReceivedLog, type ReceivedSpan } from './otlp-receiver.js';

const TRACE = '0198c7d25b1e7a3c9f102b3c4d5e6f70';
const SPAN = 'a1b2c3d4e5f60718';
const PARENT = '0f1e2d3c4b5a6978';
const LINKED = { traceId: 'ffeeddccbbaa99887766554433221100', spanId: '1122334455667788' };
const START: HrTime = [1767323045, 133000456];
const END: HrTime = [1767323047, 5];
const resource = resourceFromAttributes({ 'service.name': 'prefect', 'deployment.environment.name': 'test', 'x.workers': 3 });
const scope = { name: 'prefect-otel', version: '1.2.3' };

function span(): ReadableSpan {
  const sc = { traceId: TRACE, spanId: SPAN, traceFlags: TraceFlags.SAMPLED };
  return {
    name: 'etl', kind: SpanKind.SERVER, spanContext: () => sc,
    parentSpanContext: { traceId: TRACE, spanId: PARENT, traceFlags: TraceFlags.SAMPLED },
    startTime: START, endTime: END, duration: hrTimeDuration(START, END), ended: true,
    status: { code: SpanStatusCode.ERROR, message: 'Flow run encountered an exception' },
    attributes: { 'prefect.run.id': 'r-1', 'prefect.run.count': 2, 'prefect.ratio': 0.25, 'prefect.ok': false, 'prefect.tags': ['etl', 'nightly'], 'prefect.empty': '' },
    links: [{ context: { ...LINKED, traceFlags: TraceFlags.SAMPLED }, attributes: { 'prefect.input.name': 'rows' }, droppedAttributesCount: 2 }],
    events: [
      { name: 'Running', time: [1767323045, 200000000], attributes: { 'prefect.state.type': 'RUNNING' }, droppedAttributesCount: 1 },
      { name: 'Failed', time: [1767323047, 5], attributes: { 'prefect.state.type': 'FAILED', 'prefect.run-count': 1 } },
    ],
    resource, instrumentationScope: scope,
    droppedAttributesCount: 3, droppedEventsCount: 2, droppedLinksCount: 1,
  };
}

const EXPECTED_SPAN: ReceivedSpan = {
  traceId: TRACE,
  spanId: SPAN,
  parentSpanId: PARENT,
  name: 'etl',
  kind: 2,
  startTimeUnixNano: '1767323045133000456',
  endTimeUnixNano: '1767323047000000005',
  attributes: { 'prefect.run.id': 'r-1', 'prefect.run.count': 2, 'prefect.ratio': 0.25, 'prefect.ok': false, 'prefect.tags': ['etl', 'nightly'], 'prefect.empty': '' },
  events: [
    { name: 'Running', timeUnixNano: '1767323045200000000', attributes: { 'prefect.state.type': 'RUNNING' }, droppedAttributesCount: 1 },
    { name: 'Failed', timeUnixNano: '1767323047000000005', attributes: { 'prefect.state.type': 'FAILED', 'prefect.run-count': 1 } },
  ],
  links: [{ ...LINKED, attributes: { 'prefect.input.name': 'rows' }, droppedAttributesCount: 2, flags: 0x101 }],
  status: { code: 2, message: 'Flow run encountered an exception' },
  resource: { 'service.name': 'prefect', 'deployment.environment.name': 'test', 'x.workers': 3 },
  scope,
  flags: 0x101, // sampled | "has is_remote" (parent not remote)
  droppedEventsCount: 2,
  droppedAttributesCount: 3,
  droppedLinksCount: 1,
};

function logRecord(): ReadableLogRecord {
  return {
    hrTime: START, hrTimeObserved: END,
    spanContext: { traceId: TRACE, spanId: SPAN, traceFlags: TraceFlags.SAMPLED },
    severityNumber: SeverityNumber.INFO, severityText: 'INFO', body: 'STLOGGING: Flow run crimson-fox is Running',
    attributes: { 'prefect.flow_run.id': 'r-1', attempt: 1 },
    resource, instrumentationScope: scope, droppedAttributesCount: 0,
  };
}

const EXPECTED_LOG: ReceivedLog = {
  traceId: TRACE, spanId: SPAN, flags: 1, timeUnixNano: '1767323045133000456', severityNumber: 9, severityText: 'INFO',
  body: 'STLOGGING: Flow run crimson-fox is Running', attributes: { 'prefect.flow_run.id': 'r-1', attempt: 1 },
  resource: { 'service.name': 'prefect', 'deployment.environment.name': 'test', 'x.workers': 3 }, scope,
};

interface Exporter<T> {
  export(items: T[], done: (r: ExportResult) => void): void;
  shutdown(): Promise<void>;
}

async function send<T>(exporter: Exporter<T>, items: T[]): Promise<void> {
  const result = await new Promise<ExportResult>((resolve) => exporter.export(items, resolve));
  await exporter.shutdown();
  assert.equal(result.code, ExportResultCode.SUCCESS, String(result.error));
}

describe('OTLP receiver', () => {
  it('decodes protobuf, JSON and gzip of both into the same whole span', async () => {
    const receiver = await startOtlpReceiver();
    const url = `${receiver.url}/v1/traces`;
    await send(new ProtoTraceExporter({ url }), [span()]);
    await send(new JsonTraceExporter({ url }), [span()]);
    await send(new ProtoTraceExporter({ url, compression: CompressionAlgorithm.GZIP }), [span()]);
    await send(new JsonTraceExporter({ url, compression: CompressionAlgorithm.GZIP }), [span()]);
    await receiver.close();
    assert.deepEqual(receiver.spans(), [EXPECTED_SPAN, EXPECTED_SPAN, EXPECTED_SPAN, EXPECTED_SPAN]);
    assert.deepEqual(
      receiver.requests.map(({ bytes, headers: _headers, ...r }) => ({ ...r, hasBody: bytes > 0 })),
      [
        { path: '/v1/traces', contentType: 'application/x-protobuf', status: 200, hasBody: true },
        { path: '/v1/traces', contentType: 'application/json', status: 200, hasBody: true },
        { path: '/v1/traces', contentType: 'application/x-protobuf', contentEncoding: 'gzip', status: 200, hasBody: true },
        { path: '/v1/traces', contentType: 'application/json', contentEncoding: 'gzip', status: 200, hasBody: true },
      ],
    );
    assert.deepEqual(receiver.counts, { spans: 4, logs: 0, metricExports: 0, requests: 4, bytes: receiver.requests.reduce((n, r) => n + r.bytes, 0) });
  });

  it('decodes log records from the protobuf and JSON logs exporters into the same whole record', async () => {
    const receiver = await startOtlpReceiver();
    const url = `${receiver.url}/v1/logs`;
    await send(new ProtoLogExporter({ url }), [logRecord()]);
    await send(new JsonLogExporter({ url, compression: CompressionAlgorithm.GZIP }), [logRecord()]);
    assert.deepEqual(await receiver.waitForLogs(2, 1_000), [EXPECTED_LOG, EXPECTED_LOG]);
    assert.deepEqual(receiver.spans(), []);
    await receiver.close();
  });

  it('a 503 with Retry-After is retried by the exporter and the span arrives once', async () => {
    const receiver = await startOtlpReceiver({ respond: (n) => (n === 1 ? { status: 503, headers: { 'retry-after': '0' } } : 200) });
    await send(new ProtoTraceExporter({ url: `${receiver.url}/v1/traces` }), [span()]);
    assert.deepEqual(await receiver.waitForSpans(1, 1_000), [EXPECTED_SPAN]);
    assert.deepEqual(receiver.requests.map((r) => [r.path, r.status]), [['/v1/traces', 503], ['/v1/traces', 200]]);
    assert.deepEqual({ ...receiver.counts, bytes: 0 }, { spans: 1, logs: 0, metricExports: 0, requests: 2, bytes: 0 });
    await receiver.close();
  });

  it('unknown paths, unknown content types and undecodable bodies are answered and not counted as received', async () => {
    const receiver = await startOtlpReceiver();
    const post = (path: string, type: string, body: string | Buffer) => fetch(`${receiver.url}${path}`, { method: 'POST', headers: { 'content-type': type }, body });
    const statuses = [
      (await post('/v1/profiles', 'application/json', '{}')).status,
      (await post('/v1/traces', 'text/plain', 'hello')).status,
      (await post('/v1/traces', 'application/json', '{not json')).status,
      (await post('/v1/traces', 'application/x-protobuf', Buffer.from([0x0a, 0xff]))).status,
      (await fetch(`${receiver.url}/v1/traces`)).status,
    ];
    assert.deepEqual(statuses, [404, 415, 400, 400, 405]);
    assert.deepEqual({ spans: receiver.spans(), counts: { ...receiver.counts, bytes: 0 } }, { spans: [], counts: { spans: 0, logs: 0, metricExports: 0, requests: 5, bytes: 0 } });
    await receiver.close();
  });

  it('discard mode counts spans and log records of both encodings (and gzip) without keeping them; delayMs answers slowly', async () => {
    const receiver = await startOtlpReceiver({ discard: true, delayMs: (n) => (n === 1 ? 30 : 0) });
    const started = Date.now();
    await send(new ProtoTraceExporter({ url: `${receiver.url}/v1/traces` }), [span(), span(), span()]);
    assert.ok(Date.now() - started >= 25, 'the first answer was delayed');
    await send(new JsonTraceExporter({ url: `${receiver.url}/v1/traces`, compression: CompressionAlgorithm.GZIP }), [span(), span()]);
    await send(new ProtoLogExporter({ url: `${receiver.url}/v1/logs`, compression: CompressionAlgorithm.GZIP }), [logRecord(), logRecord()]);
    const body = JSON.stringify({ resourceLogs: [{ scopeLogs: [{ logRecords: [{}, {}, {}] }, { logRecords: [{}] }] }] });
    assert.equal((await fetch(`${receiver.url}/v1/logs`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync(body) })).status, 200);
    assert.deepEqual({ spans: receiver.spans(), logs: receiver.logs(), counts: { ...receiver.counts, bytes: 0 } }, { spans: [], logs: [], counts: { spans: 5, logs: 6, metricExports: 0, requests: 4, bytes: 0 } });
    const id = BigInt(`0x${SPAN}`);
    assert.deepEqual(receiver.spanIdDigest, { count: 5, sum: (5n * id) & ((1n << 64n) - 1n), xor: id }, 'a digest of the span ids of both encodings');
    await receiver.close();
  });

  it('hold answers nothing until released, then answers what waited', async () => {
    const receiver = await startOtlpReceiver({ discard: true });
    const release = receiver.hold();
    const body = JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{}, {}] }] }] });
    let answered = 0;
    const post = () => fetch(`${receiver.url}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => ((answered += 1), r.status));
    const waiting = [post(), post()];
    while (receiver.counts.requests < 2) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual({ answered, counts: { ...receiver.counts, bytes: 0 }, requests: receiver.requests }, { answered: 0, counts: { spans: 0, logs: 0, metricExports: 0, requests: 2, bytes: 0 }, requests: [] });
    release();
    assert.deepEqual(await Promise.all(waiting), [200, 200]);
    assert.deepEqual({ ...receiver.counts, bytes: 0 }, { spans: 4, logs: 0, metricExports: 0, requests: 2, bytes: 0 });
    assert.deepEqual(receiver.requests.map((r) => r.status), [200, 200]);
    await receiver.close();
  });

  it('waitForSpans rejects with what it got when too few arrive in time', async () => {
    const receiver = await startOtlpReceiver();
    await assert.rejects(receiver.waitForSpans(1, 30), { message: 'expected 1 spans, received 0 in 30 ms' });
    await receiver.close();
  });
});
