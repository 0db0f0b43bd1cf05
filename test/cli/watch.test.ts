import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { startCli } from '../helpers/cli.js';
import { startMiniPrefect, type TestEvent } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const CHILD = '0198c7d2-7000-7000-8000-0000000000c1';
const TRACK = '0198c7d2-7000-7000-8000-0000000000d1';
const TASK = '0198c7d2-6000-7abc-8def-000000000001';

/** A flow run with a task and an in-process subflow, timed just before now (inside Prefect's backfill window). */
function scenario(): TestEvent[] {
  const t0 = Date.now() - 60_000;
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

function start(args: string[], env: Record<string, string>) {
  return startCli(args, { PREFECT_OTEL_SETTLE_MS: '100', PREFECT_OTEL_STATE_FLUSH_MS: '200', ...env });
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

test('watch: handshake with a future until, a dropped socket mid-flow, and the same spans replay gives, each exactly once', async () => {
  const prefect = await startMiniPrefect({ authString: 'admin:pass' });
  prefect.addTaskRun({ id: TRACK, flow_run_id: FR, name: 'quality-checks-0' });
  const receiver = await startOtlpReceiver();
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const events = scenario();
  const { child, result } = start([], {
    PREFECT_API_URL: prefect.url, PREFECT_API_AUTH_STRING: 'admin:pass', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(dir, 'state.json'),
  });
  await until('first subscription', () => prefect.connections.some((c) => c.live));
  const filter = prefect.connections[0]!.filters[0] as { filter: { occurred: { until: string } }; backfill: boolean };
  assert.ok(Date.parse(filter.filter.occurred.until) > Date.now() + 300 * 24 * 3600_000, 'until is far in the future');
  assert.equal(prefect.connections[0]!.authToken, 'admin:pass');
  prefect.publish(events.slice(0, 5));
  await until('events delivered', () => child.stdout!.readableLength >= 0 && prefect.connections.length >= 1);
  await new Promise((r) => setTimeout(r, 300));
  prefect.dropConnections();
  await until('reconnect', () => prefect.connections.filter((c) => c.live).length === 1 && prefect.connections.length >= 2);
  prefect.publish(events.slice(5));
  await receiver.waitForSpans(3);
  await new Promise((r) => setTimeout(r, 500));
  child.kill('SIGTERM');
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes('admin:pass') && !r.stdout.includes(Buffer.from('admin:pass').toString('base64')), 'no secret in the log');
  const live = receiver.spans();
  assert.equal(live.length, 3);
  assert.deepEqual(
    live.map((s) => [s.name, s.traceId, s.parentSpanId]).sort(),
    [['etl', traceIdForRun(FR), undefined], ['extract', traceIdForRun(FR), spanIdForRun(FR)], ['quality-checks', traceIdForRun(FR), spanIdForRun(FR)]].sort(),
  );
  assert.deepEqual(shape(live), shape(await replaySpans(events, prefect.url, { PREFECT_API_AUTH_STRING: 'admin:pass' })));
  await receiver.close();
  await prefect.close();
});

test('watch: SIGTERM mid-flow then restart: nothing lost, nothing exported twice', async () => {
  const prefect = await startMiniPrefect();
  prefect.addTaskRun({ id: TRACK, flow_run_id: FR });
  const receiver = await startOtlpReceiver();
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const env = { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') };
  const events = scenario();
  const first = start([], env);
  await until('subscription', () => prefect.connections.some((c) => c.live));
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
  await receiver.close();
  await prefect.close();
});

test('watch: a wrong auth string is a clear error, exit 3, and no reconnect loop', async () => {
  const prefect = await startMiniPrefect({ authString: 'admin:pass' });
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-watch-'));
  const { result } = start([], { PREFECT_API_URL: prefect.url, PREFECT_API_AUTH_STRING: 'admin:wrong', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') });
  const r = await result;
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /PREFECT_API_AUTH_STRING/);
  assert.ok(!`${r.stdout}${r.stderr}`.includes('admin:wrong'));
  assert.equal(prefect.connections.length, 1);
  await prefect.close();
});
