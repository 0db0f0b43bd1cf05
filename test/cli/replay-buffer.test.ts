/**
 * Replay against the delivery buffer's byte bound (PREFECT_OTEL_BUFFER_MAX_BYTES): spans with large
 * events fill the bytes long before the span count, so replay must wait on the bytes too; and what
 * the bound does drop is logged before the process exits.
 */
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { startCli } from '../helpers/cli.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { customEvent, flowRunStateEvent } from '../helpers/prefect-events.js';
import { parsePrometheusText } from '../helpers/prometheus-text.js';
import { logLines } from '../helpers/watch-e2e.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
/** Custom events per flow run, each with a payload at PREFECT_OTEL_PAYLOAD_MAX_CHARS' default (4,096). */
const EVENTS_PER_RUN = 8;
const PAYLOAD = { blob: 'p'.repeat(4_100) };

const hex12 = (n: number): string => n.toString(16).padStart(12, '0');
const runId = (i: number): string => `0198c7d2-5b1e-7a3c-9f10-${hex12(i)}`;

const eventId = (i: number, k: number): string => `0198c7d2-eeee-7000-8000-${hex12(i * 16 + k)}`;

/** Flow run i: Running, EVENTS_PER_RUN custom events (of ~4 KB by default), Completed; one span (of ~35 KB). */
function runLines(i: number, payload: Record<string, unknown> = PAYLOAD): string[] {
  const id = runId(i);
  const t = T0 + i * 10;
  return [
    flowRunStateEvent({ flowRunId: id, flowRunName: `run-${i}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t, id: eventId(i, 0) }),
    ...Array.from({ length: EVENTS_PER_RUN }, (_, k) =>
      customEvent({ event: 'acme.chunk', resourceId: `prefect.flow-run.${id}`, related: [], payload, occurred: t + 1 + k, id: eventId(i, 1 + k) }),
    ),
    flowRunStateEvent({ flowRunId: id, flowRunName: `run-${i}`, ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: t + 9, id: eventId(i, 15) }),
  ].map((e) => JSON.stringify(e));
}

const input = (runs: number, payload?: Record<string, unknown>): string => `${Array.from({ length: runs }, (_, i) => runLines(i, payload).join('\n')).join('\n')}\n`;

test('spans of large events against a byte bound of ~8 spans and a healthy collector: replay waits on the bytes, every span arrives, exit 0', async (t) => {
  const runs = 60;
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const r = await startCli(
    ['replay', '-'],
    { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_BUFFER_MAX_BYTES: String(300 * 1024), PREFECT_OTEL_STATS_INTERVAL_MS: '0' },
    input(runs),
  ).result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`spans: ${runs} exported\\nexport: ok`));
  const got = receiver.spans().map((s) => ({ traceId: s.traceId, spanId: s.spanId, name: s.name, events: s.events.map((e) => e.name) }));
  const want = Array.from({ length: runs }, (_, i) => ({
    traceId: traceIdForRun(runId(i)),
    spanId: spanIdForRun(runId(i)),
    name: 'etl',
    events: ['Running', ...Array<string>(EVENTS_PER_RUN).fill('acme.chunk'), 'Completed'],
  }));
  const bySpanId = (a: { spanId: string }, b: { spanId: string }): number => a.spanId.localeCompare(b.spanId);
  assert.deepEqual(got.sort(bySpanId), want.sort(bySpanId));
  assert.deepEqual(logLines(r.stdout).filter((l) => (l.level ?? 0) >= 50), [], 'no error lines');
});

test('spans the byte bound drops: the loss is logged with its count before replay exits', async (t) => {
  const runs = 20;
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  // Each span (~35 KB) is larger than the whole bound (the 1 KiB minimum): every one is dropped as it is queued.
  const r = await startCli(
    ['replay', '-'],
    { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_BUFFER_MAX_BYTES: '1024', PREFECT_OTEL_STATS_INTERVAL_MS: '0' },
    input(runs),
  ).result;
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`spans: 0 exported, ${runs} dropped\\nexport: FAILED`));
  assert.deepEqual(receiver.spans(), []);
  // Reported once a second while it lasts: the lines' counts add up to every span dropped.
  const loss = logLines(r.stdout).filter((l) => l.msg === 'delivery buffer full: dropped the oldest spans');
  assert.ok(loss.length >= 1, r.stdout);
  assert.deepEqual(
    loss.map((l) => ({ level: l.level, component: l.component, signal: l.signal })),
    loss.map(() => ({ level: 50, component: 'export', signal: 'traces' })),
  );
  assert.equal(loss.reduce((n, l) => n + Number(l.count), 0), runs);
});

test('STLOGGING records over OTLP against a byte bound of ~100 records and a healthy collector: replay waits on the log buffer too, every record arrives', async (t) => {
  const runs = 60;
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const r = await startCli(
    ['replay', '-'],
    { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_LOGS_EXPORTER: 'otlp', PREFECT_OTEL_BUFFER_MAX_BYTES: String(48 * 1024), PREFECT_OTEL_STATS_INTERVAL_MS: '0' },
    input(runs, { n: 1 }),
  ).result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`spans: ${runs} exported\\nlog records: ${runs * (EVENTS_PER_RUN + 2)} exported\\nexport: ok`));
  const got = receiver.logs().map((l) => ({ traceId: l.traceId, spanId: l.spanId, body: l.body }));
  const want = Array.from({ length: runs }, (_, i) => {
    const id = runId(i);
    const ctx = { traceId: traceIdForRun(id), spanId: spanIdForRun(id) };
    return [
      { ...ctx, body: `STLOGGING: Flow run ${id} (run-${i}) state transition: PENDING -> RUNNING (state_name='Running', message='')` },
      ...Array.from({ length: EVENTS_PER_RUN }, (_, k) => ({ ...ctx, body: `STLOGGING: Event acme.chunk (id=${eventId(i, 1 + k)}) on flow run ${id}` })),
      { ...ctx, body: `STLOGGING: Flow run ${id} (run-${i}) state transition: RUNNING -> COMPLETED (state_name='Completed', message='')` },
    ];
  }).flat();
  const byBody = (a: { body: unknown }, b: { body: unknown }): number => String(a.body).localeCompare(String(b.body));
  assert.deepEqual(got.sort(byBody), want.sort(byBody));
  assert.deepEqual(logLines(r.stdout).filter((l) => (l.level ?? 0) >= 50), [], 'no error lines');
});

test('the runs still open at the end of input, more than the span buffer holds: /metrics counts the spans that wait for room as buffered, so finished = exported + buffered while the collector has not answered', async (t) => {
  const receiver = await startOtlpReceiver();
  const release = receiver.hold();
  t.after(async () => {
    release();
    await receiver.close();
  });
  // Ten flow runs that never end: the end of input ends them all at once, as incomplete.
  const lines = Array.from({ length: 10 }, (_, i) =>
    JSON.stringify(flowRunStateEvent({ flowRunId: runId(i), flowRunName: `run-${i}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: T0 + i * 10 })),
  );
  const cli = startCli(
    ['replay', '-'],
    { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_HTTP_PORT: '0', OTEL_BSP_MAX_QUEUE_SIZE: '4', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '2', OTEL_BSP_SCHEDULE_DELAY: '0' },
    `${lines.join('\n')}\n`,
  );
  t.after(() => cli.child.kill('SIGKILL'));
  const port = await new Promise<number>((resolve) => {
    createInterface({ input: cli.child.stdout! }).on('line', (l) => {
      if (l.includes('"serving /healthz, /livez and /metrics"')) resolve((JSON.parse(l) as { port: number }).port);
    });
  });
  await until('the first batch at the collector', () => receiver.counts.requests === 1);
  await until('every run ended', async () => (await spanFamilies(port)).prefect_otel_spans_finished_total === 10);
  const waiting = await spanFamilies(port);
  release();
  const r = await cli.result;
  assert.deepEqual(
    { waiting, code: r.code, spansTaken: receiver.counts.spans },
    {
      waiting: {
        prefect_otel_spans_finished_total: 10, prefect_otel_spans_unsampled_total: 0, prefect_otel_spans_exported_total: 0,
        prefect_otel_spans_buffered: 10, prefect_otel_spans_dropped_total: 0, prefect_otel_spans_rejected_total: 0,
      },
      code: 0,
      spansTaken: 10,
    },
  );
});

/** The `prefect_otel_spans_*` families of a `/metrics` page, read strictly. */
async function spanFamilies(port: number): Promise<Record<string, number>> {
  const families = parsePrometheusText(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
  return Object.fromEntries(families.filter((f) => f.name.startsWith('prefect_otel_spans_')).map((f) => [f.name, f.samples[0]!.value]));
}

/** Polls an asynchronous condition. */
async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await cond());) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
