/**
 * The run model's bookkeeping of reruns, subflows, background tasks and span-event limits, as seeded
 * properties over a generated workload: flow runs re-run from the UI (or at once, their first states
 * within the reorder window of the terminal state before), a few tasks per attempt (some retried,
 * some nested in another, some a subflow's tracking task), background tasks (`.delay()`) that outlive
 * their flow run's attempt, custom events on tasks and flow runs. Whatever the stream does within
 * what the model absorbs (reordering within half the settle window, duplicates, restarts), the spans
 * are those of the workload in order, whole; every run attempt has one span, under the attempt it ran
 * in; the open runs' index by parent span matches the open runs after every event; and a run's span
 * events stay within the limit with the summary counting what was left out, when the limit is hit as
 * events come and when a state file saved under a higher limit is loaded. A failure names its seed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { ATTR, SPAN_EVENT } from '../../src/model/attributes.js';
import { spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline, type Pipeline } from '../../src/pipeline.js';
import { mulberry32 as prng } from '../../src/source/demo-workload.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';
import { microsToIso } from '../helpers/event-filter.js';
import { customEvent, flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

/** Seeds run by the suite (118: a rerun whose states arrive latest first); `PROPERTY_SEEDS=1-500` runs others. */
const SEEDS = seedsFrom(process.env.PROPERTY_SEEDS) ?? [1, 2, 3, 4, 5, 118];
/** The workloads lie in the past: the event clock decides. */
const START_MS = Date.UTC(2025, 0, 6, 9, 0, 0);
const config = (overrides: Record<string, unknown> = {}) => resolveConfig({ tracesExporter: 'none', ...overrides }, {});
const { settleMs } = config().model;
/** How far apart (by the pipeline's clock) two events may be and still be swapped: half the settle window, as the guarantees promise. */
const REORDER_BOUND_MS = settleMs / 2;
/** A span-event limit that the workload's runs go past. */
const LOW_LIMIT = 4;
const quiet = createLogger({ level: 'silent', format: 'json' });

function seedsFrom(text: string | undefined): number[] | undefined {
  const m = text === undefined ? null : /^(\d+)-(\d+)$/.exec(text);
  if (m === null) return undefined;
  return Array.from({ length: Number(m[2]) - Number(m[1]) + 1 }, (_, i) => Number(m[1]) + i);
}

/** Where a run attempt's span is to hang, as the workload was made. */
interface Expected {
  readonly traceId: string;
  readonly parentSpanId: string | undefined;
}

interface Workload {
  readonly seed: number;
  /** In order of `received`. */
  readonly events: readonly WireEvent[];
  readonly owners: ReadonlyMap<string, string>;
  readonly flowParents: ReadonlyMap<string, string>;
  /** `<run id>#<attempt>` → where its span hangs. */
  readonly spans: ReadonlyMap<string, Expected>;
  /** Per run: how many span events its attempts make together (state events and events naming it innermost). */
  readonly spanEvents: ReadonlyMap<string, number>;
}

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const SUBFLOW = { flowId: '6a1f0c7e-2222-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'load' };
const TERMINAL_NAMES: Record<string, string> = { COMPLETED: 'Completed', FAILED: 'Failed', CRASHED: 'Crashed', CANCELLED: 'Cancelled' };

/**
 * A workload of `flows` root flow runs, overlapping in time, each with up to four attempts. Events
 * are a few tens of ms apart; a rerun at once starts within the reorder window of the attempt before.
 */
function workload(seed: number, flows = 3): Workload {
  const random = prng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
  const chance = (p: number): boolean => random() < p;
  const hex = (n: number): string => Array.from({ length: n }, () => Math.floor(random() * 16).toString(16)).join('');
  const uuid = (): string => `0198${hex(4)}-${hex(4)}-7${hex(3)}-8${hex(3)}-${hex(12)}`;
  const events: WireEvent[] = [];
  const owners = new Map<string, string>();
  const flowParents = new Map<string, string>();
  const spans = new Map<string, Expected>();
  const spanEvents = new Map<string, number>();
  const counted = (runId: string): void => void spanEvents.set(runId, (spanEvents.get(runId) ?? 0) + 1);
  // Times in ms with µs fractions; received a few ms after occurred.
  const at = (ms: number): { occurred: number; received: number } => ({ occurred: ms, received: ms + 5 });
  const step = (t: number): number => t + int(10, 60) + int(0, 999) / 1000;

  const flowState = (runId: string, name: string, flow: typeof FLOW, type: string, stateName: string, from: string | null, runCount: number, t: number, tracking?: string): void => {
    events.push(flowRunStateEvent({ flowRunId: runId, flowRunName: name, ...flow, state: { type, name: stateName }, from, runCount, ...at(t), id: uuid(), parentTaskRunId: tracking }));
    counted(runId);
  };
  const taskState = (runId: string, flowRunId: string | undefined, type: string, stateName: string, from: string | null, runCount: number, t: number, more: Partial<Parameters<typeof taskRunStateEvent>[0]> = {}): void => {
    events.push(taskRunStateEvent({
      taskRunId: runId, taskRunName: `step-${runId.slice(-3)}`, taskKey: 'step-1a2b3c4d', ...(flowRunId === undefined ? {} : { flowRunId, flowRunName: 'crimson-fox', ...FLOW }),
      state: { type, name: stateName }, from, runCount, ...at(t), id: uuid(), ...more,
    }));
    counted(runId);
  };
  /** An event emitted inside a task (or a flow run): the innermost run it names takes it. */
  const custom = (inner: string, innerType: 'task' | 'flow', flowRunId: string, t: number): void => {
    const rel = innerType === 'task' ? [{ id: `prefect.task-run.${inner}`, role: 'task-run' }, { id: `prefect.flow-run.${flowRunId}`, role: 'flow-run' }] : [{ id: `prefect.flow-run.${flowRunId}`, role: 'flow-run' }];
    events.push({ ...customEvent({ event: chance(0.5) ? 'etl.rows' : `etl.batch.${int(0, 3)}`, resourceId: `etl.batch.${hex(6)}`, related: rel, payload: { rows: int(0, 99) }, occurred: t, id: uuid() }), received: microsToIso(Math.round(t * 1000) + 5_000) });
    counted(inner);
  };
  /** A task run of `flowRunId`'s attempt from `t`: Pending, Running (retried once at times), events, its end. Returns when it ended. */
  const task = (flowRunId: string, parentSpanId: string, traceId: string, t0: number, end: string, parents: string[] = [], inside?: (taskRunId: string, t: number) => number): number => {
    const id = uuid();
    spans.set(`${id}#0`, { traceId, parentSpanId: parents.length > 0 ? spanIdForRun(parents[0]!, 0) : parentSpanId });
    let t = t0;
    taskState(id, flowRunId, 'PENDING', 'Pending', null, 0, t, { parents });
    taskState(id, flowRunId, 'RUNNING', 'Running', 'PENDING', 1, (t = step(t)), { parents });
    for (let i = int(0, 2); i > 0; i--) custom(id, 'task', flowRunId, (t = step(t)));
    if (chance(0.2)) {
      taskState(id, flowRunId, 'SCHEDULED', 'AwaitingRetry', 'RUNNING', 1, (t = step(t)), { parents });
      taskState(id, flowRunId, 'RUNNING', 'Running', 'SCHEDULED', 2, (t = step(t)), { parents });
    }
    if (inside !== undefined) t = inside(id, t);
    taskState(id, flowRunId, end, TERMINAL_NAMES[end]!, 'RUNNING', 1, (t = step(t)), { parents });
    return t;
  };

  for (let f = 0; f < flows; f++) {
    const F = uuid();
    const traceId = traceIdForRun(F);
    const attempts = int(1, 4);
    let t = START_MS + f * int(100, 400);
    let from: string | null = null;
    let laterRerun = false;
    for (let k = 0; k < attempts; k++) {
      const flowSpan = spanIdForRun(F, k);
      spans.set(`${F}#${k}`, { traceId, parentSpanId: undefined });
      const customFrom = laterRerun ? t + REORDER_BOUND_MS : t;
      flowState(F, 'crimson-fox', FLOW, 'SCHEDULED', 'Scheduled', from, k, t);
      flowState(F, 'crimson-fox', FLOW, 'PENDING', 'Pending', 'SCHEDULED', k, (t = step(t)));
      flowState(F, 'crimson-fox', FLOW, 'RUNNING', 'Running', 'PENDING', k + 1, (t = step(t)));
      const last = k === attempts - 1;
      const ending = last ? 'COMPLETED' : chance(0.7) ? 'FAILED' : chance(0.5) ? 'COMPLETED' : 'CRASHED';
      const tasks = int(1, 3);
      for (let i = 0; i < tasks; i++) {
        // An event on the flow run of a rerun that starts after the attempt before was exported comes
        // at least the reorder bound after the rerun's first state: one shuffled ahead of that state
        // would find the run finished and be late (a limit of the model: a finished run keeps nothing).
        if (chance(0.3) && t >= customFrom) custom(F, 'flow', F, (t = step(t)));
        const end = ending === 'FAILED' && i === tasks - 1 ? 'FAILED' : 'COMPLETED';
        const kind = random();
        if (kind < 0.25) {
          // A task with a task nested in it (`__parents__`).
          t = task(F, flowSpan, traceId, step(t), end, [], (parent, tp) => task(F, flowSpan, traceId, step(tp), 'COMPLETED', [parent]));
        } else if (kind < 0.5) {
          // A subflow's tracking task: the subflow hangs under this attempt of the flow run, its task under it.
          t = task(F, flowSpan, traceId, step(t), end, [], (tracking, ts) => {
            const S = uuid();
            owners.set(tracking, F);
            flowParents.set(S, tracking);
            spans.set(`${S}#0`, { traceId, parentSpanId: flowSpan });
            flowState(S, 'amber-owl', SUBFLOW, 'PENDING', 'Pending', null, 0, (ts = step(ts)), tracking);
            flowState(S, 'amber-owl', SUBFLOW, 'RUNNING', 'Running', 'PENDING', 1, (ts = step(ts)), tracking);
            ts = task(S, spanIdForRun(S, 0), traceId, step(ts), 'COMPLETED');
            flowState(S, 'amber-owl', SUBFLOW, 'COMPLETED', 'Completed', 'RUNNING', 1, (ts = step(ts)), tracking);
            return ts;
          });
        } else {
          t = task(F, flowSpan, traceId, step(t), end);
        }
        if (chance(0.3)) {
          // A background task: Scheduled (deferred) in the flow run's context; a task worker takes it
          // later, maybe after this attempt ended: Pending outside any run context, then Running and Completed.
          const B = uuid();
          spans.set(`${B}#0`, { traceId, parentSpanId: flowSpan });
          const deferred = { stateDetails: { deferred: true } };
          taskState(B, F, 'SCHEDULED', 'Scheduled', null, 0, (t = step(t)), deferred);
          let tb = t + int(300, 3_000) + int(0, 999) / 1000;
          taskState(B, undefined, 'PENDING', 'Pending', 'SCHEDULED', 0, tb, deferred);
          taskState(B, F, 'RUNNING', 'Running', 'PENDING', 1, (tb = step(tb)));
          if (chance(0.5)) custom(B, 'task', F, (tb = step(tb)));
          taskState(B, F, 'COMPLETED', 'Completed', 'RUNNING', 1, tb + int(50, 2_000));
        }
      }
      flowState(F, 'crimson-fox', FLOW, ending, TERMINAL_NAMES[ending]!, 'RUNNING', k + 1, (t = step(t)));
      from = ending;
      // The next attempt: from the UI a few seconds later, or at once (within the reorder window).
      laterRerun = !chance(0.5);
      t += laterRerun ? int(1_500, 4_000) : int(15, 80) + int(0, 999) / 1000;
    }
  }
  const received = (e: WireEvent): number => Date.parse(String(e.received));
  return { seed, events: events.map((e, i) => ({ e, i })).sort((x, y) => received(x.e) - received(y.e) || x.i - y.i).map((x) => x.e), owners, flowParents, spans, spanEvents };
}

// --- running ---

interface Run {
  readonly spans: SpanRecord[];
  readonly pipeline: Pipeline;
}

function pipelineFor(w: Workload, spans: SpanRecord[], overrides: Record<string, unknown> = {}): Pipeline {
  return createPipeline({
    config: config(overrides), logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s),
    resolveOwner: (id) => Promise.resolve(w.owners.get(id) ?? null),
    resolveFlowParent: (id) => Promise.resolve(w.flowParents.get(id) ?? null),
  });
}

/** The time the pipeline's clock takes from an event (ms). */
const clockOf = (e: WireEvent): number => Math.min(Date.parse(String(e.occurred)), e.received === undefined ? Infinity : Date.parse(String(e.received)));

/** Events one at a time, each lookup answered before the next; `check` after each. */
async function feed(p: Pipeline, events: readonly WireEvent[], check?: (p: Pipeline, at: number) => void): Promise<void> {
  for (let i = 0; i < events.length; i++) {
    p.ingest(JSON.stringify(events[i]));
    await new Promise((r) => setImmediate(r));
    check?.(p, i);
  }
}

async function run(w: Workload, events: readonly WireEvent[], overrides: Record<string, unknown> = {}, check?: (p: Pipeline, at: number) => void): Promise<Run> {
  const spans: SpanRecord[] = [];
  const p = pipelineFor(w, spans, overrides);
  await feed(p, events, check);
  await p.finish('end_of_input');
  return { spans, pipeline: p };
}

// --- the index of open runs by parent span ---

interface TrackerInternals {
  open: { values(): IterableIterator<{ ref: { id: string }; ctx: { parentSpanId: string | undefined } }> };
  openUnder: Map<string, Set<string>>;
}

/** `openUnder` is exactly the open runs with a parent span, each listed under that span (no empty sets, no run not open). */
function checkIndex(p: Pipeline, label: string): void {
  const t = p.tracker as unknown as TrackerInternals;
  const expected = new Map<string, string[]>();
  for (const run of t.open.values()) {
    const parent = run.ctx.parentSpanId;
    if (parent !== undefined) expected.set(parent, [...(expected.get(parent) ?? []), run.ref.id]);
  }
  const actual = new Map([...t.openUnder].map(([span, ids]) => [span, [...ids].sort()]));
  const sorted = new Map([...expected].map(([span, ids]) => [span, ids.sort()]));
  assert.deepEqual(new Map([...actual].sort()), new Map([...sorted].sort()), `${label}: openUnder differs from the open runs' parent spans`);
}

// --- perturbations ---

/** Shuffled within windows of at most `k` consecutive events whose clocks lie less than REORDER_BOUND_MS apart. */
function shuffledWithin(events: readonly WireEvent[], k: number, random: () => number): WireEvent[] {
  const out: WireEvent[] = [];
  let window: WireEvent[] = [];
  let low = Infinity;
  let high = -Infinity;
  const flush = (): void => {
    for (let i = window.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [window[i], window[j]] = [window[j]!, window[i]!];
    }
    out.push(...window);
    window = [];
    low = Infinity;
    high = -Infinity;
  };
  for (const e of events) {
    const t = clockOf(e);
    if (window.length >= k || Math.max(high, t) - Math.min(low, t) >= REORDER_BOUND_MS) flush();
    low = Math.min(low, t);
    high = Math.max(high, t);
    window.push(e);
  }
  flush();
  return out;
}

/** A random `share` of the events sent again, a few events later. */
function someTwice(events: readonly WireEvent[], share: number, random: () => number): WireEvent[] {
  const extra: WireEvent[][] = events.map(() => []);
  events.forEach((e, i) => {
    if (random() < share) extra[Math.min(events.length - 1, i + Math.floor(random() * 5))]!.push(e);
  });
  return events.flatMap((e, i) => [e, ...extra[i]!]);
}

// --- comparisons ---

function canonical(spans: readonly SpanRecord[], label: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of spans) {
    assert.ok(!out.has(s.spanId), `${label}: span ${s.spanId} (${s.name}, run ${s.run.id}#${s.run.attempt}) exported twice`);
    out.set(s.spanId, JSON.stringify(s));
  }
  return out;
}

function assertSameSpans(actual: readonly SpanRecord[], expected: readonly SpanRecord[], label: string, strip: (s: SpanRecord) => unknown = (s) => s): void {
  const a = canonical(actual.map((s) => strip(s) as SpanRecord), label);
  const b = canonical(expected.map((s) => strip(s) as SpanRecord), `${label} (baseline)`);
  const ids = [...new Set([...a.keys(), ...b.keys()])].sort();
  const differing = ids.filter((id) => a.get(id) !== b.get(id));
  if (differing.length === 0) return;
  const first = differing[0]!;
  assert.deepEqual(JSON.parse(a.get(first) ?? 'null'), JSON.parse(b.get(first) ?? 'null'), `${label}: ${differing.length} of ${ids.length} spans differ from the in-order run; the first is ${first}`);
}

/** One span per run attempt of the workload, each where it ran: under the attempt of its flow run (or the task) it ran in; none incomplete. */
function checkStructure(w: Workload, spans: readonly SpanRecord[], label: string): void {
  canonical(spans, label);
  const actual = new Map(spans.map((s) => [`${s.run.id}#${s.run.attempt}`, { traceId: s.traceId, parentSpanId: s.parentSpanId }]));
  assert.equal(actual.size, spans.length, `${label}: a run attempt with two spans`);
  assert.deepEqual(new Map([...actual].sort()), new Map([...w.spans].sort()), `${label}: the spans' run attempts and parents`);
  for (const s of spans) {
    assert.equal(s.spanId, spanIdForRun(s.run.id, s.run.attempt), label);
    assert.equal(s.run.incomplete, false, `${label}: ${s.run.id}#${s.run.attempt} ended incomplete (${String(s.attributes[ATTR.RUN_INCOMPLETE_REASON])})`);
    if (s.run.attempt > 0) assert.deepEqual(s.links.map((l) => l.spanId), [spanIdForRun(s.run.id, s.run.attempt - 1)], label);
  }
}

/** Within `limit` span events each; per run, the events kept and those summarised add up to every event of its attempts. */
function checkEventCounts(w: Workload, spans: readonly SpanRecord[], limit: number, label: string): void {
  const total = new Map<string, number>();
  for (const s of spans) {
    const where = `${label}: ${s.run.id}#${s.run.attempt}`;
    assert.ok(s.events.length <= limit, `${where}: ${s.events.length} span events, past the limit ${limit}`);
    const summaries = s.events.filter((e) => e.name === SPAN_EVENT.SUMMARY);
    const kept = s.events.length - summaries.length;
    if (s.droppedEvents === undefined) {
      assert.equal(summaries.length, 0, where);
    } else {
      assert.equal(summaries.length, 1, where);
      const a = summaries[0]!.attributes;
      assert.equal(a[ATTR.EVENTS_SUMMARISED], s.droppedEvents, where);
      const names = JSON.parse(String(a[ATTR.EVENTS_SUMMARISED_NAMES])) as Record<string, number>;
      assert.equal(Object.values(names).reduce((n, k) => n + k, 0) + Number(a[ATTR.EVENTS_SUMMARISED_OTHER] ?? 0), s.droppedEvents, `${where}: the summary's names`);
    }
    total.set(s.run.id, (total.get(s.run.id) ?? 0) + kept + (s.droppedEvents ?? 0));
  }
  assert.deepEqual(new Map([...total].sort()), new Map([...w.spanEvents].sort()), `${label}: span events kept and summarised, per run`);
}

/** A span without its events (a lower limit on load folds others than the live run). */
const withoutEvents = (s: SpanRecord): unknown => ({ ...s, events: undefined, droppedEvents: undefined });

// --- restarts ---

/**
 * The stream cut after each of `cuts`: the state saved (as `watch` stops: tick, seal, save) and loaded
 * into a fresh pipeline at the clock of the last event fed, which reads the last few events again
 * (the resume margin) and goes on. `limits`: the span-event limit of each process in turn.
 */
async function withRestarts(w: Workload, events: readonly WireEvent[], cuts: readonly number[], dir: string, limits: readonly number[], check?: (p: Pipeline, label: string) => void, loaded: number[] = []): Promise<SpanRecord[]> {
  const store = createStateStore(join(dir, `state-${w.seed}-${cuts.join('-')}-${limits.join('-')}.json`));
  const spans: SpanRecord[] = [];
  let from = 0;
  let clockMs = 0;
  for (const [n, cut] of [...cuts, events.length].entries()) {
    const p = pipelineFor(w, spans, { maxSpanEvents: limits[Math.min(n, limits.length - 1)] });
    let margin: WireEvent[] = [];
    if (from > 0) {
      await loadState(store, p, clockMs, quiet);
      loaded.push(spans.length);
      check?.(p, `loaded after event ${from}`);
      margin = events.slice(Math.max(0, from - 3), from);
    }
    const writer = new StateWriter(store, p);
    const slice = events.slice(from, cut);
    await feed(p, [...margin, ...slice], check === undefined ? undefined : (q, i) => check(q, `after event ${from + i - margin.length}`));
    if (cut === events.length) {
      await p.finish('end_of_input');
      break;
    }
    for (const e of slice) clockMs = Math.max(clockMs, clockOf(e));
    p.tick();
    p.seal();
    await writer.save(true);
    from = cut;
  }
  return spans;
}

describe('run model properties: reruns, subflows, background tasks, span-event limits', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prefect-otel-properties-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const baselines = new Map<number, Promise<{ w: Workload; spans: SpanRecord[] }>>();
  const baseline = (seed: number): Promise<{ w: Workload; spans: SpanRecord[] }> => {
    let b = baselines.get(seed);
    if (b === undefined) {
      const w = workload(seed);
      baselines.set(seed, (b = run(w, w.events).then((r) => ({ w, spans: r.spans }))));
    }
    return b;
  };

  it('in order: one span per run attempt, each under the attempt it ran in, none incomplete; every span event there', async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      checkStructure(w, spans, `seed ${seed}`);
      checkEventCounts(w, spans, 1_000, `seed ${seed}`);
    }
  });

  it(`shuffled within windows of k = 2..8 events less than ${REORDER_BOUND_MS} ms apart, some events twice: the same spans, whole; the index of open runs by parent span right after every event`, async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      const random = prng(seed + 7);
      for (let k = 2; k <= 8; k++) {
        const label = `seed ${seed}, shuffled within ${k}`;
        const events = someTwice(shuffledWithin(w.events, k, random), 0.1, random);
        const r = await run(w, events, {}, (p, i) => checkIndex(p, `${label}, after event ${i}`));
        checkStructure(w, r.spans, label);
        assertSameSpans(r.spans, spans, label);
      }
    }
  });

  it('restarts at random points, the resume margin read again: the same spans, whole; the index right after every load and event', async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      const random = prng(seed + 11);
      for (let round = 0; round < 3; round++) {
        const events = round === 0 ? w.events : shuffledWithin(w.events, 4, random);
        const expected = round === 0 ? spans : (await run(w, events)).spans;
        const cuts = [...new Set(Array.from({ length: 1 + round }, () => 1 + Math.floor(random() * (events.length - 2))))].sort((x, y) => x - y);
        const label = `seed ${seed}, restarts after events ${cuts.join(', ')} of ${events.length}`;
        const got = await withRestarts(w, events, cuts, dir, [1_000], (p, at) => checkIndex(p, `${label}, ${at}`));
        assertSameSpans(got, expected, label);
      }
    }
  });

  it(`span events past a limit of ${LOW_LIMIT}: within it, the summary counts the rest, whether the limit is hit as events come or as a state saved under a higher one is loaded`, async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      const live = await run(w, w.events, { maxSpanEvents: LOW_LIMIT });
      checkEventCounts(w, live.spans, LOW_LIMIT, `seed ${seed}, live`);
      assertSameSpans(live.spans, spans, `seed ${seed}, live`, withoutEvents);
      const random = prng(seed + 13);
      for (let round = 0; round < 3; round++) {
        const cut = 1 + Math.floor(random() * (w.events.length - 2));
        const label = `seed ${seed}, saved under 1000 after event ${cut} of ${w.events.length}, loaded under ${LOW_LIMIT}`;
        const loaded: number[] = [];
        const got = await withRestarts(w, w.events, [cut], dir, [1_000, LOW_LIMIT], undefined, loaded);
        checkEventCounts(w, got, 1_000, label);
        // The spans exported after the load are within the lower limit.
        for (const s of got.slice(loaded[0])) assert.ok(s.events.length <= LOW_LIMIT, `${label}: ${s.run.id}#${s.run.attempt} has ${s.events.length} span events`);
        assertSameSpans(got, spans, label, withoutEvents);
      }
    }
  });
});
