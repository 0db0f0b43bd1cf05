/**
 * The STLOGGING lines as a user reads them (SPEC §4): whole lines of a replayed workload, in both
 * log formats, each with the trace and span ids of the span it belongs to.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { startCli, type CliResult } from '../helpers/cli.js';
import { liveConnections, startServers, startWatch, tempDir, until, workload as watchWorkload, type LogLine } from '../helpers/watch-e2e.js';
import { follow, stlogging, watchUntilEachLogged } from '../helpers/watch-processes.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { customEvent, flowRunStateEvent, taskRunStateEvent, type State } from '../helpers/prefect-events.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const SUBFLOW = { flowId: '6a1f0c7e-2222-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'quality-checks' };
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TA = '0198c7d2-6000-7abc-8def-00000000000a';
const TB = '0198c7d2-6000-7abc-8def-00000000000b';
const TS = '0198c7d2-6000-7abc-8def-00000000000c';
const SF = '0198c7d2-7000-7abc-8def-00000000000d';
const TL = '0198c7d2-6000-7abc-8def-00000000000e';
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
const TRACE = traceIdForRun(FR);

function id(n: number): string {
  return `0198c7d2-eeee-7000-8000-${String(n).padStart(12, '0')}`;
}

function flow(n: number, at: number, state: State, from: string | null, runCount: number): string {
  return JSON.stringify(flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state, from, runCount, occurred: T0 + at, id: id(n) }));
}

function task(n: number, run: string, name: string, at: number, state: State, from: string | null, runCount: number, parents: string[] = []): string {
  return JSON.stringify(taskRunStateEvent({ taskRunId: run, taskRunName: name, taskKey: `${name}-9a8b7c6d`, flowRunId: FR, ...FLOW, state, from, runCount, parents, occurred: T0 + at, id: id(n) }));
}

function cli(args: string[], env: Record<string, string>, input: string): Promise<CliResult> {
  return startCli(args, { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'info', ...env }, input).result;
}

type Line = Record<string, unknown>;

function stLines(stdout: string): Line[] {
  return stdout.split('\n').filter((l) => l.includes('STLOGGING: ')).map((l) => JSON.parse(l) as Line);
}

/** A run name that tries to end its line, forge another and drive the terminal. */
const HOSTILE_NAME = 'load\u001b[31m\n{"level":30,"msg":"STLOGGING: forged"}\r\u0085\u009b2J';
const HOSTILE_MESSAGE = 'KeyError: \'row\'\nTraceback "x" \\ é 雪 🚀 \u001b[2J\u2028';

/**
 * A flow run with a nested task, a subflow, a task retried with a hostile failure message, an
 * attached event, a duplicate and a reordered pair, a task finished after its span was ended
 * incomplete (late) and a rerun of the flow run from the UI.
 */
function workload(): string[] {
  const subflow = (n: number, at: number, state: State, from: string | null) =>
    JSON.stringify(flowRunStateEvent({ flowRunId: SF, flowRunName: 'quiet-owl', ...SUBFLOW, parentTaskRunId: TS, parentTaskRunName: 'quality-checks-0', state, from, runCount: 1, occurred: T0 + at, id: id(n) }));
  const tbCompleted = task(7, TB, 'transform', 500, { type: 'COMPLETED', name: 'Completed' }, 'RUNNING', 1, [TA]);
  const taRetrying = task(13, TA, 'extract', 1100, { type: 'RUNNING', name: 'Retrying' }, 'SCHEDULED', 2);
  return [
    flow(1, 0, { type: 'PENDING', name: 'Pending' }, null, 0),
    flow(2, 100, { type: 'RUNNING', name: 'Running' }, 'PENDING', 1),
    task(3, TA, 'extract', 200, { type: 'PENDING', name: 'Pending' }, null, 0),
    task(4, TA, 'extract', 300, { type: 'RUNNING', name: 'Running' }, 'PENDING', 1),
    // Reordered: the nested task's end before its start.
    tbCompleted,
    task(6, TB, 'transform', 400, { type: 'RUNNING', name: 'Running' }, 'PENDING', 1, [TA]),
    task(8, TS, 'quality-checks-0', 600, { type: 'RUNNING', name: 'Running' }, 'PENDING', 1),
    subflow(9, 700, { type: 'RUNNING', name: 'Running' }, 'PENDING'),
    subflow(10, 800, { type: 'COMPLETED', name: 'Completed' }, 'RUNNING'),
    task(11, TS, 'quality-checks-0', 900, { type: 'COMPLETED', name: 'Completed' }, 'RUNNING', 1),
    task(12, TA, 'extract', 1000, { type: 'SCHEDULED', name: 'AwaitingRetry', message: HOSTILE_MESSAGE }, 'RUNNING', 1),
    taRetrying,
    taRetrying, // a duplicate
    JSON.stringify(customEvent({ event: 'prefect.concurrency-limit.acquired', resourceId: 'prefect.concurrency-limit.3c1d', resourceName: 'db', related: [{ id: `prefect.task-run.${TA}`, role: 'task-run' }, { id: `prefect.flow-run.${FR}`, role: 'flow-run' }], occurred: T0 + 1150, id: id(14) })),
    task(15, TA, 'extract', 1200, { type: 'COMPLETED', name: 'Custom "Done"' }, 'RUNNING', 2),
    task(16, TL, HOSTILE_NAME, 1500, { type: 'RUNNING', name: 'Running' }, 'PENDING', 1),
    task(17, TL, HOSTILE_NAME, 1600, { type: 'COMPLETED', name: 'Completed' }, 'RUNNING', 1),
    flow(18, 2000, { type: 'COMPLETED', name: 'Completed' }, 'RUNNING', 1),
    // Two minutes after the task's span was exported.
    JSON.stringify(customEvent({ event: 'prefect.concurrency-limit.released', resourceId: 'prefect.concurrency-limit.3c1d', resourceName: 'db', related: [{ id: `prefect.task-run.${TA}`, role: 'task-run' }, { id: `prefect.flow-run.${FR}`, role: 'flow-run' }], occurred: T0 + 120_000, id: id(22) })),
    // Rerun from the UI.
    flow(19, 300_000, { type: 'SCHEDULED', name: 'Scheduled' }, 'COMPLETED', 1),
    flow(20, 301_000, { type: 'RUNNING', name: 'Running' }, 'SCHEDULED', 2),
    flow(21, 302_000, { type: 'COMPLETED', name: 'Completed' }, 'RUNNING', 2),
  ];
}

const JAEGER = 'http://localhost:16686';
const SPAN = { FR: spanIdForRun(FR), FR1: spanIdForRun(FR, 1), TA: spanIdForRun(TA), TB: spanIdForRun(TB), TS: spanIdForRun(TS), SF: spanIdForRun(SF), TL: spanIdForRun(TL) };
type Run = { id: string; type: 'flow' | 'task'; name: string; span: string };
const RUNS = {
  FR: { id: FR, type: 'flow', name: 'crimson-fox', span: SPAN.FR },
  FR1: { id: FR, type: 'flow', name: 'crimson-fox', span: SPAN.FR1 },
  TA: { id: TA, type: 'task', name: 'extract', span: SPAN.TA },
  TB: { id: TB, type: 'task', name: 'transform', span: SPAN.TB },
  TS: { id: TS, type: 'task', name: 'quality-checks-0', span: SPAN.TS },
  SF: { id: SF, type: 'flow', name: 'quiet-owl', span: SPAN.SF },
  TL: { id: TL, type: 'task', name: HOSTILE_NAME, span: SPAN.TL },
} satisfies Record<string, Run>;
const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED']);

/** The whole line (but its write time) for a state transition: `n` the event's number, `at` its time. */
function transition(n: number, run: Run, at: number, from: string, type: string, name: string, message = ''): Line {
  const word = run.type === 'flow' ? 'Flow run' : 'Task run';
  return {
    ...head(n, run, at, `prefect.${run.type}-run.${name}`),
    'prefect.state.type': type,
    'prefect.state.name': name,
    ...(TERMINAL.has(type) ? { jaeger_url: `${JAEGER}/trace/${TRACE}` } : {}),
    msg: `STLOGGING: ${word} ${run.id} (${run.name}) state transition: ${from} -> ${type} (state_name='${name}', message='${message}')`,
  };
}

/** The whole line (but its write time) for an event attached to a run. */
function attached(n: number, run: Run, at: number, name: string, late = false): Line {
  return {
    ...(late ? { ...head(n, run, at, name), level: 40, late: true } : head(n, run, at, name)),
    msg: `STLOGGING: Event ${name} (id=${id(n)}) on ${run.type} run ${run.id}${late ? ' (late: its span was already exported)' : ''}`,
  };
}

function head(n: number, run: Run, at: number, eventName: string): Line {
  return {
    level: 30, time: 'write time', service: 'prefect-otel', component: 'runs',
    trace_id: TRACE, span_id: run.span, trace_flags: '01',
    'prefect.run.id': run.id, 'prefect.run.type': run.type, 'prefect.event.id': id(n), 'prefect.event.name': eventName,
    occurred: new Date(T0 + at).toISOString().replace('Z', '000Z'), 'prefect.run.name': run.name,
  };
}

/** Every STLOGGING line of `workload()`, in the order written: one per event, the duplicate once. */
const EXPECTED: Line[] = [
  transition(1, RUNS.FR, 0, 'None', 'PENDING', 'Pending'),
  transition(2, RUNS.FR, 100, 'PENDING', 'RUNNING', 'Running'),
  transition(3, RUNS.TA, 200, 'None', 'PENDING', 'Pending'),
  transition(4, RUNS.TA, 300, 'PENDING', 'RUNNING', 'Running'),
  transition(7, RUNS.TB, 500, 'RUNNING', 'COMPLETED', 'Completed'),
  transition(6, RUNS.TB, 400, 'PENDING', 'RUNNING', 'Running'),
  transition(8, RUNS.TS, 600, 'PENDING', 'RUNNING', 'Running'),
  transition(9, RUNS.SF, 700, 'PENDING', 'RUNNING', 'Running'),
  transition(10, RUNS.SF, 800, 'RUNNING', 'COMPLETED', 'Completed'),
  transition(11, RUNS.TS, 900, 'RUNNING', 'COMPLETED', 'Completed'),
  transition(12, RUNS.TA, 1000, 'RUNNING', 'SCHEDULED', 'AwaitingRetry', 'KeyError: \\\'row\\\'\\nTraceback "x" \\\\ é 雪 🚀 \\x1b[2J\\u2028'),
  transition(13, RUNS.TA, 1100, 'SCHEDULED', 'RUNNING', 'Retrying'),
  attached(14, RUNS.TA, 1150, 'prefect.concurrency-limit.acquired'),
  transition(15, RUNS.TA, 1200, 'RUNNING', 'COMPLETED', 'Custom "Done"'),
  transition(16, RUNS.TL, 1500, 'PENDING', 'RUNNING', 'Running'),
  transition(17, RUNS.TL, 1600, 'RUNNING', 'COMPLETED', 'Completed'),
  transition(18, RUNS.FR, 2000, 'RUNNING', 'COMPLETED', 'Completed'),
  attached(22, RUNS.TA, 120_000, 'prefect.concurrency-limit.released', true),
  transition(19, RUNS.FR1, 300_000, 'COMPLETED', 'SCHEDULED', 'Scheduled'),
  transition(20, RUNS.FR1, 301_000, 'SCHEDULED', 'RUNNING', 'Running'),
  transition(21, RUNS.FR1, 302_000, 'RUNNING', 'COMPLETED', 'Completed'),
];

test('replay: one whole STLOGGING line per transition and attached event, once each, with the trace and span ids of the span exported for its run attempt and the same record over OTLP', async () => {
  const receiver = await startOtlpReceiver();
  const before = Date.now();
  const r = await cli(['replay', '-'], { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_LOGS_EXPORTER: 'otlp', PREFECT_OTEL_JAEGER_URL: JAEGER }, `${workload().join('\n')}\n`);
  const after = Date.now();
  assert.equal(r.code, 0, r.stderr);
  const lines = stLines(r.stdout);
  // `time` is when the line was written (pino's epoch ms), `occurred` when the event happened.
  for (const l of lines) assert.ok(typeof l.time === 'number' && l.time >= before && l.time <= after, `write time ${String(l.time)}`);
  assert.deepEqual(lines.map((l) => ({ ...l, time: 'write time' })), EXPECTED);
  // Every line names the span of its run attempt: same trace, same span id, same run.
  const spans = new Map(receiver.spans().map((s) => [s.spanId, s]));
  assert.equal(spans.size, 7);
  assert.deepEqual(
    lines.map((l) => { const s = spans.get(l.span_id as string); return [s?.traceId, s?.attributes['prefect.run.id']]; }),
    lines.map((l) => [l.trace_id, l['prefect.run.id']]),
  );
  // The OTLP log records are the same records: body, trace context, severity, event time.
  assert.deepEqual(
    receiver.logs().map((g) => [g.traceId, g.spanId, g.severityText, g.body, g.timeUnixNano, g.attributes['prefect.event.id']]),
    lines.map((l) => [l.trace_id, l.span_id, l.level === 40 ? 'WARN' : 'INFO', l.msg, `${Date.parse(l.occurred as string)}000000`, l['prefect.event.id']]),
  );
  await receiver.close();
});

/** A line as `PREFECT_OTEL_LOG_FORMAT=pretty` writes it: `HH:MM:SS.mmm LEVEL message  key=value …`, controls escaped. */
function pretty(line: Line): string {
  const { level, msg, time: _time, service: _service, ...rest } = line;
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${String(v)}`).join(' ');
  return `TIME ${level === 40 ? 'WARN ' : 'INFO '} ${String(msg)}  ${fields}`;
}

test('replay in --log-format pretty: each STLOGGING record is one whole line, control characters from run names and state messages escaped, none forging a line', async () => {
  const r = await cli(['replay', '-', '--log-format', 'pretty'], { OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_JAEGER_URL: JAEGER }, `${workload().join('\n')}\n`);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout.split('\n');
  assert.ok(out.every((l) => !/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(l)), 'no control character reaches the terminal');
  assert.deepEqual(out.filter((l) => /^\d\d:\d\d:\d\d\.\d{3} /.test(l) && l.includes(' STLOGGING: ')).map((l) => l.replace(/^\d\d:\d\d:\d\d\.\d{3}/, 'TIME')), EXPECTED.map((l) => escapeForTerminal(pretty(l))));
  assert.ok(!out.some((l) => l.startsWith('{') || l.startsWith('STLOGGING')), 'no line forged');
});

function escapeForTerminal(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => ({ '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c] ?? (c.charCodeAt(0) <= 0xff ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

test('watch across a restart: the lines of runs restored from the state file, of a late event after their span was exported and of a rerun carry the ids of the spans exported for them; each event is logged once', async (t) => {
  const w = watchWorkload(2);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') };
  // The first flow run's first task, which a late event names below: finished before the restart,
  // so that its name and span come from the state file; its flow run and the rest are still open.
  const fr = w.events[0]!.resource['prefect.resource.id']!.slice('prefect.flow-run.'.length);
  const extract = w.events.find((e) => e.resource['prefect.resource.name'] === 'extract-3f2')!.resource['prefect.resource.id']!.slice('prefect.task-run.'.length);
  const cut = w.events.findIndex((e) => e.resource['prefect.resource.id'] === `prefect.task-run.${extract}` && e.resource['prefect.state-type'] === 'COMPLETED') + 1;
  const firstLines = await watchUntilEachLogged(t, prefect, env, w.events.slice(0, cut));

  const second = startWatch(env, t);
  const secondLines = follow(second.child);
  await until('subscription', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
  prefect.publish(w.events.slice(cut));
  await receiver.waitForSpans(w.runs.size);
  // An event on that task after its span went out; then the flow run rerun from the UI.
  const last = Date.parse(w.events.at(-1)!.occurred);
  const late = customEvent({ event: 'acme.rows.audited', resourceId: 'acme.table.rows-0', related: [{ id: `prefect.task-run.${extract}`, role: 'task-run' }, { id: `prefect.flow-run.${fr}`, role: 'flow-run' }], occurred: last + 100 });
  const flowAgain = (s: number, type: string, name: string, from: string, runCount: number) =>
    flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox-0', flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl', state: { type, name }, from, runCount, occurred: last + s * 1000 });
  const rerun = [flowAgain(1, 'SCHEDULED', 'Scheduled', 'COMPLETED', 1), flowAgain(2, 'RUNNING', 'Running', 'SCHEDULED', 2), flowAgain(3, 'COMPLETED', 'Completed', 'RUNNING', 2)];
  prefect.publish([late, ...rerun]);
  await receiver.waitForSpans(w.runs.size + 1);
  await until('every event taken', () => stlogging(secondLines()).length === w.events.length - cut + 4);
  second.child.kill('SIGTERM');
  assert.equal((await second.result).code, 0);

  const lines: LogLine[] = [...stlogging(firstLines()), ...stlogging(secondLines())];
  assert.deepEqual(lines.map((l) => l['prefect.event.id']).sort(), [...w.events, late, ...rerun].map((e) => e.id).sort(), 'each event logged once');
  const spans = new Map(receiver.spans().map((s) => [s.spanId, s]));
  assert.equal(spans.size, w.runs.size + 1);
  assert.deepEqual(
    lines.map((l) => { const s = spans.get(l.span_id as string); return [s?.traceId, s?.attributes['prefect.run.id'], s?.attributes['prefect.run.name']]; }),
    lines.map((l) => [l.trace_id, l['prefect.run.id'], l['prefect.run.name']]),
  );
  const { time: _time, ...lateLine } = stlogging(secondLines()).find((l) => l['prefect.event.id'] === late.id)!;
  assert.deepEqual(lateLine, {
    level: 40, service: 'prefect-otel', component: 'runs', trace_id: traceIdForRun(fr), span_id: spanIdForRun(extract), trace_flags: '01',
    'prefect.run.id': extract, 'prefect.run.type': 'task', 'prefect.event.id': late.id, 'prefect.event.name': 'acme.rows.audited',
    occurred: new Date(last + 100).toISOString().replace('Z', '000Z'), 'prefect.run.name': 'extract-3f2', late: true,
    msg: `STLOGGING: Event acme.rows.audited (id=${late.id}) on task run ${extract} (late: its span was already exported)`,
  });
  assert.deepEqual(stlogging(secondLines()).filter((l) => rerun.some((e) => e.id === l['prefect.event.id'])).map((l) => [l.span_id, l.msg]), [
    [spanIdForRun(fr, 1), `STLOGGING: Flow run ${fr} (crimson-fox-0) state transition: COMPLETED -> SCHEDULED (state_name='Scheduled', message='')`],
    [spanIdForRun(fr, 1), `STLOGGING: Flow run ${fr} (crimson-fox-0) state transition: SCHEDULED -> RUNNING (state_name='Running', message='')`],
    [spanIdForRun(fr, 1), `STLOGGING: Flow run ${fr} (crimson-fox-0) state transition: RUNNING -> COMPLETED (state_name='Completed', message='')`],
  ]);
});

/**
 * A value's type as a log store maps it (Elasticsearch/OpenSearch dynamic mapping): an array is the
 * type of its items, every number one type, null nothing; an object's keys are fields of their own.
 */
function fieldTypes(line: LogLine, out: Map<string, Map<string, string>>, prefix = ''): void {
  for (const [k, v] of Object.entries(line)) {
    const key = `${prefix}${k}`;
    const item: unknown = Array.isArray(v) ? v[0] : v;
    if (item === null || item === undefined) continue;
    const type = typeof item === 'object' ? 'object' : typeof item;
    const seen = out.get(key) ?? new Map<string, string>();
    if (!seen.has(type)) seen.set(type, String(line.msg));
    out.set(key, seen);
    if (type === 'object' && !Array.isArray(v)) fieldTypes(v as LogLine, out, `${key}.`);
  }
}

test('every key of the lines watch writes keeps one JSON type across lines (a log store maps a field once and turns away lines that disagree): connect, event history read after a restart, STLOGGING, stats and the last line', async (t) => {
  // Runs of 14 minutes ago, in the websocket's 15-minute backfill; the restart resumes 20 minutes
  // before the last event it saw, past that backfill: it reads the event history.
  const w = watchWorkload(2, Date.now() - 14 * 60_000);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), PREFECT_OTEL_RESUME_MARGIN_MS: String(20 * 60_000), PREFECT_OTEL_STATS_INTERVAL_MS: '200' };
  const half = Math.floor(w.events.length / 2);
  const lines: LogLine[] = [];
  for (const part of [w.events.slice(0, half), w.events.slice(half)]) {
    prefect.store(part);
    const run = startWatch(env, t);
    const out = follow(run.child);
    await until('every event taken', () => stlogging(out()).length === part.length);
    await until('a stats line', () => out().some((l) => l.msg === 'stats'));
    run.child.kill('SIGTERM');
    assert.equal((await run.result).code, 0);
    lines.push(...out());
  }
  await receiver.waitForSpans(w.runs.size);

  const said = new Set(lines.map((l) => l.msg));
  for (const msg of ['connected to the Prefect event stream', 'event history read', 'stats', 'stopped']) assert.ok(said.has(msg), `a line "${msg}"`);
  const types = new Map<string, Map<string, string>>();
  for (const line of lines) fieldTypes(line, types);
  const mixed = [...types].filter(([, seen]) => seen.size > 1).map(([key, seen]) => `${key}: ${[...seen].map(([type, msg]) => `${type} in "${msg}"`).join(', ')}`);
  assert.deepEqual(mixed, []);
});
