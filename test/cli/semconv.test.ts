/**
 * What `replay` exports, decoded by the OTLP receiver, checked against the OpenTelemetry semantic
 * conventions (the version `@opentelemetry/semantic-conventions` is pinned at) and specification:
 * the CI/CD span conventions' attributes and their well-known values, the instrument types of the
 * metrics.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ATTR_CICD_PIPELINE_TASK_RUN_RESULT,
  CICD_PIPELINE_TASK_RUN_RESULT_VALUE_FAILURE,
  CICD_PIPELINE_TASK_RUN_RESULT_VALUE_SKIP,
} from '@opentelemetry/semantic-conventions/incubating';
import { METRIC_DEFS } from '../../src/metric-defs.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';
import { cli, FLOW, FR, T0, TR } from '../helpers/replay-cli.js';

const UI = 'http://prefect.local:4200';
const LOAD = '0198c7d2-6000-7abc-8def-000000000002';
const OTHER = '0198c7d2-9000-7000-8000-0000000000e1';
const OPEN = '0198c7d2-9000-7000-8000-0000000000e2';

test('a task Prefect never ran because its upstream task failed (Pending "NotReady") has cicd.pipeline.task.run.result "skip", the value the CI/CD conventions give a skipped task run; its status stays unset, with no error.type', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const task = (id: string, name: string, key: string, type: string, stateName: string, from: string | null, runCount: number, s: number) =>
    taskRunStateEvent({ taskRunId: id, taskRunName: name, taskKey: key, flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type, name: stateName }, from, runCount, occurred: T0 + s * 1000 });
  const flow = (id: string, name: string, type: string, stateName: string, from: string, s: number, message?: string) =>
    flowRunStateEvent({ flowRunId: id, flowRunName: name, ...FLOW, state: { type, name: stateName, ...(message === undefined ? {} : { message }) }, from, runCount: 1, occurred: T0 + s * 1000 });
  const events = [
    flow(FR, 'crimson-fox', 'RUNNING', 'Running', 'PENDING', 0),
    task(TR, 'extract-3f2', 'extract-9a8b7c6d', 'RUNNING', 'Running', 'PENDING', 1, 1),
    task(TR, 'extract-3f2', 'extract-9a8b7c6d', 'FAILED', 'Failed', 'RUNNING', 1, 2),
    task(LOAD, 'load-7c1', 'load-55aa66bb', 'PENDING', 'Pending', null, 0, 2),
    task(LOAD, 'load-7c1', 'load-55aa66bb', 'PENDING', 'NotReady', 'PENDING', 0, 3),
    flow(FR, 'crimson-fox', 'FAILED', 'Failed', 'RUNNING', 4, 'Flow run encountered an exception: ValueError: bad row'),
    // Another run's events, later: the failed flow run settles, and its NotReady task goes out with it.
    flow(OTHER, 'other', 'RUNNING', 'Running', 'PENDING', 30),
    taskRunStateEvent({ taskRunId: OPEN, taskRunName: 'notify-1', taskKey: 'notify-0a1b', flowRunId: OTHER, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: T0 + 30_500 }),
    flow(OTHER, 'other', 'COMPLETED', 'Completed', 'RUNNING', 31),
  ];
  const r = await cli(['replay', '-'], { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_UI_URL: UI }, events.map((e) => JSON.stringify(e)).join('\n'));
  assert.equal(r.code, 0, r.stderr);
  const spans = new Map(receiver.spans().map((s) => [s.attributes['prefect.run.id'], s]));
  const load = spans.get(LOAD)!;
  // Ended once its flow run settled (not_ready), or with the input when the flow run still waited for
  // the look-up of Prefect's own span there: skipped either way.
  const reason = load.attributes['prefect.run.incomplete_reason'];
  assert.ok(reason === 'not_ready' || reason === 'end_of_input', JSON.stringify(reason));
  assert.deepEqual({ status: load.status, attributes: load.attributes }, {
    status: { code: 0 },
    attributes: {
      'prefect.run.id': LOAD, 'prefect.run.type': 'task', 'prefect.run.name': 'load-7c1', 'prefect.run.count': 0,
      'prefect.state.type': 'PENDING', 'prefect.state.name': 'NotReady', 'prefect.tags': [],
      'prefect.flow.name': FLOW.flowName, 'prefect.flow.id': FLOW.flowId, 'prefect.task.key': 'load-55aa66bb',
      'prefect.run.incomplete': true, 'prefect.run.incomplete_reason': reason,
      'cicd.pipeline.task.name': 'load', 'cicd.pipeline.task.run.id': LOAD,
      [ATTR_CICD_PIPELINE_TASK_RUN_RESULT]: CICD_PIPELINE_TASK_RUN_RESULT_VALUE_SKIP,
      'cicd.pipeline.task.run.url.full': `${UI}/runs/task-run/${LOAD}`,
    },
  });
  // The upstream task that failed keeps its result, and a run cut short for another reason (here the
  // end of the input, its flow run's grace not over) has no result that could be told.
  assert.equal(spans.get(TR)!.attributes[ATTR_CICD_PIPELINE_TASK_RUN_RESULT], CICD_PIPELINE_TASK_RUN_RESULT_VALUE_FAILURE);
  const open = spans.get(OPEN)!.attributes;
  assert.deepEqual([open['prefect.run.incomplete_reason'], ATTR_CICD_PIPELINE_TASK_RUN_RESULT in open], ['end_of_input', false]);
});

test('OTLP metrics: what counts things there are at the moment (runs open, spans and log records buffered, pending look-ups, connections) is an UpDownCounter, a non-monotonic cumulative sum, as OpenTelemetry records additive values; totals are monotonic sums, the export lag a histogram', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const events = [
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: T0 }),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: T0 + 1000 }),
  ];
  // `delta`: the counters and the histogram go out as deltas; an UpDownCounter stays cumulative.
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta' };
  const r = await cli(['replay', '-'], env, events.map((e) => JSON.stringify(e)).join('\n'));
  assert.equal(r.code, 0, r.stderr);
  const last = receiver.metrics().at(-1)!;
  const kinds = Object.fromEntries(last.map((m) => [m.name, `${m.type}${m.type === 'sum' ? (m.monotonic === true ? ' monotonic' : ' non-monotonic') : ''}${m.temporality === undefined ? '' : m.temporality === 1 ? ' delta' : ' cumulative'}`]));
  const upDown = ['prefect_otel.connected', 'prefect_otel.standby', 'prefect_otel.runs.open', 'prefect_otel.pending_parent_lookups', 'prefect_otel.spans.buffered', 'prefect_otel.log_records.buffered'];
  const expected: Record<string, string> = {};
  for (const name of Object.keys(kinds)) expected[name] = upDown.includes(name) ? 'sum non-monotonic cumulative' : name === 'prefect_otel.export.lag' ? 'histogram delta' : 'sum monotonic delta';
  assert.deepEqual(kinds, expected);
  assert.deepEqual(upDown.filter((n) => !(n in kinds)), [], 'each of them is exported');
  assert.equal(Object.keys(kinds).length, METRIC_DEFS.filter((d) => d.otel !== undefined).length + 1, 'every metric of /metrics but the process facts, and the histogram');
});
