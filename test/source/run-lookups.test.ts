/**
 * The flow run owning each task run (a subflow's parent) over loopback against the fake Prefect
 * server: one GET per task run with a bound on requests out, runs it does not have, refused
 * credentials, and a caller that stops asking.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrefectRestClient } from '../../src/source/rest.js';
import { createFlowParentLookup, createOwnerLookup, createStateHistoryLookup, deletedFlowRunsFromRest, MAX_BATCH, OWNER_LOOKUPS_IN_FLIGHT, OWNER_LOOKUPS_QUEUED_MAX } from '../../src/source/run-lookups.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { EXAMPLE_FLOW, flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';
import { until } from '../helpers/watch-e2e.js';

const taskId = (i: number): string => `0198c7d2-6000-7000-8000-${String(i).padStart(12, '0')}`;
const flowId = (i: number): string => `0198c7d2-8000-7000-8000-${String(i).padStart(12, '0')}`;

test(`owners of task runs: GET /task_runs/{id} each, ${OWNER_LOOKUPS_IN_FLIGHT} at a time; a task run outside a flow or unknown to the server has none`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const n = 3 * OWNER_LOOKUPS_IN_FLIGHT;
  for (let i = 0; i < n - 1; i++) prefect.addTaskRun({ id: taskId(i), flow_run_id: i === 1 ? null : flowId(i) });
  const owner = createOwnerLookup(createPrefectRestClient({ apiUrl: prefect.url }));
  prefect.switches.holdRest = true;
  const all = Promise.all(Array.from({ length: n }, (_, i) => owner(taskId(i))));
  while (prefect.restRequests.length < OWNER_LOOKUPS_IN_FLIGHT) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(prefect.restRequests.length, OWNER_LOOKUPS_IN_FLIGHT, 'the rest wait in the queue');
  prefect.switches.holdRest = false;
  assert.deepEqual(await all, Array.from({ length: n }, (_, i) => (i === 1 || i === n - 1 ? null : flowId(i))));
  assert.deepEqual(
    prefect.restRequests.map((q) => `${q.method} ${q.path}`).sort(),
    Array.from({ length: n }, (_, i) => `GET /api/task_runs/${taskId(i)}`).sort(),
  );
});

test('owners: refused credentials reach onAuthError and answer null; while `skip` holds nothing is asked; failures are reported', async (t) => {
  const prefect = await startFakePrefect({ authString: 'admin:pass' });
  t.after(() => prefect.close());
  prefect.addTaskRun({ id: taskId(1), flow_run_id: flowId(1) });
  const authErrors: string[] = [];
  const wrong = createOwnerLookup(createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:wrong' }), { onAuthError: (err) => authErrors.push(err.message) });
  assert.equal(await wrong(taskId(1)), null);
  assert.deepEqual(authErrors, [`the Prefect API refused GET /task_runs/${taskId(1)} with HTTP 401: check PREFECT_API_AUTH_STRING`]);

  let skipping = false;
  const failures: unknown[] = [];
  const rest = createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:pass' });
  const owner = createOwnerLookup(rest, { skip: () => skipping, onFailure: (f) => failures.push(f) });
  assert.deepEqual(await Promise.all([owner(taskId(1)), owner(taskId(2))]), [flowId(1), null]);
  prefect.switches.restStatus = 500;
  assert.equal(await owner(taskId(1)), null);
  prefect.switches.restStatus = 0;
  const before = prefect.restRequests.length;
  skipping = true;
  assert.equal(await owner(taskId(1)), null);
  assert.equal(prefect.restRequests.length, before, 'nothing asked while skipping');
  assert.deepEqual(failures, [
    { reason: `GET /task_runs/${taskId(2)}: not found`, transport: false },
    { reason: `GET /task_runs/${taskId(1)}: HTTP 500`, transport: false },
  ]);
});

test('a subflow parent look-up that Prefect Cloud rate-limits with a Retry-After longer than a minute, or answers down for maintenance, waits (at most the longest wait) and asks again: the parent is found, nothing is reported as failed', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  prefect.addTaskRun({ id: taskId(1), flow_run_id: flowId(1) });
  const failures: unknown[] = [];
  const owner = createOwnerLookup(createPrefectRestClient({ apiUrl: prefect.url, lookupMaxWaitMs: 100 }), { onFailure: (f) => failures.push(f) });
  for (const [status, retryAfter] of [[429, '120'], [503, undefined]] as const) {
    prefect.switches.restStatus = status;
    prefect.switches.restRetryAfter = retryAfter;
    prefect.switches.maintenance = status === 503;
    const before = prefect.restRequests.length;
    const found = owner(taskId(1));
    await until('the first answer', () => prefect.restRequests.length > before);
    prefect.switches.restStatus = 0;
    assert.deepEqual({ owner: await found, requests: prefect.restRequests.length - before }, { owner: flowId(1), requests: 2 });
  }
  assert.deepEqual(failures, []);
});

test(`owners: a server that does not answer holds at most ${OWNER_LOOKUPS_QUEUED_MAX} lookups in the queue; the oldest past it is answered null at once, without a request, and reported`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const over = 50;
  const n = OWNER_LOOKUPS_IN_FLIGHT + OWNER_LOOKUPS_QUEUED_MAX + over;
  for (let i = 0; i < n; i++) prefect.addTaskRun({ id: taskId(i), flow_run_id: flowId(i) });
  const failures: unknown[] = [];
  const owner = createOwnerLookup(createPrefectRestClient({ apiUrl: prefect.url }), { onFailure: (f) => failures.push(f) });
  prefect.switches.holdRest = true;
  const answered = new Map<number, string | null>();
  const all = Promise.all(Array.from({ length: n }, (_, i) => owner(taskId(i)).then((o) => void answered.set(i, o))));
  await new Promise((r) => setImmediate(r));
  // The first ones went out as requests; the next `over` were pushed out of the full queue.
  const pushedOut = Array.from({ length: over }, (_, k) => OWNER_LOOKUPS_IN_FLIGHT + k);
  assert.deepEqual([...answered], pushedOut.map((i) => [i, null]));
  assert.deepEqual(failures, pushedOut.map(() => ({ reason: `more than ${OWNER_LOOKUPS_QUEUED_MAX} lookups waiting for the server`, transport: false })));
  prefect.switches.holdRest = false;
  await all;
  assert.deepEqual(
    [...answered].sort((a, b) => a[0] - b[0]),
    Array.from({ length: n }, (_, i) => [i, pushedOut.includes(i) ? null : flowId(i)]),
  );
  assert.deepEqual(
    prefect.restRequests.map((q) => q.path).sort(),
    Array.from({ length: n }, (_, i) => i).filter((i) => !pushedOut.includes(i)).map((i) => `/api/task_runs/${taskId(i)}`).sort(),
  );
});

test('tracking tasks of flow runs: GET /flow_runs/{id} each, parent_task_run_id; a root flow run has none (null), one unknown to the server is not found (undefined); refused credentials reach onAuthError', async (t) => {
  const prefect = await startFakePrefect({ authString: 'admin:pass' });
  t.after(() => prefect.close());
  prefect.addFlowRun({ id: flowId(1), parent_task_run_id: taskId(1) });
  prefect.addFlowRun({ id: flowId(2), parent_task_run_id: null });
  const failures: unknown[] = [];
  const parent = createFlowParentLookup(createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:pass' }), { onFailure: (f) => failures.push(f) });
  assert.deepEqual(await Promise.all([parent(flowId(1)), parent(flowId(2)), parent(flowId(3))]), [taskId(1), null, undefined]);
  assert.deepEqual(prefect.restRequests.map((q) => `${q.method} ${q.path}`).sort(), [1, 2, 3].map((i) => `GET /api/flow_runs/${flowId(i)}`).sort());
  assert.deepEqual(failures, [{ reason: `GET /flow_runs/${flowId(3)}: not found`, transport: false }]);

  const authErrors: string[] = [];
  const wrong = createFlowParentLookup(createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:wrong' }), { onAuthError: (err) => authErrors.push(err.message) });
  assert.equal(await wrong(flowId(1)), undefined);
  assert.deepEqual(authErrors, [`the Prefect API refused GET /flow_runs/${flowId(1)} with HTTP 401: check PREFECT_API_AUTH_STRING`]);
});

test(`state histories of runs: GET /flow_run_states/?flow_run_id= or /task_run_states/?task_run_id= each, in the server's order; one that cannot be read is undefined and reported; while \`skip\` holds, lookups answer undefined at once and those waiting go without a request`, async (t) => {
  const prefect = await startFakePrefect({ authString: 'admin:pass' });
  t.after(() => prefect.close());
  const t0 = Date.UTC(2026, 10, 21, 6, 0, 0);
  const stateId = (i: number): string => `0198c7d2-f000-7000-8000-${String(i).padStart(12, '0')}`;
  const flow = { flowRunId: flowId(1), flowRunName: 'crimson-fox', ...EXAMPLE_FLOW };
  prefect.store([
    flowRunStateEvent({ ...flow, state: { type: 'FAILED', name: 'Failed' }, from: 'RUNNING', runCount: 1, occurred: t0 + 2_000, id: stateId(2) }),
    flowRunStateEvent({ ...flow, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 + 1_000, id: stateId(1) }),
    taskRunStateEvent({ taskRunId: taskId(1), taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', ...flow, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: t0 + 1_500, id: stateId(3) }),
  ]);
  const us = (ms: number): number => (t0 + ms) * 1000;
  const failures: unknown[] = [];
  let skipping = false;
  const history = createStateHistoryLookup(createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:pass' }), { skip: () => skipping, onFailure: (f) => failures.push(f) });
  assert.deepEqual(await Promise.all([history({ type: 'flow', id: flowId(1) }), history({ type: 'task', id: taskId(1) })]), [
    [{ id: stateId(1), type: 'RUNNING', timestampUs: us(1_000) }, { id: stateId(2), type: 'FAILED', timestampUs: us(2_000) }],
    [{ id: stateId(3), type: 'COMPLETED', timestampUs: us(1_500) }],
  ]);
  assert.deepEqual(prefect.restRequests.map((q) => `${q.method} ${q.path}`).sort(), [
    `GET /api/flow_run_states/?flow_run_id=${flowId(1)}`, `GET /api/task_run_states/?task_run_id=${taskId(1)}`,
  ]);

  // A failed request, and a web page where the API should be: undefined, reported.
  prefect.switches.restStatus = 500;
  assert.equal(await history({ type: 'flow', id: flowId(1) }), undefined);
  prefect.switches.restStatus = 0;
  prefect.switches.restReplies.push({ status: 404, contentType: 'text/html', body: '<html><body>Not here</body></html>' });
  assert.equal(await history({ type: 'task', id: taskId(1) }), undefined);
  assert.deepEqual(failures, [
    { reason: `GET /flow_run_states/?flow_run_id=${flowId(1)}: HTTP 500`, transport: false },
    { reason: `GET /task_run_states/?task_run_id=${taskId(1)}: HTTP 404, no such route (<html><body>Not here</body></html>)`, transport: false, noApi: true },
  ]);

  // Refused credentials: undefined, to onAuthError and reported.
  const authErrors: string[] = [];
  const wrongFailures: unknown[] = [];
  const wrong = createStateHistoryLookup(createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:wrong' }), { onAuthError: (err) => authErrors.push(err.message), onFailure: (f) => wrongFailures.push(f) });
  assert.equal(await wrong({ type: 'flow', id: flowId(1) }), undefined);
  const refused = `the Prefect API refused GET /flow_run_states/?flow_run_id=${flowId(1)} with HTTP 401: check PREFECT_API_AUTH_STRING`;
  assert.deepEqual({ authErrors, wrongFailures }, { authErrors: [refused], wrongFailures: [{ reason: refused, transport: false }] });

  // Skipping while requests are out and more wait behind them.
  failures.length = 0;
  const before = prefect.restRequests.length;
  prefect.switches.holdRest = true;
  const answered = new Map<number, unknown>();
  const held = Array.from({ length: OWNER_LOOKUPS_IN_FLIGHT + 2 }, (_, i) => history({ type: 'flow', id: flowId(1) }).then((h) => void answered.set(i, h)));
  await until('the requests out', () => prefect.restRequests.length === before + OWNER_LOOKUPS_IN_FLIGHT);
  skipping = true;
  const skipped = history({ type: 'task', id: taskId(1) }).then((h) => void answered.set(-1, h));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual([...answered], [[-1, undefined]], 'answered at once, not queued behind the requests out');
  prefect.switches.holdRest = false;
  await Promise.all([...held, skipped]);
  const states = [{ id: stateId(1), type: 'RUNNING', timestampUs: us(1_000) }, { id: stateId(2), type: 'FAILED', timestampUs: us(2_000) }];
  assert.deepEqual(
    [...answered].sort((a, b) => a[0] - b[0]),
    [[-1, undefined], ...Array.from({ length: OWNER_LOOKUPS_IN_FLIGHT + 2 }, (_, i) => [i, i < OWNER_LOOKUPS_IN_FLIGHT ? states : undefined])],
  );
  assert.deepEqual({ requests: prefect.restRequests.length - before, failures }, { requests: OWNER_LOOKUPS_IN_FLIGHT, failures: [] });
});

test(`deleted flow runs: POST /flow_runs/filter ${MAX_BATCH} at a time, one request after the other; only runs a filter answer leaves out are deleted, never those of a failed request or of a server that refused the filter (a 404 per run may be a proxy's)`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const ids = Array.from({ length: 2 * MAX_BATCH + 20 }, (_, i) => flowId(i));
  ids.forEach((id, i) => {
    if (i % 2 === 0) prefect.addFlowRun({ id });
  });
  const deleted = deletedFlowRunsFromRest(createPrefectRestClient({ apiUrl: prefect.url }));
  assert.deepEqual(await deleted(ids), ids.filter((_, i) => i % 2 === 1));
  assert.deepEqual(
    prefect.restRequests.map((q) => [`${q.method} ${q.path}`, (q.body as { flow_runs: { id: { any_: string[] } } }).flow_runs.id.any_]),
    [ids.slice(0, MAX_BATCH), ids.slice(MAX_BATCH, 2 * MAX_BATCH), ids.slice(2 * MAX_BATCH)].map((batch) => ['POST /api/flow_runs/filter', batch]),
  );
  prefect.switches.restStatus = 500;
  assert.deepEqual(await deleted(ids.slice(0, 3)), []);

  const limited = await startFakePrefect({ defaultLimit: 2 });
  t.after(() => limited.close());
  assert.deepEqual(await deletedFlowRunsFromRest(createPrefectRestClient({ apiUrl: limited.url }))(ids.slice(0, 3)), []);
  assert.deepEqual(limited.restRequests.map((q) => `${q.method} ${q.path}`), ['POST /api/flow_runs/filter', ...ids.slice(0, 3).map((id) => `GET /api/flow_runs/${id}`)]);
});
