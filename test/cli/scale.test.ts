/**
 * 100,000 short flow runs through `prefect-otel replay -` with a low open-run bound: every span
 * arrives once, the bound's evictions are exactly those the interleaving implies, and memory does
 * not grow with the length of the input.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { spanIdForRun } from '../../src/model/ids.js';
import { readMetric, startCli } from '../helpers/cli.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';

const RUNS = 100_000;
/** Every 100th run never reaches a terminal state (its process died): it can only leave memory incomplete. */
const ABANDONED_EVERY = 100;
const MAX_OPEN_RUNS = 500;
/** A run starts every ms and lives 200 ms: Pending at t, Running at t+100, Completed at t+200. */
const STEP_MS = 1;
const LIFE_MS = 200;
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
/**
 * Memory bound for the end of the input relative to its first quarter: the open runs, the
 * finished-run memory and the event-id window are all bounded by settings, so what remains is
 * allocator and GC slack. One RSS reading swings with the garbage not yet collected (single
 * readings at the end ranged from 10 to 112 MiB above the one at 25 %, with and without a
 * concurrent test), so RSS is read at nine points from 25 % to the end and the median of the last
 * three is compared with the median of the first three. 96 MiB is generous; the unbounded log
 * buffer this test found grew by ~250 MiB over the same stretch.
 */
const RSS_GROWTH_BOUND_BYTES = 96 * 1024 * 1024;
const RSS_SAMPLES = 9;
const median3 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[1]!;

const hex12 = (n: number): string => n.toString(16).padStart(12, '0');
const runId = (i: number): string => `0198c7d2-5b1e-7a3c-9f10-${hex12(i)}`;
const abandoned = (i: number): boolean => i % ABANDONED_EVERY === ABANDONED_EVERY - 1;
const STATES = [
  ['PENDING', 'Pending'],
  ['RUNNING', 'Running'],
  ['COMPLETED', 'Completed'],
] as const;

/** The k-th state event of run i, as one JSON line in Prefect's wire format. */
function line(i: number, k: 0 | 1 | 2): string {
  const [type, name] = STATES[k];
  const occurred = new Date(T0 + i * STEP_MS + k * (LIFE_MS / 2)).toISOString();
  return (
    `{"id":"0198c7d2-eeee-7000-800${k}-${hex12(i)}","event":"prefect.flow-run.${name}","occurred":"${occurred}",` +
    `"resource":{"prefect.resource.id":"prefect.flow-run.${runId(i)}","prefect.resource.name":"run-${i}","prefect.state-type":"${type}","prefect.state-name":"${name}","prefect.run-count":"${k === 0 ? 0 : 1}"},` +
    `"related":[{"prefect.resource.id":"prefect.flow.6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d","prefect.resource.role":"flow","prefect.resource.name":"etl"}],` +
    `"payload":{"intended":{"from":${k === 0 ? 'null' : `"${STATES[k - 1]![0]}"`},"to":"${type}"}}}\n`
  );
}

/** Lines in time order: at each ms, one run starts, the one started 100 ms ago runs, the one 200 ms ago completes. */
function* lines(): Generator<string> {
  const steps = LIFE_MS / STEP_MS;
  for (let t = 0; t < RUNS + steps; t++) {
    if (t < RUNS) yield line(t, 0);
    const r = t - steps / 2;
    if (r >= 0 && r < RUNS) yield line(r, 1);
    const c = t - steps;
    if (c >= 0 && c < RUNS && !abandoned(c)) yield line(c, 2);
  }
}

const MASK64 = (1n << 64n) - 1n;

test('100,000 short runs, 500 open at most: every span arrives exactly once, the evictions are exactly those implied, memory stays flat', async (t) => {
  const receiver = await startOtlpReceiver({ discard: true });
  t.after(() => receiver.close());
  const cli = startCli(
    ['replay', '-'],
    {
      PREFECT_API_URL: 'http://127.0.0.1:9/api',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      PREFECT_OTEL_MAX_OPEN_RUNS: String(MAX_OPEN_RUNS),
      // Longer than the 100 s of event time the input covers: no run leaves memory by settling, only
      // through the bound, so the evictions are exactly the runs opened beyond it.
      PREFECT_OTEL_SETTLE_MS: '600000',
      // The event-id window is a memory bound too; keep it small so that RSS shows the run bound.
      PREFECT_OTEL_DEDUPE_MAX_IDS: '10000',
      PREFECT_OTEL_HTTP_PORT: '0',
      PREFECT_OTEL_LOG_LEVEL: 'info',
      PREFECT_OTEL_STATS_INTERVAL_MS: '0',
    },
    undefined,
    { keepStdinOpen: true, discardStdout: true },
  );
  const { child } = cli;
  t.after(() => child.kill());
  // The port of /metrics from the log; the STLOGGING lines are read and dropped.
  let warnings = 0;
  let finalStats: { runs: Record<string, number> } | undefined;
  const port = new Promise<number>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l.includes('"serving /healthz, /livez and /metrics"')) resolve((JSON.parse(l) as { port: number }).port);
      if (l.startsWith('{"level":40')) warnings += 1;
      if (l.includes('"msg":"stats"')) finalStats = JSON.parse(l) as { runs: Record<string, number> };
    });
  });
  const metric = async (name: string): Promise<number> => readMetric(await port, name);
  /** Wait until the replay has read every line written so far (polling, not timing). */
  const caughtUp = async (written: number): Promise<void> => {
    while ((await metric('prefect_otel_events_received_total')) < written) await new Promise((r) => setTimeout(r, 25));
  };

  const total = RUNS * 3 - RUNS / ABANDONED_EVERY;
  let written = 0;
  let batch = '';
  const rss: number[] = [];
  // From 25 % to the end, evenly.
  const samplesAt = new Set(Array.from({ length: RSS_SAMPLES }, (_, k) => Math.round(total * (0.25 + (0.75 * k) / (RSS_SAMPLES - 1)))));
  for (const l of lines()) {
    batch += l;
    written += 1;
    const sample = samplesAt.has(written);
    if (written % 2_000 === 0 || sample) {
      if (!child.stdin!.write(batch)) await once(child.stdin!, 'drain');
      batch = '';
    }
    if (sample) {
      await caughtUp(written);
      rss.push(await metric('process_resident_memory_bytes'));
    }
  }
  assert.equal(written, total);
  child.stdin!.end();
  const r = await cli.result;
  assert.equal(r.code, 0, r.stderr);

  // Every span exactly once: the count and a digest of the ids equal those of the 100,000 runs.
  const expected = { count: 0, sum: 0n, xor: 0n };
  for (let i = 0; i < RUNS; i++) {
    const id = BigInt(`0x${spanIdForRun(runId(i))}`);
    expected.count += 1;
    expected.sum = (expected.sum + id) & MASK64;
    expected.xor ^= id;
  }
  assert.deepEqual(receiver.spanIdDigest, expected);
  assert.equal(receiver.counts.spans, RUNS);

  // Each run opened beyond the bound evicts the least recently active one: a finished run waiting to
  // settle (exported complete) or an abandoned one (exported incomplete); never a live one, since at
  // most 300 runs are touched in any 100 ms. The abandoned runs are the incomplete ones, all of them.
  const summary = r.stderr;
  assert.match(summary, new RegExp(`events read: ${total} \\(${total} lines, 0 duplicates, 0 not about a run\\)`));
  assert.match(summary, new RegExp(`runs: ${RUNS} {2}spans: ${RUNS} \\(${RUNS / ABANDONED_EVERY} incomplete\\)`));
  assert.match(summary, new RegExp(`spans: ${RUNS} exported\\n`));
  assert.match(summary, /skipped: 0\n/);
  assert.match(summary, /export: ok/);
  // No Prefect API at PREFECT_API_URL: every flow run's label lookup fails, at once after the first
  // few have tripped the breaker. Runs evicted while those few were under way went out before their
  // answer ('late' rather than 'failed'): as many as the input got ahead of the refusals, a few
  // hundred, where a lookup per run without the breaker would leave most of them late.
  const native = (finalStats?.runs as { nativeSpans?: { late: number } } | undefined)?.nativeSpans;
  assert.ok(native !== undefined && native.late < RUNS / 20, JSON.stringify(native));
  assert.deepEqual(finalStats?.runs, { open: 0, opened: RUNS, incomplete: RUNS / ABANDONED_EVERY, reruns: 0, lateEvents: 0, evicted: RUNS - MAX_OPEN_RUNS, deletedScheduled: 0, pendingLookups: 0,
    parentLookups: { lookups: 0, found: 0, failed: 0, abandoned: 0 },
    rerunLookups: { lookups: 0, found: 0, failed: 0, abandoned: 0 },
    nativeSpans: { lookups: RUNS, linked: 0, noLabel: 0, failed: RUNS - native.late, late: native.late },
  });
  assert.equal(warnings, 10, 'ten eviction warnings, then only counted');

  assert.equal(rss.length, RSS_SAMPLES);
  const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
  const [early, late] = [median3(rss.slice(0, 3)), median3(rss.slice(-3))];
  console.log(`RSS from 25 % of the input to the end, MiB: ${rss.map(mib).join(', ')}; median of the first three ${mib(early)}, of the last three ${mib(late)}`);
  assert.ok(late - early < RSS_GROWTH_BOUND_BYTES, `RSS grew ${mib(late - early)} MiB (medians of the first and last three readings)`);
});
