/**
 * The run model's memory is bounded by its settings, not by the length of the stream: each of its
 * maps is driven far past its bound by a stream of distinct runs, and must stay at the bound while
 * what left it is counted and every run is still exported once.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { OWNER_CACHE_MAX } from '../../src/model/tracker.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline, type Pipeline } from '../../src/pipeline.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';

const MAX_OPEN_RUNS = 200;
const DEDUPE_MAX_IDS = 1_000;
/** Past the lookup caches' bound, which is the largest. */
const RUNS = OWNER_CACHE_MAX + 10_000;
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
/** How often the event clock runs the tracker's timers (the pipeline's EVENT_CLOCK_TICK_MS). */
const TICK_MS = 100;

const hex12 = (n: number): string => n.toString(16).padStart(12, '0');
const uuid = (kind: string, i: number): string => `0198c7d2-${kind}-7000-8000-${hex12(i)}`;
const occurred = (i: number): string => new Date(T0 + i).toISOString();

/** A subflow run, first seen Completed: its tracking task's flow run is looked up. A tick of the event clock apart, so that each settles before the next. */
function subflowCompleted(i: number): string {
  return `{"id":"${uuid('e001', i)}","event":"prefect.flow-run.Completed","occurred":"${occurred(i * TICK_MS)}",` +
    `"resource":{"prefect.resource.id":"prefect.flow-run.${uuid('a001', i)}","prefect.state-type":"COMPLETED","prefect.state-name":"Completed"},` +
    `"related":[{"prefect.resource.id":"prefect.task-run.${uuid('b001', i)}","prefect.resource.role":"task-run"}]}`;
}

/** A task run of a flow run never seen, left Running: that flow run's tracking task is looked up. */
function orphanTaskRunning(i: number): string {
  return `{"id":"${uuid('e002', i)}","event":"prefect.task-run.Running","occurred":"${occurred(RUNS * TICK_MS + i)}",` +
    `"resource":{"prefect.resource.id":"prefect.task-run.${uuid('c002', i)}","prefect.state-type":"RUNNING","prefect.state-name":"Running"},` +
    `"related":[{"prefect.resource.id":"prefect.flow-run.${uuid('d002', i)}","prefect.resource.role":"flow-run"}]}`;
}

/** The tracker's own maps, by size: what this test bounds. */
function sizes(pipeline: Pipeline) {
  const t = pipeline.tracker as unknown as Record<'open' | 'finished' | 'owners' | 'flowParents' | 'waiting' | 'blocked' | 'deadlines' | 'childrenOf' | 'openUnder', { size: number }>;
  return {
    open: t.open.size, finished: t.finished.size, owners: t.owners.size, flowParents: t.flowParents.size,
    waiting: t.waiting.size, waitingEvents: pipeline.tracker.waitingEvents, blocked: t.blocked.size,
    deadlines: t.deadlines.size, childrenOf: t.childrenOf.size, openUnder: t.openUnder.size, dedupe: pipeline.dedupe.size,
  };
}

/** The most each map held at any point (sampled every `every` events). */
function most(a: ReturnType<typeof sizes>, b: ReturnType<typeof sizes>): ReturnType<typeof sizes> {
  return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, Math.max(v, b[k as keyof typeof b])])) as ReturnType<typeof sizes>;
}

test(`bounds: ${RUNS} subflows and ${RUNS} task runs of unseen flow runs, every lookup answered "none": each of the run model's maps stays at its bound, what left it is counted, every run is exported once`, async () => {
  const config = resolveConfig({ tracesExporter: 'none', maxOpenRuns: MAX_OPEN_RUNS, dedupeMaxIds: DEDUPE_MAX_IDS, settleMs: 0 }, {});
  const logger = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  let spans = 0;
  const pipeline = createPipeline({
    config, logger, clock: 'event', delivery: null, onSpan: () => void (spans += 1),
    resolveOwner: () => Promise.resolve(null),
    resolveFlowParent: () => Promise.resolve(null),
  });
  let seen = sizes(pipeline);
  const feed = async (count: number, line: (i: number) => string): Promise<void> => {
    for (let i = 0; i < count; i++) {
      pipeline.ingest(line(i));
      if (i % 500 === 499) {
        seen = most(seen, sizes(pipeline));
        // Let the lookups answer, as a server would between frames.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  };

  await feed(RUNS, subflowCompleted);
  await feed(RUNS, orphanTaskRunning);
  seen = most(seen, sizes(pipeline));
  // Before the end of input: a save of the state file would now have to write it whole (more runs finished than it lists).
  assert.equal(pipeline.tracker.takeFinished(), undefined);
  await pipeline.finish('end_of_input');

  assert.deepEqual(seen, {
    open: MAX_OPEN_RUNS, finished: MAX_OPEN_RUNS, owners: OWNER_CACHE_MAX, flowParents: OWNER_CACHE_MAX,
    waiting: seen.waiting, waitingEvents: seen.waitingEvents, blocked: seen.blocked,
    deadlines: seen.deadlines, childrenOf: MAX_OPEN_RUNS, openUnder: MAX_OPEN_RUNS, dedupe: DEDUPE_MAX_IDS,
  });
  // Lookups still out are bounded with the events and runs waiting for them.
  assert.ok(seen.waiting <= MAX_OPEN_RUNS && seen.waitingEvents <= MAX_OPEN_RUNS && seen.blocked <= MAX_OPEN_RUNS && seen.deadlines <= MAX_OPEN_RUNS, JSON.stringify(seen));
  const c = pipeline.tracker.counts;
  const lookups = c.parentLookups;
  assert.deepEqual(
    { spans, built: c.spans, opened: c.runsOpened, evicted: c.evicted, incomplete: c.incomplete, lookups: lookups.lookups, answered: lookups.found + lookups.failed + lookups.abandoned },
    // The task runs beyond the bound evicted each other; the subflows settled at once.
    { spans: 2 * RUNS, built: 2 * RUNS, opened: 2 * RUNS, evicted: RUNS - MAX_OPEN_RUNS, incomplete: RUNS, lookups: 2 * RUNS, answered: 2 * RUNS },
  );
  assert.deepEqual(sizes(pipeline), { open: 0, finished: MAX_OPEN_RUNS, owners: OWNER_CACHE_MAX, flowParents: OWNER_CACHE_MAX, waiting: 0, waitingEvents: 0, blocked: 0, deadlines: 0, childrenOf: 0, openUnder: 0, dedupe: DEDUPE_MAX_IDS });
});

/**
 * A state file of its own, and a pipeline bounded to `before` open runs that took `before` task runs
 * (running, their flow runs never seen): what each test saves from it and takes over with a bound of `now`.
 */
async function boundedBy(t: TestContext, before: number) {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-bounds-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const store = createStateStore(join(dir, 'state.json'));
  const quiet = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const a = createPipeline({ config: resolveConfig({ tracesExporter: 'none', maxOpenRuns: before }, {}), logger: quiet, clock: 'event', delivery: null });
  for (let i = 0; i < before; i++) a.ingest(orphanTaskRunning(i));
  return { store, quiet, a };
}

test('bounds: a state file saved with more open runs than PREFECT_OTEL_MAX_OPEN_RUNS now allows is taken over within the bound: the least recently active runs are ended as evicted, counted and exported', async (t) => {
  const before = 50;
  const now = 10;
  const { store, quiet, a } = await boundedBy(t, before);
  assert.equal(a.tracker.openRuns, before);
  await new StateWriter(store, a).save(true);

  const spans: SpanRecord[] = [];
  const b = createPipeline({ config: resolveConfig({ tracesExporter: 'none', maxOpenRuns: now }, {}), logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  const restored = await loadState(store, b, T0 + RUNS * TICK_MS + before, quiet);
  // The resume line gives the runs kept, not those in the file.
  assert.equal(restored?.openRuns, now);
  // The oldest runs (the first task runs) are the least recently active.
  const evicted = Array.from({ length: before - now }, (_, i) => uuid('c002', i));
  assert.deepEqual(
    { open: b.tracker.openRuns, evicted: b.tracker.counts.evicted, spans: spans.map((s) => [s.run.id, s.attributes['prefect.run.incomplete_reason']]) },
    { open: now, evicted: before - now, spans: evicted.map((id) => [id, 'evicted']) },
  );
  // A new run keeps it there.
  b.ingest(orphanTaskRunning(before));
  assert.deepEqual({ open: b.tracker.openRuns, evicted: b.tracker.counts.evicted }, { open: now, evicted: before - now + 1 });
});

test('bounds: a state file saved with more finished runs than PREFECT_OTEL_MAX_OPEN_RUNS now allows is taken over within the bound: the most recently finished are kept', async (t) => {
  const before = 50;
  const now = 10;
  const { store, quiet, a } = await boundedBy(t, before);
  await a.finish('end_of_input');
  const saved = a.tracker.snapshot().finished.map(([id]) => id);
  assert.deepEqual(saved, Array.from({ length: before }, (_, i) => uuid('c002', i)));
  await new StateWriter(store, a).save(true);

  const b = createPipeline({ config: resolveConfig({ tracesExporter: 'none', maxOpenRuns: now }, {}), logger: quiet, clock: 'event', delivery: null });
  await loadState(store, b, T0 + RUNS * TICK_MS + before, quiet);
  assert.deepEqual({ finished: b.tracker.snapshot().finished.map(([id]) => id), open: b.tracker.openRuns }, { finished: saved.slice(-now), open: 0 });
});

test('bounds: events waiting for subflow parent lookups that never answer are held within PREFECT_OTEL_BUFFER_MAX_BYTES, not only by count: a flow emitting events of 100 KiB gives up the oldest lookup past the bound, said with that setting, and every event still reaches its span', async () => {
  const maxBytes = 1024 * 1024;
  const config = resolveConfig({ tracesExporter: 'none', bufferMaxBytes: maxBytes }, {});
  const warnings: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void warnings.push(JSON.parse(l) as Record<string, unknown>) } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({
    config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
    resolveOwner: () => new Promise(() => undefined),
  });
  const subflows = 3;
  const perSubflow = 10;
  const payload = 'x'.repeat(100 * 1024);
  // Each subflow's first state names its tracking task: its flow run is looked up, and never found.
  for (let s = 0; s < subflows; s++) {
    pipeline.ingest(`{"id":"${uuid('e003', s)}","event":"prefect.flow-run.Running","occurred":"${occurred(s)}",` +
      `"resource":{"prefect.resource.id":"prefect.flow-run.${uuid('a003', s)}","prefect.state-type":"RUNNING","prefect.state-name":"Running"},` +
      `"related":[{"prefect.resource.id":"prefect.task-run.${uuid('b003', s)}","prefect.resource.role":"task-run"}]}`);
  }
  const tracker = pipeline.tracker as unknown as { waitingEvents: number; waitingChars: number | undefined };
  let most = { waitingEvents: 0, waitingChars: 0 };
  for (let i = 0; i < subflows * perSubflow; i++) {
    const s = i % subflows;
    pipeline.ingest(`{"id":"${uuid('e004', i)}","event":"order.placed","occurred":"${occurred(subflows + i)}","resource":{"prefect.resource.id":"order.${i}"},` +
      `"related":[{"prefect.resource.id":"prefect.flow-run.${uuid('a003', s)}","prefect.resource.role":"flow-run"}],"payload":{"data":"${payload}"}}`);
    most = { waitingEvents: Math.max(most.waitingEvents, tracker.waitingEvents), waitingChars: Math.max(most.waitingChars, tracker.waitingChars ?? 0) };
  }
  const lookups = pipeline.tracker.counts.parentLookups;
  // An event of 100 KiB waits as about 102,600 characters of JSON: the three states and ten of them
  // fit in the bound, the next gives up the oldest lookup (twice); the last subflow's eleven fit.
  assert.deepEqual(
    { most, lookups: { ...lookups }, waitingEvents: tracker.waitingEvents, pendingLookups: pipeline.tracker.pendingLookups },
    { most: { waitingEvents: 13, waitingChars: most.waitingChars }, lookups: { lookups: 3, found: 0, failed: 0, abandoned: 2 }, waitingEvents: 11, pendingLookups: 1 },
  );
  assert.ok(most.waitingChars > 10 * payload.length && most.waitingChars <= maxBytes, String(most.waitingChars));
  // Given up: the first subflow's state and the four events of it among the first ten; then the second's and its six among the first sixteen.
  assert.deepEqual(warnings.filter((l) => l.kind === 'lookup_abandoned').map((l) => [l.taskRunId, l.waitingEvents, l.count, l.msg]), [0, 1].map((s) => [
    uuid('b003', s), [5, 7][s], s + 1,
    'events waiting for subflow parent lookups reached their bound (PREFECT_OTEL_BUFFER_MAX_BYTES); the oldest lookup was given up and its runs become roots of their own traces',
  ]));

  await pipeline.finish('end_of_input', 10);
  // Nothing is dropped: each subflow, a root of its own trace now, has its state and its ten events.
  assert.deepEqual(
    spans.map((s) => ({ id: s.run.id, root: s.parentSpanId === undefined, events: s.events.map((e) => e.name) })).sort((a, b) => a.id.localeCompare(b.id)),
    Array.from({ length: subflows }, (_, s) => ({ id: uuid('a003', s), root: true, events: ['Running', ...Array<string>(perSubflow).fill('order.placed')] })),
  );
  assert.deepEqual({ waitingEvents: tracker.waitingEvents, waitingChars: tracker.waitingChars }, { waitingEvents: 0, waitingChars: 0 });
});

test('bounds: a task run whose events name thousands of parent tasks keeps the first MAX_PARENT_TASKS of them (what it keeps for the state file) and hangs under the first', async () => {
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const logger = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  const flowRun = uuid('a005', 0);
  const taskRunning = (id: string, i: number, parents: string[]): string =>
    `{"id":"${uuid('e005', i)}","event":"prefect.task-run.Running","occurred":"${occurred(i)}",` +
    `"resource":{"prefect.resource.id":"prefect.task-run.${id}","prefect.state-type":"RUNNING","prefect.state-name":"Running"},` +
    `"related":[{"prefect.resource.id":"prefect.flow-run.${flowRun}","prefect.resource.role":"flow-run"}],` +
    `"payload":{"task_run":{"task_inputs":{"__parents__":[${parents.map((p) => `{"input_type":"task_run","id":"${p}"}`).join(',')}]}}}}`;
  const parent = uuid('b005', 0);
  const named = [parent, ...Array.from({ length: 5_000 }, (_, i) => uuid('c005', i))];
  pipeline.ingest(taskRunning(parent, 0, []));
  pipeline.ingest(taskRunning(uuid('d005', 0), 1, named));
  // MAX_PARENT_TASKS.
  const maxParentTasks = 16;
  const kept = pipeline.tracker.snapshotChanging().open.map((r) => [r.ref.id, r.meta.parentTaskIds]);
  assert.deepEqual(kept, [[parent, []], [uuid('d005', 0), named.slice(0, maxParentTasks)]]);
  await pipeline.finish('end_of_input', 10);
  // Both task runs are ended at the end of input, in the trace of the flow run their events name (never seen itself).
  assert.deepEqual(
    spans.map((s) => [s.run.id, s.traceId, s.spanId, s.parentSpanId, s.run.incomplete]).sort(),
    [
      [parent, traceIdForRun(flowRun), spanIdForRun(parent), spanIdForRun(flowRun), true],
      [uuid('d005', 0), traceIdForRun(flowRun), spanIdForRun(uuid('d005', 0)), spanIdForRun(parent), true],
    ].sort(),
  );
});

test('bounds: a run rerun again and again beside thousands of open runs moves its own tasks to each new attempt without walking the open runs: what a rerun costs does not grow with the runs open', async () => {
  const config = resolveConfig({ tracesExporter: 'none' }, {});
  const logger = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  const others = 5_000;
  const reruns = 50;
  const flowRun = uuid('a006', 0);
  const state = (i: number, resource: string, type: string, name: string, at: number, extra = ''): string =>
    `{"id":"${uuid('e006', i)}","event":"prefect.${resource.startsWith('prefect.task-run.') ? 'task' : 'flow'}-run.${name}","occurred":"${occurred(at)}","received":"${occurred(at + 20)}",` +
    `"resource":{"prefect.resource.id":"${resource}","prefect.state-type":"${type}","prefect.state-name":"${name}"}${extra}}`;
  const flowState = (i: number, type: string, name: string, from: string | null, at: number): string =>
    state(i, `prefect.flow-run.${flowRun}`, type, name, at, `,"payload":{"intended":{"from":${from === null ? 'null' : `"${from}"`},"to":"${type}"}}`);
  const taskState = (i: number, k: number, type: string, name: string, at: number): string =>
    state(i, `prefect.task-run.${uuid('b006', k)}`, type, name, at, `,"related":[{"prefect.resource.id":"prefect.flow-run.${flowRun}","prefect.resource.role":"flow-run"}]`);
  let n = 0;
  for (let i = 0; i < others; i++) pipeline.ingest(state(n++, `prefect.flow-run.${uuid('c006', i)}`, 'RUNNING', 'Running', 0));
  pipeline.ingest(flowState(n++, 'RUNNING', 'Running', 'PENDING', 0));
  // Every open run the tracker walks from here on is counted.
  const open = (pipeline.tracker as unknown as { open: { entries: () => IterableIterator<unknown> } }).open;
  const entries = open.entries.bind(open);
  let walked = 0;
  open.entries = function* () {
    for (const entry of entries()) {
      walked += 1;
      yield entry;
    }
  };
  // Each attempt completes; a task of the next one starts (its state arrives before the flow run's
  // rerun state, which occurred a second before it) and hangs under the attempt that completed
  // until the rerun moves it under its own span.
  for (let k = 0; k < reruns; k++) {
    const base = 10_000 * k;
    pipeline.ingest(flowState(n++, 'COMPLETED', 'Completed', 'RUNNING', base + 1_000));
    pipeline.ingest(taskState(n++, k, 'RUNNING', 'Running', base + 3_000));
    pipeline.ingest(flowState(n++, 'RUNNING', 'Running', 'COMPLETED', base + 2_000));
    pipeline.ingest(taskState(n++, k, 'COMPLETED', 'Completed', base + 4_000));
  }
  pipeline.ingest(flowState(n++, 'COMPLETED', 'Completed', 'RUNNING', 10_000 * reruns + 1_000));
  assert.deepEqual({ walked, reruns: pipeline.tracker.counts.reruns, open: pipeline.tracker.openRuns }, { walked: 0, reruns, open: others + 1 });
  await pipeline.finish('end_of_input');
  const ofFlow = spans.filter((s) => s.run.id === flowRun).map((s) => [s.run.attempt, s.spanId, s.run.finalState?.name, s.run.incomplete]);
  assert.deepEqual(ofFlow, Array.from({ length: reruns + 1 }, (_, k) => [k, spanIdForRun(flowRun, k), 'Completed', false]));
  const tasks = spans.filter((s) => s.run.type === 'task').map((s) => [s.run.id, s.parentSpanId, s.run.finalState?.name, s.run.incomplete]);
  assert.deepEqual(tasks, Array.from({ length: reruns }, (_, k) => [uuid('b006', k), spanIdForRun(flowRun, k + 1), 'Completed', false]));
  assert.equal(spans.filter((s) => s.run.incomplete).length, others);
});

test('bounds: a state file saved under a higher OTEL_SPAN_EVENT_COUNT_LIMIT is taken over within the one now set: a run\'s span events beyond it are summarised at once, oldest other events first, as they would have been', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'prefect-otel-bounds-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const store = createStateStore(join(dir, 'state.json'));
  const quiet = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const before = 50_000;
  const now = 1_000;
  const flowRun = uuid('a007', 0);
  const running = (i: number): string =>
    `{"id":"${uuid('e007', i)}","event":"prefect.flow-run.Running","occurred":"${occurred(i)}",` +
    `"resource":{"prefect.resource.id":"prefect.flow-run.${flowRun}","prefect.state-type":"RUNNING","prefect.state-name":"Running"}}`;
  const custom = (i: number): string =>
    `{"id":"${uuid('e007', i)}","event":"order.placed","occurred":"${occurred(i)}","resource":{"prefect.resource.id":"order.${i}"},` +
    `"related":[{"prefect.resource.id":"prefect.flow-run.${flowRun}","prefect.resource.role":"flow-run"}]}`;
  // A run of transitions with a custom event every tenth event, all kept under the higher limit.
  const line = (i: number): string => (i % 10 === 9 ? custom(i) : running(i));
  const a = createPipeline({ config: resolveConfig({ tracesExporter: 'none', maxSpanEvents: 100_000 }, {}), logger: quiet, clock: 'event', delivery: null });
  for (let i = 0; i < before; i++) a.ingest(line(i));
  assert.deepEqual(a.tracker.snapshotChanging().open.map((r) => [r.events.length, r.summarised]), [[before, undefined]]);
  await new StateWriter(store, a).save(true);

  const spans: SpanRecord[] = [];
  const b = createPipeline({ config: resolveConfig({ tracesExporter: 'none', maxSpanEvents: now }, {}), logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) });
  await loadState(store, b, T0 + before, quiet);
  // The summary takes one place; the 5,000 custom events go first, then the oldest transitions.
  const folded = before - (now - 1);
  const transitionsFolded = folded - before / 10;
  // The first transition kept: the k-th transition (from 0) is line k + ⌊k / 9⌋, nine of each ten lines being transitions.
  const firstKept = transitionsFolded + Math.floor(transitionsFolded / 9);
  assert.deepEqual(
    b.tracker.snapshotChanging().open.map((r) => [r.events.length, r.events[0]?.timeUs, r.summarised]),
    [[now - 1, Date.parse(occurred(firstKept)) * 1000, { count: folded, firstUs: T0 * 1000, names: { 'order.placed': before / 10, Running: transitionsFolded } }]],
  );
  await b.finish('end_of_input');
  assert.deepEqual(spans.map((s) => [s.events.length, s.events[0]?.name, s.events[0]?.attributes, s.events.slice(1).every((e) => e.name === 'Running'), s.droppedEvents]), [
    [now, 'prefect_otel.events_summarised', { 'prefect.events.summarised_count': folded, 'prefect.events.summarised_names': JSON.stringify({ 'order.placed': before / 10, Running: transitionsFolded }) }, true, folded],
  ]);
});

test('bounds: a stream of events turned down (a state type Prefect does not have) beside the events taken keeps the remembered ids within PREFECT_OTEL_DEDUPE_MAX_IDS, the ring holding them included; each is skipped and counted, and a good copy of one is still taken', () => {
  const config = resolveConfig({ tracesExporter: 'none', dedupeMaxIds: DEDUPE_MAX_IDS }, {});
  const logger = createLogger({ level: 'silent', format: 'json', destination: { write: () => undefined } });
  const pipeline = createPipeline({ config, logger, clock: 'wall', delivery: null, onSpan: () => undefined });
  const flowRun = uuid('a005', 0);
  const event = (kind: string, i: number, stateType: string): string =>
    `{"id":"${uuid(kind, i)}","event":"prefect.flow-run.Running","occurred":"${occurred(i)}",` +
    `"resource":{"prefect.resource.id":"prefect.flow-run.${flowRun}","prefect.state-type":"${stateType}","prefect.state-name":"Running"}}`;
  const turnedDown = 200_000;
  let places = 0;
  for (let i = 0; i < turnedDown; i++) {
    if (i % 100 === 0) pipeline.ingest(event('e005', i, 'RUNNING'));
    pipeline.ingest(event('e006', i, 'SOMETHING_NEW'));
    if (i % 1_000 === 999) places = Math.max(places, (pipeline.dedupe as unknown as { mask: number }).mask + 1);
  }
  assert.deepEqual(
    { skipped: pipeline.counters.skipped.unknown_state, accepted: pipeline.counters.accepted, duplicates: pipeline.counters.duplicates, remembered: pipeline.dedupe.size },
    // The bound, but for the last event: turned down after the count bound made room for its id.
    { skipped: turnedDown, accepted: turnedDown / 100, duplicates: 0, remembered: DEDUPE_MAX_IDS - 1 },
  );
  // Each place holds an id, its time and two index slots; at most half of them dead, a power of two: 2,048 for 1,000 ids.
  assert.ok(places <= 2 * 1_024, `the ring grew to ${places} places for ${DEDUPE_MAX_IDS} ids`);
  // The last event turned down is not remembered: a good copy with its id is taken.
  pipeline.ingest(event('e006', turnedDown - 1, 'RUNNING'));
  assert.equal(pipeline.counters.accepted, turnedDown / 100 + 1);
});
