/**
 * Where the span of a run ended incomplete ends (SPEC §3 "its last known time"): at the latest
 * `occurred` of its own events and of the events of the runs inside it (its tasks, tasks nested in
 * them, subflows) seen while it was open, so that in a trace viewer it encloses its children. A run
 * that reached a terminal state still ends at that state.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun } from '../../src/model/ids.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline } from '../../src/pipeline.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';
import { runModel } from '../helpers/model-run.js';
import { customEvent, EXAMPLE_FLOW, flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const T0 = Date.UTC(2026, 10, 22, 8, 0, 0);
const at = (s: number): number => T0 + s * 1000;
const us = (s: number): number => at(s) * 1000;

const FLOW = EXAMPLE_FLOW;
const F = '0198c7d2-5b1e-7a3c-9f10-0000000000f1';
const T1 = '0198c7d2-6000-7abc-8def-0000000000a1';
const T2 = '0198c7d2-6000-7abc-8def-0000000000a2';
const NESTED = '0198c7d2-6000-7abc-8def-0000000000a3';
const CHILD = '0198c7d2-7000-7000-8000-0000000000c1';
const TRACK = '0198c7d2-7000-7000-8000-0000000000d1';
const OTHER = '0198c7d2-9000-7000-8000-0000000000e1';

const flow = (s: number, type: string, name: string, from: string | null): WireEvent =>
  flowRunStateEvent({ flowRunId: F, flowRunName: 'crimson-fox', ...FLOW, state: { type, name }, from, runCount: 1, occurred: at(s) });

const task = (id: string, key: string, s: number, type: string, name: string, from: string | null, parents?: string[]): WireEvent =>
  taskRunStateEvent({ taskRunId: id, taskRunName: `${key}-0`, taskKey: `${key}-abcd1234`, flowRunId: F, flowRunName: 'crimson-fox', ...FLOW, state: { type, name }, from, runCount: 1, occurred: at(s), ...(parents === undefined ? {} : { parents }) });

/** Pending, Running, Completed of a task run of F. */
const taskRun = (id: string, key: string, pending: number, running: number, completed: number | undefined, parents?: string[]): WireEvent[] => [
  task(id, key, pending, 'PENDING', 'Pending', null, parents),
  task(id, key, running, 'RUNNING', 'Running', 'PENDING', parents),
  ...(completed === undefined ? [] : [task(id, key, completed, 'COMPLETED', 'Completed', 'RUNNING', parents)]),
];

/** The reviewer's reproduction: F Running at 1 s and never terminal; its two tasks run from 10 s to 600 s. */
const reproduction = (): WireEvent[] => [flow(1, 'RUNNING', 'Running', 'PENDING'), ...taskRun(T1, 'extract', 10, 11, 300), ...taskRun(T2, 'load', 310, 311, 600)];

/** Each span as its place in the trace and its times: run, attempt, parent span, start, end, why incomplete. */
function timeline(spans: readonly SpanRecord[]) {
  return spans
    .map((s) => ({ run: s.run.id, attempt: s.run.attempt, parentSpanId: s.parentSpanId ?? null, startUs: s.startUs, endUs: s.endUs, incomplete: s.attributes['prefect.run.incomplete_reason'] ?? null }))
    .sort((a, b) => a.run.localeCompare(b.run));
}

const other = (s: number): WireEvent => flowRunStateEvent({ flowRunId: OTHER, flowRunName: 'other', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(s) });

test('a flow run ended idle (past PREFECT_OTEL_OPEN_RUN_TIMEOUT_MS) ends at the last event of its tasks, not of its own: its span encloses them', async () => {
  const { spans, pipeline } = await runModel([...reproduction(), other(4000)], { openRunTimeoutMs: 600_000 });
  assert.deepEqual(timeline(spans), [
    { run: F, attempt: 0, parentSpanId: null, startUs: us(1), endUs: us(600), incomplete: 'idle_timeout' },
    { run: T1, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(10), endUs: us(300), incomplete: null },
    { run: T2, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(310), endUs: us(600), incomplete: null },
    { run: OTHER, attempt: 0, parentSpanId: null, startUs: us(4000), endUs: us(4000), incomplete: 'end_of_input' },
  ].sort((a, b) => a.run.localeCompare(b.run)));
  assert.deepEqual({ spans: pipeline.tracker.counts.spans, incomplete: pipeline.tracker.counts.incomplete, late: pipeline.tracker.counts.lateEvents }, { spans: 4, incomplete: 2, late: 0 });
});

test('a flow run still open at the end of input ends at the last event of its tasks', async () => {
  const { spans } = await runModel(reproduction());
  assert.deepEqual(timeline(spans), [
    { run: F, attempt: 0, parentSpanId: null, startUs: us(1), endUs: us(600), incomplete: 'end_of_input' },
    { run: T1, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(10), endUs: us(300), incomplete: null },
    { run: T2, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(310), endUs: us(600), incomplete: null },
  ]);
});

test('input newest first (pages of /api/events/filter as the API orders them by default): a flow run still open at the end ends at the last event of its tasks, which came before its own', async () => {
  const { spans } = await runModel([...reproduction()].reverse());
  assert.deepEqual(timeline(spans), [
    { run: F, attempt: 0, parentSpanId: null, startUs: us(1), endUs: us(600), incomplete: 'end_of_input' },
    { run: T1, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(10), endUs: us(300), incomplete: null },
    { run: T2, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(310), endUs: us(600), incomplete: null },
  ]);
});

test('a flow run evicted by the open-run bound ends at the last event of its tasks', async () => {
  // Three open runs at most: F, its task T2 and OTHER's three runs push F (the least recently active) out.
  const others = [0, 1, 2].map((i) => flowRunStateEvent({ flowRunId: `0198c7d2-9000-7000-8000-0000000000b${i}`, flowRunName: `other-${i}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(700 + i) }));
  const { spans } = await runModel([...reproduction(), ...others], { maxOpenRuns: 3, settleMs: 0 });
  const f = spans.find((s) => s.run.id === F)!;
  assert.deepEqual({ startUs: f.startUs, endUs: f.endUs, incomplete: f.attributes['prefect.run.incomplete_reason'] }, { startUs: us(1), endUs: us(600), incomplete: 'evicted' });
});

test('the runs inside a run count however deep: a task ends at its nested task\'s last event, a flow run at its subflow\'s; their parents enclose them', async () => {
  const child = (s: number, type: string, name: string, from: string | null): WireEvent =>
    flowRunStateEvent({ flowRunId: CHILD, flowRunName: 'child-run', flowId: '11111111-1111-4111-8111-111111111111', flowName: 'child-flow', parentTaskRunId: TRACK, parentTaskRunName: 'child-flow-0', state: { type, name }, from, runCount: 1, occurred: at(s) });
  const events = [
    flow(1, 'RUNNING', 'Running', 'PENDING'),
    // T1 never ends; the task called inside it runs to 500 s.
    ...taskRun(T1, 'extract', 10, 11, undefined),
    ...taskRun(NESTED, 'parse', 20, 21, 500, [T1]),
    // A subflow of F (its tracking task runs in F) to 700 s.
    child(30, 'PENDING', 'Pending', null), child(31, 'RUNNING', 'Running', 'PENDING'), child(700, 'COMPLETED', 'Completed', 'RUNNING'),
  ];
  const { spans } = await runModel(events, {}, (id) => Promise.resolve(id === TRACK ? F : null));
  assert.deepEqual(timeline(spans), [
    { run: F, attempt: 0, parentSpanId: null, startUs: us(1), endUs: us(700), incomplete: 'end_of_input' },
    { run: T1, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(10), endUs: us(500), incomplete: 'end_of_input' },
    { run: NESTED, attempt: 0, parentSpanId: spanIdForRun(T1), startUs: us(20), endUs: us(500), incomplete: null },
    { run: CHILD, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(30), endUs: us(700), incomplete: null },
  ].sort((a, b) => a.run.localeCompare(b.run)));
});

test('a flow run that reached a terminal state ends at it, whatever its tasks did after; a task ended incomplete after the grace ends at its own last event; what comes after a span was made does not move it', async () => {
  // F Cancelled at 400 s while T2 still runs; T2's Completed comes after the grace (late).
  const events = [
    flow(1, 'RUNNING', 'Running', 'PENDING'), ...taskRun(T1, 'extract', 10, 11, 300), ...taskRun(T2, 'load', 310, 311, undefined),
    flow(400, 'CANCELLED', 'Cancelled', 'RUNNING'), other(500), task(T2, 'load', 600, 'COMPLETED', 'Completed', 'RUNNING'),
  ];
  const { spans, pipeline } = await runModel(events, { taskGraceMs: 60_000 });
  assert.deepEqual(timeline(spans), [
    { run: F, attempt: 0, parentSpanId: null, startUs: us(1), endUs: us(400), incomplete: null },
    { run: T1, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(10), endUs: us(300), incomplete: null },
    { run: T2, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(310), endUs: us(311), incomplete: 'flow_ended' },
    { run: OTHER, attempt: 0, parentSpanId: null, startUs: us(500), endUs: us(500), incomplete: 'end_of_input' },
  ].sort((a, b) => a.run.localeCompare(b.run)));
  assert.equal(pipeline.tracker.counts.lateEvents, 1);

  // A flow run ended idle before a task's events come: they are late for it (the task has a span of its own), its end stays.
  const idle = await runModel([flow(1, 'RUNNING', 'Running', 'PENDING'), ...taskRun(T1, 'extract', 10, 11, 300), other(4000), ...taskRun(T2, 'load', 4010, 4011, 4300)], { openRunTimeoutMs: 600_000 });
  assert.deepEqual(timeline(idle.spans).filter((s) => s.run !== OTHER), [
    { run: F, attempt: 0, parentSpanId: null, startUs: us(1), endUs: us(300), incomplete: 'idle_timeout' },
    { run: T1, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(10), endUs: us(300), incomplete: null },
    { run: T2, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(4010), endUs: us(4300), incomplete: null },
  ]);
});

test('the last known time of the runs inside a run is kept in the state file: after a restart the span still encloses them; a state file written before it was kept loads as before', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-incomplete-end-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const quiet = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const a = createPipeline({ config, logger: quiet, clock: 'event', delivery: null });
  for (const e of reproduction()) a.ingest(JSON.stringify(e));
  const store = createStateStore(join(dir, 'state.json'));
  await new StateWriter(store, a).save(true);

  const resume = async (path: string): Promise<SpanRecord[]> => {
    const spans: SpanRecord[] = [];
    const b = createPipeline({ config, logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
    await loadState(createStateStore(path), b, at(601), quiet);
    await b.finish('end_of_input');
    return spans;
  };
  const f = (spans: SpanRecord[]) => spans.filter((s) => s.run.id === F).map((s) => [s.startUs, s.endUs, s.attributes['prefect.run.incomplete_reason']]);
  assert.deepEqual(f(await resume(join(dir, 'state.json'))), [[us(1), us(600), 'end_of_input']]);

  // The same file without the new number, as an older version wrote it: F ends at its own last event, as it did.
  const state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as { tracker: { open: Record<string, unknown>[] } };
  for (const r of state.tracker.open) delete r.innerLastUs;
  await writeFile(join(dir, 'old.json'), JSON.stringify(state));
  assert.deepEqual(f(await resume(join(dir, 'old.json'))), [[us(1), us(1), 'end_of_input']]);
});

test('an event naming a task run not seen and its flow run that ended opens the task run within the task grace (its states may still come), and past it is a late event of the flow run', async () => {
  const stepOf = (taskRunId: string, s: number): WireEvent => ({
    ...customEvent({ event: 'acme.step.done', resourceId: `prefect.task-run.${taskRunId}`, related: [{ id: `prefect.flow-run.${F}`, role: 'flow-run' }], occurred: at(s) }),
    received: new Date(at(s) + 20).toISOString(),
  });
  const events = [flow(1, 'RUNNING', 'Running', 'PENDING'), flow(2, 'COMPLETED', 'Completed', 'RUNNING'), other(3), stepOf(T1, 10), stepOf(T2, 200), other(300)];
  const { spans, pipeline } = await runModel(events, { taskGraceMs: 60_000 });
  assert.deepEqual(timeline(spans), [
    { run: F, attempt: 0, parentSpanId: null, startUs: us(1), endUs: us(2), incomplete: null },
    { run: T1, attempt: 0, parentSpanId: spanIdForRun(F), startUs: us(10), endUs: us(10), incomplete: 'flow_ended' },
    { run: OTHER, attempt: 0, parentSpanId: null, startUs: us(3), endUs: us(300), incomplete: 'end_of_input' },
  ].sort((a, b) => a.run.localeCompare(b.run)));
  assert.deepEqual({ spans: pipeline.tracker.counts.spans, late: pipeline.tracker.counts.lateEvents }, { spans: 3, late: 1 });
});
