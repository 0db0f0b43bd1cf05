/**
 * SPEC §5, as properties. The workload is the demo's (flows with tasks, retries, a subflow, a
 * run_deployment child, custom events, a failure, a crash, a cancellation), each failed flow run
 * re-run from the UI. Whatever the stream does within what the model promises to absorb, the spans
 * are those of the workload delivered once, in order: the same set, each span whole (ids, parent,
 * name, kind, status, times, attributes, links) with the same list of span events. The promises:
 * duplicates within the dedupe window; reordering of events less than half the settle window apart
 * (a finished run waits that long for stragglers; events further apart are late by design); task
 * events after their flow run ended, within half the task grace; restarts in the middle, with the
 * resume margin read again. Each perturbation runs under a few fixed seeds; a failure names its seed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline, type Pipeline } from '../../src/pipeline.js';
import { generateDemoWorkload, mulberry32 as prng, type DemoWorkload } from '../../src/source/demo-workload.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';

type Ev = Record<string, unknown>;

const SEEDS = [1, 2, 3, 4, 5, 6, 7, 8];
const config = resolveConfig({ tracesExporter: 'none' }, {});
const { settleMs, taskGraceMs, dedupeWindowMs } = config.model;
/**
 * How far apart (by the clock the pipeline keeps: `occurred`, bounded by `received`) two events may
 * be and still be swapped. A finished run waits `settleMs` for its stragglers from the time its
 * terminal state was taken; half of it leaves room for the clock's own steps (it is checked every
 * 100 ms of event time).
 */
const REORDER_BOUND_MS = settleMs / 2;
/** How far after its flow run's terminal state a task's late events are put (the grace starts then). */
const LATE_BOUND_MS = taskGraceMs / 2;
const quiet = createLogger({ level: 'silent', format: 'json' });
/** The workloads lie in the past: on the wall clock (the restarts) no event is ahead of now. */
const START_MS = Date.UTC(2025, 0, 6, 9, 0, 0);


const str = (v: unknown): string => (typeof v === 'string' ? v : '');
/** The time the pipeline's clock takes from an event (ms). */
const clockOf = (e: Ev): number => Math.min(Date.parse(str(e.occurred)), e.received === undefined ? Infinity : Date.parse(str(e.received)));
const resourceOf = (e: Ev): string => str((e.resource as Ev)['prefect.resource.id']);
const relatedOf = (e: Ev): Ev[] => e.related as Ev[];

interface World {
  readonly workload: DemoWorkload;
  readonly events: readonly Ev[];
  /** Tracking task → its subflow's (or run_deployment child's) parent flow run; flow run → its tracking task. */
  readonly owners: ReadonlyMap<string, string>;
  readonly flowParents: ReadonlyMap<string, string>;
}

/** A time as the server writes it, µs kept. */
const isoUs = (us: number): string => `${new Date(Math.floor(us / 1000)).toISOString().slice(0, 19)}.${String(us % 1_000_000).padStart(6, '0')}Z`;
const usOf = (text: string): number => Date.parse(text.slice(0, 19) + 'Z') * 1000 + Number((/\.(\d{1,6})/.exec(text)?.[1] ?? '0').padEnd(6, '0'));

/** When a rerun's states occur: its Scheduled this long after the Failed, each next state `stepMs` after it. */
interface RerunTiming {
  readonly afterMs: number;
  readonly stepMs: number;
}
/** From the UI, a minute and a half later. */
const RERUN_LATER: RerunTiming = { afterMs: 90_000, stepMs: 2_000 };
/**
 * By an automation, at once: all the rerun's states up to its Running lie within REORDER_BOUND_MS of
 * the Failed, so a shuffle can put them before it.
 */
const RERUN_AT_ONCE: RerunTiming = { afterMs: REORDER_BOUND_MS / 8, stepMs: REORDER_BOUND_MS / 8 };

/**
 * Every flow run that failed is re-run (Scheduled from Failed, Pending, Running, Completed): a second
 * span of the run, in arrival order by `received`.
 */
function withReruns(events: readonly Ev[], random: () => number, timing: RerunTiming): Ev[] {
  const hex = (n: number): string => Array.from({ length: n }, () => Math.floor(random() * 16).toString(16)).join('');
  const added: Ev[] = [];
  for (const failed of events.filter((e) => str(e.event) === 'prefect.flow-run.Failed' && resourceOf(e).startsWith('prefect.flow-run.'))) {
    const steps: [string, string, string][] = [['SCHEDULED', 'Scheduled', 'FAILED'], ['PENDING', 'Pending', 'SCHEDULED'], ['RUNNING', 'Running', 'PENDING'], ['COMPLETED', 'Completed', 'RUNNING']];
    steps.forEach(([type, name, from], i) => {
      const occurredUs = usOf(str(failed.occurred)) + (timing.afterMs + i * timing.stepMs) * 1000 + Math.floor(random() * 1000);
      const resource = { ...(failed.resource as Ev), 'prefect.state-type': type, 'prefect.state-name': name, 'prefect.state-message': '', 'prefect.run-count': String(i >= 2 ? 2 : 1) };
      added.push({
        ...failed, id: `${hex(8)}-${hex(4)}-7${hex(3)}-8${hex(3)}-${hex(12)}`, event: `prefect.flow-run.${name}`, resource, follows: null,
        // Received after the Failed: in arrival order, the rerun comes after it.
        occurred: isoUs(occurredUs), received: isoUs(Math.max(occurredUs + 15_000, usOf(str(failed.received ?? failed.occurred)) + (i + 1) * 1000)),
        payload: { intended: { from, to: type }, initial_state: { type: from, name: from.charAt(0) + from.slice(1).toLowerCase() }, validated_state: { type, name } },
      });
    });
  }
  return [...events, ...added].map((e, i) => ({ e, i })).sort((x, y) => usOf(str(x.e.received)) - usOf(str(y.e.received)) || x.i - y.i).map((x) => x.e);
}

function world(seed: number, rerun: RerunTiming = RERUN_LATER): World {
  const demo = generateDemoWorkload({ seed, startMs: START_MS });
  const workload = { ...demo, events: withReruns(demo.events, prng(seed + 1000), rerun) };
  const flowParents = new Map<string, string>();
  for (const e of workload.events) {
    const r = resourceOf(e);
    if (!r.startsWith('prefect.flow-run.')) continue;
    const tracking = relatedOf(e).find((x) => x['prefect.resource.role'] === 'task-run');
    if (tracking !== undefined) flowParents.set(r.slice('prefect.flow-run.'.length), str(tracking['prefect.resource.id']).slice('prefect.task-run.'.length));
  }
  return { workload, events: workload.events, owners: workload.taskRunOwners, flowParents };
}

/**
 * `clock`: `event` (replay's) makes the settle window, the task grace and the idle timeout pass with
 * the events, so that reordering and lateness are measured against them; `wall` is `watch`'s.
 */
function pipeline(w: World, spans: SpanRecord[], clock: 'event' | 'wall' = 'event'): Pipeline {
  return createPipeline({
    config,
    logger: quiet,
    clock,
    delivery: null,
    onSpan: (s) => spans.push(s),
    resolveOwner: (id) => Promise.resolve(w.owners.get(id) ?? null),
    resolveFlowParent: (id) => Promise.resolve(w.flowParents.get(id) ?? null),
  });
}

/** Events in order, each lookup answered before the next event (as a server on the same network does). */
async function feed(p: Pipeline, events: readonly Ev[]): Promise<void> {
  for (const e of events) {
    p.ingest(JSON.stringify(e));
    await new Promise((r) => setImmediate(r));
  }
}

async function run(w: World, events: readonly Ev[], clock: 'event' | 'wall' = 'event'): Promise<SpanRecord[]> {
  const spans: SpanRecord[] = [];
  const p = pipeline(w, spans, clock);
  await feed(p, events);
  await p.finish('end_of_input');
  return spans;
}

/** The spans as whole things, by span id; a span id exported twice is an error of its own. */
function canonical(spans: readonly SpanRecord[], label: string): Map<string, unknown> {
  const out = new Map<string, unknown>();
  for (const s of spans) {
    assert.ok(!out.has(s.spanId), `${label}: span ${s.spanId} (${s.name}, run ${s.run.id}) exported twice`);
    out.set(s.spanId, {
      traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId, name: s.name, kind: s.kind, status: s.status,
      startUs: s.startUs, endUs: s.endUs, attributes: s.attributes, links: s.links, droppedEvents: s.droppedEvents, run: s.run,
      events: s.events.map((e) => ({ name: e.name, timeUs: e.timeUs, attributes: e.attributes })),
    });
  }
  return out;
}

/** Compares as whole things; on a difference, says which spans differ first (the whole diff of everything is unreadable). */
function assertSameSpans(actual: readonly SpanRecord[], expected: readonly SpanRecord[], label: string): void {
  const a = canonical(actual, label);
  const b = canonical(expected, 'baseline');
  const ids = [...new Set([...a.keys(), ...b.keys()])].sort();
  const differing = ids.filter((id) => JSON.stringify(a.get(id)) !== JSON.stringify(b.get(id)));
  if (differing.length === 0) return;
  const first = differing[0]!;
  assert.deepEqual(a.get(first), b.get(first), `${label}: ${differing.length} of ${ids.length} spans differ from the in-order baseline; the first is ${first}`);
  assert.deepEqual([...a.entries()].sort(), [...b.entries()].sort(), label);
}

// --- perturbations ---

function everyEventTwice(events: readonly Ev[]): Ev[] {
  return events.flatMap((e) => [e, e]);
}

/** A random 20% sent again at a random later place, within the dedupe window of the first copy. */
function someEventsAgainLater(events: readonly Ev[], random: () => number): Ev[] {
  const extra: Ev[][] = events.map(() => []);
  events.forEach((e, i) => {
    if (random() >= 0.2) return;
    let last = i;
    while (last + 1 < events.length && clockOf(events[last + 1]!) - clockOf(e) < dedupeWindowMs / 2) last += 1;
    const at = i + Math.floor(random() * (last - i + 1));
    extra[at]!.push(e);
  });
  return events.flatMap((e, i) => [e, ...extra[i]!]);
}

/**
 * Shuffled within windows of at most `k` consecutive events whose clocks lie less than
 * REORDER_BOUND_MS apart: no event is delivered after one that much later.
 */
function shuffledWithin(events: readonly Ev[], k: number, random: () => number): Ev[] {
  const out: Ev[] = [];
  let window: Ev[] = [];
  const flush = (): void => {
    for (let i = window.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [window[i], window[j]] = [window[j]!, window[i]!];
    }
    out.push(...window);
    window = [];
  };
  let low = Infinity;
  let high = -Infinity;
  for (const e of events) {
    const t = clockOf(e);
    if (window.length >= k || Math.max(high, t) - Math.min(low, t) >= REORDER_BOUND_MS) {
      flush();
      low = Infinity;
      high = -Infinity;
    }
    low = Math.min(low, t);
    high = Math.max(high, t);
    window.push(e);
  }
  flush();
  return out;
}

/**
 * For a random half of the task runs that end before their flow run: their terminal state (and,
 * for a random half of those, every event of the task) is delivered after the flow run's terminal
 * state, at a random place within LATE_BOUND_MS of it.
 */
function lateTaskEvents(events: readonly Ev[], random: () => number): Ev[] {
  const flowEnd = new Map<string, number>();
  events.forEach((e, i) => {
    const r = resourceOf(e);
    const id = r.slice('prefect.flow-run.'.length);
    // The first attempt's end (a rerun ends again later).
    if (r.startsWith('prefect.flow-run.') && /\.(Completed|Failed|Crashed|Cancelled|Skipped)$/.test(str(e.event)) && !flowEnd.has(id)) flowEnd.set(id, i);
  });
  const moved = new Map<number, number>();
  const taskEvents = new Map<string, number[]>();
  events.forEach((e, i) => {
    const r = resourceOf(e);
    if (r.startsWith('prefect.task-run.')) taskEvents.set(r, [...(taskEvents.get(r) ?? []), i]);
  });
  for (const [, indexes] of taskEvents) {
    const last = indexes.at(-1)!;
    const e = events[last]!;
    if (!/\.(Completed|Failed|Crashed|Cancelled|Cached)$/.test(str(e.event)) || random() >= 0.5) continue;
    const flowRunId = str(relatedOf(e).find((x) => x['prefect.resource.role'] === 'flow-run')?.['prefect.resource.id']).slice('prefect.flow-run.'.length);
    const end = flowEnd.get(flowRunId);
    if (end === undefined || end < last) continue;
    let until = end;
    while (until + 1 < events.length && clockOf(events[until + 1]!) - clockOf(events[end]!) < LATE_BOUND_MS) until += 1;
    const to = end + Math.floor(random() * (until - end + 1));
    for (const i of random() < 0.5 ? [last] : indexes) moved.set(i, to);
  }
  const after: Ev[][] = events.map(() => []);
  for (const [from, to] of [...moved].sort((x, y) => x[0] - y[0])) after[to]!.push(events[from]!);
  return events.flatMap((e, i) => [...(moved.has(i) ? [] : [e]), ...after[i]!]);
}

describe('SPEC §5 guarantees under an adversarial stream', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prefect-otel-guarantees-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const baselines = new Map<number, Promise<{ w: World; spans: SpanRecord[] }>>();
  const baseline = (seed: number): Promise<{ w: World; spans: SpanRecord[] }> => {
    let b = baselines.get(seed);
    if (b === undefined) {
      const w = world(seed);
      baselines.set(seed, (b = run(w, w.events).then((spans) => ({ w, spans }))));
    }
    return b;
  };

  it('the baseline itself: one span per run attempt, every run of the workload, each failed flow run once more for its rerun', async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      const runs = new Set(w.events.map(resourceOf).filter((r) => /^prefect\.(flow|task)-run\./.test(r)));
      const reruns = w.events.filter((e) => str(e.event) === 'prefect.flow-run.Scheduled' && str((e.payload as { intended: Ev }).intended.from) === 'FAILED').map((e) => resourceOf(e).slice('prefect.flow-run.'.length));
      canonical(spans, `seed ${seed}`);
      assert.ok(reruns.length > 0, `seed ${seed}: no rerun`);
      assert.deepEqual(
        spans.map((s) => `${s.run.id}#${s.run.attempt}`).sort(),
        [...[...runs].map((r) => `${r.replace(/^prefect\.(flow|task)-run\./, '')}#0`), ...reruns.map((id) => `${id}#1`)].sort(),
        `seed ${seed}`,
      );
    }
  });

  it('every event delivered twice', async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      assertSameSpans(await run(w, everyEventTwice(w.events)), spans, `every event twice, seed ${seed}`);
    }
  });

  it('a random 20% of the events delivered again later, within the dedupe window', async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      assertSameSpans(await run(w, someEventsAgainLater(w.events, prng(seed))), spans, `20% again later, seed ${seed}`);
    }
  });

  it(`events shuffled within windows of k = 2..8 events less than ${REORDER_BOUND_MS} ms apart`, async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      const random = prng(seed);
      for (let k = 2; k <= 8; k++) assertSameSpans(await run(w, shuffledWithin(w.events, k, random)), spans, `shuffled within ${k}, seed ${seed}`);
    }
  });

  it(`reruns started at once: their first states shuffled with the Failed before them, within windows of k = 2..8 events less than ${REORDER_BOUND_MS} ms apart`, async () => {
    let ahead = 0;
    for (const seed of SEEDS) {
      const w = world(seed, RERUN_AT_ONCE);
      const spans = await run(w, w.events);
      const reruns = w.events.filter((e) => str(e.event) === 'prefect.flow-run.Scheduled' && str((e.payload as { intended: Ev }).intended.from) === 'FAILED').map((e) => resourceOf(e));
      assert.deepEqual(spans.filter((s) => reruns.includes(`prefect.flow-run.${s.run.id}`)).map((s) => `${s.run.id}#${s.run.attempt}`).sort(), reruns.flatMap((r) => [0, 1].map((a) => `${r.slice('prefect.flow-run.'.length)}#${a}`)).sort(), `seed ${seed}`);
      const random = prng(seed);
      for (let k = 2; k <= 8; k++) {
        const events = shuffledWithin(w.events, k, random);
        // How many of the reruns' states came before the Failed they leave: what this test is about.
        const failedAt = new Map(events.flatMap((e, i) => (str(e.event) === 'prefect.flow-run.Failed' && reruns.includes(resourceOf(e)) ? [[resourceOf(e), i] as const] : [])));
        ahead += events.filter((e, i) => reruns.includes(resourceOf(e)) && str(e.event) !== 'prefect.flow-run.Failed' && str(e.event) !== 'prefect.flow-run.Completed' && Date.parse(str(e.occurred)) > Date.parse(str(events[failedAt.get(resourceOf(e))!]!.occurred)) && i < failedAt.get(resourceOf(e))!).length;
        assertSameSpans(await run(w, events), spans, `reruns at once, shuffled within ${k}, seed ${seed}`);
      }
    }
    assert.ok(ahead >= 10, `only ${ahead} rerun states came before their Failed`);
  });

  it(`task events delivered after their flow run ended, within ${LATE_BOUND_MS} ms`, async () => {
    for (const seed of SEEDS) {
      const { w, spans } = await baseline(seed);
      assertSameSpans(await run(w, lateTaskEvents(w.events, prng(seed))), spans, `late task events, seed ${seed}`);
    }
  });

  it('restarts in the middle, on the wall clock as `watch` runs: a periodic save, lookups still out at the stop, the resume margin read again', async () => {
    for (const seed of SEEDS) {
      const w = world(seed);
      const expected = await run(w, w.events, 'wall');
      const random = prng(seed);
      const cuts = [0, 1].map(() => 1 + Math.floor(random() * (w.events.length - 2))).sort((x, y) => x - y);
      const label = `restarts after events ${cuts.join(' and ')} of ${w.events.length}, seed ${seed}`;
      const store = createStateStore(join(dir, `restart-${seed}`, 'state.json'));
      const spans: SpanRecord[] = [];
      let margin: Ev[] = [];
      let from = 0;
      for (const cut of [...cuts, w.events.length]) {
        const p = pipeline(w, spans, 'wall');
        if (from > 0) {
          await loadState(store, p, Date.now(), quiet);
          // The reconnect's backfill: what the server stored from the cursor minus the margin on, by `occurred`.
          const sinceMs = (p.cursorUs ?? 0) / 1000 - config.live.resumeMarginMs;
          margin = w.events.slice(0, from).filter((e) => Date.parse(str(e.occurred)) >= sinceMs).sort((x, y) => Date.parse(str(x.occurred)) - Date.parse(str(y.occurred)));
        }
        const writer = new StateWriter(store, p);
        const slice = w.events.slice(from, cut);
        const half = Math.floor(slice.length / 2);
        await feed(p, [...margin, ...slice.slice(0, half)]);
        if (cut === w.events.length) {
          await feed(p, slice.slice(half));
          await p.finish('end_of_input');
          break;
        }
        await writer.save(false);
        // The rest without waiting for lookups: some are still out when the process stops.
        for (const e of slice.slice(half)) p.ingest(JSON.stringify(e));
        // As `watch` stops: tick, seal, the last save.
        p.tick();
        p.seal();
        await writer.save(true);
        from = cut;
      }
      assertSameSpans(spans, expected, label);
    }
  });
});
