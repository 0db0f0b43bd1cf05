import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LAG_BUCKETS_S, LagHistogram } from '../../src/export/lag.js';
import { startPrefectTracing } from '../../src/index.js';
import { startMiniPrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { flowRunStateEvent } from '../helpers/prefect-events.js';

const le = (counts: number[]): [string, number][] => [...LAG_BUCKETS_S.map(String), '+Inf'].map((b, i) => [b, counts[i]!]);

test('the lag histogram: fixed buckets (upper bounds inclusive), cumulative counts, quantiles as bucket bounds; negative lag counts as 0', () => {
  const h = new LagHistogram();
  assert.deepEqual(h.summary(), { count: 0, sumS: 0, maxS: 0, p50S: 0, p90S: 0, p99S: 0, buckets: le(Array(17).fill(0)) });
  for (const v of [-3, 0.1, 0.2, 0.7, 0.7, 0.7, 4, 100_000]) h.observe(v);
  assert.deepEqual(h.summary(), {
    count: 8,
    sumS: 0 + 0.1 + 0.2 + 0.7 + 0.7 + 0.7 + 4 + 100_000,
    maxS: 100_000,
    p50S: 1,
    p90S: 100_000,
    p99S: 100_000,
    //    0.1 .25 .5 1  2.5 5  10 30 60 120 300 900 1800 3600 21600 86400 +Inf
    buckets: le([2, 3, 3, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8]),
  });
  const seen: number[] = [];
  h.listener = (v) => seen.push(v);
  h.observeDelivered([{ endUs: 1_000_000_000 }, { endUs: 1_002_500_000 }], 1_005_000);
  assert.deepEqual(seen, [5, 2.5]);
});

test('export lag of a live run: measured when the collector accepts its span, in stats() and /metrics', async () => {
  const prefect = await startMiniPrefect();
  const receiver = await startOtlpReceiver();
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-lag-'));
  const tracing = startPrefectTracing({ env: {}, apiUrl: prefect.url, otlpEndpoint: receiver.url, httpPort: 0, stateFile: join(dir, 'state.json'), logLevel: 'silent', settleMs: 0, scheduleDelayMs: 10 });
  await tracing.ready;
  await prefect.waitForConnections(1);
  const flow = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
  const run = (id: string, endMs: number) => [
    flowRunStateEvent({ flowRunId: id, flowRunName: 'a', ...flow, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: endMs - 1000 }),
    flowRunStateEvent({ flowRunId: id, flowRunName: 'a', ...flow, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: endMs }),
  ];
  // Ended 30 s before it was published: its lag is at least 30 s.
  prefect.publish(run('0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f71', Date.now() - 30_000));
  await receiver.waitForSpans(1);
  while (tracing.stats().spans.exportLag.count < 1) await new Promise((r) => setTimeout(r, 10));
  const first = tracing.stats().spans.exportLag;
  assert.equal(first.count, 1);
  assert.ok(first.sumS >= 30, `lag ${first.sumS} s`);
  const at = LAG_BUCKETS_S.findIndex((b) => first.sumS <= b);
  assert.deepEqual(first.buckets, le([...LAG_BUCKETS_S.map((_, i) => (i >= at && at !== -1 ? 1 : 0)), 1]), 'one observation, in the bucket of its value');
  assert.deepEqual([first.maxS, first.p50S, first.p99S], [first.sumS, Math.min(LAG_BUCKETS_S[at] ?? Infinity, first.sumS), Math.min(LAG_BUCKETS_S[at] ?? Infinity, first.sumS)]);

  // A Prefect clock an hour ahead of ours: the lag counts as 0.
  prefect.publish(run('0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f72', Date.now() + 3_600_000));
  await receiver.waitForSpans(2);
  while (tracing.stats().spans.exportLag.count < 2) await new Promise((r) => setTimeout(r, 10));
  const second = tracing.stats().spans.exportLag;
  assert.deepEqual(second.buckets.map(([b, n]) => [b, n - (first.buckets.find(([x]) => x === b)?.[1] ?? 0)]), le([1, ...Array(16).fill(1)]));
  assert.equal(second.sumS, first.sumS);

  const metrics = await (await fetch(`http://127.0.0.1:${tracing.httpPort!}/metrics`)).text();
  const histogram = metrics.split('\n').filter((l) => l.startsWith('prefect_otel_export_lag_seconds') || l.endsWith(' prefect_otel_export_lag_seconds histogram'));
  assert.deepEqual(histogram, [
    '# TYPE prefect_otel_export_lag_seconds histogram',
    ...second.buckets.map(([b, n]) => `prefect_otel_export_lag_seconds_bucket{le="${b}"} ${n}`),
    `prefect_otel_export_lag_seconds_sum ${second.sumS}`,
    'prefect_otel_export_lag_seconds_count 2',
  ]);
  assert.match(metrics, /^process_resident_memory_bytes \d+$/m);
  await tracing.shutdown();
  await receiver.close();
  await prefect.close();
});
