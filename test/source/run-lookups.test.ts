/**
 * The flow run owning each task run (a subflow's parent) over loopback against the fake Prefect
 * server: one GET per task run with a bound on requests out, runs it does not have, refused
 * credentials, and a caller that stops asking.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPrefectRestClient } from '../../src/source/rest.js';
import { createOwnerLookup, OWNER_LOOKUPS_IN_FLIGHT } from '../../src/source/run-lookups.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';

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
  prefect.switches.restStatus = 503;
  assert.equal(await owner(taskId(1)), null);
  prefect.switches.restStatus = 0;
  const before = prefect.restRequests.length;
  skipping = true;
  assert.equal(await owner(taskId(1)), null);
  assert.equal(prefect.restRequests.length, before, 'nothing asked while skipping');
  assert.deepEqual(failures, [
    { reason: `GET /task_runs/${taskId(2)}: not found`, transport: false },
    { reason: `GET /task_runs/${taskId(1)}: HTTP 503`, transport: false },
  ]);
});
