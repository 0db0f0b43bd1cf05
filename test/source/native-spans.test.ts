/**
 * The flow-run lookup of Prefect's own span over loopback, against the fake Prefect server: batches
 * of runs per request, the bound on requests in flight, skipped lookups, a server that refuses the
 * filter, and the pause after repeated connection failures.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';
import { BREAKER_FAILURES, createNativeSpanLookup, GATHER_MS, MAX_BATCH, MAX_IN_FLIGHT, MAX_QUEUED, nativeSpanFromRest } from '../../src/source/native-spans.js';
import { createPrefectRestClient } from '../../src/source/rest.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';

const runId = (i: number): string => `0198c7d2-8000-7000-8000-${String(i).padStart(12, '0')}`;
const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

const silent = createLogger({ level: 'silent', format: 'json' });
const filterIds = (r: { body?: unknown }): string[] => (r.body as { flow_runs: { id: { any_: string[] } } }).flow_runs.id.any_;

test(`lookups share requests: ${MAX_BATCH} flow runs per POST /flow_runs/filter, ${MAX_IN_FLIGHT} requests at a time; one no longer wanted is never asked`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const asked = 2 * MAX_BATCH + 21;
  // The last run is not on the server; the one before it is no longer wanted by the time its batch goes.
  for (let i = 0; i < asked - 1; i++) prefect.addFlowRun({ id: runId(i), labels: i % 2 === 0 ? { __OTEL_TRACEPARENT: TP } : {} });
  const answers = new Map<string, unknown>();
  const unwanted = runId(asked - 2);
  const lookup = createNativeSpanLookup({
    fetch: nativeSpanFromRest(createPrefectRestClient({ apiUrl: prefect.url })),
    wanted: (id) => id !== unwanted,
    answer: (id, attempt, a) => (answers.set(`${id}/${attempt}`, a), 'linked'),
    logger: silent,
  });
  prefect.switches.holdRest = true;
  const all = Array.from({ length: asked }, (_, i) => lookup(runId(i), 0));
  while (prefect.restRequests.length < MAX_IN_FLIGHT) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 100));
  const ids = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => runId(from + i));
  assert.deepEqual(
    prefect.restRequests.map((q) => [q.method, q.path, q.body]),
    [0, 1].map((b) => ['POST', '/api/flow_runs/filter', { flow_runs: { id: { any_: ids(b * MAX_BATCH, (b + 1) * MAX_BATCH) } }, limit: MAX_BATCH }]),
  );
  prefect.switches.holdRest = false;
  await Promise.all(all);
  assert.deepEqual(prefect.restRequests.map(filterIds).slice(2), [[...ids(2 * MAX_BATCH, asked - 2), runId(asked - 1)]]);
  const expected = new Map<string, unknown>();
  for (let i = 0; i < asked - 2; i++) expected.set(`${runId(i)}/0`, { traceparent: i % 2 === 0 ? TP : undefined });
  expected.set(`${runId(asked - 1)}/0`, 'failed');
  assert.deepEqual(answers, expected);
});

test(`a lone lookup is asked within ${GATHER_MS} ms; lookups made together share a request, the same run twice included; each answer has the run's label and when it was due to start`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  // The second was due at a time of its own (Prefect writes it with the zone as +00:00 or Z).
  for (let i = 0; i < 3; i++) prefect.addFlowRun({ id: runId(i), labels: { __OTEL_TRACEPARENT: TP }, ...(i === 1 ? { expected_start_time: '2026-11-21T06:00:00.250000+00:00' } : {}) });
  const answers: unknown[] = [];
  const lookup = createNativeSpanLookup({
    fetch: nativeSpanFromRest(createPrefectRestClient({ apiUrl: prefect.url })),
    wanted: () => true,
    answer: (id, attempt, a) => (answers.push([id, attempt, a]), 'linked'),
    logger: silent,
  });
  await Promise.all([lookup(runId(0), 0), lookup(runId(1), 0), lookup(runId(0), 1)]);
  await lookup(runId(2), 0);
  assert.deepEqual(prefect.restRequests.map(filterIds), [[runId(0), runId(1)], [runId(2)]]);
  assert.deepEqual(answers, [
    [runId(0), 0, { traceparent: TP }],
    [runId(1), 0, { traceparent: TP, expectedStartUs: Date.UTC(2026, 10, 21, 6, 0, 0, 250) * 1000 }],
    [runId(0), 1, { traceparent: TP }],
    [runId(2), 0, { traceparent: TP }],
  ]);
});

test('a server error fails the batch and keeps the filter; a server that refuses the filter is asked per run from then on', async (t) => {
  // PREFECT_API_DEFAULT_LIMIT 2: a batch of three is refused with 422.
  const prefect = await startFakePrefect({ defaultLimit: 2 });
  t.after(() => prefect.close());
  for (let i = 0; i < 5; i++) prefect.addFlowRun({ id: runId(i), labels: i === 4 ? {} : { __OTEL_TRACEPARENT: TP } });
  const fetch = nativeSpanFromRest(createPrefectRestClient({ apiUrl: prefect.url }));
  prefect.switches.restStatus = 500;
  assert.deepEqual(await fetch([runId(0)]), [{ ok: false, reason: 'POST /flow_runs/filter: HTTP 500', transport: false }]);
  prefect.switches.restStatus = 0;
  assert.deepEqual(await fetch([runId(0), runId(9)]), [
    { ok: true, traceparent: TP },
    { ok: false, reason: `POST /flow_runs/filter: flow run ${runId(9)} not found`, transport: false },
  ]);
  assert.deepEqual(await fetch([runId(1), runId(2), runId(9)]), [
    { ok: true, traceparent: TP },
    { ok: true, traceparent: TP },
    { ok: false, reason: `GET /flow_runs/${runId(9)}: not found`, transport: false },
  ]);
  assert.deepEqual(await fetch([runId(4)]), [{ ok: true, traceparent: undefined }]);
  const requests = prefect.restRequests.map((q) => `${q.method} ${q.path}`);
  assert.deepEqual(requests.slice(0, 3), Array<string>(3).fill('POST /api/flow_runs/filter'));
  assert.deepEqual(requests.slice(3, 6).sort(), [1, 2, 9].map((i) => `GET /api/flow_runs/${runId(i)}`));
  assert.deepEqual(requests.slice(6), [`GET /api/flow_runs/${runId(4)}`]);
});

test(`after ${BREAKER_FAILURES} connection failures in a row, lookups fail at once without a request`, async () => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const fetchRun = nativeSpanFromRest(createPrefectRestClient({ apiUrl: `http://127.0.0.1:${port}/api` }));
  let requests = 0;
  const outcomes: unknown[] = [];
  const lookup = createNativeSpanLookup({
    fetch: (ids) => ((requests += 1), fetchRun(ids)),
    wanted: () => true,
    answer: (_id, _attempt, a) => (outcomes.push(a), 'failed'),
    logger: silent,
  });
  for (let i = 0; i < 6; i++) await lookup(runId(i), 0);
  assert.deepEqual([requests, outcomes], [BREAKER_FAILURES, Array<string>(6).fill('failed')]);
});

test(`a server that does not answer holds at most ${MAX_QUEUED} lookups in the queue; the oldest past it is answered failed at once, without a request`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const over = 100;
  const sent = MAX_IN_FLIGHT * MAX_BATCH;
  const n = sent + MAX_QUEUED + over;
  for (let i = 0; i < n; i++) prefect.addFlowRun({ id: runId(i), labels: { __OTEL_TRACEPARENT: TP } });
  const answers = new Map<string, unknown>();
  const lookup = createNativeSpanLookup({
    fetch: nativeSpanFromRest(createPrefectRestClient({ apiUrl: prefect.url })),
    wanted: () => true,
    answer: (id, _attempt, a) => (answers.set(id, a), 'linked'),
    logger: silent,
  });
  prefect.switches.holdRest = true;
  const all = Array.from({ length: n }, (_, i) => lookup(runId(i), 0));
  // The first batches went out; the next `over` lookups were pushed out of the full queue.
  const pushedOut = Array.from({ length: over }, (_, k) => runId(sent + k));
  assert.deepEqual(answers, new Map(pushedOut.map((id) => [id, 'failed'])));
  prefect.switches.holdRest = false;
  await Promise.all(all);
  const ids = Array.from({ length: n }, (_, i) => runId(i));
  assert.deepEqual(answers, new Map(ids.map((id) => [id, pushedOut.includes(id) ? 'failed' : { traceparent: TP }])));
  assert.deepEqual(prefect.restRequests.flatMap(filterIds).sort(), ids.filter((id) => !pushedOut.includes(id)).sort());
});

test('lookups the API refuses (HTTP 403) mean no link, with one warning that names the setting to fix', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  for (let i = 0; i < 3; i++) prefect.addFlowRun({ id: runId(i), labels: { __OTEL_TRACEPARENT: TP } });
  prefect.switches.restStatus = 403;
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  const outcomes: unknown[] = [];
  const lookup = createNativeSpanLookup({
    fetch: nativeSpanFromRest(createPrefectRestClient({ apiUrl: prefect.url, apiKey: 'pnu_secret-key' })),
    wanted: () => true,
    answer: (_id, _attempt, a) => (outcomes.push(a), 'failed'),
    logger,
  });
  for (let i = 0; i < 3; i++) await lookup(runId(i), 0);
  assert.deepEqual(outcomes, ['failed', 'failed', 'failed']);
  const reason = 'the Prefect API refused POST /flow_runs/filter with HTTP 403: ';
  assert.deepEqual(lines.map((l) => [l.level, l.msg, l['prefect.run.id'], String(l.reason).startsWith(reason)]), [
    [40, "flow run lookups refused: flow run spans carry no link to Prefect's own span (logged once; each refusal after this at debug)", runId(0), true],
    [20, "flow run lookup failed: no link to Prefect's own span", runId(1), true],
    [20, "flow run lookup failed: no link to Prefect's own span", runId(2), true],
  ]);
  assert.ok(!JSON.stringify(lines).includes('pnu_secret-key'));
  assert.match(String(lines[0]!.reason), /PREFECT_API_KEY/);
});
