/**
 * The flow run owning each task run (a subflow's parent), looked up in batches over loopback
 * against the fake Prefect server: shared requests, runs it does not have, refused credentials, and
 * a caller that stops asking.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrefectRestClient } from '../../src/source/rest.js';
import { createOwnerLookup, MAX_BATCH } from '../../src/source/run-lookups.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';

const taskId = (i: number): string => `0198c7d2-6000-7000-8000-${String(i).padStart(12, '0')}`;
const flowId = (i: number): string => `0198c7d2-8000-7000-8000-${String(i).padStart(12, '0')}`;
const asked = (r: { body?: unknown }): string[] => (r.body as { task_runs: { id: { any_: string[] } } }).task_runs.id.any_;

test(`owners of task runs: up to ${MAX_BATCH} per POST /task_runs/filter; a task run outside a flow or unknown to the server has none`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const n = MAX_BATCH + 3;
  for (let i = 0; i < n - 1; i++) prefect.addTaskRun({ id: taskId(i), flow_run_id: i === 1 ? null : flowId(i) });
  const owner = createOwnerLookup(createPrefectRestClient({ apiUrl: prefect.url }));
  const owners = await Promise.all(Array.from({ length: n }, (_, i) => owner(taskId(i))));
  assert.deepEqual(owners, Array.from({ length: n }, (_, i) => (i === 1 || i === n - 1 ? null : flowId(i))));
  const ids = Array.from({ length: n }, (_, i) => taskId(i));
  assert.deepEqual(prefect.restRequests.map(asked), [ids.slice(0, MAX_BATCH), ids.slice(MAX_BATCH)]);
});

test('owners: refused credentials reach onAuthError and answer null; while `skip` holds nothing is asked; failures are reported', async (t) => {
  const prefect = await startFakePrefect({ authString: 'admin:pass' });
  t.after(() => prefect.close());
  prefect.addTaskRun({ id: taskId(1), flow_run_id: flowId(1) });
  const authErrors: string[] = [];
  const wrong = createOwnerLookup(createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:wrong' }), { onAuthError: (err) => authErrors.push(err.message) });
  assert.deepEqual(await Promise.all([wrong(taskId(1)), wrong(taskId(2))]), [null, null]);
  assert.deepEqual(authErrors, ['the Prefect API refused POST /task_runs/filter with HTTP 401: check PREFECT_API_AUTH_STRING']);
  assert.ok(authErrors.every((m) => !m.includes('admin:wrong')));

  let skipping = false;
  const failures: unknown[] = [];
  const rest = createPrefectRestClient({ apiUrl: prefect.url, authString: 'admin:pass' });
  const owner = createOwnerLookup(rest, { skip: () => skipping, onFailure: (f) => failures.push(f) });
  assert.deepEqual(await Promise.all([owner(taskId(1)), owner(taskId(2))]), [flowId(1), null]);
  prefect.switches.restStatus = 503;
  assert.equal(await owner(taskId(1)), null);
  prefect.switches.restStatus = 0;
  const before = prefect.restRequests.length;
  skipping = true;
  assert.equal(await owner(taskId(1)), null);
  assert.equal(prefect.restRequests.length, before, 'nothing asked while skipping');
  assert.deepEqual(failures, [
    { ok: false, reason: `POST /task_runs/filter: task run ${taskId(2)} not found`, transport: false },
    { ok: false, reason: 'POST /task_runs/filter: HTTP 503', transport: false },
  ]);
});
