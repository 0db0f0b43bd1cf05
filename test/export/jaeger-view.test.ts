/**
 * What a person relies on when a trace opens in Jaeger, checked on what the collector receives (the
 * real pipeline and OTLP exporter, decoded by the fake receiver) for seeded, randomised Prefect
 * workloads: the demo's flows (a subflow, a run_deployment child, retries, a failure, a crash and a
 * cancellation that leave tasks open, task events that arrive after their flow ended) plus a rerun
 * from the UI, sent in order, shuffled with duplicates, across restarts from the state file, across
 * a crash (spans exported again), with one run's events missed, and with a subflow's parent lookup
 * failing. Jaeger's query service post-processes every trace it shows (its adjusters): a span id
 * seen twice with different content shows twice with "duplicate span IDs"; a parent span id not in
 * the trace makes the span a root with "parent span ID=… is not in the trace"; a link without a
 * trace id is removed; a child span not within its parent gets a clock-skew warning (or is moved,
 * when `max_clock_skew_adjust` is set). Per trace: no span id twice (after a crash, only copies
 * Jaeger's hash de-duplication folds into one); every parent in the trace, or missing only because
 * that run's events were missed; end ≥ start; span events within the span, but for the states
 * before its start (Scheduled, Late) and what the worker says after the flow run's process exited;
 * every link pointing at a span of the trace; and a child outside its parent only as the README
 * says it happens. A failure names its seed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import { ATTR } from '../../src/model/attributes.js';
import { spanIdForRun } from '../../src/model/ids.js';
import { createPipeline, type Pipeline } from '../../src/pipeline.js';
import { createPrefectRestClient } from '../../src/source/rest.js';
import { createStateHistoryLookup } from '../../src/source/run-lookups.js';
import { generateDemoWorkload, mulberry32 as prng } from '../../src/source/demo-workload.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const SEEDS = [1, 2, 3];
/** The workloads lie in the past: the event clock decides. */
const START_MS = Date.UTC(2025, 3, 7, 9, 0, 0);
const quiet = createLogger({ level: 'silent', format: 'json' });

type Ev = WireEvent & Record<string, unknown>;
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const resourceId = (e: Ev): string => str((e.resource as Record<string, unknown>)['prefect.resource.id']);
const relatedOf = (e: Ev): Record<string, string>[] => e.related;
const RUN_RE = /^prefect\.(flow|task)-run\.([0-9a-f-]{36})$/;
const runOf = (e: Ev): { type: string; id: string } | undefined => {
  const m = RUN_RE.exec(resourceId(e));
  return m === null ? undefined : { type: m[1]!, id: m[2]! };
};
const receivedMs = (e: Ev): number => Date.parse(str(e.received));
/** The run an event is about: its resource, else the innermost run it names (task run before flow run), as its span event goes. */
const innermostRun = (e: Ev): string | undefined => {
  const own = runOf(e);
  if (own !== undefined) return own.id;
  const rel = relatedOf(e);
  const inner = rel.find((r) => r['prefect.resource.role'] === 'task-run') ?? rel.find((r) => r['prefect.resource.role'] === 'flow-run');
  return inner === undefined ? undefined : RUN_RE.exec(inner['prefect.resource.id']!)?.[2];
};

interface World {
  readonly seed: number;
  /** In order of `received`. */
  readonly events: readonly Ev[];
  readonly owners: ReadonlyMap<string, string>;
  /** Subflows and run_deployment children → their tracking task run. */
  readonly trackers: ReadonlyMap<string, string>;
  /** The root flow run re-run from the UI. */
  readonly rerun: string;
}

/** The demo's workload of `seed`, with its failed flow run re-run from the UI a few seconds after it failed. */
function world(seed: number): World {
  const demo = generateDemoWorkload({ seed, startMs: START_MS, flows: 4 });
  const events = demo.events as Ev[];
  const random = prng(seed + 100);
  const hex = (n: number): string => Array.from({ length: n }, () => Math.floor(random() * 16).toString(16)).join('');
  const uuid = (): string => `0196${hex(4)}-${hex(4)}-7${hex(3)}-8${hex(3)}-${hex(12)}`;
  const trackers = new Map<string, string>();
  for (const e of events) {
    const run = runOf(e);
    const tracking = relatedOf(e).find((r) => r['prefect.resource.role'] === 'task-run');
    if (run?.type === 'flow' && tracking !== undefined) trackers.set(run.id, tracking['prefect.resource.id']!.slice('prefect.task-run.'.length));
  }
  // The root flow run that failed: the flow run whose Failed state names no tracking task.
  const failed = events.find((e) => e.event === 'prefect.flow-run.Failed' && !trackers.has(runOf(e)!.id))!;
  const F = runOf(failed)!.id;
  const flowRel = relatedOf(failed).find((r) => r['prefect.resource.role'] === 'flow')!;
  const flow = { flowId: flowRel['prefect.resource.id']!.slice('prefect.flow.'.length), flowName: flowRel['prefect.resource.name']! };
  const name = str((failed.resource as Record<string, unknown>)['prefect.resource.name']);
  let t = Date.parse(str(failed.occurred)) + 4_000 + Math.floor(random() * 3_000);
  const step = (): number => (t += 50 + Math.floor(random() * 900) + random());
  const T = uuid();
  const more: Ev[] = [
    flowRunStateEvent({ flowRunId: F, flowRunName: name, ...flow, state: { type: 'SCHEDULED', name: 'Scheduled' }, from: 'FAILED', runCount: 1, occurred: step(), id: uuid() }),
    flowRunStateEvent({ flowRunId: F, flowRunName: name, ...flow, state: { type: 'PENDING', name: 'Pending' }, from: 'SCHEDULED', runCount: 1, occurred: step(), id: uuid() }),
    flowRunStateEvent({ flowRunId: F, flowRunName: name, ...flow, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 2, occurred: step(), id: uuid() }),
  ] as Ev[];
  const task = { taskRunId: T, taskRunName: 'extract-0', taskKey: 'extract-1a2b3c4d', flowRunId: F, flowRunName: name, ...flow };
  more.push(taskRunStateEvent({ ...task, state: { type: 'PENDING', name: 'Pending' }, from: null, runCount: 0, occurred: step(), id: uuid() }));
  more.push(taskRunStateEvent({ ...task, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: step(), id: uuid() }));
  more.push(taskRunStateEvent({ ...task, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: step(), id: uuid() }));
  more.push(flowRunStateEvent({ flowRunId: F, flowRunName: name, ...flow, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 2, occurred: step(), id: uuid() }));
  const all = [...events, ...more].map((e, i) => ({ e, i })).sort((a, b) => receivedMs(a.e) - receivedMs(b.e) || a.i - b.i).map((x) => x.e);
  return { seed, events: all, owners: demo.taskRunOwners, trackers, rerun: F };
}

// --- the real pipeline, exporting over OTLP ---

interface Lookups {
  readonly owners: ReadonlyMap<string, string>;
  readonly trackers: ReadonlyMap<string, string>;
  /** A Prefect API that answers runs' state histories (a rerun first seen), as watch and replay ask it. */
  readonly apiUrl?: string;
}

function pipeline(receiver: OtlpReceiver, l: Lookups): Pipeline {
  const config = resolveConfig({ otlpEndpoint: receiver.url, scheduleDelayMs: 10, uiUrl: 'http://prefect.local:4200' }, {});
  return createPipeline({
    config, logger: quiet, clock: 'event',
    resolveOwner: (id) => Promise.resolve(l.owners.get(id) ?? null),
    resolveFlowParent: (id) => Promise.resolve(l.trackers.get(id) ?? null),
    ...(l.apiUrl === undefined ? {} : { resolveStateHistory: createStateHistoryLookup(createPrefectRestClient({ apiUrl: l.apiUrl })) }),
  });
}

const clockOf = (e: Ev): number => Math.min(Date.parse(str(e.occurred)), e.received === undefined ? Infinity : receivedMs(e));

async function feed(p: Pipeline, events: readonly Ev[]): Promise<void> {
  for (const e of events) {
    p.ingest(JSON.stringify(e));
    await new Promise((r) => setImmediate(r));
  }
}

async function close(p: Pipeline): Promise<void> {
  const r = await p.shutdown(10_000);
  assert.deepEqual(r, { ok: true, pending: 0 });
}

/** Every span the collector receives for these events, fed in one process to the end of input. */
async function exported(l: Lookups, events: readonly Ev[]): Promise<ReceivedSpan[]> {
  const receiver = await startOtlpReceiver();
  try {
    const p = pipeline(receiver, l);
    await feed(p, events);
    await p.finish('end_of_input');
    await close(p);
    return receiver.spans();
  } finally {
    await receiver.close();
  }
}

/**
 * The events fed across processes: after each of `cuts`, a stop (the state saved after the flush,
 * as `watch` stops) or, for `crash`, a kill after the events up to the next cut were fed and
 * exported without a save; the next process loads the state at the clock of the last event saved
 * and reads the resume margin (the three events before) and everything after the save again.
 */
async function acrossProcesses(l: Lookups, events: readonly Ev[], cuts: readonly { at: number; crash?: number }[], dir: string, label: string): Promise<ReceivedSpan[]> {
  const receiver = await startOtlpReceiver();
  const store = createStateStore(join(dir, `${label.replace(/[^a-z0-9]+/gi, '-')}.json`));
  try {
    let from = 0;
    let clockMs = 0;
    for (const cut of [...cuts, { at: events.length }]) {
      const p = pipeline(receiver, l);
      if (from > 0) await loadState(store, p, clockMs, quiet);
      const writer = new StateWriter(store, p);
      await feed(p, events.slice(Math.max(0, from - 3), cut.at));
      if (cut.at === events.length) {
        await p.finish('end_of_input');
        await close(p);
        break;
      }
      for (const e of events.slice(from, cut.at)) clockMs = Math.max(clockMs, clockOf(e));
      p.tick();
      if (cut.crash === undefined) {
        p.seal();
        await p.flush(10_000);
        await writer.save(true);
      } else {
        await writer.save(false);
        // Killed later: what it exported meanwhile reached the collector; nothing after the save is kept.
        await feed(p, events.slice(cut.at, cut.crash));
        p.tick();
      }
      await close(p);
      from = cut.at;
    }
    return receiver.spans();
  } finally {
    await receiver.close();
  }
}

// --- Jaeger's view of a trace ---

const nanos = (v: string): bigint => BigInt(v);
const runIdOf = (s: ReceivedSpan): string => str(s.attributes[ATTR.RUN_ID]);
/** A span as Jaeger's hash de-duplication compares it: resource, scope and the span, attributes and events in a fixed order. */
const contentOf = (s: ReceivedSpan): string =>
  JSON.stringify({ ...s, attributes: Object.entries(s.attributes).sort(), events: s.events.map((e) => ({ ...e, attributes: Object.entries(e.attributes).sort() })), resource: Object.entries(s.resource).sort() });

interface View {
  /** Per trace, the spans Jaeger keeps (exact copies folded into one). */
  readonly traces: Map<string, ReceivedSpan[]>;
  /** Span ids received more than once with different content: shown twice, with a warning. */
  readonly conflicting: string[];
  /** Span ids received more than once, exactly alike. */
  readonly copies: string[];
}

function view(spans: readonly ReceivedSpan[]): View {
  const traces = new Map<string, ReceivedSpan[]>();
  const seen = new Map<string, string>();
  const conflicting: string[] = [];
  const copies: string[] = [];
  for (const s of spans) {
    const key = `${s.traceId}/${s.spanId}`;
    const content = contentOf(s);
    const before = seen.get(key);
    if (before !== undefined) {
      (before === content ? copies : conflicting).push(`${runIdOf(s)} ${s.name} ${s.spanId}`);
      if (before === content) continue;
    }
    seen.set(key, content);
    traces.set(s.traceId, [...(traces.get(s.traceId) ?? []), s]);
  }
  return { traces, conflicting, copies };
}

/** Spans whose parent span id is not in their trace: `<run id> → <parent span id>`. */
function missingParents(v: View): string[] {
  const out: string[] = [];
  for (const spans of v.traces.values()) {
    const ids = new Set(spans.map((s) => s.spanId));
    for (const s of spans) if (s.parentSpanId !== undefined && !ids.has(s.parentSpanId)) out.push(`${runIdOf(s)} → ${s.parentSpanId}`);
  }
  return out.sort();
}

/** Links whose span is not in the link's trace as received. */
function danglingLinks(v: View): string[] {
  const out: string[] = [];
  for (const spans of v.traces.values()) {
    for (const s of spans) {
      for (const l of s.links) {
        if (!(v.traces.get(l.traceId) ?? []).some((x) => x.spanId === l.spanId)) out.push(`${runIdOf(s)} → ${l.traceId}/${l.spanId}`);
      }
    }
  }
  return out.sort();
}

/**
 * The delta Jaeger's clock-skew adjuster computes for a child against its parent (ns): prefect-otel's
 * resource names no host (`host.id`, `host.ip`, `host.name`), so Jaeger compares every child with
 * its parent. Zero when the child lies within the parent, or lasts longer and does not start before it.
 */
function skewNs(child: ReceivedSpan, parent: ReceivedSpan): bigint {
  const [cs, ce, ps, pe] = [child.startTimeUnixNano, child.endTimeUnixNano, parent.startTimeUnixNano, parent.endTimeUnixNano].map(nanos) as [bigint, bigint, bigint, bigint];
  if (ce - cs > pe - ps) return cs < ps ? ps - cs : 0n;
  if (cs >= ps && ce <= pe) return 0n;
  return ps + (pe - ps - (ce - cs)) / 2n - cs;
}

/** Children Jaeger finds outside their parent: `<child run id> in <parent run id>`. */
function outsideParent(v: View): string[] {
  const out: string[] = [];
  for (const spans of v.traces.values()) {
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    for (const s of spans) {
      const parent = s.parentSpanId === undefined ? undefined : byId.get(s.parentSpanId);
      if (parent !== undefined && skewNs(s, parent) !== 0n) out.push(`${runIdOf(s)} in ${runIdOf(parent)}`);
    }
  }
  return out.sort();
}

/** The states a run waits in before its span starts (README: Scheduled/Late time "shows as span events"). */
const BEFORE_START = new Set(['Scheduled', 'Late']);
/** What a worker says of a flow run after its process exited, seconds after its terminal state (README, Times). */
const AFTER_END = new Set(['prefect.worker.executed-flow-run']);

/** Every invariant but the parents, links and children outside their parent, which depend on the case. */
function checkSpans(v: View, label: string): void {
  assert.deepEqual(v.conflicting, [], `${label}: span ids received twice with different content (Jaeger shows both, "duplicate span IDs")`);
  for (const spans of v.traces.values()) {
    for (const s of spans) {
      const where = `${label}: ${s.name} ${runIdOf(s)}`;
      const [start, end] = [nanos(s.startTimeUnixNano), nanos(s.endTimeUnixNano)];
      assert.ok(end >= start, `${where}: ends before it starts`);
      const before = s.events.filter((e) => nanos(e.timeUnixNano) < start).map((e) => e.name);
      const afterEnd = s.events.filter((e) => nanos(e.timeUnixNano) > end).map((e) => e.name);
      assert.deepEqual(before.filter((n) => !BEFORE_START.has(n)), [], `${where}: span events before its start`);
      assert.deepEqual(afterEnd.filter((n) => !AFTER_END.has(n)), [], `${where}: span events after its end`);
      // A run waited only before its span when it says so.
      if (before.length > 0) assert.equal(typeof s.attributes[ATTR.RUN_WAIT_MS], 'number', where);
      // Times are whole microseconds (Prefect's resolution): what Jaeger shows.
      for (const t of [s.startTimeUnixNano, s.endTimeUnixNano, ...s.events.map((e) => e.timeUnixNano)]) assert.equal(nanos(t) % 1000n, 0n, where);
    }
  }
}

/** Exactly one span per run attempt, and a trace per root flow run: the runs of the workload, counted by trace. */
function runsByTrace(v: View): Map<string, string[]> {
  return new Map([...v.traces].map(([trace, spans]) => [trace, spans.map((s) => `${runIdOf(s)}#${s.spanId}`).sort()]));
}

describe('traces as Jaeger shows them: seeded Prefect workloads through the pipeline and the OTLP exporter', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prefect-otel-jaeger-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const baselines = new Map<number, Promise<{ w: World; v: View }>>();
  const baseline = (seed: number): Promise<{ w: World; v: View }> => {
    let b = baselines.get(seed);
    if (b === undefined) {
      const w = world(seed);
      baselines.set(seed, (b = exported(w, w.events).then((spans) => ({ w, v: view(spans) }))));
    }
    return b;
  };

  it('in order: every span id once, every parent and link in its trace, no child outside its parent', async () => {
    for (const seed of SEEDS) {
      const { w, v } = await baseline(seed);
      const label = `seed ${seed}`;
      checkSpans(v, label);
      assert.deepEqual(v.copies, [], label);
      assert.deepEqual(missingParents(v), [], label);
      assert.deepEqual(danglingLinks(v), [], label);
      // The rerun: a second span of the flow run, linked to the first, in the same trace, a root beside it.
      const trace = w.rerun.replace(/-/g, '');
      const attempts = v.traces.get(trace)!.filter((s) => runIdOf(s) === w.rerun);
      assert.deepEqual(attempts.map((s) => [s.spanId, s.parentSpanId, s.links.map((l) => l.spanId)]), [
        [spanIdForRun(w.rerun, 0), undefined, []],
        [spanIdForRun(w.rerun, 1), undefined, [spanIdForRun(w.rerun, 0)]],
      ], label);
      // Subflows and run_deployment children in their root's trace.
      for (const child of w.trackers.keys()) {
        const s = [...v.traces.values()].flat().find((x) => runIdOf(x) === child)!;
        assert.ok(s.parentSpanId !== undefined && v.traces.get(s.traceId)!.some((x) => x.spanId === s.parentSpanId), `${label}: subflow ${child} under a span of its trace`);
        assert.equal(s.attributes[ATTR.PARENT_TASK_RUN_ID], w.trackers.get(child), label);
      }
      // Nothing for Jaeger's clock-skew adjuster: the demo's hosts share one clock, its tasks ended
      // incomplete end at their last known time, within their flow run's span.
      assert.deepEqual(outsideParent(v), [], label);
    }
  });

  it('shuffled within small windows, some events twice: the same traces as in order', async () => {
    for (const seed of SEEDS) {
      const { w, v } = await baseline(seed);
      const random = prng(seed + 7);
      const events = [...w.events];
      // Neighbours less than a second apart swapped, a tenth of the events sent again a few events later.
      for (let i = 0; i + 1 < events.length; i++) {
        if (random() < 0.4 && Math.abs(clockOf(events[i]!) - clockOf(events[i + 1]!)) < 1_000) [events[i], events[i + 1]] = [events[i + 1]!, events[i]!];
      }
      const twice = events.flatMap((e, i) => (random() < 0.1 ? [e, events[Math.max(0, i - 1 - Math.floor(random() * 3))]!] : [e]));
      const got = view(await exported(w, twice));
      const label = `seed ${seed}, shuffled`;
      checkSpans(got, label);
      assert.deepEqual(got.copies, [], label);
      assert.deepEqual(missingParents(got), [], label);
      assert.deepEqual(danglingLinks(got), [], label);
      assert.deepEqual(runsByTrace(got), runsByTrace(v), label);
    }
  });

  it('restarts from the state file, and a crash after a save (spans exported again): the same traces, a span id twice only as an exact copy, which Jaeger folds into one', async () => {
    for (const seed of SEEDS.slice(0, 2)) {
      const { w, v } = await baseline(seed);
      const random = prng(seed + 11);
      const n = w.events.length;
      const at = (): number => 5 + Math.floor(random() * (n - 40));
      const [a, b] = [at(), at()].sort((x, y) => x - y) as [number, number];
      for (const [kind, cuts] of [
        ['stops', [{ at: a }, { at: b === a ? a + 1 : b }]],
        ['crash', [{ at: a, crash: a + 20 + Math.floor(random() * 15) }]],
      ] as const) {
        const label = `seed ${seed}, ${kind} after events ${cuts.map((c) => c.at).join(', ')} of ${n}`;
        const got = view(await acrossProcesses(w, w.events, cuts, dir, label));
        checkSpans(got, label);
        assert.deepEqual(missingParents(got), [], label);
        assert.deepEqual(danglingLinks(got), [], label);
        assert.deepEqual(runsByTrace(got), runsByTrace(v), label);
        if (kind === 'stops') assert.deepEqual(got.copies, [], `${label}: a stop exports no span twice`);
      }
    }
  });

  it("a run whose events were all missed: the spans that hang under it name its span, which is not in the trace (Jaeger: \"parent span ID=… is not in the trace\"), and nothing else changes", async () => {
    for (const seed of SEEDS) {
      const { w, v } = await baseline(seed);
      const random = prng(seed + 13);
      const all = [...v.traces.values()].flat();
      // Runs that others hang under: flow runs with tasks, tasks with nested tasks.
      const parents = [...new Set(all.filter((s) => s.parentSpanId !== undefined).map((s) => s.parentSpanId!))]
        .map((id) => all.find((s) => s.spanId === id)!)
        .filter((s) => s.parentSpanId !== undefined && !w.trackers.has(runIdOf(s)));
      const missed = parents[Math.floor(random() * parents.length)]!;
      const missedId = runIdOf(missed);
      const events = w.events.filter((e) => innermostRun(e) !== missedId);
      const got = view(await exported(w, events));
      const label = `seed ${seed}, the events of ${missed.name} ${missedId} missed`;
      checkSpans(got, label);
      const children = all.filter((s) => s.parentSpanId === missed.spanId).map((s) => `${runIdOf(s)} → ${missed.spanId}`).sort();
      assert.ok(children.length > 0, label);
      assert.deepEqual(missingParents(got), children, label);
      assert.deepEqual(danglingLinks(got), [], label);
      const expected = runsByTrace(v);
      expected.set(missed.traceId, expected.get(missed.traceId)!.filter((r) => !r.startsWith(`${missedId}#`)));
      assert.deepEqual(runsByTrace(got), expected, label);
    }
  });

  it('a subflow whose parent lookup fails: a trace of its own, its span a root with prefect.parent_task_run.id, every parent in its trace', async () => {
    for (const seed of SEEDS) {
      const { w, v } = await baseline(seed);
      const [subflow, tracking] = [...w.trackers][0]!;
      const owners = new Map([...w.owners].filter(([task]) => task !== tracking));
      const got = view(await exported({ owners, trackers: w.trackers }, w.events));
      const label = `seed ${seed}, the lookup of ${tracking} failing`;
      checkSpans(got, label);
      assert.deepEqual(missingParents(got), [], label);
      assert.deepEqual(danglingLinks(got), [], label);
      const own = got.traces.get(subflow.replace(/-/g, ''));
      assert.ok(own !== undefined, `${label}: the subflow's own trace`);
      const root = own.find((s) => runIdOf(s) === subflow)!;
      assert.deepEqual([root.parentSpanId, root.attributes[ATTR.PARENT_TASK_RUN_ID]], [undefined, tracking], label);
      // The same runs in all, the subflow's moved to its own trace.
      const flat = (m: Map<string, string[]>): string[] => [...m.values()].flat().sort();
      assert.deepEqual(flat(runsByTrace(got)), flat(runsByTrace(v)), label);
    }
  });

  it('children outside their parent, which Jaeger flags for clock skew: a task stamped by a clock behind or ahead of the server\'s, a background task that outlives its flow run; nothing else', async () => {
    const F = '0196c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
    const flow = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
    const t0 = START_MS;
    const s = (sec: number): number => t0 + sec * 1000;
    let n = 0;
    const id = (): string => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
    const fs = (type: string, name: string, from: string | null, runCount: number, at: number): Ev =>
      flowRunStateEvent({ flowRunId: F, flowRunName: 'crimson-fox', ...flow, state: { type, name }, from, runCount, occurred: at, id: id() });
    const ts = (task: string, type: string, name: string, from: string | null, runCount: number, at: number, inFlow = true, deferred = false): Ev =>
      taskRunStateEvent({
        taskRunId: task, taskRunName: `step-${task.slice(-1)}`, taskKey: 'step-1a2b3c4d', ...(inFlow ? { flowRunId: F, flowRunName: 'crimson-fox', ...flow } : {}),
        state: { type, name }, from, runCount, occurred: at, id: id(), ...(deferred ? { stateDetails: { deferred: true } } : {}),
      });
    const [inside, behind, ahead, background] = ['1', '2', '3', '4'].map((k) => `0196c7d2-6000-7abc-8def-00000000000${k}`) as [string, string, string, string];
    const events = [
      fs('PENDING', 'Pending', null, 0, s(0)),
      // Stamped by a flow host whose clock runs 3 s behind the server's: before its flow run started.
      ts(behind, 'PENDING', 'Pending', null, 0, s(-2)),
      fs('RUNNING', 'Running', 'PENDING', 1, s(1)),
      ts(behind, 'RUNNING', 'Running', 'PENDING', 1, s(-1.5)),
      ts(behind, 'COMPLETED', 'Completed', 'RUNNING', 1, s(-1)),
      ts(inside, 'PENDING', 'Pending', null, 0, s(2)),
      ts(inside, 'RUNNING', 'Running', 'PENDING', 1, s(2.1)),
      ts(background, 'SCHEDULED', 'Scheduled', null, 0, s(2.5), true, true),
      ts(inside, 'COMPLETED', 'Completed', 'RUNNING', 1, s(3)),
      ts(ahead, 'PENDING', 'Pending', null, 0, s(3.2)),
      ts(ahead, 'RUNNING', 'Running', 'PENDING', 1, s(3.3)),
      fs('COMPLETED', 'Completed', 'RUNNING', 1, s(4)),
      // Stamped by a clock ahead: after its flow run ended.
      ts(ahead, 'COMPLETED', 'Completed', 'RUNNING', 1, s(4.5)),
      // A task worker takes the background task after the flow run ended.
      ts(background, 'PENDING', 'Pending', 'SCHEDULED', 0, s(6), false, true),
      ts(background, 'RUNNING', 'Running', 'PENDING', 1, s(6.1)),
      ts(background, 'COMPLETED', 'Completed', 'RUNNING', 1, s(7)),
    ];
    const v = view(await exported({ owners: new Map(), trackers: new Map() }, events));
    checkSpans(v, 'clocks');
    assert.deepEqual(missingParents(v), [], 'clocks');
    assert.deepEqual(outsideParent(v), [behind, ahead, background].map((task) => `${task} in ${F}`).sort());
    // Each span at the times Prefect stamped, ended by its own terminal state.
    const times = new Map([...v.traces.values()].flat().map((x) => [runIdOf(x), [x.startTimeUnixNano, x.endTimeUnixNano].map((t) => Number(nanos(t) / 1_000_000n) - t0)]));
    assert.deepEqual(times, new Map([[F, [0, 4_000]], [behind, [-2_000, -1_000]], [inside, [2_000, 3_000]], [ahead, [3_200, 4_500]], [background, [6_000, 7_000]]]));
  });

  it('a flow run re-run twice, the second time after its record was lost (a fresh state file): its state history in Prefect numbers that rerun the second, so no span id goes out twice', async () => {
    const F = '0196c7d2-5b1e-7a3c-9f10-2b3c4d5e6f71';
    const flow = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
    let t = START_MS;
    let n = 0;
    const st = (type: string, name: string, from: string | null, runCount: number): Ev =>
      flowRunStateEvent({ flowRunId: F, flowRunName: 'crimson-fox', ...flow, state: { type, name }, from, runCount, occurred: (t += 1_000), id: `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}` });
    const attempt = (from: string | null, runCount: number): Ev[] => [
      st('SCHEDULED', 'Scheduled', from, runCount), st('PENDING', 'Pending', 'SCHEDULED', runCount), st('RUNNING', 'Running', 'PENDING', runCount + 1), st('FAILED', 'Failed', 'RUNNING', runCount + 1),
    ];
    const first = [...attempt(null, 0), ...attempt('FAILED', 1)];
    const second = attempt('FAILED', 2);
    const prefect = await startFakePrefect();
    try {
      // The server has every state of the run; the second process knows none of them.
      prefect.store([...first, ...second]);
      const lookups = { owners: new Map<string, string>(), trackers: new Map<string, string>(), apiUrl: prefect.url };
      const spans = [...(await exported(lookups, first)), ...(await exported(lookups, second))];
      const v = view(spans);
      const previous = (attemptNo: number) => ({ traceId: F.replace(/-/g, ''), spanId: spanIdForRun(F, attemptNo), attributes: { [ATTR.LINK_KIND]: 'previous_attempt' } });
      assert.deepEqual(spans.map((x) => [x.spanId, x.parentSpanId, x.links.map((l) => ({ traceId: l.traceId, spanId: l.spanId, attributes: l.attributes })), x.startTimeUnixNano, x.endTimeUnixNano]), [
        [spanIdForRun(F, 0), undefined, [], String(BigInt(START_MS + 2_000) * 1_000_000n), String(BigInt(START_MS + 4_000) * 1_000_000n)],
        [spanIdForRun(F, 1), undefined, [previous(0)], String(BigInt(START_MS + 6_000) * 1_000_000n), String(BigInt(START_MS + 8_000) * 1_000_000n)],
        [spanIdForRun(F, 2), undefined, [previous(1)], String(BigInt(START_MS + 10_000) * 1_000_000n), String(BigInt(START_MS + 12_000) * 1_000_000n)],
      ]);
      assert.deepEqual(v.conflicting, []);
      assert.deepEqual(v.copies, []);
      assert.deepEqual(spans[2]!.attributes, {
        'prefect.run.id': F, 'prefect.run.type': 'flow', 'prefect.run.name': 'crimson-fox', 'prefect.run.count': 3, 'prefect.run.attempt': 2, 'prefect.tags': [],
        'prefect.state.type': 'FAILED', 'prefect.state.name': 'Failed', 'prefect.flow.name': 'etl', 'prefect.flow.id': flow.flowId,
        'cicd.pipeline.name': 'etl', 'cicd.pipeline.run.id': F, 'cicd.pipeline.result': 'failure', 'cicd.pipeline.run.url.full': `http://prefect.local:4200/runs/flow-run/${F}`,
        'error.type': 'Failed', 'prefect.run.wait_ms': 1_000,
      });
      // Only the rerun first seen was asked about, once.
      assert.deepEqual(prefect.restRequests.map((r) => `${r.method} ${r.path}`), [`GET /api/flow_run_states/?flow_run_id=${F}`]);
    } finally {
      await prefect.close();
    }
  });
});
