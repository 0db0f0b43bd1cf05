/**
 * Whole run lifecycles as a Prefect user meets them, each built event by event as Prefect emits
 * them (shared/reference/prefect-event-stream.md §4a server-side flow-run states, §4b client-side
 * task-run states with the EventsWorker's related resources), through the real pipeline; each
 * asserts the whole trace: tree, attribute maps, span events, status, times, incomplete marks.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline } from '../../src/pipeline.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';
import { runModel } from '../helpers/model-run.js';
import { customEvent, EXAMPLE_DEPLOYMENT, EXAMPLE_FLOW, flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const T0 = Date.UTC(2026, 10, 21, 6, 0, 0);
const at = (s: number): number => T0 + s * 1000;
const us = (s: number): number => at(s) * 1000;
const HOUR = 3600;

const FLOW = EXAMPLE_FLOW;
const DEPLOY = EXAMPLE_DEPLOYMENT;
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TASK = '0198c7d2-6000-7abc-8def-000000000001';
const UI = 'http://prefect.local:4200';

/** Flow-run state events of FR, chained as the server chains them (`follows` = the previous state when within 5 min). */
function flowRun(states: [s: number, type: string, name: string, runCount: number, message?: string][], more: Partial<Parameters<typeof flowRunStateEvent>[0]> = {}): WireEvent[] {
  const out: WireEvent[] = [];
  let prev: { type: string; id: string; s: number } | undefined;
  states.forEach(([s, type, name, runCount, message], i) => {
    const id = `0198c7d2-f000-7000-8000-${String(i).padStart(12, '0')}`;
    out.push(flowRunStateEvent({
      flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, ...DEPLOY, tags: ['etl'],
      state: { type, name, ...(message === undefined ? {} : { message }) }, from: prev?.type ?? null, runCount, occurred: at(s), received: at(s) + 10,
      id, follows: prev !== undefined && s - prev.s < 300 ? prev.id : null, ...more,
    }));
    prev = { type, id, s };
  });
  return out;
}

/** Task-run state events of one task run inside FR, chained as the task engine chains them. */
function taskRun(id: string, name: string, key: string, states: [s: number, type: string, name: string, runCount: number][], more: Partial<Parameters<typeof taskRunStateEvent>[0]> = {}): WireEvent[] {
  const out: WireEvent[] = [];
  let prev: { type: string; id: string } | undefined;
  states.forEach(([s, type, stateName, runCount], i) => {
    const eventId = `0198c7d2-${id.slice(-4)}-7000-8000-${String(i).padStart(12, '0')}`;
    out.push(taskRunStateEvent({
      taskRunId: id, taskRunName: name, taskKey: key, flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW,
      state: { type, name: stateName }, from: prev?.type ?? null, runCount, occurred: at(s), received: at(s) + 10,
      id: eventId, follows: prev?.id ?? null, ...more,
    }));
    prev = { type, id: eventId };
  });
  return out;
}

const run = runModel;

/** A span as a plain object: everything a reader of the trace sees. */
function whole(s: SpanRecord) {
  return {
    name: s.name, kind: s.kind, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId,
    startUs: s.startUs, endUs: s.endUs, status: s.status, attributes: s.attributes,
    events: s.events.map((e) => [e.name, e.timeUs, e.attributes]), links: s.links,
  };
}

/** The attributes of a span event for a state. */
function stateAttrs(e: WireEvent, lagMs = 10): Record<string, unknown> {
  const r = e.resource;
  const from = (e.payload as { intended: { from: string | null } }).intended.from;
  return {
    'prefect.state.type': r['prefect.state-type'],
    'prefect.state.name': r['prefect.state-name'],
    'prefect.state.message': r['prefect.state-message'],
    'prefect.state.id': e.id,
    ...(from === null ? {} : { 'prefect.state.from': from }),
    'prefect.run.count': Number(r['prefect.run-count']),
    'prefect.event.received_lag_ms': lagMs,
  };
}

/** The span events of state events, in order. */
const stateEvents = (events: WireEvent[]) => events.map((e) => [e.resource['prefect.state-name'], Math.round(Date.parse(String(e.occurred)) * 1000), stateAttrs(e)]);

function flowAttrs(more: Record<string, unknown>): Record<string, unknown> {
  return {
    'prefect.run.id': FR, 'prefect.run.type': 'flow', 'prefect.run.name': 'crimson-fox',
    'prefect.tags': ['etl'], 'prefect.flow.name': 'etl', 'prefect.flow.id': FLOW.flowId,
    'prefect.deployment.name': 'nightly', 'prefect.deployment.id': DEPLOY.deployment.id,
    'prefect.work-pool.name': 'k8s-pool', 'prefect.work-pool.type': 'kubernetes', 'prefect.work-queue.name': 'default',
    'cicd.pipeline.name': 'etl', 'cicd.pipeline.run.id': FR, 'cicd.pipeline.run.url.full': `${UI}/runs/flow-run/${FR}`,
    ...more,
  };
}

const OTHER = '0198c7d2-9000-7000-8000-0000000000e1';
/** Another flow run's Running and Completed at `t`: events that move the event clock as a busy server's would. */
const otherRun = (t: number): WireEvent[] => [
  flowRunStateEvent({ flowRunId: OTHER, flowRunName: 'other', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(t), received: at(t) }),
  flowRunStateEvent({ flowRunId: OTHER, flowRunName: 'other', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: at(t + 1), received: at(t + 1) }),
];

test('a deployment run the scheduler created 30 h ahead (over the 24 h open-run timeout) becomes one whole span when it runs, Late included: waiting for its time is not idleness', async () => {
  const flow = flowRun([[0, 'SCHEDULED', 'Scheduled', 0], [30 * HOUR, 'SCHEDULED', 'Late', 0], [30 * HOUR + 5, 'PENDING', 'Pending', 0], [30 * HOUR + 6, 'RUNNING', 'Running', 1], [30 * HOUR + 60, 'COMPLETED', 'Completed', 1]]);
  const { spans, lines } = await run([flow[0]!, ...otherRun(25 * HOUR), ...flow.slice(1)]);
  assert.deepEqual(spans.filter((s) => s.run.id === FR).map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(30 * HOUR + 5), endUs: us(30 * HOUR + 60), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.run.wait_ms': (30 * HOUR + 5) * 1000, 'cicd.pipeline.result': 'success' }),
    events: stateEvents(flow), links: [],
  }]);
  assert.deepEqual(lines.filter((l) => l.late === true), []);
});

test('a run that is not scheduled any more is still ended by the open-run timeout once it started: Running, then silence for 25 h', async () => {
  const flow = flowRun([[0, 'SCHEDULED', 'Scheduled', 0], [10, 'PENDING', 'Pending', 0], [11, 'RUNNING', 'Running', 1]]);
  const { spans } = await run([...flow, ...otherRun(25 * HOUR)]);
  assert.deepEqual(spans.filter((s) => s.run.id === FR).map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(10), endUs: us(11), status: { code: 'unset' },
    attributes: flowAttrs({
      'prefect.run.count': 1, 'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running', 'prefect.run.wait_ms': 10_000,
      'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': 'idle_timeout',
    }),
    events: stateEvents(flow), links: [],
  }]);
});

test("a task run's span carries the task run's own tags (payload.task_run.tags), not the flow run's and deployment's tags the EventsWorker adds to its related resources", async () => {
  // The reference's own §4b example: task tags ["db"], related tags db, etl, nightly.
  const { readFileSync } = await import('node:fs');
  const lines = readFileSync(new URL('../../../test/fixtures/reference-examples.jsonl', import.meta.url), 'utf8').split('\n').filter((l) => l.startsWith('{'));
  const [flowRunning, taskRunning] = lines.map((l) => JSON.parse(l) as WireEvent);
  const { spans } = await run([flowRunning!, taskRunning!], { uiUrl: undefined });
  const task = spans.find((s) => s.run.type === 'task')!;
  assert.deepEqual(task.attributes, {
    'prefect.run.id': '0198c7d2-6000-7abc-8def-0123456789ab', 'prefect.run.type': 'task', 'prefect.run.name': 'extract-3f2',
    'prefect.run.count': 1, 'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running', 'prefect.tags': ['db'],
    'prefect.flow.name': 'etl', 'prefect.flow.id': FLOW.flowId, 'prefect.deployment.name': 'prod', 'prefect.deployment.id': DEPLOY.deployment.id,
    'prefect.work-pool.name': 'k8s-pool', 'prefect.work-queue.name': 'default', 'prefect.task.key': 'extract-9a8b7c6d',
    'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': 'end_of_input',
    'cicd.pipeline.task.name': 'extract', 'cicd.pipeline.task.run.id': '0198c7d2-6000-7abc-8def-0123456789ab',
  });
  // The flow run's tags are the server's (flow run ∪ flow ∪ deployment ∪ parent task run).
  assert.deepEqual(spans.find((s) => s.run.type === 'flow')!.attributes['prefect.tags'], ['etl', 'nightly']);
});

/** The attributes of a task span of FR (no deployment on the task events this builder makes). */
function taskAttrs(id: string, name: string, key: string, more: Record<string, unknown>): Record<string, unknown> {
  return {
    'prefect.run.id': id, 'prefect.run.type': 'task', 'prefect.run.name': name, 'prefect.tags': [],
    'prefect.flow.name': 'etl', 'prefect.flow.id': FLOW.flowId, 'prefect.task.key': key,
    'cicd.pipeline.task.name': key.replace(/-[0-9a-f]+$/, ''), 'cicd.pipeline.task.run.id': id, 'cicd.pipeline.task.run.url.full': `${UI}/runs/task-run/${id}`,
    ...more,
  };
}

test('flow-level retries: Running, AwaitingRetry (the server rejects Failed), Retrying with run count 2, Completed: one span, every transition an event, tasks of both tries under it', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [5, 'SCHEDULED', 'AwaitingRetry', 1, 'Flow run encountered an exception: ValueError'], [15, 'RUNNING', 'Retrying', 2], [20, 'COMPLETED', 'Completed', 2]]);
  const T2 = '0198c7d2-6000-7abc-8def-000000000002';
  const first = taskRun(TASK, 'extract-3f2', 'extract-9a8b7c6d', [[2, 'PENDING', 'Pending', 0], [2.1, 'RUNNING', 'Running', 1], [4, 'FAILED', 'Failed', 1]]);
  const second = taskRun(T2, 'extract-4a1', 'extract-9a8b7c6d', [[16, 'PENDING', 'Pending', 0], [16.1, 'RUNNING', 'Running', 1], [18, 'COMPLETED', 'Completed', 1]]);
  const { spans, pipeline } = await run([...flow.slice(0, 2), ...first, ...flow.slice(2, 4), ...second, flow[4]!]);
  const f = spans.find((s) => s.run.id === FR)!;
  assert.deepEqual(whole(f), {
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(20), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 2, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: stateEvents(flow), links: [],
  });
  assert.deepEqual(spans.filter((s) => s.run.type === 'task').map((s) => [s.run.id, s.parentSpanId, s.status, s.startUs, s.endUs]).sort(), [
    [TASK, spanIdForRun(FR), { code: 'error', message: 'Failed' }, us(2), us(4)],
    [T2, spanIdForRun(FR), { code: 'ok' }, us(16), us(18)],
  ].sort());
  assert.equal(pipeline.tracker.counts.reruns, 0, 'AwaitingRetry leaves Running, not a terminal state: no rerun');
});

test('task retries (with a delay: AwaitingRetry then Retrying; without: Retrying straight from Running) and a Cached task: whole task spans', async () => {
  const DELAYED = TASK;
  const QUICK = '0198c7d2-6000-7abc-8def-000000000002';
  const CACHED = '0198c7d2-6000-7abc-8def-000000000003';
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [30, 'COMPLETED', 'Completed', 1]]);
  const delayed = taskRun(DELAYED, 'load-7c1', 'load-55aa66bb', [[1, 'PENDING', 'Pending', 0], [1.5, 'RUNNING', 'Running', 1], [2, 'SCHEDULED', 'AwaitingRetry', 1], [12, 'RUNNING', 'Retrying', 2], [13, 'COMPLETED', 'Completed', 2]]);
  const quick = taskRun(QUICK, 'ping-0a1', 'ping-0f0e0d0c', [[3, 'PENDING', 'Pending', 0], [3.5, 'RUNNING', 'Running', 1], [4, 'RUNNING', 'Retrying', 2], [5, 'RUNNING', 'Retrying', 3], [6, 'FAILED', 'Failed', 3]]);
  const cached = taskRun(CACHED, 'fetch-b2c', 'fetch-11223344', [[7, 'PENDING', 'Pending', 0], [7.2, 'RUNNING', 'Running', 1], [7.3, 'COMPLETED', 'Cached', 1]]);
  const { spans } = await run([flow[0]!, ...delayed, ...quick, ...cached, flow[1]!]);
  const byId = new Map(spans.map((s) => [s.run.id, s]));
  const expected = (id: string, events: WireEvent[], startS: number, endS: number, status: SpanRecord['status'], attrs: Record<string, unknown>) => ({
    name: attrs['cicd.pipeline.task.name'], kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(id), parentSpanId: spanIdForRun(FR),
    startUs: us(startS), endUs: us(endS), status, attributes: attrs, events: stateEvents(events), links: [],
  });
  assert.deepEqual(whole(byId.get(DELAYED)!), expected(DELAYED, delayed, 1, 13, { code: 'ok' },
    taskAttrs(DELAYED, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 2, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.task.run.result': 'success' })));
  assert.deepEqual(whole(byId.get(QUICK)!), expected(QUICK, quick, 3, 6, { code: 'error', message: 'Failed' },
    taskAttrs(QUICK, 'ping-0a1', 'ping-0f0e0d0c', { 'prefect.run.count': 3, 'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'cicd.pipeline.task.run.result': 'failure', 'error.type': 'Failed' })));
  assert.deepEqual(whole(byId.get(CACHED)!), expected(CACHED, cached, 7, 7.3, { code: 'ok' },
    taskAttrs(CACHED, 'fetch-b2c', 'fetch-11223344', { 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Cached', 'cicd.pipeline.task.run.result': 'success' })));
});

test('a deployment concurrency limit: Scheduled, AwaitingConcurrencySlot (Pending rejected), Pending, Running, Completed; the wait is prefect.run.wait_ms', async () => {
  const flow = flowRun([[0, 'SCHEDULED', 'Scheduled', 0], [2, 'SCHEDULED', 'AwaitingConcurrencySlot', 0, 'Deployment concurrency limit reached.'], [40, 'PENDING', 'Pending', 0], [41, 'RUNNING', 'Running', 1], [50, 'COMPLETED', 'Completed', 1]]);
  const { spans } = await run(flow);
  assert.deepEqual(spans.map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(40), endUs: us(50), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.run.wait_ms': 40_000, 'cicd.pipeline.result': 'success' }),
    events: stateEvents(flow), links: [],
  }]);
});

test('pause and resume in-process (Paused → Running, run count kept), and a pause that timed out (Paused → Failed): one span each, the pause in its events', async () => {
  const resumed = flowRun([[0, 'RUNNING', 'Running', 1], [5, 'PAUSED', 'Paused', 1], [65, 'RUNNING', 'Running', 1], [70, 'COMPLETED', 'Completed', 1]]);
  const a = await run(resumed);
  assert.deepEqual(a.spans.map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(70), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: stateEvents(resumed), links: [],
  }]);
  const timedOut = flowRun([[0, 'RUNNING', 'Running', 1], [5, 'PAUSED', 'Paused', 1], [3605, 'FAILED', 'Failed', 1, 'The flow was paused and never resumed.']]);
  const b = await run(timedOut);
  assert.deepEqual(b.spans.map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(3605), status: { code: 'error', message: 'The flow was paused and never resumed.' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'cicd.pipeline.result': 'failure', 'error.type': 'Failed' }),
    events: stateEvents(timedOut), links: [],
  }]);
});

test('suspend and resume: Suspended (the process exits), resumed as Resuming (Scheduled), Pending, Running of the same run: one span, no rerun', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [5, 'PAUSED', 'Suspended', 1], [600, 'SCHEDULED', 'Resuming', 1], [602, 'PENDING', 'Pending', 1], [603, 'RUNNING', 'Running', 1], [610, 'COMPLETED', 'Completed', 1]]);
  const { spans, pipeline } = await run(flow);
  assert.deepEqual(spans.map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(610), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: stateEvents(flow), links: [],
  }]);
  assert.equal(pipeline.tracker.counts.reruns, 0);
});

test('cancellation: Cancelling then Cancelled while a task still runs (the process was killed); the runner\'s event lands on the flow run; the task is ended incomplete after the grace period, the flow span UNSET', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [10, 'CANCELLING', 'Cancelling', 1, 'Cancelled by user'], [12, 'CANCELLED', 'Cancelled', 1, 'Cancelled by user']]);
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1]]);
  const killed = customEvent({
    event: 'prefect.runner.cancelled-flow-run', resourceId: 'prefect.runner.my-runner', resourceName: 'my-runner', occurred: at(11), id: '0198c7d2-ffff-7000-8000-000000000001',
    related: [{ id: `prefect.deployment.${DEPLOY.deployment.id}`, role: 'deployment', name: 'nightly' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' }, { id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }],
  });
  const { spans, lines } = await run([flow[0]!, ...task, flow[1]!, killed, flow[2]!, ...otherRun(100)], { taskGraceMs: 60_000 });
  const byId = new Map(spans.map((s) => [s.run.id, s]));
  assert.deepEqual(whole(byId.get(FR)!), {
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(12), status: { code: 'unset' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'CANCELLED', 'prefect.state.name': 'Cancelled', 'cicd.pipeline.result': 'cancellation' }),
    events: [...stateEvents(flow.slice(0, 2)), ['prefect.runner.cancelled-flow-run', us(11), {
      'prefect.event.id': '0198c7d2-ffff-7000-8000-000000000001', 'prefect.event.resource.id': 'prefect.runner.my-runner', 'prefect.event.resource.name': 'my-runner', 'prefect.event.payload': '{}',
    }], ...stateEvents(flow.slice(2))],
    links: [],
  });
  assert.deepEqual(whole(byId.get(TASK)!), {
    name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR),
    startUs: us(1), endUs: us(2), status: { code: 'unset' },
    attributes: taskAttrs(TASK, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 1, 'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running', 'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': 'flow_ended' }),
    events: stateEvents(task), links: [],
  });
  assert.deepEqual(lines.filter((l) => String(l.msg).startsWith('STLOGGING: ') && l['prefect.run.id'] === FR).map((l) => l.msg), [
    `STLOGGING: Flow run ${FR} (crimson-fox) state transition: None -> RUNNING (state_name='Running', message='')`,
    `STLOGGING: Flow run ${FR} (crimson-fox) state transition: RUNNING -> CANCELLING (state_name='Cancelling', message='Cancelled by user')`,
    `STLOGGING: Event prefect.runner.cancelled-flow-run (id=0198c7d2-ffff-7000-8000-000000000001) on flow run ${FR}`,
    `STLOGGING: Flow run ${FR} (crimson-fox) state transition: CANCELLING -> CANCELLED (state_name='Cancelled', message='Cancelled by user')`,
  ]);
});

test('a run cancelled while still Scheduled (no infrastructure: Scheduled → Cancelled) spans its wait, from Scheduled to Cancelled, with no wait_ms', async () => {
  const flow = flowRun([[0, 'SCHEDULED', 'Scheduled', 0], [20, 'SCHEDULED', 'Late', 0], [30, 'CANCELLED', 'Cancelled', 0, 'Cancelled by user']]);
  const { spans } = await run(flow);
  assert.deepEqual(spans.map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(30), status: { code: 'unset' },
    attributes: flowAttrs({ 'prefect.run.count': 0, 'prefect.state.type': 'CANCELLED', 'prefect.state.name': 'Cancelled', 'cicd.pipeline.result': 'cancellation' }),
    events: stateEvents(flow), links: [],
  }]);
});

test('a task stopped at Pending "NotReady" (its upstream task failed) does not hold its failed flow run for the task grace: both go out once the flow has settled, the task incomplete with reason not_ready, ending at NotReady', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'FAILED', 'Failed', 1, "Flow run encountered an exception: ValueError: bad row"]]);
  const T2 = '0198c7d2-6000-7abc-8def-000000000002';
  const extract = taskRun(TASK, 'extract-3f2', 'extract-9a8b7c6d', [[2, 'PENDING', 'Pending', 0], [2.1, 'RUNNING', 'Running', 1], [4, 'FAILED', 'Failed', 1]]);
  const load = taskRun(T2, 'load-7c1', 'load-55aa66bb', [[2, 'PENDING', 'Pending', 0], [5, 'PENDING', 'NotReady', 0]]);
  const { spans } = await run([...flow.slice(0, 2), ...extract, ...load, flow[2]!, ...otherRun(30)], { taskGraceMs: 60_000 });
  // Out at 30 s on the event clock, before the other run's spans (end of input), not at 70 s.
  assert.deepEqual(spans.map((s) => [s.run.id, s.attributes['prefect.run.incomplete_reason']]), [[TASK, undefined], [T2, 'not_ready'], [FR, undefined], [OTHER, undefined]]);
  assert.deepEqual(whole(spans[1]!), {
    name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(T2), parentSpanId: spanIdForRun(FR),
    startUs: us(2), endUs: us(5), status: { code: 'unset' },
    attributes: taskAttrs(T2, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 0, 'prefect.state.type': 'PENDING', 'prefect.state.name': 'NotReady', 'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': 'not_ready', 'cicd.pipeline.task.run.result': 'skip' }),
    events: stateEvents(load), links: [],
  });
});

test('a task whose Pending and NotReady arrive after its flow run went out (client events come late) goes out once settled, not after the task grace', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'FAILED', 'Failed', 1]]);
  const load = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[2, 'PENDING', 'Pending', 0], [5, 'PENDING', 'NotReady', 0]]);
  const later = flowRunStateEvent({ flowRunId: OTHER, flowRunName: 'other', ...FLOW, state: { type: 'PENDING', name: 'Pending' }, from: null, runCount: 0, occurred: at(15), received: at(15) });
  const { spans } = await run([...flow, later, ...load, ...otherRun(20)], { taskGraceMs: 60_000 });
  // The task went out at 20 s on the event clock, with the other run still open, not at the end of input.
  assert.deepEqual(spans.map((s) => [s.run.id, s.attributes['prefect.run.incomplete_reason'], s.endUs]), [
    [FR, undefined, us(10)], [TASK, 'not_ready', us(5)], [OTHER, undefined, us(21)],
  ]);
});

test('a rerun whose first task event arrives just before the rerun\'s own states (reordered within the settle window): the task hangs under the rerun, complete; also when the first attempt was never seen', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [4, 'COMPLETED', 'Completed', 1], [99, 'SCHEDULED', 'Scheduled', 1], [99.1, 'PENDING', 'Pending', 1], [99.2, 'RUNNING', 'Running', 2], [103, 'COMPLETED', 'Completed', 2]]);
  const T2 = '0198c7d2-6000-7abc-8def-000000000002';
  const first = taskRun(TASK, 'extract-3f2', 'extract-9a8b7c6d', [[2, 'PENDING', 'Pending', 0], [2.1, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1]]);
  const second = taskRun(T2, 'extract-7d1', 'extract-9a8b7c6d', [[99.3, 'PENDING', 'Pending', 0], [99.35, 'RUNNING', 'Running', 1], [102, 'COMPLETED', 'Completed', 1]]);
  const shape = (spans: SpanRecord[]) => spans.map((s) => [s.run.id, s.run.attempt, s.parentSpanId ?? null, s.run.finalState?.name, s.attributes['prefect.run.incomplete_reason'] ?? null]).sort((a, b) => String(a[0]).localeCompare(String(b[0])) || Number(a[1]) - Number(b[1]));
  // The first attempt has long gone out (another run's events move the clock on) when the rerun's task comes.
  const seen = await run([...flow.slice(0, 2), ...first, flow[2]!, ...otherRun(50), second[0]!, ...flow.slice(3, 6), ...second.slice(1), flow[6]!]);
  assert.deepEqual(shape(seen.spans.filter((s) => s.run.id !== OTHER)), [
    [FR, 0, null, 'Completed', null], [FR, 1, null, 'Completed', null],
    [TASK, 0, spanIdForRun(FR, 0), 'Completed', null], [T2, 0, spanIdForRun(FR, 1), 'Completed', null],
  ]);
  assert.equal(seen.lines.filter((l) => l.late === true).length, 0);
  // `watch` started after the first attempt: the rerun is first seen leaving Completed.
  const unseen = await run([second[0]!, ...flow.slice(3, 6), ...second.slice(1), flow[6]!]);
  assert.deepEqual(shape(unseen.spans.filter((s) => s.run.id !== OTHER)), [[FR, 1, null, 'Completed', null], [T2, 0, spanIdForRun(FR, 1), 'Completed', null]]);
});

test('Crashed set by the server (infrastructure exited) with no client event after Running: the flow span is ERROR with the message, its running task incomplete', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [50, 'CRASHED', 'Crashed', 1, 'Flow run infrastructure exited with non-zero status code 137.']]);
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[2, 'PENDING', 'Pending', 0], [3, 'RUNNING', 'Running', 1]]);
  const { spans } = await run([...flow.slice(0, 2), ...task, flow[2]!, ...otherRun(200)], { taskGraceMs: 60_000 });
  assert.deepEqual(spans.filter((s) => s.run.id !== OTHER).map(whole), [
    {
      name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR),
      startUs: us(2), endUs: us(3), status: { code: 'unset' },
      attributes: taskAttrs(TASK, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 1, 'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running', 'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': 'flow_ended' }),
      events: stateEvents(task), links: [],
    },
    {
      name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
      startUs: us(0), endUs: us(50), status: { code: 'error', message: 'Flow run infrastructure exited with non-zero status code 137.' },
      attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'CRASHED', 'prefect.state.name': 'Crashed', 'cicd.pipeline.result': 'error', 'error.type': 'Crashed' }),
      events: stateEvents(flow), links: [],
    },
  ]);
});

test('a background task run (.delay() then a task worker): Scheduled by the caller, Pending/Running/Completed by the worker, no flow run: the root of its own trace, INTERNAL, with its wait', async () => {
  const BG = '0198c7d2-6000-7abc-8def-0000000000b1';
  const events = [[0, 'SCHEDULED', 'Scheduled', 0], [4, 'PENDING', 'Pending', 0], [4.1, 'RUNNING', 'Running', 1], [6, 'COMPLETED', 'Completed', 1]].map(([s, type, name, rc], i, all) => taskRunStateEvent({
    taskRunId: BG, taskRunName: 'send_email', taskKey: 'send_email-5e6f7a8b', dynamicKey: 'send_email-1a2b', state: { type: type as string, name: name as string },
    from: i === 0 ? null : (all[i - 1]![1] as string), runCount: rc as number, occurred: at(s as number), received: at(s as number) + 10, tags: ['email'],
    id: `0198c7d2-bbbb-7000-8000-00000000000${i}`, follows: i === 0 ? null : `0198c7d2-bbbb-7000-8000-00000000000${i - 1}`,
  }));
  const { spans, lines } = await run(events);
  assert.deepEqual(spans.map(whole), [{
    name: 'send_email', kind: 'internal', traceId: traceIdForRun(BG), spanId: spanIdForRun(BG), parentSpanId: undefined,
    startUs: us(4), endUs: us(6), status: { code: 'ok' },
    attributes: {
      'prefect.run.id': BG, 'prefect.run.type': 'task', 'prefect.run.name': 'send_email', 'prefect.run.count': 1,
      'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.tags': ['email'], 'prefect.task.key': 'send_email-5e6f7a8b',
      'prefect.run.wait_ms': 4000, 'cicd.pipeline.task.name': 'send_email', 'cicd.pipeline.task.run.id': BG,
      'cicd.pipeline.task.run.result': 'success', 'cicd.pipeline.task.run.url.full': `${UI}/runs/task-run/${BG}`,
    },
    events: stateEvents(events), links: [],
  }]);
  assert.deepEqual(lines.filter((l) => String(l.msg).startsWith('STLOGGING: ')).map((l) => [l.trace_id, l.span_id, l['prefect.state.name']]),
    ['Scheduled', 'Pending', 'Running', 'Completed'].map((n) => [traceIdForRun(BG), spanIdForRun(BG), n]));
});

const CHILD = '0198c7d2-7000-7000-8000-0000000000c1';
const CHILD_FLOW = { flowId: '11111111-1111-4111-8111-111111111111', flowName: 'load-warehouse' };

/** State events of the flow run CHILD, whose events carry the parent's tracking task `trackingId`. */
function childRun(trackingId: string, trackingName: string, states: [s: number, type: string, name: string, runCount: number][], more: Partial<Parameters<typeof flowRunStateEvent>[0]> = {}): WireEvent[] {
  let from: string | null = null;
  return states.map(([s, type, name, runCount], i) => {
    const e = flowRunStateEvent({
      flowRunId: CHILD, flowRunName: 'amber-heron', ...CHILD_FLOW, parentTaskRunId: trackingId, parentTaskRunName: trackingName,
      state: { type, name }, from, runCount, occurred: at(s), received: at(s) + 10, id: `0198c7d2-c000-7000-8000-${String(i).padStart(12, '0')}`, ...more,
    });
    from = type;
    return e;
  });
}

test('a run_deployment child: a deployment run on its own pool whose events carry the dummy tracking task; it hangs under the calling flow run in its trace, with its own deployment, pool, queue and wait', async () => {
  const DUMMY = '0198c7d1-ffff-7e00-8a00-aaaaaaaaaaaa';
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [60, 'COMPLETED', 'Completed', 1]]);
  const child = childRun(DUMMY, 'amber-owl', [[1, 'SCHEDULED', 'Scheduled', 0], [3, 'PENDING', 'Pending', 0], [4, 'RUNNING', 'Running', 1], [50, 'COMPLETED', 'Completed', 1]], {
    deployment: { id: 'a0a0a0a0-0000-4000-8000-000000000001', name: 'warehouse' }, workQueue: { id: 'a0a0a0a0-0000-4000-8000-000000000002', name: 'low' },
    workPool: { id: 'a0a0a0a0-0000-4000-8000-000000000003', name: 'docker-pool', type: 'docker' }, tags: ['etl', 'warehouse'],
  });
  const asked: string[] = [];
  const { spans } = await run([flow[0]!, ...child, flow[1]!], {}, (id) => (asked.push(id), Promise.resolve(FR)));
  assert.deepEqual(asked, [DUMMY]);
  assert.deepEqual(whole(spans.find((s) => s.run.id === CHILD)!), {
    name: 'load-warehouse', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(CHILD), parentSpanId: spanIdForRun(FR),
    startUs: us(3), endUs: us(50), status: { code: 'ok' },
    attributes: {
      'prefect.run.id': CHILD, 'prefect.run.type': 'flow', 'prefect.run.name': 'amber-heron', 'prefect.run.count': 1,
      'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.tags': ['etl', 'warehouse'],
      'prefect.flow.name': 'load-warehouse', 'prefect.flow.id': CHILD_FLOW.flowId,
      'prefect.deployment.name': 'warehouse', 'prefect.deployment.id': 'a0a0a0a0-0000-4000-8000-000000000001',
      'prefect.work-pool.name': 'docker-pool', 'prefect.work-pool.type': 'docker', 'prefect.work-queue.name': 'low',
      'prefect.parent_task_run.id': DUMMY, 'prefect.run.wait_ms': 2000,
      'cicd.pipeline.name': 'load-warehouse', 'cicd.pipeline.run.id': CHILD, 'cicd.pipeline.result': 'success', 'cicd.pipeline.run.url.full': `${UI}/runs/flow-run/${CHILD}`,
    },
    events: stateEvents(child), links: [],
  });
  assert.deepEqual(spans.map((s) => [s.run.id, s.kind, s.parentSpanId]).sort(), [[CHILD, 'internal', spanIdForRun(FR)], [FR, 'server', undefined]].sort());
});

test('a subflow called inside a task: its tracking task (`<subflow>-<uuid>`, no events) belongs to the parent flow run, so the subflow hangs under that flow run (SPEC §3), its own tasks under it', async () => {
  const TRACK = '0198c7d2-7000-7000-8000-0000000000d1';
  const SUBTASK = '0198c7d2-6000-7abc-8def-0000000000c2';
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [30, 'COMPLETED', 'Completed', 1]]);
  const caller = taskRun(TASK, 'orchestrate-1a1', 'orchestrate-77665544', [[1, 'PENDING', 'Pending', 0], [1.5, 'RUNNING', 'Running', 1], [20, 'COMPLETED', 'Completed', 1]]);
  const sub = childRun(TRACK, `load-warehouse-${TRACK}`, [[2, 'PENDING', 'Pending', 0], [2.5, 'RUNNING', 'Running', 1], [10, 'COMPLETED', 'Completed', 1]]);
  const subTask = [[3, 'PENDING', 'Pending', 0], [3.5, 'RUNNING', 'Running', 1], [9, 'COMPLETED', 'Completed', 1]].map(([s, type, name, rc], i) => taskRunStateEvent({
    taskRunId: SUBTASK, taskRunName: 'copy-9f9', taskKey: 'copy-0a0b0c0d', flowRunId: CHILD, flowRunName: 'amber-heron', ...CHILD_FLOW,
    state: { type: type as string, name: name as string }, from: i === 0 ? null : (['PENDING', 'RUNNING'][i - 1] ?? null), runCount: rc as number, occurred: at(s as number),
  }));
  const { spans } = await run([flow[0]!, caller[0]!, caller[1]!, sub[0]!, sub[1]!, ...subTask, sub[2]!, caller[2]!, flow[1]!], {}, (id) => Promise.resolve(id === TRACK ? FR : null));
  const by = new Map(spans.map((s) => [s.run.id, s]));
  assert.deepEqual([...by.values()].map((s) => [s.name, s.traceId, s.parentSpanId, s.kind, s.status.code, s.startUs, s.endUs]).sort(), [
    ['etl', traceIdForRun(FR), undefined, 'server', 'ok', us(0), us(30)],
    ['orchestrate', traceIdForRun(FR), spanIdForRun(FR), 'internal', 'ok', us(1), us(20)],
    ['load-warehouse', traceIdForRun(FR), spanIdForRun(FR), 'internal', 'ok', us(2), us(10)],
    ['copy', traceIdForRun(FR), spanIdForRun(CHILD), 'internal', 'ok', us(3), us(9)],
  ].sort());
  assert.equal(by.get(CHILD)!.attributes['prefect.parent_task_run.id'], TRACK);
});

test('a rerun from the UI after Failed, with tasks in both attempts: a second flow span (id from `<uuid>:1`) linked to the first, each attempt\'s tasks under their own attempt', async () => {
  const T2 = '0198c7d2-6000-7abc-8def-000000000002';
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'FAILED', 'Failed', 1, 'Flow run encountered an exception: KeyError'],
    [1000, 'SCHEDULED', 'AwaitingRetry', 1, 'Retry from the UI'], [1002, 'PENDING', 'Pending', 1], [1003, 'RUNNING', 'Running', 2], [1010, 'COMPLETED', 'Completed', 2]]);
  const first = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[2, 'PENDING', 'Pending', 0], [3, 'RUNNING', 'Running', 1], [9, 'FAILED', 'Failed', 1]]);
  const second = taskRun(T2, 'load-8d2', 'load-55aa66bb', [[1004, 'PENDING', 'Pending', 0], [1005, 'RUNNING', 'Running', 1], [1009, 'COMPLETED', 'Completed', 1]]);
  const { spans, pipeline } = await run([...flow.slice(0, 2), ...first, flow[2]!, ...flow.slice(3, 6), ...second, flow[6]!]);
  const flows = spans.filter((s) => s.run.id === FR).map(whole);
  assert.deepEqual(flows, [
    {
      name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
      startUs: us(0), endUs: us(10), status: { code: 'error', message: 'Flow run encountered an exception: KeyError' },
      attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'cicd.pipeline.result': 'failure', 'error.type': 'KeyError' }),
      events: stateEvents(flow.slice(0, 3)), links: [],
    },
    {
      name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR, 1), parentSpanId: undefined,
      startUs: us(1002), endUs: us(1010), status: { code: 'ok' },
      attributes: flowAttrs({ 'prefect.run.count': 2, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.run.wait_ms': 2000, 'prefect.run.attempt': 1, 'cicd.pipeline.result': 'success' }),
      events: stateEvents(flow.slice(3)), links: [{ traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), attributes: { 'prefect.link.kind': 'previous_attempt' } }],
    },
  ]);
  assert.deepEqual(spans.filter((s) => s.run.type === 'task').map((s) => [s.run.id, s.parentSpanId, s.status.code]).sort(), [[TASK, spanIdForRun(FR), 'error'], [T2, spanIdForRun(FR, 1), 'ok']].sort());
  assert.equal(pipeline.tracker.counts.reruns, 1);
});

test('the events around a run as Prefect sends them: a tag concurrency limit acquired and released inside a task (on the task), an artifact made by the flow and an automation action naming the flow run as its target (on the flow run), a deployment update naming no run (nowhere): whole spans', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [10, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[1, 'PENDING', 'Pending', 0], [1.5, 'RUNNING', 'Running', 1], [3.1, 'COMPLETED', 'Completed', 1]]);
  const LIMIT = '0198c7d2-c000-7000-8000-000000000001';
  // Emitted by the client inside the task: the EventsWorker adds the task run, its flow run, flow and the run's tags.
  const inTask = [
    { id: `prefect.task-run.${TASK}`, role: 'task-run', name: 'load-7c1' }, { id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' },
    { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' }, { id: 'prefect.tag.etl', role: 'tag' },
  ];
  const limit = (s: number, what: string, id: string, follows?: string): WireEvent => {
    const e = customEvent({ event: `prefect.concurrency-limit.${what}`, resourceId: `prefect.concurrency-limit.${LIMIT}`, resourceName: 'tag:db', related: inTask, payload: {}, occurred: at(s), id, follows });
    Object.assign(e.resource, { 'slots-acquired': '1', limit: '2' });
    return e;
  };
  const acquired = limit(1.2, 'acquired', '0198c7d2-c000-7000-8000-0000000000a1');
  const released = limit(3, 'released', '0198c7d2-c000-7000-8000-0000000000a2', acquired.id);
  const artifact = customEvent({
    event: 'prefect.artifact.created', resourceId: 'prefect.artifact.0198c7d2-c000-7000-8000-0000000000f1', occurred: at(4), id: '0198c7d2-c000-7000-8000-0000000000a3',
    payload: { key: 'rows', type: 'table', description: 'rows loaded' },
    related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' }, { id: 'prefect.tag.etl', role: 'tag' }],
  });
  // Server-side: no run context, the run is only the action's target.
  const automation = customEvent({
    event: 'prefect.automation.action.executed', resourceId: 'prefect.automation.0198c7d2-c000-7000-8000-0000000000e1', resourceName: 'notify-on-slow', occurred: at(5), id: '0198c7d2-c000-7000-8000-0000000000a4',
    payload: { action_index: 0, action_type: 'send-notification', invocation: '0198c7d2-c000-7000-8000-0000000000e2' },
    related: [{ id: 'prefect.event.0198c7d2-c000-7000-8000-0000000000e3', role: 'triggering-event' }, { id: `prefect.flow-run.${FR}`, role: 'target', name: 'crimson-fox' }],
  });
  Object.assign(automation.resource, { 'prefect.trigger-type': 'event', 'prefect.posture': 'Reactive' });
  const deployment = customEvent({
    event: 'prefect.deployment.updated', resourceId: `prefect.deployment.${DEPLOY.deployment.id}`, resourceName: 'nightly', occurred: at(6), id: '0198c7d2-c000-7000-8000-0000000000a5',
    payload: { updated_fields: ['paused'], updates: { paused: { from: false, to: true } } },
    related: [{ id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' }],
  });
  const { spans, pipeline } = await run([flow[0]!, task[0]!, acquired, task[1]!, released, task[2]!, artifact, automation, deployment, flow[1]!]);
  const runEvent = (e: WireEvent, payload: string) => [e.event, Math.round(Date.parse(String(e.occurred)) * 1000), {
    'prefect.event.id': e.id, 'prefect.event.resource.id': e.resource['prefect.resource.id'],
    ...(e.resource['prefect.resource.name'] === undefined ? {} : { 'prefect.event.resource.name': e.resource['prefect.resource.name'] }),
    'prefect.event.payload': payload,
  }];
  assert.deepEqual(spans.map(whole), [
    {
      name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR),
      startUs: us(1), endUs: us(3.1), status: { code: 'ok' },
      attributes: taskAttrs(TASK, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.task.run.result': 'success' }),
      events: [stateEvents(task)[0], runEvent(acquired, '{}'), stateEvents(task)[1], runEvent(released, '{}'), stateEvents(task)[2]],
      links: [],
    },
    {
      name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
      startUs: us(0), endUs: us(10), status: { code: 'ok' },
      attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
      events: [stateEvents(flow)[0], runEvent(artifact, '{"key":"rows","type":"table","description":"rows loaded"}'),
        runEvent(automation, '{"action_index":0,"action_type":"send-notification","invocation":"0198c7d2-c000-7000-8000-0000000000e2"}'), stateEvents(flow)[1]],
      links: [],
    },
  ]);
  assert.equal(pipeline.tracker.counts.spanEvents, 9, 'five transitions and four run events; the deployment update is on no span');
});

test('an automation that fires or resolves on a run (a trigger on a task\'s Running, a proactive trigger on a flow run left Running): a span event on the run its payload names; one about no run is on no span', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [10, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1], [5, 'COMPLETED', 'Completed', 1]]);
  // As the server writes them (create_automation_state_change_event, src/prefect/server/events/schemas/automations.py):
  // the automation is the resource, the event that set it off the only related resource, and that event dumped whole in the payload.
  const automation = (event: string, s: number, id: string, name: string, triggering: WireEvent | null, labels: Record<string, string>): WireEvent =>
    customEvent({
      event, resourceId: `prefect.automation.0198c7d2-c000-7000-8000-0000000000e${id.slice(-1)}`, resourceName: name, occurred: at(s), id,
      related: triggering === null ? [] : [{ id: `prefect.event.${triggering.id}`, role: 'triggering-event' }],
      payload: { triggering_labels: labels, triggering_event: triggering },
    });
  const onTask = automation('prefect.automation.triggered', 2.5, '0198c7d2-c000-7000-8000-0000000000b1', 'page-on-load', task[1]!, {});
  // Proactive (no event set it off): the run is named only by the label it counts by.
  const stuck = automation('prefect.automation.triggered', 7, '0198c7d2-c000-7000-8000-0000000000b2', 'flow-stuck', null, { 'prefect.resource.id': `prefect.flow-run.${FR}` });
  const resolved = automation('prefect.automation.resolved', 9, '0198c7d2-c000-7000-8000-0000000000b3', 'flow-stuck', null, { 'prefect.resource.id': `prefect.flow-run.${FR}` });
  const aboutNoRun = automation('prefect.automation.triggered', 8, '0198c7d2-c000-7000-8000-0000000000b4', 'pool-down', null, { 'prefect.resource.id': 'prefect.work-pool.0198c7d2-c000-7000-8000-0000000000d1' });
  const { spans, pipeline } = await run([flow[0]!, task[0]!, task[1]!, onTask, task[2]!, stuck, aboutNoRun, resolved, flow[1]!]);
  const runEvent = (e: WireEvent) => [e.event, Math.round(Date.parse(String(e.occurred)) * 1000), {
    'prefect.event.id': e.id, 'prefect.event.resource.id': e.resource['prefect.resource.id'], 'prefect.event.resource.name': e.resource['prefect.resource.name'],
    'prefect.event.payload': JSON.stringify(e.payload),
  }];
  assert.deepEqual(spans.map((s) => [s.run.id, s.events.map((e) => [e.name, e.timeUs, e.attributes])]), [
    [TASK, [stateEvents(task)[0], stateEvents(task)[1], runEvent(onTask), stateEvents(task)[2]]],
    [FR, [stateEvents(flow)[0], runEvent(stuck), runEvent(resolved), stateEvents(flow)[1]]],
  ]);
  assert.deepEqual([pipeline.counters.accepted, pipeline.counters.unrelated], [8, 1]);
});

test('a flow run first seen through a worker event, its deployment, pool and queue only in some events (heartbeats name no pool or queue): the span has them all, the pool type from the server\'s events', async () => {
  const worker = customEvent({
    event: 'prefect.worker.submitted-flow-run', resourceId: 'prefect.worker.kubernetes.k8s-worker-1', resourceName: 'k8s-worker-1', occurred: at(0.5), id: '0198c7d2-ffff-7000-8000-000000000002',
    related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' },
      { id: `prefect.deployment.${DEPLOY.deployment.id}`, role: 'deployment', name: 'nightly' }, { id: `prefect.work-pool.${DEPLOY.workPool.id}`, role: 'work-pool', name: 'k8s-pool' }],
  });
  const heartbeat = customEvent({
    event: 'prefect.flow-run.heartbeat', resourceId: `prefect.flow-run.${FR}`, resourceName: 'crimson-fox', occurred: at(5),
    related: [{ id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' }, { id: `prefect.deployment.${DEPLOY.deployment.id}`, role: 'deployment', name: 'nightly' }],
  });
  const flow = flowRun([[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1], [9, 'COMPLETED', 'Completed', 1]]);
  const { spans } = await run([worker, flow[0]!, flow[1]!, heartbeat, flow[2]!]);
  assert.deepEqual(spans.map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(1), endUs: us(9), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: [['prefect.worker.submitted-flow-run', us(0.5), {
      'prefect.event.id': '0198c7d2-ffff-7000-8000-000000000002', 'prefect.event.resource.id': 'prefect.worker.kubernetes.k8s-worker-1', 'prefect.event.resource.name': 'k8s-worker-1', 'prefect.event.payload': '{}',
    }], ...stateEvents(flow)],
    links: [],
  }]);
});

test('an event emitted inside a task with its flow run as the resource (the EventsWorker relates the task it was emitted in): a span event of the flow run, which stays a root with no prefect.parent_task_run.id', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [9, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'extract-3f2', 'extract-9a8b7c6d', [[1, 'PENDING', 'Pending', 0], [1.5, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1]]);
  // emit_event(resource={"prefect.resource.id": f"prefect.flow-run.{flow_run.id}"}) in the task: the
  // EventsWorker appends its run context (src/prefect/events/related.py), the flow run left out as the
  // resource already, the task run in role `task-run`, which on the flow run's own state events would
  // name a subflow's tracking task.
  const checkpoint = customEvent({
    event: 'acme.checkpoint', resourceId: `prefect.flow-run.${FR}`, occurred: at(2), id: '0198c7d2-ffff-7000-8000-0000000000a1', payload: { rows: 17 },
    related: [{ id: `prefect.task-run.${TASK}`, role: 'task-run', name: 'extract-3f2' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' },
      { id: `prefect.deployment.${DEPLOY.deployment.id}`, role: 'deployment', name: 'nightly' }],
  });
  const { spans } = await run([flow[0]!, task[0]!, task[1]!, checkpoint, task[2]!, flow[1]!]);
  assert.deepEqual(spans.filter((s) => s.run.id === FR).map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(9), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: [stateEvents(flow)[0], ['acme.checkpoint', us(2), {
      'prefect.event.id': '0198c7d2-ffff-7000-8000-0000000000a1', 'prefect.event.resource.id': `prefect.flow-run.${FR}`, 'prefect.event.payload': '{"rows":17}',
    }], stateEvents(flow)[1]],
    links: [],
  }]);
  assert.deepEqual(spans.filter((s) => s.run.id === TASK).map((s) => [s.parentSpanId, s.events.map((e) => e.name)]), [[spanIdForRun(FR), ['Pending', 'Running', 'Completed']]]);
});

/**
 * A worker says `prefect.worker.executed-flow-run` (with the infrastructure's exit code) once the
 * flow run's process has exited, so after its terminal state: seconds after it, past the settle window.
 */
function workerRun(executedAt: number | undefined) {
  const worker = (event: string, t: number, id: string, exit?: string) => customEvent({
    event, resourceId: 'prefect.worker.process.laptop-worker', resourceName: 'laptop-worker', occurred: at(t), id,
    related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' },
      { id: `prefect.deployment.${DEPLOY.deployment.id}`, role: 'deployment', name: 'nightly' }, { id: `prefect.work-pool.${DEPLOY.workPool.id}`, role: 'work-pool', name: 'k8s-pool' }],
    ...(exit === undefined ? {} : { payload: {} }),
  });
  const submitted = worker('prefect.worker.submitted-flow-run', 0.5, '0198c7d2-ffff-7000-8000-000000000011');
  const executed = executedAt === undefined ? undefined : worker('prefect.worker.executed-flow-run', executedAt, '0198c7d2-ffff-7000-8000-000000000012', '0');
  const flow = flowRun([[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1], [9, 'COMPLETED', 'Completed', 1]]);
  const workerEvent = (e: WireEvent) => [e.event, Math.round(Date.parse(String(e.occurred)) * 1000), {
    'prefect.event.id': e.id, 'prefect.event.resource.id': 'prefect.worker.process.laptop-worker', 'prefect.event.resource.name': 'laptop-worker', 'prefect.event.payload': '{}',
  }];
  return { events: [submitted, ...flow, ...(executed === undefined ? [] : [executed])], flow, spanEvents: [workerEvent(submitted), ...stateEvents(flow), ...(executed === undefined ? [] : [workerEvent(executed)])] };
}

/**
 * The pipeline as `watch` runs it, on the machine's clock, with time moved on by `tick(at)` rather
 * than waited for: events arrive as they are ingested; `later(ms)` is a tick that far ahead.
 */
function wallClockModel() {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'wall', delivery: null, onSpan: (s) => spans.push(s) });
  const t0 = Date.now();
  return {
    spans, lines,
    ingest: (events: readonly WireEvent[]) => events.forEach((e) => pipeline.ingest(JSON.stringify(e))),
    later: (ms: number) => pipeline.tick(t0 + ms),
  };
}

/** The worker run's flow span, whole: completed, with the span events it was given. */
const completedWorkerSpan = (events: unknown) => ({
  name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
  startUs: us(1), endUs: us(9), status: { code: 'ok' },
  attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
  events, links: [],
});

test('on the machine\'s clock, a flow run a worker submitted waits past its settle window for the worker\'s executed-flow-run, which comes after the process exited: one whole span with both worker events, nothing late', () => {
  const w = workerRun(12);
  const m = wallClockModel();
  m.ingest(w.events.slice(0, -1));
  m.later(3_000);
  m.ingest(w.events.slice(-1));
  m.later(6_000);
  assert.deepEqual(m.spans.map(whole), [completedWorkerSpan(w.spanEvents)]);
  assert.deepEqual(m.lines.filter((l) => l.late === true), []);
});

test('on the machine\'s clock, a flow run a worker submitted whose executed-flow-run never comes (a worker that died) goes out complete once the task grace after its end has passed, not before', () => {
  const w = workerRun(undefined);
  const m = wallClockModel();
  m.ingest(w.events);
  m.later(59_000);
  assert.deepEqual(m.spans, []);
  m.later(61_000);
  assert.deepEqual(m.spans.map(whole), [completedWorkerSpan(w.spanEvents)]);
});

test('a flow run waiting for its worker\'s executed-flow-run still waits for it after a restart: the wait is kept in the state file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-worker-wait-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const w = workerRun(12);
  const quiet = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const before = createPipeline({ config, logger: quiet, clock: 'wall', delivery: null });
  for (const e of w.events.slice(0, -1)) before.ingest(JSON.stringify(e));
  const store = createStateStore(join(dir, 'state.json'));
  await new StateWriter(store, before).save(true);

  const spans: SpanRecord[] = [];
  const after = createPipeline({ config, logger: quiet, clock: 'wall', delivery: null, onSpan: (s) => spans.push(s) });
  const t0 = Date.now();
  await loadState(createStateStore(join(dir, 'state.json')), after, t0, quiet);
  after.tick(t0 + 3_000);
  assert.equal(spans.length, 0, 'still waiting for the worker after the restart');
  after.ingest(JSON.stringify(w.events.at(-1)));
  after.tick(t0 + 6_000);
  assert.deepEqual(spans.map((s) => [s.run.id, s.events.map((e) => e.name)]), [[FR, w.spanEvents.map((e) => e[0])]]);
});

test('on the machine\'s clock, scheduled flow runs seen moments apart whose open-run timeouts fall a tick apart are asked about in one request', async (t) => {
  // The machine's clock is the test's: each event is taken at the very time given, however long a
  // busy machine takes over it (a first ingest alone can take longer than the gap between them).
  const t0 = Date.now();
  t.mock.timers.enable({ apis: ['Date'], now: t0 });
  const calls: string[][] = [];
  const quiet = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI, openRunTimeoutMs: 1_000 }, {});
  const pipeline = createPipeline({ config, logger: quiet, clock: 'wall', delivery: null, deletedFlowRuns: (ids) => (calls.push([...ids]), Promise.resolve([])) });
  const [A, B, C] = ['0198c7d2-5b1e-7a3c-9f10-0000000000b1', '0198c7d2-5b1e-7a3c-9f10-0000000000b2', '0198c7d2-5b1e-7a3c-9f10-0000000000b3'];
  const scheduled = (id: string) => JSON.stringify(flowRunStateEvent({ flowRunId: id, flowRunName: 'x', ...FLOW, state: { type: 'SCHEDULED', name: 'Scheduled' }, from: null, runCount: 0, occurred: Date.now() + 3_600_000 }));
  pipeline.ingest(scheduled(A));
  t.mock.timers.setTime(t0 + 30);
  pipeline.ingest(scheduled(B));
  // C comes long after: its timeout is not near.
  t.mock.timers.setTime(t0 + 400);
  pipeline.ingest(scheduled(C));
  // A has waited its timeout; B's comes 30 ms later, within a tenth of it.
  pipeline.tick(t0 + 1_010);
  assert.deepEqual(calls, [[A, B]]);
  await pipeline.shutdown(0);
});

test('a flow run no worker submitted goes out once its settle window has passed, as before', () => {
  const m = wallClockModel();
  m.ingest(workerRun(undefined).flow);
  m.later(1_000);
  assert.deepEqual(m.spans.map((s) => [s.run.id, s.attributes['prefect.state.type']]), [[FR, 'COMPLETED']]);
});

test('a run suspended for 30 h (over the 24 h open-run timeout) waiting for a person, then resumed: one whole span, nothing late; waiting for a resume is not idleness', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [5, 'PAUSED', 'Suspended', 1], [30 * HOUR, 'SCHEDULED', 'Resuming', 1], [30 * HOUR + 2, 'PENDING', 'Pending', 1], [30 * HOUR + 3, 'RUNNING', 'Running', 1], [30 * HOUR + 10, 'COMPLETED', 'Completed', 1]]);
  const { spans, lines } = await run([...flow.slice(0, 3), ...otherRun(25 * HOUR), ...flow.slice(3)]);
  assert.deepEqual(spans.filter((s) => s.run.id === FR).map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(30 * HOUR + 10), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: stateEvents(flow), links: [],
  }]);
  assert.deepEqual(lines.filter((l) => l.late === true), []);
});

test('a flow run Scheduled again after it started and silent past the 24 h open-run timeout (a resumed suspension waiting 30 h for a worker, its tasks after; a flow retry delayed 26 h): one whole span each, nothing late, no task ended early', async () => {
  const resumed = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [5, 'PAUSED', 'Suspended', 1], [HOUR, 'SCHEDULED', 'Resuming', 1], [31 * HOUR, 'PENDING', 'Pending', 1], [31 * HOUR + 1, 'RUNNING', 'Running', 1], [31 * HOUR + 600, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[31 * HOUR + 2, 'PENDING', 'Pending', 0], [31 * HOUR + 3, 'RUNNING', 'Running', 1], [31 * HOUR + 500, 'COMPLETED', 'Completed', 1]]);
  const a = await run([...resumed.slice(0, 4), ...otherRun(26 * HOUR), ...resumed.slice(4, 6), task[0]!, task[1]!, ...otherRun(31 * HOUR + 200), task[2]!, resumed[6]!]);
  assert.deepEqual(a.spans.filter((s) => s.run.id !== OTHER).map(whole), [
    {
      name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR),
      startUs: us(31 * HOUR + 2), endUs: us(31 * HOUR + 500), status: { code: 'ok' },
      attributes: taskAttrs(TASK, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.task.run.result': 'success' }),
      events: stateEvents(task), links: [],
    },
    {
      name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
      startUs: us(0), endUs: us(31 * HOUR + 600), status: { code: 'ok' },
      attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
      events: stateEvents(resumed), links: [],
    },
  ]);
  assert.deepEqual(a.lines.filter((l) => l.late === true), []);
  const retried = flowRun([[0, 'RUNNING', 'Running', 1], [10, 'SCHEDULED', 'AwaitingRetry', 1, 'Flow run encountered an exception: ConnectionError: warehouse down'], [26 * HOUR + 10, 'RUNNING', 'Retrying', 2], [26 * HOUR + 70, 'COMPLETED', 'Completed', 2]]);
  const b = await run([...retried.slice(0, 2), ...otherRun(25 * HOUR), ...retried.slice(2)]);
  assert.deepEqual(b.spans.filter((s) => s.run.id === FR).map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(26 * HOUR + 70), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 2, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: stateEvents(retried), links: [],
  }]);
  assert.deepEqual(b.lines.filter((l) => l.late === true), []);
});

/**
 * FR completed, rerun at once (Scheduled a second after the Completed), failed with a task inside,
 * rerun again and completed: in order, and delivered in three orders where the rerun's first states
 * (or its task's) come before the terminal state they leave.
 */
function rerunAtOnce() {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1],
    [4, 'SCHEDULED', 'Scheduled', 1], [5, 'RUNNING', 'Running', 2], [6, 'FAILED', 'Failed', 2],
    [7, 'SCHEDULED', 'Scheduled', 2], [8, 'RUNNING', 'Running', 3], [9, 'COMPLETED', 'Completed', 3]]);
  const task = taskRun(TASK, 'extract-1a', 'extract-abc', [[5.1, 'PENDING', 'Pending', 0], [5.2, 'RUNNING', 'Running', 1], [5.3, 'COMPLETED', 'Completed', 1]]);
  const [P, R, C, S2, R2, F2, S3, R3, C3] = flow;
  return {
    inOrder: [...flow.slice(0, 5), ...task, ...flow.slice(5)],
    orders: {
      'Scheduled before Completed': [P, R, S2, C, R2, ...task, F2, S3, R3, C3],
      'Running before Scheduled, both before Completed': [P, R, R2, S2, C, ...task, F2, S3, R3, C3],
      'a task of the rerun before Completed': [P, R, S2, ...task, C, R2, F2, R3, S3, C3],
    },
  };
}

/** The spans as wholes, in span id order. */
const wholes = (spans: readonly SpanRecord[]) => spans.map(whole).sort((x, y) => x.spanId.localeCompare(y.spanId));

test('a rerun whose first states arrive before the previous attempt\'s terminal state (reordered within the settle window), a task of the rerun among them: the same spans as in order, one per attempt', async () => {
  const { inOrder: events, orders } = rerunAtOnce();
  const inOrder = await run(events);
  const expected = wholes(inOrder.spans);
  assert.deepEqual(inOrder.spans.map((s) => [s.run.id, s.run.attempt, s.parentSpanId]).sort(), [
    [FR, 0, undefined], [FR, 1, undefined], [FR, 2, undefined], [TASK, 0, spanIdForRun(FR, 1)],
  ].sort());
  for (const [label, reordered] of Object.entries(orders)) {
    const { spans } = await run(reordered);
    assert.deepEqual(wholes(spans), expected, label);
  }
});

test('the same reordered reruns with a restart from the state file after any of their events: the same spans as in order, the rerun\'s task under the rerun', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-lifecycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { inOrder, orders } = rerunAtOnce();
  await assertSameAcrossRestarts(dir, orders, wholes((await run(inOrder)).spans));
});

/**
 * Each order of events, with a restart from the state file after each of its events in turn (a
 * save, a new pipeline that loads it, the rest of the events): the spans `expected`, every time.
 */
async function assertSameAcrossRestarts(dir: string, orders: Record<string, readonly (WireEvent | undefined)[]>, expected: unknown): Promise<void> {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const quiet = createLogger({ level: 'silent', format: 'json' });
  for (const [label, maybe] of Object.entries(orders)) {
    const events = maybe.map((e) => e!);
    for (let cut = 1; cut < events.length; cut++) {
      const store = createStateStore(join(dir, `${cut}-${label.replaceAll(' ', '-')}`, 'state.json'));
      const spans: SpanRecord[] = [];
      const before = createPipeline({ config, logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
      for (const e of events.slice(0, cut)) before.ingest(JSON.stringify(e));
      before.seal();
      await new StateWriter(store, before).save(true);
      const after = createPipeline({ config, logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
      await loadState(store, after, Date.parse(events[cut - 1]!.occurred), quiet);
      for (const e of events.slice(cut)) after.ingest(JSON.stringify(e));
      await after.finish('end_of_input');
      assert.deepEqual(wholes(spans), expected, `${label}, restart after ${cut} events`);
    }
  }
}

/**
 * FR ran for 100 ms, completed and was rerun at once: in order, and delivered in two orders where
 * its Running comes after the rerun's Scheduled.
 */
function rerunAfter100Ms() {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [1.1, 'COMPLETED', 'Completed', 1],
    [1.15, 'SCHEDULED', 'Scheduled', 1], [1.2, 'PENDING', 'Pending', 1], [1.25, 'RUNNING', 'Running', 2], [1.3, 'FAILED', 'Failed', 2]]);
  const [P, R, C, S2, P2, R2, F2] = flow;
  return {
    flow,
    orders: {
      'the Running after the Completed and the rerun\'s Scheduled': [P, C, S2, R, P2, R2, F2],
      'the Running after the rerun\'s Scheduled and the Completed': [P, S2, C, R, P2, R2, F2],
    },
  };
}

test('a rerun at once of a run that ran for 100 ms, a state of the earlier attempt arriving after the rerun\'s first state (within the settle window): the same spans as in order, the late state\'s line with the earlier attempt\'s span id', async () => {
  const { flow, orders } = rerunAfter100Ms();
  const expected = wholes((await run(flow)).spans);
  const R = flow[1]!;
  for (const [label, events] of Object.entries(orders)) {
    const { spans, lines } = await run(events);
    assert.deepEqual(wholes(spans), expected, label);
    assert.deepEqual(lines.filter((l) => l['prefect.event.id'] === R.id).map((l) => [l.span_id, l.late]), [[spanIdForRun(FR, 0), undefined]], label);
  }
});

test('the same, with a restart from the state file after any of the events: the earlier attempt, settling beside the rerun, is saved and taken over', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-lifecycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { flow, orders } = rerunAfter100Ms();
  await assertSameAcrossRestarts(dir, orders, wholes((await run(flow)).spans));
});

test('the notice lines of a rerun, of a run the open-run bound ended and of one the end of input left open carry the run id and trace id of the run under the keys of its STLOGGING lines', async () => {
  const OTHER = '0198c7d2-7777-7abc-8def-0123456789ab';
  const rerun = flowRun([[0, 'RUNNING', 'Running', 1], [2, 'FAILED', 'Failed', 1], [60, 'SCHEDULED', 'Scheduled', 1], [61, 'RUNNING', 'Running', 2]]);
  // A second flow run opened while FR's rerun is open: under a bound of one open run, FR is ended early.
  const other = flowRunStateEvent({ flowRunId: OTHER, flowRunName: 'amber-owl', ...EXAMPLE_FLOW, state: { type: 'RUNNING', name: 'Running' }, from: null, runCount: 1, occurred: Date.parse('2026-08-21T12:01:10Z') });
  const { lines } = await run([...rerun, other], { maxOpenRuns: 1 });
  const notices = lines.filter((l) => l.component === 'model').map(({ time: _time, pid: _pid, hostname: _hostname, ...l }) => l);
  assert.deepEqual(notices, [
    { level: 30, service: 'prefect-otel', component: 'model', kind: 'rerun', 'prefect.run.id': FR, attempt: 1, trace_id: traceIdForRun(FR), msg: 'run left its terminal state; new span for the rerun' },
    { level: 40, service: 'prefect-otel', component: 'model', kind: 'evicted', 'prefect.run.id': FR, trace_id: traceIdForRun(FR), count: 1, msg: 'open-run bound reached; least recently active run ended early' },
    // The evicted run's warning says it ended early; the one still open at the end of the input gets a line that it did.
    {
      level: 30, service: 'prefect-otel', component: 'model', kind: 'incomplete', 'prefect.run.id': OTHER, 'prefect.run.incomplete_reason': 'end_of_input', 'prefect.state.name': 'Running',
      trace_id: traceIdForRun(OTHER), span_id: spanIdForRun(OTHER), trace_flags: '01',
      msg: `Flow run ${OTHER} ended incomplete (end_of_input) at its last known time, in state Running`,
    },
  ]);
});

test('a task and a subflow of a rerun, started before the previous attempt\'s terminal state arrived (reordered within the settle window), with or without a restart from the state file in between: they hang under the rerun\'s span, as in order', async (t) => {
  const TRACK = '0198c7d2-7000-7000-8000-0000000000d2';
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1],
    [4, 'SCHEDULED', 'Scheduled', 1], [5, 'RUNNING', 'Running', 2], [6, 'FAILED', 'Failed', 2]]);
  const child = childRun(TRACK, 'load-warehouse-d2', [[5.1, 'PENDING', 'Pending', 0], [5.2, 'RUNNING', 'Running', 1], [5.5, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'extract-1a', 'extract-abc', [[5.05, 'PENDING', 'Pending', 0], [5.3, 'RUNNING', 'Running', 1], [5.4, 'COMPLETED', 'Completed', 1]]);
  const [P, R, C, S2, R2, F2] = flow;
  const [CP, CR, CC] = child;
  const [TP, TR, TC] = task;
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-lifecycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const quiet = createLogger({ level: 'silent', format: 'json' });
  /**
   * Each lookup of the tracking task answered before the next event, as a server on the same
   * network does; with `restart`, the state is saved to a state file after that many events and a
   * new process takes it over from the file.
   */
  const fed = async (events: readonly (WireEvent | undefined)[], restart?: { after: number; file: string }): Promise<SpanRecord[]> => {
    const spans: SpanRecord[] = [];
    const start = () => createPipeline({ config, logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s), resolveOwner: () => Promise.resolve(FR) });
    let p = start();
    for (const [i, e] of events.entries()) {
      if (i === restart?.after) {
        const store = createStateStore(join(dir, restart.file, 'state.json'));
        p.seal();
        await new StateWriter(store, p).save(true);
        p = start();
        await loadState(store, p, Date.parse(events[i - 1]!.occurred), quiet);
      }
      p.ingest(JSON.stringify(e!));
      await new Promise((r) => setImmediate(r));
    }
    await p.finish('end_of_input');
    return spans;
  };
  const inOrder = await fed([P, R, C, S2, R2, TP, CP, CR, TR, TC, CC, F2]);
  assert.deepEqual(inOrder.map((s) => [s.run.id, s.run.attempt, s.parentSpanId]).sort(), [
    [FR, 0, undefined], [FR, 1, undefined], [CHILD, 0, spanIdForRun(FR, 1)], [TASK, 0, spanIdForRun(FR, 1)],
  ].sort());
  const expected = wholes(inOrder);
  const orders = {
    'the task and the subflow running before Completed': [P, R, S2, R2, TP, CP, CR, TR, C, TC, CC, F2],
    'their first states right after the Scheduled, before Completed': [P, R, S2, CP, TP, C, R2, CR, TR, TC, CC, F2],
  };
  for (const [label, events] of Object.entries(orders)) {
    assert.deepEqual(wholes(await fed(events)), expected, label);
    for (let cut = 1; cut < events.length; cut++) {
      const restarted = await fed(events, { after: cut, file: `subflow-${cut}-${label.replaceAll(' ', '-')}` });
      assert.deepEqual(wholes(restarted), expected, `${label}, restart after ${cut} events`);
    }
  }
});

test('a rerun reordered before the earlier attempt\'s terminal state, with a task called inside another running longer than the task grace: no task of the rerun is ended as its flow run\'s straggler, as in order', async () => {
  const INNER = '0198c7d2-6000-7abc-8def-0000000000c3';
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1],
    [4, 'SCHEDULED', 'Scheduled', 1], [5, 'RUNNING', 'Running', 2], [300, 'COMPLETED', 'Completed', 2]]);
  const outer = taskRun(TASK, 'orchestrate-1a1', 'orchestrate-77665544', [[5.05, 'PENDING', 'Pending', 0], [5.1, 'RUNNING', 'Running', 1], [250, 'COMPLETED', 'Completed', 1]]);
  const inner = taskRun(INNER, 'extract-c3', 'extract-abc', [[5.15, 'PENDING', 'Pending', 0], [5.2, 'RUNNING', 'Running', 1], [200, 'COMPLETED', 'Completed', 1]], { parents: [TASK] });
  const [P, R, C, S2, R2, C2] = flow;
  const [OP, OR, OC] = outer;
  const [IP, IR, IC] = inner;
  // Another flow run's events move the event clock past the task grace while the tasks run.
  const other = otherRun(100);
  const inOrder = await run([P, R, C, S2, R2, OP, OR, IP, IR, ...other, IC, OC, C2]);
  assert.deepEqual(inOrder.spans.filter((s) => s.run.id !== OTHER).map((s) => [s.run.id, s.run.attempt, s.parentSpanId, s.run.incomplete]).sort(), [
    [FR, 0, undefined, false], [FR, 1, undefined, false], [TASK, 0, spanIdForRun(FR, 1), false], [INNER, 0, spanIdForRun(TASK), false],
  ].sort());
  const reordered = await run([P, R, S2, R2, OP, OR, IP, IR, C, ...other, IC, OC, C2]);
  assert.deepEqual(wholes(reordered.spans), wholes(inOrder.spans));
  assert.deepEqual(reordered.lines.filter((l) => l.late === true), []);
});

test('a task run that leaves its terminal state at once (a second attempt) and is still running when its flow run ends: that attempt is ended as its flow run\'s straggler after the grace period, the first attempt settled beside it', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [1.25, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'extract-1a', 'extract-abc', [[1, 'RUNNING', 'Running', 1], [1.1, 'COMPLETED', 'Completed', 1], [1.2, 'RUNNING', 'Running', 2]]);
  const { spans } = await run([flow[0]!, ...task, flow[1]!, ...otherRun(100)]);
  assert.deepEqual(spans.filter((s) => s.run.id !== OTHER).map((s) => [s.run.id, s.run.attempt, s.parentSpanId, s.attributes['prefect.run.incomplete_reason']]).sort(), [
    [FR, 0, undefined, undefined], [TASK, 0, spanIdForRun(FR), undefined], [TASK, 1, spanIdForRun(FR), 'flow_ended'],
  ].sort());
});

test('a task run first seen through an event emitted inside it (before its own states), with a restart from the state file after any of the events: it hangs under the task it was called in, as without the restart', async (t) => {
  const INNER = '0198c7d2-6000-7abc-8def-0000000000c4';
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [9, 'COMPLETED', 'Completed', 1]]);
  const outer = taskRun(TASK, 'orchestrate-1a1', 'orchestrate-77665544', [[2, 'PENDING', 'Pending', 0], [2.5, 'RUNNING', 'Running', 1], [8, 'COMPLETED', 'Completed', 1]]);
  const inner = taskRun(INNER, 'extract-c4', 'extract-abc', [[3.2, 'PENDING', 'Pending', 0], [3.4, 'RUNNING', 'Running', 1], [6, 'COMPLETED', 'Completed', 1]], { parents: [TASK] });
  // emit_event inside the inner task: the EventsWorker relates the task run and its flow run; it arrives before the task's own Pending.
  const emitted = customEvent({
    event: 'orders.loaded', resourceId: 'warehouse.orders', occurred: at(3), id: '0198c7d2-ffff-7000-8000-0000000000c4',
    related: [{ id: `prefect.task-run.${INNER}`, role: 'task-run', name: 'extract-c4' }, { id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }],
  });
  const events = [flow[0]!, flow[1]!, outer[0]!, outer[1]!, emitted, ...inner, outer[2]!, flow[2]!];
  const { spans } = await run(events);
  assert.deepEqual(spans.map((s) => [s.run.id, s.parentSpanId, s.events.map((e) => e.name)]).sort(), [
    [FR, undefined, ['Pending', 'Running', 'Completed']],
    [TASK, spanIdForRun(FR), ['Pending', 'Running', 'Completed']],
    [INNER, spanIdForRun(TASK), ['orders.loaded', 'Pending', 'Running', 'Completed']],
  ].sort());
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-lifecycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await assertSameAcrossRestarts(dir, { 'emitted before its Pending': events }, wholes(spans));
});

test('a task of a flow run that crashed while it ran, the flow run rerun from the UI: with or without a restart from the state file while the rerun runs, and also when the task\'s states arrive after the rerun began, the task is ended as its attempt\'s straggler after the task grace, not held until the rerun ends', async (t) => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'CRASHED', 'Crashed', 1, 'Flow run infrastructure exited with non-zero status code 137.'],
    [20, 'SCHEDULED', 'AwaitingRetry', 1, 'Retry from the UI'], [21, 'PENDING', 'Pending', 1], [22, 'RUNNING', 'Running', 2], [2 * HOUR, 'COMPLETED', 'Completed', 2]]);
  // The task's process was killed with the flow's: it never reports a terminal state.
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[2, 'PENDING', 'Pending', 0], [3, 'RUNNING', 'Running', 1]]);
  const [P, R, C, S2, P2, R2, C2] = flow;
  const [TP, TR] = task;
  // Another flow run's events move the event clock past the task grace while the rerun runs.
  const others = [...otherRun(100), ...otherRun(HOUR)];
  const inOrder = [P, R, TP, TR, C, S2, P2, R2, ...others, C2];
  const { spans } = await run(inOrder);
  const expected = wholes(spans);
  assert.deepEqual(spans.filter((s) => s.run.id !== OTHER).map((s) => [s.run.id, s.run.attempt, s.parentSpanId, s.endUs, s.attributes['prefect.run.incomplete_reason']]).sort(), [
    [FR, 0, undefined, us(10), undefined], [FR, 1, undefined, us(2 * HOUR), undefined], [TASK, 0, spanIdForRun(FR), us(3), 'flow_ended'],
  ].sort());
  const late = [P, R, C, S2, P2, R2, TP, TR, ...others, C2];
  assert.deepEqual(wholes((await run(late)).spans), expected, 'the task\'s states after the rerun began');
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-lifecycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await assertSameAcrossRestarts(dir, { 'in order': inOrder, 'the task\'s states after the rerun began': late }, expected);
});

/** Task-run RolledBack, as the task engine emits it when the transaction the task committed in rolls back (`handle_rollback`): COMPLETED → COMPLETED. */
function rolledBack(s: number, follows: string): WireEvent {
  return taskRunStateEvent({
    taskRunId: TASK, taskRunName: 'load-7c1', taskKey: 'load-55aa66bb', flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW,
    state: { type: 'COMPLETED', name: 'RolledBack', message: 'Task rolled back as part of transaction' }, from: 'COMPLETED', runCount: 1,
    occurred: at(s), received: at(s) + 10, id: '0198c7d2-0001-7000-8000-0000000000ff', follows,
  });
}

test('a task rolled back with its transaction seconds after it completed (RolledBack: COMPLETED → COMPLETED), and a flow run marked Completed by hand after it failed: no second span, no rerun; the later state is a late line with the span id of the one attempt', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [30, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1]]);
  const rollback = rolledBack(10, task[2]!.id);
  // Another flow run's events move the event clock past the task's settle window, as time moves live.
  const a = await run([flow[0]!, ...task, ...otherRun(5), rollback, flow[1]!]);
  assert.deepEqual(a.spans.filter((s) => s.run.id === TASK).map(whole), [{
    name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR),
    startUs: us(1), endUs: us(3), status: { code: 'ok' },
    attributes: taskAttrs(TASK, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.task.run.result': 'success' }),
    events: stateEvents(task), links: [],
  }]);
  assert.equal(a.pipeline.tracker.counts.reruns, 0);
  assert.deepEqual(a.lines.filter((l) => l.late === true).map((l) => [l.trace_id, l.span_id, l.msg]), [[traceIdForRun(FR), spanIdForRun(TASK),
    `STLOGGING: Task run ${TASK} (load-7c1) state transition: COMPLETED -> COMPLETED (state_name='RolledBack', message='Task rolled back as part of transaction') (late: its span was already exported)`]]);

  const marked = flowRun([[0, 'RUNNING', 'Running', 1], [30, 'FAILED', 'Failed', 1, 'Flow run encountered an exception: KeyError'], [90, 'COMPLETED', 'Completed', 1, 'Marked by hand']]);
  const b = await run([...marked.slice(0, 2), ...otherRun(60), marked[2]!]);
  assert.deepEqual(b.spans.filter((s) => s.run.id === FR).map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(30), status: { code: 'error', message: 'Flow run encountered an exception: KeyError' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'cicd.pipeline.result': 'failure', 'error.type': 'KeyError' }),
    events: stateEvents(marked.slice(0, 2)), links: [],
  }]);
  assert.equal(b.pipeline.tracker.counts.reruns, 0);
  assert.deepEqual(b.lines.filter((l) => l.late === true).map((l) => [l.span_id, l['prefect.state.name']]), [[spanIdForRun(FR), 'Completed']]);
});

test('a terminal state replaced by another within the settle window (a flow run marked Crashed, then Completed by its own process; a task rolled back at once, its RolledBack arriving before or after its Completed): one span that ends in the last, no rerun', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [50, 'CRASHED', 'Crashed', 1, 'Flow run was marked crashed: no heartbeat'], [51, 'COMPLETED', 'Completed', 1]]);
  const a = await run([...flow, ...otherRun(100)], { settleMs: 5_000 });
  assert.deepEqual(a.spans.filter((s) => s.run.id === FR).map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(51), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: stateEvents(flow), links: [],
  }]);
  assert.equal(a.pipeline.tracker.counts.reruns, 0);

  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1]]);
  const rollback = rolledBack(3.2, task[2]!.id);
  const f = flowRun([[0, 'RUNNING', 'Running', 1], [30, 'COMPLETED', 'Completed', 1]]);
  const expected = [{
    name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR),
    startUs: us(1), endUs: us(3.2), status: { code: 'ok' },
    attributes: taskAttrs(TASK, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'RolledBack', 'cicd.pipeline.task.run.result': 'success' }),
    events: stateEvents([...task, rollback]), links: [],
  }];
  for (const [label, events] of [['in order', [f[0]!, ...task, rollback, f[1]!]], ['RolledBack first', [f[0]!, task[0]!, task[1]!, rollback, task[2]!, f[1]!]]] as const) {
    const b = await run(events);
    assert.deepEqual(b.spans.filter((s) => s.run.id === TASK).map(whole), expected, label);
    assert.equal(b.pipeline.tracker.counts.reruns, 0, label);
  }
});

test('a background task a flow submitted with .delay() waits for a task worker past the end of its flow run: one whole span under the flow run when the worker runs it, not ended incomplete at the grace nor its run late lines', async () => {
  // Task.apply_async (src/prefect/tasks.py) creates the run Scheduled with state_details.deferred and
  // emits its Scheduled event in the flow's context; the task worker (src/prefect/task_worker.py)
  // emits Pending, deferred too, outside any run context (no related flow run), then runs it in the
  // flow run's context it was given (related flow run again). PrefectHQ/prefect ce79dd3d6c.
  const BG = '0198c7d2-6000-7abc-8def-0000000000b1';
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'COMPLETED', 'Completed', 1]]);
  const state = (i: number, s: number, type: string, name: string, runCount: number, from: string | null, more: Partial<Parameters<typeof taskRunStateEvent>[0]>): WireEvent => taskRunStateEvent({
    taskRunId: BG, taskRunName: 'report-0', taskKey: 'report-1a2b3c4d', flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW,
    state: { type, name }, from, runCount, occurred: at(s), received: at(s) + 10, expectedStartTime: at(2),
    // The worker's engine starts a chain of its own: its Running follows nothing, its Completed the Running.
    id: `0198c7d2-00b1-7000-8000-${String(i).padStart(12, '0')}`, follows: i === 3 ? '0198c7d2-00b1-7000-8000-000000000002' : null, ...more,
  });
  const task = [
    state(0, 2, 'SCHEDULED', 'Scheduled', 0, null, { stateDetails: { pause_reschedule: false, untrackable_result: false, deferred: true, scheduled_time: new Date(at(2)).toISOString() } }),
    state(1, 200, 'PENDING', 'Pending', 0, 'SCHEDULED', { flowRunId: undefined, flowRunName: undefined, flowId: undefined, flowName: undefined, stateDetails: { deferred: true } }),
    state(2, 200.5, 'RUNNING', 'Running', 1, 'PENDING', {}),
    state(3, 205, 'COMPLETED', 'Completed', 1, 'RUNNING', {}),
  ];
  const { spans, lines } = await run([...flow.slice(0, 2), task[0]!, flow[2]!, ...otherRun(100), ...task.slice(1), ...otherRun(300)], { taskGraceMs: 60_000 });
  const mine = spans.filter((s) => s.run.id === FR || s.run.id === BG);
  assert.deepEqual(mine.map(whole), [{
    name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), parentSpanId: undefined,
    startUs: us(0), endUs: us(10), status: { code: 'ok' },
    attributes: flowAttrs({ 'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'cicd.pipeline.result': 'success' }),
    events: stateEvents(flow), links: [],
  }, {
    name: 'report', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(BG), parentSpanId: spanIdForRun(FR),
    startUs: us(200), endUs: us(205), status: { code: 'ok' },
    attributes: taskAttrs(BG, 'report-0', 'report-1a2b3c4d', {
      'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.run.wait_ms': 198_000, 'cicd.pipeline.task.run.result': 'success',
    }),
    events: stateEvents(task), links: [],
  }]);
  assert.deepEqual(lines.filter((l) => l.late === true), []);
});

test('a background task a flow submitted with .delay() that a task worker took at once and still runs when its flow run ends (past the task grace): one whole span, ended by its own Completed', async () => {
  // Shapes as in the test above (Task.apply_async, src/prefect/task_worker.py; PrefectHQ/prefect ce79dd3d6c).
  const BG = '0198c7d2-6000-7abc-8def-0000000000b2';
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'COMPLETED', 'Completed', 1]]);
  const state = (i: number, s: number, type: string, name: string, runCount: number, from: string | null, more: Partial<Parameters<typeof taskRunStateEvent>[0]>): WireEvent => taskRunStateEvent({
    taskRunId: BG, taskRunName: 'report-0', taskKey: 'report-1a2b3c4d', flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW,
    state: { type, name }, from, runCount, occurred: at(s), received: at(s) + 10, expectedStartTime: at(2),
    id: `0198c7d2-00b2-7000-8000-${String(i).padStart(12, '0')}`, follows: i === 3 ? '0198c7d2-00b2-7000-8000-000000000002' : null, ...more,
  });
  const task = [
    state(0, 2, 'SCHEDULED', 'Scheduled', 0, null, { stateDetails: { pause_reschedule: false, untrackable_result: false, deferred: true, scheduled_time: new Date(at(2)).toISOString() } }),
    state(1, 3, 'PENDING', 'Pending', 0, 'SCHEDULED', { flowRunId: undefined, flowRunName: undefined, flowId: undefined, flowName: undefined, stateDetails: { deferred: true } }),
    state(2, 3.5, 'RUNNING', 'Running', 1, 'PENDING', {}),
    state(3, 150, 'COMPLETED', 'Completed', 1, 'RUNNING', {}),
  ];
  const { spans, lines } = await run([...flow.slice(0, 2), ...task.slice(0, 3), flow[2]!, ...otherRun(100), task[3]!, ...otherRun(300)], { taskGraceMs: 60_000 });
  assert.deepEqual(spans.filter((s) => s.run.id === BG).map(whole), [{
    name: 'report', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(BG), parentSpanId: spanIdForRun(FR),
    startUs: us(3), endUs: us(150), status: { code: 'ok' },
    attributes: taskAttrs(BG, 'report-0', 'report-1a2b3c4d', {
      'prefect.run.count': 1, 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.run.wait_ms': 1_000, 'cicd.pipeline.task.run.result': 'success',
    }),
    events: stateEvents(task), links: [],
  }]);
  assert.deepEqual(spans.filter((s) => s.run.id === FR).map((s) => [s.endUs, s.run.incomplete]), [[us(10), false]]);
  assert.deepEqual(lines.filter((l) => l.late === true), []);
});

test('a task called inside another, still open at a restart from the state file: its later events still reach the task it was called in and the flow run, whose incomplete spans end with them, as without the restart; also when the outer task was rerun after the inner one began', async (t) => {
  const INNER = '0198c7d2-6000-7abc-8def-0000000000c5';
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1]]);
  const inner = taskRun(INNER, 'extract-c5', 'extract-abc', [[3, 'PENDING', 'Pending', 0], [3.5, 'RUNNING', 'Running', 1], [40, 'COMPLETED', 'Completed', 1]], { parents: [TASK] });
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-lifecycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));

  // The outer task and the flow run never end: the end of input ends them at the last time known inside them.
  const outer = taskRun(TASK, 'orchestrate-1a1', 'orchestrate-77665544', [[2, 'PENDING', 'Pending', 0], [2.5, 'RUNNING', 'Running', 1]]);
  const events = [...flow, ...outer, ...inner];
  const { spans } = await run(events);
  assert.deepEqual(spans.map((s) => [s.run.id, s.run.attempt, s.parentSpanId, s.endUs, s.attributes['prefect.run.incomplete'] ?? false]).sort(), [
    [FR, 0, undefined, us(40), true],
    [TASK, 0, spanIdForRun(FR), us(40), true],
    [INNER, 0, spanIdForRun(TASK), us(40), false],
  ].sort());
  await assertSameAcrossRestarts(dir, { 'inner task': events }, wholes(spans));

  // The outer task completed and was rerun while the inner one ran: the inner one stays under its first
  // attempt, and its last event still reaches the flow run.
  const rerunOuter = taskRun(TASK, 'orchestrate-1a1', 'orchestrate-77665544', [[2, 'PENDING', 'Pending', 0], [2.5, 'RUNNING', 'Running', 1], [5, 'COMPLETED', 'Completed', 1], [6, 'RUNNING', 'Running', 2]]);
  const rerunEvents = [...flow, ...rerunOuter.slice(0, 2), inner[0]!, inner[1]!, ...rerunOuter.slice(2), inner[2]!];
  const rerun = await run(rerunEvents);
  assert.deepEqual(rerun.spans.map((s) => [s.run.id, s.run.attempt, s.parentSpanId, s.endUs, s.attributes['prefect.run.incomplete'] ?? false]).sort(), [
    [FR, 0, undefined, us(40), true],
    [TASK, 0, spanIdForRun(FR), us(5), false],
    [TASK, 1, spanIdForRun(FR), us(6), true],
    [INNER, 0, spanIdForRun(TASK), us(40), false],
  ].sort());
  await assertSameAcrossRestarts(dir, { 'outer task rerun': rerunEvents }, wholes(rerun.spans));
});

test('a task state delivered after the span went out is a late event of that attempt, not a rerun, when it bears the same time as the terminal state (a coarse clock) or is the state the terminal one follows (stamped later by a clock ahead)', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [300, 'COMPLETED', 'Completed', 1]]);
  const sameTime = taskRun(TASK, 'extract-1a', 'extract-abc', [[1, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [1, 'COMPLETED', 'Completed', 1]]);
  // Completed follows Running, which the task's clock stamped a second after it.
  const clockAhead = taskRun(TASK, 'extract-1a', 'extract-abc', [[1, 'PENDING', 'Pending', 0], [3, 'RUNNING', 'Running', 1], [2, 'COMPLETED', 'Completed', 1]]);
  for (const [label, events, late, startS, endS] of [
    ['same time', [sameTime[1]!, sameTime[2]!], sameTime[0]!, 1, 1],
    ['clock ahead', [clockAhead[0]!, clockAhead[2]!], clockAhead[1]!, 1, 2],
  ] as const) {
    const { spans, lines } = await run([flow[0]!, ...events, ...otherRun(100), late, flow[1]!]);
    assert.deepEqual(
      spans.filter((s) => s.run.id === TASK).map((s) => [s.spanId, s.parentSpanId, s.startUs, s.endUs, s.events.map((e) => e.name)]),
      [[spanIdForRun(TASK), spanIdForRun(FR), us(startS), us(endS), events.map((e) => e.resource['prefect.state-name'])]],
      label,
    );
    assert.deepEqual(lines.filter((l) => l.late === true).map((l) => [l['prefect.run.id'], l['prefect.event.id'], l.span_id]), [[TASK, late.id, spanIdForRun(TASK)]], label);
  }
});

test('the state a task\'s terminal state follows, stamped later by a clock ahead and delivered after it while the span is still open: one span, ending at the terminal state, the state among its events at its own time; no rerun', async () => {
  const flow = flowRun([[0, 'RUNNING', 'Running', 1], [300, 'COMPLETED', 'Completed', 1]]);
  // Completed follows Running, which the task's clock stamped a second after it.
  const [P, R, C] = taskRun(TASK, 'extract-1a', 'extract-abc', [[1, 'PENDING', 'Pending', 0], [3, 'RUNNING', 'Running', 1], [2, 'COMPLETED', 'Completed', 1]]);
  const { spans, lines, pipeline } = await run([flow[0]!, P!, C!, R!, flow[1]!]);
  assert.deepEqual(
    spans.filter((s) => s.run.id === TASK).map((s) => [s.spanId, s.parentSpanId, s.startUs, s.endUs, s.status, s.events.map((e) => [e.name, e.timeUs])]),
    [[spanIdForRun(TASK), spanIdForRun(FR), us(1), us(2), { code: 'ok' }, [['Pending', us(1)], ['Completed', us(2)], ['Running', us(3)]]]],
  );
  assert.deepEqual({ late: lines.filter((l) => l.late === true), reruns: pipeline.tracker.counts.reruns }, { late: [], reruns: 0 });
});

test('time while no process watched does not count against runs restored from the state file: a run open across an outage longer than the open-run timeout, and a task within its flow run\'s task grace across one longer than the grace, end whole with their states read after the restart', async () => {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const quiet = createLogger({ level: 'silent', format: 'json' });
  /** `before`, a stop, an outage of `outageS` (no process watching), the state taken over, then `after`. */
  const acrossOutage = async (before: readonly WireEvent[], outageS: number, after: readonly WireEvent[]) => {
    const spans: SpanRecord[] = [];
    const first = createPipeline({ config, logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
    for (const e of before) first.ingest(JSON.stringify(e));
    const stoppedAt = Date.parse(before.at(-1)!.occurred);
    const second = createPipeline({ config, logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
    second.tracker.restore(first.tracker.snapshot(), stoppedAt + outageS * 1000, outageS * 1000);
    for (const e of after) second.ingest(JSON.stringify(e));
    await second.finish('end_of_input');
    return spans.filter((s) => s.run.id !== OTHER).map((s) => [s.run.id, s.endUs, s.attributes['prefect.run.incomplete'] ?? false, s.events.map((e) => e.name)]).sort();
  };

  // Running, then 25 h (over the 24 h open-run timeout) without a process; its Completed is read after the restart.
  const long = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [25 * HOUR + 60, 'COMPLETED', 'Completed', 1]]);
  assert.deepEqual(await acrossOutage(long.slice(0, 2), 25 * HOUR, [...otherRun(25 * HOUR + 30), long[2]!]), [[FR, us(25 * HOUR + 60), false, ['Pending', 'Running', 'Completed']]]);

  // The flow run completed while its task still ran, then 10 min (over the 60 s task grace) without a
  // process; the task completes 30 s after the restart.
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [5, 'COMPLETED', 'Completed', 1]]);
  const task = taskRun(TASK, 'extract-1a', 'extract-abc', [[2, 'PENDING', 'Pending', 0], [3, 'RUNNING', 'Running', 1], [635, 'COMPLETED', 'Completed', 1]]);
  assert.deepEqual(await acrossOutage([flow[0]!, flow[1]!, task[0]!, task[1]!, flow[2]!], 600, [...otherRun(625), task[2]!]), [
    [FR, us(5), false, ['Pending', 'Running', 'Completed']],
    [TASK, us(635), false, ['Pending', 'Running', 'Completed']],
  ].sort());
});

test('an event emitted between a run\'s terminal state and its rerun, delivered after the rerun\'s first states (within the settle window): a span event of the earlier attempt, as in order', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [1.1, 'COMPLETED', 'Completed', 1],
    [1.15, 'SCHEDULED', 'Scheduled', 1], [1.2, 'PENDING', 'Pending', 1], [1.25, 'RUNNING', 'Running', 2], [1.3, 'FAILED', 'Failed', 2]]);
  const [P, R, C, S2, P2, R2, F2] = flow;
  const between = customEvent({
    event: 'prefect.artifact.created', resourceId: 'prefect.artifact.0198c7d2-aaaa-7000-8000-000000000001', occurred: at(1.12), id: '0198c7d2-ffff-7000-8000-0000000000d1',
    related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }],
  });
  const inOrder = await run([P, R, C, between, S2, P2, R2, F2]);
  assert.deepEqual(inOrder.spans.map((s) => [s.spanId, s.events.map((e) => e.name)]).sort(), [
    [spanIdForRun(FR, 0), ['Pending', 'Running', 'Completed', 'prefect.artifact.created']],
    [spanIdForRun(FR, 1), ['Scheduled', 'Pending', 'Running', 'Failed']],
  ].sort());
  const reordered = await run([P, R, C, S2, P2, between, R2, F2]);
  assert.deepEqual(wholes(reordered.spans), wholes(inOrder.spans));
});

test('a rerun whose states up to its own terminal state all arrive before the previous attempt\'s terminal state (reordered within the settle window), a task of it killed with it: the rerun settles and its task is ended as its straggler after the task grace, as in order; also with a restart from the state file after any of the events', async (t) => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1],
    [4, 'SCHEDULED', 'Scheduled', 1], [5, 'RUNNING', 'Running', 2], [6, 'CRASHED', 'Crashed', 2, 'Flow run infrastructure exited with non-zero status code 137.']]);
  // The task's process was killed with the flow's: it never reports a terminal state.
  const task = taskRun(TASK, 'load-7c1', 'load-55aa66bb', [[5.1, 'PENDING', 'Pending', 0], [5.2, 'RUNNING', 'Running', 1]]);
  const [P, R, C, S2, R2, C2] = flow;
  const [TP, TR] = task;
  // Another flow run's events move the event clock past the task grace.
  const others = otherRun(100);
  const inOrder = await run([P, R, C, S2, R2, TP, TR, C2, ...others]);
  const expected = wholes(inOrder.spans.filter((s) => s.run.id !== OTHER));
  const bySpanId = (x: { spanId: string }, y: { spanId: string }): number => x.spanId.localeCompare(y.spanId);
  assert.deepEqual(expected.filter((s) => s.spanId !== spanIdForRun(FR)), [
    {
      name: 'etl', kind: 'server', traceId: traceIdForRun(FR), spanId: spanIdForRun(FR, 1), parentSpanId: undefined,
      startUs: us(5), endUs: us(6), status: { code: 'error', message: 'Flow run infrastructure exited with non-zero status code 137.' },
      attributes: flowAttrs({
        'prefect.run.count': 2, 'prefect.state.type': 'CRASHED', 'prefect.state.name': 'Crashed', 'prefect.run.wait_ms': 1000, 'prefect.run.attempt': 1,
        'cicd.pipeline.result': 'error', 'error.type': 'Crashed',
      }),
      events: stateEvents([S2!, R2!, C2!]),
      links: [{ traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), attributes: { 'prefect.link.kind': 'previous_attempt' } }],
    },
    {
      name: 'load', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(TASK), parentSpanId: spanIdForRun(FR, 1),
      startUs: us(5.1), endUs: us(5.2), status: { code: 'unset' },
      attributes: taskAttrs(TASK, 'load-7c1', 'load-55aa66bb', { 'prefect.run.count': 1, 'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running', 'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': 'flow_ended' }),
      events: stateEvents(task), links: [],
    },
  ].sort(bySpanId));
  const reordered = [P, R, S2, R2, TP, TR, C2, C, ...others];
  const { spans, lines } = await run(reordered);
  assert.deepEqual(wholes(spans.filter((s) => s.run.id !== OTHER)), expected);
  assert.deepEqual(lines.filter((l) => l.late === true), []);
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-lifecycles-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await assertSameAcrossRestarts(dir, { 'the rerun\'s terminal state before the Completed': reordered }, wholes(inOrder.spans));
});

test('a flow run rerun at once whose first states arrive before the previous attempt\'s terminal state (reordered within the settle window), Prefect\'s own span of each attempt looked up: the rerun links to its own Prefect span, not the previous attempt\'s, as in order', async () => {
  const flow = flowRun([[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [3, 'COMPLETED', 'Completed', 1],
    [4, 'SCHEDULED', 'Scheduled', 1], [5, 'RUNNING', 'Running', 2], [6, 'FAILED', 'Failed', 2]]);
  const [P, R, C, S2, R2, F2] = flow;
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const quiet = createLogger({ level: 'silent', format: 'json' });
  const traceparent = (n: number): string => `00-4bf92f3577b34da6a3ce929d0e0e4736-${String(n).padStart(16, 'a')}-01`;
  /** The events fed one by one, each lookup of Prefect's own span answered before the next (the n-th answer names span n). */
  const fed = async (events: readonly (WireEvent | undefined)[]) => {
    const spans: SpanRecord[] = [];
    const asked: string[] = [];
    const pipeline = createPipeline({
      config, logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
      nativeSpans: (ids) => Promise.resolve(ids.map((id) => (asked.push(id), { ok: true as const, traceparent: traceparent(asked.length) }))),
    });
    const answered = (): number => {
      const n = pipeline.tracker.counts.native;
      return n.linked + n.noLabel + n.failed + n.late;
    };
    for (const e of events) {
      pipeline.ingest(JSON.stringify(e!));
      while (answered() < pipeline.tracker.counts.native.lookups) await new Promise((r) => setTimeout(r, 5));
    }
    await pipeline.finish('end_of_input');
    return { spans, asked, native: pipeline.tracker.counts.native };
  };
  const native = (n: number) => ({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: String(n).padStart(16, 'a'), traceFlags: 1, remote: true, attributes: { 'prefect.link.kind': 'prefect_native_span' } });
  const inOrder = await fed([P, R, C, S2, R2, F2]);
  assert.deepEqual(inOrder.spans.map((s) => [s.run.id, s.run.attempt, s.links]), [
    [FR, 0, [native(1)]],
    [FR, 1, [{ traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), attributes: { 'prefect.link.kind': 'previous_attempt' } }, native(2)]],
  ]);
  const expected = { spans: wholes(inOrder.spans), asked: [FR, FR], native: { lookups: 2, linked: 2, noLabel: 0, failed: 0, late: 0 } };
  assert.deepEqual({ ...inOrder, spans: wholes(inOrder.spans) }, expected);
  const orders = {
    'the rerun\'s Scheduled and Running before the Completed': [P, R, S2, R2, C, F2],
    'the rerun\'s states up to its Failed before the Completed': [P, R, S2, R2, F2, C],
  };
  for (const [label, events] of Object.entries(orders)) {
    const reordered = await fed(events);
    assert.deepEqual({ ...reordered, spans: wholes(reordered.spans) }, expected, label);
  }
});

test('on the machine\'s clock, a rerun a worker submitted whose first states or submitted-flow-run arrive before the previous attempt\'s terminal state or its own first state (reordered within the settle window): it waits past its settle window for the worker\'s executed-flow-run, as in order; nothing late', () => {
  const worker = (event: string, t: number, id: string) => customEvent({
    event, resourceId: 'prefect.worker.process.laptop-worker', resourceName: 'laptop-worker', occurred: at(t), id,
    related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' },
      { id: `prefect.deployment.${DEPLOY.deployment.id}`, role: 'deployment', name: 'nightly' }, { id: `prefect.work-pool.${DEPLOY.workPool.id}`, role: 'work-pool', name: 'k8s-pool' }],
  });
  const flow = flowRun([[1, 'PENDING', 'Pending', 0], [2, 'RUNNING', 'Running', 1], [9, 'COMPLETED', 'Completed', 1],
    [10, 'SCHEDULED', 'Scheduled', 1], [10.1, 'PENDING', 'Pending', 1], [11, 'RUNNING', 'Running', 2], [20, 'FAILED', 'Failed', 2]]);
  const [P, R, C, S2, P2, R2, F2] = flow;
  const submitted = worker('prefect.worker.submitted-flow-run', 0.5, '0198c7d2-ffff-7000-8000-000000000021');
  const executed = worker('prefect.worker.executed-flow-run', 9.5, '0198c7d2-ffff-7000-8000-000000000022');
  const submitted2 = worker('prefect.worker.submitted-flow-run', 10.2, '0198c7d2-ffff-7000-8000-000000000023');
  const executed2 = worker('prefect.worker.executed-flow-run', 23, '0198c7d2-ffff-7000-8000-000000000024');
  /** The events, then (3 s later, past the settle window) the rerun's executed-flow-run, then 3 s more. */
  const fed = (events: readonly (WireEvent | undefined)[]) => {
    const m = wallClockModel();
    m.ingest(events.map((e) => e!));
    m.later(3_000);
    m.ingest([executed2]);
    m.later(6_000);
    return m;
  };
  const inOrder = fed([submitted, P, R, C, executed, S2, P2, submitted2, R2, F2]);
  assert.deepEqual(inOrder.spans.map((s) => [s.run.attempt, s.events.map((e) => e.name)]).sort(), [
    [0, ['prefect.worker.submitted-flow-run', 'Pending', 'Running', 'Completed', 'prefect.worker.executed-flow-run']],
    [1, ['Scheduled', 'Pending', 'prefect.worker.submitted-flow-run', 'Running', 'Failed', 'prefect.worker.executed-flow-run']],
  ]);
  assert.deepEqual(inOrder.lines.filter((l) => l.late === true), []);
  const orders = {
    'the rerun\'s first states and submitted-flow-run before the Completed': [submitted, P, R, S2, P2, submitted2, R2, C, executed, F2],
    'the rerun\'s states up to its Failed before the Completed': [submitted, P, R, S2, P2, submitted2, R2, F2, C, executed],
    'the rerun\'s submitted-flow-run before its Scheduled': [submitted, P, R, C, executed, submitted2, S2, P2, R2, F2],
  };
  for (const [label, events] of Object.entries(orders)) {
    const m = fed(events);
    assert.deepEqual({ spans: wholes(m.spans), late: m.lines.filter((l) => l.late === true) }, { spans: wholes(inOrder.spans), late: [] }, label);
  }
});
