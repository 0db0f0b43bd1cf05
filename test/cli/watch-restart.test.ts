/**
 * Restarts of `prefect-otel watch` (SPEC §5: a restart loses nothing and duplicates nothing; §7: a
 * standby takes over from the state file). Two processes in turn on one state file: across both,
 * the receiver gets the spans `prefect-otel replay` gives for the whole stream, each once, and no
 * STLOGGING line is written twice for one event.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { FakePrefect } from '../helpers/fake-prefect.js';
import { customEvent } from '../helpers/prefect-events.js';
import { closedPort, liveConnections, logLines, replaySpans, shape, startServers, startWatch, tempDir, until, workload, type LogLine, type Workload } from '../helpers/watch-e2e.js';

/** The child's log lines as they arrive. */
function follow(child: ReturnType<typeof startWatch>['child']): () => LogLine[] {
  let text = '';
  child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  return () => logLines(text);
}

const stlogging = (lines: LogLine[]): LogLine[] => lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('STLOGGING: '));

/** The event ids of the STLOGGING lines of both processes: each event once, all of them. */
function assertEachEventLoggedOnce(first: LogLine[], second: LogLine[], w: Workload): void {
  const ids = [...stlogging(first), ...stlogging(second)].map((l) => l['prefect.event.id'] as string);
  assert.deepEqual(ids.slice().sort(), w.events.map((e) => e.id).sort());
}

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

  const first = startWatch(env, t);
  const firstLines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events.slice(0, cut));
  await until('every event taken', () => stlogging(firstLines()).length === cut);
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);

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

/** The state file and its journal as text (either may not be there yet). */
function stateText(stateFile: string): string {
  const read = (path: string): string => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return '';
    }
  };
  return read(stateFile) + read(`${stateFile}.journal`);
}

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

/**
 * A `watch` whose collector is down (a closed port), sent the whole workload, once every span is
 * built and waits for the collector (as its stats lines say).
 */
async function spansBuiltWithCollectorDown(t: TestContext, prefect: FakePrefect, w: Workload, env: Record<string, string>) {
  const first = startWatch({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await closedPort()}`, PREFECT_OTEL_STATS_INTERVAL_MS: '50' }, t);
  const firstLines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  const finished = () => firstLines().filter((l) => l.msg === 'stats').map((l) => (l.spans as { finished: number }).finished);
  await until('every span built', () => finished().includes(w.runs.size));
  return { first, firstLines };
}

test('watch: SIGTERM while the collector is down keeps the spans in the state file and says so, says how many log records are lost, and the next start sends the spans', async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), OTEL_LOGS_EXPORTER: 'otlp' };

  const { first, firstLines } = await spansBuiltWithCollectorDown(t, prefect, w, env);
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  const shutdown = firstLines().slice(firstLines().findIndex((l) => l.msg === 'signal received'));
  const said = shutdown.filter((l) => (l.level ?? 0) >= 40 && !String(l.msg).startsWith('export of'));
  assert.deepEqual(said.map((l) => [l.msg, l.spans ?? l.count]), [
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

/** `/healthz` of a process, from the port its log line says it serves on. */
async function healthz(lines: LogLine[]): Promise<{ code: number; body: unknown }> {
  const port = lines.find((l) => l.msg === 'serving /healthz and /metrics')?.port as number;
  const res = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { code: res.status, body: await res.json() };
}

const levels = (lines: LogLine[], min: number) => lines.filter((l) => (l.level ?? 0) >= min);

test('watch: a second process on the same state file waits as a standby, then takes over when the first stops; each span once, each event logged once', async (t) => {
  const w = workload(2);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_HTTP_PORT: '0' };
  const cut = Math.floor(w.events.length * 0.5);

  const first = startWatch(env, t);
  const firstLines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  const second = startWatch(env, t);
  const secondLines = follow(second.child);
  await until('standby', () => secondLines().some((l) => l.msg?.startsWith('standby:')));
  const standby = secondLines().find((l) => l.msg?.startsWith('standby:'))!;
  assert.deepEqual(
    { msg: standby.msg, holder: { ...(standby.holder as object), since: '' }, path: standby.path, leaseMs: standby.leaseMs },
    {
      msg: 'standby: another process follows the stream with this state file; taking over when it stops or stops renewing its lock',
      holder: { pid: first.child.pid, host: hostname(), since: '' },
      path: `${env.PREFECT_OTEL_STATE_FILE}.lock`,
      leaseMs: 30_000,
    },
  );
  assert.deepEqual(await healthz(secondLines()), {
    code: 503,
    body: { status: 'standby', problems: ['standby: another process holds the state file'], connected: false, exporting: true },
  });

  prefect.publish(w.events.slice(0, cut));
  await until('the first half taken', () => stlogging(firstLines()).length === cut);
  // Only the holder subscribed, and only it logs the runs.
  assert.deepEqual({ connections: prefect.connections.length, standbyLines: stlogging(secondLines()).length }, { connections: 1, standbyLines: 0 });

  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  await until('taken over', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
  prefect.publish(w.events.slice(cut));
  await receiver.waitForSpans(w.runs.size);
  await until('every event taken', () => stlogging(secondLines()).length >= w.events.length - cut);
  assert.equal((await healthz(secondLines())).code, 200);
  second.child.kill('SIGTERM');
  const r = await second.result;
  assert.equal(r.code, 0, r.stderr);

  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  assertEachEventLoggedOnce(firstLines(), secondLines(), w);
  const tookOver = secondLines().slice(secondLines().findIndex((l) => l.msg === standby.msg) + 1).map((l) => l.msg);
  assert.deepEqual(tookOver.slice(0, 2), ['the state file is free: taking over', 'resumed from the state file']);
  assert.deepEqual(levels([...firstLines(), ...secondLines()], 40).map((l) => l.msg), []);
  assert.equal(existsSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`), false, 'the lock is removed at exit');
});

test('watch: the holder killed (SIGKILL), the standby of the same host takes over at once, without waiting out the lease', async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_STATE_LEASE_MS: '3600000' };

  const first = startWatch(env, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  const second = startWatch(env, t);
  const secondLines = follow(second.child);
  await until('standby', () => secondLines().some((l) => l.msg?.startsWith('standby:')));
  first.child.kill('SIGKILL');
  await first.result;
  await until('taken over', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  second.child.kill('SIGTERM');
  assert.equal((await second.result).code, 0);

  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  const warned = levels(secondLines(), 40);
  assert.deepEqual(
    warned.map((l) => ({ msg: l.msg, pid: (l.holder as { pid: number }).pid })),
    [{ msg: 'took over the state file from a process that stopped renewing its lock', pid: first.child.pid }],
  );
});

test('watch: a holder whose lock another process took over stops with an error, and leaves the new holder its lock', async (t) => {
  const { prefect } = await startServers(t);
  const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_STATE_LEASE_MS: '600' };
  const first = startWatch(env, t);
  const lines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  // What a standby writes when it takes over a lease that ran out (this one froze, say).
  const other = { pid: 1, host: 'another-host', pidNamespace: null, token: 'the-new-holder', since: new Date().toISOString() };
  writeFileSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`, JSON.stringify(other));
  const r = await first.result;
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(levels(lines(), 50).map((l) => l.msg), [
    `another process took over the state file ${env.PREFECT_OTEL_STATE_FILE} (pid 1 on another-host): this one stopped renewing its lock for longer than the lease; stopping without saving`,
  ]);
  assert.deepEqual(JSON.parse(readFileSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`, 'utf8')), other);
});

/** The state file and its journal, as they are on disk (the lock aside). */
function stateFiles(stateFile: string): Record<string, string> {
  const dir = dirname(stateFile);
  return Object.fromEntries(readdirSync(dir).filter((f) => !f.includes('.lock')).sort().map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}

for (const stopped of [false, true]) {
  test(`watch: a holder frozen (SIGSTOP) past its lease, then resumed${stopped ? ' with a SIGTERM waiting' : ''}, writes nothing over the state of the process that took over, and stops with an error`, async (t) => {
    const w = workload(1);
    const { prefect } = await startServers(t, w.taskRuns);
    const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_STATE_LEASE_MS: '1500' };
    const first = startWatch(env, t);
    const firstLines = follow(first.child);
    await until('subscription', () => liveConnections(prefect) === 1);
    prefect.publish(w.events);
    await until('every event taken', () => stlogging(firstLines()).length === w.events.length);
    // The second saves nothing by itself while the test looks: what changes on disk is the first's.
    const second = startWatch({ ...env, PREFECT_OTEL_STATE_FLUSH_MS: '3600000' }, t);
    const secondLines = follow(second.child);
    await until('standby', () => secondLines().some((l) => l.msg?.startsWith('standby:')));

    first.child.kill('SIGSTOP');
    await until('taken over', () => prefect.connections.length === 2);
    const taken = stateFiles(env.PREFECT_OTEL_STATE_FILE);
    // Resumed, its save and its renewal are both overdue (and its shutdown's last save, asked for while it was frozen).
    if (stopped) first.child.kill('SIGTERM');
    first.child.kill('SIGCONT');
    const r = await first.result;
    assert.deepEqual(
      { code: r.code, fatal: levels(firstLines(), 50).map((l) => l.msg), files: stateFiles(env.PREFECT_OTEL_STATE_FILE) },
      {
        code: 1,
        fatal: [`another process took over the state file ${env.PREFECT_OTEL_STATE_FILE} (pid ${second.child.pid} on ${hostname()}): this one stopped renewing its lock for longer than the lease; stopping without saving`],
        files: taken,
      },
    );
    second.child.kill('SIGTERM');
    assert.equal((await second.result).code, 0);
  });
}

test('watch: a holder that takes longer to stop than its lease (the collector down) keeps its lock until it has saved: the standby takes over after it, from its state, and sends the spans it kept', async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_STATE_LEASE_MS: '600' };
  const { first, firstLines } = await spansBuiltWithCollectorDown(t, prefect, w, env);
  const second = startWatch({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, t);
  const secondLines = follow(second.child);
  await until('standby', () => secondLines().some((l) => l.msg?.startsWith('standby:')));

  first.child.kill('SIGTERM');
  const r = await first.result;
  const said = firstLines().filter((l) => (l.level ?? 0) >= 40 && !String(l.msg).startsWith('export of'));
  assert.deepEqual(
    { code: r.code, said: said.map((l) => [l.msg, l.spans ?? l.count]) },
    { code: 0, said: [['spans the collector has not taken yet are kept in the state file; the next start sends them', w.runs.size]] },
  );
  await receiver.waitForSpans(w.runs.size);
  second.child.kill('SIGTERM');
  assert.equal((await second.result).code, 0);
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  const tookOver = secondLines().map((l) => l.msg).filter((m) => m === 'the state file is free: taking over' || m === 'took over the state file from a process that stopped renewing its lock');
  assert.deepEqual(tookOver, ['the state file is free: taking over']);
});

test('watch: SIGTERM to a standby ends it at once (exit 0) with nothing saved or sent, the holder and its lock untouched', async (t) => {
  const { prefect } = await startServers(t);
  const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') };
  const first = startWatch(env, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  const lock = readFileSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`, 'utf8');
  const second = startWatch(env, t);
  const lines = follow(second.child);
  await until('standby', () => lines().some((l) => l.msg?.startsWith('standby:')));
  second.child.kill('SIGTERM');
  assert.equal((await second.result).code, 0);
  const after = lines().slice(lines().findIndex((l) => l.msg === 'signal received') + 1);
  assert.deepEqual(after.map((l) => l.msg), ['shutting down a standby: nothing to save or send', 'stopped']);
  assert.equal(readFileSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`, 'utf8'), lock);
  assert.deepEqual({ connections: prefect.connections.length, live: liveConnections(prefect), holderRunning: first.child.exitCode === null }, { connections: 1, live: 1, holderRunning: true });
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
});

test('watch: the temp files of saves that killed processes did not finish are removed by the next holder of the state file, and nothing else', async (t) => {
  const { prefect } = await startServers(t);
  const dir = tempDir();
  const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') };
  // Two saves cut short by SIGKILL (each temp file is as large as the state), and files that are not theirs.
  const leftovers = ['state.json.4194000.tmp', 'state.json.12.tmp'];
  const others = ['other.json.12.tmp', 'state.json.bad-2026-11-28T04-42-49-453Z', 'state.json.tmp', 'state.json.12.tmp.keep'];
  for (const name of [...leftovers, ...others]) writeFileSync(join(dir, name), '{"version":2,"savedAt":"');
  const run = startWatch(env, t);
  const lines = follow(run.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  run.child.kill('SIGTERM');
  assert.equal((await run.result).code, 0);
  assert.deepEqual(readdirSync(dir).sort(), [...others, 'state.json'].sort());
  assert.deepEqual(
    lines().filter((l) => l.msg?.startsWith('removed the temp files') === true).map((l) => [l.msg, (l.files as string[]).slice().sort()]),
    [['removed the temp files of state saves that a process stopped in the middle of', leftovers.map((name) => join(dir, name)).sort()]],
  );
});
