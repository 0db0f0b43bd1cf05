/**
 * A run first seen leaving a terminal state (its record gone, or its attempts before came before the
 * start), or first seen through another event and then leaving one: its events wait for its state
 * history, which numbers the rerun; without an answer it is the first rerun. The waiting events go
 * through the state file as other waiting events do.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { rerunAttemptFromHistory, type HistoryState } from '../../src/model/rerun-attempt.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline, type PipelineOptions } from '../../src/pipeline.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';
import { customEvent, EXAMPLE_FLOW, flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const T0 = Date.UTC(2026, 10, 21, 6, 0, 0);
const at = (s: number): number => T0 + s * 1000;
const us = (s: number): number => at(s) * 1000;
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TASK = '0198c7d2-6000-7abc-8def-000000000001';
const UI = 'http://prefect.local:4200';
const stateId = (i: number): string => `0198c7d2-f000-7000-8000-${String(i).padStart(12, '0')}`;

type Row = [s: number, type: string, name: string, runCount: number];
/** FR's states: three attempts (the first, two reruns), each Scheduled → Pending → Running → Failed. */
const ALL: Row[] = [0, 10, 20].flatMap((s, k): Row[] => [[s, 'SCHEDULED', 'Scheduled', k], [s + 1, 'PENDING', 'Pending', k], [s + 2, 'RUNNING', 'Running', k + 1], [s + 3, 'FAILED', 'Failed', k + 1]]);
const EVENTS: WireEvent[] = ALL.map(([s, type, name, runCount], i) => flowRunStateEvent({
  flowRunId: FR, flowRunName: 'crimson-fox', ...EXAMPLE_FLOW, state: { type, name }, from: i === 0 ? null : ALL[i - 1]![1], runCount,
  occurred: at(s), received: at(s) + 10, id: stateId(i), follows: i === 0 ? null : stateId(i - 1),
}));
/** What Prefect's state history holds of FR (`GET /flow_run_states/?flow_run_id=…`), in its order. */
const HISTORY: HistoryState[] = ALL.map(([s, type], i) => ({ id: stateId(i), type, timestampUs: us(s) }));
/** The second rerun, seen alone: the states before it went out before the start (or their record is gone). */
const SECOND = EVENTS.slice(8);
/** A task of the second rerun, called in it. */
const TASK_EVENTS = [[22.1, 'PENDING', 'Pending', 0], [22.2, 'RUNNING', 'Running', 1], [22.5, 'COMPLETED', 'Completed', 1]].map(([s, type, name, runCount], i, all) => taskRunStateEvent({
  taskRunId: TASK, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, flowRunName: 'crimson-fox', ...EXAMPLE_FLOW,
  state: { type: type as string, name: name as string }, from: i === 0 ? null : (all[i - 1]![1] as string), runCount: runCount as number,
  occurred: at(s as number), received: at(s as number) + 10, id: `0198c7d2-0001-7000-8000-00000000000${i}`,
}));

/** The rerun's span, whole but for its span events (the states it saw, checked by name). */
function rerunSpan(attempt: number): unknown {
  return {
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR, attempt), parentSpanId: undefined,
    startUs: us(21), endUs: us(23), status: { code: 'error', message: 'Failed' },
    attributes: {
      'prefect.run.id': FR, 'prefect.run.type': 'flow', 'prefect.run.name': 'crimson-fox', 'prefect.run.count': 3, 'prefect.run.attempt': attempt,
      'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'prefect.tags': [], 'prefect.flow.name': EXAMPLE_FLOW.flowName, 'prefect.flow.id': EXAMPLE_FLOW.flowId,
      'prefect.run.wait_ms': 1_000, 'cicd.pipeline.name': EXAMPLE_FLOW.flowName, 'cicd.pipeline.run.id': FR, 'cicd.pipeline.result': 'failure',
      'cicd.pipeline.run.url.full': `${UI}/runs/flow-run/${FR}`, 'error.type': 'Failed',
    },
    events: ['Scheduled', 'Pending', 'Running', 'Failed'],
    links: [{ traceId: traceIdForRun(FR), spanId: spanIdForRun(FR, attempt - 1), attributes: { 'prefect.link.kind': 'previous_attempt' } }],
  };
}

/** The span of TASK under the second rerun, whole but for its span events (checked by name). */
function taskSpan(events: string[]): unknown {
  return {
    name: 'extract', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR, 2), startUs: us(22.1), endUs: us(22.5), status: { code: 'ok' },
    attributes: {
      'prefect.run.id': TASK, 'prefect.run.type': 'task', 'prefect.run.name': 'extract-3f2', 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed',
      'prefect.tags': [], 'prefect.flow.name': EXAMPLE_FLOW.flowName, 'prefect.flow.id': EXAMPLE_FLOW.flowId, 'prefect.task.key': 'extract-9a8b7c6d',
      'cicd.pipeline.task.name': 'extract', 'cicd.pipeline.task.run.id': TASK,
      'cicd.pipeline.task.run.result': 'success', 'cicd.pipeline.task.run.url.full': `${UI}/runs/task-run/${TASK}`,
    },
    events,
    links: [],
  };
}

const shape = (s: SpanRecord): unknown => ({
  name: s.name, kind: s.kind, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId, startUs: s.startUs, endUs: s.endUs, status: s.status,
  attributes: s.attributes, events: s.events.map((e) => e.name), links: s.links,
});

/** A pipeline on the event clock whose state-history lookups wait until the test answers them. */
function pipelineWithHeldHistory(more: Partial<PipelineOptions> = {}) {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const spans: SpanRecord[] = [];
  const asked: { run: { type: string; id: string }; answer: (h: readonly HistoryState[] | undefined) => void }[] = [];
  const pipeline = createPipeline({
    config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
    resolveStateHistory: (run) => new Promise((answer) => asked.push({ run, answer })),
    ...more,
  });
  return { pipeline, spans, lines, asked };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

test('the rerun a state opens, from the state history: the times the run left a terminal state up to it, in Prefect\'s order; not yet recorded, those up to its `occurred`', () => {
  const second = { id: stateId(8), occurredUs: us(20), type: 'SCHEDULED', leavesTerminal: true };
  assert.deepEqual([
    rerunAttemptFromHistory(HISTORY, second),
    rerunAttemptFromHistory(HISTORY, { ...second, id: stateId(4), occurredUs: us(10) }),
    // Not in the history (not recorded yet): the states stamped up to its time, then the state itself.
    rerunAttemptFromHistory(HISTORY.slice(0, 8), { ...second, id: '0198c7d2-ffff-7000-8000-000000000000' }),
    rerunAttemptFromHistory(HISTORY, { ...second, id: '0198c7d2-ffff-7000-8000-000000000000', occurredUs: us(15) }),
    // One terminal state to another (a state set by hand) runs nothing again.
    rerunAttemptFromHistory([...HISTORY.slice(0, 4), { id: 'x', type: 'COMPLETED', timestampUs: us(5) }, ...HISTORY.slice(4)], { ...second, id: stateId(4), occurredUs: us(10) }),
    // Nothing known before it: it leaves a terminal state, so it is at least the first rerun.
    rerunAttemptFromHistory([], second),
  ], [2, 1, 2, 2, 1, 1]);
});

test('the rerun a state opens, at the edges of the history: the first state recorded, states stamped at its `occurred` or unreadably, a history that begins terminal, a state that leaves none or goes from one terminal state to another', () => {
  const second = { id: stateId(8), occurredUs: us(20), type: 'SCHEDULED', leavesTerminal: true };
  const unrecorded = '0198c7d2-ffff-7000-8000-000000000000';
  const unreadable = HISTORY.slice(0, 8).map((s, i) => (i === 3 ? { ...s, timestampUs: undefined } : s));
  const beganTerminal: HistoryState[] = [{ id: stateId(90), type: 'FAILED', timestampUs: us(0) }, ...HISTORY.slice(1, 8)];
  const byHand: HistoryState[] = [...HISTORY.slice(0, 8), { id: stateId(91), type: 'COMPLETED', timestampUs: us(14) }];
  assert.deepEqual([
    // First in the history: no state is before it, not even those stamped the same after it.
    rerunAttemptFromHistory([{ id: stateId(8), type: 'SCHEDULED', timestampUs: us(20) }, { id: stateId(92), type: 'FAILED', timestampUs: us(20) }, { id: stateId(93), type: 'RUNNING', timestampUs: us(20) }], second),
    // Not recorded, a Pending that leaves no terminal state: the Scheduled stamped at its `occurred` is before it.
    rerunAttemptFromHistory(HISTORY.slice(0, 9), { id: unrecorded, occurredUs: us(20), type: 'PENDING', leavesTerminal: false }),
    // Recorded, the same Pending: the states before it in the history count, not the state itself.
    rerunAttemptFromHistory(HISTORY, { id: stateId(9), occurredUs: us(21), type: 'PENDING', leavesTerminal: false }),
    // Not recorded: a state whose timestamp cannot be read is not before it.
    rerunAttemptFromHistory(unreadable, { ...second, id: unrecorded }),
    // A history that begins in a terminal state: leaving it counts.
    rerunAttemptFromHistory(beganTerminal, { ...second, id: unrecorded }),
    rerunAttemptFromHistory([...beganTerminal, HISTORY[8]!], second),
    // Failed marked Completed by hand after the first rerun: that rerun's state, no rerun of its own.
    rerunAttemptFromHistory(byHand, { id: stateId(91), occurredUs: us(14), type: 'COMPLETED', leavesTerminal: true }),
    // Nothing known and leaving no terminal state: still at least the first rerun.
    rerunAttemptFromHistory([], { ...second, leavesTerminal: false }),
  ], [1, 2, 2, 1, 3, 3, 1, 1]);
});

test('a run first seen leaving a terminal state waits for its state history, with the events of the runs under it, then takes the rerun the history gives it', async () => {
  const { pipeline, spans, lines, asked } = pipelineWithHeldHistory();
  const events = [...SECOND.slice(0, 3), ...TASK_EVENTS, SECOND[3]!];
  for (const e of events) pipeline.ingest(JSON.stringify(e));
  await settle();
  const t = pipeline.tracker;
  assert.deepEqual(
    { asked: asked.map((a) => a.run), pending: t.pendingLookups, blocked: t.blockedRuns, waiting: t.waitingEvents, open: t.openRuns, spans: spans.length },
    { asked: [{ type: 'flow', id: FR }], pending: 1, blocked: 2, waiting: events.length, open: 0, spans: 0 },
  );
  asked[0]!.answer(HISTORY);
  await pipeline.finish('end_of_input');
  assert.deepEqual(spans.map(shape), [
    taskSpan(['Pending', 'Running', 'Completed']),
    rerunSpan(2),
  ]);
  assert.deepEqual({ rerunLookups: t.counts.rerunLookups, parentLookups: t.counts.parentLookups, reruns: t.counts.reruns, pending: t.pendingLookups, waiting: t.waitingEvents },
    { rerunLookups: { lookups: 1, found: 1, failed: 0, abandoned: 0 }, parentLookups: { lookups: 0, found: 0, failed: 0, abandoned: 0 }, reruns: 1, pending: 0, waiting: 0 });
  assert.deepEqual(lines.filter((l) => l.kind === 'rerun').map((l) => [l['prefect.run.id'], l.attempt, l.trace_id]), [[FR, 2, traceIdForRun(FR)]]);
});

test('state histories that cannot be read are warned of apart from subflow parents not found: ten of those before leave the first such history a warning', async () => {
  const { pipeline, lines, asked } = pipelineWithHeldHistory({ resolveOwner: () => Promise.resolve(null) });
  for (let k = 0; k < 10; k++) {
    const subflow = `0198c7d2-5c00-7a3c-9f10-${String(k).padStart(12, '0')}`;
    pipeline.ingest(JSON.stringify(flowRunStateEvent({
      flowRunId: subflow, flowRunName: `child-${k}`, ...EXAMPLE_FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1,
      occurred: at(k), id: `0198c7d2-e000-7000-8000-${String(k).padStart(12, '0')}`, parentTaskRunId: `0198c7d2-7000-7abc-8def-${String(k).padStart(12, '0')}`, parentTaskRunName: `child-flow-${k}`,
    })));
  }
  for (const e of SECOND) pipeline.ingest(JSON.stringify(e));
  await settle();
  asked[0]!.answer(undefined);
  await pipeline.finish('end_of_input');
  assert.deepEqual(lines.filter((l) => l.kind === 'lookup_failed' || l.kind === 'rerun_lookup_failed').map((l) => [l.kind, l.level]), [
    ...Array.from({ length: 10 }, () => ['lookup_failed', 40]), ['rerun_lookup_failed', 40],
  ]);
});

test('a state its run\'s state history does not hold yet (task run states are recorded from their events, after them) is placed by its time: the states stamped up to it number the rerun', async () => {
  const { pipeline, spans, asked } = pipelineWithHeldHistory();
  for (const e of SECOND) pipeline.ingest(JSON.stringify(e));
  await settle();
  asked[0]!.answer(HISTORY.slice(0, 8));
  await pipeline.finish('end_of_input');
  assert.deepEqual(spans.map(shape), [rerunSpan(2)]);
});

test('a task run first seen leaving a terminal state is asked about as a task run: GET /task_run_states/, and takes the rerun its history gives it', async () => {
  const { pipeline, spans, asked } = pipelineWithHeldHistory();
  const rows: [s: number, type: string, name: string, runCount: number][] = [[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1]];
  const all = [0, 10, 20].flatMap((s0, k) => rows.map(([s, type, name, runCount]): [number, string, string, number] => [s0 + s, type, name, runCount + k]));
  const events = all.map(([s, type, name, runCount], i) => taskRunStateEvent({
    taskRunId: TASK, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, flowRunName: 'crimson-fox', ...EXAMPLE_FLOW,
    state: { type, name }, from: i === 0 ? null : all[i - 1]![1], runCount, occurred: at(s), received: at(s) + 10, id: stateId(40 + i),
  }));
  for (const e of events.slice(6)) pipeline.ingest(JSON.stringify(e));
  await settle();
  assert.deepEqual(asked.map((a) => a.run), [{ type: 'task', id: TASK }]);
  asked[0]!.answer(all.map(([s, type], i) => ({ id: stateId(40 + i), type, timestampUs: us(s) })));
  await pipeline.finish('end_of_input');
  assert.deepEqual(spans.map(shape), [{
    name: 'extract', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK, 2), parentSpanId: spanIdForRun(FR), startUs: us(21), endUs: us(23), status: { code: 'ok' },
    attributes: {
      'prefect.run.id': TASK, 'prefect.run.type': 'task', 'prefect.run.name': 'extract-3f2', 'prefect.run.count': 3, 'prefect.run.attempt': 2, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed',
      'prefect.tags': [], 'prefect.flow.name': EXAMPLE_FLOW.flowName, 'prefect.flow.id': EXAMPLE_FLOW.flowId, 'prefect.task.key': 'extract-9a8b7c6d',
      'cicd.pipeline.task.name': 'extract', 'cicd.pipeline.task.run.id': TASK, 'cicd.pipeline.task.run.result': 'success', 'cicd.pipeline.task.run.url.full': `${UI}/runs/task-run/${TASK}`,
    },
    events: ['Pending', 'Running', 'Completed'],
    links: [{ traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK, 1), attributes: { 'prefect.link.kind': 'previous_attempt' } }],
  }]);
});

test('at the end of input, a state-history lookup given up on releases events that wait for another lookup (a subflow\'s parent): that one is given up on in turn, and the run has its span', async () => {
  const TRACKING = '0198c7d2-7000-7abc-8def-000000000009';
  const { pipeline, spans } = pipelineWithHeldHistory({ resolveOwner: () => new Promise<string | null>(() => undefined) });
  const subflow = ALL.slice(8).map(([s, type, name, runCount], i) => flowRunStateEvent({
    flowRunId: FR, flowRunName: 'crimson-fox', ...EXAMPLE_FLOW, state: { type, name }, from: i === 0 ? 'FAILED' : ALL[7 + i]![1], runCount,
    occurred: at(s), received: at(s) + 10, id: stateId(8 + i), follows: stateId(7 + i), parentTaskRunId: TRACKING, parentTaskRunName: 'child-flow-0a1',
  }));
  for (const e of subflow) pipeline.ingest(JSON.stringify(e));
  await pipeline.finish('end_of_input', 50);
  const t = pipeline.tracker;
  assert.deepEqual(
    { spans: spans.map(shape), rerunLookups: t.counts.rerunLookups, parentLookups: t.counts.parentLookups, pending: t.pendingLookups, waiting: t.waitingEvents },
    {
      spans: [{ ...(rerunSpan(1) as { attributes: object }), attributes: { ...(rerunSpan(1) as { attributes: object }).attributes, 'prefect.parent_task_run.id': TRACKING } }],
      rerunLookups: { lookups: 1, found: 0, failed: 0, abandoned: 1 }, parentLookups: { lookups: 1, found: 0, failed: 0, abandoned: 1 }, pending: 0, waiting: 0,
    },
  );
});

test('a state history that cannot be read (or a pipeline that cannot ask): the run first seen leaving a terminal state is the first rerun, counted and warned of', async () => {
  const { pipeline, spans, lines, asked } = pipelineWithHeldHistory();
  for (const e of SECOND) pipeline.ingest(JSON.stringify(e));
  await settle();
  asked[0]!.answer(undefined);
  await pipeline.finish('end_of_input');
  assert.deepEqual(spans.map(shape), [rerunSpan(1)]);
  assert.deepEqual(pipeline.tracker.counts.rerunLookups, { lookups: 1, found: 0, failed: 1, abandoned: 0 });
  assert.deepEqual(lines.filter((l) => String(l.kind).startsWith('rerun_')).map(({ time: _t, pid: _p, hostname: _h, ...l }) => l), [{
    level: 40, service: 'prefect-otel', component: 'model', kind: 'rerun_lookup_failed', 'prefect.run.id': FR,
    msg: 'run first seen leaving a terminal state, and its state history could not be read: numbered as its first rerun (its span id may be one exported before)',
  }]);

  // Nothing to ask (no resolveStateHistory): no wait at all.
  const none = pipelineWithHeldHistory({ resolveStateHistory: undefined });
  for (const e of SECOND) none.pipeline.ingest(JSON.stringify(e));
  assert.equal(none.pipeline.tracker.pendingLookups, 0);
  await none.pipeline.finish('end_of_input');
  assert.deepEqual(none.spans.map(shape), [rerunSpan(1)]);
  assert.deepEqual(none.pipeline.tracker.counts.rerunLookups, { lookups: 0, found: 0, failed: 0, abandoned: 0 });

  // A lookup that throws is one that could not read the history.
  const thrown = pipelineWithHeldHistory({ resolveStateHistory: () => Promise.reject(new Error('connection reset')) });
  for (const e of SECOND) thrown.pipeline.ingest(JSON.stringify(e));
  await settle();
  await thrown.pipeline.finish('end_of_input');
  assert.deepEqual(thrown.spans.map(shape), [rerunSpan(1)]);
  assert.deepEqual(thrown.pipeline.tracker.counts.rerunLookups, { lookups: 1, found: 0, failed: 1, abandoned: 0 });
});

test('state histories that cannot be read are warned of ten times, the tenth saying further ones are only counted; the rest are debug lines', async () => {
  const { pipeline, lines, asked } = pipelineWithHeldHistory();
  const runId = (k: number): string => `0198c7d2-5b1e-7a3c-9f10-${String(k).padStart(12, '0')}`;
  for (let k = 0; k < 12; k++) {
    for (const e of SECOND) pipeline.ingest(JSON.stringify(e).replaceAll(FR, runId(k)).replaceAll('0198c7d2-f000-', `0198c7d2-f${String(k).padStart(3, '0')}-`));
  }
  await settle();
  for (const a of asked) a.answer(undefined);
  await pipeline.finish('end_of_input');
  const msg = 'run first seen leaving a terminal state, and its state history could not be read: numbered as its first rerun (its span id may be one exported before)';
  assert.deepEqual(lines.filter((l) => l.kind === 'rerun_lookup_failed').map((l) => [l.level, l['prefect.run.id'], l.msg]), Array.from({ length: 12 }, (_, k) => [
    k < 10 ? 40 : 20, runId(k), k === 9 ? `${msg} (further ones are only counted)` : msg,
  ]));
  assert.deepEqual(pipeline.tracker.counts.rerunLookups, { lookups: 12, found: 0, failed: 12, abandoned: 0 });
});

test('a lookup unanswered at the end of input is given up on: the first rerun, counted as abandoned', async () => {
  const { pipeline, spans } = pipelineWithHeldHistory();
  for (const e of SECOND) pipeline.ingest(JSON.stringify(e));
  await pipeline.finish('end_of_input', 50);
  assert.deepEqual(spans.map(shape), [rerunSpan(1)]);
  assert.deepEqual(pipeline.tracker.counts.rerunLookups, { lookups: 1, found: 0, failed: 0, abandoned: 1 });
});

test('past the bound on waiting events (PREFECT_OTEL_MAX_OPEN_RUNS) the state-history lookup is given up: the first rerun, counted and warned of; its late answer changes nothing', async () => {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI, maxOpenRuns: 2 }, {});
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const spans: SpanRecord[] = [];
  const answers: ((h: readonly HistoryState[] | undefined) => void)[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s), resolveStateHistory: () => new Promise((r) => answers.push(r)) });
  for (const e of SECOND) pipeline.ingest(JSON.stringify(e));
  assert.deepEqual({ pending: pipeline.tracker.pendingLookups, waiting: pipeline.tracker.waitingEvents, open: pipeline.tracker.openRuns }, { pending: 0, waiting: 0, open: 1 });
  answers[0]!(HISTORY);
  await pipeline.finish('end_of_input');
  assert.deepEqual(spans.map(shape), [rerunSpan(1)]);
  assert.deepEqual(pipeline.tracker.counts.rerunLookups, { lookups: 1, found: 0, failed: 0, abandoned: 1 });
  assert.deepEqual(lines.filter((l) => String(l.kind).startsWith('rerun_')).map(({ time: _t, pid: _p, hostname: _h, ...l }) => l), [{
    level: 40, service: 'prefect-otel', component: 'model', kind: 'rerun_lookup_abandoned', 'prefect.run.id': FR, waitingEvents: 3, count: 1,
    msg: 'events waiting for lookups reached their bound (PREFECT_OTEL_MAX_OPEN_RUNS); the oldest, of the state history of a run first seen leaving a terminal state, was given up and the run numbered as its first rerun',
  }]);
});

test('the events waiting for a state history go through the state file: the next process asks again and numbers the rerun from the answer', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-rerun-'));
  try {
    const store = createStateStore(join(dir, 'state.json'));
    const quiet = createLogger({ level: 'silent', format: 'json' });
    const before = pipelineWithHeldHistory();
    for (const e of SECOND.slice(0, 3)) before.pipeline.ingest(JSON.stringify(e));
    await settle();
    assert.equal(before.asked.length, 1);
    // Stopped before the answer: the answer that comes later is not applied, the events are saved.
    before.pipeline.seal();
    await new StateWriter(store, before.pipeline).save(true);
    before.asked[0]!.answer(HISTORY);
    await settle();
    assert.deepEqual({ spans: before.spans, waiting: before.pipeline.tracker.waitingEvents, rerunLookups: before.pipeline.tracker.counts.rerunLookups },
      { spans: [], waiting: 3, rerunLookups: { lookups: 1, found: 0, failed: 0, abandoned: 0 } });

    const after = pipelineWithHeldHistory();
    await loadState(store, after.pipeline, at(22.3), quiet);
    assert.deepEqual({ asked: after.asked.map((a) => a.run), waiting: after.pipeline.tracker.waitingEvents }, { asked: [{ type: 'flow', id: FR }], waiting: 3 });
    after.asked[0]!.answer(HISTORY);
    await settle();
    after.pipeline.ingest(JSON.stringify(SECOND[3]));
    await after.pipeline.finish('end_of_input');
    assert.deepEqual(after.spans.map(shape), [rerunSpan(2)]);
    assert.deepEqual(after.pipeline.tracker.counts.rerunLookups, { lookups: 1, found: 1, failed: 0, abandoned: 0 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** An event of another system naming FR, emitted before its second rerun's first state; and one naming its task, reordered ahead of that state. */
const REQUESTED = customEvent({
  event: 'acme.rerun.requested', resourceId: 'acme.ticket.42', resourceName: 'ticket 42', occurred: at(19.5), id: '0198c7d2-e000-7000-8000-000000000001',
  related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }],
});
const TASK_NOTE = customEvent({
  event: 'acme.rows.counted', resourceId: 'acme.table.orders', occurred: at(22.05), id: '0198c7d2-e000-7000-8000-000000000002',
  related: [{ id: `prefect.task-run.${TASK}`, role: 'task-run', name: 'extract-3f2' }, { id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }],
});

test('a run opened by another event whose first state leaves a terminal state is a rerun too: it waits for its state history and takes that rerun\'s span id, with the task opened under it', async () => {
  const { pipeline, spans, lines, asked } = pipelineWithHeldHistory();
  for (const e of [REQUESTED, TASK_NOTE, ...SECOND.slice(0, 3), ...TASK_EVENTS, SECOND[3]!]) pipeline.ingest(JSON.stringify(e));
  await settle();
  const t = pipeline.tracker;
  // The flow run's states wait, and so do those of its task opened before them.
  assert.deepEqual({ asked: asked.map((a) => a.run), blocked: t.blockedRuns, waiting: t.waitingEvents, open: t.openRuns, spans: spans.length },
    { asked: [{ type: 'flow', id: FR }], blocked: 2, waiting: 7, open: 2, spans: 0 });
  asked[0]!.answer(HISTORY);
  await pipeline.finish('end_of_input');
  const rerun = rerunSpan(2) as { events: string[] };
  assert.deepEqual(spans.map(shape), [
    taskSpan(['acme.rows.counted', 'Pending', 'Running', 'Completed']),
    { ...rerun, events: ['acme.rerun.requested', ...rerun.events] },
  ]);
  assert.deepEqual({ rerunLookups: t.counts.rerunLookups, reruns: t.counts.reruns, opened: t.counts.runsOpened, pending: t.pendingLookups, waiting: t.waitingEvents },
    { rerunLookups: { lookups: 1, found: 1, failed: 0, abandoned: 0 }, reruns: 1, opened: 2, pending: 0, waiting: 0 });
  assert.deepEqual(lines.filter((l) => l.kind === 'rerun').map((l) => [l['prefect.run.id'], l.attempt, l.trace_id]), [[FR, 2, traceIdForRun(FR)]]);
  // The line of the event that came first was written before the rerun was known: it keeps the span id the run had then.
  assert.deepEqual(lines.filter((l) => String(l.msg).startsWith('STLOGGING: Event acme.rerun.requested')).map((l) => l.span_id), [spanIdForRun(FR)]);

  // Nothing to ask: the first rerun at once.
  const none = pipelineWithHeldHistory({ resolveStateHistory: undefined });
  for (const e of [REQUESTED, ...SECOND]) none.pipeline.ingest(JSON.stringify(e));
  assert.equal(none.pipeline.tracker.pendingLookups, 0);
  await none.pipeline.finish('end_of_input');
  const first = rerunSpan(1) as { events: string[] };
  assert.deepEqual(none.spans.map(shape), [{ ...first, events: ['acme.rerun.requested', ...first.events] }]);
  assert.deepEqual({ reruns: none.pipeline.tracker.counts.reruns, lookups: none.pipeline.tracker.counts.rerunLookups.lookups }, { reruns: 1, lookups: 0 });
});

test('a run opened by another event and waiting for its state history goes through the state file with the task opened under it: the next process asks again and numbers both spans from the answer', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-rerun-'));
  try {
    const store = createStateStore(join(dir, 'state.json'));
    const quiet = createLogger({ level: 'silent', format: 'json' });
    const before = pipelineWithHeldHistory();
    for (const e of [REQUESTED, TASK_NOTE, ...SECOND.slice(0, 3), ...TASK_EVENTS]) before.pipeline.ingest(JSON.stringify(e));
    await settle();
    before.pipeline.seal();
    await new StateWriter(store, before.pipeline).save(true);
    assert.deepEqual(before.spans, []);

    const after = pipelineWithHeldHistory();
    await loadState(store, after.pipeline, at(22.6), quiet);
    const t = after.pipeline.tracker;
    assert.deepEqual({ asked: after.asked.map((a) => a.run), blocked: t.blockedRuns, waiting: t.waitingEvents, open: t.openRuns }, { asked: [{ type: 'flow', id: FR }], blocked: 2, waiting: 6, open: 2 });
    after.asked[0]!.answer(HISTORY);
    await settle();
    after.pipeline.ingest(JSON.stringify(SECOND[3]));
    await after.pipeline.finish('end_of_input');
    const rerun = rerunSpan(2) as { events: string[] };
    assert.deepEqual(after.spans.map((s) => [s.spanId, s.parentSpanId, s.events.map((e) => e.name)]), [
      [spanIdForRun(TASK), spanIdForRun(FR, 2), ['acme.rows.counted', 'Pending', 'Running', 'Completed']],
      [spanIdForRun(FR, 2), undefined, ['acme.rerun.requested', ...rerun.events]],
    ]);
    assert.deepEqual(after.spans.map(shape)[1], { ...rerun, events: ['acme.rerun.requested', ...rerun.events] });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
