/**
 * A subflow called with `wait_for` on a task that failed: Prefect's flow engine sets it Pending
 * "NotReady" (`begin_run` in src/prefect/flow_engine.py) and returns without running it; no state
 * follows. Its span goes out with its parent flow run, as a task stopped at NotReady does, instead
 * of waiting out the open-run timeout. Whole traces through the real pipeline.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline } from '../../src/pipeline.js';
import { EXAMPLE_DEPLOYMENT, EXAMPLE_FLOW, flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const T0 = Date.UTC(2026, 10, 21, 6, 0, 0);
const at = (s: number): number => T0 + s * 1000;
const us = (s: number): number => at(s) * 1000;
const UI = 'http://prefect.local:4200';

const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TASK = '0198c7d2-6000-7abc-8def-000000000001';
const CHILD = '0198c7d2-7000-7000-8000-0000000000c1';
const TRACK = '0198c7d2-7000-7000-8000-0000000000d1';
const OTHER = '0198c7d2-9000-7000-8000-0000000000e1';
const CHILD_FLOW = { flowId: '11111111-1111-4111-8111-111111111111', flowName: 'load-warehouse' };
const NOT_READY_MESSAGE = "Upstream task run '0198c7d2-6000-7abc-8def-000000000001' did not reach a 'COMPLETED' state.";

type States = [s: number, type: string, name: string, runCount: number, message?: string][];

function flowRun(id: string, states: States): WireEvent[] {
  let from: string | null = null;
  return states.map(([s, type, name, runCount, message], i) => {
    const e = flowRunStateEvent({
      flowRunId: id, flowRunName: id === FR ? 'crimson-fox' : 'other', ...EXAMPLE_FLOW, ...EXAMPLE_DEPLOYMENT, tags: ['etl'],
      state: { type, name, ...(message === undefined ? {} : { message }) }, from, runCount, occurred: at(s), received: at(s) + 10,
      id: `0198c7d2-f${id.slice(-3)}-7000-8000-${String(i).padStart(12, '0')}`,
    });
    from = type;
    return e;
  });
}

/** The subflow's state events, as the server emits them: they name the parent's tracking task. */
function subflow(states: States): WireEvent[] {
  let from: string | null = null;
  return states.map(([s, type, name, runCount, message], i) => {
    const e = flowRunStateEvent({
      flowRunId: CHILD, flowRunName: 'amber-heron', ...CHILD_FLOW, parentTaskRunId: TRACK, parentTaskRunName: 'load-warehouse-0',
      state: { type, name, ...(message === undefined ? {} : { message }) }, from, runCount, occurred: at(s), received: at(s) + 10,
      id: `0198c7d2-c000-7000-8000-${String(i).padStart(12, '0')}`,
    });
    from = type;
    return e;
  });
}

const upstream = (): WireEvent[] => ([[1.5, 'PENDING', 'Pending', 0], [1.6, 'RUNNING', 'Running', 1], [2, 'FAILED', 'Failed', 1]] as const).map(([s, type, name, runCount], i) => taskRunStateEvent({
  taskRunId: TASK, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, flowRunName: 'crimson-fox', ...EXAMPLE_FLOW,
  state: { type, name }, from: i === 0 ? null : (['PENDING', 'RUNNING'][i - 1] ?? null), runCount, occurred: at(s), received: at(s) + 10,
  id: `0198c7d2-0001-7000-8000-${String(i).padStart(12, '0')}`,
}));

/**
 * Events through the pipeline on the event clock one at a time, the lookup of the subflow's tracking
 * task answered (it belongs to FR) before the next event comes, as `watch` gets it from the Prefect API.
 */
async function runStepwise(events: readonly WireEvent[]): Promise<SpanRecord[]> {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI }, {});
  const logger = createLogger({ level: 'error', format: 'json', destination: { write: () => undefined } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({
    config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
    resolveOwner: (id) => Promise.resolve(id === TRACK ? FR : null),
  });
  for (const e of events) {
    pipeline.ingest(JSON.stringify(e));
    await new Promise((resolve) => setImmediate(resolve));
  }
  await pipeline.finish('end_of_input');
  return spans;
}

/** The subflow's span as a user sees it in Jaeger: under its parent, ended at NotReady, incomplete for that reason. */
function expectedSubflow(events: WireEvent[]) {
  return {
    name: 'load-warehouse', kind: 'internal', traceId: traceIdForRun(FR), spanId: spanIdForRun(CHILD), parentSpanId: spanIdForRun(FR),
    startUs: us(3), endUs: us(3.1), status: { code: 'unset' },
    attributes: {
      'prefect.run.id': CHILD, 'prefect.run.type': 'flow', 'prefect.run.name': 'amber-heron', 'prefect.run.count': 0,
      'prefect.state.type': 'PENDING', 'prefect.state.name': 'NotReady', 'prefect.tags': [],
      'prefect.flow.name': 'load-warehouse', 'prefect.flow.id': CHILD_FLOW.flowId, 'prefect.parent_task_run.id': TRACK,
      'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': 'not_ready',
      'cicd.pipeline.name': 'load-warehouse', 'cicd.pipeline.run.id': CHILD, 'cicd.pipeline.result': 'skip', 'cicd.pipeline.run.url.full': `${UI}/runs/flow-run/${CHILD}`,
    },
    events: events.map((e, i) => [e.resource['prefect.state-name'], us(i === 0 ? 3 : 3.1), {
      'prefect.state.type': 'PENDING', 'prefect.state.name': i === 0 ? 'Pending' : 'NotReady', 'prefect.state.message': i === 0 ? '' : NOT_READY_MESSAGE,
      'prefect.state.id': e.id, ...(i === 0 ? {} : { 'prefect.state.from': 'PENDING' }), 'prefect.run.count': 0, 'prefect.event.received_lag_ms': 10,
    }]),
    links: [],
  };
}

const whole = (s: SpanRecord) => ({
  name: s.name, kind: s.kind, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId,
  startUs: s.startUs, endUs: s.endUs, status: s.status, attributes: s.attributes,
  events: s.events.map((e) => [e.name, e.timeUs, e.attributes]), links: s.links,
});

test('a subflow stopped at Pending "NotReady" (wait_for on a task that failed) goes out with its parent flow run once that has settled, ending at NotReady, incomplete with reason not_ready; not held to the open-run timeout', async () => {
  const parent = flowRun(FR, [[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'FAILED', 'Failed', 1, 'Flow run encountered an exception: UnfinishedRun: Run is in PENDING state.']]);
  const child = subflow([[3, 'PENDING', 'Pending', 0], [3.1, 'PENDING', 'NotReady', 0, NOT_READY_MESSAGE]]);
  const other = flowRun(OTHER, [[30, 'RUNNING', 'Running', 1], [31, 'COMPLETED', 'Completed', 1]]);
  const spans = await runStepwise([...parent.slice(0, 2), ...upstream(), ...child, parent[2]!, ...other]);
  // Out at 30 s on the event clock with its parent, before the other run's span (end of input).
  assert.deepEqual(spans.map((s) => [s.run.id, s.parentSpanId ?? null, s.attributes['prefect.run.incomplete_reason'] ?? null]), [
    [TASK, spanIdForRun(FR), null], [CHILD, spanIdForRun(FR), 'not_ready'], [FR, null, null], [OTHER, null, null],
  ]);
  assert.deepEqual(whole(spans[1]!), expectedSubflow(child));
});

test('a subflow whose NotReady is taken only after its parent flow run went out (the tracking task\'s lookup answered late) goes out once settled, not at the open-run timeout', async () => {
  const parent = flowRun(FR, [[0, 'PENDING', 'Pending', 0], [1, 'RUNNING', 'Running', 1], [10, 'FAILED', 'Failed', 1, 'Flow run encountered an exception: UnfinishedRun: Run is in PENDING state.']]);
  const child = subflow([[3, 'PENDING', 'Pending', 0], [3.1, 'PENDING', 'NotReady', 0, NOT_READY_MESSAGE]]);
  const other = flowRun(OTHER, [[20, 'RUNNING', 'Running', 1], [21, 'COMPLETED', 'Completed', 1]]);
  const later = flowRun('0198c7d2-9000-7000-8000-0000000000e2', [[40, 'RUNNING', 'Running', 1], [41, 'COMPLETED', 'Completed', 1]]);
  const spans = await runStepwise([...parent, ...upstream(), other[0]!, ...child, other[1]!, ...later]);
  // Out at 21 s on the event clock (settled after its NotReady at 20 s), before the run that came later.
  assert.deepEqual(spans.map((s) => [s.run.id.slice(-3), s.attributes['prefect.run.incomplete_reason'] ?? null]), [
    ['f70', null], ['001', null], ['0c1', 'not_ready'], ['0e1', null], ['0e2', null],
  ]);
  assert.deepEqual(whole(spans.find((s) => s.run.id === CHILD)!), expectedSubflow(child));
});
