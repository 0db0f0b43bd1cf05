import { ATTR } from './attributes.js';
import { classify, runRefFromResourceId, TERMINAL_STATE_TYPES, type Classified, type RunRef, type RunType, type StateInfo, type StateType } from './classify.js';
import { MAX_EVENT_NAME, truncate, type PrefectEvent, type SkipReason } from './event.js';
import { canonicalUuid, spanIdForRun, traceIdForRun } from './ids.js';
import { PARENT_RUN, parentTaskIdsOf, parseTraceparent, type EventEntry, RunState, type RunStateData, type TraceCtx } from './run-state.js';
import type { Attributes, SpanRecord } from './span-record.js';
import { Additions } from '../state/additions.js';
import { FifoMap } from './fifo-map.js';
import { rerunAttemptFromHistory, type HistoryState } from './rerun-attempt.js';

export interface TrackerOptions {
  readonly settleMs: number;
  readonly taskGraceMs: number;
  readonly openRunTimeoutMs: number;
  readonly maxOpenRuns: number;
  readonly maxSpanEvents: number;
  readonly payloadMaxChars: number;
  readonly uiUrl: string | undefined;
  /**
   * Look up each flow run's own Prefect span (`lookupNativeSpan`) and hold its finished span for the
   * answer at most this long past the settle window (Infinity: until answered). Undefined: no lookups.
   */
  readonly nativeSpanWaitMs?: number | undefined;
  /**
   * Find the trace of a flow run not seen yet, that runs hang under, by asking for its tracking
   * task (`lookupFlowParent`); so too for a flow run first seen through an event that names none
   * (a heartbeat, a worker or custom event). Without it, such a flow run is taken as a root.
   */
  readonly lookupFlowParents?: boolean;
  /**
   * Number a run first seen leaving a terminal state (its record is gone, or it was never seen) by
   * its state history (`lookupRerunAttempt`), so that its span does not take the id of a rerun
   * before it. Without it, it is taken as the first rerun.
   */
  readonly lookupRerunAttempts?: boolean;
  /**
   * Most characters of events (as JSON) waiting for lookups, all together; past it the oldest lookup
   * is given up on, as past `maxOpenRuns` events. Undefined: bounded by count alone.
   */
  readonly maxWaitingChars?: number;
}

/** One STLOGGING record: a state transition, an event attached to a run, or a late event. */
export interface RunLogRecord {
  readonly kind: 'transition' | 'event' | 'late';
  readonly run: { readonly type: RunType; readonly id: string; readonly name: string | undefined; readonly root: boolean };
  readonly traceId: string;
  readonly spanId: string;
  readonly event: PrefectEvent;
  readonly state: (StateInfo & { readonly terminal: boolean }) | undefined;
}

/** Which bound on the events waiting for lookups was reached: their count or runs blocked (`maxOpenRuns`), or their size (`maxWaitingChars`). */
export type WaitingBound = 'count' | 'size';

export type TrackerNotice =
  | { readonly kind: 'late_event'; readonly runId: string; readonly eventId: string; readonly eventName: string }
  | { readonly kind: 'lookup_failed'; readonly runId: string; readonly taskRunId: string }
  | { readonly kind: 'parent_cycle'; readonly runId: string; readonly taskRunId: string }
  /** A root flow run whose states name a tracking task only after its trace was decided (its first event named none). */
  | { readonly kind: 'parent_late'; readonly runId: string; readonly taskRunId: string }
  | { readonly kind: 'evicted'; readonly runId: string; readonly traceId: string }
  | { readonly kind: 'lookup_abandoned'; readonly taskRunId: string; readonly events: number; readonly bound: WaitingBound }
  /** The state history of a run first seen leaving a terminal state could not be read: it is taken as the first rerun. */
  | { readonly kind: 'rerun_lookup_failed'; readonly runId: string }
  /** The same, given up unanswered (the bound on events waiting for lookups). */
  | { readonly kind: 'rerun_lookup_abandoned'; readonly runId: string; readonly events: number; readonly bound: WaitingBound }
  | { readonly kind: 'rerun'; readonly runId: string; readonly attempt: number; readonly traceId: string };

/** An event the tracker turns down as it is (skipped input, counted and logged by reason). */
export interface Rejected {
  readonly reason: SkipReason;
  readonly detail: string;
}

export interface TrackerSink {
  span(record: SpanRecord): void;
  log(record: RunLogRecord): void;
  /** Ask for the flow run that owns a task run; answer with `resolveOwner`. */
  lookup(taskRunId: string): void;
  /**
   * Ask for the tracking task of a flow run not seen yet (its `parent_task_run_id`), to find its
   * trace; answer with `resolveFlowParent`. Only asked with the `lookupFlowParents` option.
   */
  lookupFlowParent(flowRunId: string): void;
  /**
   * Ask for the state history of a run first seen leaving a terminal state, to number its rerun;
   * answer with `resolveRerunAttempt`. Only asked with the `lookupRerunAttempts` option.
   */
  lookupRerunAttempt(runId: string, type: RunType): void;
  /** Ask for the traceparent of Prefect's own span of a flow run attempt; answer with `resolveNativeSpan`. */
  lookupNativeSpan(flowRunId: string, attempt: number): void;
  /**
   * Ask whether Prefect still has these flow runs: Scheduled (not started yet, or again after it
   * started) and quiet for the open-run timeout (Prefect deletes a deployment's scheduled runs without
   * an event when it is redeployed, paused or deleted); answer with `forgetDeletedRuns`. Absent
   * (replay): they keep waiting.
   */
  checkScheduledRuns?(flowRunIds: readonly string[]): void;
  notice(notice: TrackerNotice): void;
  /** An event that waited for a lookup (or came from the state file) and was turned down when processed. */
  rejected(event: PrefectEvent, rejected: Rejected): void;
  /** An event that waited for a lookup (or came from the state file) and could not be processed (a bug). */
  failed(event: PrefectEvent, err: unknown): void;
}

interface FinishedRun {
  readonly type: RunType;
  readonly ctx: TraceCtx;
  readonly attempt: number;
  readonly lastTerminalUs: number;
  readonly endedAtMs: number;
  readonly name: string | undefined;
  /** Set when the run was ended without a terminal state (flow ended, idle, evicted): what comes later is late, not a rerun. */
  readonly incomplete?: true;
  /** Task runs: their flow run when it is not their parent (`ctx[PARENT_RUN]`); see `finishedFlowRun`. */
  readonly flowRunId?: string;
  /** A rerun's first event (reruns only): a child that started before it hangs under the attempt before. */
  readonly firstEventUs?: number;
  /**
   * The state its terminal state follows, when that was not seen or was stamped after it (only
   * then): should it come (again) late, stamped after the terminal state by a clock ahead, it is a
   * late state of this attempt, not a rerun.
   */
  readonly terminalFollows?: string;
}

interface Queued {
  readonly event: PrefectEvent;
  readonly classified: Classified;
}

interface Waiting {
  readonly events: Queued[];
  /** The runs whose events wait here (`blocked` maps each to this lookup). */
  readonly runs: string[];
  /**
   * `owner`: the flow run of a task run (`lookup`); `flow_parent`: the tracking task of a flow run
   * (`lookupFlowParent`); `attempt`: the state history of a run first seen leaving a terminal state
   * (`lookupRerunAttempt`, keyed by `attemptKey`).
   */
  readonly kind: 'owner' | 'flow_parent' | 'attempt';
  /** Characters of `events` as JSON (see `waitingChars`). */
  chars: number;
}

export interface TrackerCounts {
  runsOpened: number;
  spans: number;
  incomplete: number;
  reruns: number;
  lateEvents: number;
  evicted: number;
  /** Scheduled flow runs, never started, that Prefect no longer has: forgotten without a span. */
  deletedScheduled: number;
  /**
   * Lookups of where a run hangs (a subflow's tracking task's flow run; the tracking task of a flow
   * run not seen yet), and how they ended: answered, failed (not found, or no answer), or given up
   * unanswered (the bound on events waiting for lookups, or the end of input). The ones still
   * pending are `pendingLookups`.
   */
  parentLookups: { lookups: number; found: number; failed: number; abandoned: number };
  /**
   * Lookups of the state history of runs first seen leaving a terminal state (to number the rerun),
   * and how they ended, as `parentLookups`; failed and abandoned ones take the first rerun's number.
   */
  rerunLookups: { lookups: number; found: number; failed: number; abandoned: number };
  spanEvents: number;
  /** Flow-run lookups of Prefect's own span, and how they ended. */
  native: { lookups: number; linked: number; noLabel: number; failed: number; late: number };
}

/** Task runs' flow runs and flow runs' tracking tasks remembered from lookups (each map). */
export const OWNER_CACHE_MAX = 50_000;
/** How far `keepOwnersAlive` climbs (nested subflows); a bound, as the links come from event data. */
const MAX_OWNER_DEPTH = 32;
/**
 * How far a chain of parents is followed to make sure a new parent does not lead back to the run
 * (so that every trace keeps a root); a longer chain is taken as a cycle. Prefect never nests this
 * deep; the links come from event data.
 */
const MAX_PARENT_DEPTH = 64;
/**
 * How many attempts before a run's latest one a restored run may hang under (`restoreParentRun`):
 * one started before its parent was rerun hangs under the attempt before, and a parent rerun at
 * once, again and again, may be a few further on; a bound, as attempt numbers come from the file.
 */
const MAX_PARENT_ATTEMPTS = 8;
/** How fresh an owner's activity has to be for `keepOwnersAlive` to leave it (the idle timeout is at least a second). */
const OWNER_TOUCH_MS = 1_000;
/**
 * Longest text a span event keeps from its event other than the payload and the state message
 * (which `payloadMaxChars` bounds): a state's name and its "from", a run event's resource id and
 * name, cut like a payload past the longest event name. They name things; a run keeps
 * `maxSpanEvents` events, and one event may be megabytes: a flow emitting events whose resource name
 * is its data must not hold that many megabytes per run.
 */
const MAX_EVENT_TEXT_CHARS = MAX_EVENT_NAME;
/** A worker's word on a flow run it runs: it submitted it, and (once its process exited) executed it (reference §4e). */
const WORKER_SUBMITTED = 'prefect.worker.submitted-flow-run';
const WORKER_EXECUTED = 'prefect.worker.executed-flow-run';

/** Everything the tracker holds, as plain data for the state file. */
export interface TrackerSnapshot {
  readonly open: RunStateData[];
  readonly finished: [string, FinishedRun][];
  readonly owners: [string, string | null][];
  readonly waiting: PrefectEvent[];
}

/**
 * The run model: routes events to runs, resolves every run's trace and parent, keeps each run
 * attempt until it can be exported exactly once. Pure: time comes in as `nowMs`, effects go out
 * through the sink.
 */
export class RunTracker {
  /** Least recently active first. */
  private readonly open = new FifoMap<RunState>();
  /**
   * Per run id, the attempt before the open one while it settles: ended by its terminal state and
   * rerun within the settle window, it still takes its own states that arrive late (reordered
   * behind the rerun's first ones), told apart by `occurred`. Exported when its window ends.
   */
  private readonly settling = new FifoMap<RunState>();
  private readonly finished = new FifoMap<FinishedRun>();
  private readonly finishedAdded: Additions;
  private readonly owners = new FifoMap<string | null>();
  /** Flow runs not seen when runs hung under them: their tracking task, null for none (a root). Not persisted: asked again. */
  private readonly flowParents = new FifoMap<string | null>();
  /**
   * Runs not seen yet whose inner runs were (input newest first, a stream joined mid-run): the
   * latest time known of those, taken by the run's span when it opens, so that its end as an
   * incomplete run encloses them. At most `maxOpenRuns`; not persisted.
   */
  private readonly innerBeforeOpen = new FifoMap<number>();
  /** Per task run looked up, oldest lookup first: the events waiting for it and the runs blocked on it. */
  private readonly waiting = new FifoMap<Waiting>();
  /** Events in `waiting`, all lookups together; at most `maxOpenRuns`. */
  private waitingEventCount = 0;
  /** Characters of the events in `waiting` as JSON, all together; at most `maxWaitingChars` (but for one lookup's). */
  private waitingCharCount = 0;
  private readonly blocked = new Map<string, string>();
  /**
   * The rerun number a state history answered, per run, for the state event it was asked for: taken
   * when that event is processed again (`release`), as the events waiting for the answer are, or,
   * when the run then waits for where it hangs, once that lookup releases it.
   */
  private readonly attemptAnswers = new Map<string, { readonly eventId: string; readonly attempt: number }>();
  private readonly deadlines = new Map<string, number>();
  private readonly childrenOf = new Map<string, Set<string>>();
  /**
   * The open runs that hang under each span (by its id): those a rerun of the run whose span it is
   * may move (`moveChildren`). Kept with `open` (`setOpen`, `finalize`) and each open run's `ctx`
   * (`setCtx`), so that a rerun looks at its own children, not at every open run.
   */
  private readonly openUnder = new Map<string, Set<string>>();
  readonly counts: TrackerCounts = {
    runsOpened: 0, spans: 0, incomplete: 0, reruns: 0, lateEvents: 0, evicted: 0, deletedScheduled: 0, spanEvents: 0,
    parentLookups: { lookups: 0, found: 0, failed: 0, abandoned: 0 },
    rerunLookups: { lookups: 0, found: 0, failed: 0, abandoned: 0 },
    native: { lookups: 0, linked: 0, noLabel: 0, failed: 0, late: 0 },
  };

  constructor(
    private readonly options: TrackerOptions,
    private readonly sink: TrackerSink,
  ) {
    this.finishedAdded = new Additions(options.maxOpenRuns);
  }

  get openRuns(): number {
    return this.open.size;
  }

  /** Open attempts, those settling beside their reruns included (what a state file holds as open). */
  get openAttempts(): number {
    return this.open.size + this.settling.size;
  }

  get pendingLookups(): number {
    return this.waiting.size;
  }

  /** Events waiting for lookups, all together (at most `maxOpenRuns`). */
  get waitingEvents(): number {
    return this.waitingEventCount;
  }

  /** Characters of the events waiting for lookups, as JSON, all together (at most `maxWaitingChars`). */
  get waitingChars(): number {
    return this.waitingCharCount;
  }

  /** Runs whose events wait for a lookup (at most `maxOpenRuns`). */
  get blockedRuns(): number {
    return this.blocked.size;
  }

  /**
   * Route one event to its run. Returns why it was turned down, if it was: an event whose payload
   * cannot be written as JSON (nested deeper than the JavaScript stack allows) cannot become a span
   * event's payload, nor wait in the state file for a lookup.
   */
  process(event: PrefectEvent, classified: Classified, nowMs: number): Rejected | undefined {
    let ref: RunRef;
    switch (classified.kind) {
      case 'state':
      case 'heartbeat':
        ref = classified.run;
        break;
      case 'run-event':
        ref = this.runEventTarget(classified.runs, nowMs);
        break;
      default:
        return undefined;
    }
    // The span event's payload, made here (before anything changes) so that an event that has none is turned down whole.
    let payload: string | undefined;
    if (classified.kind === 'run-event') {
      payload = jsonText(event.payload);
      if (payload === undefined) return TOO_DEEP;
    }
    const blockedOn = this.blocked.get(ref.id);
    if (blockedOn !== undefined) return this.enqueue(blockedOn, event, classified, payload, nowMs);
    let run = this.open.get(ref.id);
    const before = this.settling.get(ref.id);
    if (before !== undefined && run !== undefined && settlingTakes(before, run, event, classified)) {
      this.apply(before, event, classified, payload, nowMs);
      return undefined;
    }
    if (run === undefined) {
      const done = this.finished.get(ref.id);
      if (done !== undefined) {
        // An attempt ended incomplete was not seen terminal: only a state that says it leaves one starts the next.
        // One terminal state to another (RolledBack, a state set by hand) starts none: nothing runs again.
        // Nor does the state its terminal state follows, stamped later by a clock ahead: it is late.
        const rerun = classified.kind === 'state' && event.occurredUs > done.lastTerminalUs && (done.incomplete !== true || leavesTerminal(classified.state)) && !betweenTerminals(classified.state) && done.terminalFollows !== event.id;
        if (!rerun) {
          if (classified.kind !== 'heartbeat') this.late(ref, done, event, classified);
          return undefined;
        }
        run = this.openRun(ref, done.ctx, done.attempt + 1, nowMs);
        this.counts.reruns += 1;
        this.sink.notice({ kind: 'rerun', runId: ref.id, attempt: run.attempt, traceId: run.ctx.traceId });
        // Its tasks whose first events came before this state (reordered ahead of it) hang under it.
        this.moveChildren(ref.id, spanIdForRun(ref.id, done.attempt), run.spanId, event.occurredUs);
      } else {
        // A run first seen leaving a terminal state is a rerun whose attempts before are no longer
        // remembered (newer runs outlived its record, the state file was lost, or they came before
        // the start): its span must not take an earlier attempt's id, which was likely exported
        // already. Which rerun it is, its state history says (`lookupRerunAttempt`); without an
        // answer it is taken as the first.
        const rerun = classified.kind === 'state' && leavesTerminal(classified.state);
        const attempt = rerun ? this.unrememberedRerun(ref, event) : 0;
        if (attempt === undefined) return this.enqueue(attemptKey(ref.id), event, classified, payload, nowMs);
        const ctx = this.resolveCtx(ref, event, classified);
        if (ctx === 'wait') {
          // Waiting for where it hangs too (a subflow's parent): its number, once answered, is kept
          // for when the event comes back, not asked again.
          if (rerun) this.attemptAnswers.set(ref.id, { eventId: event.id, attempt });
          return this.enqueue(this.blocked.get(ref.id)!, event, classified, payload, nowMs);
        }
        run = this.openRun(ref, ctx, attempt, nowMs);
        const innerUs = this.innerBeforeOpen.get(ref.id);
        if (innerUs !== undefined) {
          this.innerBeforeOpen.delete(ref.id);
          run.noteInner(innerUs);
        }
        // A flow run whose tracking task was asked (its first event named none): its span names it too.
        const asked = ref.type === 'flow' ? this.flowParents.get(ref.id) : undefined;
        if (typeof asked === 'string') run.meta.parentTaskRunId = asked;
        if (rerun) {
          this.counts.reruns += 1;
          this.sink.notice({ kind: 'rerun', runId: ref.id, attempt: run.attempt, traceId: run.ctx.traceId });
          // Tasks seen before it hung under the first attempt's span, which is not this one.
          this.moveChildren(ref.id, spanIdForRun(ref.id, 0), run.spanId, event.occurredUs);
        }
      }
    } else {
      if (classified.kind === 'state' && run.latest === undefined && run.attempt === 0 && leavesTerminal(classified.state)) {
        const rerun = this.rerunOpenedByOthers(run, event);
        if (rerun === undefined) return this.enqueue(attemptKey(ref.id), event, classified, payload, nowMs);
        run = rerun;
      }
      this.open.touch(ref.id);
      if (classified.kind === 'state' && run.latest === undefined) this.hangUnderParentTask(run, event);
      if (classified.kind === 'state') this.noteLateTrackingTask(run, event);
    }
    if (classified.kind === 'state' && run.latest !== undefined && event.occurredUs < run.latest.occurredUs && TERMINAL_STATE_TYPES.has(classified.state.type)) {
      // An attempt's terminal state behind states that came after it: a rerun's, reordered ahead of it.
      const fromUs = laterAttemptFromUs(run, event);
      if (fromUs !== undefined) {
        this.splitAttempt(run, ref, fromUs, event, classified, nowMs);
        return undefined;
      }
    }
    if (classified.kind === 'state' && run.terminal && event.occurredUs > run.latest!.occurredUs && !betweenTerminals(classified.state) && run.latest!.follows !== event.id) {
      // The run left its terminal state (a re-run from the UI): close this attempt, open the next.
      // A state from one terminal state to another (RolledBack, a state set by hand) ends this attempt instead;
      // so does the state the terminal one follows, stamped later by a clock ahead (reordered behind it).
      const ctx = run.ctx;
      const before = run.spanId;
      this.retire(run, nowMs);
      run = this.openRun(ref, ctx, run.attempt + 1, nowMs);
      this.counts.reruns += 1;
      this.sink.notice({ kind: 'rerun', runId: ref.id, attempt: run.attempt, traceId: run.ctx.traceId });
      // Its tasks whose first events came before this state (reordered ahead of it) hang under it.
      this.moveChildren(ref.id, before, run.spanId, event.occurredUs);
    }
    const firstBefore = run.firstEventUs;
    this.apply(run, event, classified, payload, nowMs);
    // A rerun's state that occurred before the one that opened it (reordered behind it): the runs that
    // began from then on under the attempt before are the rerun's too.
    if (run.attempt > 0 && Number.isFinite(firstBefore) && run.firstEventUs < firstBefore) this.moveChildren(ref.id, spanIdForRun(ref.id, run.attempt - 1), run.spanId, run.firstEventUs);
    const settling = this.settling.get(ref.id);
    if (settling !== undefined) this.takeOverEvents(settling, run, nowMs);
    return undefined;
  }

  /**
   * The events other than states of an attempt settling beside its rerun `next` that occurred from
   * the rerun's first event on (after its own terminal state) are the rerun's, as in order: they
   * came ahead of the states that opened it (reordered), and the attempt open then took them.
   */
  private takeOverEvents(before: RunState, next: RunState, nowMs: number): void {
    if (next.attempt <= before.attempt || before.latest === undefined) return;
    const moved = before.detachOthersFrom(Math.max(next.firstEventUs, before.latest.occurredUs + 1));
    if (moved.length > 0) this.takeEvents(next, moved, nowMs);
  }

  /**
   * The span events taken out of the attempt before, applied to `next` as they came; a worker's
   * submitted-flow-run among them makes it wait for that worker's executed-flow-run, as in order.
   */
  private takeEvents(next: RunState, moved: readonly EventEntry[], nowMs: number): void {
    next.takeEvents(moved, this.options.maxSpanEvents, nowMs);
    for (const e of moved) if (e.attributes[ATTR.STATE_TYPE] === undefined) noteWorker(next, e.name);
  }

  /**
   * The terminal state of `run`'s attempt came after the first states of the next attempt (from
   * `fromUs` on; a rerun within the settle window, reordered on the way): the attempt takes back its
   * own events and ends with this state, as if it had come in order; the next attempt opens with
   * the events taken out, and the runs that started under it (tasks hanging under the flow run) move
   * to its span. STLOGGING lines already written for the events moved keep the span id of the
   * attempt before.
   */
  private splitAttempt(run: RunState, ref: RunRef, fromUs: number, event: PrefectEvent, classified: Classified, nowMs: number): void {
    const moved = run.detachFrom(fromUs);
    this.apply(run, event, classified, undefined, nowMs);
    const meta = { ...run.meta };
    // A flow run's own Prefect span is asked per attempt.
    if (run.ref.type === 'flow') delete meta.traceparent;
    this.retire(run, nowMs);
    const next = this.openRun(ref, run.ctx, run.attempt + 1, nowMs);
    next.meta = meta;
    this.counts.reruns += 1;
    this.sink.notice({ kind: 'rerun', runId: ref.id, attempt: next.attempt, traceId: next.ctx.traceId });
    this.takeEvents(next, moved, nowMs);
    if (next.terminal) {
      next.terminalAtMs = nowMs;
      this.deadlines.set(ref.id, nowMs + this.options.settleMs);
    }
    if (ref.type === 'flow' && (next.terminal || next.startUs !== undefined)) this.askNativeSpan(next);
    this.moveChildren(ref.id, spanIdForRun(ref.id, run.attempt), next.spanId, fromUs);
  }

  /**
   * The number of a rerun whose attempts before are not remembered, seen by `event` leaving a
   * terminal state: from its state history once answered (`lookupRerunAttempt`), the first rerun when
   * nothing can be asked. Undefined: the run is now blocked on that lookup, and `event` must wait.
   */
  private unrememberedRerun(ref: Pick<RunRef, 'id' | 'type'>, event: PrefectEvent): number | undefined {
    const answered = this.attemptAnswers.get(ref.id);
    if (answered !== undefined && answered.eventId === event.id) {
      this.attemptAnswers.delete(ref.id);
      return answered.attempt;
    }
    if (this.options.lookupRerunAttempts !== true) return 1;
    this.block(ref.id, attemptKey(ref.id), 'attempt', ref.type);
    return undefined;
  }

  /**
   * A run opened by other events (a custom or worker event came first) whose first state, `event`,
   * leaves a terminal state: a rerun whose attempts before are not remembered, as one first seen by
   * that state. Its span is not out yet: it takes the rerun's number in place. Undefined: it waits
   * for its state history, and so do the runs opened under it, not to end under the span id it is
   * leaving; `event` must wait too.
   */
  private rerunOpenedByOthers(run: RunState, event: PrefectEvent): RunState | undefined {
    const attempt = this.unrememberedRerun(run.ref, event);
    if (attempt === undefined) {
      for (const id of this.openUnder.get(run.spanId) ?? []) this.block(id, attemptKey(run.ref.id));
      return undefined;
    }
    const rerun = this.renumber(run, attempt);
    this.counts.reruns += 1;
    this.sink.notice({ kind: 'rerun', runId: rerun.ref.id, attempt: rerun.attempt, traceId: rerun.ctx.traceId });
    return rerun;
  }

  /**
   * The open attempt `run`, not exported yet, as attempt `attempt` instead: the same events, names
   * and place in its trace under the span id of that attempt; the runs opened under it move to that
   * span. STLOGGING lines already written for its events keep the span id it had.
   */
  private renumber(run: RunState, attempt: number): RunState {
    const next = RunState.fromJSON({ ...run.toJSON(), attempt });
    next.nativeAsked = run.nativeAsked;
    next.nativePending = run.nativePending;
    this.setOpen(next);
    this.moveChildren(run.ref.id, run.spanId, next.spanId, -Infinity);
    return next;
  }

  /**
   * Close an attempt, ended by its terminal state, for its rerun: it settles beside the next one
   * (`settling`) until its settle window ends, unless that has passed already (then it is exported).
   */
  private retire(run: RunState, nowMs: number): void {
    const endsAtMs = (run.terminalAtMs ?? nowMs) + this.options.settleMs;
    if (nowMs >= endsAtMs || !run.terminal) {
      this.finalize(run, undefined, nowMs);
      return;
    }
    this.finalize(run, undefined, nowMs, true);
    this.settling.set(run.ref.id, run);
  }

  /** Export an attempt that settled beside its rerun. */
  private endSettling(run: RunState, nowMs: number): void {
    if (this.settling.get(run.ref.id) !== run) return;
    this.settling.delete(run.ref.id);
    this.export(run, undefined, nowMs);
  }

  /**
   * The open runs that hang right under `parentId`'s span `before` and began at or after `fromUs`
   * (the next attempt's tasks, subflows and run_deployment children) move under its span `after`.
   * Found by the span they hang under (`openUnder`), which names the run and its attempt:
   * `PARENT_RUN` is not in the state file, and subflows are not among `childrenOf` (tasks only).
   * Each rerun does this (a flow run retried makes its failed tasks reruns): it looks only at the
   * runs under the span and at the flow run's tasks, however many other runs are open.
   */
  private moveChildren(parentId: string, before: string, after: string, fromUs: number): void {
    const tasks = this.childrenOf.get(parentId);
    if (tasks !== undefined) {
      for (const id of tasks) {
        const child = this.open.get(id);
        // A task of the next attempt (`childrenOf` holds the flow run's tasks), also one called inside
        // another: its flow run did not end, the grace `finalize` gave it does not apply.
        if (child !== undefined && child.firstEventUs >= fromUs && !child.terminal) this.deadlines.delete(id);
      }
    }
    const under = this.openUnder.get(before);
    if (under === undefined) return;
    for (const id of [...under]) {
      const child = this.open.get(id);
      if (child === undefined || child.firstEventUs < fromUs || child.ctx.parentSpanId !== before) continue;
      this.setCtx(child, { ...child.ctx, parentSpanId: after, [PARENT_RUN]: parentId });
      this.passUpLastKnown(child);
    }
  }

  /** Make `run` the open attempt of its run, in place of any other. */
  private setOpen(run: RunState): void {
    const other = this.open.get(run.ref.id);
    if (other !== undefined) this.listUnder(other, false);
    this.open.set(run.ref.id, run);
    this.listUnder(run, true);
  }

  /** Where a run hangs, changed: an open run is listed under its new parent span. */
  private setCtx(run: RunState, ctx: TraceCtx): void {
    const open = this.open.get(run.ref.id) === run;
    if (open) this.listUnder(run, false);
    run.ctx = ctx;
    if (open) this.listUnder(run, true);
  }

  /** Add an open run to (or take it out of) the runs under its parent span. */
  private listUnder(run: RunState, listed: boolean): void {
    const spanId = run.ctx.parentSpanId;
    if (spanId === undefined) return;
    let ids = this.openUnder.get(spanId);
    if (listed) {
      if (ids === undefined) this.openUnder.set(spanId, (ids = new Set()));
      ids.add(run.ref.id);
    } else if (ids !== undefined) {
      ids.delete(run.ref.id);
      if (ids.size === 0) this.openUnder.delete(spanId);
    }
  }

  /**
   * The run an event naming runs (innermost first) lands on: the innermost (SPEC §3), also when its
   * own events are still to come: reordered behind this one, or late after its flow run ended. Only
   * when the innermost is not known and the outer run it names ended longer than the task grace ago
   * is the event the outer run's (a late event, logged): the innermost may then be a run finished
   * and forgotten long ago, whose span must not be exported again.
   */
  private runEventTarget(named: readonly RunRef[], nowMs: number): RunRef {
    const runs = this.withoutCallingTasks(named);
    const inner = runs[0]!;
    if (runs.length === 1 || this.open.has(inner.id) || this.finished.has(inner.id)) return inner;
    for (let i = 1; i < runs.length; i++) {
      const outer = runs[i]!;
      if (this.open.has(outer.id)) return inner;
      const done = this.finished.get(outer.id);
      if (done !== undefined) return nowMs - done.endedAtMs <= this.options.taskGraceMs ? inner : outer;
    }
    return inner;
  }

  /**
   * The runs an event names, less the task runs known to belong to a flow run other than the one it
   * names: Prefect relates an event to the innermost flow run's context and to the task run's
   * context still set, which in a subflow called inside a task is the calling task, a task of the
   * parent flow run (`_infer_parent_task_runs` in prefect/tasks.py says as much). Such an event is
   * the subflow's. A task run not known yet, or of no known flow run, stays.
   */
  private withoutCallingTasks(runs: readonly RunRef[]): readonly RunRef[] {
    const flow = runs.find((r) => r.type === 'flow');
    if (flow === undefined || runs[0]!.type !== 'task') return runs;
    const kept = runs.filter((r) => {
      if (r.type !== 'task') return true;
      const open = this.open.get(r.id);
      const flowRunId = open !== undefined ? open.meta.flowRunId : finishedFlowRun(this.finished.get(r.id))?.flowRunId;
      return flowRunId === undefined || flowRunId === flow.id;
    });
    return kept.length > 0 ? kept : runs;
  }

  /**
   * A task run opened by another event that named it (one that came before its own states) hangs
   * under its flow run; its first state names the task it was called in (`__parents__`), under
   * which it hangs as if that state had come first. Its span is not exported yet, and the runs
   * hanging under it keep its span id.
   */
  private hangUnderParentTask(run: RunState, event: PrefectEvent): void {
    const flowRunId = run.ctx[PARENT_RUN];
    if (run.ref.type !== 'task' || run.ctx.root || flowRunId === undefined || flowRunId !== run.meta.flowRunId) return;
    const parentTaskId = this.parentTaskOf(run.ref.id, flowRunId, event);
    if (parentTaskId !== undefined) this.setCtx(run, this.childCtx(flowRunId, parentTaskId, run.ctx.traceId, event.occurredUs));
  }

  /**
   * A flow run opened as a root by an event that names no tracking task (a heartbeat, a worker or
   * custom event), whose tracking task no lookup found (none asked, none answered, given up, or
   * answered "none"; one found but not followed to its flow run was warned of then): its states,
   * when they name one, say it is a subflow after all. Its trace was decided (spans of its tasks may
   * be out already), so it stays a root, with `prefect.parent_task_run.id` and a warning, said once:
   * by the first state that names its tracking task.
   */
  private noteLateTrackingTask(run: RunState, event: PrefectEvent): void {
    if (run.ref.type !== 'flow' || !run.ctx.root || run.meta.parentTaskRunId !== undefined) return;
    const trackingId = trackingTaskOf(event);
    if (trackingId !== undefined) this.sink.notice({ kind: 'parent_late', runId: run.ref.id, taskRunId: trackingId });
  }

  /**
   * Keep an event until the lookup of `taskRunId` answers. It waits in the state file too, so it
   * has to be writable as JSON; a run event's payload (`payloadText`) was already written.
   * Past `maxOpenRuns` waiting events, or runs blocked (a run whose only event was turned down
   * stays blocked without one), or past `maxWaitingChars` of waiting events (one event may be
   * megabytes), the oldest lookup is given up on (`abandonOldestLookup`).
   */
  private enqueue(taskRunId: string, event: PrefectEvent, classified: Classified, payloadText: string | undefined, nowMs: number): Rejected | undefined {
    const chars = jsonChars(event, payloadText);
    const rejected = chars === undefined ? TOO_DEEP : undefined;
    const waiting = this.waiting.get(taskRunId);
    if (chars !== undefined && waiting !== undefined) {
      waiting.events.push({ event, classified });
      waiting.chars += chars;
      this.waitingEventCount += 1;
      this.waitingCharCount += chars;
    }
    const max = this.options.maxOpenRuns;
    const maxChars = this.options.maxWaitingChars ?? Infinity;
    // A lookup given up may have had no events left (they were turned down): give up on the next.
    for (;;) {
      const bound: WaitingBound | undefined = this.waitingEventCount > max || this.blocked.size > max ? 'count' : this.waitingCharCount > maxChars ? 'size' : undefined;
      if (bound === undefined || this.waiting.size === 0) break;
      this.abandonOldestLookup(bound, nowMs);
    }
    return rejected;
  }

  /**
   * A server that answers lookups slowly, or never, must not make the events waiting for them a
   * queue without end: past the bound, the oldest lookup is answered "not found" here and now. Its
   * runs become roots of their own traces (as after a failed lookup); nothing is dropped. The
   * server's answer, when it comes, only fills the owner cache. Counted and logged (a notice).
   */
  private abandonOldestLookup(bound: WaitingBound, nowMs: number): void {
    const oldest = this.waiting.peek();
    if (oldest === undefined) return;
    const [key, waiting] = oldest;
    this.lookupCounts(waiting.kind).abandoned += 1;
    if (waiting.kind === 'attempt') this.sink.notice({ kind: 'rerun_lookup_abandoned', runId: runOfAttemptKey(key), events: waiting.events.length, bound });
    else this.sink.notice({ kind: 'lookup_abandoned', taskRunId: key, events: waiting.events.length, bound });
    this.settle(key, waiting, nowMs);
  }

  /** Answer a waiting lookup "not found" without counting it as answered. */
  private settle(key: string, waiting: Waiting, nowMs: number): void {
    if (waiting.kind === 'flow_parent') this.settleFlowParent(key, null, nowMs);
    else if (waiting.kind === 'attempt') this.settleAttempt(key, waiting, undefined, nowMs);
    else this.settleOwner(key, null, nowMs);
  }

  /** The counts of lookups of a kind: of where a run hangs, or of a rerun's number. */
  private lookupCounts(kind: Waiting['kind']): TrackerCounts['parentLookups'] {
    return kind === 'attempt' ? this.counts.rerunLookups : this.counts.parentLookups;
  }

  /** An answer to a lookup still waited for (one given up on is not counted again). */
  private countAnswer(key: string, found: boolean): void {
    const waiting = this.waiting.get(key);
    if (waiting === undefined) return;
    const counts = this.lookupCounts(waiting.kind);
    if (found) counts.found += 1;
    else counts.failed += 1;
  }

  /** One waiting or restored event, with the boundary `ingest` gives each incoming one: it never stops the others. */
  private processQueued(event: PrefectEvent, classified: Classified | undefined, nowMs: number): void {
    try {
      const rejected = this.process(event, classified ?? classify(event), nowMs);
      if (rejected !== undefined) this.sink.rejected(event, rejected);
    } catch (err) {
      this.sink.failed(event, err);
    }
  }

  /** The answer to a `lookup`: the flow run owning `taskRunId`, or null when it could not be found. */
  resolveOwner(taskRunId: string, flowRunId: string | null, nowMs: number): void {
    this.countAnswer(taskRunId, flowRunId !== null);
    this.settleOwner(taskRunId, flowRunId, nowMs);
  }

  private settleOwner(taskRunId: string, flowRunId: string | null, nowMs: number): void {
    const waiting = this.waiting.get(taskRunId);
    // An answer to a lookup given up on (`abandonOldestLookup`) only corrects the cache.
    if (waiting === undefined && flowRunId === null && this.owners.has(taskRunId)) return;
    this.remember(this.owners, taskRunId, flowRunId, OWNER_CACHE_MAX);
    if (waiting !== undefined) this.release(taskRunId, waiting, nowMs);
  }

  /**
   * The answer to a `lookupFlowParent`: the tracking task of a flow run, null when it has none,
   * undefined when it could not be found (both: it is taken as a root).
   */
  resolveFlowParent(flowRunId: string, taskRunId: string | null | undefined, nowMs: number): void {
    this.countAnswer(flowRunId, taskRunId !== undefined);
    this.settleFlowParent(flowRunId, taskRunId ?? null, nowMs);
  }

  private settleFlowParent(flowRunId: string, taskRunId: string | null, nowMs: number): void {
    const waiting = this.waiting.get(flowRunId);
    if (waiting === undefined && taskRunId === null && this.flowParents.has(flowRunId)) return;
    this.remember(this.flowParents, flowRunId, taskRunId === null ? null : (canonicalUuid(taskRunId) ?? null), OWNER_CACHE_MAX);
    if (waiting !== undefined) this.release(flowRunId, waiting, nowMs);
  }

  /**
   * The answer to a `lookupRerunAttempt`: the run's state history in Prefect's order, or undefined
   * when it could not be read (then the run is taken as the first rerun). An answer to a lookup given
   * up on changes nothing: its events went on without it.
   */
  resolveRerunAttempt(runId: string, history: readonly HistoryState[] | undefined, nowMs: number): void {
    const key = attemptKey(runId);
    const waiting = this.waiting.get(key);
    if (waiting?.kind !== 'attempt') return;
    this.countAnswer(key, history !== undefined);
    if (history === undefined) this.sink.notice({ kind: 'rerun_lookup_failed', runId });
    this.settleAttempt(key, waiting, history, nowMs);
  }

  /**
   * Number the rerun a lookup was asked for (the first waiting state of its run, which first saw it
   * leave a terminal state) from `history`, or as the first without one, and release its events.
   */
  private settleAttempt(key: string, waiting: Waiting, history: readonly HistoryState[] | undefined, nowMs: number): void {
    const runId = runOfAttemptKey(key);
    const first = waiting.events.find((q) => q.classified.kind === 'state' && q.classified.run.id === runId);
    let answer: { readonly eventId: string; readonly attempt: number } | undefined;
    if (first !== undefined && first.classified.kind === 'state') {
      const state = first.classified.state;
      const attempt = history === undefined ? 1 : rerunAttemptFromHistory(history, { id: first.event.id, occurredUs: first.event.occurredUs, type: state.type, leavesTerminal: leavesTerminal(state) });
      answer = { eventId: first.event.id, attempt };
      this.attemptAnswers.set(runId, answer);
    }
    this.release(key, waiting, nowMs);
    // Not taken: gone. One kept again for a run that now waits for another lookup stays.
    if (answer !== undefined && this.attemptAnswers.get(runId) === answer) this.attemptAnswers.delete(runId);
  }

  /** A lookup answered: the runs blocked on it are free, its events processed in order. */
  private release(key: string, waiting: Waiting, nowMs: number): void {
    this.waiting.delete(key);
    this.waitingEventCount -= waiting.events.length;
    this.waitingCharCount -= waiting.chars;
    for (const runId of waiting.runs) if (this.blocked.get(runId) === key) this.blocked.delete(runId);
    for (const q of waiting.events) this.processQueued(q.event, q.classified, nowMs);
  }

  /** True while the span of this flow run attempt still waits for its native-span lookup. */
  wantsNativeSpan(flowRunId: string, attempt: number): boolean {
    const run = this.open.get(flowRunId);
    return run !== undefined && run.attempt === attempt && run.nativePending;
  }

  /**
   * The answer to a `lookupNativeSpan`: the run's `__OTEL_TRACEPARENT` label (undefined when it has
   * none) and when it was due to start (`expected_start_time`), or `failed`. 'late' when the span was
   * already exported without it.
   */
  resolveNativeSpan(flowRunId: string, attempt: number, answer: { traceparent: string | undefined; expectedStartUs?: number | undefined } | 'failed', nowMs: number): 'linked' | 'no_label' | 'failed' | 'late' {
    const run = this.open.get(flowRunId);
    if (run === undefined || run.attempt !== attempt || !run.nativePending) return 'late';
    run.nativePending = false;
    let outcome: 'linked' | 'no_label' | 'failed' = 'failed';
    if (answer !== 'failed') {
      outcome = parseTraceparent(answer.traceparent) === undefined ? 'no_label' : 'linked';
      if (outcome === 'linked') run.meta.traceparent = answer.traceparent;
      // The run's first attempt only: a rerun's own Scheduled state is always an event.
      if (answer.expectedStartUs !== undefined && run.attempt === 0) run.meta.expectedStartUs = answer.expectedStartUs;
    }
    this.counts.native[outcome === 'no_label' ? 'noLabel' : outcome] += 1;
    // A span held for this answer goes out once it has settled.
    if (run.terminal) this.deadlines.set(run.ref.id, Math.max(nowMs, (run.terminalAtMs ?? nowMs) + this.options.settleMs));
    return outcome;
  }

  /** Export what is due: settled runs, runs past their grace or idle timeout. */
  tick(nowMs: number): void {
    for (const run of [...this.settling.values()]) if ((run.terminalAtMs ?? nowMs) + this.options.settleMs <= nowMs) this.endSettling(run, nowMs);
    for (const [runId, at] of this.deadlines) {
      if (at > nowMs) continue;
      const run = this.open.get(runId);
      if (run === undefined) {
        this.deadlines.delete(runId);
        continue;
      }
      this.due(run, nowMs);
    }
    const idleBefore = nowMs - this.options.openRunTimeoutMs;
    let scheduled: string[] | undefined;
    for (let oldest = this.open.peek(); oldest !== undefined && oldest[1].lastActivityMs <= idleBefore; oldest = this.open.peek()) {
      const run = oldest[1];
      if (run.awaiting) {
        // Waiting for its scheduled time or a resume, not idle: ended here, the rest of the run would be late lines.
        run.lastActivityMs = nowMs;
        this.open.touch(run.ref.id);
        // A scheduled flow run may have been deleted meanwhile, which Prefect announces with no event: asked again after each timeout.
        if (scheduledFlowRun(run)) (scheduled ??= []).push(run.ref.id);
        continue;
      }
      this.finalize(run, run.terminal ? undefined : 'idle_timeout', nowMs);
    }
    if (scheduled !== undefined) {
      // Scheduled runs whose timeout comes within a tenth of it join the same request: runs seen
      // together (a deployment's schedule) would otherwise be asked one tick apart, and while one
      // check is out the next is not made.
      const gatherBefore = idleBefore + Math.min(SCHEDULED_GATHER_MAX_MS, this.options.openRunTimeoutMs / 10);
      const soon: RunState[] = [];
      for (const run of this.open.values()) {
        if (run.lastActivityMs > gatherBefore) break;
        if (scheduledFlowRun(run)) soon.push(run);
      }
      for (const run of soon) {
        run.lastActivityMs = nowMs;
        this.open.touch(run.ref.id);
        scheduled.push(run.ref.id);
      }
      this.sink.checkScheduledRuns?.(scheduled);
    }
  }

  /**
   * The answer to `checkScheduledRuns`: the flow runs Prefect no longer has. Those still Scheduled and
   * not started are forgotten without a span (they never ran); one Scheduled again after it started
   * (`AwaitingRetry`, `Resuming`: a deployment's run goes with its schedule as one not started does)
   * ran, and its span ends incomplete, `deleted`; a run whose events have moved on meanwhile is left
   * to them. Returns the ids of those forgotten.
   */
  forgetDeletedRuns(flowRunIds: readonly string[], nowMs: number): string[] {
    const forgotten: string[] = [];
    for (const id of flowRunIds) {
      const run = this.open.get(id);
      if (run === undefined || !scheduledFlowRun(run)) continue;
      if (!run.awaitingStart) {
        this.finalize(run, 'deleted', nowMs);
        continue;
      }
      // Task events seen under it say it ran after all: it is left to them.
      const children = this.childrenOf.get(id);
      if (children !== undefined && children.size > 0) continue;
      this.childrenOf.delete(id);
      this.finalize(run, undefined, nowMs, true);
      forgotten.push(id);
    }
    this.counts.deletedScheduled += forgotten.length;
    return forgotten;
  }

  /** End of input: every open run is exported, unfinished ones as incomplete. */
  finishAll(reason: string, nowMs: number): void {
    // Oldest first, and each settled is gone: events it releases may wait for another lookup (a rerun's
    // number answered, the run's parent still to ask), given up on in turn.
    for (let oldest = this.waiting.peek(); oldest !== undefined; oldest = this.waiting.peek()) {
      this.lookupCounts(oldest[1].kind).abandoned += 1;
      this.settle(oldest[0], oldest[1], nowMs);
    }
    for (const run of [...this.settling.values()]) this.endSettling(run, nowMs);
    for (const run of [...this.open.values()]) if (run.ref.type === 'task') this.finalize(run, run.terminal ? undefined : reason, nowMs);
    for (const run of [...this.open.values()]) this.finalize(run, run.terminal ? undefined : reason, nowMs);
  }

  snapshot(): TrackerSnapshot {
    return { ...this.snapshotChanging(), finished: [...this.finished] };
  }

  /** Everything but the finished runs: what changes in place between two saves of the state. */
  snapshotChanging(): Omit<TrackerSnapshot, 'finished'> {
    return {
      open: [...this.open.values(), ...this.settling.values()].map((r) => r.toJSON()),
      owners: [...this.owners],
      waiting: [...this.waiting.values()].flatMap((w) => w.events.map((x) => x.event)),
    };
  }

  /** The runs finished since the last call (for the state journal); undefined when too many to list. */
  takeFinished(): [string, FinishedRun][] | undefined {
    return this.finishedAdded.take(this.finished);
  }

  /**
   * Take over the runs of a previous process; events that waited for a lookup are processed again.
   * `downMs`: how long nothing watched since the snapshot was saved (see `RunState.fromJSON`); a
   * run open when the process stopped is not idle for the outage, whose events are still to be read.
   */
  restore(snapshot: TrackerSnapshot, nowMs: number, downMs = 0): void {
    for (const [id, f] of snapshot.finished) this.remember(this.finished, id, f, this.options.maxOpenRuns);
    for (const [id, owner] of snapshot.owners) this.remember(this.owners, id, owner, OWNER_CACHE_MAX);
    for (const data of snapshot.open) {
      const run = RunState.fromJSON(data, downMs);
      // Saved under a higher OTEL_SPAN_EVENT_COUNT_LIMIT: within this one from now on, as the open runs are.
      run.limitEvents(this.options.maxSpanEvents);
      // Two attempts of one run: the earlier one was settling beside its rerun.
      const other = this.open.get(run.ref.id);
      const [open, settling] = other !== undefined && other.attempt > run.attempt ? [other, run] : [run, other];
      this.setOpen(open);
      if (settling !== undefined) this.settling.set(run.ref.id, settling);
    }
    for (const run of this.open.values()) this.restoreParentRun(run);
    for (const run of this.settling.values()) this.restoreParentRun(run);
    for (const run of this.open.values()) if (run.terminal) this.deadlines.set(run.ref.id, nowMs + this.options.settleMs);
    for (const run of this.open.values()) if (run.ref.type === 'task' && run.meta.flowRunId !== undefined) this.adopt(run);
    // A state saved under a higher bound (PREFECT_OTEL_MAX_OPEN_RUNS lowered since) is taken over within this one.
    while (this.open.size > this.options.maxOpenRuns && this.evictOldest(undefined, nowMs));
    for (const event of snapshot.waiting) this.processQueued(event, undefined, nowMs);
  }

  /**
   * The run a restored run's span hangs under (`PARENT_RUN`, which the state file leaves out), found
   * again: among the runs it can hang under (a task: its flow run and the tasks it was called in; a
   * subflow: the flow run of its tracking task), the one with an attempt whose span is its parent
   * span. So a task first seen through another event, whose first state is still to come, moves
   * under the task that state names, and chains of parents are followed, as without a restart.
   */
  private restoreParentRun(run: RunState): void {
    const { parentSpanId, root } = run.ctx;
    if (root || typeof parentSpanId !== 'string') return;
    const m = run.meta;
    const candidates: unknown[] = run.ref.type === 'task'
      ? [m.flowRunId, ...(Array.isArray(m.parentTaskIds) ? m.parentTaskIds : [])]
      : [typeof m.parentTaskRunId === 'string' ? this.ownerOf(m.parentTaskRunId) : undefined];
    for (const id of candidates) {
      if (typeof id !== 'string' || id === run.ref.id) continue;
      const latest = (this.open.get(id) ?? this.finished.get(id))?.attempt ?? 0;
      for (let attempt = latest; attempt >= 0 && attempt >= latest - MAX_PARENT_ATTEMPTS; attempt--) {
        if (spanIdForRun(id, attempt) === parentSpanId) {
          run.ctx = { ...run.ctx, [PARENT_RUN]: id };
          return;
        }
      }
    }
  }

  private openRun(ref: RunRef, ctx: TraceCtx, attempt: number, nowMs: number): RunState {
    const run = new RunState(ref, ctx, attempt, nowMs);
    this.setOpen(run);
    this.counts.runsOpened += 1;
    // Attempts settling beside their reruns count against the bound too: the oldest is exported first.
    if (this.settling.size > 0 && this.open.size + this.settling.size > this.options.maxOpenRuns) this.endSettling(this.settling.peek()![1], nowMs);
    if (this.open.size > this.options.maxOpenRuns) this.evictOldest(run, nowMs);
    return run;
  }

  /** End the least recently active run (never `keep`, the run just opened) to make room; false when there is none. */
  private evictOldest(keep: RunState | undefined, nowMs: number): boolean {
    const oldest = this.open.peek()?.[1];
    if (oldest === undefined || oldest === keep) return false;
    this.counts.evicted += 1;
    this.sink.notice({ kind: 'evicted', runId: oldest.ref.id, traceId: oldest.ctx.traceId });
    this.finalize(oldest, oldest.terminal ? undefined : 'evicted', nowMs);
    return true;
  }

  private resolveCtx(ref: RunRef, event: PrefectEvent, classified: Classified): TraceCtx | 'wait' {
    if (ref.type === 'flow') {
      let trackingId = classified.kind === 'state' || classified.kind === 'heartbeat' ? trackingTaskOf(event) : undefined;
      if (trackingId === undefined && classified.kind !== 'state' && this.options.lookupFlowParents === true) {
        // A heartbeat, worker or custom event names no tracking task: only the run's own states
        // say whether it is a subflow. Its tracking task is asked (GET /api/flow_runs/{id}), as for a
        // flow run that runs hang under before it is seen, not taken to be none.
        const asked = this.flowParents.get(ref.id);
        if (asked === undefined) return this.block(ref.id, ref.id, 'flow_parent');
        if (asked !== null) trackingId = asked;
      }
      if (trackingId === undefined) return rootCtx(ref.id);
      const owner = this.ownerOf(trackingId);
      if (owner === undefined) return this.block(ref.id, trackingId);
      if (owner === null) {
        this.sink.notice({ kind: 'lookup_failed', runId: ref.id, taskRunId: trackingId });
        return rootCtx(ref.id);
      }
      const pending = this.blocked.get(owner);
      if (pending !== undefined) return this.block(ref.id, pending);
      if (this.leadsBackTo(owner, ref.id)) {
        // Its tracking task belongs to itself, or to a flow run that hangs (maybe through others) under it.
        this.sink.notice({ kind: 'parent_cycle', runId: ref.id, taskRunId: trackingId });
        return rootCtx(ref.id);
      }
      const traceId = this.traceOfFlowRun(ref.id, owner);
      return traceId === undefined ? 'wait' : this.childCtx(owner, undefined, traceId, event.occurredUs);
    }
    const flowRel = event.related.find((r) => r.role === 'flow-run');
    const flowRunId = flowRel === undefined ? undefined : runRefFromResourceId(flowRel.id)?.id;
    if (flowRunId === undefined) return this.flowlessTaskCtx(ref.id, event);
    if (flowRunId === ref.id) return rootCtx(ref.id);
    const pending = this.blocked.get(flowRunId);
    if (pending !== undefined) return this.block(ref.id, pending);
    const traceId = this.traceOfFlowRun(ref.id, flowRunId);
    return traceId === undefined ? 'wait' : this.childCtx(flowRunId, this.parentTaskOf(ref.id, flowRunId, event), traceId, event.occurredUs);
  }

  /**
   * A task run outside any flow run: under the task that called it (`__parents__`, which Prefect
   * names for a task called inside another outside a flow), in that task's trace; with none, the
   * root of its own trace.
   */
  private flowlessTaskCtx(taskRunId: string, event: PrefectEvent): TraceCtx {
    const parentId = this.parentTaskOf(taskRunId, undefined, event);
    if (parentId === undefined) return rootCtx(taskRunId);
    const parent = this.open.get(parentId) ?? this.finished.get(parentId);
    return this.childCtx(parentId, undefined, parent?.ctx.traceId ?? traceIdForRun(parentId), event.occurredUs);
  }

  /**
   * The trace of the flow run `flowRunId` that `runId` hangs under. A flow run seen (open or
   * finished) knows its own; one not seen yet (its events were missed or are still to come) may be
   * a subflow: its trace is its root's, found up the chain of tracking tasks (`lookupFlowParent`,
   * then `lookup` of the task's flow run, as for a subflow's own events), so that the run does not
   * start a trace of its own under a parent span that is in another. Undefined: `runId` is blocked
   * on a lookup.
   */
  private traceOfFlowRun(runId: string, flowRunId: string): string | undefined {
    let id = flowRunId;
    for (let depth = 0; depth < MAX_PARENT_DEPTH; depth++) {
      const known = this.open.get(id) ?? this.finished.get(id);
      if (known !== undefined) return known.ctx.traceId;
      if (this.options.lookupFlowParents !== true) break;
      const pending = this.blocked.get(id);
      if (pending !== undefined) {
        this.block(runId, pending);
        return undefined;
      }
      const trackingId = this.flowParents.get(id);
      if (trackingId === undefined) {
        this.block(runId, id, 'flow_parent');
        return undefined;
      }
      // No parent, a failed lookup, or a loop: the flow run is a root, as its own events will find.
      if (trackingId === null) break;
      const owner = this.ownerOf(trackingId);
      if (owner === undefined) {
        this.block(runId, trackingId);
        return undefined;
      }
      if (owner === null || owner === flowRunId || owner === runId) break;
      id = owner;
    }
    return traceIdForRun(id);
  }

  /**
   * The task a task run hangs under: the first of its `__parents__` that is not itself, is not known
   * as anything but a task of the same flow run (of none: `flowRunId` undefined), and whose known
   * parents do not lead back to it. Prefect names a task that started before this one; bad data must
   * not make a span its own ancestor (a trace without a root). A parent not seen yet is taken as
   * named (events come in any order); undefined: the flow run is the parent.
   */
  private parentTaskOf(taskRunId: string, flowRunId: string | undefined, event: PrefectEvent): string | undefined {
    for (const id of parentTaskIdsOf(event)) {
      if (id === taskRunId) continue;
      const open = this.open.get(id);
      const known = open === undefined ? finishedFlowRun(this.finished.get(id)) : { type: open.ref.type, flowRunId: open.meta.flowRunId };
      if (known !== undefined && (known.type !== 'task' || (known.flowRunId ?? flowRunId) !== flowRunId)) continue;
      if (!this.leadsBackTo(id, taskRunId)) return id;
    }
    return undefined;
  }

  /** True when `runId` is `fromId` or one of its known parents (or the chain is longer than `MAX_PARENT_DEPTH`). */
  private leadsBackTo(fromId: string, runId: string): boolean {
    let id: string | undefined = fromId;
    for (let depth = 0; id !== undefined; depth++) {
      if (id === runId || depth >= MAX_PARENT_DEPTH) return true;
      id = (this.open.get(id) ?? this.finished.get(id))?.ctx[PARENT_RUN];
    }
    return false;
  }

  /**
   * The context of a run hanging under `flowRunId` (or under `parentTaskId` inside it), in the trace
   * `traceId`, whose first event occurred at `occurredUs`.
   */
  private childCtx(flowRunId: string, parentTaskId: string | undefined, traceId: string, occurredUs: number): TraceCtx {
    const parentId = parentTaskId ?? flowRunId;
    return { traceId, parentSpanId: spanIdForRun(parentId, this.attemptAt(parentId, occurredUs)), root: false, [PARENT_RUN]: parentId };
  }

  /**
   * The attempt of the run `runId` that a run starting at `occurredUs` hangs under: its latest,
   * unless that began later (a rerun), as when a subflow's events waited for the lookup of its
   * parent while the parent was rerun: then the one before.
   */
  private attemptAt(runId: string, occurredUs: number): number {
    const run = this.open.get(runId) ?? this.finished.get(runId);
    if (run === undefined) return 0;
    return run.attempt > 0 && run.firstEventUs !== undefined && occurredUs < run.firstEventUs ? run.attempt - 1 : run.attempt;
  }

  private ownerOf(taskRunId: string): string | null | undefined {
    const known = this.open.get(taskRunId);
    if (known?.meta.flowRunId !== undefined) return known.meta.flowRunId;
    return this.owners.get(taskRunId);
  }

  /**
   * Hold `runId`'s events until the lookup of `key` (a task run's flow run, a flow run's tracking
   * task, or, keyed by `attemptKey`, the state history of the run `runId` of type `type`) answers.
   */
  private block(runId: string, key: string, kind: Waiting['kind'] = 'owner', type?: RunType): 'wait' {
    this.blocked.set(runId, key);
    const waiting = this.waiting.get(key);
    if (waiting !== undefined) waiting.runs.push(runId);
    else {
      this.waiting.set(key, { events: [], runs: [runId], kind, chars: 0 });
      this.lookupCounts(kind).lookups += 1;
      if (kind === 'flow_parent') this.sink.lookupFlowParent(key);
      else if (kind === 'attempt') this.sink.lookupRerunAttempt(runId, type!);
      else this.sink.lookup(key);
    }
    return 'wait';
  }

  /**
   * A run ended without a terminal state ends at its last known time (SPEC §3): the latest `occurred`
   * of its own events and of the runs inside it, so that its span encloses theirs. So `run`'s last
   * known time goes up the spans it hangs under (task → the task it was called in → its flow run →
   * a subflow's parent flow run), to each open attempt whose span that is (`noteInner`: one number
   * per run). A parent that already knew as late a time passed it on then: the walk stops there. A
   * parent attempt no longer open (exported, or one before a rerun) takes nothing, and the walk goes
   * on above it; what arrives after a span was made does not change it.
   */
  private passUpLastKnown(run: RunState): void {
    const timeUs = run.lastKnownUs;
    let ctx: TraceCtx | undefined = run.ctx;
    for (let depth = 0; depth < MAX_PARENT_DEPTH; depth++) {
      const parentId: string | undefined = ctx[PARENT_RUN];
      const spanId: string | undefined = ctx.parentSpanId;
      if (parentId === undefined || spanId === undefined) return;
      const open = this.open.get(parentId);
      const settling = this.settling.get(parentId);
      const parent = open?.spanId === spanId ? open : settling?.spanId === spanId ? settling : undefined;
      if (parent !== undefined && !parent.noteInner(timeUs)) return;
      // Every attempt of a run hangs where its first did: any of them leads on up.
      ctx = (open ?? settling ?? this.finished.get(parentId))?.ctx;
      if (ctx === undefined) {
        // A parent not seen yet: its span takes this time when it opens.
        const known = this.innerBeforeOpen.get(parentId);
        if (known === undefined || timeUs > known) this.remember(this.innerBeforeOpen, parentId, timeUs, this.options.maxOpenRuns);
        return;
      }
    }
  }

  /**
   * A flow run gets no events of its own while its tasks (or its subflows) work: their activity is
   * its activity, for the idle timeout and the open-run bound alike. Walks up task → flow run →
   * subflow's tracking task → its flow run, as far as those runs are open. An owner touched less
   * than `OWNER_TOUCH_MS` ago (and so its own owners) is left as it is: a busy flow's tasks would
   * otherwise re-queue it in the open-run order on every event.
   */
  private keepOwnersAlive(run: RunState, nowMs: number): void {
    let up = run.ref.type === 'task' ? run.meta.flowRunId : run.meta.parentTaskRunId;
    for (let depth = 0; up !== undefined && depth < MAX_OWNER_DEPTH; depth++) {
      const owner = this.open.get(up);
      if (owner === undefined || nowMs - owner.lastActivityMs < OWNER_TOUCH_MS) return;
      owner.lastActivityMs = nowMs;
      this.open.touch(up);
      up = owner.ref.type === 'task' ? owner.meta.flowRunId : owner.meta.parentTaskRunId;
    }
  }

  /** `payload`: the event's payload as JSON, for a run event. */
  private apply(run: RunState, event: PrefectEvent, classified: Classified, payload: string | undefined, nowMs: number): void {
    const own = classified.kind !== 'run-event' || event.resource.id.endsWith(run.ref.id);
    const flowRunBefore = run.meta.flowRunId;
    run.learn(event, own, classified.kind !== 'run-event');
    run.touch(event, nowMs);
    this.keepOwnersAlive(run, nowMs);
    this.passUpLastKnown(run);
    if (run.ref.type === 'task' && run.meta.flowRunId !== undefined) {
      // An event naming another flow run moves the task: it leaves the children of the one it was under.
      if (flowRunBefore !== undefined && flowRunBefore !== run.meta.flowRunId) this.disown(run.ref.id, flowRunBefore);
      this.adopt(run);
    }
    if (classified.kind === 'heartbeat') return;
    const lag = event.receivedUs === undefined ? undefined : Math.round((event.receivedUs - event.occurredUs) / 1000);
    if (classified.kind === 'state') {
      const s = boundState(classified.state, this.options.payloadMaxChars);
      const attrs: Attributes = {
        [ATTR.STATE_TYPE]: s.type,
        [ATTR.STATE_NAME]: s.name,
        [ATTR.STATE_MESSAGE]: s.message,
        [ATTR.STATE_ID]: event.id,
      };
      if (s.from !== undefined) attrs[ATTR.STATE_FROM] = s.from;
      if (s.runCount !== undefined) attrs[ATTR.RUN_COUNT] = s.runCount;
      if (lag !== undefined) attrs[ATTR.EVENT_RECEIVED_LAG_MS] = lag;
      const wasTerminal = run.terminal;
      run.applyState(event, s);
      run.addEvent(event, s.name, attrs, this.options.maxSpanEvents);
      if (run.terminal && !wasTerminal) run.terminalAtMs = nowMs;
      // An attempt settling beside its rerun is exported as it is, without asking or waiting.
      const open = this.open.get(run.ref.id) === run;
      if (open && run.ref.type === 'flow' && (s.type === 'RUNNING' || run.terminal)) this.askNativeSpan(run);
      if (open && run.terminal) this.deadlines.set(run.ref.id, nowMs + this.options.settleMs);
      // A task given the grace (its flow run ended) that stops at NotReady has nothing more to come;
      // nor has a background task (its flow run's end gives it no grace).
      const graceUntil = open && notReady(run) ? (this.deadlines.get(run.ref.id) ?? (run.meta.deferred === true || this.parentEnded(run) ? Infinity : undefined)) : undefined;
      if (graceUntil !== undefined) this.deadlines.set(run.ref.id, Math.min(graceUntil, nowMs + this.options.settleMs));
      // The log line keeps the whole message (a traceback); the span keeps it within the payload's bound.
      this.emitLog('transition', run, event, { ...classified.state, terminal: TERMINAL_STATE_TYPES.has(s.type) });
    } else {
      const attrs: Attributes = {
        [ATTR.EVENT_ID]: event.id,
        [ATTR.EVENT_RESOURCE_ID]: truncate(event.resource.id, MAX_EVENT_TEXT_CHARS),
      };
      if (event.resource.name !== undefined) attrs[ATTR.EVENT_RESOURCE_NAME] = truncate(event.resource.name, MAX_EVENT_TEXT_CHARS);
      attrs[ATTR.EVENT_PAYLOAD] = truncate(payload ?? '{}', this.options.payloadMaxChars);
      if (lag !== undefined) attrs[ATTR.EVENT_RECEIVED_LAG_MS] = lag;
      run.addEvent(event, event.name, attrs, this.options.maxSpanEvents);
      this.emitLog('event', run, event, undefined);
      noteWorker(run, event.name);
    }
    this.counts.spanEvents += 1;
  }

  /**
   * Prefect's own span of a flow run is known only from the run's REST labels, where the flow
   * process PATCHes `__OTEL_TRACEPARENT` as its span starts, before it proposes Running. So ask
   * once per attempt, when the attempt is first seen Running (or terminal, when Running was missed
   * or came before a restart); the label then names this attempt's span (a run_deployment child
   * carries its parent's traceparent only until then). The answer normally arrives long before the
   * run ends; `due` holds a finished span for it at most `nativeSpanWaitMs` past the settle window.
   * A span ended any other way (a rerun closing the attempt, idle timeout, eviction, end of input)
   * goes out without waiting; a later answer is then ignored (counted as `late`).
   */
  private askNativeSpan(run: RunState): void {
    if (this.options.nativeSpanWaitMs === undefined || run.nativeAsked || run.meta.traceparent !== undefined) return;
    run.nativeAsked = true;
    run.nativePending = true;
    this.counts.native.lookups += 1;
    this.sink.lookupNativeSpan(run.ref.id, run.attempt);
  }

  /**
   * Register a task under its flow run; a task whose flow run attempt already ended gets the grace
   * period from its last activity: the flow run finished, or the task began before the attempt now
   * open (a rerun), and is a task of the attempt before, which ended (one settling beside its rerun
   * gives its tasks the grace when it is exported).
   */
  private adopt(task: RunState): void {
    const flowRunId = task.meta.flowRunId!;
    let set = this.childrenOf.get(flowRunId);
    if (set === undefined) {
      set = new Set();
      this.childrenOf.set(flowRunId, set);
    }
    if (set.has(task.ref.id)) return;
    set.add(task.ref.id);
    if (task.terminal || outlivesFlowRun(task)) return;
    const flow = this.open.get(flowRunId);
    const attemptEnded = flow === undefined
      ? this.finished.has(flowRunId)
      : flow.attempt > 0 && task.firstEventUs < flow.firstEventUs && !this.settling.has(flowRunId);
    if (attemptEnded) this.deadlines.set(task.ref.id, task.lastActivityMs + this.options.taskGraceMs);
  }

  /** Take a task out of the children of `flowRunId`; the set goes with its last task once that flow run is no longer open. */
  private disown(taskRunId: string, flowRunId: string): void {
    const set = this.childrenOf.get(flowRunId);
    set?.delete(taskRunId);
    if (set !== undefined && set.size === 0 && !this.open.has(flowRunId)) this.childrenOf.delete(flowRunId);
  }

  private due(run: RunState, nowMs: number): void {
    if (!run.terminal) {
      // A background task given the grace before its first state said what it is: its flow run's end is not its end.
      // A subflow has a deadline only once stopped at NotReady: one that went on from there is not done.
      if (outlivesFlowRun(run) || (run.ref.type === 'flow' && !notReady(run))) {
        this.deadlines.delete(run.ref.id);
        return;
      }
      // A task past its grace period after its flow ended, or a task or subflow stopped at NotReady after it.
      this.finalize(run, notReady(run) ? 'not_ready' : 'flow_ended', nowMs);
      return;
    }
    if (run.nativePending && this.stillWaiting(run, (run.terminalAtMs ?? nowMs) + this.options.settleMs + (this.options.nativeSpanWaitMs ?? 0), nowMs)) return;
    if (run.ref.type === 'flow') {
      const children = this.childrenOf.get(run.ref.id);
      const graceEnd = (run.terminalAtMs ?? nowMs) + this.options.taskGraceMs;
      // The worker that submitted it says it executed it once its process has exited, seconds after
      // its terminal state (longer for a container to stop): waited for as its tasks are.
      if (run.awaitingWorker && this.stillWaiting(run, graceEnd, nowMs)) return;
      const open = children === undefined ? [] : [...children].map((id) => this.open.get(id)).filter((t) => t !== undefined && !t.terminal && !outlivesFlowRun(t));
      // A task stopped at Pending "NotReady" (an upstream task failed) has nothing more to come.
      const waitingFor = open.filter((t) => !notReady(t!));
      if (waitingFor.length > 0 && this.stillWaiting(run, graceEnd, nowMs)) return;
      for (const t of open) this.finalize(t!, notReady(t!) ? 'not_ready' : 'flow_ended', nowMs);
      // A subflow stopped at NotReady (what it waited for did not complete) never runs: it goes out with its parent.
      for (const id of [...(this.openUnder.get(run.spanId) ?? [])]) {
        const sub = this.open.get(id);
        if (sub !== undefined && sub.ref.type === 'flow' && notReady(sub)) this.finalize(sub, 'not_ready', nowMs);
      }
    }
    this.finalize(run, undefined, nowMs);
  }

  /**
   * Whether the flow run a subflow hangs under has ended (is no longer open): a subflow stopped at
   * NotReady then goes out once settled. False for a root, and for a subflow restored from the
   * state file (its parent run is not kept there): its parent's end takes it along.
   */
  private parentEnded(run: RunState): boolean {
    const parentId = run.ref.type === 'flow' && !run.ctx.root ? run.ctx[PARENT_RUN] : undefined;
    return parentId !== undefined && this.open.get(parentId)?.spanId !== run.ctx.parentSpanId;
  }

  /**
   * Whether a finished run still waits (for an answer, its worker, its tasks) until `untilMs`: then
   * it is due again at the next settle period, or at `untilMs` if that comes first.
   */
  private stillWaiting(run: RunState, untilMs: number, nowMs: number): boolean {
    if (nowMs >= untilMs) return false;
    this.deadlines.set(run.ref.id, Math.min(untilMs, nowMs + Math.max(this.options.settleMs, 50)));
    return true;
  }

  /** End an open attempt: exported, or with `settle`, only taken out of the open runs (see `retire`). */
  private finalize(run: RunState, incompleteReason: string | undefined, nowMs: number, settle = false): void {
    if (this.open.get(run.ref.id) !== run) return;
    this.open.delete(run.ref.id);
    this.listUnder(run, false);
    this.deadlines.delete(run.ref.id);
    // The attempt before, settling beside this one, ends first.
    const earlier = this.settling.get(run.ref.id);
    if (earlier !== undefined) this.endSettling(earlier, nowMs);
    if (!settle) this.export(run, incompleteReason, nowMs);
  }

  private export(run: RunState, incompleteReason: string | undefined, nowMs: number): void {
    if (run.nativePending) {
      // Exported without the link; the answer, when it comes, is ignored.
      run.nativePending = false;
      this.counts.native.late += 1;
    }
    if (run.ref.type === 'task' && run.meta.flowRunId !== undefined) {
      // An attempt that settled beside its rerun: the rerun stays among its flow run's tasks.
      if (!this.open.has(run.ref.id)) this.disown(run.ref.id, run.meta.flowRunId);
    } else if (run.ref.type === 'flow') {
      const set = this.childrenOf.get(run.ref.id);
      // An attempt that settled beside its rerun: the rerun's tasks go on under the rerun.
      const next = this.open.get(run.ref.id);
      const nextFromUs = next !== undefined && next.attempt > run.attempt ? next.firstEventUs : Infinity;
      if (set !== undefined) {
        for (const id of set) {
          const t = this.open.get(id);
          if (t !== undefined && !t.terminal && !outlivesFlowRun(t) && t.firstEventUs < nextFromUs) this.deadlines.set(id, Math.max(this.deadlines.get(id) ?? 0, (run.terminalAtMs ?? nowMs) + this.options.taskGraceMs));
        }
        if (set.size === 0) this.childrenOf.delete(run.ref.id);
      }
    }
    const record = run.toSpanRecord({ uiUrl: this.options.uiUrl }, incompleteReason);
    const known = this.finished.get(run.ref.id);
    // An attempt that settled beside its rerun ends after it when the rerun was short: the later stays remembered.
    if (known === undefined || known.attempt <= run.attempt) this.rememberFinished(run, nowMs);
    this.counts.spans += 1;
    if (record.run.incomplete) this.counts.incomplete += 1;
    this.sink.span(record);
  }

  private rememberFinished(run: RunState, nowMs: number): void {
    const terminalFollows = run.terminal ? run.latest!.follows : undefined;
    this.finishedAdded.note(run.ref.id);
    this.remember(this.finished, run.ref.id, {
      type: run.ref.type,
      ctx: run.ctx,
      attempt: run.attempt,
      lastTerminalUs: run.terminal ? run.latest!.occurredUs : run.lastEventUs,
      endedAtMs: nowMs,
      name: run.meta.name,
      ...(run.terminal ? {} : { incomplete: true as const }),
      // Most tasks hang under their flow run: then it is their parent, and not written twice.
      ...(run.meta.flowRunId === undefined || run.meta.flowRunId === run.ctx[PARENT_RUN] ? {} : { flowRunId: run.meta.flowRunId }),
      ...(run.attempt > 0 && Number.isFinite(run.firstEventUs) ? { firstEventUs: run.firstEventUs } : {}),
      ...(terminalFollows === undefined || run.events.some((e) => e.id === terminalFollows && e.timeUs <= run.latest!.occurredUs) ? {} : { terminalFollows }),
    }, this.options.maxOpenRuns);
  }

  private late(ref: RunRef, done: FinishedRun, event: PrefectEvent, classified: Classified): void {
    this.counts.lateEvents += 1;
    this.sink.notice({ kind: 'late_event', runId: ref.id, eventId: event.id, eventName: event.name });
    const state = classified.kind === 'state' ? { ...classified.state, terminal: TERMINAL_STATE_TYPES.has(classified.state.type) } : undefined;
    this.sink.log({
      kind: 'late',
      run: { type: ref.type, id: ref.id, name: done.name ?? ref.name, root: done.ctx.root },
      traceId: done.ctx.traceId,
      spanId: spanIdForRun(ref.id, done.attempt),
      event,
      state,
    });
  }

  private emitLog(kind: 'transition' | 'event', run: RunState, event: PrefectEvent, state: RunLogRecord['state']): void {
    this.sink.log({
      kind,
      run: { type: run.ref.type, id: run.ref.id, name: run.meta.name, root: run.ctx.root },
      traceId: run.ctx.traceId,
      spanId: run.spanId,
      event,
      state,
    });
  }

  private remember<V>(map: FifoMap<V>, key: string, value: V, max: number): void {
    map.set(key, value);
    if (map.size > max) map.shift();
  }
}

/**
 * A flow run Scheduled (or Late, AwaitingRetry, Resuming…), waiting for its time or a worker: one
 * Prefect may delete without an event (with its deployment's schedule, or by hand).
 */
function scheduledFlowRun(run: RunState): boolean {
  return run.ref.type === 'flow' && run.latest?.state.type === 'SCHEDULED';
}

/**
 * Where the next attempt of `run` begins when its terminal state `terminal` comes after states that
 * occurred later: the first of them. In order, any state after a terminal one opens the next
 * attempt; undefined when there is none. A state the terminal one follows (`follows`, directly or
 * through others) came before it, whatever its time says (stamped by a clock ahead): it is of the
 * same attempt.
 */
function laterAttemptFromUs(run: RunState, terminal: PrefectEvent): number | undefined {
  const terminalUs = terminal.occurredUs;
  let before: Set<string> | undefined;
  let fromUs: number | undefined;
  for (const e of run.events) {
    const type = e.attributes[ATTR.STATE_TYPE];
    if (e.timeUs <= terminalUs || type === undefined || (fromUs !== undefined && e.timeUs >= fromUs)) continue;
    if ((before ??= run.followsChain(terminal.follows)).has(e.id)) continue;
    // One terminal state to another (RolledBack) opens no attempt: it ends the same one.
    if (TERMINAL_STATE_TYPES.has(type as StateType) && TERMINAL_STATE_TYPES.has(e.attributes[ATTR.STATE_FROM] as StateType)) continue;
    fromUs = e.timeUs;
  }
  return fromUs;
}

/**
 * Whether an event of a run whose attempt `before` settles beside its rerun `next` is the earlier
 * attempt's, reordered behind the rerun's first events: as in order, what occurred up to its
 * terminal state is, and so is any other event before the rerun's first; a state after that
 * terminal state is the rerun's.
 */
function settlingTakes(before: RunState, next: RunState, event: PrefectEvent, classified: Classified): boolean {
  return event.occurredUs <= before.latest!.occurredUs || (classified.kind !== 'state' && event.occurredUs < next.firstEventUs);
}

/**
 * A task run or subflow stopped at Pending "NotReady": an upstream task (of `wait_for`) did not
 * complete, and the task or flow engine returned without running it (`begin_run` in
 * src/prefect/task_engine.py and src/prefect/flow_engine.py). No state follows it in this attempt of
 * the flow run it was called in.
 */
function notReady(run: RunState): boolean {
  const state = run.latest?.state;
  return state !== undefined && state.type === 'PENDING' && state.name === 'NotReady';
}

/**
 * A background task run (`Task.delay()` / `apply_async()`, `state_details.deferred`) that a flow run
 * submitted: a task worker runs it when it takes it, independently of that flow run, often after it
 * ended. Its flow run's end neither ends it nor is held for it; it ends with its own terminal state
 * (or, never started, waits as a Scheduled run does). Stopped at NotReady, it has nothing more to come.
 */
function outlivesFlowRun(run: RunState): boolean {
  return run.ref.type === 'task' && run.meta.deferred === true && !notReady(run);
}

/** At most how much before its timeout a scheduled run is asked about with others that timed out. */
const SCHEDULED_GATHER_MAX_MS = 60_000;

/**
 * A flow run attempt's event named `name`: a worker's submitted-flow-run makes it wait for that
 * worker's executed-flow-run (sent once its process has exited); the executed-flow-run ends the wait.
 */
function noteWorker(run: RunState, name: string): void {
  if (run.ref.type !== 'flow') return;
  if (name === WORKER_SUBMITTED) run.awaitingWorker = true;
  else if (name === WORKER_EXECUTED) run.awaitingWorker = false;
}

/** Whether a state leaves a terminal state (its intended "from"): a rerun. */
function leavesTerminal(state: StateInfo): boolean {
  return state.from !== undefined && TERMINAL_STATE_TYPES.has(state.from as StateType);
}

/**
 * Whether a state goes from one terminal state to another: a task rolled back with its transaction
 * (Completed → RolledBack), a state set by hand (Failed → Completed), a run's own Completed after the
 * server marked it Crashed. Nothing runs again: no rerun, the same attempt ends in it (late when its
 * span was exported). A rerun leaves its terminal state for a Scheduled, Pending or Running one.
 */
function betweenTerminals(state: StateInfo): boolean {
  return TERMINAL_STATE_TYPES.has(state.type) && leavesTerminal(state);
}

/** The tracking task a flow run's state event names (a subflow's or run_deployment child's), if any. */
function trackingTaskOf(event: PrefectEvent): string | undefined {
  const tracking = event.related.find((r) => r.role === 'task-run');
  return tracking === undefined ? undefined : runRefFromResourceId(tracking.id)?.id;
}

/**
 * The key in `waiting` of the state-history lookup of a run: apart from the keys of the lookups of
 * where runs hang (a task run's or flow run's id), which may be the same run's.
 */
function attemptKey(runId: string): string {
  return `attempt:${runId}`;
}

function runOfAttemptKey(key: string): string {
  return key.slice('attempt:'.length);
}

function rootCtx(runId: string): TraceCtx {
  return { traceId: traceIdForRun(runId), parentSpanId: undefined, root: true };
}

const TOO_DEEP: Rejected = { reason: 'too_deep', detail: 'payload cannot be written as JSON (nested too deep)' };

/** `JSON.stringify(value)`, or undefined when it cannot be written (nested deeper than the stack allows). */
function jsonText(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}

/**
 * Characters of `event` as JSON (as it waits in the state file), or undefined when it cannot be
 * written (nested deeper than the stack allows). `payloadText`: its payload as JSON, when made already.
 */
function jsonChars(event: PrefectEvent, payloadText: string | undefined): number | undefined {
  if (payloadText === undefined) return jsonText(event)?.length;
  const rest = jsonText({ ...event, payload: null });
  return rest === undefined ? undefined : rest.length + payloadText.length;
}

/**
 * A state whose message is cut to `maxMessage` characters like a payload (it is a span event
 * attribute and the span's status message), and its name and "from" to MAX_EVENT_TEXT_CHARS.
 */
function boundState(state: StateInfo, maxMessage: number): StateInfo {
  const from = state.from;
  if (state.message.length <= maxMessage && state.name.length <= MAX_EVENT_TEXT_CHARS && (from === undefined || from.length <= MAX_EVENT_TEXT_CHARS)) return state;
  return {
    ...state,
    name: truncate(state.name, MAX_EVENT_TEXT_CHARS),
    message: truncate(state.message, maxMessage),
    from: from === undefined ? undefined : truncate(from, MAX_EVENT_TEXT_CHARS),
  };
}

/** A finished run's type and, for a task, its flow run (a task hangs only under a parent task of its own flow run). */
function finishedFlowRun(f: FinishedRun | undefined): { readonly type: RunType; readonly flowRunId: string | undefined } | undefined {
  if (f === undefined) return undefined;
  return { type: f.type, flowRunId: f.flowRunId ?? (f.type === 'task' ? f.ctx[PARENT_RUN] : undefined) };
}
