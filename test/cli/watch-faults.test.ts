/**
 * Live watch mode against a misbehaving event stream (reference §1.7: at-most-once, unordered,
 * duplicates possible): whatever the stream does, the exported spans are the ones `prefect-otel
 * replay` gives for the same events, each exactly once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startFakePrefect, type FakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import { assertOneSpanPerRun, liveConnections, logLines, replaySpans, shape, startWatch, until, workload, type Workload } from '../helpers/watch-e2e.js';

async function setup(t: { after: (fn: () => Promise<void>) => void }, w: Workload): Promise<{ prefect: FakePrefect; receiver: OtlpReceiver }> {
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
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
