import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runModel } from '../helpers/model-run.js';
import { EXAMPLE_FLOW, flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';

const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
const at = (s: number): number => T0 + s * 1000;
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';

const flowState = (type: string, name: string, from: string | null, s: number): Record<string, unknown> =>
  flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...EXAMPLE_FLOW, state: { type, name }, from, runCount: 1, occurred: at(s) });

function taskRun(id: string, name: string, key: string, s: number): Record<string, unknown>[] {
  const common = { taskRunId: id, taskRunName: name, taskKey: key, flowRunId: FR, flowRunName: 'crimson-fox', ...EXAMPLE_FLOW, runCount: 1 };
  return [
    taskRunStateEvent({ ...common, state: { type: 'RUNNING', name: 'Running' }, from: null, occurred: at(s) }),
    taskRunStateEvent({ ...common, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', occurred: at(s + 1) }),
  ];
}

test("task span names: the task_key without Prefect's code hash, also when Prefect could not hash the code (`-unknown`); a key that names nothing falls back to the run name, never an empty span name", async () => {
  const runs = [
    { id: '0198c7d2-6000-7abc-8def-000000000001', name: 'extract-3f2', key: 'extract-9a8b7c6d', want: 'extract' },
    { id: '0198c7d2-6000-7abc-8def-000000000002', name: 'load-7c1', key: 'load-unknown', want: 'load' },
    { id: '0198c7d2-6000-7abc-8def-000000000003', name: 'notify-0a9', key: '', want: 'notify-0a9' },
    { id: '0198c7d2-6000-7abc-8def-000000000004', name: 'clean-5d2', key: '-9a8b7c6d', want: 'clean-5d2' },
  ];
  const events = [flowState('RUNNING', 'Running', null, 0), ...runs.flatMap((r, i) => taskRun(r.id, r.name, r.key, 1 + i)), flowState('COMPLETED', 'Completed', 'RUNNING', 9)];
  const { spans } = await runModel(events);
  const named = (id: string): [string, unknown] => {
    const span = spans.find((s) => s.run.id === id)!;
    return [span.name, span.attributes['cicd.pipeline.task.name']];
  };
  assert.deepEqual(runs.map((r) => named(r.id)), runs.map((r) => [r.want, r.want]));
});

test('task span names from Prefect 2 events, which carry no task key (no `payload.task_run`): the run name without the count Prefect 2 appends (`<task name>-<n>`)', async () => {
  const runs = [
    { id: '0198c7d2-6000-7abc-8def-000000000011', name: 'extract_rows-3', want: 'extract_rows' },
    { id: '0198c7d2-6000-7abc-8def-000000000012', name: 'load-12', want: 'load' },
    { id: '0198c7d2-6000-7abc-8def-000000000013', name: 'notify', want: 'notify' },
  ];
  const prefect2 = (e: Record<string, unknown>): Record<string, unknown> => {
    const { task_run: _taskRun, ...payload } = e.payload as Record<string, unknown>;
    return { ...e, payload };
  };
  const events = [flowState('RUNNING', 'Running', null, 0), ...runs.flatMap((r, i) => taskRun(r.id, r.name, 'unused-9a8b7c6d', 1 + i).map(prefect2)), flowState('COMPLETED', 'Completed', 'RUNNING', 9)];
  const { spans } = await runModel(events);
  const named = (id: string): [string, unknown, unknown] => {
    const span = spans.find((s) => s.run.id === id)!;
    return [span.name, span.attributes['cicd.pipeline.task.name'], span.attributes['prefect.task.key']];
  };
  assert.deepEqual(runs.map((r) => named(r.id)), runs.map((r) => [r.want, r.want, undefined]));
});
