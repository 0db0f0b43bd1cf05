/**
 * The event builders against the reference's own examples (test/fixtures/reference-examples.jsonl,
 * copied verbatim from prefect-event-stream.md §4a and §4b): same inputs, same whole event, except
 * for what the builders do not model (a `creator`, the EventsWorker's deployment/work-pool context,
 * Prefect's own traceparent in state_details, non-parent task inputs).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { WireEvent } from './fake-prefect.js';
import { customEvent, flowRunStateEvent, taskRunStateEvent } from './prefect-events.js';

const FIXTURES = new URL('../../../test/fixtures/', import.meta.url);
const [flowEnvelope, taskBare] = readFileSync(new URL('reference-examples.jsonl', FIXTURES), 'utf8')
  .split('\n')
  .filter((l) => l.startsWith('{'))
  .map((l) => JSON.parse(l) as Record<string, unknown>);
const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';

test('flowRunStateEvent gives the §4a example (a deployment subflow run on a Kubernetes pool)', () => {
  const reference = (flowEnvelope as { event: WireEvent }).event;
  const built = flowRunStateEvent({
    flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1,
    occurred: '2026-08-21T12:00:05.123456Z', id: '0f3c2b1a-6666-4f70-8a81-5d6e7f8091a2', follows: '1e4d3c2b-7777-4081-9b92-6e7f8091a2b3',
    deployment: { id: '7b2e1d8f-2222-4b3c-8d4e-1f2a3b4c5d6e', name: 'prod' }, workQueue: { id: '8c3f2e90-3333-4c4d-9e5f-2a3b4c5d6e7f', name: 'default' },
    workPool: { id: '9d4031a1-4444-4d5e-8f60-3b4c5d6e7f80', name: 'k8s-pool', type: 'kubernetes' },
    parentTaskRunId: '0198c7d1-ffff-7e00-8a00-aaaaaaaaaaaa', parentTaskRunName: 'amber-owl', tags: ['nightly', 'etl'], received: '2026-08-21T12:00:05.140211Z',
  });
  assert.deepEqual(built, { ...reference, related: reference.related.filter((r) => r['prefect.resource.role'] !== 'creator') });
});

test('taskRunStateEvent gives the §4b example (a task in that flow run, Pending → Running)', () => {
  const reference = taskBare as WireEvent & { payload: { validated_state: object; task_run: { task_inputs: object } } };
  const built = taskRunStateEvent({
    taskRunId: '0198c7d2-6000-7abc-8def-0123456789ab', taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', dynamicKey: '3f2c1e0a-8b7d-4c6e-9f10-1a2b3c4d5e6f',
    flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1,
    occurred: '2026-08-21T12:00:06.000001Z', expectedStartTime: '2026-08-21T12:00:05.900000Z', tags: ['db'], parents: [],
    labels: { __OTEL_TRACEPARENT: '00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01' },
    id: '0198c7d2-6001-7000-8000-00000000000b', follows: '0198c7d2-6000-7000-8000-00000000000a', received: '2026-08-21T12:00:06.020000Z',
  });
  const modelled = new Set(['tag', 'flow-run', 'flow']);
  assert.deepEqual(built, {
    ...reference,
    related: reference.related.filter((r) => modelled.has(r['prefect.resource.role']!) && r['prefect.resource.id'] !== 'prefect.tag.etl' && r['prefect.resource.id'] !== 'prefect.tag.nightly'),
    payload: {
      ...reference.payload,
      validated_state: { ...reference.payload.validated_state, state_details: {} },
      task_run: { ...reference.payload.task_run, task_inputs: { __parents__: [] } },
    },
  });
});

test('times given as epoch ms serialise as pydantic and isoformat do; ids are fresh UUIDs unless given', () => {
  const a = customEvent({ event: 'acme.x', resourceId: 'acme.1', resourceName: 'one', related: [{ id: `prefect.flow-run.${FR}`, role: 'flow-run' }], payload: { rows: 1 }, occurred: Date.UTC(2026, 0, 2, 3, 4, 5) + 0.25 });
  assert.match(a.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.deepEqual({ ...a, id: '' }, {
    occurred: '2026-01-02T03:04:05.000250Z', event: 'acme.x', resource: { 'prefect.resource.id': 'acme.1', 'prefect.resource.name': 'one' },
    related: [{ 'prefect.resource.id': `prefect.flow-run.${FR}`, 'prefect.resource.role': 'flow-run' }], payload: { rows: 1 }, id: '', follows: null,
  });
  const f = flowRunStateEvent({ flowRunId: FR, flowRunName: 'r', ...FLOW, state: { type: 'SCHEDULED', name: 'Scheduled' }, runCount: 0, occurred: Date.UTC(2026, 0, 2, 3, 4, 5) });
  assert.deepEqual(
    [f.occurred, f.received, f.resource['prefect.state-timestamp'], f.payload, f.follows],
    ['2026-01-02T03:04:05Z', '2026-01-02T03:04:05.020000Z', '2026-01-02T03:04:05+00:00', { intended: { from: null, to: 'SCHEDULED' }, initial_state: null, validated_state: { type: 'SCHEDULED', name: 'Scheduled' } }, null],
  );
});
