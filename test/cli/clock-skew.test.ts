import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { startCli, type CliResult } from '../helpers/cli.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { customEvent, flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';
import { startServers, startWatch, tempDir, until } from '../helpers/watch-e2e.js';

/*
 * Prefect stamps a flow run's states with the clock of the API server that set them
 * (`EnsureFlowRunStateTimestampIsUnique` in src/prefect/server/orchestration/global_policy.py) and
 * links each to the one before with `follows` when they are less than 5 minutes apart, in either
 * direction (`_timing_is_tight`, src/prefect/server/models/events.py). Behind a load balancer (Prefect
 * Cloud, a self-hosted server with several API replicas), two servers whose clocks disagree by a few
 * milliseconds stamp a short run's terminal state before its Running.
 */

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const X = '0198c7d2-5b1e-7a3c-9f10-0000000000a1';
const T0 = Date.UTC(2026, 7, 21, 12, 0, 0);
const PENDING_ID = '0198c7d2-aaaa-7000-8000-000000000001';
const RUNNING_ID = '0198c7d2-aaaa-7000-8000-000000000002';
const END_ID = '0198c7d2-aaaa-7000-8000-000000000003';

function flowState(type: string, name: string, from: string | null, atMs: number, id: string, follows: string | null, receivedMs: number, message?: string): WireEvent {
  return flowRunStateEvent({ flowRunId: X, flowRunName: 'x', ...FLOW, state: { type, name, ...(message === undefined ? {} : { message }) }, from, runCount: 1, occurred: atMs, id, follows, received: receivedMs });
}

/** Pending; Running stamped 5 s late by one server; Completed, which follows it, stamped 2 s in by another. */
function skewedRun(t0: number): { pending: WireEvent; running: WireEvent; completed: WireEvent } {
  return {
    pending: flowState('PENDING', 'Pending', null, t0, PENDING_ID, null, t0 + 20),
    running: flowState('RUNNING', 'Running', 'PENDING', t0 + 5_000, RUNNING_ID, PENDING_ID, t0 + 1_020),
    completed: flowState('COMPLETED', 'Completed', 'RUNNING', t0 + 2_000, END_ID, RUNNING_ID, t0 + 3_020),
  };
}

async function replay(events: WireEvent[], env: Record<string, string> = {}): Promise<{ r: CliResult; spans: ReceivedSpan[] }> {
  const receiver = await startOtlpReceiver();
  const input = `${events.map((e) => JSON.stringify(e)).join('\n')}\n`;
  const r = await startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ...env }, input).result;
  const spans = receiver.spans();
  await receiver.close();
  return { r, spans };
}

/** The run counters of the last stats line. */
function runCounts(stdout: string): { opened: number; incomplete: number; reruns: number; lateEvents: number } {
  const stats = stdout.split('\n').filter((l) => l.includes('"component":"stats"') || l.includes('"msg":"stopped"')).map((l) => JSON.parse(l) as { runs: { opened: number; incomplete: number; reruns: number; lateEvents: number } });
  const { opened, incomplete, reruns, lateEvents } = stats.at(-1)!.runs;
  return { opened, incomplete, reruns, lateEvents };
}

const ns = (ms: number): string => `${ms}000000`;

/** A span as a whole but for its resource and scope; events as name, time and state type. */
function whole(s: ReceivedSpan): Record<string, unknown> {
  return {
    traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId, name: s.name, kind: s.kind, status: s.status,
    start: s.startTimeUnixNano, end: s.endTimeUnixNano, links: s.links, attributes: s.attributes,
    events: s.events.map((e) => [e.name, e.timeUnixNano, e.attributes['prefect.state.type'], e.attributes['prefect.state.id']]),
  };
}

const COMPLETED_ATTRIBUTES = {
  'prefect.run.id': X,
  'prefect.run.type': 'flow',
  'prefect.run.name': 'x',
  'prefect.run.count': 1,
  'prefect.state.type': 'COMPLETED',
  'prefect.state.name': 'Completed',
  'prefect.tags': [],
  'prefect.flow.name': 'etl',
  'prefect.flow.id': FLOW.flowId,
  'cicd.pipeline.name': 'etl',
  'cicd.pipeline.run.id': X,
  'cicd.pipeline.result': 'success',
};

const ONE_COMPLETED_SPAN = {
  traceId: traceIdForRun(X), spanId: spanIdForRun(X), parentSpanId: undefined, name: 'etl', kind: 2, status: { code: 1 },
  start: ns(T0), end: ns(T0 + 2_000), links: [], attributes: COMPLETED_ATTRIBUTES,
  events: [
    ['Pending', ns(T0), 'PENDING', PENDING_ID],
    ['Completed', ns(T0 + 2_000), 'COMPLETED', END_ID],
    ['Running', ns(T0 + 5_000), 'RUNNING', RUNNING_ID],
  ],
};

for (const [order, pick] of [
  ['as they were set', (e: ReturnType<typeof skewedRun>) => [e.pending, e.running, e.completed]],
  ['the terminal state first', (e: ReturnType<typeof skewedRun>) => [e.pending, e.completed, e.running]],
] as const) {
  test(`replay: a terminal state stamped before the Running it follows (servers whose clocks disagree), ${order}, ends the same attempt: one span, Completed, no rerun`, async () => {
    const { r, spans } = await replay(pick(skewedRun(T0)));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^spans: 1 exported$/m);
    assert.deepEqual(runCounts(r.stdout), { opened: 1, incomplete: 0, reruns: 0, lateEvents: 0 });
    assert.deepEqual(spans.map(whole), [ONE_COMPLETED_SPAN]);
  });
}

test('replay: a Crashed stamped before the Running it follows, with no Pending: one span, never ending before it starts', async () => {
  const running = flowState('RUNNING', 'Running', 'PENDING', T0 + 5_000, RUNNING_ID, null, T0 + 1_020);
  const crashed = flowState('CRASHED', 'Crashed', 'RUNNING', T0 + 2_000, END_ID, RUNNING_ID, T0 + 3_020, 'Flow run infrastructure exited with non-zero status code 137.');
  const { r, spans } = await replay([running, crashed]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(runCounts(r.stdout), { opened: 1, incomplete: 0, reruns: 0, lateEvents: 0 });
  assert.deepEqual(spans.map(whole), [{
    traceId: traceIdForRun(X), spanId: spanIdForRun(X), parentSpanId: undefined, name: 'etl', kind: 2,
    status: { code: 2, message: 'Flow run infrastructure exited with non-zero status code 137.' },
    start: ns(T0 + 5_000), end: ns(T0 + 5_000), links: [],
    attributes: { ...COMPLETED_ATTRIBUTES, 'prefect.state.type': 'CRASHED', 'prefect.state.name': 'Crashed', 'cicd.pipeline.result': 'error', 'error.type': 'Crashed' },
    events: [
      ['Crashed', ns(T0 + 2_000), 'CRASHED', END_ID],
      ['Running', ns(T0 + 5_000), 'RUNNING', RUNNING_ID],
    ],
  }]);
});

test('watch: the Running a terminal state follows, stamped after it and arriving once its span is out, is a late line of that span, not a rerun', async (t) => {
  const { prefect, receiver } = await startServers(t);
  const run = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') }, t);
  await until('subscription', () => prefect.connections.some((c) => c.live));
  let out = '';
  run.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const t0 = Date.now() - 30_000;
  const e = skewedRun(t0);
  prefect.publish([e.pending, e.completed]);
  await receiver.waitForSpans(1);
  prefect.publish(e.running);
  await until('the late Running logged', () => out.includes(`"prefect.event.id":"${RUNNING_ID}"`) && out.includes('"kind":"late_event"'));
  await new Promise((r) => setTimeout(r, 500));
  run.child.kill('SIGTERM');
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(runCounts(r.stdout), { opened: 1, incomplete: 0, reruns: 0, lateEvents: 1 });
  const spans = receiver.spans();
  assert.deepEqual(spans.map((s) => [s.spanId, s.startTimeUnixNano, s.endTimeUnixNano, s.attributes['prefect.state.type'], s.events.map((ev) => ev.name)]), [
    [spanIdForRun(X), ns(t0), ns(t0 + 2_000), 'COMPLETED', ['Pending', 'Completed']],
  ]);
  const line = JSON.parse(r.stdout.split('\n').find((l) => l.includes('STLOGGING') && l.includes(RUNNING_ID))!) as Record<string, unknown>;
  assert.deepEqual([line.late, line.span_id, line.trace_id], [true, spanIdForRun(X), traceIdForRun(X)]);
});

test('replay: the Running a task run\'s terminal state follows, stamped after it, sent again once its id was forgotten and its span is out: a late line, not a rerun', async () => {
  const T = '0198c7d2-5b1e-7a3c-9f10-0000000000b1';
  const task = (type: string, name: string, from: string | null, atMs: number, id: string, follows: string | null): WireEvent =>
    taskRunStateEvent({ taskRunId: T, taskRunName: 'extract-0', taskKey: 'extract-9a8b7c6d', state: { type, name }, from, runCount: 1, occurred: atMs, id, follows, received: atMs + 20 });
  const running = task('RUNNING', 'Running', 'PENDING', T0 + 5_000, RUNNING_ID, PENDING_ID);
  // More ids than PREFECT_OTEL_DEDUPE_MAX_IDS since: the copy of the Running is not a duplicate any more.
  const others = Array.from({ length: 1_000 }, (_, i) => customEvent({ event: 'acme.tick', resourceId: `acme.tick.${i}`, related: [], occurred: T0 + 6_000 + i, id: `0198c7d2-bbbb-7000-8000-${String(i).padStart(12, '0')}` }));
  // A state of another run 10 s on: time moves past the task's settle window, and its span goes out.
  const later = flowRunStateEvent({ flowRunId: '0198c7d2-5b1e-7a3c-9f10-0000000000c1', flowRunName: 'y', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: T0 + 20_000, id: '0198c7d2-cccc-7000-8000-000000000001' });
  const { r, spans } = await replay([
    task('PENDING', 'Pending', null, T0, PENDING_ID, null),
    running,
    task('COMPLETED', 'Completed', 'RUNNING', T0 + 2_000, END_ID, RUNNING_ID),
    ...others,
    later,
    running,
  ], { PREFECT_OTEL_DEDUPE_MAX_IDS: '1000' });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(runCounts(r.stdout), { opened: 2, incomplete: 0, reruns: 0, lateEvents: 1 });
  assert.deepEqual(spans.filter((s) => s.attributes['prefect.run.id'] === T).map((s) => [s.spanId, s.startTimeUnixNano, s.endTimeUnixNano, s.attributes['prefect.state.type'], s.events.map((e) => e.name)]), [
    [spanIdForRun(T), ns(T0), ns(T0 + 2_000), 'COMPLETED', ['Pending', 'Completed', 'Running']],
  ]);
});

/*
 * Prefect's live stream applies the filter's `since` to every live event of the connection
 * (`EventFilter.excludes`, src/prefect/server/events/filters.py): a sender whose clock runs behind
 * the server's by more than the look-back has its events dropped after each connect.
 */
test('watch: a resume margin raised for a sender whose clock runs 5 minutes behind covers its events from the first connection on', async (t) => {
  const { prefect, receiver } = await startServers(t);
  const before = Date.now();
  const run = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_RESUME_MARGIN_MS: '600000' }, t);
  await until('subscription', () => prefect.connections.some((c) => c.live));
  const since = Date.parse((prefect.connections[0]!.filters[0] as { filter: { occurred: { since: string } } }).filter.occurred.since);
  assert.ok(since >= before - 600_000 - 50 && since <= Date.now() - 600_000, `since ${new Date(since).toISOString()}`);
  // Stamped by a host 5 minutes behind, received by the server now.
  const t0 = Date.now() - 300_000;
  prefect.publish([
    flowState('RUNNING', 'Running', 'PENDING', t0, RUNNING_ID, null, t0 + 300_020),
    flowState('COMPLETED', 'Completed', 'RUNNING', t0 + 2_000, END_ID, RUNNING_ID, t0 + 302_020),
  ]);
  await receiver.waitForSpans(1);
  run.child.kill('SIGTERM');
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(receiver.spans().map((s) => [s.spanId, s.startTimeUnixNano, s.endTimeUnixNano, s.attributes['prefect.state.type']]), [[spanIdForRun(X), ns(t0), ns(t0 + 2_000), 'COMPLETED']]);
  // Within the margin: no warning.
  assert.deepEqual(r.stdout.split('\n').filter((l) => l.includes('"component":"pipeline"') && l.includes('"level":40')), []);
});

test('watch: events that reached the server longer after their occurred than the resume margin are warned of, naming the setting to raise: once, and again only for a delay twice as long', async (t) => {
  const { prefect, receiver } = await startServers(t);
  const run = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_RESUME_MARGIN_MS: '1000' }, t);
  await until('subscription', () => prefect.connections.some((c) => c.live));
  const now = Date.now();
  const runId = (i: number): string => `0198c7d2-5b1e-7a3c-9f10-00000000010${i}`;
  const behind = (ms: number, i: number): WireEvent =>
    flowRunStateEvent({ flowRunId: runId(i), flowRunName: `run-${i}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: now - ms, received: now, id: `0198c7d2-dddd-7000-8000-00000000000${i}` });
  // Behind by half a second (within the margin), 10 s, 15 s (less than twice 10 s), 25 s, 30 s; then a run that ends, whose span says all were taken.
  prefect.publish([behind(500, 1), behind(10_000, 2), behind(15_000, 3), behind(25_000, 4), behind(30_000, 5)]);
  prefect.publish([flowState('RUNNING', 'Running', 'PENDING', now, RUNNING_ID, null, now + 20), flowState('COMPLETED', 'Completed', 'RUNNING', now + 100, END_ID, RUNNING_ID, now + 120)]);
  await receiver.waitForSpans(1);
  run.child.kill('SIGTERM');
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr);
  const warned = r.stdout.split('\n').filter((l) => l.includes('"component":"pipeline"') && l.includes('"level":40')).map((l) => JSON.parse(l) as Record<string, unknown>);
  const message = (delay: string): string =>
    `an event reached the Prefect server ${delay} after its \`occurred\` (its sender's clock runs behind the server's, or it sent the event late): after a reconnect or a restart, Prefect's live stream drops the events that occurred more than PREFECT_OTEL_RESUME_MARGIN_MS (1.00 s) before the last one seen, so such events would be lost for a while; set PREFECT_OTEL_RESUME_MARGIN_MS above this delay`;
  assert.deepEqual(warned.map((l) => ({ msg: l.msg, event: l['prefect.event.name'], eventId: l['prefect.event.id'], resource: l['prefect.event.resource.id'], behindMs: l.behindMs, resumeMarginMs: l.resumeMarginMs })), [
    { msg: message('10.0 s'), event: 'prefect.flow-run.Running', eventId: '0198c7d2-dddd-7000-8000-000000000002', resource: `prefect.flow-run.${runId(2)}`, behindMs: 10_000, resumeMarginMs: 1_000 },
    { msg: message('25.0 s'), event: 'prefect.flow-run.Running', eventId: '0198c7d2-dddd-7000-8000-000000000004', resource: `prefect.flow-run.${runId(4)}`, behindMs: 25_000, resumeMarginMs: 1_000 },
  ]);
});
