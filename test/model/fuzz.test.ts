/**
 * SPEC §5, malformed input, as a seeded structural fuzz: the demo's workload (several flows with
 * tasks, retries, a subflow, a run_deployment child, custom events, a failure, a crash, a
 * cancellation) with the state events of ONE chosen run corrupted in every way of
 * test/helpers/corrupt-events.ts. Whatever is done to that run: nothing throws; every other run's
 * spans are exactly (whole span records) those of the workload left alone; each corrupted frame
 * is skipped under its reason (counted, and logged with a bounded excerpt), kept, or dropped as a
 * duplicate, as the corruption says; and nothing the model outputs has a wrong type for OTLP. A
 * corrupted frame sent beside the run's events (not instead of one) changes no span at all, the
 * chosen run's included. A failure names its seed, run and corruption.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ATTR } from '../../src/model/attributes.js';
import { STATE_TYPES } from '../../src/model/classify.js';
import { SKIP_REASONS, type SkipReason } from '../../src/model/event.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { generateDemoWorkload, mulberry32 as prng } from '../../src/source/demo-workload.js';
import { CORRUPTIONS, freshIds, MALFORMED_FIRST, sentBeside, stateEventsByRun, type Corruption, type Ev, type Outcome } from '../helpers/corrupt-events.js';
import { runModel } from '../helpers/model-run.js';

const SEEDS = [1, 2, 3, 4];
/** The workloads lie in the past: the event clock, not the wall clock, decides. */
const START_MS = Date.UTC(2025, 0, 6, 9, 0, 0);
/** The longest excerpt of a skipped frame in a log line (160 characters and `…`), and a bound on its detail. */
const EXCERPT_MAX = 161;
const DETAIL_MAX = 200;

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const resourceOf = (e: Ev): string => str((e.resource as Ev)['prefect.resource.id']);

interface Target {
  readonly kind: 'leaf task run' | 'parent task run' | 'root flow run' | 'subflow run';
  readonly runId: string;
  readonly traceId: string;
  /** Indexes of its state events in the workload. */
  readonly states: readonly number[];
}

interface World {
  readonly seed: number;
  readonly events: readonly Ev[];
  readonly owners: ReadonlyMap<string, string>;
  readonly targets: readonly Target[];
}

function world(seed: number): World {
  const { events, taskRunOwners } = generateDemoWorkload({ seed, startMs: START_MS });
  const random = prng(seed + 500);
  const byRun = stateEventsByRun(events);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  // A leaf: a task run that no run hangs under (named in `__parents__`, or a subflow's tracking task).
  const parentsText = events.map((e) => JSON.stringify(((e.payload as Ev).task_run as Ev | undefined)?.task_inputs ?? null)).join('\n');
  const leaves = [...byRun].filter(([id, states]) => states.length >= 2 && resourceOf(events[states[0]!]!).startsWith('prefect.task-run.') && !parentsText.includes(id) && !taskRunOwners.has(id));
  const roots = [...byRun].filter(([, states]) => resourceOf(events[states[0]!]!).startsWith('prefect.flow-run.') && states.every((i) => !(events[i]!.related as Ev[]).some((r) => r['prefect.resource.role'] === 'task-run')));
  // A task run that nested task runs hang under (`__parents__`): they keep their place whatever is done to its events.
  const parents = [...byRun].filter(([id, states]) => states.length >= 2 && resourceOf(events[states[0]!]!).startsWith('prefect.task-run.') && parentsText.includes(id));
  // A subflow or run_deployment child: a flow run whose events name its parent's tracking task.
  const subflows = [...byRun].filter(([, states]) => resourceOf(events[states[0]!]!).startsWith('prefect.flow-run.') && (events[states[0]!]!.related as Ev[]).some((r) => r['prefect.resource.role'] === 'task-run'));
  assert.ok(leaves.length > 0 && parents.length > 0 && roots.length > 0 && subflows.length > 0, `seed ${seed}: a leaf task run, a parent task run, a root flow run and a subflow run to corrupt`);
  const [leafId, leafStates] = pick(leaves);
  const [rootId, rootStates] = pick(roots);
  const [parentId, parentStates] = pick(parents);
  const [subflowId, subflowStates] = pick(subflows);
  return {
    seed, events, owners: taskRunOwners,
    targets: [
      { kind: 'leaf task run', runId: leafId, traceId: traceOf(events, leafStates[0]!), states: leafStates },
      { kind: 'parent task run', runId: parentId, traceId: traceOf(events, parentStates[0]!), states: parentStates },
      { kind: 'root flow run', runId: rootId, traceId: rootId.replace(/-/g, ''), states: rootStates },
      { kind: 'subflow run', runId: subflowId, traceId: '', states: subflowStates },
    ],
  };
}

/** The task runs of a flow run: those whose events name it as their flow run. */
function tasksOf(events: readonly Ev[], flowRunId: string): Set<string> {
  const out = new Set<string>();
  for (const e of events) {
    const m = RUN_ID_RE.exec(resourceOf(e));
    if (m?.[1] === 'task' && (e.related as Ev[]).some((r) => r['prefect.resource.role'] === 'flow-run' && str(r['prefect.resource.id']).endsWith(flowRunId))) out.add(m[2]!);
  }
  return out;
}
const RUN_ID_RE = /^prefect\.(flow|task)-run\.([0-9a-f-]{36})$/;

/** A task run's trace: its flow run's (the demo's task runs all name one, and only root flows and their children are traced apart). */
function traceOf(events: readonly Ev[], stateIndex: number): string {
  const flowRun = (events[stateIndex]!.related as Ev[]).find((r) => r['prefect.resource.role'] === 'flow-run');
  return str(flowRun?.['prefect.resource.id']).slice('prefect.flow-run.'.length).replace(/-/g, '');
}

async function run(w: World, lines: readonly (Ev | string)[]) {
  return runModel(lines, {}, (id) => Promise.resolve(w.owners.get(id) ?? null));
}

/** A span record as a whole thing (every field), by span id; a span id exported twice is an error of its own. */
function canonical(spans: readonly SpanRecord[], label: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of spans) {
    assert.ok(!out.has(s.spanId), `${label}: span ${s.spanId} (${s.name}, run ${s.run.id}) exported twice`);
    out.set(s.spanId, JSON.stringify(s));
  }
  return out;
}

function assertSameSpans(actual: readonly SpanRecord[], expected: readonly SpanRecord[], keep: (s: SpanRecord) => boolean, label: string): void {
  const a = canonical(actual.filter(keep), label);
  const b = canonical(expected.filter(keep), `${label} (baseline)`);
  const ids = [...new Set([...a.keys(), ...b.keys()])].sort();
  const differing = ids.filter((id) => a.get(id) !== b.get(id));
  if (differing.length === 0) return;
  const first = differing[0]!;
  assert.deepEqual(JSON.parse(a.get(first) ?? 'null'), JSON.parse(b.get(first) ?? 'null'), `${label}: ${differing.length} of ${ids.length} spans differ from the workload's; the first is ${first}`);
}

/** The OTLP type of every attribute prefect-otel writes. */
const STRING_KEYS = new Set<string>([
  ATTR.RUN_ID, ATTR.RUN_TYPE, ATTR.RUN_NAME, ATTR.RUN_INCOMPLETE_REASON, ATTR.STATE_TYPE, ATTR.STATE_NAME, ATTR.STATE_MESSAGE, ATTR.STATE_ID,
  ATTR.STATE_FROM, ATTR.FLOW_NAME, ATTR.FLOW_ID, ATTR.DEPLOYMENT_NAME, ATTR.DEPLOYMENT_ID, ATTR.WORK_POOL_NAME, ATTR.WORK_POOL_TYPE,
  ATTR.WORK_QUEUE_NAME, ATTR.TASK_KEY, ATTR.PARENT_TASK_RUN_ID, ATTR.EVENT_ID, ATTR.EVENT_RESOURCE_ID, ATTR.EVENT_RESOURCE_NAME,
  ATTR.EVENT_PAYLOAD, ATTR.EVENTS_SUMMARISED_NAMES, ATTR.CICD_PIPELINE_NAME, ATTR.CICD_PIPELINE_RUN_ID, ATTR.CICD_PIPELINE_RESULT,
  ATTR.CICD_PIPELINE_RUN_URL, ATTR.CICD_TASK_NAME, ATTR.CICD_TASK_RUN_ID, ATTR.CICD_TASK_RUN_RESULT, ATTR.CICD_TASK_RUN_URL, ATTR.ERROR_TYPE, ATTR.LINK_KIND,
]);
/** Integers an OTLP `intValue` (int64) holds exactly. */
const INT_KEYS = new Set<string>([ATTR.RUN_COUNT, ATTR.RUN_WAIT_MS, ATTR.RUN_ATTEMPT, ATTR.TAGS_DROPPED, ATTR.EVENT_RECEIVED_LAG_MS, ATTR.EVENTS_SUMMARISED, ATTR.EVENTS_SUMMARISED_OTHER]);
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** 1970 to 2200, in µs: what OTLP's unsigned nanoseconds hold and the parser reads. */
const MAX_TIME_US = Date.UTC(2200, 0, 1) * 1000;

/** Every attribute has the type OTLP is told it has: no NaN or Infinity, no object where a string goes. */
function checkAttributes(attrs: Record<string, unknown>, where: string): void {
  for (const [key, v] of Object.entries(attrs)) {
    const at = `${where}: ${key} = ${JSON.stringify(v)?.slice(0, 80) ?? String(v)}`;
    if (STRING_KEYS.has(key)) assert.equal(typeof v, 'string', at);
    else if (INT_KEYS.has(key)) assert.ok(Number.isSafeInteger(v), `${at} is not an integer OTLP holds`);
    else if (key === ATTR.RUN_INCOMPLETE) assert.equal(typeof v, 'boolean', at);
    else if (key === ATTR.TAGS) assert.ok(Array.isArray(v) && v.every((t) => typeof t === 'string'), at);
    else assert.fail(`${at}: not an attribute prefect-otel writes`);
  }
  if (attrs[ATTR.STATE_TYPE] !== undefined) assert.ok((STATE_TYPES as readonly unknown[]).includes(attrs[ATTR.STATE_TYPE]), where);
}

const time = (us: unknown, where: string): void => assert.ok(Number.isSafeInteger(us) && (us as number) >= 0 && (us as number) < MAX_TIME_US, `${where}: time ${String(us)}`);

function checkTypes(spans: readonly SpanRecord[], lines: readonly Record<string, unknown>[], label: string): void {
  for (const s of spans) {
    const where = `${label}: span ${s.spanId} (${s.name})`;
    assert.match(s.traceId, /^[0-9a-f]{32}$/, where);
    assert.match(s.spanId, /^[0-9a-f]{16}$/, where);
    if (s.parentSpanId !== undefined) assert.match(s.parentSpanId, /^[0-9a-f]{16}$/, where);
    assert.ok(typeof s.name === 'string' && s.name.length > 0, where);
    time(s.startUs, where);
    time(s.endUs, where);
    assert.ok(s.endUs >= s.startUs, where);
    if (s.status.code === 'error') assert.equal(typeof s.status.message, 'string', where);
    assert.match(s.run.id, UUID_RE, where);
    checkAttributes(s.attributes, where);
    for (const e of s.events) {
      assert.ok(typeof e.name === 'string' && e.name.length > 0, where);
      time(e.timeUs, `${where} event ${e.name}`);
      checkAttributes(e.attributes, `${where} event ${e.name}`);
    }
    for (const l of s.links) {
      assert.match(`${l.traceId}/${l.spanId}`, /^[0-9a-f]{32}\/[0-9a-f]{16}$/, where);
      checkAttributes(l.attributes, `${where} link`);
    }
  }
  for (const l of lines) {
    if (!str(l.msg).startsWith('STLOGGING: ')) continue;
    const where = `${label}: ${str(l.msg).slice(0, 120)}`;
    assert.match(str(l.trace_id), /^[0-9a-f]{32}$/, where);
    assert.match(str(l.span_id), /^[0-9a-f]{16}$/, where);
    assert.match(str(l['prefect.run.id']), UUID_RE, where);
    assert.match(str(l['prefect.event.id']), UUID_RE, where);
    assert.match(str(l.occurred), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, where);
  }
}

/** Skips by reason as the corruptions say, each logged once with a bounded excerpt; no event made the model throw. */
function checkAccounting(r: Awaited<ReturnType<typeof run>>, baseline: Awaited<ReturnType<typeof run>>, outcomes: readonly Outcome[], label: string): void {
  const expected = Object.fromEntries(SKIP_REASONS.map((reason) => [reason, outcomes.filter((o) => o === reason).length])) as Record<SkipReason, number>;
  assert.deepEqual(r.pipeline.counters.skipped, expected, `${label}: skips by reason`);
  assert.equal(r.pipeline.counters.duplicates, baseline.pipeline.counters.duplicates + outcomes.filter((o) => o === 'duplicate').length, `${label}: duplicates`);
  const c = r.pipeline.counters;
  assert.equal(c.received, c.accepted + c.unrelated + c.duplicates + Object.values(c.skipped).reduce((n, k) => n + k, 0), `${label}: every frame counted once`);
  assert.deepEqual(r.lines.filter((l) => l.level === 50), [], `${label}: no error (an event the model threw on)`);
  const skipLines = r.lines.filter((l) => l.msg === 'skipped malformed input' || str(l.msg).startsWith('skipped malformed input ('));
  assert.deepEqual(
    Object.fromEntries(SKIP_REASONS.map((reason) => [reason, skipLines.filter((l) => l.reason === reason).length])),
    expected,
    `${label}: one log line per skip`,
  );
  for (const l of skipLines) {
    assert.ok(typeof l.excerpt === 'string' && l.excerpt.length > 0 && l.excerpt.length <= EXCERPT_MAX, `${label}: excerpt ${JSON.stringify(l.excerpt)?.slice(0, 300)}`);
    assert.ok(typeof l.detail === 'string' && l.detail.length <= DETAIL_MAX, `${label}: detail ${JSON.stringify(l.detail)?.slice(0, 300)}`);
  }
}

/** The corruptions in a seeded order, dealt out in rounds of one per state event of the target. */
function rounds(all: readonly Corruption[], perRound: number, random: () => number): Corruption[][] {
  const shuffled = [...all];
  for (let i = shuffled.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  const out: Corruption[][] = [];
  for (let i = 0; i < shuffled.length; i += perRound) out.push(shuffled.slice(i, i + perRound));
  return out;
}

describe('SPEC §5 malformed input: one run corrupted in every way JSON allows and Prefect forbids', () => {
  const worlds = SEEDS.map(world);
  const baselines = new Map<number, ReturnType<typeof run>>();
  const baseline = (w: World): ReturnType<typeof run> => {
    let b = baselines.get(w.seed);
    if (b === undefined) baselines.set(w.seed, (b = run(w, w.events)));
    return b;
  };

  it('the baseline: the workload alone gives well-typed spans, nothing skipped', async () => {
    for (const w of worlds) {
      const b = await baseline(w);
      checkTypes(b.spans, b.lines, `seed ${w.seed}`);
      checkAccounting(b, b, [], `seed ${w.seed}`);
      for (const t of w.targets) assert.ok(b.spans.some((s) => s.run.id === t.runId), `seed ${w.seed}: the ${t.kind} has a span`);
    }
  });

  // One test a seed: each is seconds of work.
  for (const w of worlds) it(`seed ${w.seed}: each state event of the run replaced by a corrupted frame: the other runs keep their spans exactly, every frame is accounted for`, async () => {
    const b = await baseline(w);
    for (const t of w.targets) {
      const random = prng(w.seed * 31 + t.states.length);
      const fresh = freshIds(random);
      // A task run's span is its own (the task runs under it keep theirs); a flow run's tasks take their trace and ends from
      // it (a task still open when its flow run ends is ended with it): a subflow's tasks go with it, a root's whole trace.
      const other = t.kind === 'root flow run' ? (s: SpanRecord) => s.traceId !== t.traceId
        : t.kind === 'subflow run' ? (s: SpanRecord) => s.run.id !== t.runId && !tasksOf(w.events, t.runId).has(s.run.id)
          : (s: SpanRecord) => s.run.id !== t.runId;
      for (const round of rounds(CORRUPTIONS, t.states.length, random)) {
        const label = `seed ${w.seed}, ${t.kind} ${t.runId}: ${round.map((c) => c.name).join(' | ')}`;
        const replaced = new Map(round.map((c, k) => [t.states[k]!, c]));
        // Half the frames in the `{"type":"event","event":…}` envelope the server sends.
        const envelope = (l: string): string => (l.startsWith('{"type"') || random() < 0.5 ? l : `{"type":"event","event":${l}}`);
        const lines = w.events.flatMap((e, i): (Ev | string)[] => replaced.get(i)?.lines(e, fresh()).map(envelope) ?? [e]);
        const r = await run(w, lines);
        assertSameSpans(r.spans, b.spans, other, label);
        checkTypes(r.spans, r.lines, label);
        checkAccounting(r, b, round.map((c) => c.outcome), label);
      }
    }
  });

  it('malformed frames sent beside the run\'s events, some with an event\'s own id before it: no span changes, the chosen run\'s included', async () => {
    const malformed = [...CORRUPTIONS.filter((c) => c.outcome !== 'kept'), ...MALFORMED_FIRST];
    for (const w of worlds) {
      const b = await baseline(w);
      for (const t of w.targets) {
        const random = prng(w.seed * 17 + 1);
        const lines = sentBeside(w.events, t.states, malformed, random);
        const label = `seed ${w.seed}, ${t.kind} ${t.runId}: ${malformed.length} malformed frames beside its events`;
        const r = await run(w, lines);
        assertSameSpans(r.spans, b.spans, () => true, label);
        checkTypes(r.spans, r.lines, label);
        checkAccounting(r, b, malformed.map((c) => c.outcome), label);
      }
    }
  });
});
