/**
 * Prefect deletes a deployment's scheduled runs that have not started, without an event, when the
 * deployment is redeployed, paused or deleted. A flow run seen Scheduled (or Late) that has waited an
 * open-run timeout without starting is looked up: one the server no longer has is forgotten
 * without a span; one it still has keeps waiting and is asked about again after another timeout.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { flowRunStateEvent } from '../helpers/prefect-events.js';
import { liveConnections, logLines, startServers, startWatch, tempDir, until } from '../helpers/watch-e2e.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const GONE = '0198c7d2-5b1e-7a3c-9f10-0000000000a1';
const LATE = '0198c7d2-5b1e-7a3c-9f10-0000000000a2';
const KEPT = '0198c7d2-5b1e-7a3c-9f10-0000000000a3';
const MOVED = '0198c7d2-5b1e-7a3c-9f10-0000000000a4';
const RAN = '0198c7d2-5b1e-7a3c-9f10-0000000000a5';

const state = (run: string, at: number, type: string, name: string, runCount = 0) =>
  flowRunStateEvent({ flowRunId: run, flowRunName: `run-${run.slice(-2)}`, ...FLOW, state: { type, name }, from: null, runCount, occurred: at });

const filterIds = (body: unknown): string[] => [...((body as { flow_runs: { id: { any_: string[] } } }).flow_runs.id.any_)].sort();

test('watch: scheduled flow runs that waited an open-run timeout are looked up in one request; those Prefect deleted are forgotten without a span, counted and logged once; the others keep waiting, in the state file too, and are asked about again', async (t) => {
  const { prefect, receiver } = await startServers(t);
  // The server still has KEPT (Scheduled) and MOVED (started meanwhile, its events still to come); GONE and LATE were deleted.
  prefect.addFlowRun({ id: KEPT, state_type: 'SCHEDULED', state_name: 'Scheduled' });
  prefect.addFlowRun({ id: MOVED, state_type: 'PENDING', state_name: 'Pending' });
  const statePath = join(tempDir(), 'state.json');
  // Runs seen within a tenth of the timeout of each other are asked about together: 200 ms, room
  // for a busy machine to take the seven frames of one burst.
  const { child: proc, result } = startWatch({
    PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: statePath,
    PREFECT_OTEL_OPEN_RUN_TIMEOUT_MS: '2000', PREFECT_OTEL_LOG_LEVEL: 'info',
  }, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  const t0 = Date.now();
  prefect.publish([
    state(GONE, t0, 'SCHEDULED', 'Scheduled'),
    state(LATE, t0, 'SCHEDULED', 'Late'),
    state(KEPT, t0, 'SCHEDULED', 'Scheduled'),
    state(MOVED, t0, 'SCHEDULED', 'Scheduled'),
    state(RAN, t0, 'SCHEDULED', 'Scheduled'),
    state(RAN, t0 + 10, 'RUNNING', 'Running', 1),
    state(RAN, t0 + 20, 'COMPLETED', 'Completed', 1),
  ]);
  const filters = () => prefect.restRequests.filter((r) => r.method === 'POST' && r.path.endsWith('/flow_runs/filter') && filterIds(r.body).includes(KEPT));
  await until('two look-ups of the waiting runs', () => filters().length >= 2);
  proc.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);

  // One request for the four waiting runs, then one for the two the server still has.
  assert.deepEqual(filters().slice(0, 2).map((q) => filterIds(q.body)), [[GONE, LATE, KEPT, MOVED].sort(), [KEPT, MOVED].sort()]);
  assert.deepEqual(receiver.spans().map((s) => s.attributes['prefect.run.id']), [RAN]);
  const lines = logLines(r.stdout);
  assert.deepEqual(lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('no longer in Prefect')).map((l) => ({ level: l.level, count: l.count, flowRunIds: (l.flowRunIds as string[] | undefined)?.slice().sort() })), [{ level: 30, count: 2, flowRunIds: [GONE, LATE].sort() }]);
  const stopped = lines.find((l) => l.msg === 'stopped') as { runs: { open: number; deletedScheduled: number; incomplete: number } } | undefined;
  assert.deepEqual({ open: stopped?.runs.open, deletedScheduled: stopped?.runs.deletedScheduled, incomplete: stopped?.runs.incomplete }, { open: 2, deletedScheduled: 2, incomplete: 0 });
  const saved = JSON.parse(readFileSync(statePath, 'utf8')) as { tracker: { open: { ref: { id: string } }[] } };
  assert.deepEqual(saved.tracker.open.map((o) => o.ref.id).sort(), [KEPT, MOVED].sort());
});
