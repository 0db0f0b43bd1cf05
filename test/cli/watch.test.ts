import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { startCli } from '../helpers/cli.js';
import { startFakePrefect, startMiniPrefect, type FakePrefect, type TestEvent } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const CHILD = '0198c7d2-7000-7000-8000-0000000000c1';
const TRACK = '0198c7d2-7000-7000-8000-0000000000d1';
const TASK = '0198c7d2-6000-7abc-8def-000000000001';

/**
 * A flow run with a task and an in-process subflow, timed just before now: inside the minute a fresh
 * `watch` subscribes from (its `since`), when made once it has subscribed, however long it took to start.
 */
function scenario(): TestEvent[] {
  const t0 = Date.now() - 30_000;
  const at = (s: number): number => t0 + s * 1000;
  const id = (i: number): string => `0198c7d2-eeee-7000-8000-${String(i).padStart(12, '0')}`;
  const flow = (i: number, s: number, type: string, name: string, from: string | null) =>
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type, name }, from, runCount: 1, occurred: at(s), id: id(i) });
  const task = (i: number, s: number, type: string, name: string, from: string | null) =>
    taskRunStateEvent({ taskRunId: TASK, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b', flowRunId: FR, ...FLOW, state: { type, name }, from, runCount: 1, occurred: at(s), id: id(i) });
  const child = (i: number, s: number, type: string, name: string, from: string | null) =>
    flowRunStateEvent({ flowRunId: CHILD, flowRunName: 'child-run', flowId: '11111111-1111-4111-8111-111111111111', flowName: 'quality-checks', parentTaskRunId: TRACK, parentTaskRunName: 'quality-checks-0', state: { type, name }, from, runCount: 1, occurred: at(s), id: id(i) });
  return [
    flow(1, 0, 'PENDING', 'Pending', null),
    flow(2, 1, 'RUNNING', 'Running', 'PENDING'),
    task(3, 2, 'PENDING', 'Pending', null),
    task(4, 3, 'RUNNING', 'Running', 'PENDING'),
    child(5, 4, 'PENDING', 'Pending', null),
    child(6, 5, 'RUNNING', 'Running', 'PENDING'),
    child(7, 6, 'COMPLETED', 'Completed', 'RUNNING'),
    task(8, 7, 'COMPLETED', 'Completed', 'RUNNING'),
    flow(9, 8, 'COMPLETED', 'Completed', 'RUNNING'),
  ];
}

/** Processes started here: any still running once the tests are done (one failed) is killed, so that the file ends. */
const started = new Set<ReturnType<typeof startCli>['child']>();
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

function start(args: string[], env: Record<string, string>) {
  const run = startCli(args, { PREFECT_OTEL_SETTLE_MS: '100', PREFECT_OTEL_STATE_FLUSH_MS: '200', ...env });
  started.add(run.child);
  return run;
}

/** The CLI's result; should it try the Prefect server more than `attempts` times (a retry loop that would not end), once stopped by SIGTERM. */
async function resultWithin(run: ReturnType<typeof start>, upgrades: () => number, attempts: number) {
  const watchdog = setInterval(() => {
    if (upgrades() > attempts) run.child.kill('SIGTERM');
  }, 25);
  try {
    return await run.result;
  } finally {
    clearInterval(watchdog);
  }
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const shape = (spans: ReceivedSpan[]) =>
  spans
    .map((s) => ({ name: s.name, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId, start: s.startTimeUnixNano, end: s.endTimeUnixNano, status: s.status, events: s.events.map((e) => e.name), attributes: s.attributes }))
    .sort((a, b) => a.spanId.localeCompare(b.spanId));

async function replaySpans(events: TestEvent[], apiUrl: string, extra: Record<string, string> = {}): Promise<ReceivedSpan[]> {
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const file = join(dir, 'events.jsonl');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(file, events.map((e) => JSON.stringify(e)).join('\n'));
  const receiver = await startOtlpReceiver();
  const { result } = start(['replay', file], { PREFECT_API_URL: apiUrl, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ...extra });
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  await receiver.close();
  return receiver.spans();
}

test('watch: handshake with a future until, a dropped socket mid-flow, and the same spans replay gives, each exactly once', async (t) => {
  const prefect = await startMiniPrefect({ authString: 'admin:pass' });
  prefect.addTaskRun({ id: TRACK, flow_run_id: FR, name: 'quality-checks-0' });
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const { child, result } = start([], {
    PREFECT_API_URL: prefect.url, PREFECT_API_AUTH_STRING: 'admin:pass', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(dir, 'state.json'),
  });
  await until('first subscription', () => prefect.connections.some((c) => c.live));
  const events = scenario();
  const filter = prefect.connections[0]!.filters[0] as { filter: { occurred: { until: string } }; backfill: boolean };
  assert.ok(Date.parse(filter.filter.occurred.until) > Date.now() + 300 * 24 * 3600_000, 'until is far in the future');
  assert.equal(prefect.connections[0]!.authToken, 'admin:pass');
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  prefect.publish(events.slice(0, 5));
  // Dropped mid-flow: once the first events are applied (their STLOGGING lines written); the subflow's waits for its parent look-up.
  const applied = events.slice(0, 4).map((e) => `"prefect.event.id":"${e.id}"`);
  await until('the first events applied', () => applied.every((id) => out.includes(id)));
  prefect.dropConnections();
  await until('reconnect', () => prefect.connections.filter((c) => c.live).length === 1 && prefect.connections.length >= 2);
  prefect.publish(events.slice(5));
  await receiver.waitForSpans(3);
  await new Promise((r) => setTimeout(r, 500));
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes('admin:pass') && !r.stdout.includes(Buffer.from('admin:pass').toString('base64')), 'no secret in the log');
  const stopped = r.stdout.split('\n').filter((l) => l.includes('"msg":"stopped"')).map((l) => JSON.parse(l) as { runs: { parentLookups: unknown; pendingLookups: number } });
  assert.deepEqual(stopped.map((l) => [l.runs.parentLookups, l.runs.pendingLookups]), [[{ lookups: 1, found: 1, failed: 0, abandoned: 0 }, 0]], 'the subflow\'s parent looked up once');
  const live = receiver.spans();
  assert.equal(live.length, 3);
  assert.deepEqual(
    live.map((s) => [s.name, s.traceId, s.parentSpanId]).sort(),
    [['etl', traceIdForRun(FR), undefined], ['extract', traceIdForRun(FR), spanIdForRun(FR)], ['quality-checks', traceIdForRun(FR), spanIdForRun(FR)]].sort(),
  );
  assert.deepEqual(shape(live), shape(await replaySpans(events, prefect.url, { PREFECT_API_AUTH_STRING: 'admin:pass' })));
});

test('watch: SIGTERM mid-flow then restart: nothing lost, nothing exported twice', async (t) => {
  const prefect = await startMiniPrefect();
  prefect.addTaskRun({ id: TRACK, flow_run_id: FR });
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') };
  const first = start([], env);
  await until('subscription', () => prefect.connections.some((c) => c.live));
  const events = scenario();
  prefect.publish(events.slice(0, 7));
  await receiver.waitForSpans(1);
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  assert.ok(existsSync(env.PREFECT_OTEL_STATE_FILE));
  const saved = JSON.parse(readFileSync(env.PREFECT_OTEL_STATE_FILE, 'utf8')) as { tracker: { open: { ref: { id: string } }[] } };
  assert.deepEqual(saved.tracker.open.map((r) => r.ref.id).sort(), [FR, TASK].sort());

  const second = start([], env);
  await until('resubscription', () => prefect.connections.filter((c) => c.live).length === 1 && prefect.connections.length >= 2);
  prefect.publish(events.slice(7));
  await receiver.waitForSpans(3);
  await new Promise((r) => setTimeout(r, 500));
  second.child.kill('SIGTERM');
  assert.equal((await second.result).code, 0);
  const spans = receiver.spans();
  assert.equal(spans.length, 3, 'each run exported once across the restart');
  assert.deepEqual(shape(spans), shape(await replaySpans(events, prefect.url)));
});

test("watch: subflows three deep, the middle one's events missed until it ends: the innermost subflow and its task are in the root's trace, found over REST", async (t) => {
  const prefect = await startFakePrefect();
  const id = (kind: number, i: number): string => `0198c7d2-${kind}000-7000-8000-00000000000${i}`;
  const [ROOT, MIDDLE, LEAF, TRACK_MIDDLE, TRACK_LEAF, LEAF_TASK] = [id(1, 1), id(1, 2), id(1, 3), id(2, 2), id(2, 3), id(3, 1)];
  prefect.addTaskRun({ id: TRACK_MIDDLE, flow_run_id: ROOT });
  prefect.addTaskRun({ id: TRACK_LEAF, flow_run_id: MIDDLE });
  prefect.addFlowRun({ id: ROOT, parent_task_run_id: null });
  prefect.addFlowRun({ id: MIDDLE, parent_task_run_id: TRACK_MIDDLE });
  prefect.addFlowRun({ id: LEAF, parent_task_run_id: TRACK_LEAF });
  const t0 = Date.now() - 30_000;
  const flow = (runId: string, name: string, s: number, type: string, from: string, parent?: string) =>
    flowRunStateEvent({ flowRunId: runId, flowRunName: `${name}-run`, ...FLOW, flowName: name, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: t0 + s * 1000, ...(parent === undefined ? {} : { parentTaskRunId: parent }) });
  const task = (s: number, type: string, from: string) =>
    taskRunStateEvent({ taskRunId: LEAF_TASK, taskRunName: 'load-1', taskKey: 'load-55aa66bb', flowRunId: LEAF, flowRunName: 'leaf-run', state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: t0 + s * 1000 });
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const run = start([], { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(mkdtempSync(join(tmpdir(), 'prefect-otel-watch-')), 'state.json') });
  await until('subscription', () => prefect.connections.some((c) => c.live));
  prefect.publish([flow(ROOT, 'root', 0, 'RUNNING', 'PENDING'), flow(LEAF, 'leaf', 2, 'RUNNING', 'PENDING', TRACK_LEAF), task(3, 'RUNNING', 'PENDING'), task(4, 'COMPLETED', 'RUNNING'), flow(LEAF, 'leaf', 5, 'COMPLETED', 'RUNNING', TRACK_LEAF)]);
  await receiver.waitForSpans(2);
  prefect.publish([flow(MIDDLE, 'middle', 6, 'COMPLETED', 'RUNNING', TRACK_MIDDLE), flow(ROOT, 'root', 7, 'COMPLETED', 'RUNNING')]);
  await receiver.waitForSpans(4);
  run.child.kill('SIGTERM');
  assert.equal((await run.result).code, 0);
  assert.deepEqual(
    receiver.spans().map((s) => [s.name, s.traceId, s.parentSpanId]).sort(),
    [
      ['leaf', traceIdForRun(ROOT), spanIdForRun(MIDDLE)],
      ['load', traceIdForRun(ROOT), spanIdForRun(LEAF)],
      ['middle', traceIdForRun(ROOT), spanIdForRun(ROOT)],
      ['root', traceIdForRun(ROOT), undefined],
    ].sort(),
  );
  assert.deepEqual(
    prefect.restRequests.filter((q) => !q.path.includes('/filter')).map((q) => `${q.method} ${q.path}`).sort(),
    [`GET /api/flow_runs/${MIDDLE}`, `GET /api/task_runs/${TRACK_LEAF}`, `GET /api/task_runs/${TRACK_MIDDLE}`].sort(),
  );
});

for (const given of ['PREFECT_API_AUTH_STRING', '--auth-string'] as const) {
  test(`watch: a wrong auth string (${given}) is a clear error naming it as it was given, exit 3, and no reconnect loop`, async () => {
    const prefect = await startMiniPrefect({ authString: 'admin:pass' });
    const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
    const env = { PREFECT_API_URL: prefect.url, OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') };
    const { result } = given === '--auth-string' ? start(['--auth-string', 'admin:wrong'], env) : start([], { ...env, PREFECT_API_AUTH_STRING: 'admin:wrong' });
    const r = await result;
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, new RegExp(`check ${given}`));
    assert.ok(!`${r.stdout}${r.stderr}`.includes('admin:wrong'));
    assert.equal(prefect.connections.length, 1);
    // One cause, one line at error or above: the subscriber leaves the report to whoever stops on it.
    const severe = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => (l.level as number) >= 50);
    assert.deepEqual(
      severe.map(({ level, component, code, setting, msg }) => ({ level, component, code, setting, msg })),
      [{ level: 60, component: 'watch', code: 'PREFECT_OTEL_AUTH', setting: 'PREFECT_API_AUTH_STRING', msg: `the Prefect event stream refused authentication (close 1008: Invalid token): check ${given}` }],
    );
    await prefect.close();
  });
}

// Two ways the handshake is answered in no Prefect form, each given up after three tries in a row.
const handshakeFaults: { name: string; fault: (prefect: FakePrefect) => void; stderr: string }[] = [
  {
    name: 'a proxy or ingress that drops the websocket sub-protocol header from the upgrade answer: three tries, then exit 1 with the cause on standard error',
    fault: (prefect) => void (prefect.switches.stripSubprotocol = Infinity),
    stderr:
      'prefect-otel: the event stream\'s websocket upgrade was answered without the sub-protocol "prefect" (no Sec-WebSocket-Protocol header in the HTTP 101 answer): a proxy or ingress in front of the Prefect server drops that header; it must pass Sec-WebSocket-Protocol through, on the request and on the answer\n',
  },
  {
    name: "a reply to the auth message that is not Prefect's (a proxy's error page) is no refused credentials: three tries, then exit 1 quoting it",
    fault: (prefect) => void (prefect.switches.authReplies = Array.from({ length: 3 }, () => '<html><body>502 Bad Gateway</body></html>')),
    stderr:
      'prefect-otel: the Prefect event stream answered the auth message with something other than Prefect\'s protocol (expected {"type":"auth_success"}, got "<html><body>502 Bad Gateway</body></html>")\n',
  },
];

for (const { name, fault, stderr } of handshakeFaults) {
  test(`watch: ${name}`, async (t) => {
    const prefect = await startFakePrefect({ authString: 'admin:pass' });
    t.after(() => prefect.close());
    fault(prefect);
    const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
    const r = await resultWithin(start([], { PREFECT_API_URL: prefect.url, PREFECT_API_AUTH_STRING: 'admin:pass', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') }), () => prefect.upgrades.length, 3);
    assert.deepEqual({ code: r.code, stderr: r.stderr, upgrades: prefect.upgrades.length }, { code: 1, stderr, upgrades: 3 });
  });
}

test('watch: PREFECT_API_REQUEST_TIMEOUT bounds a run look-up: one the server holds fails after it, the span goes out without the link, and the debug line names the timeout', async (t) => {
  const prefect = await startFakePrefect();
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    prefect.switches.holdRest = false;
    await receiver.close();
    await prefect.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const t0 = Date.now() - 30_000;
  const events = [
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'run-1', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0, id: '0198c7d2-ffff-7000-8000-000000000001' }),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'run-1', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: t0 + 1_000, id: '0198c7d2-ffff-7000-8000-000000000002' }),
  ];
  const { child, result } = start([], {
    PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_API_REQUEST_TIMEOUT: '0.3',
    PREFECT_OTEL_STATE_FILE: join(dir, 'state.json'), PREFECT_OTEL_LOG_LEVEL: 'debug',
  });
  await until('subscription', () => prefect.connections.some((c) => c.live));
  prefect.switches.holdRest = true;
  prefect.publish(events);
  await receiver.waitForSpans(1);
  prefect.switches.holdRest = false;
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(receiver.spans().map((s) => [s.attributes['prefect.run.id'], s.links]), [[FR, []]]);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    lines.filter((l) => String(l.msg).includes("Prefect's own span")).map((l) => ({ run: l['prefect.run.id'], outcome: l.outcome, reason: l.reason })),
    [{ run: FR, outcome: 'failed', reason: 'POST /flow_runs/filter failed: timed out after 300 ms' }],
  );
  assert.deepEqual(lines.filter((l) => l.msg === 'stopped').map((l) => (l.runs as { nativeSpans: unknown }).nativeSpans), [{ lookups: 1, linked: 0, noLabel: 0, failed: 1, late: 0 }]);
});

test("watch: a flow run's REST __OTEL_TRACEPARENT label becomes exactly one link; no label, a 404 or a held lookup give none, and the traces are otherwise those of a replay without REST", async (t) => {
  const prefect = await startFakePrefect({ authString: 'admin:pass' });
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const runId = (i: number): string => `0198c7d2-8000-7000-8000-${String(i).padStart(12, '0')}`;
  const [LINKED, NO_LABEL, MISSING, HELD] = [runId(1), runId(2), runId(3), runId(4)];
  const NATIVE = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' };
  const traceparent = `00-${NATIVE.traceId}-${NATIVE.spanId}-01`;
  // As the server has them: created when scheduled; MISSING was never stored (404). HELD has a label, but its answer comes late.
  prefect.addFlowRun({ id: LINKED, name: 'linked-run', flow_id: FLOW.flowId });
  prefect.addFlowRun({ id: NO_LABEL, name: 'plain-run', flow_id: FLOW.flowId });
  prefect.addFlowRun({ id: HELD, name: 'held-run', flow_id: FLOW.flowId, labels: { __OTEL_TRACEPARENT: '00-11111111111111111111111111111111-2222222222222222-01' } });
  /** The flow runs asked for so far, in the order asked. */
  const lookedUp = (): string[] =>
    prefect.restRequests.filter((q) => q.path === '/api/flow_runs/filter').flatMap((q) => (q.body as { flow_runs: { id: { any_: string[] } } }).flow_runs.id.any_);

  const t0 = Date.now() - 30_000; // inside the 60 s a fresh subscription looks back
  let seq = 0;
  const id = (): string => `0198c7d2-ffff-7000-8000-${String(++seq).padStart(12, '0')}`;
  const flowRun = (fr: string, s: number, type: string, name: string, from: string | null) =>
    flowRunStateEvent({ flowRunId: fr, flowRunName: `run-${fr.slice(-1)}`, ...FLOW, state: { type, name }, from, runCount: 1, occurred: t0 + s * 1000, id: id() });
  const taskRun = (fr: string, s: number, type: string, name: string, from: string | null) =>
    taskRunStateEvent({ taskRunId: fr.replace('8000-7000', '6000-7000'), taskRunName: 'extract-3f2', taskKey: 'extract-9a8b', flowRunId: fr, ...FLOW, state: { type, name }, from, runCount: 1, occurred: t0 + s * 1000, id: id() });
  const before = (fr: string) => [flowRun(fr, 0, 'PENDING', 'Pending', null)];
  const after = (fr: string) => [
    flowRun(fr, 1, 'RUNNING', 'Running', 'PENDING'),
    taskRun(fr, 2, 'PENDING', 'Pending', null),
    taskRun(fr, 3, 'RUNNING', 'Running', 'PENDING'),
    taskRun(fr, 4, 'COMPLETED', 'Completed', 'RUNNING'),
    flowRun(fr, 5, 'COMPLETED', 'Completed', 'RUNNING'),
  ];
  const runs = { [LINKED]: [...before(LINKED), ...after(LINKED)], [NO_LABEL]: [...before(NO_LABEL), ...after(NO_LABEL)], [MISSING]: [...before(MISSING), ...after(MISSING)] };

  const { child, result } = start([], {
    PREFECT_API_URL: prefect.url, PREFECT_API_AUTH_STRING: 'admin:pass', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    PREFECT_OTEL_STATE_FILE: join(dir, 'state.json'), PREFECT_OTEL_LOG_LEVEL: 'debug',
  });
  await until('subscription', () => prefect.connections.some((c) => c.live));
  prefect.publish(runs[LINKED]!.slice(0, 1));
  // The flow process starts Prefect's own span and PATCHes its traceparent before it proposes Running.
  const patched = await fetch(`${prefect.url}/flow_runs/${LINKED}/labels`, {
    method: 'PATCH', headers: { authorization: `Basic ${Buffer.from('admin:pass').toString('base64')}`, 'content-type': 'application/json' }, body: JSON.stringify({ __OTEL_TRACEPARENT: traceparent }),
  });
  assert.equal(patched.status, 204);
  prefect.publish([...runs[LINKED]!.slice(1), ...runs[NO_LABEL]!, ...runs[MISSING]!]);
  await receiver.waitForSpans(6);

  // A lookup that does not answer: the span still goes out (without the link) while the request is held.
  prefect.switches.holdRest = true;
  const held = [...before(HELD), ...after(HELD)];
  prefect.publish(held);
  await receiver.waitForSpans(8); // only this test releases the held answer, below
  while (!lookedUp().includes(HELD)) await new Promise((r) => setTimeout(r, 10));
  prefect.switches.holdRest = false;
  await new Promise((r) => setTimeout(r, 300));
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);

  const spans = receiver.spans();
  assert.equal(spans.length, 8, 'each run exported once; the late answer adds nothing');
  assert.deepEqual(
    Object.fromEntries(spans.map((s) => [s.attributes['prefect.run.id'] as string, s.links])),
    {
      // Sampled (the label's flags 01), a remote context: OTLP Link.flags 0x01 | 0x100 | 0x200.
      [LINKED]: [{ ...NATIVE, attributes: { 'prefect.link.kind': 'prefect_native_span' }, flags: 0x301 }],
      ...Object.fromEntries([NO_LABEL, MISSING, HELD].map((fr) => [fr, []])),
      ...Object.fromEntries([LINKED, NO_LABEL, MISSING, HELD].map((fr) => [fr.replace('8000-7000', '6000-7000'), []])),
    },
  );
  // One lookup per flow run attempt, none for task runs, all through the filter (the PATCH is the flow process's).
  assert.deepEqual(new Set(prefect.restRequests.map((q) => `${q.method} ${q.path}`)), new Set(['POST /api/flow_runs/filter', `PATCH /api/flow_runs/${LINKED}/labels`]));
  assert.deepEqual(lookedUp().sort(), [LINKED, NO_LABEL, MISSING, HELD].sort());
  const debug = r.stdout.split('\n').filter((l) => l.includes('flow run')).map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    debug.filter((l) => l.level === 20 && String(l.msg).includes("Prefect's own span")).map((l) => [l['prefect.run.id'], l.outcome]).sort(),
    [[MISSING, 'failed'], [NO_LABEL, 'no_label'], [HELD, 'late']].sort(),
  );
  const stopped = r.stdout.split('\n').filter((l) => l.includes('"msg":"stopped"')).map((l) => JSON.parse(l) as { runs: { nativeSpans: unknown } });
  assert.deepEqual(stopped.map((l) => l.runs.nativeSpans), [{ lookups: 4, linked: 1, noLabel: 1, failed: 1, late: 1 }]);
  assert.ok(!r.stdout.includes('admin:pass') && !r.stdout.includes(Buffer.from('admin:pass').toString('base64')), 'no secret in the log');

  // Everything but the links is what a replay of the same events gives with no Prefect REST at all.
  const replayed = await replaySpans([...Object.values(runs).flat(), ...held], 'http://127.0.0.1:9/api');
  assert.deepEqual(replayed.map((s) => s.links), Array<unknown[]>(8).fill([]));
  assert.deepEqual(shape(spans), shape(replayed));
});

test('watch: a flow run the scheduler made (first seen Pending from Scheduled, or Late) waits from when it was due, its expected_start_time read with the flow run lookup', async (t) => {
  const prefect = await startFakePrefect();
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const [ON_TIME, LATE] = ['0198c7d2-8100-7000-8000-000000000001', '0198c7d2-8100-7000-8000-000000000002'];
  const t0 = Date.now() - 40_000; // inside the 60 s a fresh subscription looks back
  const isoAt = (s: number): string => new Date(t0 + s * 1000).toISOString().replace('Z', '000+00:00');
  // As the scheduler inserts them: Scheduled, due at 0 s, with no event.
  for (const fr of [ON_TIME, LATE]) prefect.addFlowRun({ id: fr, name: `run-${fr.slice(-1)}`, flow_id: FLOW.flowId, expected_start_time: isoAt(0) });
  let seq = 0;
  const flowRun = (fr: string, s: number, type: string, name: string, from: string | null) =>
    flowRunStateEvent({ flowRunId: fr, flowRunName: `run-${fr.slice(-1)}`, ...FLOW, state: { type, name }, from, runCount: type === 'SCHEDULED' || type === 'PENDING' ? 0 : 1, occurred: t0 + s * 1000, id: `0198c7d2-ffff-7100-8000-${String(++seq).padStart(12, '0')}` });
  const { child, result } = start([], { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') });
  await until('subscription', () => prefect.connections.some((c) => c.live));
  prefect.publish([
    flowRun(ON_TIME, 2, 'PENDING', 'Pending', 'SCHEDULED'), flowRun(ON_TIME, 3, 'RUNNING', 'Running', 'PENDING'), flowRun(ON_TIME, 5, 'COMPLETED', 'Completed', 'RUNNING'),
    flowRun(LATE, 15, 'SCHEDULED', 'Late', 'SCHEDULED'), flowRun(LATE, 21.5, 'PENDING', 'Pending', 'SCHEDULED'), flowRun(LATE, 22, 'RUNNING', 'Running', 'PENDING'), flowRun(LATE, 25, 'COMPLETED', 'Completed', 'RUNNING'),
  ]);
  await receiver.waitForSpans(2);
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  const byRun = Object.fromEntries(receiver.spans().map((s) => [s.attributes['prefect.run.id'] as string, s]));
  const attributes = (fr: string, waitMs: number) => ({
    'prefect.run.id': fr, 'prefect.run.type': 'flow', 'prefect.run.name': `run-${fr.slice(-1)}`, 'prefect.run.count': 1,
    'prefect.state.type': 'COMPLETED', 'prefect.state.name': 'Completed', 'prefect.tags': [], 'prefect.flow.name': FLOW.flowName, 'prefect.flow.id': FLOW.flowId,
    'prefect.run.wait_ms': waitMs, 'cicd.pipeline.name': FLOW.flowName, 'cicd.pipeline.run.id': fr, 'cicd.pipeline.result': 'success',
  });
  assert.deepEqual(
    { onTime: byRun[ON_TIME]!.attributes, late: byRun[LATE]!.attributes, events: [ON_TIME, LATE].map((fr) => byRun[fr]!.events.map((e) => e.name)) },
    { onTime: attributes(ON_TIME, 2_000), late: attributes(LATE, 21_500), events: [['Pending', 'Running', 'Completed'], ['Late', 'Pending', 'Running', 'Completed']] },
  );
});
