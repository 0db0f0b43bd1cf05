/**
 * A half-open event stream: mid-flow the server stops sending and stops answering pings, but the
 * socket stays open. prefect-otel's idle detection (no message, ping or pong for
 * PREFECT_OTEL_IDLE_TIMEOUT_MS, 45 s by default, 2 s here) drops it, reconnects, resumes from its
 * cursor minus the margin, and the spans are the ones replay gives, each once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { assertOneSpanPerRun, liveConnections, logLines, replaySpans, shape, startWatch, until, workload } from '../helpers/watch-e2e.js';

const IDLE_TIMEOUT_MS = 2_000;
const RESUME_MARGIN_MS = 120_000;

test('watch: a stream that goes silent mid-flow with the socket open is dropped after the idle timeout, resumed from the cursor, and exported once', { timeout: 60_000 }, async (t) => {
  const w = workload(2);
  const prefect = await startFakePrefect({ autoPong: false });
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const { child, result } = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_RESUME_MARGIN_MS: String(RESUME_MARGIN_MS), PREFECT_OTEL_IDLE_TIMEOUT_MS: String(IDLE_TIMEOUT_MS) }, t);
  await until('subscription', () => liveConnections(prefect) === 1);

  const half = Math.floor(w.events.length / 2);
  const before = w.events.slice(0, half);
  prefect.publish(before);
  await until('the first half sent', () => prefect.stats.sent === before.length);
  prefect.switches.stall = true;
  prefect.publish(w.events.slice(half));
  await until('a second connection', () => prefect.connections.length >= 2, IDLE_TIMEOUT_MS + 15_000);
  prefect.switches.stall = false;
  await receiver.waitForSpans(w.runs.size);
  await until('every stored event backfilled', () => prefect.stats.sent >= before.length + w.events.length);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);

  const lines = logLines(r.stdout);
  const silent = lines.filter((l) => l.msg === 'the event stream went silent; dropping the connection');
  assert.deepEqual(silent.map((l) => [l.idleTimeoutMs, (l.silentMs as number) > IDLE_TIMEOUT_MS]), [[IDLE_TIMEOUT_MS, true]]);
  const cursorMs = Math.max(...before.map((e) => Date.parse(e.occurred)));
  const resumed = prefect.connections[1]!.filters[0] as { filter: { occurred: { since: string } }; backfill: boolean };
  assert.deepEqual({ since: resumed.filter.occurred.since, backfill: resumed.backfill }, { since: new Date(cursorMs - RESUME_MARGIN_MS).toISOString(), backfill: true });
  const live = receiver.spans();
  assertOneSpanPerRun(live, w);
  assert.deepEqual(shape(live), shape(await replaySpans(w.events, prefect.url)));
  const stopped = lines.find((l) => l.msg === 'stopped');
  assert.deepEqual(
    { events: (stopped?.events as { accepted: number; duplicates: number } | undefined), reconnects: (stopped?.source as { reconnects: number } | undefined)?.reconnects },
    { events: { received: before.length + w.events.length, accepted: w.events.length, duplicates: before.length, unrelated: 0, skipped: {} }, reconnects: 1 },
  );
});
