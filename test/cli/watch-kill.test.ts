/**
 * `prefect-otel watch` killed (SIGKILL) again and again while a workload streams in, each time
 * restarted on the same state file (README, Guarantees: "A crash (SIGKILL) loses no span"). Across
 * every process the collector gets the spans one uninterrupted `watch` gives for the same events:
 * the same span ids, each span whole (attributes, parent, events, links, status, times); a span may
 * come more than once, each copy the same. Kill points: right after a save, in the middle of the
 * stream, while the collector refuses (its spans wait in the state file) and subflow parent
 * look-ups go unanswered, while the collector holds a request unanswered, right after a rewrite,
 * at start before the subscription. Between two processes: a journal whose last line a kill cut
 * short, the temp file of a rewrite a kill cut short, and a journal of an earlier generation left
 * beside a newer state file. The kill points' timings, and whether the stream is sent twice or in
 * swapped pairs, come from a seed, said when the test fails (`PREFECT_OTEL_TEST_SEED` runs it again).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { mulberry32 } from '../../src/source/demo-workload.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { follow, stateText, stlogging } from '../helpers/watch-processes.js';
import { liveConnections, shape, startServers, startWatch, tempDir, until, watchUntilSpans, workload, type LogLine, type Workload } from '../helpers/watch-e2e.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What the state file and its journal are on disk now: a save changes it. */
function stamp(stateFile: string): string {
  const one = (path: string): string => {
    try {
      const s = statSync(path);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return '-';
    }
  };
  return `${one(stateFile)}|${one(`${stateFile}.journal`)}`;
}

/** The spans one uninterrupted `watch` gives for the workload (its own fake server and collector). */
async function uninterrupted(t: TestContext, w: Workload): Promise<ReceivedSpan[]> {
  const servers = await startServers(t, w.taskRuns);
  await watchUntilSpans(t, servers, w, {}, 1);
  return servers.receiver.spans();
}

/** Every copy of a span id is the same span; one of each, by span id. */
function oneOfEach(spans: ReceivedSpan[]): ReturnType<typeof shape> {
  const byId = new Map<string, ReturnType<typeof shape>[number]>();
  for (const s of shape(spans)) {
    const seen = byId.get(s.spanId);
    if (seen === undefined) byId.set(s.spanId, s);
    else assert.deepEqual(s, seen, `span ${s.spanId} sent again, not the same`);
  }
  return [...byId.values()];
}

async function killCycle(t: TestContext, seed: number): Promise<void> {
  const random = mulberry32(seed);
  const between = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
  const w = workload(4);
  const reference = await uninterrupted(t, w);
  assert.equal(reference.length, w.runs.size);

  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  let collectorDown = false;
  const receiver = await startOtlpReceiver({ respond: (_n, path) => (collectorDown && path === '/v1/traces' ? 503 : 200) });
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  // The stream as Prefect may send it: every live event twice, or in swapped pairs.
  prefect.switches.duplicate = random() < 0.5;
  prefect.switches.reorder = random() < 0.5;
  const stateFile = join(tempDir(), 'state.json');
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: stateFile, PREFECT_OTEL_STATE_FLUSH_MS: '100' };
  const outputs: (() => LogLine[])[] = [];
  const said: string[] = [];

  /** A new process on the state file, once it has subscribed (a killed holder of this host is seen gone at once). */
  const start = async () => {
    const before = prefect.connections.length;
    const run = startWatch(env, t);
    const out = follow(run.child);
    outputs.push(out);
    await until(`subscription after ${said.join(', ')}`, () => liveConnections(prefect) === 1 && prefect.connections.length > before, 15_000);
    // The lock a killed process left is taken over at once, its holder seen gone (same host), not waited out.
    if (said.length > 0) await until('the lock taken over', () => out().some((l) => l.msg === 'took over the state file from a process of this host that no longer runs'), 5_000);
    return { run, out };
  };
  const kill = async (run: ReturnType<typeof startWatch>, where: string) => {
    run.child.kill('SIGKILL');
    await run.result;
    said.push(where);
  };
  /** Publish `events` a few at a time, `gapMs` apart. */
  const stream = async (events: Workload['events'], gapMs: number) => {
    for (let i = 0; i < events.length; i += 3) {
      prefect.publish(events.slice(i, i + 3));
      await sleep(gapMs);
    }
  };
  const afterNextSave = async () => {
    const before = stamp(stateFile);
    await until('a save', () => stamp(stateFile) !== before, 5_000);
  };

  const events = w.events;
  const cuts = [0.15, 0.35, 0.62, 0.75, 0.85, 0.93].map((f) => Math.floor(events.length * (f + (random() - 0.5) * 0.06)));
  const part = (k: number) => events.slice(k === 0 ? 0 : cuts[k - 1], k === cuts.length ? events.length : cuts[k]);

  // 1. Killed right after a save.
  let p = await start();
  await stream(part(0), between(5, 40));
  await afterNextSave();
  await kill(p.run, 'right after a save');

  // 2. Killed at start, before it has subscribed: nothing of its own saved.
  {
    const early = startWatch(env, t);
    outputs.push(follow(early.child));
    await sleep(between(50, 250));
    await kill(early, 'at start');
  }

  // 3. Killed in the middle of the stream, at a time the seed gives.
  const earlier = statSync(stateFile).mtimeMs;
  p = await start();
  const midStream = stream(part(1), between(20, 60));
  // After its first journal line (a process's first save rewrites the state file and removes the
  // journal), at a time the seed gives.
  const ownJournal = (): boolean => {
    const file = statSync(stateFile).mtimeMs;
    const journal = statSync(`${stateFile}.journal`, { throwIfNoEntry: false })?.mtimeMs;
    return file !== earlier && journal !== undefined && journal >= file;
  };
  await until('a journal line', ownJournal, 5_000);
  await sleep(between(0, 100));
  await kill(p.run, 'mid-stream');
  await midStream;

  // 4. Its journal's last line cut short, as by a kill in the middle of an append.
  {
    const journal = readFileSync(`${stateFile}.journal`, 'utf8');
    const lastStart = journal.lastIndexOf('\n', journal.length - 2) + 1;
    truncateSync(`${stateFile}.journal`, Buffer.byteLength(journal.slice(0, lastStart + between(1, Math.max(1, journal.length - lastStart - 2)))));
    said.push('journal line cut short');
  }
  // And the temp file of a rewrite a kill cut short (a process id that is not running).
  const leftover = `${stateFile}.4194301.tmp`;
  writeFileSync(leftover, readFileSync(stateFile, 'utf8').slice(0, between(10, 200)));
  const olderJournal = readFileSync(`${stateFile}.journal`, 'utf8');

  // 5. Killed while the collector refuses: the spans wait in the state file.
  // The subflows' parent look-ups are not answered either: their events wait in the state file too.
  collectorDown = true;
  p = await start();
  await until('the line cut short said and passed over', () => p.out().some((l) => l.msg === 'state journal line cut short; ignored'), 5_000);
  prefect.switches.holdRest = true;
  const asked = prefect.restRequests.filter((r) => r.path.includes('/task_runs/')).length;
  await stream(part(2), between(5, 30));
  await until('a refused export', () => receiver.requests.some((r) => r.status === 503), 10_000);
  await afterNextSave();
  await kill(p.run, 'collector refusing');
  if (prefect.restRequests.filter((r) => r.path.includes('/task_runs/')).length > asked) said.push('parent look-up unanswered');
  prefect.switches.holdRest = false;
  assert.equal(existsSync(leftover), false, 'the temp file a kill left is removed by the next holder');

  // 6. Killed mid-stream with the collector still refusing, after a random number of saves.
  p = await start();
  // The spans the collector refused were saved, and the process after the kill took them over.
  await until('resumed', () => p.out().some((l) => l.msg === 'resumed from the state file'));
  assert.ok((p.out().find((l) => l.msg === 'resumed from the state file')!.pendingSpans as number) > 0, 'spans waiting for the collector in the state file');
  const refused = stream(part(3), between(5, 30));
  for (let n = between(0, 2); n > 0; n--) await afterNextSave();
  await kill(p.run, 'collector refusing, mid-stream');
  await refused;

  // 7. Killed while the collector holds a request unanswered (the spans the state file held, sent
  // at start, are out), then mid-stream with the collector back.
  collectorDown = false;
  const release = receiver.hold();
  p = await start();
  await until('resumed', () => p.out().some((l) => l.msg === 'resumed from the state file'));
  await sleep(between(250, 400));
  await afterNextSave();
  await kill(p.run, 'a request unanswered');
  release();
  p = await start();
  await until('resumed', () => p.out().some((l) => l.msg === 'resumed from the state file'));
  assert.ok((p.out().find((l) => l.msg === 'resumed from the state file')!.pendingSpans as number) > 0, 'the spans of the request left unanswered in the state file');
  await stream(part(4), between(5, 30));
  await sleep(between(0, 200));
  await kill(p.run, 'collector back, mid-stream');

  // 8. Killed right after its first save, which rewrites the state file: a journal of an earlier
  // generation is left beside it, as by a kill between the rename and the removal of the journal
  // that the new file supersedes.
  {
    const rewritten = statSync(stateFile).mtimeMs;
    p = await start();
    const rest = stream(part(5), between(5, 30));
    await until('the state file rewritten', () => statSync(stateFile).mtimeMs !== rewritten, 5_000);
    await kill(p.run, 'right after a rewrite');
    await rest;
    const own = existsSync(`${stateFile}.journal`) ? readFileSync(`${stateFile}.journal`, 'utf8') : '';
    writeFileSync(`${stateFile}.journal`, olderJournal + own, { mode: 0o600 });
    said.push('journal of an earlier generation');
  }

  p = await start();
  await stream(part(6), 5);
  const ids = new Set(reference.map((s) => s.spanId));
  await until('every span', () => [...ids].every((id) => receiver.spans().some((s) => s.spanId === id)), 20_000, () => `${said.join(', ')}; missing ${[...ids].filter((id) => !receiver.spans().some((s) => s.spanId === id)).join(' ')}`);
  await sleep(300); // what a kill made it do twice has come too
  p.run.child.kill('SIGTERM');
  const last = await p.run.result;
  assert.equal(last.code, 0, last.stderr);

  t.diagnostic(`seed ${seed}${prefect.switches.duplicate ? ', duplicates' : ''}${prefect.switches.reorder ? ', reordered' : ''}: ${said.join(', ')}`);
  const got = oneOfEach(receiver.spans());
  assert.deepEqual(got, shape(reference));
  // Each event logged at least once (a kill repeats the lines of its last interval).
  const logged = new Set(outputs.flatMap((out) => stlogging(out())).map((l) => l['prefect.event.id']));
  assert.deepEqual(events.map((e) => e.id).filter((id) => !logged.has(id)), []);
}

const SEEDS = process.env.PREFECT_OTEL_TEST_SEED !== undefined ? [Number(process.env.PREFECT_OTEL_TEST_SEED)] : [Math.floor(Math.random() * 2 ** 31)];

for (const seed of SEEDS) {
  test(`watch: killed (SIGKILL) at eight points of a stream and restarted each time on the same state file, the collector gets every span one uninterrupted watch sends, each whole (seed ${seed})`, async (t) => {
    try {
      await killCycle(t, seed);
    } catch (err) {
      (err as Error).message = `PREFECT_OTEL_TEST_SEED=${seed}: ${(err as Error).message}`;
      throw err;
    }
  });
}

test('watch: killed (SIGKILL) right after a save, four times in a stream, every event its state file knows as seen has its STLOGGING line in the output (the next process does not log it again)', async (t) => {
  const w = workload(4);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  t.after(() => prefect.close());
  const stateFile = join(tempDir(), 'state.json');
  const outputs: (() => LogLine[])[] = [];
  const rounds = 4;
  const size = Math.ceil(w.events.length / rounds);
  for (let k = 0; k < rounds; k++) {
    // Saves as often as the log lines are written out (every 100 ms).
    const before = prefect.connections.length;
    const run = startWatch({ PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: stateFile, PREFECT_OTEL_STATE_FLUSH_MS: '100' }, t);
    outputs.push(follow(run.child));
    await until('subscription', () => liveConnections(prefect) === 1 && prefect.connections.length > before, 15_000);
    const streamed = (async () => {
      for (const e of w.events.slice(k * size, (k + 1) * size)) {
        prefect.publish(e);
        await sleep(5);
      }
    })();
    // Right after a save in the middle of the stream.
    await sleep(60);
    const saved = stamp(stateFile);
    while (stamp(stateFile) === saved) await sleep(1);
    run.child.kill('SIGKILL');
    await run.result;
    await streamed;
  }

  const state = stateText(stateFile);
  const known = w.events.map((e) => e.id).filter((id) => state.includes(id));
  assert.ok(known.length > 0, 'events saved before the kills');
  const logged = new Set(outputs.flatMap((out) => stlogging(out())).map((l) => l['prefect.event.id']));
  assert.deepEqual(known.filter((id) => !logged.has(id)), []);
});
