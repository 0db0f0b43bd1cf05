/**
 * Live watch mode against a misbehaving event stream (reference §1.7: at-most-once, unordered,
 * duplicates possible): whatever the stream does, the exported spans are the ones `prefect-otel
 * replay` gives for the same events, each exactly once.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import WebSocket from 'ws';
import { readMetric } from '../helpers/cli.js';
import { startFakePrefect, type FakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type OtlpReceiver, type OtlpReceiverOptions } from '../helpers/otlp-receiver.js';
import { assertOneSpanPerRun, liveConnections, logLines, replaySpans, shape, startWatch, until, workload, type Workload } from '../helpers/watch-e2e.js';

async function setup(t: { after: (fn: () => Promise<void>) => void }, w: Workload, receiverOptions: OtlpReceiverOptions = {}): Promise<{ prefect: FakePrefect; receiver: OtlpReceiver }> {
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver(receiverOptions);
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  return { prefect, receiver };
}

/** The `stopped` line's counters: what the process saw over its whole life. */
function stoppedStats(stdout: string): Record<string, unknown> {
  const line = logLines(stdout).find((l) => l.msg === 'stopped');
  assert.ok(line !== undefined, `no "stopped" line in:\n${stdout.slice(-2000)}`);
  return line;
}

test('watch: every event sent twice gives the spans replay gives, each once, no span event doubled', async (t) => {
  const w = workload(3);
  const { prefect, receiver } = await setup(t, w);
  const { child, result } = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.switches.duplicate = true;
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  await until('every frame sent', () => prefect.stats.sent === 2 * w.events.length);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);

  const live = receiver.spans();
  assertOneSpanPerRun(live, w);
  assert.deepEqual(shape(live), shape(await replaySpans(w.events, prefect.url)));
  const stats = stoppedStats(r.stdout);
  assert.deepEqual(
    { events: stats.events, open: (stats.runs as { open: number }).open, lateEvents: (stats.runs as { lateEvents: number }).lateEvents, exported: (stats.spans as { exported: number }).exported },
    { events: { received: 2 * w.events.length, accepted: w.events.length, duplicates: w.events.length, unrelated: 0, skipped: {} }, open: 0, lateEvents: 0, exported: w.runs.size },
  );
});

test('watch: events swapped in pairs give the spans replay of the ordered stream gives', async (t) => {
  const w = workload(3);
  const { prefect, receiver } = await setup(t, w);
  const { child, result } = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.switches.reorder = true;
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  await until('every frame sent', () => prefect.stats.sent === w.events.length);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);

  const live = receiver.spans();
  assertOneSpanPerRun(live, w);
  assert.deepEqual(shape(live), shape(await replaySpans(w.events, prefect.url)));
  const stats = stoppedStats(r.stdout);
  assert.deepEqual({ open: (stats.runs as { open: number }).open, lateEvents: (stats.runs as { lateEvents: number }).lateEvents }, { open: 0, lateEvents: 0 });
});

/** A subscriber that completes the handshake and then stops reading its socket. */
async function stuckSubscriber(prefect: FakePrefect): Promise<WebSocket> {
  const ws = new WebSocket(`${prefect.url.replace(/^http/, 'ws')}/events/out`, ['prefect']);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  ws.send(JSON.stringify({ type: 'auth', token: null }));
  await new Promise((resolve) => ws.once('message', resolve));
  const now = Date.now();
  ws.send(JSON.stringify({ type: 'filter', filter: { occurred: { since: new Date(now - 60_000).toISOString(), until: new Date(now + 3600_000).toISOString() } } }));
  ws.pause();
  return ws;
}

/** The port of the child's /healthz and /metrics, from its log (rejects if the child ends first). */
function metricsPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! })
      .on('line', (l) => {
        if (l.includes('"serving /healthz, /livez and /metrics"')) resolve((JSON.parse(l) as { port: number }).port);
      })
      .on('close', () => reject(new Error('prefect-otel ended before it served /metrics')));
  });
}

test('watch: a burst far past the 256-event backlog while the collector answers nothing: prefect-otel reads every event, then exports every run once', async (t) => {
  // ~60 × 8 × 16 KB ≈ 8 MB: more than the loopback socket buffers hold for a subscriber that stops reading.
  const w = workload(60, Date.now() - 20_000, { largeEvents: 8, largeEventBytes: 16_000 });
  assert.ok(w.events.length > 4 * 256);
  const { prefect, receiver } = await setup(t, w, { delayMs: 500 });
  // The collector takes requests but answers none until every event has been read: a reader that
  // waited on export would stop reading and never receive the rest.
  const release = receiver.hold();
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_PAYLOAD_MAX_CHARS: '100', PREFECT_OTEL_HTTP_PORT: '0' };
  const { child, result } = startWatch(env, t);
  const port = metricsPort(child);
  await until('subscription', () => liveConnections(prefect) === 1);
  const stuck = await stuckSubscriber(prefect);
  t.after(() => stuck.terminate());
  await until('both subscribed', () => liveConnections(prefect) === 2);
  const [ours, theirs] = prefect.connections;

  // Each arrival waits for room in prefect-otel's backlog, however slow this machine is, and never
  // for the other subscriber's: the burst goes on only while prefect-otel keeps reading. Once the
  // first flow run has ended, the burst waits for its span's export to be sent (and held), so that
  // the rest of the events, about a quarter of them, have to be read while exports wait.
  const firstEnd = w.events.findIndex((e) => /^prefect\.flow-run\.(Completed|Failed)$/.test(e.event));
  assert.ok(firstEnd > 0 && w.events.length - firstEnd > 256);
  const chunk = 64;
  for (let i = 0; i < w.events.length; i += chunk) {
    if (i > firstEnd && receiver.counts.requests === 0) await until('an export sent to the collector', () => receiver.counts.requests > 0);
    await until('room in prefect-otel\'s backlog', () => ours!.queued <= 256 - chunk, 15_000, () => `${ours!.queued} events queued, ${i} of ${w.events.length} published`);
    prefect.publish(w.events.slice(i, i + chunk));
  }
  const deadline = Date.now() + 20_000;
  let received = 0;
  while ((received = await readMetric(await port, 'prefect_otel_events_received_total')) < w.events.length) {
    assert.ok(Date.now() < deadline, `prefect-otel received ${received} of ${w.events.length} events`);
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.equal(received, w.events.length);
  assert.equal(receiver.counts.spans, 0, 'the collector has accepted nothing yet');
  assert.equal(receiver.requests.length, 0, 'no export has been answered');
  assert.ok(theirs!.dropped > 0, 'a subscriber that stops reading loses events in this burst (so the burst does test the backlog)');

  release();
  await receiver.waitForSpans(w.runs.size, 20_000);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  const live = receiver.spans();
  assertOneSpanPerRun(live, w);
  assert.deepEqual(shape(live), shape(await replaySpans(w.events, prefect.url, { PREFECT_OTEL_PAYLOAD_MAX_CHARS: '100' })));
});
