/**
 * Builders for Prefect events in the server's wire format, so tests state scenarios in a few lines:
 * §4a server-side flow-run state events, §4b client-side task-run state events (with the
 * EventsWorker's related resources), and any other event (§4e).
 *
 * Times are ISO strings (kept as given) or epoch ms (fractions of a ms kept as µs), serialised as
 * pydantic does (`…T12:00:05.123456Z`, no fraction when it is zero); the `prefect.state-timestamp`
 * label is Python's `isoformat()` (`+00:00`).
 */
import { randomUUID } from 'node:crypto';
import { microsToIso, toMicros } from './event-filter.js';
import type { WireEvent } from './fake-prefect.js';

export type { WireEvent };
type Time = string | number;

const us = (t: Time): number => {
  const v = typeof t === 'number' ? Math.round(t * 1000) : toMicros(t);
  if (v === undefined) throw new Error(`not a time: ${String(t)}`);
  return v;
};
const iso = (t: Time): string => (typeof t === 'string' ? t : microsToIso(us(t)));
const isoformat = (t: Time): string => microsToIso(us(t)).replace(/Z$/, '+00:00');
/** `received` defaults to 20 ms after `occurred`. */
const receivedAt = (occurred: Time, received?: Time): string => (received === undefined ? microsToIso(us(occurred) + 20_000) : iso(received));
/** The default state name of a state type: `AWAITINGRETRY` is not a type, so `PENDING` → `Pending` covers them all. */
const defaultName = (type: string): string => type.charAt(0) + type.slice(1).toLowerCase();
const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED']);

export interface State {
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
  /** The previous state's type (its name is the type's default name), or null for the first event. */
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

/** `prefect.flow-run.<State>` as the server's InstrumentFlowRunStateTransitions emits it (§4a). */
export function flowRunStateEvent(i: FlowRunStateInput): WireEvent {
  const rel = [related(`prefect.flow.${i.flowId}`, 'flow', i.flowName)];
  if (i.deployment) rel.push(related(`prefect.deployment.${i.deployment.id}`, 'deployment', i.deployment.name));
  if (i.workQueue) rel.push(related(`prefect.work-queue.${i.workQueue.id}`, 'work-queue', i.workQueue.name));
  if (i.workPool) rel.push(related(`prefect.work-pool.${i.workPool.id}`, 'work-pool', i.workPool.name, { 'prefect.work-pool.type': i.workPool.type }));
  if (i.parentTaskRunId) rel.push(related(`prefect.task-run.${i.parentTaskRunId}`, 'task-run', i.parentTaskRunName));
  for (const t of [...new Set(i.tags ?? [])].sort()) rel.push(related(`prefect.tag.${t}`, 'tag'));
  const from = i.from ?? null;
  // state_payload(): type, name if set, message if non-empty (no state_details).
  const validated: Record<string, string> = { type: i.state.type, name: i.state.name };
  if (i.state.message) validated.message = i.state.message;
  return {
    occurred: iso(i.occurred),
    event: `prefect.flow-run.${i.state.name}`,
    resource: { 'prefect.resource.id': `prefect.flow-run.${i.flowRunId}`, 'prefect.resource.name': i.flowRunName, ...stateLabels(i.state, i.runCount, i.occurred) },
    related: rel,
    payload: { intended: { from, to: i.state.type }, initial_state: from === null ? null : { type: from, name: defaultName(from) }, validated_state: validated },
    id: i.id ?? randomUUID(),
    follows: i.follows ?? null,
    received: receivedAt(i.occurred, i.received),
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
  /** The previous state's type, or null for the first (Pending) event. */
  from?: string | null;
  runCount: number;
  occurred: Time;
  /** Task run ids for `task_inputs.__parents__` (nested tasks). */
  parents?: string[];
  tags?: string[];
  labels?: Record<string, string>;
  id?: string;
  follows?: string | null;
  received?: Time;
  /** `task_run.dynamic_key`; default "0". */
  dynamicKey?: string;
  /** Default `occurred`. */
  expectedStartTime?: Time;
  /** `task_run.start_time`; default `occurred` for a RUNNING state, else absent. */
  startTime?: Time;
  /** `task_run.end_time`; default `occurred` for a terminal state, else absent. */
  endTime?: Time;
  /**
   * `validated_state.state_details` (without `flow_run_id`/`task_run_id`, None and unset fields, as
   * the client dumps it); default `{}`. A background task's (`.delay()`) carry `deferred: true`.
   */
  stateDetails?: Record<string, unknown>;
}

/** `prefect.task-run.<State>` as the client's task engine emits it, with the EventsWorker's related resources (§4b). */
export function taskRunStateEvent(i: TaskRunStateInput): WireEvent {
  const tags = [...new Set(i.tags ?? [])].sort();
  const rel = tags.map((t) => related(`prefect.tag.${t}`, 'tag'));
  if (i.flowRunId) rel.push(related(`prefect.flow-run.${i.flowRunId}`, 'flow-run', i.flowRunName));
  if (i.flowId) rel.push(related(`prefect.flow.${i.flowId}`, 'flow', i.flowName));
  const from = i.from ?? null;
  const start = i.startTime ?? (i.state.type === 'RUNNING' ? i.occurred : undefined);
  const end = i.endTime ?? (TERMINAL.has(i.state.type) ? i.occurred : undefined);
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
      initial_state: from === null ? null : { type: from, name: defaultName(from), message: '', state_details: {} },
      validated_state: { type: i.state.type, name: i.state.name, message: i.state.message ?? '', state_details: i.stateDetails ?? {}, data: null },
      task_run: {
        name: i.taskRunName,
        task_key: i.taskKey,
        dynamic_key: i.dynamicKey ?? '0',
        empirical_policy: { max_retries: 0, retry_delay_seconds: 0, retries: 0, retry_delay: 0 },
        tags,
        labels: i.labels ?? {},
        task_inputs: { __parents__: (i.parents ?? []).map((id) => ({ input_type: 'task_run', id })) },
        run_count: i.runCount,
        flow_run_run_count: 1,
        expected_start_time: iso(i.expectedStartTime ?? i.occurred),
        ...(start === undefined ? {} : { start_time: iso(start) }),
        ...(end === undefined ? {} : { end_time: iso(end) }),
        total_run_time: 0,
      },
    },
    id: i.id ?? randomUUID(),
    follows: i.follows ?? null,
    received: receivedAt(i.occurred, i.received),
  };
}

export interface CustomEventInput {
  event: string;
  resourceId: string;
  resourceName?: string;
  related: { id: string; role: string; name?: string }[];
  payload?: Record<string, unknown>;
  occurred: Time;
  id?: string;
  follows?: string | null;
}

/** Any other event (emit_event, concurrency, artifacts…): a resource and the resources it relates to. No `received`: the server sets it. */
export function customEvent(i: CustomEventInput): WireEvent {
  return {
    occurred: iso(i.occurred),
    event: i.event,
    resource: { 'prefect.resource.id': i.resourceId, ...(i.resourceName === undefined ? {} : { 'prefect.resource.name': i.resourceName }) },
    related: i.related.map((r) => related(r.id, r.role, r.name)),
    payload: i.payload ?? {},
    id: i.id ?? randomUUID(),
    follows: i.follows ?? null,
  };
}

/** Nesting that JSON.parse reads and Node 20's JSON.stringify cannot write (its recursion runs out of stack). */
export const UNWRITABLE_DEPTH = 5_000;

/** `{"x":[[[…]]]}` nested UNWRITABLE_DEPTH deep, as JSON text. */
export const DEEP_PAYLOAD_JSON = `{"x":${'['.repeat(UNWRITABLE_DEPTH)}${']'.repeat(UNWRITABLE_DEPTH)}}`;

/**
 * Whether this runtime's JSON.stringify writes a value nested UNWRITABLE_DEPTH deep (newer V8 writes
 * any depth). Where it does, no payload is too deep to write and `too_deep` cannot happen: the tests
 * of that skip say so and are skipped.
 */
export const DEEP_JSON_WRITABLE: boolean = (() => {
  try {
    JSON.stringify(JSON.parse(DEEP_PAYLOAD_JSON));
    return true;
  } catch {
    return false;
  }
})();

/** The `skip` option of a test of the `too_deep` skip. */
export const ONLY_WHERE_DEEP_JSON_FAILS = DEEP_JSON_WRITABLE ? 'this runtime writes JSON nested this deep: no payload is too deep to write' : false;

/** The flow, and the deployment with its work queue and pool, that the example runs of the model tests belong to. */
export const EXAMPLE_FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
export const EXAMPLE_DEPLOYMENT = {
  deployment: { id: '7b2e1d8f-2222-4b3c-8d4e-1f2a3b4c5d6e', name: 'nightly' },
  workQueue: { id: '8c3f2e90-3333-4c4d-9e5f-2a3b4c5d6e7f', name: 'default' },
  workPool: { id: '9d4031a1-4444-4d5e-8f60-3b4c5d6e7f80', name: 'k8s-pool', type: 'kubernetes' },
};
