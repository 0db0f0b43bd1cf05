import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateDemoWorkload } from '../../src/source/demo-workload.js';

/** The fields the checks read; the validators below check that they are really there. */
interface Labels { readonly [label: string]: string | undefined; readonly 'prefect.resource.id': string }
interface StateLabels extends Labels {
  readonly 'prefect.resource.name': string; readonly 'prefect.run-count': string; readonly 'prefect.state-message': string;
  readonly 'prefect.state-name': string; readonly 'prefect.state-timestamp': string; readonly 'prefect.state-type': string;
}
interface TaskRunPayload {
  readonly name: string; readonly task_key: string; readonly dynamic_key: string; readonly tags: string[]; readonly run_count: number; readonly total_run_time: number;
  readonly empirical_policy: { readonly retries: number };
  readonly task_inputs: { readonly __parents__: { readonly input_type: string; readonly id: string }[] };
}
interface Ev {
  readonly occurred: string; readonly event: string; readonly resource: StateLabels; readonly related: Labels[]; readonly id: string; readonly follows: string | null; readonly received: string;
  readonly payload: {
    readonly intended: { readonly from: string | null; readonly to: string };
    readonly initial_state: Record<string, unknown> | null;
    readonly validated_state: Record<string, unknown>;
    readonly task_run: TaskRunPayload;
  } & Record<string, unknown>;
}

const START_MS = Date.UTC(2026, 0, 15, 3, 0, 0);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** Pydantic JSON datetimes, and Python `isoformat()` for the `prefect.state-timestamp` label. */
const PYDANTIC_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z$/;
const ISOFORMAT_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00$/;
/** Prefect's `StateType` enum. */
const STATE_TYPES = new Set(['SCHEDULED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED', 'PAUSED', 'CANCELLING']);
const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED']);
const EVENT_KEYS = ['occurred', 'event', 'resource', 'related', 'payload', 'id', 'follows', 'received'];
const STATE_LABELS = ['prefect.resource.id', 'prefect.resource.name', 'prefect.run-count', 'prefect.state-message', 'prefect.state-name', 'prefect.state-timestamp', 'prefect.state-type'];
const TASK_RUN_KEYS = ['name', 'task_key', 'dynamic_key', 'empirical_policy', 'tags', 'labels', 'task_inputs', 'run_count', 'flow_run_run_count', 'expected_start_time'];
/** §4a: the order of the server's related resources for a flow run. */
const FLOW_ROLE_ORDER = ['flow', 'deployment', 'work-queue', 'work-pool', 'task-run', 'tag', 'creator'];
/** §4b/§4e: the EventsWorker's context resources, after the event's own. */
const CONTEXT_ROLE_ORDER = ['flow-run', 'task-run', 'flow', 'deployment', 'work-queue', 'work-pool', 'tag'];

const us = (iso: string): number => {
  const m = /\.(\d{6})/.exec(iso);
  return Date.parse(iso) * 1000 + (m ? Number(m[1]) % 1000 : 0);
};
const idOf = (ref: Labels): string => ref['prefect.resource.id'];
const related = (e: Ev, role: string): Labels[] => e.related.filter((r) => r['prefect.resource.role'] === role);
const relatedId = (e: Ev, role: string): string | undefined => {
  const r = related(e, role)[0];
  return r === undefined ? undefined : idOf(r);
};
const isState = (e: Ev): boolean => /^prefect\.(flow|task)-run\./.test(e.event) && e.resource['prefect.state-type'] !== undefined;

/** Roles must appear in `order` (a role may repeat or be missing, never go backwards). */
function assertRoleOrder(roles: readonly (string | undefined)[], order: readonly string[], what: string): void {
  const ranks = roles.map((r) => order.indexOf(r ?? ''));
  assert.ok(ranks.every((r) => r >= 0), `${what}: unexpected role in ${roles.join(',')}`);
  assert.ok(ranks.every((r, i) => i === 0 || r >= ranks[i - 1]!), `${what}: roles out of order: ${roles.join(',')}`);
}

function validateEnvelope(e: Ev): void {
  const what = `${e.event} ${e.id}`;
  assert.deepEqual(Object.keys(e), EVENT_KEYS, what);
  assert.match(e.occurred, PYDANTIC_TIME, what);
  assert.match(e.received, PYDANTIC_TIME, what);
  assert.ok(us(e.received) >= us(e.occurred), `${what}: received before occurred`);
  assert.match(e.id, UUID, what);
  assert.ok(e.follows === null || UUID.test(e.follows), what);
  assert.equal(typeof e.event, 'string');
  assert.ok(typeof idOf(e.resource) === 'string' && idOf(e.resource) !== '', what);
  for (const v of Object.values(e.resource)) assert.equal(typeof v, 'string', `${what}: resource label values are strings`);
  assert.ok(Array.isArray(e.related) && e.related.length <= 100, what);
  for (const r of e.related) {
    assert.equal(typeof idOf(r), 'string', what);
    assert.equal(typeof r['prefect.resource.role'], 'string', `${what}: related resources have roles`);
    for (const v of Object.values(r)) assert.equal(typeof v, 'string', `${what}: related label values are strings`);
  }
  assert.equal(typeof e.payload, 'object');
}

/** §4a (flow) and §4b (task) state-change events. */
function validateState(e: Ev): void {
  const task = e.event.startsWith('prefect.task-run.');
  const what = `${e.event} ${e.id}`;
  const r = e.resource;
  assert.deepEqual(Object.keys(r), task ? [...STATE_LABELS, 'prefect.orchestration'] : STATE_LABELS, what);
  assert.match(idOf(r), new RegExp(`^prefect\\.${task ? 'task' : 'flow'}-run\\.`), what);
  assert.match(idOf(r).replace(/^prefect\.(flow|task)-run\./, ''), UUID, what);
  assert.match(r['prefect.run-count'], /^\d+$/, what);
  assert.ok(STATE_TYPES.has(r['prefect.state-type']), what);
  assert.equal(e.event, `${task ? 'prefect.task-run.' : 'prefect.flow-run.'}${r['prefect.state-name']}`);
  assert.match(r['prefect.state-timestamp'], ISOFORMAT_TIME, what);
  assert.equal(r['prefect.state-timestamp'].replace('+00:00', 'Z'), e.occurred, `${what}: the label is the state's timestamp`);
  const p = e.payload;
  assert.equal(p.intended.to, r['prefect.state-type'], what);
  assert.equal(p.intended.from, p.initial_state === null ? null : p.initial_state.type, what);
  if (task) {
    assert.equal(r['prefect.orchestration'], 'client');
    assert.deepEqual(Object.keys(p), ['intended', 'initial_state', 'validated_state', 'task_run'], what);
    assert.deepEqual(Object.keys(p.validated_state), ['type', 'name', 'message', 'state_details', 'data'], what);
    if (p.initial_state !== null) assert.deepEqual(Object.keys(p.initial_state), ['type', 'name', 'message', 'state_details'], what);
    const tr = p.task_run;
    const keys = Object.keys(tr);
    assert.deepEqual(keys.filter((k) => TASK_RUN_KEYS.includes(k)), TASK_RUN_KEYS, what);
    assert.deepEqual(keys.slice(-1), ['total_run_time'], what);
    assert.equal(tr.name, r['prefect.resource.name']);
    assert.equal(tr.run_count, Number(r['prefect.run-count']));
    assert.match(tr.task_key, /^[a-z_]+-[0-9a-f]{8}$/);
    assert.equal(tr.name, `${tr.task_key.replace(/-[0-9a-f]{8}$/, '')}-${tr.dynamic_key.slice(0, 3)}`);
    assert.ok(Array.isArray(tr.task_inputs.__parents__));
    assert.equal(typeof tr.total_run_time, 'number');
    assert.equal('start_time' in tr, tr.run_count > 0, `${what}: start_time once running`);
    assert.equal('end_time' in tr, TERMINAL.has(r['prefect.state-type']), `${what}: end_time once terminal`);
    // The task's own tags first, then the EventsWorker's context (flow-run … work-pool, tags).
    const roles = e.related.map((x) => x['prefect.resource.role'] ?? '');
    const own = roles.findIndex((role) => role !== 'tag');
    assert.deepEqual(e.related.slice(0, own).map(idOf), [...tr.tags].sort().map((t: string) => `prefect.tag.${t}`));
    assertRoleOrder(roles.slice(own), CONTEXT_ROLE_ORDER, what);
    assert.equal(roles[own], 'flow-run', `${what}: flow-run comes first in the context`);
    assert.equal(related(e, 'task-run').length, 0, `${what}: the task's own id is not repeated`);
    for (const pool of related(e, 'work-pool')) assert.equal(pool['prefect.work-pool.type'], undefined, 'no pool type on the client side');
  } else {
    assert.deepEqual(Object.keys(p), ['intended', 'initial_state', 'validated_state'], what);
    const expected = { type: r['prefect.state-type'], name: r['prefect.state-name'], ...(r['prefect.state-message'] === '' ? {} : { message: r['prefect.state-message'] }) };
    assert.deepEqual(p.validated_state, expected, what);
    assertRoleOrder(e.related.map((x) => x['prefect.resource.role']), FLOW_ROLE_ORDER, what);
    assert.equal(e.related[0]?.['prefect.resource.role'], 'flow');
    for (const pool of related(e, 'work-pool')) assert.equal(typeof pool['prefect.work-pool.type'], 'string');
    for (const tag of related(e, 'tag')) assert.equal(tag['prefect.resource.name'], undefined, 'tags have no name');
  }
}

interface Run { readonly id: string; readonly type: 'flow' | 'task'; readonly states: Ev[]; readonly firstIndex: number }

/** State events per run, in `occurred` order; `firstIndex` = where the run's first event arrived. */
function runsOf(events: readonly Ev[]): Map<string, Run> {
  const runs = new Map<string, Run>();
  events.forEach((e, i) => {
    if (!isState(e)) return;
    const id = idOf(e.resource).replace(/^prefect\.(flow|task)-run\./, '');
    const run = runs.get(id) ?? { id, type: e.event.startsWith('prefect.flow-run.') ? 'flow' : 'task', states: [], firstIndex: i };
    run.states.push(e);
    runs.set(id, run);
  });
  for (const r of runs.values()) r.states.sort((a, b) => us(a.occurred) - us(b.occurred));
  return runs;
}

const names = (run: Run): string => run.states.map((s) => s.resource['prefect.state-name']).join(' → ');

const WORKLOAD = generateDemoWorkload({ seed: 11, startMs: START_MS });
const EVENTS = WORKLOAD.events as unknown as Ev[];
const RUNS = runsOf(EVENTS);

test('the workload is deterministic per seed, and seeds differ', () => {
  const again = generateDemoWorkload({ seed: 11, startMs: START_MS });
  assert.deepEqual(again, WORKLOAD);
  assert.equal(JSON.stringify(again.events), JSON.stringify(WORKLOAD.events));
  assert.notEqual(JSON.stringify(generateDemoWorkload({ seed: 12, startMs: START_MS }).events), JSON.stringify(WORKLOAD.events));
  assert.deepEqual(generateDemoWorkload().events, generateDemoWorkload().events, 'the default is stable too');
});

test('every event has Prefect\'s wire shape', () => {
  assert.ok(EVENTS.length >= 150, `${EVENTS.length} events`);
  for (const e of EVENTS) {
    validateEnvelope(e);
    if (isState(e)) validateState(e);
  }
  assert.equal(new Set(EVENTS.map((e) => e.id)).size, EVENTS.length, 'event ids are unique');
  // Arrival order: `received` never goes backwards, while `occurred` does.
  assert.ok(EVENTS.every((e, i) => i === 0 || us(e.received) >= us(EVENTS[i - 1]!.received)));
  assert.ok(EVENTS.some((e, i) => i > 0 && us(e.occurred) < us(EVENTS[i - 1]!.occurred)));
  // Around startMs: scheduled runs are created up to an hour ahead, and everything is over within minutes.
  for (const e of EVENTS) assert.ok(Math.abs(us(e.occurred) / 1000 - START_MS) < 2 * 3600_000, e.occurred);
});

test('state sequences per run are what the workload promises', () => {
  const flows = [...RUNS.values()].filter((r) => r.type === 'flow').map(names).sort();
  assert.deepEqual(flows, [
    'Pending → Running → Completed', // the in-process subflow
    'Scheduled → Late → Pending → Running → Completed',
    'Scheduled → Pending → Running → Cancelling → Cancelled',
    'Scheduled → Pending → Running → Crashed',
    'Scheduled → Pending → Running → Failed',
    'Scheduled → Pending → Running → Skipped', // run_deployment child returning a custom-named Completed state
  ]);
  const tasks = new Map<string, number>();
  for (const r of RUNS.values()) if (r.type === 'task') tasks.set(names(r), (tasks.get(names(r)) ?? 0) + 1);
  assert.deepEqual(Object.fromEntries(tasks), {
    'Pending → Running → Completed': 38,
    'Pending → Running → AwaitingRetry → Retrying → Completed': 1,
    'Pending → Running → Cached': 1,
    'Pending → Running → Failed': 1,
    'Pending → Running': 4, // killed with their process: the crash and the cancellation
  });
  assert.match(WORKLOAD.summary, /45 task runs/);
  // The summary's flow runs are every flow run of the events, and its breakdown adds up to them.
  const flowRuns = [...RUNS.values()].filter((r) => r.type === 'flow').length;
  const breakdown = /^(\d+) flow runs \((\d+) roots, (\d+) by run_deployment, (\d+) in-process subflows?\), /.exec(WORKLOAD.summary)?.slice(1).map(Number);
  assert.deepEqual(breakdown, [flowRuns, 4, 1, 1]);
  assert.equal(breakdown[1]! + breakdown[2]! + breakdown[3]!, breakdown[0]);

  const retried = [...RUNS.values()].find((r) => names(r).includes('AwaitingRetry'))!;
  assert.deepEqual(retried.states.map((s) => [s.resource['prefect.state-type'], s.resource['prefect.run-count']]),
    [['PENDING', '0'], ['RUNNING', '1'], ['SCHEDULED', '1'], ['RUNNING', '2'], ['COMPLETED', '2']]);
  assert.deepEqual(retried.states.map((s) => s.payload.task_run.empirical_policy.retries), [2, 2, 2, 2, 2]);

  const failedTask = [...RUNS.values()].find((r) => r.type === 'task' && names(r).endsWith('Failed'))!;
  const failedTaskEnd = failedTask.states.at(-1)!;
  assert.equal(failedTaskEnd.resource['prefect.state-message'], 'Task run encountered an exception ValueError: bad row 17');
  const failedFlow = RUNS.get(relatedId(failedTaskEnd, 'flow-run')!.replace('prefect.flow-run.', ''))!;
  assert.equal(failedFlow.states.at(-1)!.resource['prefect.state-message'], 'Flow run encountered an exception: ValueError: bad row 17');

  for (const run of RUNS.values()) {
    run.states.forEach((s, i) => {
      const prev = run.states[i - 1];
      const tight = prev !== undefined && us(s.occurred) - us(prev.occurred) < 5 * 60 * 1_000_000;
      assert.equal(s.follows, tight ? prev.id : null, `follows of ${s.event} ${s.id}`);
      assert.equal(s.payload.intended.from, prev === undefined ? null : prev.resource['prefect.state-type']);
    });
  }
});

test('subflow and run_deployment children point at tracking task runs that resolve to the parent flow run', () => {
  const children = [...RUNS.values()].filter((r) => r.type === 'flow' && r.states.some((s) => relatedId(s, 'task-run') !== undefined));
  assert.equal(children.length, 2);
  const owners = WORKLOAD.taskRunOwners;
  assert.equal(owners.size, 2);
  for (const child of children) {
    const tracking = related(child.states[0]!, 'task-run')[0]!;
    const trackingId = idOf(tracking).replace('prefect.task-run.', '');
    assert.ok(child.states.every((s) => relatedId(s, 'task-run') === idOf(tracking)), 'on every state event');
    const parent = RUNS.get(owners.get(trackingId) ?? '');
    assert.ok(parent !== undefined && parent.type === 'flow', 'the owner is a flow run with events');
    assert.equal(parent.states.some((s) => relatedId(s, 'task-run') !== undefined), false, 'the parent is a root');
    assert.equal(RUNS.has(trackingId), false, 'tracking task runs emit no events of their own');
    assert.ok(us(child.states[0]!.occurred) > us(parent.states.find((s) => s.resource['prefect.state-type'] === 'RUNNING')!.occurred));
    assert.ok(us(child.states.at(-1)!.occurred) < us(parent.states.at(-1)!.occurred), 'the parent waits for its child');
    const deployment = related(child.states[0]!, 'deployment')[0];
    const flowName = related(child.states[0]!, 'flow')[0]!['prefect.resource.name'];
    if (deployment === undefined) {
      assert.equal(tracking['prefect.resource.name'], `${flowName}-0`, 'in-process subflow: `<subflow name>-0`');
      assert.equal(related(child.states[0]!, 'work-pool').length, 0);
    } else {
      assert.match(tracking['prefect.resource.name'] ?? '', /^[a-z]+-[a-z]+$/, 'run_deployment: a server-generated slug');
    }
    // The child's task runs relate to the child, not to the parent.
    const childTasks = [...RUNS.values()].filter((r) => r.type === 'task' && relatedId(r.states[0]!, 'flow-run') === `prefect.flow-run.${child.id}`);
    assert.ok(childTasks.length >= 2);
  }
});

test('arrival order: task events follow their flow run\'s first event; one arrives well after its flow finished', () => {
  let late = 0;
  let latestUs = 0;
  EVENTS.forEach((e, i) => {
    if (!isState(e) || !e.event.startsWith('prefect.task-run.')) return;
    const flow = RUNS.get(relatedId(e, 'flow-run')!.replace('prefect.flow-run.', ''))!;
    assert.ok(flow.firstIndex < i, `${e.event} ${e.id} arrived before its flow run's first event`);
    const flowEnd = flow.states.at(-1)!;
    if (TERMINAL.has(flowEnd.resource['prefect.state-type']) && EVENTS.indexOf(flowEnd) < i) {
      late += 1;
      assert.ok(us(e.received) > us(flowEnd.received));
      latestUs = Math.max(latestUs, us(e.received) - us(flowEnd.received));
      assert.ok(us(e.occurred) < us(flowEnd.occurred), 'it happened before the flow ended, it only arrived later');
      assert.ok(TERMINAL.has(e.resource['prefect.state-type']));
    }
  });
  assert.ok(late >= 1, 'a late task event');
  assert.ok(latestUs >= 500_000, 'one drained from the EventsWorker at process exit, long after the flow ended');
  assert.match(WORKLOAD.summary, new RegExp(`\\(${late} late task events?\\)`));
});

test('nested tasks name their parent task in __parents__', () => {
  const nested = [...RUNS.values()].filter((r) => r.type === 'task' && r.states[0]!.payload.task_run.task_inputs.__parents__.length > 0);
  assert.ok(nested.length >= 1);
  for (const child of nested) {
    const ref = child.states[0]!.payload.task_run.task_inputs.__parents__[0]!;
    assert.deepEqual(Object.keys(ref), ['input_type', 'id']);
    assert.equal(ref.input_type, 'task_run');
    const parent = RUNS.get(ref.id)!;
    assert.equal(parent.type, 'task');
    assert.equal(relatedId(parent.states[0]!, 'flow-run'), relatedId(child.states[0]!, 'flow-run'), 'same flow run');
    assert.ok(us(parent.states[1]!.occurred) <= us(child.states[0]!.occurred) && us(child.states.at(-1)!.occurred) <= us(parent.states.at(-1)!.occurred), 'inside the parent');
  }
});

test('heartbeat, custom, concurrency and artifact events exist and relate to runs that exist', () => {
  const byName = (name: string): Ev[] => EVENTS.filter((e) => e.event === name);
  const runExists = (resourceId: string | undefined): boolean => resourceId !== undefined && RUNS.has(resourceId.replace(/^prefect\.(flow|task)-run\./, ''));

  const heartbeats = byName('prefect.flow-run.heartbeat');
  assert.ok(heartbeats.length >= 3);
  for (const h of heartbeats) {
    assert.deepEqual(Object.keys(h.resource), ['prefect.resource.id', 'prefect.resource.name', 'prefect.version']);
    assert.ok(runExists(idOf(h.resource)));
    assertRoleOrder(h.related.map((r) => r['prefect.resource.role']), ['deployment', 'flow', 'tag'], 'heartbeat');
    const run = RUNS.get(idOf(h.resource).replace('prefect.flow-run.', ''))!;
    const running = run.states.find((s) => s.resource['prefect.state-type'] === 'RUNNING')!;
    assert.ok(us(h.occurred) > us(running.occurred) && us(h.occurred) < us(run.states.at(-1)!.occurred), 'while running');
  }

  const inTask = [...byName('acme.rows.loaded'), ...byName('prefect.concurrency-limit.acquired'), ...byName('prefect.concurrency-limit.released'), ...byName('prefect.artifact.created')];
  for (const e of inTask) {
    assertRoleOrder(e.related.map((r) => r['prefect.resource.role']), CONTEXT_ROLE_ORDER, e.event);
    assert.ok(runExists(relatedId(e, 'flow-run')) && runExists(relatedId(e, 'task-run')), `${e.event} relates to existing runs`);
    const task = RUNS.get(relatedId(e, 'task-run')!.replace('prefect.task-run.', ''))!;
    assert.ok(us(e.occurred) > us(task.states[1]!.occurred) && us(e.occurred) < us(task.states.at(-1)!.occurred), `${e.event} while its task runs`);
  }

  const rows = byName('acme.rows.loaded');
  assert.deepEqual(rows.map((e) => idOf(e.resource)).sort(), ['acme.table.customers', 'acme.table.orders']);
  for (const e of rows) assert.deepEqual(Object.keys(e.payload), ['table', 'rows', 'seconds']);

  const [acquired] = byName('prefect.concurrency-limit.acquired');
  const [released] = byName('prefect.concurrency-limit.released');
  assert.match(idOf(acquired!.resource), /^prefect\.concurrency-limit\./);
  assert.deepEqual(acquired!.resource, released!.resource);
  assert.equal(acquired!.resource['slots-acquired'], '1');
  assert.equal(acquired!.resource.limit, '2');
  assert.equal(released!.follows, acquired!.id, 'released follows acquired');

  const [artifact] = byName('prefect.artifact.created');
  assert.match(idOf(artifact!.resource), /^prefect\.artifact\./);
  assert.deepEqual(artifact!.payload, { key: 'load-summary', type: 'markdown', description: 'Rows loaded per table' });

  const creators = EVENTS.flatMap((e) => related(e, 'creator'));
  assert.ok(creators.length > 0 && creators.every((c) => idOf(c).startsWith('prefect.automation.')), 'an automation-created run');
});

test('the flows option scales the workload', () => {
  assert.equal(generateDemoWorkload({ flows: 0 }).events.length, 0);
  const one = generateDemoWorkload({ seed: 3, startMs: START_MS, flows: 1 });
  assert.match(one.summary, /^3 flow runs \(1 root, 1 by run_deployment, 1 in-process subflow\), /);
  const eight = generateDemoWorkload({ seed: 3, startMs: START_MS, flows: 8 });
  assert.match(eight.summary, /^12 flow runs \(8 roots, 2 by run_deployment, 2 in-process subflows\), /);
  const runs = runsOf(eight.events as unknown as Ev[]);
  const roots = [...runs.values()].filter((r) => r.type === 'flow' && r.states.every((s) => relatedId(s, 'task-run') === undefined));
  assert.equal(roots.length, 8);
  assert.equal(new Set([...runs.values()].filter((r) => r.type === 'flow').map((r) => r.states[0]!.resource['prefect.resource.name'])).size,
    [...runs.values()].filter((r) => r.type === 'flow').length, 'flow run names are unique');
  assert.equal(eight.taskRunOwners.size, 4);
  assert.equal(new Set(eight.events.map((e) => e.id)).size, eight.events.length);
});
