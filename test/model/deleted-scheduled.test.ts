/**
 * Scheduled flow runs that wait an open-run timeout without starting are looked up (Prefect deletes
 * a deployment's scheduled runs without an event); the answer forgets only runs still waiting.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline } from '../../src/pipeline.js';
import { EXAMPLE_FLOW, flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';

const A = '0198c7d2-5b1e-7a3c-9f10-0000000000b1';
const B = '0198c7d2-5b1e-7a3c-9f10-0000000000b2';
const C = '0198c7d2-5b1e-7a3c-9f10-0000000000b3';
const TASK = '0198c7d2-6000-7abc-8def-0000000000a1';
const TIMEOUT_MS = 60_000;

const state = (run: string, at: number, type: string, name: string, runCount = 0) =>
  JSON.stringify(flowRunStateEvent({ flowRunId: run, flowRunName: `run-${run.slice(-2)}`, ...EXAMPLE_FLOW, state: { type, name }, from: null, runCount, occurred: at }));

/**
 * A pipeline on event time whose look-ups of scheduled runs are recorded in `asked` and answered when
 * the test calls `answer` (at once with `gone`, when given), with its lines and spans.
 */
function lookingUp(gone?: string[]) {
  const config = resolveConfig({ tracesExporter: 'none', openRunTimeoutMs: TIMEOUT_MS }, {});
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const spans: SpanRecord[] = [];
  const asked: string[][] = [];
  let answer: (gone: string[]) => void = () => undefined;
  const pipeline = createPipeline({
    config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
    deletedFlowRuns: (ids) => {
      asked.push([...ids]);
      return gone === undefined ? new Promise((resolve) => (answer = resolve)) : Promise.resolve(gone);
    },
  });
  return { pipeline, lines, spans, asked, answer: (ids: string[]) => answer(ids) };
}

test('a scheduled flow run quiet for the open-run timeout is asked about, a paused one is not; of the runs the server no longer has, one that has started meanwhile is left to its events, the others are forgotten without a span', async () => {
  const { pipeline, lines, spans, asked, answer } = lookingUp();
  const t0 = Date.UTC(2026, 10, 20, 9, 0, 0);
  for (const line of [state(A, t0, 'SCHEDULED', 'Scheduled'), state(B, t0, 'SCHEDULED', 'Late'), state(C, t0, 'RUNNING', 'Running', 1), state(C, t0 + 1, 'PAUSED', 'Paused', 1)]) pipeline.ingest(line);
  pipeline.tick(t0 + TIMEOUT_MS - 1_000);
  assert.deepEqual(asked, [], 'not before the timeout');
  pipeline.tick(t0 + TIMEOUT_MS + 1_000);
  assert.deepEqual(asked, [[A, B]]);
  // B starts before the answer comes, which says the server has neither.
  pipeline.ingest(state(B, t0 + TIMEOUT_MS + 2_000, 'PENDING', 'Pending'));
  answer([A, B]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    { deleted: pipeline.tracker.counts.deletedScheduled, open: pipeline.tracker.snapshot().open.map((r) => r.ref.id).sort(), spans: spans.length },
    { deleted: 1, open: [B, C], spans: 0 },
  );
  assert.deepEqual(lines.filter((l) => l.count !== undefined && String(l.msg).includes('no longer in Prefect')).map((l) => ({ level: l.level, count: l.count, flowRunIds: l.flowRunIds })), [{ level: 30, count: 1, flowRunIds: [A] }]);
  await pipeline.finish('end_of_input');
  assert.deepEqual(spans.map((s) => [s.run.id, s.run.incomplete]).sort(), [[B, true], [C, true]]);
});

test('a flow run Scheduled again after it started (AwaitingRetry) and quiet for the open-run timeout is asked about too: one Prefect no longer has (its deployment redeployed during the retry delay) ends incomplete, deleted, at its last event; one it still has keeps waiting', async () => {
  const { pipeline, spans, asked } = lookingUp([A]);
  const t0 = Date.UTC(2026, 10, 20, 9, 0, 0);
  for (const run of [A, B]) {
    pipeline.ingest(state(run, t0, 'RUNNING', 'Running', 1));
    pipeline.ingest(state(run, t0 + 5_000, 'SCHEDULED', 'AwaitingRetry', 1));
  }
  pipeline.tick(t0 + 5_000 + TIMEOUT_MS + 1_000);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    {
      asked,
      deleted: pipeline.tracker.counts.deletedScheduled,
      open: pipeline.tracker.snapshot().open.map((r) => r.ref.id),
      spans: spans.map((s) => ({ id: s.run.id, startUs: s.startUs, endUs: s.endUs, state: s.attributes['prefect.state.name'], incomplete: s.attributes['prefect.run.incomplete'], reason: s.attributes['prefect.run.incomplete_reason'] })),
    },
    {
      asked: [[A, B]],
      // Counted as a scheduled run deleted before it started it is not: it ran.
      deleted: 0,
      open: [B],
      spans: [{ id: A, startUs: t0 * 1_000, endUs: (t0 + 5_000) * 1_000, state: 'AwaitingRetry', incomplete: true, reason: 'deleted' }],
    },
  );
  await pipeline.shutdown(0);
});

test('a scheduled flow run Prefect no longer has whose tasks have been seen meanwhile ran after all: it is not forgotten, and is left to its events', async () => {
  const { pipeline, spans, asked, answer } = lookingUp();
  const t0 = Date.UTC(2026, 10, 20, 9, 0, 0);
  pipeline.ingest(state(A, t0, 'SCHEDULED', 'Scheduled'));
  pipeline.tick(t0 + TIMEOUT_MS + 1_000);
  assert.deepEqual(asked, [[A]]);
  // One task of A is seen before the answer comes; A's own states are still to come.
  pipeline.ingest(JSON.stringify(taskRunStateEvent({ taskRunId: TASK, taskRunName: 'extract-0', taskKey: 'extract-abcd1234', flowRunId: A, flowRunName: 'run-b1', ...EXAMPLE_FLOW, state: { type: 'PENDING', name: 'Pending' }, from: null, runCount: 0, occurred: t0 + TIMEOUT_MS + 2_000 })));
  answer([A]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(
    { deleted: pipeline.tracker.counts.deletedScheduled, open: pipeline.tracker.snapshot().open.map((r) => r.ref.id).sort(), spans: spans.length },
    { deleted: 0, open: [A, TASK], spans: 0 },
  );
  await pipeline.shutdown(0);
});
