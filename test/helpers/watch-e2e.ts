/**
 * Shared pieces of the end-to-end watch tests: Prefect workloads timed just before now (inside the
 * server's backfill window), the spans `prefect-otel replay` gives for the same events, span shapes
 * to compare whole, and log-line parsing for the CLI's JSON output.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, type CliResult } from './cli.js';
import { startFakePrefect, type FakePrefect, type WireEvent } from './fake-prefect.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './otlp-receiver.js';
import { customEvent, flowRunStateEvent, taskRunStateEvent } from './prefect-events.js';

/** Settle quickly and persist often, so tests need not wait long; no periodic stats line unless asked. */
export const FAST = { PREFECT_OTEL_SETTLE_MS: '100', PREFECT_OTEL_STATE_FLUSH_MS: '200', PREFECT_OTEL_STATS_INTERVAL_MS: '0' };

export const tempDir = (): string => mkdtempSync(join(tmpdir(), 'prefect-otel-e2e-'));

/** A fake Prefect server that knows `taskRuns` (for subflow parent lookups) and an OTLP receiver, both closed after the test. */
export async function startServers(
  t: { after: (fn: () => Promise<void>) => void },
  taskRuns: readonly Parameters<FakePrefect['addTaskRun']>[0][] = [],
): Promise<{ prefect: FakePrefect; receiver: OtlpReceiver }> {
  const prefect = await startFakePrefect();
  for (const r of taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  return { prefect, receiver };
}

/** `prefect-otel watch` as a child process, with a fresh state file unless one is given. */
export function startWatch(env: Record<string, string>, t?: { after: (fn: () => void) => void }) {
  const run = startCli([], { ...FAST, PREFECT_OTEL_STATE_FILE: join(tempDir(), 'state.json'), ...env });
  // A failed assertion must not leave the child running (it would hold the test process open).
  t?.after(() => {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
  });
  return run;
}

export async function until(what: string, cond: () => boolean, timeoutMs = 10_000, detail?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${detail === undefined ? '' : `: ${detail()}`}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The live subscription count of a fake server (filter accepted, socket still open). */
export const liveConnections = (prefect: FakePrefect): number => prefect.connections.filter((c) => c.live).length;

/** A span as a whole, minus what the transport adds: ids, times, status, events with their attributes, links, attributes. */
export const shape = (spans: ReceivedSpan[]) =>
  spans
    .map((s) => ({
      name: s.name,
      kind: s.kind,
      traceId: s.traceId,
      spanId: s.spanId,
      parentSpanId: s.parentSpanId,
      start: s.startTimeUnixNano,
      end: s.endTimeUnixNano,
      status: s.status,
      events: s.events,
      links: s.links,
      attributes: s.attributes,
    }))
    .sort((a, b) => a.spanId.localeCompare(b.spanId));

/** What `prefect-otel replay` exports for these events (written as JSON lines, in the given order). */
export async function replaySpans(events: WireEvent[], apiUrl: string, extra: Record<string, string> = {}): Promise<ReceivedSpan[]> {
  const file = join(tempDir(), 'events.jsonl');
  writeFileSync(file, events.map((e) => JSON.stringify(e)).join('\n'));
  const receiver = await startOtlpReceiver();
  const { result } = startCli(['replay', file], { ...FAST, PREFECT_API_URL: apiUrl, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ...extra });
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
  await receiver.close();
  return receiver.spans();
}

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/** The CLI's JSON log lines (non-JSON lines are ignored). */
export function logLines(stdout: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut short by a kill
    }
  }
  return out;
}

/** Span names by run id: what a workload is expected to produce, one span per run. */
export interface Workload {
  events: WireEvent[];
  /** Run id → span name. */
  runs: Map<string, string>;
  /** Tracking task runs of subflows, for the fake's `GET /task_runs/{id}`. */
  taskRuns: { id: string; flow_run_id: string; name: string }[];
}

const sec = (t0: number, s: number): number => t0 + s * 1000;

/**
 * `flows` root flow runs, each with: a task that fails once, waits in AwaitingRetry, retries and
 * completes, emitting a custom event while running; a nested task (parent in `__parents__`); an
 * in-process subflow (its tracking task resolved over REST) with a task of its own; every other flow
 * run fails. `extra.largeEvents` more custom events on the first task, each with a payload of about
 * `extra.largeEventBytes`, make the stream heavy. Events are in `occurred` order, from `t0` (default: 20 s ago, inside the minute a fresh
 * subscription reads) to `t0 + 12 s + flows * 0.1 s`.
 */
export function workload(flows: number, t0 = Date.now() - 20_000, extra: { largeEvents?: number; largeEventBytes?: number } = {}): Workload {
  const events: WireEvent[] = [];
  const runs = new Map<string, string>();
  const taskRuns: Workload['taskRuns'] = [];
  for (let k = 0; k < flows; k++) {
    const at = (s: number): number => sec(t0, s + k * 0.1);
    const fr = randomUUID();
    const flow = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
    const sub = { flowId: '11111111-1111-4111-8111-111111111111', flowName: 'quality-checks' };
    const [extract, load, track, subFr, check] = [randomUUID(), randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    runs.set(fr, 'etl').set(extract, 'extract').set(load, 'load').set(subFr, 'quality-checks').set(check, 'check_rows');
    taskRuns.push({ id: track, flow_run_id: fr, name: 'quality-checks-0' });
    const fail = k % 2 === 1;
    const flowEv = (s: number, type: string, name: string, from: string | null, message?: string) =>
      flowRunStateEvent({ flowRunId: fr, flowRunName: `crimson-fox-${k}`, ...flow, state: { type, name, ...(message === undefined ? {} : { message }) }, from, runCount: 1, occurred: at(s), tags: ['nightly'], deployment: { id: '22222222-2222-4222-8222-222222222222', name: 'etl-nightly' }, workPool: { id: '33333333-3333-4333-8333-333333333333', name: 'default', type: 'process' } });
    const taskEv = (id: string, key: string, name: string, s: number, type: string, state: string, from: string | null, runCount = 1, parents?: string[], message?: string) =>
      taskRunStateEvent({ taskRunId: id, taskRunName: name, taskKey: key, flowRunId: fr, flowRunName: `crimson-fox-${k}`, ...flow, state: { type, name: state, ...(message === undefined ? {} : { message }) }, from, runCount, occurred: at(s), ...(parents === undefined ? {} : { parents }) });
    const subEv = (s: number, type: string, name: string, from: string | null) =>
      flowRunStateEvent({ flowRunId: subFr, flowRunName: `child-${k}`, ...sub, parentTaskRunId: track, parentTaskRunName: 'quality-checks-0', state: { type, name }, from, runCount: 1, occurred: at(s) });
    const checkEv = (s: number, type: string, name: string, from: string | null) =>
      taskRunStateEvent({ taskRunId: check, taskRunName: 'check-rows-1a2', taskKey: 'check_rows-77aa', flowRunId: subFr, flowRunName: `child-${k}`, ...sub, state: { type, name }, from, runCount: 1, occurred: at(s) });
    events.push(
      flowEv(0, 'PENDING', 'Pending', null),
      flowEv(1, 'RUNNING', 'Running', 'PENDING'),
      taskEv(extract, 'extract-9a8b', 'extract-3f2', 2, 'PENDING', 'Pending', null),
      taskEv(extract, 'extract-9a8b', 'extract-3f2', 2.5, 'RUNNING', 'Running', 'PENDING'),
      customEvent({ event: 'acme.rows.loaded', resourceId: `acme.table.rows-${k}`, resourceName: 'rows', related: [{ id: `prefect.task-run.${extract}`, role: 'task-run' }, { id: `prefect.flow-run.${fr}`, role: 'flow-run' }], payload: { rows: 100 + k }, occurred: at(3) }),
      ...Array.from({ length: extra.largeEvents ?? 0 }, (_, i) =>
        customEvent({ event: 'acme.sample.captured', resourceId: `acme.sample.${k}-${i}`, related: [{ id: `prefect.task-run.${extract}`, role: 'task-run' }, { id: `prefect.flow-run.${fr}`, role: 'flow-run' }], payload: { part: i, sample: 'x'.repeat(extra.largeEventBytes ?? 0) }, occurred: at(3 + (i + 1) * 0.01) })),
      taskEv(extract, 'extract-9a8b', 'extract-3f2', 3.5, 'SCHEDULED', 'AwaitingRetry', 'RUNNING', 1, undefined, 'Retry 1/1: connection reset'),
      taskEv(extract, 'extract-9a8b', 'extract-3f2', 4.5, 'RUNNING', 'Retrying', 'SCHEDULED', 2),
      taskEv(load, 'load-4c4c', 'load-5e1', 5, 'PENDING', 'Pending', null, 1, [extract]),
      taskEv(load, 'load-4c4c', 'load-5e1', 5.5, 'RUNNING', 'Running', 'PENDING', 1, [extract]),
      taskEv(load, 'load-4c4c', 'load-5e1', 6, 'COMPLETED', 'Completed', 'RUNNING', 1, [extract]),
      taskEv(extract, 'extract-9a8b', 'extract-3f2', 6.5, 'COMPLETED', 'Completed', 'RUNNING', 2),
      subEv(7, 'PENDING', 'Pending', null),
      subEv(7.5, 'RUNNING', 'Running', 'PENDING'),
      checkEv(8, 'PENDING', 'Pending', null),
      checkEv(8.5, 'RUNNING', 'Running', 'PENDING'),
      checkEv(9.5, 'COMPLETED', 'Completed', 'RUNNING'),
      subEv(10, 'COMPLETED', 'Completed', 'RUNNING'),
      fail ? flowEv(12, 'FAILED', 'Failed', 'RUNNING', 'Flow run encountered an exception: ValueError: bad row 17') : flowEv(12, 'COMPLETED', 'Completed', 'RUNNING'),
    );
  }
  events.sort((a, b) => Date.parse(a.occurred) - Date.parse(b.occurred));
  return { events, runs, taskRuns };
}

/** One span per run, named as expected. */
export function assertOneSpanPerRun(spans: ReceivedSpan[], w: Workload): void {
  assert.deepEqual(
    spans.map((s) => [s.attributes['prefect.run.id'], s.name]).sort(),
    [...w.runs].sort(),
  );
}

/** A loopback port with nothing listening on it (a collector or a Prefect server that is down). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * One `watch` with `env` that follows the stream once: its subscription is the `connection`-th the
 * fake has had (the first is sent the workload), every connection's spans so far arrive, then
 * SIGTERM, and it exits 0. Its output.
 */
export async function watchUntilSpans(
  t: { after: (fn: () => void) => void },
  servers: { prefect: FakePrefect; receiver: OtlpReceiver },
  w: Workload,
  env: Record<string, string>,
  connection: number,
): Promise<CliResult> {
  const { prefect, receiver } = servers;
  const run = startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, ...env }, t);
  await until('subscription', () => liveConnections(prefect) === 1 && prefect.connections.length === connection);
  if (connection === 1) prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size * connection);
  run.child.kill('SIGTERM');
  const r = await run.result;
  assert.equal(r.code, 0, r.stderr);
  return r;
}

/** A `watch` that cannot reach its server: its first "Prefect server unreachable" retry line, after which SIGTERM ends it (exit 0). */
export async function firstUnreachableRetry(t: { after: (fn: () => void) => void }, env: Record<string, string>): Promise<LogLine> {
  const run = startWatch(env, t);
  let out = '';
  run.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const retry = (): LogLine | undefined => logLines(out).find((l) => l.msg?.startsWith('Prefect server unreachable'));
  await until('a retry', () => retry() !== undefined);
  run.child.kill('SIGTERM');
  assert.equal((await run.result).code, 0);
  return retry()!;
}
