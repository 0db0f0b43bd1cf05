/**
 * `prefect-otel watch` stopped while the collector is down (SIGTERM, or killed): the spans it could
 * not deliver are kept in the state file, and the next process sends them, each once.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { closedPort, liveConnections, replaySpans, shape, startServers, startWatch, tempDir, until, workload } from '../helpers/watch-e2e.js';
import { follow, stlogging, stateText, spansBuiltWithCollectorDown } from '../helpers/watch-processes.js';

test('watch: killed (SIGKILL) while the collector is down, the spans it held are sent after the restart, each once', async (t) => {
  const w = workload(2);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') };

  const first = startWatch({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await closedPort()}` }, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  // Every run finished and saved as finished: its span waits for the collector.
  await until('every run saved as finished', () => [...w.runs.keys()].every((id) => stateText(env.PREFECT_OTEL_STATE_FILE).includes(`["${id}",{`)));
  first.child.kill('SIGKILL');
  await first.result;

  const second = startWatch({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, t);
  const lines = follow(second.child);
  await until('subscription after the restart', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
  await receiver.waitForSpans(w.runs.size);
  second.child.kill('SIGTERM');
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);

  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  assert.equal(lines().find((l) => l.msg === 'resumed from the state file')?.pendingSpans, w.runs.size);
});

test('watch: SIGTERM while the collector is down keeps the spans in the state file and says so, says how many log records are lost, and the next start sends the spans', async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), OTEL_LOGS_EXPORTER: 'otlp' };

  const { first, firstLines } = await spansBuiltWithCollectorDown(t, prefect, w, env);
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  const shutdown = firstLines().slice(firstLines().findIndex((l) => l.msg === 'signal received'));
  const said = shutdown.filter((l) => (l.level ?? 0) >= 40 && !String(l.msg).startsWith('export of'));
  assert.deepEqual(said.map((l) => [l.msg, l.count]), [
    ['spans the collector has not taken yet are kept in the state file; the next start sends them', w.runs.size],
    ['log records the collector has not taken are lost at exit (their lines are in this output)', stlogging(firstLines()).length],
  ]);

  const second = startWatch({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, t);
  await receiver.waitForSpans(w.runs.size);
  second.child.kill('SIGTERM');
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
});
