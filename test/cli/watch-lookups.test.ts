/**
 * Subflow parent look-ups in the Prefect API, end to end: a subflow whose parent cannot be looked up
 * becomes the root of its own trace and the log says why (the API's answer, beside the line that
 * names the subflow); one first seen through an event that names no tracking task is asked for it.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { customEvent, flowRunStateEvent } from '../helpers/prefect-events.js';
import { liveConnections, logLines, startServers, startWatch, tempDir, until } from '../helpers/watch-e2e.js';
import { errMessage } from '../helpers/log-err.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'quality-checks' };
const SUB = '0198c7d2-5b1e-7a3c-9f10-0000000000b1';
const TRACKING = '0198c7d2-6000-7abc-8def-0000000000b2';

test('watch: a subflow parent look-up the Prefect API answers with an error is logged with that answer, beside the subflow that became a root', async (t) => {
  // The server does not know the tracking task run: GET /task_runs/{id} answers 404.
  const { prefect, receiver } = await startServers(t);
  const { child, result } = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_LOG_LEVEL: 'info' }, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  const t0 = Date.now();
  const sub = (type: string, name: string, from: string | null, s: number) =>
    flowRunStateEvent({ flowRunId: SUB, flowRunName: 'calm-owl', ...FLOW, parentTaskRunId: TRACKING, state: { type, name }, from, runCount: 1, occurred: t0 + s * 1000 });
  prefect.publish([sub('RUNNING', 'Running', 'PENDING', 0), sub('COMPLETED', 'Completed', 'RUNNING', 1)]);
  await receiver.waitForSpans(1);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  const said = logLines(r.stdout)
    .filter((l) => l.level === 40 && (l.component === 'source' || l.component === 'model'))
    .map((l) => ({ component: l.component, msg: l.msg, err: errMessage(l.err), run: l['prefect.run.id'], parent: l['prefect.parent_task_run.id'] }));
  assert.deepEqual(said, [
    { component: 'source', msg: 'run look-up in the Prefect API failed', err: `GET /task_runs/${TRACKING}: not found`, run: undefined, parent: undefined },
    { component: 'model', msg: 'parent of a subflow could not be looked up; it becomes the root of its own trace', err: undefined, run: SUB, parent: TRACKING },
  ]);
});

test('watch: credentials refused to a subflow parent look-up stop it (exit 3) and the look-up is asked again on the next start, which puts the subflow in its root\'s trace', async (t) => {
  const ROOT = '0198c7d2-5b1e-7a3c-9f10-0000000000a1';
  const ROOT_FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5e', flowName: 'nightly' };
  const { prefect, receiver } = await startServers(t, [{ id: TRACKING, flow_run_id: ROOT, name: 'quality-checks-0', task_key: 'quality-checks-1a2b' }]);
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json') };
  const t0 = Date.now() - 3_000;
  const root = (type: string, name: string, from: string | null, s: number) =>
    flowRunStateEvent({ flowRunId: ROOT, flowRunName: 'brave-lynx', ...ROOT_FLOW, state: { type, name }, from, runCount: 1, occurred: t0 + s * 100 });
  const sub = (type: string, name: string, from: string | null, s: number) =>
    flowRunStateEvent({ flowRunId: SUB, flowRunName: 'calm-owl', ...FLOW, parentTaskRunId: TRACKING, state: { type, name }, from, runCount: 1, occurred: t0 + s * 100 });

  const first = startWatch(env, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  // Credentials the REST API no longer takes (a key rotated), while the open socket streams on.
  prefect.switches.restStatus = 401;
  prefect.publish([root('RUNNING', 'Running', 'PENDING', 0), sub('RUNNING', 'Running', 'PENDING', 1)]);
  const stopped = await first.result;
  assert.equal(stopped.code, 3, stopped.stderr);
  assert.deepEqual(logLines(stopped.stdout).filter((l) => l.msg === 'parent of a subflow could not be looked up; it becomes the root of its own trace'), []);

  prefect.switches.restStatus = 0;
  const second = startWatch(env, t);
  await until('the second subscription', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
  prefect.publish([sub('COMPLETED', 'Completed', 'RUNNING', 2), root('COMPLETED', 'Completed', 'RUNNING', 3)]);
  await receiver.waitForSpans(2);
  second.child.kill('SIGTERM');
  assert.equal((await second.result).code, 0);
  const traceId = ROOT.replace(/-/g, '');
  assert.deepEqual(
    receiver.spans().map((s) => ({ name: s.name, traceId: s.traceId, parent: s.parentSpanId ?? null, incomplete: s.attributes['prefect.run.incomplete'] ?? false })).sort((a, b) => a.name.localeCompare(b.name)),
    [
      { name: 'nightly', traceId, parent: null, incomplete: false },
      { name: 'quality-checks', traceId, parent: spanIdForRun(ROOT), incomplete: false },
    ],
  );
});

test('watch started in the middle of a subflow: a child flow run first seen through its heartbeat (which names no tracking task) is asked for its parent and hangs under it in the parent\'s trace, not a root of its own', async (t) => {
  const PARENT = '0198c7d2-5b1e-7a3c-9f10-0000000000c1';
  const CHILD = '0198c7d2-5b1e-7a3c-9f10-0000000000c2';
  const TRACK = '0198c7d2-6000-7abc-8def-0000000000c3';
  const { prefect, receiver } = await startServers(t, [{ id: TRACK, flow_run_id: PARENT }]);
  prefect.addFlowRun({ id: PARENT, parent_task_run_id: null });
  prefect.addFlowRun({ id: CHILD, parent_task_run_id: TRACK });
  const { child, result } = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_LOG_LEVEL: 'info' }, t);
  await until('subscription', () => liveConnections(prefect) === 1);
  const t0 = Date.now();
  const flow = (runId: string, name: string, s: number, type: string, from: string, tracking?: string) =>
    flowRunStateEvent({ flowRunId: runId, flowRunName: `${name}-run`, flowId: FLOW.flowId, flowName: name, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: t0 + s * 1000, ...(tracking === undefined ? {} : { parentTaskRunId: tracking }) });
  const heartbeat = customEvent({
    event: 'prefect.flow-run.heartbeat', resourceId: `prefect.flow-run.${CHILD}`, resourceName: 'child-run', occurred: t0 + 30_000,
    related: [{ id: `prefect.flow.${FLOW.flowId}`, role: 'flow', name: 'child' }],
  });
  prefect.publish([
    flow(PARENT, 'parent', 1, 'RUNNING', 'PENDING'),
    heartbeat,
    flow(CHILD, 'child', 40, 'COMPLETED', 'RUNNING', TRACK),
    flow(PARENT, 'parent', 50, 'COMPLETED', 'RUNNING'),
  ]);
  await receiver.waitForSpans(2);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(
    receiver.spans().map((s) => ({ name: s.name, kind: s.kind, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId, parentTask: s.attributes['prefect.parent_task_run.id'] })).sort((a, b) => a.name.localeCompare(b.name)),
    [
      { name: 'child', kind: 1, traceId: traceIdForRun(PARENT), spanId: spanIdForRun(CHILD), parentSpanId: spanIdForRun(PARENT), parentTask: TRACK },
      { name: 'parent', kind: 2, traceId: traceIdForRun(PARENT), spanId: spanIdForRun(PARENT), parentSpanId: undefined, parentTask: undefined },
    ],
  );
  assert.deepEqual(logLines(r.stdout).filter((l) => (l.level ?? 0) >= 40), []);
});
