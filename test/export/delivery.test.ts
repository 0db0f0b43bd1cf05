import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { createTraceDelivery } from '../../src/pipeline.js';
import { createResource } from '../../src/export/spans.js';
import { startPrefectTracing } from '../../src/index.js';
import { startMiniPrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { until, workload } from '../helpers/watch-e2e.js';
import { numberedSpan as span } from '../helpers/span-records.js';
import { errMessage } from '../helpers/log-err.js';


function delivery(url: string, overrides: Record<string, unknown> = {}) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const config = resolveConfig({ otlpEndpoint: url, batchSize: 50, scheduleDelayMs: 10, otlpTimeoutMs: 500, ...overrides }, {});
  return { d: createTraceDelivery(config, logger, createResource(config))!, lines };
}

test('a 503 storm, then recovery: every span arrives exactly once and the failures are logged', async (t) => {
  const receiver = await startOtlpReceiver({ respond: (n) => (n <= 8 ? { status: 503, headers: { 'retry-after': '0' } } : 200) });
  t.after(() => receiver.close());
  // A timeout no busy machine reaches for an answer of the receiver's: one cut short after the
  // receiver took its spans would send them again.
  const { d, lines } = delivery(receiver.url, { otlpTimeoutMs: 2_000 });
  for (let i = 1; i <= 500; i++) d.enqueue(span(i));
  const r = await d.flush(30_000);
  assert.deepEqual(r, { ok: true, pending: 0 });
  const ids = receiver.spans().map((s) => s.spanId);
  assert.deepEqual([...ids].sort(), Array.from({ length: 500 }, (_, k) => (k + 1).toString(16).padStart(16, '0')));
  // Recovered: no longer failing (what /healthz reads), the last success recorded.
  assert.deepEqual(
    { delivered: d.stats.delivered, dropped: d.stats.dropped, rejected: d.stats.rejected, failing: d.stats.failing, succeeded: d.stats.lastSuccessMs !== undefined },
    { delivered: 500, dropped: 0, rejected: 0, failing: false, succeeded: true },
  );
  // How many attempts the storm costs depends on the exporter's own retries within its timeout:
  // one line per failed attempt, each with the collector's answer, then one line when it recovers.
  const failures = d.stats.failedAttempts;
  assert.ok(failures >= 1, 'no attempt failed');
  assert.deepEqual(
    lines.filter((l) => l.component === 'export').map((l) => [l.msg, errMessage(l.err) ?? l.afterFailures]),
    [...Array.from({ length: failures }, () => ['export of spans failed; retrying', 'HTTP 503 Service Unavailable']), ['export of spans recovered', failures]],
  );
});

test('the buffer bound: with the collector down, the oldest spans are dropped and counted, the newest kept', () => {
  const { d } = delivery('http://127.0.0.1:9', { bufferMaxSpans: 100 });
  for (let i = 1; i <= 250; i++) d.enqueue(span(i));
  // The first full batch (50) is already on its way to the collector; of the 200 queued behind it, 100 fit.
  assert.deepEqual({ dropped: d.stats.dropped, inFlight: d.stats.inFlight }, { dropped: 100, inFlight: 50 });
  // What the state file gets at shutdown: the batch still out (its answer may never come), then the 100 kept.
  const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
  assert.deepEqual(d.drainQueued().map((s) => Number(s.run.id)), [...range(1, 50), ...range(151, 250)]);
});

test('offer: a span that does not fit is refused and nothing is dropped; an empty queue takes any span', () => {
  const { d } = delivery('http://127.0.0.1:9', { bufferMaxSpans: 100 });
  const taken = Array.from({ length: 151 }, (_, k) => d.offer(span(k + 1)));
  // The first batch (50) is on its way; 100 fit behind it; the 151st is refused, not queued.
  assert.deepEqual(taken, [...Array<boolean>(150).fill(true), false]);
  assert.deepEqual({ queued: d.stats.queued, inFlight: d.stats.inFlight, dropped: d.stats.dropped }, { queued: 100, inFlight: 50, dropped: 0 });
  assert.deepEqual(d.drainQueued().map((s) => Number(s.run.id)), Array.from({ length: 150 }, (_, k) => k + 1));

  const small = delivery('http://127.0.0.1:9', { bufferMaxBytes: 1024 }).d;
  const big = { ...span(1), attributes: { 'prefect.run.id': '1', 'prefect.event.payload': 'p'.repeat(4_000) } };
  // Larger than the whole bound: taken, then dropped and counted as `enqueue` would.
  assert.equal(small.offer(big), true);
  assert.deepEqual({ queued: small.stats.queued, dropped: small.stats.dropped }, { queued: 0, dropped: 1 });
  assert.equal(small.offer(span(2)), true);
  assert.deepEqual({ queued: small.stats.queued, queuedBytes: small.stats.queuedBytes > 0, dropped: small.stats.dropped }, { queued: 1, queuedBytes: true, dropped: 1 });
  assert.equal(small.offer(big), false, 'a span that would push out the one queued is refused');
  assert.deepEqual({ queued: small.stats.queued, dropped: small.stats.dropped }, { queued: 1, dropped: 1 });
  small.drainQueued();
});

test('a batch the collector rejects for good (400) is dropped and counted, not retried forever', async () => {
  const receiver = await startOtlpReceiver({ respond: () => 400 });
  const { d } = delivery(receiver.url);
  for (let i = 1; i <= 10; i++) d.enqueue(span(i));
  await d.flush(5_000);
  assert.deepEqual({ rejected: d.stats.rejected, delivered: d.stats.delivered, queued: d.stats.queued }, { rejected: 10, delivered: 0, queued: 0 });
  assert.equal(receiver.requests.length, 1);
  await receiver.close();
});

test('a batch cut off by shutdown is not a failed attempt: the collector\'s last answer stays the error, and the batch goes back for the state file', async (t) => {
  // The first attempt fails (503 to the SDK's own retries too); the second is never answered.
  const receiver = await startOtlpReceiver({ respond: (n) => (n <= 6 ? { status: 503, headers: { 'retry-after': '0' } } : 200) });
  t.after(() => receiver.close());
  const { d, lines } = delivery(receiver.url, { otlpTimeoutMs: 10_000 });
  for (let i = 1; i <= 10; i++) d.enqueue(span(i));
  await until('the first attempt failed', () => d.stats.failedAttempts === 1);
  const release = receiver.hold();
  const first = d.stats.lastError;
  await until('the second attempt is out', () => d.stats.inFlight === 10);
  const r = await d.shutdown(100);
  t.after(release);
  assert.deepEqual(r, { ok: false, pending: 10 });
  assert.equal(first, 'HTTP 503 Service Unavailable');
  assert.deepEqual(
    { lastError: d.stats.lastError, failedAttempts: d.stats.failedAttempts, queued: d.stats.queued, inFlight: d.stats.inFlight },
    { lastError: first, failedAttempts: 1, queued: 10, inFlight: 0 },
  );
  assert.deepEqual(lines.filter((l) => String(l.msg).startsWith('export of spans failed')).map((l) => errMessage(l.err)), [first]);
  assert.deepEqual(d.drainQueued().map((s) => Number(s.run.id)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test('/healthz is ready only while connected and exporting; /metrics tells what happened', async (t) => {
  const prefect = await startMiniPrefect();
  const receiver = await startOtlpReceiver();
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-health-'));
  const tracing = startPrefectTracing({ env: {}, apiUrl: prefect.url, otlpEndpoint: receiver.url, httpPort: 0, stateFile: join(dir, 'state.json'), logLevel: 'silent' });
  t.after(async () => {
    await tracing.shutdown();
    await prefect.close();
    await receiver.close();
  });
  await tracing.ready;
  const base = `http://127.0.0.1:${tracing.httpPort!}`;
  await until('connected', () => tracing.stats().connected);
  const ok = await fetch(`${base}/healthz`);
  assert.deepEqual([ok.status, await ok.json()], [200, { status: 'ok', problems: [], connected: true, exporting: true }]);
  prefect.sendRaw('{not json');
  await until('the frame skipped', () => tracing.stats().events.skipped.invalid_json === 1);
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /^prefect_otel_connected 1$/m);
  assert.match(metrics, /^prefect_otel_events_skipped_total\{reason="invalid_json"\} 1$/m);
  assert.match(metrics, /^# TYPE prefect_otel_spans_dropped_total counter$/m);
  await prefect.close();
  await until('disconnected', () => !tracing.stats().connected);
  const down = await fetch(`${base}/healthz`);
  assert.deepEqual([down.status, ((await down.json()) as { problems: string[] }).problems], [503, ['not connected to the Prefect event stream']]);
});

test('/healthz: a collector that refuses spans for good (401) is not "exporting"; with no trace exporter there is nothing to fail', async (t) => {
  const w = workload(1);
  const prefect = await startMiniPrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver({ respond: () => 401 });
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-health-'));
  const health = async (tracing: ReturnType<typeof startPrefectTracing>) => {
    const r = await fetch(`http://127.0.0.1:${tracing.httpPort!}/healthz`);
    return [r.status, await r.json()];
  };
  const refused = startPrefectTracing({ env: {}, apiUrl: prefect.url, otlpEndpoint: receiver.url, httpPort: 0, stateFile: join(dir, 'a.json'), logLevel: 'silent', settleMs: 100, scheduleDelayMs: 10 });
  const none = startPrefectTracing({ env: {}, apiUrl: prefect.url, tracesExporter: 'none', httpPort: 0, stateFile: join(dir, 'b.json'), logLevel: 'silent' });
  t.after(async () => {
    await Promise.all([refused.shutdown(), none.shutdown()]);
    await prefect.close();
    await receiver.close();
  });
  await refused.ready;
  await until('subscriptions', () => prefect.connections.filter((c) => c.live).length === 2);
  assert.deepEqual(await health(refused), [200, { status: 'ok', problems: [], connected: true, exporting: true }]);
  prefect.publish(w.events);
  await until('spans refused', () => refused.stats().spans.rejected === w.runs.size);
  assert.deepEqual(await health(refused), [503, { status: 'unavailable', problems: ['exports to the collector are failing'], connected: true, exporting: false }]);

  await none.ready;
  assert.deepEqual(await health(none), [200, { status: 'ok', problems: [], connected: true, exporting: true }]);
});

test('a batch over the collector\'s body size limit (413) is sent again in halves: only the one span too large is rejected, and later batches stay under the limit', async (t) => {
  const LIMIT = 20_000;
  const receiver = await startOtlpReceiver({ respond: (_n, _path, bytes) => (bytes > LIMIT ? 413 : 200) });
  t.after(() => receiver.close());
  const { d, lines } = delivery(receiver.url, { batchSize: 40 });
  const giant = { ...span(20), attributes: { 'prefect.run.id': '20', 'prefect.event.payload': 'p'.repeat(60_000) } };
  for (let i = 1; i <= 40; i++) d.enqueue(i === 20 ? giant : span(i));
  assert.deepEqual(await d.flush(10_000), { ok: true, pending: 0 });
  const small = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => (from + k).toString(16).padStart(16, '0'));
  assert.deepEqual(receiver.spans().map((s) => s.spanId), [...small(1, 19), ...small(21, 40)]);
  assert.deepEqual(receiver.requests.map((r) => r.status), [413, 200, 413, 200]);
  assert.deepEqual({ delivered: d.stats.delivered, rejected: d.stats.rejected, failedAttempts: d.stats.failedAttempts }, { delivered: 39, rejected: 1, failedAttempts: 0 });

  for (let i = 41; i <= 80; i++) d.enqueue(span(i));
  assert.deepEqual(await d.flush(10_000), { ok: true, pending: 0 });
  assert.deepEqual(receiver.requests.slice(4).map((r) => r.status), [200]);
  await d.shutdown(1_000);
  assert.equal(new Set(receiver.spans().map((s) => s.spanId)).size, 79);
  assert.deepEqual(
    lines.filter((l) => l.component === 'export').map((l) => [l.msg, l.count ?? l.items, errMessage(l.err)]),
    [
      ['collector refused a batch of spans as too large; sending it again in smaller batches', 40, 'HTTP 413 Payload Too Large'],
      ['collector rejected spans; not retried', 1, 'HTTP 413 Payload Too Large'],
    ],
  );
});

/**
 * The OpenTelemetry Collector's OTLP/HTTP receiver (and Jaeger v2's, the same code) reads the body
 * through Go's `http.MaxBytesReader` and answers a body over `max_request_body_size` (20 MiB by
 * default) with 400 and the google.rpc.Status `{ code: 3 (INVALID_ARGUMENT), message: "http:
 * request body too large" }`, in the request's encoding: not 413. That is a size refusal too.
 */
const COLLECTOR_TOO_LARGE = 'http: request body too large';
function collectorTooLargeBody(json: boolean): string | Buffer {
  if (json) return JSON.stringify({ code: 3, message: COLLECTOR_TOO_LARGE });
  const message = Buffer.from(COLLECTOR_TOO_LARGE);
  // google.rpc.Status: field 1 (code, varint) = 3, field 2 (message, length-delimited).
  return Buffer.concat([Buffer.from([0x08, 3, 0x12, message.length]), message]);
}

test("a batch over the OpenTelemetry Collector's body size limit (its 400 \"request body too large\") is sent again in halves, in either encoding", async (t) => {
  const LIMIT = 20_000;
  const outcome: Record<string, unknown> = {};
  for (const protocol of ['http/protobuf', 'http/json']) {
    const json = protocol === 'http/json';
    const receiver = await startOtlpReceiver({
      respond: (_n, _path, bytes) => (bytes > LIMIT ? { status: 400, body: collectorTooLargeBody(json) } : 200),
    });
    t.after(() => receiver.close());
    const { d, lines } = delivery(receiver.url, { batchSize: 40, otlpProtocol: protocol });
    const giant = { ...span(20), attributes: { 'prefect.run.id': '20', 'prefect.event.payload': 'p'.repeat(60_000) } };
    for (let i = 1; i <= 40; i++) d.enqueue(i === 20 ? giant : span(i));
    const flushed = await d.flush(10_000);
    await d.shutdown(1_000);
    outcome[protocol] = {
      flushed,
      delivered: receiver.spans().length,
      stats: { delivered: d.stats.delivered, rejected: d.stats.rejected },
      logged: lines.filter((l) => l.component === 'export').map((l) => [l.msg, l.count ?? l.items, errMessage(l.err)]),
    };
  }
  const expected = {
    flushed: { ok: true, pending: 0 },
    delivered: 39,
    stats: { delivered: 39, rejected: 1 },
    logged: [
      ['collector refused a batch of spans as too large; sending it again in smaller batches', 40, `HTTP 400 Bad Request: ${COLLECTOR_TOO_LARGE}`],
      ['collector rejected spans; not retried', 1, `HTTP 400 Bad Request: ${COLLECTOR_TOO_LARGE}`],
    ],
  };
  assert.deepEqual(outcome, { 'http/protobuf': expected, 'http/json': expected });
});

test('the buffer bound holds in memory too: spans delivered or dropped are let go at once, not kept until a thousand more have passed', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const receiver = await startOtlpReceiver({ discard: true });
  t.after(() => receiver.close());
  const count = 100;
  const payloadChars = 500_000;
  // Each span made anew: what is let go can be collected.
  const big = (i: number) => ({ ...span(i), attributes: { 'prefect.run.id': String(i), 'prefect.event.payload': `${i}`.padEnd(payloadChars, 'p').split('').join('') } });
  const bounds = { bufferMaxSpans: 4, bufferMaxBytes: 8 * payloadChars, batchSize: 1, scheduleDelayMs: 0 };
  const grownMiB = (before: number): number => {
    gc();
    return (process.memoryUsage().heapUsed - before) / 2 ** 20;
  };

  // The collector down (nothing listens): all but the newest four are dropped.
  gc();
  const down = delivery('http://127.0.0.1:9', bounds).d;
  let before = process.memoryUsage().heapUsed;
  for (let i = 1; i <= count; i++) down.enqueue(big(i));
  const heldDown = grownMiB(before);
  assert.deepEqual({ queued: down.stats.queued, dropped: down.stats.dropped + down.stats.inFlight }, { queued: 4, dropped: count - 4 });

  // The collector up: every span delivered.
  gc();
  const up = delivery(receiver.url, bounds).d;
  before = process.memoryUsage().heapUsed;
  for (let i = 1; i <= count; i++) {
    up.enqueue(big(i));
    await up.flush(30_000);
  }
  const heldUp = grownMiB(before);
  assert.deepEqual({ delivered: up.stats.delivered, received: receiver.counts.spans }, { delivered: count, received: count });

  // At most the four queued spans and the one out, 0.5 MB each, where the 100 spans were 50 MB.
  assert.ok(heldDown < 16 && heldUp < 16, `the heap held ${heldDown.toFixed(1)} MiB with the collector down, ${heldUp.toFixed(1)} MiB with it up`);
  await Promise.all([down.shutdown(0), up.shutdown(5_000)]);
});
