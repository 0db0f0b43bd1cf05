import assert from 'node:assert/strict';
import { test } from 'node:test';
import { excerpt } from '../../src/model/event.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { startCli, type CliResult } from '../helpers/cli.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { customEvent, DEEP_PAYLOAD_JSON, flowRunStateEvent, ONLY_WHERE_DEEP_JSON_FAILS, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
const DAY_MS = 86_400_000;
const X = '0198c7d2-5b1e-7a3c-9f10-0000000000a1';
const Y = '0198c7d2-5b1e-7a3c-9f10-0000000000b1';
const Z = '0198c7d2-5b1e-7a3c-9f10-0000000000c1';

function replay(lines: string[], env: Record<string, string> = {}): Promise<{ r: CliResult; spans: ReceivedSpan[] }> {
  return (async () => {
    const receiver = await startOtlpReceiver();
    const r = await startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'info', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ...env }, `${lines.join('\n')}\n`).result;
    const spans = receiver.spans();
    await receiver.close();
    return { r, spans };
  })();
}

/** As a hand-written file has it: no `received` (Prefect sets it on every event it stores). */
function bare(event: WireEvent): string {
  return JSON.stringify(Object.fromEntries(Object.entries(event).filter(([key]) => key !== 'received')));
}

function flowState(id: string, name: string, type: string, stateName: string, from: string | null, atMs: number, eventId: string): WireEvent {
  return flowRunStateEvent({ flowRunId: id, flowRunName: name, ...FLOW, state: { type, name: stateName }, from, runCount: 1, occurred: atMs, id: eventId });
}

/** Each span by run id: its reason for being incomplete (if any), its times and its span events' names and times. */
function summary(spans: ReceivedSpan[]): Record<string, unknown> {
  return Object.fromEntries(spans.map((s) => [s.attributes['prefect.run.id'], {
    incomplete: s.attributes['prefect.run.incomplete_reason'] ?? null,
    start: s.startTimeUnixNano,
    end: s.endTimeUnixNano,
    events: s.events.map((e) => [e.name, e.timeUnixNano]),
  }]));
}

const ns = (ms: number): string => `${ms}000000`;

/** The run counters of replay's last stats line. */
function runCounts(r: CliResult): { opened: number; incomplete: number; lateEvents: number } {
  const stats = r.stdout.split('\n').filter((l) => l.includes('"component":"stats"')).map((l) => JSON.parse(l) as { runs: { opened: number; incomplete: number; lateEvents: number } });
  const { opened, incomplete, lateEvents } = stats.at(-1)!.runs;
  return { opened, incomplete, lateEvents };
}

test('replay without `received`: one event days ahead of the rest does not move the clock on its own, so it ends no other run', async () => {
  const { r, spans } = await replay([
    bare(flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000001')),
    bare(customEvent({ event: 'acme.custom', resourceId: `prefect.flow-run.${Y}`, related: [], occurred: T0 + 2 * DAY_MS, id: '0198c7d2-eeee-7000-8000-000000000002' })),
    bare(flowState(X, 'x', 'COMPLETED', 'Completed', 'RUNNING', T0 + 3_000, '0198c7d2-eeee-7000-8000-000000000003')),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^spans: 2 exported$/m);
  assert.deepEqual(runCounts(r), { opened: 2, incomplete: 1, lateEvents: 0 }, 'only Y, still open at the end, is incomplete; no event came late');
  const x = spans.find((s) => s.attributes['prefect.run.id'] === X)!;
  assert.deepEqual(x.attributes, {
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
  });
  assert.deepEqual(
    x.events.map((e) => [e.name, e.timeUnixNano, e.attributes]),
    [
      ['Running', ns(T0), { 'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running', 'prefect.state.message': '', 'prefect.state.id': '0198c7d2-eeee-7000-8000-000000000001', 'prefect.state.from': 'PENDING', 'prefect.run.count': 1 }],
      ['Completed', ns(T0 + 3_000), { 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.state.message': '', 'prefect.state.id': '0198c7d2-eeee-7000-8000-000000000003', 'prefect.state.from': 'RUNNING', 'prefect.run.count': 1 }],
    ],
  );
  assert.deepEqual(summary(spans), {
    [X]: { incomplete: null, start: ns(T0), end: ns(T0 + 3_000), events: [['Running', ns(T0)], ['Completed', ns(T0 + 3_000)]] },
    [Y]: { incomplete: 'end_of_input', start: ns(T0 + 2 * DAY_MS), end: ns(T0 + 2 * DAY_MS), events: [['acme.custom', ns(T0 + 2 * DAY_MS)]] },
  });
});

test('replay without `received`: a real gap of days still moves the clock, so a run idle across it ends by the open-run timeout', async () => {
  const { r, spans } = await replay([
    bare(flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000011')),
    // Two days later: the first event after the gap is confirmed by the next.
    bare(flowState(Y, 'y', 'RUNNING', 'Running', 'PENDING', T0 + 2 * DAY_MS, '0198c7d2-eeee-7000-8000-000000000012')),
    bare(flowState(Z, 'z', 'RUNNING', 'Running', 'PENDING', T0 + 2 * DAY_MS + 2_000, '0198c7d2-eeee-7000-8000-000000000013')),
    bare(flowState(Y, 'y', 'COMPLETED', 'Completed', 'RUNNING', T0 + 2 * DAY_MS + 4_000, '0198c7d2-eeee-7000-8000-000000000014')),
    bare(flowState(Z, 'z', 'COMPLETED', 'Completed', 'RUNNING', T0 + 2 * DAY_MS + 6_000, '0198c7d2-eeee-7000-8000-000000000015')),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(runCounts(r), { opened: 3, incomplete: 1, lateEvents: 0 });
  const gapEnd = T0 + 2 * DAY_MS;
  assert.deepEqual(summary(spans), {
    [X]: { incomplete: 'idle_timeout', start: ns(T0), end: ns(T0), events: [['Running', ns(T0)]] },
    [Y]: { incomplete: null, start: ns(gapEnd), end: ns(gapEnd + 4_000), events: [['Running', ns(gapEnd)], ['Completed', ns(gapEnd + 4_000)]] },
    [Z]: { incomplete: null, start: ns(gapEnd + 2_000), end: ns(gapEnd + 6_000), events: [['Running', ns(gapEnd + 2_000)], ['Completed', ns(gapEnd + 6_000)]] },
  });
  // X was ended while reading, when the clock passed its timeout, not by the end of input.
  assert.deepEqual(spans.map((s) => s.attributes['prefect.run.id']), [X, Y, Z]);
});

test('replay: a flow run never terminal, ended idle or at the end of input, ends at the last event of its tasks: its span encloses theirs', async () => {
  const K1 = '0198c7d2-6000-7abc-8def-0000000000a1';
  const K2 = '0198c7d2-6000-7abc-8def-0000000000a2';
  const s = (sec: number): number => T0 + sec * 1_000;
  const task = (id: string, key: string, sec: number, type: string, name: string, from: string | null, n: number): string =>
    JSON.stringify(taskRunStateEvent({ taskRunId: id, taskRunName: `${key}-0`, taskKey: `${key}-abcd1234`, flowRunId: X, flowRunName: 'x', ...FLOW, state: { type, name }, from, runCount: 1, occurred: s(sec), id: `0198c7d2-eeee-7000-8000-0000000003${n}` }));
  const lines = [
    JSON.stringify(flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', s(1), '0198c7d2-eeee-7000-8000-000000000300')),
    task(K1, 'extract', 10, 'PENDING', 'Pending', null, 11), task(K1, 'extract', 11, 'RUNNING', 'Running', 'PENDING', 12), task(K1, 'extract', 300, 'COMPLETED', 'Completed', 'RUNNING', 13),
    task(K2, 'load', 310, 'PENDING', 'Pending', null, 21), task(K2, 'load', 311, 'RUNNING', 'Running', 'PENDING', 22), task(K2, 'load', 600, 'COMPLETED', 'Completed', 'RUNNING', 23),
  ];
  const times = (spans: ReceivedSpan[]) => Object.fromEntries(spans.map((x) => [x.attributes['prefect.run.id'], [x.parentSpanId ?? null, x.startTimeUnixNano, x.endTimeUnixNano, x.attributes['prefect.run.incomplete_reason'] ?? null]]));
  const tasks = { [K1]: [spanIdForRun(X), ns(s(10)), ns(s(300)), null], [K2]: [spanIdForRun(X), ns(s(310)), ns(s(600)), null] };

  const atEnd = await replay(lines);
  assert.equal(atEnd.r.code, 0, atEnd.r.stderr);
  assert.deepEqual(times(atEnd.spans), { [X]: [null, ns(s(1)), ns(s(600)), 'end_of_input'], ...tasks });

  // An unrelated run's events an hour later: X is idle past the ten-minute timeout.
  const idle = await replay([
    ...lines,
    JSON.stringify(flowState(Y, 'y', 'RUNNING', 'Running', 'PENDING', s(4000), '0198c7d2-eeee-7000-8000-000000000301')),
    JSON.stringify(flowState(Y, 'y', 'COMPLETED', 'Completed', 'RUNNING', s(4001), '0198c7d2-eeee-7000-8000-000000000302')),
  ], { PREFECT_OTEL_OPEN_RUN_TIMEOUT_MS: '600000' });
  assert.equal(idle.r.code, 0, idle.r.stderr);
  assert.deepEqual(times(idle.spans), { [X]: [null, ns(s(1)), ns(s(600)), 'idle_timeout'], ...tasks, [Y]: [null, ns(s(4000)), ns(s(4001)), null] });
});

test('replay: an event whose time is outside 1970–2200 or whose zone offset is not one is skipped as bad_timestamp; the other runs export whole', async () => {
  const good = [
    flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000021'),
    flowState(X, 'x', 'COMPLETED', 'Completed', 'RUNNING', T0 + 3_000, '0198c7d2-eeee-7000-8000-000000000022'),
  ];
  const bad = [
    { ...flowState(Y, 'y', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000023'), occurred: '0001-01-01T00:00:00Z' },
    { ...flowState(Y, 'y', 'COMPLETED', 'Completed', 'RUNNING', T0, '0198c7d2-eeee-7000-8000-000000000024'), occurred: '2600-01-01T00:00:00Z' },
    { ...flowState(Z, 'z', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000025'), occurred: '2026-11-20T09:00:01+99:99' },
  ].map((e) => JSON.stringify(e));
  // A `received` outside the range is left out, as if absent: the event itself is good.
  const oddReceived = JSON.stringify({ ...flowState(Z, 'z', 'COMPLETED', 'Completed', 'RUNNING', T0 + 1_000, '0198c7d2-eeee-7000-8000-000000000026'), received: '1901-01-01T00:00:00Z' });
  const { r, spans } = await replay([JSON.stringify(good[0]), ...bad, oddReceived, JSON.stringify(good[1])]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /skipped: 3 \(bad_timestamp: 3\)/);
  const warned = r.stdout.split('\n').filter((l) => l.includes('skipped malformed input')).map((l) => JSON.parse(l) as { reason: string; excerpt: string; count: number });
  assert.deepEqual(warned.map((w) => [w.reason, w.count, w.excerpt]), bad.map((line, i) => ['bad_timestamp', i + 1, excerpt(line)]));
  assert.deepEqual(
    spans.map((s) => [s.traceId, s.spanId, s.name, s.startTimeUnixNano, s.endTimeUnixNano, s.status, s.events.map((e) => [e.name, e.timeUnixNano]), s.attributes['prefect.run.incomplete_reason'] ?? null]),
    [
      [traceIdForRun(Z), spanIdForRun(Z), 'etl', ns(T0 + 1_000), ns(T0 + 1_000), { code: 1 }, [['Completed', ns(T0 + 1_000)]], null],
      [traceIdForRun(X), spanIdForRun(X), 'etl', ns(T0), ns(T0 + 3_000), { code: 1 }, [['Running', ns(T0)], ['Completed', ns(T0 + 3_000)]], null],
    ],
  );
});

test('replay: an event the model turns down (a payload too deep to write) moves no time either: days ahead, with `received`, it ends no other run', { skip: ONLY_WHERE_DEEP_JSON_FAILS }, async () => {
  const deep = customEvent({ event: 'acme.custom', resourceId: `prefect.flow-run.${Y}`, related: [], occurred: T0 + 2 * DAY_MS, id: '0198c7d2-eeee-7000-8000-000000000012' });
  const deepLine = JSON.stringify({ ...deep, received: new Date(T0 + 2 * DAY_MS).toISOString(), payload: { x: 0 } }).replace('{"x":0}', DEEP_PAYLOAD_JSON);
  const { r, spans } = await replay([
    JSON.stringify(flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000011')),
    deepLine,
    // The next event's time passes judgement on the runs open: X has been quiet for 2 s, not 2 days.
    JSON.stringify(flowState(Z, 'z', 'COMPLETED', 'Completed', 'RUNNING', T0 + 2_000, '0198c7d2-eeee-7000-8000-000000000014')),
    JSON.stringify(flowState(X, 'x', 'COMPLETED', 'Completed', 'RUNNING', T0 + 3_000, '0198c7d2-eeee-7000-8000-000000000013')),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').slice(1, 4), ['skipped: 1 (too_deep: 1)', 'runs: 2  spans: 2 (0 incomplete)', 'spans: 2 exported']);
  assert.deepEqual(runCounts(r), { opened: 2, incomplete: 0, lateEvents: 0 });
  assert.deepEqual(summary(spans), {
    [X]: { incomplete: null, start: ns(T0), end: ns(T0 + 3_000), events: [['Running', ns(T0)], ['Completed', ns(T0 + 3_000)]] },
    [Z]: { incomplete: null, start: ns(T0 + 2_000), end: ns(T0 + 2_000), events: [['Completed', ns(T0 + 2_000)]] },
  });
});

test('replay: the first event after a quiet stretch longer than the dedupe window, sent again a minute later (a reconnect\'s backfill, overlapping exports put together), is a duplicate: its run has each state once', async () => {
  const HOUR_MS = 3_600_000;
  const after = T0 + 3 * HOUR_MS;
  const events = [
    flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000031'),
    flowState(X, 'x', 'COMPLETED', 'Completed', 'RUNNING', T0 + 3_000, '0198c7d2-eeee-7000-8000-000000000032'),
    // Three hours later (the dedupe window is one): Y starts, and Z beside it.
    flowState(Y, 'y', 'RUNNING', 'Running', 'PENDING', after, '0198c7d2-eeee-7000-8000-000000000033'),
    flowState(Z, 'z', 'RUNNING', 'Running', 'PENDING', after + 30_000, '0198c7d2-eeee-7000-8000-000000000034'),
    flowState(Y, 'y', 'RUNNING', 'Running', 'PENDING', after, '0198c7d2-eeee-7000-8000-000000000033'),
    flowState(Y, 'y', 'COMPLETED', 'Completed', 'RUNNING', after + 60_000, '0198c7d2-eeee-7000-8000-000000000035'),
    flowState(Z, 'z', 'COMPLETED', 'Completed', 'RUNNING', after + 90_000, '0198c7d2-eeee-7000-8000-000000000036'),
  ];
  // With `received` (an API or websocket export) and without it (`prefect events stream`).
  for (const [how, lines] of [['received', events.map((e) => JSON.stringify(e))], ['no received', events.map(bare)]] as const) {
    const { r, spans } = await replay(lines);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stderr.split('\n').slice(0, 3), ['events read: 7 (7 lines, 1 duplicate, 0 not about a run)', 'skipped: 0', 'runs: 3  spans: 3 (0 incomplete)'], how);
    assert.deepEqual(summary(spans), {
      [X]: { incomplete: null, start: ns(T0), end: ns(T0 + 3_000), events: [['Running', ns(T0)], ['Completed', ns(T0 + 3_000)]] },
      [Y]: { incomplete: null, start: ns(after), end: ns(after + 60_000), events: [['Running', ns(after)], ['Completed', ns(after + 60_000)]] },
      [Z]: { incomplete: null, start: ns(after + 30_000), end: ns(after + 90_000), events: [['Running', ns(after + 30_000)], ['Completed', ns(after + 90_000)]] },
    }, how);
  }
});

test('replay of two overlapping exports put together (cat day1 day2): each copy is a duplicate, however much event time lies between the copies; nothing late', async () => {
  const later = T0 + 30 * 3_600_000;
  const day1 = [
    flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000051'),
    flowState(X, 'x', 'COMPLETED', 'Completed', 'RUNNING', T0 + 3_000, '0198c7d2-eeee-7000-8000-000000000052'),
    flowState(Y, 'y', 'RUNNING', 'Running', 'PENDING', later, '0198c7d2-eeee-7000-8000-000000000053'),
    flowState(Y, 'y', 'COMPLETED', 'Completed', 'RUNNING', later + 60_000, '0198c7d2-eeee-7000-8000-000000000054'),
  ];
  const { r, spans } = await replay([...day1, ...day1].map((e) => JSON.stringify(e)));
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').slice(0, 3), ['events read: 8 (8 lines, 4 duplicates, 0 not about a run)', 'skipped: 0', 'runs: 2  spans: 2 (0 incomplete)']);
  assert.deepEqual(runCounts(r), { opened: 2, incomplete: 0, lateEvents: 0 });
  assert.deepEqual(summary(spans), {
    [X]: { incomplete: null, start: ns(T0), end: ns(T0 + 3_000), events: [['Running', ns(T0)], ['Completed', ns(T0 + 3_000)]] },
    [Y]: { incomplete: null, start: ns(later), end: ns(later + 60_000), events: [['Running', ns(later)], ['Completed', ns(later + 60_000)]] },
  });
});

test('replay without `received`: one event days ahead of the rest makes no id seen before it forgotten: a copy of an earlier event after it is still a duplicate', async () => {
  const running = flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000041');
  const { r, spans } = await replay([
    bare(running),
    bare(customEvent({ event: 'acme.custom', resourceId: `prefect.flow-run.${Y}`, related: [], occurred: T0 + 2 * DAY_MS, id: '0198c7d2-eeee-7000-8000-000000000042' })),
    bare(flowState(X, 'x', 'RUNNING', 'Running', 'PENDING', T0, '0198c7d2-eeee-7000-8000-000000000041')),
    bare(flowState(X, 'x', 'COMPLETED', 'Completed', 'RUNNING', T0 + 3_000, '0198c7d2-eeee-7000-8000-000000000043')),
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').slice(0, 3), ['events read: 4 (4 lines, 1 duplicate, 0 not about a run)', 'skipped: 0', 'runs: 2  spans: 2 (1 incomplete)']);
  assert.deepEqual(summary(spans)[X], { incomplete: null, start: ns(T0), end: ns(T0 + 3_000), events: [['Running', ns(T0)], ['Completed', ns(T0 + 3_000)]] });
});
