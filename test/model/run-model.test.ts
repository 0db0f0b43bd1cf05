import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { MAX_SUMMARISED_NAMES } from '../../src/model/run-state.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline } from '../../src/pipeline.js';
import { runModel } from '../helpers/model-run.js';
import { createPrefectRestClient } from '../../src/source/rest.js';
import { createFlowParentLookup, createOwnerLookup } from '../../src/source/run-lookups.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { customEvent, DEEP_JSON_WRITABLE, DEEP_PAYLOAD_JSON, EXAMPLE_DEPLOYMENT, EXAMPLE_FLOW, flowRunStateEvent, ONLY_WHERE_DEEP_JSON_FAILS, taskRunStateEvent } from '../helpers/prefect-events.js';

const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
const at = (s: number): number => T0 + s * 1000;
const us = (s: number): number => at(s) * 1000;

const FLOW = EXAMPLE_FLOW;
const DEPLOY = EXAMPLE_DEPLOYMENT;
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const EXTRACT = '0198c7d2-6000-7abc-8def-000000000001';
const NESTED = '0198c7d2-6000-7abc-8def-000000000002';
const LOAD = '0198c7d2-6000-7abc-8def-000000000003';

type Ev = Record<string, unknown>;

function flowState(s: number, type: string, name: string, from: string | null, runCount: number, extra: Record<string, unknown> = {}): Ev {
  return flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, ...DEPLOY, tags: ['etl', 'nightly'], state: { type, name, ...extra }, from, runCount, occurred: at(s), received: at(s) + 15 });
}

function taskState(id: string, name: string, key: string, s: number, type: string, stateName: string, from: string | null, runCount: number, more: Record<string, unknown> = {}): Ev {
  return taskRunStateEvent({ taskRunId: id, taskRunName: name, taskKey: key, flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type, name: stateName }, from, runCount, occurred: at(s), ...more });
}

/** A deployment run with a nested task, a retried task, a custom event, a heartbeat-free happy path. */
function happyRun(): Ev[] {
  const events: Ev[] = [
    flowState(0, 'SCHEDULED', 'Scheduled', null, 0),
    flowState(5, 'SCHEDULED', 'Late', 'SCHEDULED', 0),
    flowState(8, 'PENDING', 'Pending', 'SCHEDULED', 0),
    flowState(10, 'RUNNING', 'Running', 'PENDING', 1),
    taskState(EXTRACT, 'extract-3f2', 'extract-9a8b7c6d', 11, 'PENDING', 'Pending', null, 0, { tags: ['db'] }),
    taskState(EXTRACT, 'extract-3f2', 'extract-9a8b7c6d', 11.5, 'RUNNING', 'Running', 'PENDING', 1, { tags: ['db'] }),
    taskState(NESTED, 'parse-1a2', 'parse-0f0e0d0c', 12, 'PENDING', 'Pending', null, 0, { parents: [EXTRACT] }),
    taskState(NESTED, 'parse-1a2', 'parse-0f0e0d0c', 12.1, 'RUNNING', 'Running', 'PENDING', 1, { parents: [EXTRACT] }),
    customEvent({
      event: 'acme.rows.parsed', resourceId: 'acme.table.orders', resourceName: 'orders', payload: { rows: 17 }, occurred: at(12.5),
      related: [
        { id: `prefect.task-run.${NESTED}`, role: 'task-run', name: 'parse-1a2' },
        { id: `prefect.flow-run.${FR}`, role: 'flow-run', name: 'crimson-fox' },
        { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'etl' },
      ],
    }),
    taskState(NESTED, 'parse-1a2', 'parse-0f0e0d0c', 13, 'COMPLETED', 'Completed', 'RUNNING', 1, { parents: [EXTRACT] }),
    taskState(EXTRACT, 'extract-3f2', 'extract-9a8b7c6d', 14, 'COMPLETED', 'Completed', 'RUNNING', 1, { tags: ['db'] }),
    taskState(LOAD, 'load-7c1', 'load-55aa66bb', 15, 'PENDING', 'Pending', null, 0),
    taskState(LOAD, 'load-7c1', 'load-55aa66bb', 15.2, 'RUNNING', 'Running', 'PENDING', 1),
    taskState(LOAD, 'load-7c1', 'load-55aa66bb', 16, 'SCHEDULED', 'AwaitingRetry', 'RUNNING', 1),
    taskState(LOAD, 'load-7c1', 'load-55aa66bb', 18, 'RUNNING', 'Retrying', 'SCHEDULED', 2),
    taskState(LOAD, 'load-7c1', 'load-55aa66bb', 19, 'COMPLETED', 'Completed', 'RUNNING', 2),
    flowState(20, 'COMPLETED', 'Completed', 'RUNNING', 1),
  ];
  // Stable ids, so that two calls describe the same events.
  return events.map((e, i) => ({ ...e, id: `0198c7d2-eeee-7000-8000-${String(i).padStart(12, '0')}` }));
}

/** The attributes of the happy run's completed `load` task span, after `runCount` runs. */
function loadAttributes(runCount: number): Record<string, unknown> {
  return {
    'prefect.run.id': LOAD,
    'prefect.run.type': 'task',
    'prefect.run.name': 'load-7c1',
    'prefect.run.count': runCount,
    'prefect.state.type': 'COMPLETED',
    'prefect.state.name': 'Completed',
    'prefect.tags': [],
    'prefect.flow.name': 'etl',
    'prefect.flow.id': FLOW.flowId,
    'prefect.task.key': 'load-55aa66bb',
    'cicd.pipeline.task.name': 'load',
    'cicd.pipeline.task.run.id': LOAD,
    'cicd.pipeline.task.run.result': 'success',
    'cicd.pipeline.task.run.url.full': `http://prefect.local:4200/runs/task-run/${LOAD}`,
  };
}

const run = runModel;

/** The shape of a trace: one line per span, parent first, as `name [kind] status`. */
function tree(spans: readonly SpanRecord[]): string[] {
  const out: string[] = [];
  const walk = (parent: string | undefined, depth: number): void => {
    for (const s of spans.filter((x) => x.parentSpanId === parent).sort((a, b) => a.startUs - b.startUs || a.name.localeCompare(b.name))) {
      out.push(`${'  '.repeat(depth)}${s.name} [${s.kind}] ${s.status.code}${s.run.incomplete ? ' incomplete' : ''}`);
      walk(s.spanId, depth + 1);
    }
  };
  walk(undefined, 0);
  return out;
}

test('a deployment run becomes one trace: root SERVER span named after the flow, tasks under it, nested task under its parent task', async () => {
  const { spans } = await run(happyRun());
  assert.equal(new Set(spans.map((s) => s.traceId)).size, 1);
  assert.equal(spans[0]!.traceId, traceIdForRun(FR));
  assert.deepEqual(tree(spans), ['etl [server] ok', '  extract [internal] ok', '    parse [internal] ok', '  load [internal] ok']);
  const byRun = new Map(spans.map((s) => [s.run.id, s]));
  assert.equal(byRun.get(FR)!.spanId, spanIdForRun(FR));
  assert.equal(byRun.get(NESTED)!.parentSpanId, spanIdForRun(EXTRACT));
  assert.equal(byRun.get(LOAD)!.parentSpanId, spanIdForRun(FR));
});

test('flow span: start at first Pending, end at Completed, wait time, the whole attribute map', async () => {
  const { spans } = await run(happyRun());
  const flow = spans.find((s) => s.run.id === FR)!;
  assert.equal(flow.startUs, us(8));
  assert.equal(flow.endUs, us(20));
  assert.deepEqual(flow.attributes, {
    'prefect.run.id': FR,
    'prefect.run.type': 'flow',
    'prefect.run.name': 'crimson-fox',
    'prefect.run.count': 1,
    'prefect.state.type': 'COMPLETED',
    'prefect.state.name': 'Completed',
    'prefect.tags': ['etl', 'nightly'],
    'prefect.flow.name': 'etl',
    'prefect.flow.id': FLOW.flowId,
    'prefect.deployment.name': 'nightly',
    'prefect.deployment.id': DEPLOY.deployment.id,
    'prefect.work-pool.name': 'k8s-pool',
    'prefect.work-pool.type': 'kubernetes',
    'prefect.work-queue.name': 'default',
    'prefect.run.wait_ms': 8000,
    'cicd.pipeline.name': 'etl',
    'cicd.pipeline.run.id': FR,
    'cicd.pipeline.result': 'success',
    'cicd.pipeline.run.url.full': `http://prefect.local:4200/runs/flow-run/${FR}`,
  });
  assert.deepEqual(
    flow.events.map((e) => [e.name, e.timeUs]),
    [['Scheduled', us(0)], ['Late', us(5)], ['Pending', us(8)], ['Running', us(10)], ['Completed', us(20)]],
  );
  assert.deepEqual(flow.events[3]!.attributes, {
    'prefect.state.type': 'RUNNING',
    'prefect.state.name': 'Running',
    'prefect.state.message': '',
    'prefect.state.id': (happyRun()[3] as { id: string }).id,
    'prefect.state.from': 'PENDING',
    'prefect.run.count': 1,
    'prefect.event.received_lag_ms': 15,
  });
});

test('task spans: name from task_key without hash, retries are span events, custom events land on the innermost run', async () => {
  const { spans } = await run(happyRun());
  const load = spans.find((s) => s.run.id === LOAD)!;
  assert.deepEqual(load.events.map((e) => e.name), ['Pending', 'Running', 'AwaitingRetry', 'Retrying', 'Completed']);
  assert.deepEqual(load.attributes, loadAttributes(2));
  const nested = spans.find((s) => s.run.id === NESTED)!;
  assert.deepEqual(nested.events.map((e) => e.name), ['Pending', 'Running', 'acme.rows.parsed', 'Completed']);
  const custom = nested.events[2]!;
  assert.deepEqual(custom, {
    name: 'acme.rows.parsed',
    timeUs: us(12.5),
    attributes: {
      'prefect.event.id': (happyRun()[8] as { id: string }).id,
      'prefect.event.payload': '{"rows":17}',
      'prefect.event.resource.id': 'acme.table.orders',
      'prefect.event.resource.name': 'orders',
    },
  });
  const flow = spans.find((s) => s.run.id === FR)!;
  assert.deepEqual(flow.events.map((e) => e.name), ['Scheduled', 'Late', 'Pending', 'Running', 'Completed'], 'not also on the flow run');
});

test('duplicates and reordering change nothing: same spans, same span events, exactly once', async () => {
  const base = await run(happyRun());
  const events = happyRun();
  // The very first event is sent again too (the event clock starts with it).
  const shuffled = [...events.slice(0, 4), ...events.slice(4).reverse(), events[6]!, events[10]!, events[16]!, events[0]!];
  const noisy = await run(shuffled);
  // Whole spans: attributes, span events with theirs, links.
  const whole = (spans: SpanRecord[]) => [...spans].sort((a, b) => a.spanId.localeCompare(b.spanId));
  assert.deepEqual(whole(noisy.spans), whole(base.spans));
  assert.equal(noisy.pipeline.counters.duplicates, 4);
});

test('a malformed copy of an event sent before it with its id (a state type Prefect does not have, a run id that is not a UUID, a payload too deep to write) is skipped, and the event itself is still taken: the same spans, nothing counted as a duplicate', async () => {
  const base = await run(happyRun());
  const events = happyRun();
  const withResource = (e: Ev, labels: Record<string, string>): Ev => ({ ...e, resource: { ...(e.resource as Ev), ...labels } });
  const custom = events.findIndex((e) => e.event === 'acme.rows.parsed');
  const lines: (Ev | string)[] = events.flatMap((e, i): (Ev | string)[] => {
    if (i === 3) return [withResource(e, { 'prefect.state-type': 'EXPLODED' }), e];
    if (i === 9) return [withResource(e, { 'prefect.resource.id': `prefect.task-run.{${NESTED}}` }), e];
    if (i === custom && !DEEP_JSON_WRITABLE) return [JSON.stringify({ ...e, payload: { x: 0 } }).replace('{"x":0}', DEEP_PAYLOAD_JSON), e];
    return [e];
  });
  const r = await run(lines);
  assert.deepEqual(r.spans, base.spans);
  const { unknown_state, bad_run_id, too_deep } = r.pipeline.counters.skipped;
  assert.deepEqual({ unknown_state, bad_run_id, too_deep, duplicates: r.pipeline.counters.duplicates }, { unknown_state: 1, bad_run_id: 1, too_deep: !DEEP_JSON_WRITABLE ? 1 : 0, duplicates: 0 });
});

test('an event naming its run\'s flow run or tracking task by an id that is not a UUID (in braces) moves nothing: the task keeps its flow run and the task under it stays under it, the flow run gets no parent task id', async () => {
  const base = await run(happyRun());
  const events = happyRun();
  const renamed = (e: Ev, role: string, to: (id: string) => string): Ev => ({
    ...e,
    related: [...(e.related as Ev[]).filter((r) => r['prefect.resource.role'] !== role), { 'prefect.resource.id': to(FR), 'prefect.resource.role': role }],
  });
  // EXTRACT Running (before the task nested under it starts); the flow run's Running.
  events[5] = renamed(events[5]!, 'flow-run', (id) => `prefect.flow-run.{${id}}`);
  events[3] = renamed(events[3]!, 'task-run', () => `prefect.task-run.{${LOAD}}`);
  const r = await run(events);
  assert.deepEqual(r.spans, base.spans);
});

test("an event of a task run that arrives before the task run's own states lands on that task run, which hangs under the parent task its states name: the same spans as in order", async () => {
  const base = await run(happyRun());
  const events = happyRun();
  // `acme.rows.parsed` (related: the nested task run and its flow run) before the nested task's Pending.
  const reordered = [...events.slice(0, 6), events[8]!, events[6]!, events[7]!, ...events.slice(9)];
  const noisy = await run(reordered);
  const whole = (spans: SpanRecord[]) => [...spans].sort((a, b) => a.spanId.localeCompare(b.spanId));
  assert.deepEqual(whole(noisy.spans), whole(base.spans));
  assert.deepEqual(tree(noisy.spans), ['etl [server] ok', '  extract [internal] ok', '    parse [internal] ok', '  load [internal] ok']);
});

test('states of one run with the same `occurred`, arriving in any order: span events follow the `follows` chain and the span ends in its last state', async () => {
  const ids = ['0198c7d2-aaaa-7000-8000-000000000001', '0198c7d2-aaaa-7000-8000-000000000002', '0198c7d2-aaaa-7000-8000-000000000003'];
  const [pending, running, completed] = [
    { ...taskState(LOAD, 'load-7c1', 'load-55aa66bb', 15, 'PENDING', 'Pending', null, 0), id: ids[0] },
    { ...taskState(LOAD, 'load-7c1', 'load-55aa66bb', 15, 'RUNNING', 'Running', 'PENDING', 1), id: ids[1], follows: ids[0] },
    { ...taskState(LOAD, 'load-7c1', 'load-55aa66bb', 15, 'COMPLETED', 'Completed', 'RUNNING', 1), id: ids[2], follows: ids[1] },
  ];
  const flow = [flowState(8, 'PENDING', 'Pending', 'SCHEDULED', 0), flowState(10, 'RUNNING', 'Running', 'PENDING', 1), flowState(20, 'COMPLETED', 'Completed', 'RUNNING', 1)];
  for (const order of [[completed, pending, running], [running, completed, pending], [completed, running, pending], [pending, running, completed]]) {
    const { spans } = await run([flow[0]!, flow[1]!, ...order, flow[2]!]);
    const load = spans.find((s) => s.run.id === LOAD)!;
    assert.deepEqual(
      { events: load.events.map((e) => [e.name, e.attributes['prefect.state.id']]), status: load.status, start: load.startUs, end: load.endUs, attributes: load.attributes },
      {
        events: [['Pending', ids[0]], ['Running', ids[1]], ['Completed', ids[2]]],
        status: { code: 'ok' },
        start: us(15),
        end: us(15),
        attributes: loadAttributes(1),
      },
      `arrival order ${order.map((e) => String((e as Ev).event)).join(', ')}`,
    );
  }
});

test('STLOGGING: one line per transition and attached event, with trace_id/span_id/trace_flags', async () => {
  const { lines } = await run(happyRun(), { jaegerUrl: 'http://jaeger.local:16686' });
  const st = lines.filter((l) => String(l.msg).startsWith('STLOGGING: '));
  assert.equal(st.length, 17);
  const running = st.find((l) => l['prefect.run.id'] === FR && l['prefect.state.name'] === 'Running')!;
  const ev = happyRun()[3] as { id: string };
  assert.deepEqual(running, {
    level: 30,
    time: running.time,
    service: 'prefect-otel',
    component: 'runs',
    msg: `STLOGGING: Flow run ${FR} (crimson-fox) state transition: PENDING -> RUNNING (state_name='Running', message='')`,
    trace_id: traceIdForRun(FR),
    span_id: spanIdForRun(FR),
    trace_flags: '01',
    'prefect.run.id': FR,
    'prefect.run.type': 'flow',
    'prefect.event.id': ev.id,
    'prefect.event.name': 'prefect.flow-run.Running',
    occurred: '2026-11-20T09:00:10.000000Z',
    'prefect.run.name': 'crimson-fox',
    'prefect.state.type': 'RUNNING',
    'prefect.state.name': 'Running',
    'prefect.run.url': `http://prefect.local:4200/runs/flow-run/${FR}`,
  });
  // A terminal state's line links to the trace in Jaeger; an event's line is on the innermost run, without state fields.
  const done = st.find((l) => l['prefect.run.id'] === FR && l['prefect.state.name'] === 'Completed')!;
  assert.deepEqual(done, {
    level: 30,
    time: done.time,
    service: 'prefect-otel',
    component: 'runs',
    msg: `STLOGGING: Flow run ${FR} (crimson-fox) state transition: RUNNING -> COMPLETED (state_name='Completed', message='')`,
    trace_id: traceIdForRun(FR),
    span_id: spanIdForRun(FR),
    trace_flags: '01',
    'prefect.run.id': FR,
    'prefect.run.type': 'flow',
    'prefect.event.id': (happyRun()[16] as { id: string }).id,
    'prefect.event.name': 'prefect.flow-run.Completed',
    occurred: '2026-11-20T09:00:20.000000Z',
    'prefect.run.name': 'crimson-fox',
    'prefect.state.type': 'COMPLETED',
    'prefect.state.name': 'Completed',
    'prefect.run.url': `http://prefect.local:4200/runs/flow-run/${FR}`,
    jaeger_url: `http://jaeger.local:16686/trace/${traceIdForRun(FR)}`,
  });
  const custom = st.find((l) => l['prefect.event.name'] === 'acme.rows.parsed')!;
  const customId = (happyRun()[8] as { id: string }).id;
  assert.deepEqual(custom, {
    level: 30,
    time: custom.time,
    service: 'prefect-otel',
    component: 'runs',
    msg: `STLOGGING: Event acme.rows.parsed (id=${customId}) on task run ${NESTED}`,
    trace_id: traceIdForRun(FR),
    span_id: spanIdForRun(NESTED),
    trace_flags: '01',
    'prefect.run.id': NESTED,
    'prefect.run.type': 'task',
    'prefect.event.id': customId,
    'prefect.event.name': 'acme.rows.parsed',
    occurred: '2026-11-20T09:00:12.500000Z',
    'prefect.run.name': 'parse-1a2',
    'prefect.run.url': `http://prefect.local:4200/runs/task-run/${NESTED}`,
  });
});

test('late task events after the flow ended still land in the flow run trace', async () => {
  const events = happyRun();
  const flowDone = events.pop()!;
  const loadDone = events.pop()!;
  const { spans } = await run([...events, flowDone, loadDone]);
  const load = spans.find((s) => s.run.id === LOAD)!;
  assert.equal(load.traceId, traceIdForRun(FR));
  assert.equal(load.parentSpanId, spanIdForRun(FR));
  assert.equal(load.status.code, 'ok');
  assert.equal(load.run.incomplete, false);
});

test('a task still open after its flow ended and the grace period passed is ended as incomplete', async () => {
  const events = happyRun();
  const flowDone = events.pop()!;
  events.pop();
  const after = flowRunStateEvent({ flowRunId: '0198c7d2-0000-7000-8000-0000000000ff', flowRunName: 'other', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(200) });
  const loadDone = taskState(LOAD, 'load-7c1', 'load-55aa66bb', 19, 'COMPLETED', 'Completed', 'RUNNING', 2);
  const { spans, lines, pipeline } = await run([...events, flowDone, after, loadDone], { taskGraceMs: 60_000 });
  const loads = spans.filter((s) => s.run.id === LOAD);
  assert.equal(loads.length, 1, 'its own Completed, arriving after that, is late: no second span');
  const load = loads[0]!;
  assert.equal(load.run.incomplete, true);
  // Its last known state; no result, as it never reached a terminal state.
  const { 'cicd.pipeline.task.run.result': _result, ...unfinished } = loadAttributes(2);
  assert.deepEqual(load.attributes, {
    ...unfinished,
    'prefect.state.type': 'RUNNING',
    'prefect.state.name': 'Retrying',
    'prefect.run.incomplete': true,
    'prefect.run.incomplete_reason': 'flow_ended',
  });
  assert.equal(load.endUs, us(18));
  assert.equal(load.status.code, 'unset');
  assert.deepEqual({ reruns: pipeline.tracker.counts.reruns, late: pipeline.tracker.counts.lateEvents }, { reruns: 0, late: 1 });
  const late = lines.filter((l) => l.late === true);
  assert.deepEqual(late.map((l) => [l['prefect.run.id'], l.span_id, l['prefect.state.name']]), [[LOAD, spanIdForRun(LOAD), 'Completed']]);
});

test('a flow run whose tasks keep working is not idle: a five-minute flow with a two-minute open-run timeout is one whole span', async () => {
  const events: Ev[] = [flowState(0, 'RUNNING', 'Running', 'PENDING', 1)];
  for (let i = 0; i < 30; i++) {
    const id = `0198c7d2-6000-7abc-8def-1000000000${String(i).padStart(2, '0')}`;
    events.push(taskState(id, `step-${i}`, 'step-abcd1234', i * 10 + 1, 'RUNNING', 'Running', 'PENDING', 1), taskState(id, `step-${i}`, 'step-abcd1234', i * 10 + 10, 'COMPLETED', 'Completed', 'RUNNING', 1));
  }
  events.push(flowState(301, 'COMPLETED', 'Completed', 'RUNNING', 1));
  const { spans, pipeline } = await run(events, { openRunTimeoutMs: 120_000 });
  const flows = spans.filter((s) => s.run.id === FR);
  assert.deepEqual(
    flows.map((s) => [s.run.attempt, s.status.code, s.run.incomplete, s.startUs, s.endUs, s.events.map((e) => e.name)]),
    [[0, 'ok', false, us(0), us(301), ['Running', 'Completed']]],
  );
  assert.deepEqual({ spans: spans.length, incomplete: pipeline.tracker.counts.incomplete, reruns: pipeline.tracker.counts.reruns }, { spans: 31, incomplete: 0, reruns: 0 });
});

test("the resume cursor: the latest event seen, but never past the server's `received` (a sender's clock running fast) nor moved by a skipped event", async () => {
  const events = happyRun();
  const skewed = flowRunStateEvent({ flowRunId: '0198c7d2-0000-7000-8000-0000000000c1', flowRunName: 'skew', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(3_600), received: at(21) }) as Ev;
  const bad = flowRunStateEvent({ flowRunId: '0198c7d2-0000-7000-8000-0000000000c2', flowRunName: 'bad', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(7_200) }) as Ev;
  bad.resource = { ...(bad.resource as Record<string, unknown>), 'prefect.state-type': 'BOGUS' };
  const plain = await run(events);
  assert.equal(plain.pipeline.cursorUs, us(20));
  const { pipeline } = await run([...events, skewed, bad]);
  assert.equal(pipeline.counters.skipped.unknown_state, 1);
  assert.equal(pipeline.cursorUs, us(21));
});

test('a skipped event with a wild `occurred`, or one from a sender whose clock runs days ahead, does not move time: other runs are not ended as idle', async () => {
  const A = '0198c7d2-0000-7000-8000-0000000000a1';
  const B = '0198c7d2-0000-7000-8000-0000000000b1';
  const f = (id: string, s: number, type: string, name: string) => flowRunStateEvent({ flowRunId: id, flowRunName: 'r', ...FLOW, state: { type, name }, from: type === 'RUNNING' ? 'PENDING' : 'RUNNING', runCount: 1, occurred: at(s) }) as Ev;
  const bad = f('0198c7d2-0000-7000-8000-0000000000ee', 2 * 86_400, 'RUNNING', 'Running');
  bad.resource = { ...(bad.resource as Record<string, unknown>), 'prefect.state-type': 'BOGUS' };
  const { spans, pipeline } = await run([f(A, 10, 'RUNNING', 'Running'), f(B, 11, 'RUNNING', 'Running'), bad, f(A, 20, 'COMPLETED', 'Completed'), f(B, 30, 'COMPLETED', 'Completed')]);
  assert.equal(pipeline.counters.skipped.unknown_state, 1);
  assert.deepEqual(
    spans.map((s) => [s.run.id, s.run.attempt, s.status.code, s.run.incomplete, s.events.map((e) => e.name)]),
    [[A, 0, 'ok', false, ['Running', 'Completed']], [B, 0, 'ok', false, ['Running', 'Completed']]],
  );
  // Valid, but sent by a host whose clock is two days ahead: the server received it at 12 s.
  const C = '0198c7d2-0000-7000-8000-0000000000c1';
  const skewed = { ...f(C, 2 * 86_400, 'RUNNING', 'Running'), received: new Date(at(12)).toISOString() };
  const second = await run([f(A, 10, 'RUNNING', 'Running'), f(B, 11, 'RUNNING', 'Running'), skewed, f(A, 20, 'COMPLETED', 'Completed'), f(B, 30, 'COMPLETED', 'Completed')]);
  assert.deepEqual(
    second.spans.map((s) => [s.run.id, s.status.code, s.run.incomplete, s.attributes['prefect.run.incomplete_reason'], s.events.map((e) => e.name)]).sort(),
    [[A, 'ok', false, undefined, ['Running', 'Completed']], [B, 'ok', false, undefined, ['Running', 'Completed']], [C, 'unset', true, 'end_of_input', ['Running']]],
  );
});

test('failures: FAILED is ERROR with the state message, CRASHED is ERROR, CANCELLED is UNSET', async () => {
  const mk = (id: string, type: string, name: string, message: string) => [
    flowRunStateEvent({ flowRunId: id, flowRunName: 'r', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(1) }) as Ev,
    flowRunStateEvent({ flowRunId: id, flowRunName: 'r', ...FLOW, state: { type, name, message }, from: 'RUNNING', runCount: 1, occurred: at(2) }) as Ev,
  ];
  const a = '0198c7d2-0000-7000-8000-00000000000a';
  const b = '0198c7d2-0000-7000-8000-00000000000b';
  const c = '0198c7d2-0000-7000-8000-00000000000c';
  const { spans } = await run([...mk(a, 'FAILED', 'Failed', 'Flow run encountered an exception: ValueError'), ...mk(b, 'CRASHED', 'Crashed', 'process killed'), ...mk(c, 'CANCELLED', 'Cancelled', 'by user')]);
  const status = Object.fromEntries(spans.map((s) => [s.run.id, [s.status, s.attributes['cicd.pipeline.result']]]));
  assert.deepEqual(status, {
    [a]: [{ code: 'error', message: 'Flow run encountered an exception: ValueError' }, 'failure'],
    [b]: [{ code: 'error', message: 'process killed' }, 'error'],
    [c]: [{ code: 'unset' }, 'cancellation'],
  });
});

test('a failed or crashed run carries error.type: the exception class its state message names, else the state name', async () => {
  const flowEnd = (id: string, type: string, name: string, message: string) => [
    flowRunStateEvent({ flowRunId: id, flowRunName: 'r', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(1) }) as Ev,
    flowRunStateEvent({ flowRunId: id, flowRunName: 'r', ...FLOW, state: { type, name, message }, from: 'RUNNING', runCount: 1, occurred: at(2) }) as Ev,
  ];
  const taskEnd = (id: string, message: string) => [
    taskRunStateEvent({ taskRunId: id, taskRunName: 't-1a2', taskKey: 'load-55aa66bb', state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(1) }) as Ev,
    taskRunStateEvent({ taskRunId: id, taskRunName: 't-1a2', taskKey: 'load-55aa66bb', state: { type: 'FAILED', name: 'Failed', message }, from: 'RUNNING', runCount: 1, occurred: at(2) }) as Ev,
  ];
  const ids = Array.from({ length: 8 }, (_, i) => `0198c7d2-0000-7000-8000-0000000001${String(i).padStart(2, '0')}`);
  const { spans } = await run([
    ...flowEnd(ids[0]!, 'FAILED', 'Failed', 'Flow run encountered an exception: ValueError: bad row 17'),
    ...taskEnd(ids[1]!, 'Task run encountered an exception requests.exceptions.HTTPError: HTTP 500 for POST'),
    ...taskEnd(ids[2]!, 'Task run encountered an exception.'),
    ...flowEnd(ids[3]!, 'FAILED', 'TimedOut', 'Flow run exceeded timeout of 60 second(s)'),
    ...flowEnd(ids[4]!, 'CRASHED', 'Crashed', 'Flow run infrastructure exited with non-zero status code 137.'),
    ...flowEnd(ids[5]!, 'FAILED', 'Failed', 'Flow run encountered an exception: KeyError\n'),
    ...flowEnd(ids[6]!, 'COMPLETED', 'Completed', ''),
    ...flowEnd(ids[7]!, 'CANCELLED', 'Cancelled', 'by user'),
  ]);
  const errorTypes = Object.fromEntries(spans.map((s) => [s.run.id, [s.status.code, s.attributes['error.type']]]));
  assert.deepEqual(errorTypes, {
    [ids[0]!]: ['error', 'ValueError'],
    [ids[1]!]: ['error', 'requests.exceptions.HTTPError'],
    [ids[2]!]: ['error', 'Failed'],
    [ids[3]!]: ['error', 'TimedOut'],
    [ids[4]!]: ['error', 'Crashed'],
    [ids[5]!]: ['error', 'KeyError'],
    [ids[6]!]: ['ok', undefined],
    [ids[7]!]: ['unset', undefined],
  });
});

test('a rerun from the UI after Completed becomes a second span in the same trace, linked to the first', async () => {
  const events = happyRun().filter((e) => String(e.event).startsWith('prefect.flow-run.'));
  events.push(flowState(100, 'SCHEDULED', 'Scheduled', 'COMPLETED', 1), flowState(101, 'RUNNING', 'Running', 'PENDING', 2), flowState(110, 'FAILED', 'Failed', 'RUNNING', 2, { message: 'boom' }));
  const { spans } = await run(events);
  assert.deepEqual(
    spans.map((s) => [s.spanId, s.traceId, s.run.attempt, s.status.code, s.links.map((l) => l.spanId)]),
    [
      [spanIdForRun(FR), traceIdForRun(FR), 0, 'ok', []],
      [spanIdForRun(FR, 1), traceIdForRun(FR), 1, 'error', [spanIdForRun(FR)]],
    ],
  );
  assert.equal(spans[1]!.startUs, us(101));
  assert.deepEqual(spans[1]!.events.map((e) => e.name), ['Scheduled', 'Running', 'Failed']);
});

test('ids by the published formula, computed here without the product\'s code: trace id = the root flow run\'s UUID as 32 lowercase hex digits, span id = the first 16 hex digits of SHA-256 of the lowercase dashed UUID (`<uuid>:1` for the first rerun), also when the wire writes the UUIDs in capitals; a task with no flow run is the root of its own trace', async () => {
  const sha = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);
  const upper = (e: Ev): Ev => JSON.parse(JSON.stringify(e).replaceAll(FR, FR.toUpperCase()).replaceAll(LOAD, LOAD.toUpperCase())) as Ev;
  const LONE = '0198c7d2-6000-7abc-8def-0000000000b1';
  const events = [
    flowState(0, 'RUNNING', 'Running', 'PENDING', 1),
    taskState(LOAD, 'load-7c1', 'load-55aa66bb', 1, 'RUNNING', 'Running', 'PENDING', 1),
    taskState(LOAD, 'load-7c1', 'load-55aa66bb', 2, 'COMPLETED', 'Completed', 'RUNNING', 1),
    flowState(3, 'COMPLETED', 'Completed', 'RUNNING', 1),
    flowState(10, 'SCHEDULED', 'Scheduled', 'COMPLETED', 1),
    flowState(11, 'RUNNING', 'Running', 'SCHEDULED', 2),
    flowState(12, 'COMPLETED', 'Completed', 'RUNNING', 2),
  ].map(upper);
  const lone = [1, 2].map((s) => taskRunStateEvent({ taskRunId: LONE.toUpperCase(), taskRunName: 'ping-0a1', taskKey: 'ping-0f0e0d0c', state: s === 1 ? { type: 'RUNNING', name: 'Running' } : { type: 'COMPLETED', name: 'Completed' }, from: s === 1 ? 'PENDING' : 'RUNNING', runCount: 1, occurred: at(s) }) as Ev);
  const { spans } = await run([...events, ...lone]);
  const root = FR.replace(/-/g, '');
  assert.deepEqual(spans.map((s) => [s.name, s.run.attempt, s.traceId, s.spanId, s.parentSpanId, s.kind, s.links.map((l) => [l.traceId, l.spanId])]).sort(), [
    ['etl', 0, root, sha(FR), undefined, 'server', []],
    ['etl', 1, root, sha(`${FR}:1`), undefined, 'server', [[root, sha(FR)]]],
    ['load', 0, root, sha(LOAD), sha(FR), 'internal', []],
    ['ping', 0, LONE.replace(/-/g, ''), sha(LONE), undefined, 'internal', []],
  ].sort());
  assert.deepEqual(spans.map((s) => s.attributes['prefect.run.id']).sort(), [FR, FR, LOAD, LONE].sort(), 'run ids in their canonical lowercase form');
});

test('a rerun of a run whose first attempt is no longer remembered (more runs finished since than PREFECT_OTEL_MAX_OPEN_RUNS) does not export the first attempt\'s span id again', async () => {
  const other = (i: number, s: number): Ev[] => {
    const id = `0198c7d2-9000-7000-8000-${String(i).padStart(12, '0')}`;
    const ev = (t: number, type: string, name: string, from: string) => flowRunStateEvent({ flowRunId: id, flowRunName: `other-${i}`, ...FLOW, state: { type, name }, from, runCount: 1, occurred: at(t) }) as Ev;
    return [ev(s, 'RUNNING', 'Running', 'PENDING'), ev(s + 0.5, 'COMPLETED', 'Completed', 'RUNNING')];
  };
  const events = [
    flowState(0, 'RUNNING', 'Running', 'PENDING', 1), flowState(1, 'FAILED', 'Failed', 'RUNNING', 1, { message: 'boom' }),
    ...[1, 2, 3, 4].flatMap((i) => other(i, 1 + i)),
    flowState(100, 'SCHEDULED', 'AwaitingRetry', 'FAILED', 1), flowState(101, 'RUNNING', 'Running', 'SCHEDULED', 2), flowState(110, 'COMPLETED', 'Completed', 'RUNNING', 2),
  ];
  const { spans } = await run(events, { maxOpenRuns: 2 });
  assert.deepEqual(
    spans.filter((s) => s.run.id === FR).map((s) => [s.spanId, s.traceId, s.parentSpanId, s.kind, s.run.attempt, s.status.code, s.links, s.events.map((e) => e.name)]),
    [
      [spanIdForRun(FR), traceIdForRun(FR), undefined, 'server', 0, 'error', [], ['Running', 'Failed']],
      [spanIdForRun(FR, 1), traceIdForRun(FR), undefined, 'server', 1, 'ok', [{ traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), attributes: { 'prefect.link.kind': 'previous_attempt' } }], ['AwaitingRetry', 'Running', 'Completed']],
    ],
  );
  assert.equal(new Set(spans.map((s) => s.spanId)).size, spans.length, 'no span id exported twice');
});

test('tasks outside any flow run: one called inside another (__parents__) hangs under it in its trace, its log lines too; a task with no parent is the root of its own trace', async () => {
  const [OUTER, INNER, LONE] = ['0198c7d2-6000-7abc-8def-0000000000a1', '0198c7d2-6000-7abc-8def-0000000000a2', '0198c7d2-6000-7abc-8def-0000000000a3'];
  const task = (id: string, name: string, s: number, type: string, from: string | null, parents?: string[]): Ev =>
    taskRunStateEvent({ taskRunId: id, taskRunName: name, taskKey: `${name}-abcdef12`, dynamicKey: `${name}-ab12`, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: type === 'PENDING' ? 0 : 1, occurred: at(s), parents });
  const { spans, lines } = await run([
    task(OUTER, 'outer', 0, 'PENDING', null), task(OUTER, 'outer', 1, 'RUNNING', 'PENDING'),
    task(INNER, 'inner', 2, 'PENDING', null, [OUTER]), task(INNER, 'inner', 3, 'RUNNING', 'PENDING', [OUTER]), task(INNER, 'inner', 4, 'COMPLETED', 'RUNNING', [OUTER]),
    task(OUTER, 'outer', 5, 'COMPLETED', 'RUNNING'),
    task(LONE, 'lone', 6, 'PENDING', null), task(LONE, 'lone', 7, 'COMPLETED', 'PENDING'),
  ]);
  assert.deepEqual(
    spans.map((s) => [s.name, s.traceId, s.parentSpanId, s.kind, s.status.code]).sort(),
    [
      ['inner', traceIdForRun(OUTER), spanIdForRun(OUTER), 'internal', 'ok'],
      ['lone', traceIdForRun(LONE), undefined, 'internal', 'ok'],
      ['outer', traceIdForRun(OUTER), undefined, 'internal', 'ok'],
    ].sort(),
  );
  assert.deepEqual(
    lines.filter((l) => l['prefect.run.id'] === INNER).map((l) => [l.trace_id, l.span_id, l['prefect.state.name']]),
    ['Pending', 'Running', 'Completed'].map((name) => [traceIdForRun(OUTER), spanIdForRun(INNER), name]),
  );
});

test('a run ended incomplete (idle past the open-run timeout) and rerun later: its terminal state is a late line, the rerun (a state leaving a terminal state) a new span linked to the first', async () => {
  const OTHER = '0198c7d2-9000-7000-8000-0000000000e1';
  const other = (s: number, type: string, name: string, from: string) => flowRunStateEvent({ flowRunId: OTHER, flowRunName: 'other', ...FLOW, state: { type, name }, from, runCount: 1, occurred: at(s) }) as Ev;
  const events = [
    flowState(0, 'PENDING', 'Pending', 'SCHEDULED', 0), flowState(1, 'RUNNING', 'Running', 'PENDING', 1),
    other(5000, 'RUNNING', 'Running', 'PENDING'), other(5001, 'COMPLETED', 'Completed', 'RUNNING'),
    flowState(6000, 'CANCELLED', 'Cancelled', 'RUNNING', 1),
    flowState(7000, 'SCHEDULED', 'AwaitingRetry', 'CANCELLED', 1), flowState(7001, 'RUNNING', 'Running', 'SCHEDULED', 2), flowState(7002, 'COMPLETED', 'Completed', 'RUNNING', 2),
  ];
  const { spans, lines } = await run(events, { openRunTimeoutMs: 3_600_000 });
  assert.deepEqual(
    spans.filter((s) => s.run.id === FR).map((s) => [s.spanId, s.run.attempt, s.run.incomplete, s.status.code, s.events.map((e) => e.name), s.links.map((l) => l.spanId)]),
    [
      [spanIdForRun(FR), 0, true, 'unset', ['Pending', 'Running'], []],
      [spanIdForRun(FR, 1), 1, false, 'ok', ['AwaitingRetry', 'Running', 'Completed'], [spanIdForRun(FR)]],
    ],
  );
  assert.deepEqual(lines.filter((l) => l.late === true).map((l) => [l['prefect.state.name'], l.span_id]), [['Cancelled', spanIdForRun(FR)]]);
});

test('subflow: the tracking task is looked up and the child hangs under the parent flow run in its trace', async () => {
  const CHILD = '0198c7d2-7000-7000-8000-0000000000c1';
  const TRACK = '0198c7d2-7000-7000-8000-0000000000d1';
  const child = (s: number, type: string, name: string, from: string | null) =>
    flowRunStateEvent({ flowRunId: CHILD, flowRunName: 'child-run', flowId: '11111111-1111-4111-8111-111111111111', flowName: 'child-flow', parentTaskRunId: TRACK, parentTaskRunName: 'child-flow-0', state: { type, name }, from, runCount: 1, occurred: at(s) }) as Ev;
  const events = [...happyRun().slice(0, 4), child(12, 'PENDING', 'Pending', null), child(12.5, 'RUNNING', 'Running', 'PENDING'), child(13, 'COMPLETED', 'Completed', 'RUNNING'), happyRun()[16]!];
  const asked: string[] = [];
  const found = await run(events, {}, (id) => (asked.push(id), Promise.resolve(FR)));
  assert.deepEqual(asked, [TRACK]);
  assert.deepEqual(tree(found.spans), ['etl [server] ok', '  child-flow [internal] ok']);
  assert.deepEqual(found.pipeline.tracker.counts.parentLookups, { lookups: 1, found: 1, failed: 0, abandoned: 0 });
  const c = found.spans.find((s) => s.run.id === CHILD)!;
  assert.equal(c.traceId, traceIdForRun(FR));
  assert.equal(c.attributes['prefect.parent_task_run.id'], TRACK);

  const lost = await run(events, {}, () => Promise.resolve(null));
  const root = lost.spans.find((s) => s.run.id === CHILD)!;
  assert.deepEqual([root.traceId, root.parentSpanId, root.kind, root.attributes['prefect.parent_task_run.id']], [traceIdForRun(CHILD), undefined, 'server', TRACK]);
  assert.deepEqual(
    lost.lines.filter((l) => (l.level as number) >= 40).map(({ time: _time, ...l }) => l),
    [{
      level: 40, service: 'prefect-otel', component: 'model', kind: 'lookup_failed', 'prefect.run.id': CHILD, 'prefect.parent_task_run.id': TRACK,
      msg: 'parent of a subflow could not be looked up; it becomes the root of its own trace',
    }],
  );
  assert.deepEqual(lost.pipeline.tracker.counts.parentLookups, { lookups: 1, found: 0, failed: 1, abandoned: 0 });

  // A lookup still unanswered when replay's wait for lookups ends is given up.
  const unanswered = createPipeline({ config: resolveConfig({ tracesExporter: 'none' }, {}), logger: createLogger({ level: 'silent', format: 'json' }), clock: 'event', delivery: null, resolveOwner: () => new Promise(() => undefined) });
  for (const e of events) unanswered.ingest(JSON.stringify(e));
  await unanswered.finish('end_of_input', 1);
  assert.deepEqual([unanswered.tracker.counts.parentLookups, unanswered.tracker.pendingLookups], [{ lookups: 1, found: 0, failed: 0, abandoned: 1 }, 0]);
});

test("an event emitted in a subflow called inside a task lands on the subflow: Prefect keeps the calling task's context there, so the event names that task (a task of the parent flow run) beside the subflow", async () => {
  const CHILD = '0198c7d2-7000-7000-8000-0000000000c2';
  const TRACK = '0198c7d2-7000-7000-8000-0000000000d2';
  const child = (s: number, type: string, name: string, from: string | null) =>
    flowRunStateEvent({ flowRunId: CHILD, flowRunName: 'child-run', flowId: '11111111-1111-4111-8111-111111111111', flowName: 'child-flow', parentTaskRunId: TRACK, parentTaskRunName: 'child-flow-0', state: { type, name }, from, runCount: 1, occurred: at(s) }) as Ev;
  // An artifact created in the subflow's body: the EventsWorker relates the innermost FlowRunContext
  // (the subflow) and the TaskRunContext still set (extract, the task that called the subflow).
  const artifact = customEvent({
    event: 'prefect.artifact.created', resourceId: 'prefect.artifact.0198c7d2-7000-7000-8000-0000000000a1', occurred: at(12.7),
    related: [
      { id: `prefect.flow-run.${CHILD}`, role: 'flow-run', name: 'child-run' },
      { id: `prefect.task-run.${EXTRACT}`, role: 'task-run', name: 'extract-3f2' },
      { id: 'prefect.flow.11111111-1111-4111-8111-111111111111', role: 'flow', name: 'child-flow' },
    ],
  }) as Ev;
  const h = happyRun();
  // The parent flow run's states, extract Pending and Running; the subflow inside extract; extract and the parent end.
  const events = [...h.slice(0, 6), child(12, 'PENDING', 'Pending', null), child(12.5, 'RUNNING', 'Running', 'PENDING'), artifact, child(13, 'COMPLETED', 'Completed', 'RUNNING'), h[10]!, h[16]!];
  const found = await run(events, {}, () => Promise.resolve(FR));
  const names = (id: string): string[] => found.spans.find((s) => s.run.id === id)!.events.map((e) => e.name);
  assert.deepEqual(names(CHILD), ['Pending', 'Running', 'prefect.artifact.created', 'Completed']);
  assert.deepEqual(names(EXTRACT), ['Pending', 'Running', 'Completed']);
});

test('subflows three deep whose middle flow run is not seen before the innermost (its events missed or late): every run is in the root\'s trace, under its parent; the middle one\'s tracking task is asked once', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const id = (kind: number, i: number): string => `0198c7d2-${kind}000-7000-8000-00000000000${i}`;
  const [ROOT, MIDDLE, LEAF, TRACK_MIDDLE, TRACK_LEAF, TASK] = [id(1, 1), id(1, 2), id(1, 3), id(2, 2), id(2, 3), id(3, 1)];
  prefect.addTaskRun({ id: TRACK_MIDDLE, flow_run_id: ROOT });
  prefect.addTaskRun({ id: TRACK_LEAF, flow_run_id: MIDDLE });
  prefect.addFlowRun({ id: ROOT, parent_task_run_id: null });
  prefect.addFlowRun({ id: MIDDLE, parent_task_run_id: TRACK_MIDDLE });
  prefect.addFlowRun({ id: LEAF, parent_task_run_id: TRACK_LEAF });
  const flow = (runId: string, name: string, s: number, type: string, from: string, parent?: string): Ev =>
    flowRunStateEvent({ flowRunId: runId, flowRunName: `${name}-run`, flowId: FLOW.flowId, flowName: name, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: at(s), ...(parent === undefined ? {} : { parentTaskRunId: parent }) });
  const task = (s: number, type: string, from: string): Ev =>
    taskRunStateEvent({ taskRunId: TASK, taskRunName: 'load-1', taskKey: 'load-55aa66bb', flowRunId: LEAF, flowRunName: 'leaf-run', state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: at(s) });
  const rest = createPrefectRestClient({ apiUrl: prefect.url });
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const logger = createLogger({ level: 'silent', format: 'json' });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s), resolveOwner: createOwnerLookup(rest), resolveFlowParent: createFlowParentLookup(rest) });
  const ingest = async (events: Ev[]): Promise<void> => {
    for (const e of events) pipeline.ingest(JSON.stringify(e));
    // The lookups answer before the next events come, as they do live.
    while (pipeline.tracker.pendingLookups > 0) await new Promise((r) => setTimeout(r, 5));
  };
  await ingest([flow(ROOT, 'root', 0, 'RUNNING', 'PENDING')]);
  // The innermost subflow's task, then the subflow itself; nothing yet of the middle one.
  await ingest([task(3, 'RUNNING', 'PENDING'), task(4, 'COMPLETED', 'RUNNING'), flow(LEAF, 'leaf', 2, 'RUNNING', 'PENDING', TRACK_LEAF), flow(LEAF, 'leaf', 5, 'COMPLETED', 'RUNNING', TRACK_LEAF)]);
  await ingest([flow(MIDDLE, 'middle', 1, 'RUNNING', 'PENDING', TRACK_MIDDLE), flow(MIDDLE, 'middle', 6, 'COMPLETED', 'RUNNING', TRACK_MIDDLE), flow(ROOT, 'root', 7, 'COMPLETED', 'RUNNING')]);
  await pipeline.finish('end_of_input');
  assert.deepEqual(
    spans.map((s) => [s.name, s.traceId, s.parentSpanId]).sort(),
    [
      ['leaf', traceIdForRun(ROOT), spanIdForRun(MIDDLE)],
      ['load', traceIdForRun(ROOT), spanIdForRun(LEAF)],
      ['middle', traceIdForRun(ROOT), spanIdForRun(ROOT)],
      ['root', traceIdForRun(ROOT), undefined],
    ].sort(),
  );
  assert.deepEqual(tree(spans), ['root [server] ok', '  middle [internal] ok', '    leaf [internal] ok', '      load [internal] ok']);
  assert.deepEqual(
    prefect.restRequests.map((q) => `${q.method} ${q.path}`).sort(),
    [`GET /api/flow_runs/${LEAF}`, `GET /api/flow_runs/${MIDDLE}`, `GET /api/task_runs/${TRACK_LEAF}`, `GET /api/task_runs/${TRACK_MIDDLE}`].sort(),
  );
  assert.deepEqual(pipeline.tracker.counts.parentLookups, { lookups: 4, found: 4, failed: 0, abandoned: 0 });

  // A flow run the server does not know: the task is in that flow run's own trace, the lookup counted as failed.
  const UNKNOWN = id(1, 9);
  const lone = createPipeline({ config, logger, clock: 'event', delivery: null, resolveOwner: createOwnerLookup(rest), resolveFlowParent: createFlowParentLookup(rest) });
  lone.ingest(JSON.stringify(taskRunStateEvent({ taskRunId: id(3, 9), taskRunName: 'load-9', taskKey: 'load-55aa66bb', flowRunId: UNKNOWN, flowRunName: 'gone-run', state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(1) })));
  await lone.finish('end_of_input');
  assert.deepEqual(lone.tracker.counts.parentLookups, { lookups: 1, found: 0, failed: 1, abandoned: 0 });
});

test('a subflow first seen through an event that cannot say it is one (a heartbeat, a worker event, a custom event: watch started in the middle of it) hangs under its parent in the parent\'s trace, as when its states come first: its tracking task is asked with GET /api/flow_runs/{id}; a root flow run first seen so stays a root, with no warning', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const [PARENT, CHILD, TRACK] = ['0198c7d2-7000-7000-8000-0000000000f1', '0198c7d2-7000-7000-8000-0000000000f2', '0198c7d2-7000-7000-8000-0000000000f3'];
  prefect.addTaskRun({ id: TRACK, flow_run_id: PARENT });
  prefect.addFlowRun({ id: PARENT, parent_task_run_id: null });
  prefect.addFlowRun({ id: CHILD, parent_task_run_id: TRACK });
  const rest = createPrefectRestClient({ apiUrl: prefect.url });
  const flow = (runId: string, name: string, s: number, type: string, from: string, tracking?: string): Ev =>
    flowRunStateEvent({ flowRunId: runId, flowRunName: `${name}-run`, flowId: FLOW.flowId, flowName: name, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: at(s), ...(tracking === undefined ? {} : { parentTaskRunId: tracking }) });
  const heartbeat = (runId: string, name: string, s: number): Ev => customEvent({
    event: 'prefect.flow-run.heartbeat', resourceId: `prefect.flow-run.${runId}`, resourceName: `${name}-run`, occurred: at(s),
    related: [{ id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name }, { id: `prefect.deployment.${DEPLOY.deployment.id}`, role: 'deployment', name: 'nightly' }],
  });
  const firstOfChild: [string, Ev][] = [
    ['heartbeat', heartbeat(CHILD, 'child', 30)],
    ['worker event', customEvent({
      event: 'prefect.worker.executed-flow-run', resourceId: 'prefect.worker.process.worker-1', resourceName: 'worker-1', occurred: at(30),
      related: [{ id: `prefect.flow-run.${CHILD}`, role: 'flow-run', name: 'child-run' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'child' }],
    })],
    ['custom event', customEvent({
      event: 'acme.rows.loaded', resourceId: 'acme.table.orders', resourceName: 'orders', payload: { rows: 17 }, occurred: at(30),
      related: [{ id: `prefect.flow-run.${CHILD}`, role: 'flow-run', name: 'child-run' }, { id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'child' }],
    })],
  ];
  for (const [what, first] of firstOfChild) {
    const asked = prefect.restRequests.length;
    const { spans, lines, pipeline } = await run(
      // The parent too is first seen through its heartbeat.
      [heartbeat(PARENT, 'parent', 0.5), flow(PARENT, 'parent', 1, 'RUNNING', 'PENDING'), first, flow(CHILD, 'child', 40, 'COMPLETED', 'RUNNING', TRACK), flow(PARENT, 'parent', 50, 'COMPLETED', 'RUNNING')],
      {}, createOwnerLookup(rest), createFlowParentLookup(rest),
    );
    assert.deepEqual(tree(spans), ['parent [server] ok', '  child [internal] ok'], what);
    assert.deepEqual(parents(spans), { [PARENT]: { trace: traceIdForRun(PARENT), parent: null }, [CHILD]: { trace: traceIdForRun(PARENT), parent: PARENT } }, what);
    assert.equal(spans.find((s) => s.run.id === CHILD)!.attributes['prefect.parent_task_run.id'], TRACK, what);
    assert.deepEqual(lines.filter((l) => (l.level as number) >= 40), [], what);
    assert.deepEqual(
      prefect.restRequests.slice(asked).map((q) => `${q.method} ${q.path}`).sort(),
      [`GET /api/flow_runs/${CHILD}`, `GET /api/flow_runs/${PARENT}`, `GET /api/task_runs/${TRACK}`].sort(),
      what,
    );
    assert.deepEqual(pipeline.tracker.counts.parentLookups, { lookups: 3, found: 3, failed: 0, abandoned: 0 }, what);
  }
});

test('a subflow first seen through its heartbeat whose parent cannot be found (replay with no Prefect API there, no lookups, or its tracking task\'s flow run unknown) becomes a root, as before, with prefect.parent_task_run.id and one warning: never a silent root', async () => {
  const [PARENT, CHILD, TRACK] = ['0198c7d2-7000-7000-8000-0000000000f1', '0198c7d2-7000-7000-8000-0000000000f2', '0198c7d2-7000-7000-8000-0000000000f3'];
  const flow = (runId: string, name: string, s: number, type: string, from: string, tracking?: string): Ev =>
    flowRunStateEvent({ flowRunId: runId, flowRunName: `${name}-run`, flowId: FLOW.flowId, flowName: name, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: at(s), ...(tracking === undefined ? {} : { parentTaskRunId: tracking }) });
  const heartbeat = customEvent({
    event: 'prefect.flow-run.heartbeat', resourceId: `prefect.flow-run.${CHILD}`, resourceName: 'child-run', occurred: at(30),
    related: [{ id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'child' }],
  });
  const events = [flow(PARENT, 'parent', 1, 'RUNNING', 'PENDING'), heartbeat, flow(CHILD, 'child', 35, 'RUNNING', 'PENDING', TRACK), flow(CHILD, 'child', 40, 'COMPLETED', 'RUNNING', TRACK), flow(PARENT, 'parent', 50, 'COMPLETED', 'RUNNING')];
  const warning = (kind: string, msg: string) => [{ level: 40, service: 'prefect-otel', component: 'model', kind, 'prefect.run.id': CHILD, 'prefect.parent_task_run.id': TRACK, msg }];
  const configurations: [string, ((id: string) => Promise<string | null | undefined>) | undefined, ReturnType<typeof warning>][] = [
    // What replay's lookups answer when the API cannot be reached.
    ['no answer', () => Promise.resolve(undefined), warning('parent_late', 'subflow named its tracking task only after it had become the root of its own trace (its first event did not name it and no lookup found its parent); it stays a root')],
    // A pipeline that asks none.
    ['no lookups', undefined, warning('parent_late', 'subflow named its tracking task only after it had become the root of its own trace (its first event did not name it and no lookup found its parent); it stays a root')],
    // Its tracking task found, that task's flow run not: warned of then, once.
    ['tracking task found, its flow run not', () => Promise.resolve(TRACK), warning('lookup_failed', 'parent of a subflow could not be looked up; it becomes the root of its own trace')],
  ];
  for (const [what, resolveFlowParent, warned] of configurations) {
    const { spans, lines } = await run(events, {}, () => Promise.resolve(null), resolveFlowParent);
    assert.deepEqual(tree(spans), ['parent [server] ok', 'child [server] ok'], what);
    assert.deepEqual(parents(spans), { [PARENT]: { trace: traceIdForRun(PARENT), parent: null }, [CHILD]: { trace: traceIdForRun(CHILD), parent: null } }, what);
    assert.equal(spans.find((s) => s.run.id === CHILD)!.attributes['prefect.parent_task_run.id'], TRACK, what);
    assert.deepEqual(lines.filter((l) => (l.level as number) >= 40).map(({ time: _time, pid: _pid, hostname: _hostname, ...l }) => l), warned, what);
  }
});

test('a subflow whose parent lookup is answered only after its parent flow run was rerun hangs under the attempt it ran in, not the rerun', async () => {
  const CHILD = '0198c7d2-7000-7000-8000-0000000000c1';
  const TRACK = '0198c7d2-7000-7000-8000-0000000000d1';
  const OTHER = '0198c7d2-7000-7000-8000-0000000000e1';
  const child = (s: number, type: string, name: string, from: string | null) =>
    flowRunStateEvent({ flowRunId: CHILD, flowRunName: 'child-run', flowId: '11111111-1111-4111-8111-111111111111', flowName: 'child-flow', parentTaskRunId: TRACK, parentTaskRunName: 'child-flow-0', state: { type, name }, from, runCount: 1, occurred: at(s) }) as Ev;
  const events = [
    flowState(10, 'RUNNING', 'Running', 'PENDING', 1), child(12, 'RUNNING', 'Running', 'PENDING'), child(13, 'FAILED', 'Failed', 'RUNNING'), flowState(14, 'FAILED', 'Failed', 'RUNNING', 1),
    flowState(100, 'SCHEDULED', 'AwaitingRetry', 'FAILED', 1), flowState(101, 'RUNNING', 'Running', 'SCHEDULED', 2), flowState(110, 'COMPLETED', 'Completed', 'RUNNING', 2),
    // Time goes on: the rerun's span is exported before the lookup is answered.
    flowRunStateEvent({ flowRunId: OTHER, flowRunName: 'other', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(200) }) as Ev,
  ];
  const { spans } = await run(events, {}, () => Promise.resolve(FR));
  assert.deepEqual(
    spans.filter((s) => s.run.id !== OTHER).map((s) => [s.name, s.run.attempt, s.traceId, s.parentSpanId]),
    [['etl', 0, traceIdForRun(FR), undefined], ['etl', 1, traceIdForRun(FR), undefined], ['child-flow', 0, traceIdForRun(FR), spanIdForRun(FR)]],
  );
});

test('subflows whose parent cannot be looked up: the first ten are warned, the rest counted at debug, so a server that stopped answering does not flood the log', async () => {
  const subflow = (i: number): Ev[] => {
    const id = `0198c7d2-7000-7000-8000-${(0xc00 + i).toString(16).padStart(12, '0')}`;
    const track = `0198c7d2-7000-7000-8000-${(0xd00 + i).toString(16).padStart(12, '0')}`;
    const ev = (s: number, type: string, name: string, from: string | null) =>
      flowRunStateEvent({ flowRunId: id, flowRunName: `child-${i}`, flowId: '11111111-1111-4111-8111-111111111111', flowName: 'child-flow', parentTaskRunId: track, parentTaskRunName: 'child-flow-0', state: { type, name }, from, runCount: 1, occurred: at(s + i) }) as Ev;
    return [ev(1, 'RUNNING', 'Running', 'PENDING'), ev(2, 'COMPLETED', 'Completed', 'RUNNING')];
  };
  const lost = await run(Array.from({ length: 15 }, (_, i) => subflow(i)).flat(), {}, () => Promise.resolve(null));
  const MSG = 'parent of a subflow could not be looked up; it becomes the root of its own trace';
  const ids = (i: number) => ({ 'prefect.run.id': `0198c7d2-7000-7000-8000-${(0xc00 + i).toString(16).padStart(12, '0')}`, 'prefect.parent_task_run.id': `0198c7d2-7000-7000-8000-${(0xd00 + i).toString(16).padStart(12, '0')}` });
  const notice = (level: number, msg: string, i: number) => ({ level, service: 'prefect-otel', component: 'model', kind: 'lookup_failed', ...ids(i), msg });
  assert.deepEqual(
    lost.lines.filter((l) => String(l.msg).startsWith(MSG)).map(({ time: _time, pid: _pid, hostname: _hostname, ...l }) => l),
    [...Array.from({ length: 9 }, (_, i) => notice(40, MSG, i)), notice(40, `${MSG} (further ones are only counted)`, 9), ...Array.from({ length: 5 }, (_, k) => notice(20, MSG, 10 + k))],
  );
  assert.equal(lost.spans.filter((s) => s.parentSpanId === undefined).length, 15);
});

test('bounds: past the span event limit the oldest other events are summarised, transitions kept; past the open-run bound the oldest run is ended', async () => {
  const events = [flowState(0, 'RUNNING', 'Running', 'PENDING', 1)];
  for (let i = 0; i < 30; i++) {
    events.push(customEvent({ event: `acme.step.${i % 3}`, resourceId: 'acme.x', occurred: at(1 + i), related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }] }));
  }
  events.push(flowState(40, 'COMPLETED', 'Completed', 'RUNNING', 1));
  const { spans } = await run(events, { maxSpanEvents: 10 });
  const flow = spans[0]!;
  // 32 events, 10 places: the two transitions, the summary, the 7 latest custom events.
  assert.deepEqual(flow.events.map((e) => [e.name, (e.timeUs - us(0)) / 1e6]), [
    ['Running', 0], ['prefect_otel.events_summarised', 1],
    ...Array.from({ length: 7 }, (_, k) => [`acme.step.${(23 + k) % 3}`, 24 + k]),
    ['Completed', 40],
  ]);
  assert.deepEqual(flow.events[1]!.attributes, { 'prefect.events.summarised_count': 23, 'prefect.events.summarised_names': '{"acme.step.0":8,"acme.step.1":8,"acme.step.2":7}' });
  assert.equal(flow.droppedEvents, 23, 'counted as dropped for OTLP too');
  // At the first overflow too, the summary takes one of the places.
  const justOver = await run([...events.slice(0, 10), events.at(-1)!], { maxSpanEvents: 10 });
  assert.deepEqual(justOver.spans[0]!.events.map((e) => e.name), ['Running', 'prefect_otel.events_summarised', ...Array.from({ length: 7 }, (_, k) => `acme.step.${(2 + k) % 3}`), 'Completed']);
  // Only transitions left to fold: the oldest go.
  const retries = [flowState(0, 'RUNNING', 'Running', 'PENDING', 1)];
  for (let i = 1; i <= 12; i++) retries.push(flowState(i, i % 2 === 1 ? 'SCHEDULED' : 'RUNNING', i % 2 === 1 ? 'AwaitingRetry' : 'Retrying', i % 2 === 1 ? 'RUNNING' : 'SCHEDULED', 1 + Math.floor(i / 2)));
  retries.push(flowState(20, 'COMPLETED', 'Completed', 'RUNNING', 7));
  const folded = (await run(retries, { maxSpanEvents: 10 })).spans[0]!.events;
  assert.deepEqual(folded.map((e) => [e.name, (e.timeUs - us(0)) / 1e6]), [
    ['prefect_otel.events_summarised', 0],
    ...Array.from({ length: 8 }, (_, k) => [k % 2 === 0 ? 'AwaitingRetry' : 'Retrying', 5 + k]),
    ['Completed', 20],
  ]);
  assert.deepEqual(folded[0]!.attributes, { 'prefect.events.summarised_count': 5, 'prefect.events.summarised_names': '{"Running":1,"AwaitingRetry":2,"Retrying":2}' });

  const many: Ev[] = [];
  for (let i = 0; i < 5; i++) {
    many.push(flowRunStateEvent({ flowRunId: `0198c7d2-0000-7000-8000-00000000010${i}`, flowRunName: `r${i}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(i) }));
  }
  const bounded = await run(many, { maxOpenRuns: 3 });
  assert.deepEqual(
    bounded.spans.map((s) => [s.run.name, s.attributes['prefect.run.incomplete_reason']]),
    [['r0', 'evicted'], ['r1', 'evicted'], ['r2', 'end_of_input'], ['r3', 'end_of_input'], ['r4', 'end_of_input']],
  );
  assert.equal(bounded.pipeline.tracker.counts.evicted, 2);
  // A run that reached its terminal state and only waits out its settle window is ended early but complete.
  const settling = [
    flowRunStateEvent({ flowRunId: '0198c7d2-0000-7000-8000-000000000200', flowRunName: 'done', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(0) }),
    flowRunStateEvent({ flowRunId: '0198c7d2-0000-7000-8000-000000000200', flowRunName: 'done', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: at(0) + 1 }),
    ...[0, 1, 2].map((i) => flowRunStateEvent({ flowRunId: `0198c7d2-0000-7000-8000-00000000010${i}`, flowRunName: `r${i}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(0) + 2 + i })),
  ];
  const early = await run(settling, { maxOpenRuns: 3 });
  assert.deepEqual(
    early.spans.map((s) => [s.run.name, s.attributes['prefect.state.type'], s.attributes['prefect.run.incomplete_reason']]),
    [['done', 'COMPLETED', undefined], ['r0', 'RUNNING', 'end_of_input'], ['r1', 'RUNNING', 'end_of_input'], ['r2', 'RUNNING', 'end_of_input']],
  );
  assert.deepEqual({ evicted: early.pipeline.tracker.counts.evicted, incomplete: early.pipeline.tracker.counts.incomplete }, { evicted: 1, incomplete: 3 });
});

test("Prefect's own span of a task run (its __OTEL_TRACEPARENT label) becomes exactly one link; malformed values give none and change nothing else", async () => {
  const NATIVE = '00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01';
  const labelled = (id: string, value: unknown): Ev[] => {
    const more = (s: number, type: string, name: string, from: string | null, runCount: number, withLabel: boolean): Ev => {
      const e = taskState(id, `t-${id.slice(-3)}`, 'extract-9a8b7c6d', s, type, name, from, runCount) as { payload: { task_run: { labels: Record<string, unknown> } } };
      // Prefect writes the label from the Running event on (reference §4b): not on Pending.
      if (withLabel) e.payload.task_run.labels = { __OTEL_TRACEPARENT: value };
      return e;
    };
    return [more(11, 'PENDING', 'Pending', null, 0, false), more(12, 'RUNNING', 'Running', 'PENDING', 1, true), more(13, 'COMPLETED', 'Completed', 'RUNNING', 1, true)];
  };
  const malformed: Record<string, unknown> = {
    '0198c7d2-6000-7abc-8def-0000000000b1': 'not-a-traceparent',
    '0198c7d2-6000-7abc-8def-0000000000b2': '00-00000000000000000000000000000000-b7ad6b7169203331-01',
    '0198c7d2-6000-7abc-8def-0000000000b3': '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
    '0198c7d2-6000-7abc-8def-0000000000b4': '00-4bf92f3577b34da6a3ce929d0e0e473-b7ad6b7169203331-01',
    '0198c7d2-6000-7abc-8def-0000000000b5': 42,
    '0198c7d2-6000-7abc-8def-0000000000b6': { traceparent: NATIVE },
    // Version 00 has exactly four fields; version ff is forbidden; the hex digits are lowercase (W3C Trace Context).
    '0198c7d2-6000-7abc-8def-0000000000b7': `${NATIVE}-extra`,
    '0198c7d2-6000-7abc-8def-0000000000b8': `ff${NATIVE.slice(2)}`,
    '0198c7d2-6000-7abc-8def-0000000000b9': NATIVE.toUpperCase(),
  };
  // A later version may add fields after the flags, which are ignored.
  const LATER = '0198c7d2-6000-7abc-8def-0000000000c1';
  const flow = happyRun().filter((e) => String(e.event).startsWith('prefect.flow-run.'));
  const events = [...flow.slice(0, -1), ...labelled(EXTRACT, NATIVE), ...labelled(LATER, `01${NATIVE.slice(2)}-more-fields`), ...Object.entries(malformed).flatMap(([id, v]) => labelled(id, v)), flow.at(-1)!];
  const { spans, pipeline } = await run(events);

  assert.equal(pipeline.counters.skipped.wrong_type, 0, 'no event skipped');
  assert.deepEqual(tree(spans), ['etl [server] ok', ...Array<string>(11).fill('  extract [internal] ok')]);
  const links = Object.fromEntries(spans.map((s) => [s.run.id, s.links]));
  const native = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: 'b7ad6b7169203331', traceFlags: 1, remote: true, attributes: { 'prefect.link.kind': 'prefect_native_span' } };
  assert.deepEqual(links, {
    [FR]: [],
    [EXTRACT]: [native],
    [LATER]: [native],
    ...Object.fromEntries(Object.keys(malformed).map((id) => [id, []])),
  });
  // The link is all the label adds: the span's attributes are those of a task without it.
  const plain = (await run([...flow.slice(0, -1), ...labelled(EXTRACT, undefined), flow.at(-1)!])).spans.find((s) => s.run.id === EXTRACT)!;
  const withLink = spans.find((s) => s.run.id === EXTRACT)!;
  assert.deepEqual({ ...withLink, links: [] }, { ...plain, events: withLink.events, links: [] });
});

test("flow runs: Prefect's own span is looked up once per attempt, when it is first Running (or terminal), and each attempt links to its own", async () => {
  const other = '0198c7d2-0000-7000-8000-0000000000ee';
  // Three steps, each fed once the lookups of the one before have gone out (in a live stream they are
  // seconds apart; here a rerun right behind the first attempt would close it before its lookup left).
  const steps: Ev[][] = [
    happyRun().filter((e) => String(e.event).startsWith('prefect.flow-run.')),
    [flowState(100, 'SCHEDULED', 'Scheduled', 'COMPLETED', 1), flowState(101, 'RUNNING', 'Running', 'PENDING', 2), flowState(102, 'RUNNING', 'Running', 'RUNNING', 2), flowState(110, 'FAILED', 'Failed', 'RUNNING', 2, { message: 'boom' })],
    // Joined late: its Running was never seen, so it is asked at its terminal state.
    [flowRunStateEvent({ flowRunId: other, flowRunName: 'r', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: at(120) })],
  ];
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const spans: SpanRecord[] = [];
  const asked: string[] = [];
  const native = (n: number): string => `00-4bf92f3577b34da6a3ce929d0e0e4736-${String(n).padStart(16, 'a')}-01`;
  const pipeline = createPipeline({
    config, logger: createLogger({ level: 'silent', format: 'json' }), clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
    nativeSpans: (ids) => {
      const answers = ids.map((id) => (asked.push(id), { ok: true as const, traceparent: native(asked.length) }));
      return ids.includes(other) ? new Promise((resolve) => (release = () => resolve(answers))) : Promise.resolve(answers);
    },
  });
  let release = (): void => undefined;
  for (const [i, step] of steps.entries()) {
    while (asked.length < i) await new Promise((r) => setTimeout(r, 5));
    for (const e of step) {
      pipeline.ingest(JSON.stringify(e));
      await new Promise((r) => setImmediate(r));
    }
  }
  // In replay (event time) a finished span waits for its answer however far time goes on.
  pipeline.tick(at(10_000));
  assert.deepEqual(spans.map((s) => s.run.id), [FR, FR]);
  while (asked.length < 3) await new Promise((r) => setTimeout(r, 5));
  release();
  await pipeline.finish('end_of_input');
  assert.deepEqual(asked, [FR, FR, other]);
  const link = (n: number) => ({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: String(n).padStart(16, 'a'), traceFlags: 1, remote: true, attributes: { 'prefect.link.kind': 'prefect_native_span' } });
  assert.deepEqual(
    spans.map((s) => [s.run.id, s.run.attempt, s.links]),
    [
      [FR, 0, [link(1)]],
      [FR, 1, [{ traceId: traceIdForRun(FR), spanId: spanIdForRun(FR), attributes: { 'prefect.link.kind': 'previous_attempt' } }, link(2)]],
      [other, 0, [link(3)]],
    ],
  );
  assert.deepEqual(pipeline.tracker.counts.native, { lookups: 3, linked: 3, noLabel: 0, failed: 0, late: 0 });
});

test("a flow run the scheduler made (no Scheduled event: Prefect inserts it Scheduled) waits from when it was due, its expected_start_time read with the lookup of Prefect's own span; a run called directly or rerun takes none from it", async () => {
  const id = (n: number): string => `0198c7d2-0000-7000-8000-0000000000${String(n).padStart(2, '0')}`;
  const states = (n: number, rows: [s: number, type: string, name: string, from: string | null, runCount: number][]): Ev[] =>
    rows.map(([s, type, name, from, runCount]) => flowRunStateEvent({ flowRunId: id(n), flowRunName: `run-${n}`, ...FLOW, ...DEPLOY, state: { type, name }, from, runCount, occurred: at(s), received: at(s) + 15 }));
  const expected: Record<string, number> = {};
  const runs: Ev[][] = [
    // Made by the scheduler, due at 3 s, started on time: first seen Pending from Scheduled.
    (expected[id(1)] = us(3), states(1, [[5, 'PENDING', 'Pending', 'SCHEDULED', 0], [6, 'RUNNING', 'Running', 'PENDING', 1], [10, 'COMPLETED', 'Completed', 'RUNNING', 1]])),
    // Made by the scheduler, due at 5 s, marked Late at 20 s: the wait counts from when it was due.
    (expected[id(2)] = us(5), states(2, [[20, 'SCHEDULED', 'Late', 'SCHEDULED', 0], [30, 'PENDING', 'Pending', 'SCHEDULED', 0], [31, 'RUNNING', 'Running', 'PENDING', 1], [40, 'COMPLETED', 'Completed', 'RUNNING', 1]])),
    // Called directly (no deployment run): it never waited Scheduled.
    (expected[id(3)] = us(50), states(3, [[50, 'PENDING', 'Pending', null, 0], [50.5, 'RUNNING', 'Running', 'PENDING', 1], [52, 'COMPLETED', 'Completed', 'RUNNING', 1]])),
    // run_deployment for a later time: its Scheduled state, seen at 60 s, is earlier than when it was due.
    (expected[id(4)] = us(80), states(4, [[60, 'SCHEDULED', 'Scheduled', null, 0], [90, 'PENDING', 'Pending', 'SCHEDULED', 0], [91, 'RUNNING', 'Running', 'PENDING', 1], [95, 'COMPLETED', 'Completed', 'RUNNING', 1]])),
    // Rerun from the UI after its first attempt: the rerun waits from its own Scheduled state, not from when the first was due.
    (expected[id(5)] = us(100), states(5, [[101, 'PENDING', 'Pending', 'SCHEDULED', 0], [102, 'RUNNING', 'Running', 'PENDING', 1], [103, 'COMPLETED', 'Completed', 'RUNNING', 1]])),
    states(5, [[110, 'SCHEDULED', 'Scheduled', 'COMPLETED', 1], [112, 'PENDING', 'Pending', 'SCHEDULED', 1], [113, 'RUNNING', 'Running', 'PENDING', 2], [115, 'COMPLETED', 'Completed', 'RUNNING', 2]]),
  ];
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const spans: SpanRecord[] = [];
  const asked: string[] = [];
  const pipeline = createPipeline({
    config, logger: createLogger({ level: 'silent', format: 'json' }), clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
    nativeSpans: (ids) => Promise.resolve(ids.map((i) => (asked.push(i), { ok: true as const, traceparent: undefined, expectedStartUs: expected[i] }))),
  });
  for (const [i, events] of runs.entries()) {
    // Each run's lookup answered before the next run (a rerun right behind its first attempt would close it first).
    while (asked.length < i) await new Promise((r) => setTimeout(r, 5));
    for (const e of events) pipeline.ingest(JSON.stringify(e));
  }
  await pipeline.finish('end_of_input');
  assert.deepEqual(asked, [id(1), id(2), id(3), id(4), id(5), id(5)]);
  assert.deepEqual(spans.map((s) => [s.run.id, s.run.attempt, s.startUs, s.attributes['prefect.run.wait_ms']]), [
    [id(1), 0, us(5), 2_000],
    [id(2), 0, us(30), 25_000],
    [id(3), 0, us(50), undefined],
    [id(4), 0, us(90), 30_000],
    [id(5), 0, us(101), 1_000],
    [id(5), 1, us(112), 2_000],
  ]);
});

/** Every span as run id → its trace and its parent's run id (null: a root; `missing:<span id>`: no such span). */
function parents(spans: readonly SpanRecord[]): Record<string, { trace: string; parent: string | null }> {
  const runOf = new Map(spans.map((s) => [s.spanId, s.run.id]));
  return Object.fromEntries(spans.map((s) => [s.run.id, { trace: s.traceId, parent: s.parentSpanId === undefined ? null : (runOf.get(s.parentSpanId) ?? `missing:${s.parentSpanId}`) }]));
}

test('a task never hangs under itself nor in a loop of tasks: a self-parent, a task naming itself as its flow run, two tasks naming each other, a parent task of another flow run', async () => {
  const id = (n: number): string => `0198c7d2-6000-7abc-8def-0000000001${String(n).padStart(2, '0')}`;
  const [SELF, OWN_FLOW, LOOP1, LOOP2, MULTI, OTHER_TASK, CROSS] = [1, 2, 3, 4, 5, 6, 7].map(id) as [string, string, string, string, string, string, string];
  const OTHER_FLOW = '0198c7d2-5b1e-7a3c-9f10-00000000aaaa';
  const task = (tid: string, s: number, type: string, name: string, parents: string[], flowRunId = FR) =>
    taskRunStateEvent({ taskRunId: tid, taskRunName: `t-${tid.slice(-2)}`, taskKey: 'step-1a2b3c4d', flowRunId, ...FLOW, state: { type, name }, from: null, runCount: 1, occurred: at(s), parents }) as Ev;
  const both = (tid: string, s: number, parents: string[], flowRunId?: string) => [task(tid, s, 'RUNNING', 'Running', parents, flowRunId), task(tid, s + 5, 'COMPLETED', 'Completed', parents, flowRunId)];
  const other = (s: number, type: string, name: string) => flowRunStateEvent({ flowRunId: OTHER_FLOW, flowRunName: 'other', ...FLOW, state: { type, name }, from: null, runCount: 1, occurred: at(s) }) as Ev;
  const events = [
    flowState(0, 'RUNNING', 'Running', 'PENDING', 1),
    other(0.5, 'RUNNING', 'Running'),
    task(OTHER_TASK, 0.6, 'RUNNING', 'Running', [], OTHER_FLOW),
    ...both(SELF, 1, [SELF]),
    ...both(OWN_FLOW, 1.1, [], OWN_FLOW),
    task(LOOP1, 1.2, 'RUNNING', 'Running', [LOOP2]),
    task(LOOP2, 1.3, 'RUNNING', 'Running', [LOOP1]),
    task(LOOP1, 6, 'COMPLETED', 'Completed', [LOOP2]),
    task(LOOP2, 6.1, 'COMPLETED', 'Completed', [LOOP1]),
    ...both(MULTI, 1.4, [MULTI, SELF]),
    ...both(CROSS, 1.5, [OTHER_TASK]),
    task(OTHER_TASK, 7, 'COMPLETED', 'Completed', [], OTHER_FLOW),
    other(8, 'COMPLETED', 'Completed'),
    flowState(20, 'COMPLETED', 'Completed', 'RUNNING', 1),
  ];
  const { spans } = await run(events);
  const trace = traceIdForRun(FR);
  assert.deepEqual(parents(spans), {
    [FR]: { trace, parent: null },
    [SELF]: { trace, parent: FR },
    [OWN_FLOW]: { trace: traceIdForRun(OWN_FLOW), parent: null },
    [LOOP1]: { trace, parent: LOOP2 },
    [LOOP2]: { trace, parent: FR },
    [MULTI]: { trace, parent: SELF },
    [CROSS]: { trace, parent: FR },
    [OTHER_FLOW]: { trace: traceIdForRun(OTHER_FLOW), parent: null },
    [OTHER_TASK]: { trace: traceIdForRun(OTHER_FLOW), parent: OTHER_FLOW },
  });
});

test('only the `task_run` entries of a task\'s `__parents__` name a parent task: a `flow_run` input there names no task, whatever its id', async () => {
  const [FIRST, SECOND] = ['0198c7d2-6000-7abc-8def-000000000201', '0198c7d2-6000-7abc-8def-000000000202'];
  const ELSEWHERE = '0198c7d2-5b1e-7a3c-9f10-00000000bbbb';
  const task = (tid: string, s: number, type: string, name: string, parents: { input_type: string; id: string }[]): Ev => {
    const e = taskRunStateEvent({ taskRunId: tid, taskRunName: `t-${tid.slice(-2)}`, taskKey: 'step-1a2b3c4d', flowRunId: FR, ...FLOW, state: { type, name }, from: null, runCount: 1, occurred: at(s) }) as Ev;
    const payload = e.payload as { task_run: { task_inputs: Record<string, unknown> } };
    payload.task_run.task_inputs.__parents__ = parents;
    return e;
  };
  const fromFlow = { input_type: 'flow_run', id: ELSEWHERE };
  const events = [
    flowState(0, 'RUNNING', 'Running', 'PENDING', 1),
    task(FIRST, 1, 'RUNNING', 'Running', [fromFlow]),
    task(SECOND, 2, 'RUNNING', 'Running', [fromFlow, { input_type: 'task_run', id: FIRST }]),
    task(SECOND, 3, 'COMPLETED', 'Completed', [fromFlow, { input_type: 'task_run', id: FIRST }]),
    task(FIRST, 4, 'COMPLETED', 'Completed', [fromFlow]),
    flowState(5, 'COMPLETED', 'Completed', 'RUNNING', 1),
  ];
  const { spans } = await run(events);
  const trace = traceIdForRun(FR);
  assert.deepEqual(parents(spans), { [FR]: { trace, parent: null }, [FIRST]: { trace, parent: FR }, [SECOND]: { trace, parent: FIRST } });
});

test('subflows whose parents lead back to themselves: a flow run whose tracking task is its own, two flow runs owning each other\'s tracking task; each loop is broken at one run, which becomes a root with prefect.parent_task_run.id and a warning', async () => {
  const [A, B, C] = ['0198c7d2-7000-7000-8000-0000000000a1', '0198c7d2-7000-7000-8000-0000000000b1', '0198c7d2-7000-7000-8000-0000000000c1'];
  const [TA, TB, TC] = ['0198c7d2-7000-7000-8000-0000000000a2', '0198c7d2-7000-7000-8000-0000000000b2', '0198c7d2-7000-7000-8000-0000000000c2'];
  const owners: Record<string, string> = { [TA]: B, [TB]: A, [TC]: C };
  const flow = (fid: string, tracking: string, s: number, type: string, name: string) =>
    flowRunStateEvent({ flowRunId: fid, flowRunName: `f-${fid.slice(-2)}`, ...FLOW, parentTaskRunId: tracking, state: { type, name }, from: null, runCount: 1, occurred: at(s) }) as Ev;
  const task = (tid: string, s: number, type: string, name: string) =>
    taskRunStateEvent({ taskRunId: tid, taskRunName: `t-${tid.slice(-2)}`, taskKey: 'sub-1a2b3c4d', flowRunId: owners[tid]!, ...FLOW, state: { type, name }, from: null, runCount: 1, occurred: at(s) }) as Ev;
  const events = [
    flow(A, TA, 0, 'RUNNING', 'Running'),
    flow(B, TB, 0.1, 'RUNNING', 'Running'),
    flow(C, TC, 0.2, 'RUNNING', 'Running'),
    task(TA, 1, 'RUNNING', 'Running'),
    task(TB, 1.1, 'RUNNING', 'Running'),
    task(TC, 1.2, 'RUNNING', 'Running'),
    task(TA, 2, 'COMPLETED', 'Completed'),
    task(TB, 2.1, 'COMPLETED', 'Completed'),
    task(TC, 2.2, 'COMPLETED', 'Completed'),
    flow(A, TA, 3, 'COMPLETED', 'Completed'),
    flow(B, TB, 3.1, 'COMPLETED', 'Completed'),
    flow(C, TC, 3.2, 'COMPLETED', 'Completed'),
  ];
  const { spans, lines } = await run(events, {}, (tid) => Promise.resolve(owners[tid] ?? null));
  assert.deepEqual(parents(spans), {
    [A]: { trace: traceIdForRun(A), parent: null },
    [B]: { trace: traceIdForRun(A), parent: A },
    [TA]: { trace: traceIdForRun(A), parent: B },
    [TB]: { trace: traceIdForRun(A), parent: A },
    [C]: { trace: traceIdForRun(C), parent: null },
    [TC]: { trace: traceIdForRun(C), parent: C },
  });
  assert.deepEqual(
    Object.fromEntries(spans.filter((s) => s.run.type === 'flow').map((s) => [s.run.id, [s.kind, s.attributes['prefect.parent_task_run.id']]])),
    { [A]: ['server', TA], [B]: ['internal', TB], [C]: ['server', TC] },
  );
  assert.deepEqual(
    lines.filter((l) => l.kind === 'parent_cycle').map(({ time: _time, pid: _pid, hostname: _hostname, ...l }) => l),
    [A, C].map((fid) => ({ level: 40, service: 'prefect-otel', component: 'model', kind: 'parent_cycle', 'prefect.run.id': fid, 'prefect.parent_task_run.id': fid === A ? TA : TC, msg: 'parent of a subflow leads back to the subflow itself; it becomes the root of its own trace' })),
  );
});

test('span events named like Object.prototype keys (__proto__, constructor, toString) are summarised like any other, also after a restart from the state file', async () => {
  const custom = (name: string, s: number) => customEvent({ event: name, resourceId: `prefect.flow-run.${FR}`, related: [], payload: {}, occurred: at(s) }) as Ev;
  const before = [flowState(0, 'RUNNING', 'Running', 'PENDING', 1), ...['__proto__', 'constructor', 'a', 'b', 'c'].map((n, i) => custom(n, 1 + i))];
  const after = [...['toString', '__proto__', 'constructor', 'valueOf', 'd', 'e'].map((n, i) => custom(n, 10 + i)), flowState(20, 'COMPLETED', 'Completed', 'RUNNING', 1)];
  const summary = (spans: readonly SpanRecord[]) => spans[0]!.events.find((e) => e.name === 'prefect_otel.events_summarised')?.attributes;
  const expected = {
    'prefect.events.summarised_count': 10,
    'prefect.events.summarised_names': '{"__proto__":2,"constructor":2,"a":1,"b":1,"c":1,"toString":1,"valueOf":1,"d":1}',
  };
  assert.deepEqual(summary((await run([...before, ...after], { maxSpanEvents: 4 })).spans), expected);

  // The same events with a restart after the first six: the summary goes through the state file's JSON.
  const config = resolveConfig({ tracesExporter: 'none', maxSpanEvents: 4 }, {});
  const logger = createLogger({ level: 'silent', format: 'json' });
  const first = createPipeline({ config, logger, clock: 'event', delivery: null });
  for (const e of before) first.ingest(JSON.stringify(e));
  const state = JSON.parse(JSON.stringify(first.tracker.snapshot())) as ReturnType<typeof first.tracker.snapshot>;
  const spans: SpanRecord[] = [];
  const second = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  second.tracker.restore(state, at(6));
  for (const e of after) second.ingest(JSON.stringify(e));
  await second.finish('end_of_input');
  assert.deepEqual(summary(spans), expected);
});

test('a state message is cut to the payload bound on the span event and the span status (with …, as a payload); the STLOGGING line keeps it whole', async () => {
  const message = `Traceback (most recent call last): ${'x'.repeat(100)}`;
  const failed = flowState(1, 'FAILED', 'Failed', 'RUNNING', 1, { message });
  const { spans, lines } = await run([flowState(0, 'RUNNING', 'Running', 'PENDING', 1), failed], { payloadMaxChars: 20 });
  const cut = `${message.slice(0, 20)}…`;
  assert.deepEqual(spans[0]!.status, { code: 'error', message: cut });
  assert.deepEqual(spans[0]!.events.find((e) => e.name === 'Failed')?.attributes, {
    'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'prefect.state.message': cut, 'prefect.state.id': failed.id,
    'prefect.state.from': 'RUNNING', 'prefect.run.count': 1, 'prefect.event.received_lag_ms': 15,
  });
  assert.deepEqual(lines.filter((l) => String(l.msg).startsWith('STLOGGING: ')).map((l) => l.msg), [
    `STLOGGING: Flow run ${FR} (crimson-fox) state transition: PENDING -> RUNNING (state_name='Running', message='')`,
    `STLOGGING: Flow run ${FR} (crimson-fox) state transition: RUNNING -> FAILED (state_name='Failed', message='${message}')`,
  ], 'the log line has the whole message');
});

test('span events of one time (no `follows` between them) are in event id order, however they arrived', async () => {
  const ev = (id: string) => ({ ...customEvent({ event: `acme.${id.slice(-1)}`, resourceId: 'acme.x', related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }], occurred: at(1) }), id }) as Ev;
  const [a, b, c] = ['0198c7d2-eeee-7000-8000-00000000000a', '0198c7d2-eeee-7000-8000-00000000000b', '0198c7d2-eeee-7000-8000-00000000000c'].map(ev);
  const names = async (order: Ev[]) => (await run([flowState(0, 'RUNNING', 'Running', 'PENDING', 1), ...order, flowState(2, 'COMPLETED', 'Completed', 'RUNNING', 1)])).spans[0]!.events.map((e) => e.name);
  const expected = ['Running', 'acme.a', 'acme.b', 'acme.c', 'Completed'];
  assert.deepEqual(await Promise.all([[a!, b!, c!], [c!, a!, b!], [b!, c!, a!]].map(names)), [expected, expected, expected]);
});

test('a payload or state message cut at PREFECT_OTEL_PAYLOAD_MAX_CHARS never splits a character outside the Basic Multilingual Plane (an emoji is two UTF-16 code units): the cut falls before it, so no lone surrogate reaches the span (OTLP encodes one as U+FFFD)', async () => {
  // `{"note":"` is 9 characters; each 🚀 is 2 code units, so a cut at 10 falls between the two halves of the first.
  const order = customEvent({ event: 'acme.order.shipped', resourceId: 'acme.order.7', related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }], payload: { note: '🚀🚀 shipped' }, occurred: at(1) }) as Ev;
  const failed = flowState(2, 'FAILED', 'Failed', 'RUNNING', 1, { message: 'boom 💥💥💥' });
  const { spans } = await run([flowState(0, 'RUNNING', 'Running', 'PENDING', 1), order, failed], { payloadMaxChars: 10 });
  const span = spans[0]!;
  // `boom 💥💥` is 9 code units, the cut at 10 falls inside the third 💥: it is left out whole.
  assert.deepEqual(span.status, { code: 'error', message: 'boom 💥💥…' });
  assert.deepEqual(span.events.map((e) => [e.name, e.attributes]), [
    ['Running', { 'prefect.state.type': 'RUNNING', 'prefect.state.name': 'Running', 'prefect.state.message': '', 'prefect.state.id': span.events[0]!.attributes['prefect.state.id'], 'prefect.state.from': 'PENDING', 'prefect.run.count': 1, 'prefect.event.received_lag_ms': 15 }],
    ['acme.order.shipped', { 'prefect.event.id': order.id, 'prefect.event.resource.id': 'acme.order.7', 'prefect.event.payload': '{"note":"…' }],
    ['Failed', { 'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'prefect.state.message': 'boom 💥💥…', 'prefect.state.id': failed.id, 'prefect.state.from': 'RUNNING', 'prefect.run.count': 1, 'prefect.event.received_lag_ms': 15 }],
  ]);
  // A cut that falls between two characters keeps both (`boom! 💥💥` is 10 code units).
  const even = await run([flowState(0, 'RUNNING', 'Running', 'PENDING', 1), flowState(2, 'FAILED', 'Failed', 'RUNNING', 1, { message: 'boom! 💥💥💥' })], { payloadMaxChars: 10 });
  assert.deepEqual(even.spans[0]!.status, { code: 'error', message: 'boom! 💥💥…' });
  // A payload of exactly the bound is kept whole; one character more is cut at the bound.
  const exact = (n: string) => customEvent({ event: 'acme.n', resourceId: 'acme.n', related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }], payload: { n }, occurred: at(1) }) as Ev;
  const edge = await run([flowState(0, 'RUNNING', 'Running', 'PENDING', 1), exact('12'), exact('123'), flowState(2, 'COMPLETED', 'Completed', 'RUNNING', 1)], { payloadMaxChars: 10 });
  // (Two events of one time are in event id order: the payloads are compared as a set.)
  assert.deepEqual(edge.spans[0]!.events.filter((e) => e.name === 'acme.n').map((e) => e.attributes['prefect.event.payload']).sort(), ['{"n":"12"}', '{"n":"123"…'].sort());
  // Names and tags are cut the same way.
  const tag = `${'t'.repeat(255)}🏷️`;
  const tagged = await run([flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, tags: [tag], state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: at(1) })]);
  assert.deepEqual(tagged.spans[0]!.attributes['prefect.tags'], [`${'t'.repeat(255)}…`]);
});

test('a run keeps at most 128 tags of at most 256 characters; how many more its events carried is prefect.tags.dropped_count', async () => {
  const long = 'a'.repeat(300);
  const tags = [long, ...Array.from({ length: 300 }, (_, i) => `tag-${String(i).padStart(3, '0')}`)];
  const events = [
    flowState(0, 'RUNNING', 'Running', 'PENDING', 1),
    ...[1, 2].map((s) => taskState(EXTRACT, 'extract-3f2', 'extract-9a8b7c6d', s, s === 1 ? 'RUNNING' : 'COMPLETED', s === 1 ? 'Running' : 'Completed', null, 1, { tags })),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, tags, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: at(3) }) as Ev,
  ];
  const { spans } = await run(events);
  // Tags come sorted in each event; the first 128 are kept.
  const kept = [`${'a'.repeat(256)}…`, ...tags.slice(1, 128)];
  assert.deepEqual(
    Object.fromEntries(spans.map((s) => [s.run.id, [s.attributes['prefect.tags'], s.attributes['prefect.tags.dropped_count']]])),
    // The flow run's first event brought its two tags; its last one 301 more, of which 126 fit.
    { [FR]: [[kept[0], 'etl', 'nightly', ...tags.slice(1, 126)], 175], [EXTRACT]: [kept, 173] },
  );
});

test('bounds: while the server holds subflow parent lookups, at most PREFECT_OTEL_MAX_OPEN_RUNS events wait for them, however many subflows come; the oldest lookup is given up (counted, logged) and every run is still exported once', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const maxOpenRuns = 1_000;
  const subflows = 10 * maxOpenRuns;
  const config = resolveConfig({ tracesExporter: 'none', maxOpenRuns, dedupeMaxIds: 1_000 }, {});
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const exported: string[] = [];
  const resolveOwner = createOwnerLookup(createPrefectRestClient({ apiUrl: prefect.url }));
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => exported.push(s.run.id), resolveOwner });
  prefect.switches.holdRest = true;
  const id = (kind: number, i: number): string => `0198c7d2-${kind}000-7000-8000-${String(i).padStart(12, '0')}`;
  let most = { lookups: 0, events: 0 };
  for (let i = 0; i < subflows; i++) {
    const sub = { flowRunId: id(1, i), flowRunName: `sub-${i}`, ...FLOW, parentTaskRunId: id(2, i), received: at(i) + 15 };
    pipeline.ingest(JSON.stringify(flowRunStateEvent({ ...sub, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(i) })));
    pipeline.ingest(JSON.stringify(taskRunStateEvent({ taskRunId: id(3, i), taskRunName: 'step', taskKey: 'step-1a2b', flowRunId: id(1, i), ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: at(i) + 100 })));
    pipeline.ingest(JSON.stringify(flowRunStateEvent({ ...sub, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: at(i) + 200 })));
    most = { lookups: Math.max(most.lookups, pipeline.tracker.pendingLookups), events: Math.max(most.events, pipeline.tracker.waitingEvents) };
  }
  const { lookups, abandoned: lookupsAbandoned } = pipeline.tracker.counts.parentLookups;
  // Three events per subflow wait for its lookup: the bound holds about a third as many lookups.
  assert.deepEqual({ most, lookups }, { most: { lookups: Math.floor(maxOpenRuns / 3), events: 3 * Math.floor(maxOpenRuns / 3) }, lookups: subflows });
  assert.ok(lookupsAbandoned >= subflows - maxOpenRuns, `${lookupsAbandoned} lookups given up`);
  assert.equal(pipeline.tracker.pendingLookups, subflows - lookupsAbandoned);
  const abandoned = lines.filter((l) => l.kind === 'lookup_abandoned');
  assert.deepEqual(abandoned.map((l) => [l.level, l.count, l.waitingEvents]), [...Array.from({ length: 10 }, (_, k) => [40, k + 1, 3]), ...Array.from({ length: lookupsAbandoned - 10 }, (_, k) => [20, k + 11, 3])]);
  prefect.switches.holdRest = false;
  await pipeline.finish('end_of_input');
  // Nothing dropped: every subflow and its task, exactly once.
  const all = Array.from({ length: subflows }, (_, i) => [id(1, i), id(3, i)]).flat();
  assert.deepEqual(exported.sort(), all.sort());
  // The server knows none of the tracking tasks: the lookups still waiting are answered "not found";
  // the answers to the ones given up are not counted twice.
  assert.deepEqual(pipeline.tracker.counts.parentLookups, { lookups: subflows, found: 0, failed: subflows - lookupsAbandoned, abandoned: lookupsAbandoned });
  assert.equal(pipeline.tracker.pendingLookups, 0);
});

test(`bounds: a run whose events are all named differently keeps at most ${MAX_SUMMARISED_NAMES} names in its summary, the others counted together, also after a restart from the state file`, async () => {
  const custom = (i: number) => customEvent({ event: `acme.order.${i}`, resourceId: `prefect.flow-run.${FR}`, related: [], payload: {}, occurred: at(1 + i / 1000) }) as Ev;
  const n = 20 * MAX_SUMMARISED_NAMES;
  const events = [flowState(0, 'RUNNING', 'Running', 'PENDING', 1), ...Array.from({ length: n }, (_, i) => custom(i)), flowState(100, 'COMPLETED', 'Completed', 'RUNNING', 1)];
  // Ten places: the two transitions, the summary and the 7 latest custom events.
  const folded = n - 7;
  const expected = {
    'prefect.events.summarised_count': folded,
    'prefect.events.summarised_names': JSON.stringify(Object.fromEntries(Array.from({ length: MAX_SUMMARISED_NAMES }, (_, i) => [`acme.order.${i}`, 1]))),
    'prefect.events.summarised_other_count': folded - MAX_SUMMARISED_NAMES,
  };
  const summary = (spans: readonly SpanRecord[]) => spans[0]!.events.find((e) => e.name === 'prefect_otel.events_summarised')?.attributes;
  assert.deepEqual(summary((await run(events, { maxSpanEvents: 10 })).spans), expected);

  // A restart half-way: the summary goes through the state file's JSON.
  const config = resolveConfig({ tracesExporter: 'none', maxSpanEvents: 10 }, {});
  const logger = createLogger({ level: 'silent', format: 'json' });
  const first = createPipeline({ config, logger, clock: 'event', delivery: null });
  for (const e of events.slice(0, n / 2)) first.ingest(JSON.stringify(e));
  const state = JSON.parse(JSON.stringify(first.tracker.snapshot())) as ReturnType<typeof first.tracker.snapshot>;
  const spans: SpanRecord[] = [];
  const second = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  second.tracker.restore(state, at(50));
  for (const e of events.slice(n / 2)) second.ingest(JSON.stringify(e));
  await second.finish('end_of_input');
  assert.deepEqual(summary(spans), expected);
});

test('bounds: task runs whose only state event is turned down (too deep) while they wait for a held parent lookup are held at most PREFECT_OTEL_MAX_OPEN_RUNS at a time', { skip: ONLY_WHERE_DEEP_JSON_FAILS }, async () => {
  const maxOpenRuns = 5;
  const config = resolveConfig({ tracesExporter: 'none', maxOpenRuns }, {});
  const logger = createLogger({ level: 'silent', format: 'json' });
  const answers: ((owner: string | null) => void)[] = [];
  const exported: string[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => exported.push(s.run.id), resolveOwner: () => new Promise((r) => answers.push(r)) });
  const SUB = '0198c7d2-1000-7000-8000-000000000001';
  pipeline.ingest(JSON.stringify(flowRunStateEvent({ flowRunId: SUB, flowRunName: 'sub', ...FLOW, parentTaskRunId: EXTRACT, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: at(0) })));
  const tasks = 20 * maxOpenRuns;
  let most = 0;
  for (let i = 0; i < tasks; i++) {
    const task = `0198c7d2-3000-7000-8000-${String(i).padStart(12, '0')}`;
    const event = taskRunStateEvent({ taskRunId: task, taskRunName: 'step', taskKey: 'step-1a2b', flowRunId: SUB, ...FLOW, state: { type: 'PENDING', name: 'Pending' }, runCount: 0, occurred: at(1 + i) });
    // A state event's payload is written only when it has to wait: a task input nested deeper than that can go.
    pipeline.ingest(JSON.stringify(event).replace('"__parents__":[]', `"__parents__":[],"x":${DEEP_PAYLOAD_JSON}`));
    most = Math.max(most, pipeline.tracker.blockedRuns);
  }
  // The subflow and four tasks wait; the fifth task's event gives the lookup up: the subflow becomes a
  // root, and the later tasks' events, which no longer wait, need not be written.
  assert.deepEqual({ most, parentLookups: pipeline.tracker.counts.parentLookups, tooDeep: pipeline.counters.skipped.too_deep }, { most: maxOpenRuns, parentLookups: { lookups: 1, found: 0, failed: 0, abandoned: 1 }, tooDeep: maxOpenRuns });
  for (const answer of answers) answer(null);
  await pipeline.finish('end_of_input');
  assert.deepEqual(pipeline.tracker.counts.parentLookups, { lookups: 1, found: 0, failed: 0, abandoned: 1 }, 'the late answer is not counted again');
  assert.deepEqual(exported.sort(), [SUB, ...Array.from({ length: tasks - maxOpenRuns }, (_, k) => `0198c7d2-3000-7000-8000-${String(maxOpenRuns + k).padStart(12, '0')}`)].sort());
});

test('bounds: a task run whose events name another flow run each time leaves no trace of the flow runs it was under: flows with children stay within PREFECT_OTEL_MAX_OPEN_RUNS', async () => {
  const maxOpenRuns = 100;
  const config = resolveConfig({ tracesExporter: 'none', maxOpenRuns }, {});
  const exported: string[] = [];
  const pipeline = createPipeline({ config, logger: createLogger({ level: 'silent', format: 'json' }), clock: 'event', delivery: null, onSpan: (s) => exported.push(s.run.id) });
  // The tracker's own children-of-flow map: what this test bounds.
  const childrenOf = (pipeline.tracker as unknown as { childrenOf: Map<string, Set<string>> }).childrenOf;
  const id = (kind: number, i: number): string => `0198c7d2-${kind}000-7000-8000-${String(i).padStart(12, '0')}`;
  const tasks = 20 * maxOpenRuns;
  let most = 0;
  for (let i = 0; i < tasks; i++) {
    const task = { taskRunId: id(3, i), taskRunName: 'step', taskKey: 'step-1a2b', ...FLOW, runCount: 1, received: at(i) + 15 };
    pipeline.ingest(JSON.stringify(taskRunStateEvent({ ...task, flowRunId: id(1, i), state: { type: 'RUNNING', name: 'Running' }, occurred: at(i) })));
    pipeline.ingest(JSON.stringify(taskRunStateEvent({ ...task, flowRunId: id(2, i), state: { type: 'RUNNING', name: 'Running' }, occurred: at(i) + 1 })));
    most = Math.max(most, childrenOf.size);
  }
  await pipeline.finish('end_of_input');
  assert.deepEqual({ most, after: childrenOf.size }, { most: maxOpenRuns, after: 0 });
  assert.deepEqual(exported.sort(), Array.from({ length: tasks }, (_, i) => id(3, i)).sort());
});

test('bounds: a span event keeps at most 1,024 characters of a state\'s name and "from" and of a run event\'s resource id and name (cut with …, as a payload), so that a run holds at most PREFECT_OTEL_MAX_SPAN_EVENTS such texts, however large its events', async () => {
  const long = (c: string, n: number): string => c.repeat(n);
  const cut = (text: string): string => `${text.slice(0, 1024)}…`;
  const stateName = long('R', 5_000);
  const from = long('F', 3_000);
  const resourceId = `acme.order.${long('9', 5_000)}`;
  const resourceName = long('n', 5_000);
  // Prefect names the event after the state (`prefect.flow-run.<name>`, at most 1,024 characters): here only its label is long.
  const running = flowState(0, 'RUNNING', 'Running', from, 1);
  (running.resource as Record<string, string>)['prefect.state-name'] = stateName;
  const order = customEvent({ event: 'acme.order.shipped', resourceId, resourceName, related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }], occurred: at(1) }) as Ev;
  const completed = flowState(2, 'COMPLETED', 'Completed', 'RUNNING', 1);
  const { spans } = await run([running, order, completed]);
  assert.deepEqual(spans[0]!.events.map((e) => [e.name, e.attributes]), [
    [cut(stateName), { 'prefect.state.type': 'RUNNING', 'prefect.state.name': cut(stateName), 'prefect.state.message': '', 'prefect.state.id': running.id, 'prefect.state.from': cut(from), 'prefect.run.count': 1, 'prefect.event.received_lag_ms': 15 }],
    ['acme.order.shipped', { 'prefect.event.id': order.id, 'prefect.event.resource.id': cut(resourceId), 'prefect.event.resource.name': cut(resourceName), 'prefect.event.payload': '{}' }],
    ['Completed', { 'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.state.message': '', 'prefect.state.id': completed.id, 'prefect.state.from': 'RUNNING', 'prefect.run.count': 1, 'prefect.event.received_lag_ms': 15 }],
  ]);

  // Far past the span event bound, each event 200,000 characters: the run holds its bound of events, each small.
  const maxSpanEvents = 50;
  const events = 2_000;
  const huge = long('h', 200_000);
  const many = [
    flowState(0, 'RUNNING', 'Running', 'PENDING', 1),
    ...Array.from({ length: events }, (_, i) => customEvent({ event: 'acme.blob', resourceId: `acme.blob.${i}.${huge}`, resourceName: `${i}${huge}`, related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }], occurred: at(1) + i }) as Ev),
    flowState(3_000, 'COMPLETED', 'Completed', 'RUNNING', 1),
  ];
  const bounded = await run(many, { maxSpanEvents });
  const span = bounded.spans[0]!;
  assert.deepEqual({ kept: span.events.length, summarised: span.droppedEvents }, { kept: maxSpanEvents, summarised: events + 2 - (maxSpanEvents - 1) });
  const chars = JSON.stringify(span.events).length;
  assert.ok(chars < maxSpanEvents * 4 * 1024, `${chars} characters of span events`);
});

test('bounds: what a run keeps of a large payload, state message or resource name is a copy of its first characters, not a view that holds the whole text in memory', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const logger = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null });
  const perKind = 100;
  const huge = 300_000;
  const related = [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }];
  gc();
  const before = process.memoryUsage().heapUsed;
  pipeline.ingest(JSON.stringify(flowState(0, 'RUNNING', 'Running', 'PENDING', 1)));
  for (let i = 0; i < perKind; i++) {
    // Each text is made anew, as each event's JSON is parsed anew.
    const text = (c: string): string => `${i}${c.repeat(huge)}`;
    pipeline.ingest(JSON.stringify(customEvent({ event: 'acme.payload', resourceId: `acme.p.${i}`, related, payload: { blob: text('p') }, occurred: at(1) + i })));
    pipeline.ingest(JSON.stringify(customEvent({ event: 'acme.named', resourceId: `acme.n.${i}`, resourceName: text('n'), related, occurred: at(1) + i })));
    pipeline.ingest(JSON.stringify(flowState(1 + i / 1000, 'RUNNING', 'Running', 'RUNNING', 1, { message: text('m') })));
  }
  gc();
  const grownMiB = (process.memoryUsage().heapUsed - before) / 2 ** 20;
  assert.deepEqual({ open: pipeline.tracker.openRuns, accepted: pipeline.counters.accepted }, { open: 1, accepted: 1 + 3 * perKind });
  // 300 span events of at most ~4 KiB of text each: about 1.5 MiB. Views of the whole texts held 86 MiB.
  assert.ok(grownMiB < 16, `the heap grew ${grownMiB.toFixed(1)} MiB`);
  await pipeline.finish('end_of_input');
});

test('bounds: a run keeps at most 1,024 characters of its name, its flow\'s, deployment\'s, work pool\'s and queue\'s names and its task key (cut with …): finished runs keep their names too, and one event may be megabytes', async () => {
  const long = (c: string): string => c.repeat(5_000);
  const cut = (text: string): string => `${text.slice(0, 1024)}…`;
  const names = { run: long('r'), flow: long('f'), deployment: long('d'), queue: long('q'), pool: long('p'), poolType: long('y'), task: long('t'), key: long('k') };
  const flow = (s: number, type: string, name: string, from: string | null): Ev => flowRunStateEvent({
    flowRunId: FR, flowRunName: names.run, flowId: FLOW.flowId, flowName: names.flow,
    deployment: { id: DEPLOY.deployment.id, name: names.deployment }, workQueue: { id: DEPLOY.workQueue.id, name: names.queue }, workPool: { id: DEPLOY.workPool.id, name: names.pool, type: names.poolType },
    state: { type, name }, from, runCount: 1, occurred: at(s), received: at(s) + 15,
  });
  const task = (s: number, type: string, name: string, from: string | null): Ev => taskRunStateEvent({
    taskRunId: EXTRACT, taskRunName: names.task, taskKey: names.key, flowRunId: FR, flowRunName: names.run, flowId: FLOW.flowId, flowName: names.flow,
    state: { type, name }, from, runCount: 1, occurred: at(s), labels: { __OTEL_TRACEPARENT: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01${' '.repeat(3_000)}` },
  });
  const { spans } = await run([flow(0, 'RUNNING', 'Running', 'PENDING'), task(1, 'RUNNING', 'Running', null), task(2, 'COMPLETED', 'Completed', 'RUNNING'), flow(3, 'COMPLETED', 'Completed', 'RUNNING')]);
  const byId = Object.fromEntries(spans.map((s) => [s.run.id, s]));
  const pick = (s: SpanRecord | undefined, keys: string[]): Record<string, unknown> => Object.fromEntries(keys.map((k) => [k, s?.attributes[k]]));
  assert.deepEqual(
    { flow: [byId[FR]?.name, pick(byId[FR], ['prefect.run.name', 'prefect.flow.name', 'prefect.deployment.name', 'prefect.work-queue.name', 'prefect.work-pool.name', 'prefect.work-pool.type', 'cicd.pipeline.name'])],
      task: [byId[EXTRACT]?.name, pick(byId[EXTRACT], ['prefect.run.name', 'prefect.flow.name', 'prefect.task.key', 'cicd.pipeline.task.name']), byId[EXTRACT]?.links] },
    { flow: [cut(names.flow), { 'prefect.run.name': cut(names.run), 'prefect.flow.name': cut(names.flow), 'prefect.deployment.name': cut(names.deployment), 'prefect.work-queue.name': cut(names.queue), 'prefect.work-pool.name': cut(names.pool), 'prefect.work-pool.type': cut(names.poolType), 'cicd.pipeline.name': cut(names.flow) }],
      // A traceparent label cut is no traceparent.
      task: [cut(names.key), { 'prefect.run.name': cut(names.task), 'prefect.flow.name': cut(names.flow), 'prefect.task.key': cut(names.key), 'cicd.pipeline.task.name': cut(names.key) }, []] },
  );
});

test('bounds: a flow\'s or deployment\'s id that is no UUID, half a megabyte long, is kept as a name is (1,024 characters, cut with …), by the open run and on its span: one event may be megabytes', async () => {
  const huge = (c: string): string => c.repeat(512 * 1024);
  const ids = { flow: huge('f'), deployment: huge('d') };
  const cut = (text: string): string => `${text.slice(0, 1024)}…`;
  const flow = (s: number, type: string, name: string, from: string | null): Ev => flowRunStateEvent({
    flowRunId: FR, flowRunName: 'crimson-fox', flowId: ids.flow, flowName: 'etl', deployment: { id: ids.deployment, name: 'nightly' },
    state: { type, name }, from, runCount: 1, occurred: at(s), received: at(s) + 15,
  });
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const logger = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  pipeline.ingest(JSON.stringify(flow(0, 'RUNNING', 'Running', 'PENDING')));
  // What the open run keeps (and the state file writes).
  const meta = pipeline.tracker.snapshotChanging().open.map((r) => [r.meta.flowId, r.meta.deploymentId]);
  assert.deepEqual(meta, [[cut(ids.flow), cut(ids.deployment)]]);
  pipeline.ingest(JSON.stringify(flow(1, 'COMPLETED', 'Completed', 'RUNNING')));
  await pipeline.finish('end_of_input');
  assert.deepEqual(spans.map((s) => s.attributes), [{
    'prefect.run.id': FR, 'prefect.run.type': 'flow', 'prefect.run.name': 'crimson-fox', 'prefect.run.count': 1,
    'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.tags': [],
    'prefect.flow.name': 'etl', 'prefect.flow.id': cut(ids.flow), 'prefect.deployment.name': 'nightly', 'prefect.deployment.id': cut(ids.deployment),
    'cicd.pipeline.name': 'etl', 'cicd.pipeline.run.id': FR, 'cicd.pipeline.result': 'success',
  }]);
});
