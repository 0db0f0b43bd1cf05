/**
 * Whole run lifecycles as a Prefect user meets them, each built event by event as Prefect emits
 * them (shared/reference/prefect-event-stream.md §4a server-side flow-run states, §4b client-side
 * task-run states with the EventsWorker's related resources), through the real pipeline; each
 * asserts the whole trace: tree, attribute maps, span events, status, times, incomplete marks.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline } from '../../src/pipeline.js';
import { flowRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const T0 = Date.UTC(2026, 10, 21, 6, 0, 0);
const at = (s: number): number => T0 + s * 1000;
const us = (s: number): number => at(s) * 1000;
const HOUR = 3600;

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const DEPLOY = {
  deployment: { id: '7b2e1d8f-2222-4b3c-8d4e-1f2a3b4c5d6e', name: 'nightly' },
  workQueue: { id: '8c3f2e90-3333-4c4d-9e5f-2a3b4c5d6e7f', name: 'default' },
  workPool: { id: '9d4031a1-4444-4d5e-8f60-3b4c5d6e7f80', name: 'k8s-pool', type: 'kubernetes' },
};
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
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

async function run(events: WireEvent[], overrides: Record<string, unknown> = {}) {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: UI, ...overrides }, {});
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  for (const e of events) pipeline.ingest(JSON.stringify(e));
  await pipeline.finish('end_of_input');
  return { spans, lines, pipeline };
}

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
  const f = spans.find((s) => s.run.id === FR)!;
  assert.deepEqual([f.startUs, f.endUs, f.status, f.attributes['prefect.run.incomplete_reason'], f.attributes['prefect.run.wait_ms']], [us(10), us(11), { code: 'unset' }, 'idle_timeout', 10_000]);
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
