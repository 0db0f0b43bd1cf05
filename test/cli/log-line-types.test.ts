/**
 * Every line the CLI writes, in a busy run, as a log store that maps a field's type once reads it
 * (Elasticsearch, OpenSearch, Loki's JSON parser), and as Docker's json-file driver and containerd's
 * CRI logger take it (a line over 16 KiB is split): each field, dotted keys taken as paths as those
 * stores take them, has one JSON type on every line; no field is both a value and an object; a
 * failure is one `err` object; every line is under 16 KiB. The lines of rarer runs (a standby, a lock
 * taken over, state files moved aside or not writable, fatal errors, maintenance, a proxy that is not
 * there, the health server, a Prefect profile that is not TOML, replay's input warnings) are checked
 * together with those of the busy runs, as one index holds them all.
 */
import assert from 'node:assert/strict';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { test, type TestContext } from 'node:test';
import { startCli, type CliResult } from '../helpers/cli.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { customEvent, flowRunStateEvent } from '../helpers/prefect-events.js';
import { follow } from '../helpers/watch-processes.js';
import { closedPort, liveConnections, startWatch, tempDir, until, workload, type Workload } from '../helpers/watch-e2e.js';

const LINE_BOUND_BYTES = 16 * 1024;

type Line = Record<string, unknown>;

/** JSON type of a value as a log store maps it: numbers are one type, null is no value. */
function jsonType(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  return typeof v;
}

/**
 * Each field path's JSON types over all lines, with one line that had it, for the failure message.
 * Dotted keys are paths (`prefect.run.id` is `prefect` → `run` → `id`), arrays add their items' types
 * under `path[]`.
 */
function fieldTypes(lines: readonly Line[]): Map<string, Map<string, string>> {
  const types = new Map<string, Map<string, string>>();
  const note = (path: string, type: string, line: string): void => {
    let m = types.get(path);
    if (m === undefined) types.set(path, (m = new Map()));
    if (!m.has(type)) m.set(type, line.slice(0, 300));
  };
  const walk = (prefix: string, v: unknown, line: string): void => {
    const type = jsonType(v);
    if (type === 'null') return;
    note(prefix, type, line);
    if (type === 'array') for (const item of v as unknown[]) walk(`${prefix}[]`, item, line);
    else if (type === 'object') for (const [k, x] of Object.entries(v as Line)) walk(`${prefix}.${k}`, x, line);
  };
  for (const l of lines) {
    const text = JSON.stringify(l);
    for (const [k, v] of Object.entries(l)) {
      // A dotted key's leading parts are objects, as the store expands them.
      const parts = k.split('.');
      for (let i = 1; i < parts.length; i++) note(parts.slice(0, i).join('.'), 'object', text);
      walk(k, v, text);
    }
  }
  return types;
}

function parseLines(stdout: string): { lines: Line[]; raw: string[] } {
  const raw = stdout.split('\n').filter((l) => l !== '');
  const lines = raw.map((l) => JSON.parse(l) as Line);
  // Every line of every run is also checked with the lines of the others: a field is mapped once per index.
  gathered.raw.push(...raw);
  gathered.lines.push(...lines);
  return { raw, lines };
}

/** The lines of every run of this file, together. */
const gathered: { lines: Line[]; raw: string[] } = { lines: [], raw: [] };

function assertOneTypePerField(lines: readonly Line[]): void {
  const mixed = [...fieldTypes(lines)].filter(([, m]) => m.size > 1).map(([path, m]) => ({ path, types: Object.fromEntries(m) }));
  assert.deepEqual(mixed, []);
}

function assertErrShape(lines: readonly Line[]): void {
  const bad = lines.filter((l) => {
    if (!('err' in l)) return false;
    const e = l.err as Record<string, unknown> | null;
    if (e === null || typeof e !== 'object' || Array.isArray(e)) return true;
    const keys = Object.keys(e).sort();
    const allowed = keys.every((k) => k === 'type' || k === 'message' || k === 'stack');
    return !allowed || typeof e.type !== 'string' || typeof e.message !== 'string' || (e.stack !== undefined && typeof e.stack !== 'string');
  });
  assert.deepEqual(bad, []);
}

function assertBounded(raw: readonly string[]): void {
  const long = raw.filter((l) => Buffer.byteLength(`${l}\n`) >= LINE_BOUND_BYTES).map((l) => `${Buffer.byteLength(l)} bytes: ${l.slice(0, 200)}`);
  assert.deepEqual(long, []);
}

const LONG_MESSAGE = `Flow run encountered an exception: ValueError: ${'雪 bad row; '.repeat(3_000)}`;

/** `workload(3)` with a failed flow run whose state message is about 40 KB, and an event with a 30 KB name-like payload. */
function busyWorkload(): Workload {
  const w = workload(3);
  const fr = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
  const flow = { flowRunId: fr, flowRunName: `fox-${'n'.repeat(600)}`, flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
  const t0 = Date.parse(w.events[0]!.occurred);
  w.events.push(
    flowRunStateEvent({ ...flow, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 + 100 }),
    customEvent({ event: 'acme.sample.captured', resourceId: 'acme.sample.1', related: [{ id: `prefect.flow-run.${fr}`, role: 'flow-run' }], payload: { sample: 'x'.repeat(30_000) }, occurred: t0 + 200 }),
    flowRunStateEvent({ ...flow, state: { type: 'FAILED', name: `Failed ${'é'.repeat(500)}`, message: LONG_MESSAGE }, from: 'RUNNING', runCount: 1, occurred: t0 + 300 }),
  );
  w.runs.set(fr, 'etl');
  return w;
}

test('watch: a busy run with refused exports, bad frames, reconnects and failing look-ups writes lines of one type per field, each under 16 KiB', async (t) => {
  const w = busyWorkload();
  const prefect = await startFakePrefect();
  // No task run is known: subflow parent look-ups fail (404), and every other REST request answers 500.
  prefect.switches.restFailEvery = 2;
  const longBody = JSON.stringify({ code: 3, message: `bad request ${'z'.repeat(40_000)}` });
  const receiver = await startOtlpReceiver({
    // Refused (400, not retried), then unavailable (503, retried), then taken.
    respond: (n) => (n <= 2 ? { status: 400, body: longBody, headers: { 'content-type': 'application/json' } } : n <= 4 ? 503 : 200),
  });
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const metricsPort = await closedPort();
  const run = startWatch({
    PREFECT_API_URL: prefect.url,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `http://127.0.0.1:${metricsPort}/v1/metrics`,
    OTEL_LOGS_EXPORTER: 'otlp',
    OTEL_METRICS_EXPORTER: 'otlp',
    OTEL_METRIC_EXPORT_INTERVAL: '500',
    PREFECT_OTEL_LOG_LEVEL: 'debug',
    PREFECT_OTEL_TASK_GRACE_MS: '200',
  }, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.sendRaw(`{"not json ${'q'.repeat(40_000)}`);
  prefect.sendRaw(JSON.stringify({ type: 'event', event: { id: 'nope', occurred: 3, event: 7 } }));
  prefect.sendRaw(Buffer.from([0xff, 0xfe, 0x00]), true);
  prefect.publish(w.events.slice(0, 20));
  await until('first events', () => prefect.stats.sent >= 20);
  prefect.dropConnections(1011);
  await until('second subscription', () => prefect.connections.length >= 2 && liveConnections(prefect) === 1, 20_000);
  prefect.publish(w.events.slice(20));
  await receiver.waitForSpans(w.runs.size, 30_000);
  run.child.kill('SIGTERM');
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr);

  const { lines, raw } = parseLines(r.stdout);
  // The run did what it is here for: each kind of line is among them.
  const said = (what: (l: Line) => boolean): boolean => lines.some(what);
  assert.deepEqual(
    {
      stlogging: said((l) => String(l.msg).startsWith('STLOGGING: ')),
      skipped: said((l) => l.msg === 'skipped malformed input'),
      closed: said((l) => String(l.msg).startsWith('event stream closed')),
      refused: said((l) => String(l.msg).startsWith('collector rejected')),
      metrics: said((l) => String(l.msg).startsWith('metrics export failing')),
      stopped: said((l) => l.msg === 'stopped'),
    },
    { stlogging: true, skipped: true, closed: true, refused: true, metrics: true, stopped: true },
  );
  assertOneTypePerField(lines);
  assertErrShape(lines);
  assertBounded(raw);
});

test('replay: bad lines, a refusing collector and a long state message give lines of one type per field, each under 16 KiB', async (t) => {
  const w = busyWorkload();
  const dir = tempDir();
  const file = join(dir, 'events.jsonl');
  writeFileSync(file, [...w.events.map((e) => JSON.stringify(e)), `{"not json ${'q'.repeat(40_000)}`, '[1, 2', JSON.stringify({ id: 'x' })].join('\n'));
  const receiver = await startOtlpReceiver({ respond: () => ({ status: 400, body: JSON.stringify({ code: 3, message: `bad ${'z'.repeat(40_000)}` }), headers: { 'content-type': 'application/json' } }) });
  t.after(() => receiver.close());
  const { result } = startCli(['replay', file], {
    PREFECT_API_URL: `http://127.0.0.1:${await closedPort()}/api`,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_LOGS_EXPORTER: 'otlp',
    PREFECT_OTEL_LOG_LEVEL: 'debug',
    PREFECT_OTEL_STATE_FILE: join(dir, 'state.json'),
  });
  const r = await result;
  assert.equal(r.code, 1, r.stderr);
  const { lines, raw } = parseLines(r.stdout);
  assert.ok(lines.some((l) => String(l.msg).includes(LONG_MESSAGE.slice(0, 200))), 'the long state message is there, cut');
  assertOneTypePerField(lines);
  assertErrShape(lines);
  assertBounded(raw);
});

/** A watch child whose lines are read as they come, killed if the test fails before it ends. */
function watchOf(t: TestContext, env: Record<string, string>): { child: ReturnType<typeof startWatch>['child']; lines: () => Line[]; result: Promise<CliResult> } {
  const run = startWatch(env, t);
  return { child: run.child, lines: follow(run.child), result: run.result };
}

const saidBy = (lines: () => Line[], start: string) => (): boolean => lines().some((l) => String(l.msg).startsWith(start));

test('the rarer lines (standby and lock, state files that cannot be read or written, fatal errors, maintenance, a proxy, the health server, a Prefect profile, replay input) have the types of the busy runs\' lines, each under 16 KiB', { timeout: 90_000 }, async (t) => {
  const w = workload(1);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const guarded = await startFakePrefect({ apiKey: 'pnu_right' });
  const receiver = await startOtlpReceiver();
  const busyPort = createServer();
  await new Promise<void>((r) => busyPort.listen(0, '127.0.0.1', r));
  t.after(async () => {
    busyPort.close();
    await receiver.close();
    await guarded.close();
    await prefect.close();
  });
  const down = `http://127.0.0.1:${await closedPort()}`;
  const base = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_LOG_LEVEL: 'debug' };
  const outputs: Promise<CliResult>[] = [];

  // Fatal at start: a state file under a regular file (exit 2), a refused API key (exit 3), a health port taken (exit 1).
  const dir = tempDir();
  writeFileSync(join(dir, 'file'), '');
  outputs.push(startWatch({ ...base, PREFECT_OTEL_STATE_FILE: join(dir, 'file', 'state.json') }, t).result);
  outputs.push(startWatch({ ...base, PREFECT_API_URL: guarded.url, PREFECT_API_KEY: 'pnu_wrong' }, t).result);
  outputs.push(startWatch({ ...base, PREFECT_OTEL_HTTP_PORT: String((busyPort.address() as { port: number }).port) }, t).result);
  // The right key, and the auth message answered in no Prefect form: refused too (exit 3).
  guarded.switches.authReplies = ['{"type":"hello"}'];
  outputs.push(startWatch({ ...base, PREFECT_API_URL: guarded.url, PREFECT_API_KEY: 'pnu_right' }, t).result);
  // A Prefect profiles file that is not TOML, and a proxy that is not there: warnings, then retries.
  const home = tempDir();
  mkdirSync(join(home, '.prefect'));
  writeFileSync(join(home, '.prefect', 'profiles.toml'), 'active = "cloud"\n[profiles.cloud\n');
  // Its state file of a newer format, its journal a directory.
  const newer = join(tempDir(), 'state.json');
  writeFileSync(newer, '{"version":99}');
  mkdirSync(`${newer}.journal`);
  const proxied = watchOf(t, { ...base, HOME: home, HTTP_PROXY: down, PREFECT_OTEL_HTTP_PORT: '0', PREFECT_OTEL_STATE_FILE: newer });
  // A state file that is not JSON: moved aside.
  const unreadable = join(tempDir(), 'state.json');
  writeFileSync(unreadable, '{"version":2,"tracker":');
  // Replay: bad lines, a `prefect events stream` error in the middle, a last event cut short.
  const events = w.events.map((e) => JSON.stringify(e));
  const gz = join(tempDir(), 'events.jsonl.gz');
  writeFileSync(gz, gzipSync(`${events.join('\n')}\n`));
  outputs.push(startCli(['replay', gz], base).result);
  outputs.push(startCli(['replay', '-'], { ...base, PREFECT_API_URL: down }, [events[0], 'An unexpected error occurred: server rejected WebSocket connection: HTTP 502', ...events.slice(1), '[1,', events[0]!.slice(0, 40)].join('\n')).result);

  // A holder, a standby beside it; the holder killed: the standby takes over from a process that no longer runs.
  const state = join(tempDir(), 'state.json');
  const holder = watchOf(t, { ...base, PREFECT_OTEL_STATE_FILE: state });
  await until('subscription', () => liveConnections(prefect) === 1);
  const standby = watchOf(t, { ...base, PREFECT_OTEL_STATE_FILE: state, PREFECT_OTEL_HTTP_PORT: '0' });
  await until('standby', saidBy(standby.lines, 'standby:'));
  holder.child.kill('SIGKILL');
  await holder.result;
  await until('taken over', saidBy(standby.lines, 'took over the state file'));
  // A third on the same file waits, and is stopped while it does.
  const third = watchOf(t, { ...base, PREFECT_OTEL_STATE_FILE: state });
  await until('second standby', saidBy(third.lines, 'standby:'));
  third.child.kill('SIGTERM');
  outputs.push(third.result);

  // Maintenance on the upgrade, then over; the state file and journal moved aside.
  prefect.switches.maintenance = true;
  prefect.switches.restStatus = 503;
  prefect.switches.restRetryAfter = '1';
  const resumed = watchOf(t, { ...base, PREFECT_OTEL_STATE_FILE: unreadable, PREFECT_OTEL_STATS_INTERVAL_MS: '100' });
  await until('maintenance', saidBy(resumed.lines, 'the Prefect API is down for maintenance'), 20_000);
  prefect.switches.maintenance = false;
  prefect.switches.restStatus = 0;
  prefect.switches.restRetryAfter = undefined;
  await until('resumed', saidBy(resumed.lines, 'connected to the Prefect event stream'), 20_000);

  // The collector down and the state file's directory made a file: the spans lost at SIGTERM are said.
  const lostDir = tempDir();
  const lost = watchOf(t, { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: down, PREFECT_OTEL_STATE_FILE: join(lostDir, 'file', 'state.json'), PREFECT_OTEL_STATS_INTERVAL_MS: '50' });
  await until('subscription', saidBy(lost.lines, 'connected to the Prefect event stream'));
  renameSync(join(lostDir, 'file'), join(lostDir, 'moved'));
  writeFileSync(join(lostDir, 'file'), '');
  prefect.publish(w.events);
  const finished = (): boolean => lost.lines().some((l) => l.msg === 'stats' && (l.spans as { finished: number }).finished === w.runs.size);
  await until('every span built', finished, 15_000);
  await until('a save failed', saidBy(lost.lines, 'could not write the state file'));
  for (const c of [lost, resumed, standby, proxied]) c.child.kill('SIGTERM');
  outputs.push(lost.result, resumed.result, standby.result, proxied.result);

  const results = await Promise.all(outputs);
  assert.deepEqual(results.map((r) => r.code), [2, 3, 1, 3, 1, 0, 0, 1, 0, 0, 0], results.map((r) => r.stderr).join('\n'));
  const all: Line[] = [];
  const raw: string[] = [];
  for (const r of results) {
    const parsed = parseLines(r.stdout);
    all.push(...parsed.lines);
    raw.push(...parsed.raw);
  }
  // Each run said what it is here for.
  const wanted = [
    'standby:', 'took over the state file from a process of this host that no longer runs', 'shutting down a standby', 'state file unreadable', 'state journal unreadable',
    'state file written by a newer prefect-otel', 'could not write the state file', `${w.runs.size} spans the collector has not taken could not be kept`,
    'the Prefect API is down for maintenance', 'serving /healthz', 'the Prefect profiles file', 'stopped', '`prefect events stream` stopped here',
  ];
  assert.deepEqual(wanted.filter((start) => !all.some((l) => String(l.msg).startsWith(start))), []);
  assert.ok(all.filter((l) => l.level === 60).length >= 3, 'the fatal lines are among them');
  assert.ok(all.some((l) => String((l.err as { message?: string } | undefined)?.message).startsWith('the proxy ')), 'a proxy that is not there is said');
  assertOneTypePerField(gathered.lines);
  assertErrShape(gathered.lines);
  assertBounded(gathered.raw);
});
