import { ATTR, CICD_RESULT, CICD_RESULT_SKIP, OTEL_TRACEPARENT_LABEL, SPAN_EVENT } from './attributes.js';
import { TERMINAL_STATE_TYPES, type RunRef, type RunType, type StateInfo, type StateType } from './classify.js';
import { isRecord, MAX_EVENT_NAME, truncate, type PrefectEvent } from './event.js';
import { canonicalUuid, spanIdForRun } from './ids.js';
import type { Attributes, SpanEventRecord, SpanLinkRecord, SpanRecord } from './span-record.js';

/**
 * Longest name a run keeps (its own, its flow's, deployment's, work pool's and queue's, its task key,
 * a label, a flow's or deployment's id that is no UUID), cut with `…` as a payload is: names come
 * from event data, one event may be megabytes, and up to PREFECT_OTEL_MAX_OPEN_RUNS open and as
 * many finished runs keep theirs. As long as the longest event name.
 */
const MAX_NAME_CHARS = MAX_EVENT_NAME;
/** A name as a run keeps it: a copy of its first MAX_NAME_CHARS characters when longer. */
const kept = (text: string | undefined): string | undefined => (text === undefined || text.length <= MAX_NAME_CHARS ? text : truncate(text, MAX_NAME_CHARS));
/**
 * The end of a task key that is not the task's name: Prefect writes `<function name>-<hash>`, the
 * first 8 hex digits of a hash of the function's code, or `-unknown` when it cannot hash the code.
 */
const TASK_KEY_HASH_RE = /-(?:[0-9a-f]{4,}|unknown)$/i;
/**
 * The end of a task run's name that counts the task's calls: Prefect 2 names a task run
 * `<task name>-<n>` (`create_task_run_future`, src/prefect/engine.py in 2.x), and its events carry
 * no task key (no `payload.task_run`).
 */
const RUN_NAME_COUNT_RE = /-\d+$/;
const nonEmpty = (text: string | undefined): string | undefined => (text === undefined || text === '' ? undefined : text);

/** Most tags kept per run: the first seen; how many more there were is `prefect.tags.dropped_count`. */
const MAX_TAGS = 128;
/** Longest tag kept whole; a longer one is cut with `…`, as a payload is. */
const MAX_TAG_CHARS = 256;
/**
 * Most distinct event names counted in a run's summary event (the first folded); events of other
 * names are counted together (`prefect.events.summarised_other_count`). A run may emit events
 * named after its data (`order.<id>`): the summary must not grow with them.
 */
export const MAX_SUMMARISED_NAMES = 128;
/**
 * Most task runs read from a task's `__parents__` (the first named). Prefect names one, the task it
 * was called in; the list comes from event data, and each open run keeps it (`RunMeta.parentTaskIds`).
 */
export const MAX_PARENT_TASKS = 16;
/** Most events a `follows` chain is followed back through (`RunState.followsChain`); the links come from event data. */
const MAX_FOLLOWS_HOPS = 64;

/** Where a run's span hangs: its trace, its parent span, and whether it is the trace's root. */
export interface TraceCtx {
  readonly traceId: string;
  readonly parentSpanId: string | undefined;
  readonly root: boolean;
  /**
   * The run whose span is the parent, to follow a chain of parents (absent on a root). Keyed by a
   * symbol so that the state file, written with JSON.stringify, leaves it out: it is there for
   * runs seen since the start, and a restored run's chain stops at it.
   */
  readonly [PARENT_RUN]?: string;
}

/** The key of `TraceCtx`'s parent run. */
export const PARENT_RUN: unique symbol = Symbol('parentRun');

/** Facts about a run gathered from every event that names it. */
export interface RunMeta {
  name?: string;
  flowName?: string;
  flowId?: string;
  deploymentName?: string;
  deploymentId?: string;
  workPoolName?: string;
  workPoolType?: string;
  workQueueName?: string;
  taskKey?: string;
  tags: string[];
  /** Tags beyond `MAX_TAGS` (the most any one event of the run brought): left out of `tags`. */
  tagsDropped?: number;
  /** Subflows and run_deployment children: the parent's tracking task run. */
  parentTaskRunId?: string;
  /** Task runs: their flow run. */
  flowRunId?: string;
  /** Task runs: `task_inputs.__parents__` (at most `MAX_PARENT_TASKS`). */
  parentTaskIds: string[];
  /**
   * Task runs: a background task, deferred to a task worker (`Task.apply_async()`/`.delay()`): one of
   * its states says `state_details.deferred` (the Scheduled its caller emits, the task worker's Pending).
   */
  deferred?: true;
  /** Prefect's own span for this run (`__OTEL_TRACEPARENT`). */
  traceparent?: string;
  /**
   * Flow runs, first attempt: when it was due to start (`expected_start_time`, µs), read with the
   * lookup of Prefect's own span. A run the scheduler made has no Scheduled event (Prefect inserts
   * those runs with their Scheduled state, outside orchestration): its wait counts from then.
   */
  expectedStartUs?: number;
}

export interface EventEntry extends SpanEventRecord {
  readonly id: string;
  readonly follows: string | undefined;
}

/** What ordering a run's events needs of one: its id, the id it follows, its time. */
type EventTime = Pick<PrefectEvent, 'id' | 'follows' | 'occurredUs'>;

interface LatestState {
  readonly id: string;
  readonly follows: string | undefined;
  readonly occurredUs: number;
  readonly state: StateInfo;
}

export interface RunStateData {
  readonly ref: { readonly type: RunType; readonly id: string };
  readonly meta: RunMeta;
  readonly ctx: TraceCtx;
  readonly attempt: number;
  readonly events: EventEntry[];
  readonly summarised: { count: number; firstUs: number; names: Record<string, number>; other?: number } | undefined;
  readonly firstEventUs: number | null;
  readonly lastEventUs: number | null;
  /** Absent in state files written before it was kept: then the runs inside are not known. */
  readonly innerLastUs?: number | null;
  readonly startUs: number | null;
  readonly firstScheduledUs: number | null;
  readonly latest: LatestState | null;
  readonly maxRunCount: number | null;
  readonly terminalAtMs: number | null;
  readonly lastActivityMs: number;
  /** Absent in state files written before it was kept, and when false. */
  readonly awaitingWorker?: boolean;
}

export interface SpanBuildOptions {
  readonly uiUrl: string | undefined;
}

/** One attempt of one run, open. Everything the span needs is kept incrementally. */
export class RunState {
  readonly ref: { readonly type: RunType; readonly id: string };
  meta: RunMeta = { tags: [], parentTaskIds: [] };
  ctx: TraceCtx;
  readonly attempt: number;
  events: EventEntry[] = [];
  /** The events folded into the summary; names are any text a flow emits (`__proto__`, `constructor`): a Map, not an object's keys. */
  summarised: { count: number; firstUs: number; names: Map<string, number>; other?: number } | undefined;
  firstEventUs = Infinity;
  lastEventUs = -Infinity;
  /**
   * The latest `occurred` among the events of the runs inside this attempt's span (its tasks, tasks
   * nested in them, subflows, however deep) seen while it was open: with `lastEventUs`, its last
   * known time, where its span ends when it ends without a terminal state (`lastKnownUs`).
   */
  innerLastUs = -Infinity;
  startUs: number | undefined;
  firstScheduledUs: number | undefined;
  latest: LatestState | undefined;
  maxRunCount: number | undefined;
  /** Clock time (ms) at which the run's latest state became terminal. */
  terminalAtMs: number | undefined;
  lastActivityMs: number;
  /** Flow runs: the lookup of Prefect's own span was asked for this attempt / is still unanswered (not persisted). */
  nativeAsked = false;
  nativePending = false;
  /**
   * Flow runs: a worker said it submitted this attempt (`prefect.worker.submitted-flow-run`) and has
   * not yet said it executed it: that comes once the run's process has exited, after its terminal state.
   */
  awaitingWorker = false;
  /** `spanId`, made once (a SHA-256): the runs inside compare it on each of their events. */
  private spanIdMade: string | undefined;

  constructor(ref: RunRef, ctx: TraceCtx, attempt: number, nowMs: number) {
    this.ref = { type: ref.type, id: ref.id };
    this.ctx = ctx;
    this.attempt = attempt;
    this.lastActivityMs = nowMs;
    if (ref.name !== undefined) this.meta.name = kept(ref.name);
  }

  /** Plain data for the state file: a copy of what later events change in place (the file is written a slice at a time). */
  toJSON(): RunStateData {
    const s = this.summarised;
    return {
      ref: this.ref, meta: { ...this.meta }, ctx: this.ctx, attempt: this.attempt, events: [...this.events],
      summarised: s === undefined ? undefined : { ...s, names: Object.fromEntries(s.names) },
      firstEventUs: Number.isFinite(this.firstEventUs) ? this.firstEventUs : null,
      lastEventUs: Number.isFinite(this.lastEventUs) ? this.lastEventUs : null,
      innerLastUs: Number.isFinite(this.innerLastUs) ? this.innerLastUs : null,
      startUs: this.startUs ?? null, firstScheduledUs: this.firstScheduledUs ?? null, latest: this.latest ?? null,
      maxRunCount: this.maxRunCount ?? null, terminalAtMs: this.terminalAtMs ?? null, lastActivityMs: this.lastActivityMs,
      ...(this.awaitingWorker ? { awaitingWorker: true } : {}),
    };
  }

  /**
   * `downMs`: how long no process was watching since the data was saved. The clock times move on by
   * it, so that a run's idle timeout and grace count only time the stream was followed.
   */
  static fromJSON(d: RunStateData, downMs = 0): RunState {
    const run = new RunState({ ...d.ref, name: undefined }, d.ctx, d.attempt, d.lastActivityMs + downMs);
    run.meta = d.meta;
    run.events = d.events;
    const s = d.summarised;
    // Own keys only (`Object.entries`): a name like `constructor` is not read from Object.prototype.
    run.summarised = s === undefined || s === null ? undefined : { count: s.count, firstUs: s.firstUs, names: new Map(Object.entries(s.names ?? {}).filter((e) => typeof e[1] === 'number')), ...(typeof s.other === 'number' ? { other: s.other } : {}) };
    run.firstEventUs = d.firstEventUs ?? Infinity;
    run.lastEventUs = d.lastEventUs ?? -Infinity;
    run.innerLastUs = typeof d.innerLastUs === 'number' ? d.innerLastUs : -Infinity;
    run.startUs = d.startUs ?? undefined;
    run.firstScheduledUs = d.firstScheduledUs ?? undefined;
    run.latest = d.latest ?? undefined;
    run.maxRunCount = d.maxRunCount ?? undefined;
    run.terminalAtMs = typeof d.terminalAtMs === 'number' ? d.terminalAtMs + downMs : undefined;
    run.awaitingWorker = d.awaitingWorker === true;
    return run;
  }

  get spanId(): string {
    return (this.spanIdMade ??= spanIdForRun(this.ref.id, this.attempt));
  }

  /** The latest `occurred` of its own events and of those of the runs inside it seen while it was open (-Infinity: none). */
  get lastKnownUs(): number {
    return Math.max(this.lastEventUs, this.innerLastUs);
  }

  /** A run inside this one was known at `timeUs`: true when that is later than any known before (only then is it passed on up). */
  noteInner(timeUs: number): boolean {
    if (!(timeUs > this.innerLastUs)) return false;
    this.innerLastUs = timeUs;
    return true;
  }

  /**
   * Where `prefect.run.wait_ms` counts from: the first Scheduled or Late state seen, or when the run
   * was due to start (`expectedStartUs`) if that is earlier and the run waited Scheduled (its first
   * state seen is one, or leaves one: a run the scheduler made is first seen Pending from Scheduled).
   */
  private waitFromUs(): number | undefined {
    const expected = this.meta.expectedStartUs;
    if (expected === undefined) return this.firstScheduledUs;
    if (this.firstScheduledUs !== undefined) return Math.min(this.firstScheduledUs, expected);
    let first: EventEntry | undefined;
    for (const e of this.events) if (e.attributes[ATTR.STATE_TYPE] !== undefined && (first === undefined || e.timeUs < first.timeUs)) first = e;
    return first?.attributes[ATTR.STATE_FROM] === 'SCHEDULED' ? expected : undefined;
  }

  get terminal(): boolean {
    return this.latest !== undefined && TERMINAL_STATE_TYPES.has(this.latest.state.type);
  }

  /**
   * Waiting on Prefect, not idle: Scheduled and not started yet (no Pending or Running state), for
   * its scheduled time, which Prefect's scheduler sets up to days after the Scheduled event; a flow
   * run Scheduled again after it started, for a worker or its time (`Resuming` after a suspension,
   * which a worker has to pick up; `AwaitingRetry` before a flow retry's delay ends;
   * `AwaitingConcurrencySlot`); or Paused/Suspended, for a person to resume it. Each says nothing
   * until then.
   */
  get awaiting(): boolean {
    const type = this.latest?.state.type;
    return type === 'PAUSED' || (type === 'SCHEDULED' && (this.startUs === undefined || this.ref.type === 'flow'));
  }

  /** Scheduled and never started (no Pending or Running state): deleted by Prefect, it is forgotten without a span. */
  get awaitingStart(): boolean {
    return this.startUs === undefined && this.latest?.state.type === 'SCHEDULED';
  }

  /**
   * Keep the state with the latest `occurred`; on a tie, whichever arrived last, unless a state of
   * the same time follows it or it would take a terminal state's place: the run ends with the last
   * of the `follows` chain however its events arrive. Where `follows` says otherwise than the times
   * (the clocks that stamped them disagree: Prefect servers behind a load balancer, a clock set
   * back), `follows` wins: a state that follows the latest is the latest even if it occurred
   * earlier, and the state the latest follows is not, even if it occurred later.
   */
  applyState(event: EventTime, state: StateInfo): void {
    const t = event.occurredUs;
    const l = this.latest;
    const newer = l === undefined ||
      (t > l.occurredUs ? l.follows !== event.id
        : t < l.occurredUs ? this.followsAfter(event.follows, l.id)
          : !this.followedAt(event.id, t) && (TERMINAL_STATE_TYPES.has(state.type) || !TERMINAL_STATE_TYPES.has(l.state.type)));
    if (newer) this.latest = { id: event.id, follows: event.follows, occurredUs: t, state };
    if (state.type === 'PENDING' || state.type === 'RUNNING') {
      if (this.startUs === undefined || t < this.startUs) this.startUs = t;
    } else if (state.type === 'SCHEDULED') {
      if (this.firstScheduledUs === undefined || t < this.firstScheduledUs) this.firstScheduledUs = t;
    }
    if (state.runCount !== undefined && (this.maxRunCount === undefined || state.runCount > this.maxRunCount)) {
      this.maxRunCount = state.runCount;
    }
  }

  /**
   * The ids of the events of this run that an event following `follows` comes after, by `follows`
   * links through the events kept (`follows` first): Prefect's own order of a run's states, which
   * it links whenever they are less than 5 minutes apart, in either direction of their clocks
   * (`_timing_is_tight` in src/prefect/server/models/events.py, `emit_event` in
   * src/prefect/events/utilities.py). At most MAX_FOLLOWS_HOPS of them; a cycle (bad data) ends it.
   * Asked only when the times disagree with the order they must have (rare): a scan is cheap enough.
   */
  followsChain(follows: string | undefined): Set<string> {
    const chain = new Set<string>();
    if (follows === undefined) return chain;
    const before = new Map<string, string | undefined>();
    for (const e of this.events) before.set(e.id, e.follows);
    if (this.latest !== undefined && !before.has(this.latest.id)) before.set(this.latest.id, this.latest.follows);
    for (let id: string | undefined = follows; id !== undefined && !chain.has(id) && chain.size < MAX_FOLLOWS_HOPS; id = before.get(id)) chain.add(id);
    return chain;
  }

  /** Whether an event following `follows` comes after the event `id` of this run, by `follows` links (`followsChain`). */
  followsAfter(follows: string | undefined, id: string): boolean {
    return follows === id || (follows !== undefined && this.followsChain(follows).has(id));
  }

  /** Whether a state event of this run at `timeUs` follows `id` (ties only, which Prefect makes rare: a scan is cheap enough). */
  private followedAt(id: string, timeUs: number): boolean {
    if (this.latest?.follows === id) return true;
    for (const e of this.events) if (e.timeUs === timeUs && e.follows === id && e.attributes[ATTR.STATE_TYPE] !== undefined) return true;
    return false;
  }

  touch(event: EventTime, nowMs: number): void {
    if (event.occurredUs < this.firstEventUs) this.firstEventUs = event.occurredUs;
    if (event.occurredUs > this.lastEventUs) this.lastEventUs = event.occurredUs;
    this.lastActivityMs = nowMs;
  }

  /**
   * Add a span event; past the limit the oldest are folded into one summary event. State
   * transitions are what a run's span is read for: other events are folded first, and
   * transitions only when nothing else is left.
   */
  addEvent(event: EventTime, name: string, attributes: Attributes, maxEvents: number): void {
    this.events.push({ id: event.id, follows: event.follows, name, timeUs: event.occurredUs, attributes });
    this.limitEvents(maxEvents);
  }

  /**
   * Past `maxEvents`, fold the oldest into the summary: other events first (in the order kept), then
   * transitions from the start. The summary takes one of the `maxEvents` places once it exists. One
   * over, as each new event makes it, costs a search and a splice; many over (a run saved under a
   * higher OTEL_SPAN_EVENT_COUNT_LIMIT) cost one pass, not one per event folded.
   */
  limitEvents(maxEvents: number): void {
    if (this.events.length <= (this.summarised === undefined ? maxEvents : maxEvents - 1)) return;
    // Once one is folded, the summary holds a place.
    const over = this.events.length - (maxEvents - 1);
    if (over === 1) {
      const other = this.events.findIndex((e) => e.attributes[ATTR.STATE_TYPE] === undefined);
      this.fold(other >= 0 ? this.events.splice(other, 1)[0]! : this.events.shift()!);
      return;
    }
    const others: EventEntry[] = [];
    let kept: EventEntry[] = [];
    for (const e of this.events) {
      if (others.length < over && e.attributes[ATTR.STATE_TYPE] === undefined) others.push(e);
      else kept.push(e);
    }
    const transitions = kept.slice(0, over - others.length);
    if (transitions.length > 0) kept = kept.slice(transitions.length);
    for (const e of others) this.fold(e);
    for (const e of transitions) this.fold(e);
    this.events = kept;
  }

  /** Count a span event taken out into the summary. */
  private fold(dropped: EventEntry): void {
    const s: NonNullable<RunState['summarised']> = (this.summarised ??= { count: 0, firstUs: dropped.timeUs, names: new Map() });
    s.count += 1;
    if (dropped.timeUs < s.firstUs) s.firstUs = dropped.timeUs;
    const named = s.names.get(dropped.name);
    if (named !== undefined || s.names.size < MAX_SUMMARISED_NAMES) s.names.set(dropped.name, (named ?? 0) + 1);
    else s.other = (s.other ?? 0) + 1;
  }

  /**
   * Take out the span events at or after `fromUs`: a later attempt's, which arrived before this
   * attempt's terminal state. What the rest says (latest state, start, first Scheduled, run count,
   * last event) is worked out again from them; events folded into the summary stay here.
   */
  detachFrom(fromUs: number): EventEntry[] {
    const moved = this.events.filter((e) => e.timeUs >= fromUs);
    this.events = this.events.filter((e) => e.timeUs < fromUs);
    this.latest = undefined;
    this.startUs = undefined;
    this.firstScheduledUs = undefined;
    this.maxRunCount = undefined;
    this.lastEventUs = -Infinity;
    for (const e of this.events) {
      const state = stateOfEntry(e);
      if (state !== undefined) this.applyState({ id: e.id, follows: e.follows, occurredUs: e.timeUs }, state);
      if (e.timeUs > this.lastEventUs) this.lastEventUs = e.timeUs;
    }
    return moved;
  }

  /**
   * Take out the span events other than states at or after `fromUs`: a later attempt's, which came
   * before the states that opened it. Its states stay; the last event is worked out again.
   */
  detachOthersFrom(fromUs: number): EventEntry[] {
    if (!(this.lastEventUs >= fromUs)) return [];
    const moved = this.events.filter((e) => e.timeUs >= fromUs && e.attributes[ATTR.STATE_TYPE] === undefined);
    if (moved.length === 0) return moved;
    this.events = this.events.filter((e) => e.timeUs < fromUs || e.attributes[ATTR.STATE_TYPE] !== undefined);
    this.lastEventUs = -Infinity;
    for (const e of this.events) if (e.timeUs > this.lastEventUs) this.lastEventUs = e.timeUs;
    if (this.latest !== undefined && this.latest.occurredUs > this.lastEventUs) this.lastEventUs = this.latest.occurredUs;
    return moved;
  }

  /** The span events `detachFrom` took out of the attempt before, applied to this one as they came. */
  takeEvents(entries: readonly EventEntry[], maxEvents: number, nowMs: number): void {
    for (const e of entries) {
      const at = { id: e.id, follows: e.follows, occurredUs: e.timeUs };
      const state = stateOfEntry(e);
      if (state !== undefined) this.applyState(at, state);
      this.touch(at, nowMs);
      this.addEvent(at, e.name, e.attributes, maxEvents);
    }
  }

  /**
   * Fold what an event says about the run (names, flow, deployment, pool, tags, parents). `own`: the
   * event's resource is this run. `stateOrHeartbeat`: it is one of the run's state or heartbeat events,
   * whose related resources Prefect builds from the run itself; any other event naming the run as its
   * resource (`emit_event` inside one of its tasks) has the EventsWorker's context appended, where
   * `task-run` is the task it was emitted in, not a subflow's tracking task.
   */
  learn(event: PrefectEvent, own: boolean, stateOrHeartbeat: boolean): void {
    const m = this.meta;
    if (own && event.resource.name !== undefined) m.name = kept(event.resource.name);
    if (!own && m.name === undefined) m.name = kept(event.related.find((r) => r.id.endsWith(this.ref.id))?.name);
    // Most events bring no new tag: the set is built only when one does (and one of the tags left out only when there are some).
    let tags: Set<string> | undefined;
    let dropped: Set<string> | undefined;
    const addTag = (text: string): void => {
      const tag = truncate(text, MAX_TAG_CHARS);
      if (tags === undefined) {
        if (m.tags.includes(tag)) return;
        tags = new Set(m.tags);
      }
      if (tags.size < MAX_TAGS) tags.add(tag);
      else if (!tags.has(tag)) (dropped ??= new Set()).add(tag);
    };
    const taskRun = own && this.ref.type === 'task' && isRecord(event.payload.task_run) ? event.payload.task_run : undefined;
    // A task run's own events carry its tags in `task_run.tags`; their related tags add those of its
    // flow run, flow and deployment (the EventsWorker's run context), which are not the task run's.
    const relatedTags = own && (taskRun === undefined || !Array.isArray(taskRun.tags));
    for (const r of event.related) {
      switch (r.role) {
        case 'flow':
          m.flowId = idAfter(r.id, 'prefect.flow.') ?? m.flowId;
          m.flowName = kept(r.name) ?? m.flowName;
          break;
        case 'deployment':
          m.deploymentId = idAfter(r.id, 'prefect.deployment.') ?? m.deploymentId;
          m.deploymentName = kept(r.name) ?? m.deploymentName;
          break;
        case 'work-queue':
          m.workQueueName = kept(r.name) ?? m.workQueueName;
          break;
        case 'work-pool':
          m.workPoolName = kept(r.name) ?? m.workPoolName;
          m.workPoolType = kept(r.labels['prefect.work-pool.type']) ?? m.workPoolType;
          break;
        case 'tag':
          // Other events carry the tags of their whole run context; only a run's own events speak for it.
          if (relatedTags && r.id.startsWith('prefect.tag.')) addTag(r.id.slice('prefect.tag.'.length));
          break;
        case 'flow-run': {
          // A task run is never its own flow run, whatever an event says.
          const flowRunId = this.ref.type === 'task' ? runIdAfter(r.id, 'prefect.flow-run.') : undefined;
          if (flowRunId !== undefined && flowRunId !== this.ref.id) m.flowRunId = flowRunId;
          break;
        }
        case 'task-run':
          // A flow run's tracking task: the server's `_flow_run_related_resources_from_orm`
          // (src/prefect/server/models/events.py) names `parent_task_run_id` on its state events; the
          // EventsWorker's `related_resources_from_run_context` (src/prefect/events/related.py) names
          // the current TaskRunContext on anything emitted inside a task.
          if (stateOrHeartbeat && this.ref.type === 'flow') m.parentTaskRunId = runIdAfter(r.id, 'prefect.task-run.') ?? m.parentTaskRunId;
          break;
      }
    }
    if (taskRun !== undefined) {
      if (typeof taskRun.task_key === 'string') m.taskKey = kept(taskRun.task_key);
      if (Array.isArray(taskRun.tags)) for (const t of taskRun.tags) if (typeof t === 'string') addTag(t);
      const parents = parentTaskIdsOf(event);
      if (parents.length > 0) m.parentTaskIds = parents;
      const labels = isRecord(taskRun.labels) ? taskRun.labels : undefined;
      const tp = labels?.[OTEL_TRACEPARENT_LABEL];
      if (typeof tp === 'string') m.traceparent = kept(tp);
    }
    if (own && stateOrHeartbeat && this.ref.type === 'task' && deferredState(event)) m.deferred = true;
    if (tags !== undefined && tags.size !== m.tags.length) m.tags = [...tags].sort();
    // Each of a run's events carries all its tags: the most left out by one event is how many there are.
    if (dropped !== undefined && dropped.size > (m.tagsDropped ?? 0)) m.tagsDropped = dropped.size;
  }

  /**
   * The span name: the flow's name, or the task's key without its hash (without a key, as Prefect 2
   * writes task run events: the run name without its count); never a run id, never empty.
   */
  spanName(): string {
    const m = this.meta;
    if (this.ref.type === 'flow') return nonEmpty(m.flowName) ?? nonEmpty(m.name) ?? 'flow-run';
    return nonEmpty(m.taskKey?.replace(TASK_KEY_HASH_RE, '')) ?? nonEmpty(m.name?.replace(RUN_NAME_COUNT_RE, '')) ?? nonEmpty(m.name) ?? 'task-run';
  }

  toSpanRecord(options: SpanBuildOptions, incompleteReason: string | undefined): SpanRecord {
    const m = this.meta;
    const flow = this.ref.type === 'flow';
    const final = this.latest?.state;
    const incomplete = incompleteReason !== undefined || !this.terminal;
    const startUs = this.startUs ?? (Number.isFinite(this.firstEventUs) ? this.firstEventUs : 0);
    // Ended without a terminal state: at its last known time, so that it encloses the runs inside it.
    let endUs = incomplete ? this.lastKnownUs : (this.latest?.occurredUs ?? this.lastEventUs);
    if (!Number.isFinite(endUs) || endUs < startUs) endUs = startUs;
    const a: Attributes = {
      [ATTR.RUN_ID]: this.ref.id,
      [ATTR.RUN_TYPE]: this.ref.type,
    };
    const set = (key: string, value: string | number | boolean | string[] | undefined): void => {
      if (value !== undefined) a[key] = value;
    };
    set(ATTR.RUN_NAME, m.name);
    set(ATTR.RUN_COUNT, this.maxRunCount);
    set(ATTR.STATE_TYPE, final?.type);
    set(ATTR.STATE_NAME, final?.name);
    a[ATTR.TAGS] = m.tags;
    set(ATTR.TAGS_DROPPED, m.tagsDropped);
    set(ATTR.FLOW_NAME, m.flowName);
    set(ATTR.FLOW_ID, m.flowId);
    set(ATTR.DEPLOYMENT_NAME, m.deploymentName);
    set(ATTR.DEPLOYMENT_ID, m.deploymentId);
    set(ATTR.WORK_POOL_NAME, m.workPoolName);
    set(ATTR.WORK_POOL_TYPE, m.workPoolType);
    set(ATTR.WORK_QUEUE_NAME, m.workQueueName);
    if (!flow) set(ATTR.TASK_KEY, m.taskKey);
    if (flow) set(ATTR.PARENT_TASK_RUN_ID, m.parentTaskRunId);
    const waitFromUs = this.waitFromUs();
    if (waitFromUs !== undefined && this.startUs !== undefined && waitFromUs <= this.startUs) {
      a[ATTR.RUN_WAIT_MS] = Math.round((this.startUs - waitFromUs) / 1000);
    }
    if (this.attempt > 0) a[ATTR.RUN_ATTEMPT] = this.attempt;
    if (incomplete) {
      a[ATTR.RUN_INCOMPLETE] = true;
      a[ATTR.RUN_INCOMPLETE_REASON] = incompleteReason ?? 'not_terminal';
    }
    // The conventions require a result: a task or subflow Prefect never ran, as what it waited for
    // did not complete (stopped at Pending "NotReady"), was skipped; any other run ended without a
    // terminal state has none that could be told.
    const skipped = final?.type === 'PENDING' && final.name === 'NotReady';
    const result = skipped ? CICD_RESULT_SKIP : !incomplete && final !== undefined ? CICD_RESULT[final.type as keyof typeof CICD_RESULT] : undefined;
    const url = options.uiUrl === undefined ? undefined : `${options.uiUrl}/runs/${flow ? 'flow' : 'task'}-run/${this.ref.id}`;
    if (flow) {
      a[ATTR.CICD_PIPELINE_NAME] = this.spanName();
      a[ATTR.CICD_PIPELINE_RUN_ID] = this.ref.id;
      set(ATTR.CICD_PIPELINE_RESULT, result);
      set(ATTR.CICD_PIPELINE_RUN_URL, url);
    } else {
      a[ATTR.CICD_TASK_NAME] = this.spanName();
      a[ATTR.CICD_TASK_RUN_ID] = this.ref.id;
      set(ATTR.CICD_TASK_RUN_RESULT, result);
      set(ATTR.CICD_TASK_RUN_URL, url);
    }

    const status = statusOf(incomplete ? undefined : final);
    if (status.code === 'error') a[ATTR.ERROR_TYPE] = errorTypeOf(final);

    const links: SpanLinkRecord[] = [];
    if (this.attempt > 0) {
      links.push({
        traceId: this.ctx.traceId,
        spanId: spanIdForRun(this.ref.id, this.attempt - 1),
        attributes: { [ATTR.LINK_KIND]: 'previous_attempt' },
      });
    }
    const native = parseTraceparent(m.traceparent);
    // Prefect's span context came from another process: a remote one, with the sampled flag Prefect gave it.
    if (native !== undefined) links.push({ ...native, remote: true, attributes: { [ATTR.LINK_KIND]: 'prefect_native_span' } });

    return {
      traceId: this.ctx.traceId,
      spanId: this.spanId,
      parentSpanId: this.ctx.parentSpanId,
      name: this.spanName(),
      kind: flow && this.ctx.root ? 'server' : 'internal',
      startUs,
      endUs,
      status,
      attributes: a,
      events: this.sortedEvents(),
      links,
      ...(this.summarised === undefined ? {} : { droppedEvents: this.summarised.count }),
      run: {
        id: this.ref.id,
        type: this.ref.type,
        name: m.name,
        attempt: this.attempt,
        finalState: final === undefined ? undefined : { type: final.type, name: final.name },
        incomplete,
      },
    };
  }

  private sortedEvents(): SpanEventRecord[] {
    // Equal times: by event id (Prefect's are UUIDv7, in the order they were made), so that the order
    // does not depend on how they arrived; then a follower goes after the event it follows.
    const sorted = [...this.events].sort((x, y) => x.timeUs - y.timeUs || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
    for (let i = 0; i < sorted.length; ) {
      let end = i + 1;
      while (end < sorted.length && sorted[end]!.timeUs === sorted[i]!.timeUs) end++;
      if (end - i > 1) sorted.splice(i, end - i, ...followsOrder(sorted.slice(i, end)));
      i = end;
    }
    const out: SpanEventRecord[] = sorted.map(({ name, timeUs, attributes }) => ({ name, timeUs, attributes }));
    if (this.summarised !== undefined) {
      // In time order, at the time of the first event it stands for (kept transitions may be older).
      const timeUs = this.summarised.firstUs;
      const at = out.findIndex((e) => e.timeUs > timeUs);
      out.splice(at < 0 ? out.length : at, 0, {
        name: SPAN_EVENT.SUMMARY,
        timeUs,
        attributes: {
          [ATTR.EVENTS_SUMMARISED]: this.summarised.count,
          [ATTR.EVENTS_SUMMARISED_NAMES]: JSON.stringify(Object.fromEntries(this.summarised.names)),
          ...(this.summarised.other === undefined ? {} : { [ATTR.EVENTS_SUMMARISED_OTHER]: this.summarised.other }),
        },
      });
    }
    return out;
  }
}

/**
 * Events of one time in `follows` order: each after the event it follows when that one is in the
 * group, otherwise in the order given (by event id). A cycle (bad data) keeps the rest in that order.
 */
function followsOrder(group: EventEntry[]): EventEntry[] {
  const pending = new Set(group.map((e) => e.id));
  const out: EventEntry[] = [];
  let rest = group;
  while (rest.length > 0) {
    const ready = rest.findIndex((e) => e.follows === undefined || e.follows === e.id || !pending.has(e.follows));
    if (ready < 0) return out.concat(rest);
    const next = rest[ready]!;
    out.push(next);
    pending.delete(next.id);
    rest = rest.filter((_, i) => i !== ready);
  }
  return out;
}

/** The state a span event records, read back from its attributes; undefined for an event that is no state. */
function stateOfEntry(e: EventEntry): StateInfo | undefined {
  const a = e.attributes;
  const type = a[ATTR.STATE_TYPE];
  if (typeof type !== 'string') return undefined;
  const name = a[ATTR.STATE_NAME];
  const message = a[ATTR.STATE_MESSAGE];
  const from = a[ATTR.STATE_FROM];
  const runCount = a[ATTR.RUN_COUNT];
  return {
    type: type as StateType,
    name: typeof name === 'string' ? name : type,
    message: typeof message === 'string' ? message : '',
    from: typeof from === 'string' ? from : undefined,
    runCount: typeof runCount === 'number' ? runCount : undefined,
  };
}

/**
 * Prefect's message for a run its code failed: `Flow run encountered an exception: ValueError: bad
 * row 17`, `Task run encountered an exception ValueError: …` (Prefect 3), `… an exception. ValueError: …`
 * (Prefect 2), the class qualified by its module outside the builtins (`requests.exceptions.HTTPError`).
 */
const EXCEPTION_MESSAGE_RE = /^(?:Flow|Task) run encountered an exception[:.]? ([A-Za-z_](?:[\w.]*\w)?)(?::|\s*$)/;

/**
 * `error.type` of a span whose status is ERROR, which the semantic conventions ask for beside
 * `cicd.pipeline.result` / `cicd.pipeline.task.run.result` `failure` and `error`: the exception class
 * Prefect's state message names, else the state's name (`Failed`, `Crashed`, `TimedOut`), Prefect's
 * own word for how the run ended. Either is of low cardinality, unlike the message.
 */
function errorTypeOf(final: StateInfo | undefined): string {
  const exception = final === undefined ? undefined : EXCEPTION_MESSAGE_RE.exec(final.message)?.[1];
  return exception ?? nonEmpty(final?.name) ?? final?.type ?? '_OTHER';
}

function statusOf(final: StateInfo | undefined): SpanRecord['status'] {
  const type: StateType | undefined = final?.type;
  if (type === 'COMPLETED') return { code: 'ok' };
  if (type === 'FAILED' || type === 'CRASHED') return { code: 'error', message: final?.message || final?.name || type };
  return { code: 'unset' };
}

/**
 * The id after `prefix` (a flow's, a deployment's): its canonical UUID, or as written when it is no
 * UUID, then kept as a name is (`kept`): it comes from event data, and each run keeps it.
 */
function idAfter(resourceId: string, prefix: string): string | undefined {
  if (!resourceId.startsWith(prefix)) return undefined;
  const id = resourceId.slice(prefix.length);
  return canonicalUuid(id) ?? kept(id);
}

/**
 * A run's UUID after `prefix`, or undefined when it is not one: such an id names no run (as the
 * classifier and the trace resolution read it), so it moves no task to another flow run, nor out
 * from under the task runs hang under, and is no subflow's parent task.
 */
function runIdAfter(resourceId: string, prefix: string): string | undefined {
  return resourceId.startsWith(prefix) ? canonicalUuid(resourceId.slice(prefix.length)) : undefined;
}

/**
 * Whether a task run's state event is of a background task: `validated_state.state_details.deferred`
 * (`Task.create_run(deferred=True)` in src/prefect/tasks.py, the task worker's Pending in
 * src/prefect/task_worker.py; the client's `emit_task_run_state_change_event` dumps the details).
 */
function deferredState(event: PrefectEvent): boolean {
  const validated = event.payload.validated_state;
  const details = isRecord(validated) ? validated.state_details : undefined;
  return isRecord(details) && details.deferred === true;
}

/** Task run ids named in `payload.task_run.task_inputs.__parents__`, in order: the first `MAX_PARENT_TASKS`. */
export function parentTaskIdsOf(event: PrefectEvent): string[] {
  const taskRun = isRecord(event.payload.task_run) ? event.payload.task_run : undefined;
  const inputs = taskRun !== undefined && isRecord(taskRun.task_inputs) ? taskRun.task_inputs : undefined;
  if (inputs === undefined || !Array.isArray(inputs.__parents__)) return [];
  const parents: string[] = [];
  for (const p of inputs.__parents__) {
    if (isRecord(p) && p.input_type === 'task_run' && typeof p.id === 'string') {
      const id = canonicalUuid(p.id);
      if (id !== undefined && parents.push(id) === MAX_PARENT_TASKS) break;
    }
  }
  return parents;
}

/**
 * A W3C traceparent (Trace Context, "traceparent Header"): version, trace-id, parent-id, trace-flags,
 * lowercase hex. Version `ff` is forbidden; a version above `00` may carry more fields after the
 * flags ("Versioning of traceparent"), which are ignored, while `00` has exactly four; an all-zero id is invalid. As the OpenTelemetry
 * propagator parses it (one whitespace character either side allowed).
 */
const TRACEPARENT_RE = /^\s?((?!ff)[0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\s?$/;

/** A traceparent's span context (its flags the W3C trace flags byte), or undefined when W3C says to ignore it. */
export function parseTraceparent(text: string | undefined): { traceId: string; spanId: string; traceFlags: number } | undefined {
  const m = text === undefined ? null : TRACEPARENT_RE.exec(text);
  if (!m || (m[1] === '00' && m[5] !== undefined) || /^0+$/.test(m[2]!) || /^0+$/.test(m[3]!)) return undefined;
  return { traceId: m[2]!, spanId: m[3]!, traceFlags: parseInt(m[4]!, 16) };
}
