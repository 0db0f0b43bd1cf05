/**
 * A standby beside the holder of a state file (SPEC §7: a standby takes over from the state file):
 * the lock, its lease, take-overs after a stop, a kill or a freeze, each span once and each event
 * logged once across both processes.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { liveConnections, replaySpans, shape, startServers, startWatch, tempDir, until, workload } from '../helpers/watch-e2e.js';
import { follow, stlogging, assertEachEventLoggedOnce, spansBuiltWithCollectorDown, healthz, levels, stateFiles, stateText } from '../helpers/watch-processes.js';

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
    [{ msg: 'took over the state file from a process of this host that no longer runs', pid: first.child.pid }],
  );
});

test('watch: a holder whose lock another process took over stops with an error, and leaves the new holder its lock', async (t) => {
  const { prefect } = await startServers(t);
  const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_STATE_LEASE_MS: '600' };
  const first = startWatch(env, t);
  const lines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  // What a standby writes when it takes over a lease that ran out (this one froze, say), put in place
  // whole as a standby does, never there empty for a moment.
  const other = { pid: 1, host: 'another-host', pidNamespace: null, token: 'the-new-holder', since: new Date().toISOString() };
  writeFileSync(`${env.PREFECT_OTEL_STATE_FILE}.lock.new`, JSON.stringify(other));
  renameSync(`${env.PREFECT_OTEL_STATE_FILE}.lock.new`, `${env.PREFECT_OTEL_STATE_FILE}.lock`);
  const r = await first.result;
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(levels(lines(), 50).map((l) => l.msg), [
    `another process took over the state file ${env.PREFECT_OTEL_STATE_FILE} (pid 1 on another-host): this one stopped renewing its lock for longer than the lease; stopping without saving`,
  ]);
  assert.deepEqual(JSON.parse(readFileSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`, 'utf8')), other);
});

/** A holder with a 1.5 s lease (traces not exported) that has taken every event of one flow run. */
async function holderWithEveryEvent(t: TestContext) {
  const w = workload(1);
  const { prefect } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_STATE_LEASE_MS: '1500' };
  const first = startWatch(env, t);
  const firstLines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await until('every event taken', () => stlogging(firstLines()).length === w.events.length);
  return { prefect, env, first, firstLines };
}

for (const stopped of [false, true]) {
  test(`watch: a holder frozen (SIGSTOP) past its lease, then resumed${stopped ? ' with a SIGTERM waiting' : ''}, writes nothing over the state of the process that took over, and stops with an error`, async (t) => {
    const { prefect, env, first, firstLines } = await holderWithEveryEvent(t);
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

test('watch: a holder frozen (SIGSTOP) past its lease, resumed only after the process that took over has stopped (its lock removed): it writes nothing over the state that process left, takes no lock, and stops with an error', async (t) => {
  const { prefect, env, first, firstLines } = await holderWithEveryEvent(t);
  // Frozen before the second starts: it cannot see the second's lock before it resumes, however slow it runs.
  first.child.kill('SIGSTOP');
  const second = startWatch(env, t);
  await until('taken over', () => prefect.connections.length === 2);
  second.child.kill('SIGTERM');
  assert.equal((await second.result).code, 0);
  // What the second left: its last save, and no lock.
  const left = stateFiles(env.PREFECT_OTEL_STATE_FILE);
  assert.equal(existsSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`), false);

  first.child.kill('SIGCONT');
  await until('the first stops, or writes over the state', () => first.child.exitCode !== null || JSON.stringify(stateFiles(env.PREFECT_OTEL_STATE_FILE)) !== JSON.stringify(left));
  const files = stateFiles(env.PREFECT_OTEL_STATE_FILE);
  const lock = existsSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`);
  first.child.kill('SIGTERM');
  const r = await first.result;
  // Which look finds the lock gone first (the renewal or the one before a save) decides whether the
  // line can say that the other process has stopped since; on Node 26 it is the one that cannot.
  const took = (who: string): string => `another process took over the state file ${env.PREFECT_OTEL_STATE_FILE} (${who}): this one stopped renewing its lock for longer than the lease; stopping without saving`;
  const fatal = levels(firstLines(), 50).map((l) => l.msg);
  assert.ok(fatal.length === 1 && [took('and has stopped since: the state file is its last save'), took('holder unknown')].includes(fatal[0]!), JSON.stringify(fatal));
  assert.deepEqual(
    { code: r.code, files, lock },
    {
      code: 1,
      files: left,
      lock: false,
    },
  );
  assert.equal(existsSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`), false);
});

test('watch: a holder whose lock is removed by hand (the state file still its own) makes it again and goes on saving, and stops normally', async (t) => {
  const w = workload(1);
  const { prefect } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_STATE_LEASE_MS: '600' };
  const run = startWatch(env, t);
  const lines = follow(run.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  const half = Math.floor(w.events.length / 2);
  prefect.publish(w.events.slice(0, half));
  await until('saved', () => stateText(env.PREFECT_OTEL_STATE_FILE).includes(w.events[half - 1]!.id));
  unlinkSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`);
  await until('the lock made again', () => existsSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`));
  prefect.publish(w.events.slice(half));
  await until('saved again', () => stateText(env.PREFECT_OTEL_STATE_FILE).includes(w.events.at(-1)!.id));
  run.child.kill('SIGTERM');
  const r = await run.result;
  assert.deepEqual({ code: r.code, said: levels(lines(), 40).map((l) => l.msg) }, { code: 0, said: [] });
  assert.equal(existsSync(`${env.PREFECT_OTEL_STATE_FILE}.lock`), false);
});

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
    { code: r.code, said: said.map((l) => [l.msg, l.count]) },
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

