/**
 * The flow-run lookup of Prefect's own span over loopback, against the fake Prefect server: the
 * bound on requests in flight, skipped lookups, and the pause after repeated connection failures.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';
import { BREAKER_FAILURES, createNativeSpanLookup, MAX_IN_FLIGHT, nativeSpanFromRest } from '../../src/source/native-spans.js';
import { createPrefectRestClient } from '../../src/source/rest.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';

const runId = (i: number): string => `0198c7d2-8000-7000-8000-${String(i).padStart(12, '0')}`;
const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

test(`at most ${MAX_IN_FLIGHT} requests in flight; the rest queue, and one no longer wanted is never sent`, async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  for (let i = 0; i < 10; i++) prefect.addFlowRun({ id: runId(i), labels: i % 2 === 0 ? { __OTEL_TRACEPARENT: TP } : {} });
  const answers = new Map<string, unknown>();
  const unwanted = new Set([runId(9)]);
  const lookup = createNativeSpanLookup({
    fetch: nativeSpanFromRest(createPrefectRestClient({ apiUrl: prefect.url })),
    wanted: (id) => !unwanted.has(id),
    answer: (id, _attempt, a) => (answers.set(id, a), 'linked'),
    logger: createLogger({ level: 'silent', format: 'json' }),
  });
  prefect.switches.holdRest = true;
  const all = Array.from({ length: 10 }, (_, i) => lookup(runId(i), 0));
  while (prefect.restRequests.length < MAX_IN_FLIGHT) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(prefect.restRequests.length, MAX_IN_FLIGHT);
  prefect.switches.holdRest = false;
  await Promise.all(all);
  assert.deepEqual(prefect.restRequests.map((q) => q.path).sort(), Array.from({ length: 9 }, (_, i) => `/api/flow_runs/${runId(i)}`));
  assert.deepEqual(
    Object.fromEntries(answers),
    Object.fromEntries(Array.from({ length: 9 }, (_, i) => [runId(i), { traceparent: i % 2 === 0 ? TP : undefined }])),
  );
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
    fetch: (id) => ((requests += 1), fetchRun(id)),
    wanted: () => true,
    answer: (_id, _attempt, a) => (outcomes.push(a), 'failed'),
    logger: createLogger({ level: 'silent', format: 'json' }),
  });
  for (let i = 0; i < 6; i++) await lookup(runId(i), 0);
  assert.deepEqual([requests, outcomes], [BREAKER_FAILURES, Array<string>(6).fill('failed')]);
});
