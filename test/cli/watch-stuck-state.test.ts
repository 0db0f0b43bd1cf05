/**
 * `prefect-otel watch` stopped while the state file's file system does not answer (README,
 * Guarantees and Exit codes): a call stuck on it is given up after 10 s, said in one error line,
 * and the process ends by SIGKILL, as Node cannot exit while one of its threads is held in such a
 * call. The file system is made to hang for real: a FIFO with no reader put where the process opens
 * a file (the state journal it appends to, the lock it reads), whose open or read then never
 * returns. The next start, on the same directory made normal again, resumes from the last save that
 * completed, and across both processes every run has its span. A second signal meanwhile does not
 * wait for that bound: it says which call does not answer and ends the process by SIGKILL at once.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, linkSync, readFileSync, renameSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { follow, stlogging } from '../helpers/watch-processes.js';
import { assertOneSpanPerRun, liveConnections, startServers, startWatch, tempDir, until, workload } from '../helpers/watch-e2e.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The bound README gives the state file's work at exit. */
const BOUND_MS = 10_000;
/** A stop's whole bound, as the README gives it: the event stream's 2 s, the collector's 10 s and the state file's 10 s. */
const STOP_BOUND_MS = 22_000;

/** A FIFO with no reader at `path`, put there in one rename (what was there goes). */
function fifoAt(path: string): void {
  const made = `${path}.fifo`;
  execFileSync('mkfifo', [made]);
  renameSync(made, path);
}

/** Modification time and size of a file; `-` when there is none. */
function stamp(path: string): string {
  const s = statSync(path, { throwIfNoEntry: false });
  return s === undefined ? '-' : `${s.mtimeMs}:${s.size}`;
}

/**
 * A `watch` on a state file of its own, sent the first half of a workload, with a journal line
 * written after it took them (its first save rewrites the state file).
 */
async function watchingFirstHalf(t: TestContext) {
  const w = workload(4);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const stateFile = join(dir, 'state.json');
  const journal = `${stateFile}.journal`;
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: stateFile };

  const first = startWatch(env, t);
  const out = follow(first.child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((resolve) =>
    first.child.on('exit', (code, signal) => resolve({ code, signal, atMs: performance.now() })),
  );
  await until('subscription', () => liveConnections(prefect) === 1);
  const half = Math.floor(w.events.length / 2);
  prefect.publish(w.events.slice(0, half));
  await until('the first half taken', () => stlogging(out()).length === half);
  const before = stamp(journal);
  await until('a journal line with the first half', () => stamp(journal) !== before, 5_000);
  return { w, prefect, receiver, stateFile, journal, env, first, out, exited, half };
}

/**
 * A `watch` sent the first half of a workload, saved, then `hang` makes its file system stop
 * answering; sent the second half, and SIGTERM. Checks how it ends, then `unhang` and a second start
 * on the same state file, which must resume from the last save that completed.
 */
async function stuckThenResumed(
  t: TestContext,
  hang: (stateFile: string) => void,
  unhang: (stateFile: string) => void,
  expected: { step: string; msg: (stateFile: string) => string },
): Promise<void> {
  const { w, prefect, receiver, stateFile, journal, env, first, out, exited, half } = await watchingFirstHalf(t);

  hang(stateFile);
  prefect.publish(w.events.slice(half));
  await until('the second half taken', () => stlogging(out()).length === w.events.length);
  // Past a few saves' intervals (200 ms): one of them is stuck.
  await sleep(600);
  const stopAtMs = performance.now();
  first.child.kill('SIGTERM');
  const end = await exited;
  const { stderr } = await first.result;
  const tookMs = end.atMs - stopAtMs;

  const msg = expected.msg(stateFile);
  const said = out().filter((l) => l.level === 50);
  assert.deepEqual(
    said.map(({ level, component, path, lock, step, timeoutMs, msg }) => ({ level, component, path, lock, step, timeoutMs, msg })),
    [{ level: 50, component: 'watch', path: stateFile, lock: `${stateFile}.lock`, step: expected.step, timeoutMs: BOUND_MS, msg }],
  );
  assert.ok(out().some((l) => l.msg === 'stopped'), 'the stopped line comes after it');
  assert.equal(stderr, `prefect-otel: ${msg} (ending by SIGKILL: a process cannot exit while a call on its file system is stuck)\n`);
  assert.deepEqual({ code: end.code, signal: end.signal }, { code: null, signal: 'SIGKILL' });
  // The bound waited out, not much more: the event stream and the collector answer at once here.
  assert.ok(tookMs >= BOUND_MS && tookMs < STOP_BOUND_MS, `ended ${Math.round(tookMs)} ms after SIGTERM`);

  // The directory made normal again: the next start resumes from the last complete save.
  unhang(stateFile);
  const lines = readFileSync(journal, 'utf8').split('\n').filter((l) => l !== '');
  const last = JSON.parse(lines.at(-1)!) as { cursorUs: number };
  const second = startWatch(env, t);
  const out2 = follow(second.child);
  await until('resumed', () => out2().some((l) => l.msg === 'resumed from the state file'));
  const resumed = out2().find((l) => l.msg === 'resumed from the state file')!;
  assert.deepEqual({ cursor: resumed.cursor, journalLines: resumed.journalLines }, { cursor: new Date(last.cursorUs / 1000).toISOString(), journalLines: lines.length });
  await receiver.waitForSpans(w.runs.size);
  await until('every run exported', () => new Set(receiver.spans().map((s) => s.spanId)).size === w.runs.size);
  second.child.kill('SIGTERM');
  const r2 = await second.result;
  assert.equal(r2.code, 0, r2.stderr);

  // Every run once; a span sent by both processes is the same span.
  const byId = new Map<string, string>();
  for (const s of receiver.spans()) {
    const seen = byId.get(s.spanId);
    const whole = JSON.stringify({ ...s, attributes: s.attributes });
    if (seen === undefined) byId.set(s.spanId, whole);
    else assert.equal(whole, seen, `span ${s.spanId} sent again, not the same`);
  }
  assertOneSpanPerRun([...new Map(receiver.spans().map((s) => [s.spanId, s])).values()], w);
}

const unsaved = (stateFile: string): string =>
  `the last save of the state file ${stateFile} did not finish: its file system has not answered for 10 s (an NFS server gone, a frozen or full disk); what came since the last complete save is not saved: the next start resumes from that save and reads the events since then again`;

test('watch: a last save stuck on the state journal is given up after 10 s, said, and ends by SIGKILL; the next start resumes from the last complete save', async (t) => {
  await stuckThenResumed(
    t,
    (stateFile) => {
      // The journal as it is kept aside (the same file, so a line appended meanwhile is in it), and a FIFO in its place.
      linkSync(`${stateFile}.journal`, `${stateFile}.journal.kept`);
      fifoAt(`${stateFile}.journal`);
    },
    (stateFile) => renameSync(`${stateFile}.journal.kept`, `${stateFile}.journal`),
    { step: 'save', msg: unsaved },
  );
});

test('watch: a lock that does not answer (every look and renewal stuck) is given up after 10 s at exit, said, and ends by SIGKILL; the next start resumes', async (t) => {
  await stuckThenResumed(
    t,
    // Every look at the lock (before each save, every 200 ms) and its renewal read it, and wait:
    // the four threads of Node's pool are soon all stuck.
    (stateFile) => fifoAt(`${stateFile}.lock`),
    (stateFile) => unlinkSync(`${stateFile}.lock`),
    { step: 'lock check', msg: unsaved },
  );
});

test('watch: a stop while the start is stuck reading the lock waits 10 s at most, saves nothing, and ends by SIGKILL; the next start resumes from the state file as it was', async (t) => {
  const w = workload(4);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const stateFile = join(dir, 'state.json');
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: stateFile };

  // A first process takes the first half and saves it at its stop.
  const first = startWatch(env, t);
  const out1 = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  const half = Math.floor(w.events.length / 2);
  prefect.publish(w.events.slice(0, half));
  await until('the first half taken', () => stlogging(out1()).length === half);
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  const saved = readFileSync(stateFile, 'utf8');

  // The lock's path does not answer: the next start's look at it never returns.
  fifoAt(`${stateFile}.lock`);
  const stuck = startWatch(env, t);
  const out2 = follow(stuck.child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((resolve) =>
    stuck.child.on('exit', (code, signal) => resolve({ code, signal, atMs: performance.now() })),
  );
  await until('starting', () => out2().some((l) => l.msg === 'prefect-otel starting'));
  await sleep(300);
  const stopAtMs = performance.now();
  stuck.child.kill('SIGTERM');
  const end = await exited;
  const { stderr } = await stuck.result;
  const tookMs = end.atMs - stopAtMs;

  const msg = `the state file ${stateFile} was still being locked or read at start, and its file system has not answered for 10 s (an NFS server gone, a frozen or full disk): nothing is saved; the next start resumes from the state file as it is`;
  assert.deepEqual(
    out2().filter((l) => (l.level ?? 0) >= 40).map(({ level, path, step, msg }) => ({ level, path, step, msg })),
    [{ level: 50, path: stateFile, step: 'start', msg }],
  );
  assert.equal(stderr, `prefect-otel: ${msg} (ending by SIGKILL: a process cannot exit while a call on its file system is stuck)\n`);
  assert.deepEqual({ code: end.code, signal: end.signal }, { code: null, signal: 'SIGKILL' });
  assert.ok(tookMs >= BOUND_MS && tookMs < STOP_BOUND_MS, `ended ${Math.round(tookMs)} ms after SIGTERM`);
  assert.equal(readFileSync(stateFile, 'utf8'), saved, 'the state file as the first process left it');
  assert.equal(liveConnections(prefect), 0, 'it never subscribed');

  // The lock's path made normal again: the next start resumes from the first process's save.
  unlinkSync(`${stateFile}.lock`);
  const third = startWatch(env, t);
  const out3 = follow(third.child);
  await until('resumed', () => out3().some((l) => l.msg === 'resumed from the state file'));
  const cursorUs = (JSON.parse(saved) as { cursorUs: number }).cursorUs;
  assert.equal(out3().find((l) => l.msg === 'resumed from the state file')!.cursor, new Date(cursorUs / 1000).toISOString());
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events.slice(half));
  await until('every run exported', () => new Set(receiver.spans().map((s) => s.spanId)).size === w.runs.size);
  third.child.kill('SIGTERM');
  assert.equal((await third.result).code, 0);
  assertOneSpanPerRun([...new Map(receiver.spans().map((s) => [s.spanId, s])).values()], w);
});

test('watch: a save stuck on the state journal while running is said once after 10 s, no save is started behind it, the stream goes on, and saves resume once it answers', async (t) => {
  const { w, prefect, receiver, stateFile, journal, first: run, out, half } = await watchingFirstHalf(t);
  linkSync(journal, `${journal}.kept`);
  const hungAtMs = Date.now();
  fifoAt(journal);
  // The stream goes on while the save waits: every event is taken and every run exported.
  prefect.publish(w.events.slice(half));
  await until('the second half taken', () => stlogging(out()).length === w.events.length);
  await until('every run exported', () => new Set(receiver.spans().map((s) => s.spanId)).size === w.runs.size);
  const stuckLine = `a save of the state file has not finished for 10 s: its file system does not answer; no save is started until it does, and a restart meanwhile resumes from the last complete save`;
  await until('the stuck save said', () => out().some((l) => l.msg === stuckLine), 20_000);
  // Said once the save has waited the whole bound (less a second: it may have begun just before the journal hung).
  const saidAtMs = out().find((l) => l.msg === stuckLine)!.time as number;
  assert.ok(saidAtMs >= hungAtMs + BOUND_MS - 1_000, `said ${saidAtMs - hungAtMs} ms after the journal hung`);
  // Saves every 200 ms: some fifty intervals passed while it waited, and none was started behind it.
  await sleep(1_000);

  // The file system answers: a reader takes what the waiting save writes. Exactly one journal line
  // comes through; the journal is put back as soon as it is written, before the next interval.
  const through: Buffer[] = [];
  const reader = createReadStream(journal);
  reader.on('data', (chunk) => through.push(chunk as Buffer));
  await new Promise<void>((resolve, reject) => {
    reader.on('end', resolve);
    reader.on('error', reject);
  });
  renameSync(`${journal}.kept`, journal);
  const lines = Buffer.concat(through).toString('utf8').split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, 'one save waited, none behind it');
  await until('the file system said to answer again', () => out().some((l) => l.msg === "the state file's file system answers again"));
  const written = stamp(journal);
  await until('a journal line after it', () => stamp(journal) !== written, 5_000);

  run.child.kill('SIGTERM');
  const result = await run.result;
  assert.equal(result.code, 0, result.stderr);
  // The save that waited then fails: a FIFO cannot be synced to disk (EINVAL). Said as any failed save is.
  assert.deepEqual(
    out().filter((l) => (l.level ?? 0) >= 40 || l.msg === "the state file's file system answers again").map(({ level, component, path, timeoutMs, msg, err }) => ({ level, component, path, timeoutMs, msg, code: (err as { message?: string } | undefined)?.message?.split(':')[0] })),
    [
      { level: 50, component: 'watch', path: stateFile, timeoutMs: BOUND_MS, msg: stuckLine, code: undefined },
      { level: 50, component: 'watch', path: stateFile, timeoutMs: undefined, msg: 'could not write the state file', code: 'EINVAL' },
      { level: 30, component: 'watch', path: stateFile, timeoutMs: undefined, msg: "the state file's file system answers again", code: undefined },
    ],
  );
  // Both count as failed saves: the one said to be stuck, and its failure once it answered.
  assert.deepEqual(out().find((l) => l.msg === 'stopped')!.state, { saveFailures: 2 });
});

test('watch: a second signal while a save is stuck on the state journal ends the process by SIGKILL at once, saying which call does not answer; the next start resumes from the last complete save', async (t) => {
  const { stateFile, journal, env, first, out, exited } = await watchingFirstHalf(t);
  linkSync(journal, `${journal}.kept`);
  fifoAt(journal);
  // Past a few saves' intervals (200 ms): one of them is stuck on the journal.
  await sleep(600);
  const stopAtMs = performance.now();
  first.child.kill('SIGTERM');
  await until('the shutdown under way', () => out().some((l) => l.msg === 'shutting down: stop reading, persist state, flush exports'));
  first.child.kill('SIGTERM');
  const end = await exited;
  const { stderr } = await first.result;
  const tookMs = end.atMs - stopAtMs;

  const said = out().filter((l) => (l.level ?? 0) >= 40);
  assert.equal(said.length, 1, JSON.stringify(said));
  const { level, component, signal, steps, path, waitedMs, msg } = said[0]!;
  // The journal line stuck before the first signal, and the last save queued behind it when the shutdown came to it.
  assert.ok(Array.isArray(steps) && steps[0] === 'journal line' && steps.every((s) => s === 'journal line' || s === 'save'), JSON.stringify(steps));
  const message = `second signal while a call on the state file's file system does not answer (${(steps as string[]).join(', ')}): exiting without waiting`;
  assert.deepEqual({ level, component, signal, path, waitedMs, msg }, { level: 50, component: 'watch', signal: 'SIGTERM', path: stateFile, waitedMs: 1_000, msg: message });
  assert.equal(stderr, `prefect-otel: ${message} (ending by SIGKILL: a process cannot exit while a call on its file system is stuck)\n`);
  assert.deepEqual({ code: end.code, signal: end.signal }, { code: null, signal: 'SIGKILL' });
  // Ended by the second signal, not by the first one's bound (10 s from the first signal): the second waits 1 s at most.
  assert.ok(tookMs < BOUND_MS, `ended ${Math.round(tookMs)} ms after the first SIGTERM`);
  assert.ok(!out().some((l) => l.msg === 'stopped'), 'the shutdown was not waited for');

  // The directory made normal again: the next start resumes from the last complete save.
  renameSync(`${journal}.kept`, journal);
  const lines = readFileSync(journal, 'utf8').split('\n').filter((l) => l !== '');
  const last = JSON.parse(lines.at(-1)!) as { cursorUs: number };
  const second = startWatch(env, t);
  const out2 = follow(second.child);
  await until('resumed', () => out2().some((l) => l.msg === 'resumed from the state file'));
  assert.equal(out2().find((l) => l.msg === 'resumed from the state file')!.cursor, new Date(last.cursorUs / 1000).toISOString());
  second.child.kill('SIGTERM');
  const r2 = await second.result;
  assert.equal(r2.code, 0, r2.stderr);
});
