import type { StateType } from '../model/classify.js';

/**
 * The embedded workload of `prefect-otel demo`: a few Prefect 3 deployment runs with their task runs,
 * an in-process subflow, a `run_deployment` child, retries, a failure, a crash, a cancellation and
 * the events around them, in the exact shapes a Prefect server delivers on `/api/events/out`
 * (flow-run states as the server's orchestration emits them, task-run states as the client engine
 * and its EventsWorker emit them; see shared/reference/prefect-event-stream.md §4). Deterministic
 * for a given seed: nothing here reads the clock.
 */
export interface DemoWorkload {
  /**
   * Events in the order the server would deliver them (arrival order, NOT sorted by `occurred`: late
   * task events arrive after their flow's terminal event, and `received` says so). Bare ReceivedEvents.
   */
  readonly events: readonly Record<string, unknown>[];
  /** What `GET /api/task_runs/{id}` answers for the subflow / run_deployment tracking task runs: id → flow_run_id. */
  readonly taskRunOwners: ReadonlyMap<string, string>;
  /** Human summary for the demo's header line. */
  readonly summary: string;
}

export interface DemoWorkloadOptions {
  readonly seed?: number;
  /** When the first root flow run was scheduled to start (ms since the epoch). */
  readonly startMs?: number;
  /** How many root flow runs (default 4: one of each scenario; more repeat them 15 minutes apart). */
  readonly flows?: number;
  /**
   * Widen every `task.map` to between min and max runs (benchmarks: flows of 10–50 tasks). Default:
   * the fixed widths of the demo (3–10).
   */
  readonly mapWidth?: readonly [number, number];
}

const DEFAULT_SEED = 7;
const DEFAULT_START_MS = Date.UTC(2026, 10, 25, 9, 0, 0);
const DEFAULT_FLOWS = 4;
const PREFECT_VERSION = '3.4.11';
const SEC = 1_000_000;
const MS = 1_000;
/** Prefect sets `follows` only when the previous state is less than 5 minutes old. */
const TIGHT_TIMING_US = 5 * 60 * SEC;
const ROUND_GAP_US = 15 * 60 * SEC;
const TERMINAL: ReadonlySet<StateType> = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED']);
const ADJECTIVES = ['amber', 'crimson', 'dapper', 'eager', 'fuzzy', 'gentle', 'hidden', 'icy', 'jolly', 'khaki', 'lucky', 'mellow', 'nimble', 'olive', 'proud', 'quiet', 'rustic', 'silver', 'tidy', 'witty'];
const ANIMALS = ['owl', 'fox', 'otter', 'lynx', 'heron', 'badger', 'marten', 'ibis', 'koala', 'lemur', 'mole', 'newt', 'panda', 'quail', 'raven', 'seal', 'tapir', 'vole', 'wren', 'yak'];

type Json = Record<string, unknown>;
interface Ref { readonly id: string; readonly name: string }
interface Pool extends Ref { readonly type: string }
interface Deployment extends Ref { readonly flow: Ref; readonly tags: readonly string[]; readonly queue: Ref; readonly pool: Pool }
interface State { readonly id: string; readonly type: StateType; readonly name: string; readonly message: string; readonly us: number; readonly details: Json }
interface FlowRun extends Ref {
  readonly flow: Ref; readonly deployment: Deployment | undefined; readonly parentTask: Ref | undefined; readonly creator: Ref | undefined; readonly tags: readonly string[];
  runCount: number; state?: State;
}
interface TaskRun extends Ref {
  readonly key: string; readonly dynamicKey: string; readonly tags: readonly string[]; readonly flowRun: FlowRun; readonly inputs: Json; readonly retries: number; readonly expectedUs: number;
  runCount: number; startUs?: number; endUs?: number; runningSinceUs?: number; totalUs: number; state?: State;
}
interface TaskPlan { readonly inputs?: Json; readonly parent?: TaskRun; readonly tags?: readonly string[]; readonly retries?: number }
/** How a task run ends: [type, name, message], or null to leave it running (the process died). */
type Outcome = readonly [StateType, string, string] | null;
const COMPLETED: Outcome = ['COMPLETED', 'Completed', ''];

/** mulberry32: a tiny seeded PRNG, plenty for simulated timings and ids. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Pydantic JSON (`…Z`) or Python `isoformat()` (`…+00:00`); both drop the fraction when it is zero. */
function iso(us: number, zone: 'Z' | '+00:00' = 'Z'): string {
  const whole = Math.floor(us / SEC);
  const frac = us - whole * SEC;
  return `${new Date(whole * 1000).toISOString().slice(0, 19)}${frac === 0 ? '' : `.${String(frac).padStart(6, '0')}`}${zone}`;
}

class Sim {
  readonly arrivals: { recvUs: number; seq: number; event: Json }[] = [];
  readonly owners = new Map<string, string>();
  readonly counts = { roots: 0, children: 0, subflows: 0, tasks: 0 };
  /** Names of the terminal flow-run states reached, in order of first appearance. */
  readonly endings = new Set<string>();
  /** When each flow run's terminal event arrives, and each task run's: [flow run id, received]. */
  readonly flowEnds = new Map<string, number>();
  readonly taskEnds: [string, number][] = [];
  private readonly random: () => number;
  private readonly slugs = new Set<string>();
  private readonly keys = new Map<string, string>();

  constructor(seed: number, readonly mapWidth?: readonly [number, number]) { this.random = mulberry32(seed); }
  float(min: number, max: number): number { return min + (max - min) * this.random(); }
  /** A duration in whole microseconds between `min` and `max` seconds. */
  secs(min: number, max: number): number { return Math.round(this.float(min, max) * SEC); }
  hex(n: number): string { return Array.from({ length: n }, () => Math.floor(this.random() * 16).toString(16)).join(''); }

  /** Version 7 (time-ordered, as Prefect 3 makes run, state and event ids) when `atUs` is given, else version 4. */
  uuid(atUs?: number): string {
    const head = atUs === undefined ? this.hex(12) : Math.floor(atUs / MS).toString(16).padStart(12, '0');
    const variant = '89ab'.charAt(Math.floor(this.random() * 4));
    return `${head.slice(0, 8)}-${head.slice(8, 12)}-${atUs === undefined ? 4 : 7}${this.hex(3)}-${variant}${this.hex(3)}-${this.hex(12)}`;
  }

  /** Prefect's two-word run names (`crimson-fox`), unique within the workload. */
  slug(): string {
    let s = '';
    for (let tries = 0; s === '' || (this.slugs.has(s) && tries < 1000); tries++) {
      s = `${ADJECTIVES[Math.floor(this.random() * ADJECTIVES.length)] ?? 'quiet'}-${ANIMALS[Math.floor(this.random() * ANIMALS.length)] ?? 'owl'}`;
    }
    if (this.slugs.has(s)) s = `${s}-${this.hex(4)}`;
    this.slugs.add(s);
    return s;
  }

  /** `extract-9a8b7c6d`: the function's name and a hash of its source, the same for every run. */
  taskKey(name: string): string {
    let key = this.keys.get(name);
    if (key === undefined) this.keys.set(name, (key = `${name}-${this.hex(8)}`));
    return key;
  }

  emit(name: string, occurredUs: number, resource: Json, related: Json[], payload: Json, id: string, follows: string | null, recvUs: number): void {
    // Cloned so that no two events share a nested object.
    const event = structuredClone({ occurred: iso(occurredUs), event: name, resource, related, payload, id, follows, received: iso(recvUs) });
    this.arrivals.push({ recvUs, seq: this.arrivals.length, event });
  }
}

const relatedTo = (kind: string, obj: Ref, role = kind, extra: Json = {}): Json => ({
  'prefect.resource.id': `prefect.${kind}.${obj.id}`, 'prefect.resource.role': role, 'prefect.resource.name': obj.name, ...extra,
});
const tagsRelated = (tags: Iterable<string>, exclude: ReadonlySet<string> = new Set()): Json[] =>
  [...new Set(tags)].sort().map((t) => `prefect.tag.${t}`).filter((id) => !exclude.has(id)).map((id) => ({ 'prefect.resource.id': id, 'prefect.resource.role': 'tag' }));
const followsOf = (prev: State | undefined, us: number): string | null => (prev !== undefined && us - prev.us < TIGHT_TIMING_US ? prev.id : null);
const at = (run: { readonly state?: State }): number => run.state?.us ?? 0;
const endOf = (runs: readonly TaskRun[]): number => Math.max(...runs.map(at));
const dep = (tr: TaskRun): Json => ({ input_type: 'task_run', id: tr.id });

/** Server side (§4a): flow, deployment, work-queue, work-pool (with its type), parent task run, tags, creator. */
function flowRelated(fr: FlowRun): Json[] {
  const d = fr.deployment;
  const out = [relatedTo('flow', fr.flow)];
  if (d !== undefined) out.push(relatedTo('deployment', d), relatedTo('work-queue', d.queue), relatedTo('work-pool', d.pool, 'work-pool', { 'prefect.work-pool.type': d.pool.type }));
  if (fr.parentTask !== undefined) out.push(relatedTo('task-run', fr.parentTask));
  out.push(...tagsRelated([...fr.tags, ...(d?.tags ?? [])]));
  if (fr.creator !== undefined) out.push(relatedTo('automation', fr.creator, 'creator'));
  return out;
}

/** Client side: what the EventsWorker appends from the run context (§4b), skipping ids already on the event. */
function contextRelated(fr: FlowRun, tr: TaskRun | undefined, exclude: ReadonlySet<string>): Json[] {
  const d = fr.deployment;
  const objects: [string, Ref, readonly string[]][] = [['flow-run', fr, fr.tags]];
  if (tr !== undefined) objects.push(['task-run', tr, tr.tags]);
  objects.push(['flow', fr.flow, []]);
  if (d !== undefined) objects.push(['deployment', d, d.tags], ['work-queue', d.queue, []], ['work-pool', d.pool, []]);
  const out: Json[] = [];
  const tags: string[] = [];
  for (const [kind, obj, objTags] of objects) {
    if (exclude.has(`prefect.${kind}.${obj.id}`)) continue;
    out.push(relatedTo(kind, obj));
    tags.push(...objTags);
  }
  return [...out, ...tagsRelated(tags, exclude)];
}

function flowState(sim: Sim, fr: FlowRun, type: StateType, name: string, us: number, message = ''): void {
  const prev = fr.state;
  if (type === 'RUNNING' && prev?.type !== 'PAUSED') fr.runCount += 1;
  const state: State = { id: sim.uuid(us), type, name, message, us, details: {} };
  // state_payload(): type, then name and message only when set.
  const brief = (s: State | undefined): Json | null => (s === undefined ? null : { type: s.type, name: s.name, ...(s.message === '' ? {} : { message: s.message }) });
  const resource = {
    'prefect.resource.id': `prefect.flow-run.${fr.id}`, 'prefect.resource.name': fr.name, 'prefect.run-count': String(fr.runCount),
    'prefect.state-message': message, 'prefect.state-name': name, 'prefect.state-timestamp': iso(us, '+00:00'), 'prefect.state-type': type,
  };
  const payload = { intended: { from: prev?.type ?? null, to: type }, initial_state: brief(prev), validated_state: brief(state) };
  const recvUs = us + sim.secs(0.003, 0.03);
  sim.emit(`prefect.flow-run.${name}`, us, resource, flowRelated(fr), payload, state.id, followsOf(prev, us), recvUs);
  if (TERMINAL.has(type)) {
    sim.endings.add(name);
    sim.flowEnds.set(fr.id, recvUs);
  }
  fr.state = state;
}

function taskState(sim: Sim, tr: TaskRun, type: StateType, name: string, us: number, opts: { message?: string; details?: Json; recvUs?: number } = {}): void {
  const prev = tr.state;
  if (tr.runningSinceUs !== undefined) tr.totalUs += us - tr.runningSinceUs;
  tr.runningSinceUs = undefined;
  if (type === 'RUNNING') {
    tr.runCount += 1;
    tr.startUs ??= us;
    tr.runningSinceUs = us;
  }
  if (TERMINAL.has(type)) tr.endUs = us;
  const message = opts.message ?? '';
  const state: State = { id: sim.uuid(us), type, name, message, us, details: opts.details ?? {} };
  const resourceId = `prefect.task-run.${tr.id}`;
  const resource = {
    'prefect.resource.id': resourceId, 'prefect.resource.name': tr.name, 'prefect.run-count': String(tr.runCount),
    'prefect.state-message': message, 'prefect.state-name': name, 'prefect.state-timestamp': iso(us, '+00:00'), 'prefect.state-type': type,
    'prefect.orchestration': 'client',
  };
  const own = tagsRelated(tr.tags);
  const related = [...own, ...contextRelated(tr.flowRun, undefined, new Set([resourceId, ...own.map((r) => String(r['prefect.resource.id']))]))];
  const client = (s: State): Json => ({ type: s.type, name: s.name, message: s.message, state_details: s.details });
  const taskRun = {
    name: tr.name, task_key: tr.key, dynamic_key: tr.dynamicKey,
    empirical_policy: { max_retries: 0, retry_delay_seconds: 0, retries: tr.retries, retry_delay: tr.retries > 0 ? 2 : 0 },
    tags: tr.tags, labels: {}, task_inputs: tr.inputs, run_count: tr.runCount, flow_run_run_count: tr.flowRun.runCount, expected_start_time: iso(tr.expectedUs),
    ...(tr.startUs === undefined ? {} : { start_time: iso(tr.startUs) }), ...(tr.endUs === undefined ? {} : { end_time: iso(tr.endUs) }),
    total_run_time: tr.totalUs / SEC,
  };
  const payload = {
    intended: { from: prev?.type ?? null, to: type }, initial_state: prev === undefined ? null : client(prev),
    validated_state: { ...client(state), data: null }, task_run: taskRun,
  };
  const recvUs = opts.recvUs ?? us + sim.secs(0.006, 0.08);
  sim.emit(`prefect.task-run.${name}`, us, resource, related, payload, state.id, followsOf(prev, us), recvUs);
  if (TERMINAL.has(type)) sim.taskEnds.push([tr.flowRun.id, recvUs]);
  tr.state = state;
}

/** Any other client event inside a run (emit_event, concurrency, artifacts): the context's related resources are appended. */
function emitInRun(sim: Sim, fr: FlowRun, tr: TaskRun | undefined, name: string, us: number, resource: Json, payload: Json, follows: string | null = null): string {
  const id = sim.uuid(us);
  const related = contextRelated(fr, tr, new Set([String(resource['prefect.resource.id'])]));
  sim.emit(name, us, resource, related, payload, id, follows, us + sim.secs(0.006, 0.08));
  return id;
}

/** The runner's heartbeat (every 30 s while running): deployment, flow and tags, no context enrichment. */
function heartbeats(sim: Sim, fr: FlowRun, fromUs: number, toUs: number): void {
  const d = fr.deployment;
  const related = [...(d === undefined ? [] : [relatedTo('deployment', d)]), relatedTo('flow', fr.flow), ...tagsRelated([...(d?.tags ?? []), ...fr.tags])];
  const resource = { 'prefect.resource.id': `prefect.flow-run.${fr.id}`, 'prefect.resource.name': fr.name, 'prefect.version': PREFECT_VERSION };
  for (let us = fromUs + sim.secs(0.5, 2); us < toUs; us += 30 * SEC + sim.secs(0, 0.05)) {
    sim.emit('prefect.flow-run.heartbeat', us, resource, related, {}, sim.uuid(us), null, us + sim.secs(0.005, 0.05));
  }
}

interface World { readonly sim: Sim; readonly etl: Deployment; readonly report: Deployment; readonly crm: Deployment; readonly checks: Ref; readonly automation: Ref; readonly dbLimit: Ref; lastFailureUs?: number }

function makeWorld(sim: Sim): World {
  const k8s = { id: sim.uuid(), name: 'k8s-pool', type: 'kubernetes', queue: { id: sim.uuid(), name: 'default' } };
  const proc = { id: sim.uuid(), name: 'process-pool', type: 'process', queue: { id: sim.uuid(), name: 'default' } };
  const deployment = (flow: string, name: string, pool: typeof k8s, tags: string[]): Deployment =>
    ({ id: sim.uuid(), name, flow: { id: sim.uuid(), name: flow }, tags, queue: pool.queue, pool: { id: pool.id, name: pool.name, type: pool.type } });
  return {
    sim, etl: deployment('etl', 'nightly', k8s, ['etl', 'nightly']), report: deployment('publish-report', 'on-demand', k8s, ['reports']),
    crm: deployment('sync-crm', 'hourly', proc, ['crm']), checks: { id: sim.uuid(), name: 'quality-checks' },
    automation: { id: sim.uuid(), name: 'rerun-on-failure' }, dbLimit: { id: sim.uuid(), name: 'database' },
  };
}

function newFlowRun(w: World, createdUs: number, deployment: Deployment | undefined, more: { flow?: Ref; parentTask?: Ref; creator?: Ref } = {}): FlowRun {
  const c = w.sim.counts;
  c[more.parentTask === undefined ? 'roots' : deployment === undefined ? 'subflows' : 'children'] += 1;
  const flow = more.flow ?? deployment?.flow ?? w.checks;
  return { id: w.sim.uuid(createdUs), name: w.sim.slug(), flow, deployment, parentTask: more.parentTask, creator: more.creator, tags: deployment?.tags ?? [], runCount: 0 };
}

/** Created (Pending) and started (Running) a few ms later, as the engine does. */
function startTask(sim: Sim, fr: FlowRun, name: string, us: number, plan: TaskPlan = {}): TaskRun {
  sim.counts.tasks += 1;
  const dynamicKey = sim.uuid();
  const tr: TaskRun = {
    id: sim.uuid(us), name: `${name}-${dynamicKey.slice(0, 3)}`, key: sim.taskKey(name), dynamicKey, tags: plan.tags ?? [], flowRun: fr,
    inputs: { ...plan.inputs, __parents__: plan.parent === undefined ? [] : [dep(plan.parent)] },
    retries: plan.retries ?? 0, expectedUs: us, runCount: 0, totalUs: 0,
  };
  taskState(sim, tr, 'PENDING', 'Pending', us);
  taskState(sim, tr, 'RUNNING', 'Running', us + sim.secs(0.002, 0.02));
  return tr;
}

function finishTask(sim: Sim, tr: TaskRun, us: number, outcome: Outcome = COMPLETED, recvUs?: number): void {
  if (outcome === null) return;
  taskState(sim, tr, outcome[0], outcome[1], us, { message: outcome[2], ...(recvUs === undefined ? {} : { recvUs }) });
}

function task(sim: Sim, fr: FlowRun, name: string, us: number, dur: [number, number], plan: TaskPlan = {}): TaskRun {
  const tr = startTask(sim, fr, name, us, plan);
  finishTask(sim, tr, at(tr) + sim.secs(...dur));
  return tr;
}

/** `task.map(...)`: n runs of one task, submitted a few ms apart, running concurrently. */
function mapped(sim: Sim, fr: FlowRun, name: string, n: number, us: number, dur: [number, number], inputs: Json, outcome: (i: number) => Outcome = () => COMPLETED): TaskRun[] {
  const runs: TaskRun[] = [];
  const width = sim.mapWidth === undefined ? n : Math.max(n, Math.round(sim.float(sim.mapWidth[0], sim.mapWidth[1])));
  for (let i = 0; i < width; i++) runs.push(startTask(sim, fr, name, us + i * sim.secs(0.003, 0.012), { inputs }));
  // Runs added by `mapWidth` complete; the scenario's own outcomes (a failure, runs left by a crash) stay as they are.
  runs.forEach((tr, i) => finishTask(sim, tr, at(tr) + sim.secs(...dur), i < n ? outcome(i) : COMPLETED));
  return runs;
}

/** An in-process subflow: a tracking task run (no events of its own) links it to the parent. */
function qualityChecks(w: World, parent: FlowRun, us: number): number {
  const { sim } = w;
  const tracking: Ref = { id: sim.uuid(us), name: `${w.checks.name}-0` };
  sim.owners.set(tracking.id, parent.id);
  const sub = newFlowRun(w, us, undefined, { flow: w.checks, parentTask: tracking });
  flowState(sim, sub, 'PENDING', 'Pending', us + sim.secs(0.02, 0.05));
  flowState(sim, sub, 'RUNNING', 'Running', at(sub) + sim.secs(0.02, 0.05));
  const nulls = task(sim, sub, 'check_nulls', at(sub) + sim.secs(0.3, 0.5), [0.2, 1.2], { inputs: { table: [] } });
  const schema = startTask(sim, sub, 'check_schema', at(nulls) + sim.secs(0.005, 0.02), { inputs: { table: [] } });
  finishTask(sim, schema, at(schema) + sim.secs(0.02, 0.08), ['COMPLETED', 'Cached', '']);
  flowState(sim, sub, 'COMPLETED', 'Completed', at(schema) + sim.secs(0.03, 0.08));
  return at(sub);
}

/** `run_deployment` from inside the flow: a separate deployment run tied to a dummy task run named by the server. */
function runDeploymentChild(w: World, parent: FlowRun, us: number): number {
  const { sim } = w;
  const dummy: Ref = { id: sim.uuid(us), name: sim.slug() };
  sim.owners.set(dummy.id, parent.id);
  const child = newFlowRun(w, us, w.report, { parentTask: dummy });
  flowState(sim, child, 'SCHEDULED', 'Scheduled', us + sim.secs(0.03, 0.08));
  flowState(sim, child, 'PENDING', 'Pending', at(child) + sim.secs(2, 5));
  flowState(sim, child, 'RUNNING', 'Running', at(child) + sim.secs(6, 10));
  const list = task(sim, child, 'list_partitions', at(child) + sim.secs(0.4, 0.8), [0.3, 1.5], { inputs: { since: [] } });
  const diff = task(sim, child, 'diff_partitions', at(list) + sim.secs(0.005, 0.02), [0.1, 0.5], { inputs: { partitions: [dep(list)] } });
  // The flow returns a custom state: Completed(name="Skipped").
  flowState(sim, child, 'COMPLETED', 'Skipped', at(diff) + sim.secs(0.02, 0.06), 'No new partitions to publish');
  return at(child) + sim.secs(0.2, 5); // run_deployment polls every 5 s
}

/** One table's load: a nested task, a global concurrency limit, a custom event and an artifact. */
function loadTable(w: World, fr: FlowRun, table: string, instrumented: boolean, us: number, upstream: readonly TaskRun[]): TaskRun {
  const { sim } = w;
  const load = startTask(sim, fr, 'load', us, { inputs: { rows: upstream.map(dep), table: [] }, tags: ['db'] });
  const check = task(sim, fr, 'validate_rows', at(load) + sim.secs(0.05, 0.2), [0.1, 0.6], { inputs: { rows: [] }, parent: load });
  let t = at(check) + sim.secs(0.01, 0.05);
  const limit = { 'prefect.resource.id': `prefect.concurrency-limit.${w.dbLimit.id}`, 'prefect.resource.name': w.dbLimit.name, 'slots-acquired': '1', limit: '2' };
  const acquired = instrumented ? emitInRun(sim, fr, load, 'prefect.concurrency-limit.acquired', t, limit, {}) : null;
  const writeUs = sim.secs(0.8, 2.5);
  t += writeUs;
  const rows = 8000 + Math.floor(sim.float(0, 6000));
  emitInRun(sim, fr, load, 'acme.rows.loaded', t, { 'prefect.resource.id': `acme.table.${table}`, 'prefect.resource.name': table }, { table, rows, seconds: writeUs / SEC });
  if (acquired !== null) {
    emitInRun(sim, fr, load, 'prefect.concurrency-limit.released', t + sim.secs(0.001, 0.003), limit, {}, acquired);
    t += sim.secs(0.01, 0.03);
    const artifact = { 'prefect.resource.id': `prefect.artifact.${sim.uuid(t)}`, 'prefect.resource.name': 'load-summary' };
    emitInRun(sim, fr, load, 'prefect.artifact.created', t, artifact, { key: 'load-summary', type: 'markdown', description: 'Rows loaded per table' });
  }
  finishTask(sim, load, t + sim.secs(0.005, 0.02));
  return load;
}

/** A deployment run from creation (Scheduled, by the scheduler or an automation) to Running, via the worker's Pending. */
function deploymentRun(w: World, d: Deployment, createdUs: number, pendingUs: number, startupS: [number, number], more: { lateFromUs?: number; creator?: Ref } = {}): FlowRun {
  const { sim } = w;
  const fr = newFlowRun(w, createdUs, d, { ...(more.creator === undefined ? {} : { creator: more.creator }) });
  flowState(sim, fr, 'SCHEDULED', 'Scheduled', createdUs);
  // The MarkLateRuns service: 15 s after the scheduled start.
  if (more.lateFromUs !== undefined) flowState(sim, fr, 'SCHEDULED', 'Late', more.lateFromUs + sim.secs(15, 16));
  flowState(sim, fr, 'PENDING', 'Pending', pendingUs);
  flowState(sim, fr, 'RUNNING', 'Running', pendingUs + sim.secs(...startupS));
  return fr;
}

/** Scheduled → Late → Pending → Running → Completed; a retried task, a subflow, run_deployment, and a late task event. */
function nightlyEtl(w: World, t0: number): void {
  const { sim } = w;
  // The scheduler creates runs ahead of time; the k8s worker's pods take a few seconds to start.
  const fr = deploymentRun(w, w.etl, t0 - sim.secs(3300, 3500), t0 + sim.secs(18, 24), [6, 11], { lateFromUs: t0 });
  const runningUs = at(fr);
  const extract = startTask(sim, fr, 'extract', runningUs + sim.secs(0.4, 0.8), { inputs: { source: [] }, tags: ['db'], retries: 2 });
  let t = at(extract) + sim.secs(0.8, 2.5);
  taskState(sim, extract, 'SCHEDULED', 'AwaitingRetry', t, { details: { scheduled_time: iso(t + 2 * SEC) } });
  taskState(sim, extract, 'RUNNING', 'Retrying', t + 2 * SEC + sim.secs(0.001, 0.01));
  finishTask(sim, extract, at(extract) + sim.secs(0.8, 2));
  const transforms = mapped(sim, fr, 'transform', 10, at(extract) + sim.secs(0.01, 0.03), [0.3, 2.5], { batch: [dep(extract)] });
  t = qualityChecks(w, fr, endOf(transforms) + sim.secs(0.01, 0.05));
  const loads = ['orders', 'customers'].map((table, i) => loadTable(w, fr, table, i === 0, t + sim.secs(0.01, 0.03) + i * sim.secs(0.003, 0.01), transforms));
  t = runDeploymentChild(w, fr, endOf(loads) + sim.secs(0.01, 0.05));
  const notify = startTask(sim, fr, 'notify', t, { inputs: { loaded: loads.map(dep) } });
  const doneUs = at(notify) + sim.secs(0.2, 0.6);
  const flowEndUs = doneUs + sim.secs(0.02, 0.06);
  // The flow's Completed is an API call; the task's Completed waits in the EventsWorker until the process drains it at exit.
  finishTask(sim, notify, doneUs, COMPLETED, flowEndUs + sim.secs(1, 1.8));
  flowState(sim, fr, 'COMPLETED', 'Completed', flowEndUs);
  heartbeats(sim, fr, runningUs, flowEndUs);
}

/** A transform raises: the task run Fails and so does the flow run. */
function failingEtl(w: World, t0: number): void {
  const { sim } = w;
  const fr = deploymentRun(w, w.etl, t0 - sim.secs(3300, 3500), t0 + sim.secs(1, 3), [6, 10]);
  const runningUs = at(fr);
  const extract = task(sim, fr, 'extract', runningUs + sim.secs(0.4, 0.8), [0.8, 3], { inputs: { source: [] }, tags: ['db'] });
  const error = 'ValueError: bad row 17';
  const fail = (i: number): Outcome => (i === 5 ? ['FAILED', 'Failed', `Task run encountered an exception ${error}`] : COMPLETED);
  const transforms = mapped(sim, fr, 'transform', 10, at(extract) + sim.secs(0.01, 0.03), [0.3, 2.5], { batch: [dep(extract)] }, fail);
  const endUs = endOf(transforms) + sim.secs(0.04, 0.1);
  flowState(sim, fr, 'FAILED', 'Failed', endUs, `Flow run encountered an exception: ${error}`);
  heartbeats(sim, fr, runningUs, endUs);
  w.lastFailureUs = endUs;
}

/** An automation re-runs the failed deployment; the pod is OOM-killed mid-map and the worker reports Crashed. */
function crashedRerun(w: World, t0: number): void {
  const { sim } = w;
  const fr = deploymentRun(w, w.etl, t0, t0 + sim.secs(2, 4), [6, 10], { creator: w.automation });
  const runningUs = at(fr);
  const extract = task(sim, fr, 'extract', runningUs + sim.secs(0.4, 0.8), [0.8, 2], { inputs: { source: [] }, tags: ['db'] });
  const transforms = mapped(sim, fr, 'transform', 5, at(extract) + sim.secs(0.01, 0.03), [0.2, 0.9], { batch: [dep(extract)] }, (i) => (i < 3 ? COMPLETED : null));
  const crashedUs = endOf(transforms) + sim.secs(2, 5);
  flowState(sim, fr, 'CRASHED', 'Crashed', crashedUs, 'Flow run infrastructure exited with non-zero status code 137.');
  heartbeats(sim, fr, runningUs, crashedUs);
}

/** A user cancels an hourly sync from the UI: Cancelling, then the worker kills the process and reports Cancelled. */
function cancelledSync(w: World, t0: number): void {
  const { sim } = w;
  const fr = deploymentRun(w, w.crm, t0 - sim.secs(500, 700), t0 + sim.secs(0.5, 2), [1.5, 3]);
  const runningUs = at(fr);
  const pages = mapped(sim, fr, 'fetch_contacts', 4, runningUs + sim.secs(0.3, 0.6), [1, 4], { page: [] });
  const dedupe = task(sim, fr, 'dedupe', endOf(pages) + sim.secs(0.01, 0.03), [0.3, 0.8], { inputs: { contacts: pages.map(dep) } });
  const upserts = mapped(sim, fr, 'upsert_contacts', 3, at(dedupe) + sim.secs(0.01, 0.03), [0.2, 0.6], { batch: [dep(dedupe)] }, (i) => (i === 0 ? COMPLETED : null));
  flowState(sim, fr, 'CANCELLING', 'Cancelling', endOf(upserts) + sim.secs(1, 3));
  flowState(sim, fr, 'CANCELLED', 'Cancelled', at(fr) + sim.secs(0.8, 2), 'Flow run was cancelled successfully.');
  heartbeats(sim, fr, runningUs, at(fr));
}

const SCENARIOS: readonly { run: (w: World, t0: number) => void; offsetS: number }[] = [
  { run: nightlyEtl, offsetS: 0 },
  { run: failingEtl, offsetS: 40 },
  { run: crashedRerun, offsetS: 90 },
  { run: cancelledSync, offsetS: 20 },
];

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

export function generateDemoWorkload(options: DemoWorkloadOptions = {}): DemoWorkload {
  const sim = new Sim(options.seed ?? DEFAULT_SEED, options.mapWidth);
  const w = makeWorld(sim);
  const startUs = (options.startMs ?? DEFAULT_START_MS) * MS;
  const flows = Math.max(0, Math.floor(options.flows ?? DEFAULT_FLOWS));
  for (let i = 0; i < flows; i++) {
    const scenario = SCENARIOS[i % SCENARIOS.length]!;
    const base = startUs + Math.floor(i / SCENARIOS.length) * ROUND_GAP_US + scenario.offsetS * SEC;
    // The automation fires on the failure just before it, when there is one.
    const t0 = scenario.run === crashedRerun && w.lastFailureUs !== undefined ? w.lastFailureUs + sim.secs(1, 2) : base;
    if (scenario.run === crashedRerun) w.lastFailureUs = undefined;
    scenario.run(w, t0);
  }
  const events = sim.arrivals.sort((a, b) => a.recvUs - b.recvUs || a.seq - b.seq).map((a) => a.event);
  const c = sim.counts;
  const late = sim.taskEnds.filter(([flowRunId, recvUs]) => recvUs > (sim.flowEnds.get(flowRunId) ?? Infinity)).length;
  // Every flow run once, broken down so that the parts add up to it.
  const kinds = [plural(c.roots, 'root'), ...(c.children > 0 ? [`${c.children} by run_deployment`] : []), ...(c.subflows > 0 ? [plural(c.subflows, 'in-process subflow')] : [])];
  const summary = `${plural(c.roots + c.children + c.subflows, 'flow run')} (${kinds.join(', ')}), ${plural(c.tasks, 'task run')}, ${plural(events.length, 'event')} `
    + `(${late} late task ${late === 1 ? 'event' : 'events'})${sim.endings.size === 0 ? '' : `; flow runs ended ${[...sim.endings].join(', ')}`}`;
  return { events, taskRunOwners: sim.owners, summary };
}
