/**
 * Live watch mode against a misbehaving event stream (reference §1.7: at-most-once, unordered,
 * duplicates possible): whatever the stream does, the exported spans are the ones `prefect-otel
 * replay` gives for the same events, each exactly once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
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

test('watch: a burst far past the 256-event backlog, with a slow collector: prefect-otel keeps reading, nothing dropped, every run exported', async (t) => {
  // ~60 × 8 × 16 KB ≈ 8 MB: more than the loopback socket buffers hold for a subscriber that stops reading.
  const w = workload(60, Date.now() - 20_000, { largeEvents: 8, largeEventBytes: 16_000 });
  assert.ok(w.events.length > 4 * 256);
  const { prefect, receiver } = await setup(t, w, { delayMs: 500 });
  // One STLOGGING line per event is written synchronously to a pipe this process drains while it
  // publishes; at warn the test measures reading versus exporting, not versus the log pipe.
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_PAYLOAD_MAX_CHARS: '100', PREFECT_OTEL_LOG_LEVEL: 'warn' };
  const { child, result } = startWatch(env, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  const stuck = await stuckSubscriber(prefect);
  t.after(() => stuck.terminate());
  await until('both subscribed', () => liveConnections(prefect) === 2);

  // Arriving from many sources at once: the server's sender gets a turn between arrivals.
  for (let i = 0; i < w.events.length; i += 64) {
    prefect.publish(w.events.slice(i, i + 64));
    await new Promise((r) => setImmediate(r));
  }
  await receiver.waitForSpans(w.runs.size, 20_000).catch((err: Error) => {
    throw new Error(`${err.message}; dropped per subscriber: ${JSON.stringify(prefect.connections.map((c) => c.dropped))}`);
  });
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);

  const [ours, theirs] = prefect.connections;
  assert.equal(ours!.dropped, 0, 'prefect-otel read every event in time');
  assert.ok(theirs!.dropped > 0, 'a subscriber that stops reading loses events in this burst (so the burst does test the backlog)');
  const live = receiver.spans();
  assertOneSpanPerRun(live, w);
  assert.deepEqual(shape(live), shape(await replaySpans(w.events, prefect.url, { PREFECT_OTEL_PAYLOAD_MAX_CHARS: '100' })));
});
