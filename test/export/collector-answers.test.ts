import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createResource } from '../../src/export/spans.js';
import { createLogger } from '../../src/log/logger.js';
import { createTraceDelivery } from '../../src/pipeline.js';
import { startOtlpReceiver, type OtlpReceiverOptions } from '../helpers/otlp-receiver.js';
import { numberedSpan as span } from '../helpers/span-records.js';
import { errMessage } from '../helpers/log-err.js';

const TOKEN = 'tok-3f9a8c27d1e04b6a';
const AUTH = `Bearer ${TOKEN}`;


/** Ten spans sent in one batch to a receiver answering as `respond` says; the delivery's stats and log lines once it is shut down. */
async function exportTen(respond: OtlpReceiverOptions['respond'], protocol: 'http/protobuf' | 'http/json' = 'http/protobuf') {
  const receiver = await startOtlpReceiver({ respond });
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const logger = createLogger({ level: 'info', format: 'json', destination: { write: (l: string) => void (raw.push(l), lines.push(JSON.parse(l) as Record<string, unknown>)) } });
  const config = resolveConfig({ otlpEndpoint: receiver.url, otlpProtocol: protocol, otlpHeaders: { Authorization: AUTH }, batchSize: 10, scheduleDelayMs: 10, otlpTimeoutMs: 2_000 }, {});
  const d = createTraceDelivery(config, logger, createResource(config))!;
  for (let i = 1; i <= 10; i++) d.enqueue(span(i));
  await d.flush(10_000);
  await d.shutdown(1_000);
  await receiver.close();
  const { delivered, rejected, dropped, queued } = d.stats;
  const said = lines.filter((l) => l.component === 'export' || l.component === 'otel-sdk').map((l) => ({ level: l.level, msg: l.msg, count: l.count, error: errMessage(l.err) }));
  return { stats: { delivered, rejected, dropped, queued }, said, requests: receiver.requests.map((r) => r.status), leaked: raw.filter((l) => l.includes(TOKEN.slice(0, 8))), sentAuth: receiver.requests[0]?.headers.authorization };
}

/** ExportTraceServiceResponse { partial_success { rejected_spans, error_message } } as protobuf. */
function partialSuccessProto(rejected: number, message: string): Buffer {
  const text = Buffer.from(message);
  const inner = Buffer.concat([Buffer.from([0x08, rejected, 0x12, text.length]), text]);
  return Buffer.concat([Buffer.from([0x0a, inner.length]), inner]);
}

const echoed = `3 spans have no name (request had authorization: ${AUTH})`;

for (const protocol of ['http/protobuf', 'http/json'] as const) {
  test(`an OTLP partial success (${protocol}): the refused spans are counted as rejected and logged once, the credential the collector quoted back redacted`, async () => {
    const body = protocol === 'http/json' ? JSON.stringify({ partialSuccess: { rejectedSpans: '3', errorMessage: echoed } }) : partialSuccessProto(3, echoed);
    const r = await exportTen(() => ({ status: 200, body }), protocol);
    assert.equal(r.sentAuth, AUTH);
    assert.deepEqual(r.stats, { delivered: 7, rejected: 3, dropped: 0, queued: 0 });
    assert.deepEqual(r.said, [{ level: 50, msg: 'collector rejected spans; not retried', count: 3, error: '3 spans have no name (request had authorization: [redacted])' }]);
    assert.deepEqual(r.leaked, []);
  });
}

test('a collector whose reason phrase quotes the credential: the batch is rejected and the credential is not in the log', async () => {
  const r = await exportTen(() => ({ status: 401, reason: `Unauthorized: ${AUTH} is not known` }));
  assert.deepEqual(r.stats, { delivered: 0, rejected: 10, dropped: 0, queued: 0 });
  assert.deepEqual(r.said, [{ level: 50, msg: 'collector rejected spans; not retried', count: 10, error: 'HTTP 401 Unauthorized: [redacted] is not known' }]);
  assert.deepEqual(r.leaked, []);
});

test('a 2xx answer larger than the exporter reads is not sent again: the spans are never exported twice', async () => {
  const r = await exportTen(() => ({ status: 200, body: Buffer.alloc(5 * 1024 * 1024, 0x41) }));
  assert.deepEqual(r.requests, [200]);
  assert.deepEqual(r.stats, { delivered: 0, rejected: 10, dropped: 0, queued: 0 });
  assert.deepEqual(r.said, [{
    level: 50, msg: 'collector rejected spans; not retried', count: 10,
    error: "the collector's answer was larger than the exporter reads (4 MiB); not sent again, as the collector may have taken it",
  }]);
});

test('a 2xx answer that is not OTLP (a proxy\'s HTML page) counts the spans delivered and is said once, not quoted', async () => {
  const page = `<html><body>Welcome to nginx! ${AUTH} ${'x'.repeat(10_000)}</body></html>`;
  const receiver = { status: 200, headers: { 'content-type': 'text/html' }, body: page };
  const r = await exportTen(() => receiver);
  assert.deepEqual(r.stats, { delivered: 10, rejected: 0, dropped: 0, queued: 0 });
  assert.deepEqual(r.said, [{
    level: 40, msg: `the collector took an export, but its answer (${Buffer.byteLength(page)} bytes) is not an OTLP protobuf response: is the endpoint an OTLP/HTTP receiver?`, count: undefined, error: undefined,
  }]);
  assert.deepEqual(r.leaked, []);
});

/** google.rpc.Status { code, message } as protobuf (message length as a varint: two bytes past 127). */
function statusProto(code: number, message: string): Buffer {
  const text = Buffer.from(message);
  const len = text.length < 128 ? [text.length] : [(text.length & 0x7f) | 0x80, text.length >> 7];
  return Buffer.concat([Buffer.from([0x08, code, 0x12, ...len]), text]);
}

// The credential straddles the 200th character, where the message is cut short.
const invalid = `ResourceSpans[0].ScopeSpans[0].Spans[3]: invalid span id length (got 9 bytes, want 8); ${'see the collector log; '.repeat(4)}auth: ${AUTH} was refused`;

for (const protocol of ['http/protobuf', 'http/json'] as const) {
  test(`a 400 with an OTLP Status body (${protocol}): rejected, counted, and logged with the collector's message, credential redacted`, async () => {
    const body = protocol === 'http/json' ? JSON.stringify({ code: 3, message: invalid }) : statusProto(3, invalid);
    const r = await exportTen(() => ({ status: 400, body }), protocol);
    assert.deepEqual(r.requests, [400]);
    assert.deepEqual(r.stats, { delivered: 0, rejected: 10, dropped: 0, queued: 0 });
    assert.deepEqual(r.said, [{
      level: 50, msg: 'collector rejected spans; not retried', count: 10,
      error: `HTTP 400 Bad Request: ${invalid.replace(AUTH, '[redacted]').slice(0, 200)}…`,
    }]);
    assert.ok(invalid.indexOf(TOKEN) < 200 && invalid.indexOf(TOKEN) + TOKEN.length > 200);
    assert.deepEqual(r.leaked, []);
  });
}

test('a proxy\'s plain-text refusal is quoted as it is', async () => {
  const r = await exportTen(() => ({ status: 403, headers: { 'content-type': 'text/plain' }, body: 'RBAC: access denied\n' }));
  assert.deepEqual(r.said, [{ level: 50, msg: 'collector rejected spans; not retried', count: 10, error: 'HTTP 403 Forbidden: RBAC: access denied' }]);
});
