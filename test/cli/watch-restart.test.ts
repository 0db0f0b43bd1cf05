/**
 * Restarts of `prefect-otel watch` (SPEC §5: a restart loses nothing and duplicates nothing). Two
 * processes in turn on one state file: across both, the receiver gets the spans `prefect-otel
 * replay` gives for the whole stream, each once, and no STLOGGING line is written twice for one event.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { spanIdForRun } from '../../src/model/ids.js';
import { customEvent, flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';
import { liveConnections, replaySpans, shape, startServers, startWatch, tempDir, until, workload } from '../helpers/watch-e2e.js';
import { follow, stlogging, assertEachEventLoggedOnce, watchUntilEachLogged } from '../helpers/watch-processes.js';

/**
 * The state file as a process that stopped `agoMs` ago would have left it: every clock time in it
 * (when it was saved, up to when it followed the stream, when each event id was seen, each open
 * run's last activity, the cursor) moved back by that much.
 */
function age(stateFile: string, agoMs: number): void {
  type Run = { lastActivityMs: number; terminalAtMs: number | null };
  const s = JSON.parse(readFileSync(stateFile, 'utf8')) as { savedAt: string; coveredUntilMs?: number; cursorUs: number; dedupe: [string, number][]; tracker: { open: Run[] } };
  s.savedAt = new Date(Date.parse(s.savedAt) - agoMs).toISOString();
  if (s.coveredUntilMs !== undefined) s.coveredUntilMs -= agoMs;
  s.cursorUs -= agoMs * 1000;
  s.dedupe = s.dedupe.map(([id, at]) => [id, at - agoMs]);
  for (const r of s.tracker.open) {
    r.lastActivityMs -= agoMs;
    if (r.terminalAtMs !== null) r.terminalAtMs -= agoMs;
  }
  writeFileSync(stateFile, JSON.stringify(s));
}

test('watch: a restart 25 hours after the last save reads the outage from the history; no event is processed twice and no open run is ended as idle', async (t) => {
  const w = workload(2);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') };
  const cut = Math.floor(w.events.length * 0.4);

  const firstLines = await watchUntilEachLogged(t, prefect, env, w.events.slice(0, cut));

  // Longer than the dedupe window (1 h) and the open-run timeout (24 h). What happened meanwhile is
  // read from the event history, answered only once the restored runs have seen a few ticks.
  age(env.PREFECT_OTEL_STATE_FILE, 25 * 3600_000);
  prefect.publish(w.events.slice(cut));
  prefect.switches.holdRest = true;
  const second = startWatch(env, t);
  const secondLines = follow(second.child);
  await until('history asked for', () => prefect.restRequests.some((r) => r.path.endsWith('/events/filter')));
  await new Promise((r) => setTimeout(r, 500));
  prefect.switches.holdRest = false;
  await until('subscription after the history', () => liveConnections(prefect) === 1 && prefect.connections.length === 2, 20_000);
  await receiver.waitForSpans(w.runs.size);
  await until('every event taken', () => stlogging(secondLines()).length >= w.events.length - cut);
  second.child.kill('SIGTERM');
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);

  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  assertEachEventLoggedOnce(firstLines(), secondLines(), w);
  assert.deepEqual(secondLines().filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg), []);
});

for (const downMin of [0, 10]) {
  test(`watch: SIGTERM while an attempt rerun at once settles beside its rerun (the rerun's Scheduled came before its Completed), then a restart${downMin === 0 ? '' : ` ${downMin} minutes later (longer than the settle window, which counts only time watched)`}: the next process takes both attempts over; the earlier one takes its Running that arrives only then, and each attempt's span, its task's under it, is sent once, as replay gives them in order`, async (t) => {
    const t0 = Date.now() - 20_000;
    const at = (s: number): number => t0 + s * 1000;
    const [fr, first, second] = [randomUUID(), randomUUID(), randomUUID()];
    const flow = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
    const flowEv = (s: number, type: string, name: string, from: string | null, runCount: number) =>
      flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...flow, state: { type, name }, from, runCount, occurred: at(s) });
    const taskEv = (id: string, s: number, type: string, name: string, from: string | null) =>
      taskRunStateEvent({ taskRunId: id, taskRunName: `extract-${id.slice(0, 3)}`, taskKey: 'extract-9a8b', flowRunId: fr, flowRunName: 'crimson-fox', ...flow, state: { type, name }, from, runCount: 1, occurred: at(s) });
    const [P, R, C, S2, P2, R2, F2] = [flowEv(0, 'PENDING', 'Pending', null, 0), flowEv(1, 'RUNNING', 'Running', 'PENDING', 1), flowEv(1.3, 'COMPLETED', 'Completed', 'RUNNING', 1),
      flowEv(1.4, 'SCHEDULED', 'Scheduled', 'COMPLETED', 1), flowEv(1.5, 'PENDING', 'Pending', 'SCHEDULED', 1), flowEv(1.6, 'RUNNING', 'Running', 'PENDING', 2), flowEv(3, 'FAILED', 'Failed', 'RUNNING', 2)];
    const [T1, T1c, T2, T2c] = [taskEv(first, 1.1, 'RUNNING', 'Running', null), taskEv(first, 1.2, 'COMPLETED', 'Completed', 'RUNNING'), taskEv(second, 1.7, 'RUNNING', 'Running', null), taskEv(second, 2, 'COMPLETED', 'Completed', 'RUNNING')];
    const inOrder = [P, R, T1, T1c, C, S2, P2, R2, T2, T2c, F2];
    const { prefect, receiver } = await startServers(t);
    // A settle window that outlasts the stop: the earlier attempt is still settling when the state is saved.
    const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_SETTLE_MS: '5000' };

    const one = startWatch(env, t);
    const oneLines = follow(one.child);
    await until('subscription', () => liveConnections(prefect) === 1);
    // The rerun's Scheduled before the Completed it leaves; the earlier attempt's Running not yet.
    const before = [P, T1, T1c, S2, C];
    prefect.publish(before);
    await until('every event taken', () => stlogging(oneLines()).length === before.length);
    one.child.kill('SIGTERM');
    assert.equal((await one.result).code, 0);
    // Within its settle window every run is saved open, the earlier attempt beside its rerun: nothing sent yet.
    assert.deepEqual(receiver.spans(), []);

    if (downMin > 0) age(env.PREFECT_OTEL_STATE_FILE, downMin * 60_000);
    prefect.publish([P2, R2, T2, T2c, F2]);
    const two = startWatch(env, t);
    const twoLines = follow(two.child);
    await until('subscription after the restart', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
    // The earlier attempt's Running a second after the restart: well after the first ticks, within what is left of its window.
    await new Promise((r) => setTimeout(r, 1000));
    prefect.publish(R);
    await receiver.waitForSpans(4);
    two.child.kill('SIGTERM');
    const r = await two.result;
    assert.equal(r.code, 0, r.stderr);

    assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(inOrder, prefect.url)));
    assert.deepEqual(shape(receiver.spans()).map((s) => [s.spanId, s.parentSpanId]).sort(), [
      [spanIdForRun(fr, 0), undefined], [spanIdForRun(fr, 1), undefined], [spanIdForRun(first), spanIdForRun(fr, 0)], [spanIdForRun(second), spanIdForRun(fr, 1)],
    ].sort());
    // Both attempts, and the earlier attempt's task in its own settle window.
    assert.equal(twoLines().find((l) => l.msg === 'resumed from the state file')?.openRuns, 3);
    // Each event logged once across both processes; the earlier attempt's Running with its span id.
    const logged = [...stlogging(oneLines()), ...stlogging(twoLines())];
    assert.deepEqual(logged.map((l) => l['prefect.event.id']).sort(), inOrder.map((e) => e.id).sort());
    assert.equal(logged.find((l) => l['prefect.event.id'] === R.id)?.span_id, spanIdForRun(fr, 0));
    assert.deepEqual(twoLines().filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg), []);
  });
}

test('watch: SIGTERM while a subflow parent lookup is unanswered ends with the last save: no line after "stopped", and the next process hangs the subflow under its parent, each event logged once', async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') };
  prefect.switches.holdRest = true;

  const first = startWatch(env, t);
  const firstLines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  const last = w.events.at(-1)!.id;
  await until('every event taken', () => stlogging(firstLines()).some((l) => l['prefect.event.id'] === last));
  await until('parent lookup asked', () => prefect.restRequests.some((r) => r.path.includes('/task_runs/')));
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  const after = firstLines().slice(firstLines().findIndex((l) => l.msg === 'stopped') + 1);
  assert.deepEqual(after.map((l) => l.msg), []);

  prefect.switches.holdRest = false;
  const second = startWatch(env, t);
  const secondLines = follow(second.child);
  await receiver.waitForSpans(w.runs.size);
  await until('every event taken', () => stlogging(firstLines()).length + stlogging(secondLines()).length >= w.events.length);
  second.child.kill('SIGTERM');
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);

  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  assertEachEventLoggedOnce(firstLines(), secondLines(), w);
  assert.deepEqual([...firstLines(), ...secondLines()].filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg), []);
});

test('watch: a restart after a stream quiet for longer than the dedupe window does not read the events before the quiet again', async (t) => {
  const hours2 = 2 * 3600_000;
  // Runs that happened two hours ago, read from the history by a process resuming from before them.
  const w = workload(2, Date.now() - hours2);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  prefect.store(w.events);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') };
  const before = Date.now() - hours2 - 60_000;
  writeFileSync(env.PREFECT_OTEL_STATE_FILE, JSON.stringify({ version: 2, generation: 1, savedAt: new Date(before).toISOString(), cursorUs: before * 1000, dedupe: [], tracker: { open: [], finished: [], owners: [], waiting: [] }, pendingSpans: [] }));

  const first = startWatch(env, t);
  const firstLines = follow(first.child);
  await until('subscription after the history', () => liveConnections(prefect) === 1, 20_000);
  await receiver.waitForSpans(w.runs.size);
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  // As if the process had then followed a quiet stream for two hours before it was stopped: the
  // event ids were seen two hours before the last save.
  const s = JSON.parse(readFileSync(env.PREFECT_OTEL_STATE_FILE, 'utf8')) as { dedupe: [string, number][] };
  s.dedupe = s.dedupe.map(([id, at]) => [id, at - hours2]);
  writeFileSync(env.PREFECT_OTEL_STATE_FILE, JSON.stringify(s));

  const second = startWatch(env, t);
  const secondLines = follow(second.child);
  await until('subscription', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
  // Nothing new comes: a marker event after the restart shows that what came before it was read.
  const marker = customEvent({ event: 'acme.marker', resourceId: 'acme.marker', related: [{ id: `prefect.flow-run.${[...w.runs.keys()][0]!}`, role: 'flow-run' }], payload: {}, occurred: Date.now() });
  prefect.publish(marker);
  await until('marker read', () => secondLines().some((l) => l['prefect.event.id'] === marker.id));
  second.child.kill('SIGTERM');
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);

  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  assertEachEventLoggedOnce(firstLines(), [], w);
  assert.deepEqual(secondLines().filter((l) => (l.level ?? 0) >= 30 && String(l.msg).includes('STLOGGING')).map((l) => l['prefect.event.id']), [marker.id]);
  assert.equal(prefect.restRequests.filter((q) => q.path.endsWith('/events/filter')).length, 1, 'only the first process read the history');
});


test('watch: a state file given as a symbolic link stays one: the state, its journal and its lock go beside the target, and a restart through another link to it resumes, each event once', async (t) => {
  const w = workload(2);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const volume = join(tempDir(), 'volume');
  const links = join(tempDir(), 'links');
  mkdirSync(volume);
  mkdirSync(links);
  const target = join(volume, 'state.json');
  // Made before the target exists (a fresh volume), one absolute and one relative.
  symlinkSync(target, join(links, 'state.json'));
  symlinkSync(relative(links, target), join(links, 'again.json'));
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(links, 'state.json') };
  const cut = Math.floor(w.events.length * 0.5);

  const firstLines = await watchUntilEachLogged(t, prefect, env, w.events.slice(0, cut));
  assert.equal(readlinkSync(join(links, 'state.json')), target);
  assert.deepEqual(readdirSync(links).sort(), ['again.json', 'state.json']);
  assert.deepEqual(readdirSync(volume), ['state.json']);
  assert.ok(lstatSync(target).isFile());
  assert.ok(readFileSync(target, 'utf8').includes(w.events[0]!.id));

  prefect.publish(w.events.slice(cut));
  const second = startWatch({ ...env, PREFECT_OTEL_STATE_FILE: join(links, 'again.json') }, t);
  const secondLines = follow(second.child);
  await until('the lock taken beside the target', () => readdirSync(volume).includes('state.json.lock'));
  assert.deepEqual(readdirSync(links).sort(), ['again.json', 'state.json']);
  await until('every event taken', () => stlogging(secondLines()).length >= w.events.length - cut);
  await receiver.waitForSpans(w.runs.size);
  second.child.kill('SIGTERM');
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);

  assert.equal(secondLines().filter((l) => l.msg === 'resumed from the state file').length, 1);
  assertEachEventLoggedOnce(firstLines(), secondLines(), w);
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  assert.equal(readlinkSync(join(links, 'again.json')), relative(links, target));
  assert.deepEqual(readdirSync(volume), ['state.json']);
});
