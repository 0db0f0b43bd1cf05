/**
 * Builders for Prefect events in the server's wire format (reference §4a server-side flow-run state
 * events, §4b client-side task-run state events, §4e other events), so tests state scenarios in
 * a few lines.
 */
import { randomUUID } from 'node:crypto';

export type WireEvent = Record<string, unknown> & { id: string; event: string; occurred: string };
type Time = string | number;

const iso = (t: Time): string => (typeof t === 'string' ? t : `${new Date(t).toISOString().slice(0, 23)}000Z`);
const isoformat = (t: Time): string => iso(t).replace(/Z$/, '+00:00');

interface State {
  type: string;
  name: string;
  message?: string;
}

function related(id: string, role: string, name?: string, labels: Record<string, string> = {}): Record<string, string> {
  return { 'prefect.resource.id': id, 'prefect.resource.role': role, ...(name === undefined ? {} : { 'prefect.resource.name': name }), ...labels };
}

function stateLabels(state: State, runCount: number, occurred: Time): Record<string, string> {
  return {
    'prefect.run-count': String(runCount),
    'prefect.state-message': state.message ?? '',
    'prefect.state-name': state.name,
    'prefect.state-timestamp': isoformat(occurred),
    'prefect.state-type': state.type,
  };
}

export interface FlowRunStateInput {
  flowRunId: string;
  flowRunName: string;
  flowId: string;
  flowName: string;
  state: State;
  from?: string | null;
  runCount: number;
  occurred: Time;
  id?: string;
  follows?: string | null;
  deployment?: { id: string; name: string };
  workQueue?: { id: string; name: string };
  workPool?: { id: string; name: string; type: string };
  parentTaskRunId?: string;
  parentTaskRunName?: string;
  tags?: string[];
  received?: Time;
}

/** `prefect.flow-run.<State>` as the server's InstrumentFlowRunStateTransitions emits it. */
export function flowRunStateEvent(i: FlowRunStateInput): WireEvent {
  const rel = [related(`prefect.flow.${i.flowId}`, 'flow', i.flowName)];
  if (i.deployment) rel.push(related(`prefect.deployment.${i.deployment.id}`, 'deployment', i.deployment.name));
  if (i.workQueue) rel.push(related(`prefect.work-queue.${i.workQueue.id}`, 'work-queue', i.workQueue.name));
  if (i.workPool) rel.push(related(`prefect.work-pool.${i.workPool.id}`, 'work-pool', i.workPool.name, { 'prefect.work-pool.type': i.workPool.type }));
  if (i.parentTaskRunId) rel.push(related(`prefect.task-run.${i.parentTaskRunId}`, 'task-run', i.parentTaskRunName));
  for (const t of [...(i.tags ?? [])].sort()) rel.push(related(`prefect.tag.${t}`, 'tag'));
  const from = i.from ?? null;
  const validated: Record<string, string> = { type: i.state.type, name: i.state.name };
  if (i.state.message) validated.message = i.state.message;
  return {
    occurred: iso(i.occurred),
    event: `prefect.flow-run.${i.state.name}`,
    resource: { 'prefect.resource.id': `prefect.flow-run.${i.flowRunId}`, 'prefect.resource.name': i.flowRunName, ...stateLabels(i.state, i.runCount, i.occurred) },
    related: rel,
    payload: { intended: { from, to: i.state.type }, initial_state: from === null ? null : { type: from }, validated_state: validated },
    id: i.id ?? randomUUID(),
    follows: i.follows ?? null,
    received: iso(i.received ?? (typeof i.occurred === 'number' ? i.occurred + 20 : i.occurred)),
  };
}

export interface TaskRunStateInput {
  taskRunId: string;
  taskRunName: string;
  taskKey: string;
  flowRunId?: string;
  flowRunName?: string;
  flowId?: string;
  flowName?: string;
  state: State;
  from?: string | null;
  runCount: number;
  occurred: Time;
  parents?: string[];
  tags?: string[];
  labels?: Record<string, string>;
  id?: string;
  follows?: string | null;
  received?: Time;
}

/** `prefect.task-run.<State>` as the client's task engine emits it, with the EventsWorker's related resources. */
export function taskRunStateEvent(i: TaskRunStateInput): WireEvent {
  const tags = [...(i.tags ?? [])].sort();
  const rel = tags.map((t) => related(`prefect.tag.${t}`, 'tag'));
  if (i.flowRunId) rel.push(related(`prefect.flow-run.${i.flowRunId}`, 'flow-run', i.flowRunName));
  if (i.flowId) rel.push(related(`prefect.flow.${i.flowId}`, 'flow', i.flowName));
  const from = i.from ?? null;
  return {
    occurred: iso(i.occurred),
    event: `prefect.task-run.${i.state.name}`,
    resource: {
      'prefect.resource.id': `prefect.task-run.${i.taskRunId}`,
      'prefect.resource.name': i.taskRunName,
      ...stateLabels(i.state, i.runCount, i.occurred),
      'prefect.orchestration': 'client',
    },
    related: rel,
    payload: {
      intended: { from, to: i.state.type },
      initial_state: from === null ? null : { type: from, name: from, message: '', state_details: {} },
      validated_state: { type: i.state.type, name: i.state.name, message: i.state.message ?? '', state_details: {}, data: null },
      task_run: {
        name: i.taskRunName,
        task_key: i.taskKey,
        dynamic_key: '0',
        empirical_policy: { max_retries: 0, retry_delay_seconds: 0, retries: 0, retry_delay: 0 },
        tags,
        labels: i.labels ?? {},
        task_inputs: { __parents__: (i.parents ?? []).map((id) => ({ input_type: 'task_run', id })) },
        run_count: i.runCount,
        flow_run_run_count: 1,
        expected_start_time: iso(i.occurred),
        total_run_time: 0,
      },
    },
    id: i.id ?? randomUUID(),
    follows: i.follows ?? null,
    received: iso(i.received ?? (typeof i.occurred === 'number' ? i.occurred + 20 : i.occurred)),
  };
}

/** Any other event (emit_event, concurrency, artifacts…): a resource and the runs it relates to. */
export function customEvent(i: { event: string; resourceId: string; resourceName?: string; related: { id: string; role: string; name?: string }[]; payload?: Record<string, unknown>; occurred: Time; id?: string }): WireEvent {
  return {
    occurred: iso(i.occurred),
    event: i.event,
    resource: { 'prefect.resource.id': i.resourceId, ...(i.resourceName === undefined ? {} : { 'prefect.resource.name': i.resourceName }) },
    related: i.related.map((r) => related(r.id, r.role, r.name)),
    payload: i.payload ?? {},
    id: i.id ?? randomUUID(),
    follows: null,
  };
}
