import { isAttributeValue } from '@opentelemetry/core';
import type { AttributeValue } from '@opentelemetry/api';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { Logger } from 'pino';
import { secretsOf, type Config } from './config.js';
import { createDelivery, type Delivery, type FlushResult } from './export/delivery.js';
import { LagHistogram } from './export/lag.js';
import { createLogSender, createTraceSender } from './export/exporters.js';
import { traceSampler } from './export/sampling.js';
import { createResource, estimateSpanBytes } from './export/spans.js';
import { diagToLogger } from './log/diag.js';
import { createRunLogWriter } from './log/stlogging.js';
import { redactCredentials, secretRedactor, shownUrl } from './log/redact.js';
import { ATTR } from './model/attributes.js';
import { applySpanLimits } from './model/attribute-limits.js';
import { classify, type Classified } from './model/classify.js';
import { DedupeSet } from './model/dedupe.js';
import { excerpt, isRecord, parseEvent, parseEventText, SKIP_REASONS, type PrefectEvent, type SkipReason } from './model/event.js';
import type { Attributes, SpanRecord } from './model/span-record.js';
import { RunTracker, type Rejected, type RunLogRecord, type TrackerNotice, type WaitingBound } from './model/tracker.js';
import type { HistoryState } from './model/rerun-attempt.js';
import type { RunType } from './model/classify.js';
import { createNativeSpanLookup, NATIVE_SPAN_WAIT_MS, type FetchNativeSpans } from './source/native-spans.js';
import { formatDuration } from './log/tree.js';

/**
 * A span's attributes as a hook sees them: an OpenTelemetry attribute value per name; a hook may set
 * one to `null` (or `undefined`, or `delete` it) to remove it.
 */
export type SpanHookAttributes = Record<string, AttributeValue | null | undefined>;

/** A view of a span that a user hook may change: its name and attributes. */
export interface SpanHookView {
  name: string;
  readonly attributes: SpanHookAttributes;
  readonly run: SpanRecord['run'];
  readonly traceId: string;
  readonly spanId: string;
}

export interface PipelineHooks {
  /**
   * Called for every finished span before export; may rename it or add attributes. Errors are logged,
   * never fatal. It runs synchronously: a promise it returns is not awaited (what an `async` hook
   * changes after its first `await` is not exported), and its rejection is logged as a throw is.
   */
  readonly span?: (span: SpanHookView) => void;
}

export interface PipelineOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** `event`: time advances with the events' `occurred` (replay); `wall`: with the clock (live). */
  readonly clock: 'event' | 'wall';
  /** The flow run owning a task run (REST `GET /api/task_runs/{id}`); null when it cannot be found. */
  readonly resolveOwner?: (taskRunId: string) => Promise<string | null>;
  /**
   * The tracking task of a flow run (REST `GET /api/flow_runs/{id}`, `parent_task_run_id`); null when
   * it has none, undefined when it cannot be found. Asked for a flow run not seen yet that runs hang
   * under, to find its trace; absent: such a flow run is taken as a root.
   */
  readonly resolveFlowParent?: (flowRunId: string) => Promise<string | null | undefined>;
  /**
   * A run's state history in Prefect's order (REST `GET /api/flow_run_states/?flow_run_id=…`, `GET
   * /api/task_run_states/?task_run_id=…`); undefined when it cannot be read. Asked for a run first
   * seen leaving a terminal state, to number its rerun; absent: such a run is taken as the first rerun.
   */
  readonly resolveStateHistory?: (run: { readonly type: RunType; readonly id: string }) => Promise<readonly HistoryState[] | undefined>;
  /** Flow runs' `__OTEL_TRACEPARENT` labels (REST, a batch of runs per call), for links to Prefect's own spans; absent: no flow-run links. */
  readonly nativeSpans?: FetchNativeSpans;
  /**
   * The flow runs among these that Prefect no longer has (REST, never throws), asked for Scheduled
   * runs that waited an open-run timeout without starting; absent (replay): they keep waiting.
   */
  readonly deletedFlowRuns?: (flowRunIds: readonly string[]) => Promise<readonly string[]>;
  readonly hooks?: PipelineHooks;
  /** Every exported span, after hooks (the demo draws them; the library re-emits them). */
  readonly onSpan?: (span: SpanRecord) => void;
  /** Spans delivered to the collector. */
  readonly onDelivered?: (spans: readonly SpanRecord[]) => void;
  /** Override the trace delivery (tests, benchmarks); default from config. */
  readonly delivery?: Delivery<SpanRecord> | null;
  /**
   * The caller waits for the collector instead of letting the buffers drop (replay), while
   * `backpressure()` says so: a span that does not fit in the trace buffer is held, in order, until
   * `backpressure` lets it in. One event (the end of input) can end every open run at once; that
   * burst waits instead of overflowing the bound.
   */
  readonly backpressure?: boolean;
}

export interface PipelineCounters {
  received: number;
  accepted: number;
  duplicates: number;
  unrelated: number;
  skipped: Record<SkipReason, number>;
  hookErrors: number;
  /** Spans of traces the sampler (OTEL_TRACES_SAMPLER) left out: neither hooked nor exported. */
  unsampled: number;
}

export interface Pipeline {
  ingest(raw: unknown): void;
  /** Process an already validated event (history pages, restored state). */
  ingestEvent(event: PrefectEvent): void;
  tick(nowMs?: number): void;
  /** End of input: wait for parent lookups, then end every open run (unfinished ones as incomplete). */
  finish(reason: string, lookupTimeoutMs?: number): Promise<void>;
  /**
   * With the `backpressure` option: lets held spans into the trace buffer while they fit. True while
   * the caller should wait for the collector: spans are still held, or the trace or log buffer is
   * above half of a bound (the other half takes what the next event adds).
   */
  backpressure(): boolean;
  /** With the `backpressure` option: finished spans held until the trace buffer has room for them. */
  readonly heldSpans: number;
  flush(timeoutMs: number): Promise<FlushResult>;
  /**
   * Answers to lookups that come from now on are not applied: the state about to be saved keeps
   * the events waiting for them, which the next process takes over and asks about again (the
   * answer of a request the stop cuts short is a failure, not the run's parent).
   */
  seal(): void;
  /** Flush for at most `timeoutMs`, then release the exporters, waiting at most `closeTimeoutMs` for a batch still out (undefined: until it is answered). */
  shutdown(timeoutMs: number, closeTimeoutMs?: number): Promise<FlushResult>;
  readonly counters: Readonly<PipelineCounters>;
  readonly tracker: RunTracker;
  readonly dedupe: DedupeSet;
  readonly traces: Delivery<SpanRecord> | undefined;
  readonly logs: Delivery<ReadableLogRecord> | undefined;
  /** Lag from a span's end to its delivery to the collector, per delivered span. */
  readonly exportLag: LagHistogram;
  /** Latest `occurred` seen (µs); the resume cursor. */
  readonly cursorUs: number | undefined;
  restoreCursor(us: number | undefined): void;
}

const WARN_PER_REASON = 10;
/**
 * How much of a skipped frame or line is redacted for its excerpt: far more than the excerpt shows
 * (a frame may be megabytes long), so that a secret the excerpt reaches is never cut by the scan.
 */
const MAX_SCANNED_INPUT_CHARS = 65_536;
/** Deleted scheduled runs forgotten at once: the first this many are named in the log line, all are counted. */
const SHOWN_FORGOTTEN_IDS = 10;
/** In replay, timers (settle, grace, idle) run on event time, checked whenever it advances this much. */
const EVENT_CLOCK_TICK_MS = 100;
/**
 * On the event clock, an event without the server's `received` (hand-written files, test builders)
 * that is further than this ahead of the clock has only its sender's word for the jump: it waits
 * for the next event to confirm it (see `ingestEvent`). The shortest open-run timeout allowed.
 */
const UNCONFIRMED_JUMP_MS = 1_000;

/** The key of a late event's name on its notice line, beside `prefect.event.id`. */
const EVENT_NAME_KEY = 'prefect.event.name';

/**
 * A notice's fields as a log line has them, under the keys STLOGGING lines use (SPEC §4), so that a
 * search by run id, event id or trace id finds the notice beside the run's own lines: `prefect.run.id`,
 * `prefect.event.id`, `trace_id`, and the subflow's tracking task as `prefect.parent_task_run.id`,
 * the attribute its span carries.
 */
/** The setting of each bound on the events waiting for lookups, as the warning that it was reached names it. */
const WAITING_BOUND_SETTING: Readonly<Record<WaitingBound, string>> = { count: 'PREFECT_OTEL_MAX_OPEN_RUNS', size: 'PREFECT_OTEL_BUFFER_MAX_BYTES' };

function noticeFields(notice: TrackerNotice): Record<string, unknown> {
  switch (notice.kind) {
    case 'late_event':
      return { kind: notice.kind, [ATTR.RUN_ID]: notice.runId, [ATTR.EVENT_ID]: notice.eventId, [EVENT_NAME_KEY]: notice.eventName };
    case 'lookup_failed':
    case 'parent_cycle':
    case 'parent_late':
      return { kind: notice.kind, [ATTR.RUN_ID]: notice.runId, [ATTR.PARENT_TASK_RUN_ID]: notice.taskRunId };
    case 'evicted':
      return { kind: notice.kind, [ATTR.RUN_ID]: notice.runId, trace_id: notice.traceId };
    case 'rerun':
      return { kind: notice.kind, [ATTR.RUN_ID]: notice.runId, attempt: notice.attempt, trace_id: notice.traceId };
    case 'rerun_lookup_failed':
      return { kind: notice.kind, [ATTR.RUN_ID]: notice.runId };
    case 'rerun_lookup_abandoned':
      return { kind: notice.kind, [ATTR.RUN_ID]: notice.runId, waitingEvents: notice.events };
    case 'lookup_abandoned':
      // Its id is a subflow's tracking task or a flow run (whose parent was looked up): kept as it is.
      // `events` is the stats line's object of counts: a number under that key too would split the field.
      return { kind: notice.kind, taskRunId: notice.taskRunId, waitingEvents: notice.events };
  }
}

export function createPipeline(options: PipelineOptions): Pipeline {
  const { config, logger } = options;
  const log = logger.child({ component: 'pipeline' });
  const resource = createResource(config);
  const counters: PipelineCounters = {
    received: 0, accepted: 0, duplicates: 0, unrelated: 0, hookErrors: 0, unsampled: 0,
    skipped: Object.fromEntries(SKIP_REASONS.map((r) => [r, 0])) as Record<SkipReason, number>,
  };
  let cursorUs: number | undefined;
  let eventClockMs = 0;
  let lastEventTickMs = 0;
  const now = (): number => (options.clock === 'wall' ? Date.now() : eventClockMs);

  const exportLag = new LagHistogram();
  const onDelivered = (spans: readonly SpanRecord[]): void => {
    exportLag.observeDelivered(spans, Date.now());
    options.onDelivered?.(spans);
  };
  const traces = options.delivery === null ? undefined : (options.delivery ?? createTraceDelivery(config, logger, resource, onDelivered));
  const held = options.backpressure === true && traces !== undefined ? createHeldSpans(traces, config) : undefined;
  const logs = createLogDelivery(config, logger);
  // STLOGGING records come a few per event, never in bursts: waiting while the buffer is above half suffices.
  const logsFull = options.backpressure === true && logs !== undefined ? aboveHalf(logs, config.delivery.logs.maxRecords, config.delivery.maxBytes) : undefined;
  const sampled = traceSampler(config.sampler);
  const writeRunLog = createRunLogWriter(logger, {
    traceSampled: sampled,
    jaegerUrl: config.jaegerUrl,
    uiUrl: config.prefect.uiUrl,
    otelLogs: logs === undefined ? undefined : { resource, emit: (r) => logs.enqueue(r), limits: config.model.logRecordLimits },
  });

  const pipelineDedupe = new DedupeSet(config.model.dedupeWindowMs, config.model.dedupeMaxIds);
  const lookups = new Set<Promise<void>>();
  let sealed = false;
  const notices = logger.child({ component: 'model' });
  /** A notice that may come once per run: the first WARN_PER_REASON are warnings, the rest debug lines (`count`: this one's number). */
  const warnThenCount = (count: number, fields: object, msg: string, further: string): void => {
    if (count < WARN_PER_REASON) notices.warn(fields, msg);
    else if (count === WARN_PER_REASON) notices.warn(fields, `${msg} (${further})`);
    else notices.debug(fields, msg);
  };
  let lookupFailedNotices = 0;
  let rerunLookupFailedNotices = 0;
  let parentLateNotices = 0;
  /**
   * A run ended incomplete has no line of its own among its STLOGGING lines (no state says so): one
   * line beside them, with the same correlation fields, says that its span ended and why, so that a
   * search by trace id does not leave the run at its last state. An evicted run's warning says it already.
   */
  const noteIncomplete = (record: SpanRecord, inTrace: boolean): void => {
    const reason = record.attributes[ATTR.RUN_INCOMPLETE_REASON];
    if (reason === 'evicted') return;
    notices.info(
      {
        kind: 'incomplete', [ATTR.RUN_ID]: record.run.id, [ATTR.RUN_INCOMPLETE_REASON]: reason, 'prefect.state.name': record.run.finalState?.name,
        trace_id: record.traceId, span_id: record.spanId, trace_flags: inTrace ? '01' : '00',
      },
      `${record.run.type === 'flow' ? 'Flow' : 'Task'} run ${record.run.id} ended incomplete (${String(reason)}) at its last known time, in state ${record.run.finalState?.name ?? 'none'}`,
    );
  };
  /** The longest delay from `occurred` to the server's `received` warned of (live only), in µs. */
  let behindWarnedUs = 0;
  const marginUs = config.live.resumeMarginMs * 1_000;
  /**
   * Live, an event that reached the server longer after its `occurred` than the resume margin (its
   * sender's clock runs behind the server's, or it sent it late): Prefect's live stream drops the
   * events that occurred before the filter's `since`, the margin before the last event seen, so
   * after each reconnect such a sender's events are lost until its clock catches up with that. Said
   * once, and again only for a delay twice as long: a few lines in a run, however many events.
   */
  const noteBehind = (event: PrefectEvent): void => {
    const behindUs = event.receivedUs! - event.occurredUs;
    if (behindUs <= marginUs || behindUs < 2 * behindWarnedUs) return;
    behindWarnedUs = behindUs;
    const margin = config.sources?.resumeMarginMs ?? 'PREFECT_OTEL_RESUME_MARGIN_MS';
    log.warn(
      { [EVENT_NAME_KEY]: event.name, [ATTR.EVENT_ID]: event.id, [ATTR.EVENT_RESOURCE_ID]: event.resource.id, behindMs: Math.round(behindUs / 1_000), resumeMarginMs: config.live.resumeMarginMs },
      `an event reached the Prefect server ${formatDuration(behindUs)} after its \`occurred\` (its sender's clock runs behind the server's, or it sent the event late): ` +
        `after a reconnect or a restart, Prefect's live stream drops the events that occurred more than ${margin} (${formatDuration(marginUs)}) before the last one seen, ` +
        `so such events would be lost for a while; set ${margin} above this delay`,
    );
  };
  let checkingScheduled = false;

  const tracker: RunTracker = new RunTracker(
    {
      ...config.model,
      uiUrl: config.prefect.uiUrl,
      nativeSpanWaitMs: options.nativeSpans === undefined ? undefined : options.clock === 'wall' ? NATIVE_SPAN_WAIT_MS : Infinity,
      lookupFlowParents: options.resolveFlowParent !== undefined,
      lookupRerunAttempts: options.resolveStateHistory !== undefined,
      // Events waiting for lookups are held within the trace buffer's bound in bytes too.
      maxWaitingChars: config.delivery.maxBytes,
    },
    {
      span(record: SpanRecord): void {
        const inTrace = sampled === undefined || sampled(record.traceId);
        if (record.run.incomplete) noteIncomplete(record, inTrace);
        // As an OpenTelemetry SDK does with a span its sampler drops: no processor (hook, listener, export) sees it.
        if (!inTrace) {
          counters.unsampled += 1;
          return;
        }
        const final = applySpanLimits(applyHooks(record), config.model.spanLimits);
        options.onSpan?.(final);
        if (held !== undefined) held.add(final);
        else traces?.enqueue(final);
      },
      log(record: RunLogRecord): void {
        writeRunLog(record);
      },
      lookup(taskRunId: string): void {
        const resolve = options.resolveOwner;
        const p = (resolve === undefined ? Promise.resolve(null) : resolve(taskRunId).catch(() => null)).then((owner) => {
          if (!sealed) tracker.resolveOwner(taskRunId, owner, now());
        });
        lookups.add(p);
        void p.finally(() => lookups.delete(p));
      },
      lookupFlowParent(flowRunId: string): void {
        const resolve = options.resolveFlowParent;
        const p = (resolve === undefined ? Promise.resolve(undefined) : resolve(flowRunId).catch(() => undefined)).then((parent) => {
          if (!sealed) tracker.resolveFlowParent(flowRunId, parent, now());
        });
        lookups.add(p);
        void p.finally(() => lookups.delete(p));
      },
      lookupRerunAttempt(runId: string, type: RunType): void {
        const resolve = options.resolveStateHistory;
        const p = (resolve === undefined ? Promise.resolve(undefined) : resolve({ type, id: runId }).catch(() => undefined)).then((history) => {
          if (!sealed) tracker.resolveRerunAttempt(runId, history, now());
        });
        lookups.add(p);
        void p.finally(() => lookups.delete(p));
      },
      lookupNativeSpan(flowRunId: string, attempt: number): void {
        const p = nativeSpans?.(flowRunId, attempt);
        if (p === undefined) return;
        lookups.add(p);
        void p.finally(() => lookups.delete(p));
      },
      checkScheduledRuns: options.deletedFlowRuns === undefined ? undefined : (flowRunIds: readonly string[]): void => {
        // One check at a time: runs left out now are asked after their next timeout.
        if (checkingScheduled || sealed) return;
        checkingScheduled = true;
        void options.deletedFlowRuns!(flowRunIds).then((gone) => {
          if (sealed || gone.length === 0) return;
          const forgotten = tracker.forgetDeletedRuns(gone, now());
          if (forgotten.length > 0) notices.info({ count: forgotten.length, flowRunIds: forgotten.slice(0, SHOWN_FORGOTTEN_IDS) }, 'scheduled flow runs that never started are no longer in Prefect (deleted: their deployment paused, redeployed or deleted, or the run itself); forgotten without a span');
        }).catch((err: unknown) => {
          log.error({ err }, 'deleted scheduled flow runs could not be forgotten');
        }).finally(() => {
          checkingScheduled = false;
        });
      },
      notice(notice: TrackerNotice): void {
        switch (notice.kind) {
          case 'lookup_failed':
            // A server that stopped answering makes this happen once per subflow.
            warnThenCount(++lookupFailedNotices, noticeFields(notice), 'parent of a subflow could not be looked up; it becomes the root of its own trace', 'further ones are only counted');
            break;
          case 'parent_cycle':
            notices.warn(noticeFields(notice), 'parent of a subflow leads back to the subflow itself; it becomes the root of its own trace');
            break;
          case 'parent_late':
            // As a failed lookup: in a replay with no Prefect API there, once per subflow first seen through another event.
            warnThenCount(++parentLateNotices, noticeFields(notice), 'subflow named its tracking task only after it had become the root of its own trace (its first event did not name it and no lookup found its parent); it stays a root', 'further ones are only counted');
            break;
          case 'late_event':
            notices.warn(noticeFields(notice), 'event arrived after its run was exported; logged but not on the span');
            break;
          case 'evicted': {
            // Under a low bound this happens once per new run.
            const count = tracker.counts.evicted;
            warnThenCount(count, { ...noticeFields(notice), count }, 'open-run bound reached; least recently active run ended early', 'further evictions are only counted');
            break;
          }
          case 'lookup_abandoned': {
            // A server that stopped answering makes this happen once per new subflow.
            const count = tracker.counts.parentLookups.abandoned;
            warnThenCount(count, { ...noticeFields(notice), count }, `events waiting for subflow parent lookups reached their bound (${WAITING_BOUND_SETTING[notice.bound]}); the oldest lookup was given up and its runs become roots of their own traces`, 'further ones are only counted');
            break;
          }
          case 'rerun':
            notices.info(noticeFields(notice), 'run left its terminal state; new span for the rerun');
            break;
          case 'rerun_lookup_failed':
            // A server that stopped answering makes this happen once per rerun first seen.
            warnThenCount(++rerunLookupFailedNotices, noticeFields(notice), "run first seen leaving a terminal state, and its state history could not be read: numbered as its first rerun (its span id may be one exported before)", 'further ones are only counted');
            break;
          case 'rerun_lookup_abandoned': {
            const count = tracker.counts.rerunLookups.abandoned;
            warnThenCount(count, { ...noticeFields(notice), count }, `events waiting for lookups reached their bound (${WAITING_BOUND_SETTING[notice.bound]}); the oldest, of the state history of a run first seen leaving a terminal state, was given up and the run numbered as its first rerun`, 'further ones are only counted');
            break;
          }
        }
      },
      rejected(event: PrefectEvent, rejected: Rejected): void {
        skip(rejected.reason, rejected.detail, event);
      },
      failed(event: PrefectEvent, err: unknown): void {
        failed(err, event);
      },
    },
  );

  const nativeSpans = options.nativeSpans === undefined ? undefined : createNativeSpanLookup({
    fetch: options.nativeSpans,
    wanted: (id, attempt) => !sealed && tracker.wantsNativeSpan(id, attempt),
    answer: (id, attempt, answer) => (sealed ? 'late' : tracker.resolveNativeSpan(id, attempt, answer, now())),
    logger: notices,
  });

  const applyHooks = (record: SpanRecord): SpanRecord => {
    const hook = options.hooks?.span;
    if (hook === undefined) return record;
    const view: SpanHookView = { name: record.name, attributes: { ...record.attributes }, run: record.run, traceId: record.traceId, spanId: record.spanId };
    let returned: unknown;
    try {
      returned = hook(view);
    } catch (err) {
      counters.hookErrors += 1;
      log.error({ err, 'prefect.run.id': record.run.id }, 'span hook threw; span exported unchanged');
      return record;
    }
    const async = isThenable(returned);
    if (async) {
      // An `async` hook: the span goes out as it is now. Its rejection is the application's error, never
      // an unhandled one (which ends a Node process); its later changes touch a copy, not the export.
      Promise.resolve(returned).then(undefined, (err: unknown) => {
        counters.hookErrors += 1;
        log.error({ err, 'prefect.run.id': record.run.id }, 'span hook rejected; span exported with what it changed before it awaited');
      });
      if (!asyncHookWarned) {
        asyncHookWarned = true;
        log.warn('span hook returned a promise: hooks run synchronously, what it changes after it awaits is not exported');
      }
    }
    const attributes = hookAttributes(view.attributes, record.run.id);
    if (attributes === undefined) {
      counters.hookErrors += 1;
      log.error({ 'prefect.run.id': record.run.id }, 'span hook replaced the attributes with something that is no object; span exported unchanged');
      return record;
    }
    return { ...record, name: String(view.name), attributes: async && attributes === view.attributes ? { ...attributes } : attributes };
  };
  let asyncHookWarned = false;
  /** Attribute names already said to have had a value OpenTelemetry does not take, a bounded few. */
  const invalidAttributesSaid = new Set<string>();
  /**
   * The attributes a hook left, by OpenTelemetry's rules (a string, number, boolean, or an array of
   * one of them), as the SDK takes them: null or undefined removes the attribute; a value of any other
   * kind is dropped, and said once per name. Kept, a BigInt would fail every export of its batch and
   * every save of the state file, and the spans would be lost.
   */
  const hookAttributes = (attributes: unknown, runId: string): Attributes | undefined => {
    if (attributes === null || typeof attributes !== 'object' || Array.isArray(attributes)) return undefined;
    let out = attributes as Attributes;
    for (const name in attributes) {
      const value: unknown = (attributes as Record<string, unknown>)[name];
      if (value !== null && value !== undefined && isAttributeValue(value)) continue;
      if (out === attributes) out = { ...out };
      delete out[name];
      // No value, no attribute, as the SDK's `setAttribute` has it: a hook's way to remove one.
      if (value === null || value === undefined) continue;
      if (invalidAttributesSaid.size < MAX_INVALID_ATTRIBUTES_SAID && !invalidAttributesSaid.has(name)) {
        invalidAttributesSaid.add(name);
        log.warn({ 'prefect.run.id': runId, attribute: name, type: Array.isArray(value) ? 'array of mixed or nested values' : typeof value }, 'span hook set an attribute to a value OpenTelemetry does not take (a string, number, boolean, or an array of one of them); the attribute is dropped');
      }
    }
    return out;
  };

  /**
   * A skipped frame or line as its log line shows it: every secret of the configuration and every
   * credential in a form known from recordings and dumps (`redactCredentials`) redacted before it is
   * cut short, so that no credential shows, not even its start.
   */
  const redactSecrets = secretRedactor(secretsOf(config));
  const redactInput = (text: string): string => redactCredentials(redactSecrets(text));
  const inputExcerpt = (raw: unknown): string => {
    const text = typeof raw === 'string' ? raw : safeStringify(raw);
    return excerpt(redactInput(text.length > MAX_SCANNED_INPUT_CHARS ? text.slice(0, MAX_SCANNED_INPUT_CHARS) : text));
  };

  const warned: Partial<Record<SkipReason, number>> = {};
  const skip = (reason: SkipReason, detail: string, raw: unknown): void => {
    counters.skipped[reason] += 1;
    const n = (warned[reason] = (warned[reason] ?? 0) + 1);
    const fields = { reason, detail: redactInput(detail), excerpt: inputExcerpt(raw), count: counters.skipped[reason] };
    if (n <= WARN_PER_REASON) {
      log.warn(fields, n === WARN_PER_REASON ? 'skipped malformed input (further skips for this reason are only counted)' : 'skipped malformed input');
    } else {
      log.debug(fields, 'skipped malformed input');
    }
  };

  /**
   * Whether the event would move the event clock further than one event may on its own word: it
   * has no `received` to bound its `occurred`, and that is more than UNCONFIRMED_JUMP_MS ahead.
   */
  const unconfirmedJump = (event: PrefectEvent): boolean =>
    options.clock === 'event' && event.receivedUs === undefined && eventClockMs !== 0 && event.occurredUs / 1000 - eventClockMs > UNCONFIRMED_JUMP_MS;
  /** The one event held back by `unconfirmedJump` until the next valid event says whether the jump is real. */
  let jumpHeld: { readonly event: PrefectEvent; readonly c: Classified; readonly raw: unknown } | undefined;

  /** An event the model threw on: a bug, but one event must never stop the stream. */
  const failed = (err: unknown, raw: unknown): void => {
    counters.skipped.wrong_type += 1;
    log.error({ err, excerpt: inputExcerpt(raw) }, 'event could not be processed; skipped');
  };

  /** `raw`: the frame or line the event came from, for the excerpt of a skip. */
  const ingestEvent = (event: PrefectEvent, raw?: unknown): void => {
    // Ids are remembered for the window on the machine's clock, on either clock of the model: a copy
    // in a file comes after its first by the lines between them, not by the events' times (the files
    // of two overlapping exports put together hold copies a day of event time apart).
    if (!pipelineDedupe.add(event.id, Date.now())) {
      counters.duplicates += 1;
      return;
    }
    const c = classify(event);
    if (c.kind === 'invalid') {
      // Skipped input is not an event seen: a good copy of it that comes later is taken.
      pipelineDedupe.forget(event.id);
      skip(c.reason, c.detail, raw ?? event);
      return;
    }
    if (jumpHeld !== undefined) {
      // A held-back event is applied before this one, so the order of events is kept. If this one is far
      // ahead too, the gap is real (a file with a quiet stretch) and the clock moves to the earlier
      // of the two; if not, the held-back one was a lone outlier and is applied at the clock as it is,
      // so it ends no other run.
      if (unconfirmedJump(event)) eventClockMs = Math.min(jumpHeld.event.occurredUs, event.occurredUs) / 1000;
      releaseHeld();
    }
    if (unconfirmedJump(event)) {
      jumpHeld = { event, c, raw };
      return;
    }
    accept(event, c, true, raw);
  };

  /** A valid event, in order: moves time (when `moveClock`) and the cursor, then the run model. */
  const accept = (event: PrefectEvent, c: Classified, moveClock: boolean, raw: unknown): void => {
    // Only a valid event moves time (replay's event clock) and the resume cursor: a skipped one
    // with a wild `occurred` must not end other runs or make a reconnect skip events. `occurred` is
    // the sender's clock; the server's `received` bounds it, so that a sender whose clock runs ahead
    // does not end every other run as idle.
    const clockMs = Math.min(event.occurredUs, event.receivedUs ?? Infinity) / 1000;
    const nextClockMs = moveClock && clockMs > eventClockMs ? clockMs : eventClockMs;
    const nowMs = options.clock === 'wall' ? Date.now() : nextClockMs;
    // Nor may it put the cursor in the future (a reconnect from there would ask only for events not
    // sent yet): `received` and our own clock bound it.
    const seenUs = Math.min(event.occurredUs, event.receivedUs ?? Infinity, nowMs * 1000);
    if (options.clock === 'wall' && event.receivedUs !== undefined && event.receivedUs - event.occurredUs > marginUs) noteBehind(event);
    // Time moves once the model has taken the event: one it turns down (a payload too deep to
    // write) moves no time either.
    const rejected = c.kind === 'unrelated' ? undefined : tracker.process(event, c, nowMs);
    if (rejected !== undefined) {
      pipelineDedupe.forget(event.id);
      skip(rejected.reason, rejected.detail, raw ?? event);
      return;
    }
    eventClockMs = nextClockMs;
    if (cursorUs === undefined || seenUs > cursorUs) cursorUs = seenUs;
    if (c.kind === 'unrelated') {
      counters.unrelated += 1;
      return;
    }
    counters.accepted += 1;
    if (options.clock === 'event' && nowMs - lastEventTickMs >= EVENT_CLOCK_TICK_MS) {
      lastEventTickMs = nowMs;
      tracker.tick(nowMs);
    }
  };

  /** Applies the held-back event at the clock as it is (at the end of input nothing will confirm its jump). */
  const releaseHeld = (): void => {
    if (jumpHeld === undefined) return;
    const h = jumpHeld;
    jumpHeld = undefined;
    try {
      accept(h.event, h.c, false, h.raw);
    } catch (err) {
      failed(err, h.raw ?? h.event);
    }
  };

  return {
    ingest(raw: unknown): void {
      counters.received += 1;
      try {
        const r = typeof raw === 'string' ? parseEventText(raw) : parseEvent(raw);
        if (!r.ok) {
          skip(r.reason, r.detail, raw);
          return;
        }
        ingestEvent(r.event, raw);
      } catch (err) {
        // The model is total; reaching here is a bug.
        failed(err, raw);
      }
    },
    ingestEvent,
    tick(nowMs?: number): void {
      tracker.tick(nowMs ?? now());
    },
    async finish(reason: string, lookupTimeoutMs = 15_000): Promise<void> {
      releaseHeld();
      const deadline = Date.now() + lookupTimeoutMs;
      while (lookups.size > 0 && Date.now() < deadline) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([Promise.all([...lookups]), new Promise((r) => (timer = setTimeout(r, Math.max(1, deadline - Date.now()))))]);
        clearTimeout(timer);
      }
      tracker.finishAll(reason, now());
    },
    async flush(timeoutMs: number): Promise<FlushResult> {
      const [t, l] = await Promise.all([traces?.flush(timeoutMs), logs?.flush(timeoutMs)]);
      return combine(t, l);
    },
    seal(): void {
      sealed = true;
    },
    backpressure(): boolean {
      return (held?.admit() ?? false) || (logsFull?.() ?? false);
    },
    async shutdown(timeoutMs: number, closeTimeoutMs?: number): Promise<FlushResult> {
      // Spans still held go to the buffer now: what its bound drops is counted and logged, not lost silently.
      held?.release();
      const [t, l] = await Promise.all([traces?.shutdown(timeoutMs, closeTimeoutMs), logs?.shutdown(timeoutMs, closeTimeoutMs)]);
      return combine(t, l);
    },
    counters,
    tracker,
    dedupe: pipelineDedupe,
    traces,
    logs,
    exportLag,
    get cursorUs() {
      return cursorUs;
    },
    get heldSpans() {
      return held?.count ?? 0;
    },
    restoreCursor(us: number | undefined): void {
      if (us !== undefined && (cursorUs === undefined || us > cursorUs)) cursorUs = us;
    },
  };
}

/** Whether a delivery queue is above half of either of its bounds. */
function aboveHalf<T>(delivery: Delivery<T>, maxItems: number, maxBytes: number): () => boolean {
  const items = Math.max(1, Math.floor(maxItems / 2));
  const bytes = Math.floor(maxBytes / 2);
  return () => delivery.stats.queued > items || delivery.stats.queuedBytes > bytes;
}

/** Spans waiting for room in the trace buffer (the `backpressure` option), oldest first. */
function createHeldSpans(traces: Delivery<SpanRecord>, config: Config) {
  const aboveHighWater = aboveHalf(traces, config.delivery.maxSpans, config.delivery.maxBytes);
  let spans: (SpanRecord | undefined)[] = [];
  let head = 0;
  return {
    add(span: SpanRecord): void {
      if (head < spans.length || !traces.offer(span)) spans.push(span);
    },
    admit(): boolean {
      while (head < spans.length && traces.offer(spans[head]!)) spans[head++] = undefined;
      if (head < spans.length) return true;
      if (head > 0) {
        spans = [];
        head = 0;
      }
      return aboveHighWater();
    },
    release(): void {
      for (; head < spans.length; head++) traces.enqueue(spans[head]!);
      spans = [];
      head = 0;
    },
    get count(): number {
      return spans.length - head;
    },
  };
}

function combine(a: FlushResult | undefined, b: FlushResult | undefined): FlushResult {
  return { ok: (a?.ok ?? true) && (b?.ok ?? true), pending: (a?.pending ?? 0) + (b?.pending ?? 0) };
}

function safeStringify(value: unknown, payloadLeftOut = false): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    // A payload nested too deep to write: the rest still says which event it was.
    if (!payloadLeftOut && isRecord(value)) {
      if ('payload' in value) return safeStringify({ ...value, payload: '…' }, true);
      if (isRecord(value.event)) return safeStringify({ ...value, event: { ...value.event, payload: '…' } }, true);
    }
    return String(value);
  }
}

/** Spans for the collector: converted to the SDK's shape only when sent. */
export function createTraceDelivery(
  config: Config,
  logger: Logger,
  resource: ReturnType<typeof createResource>,
  onDelivered?: (spans: readonly SpanRecord[]) => void,
): Delivery<SpanRecord> | undefined {
  // One export, its retries included, takes at most the request timeout and OTEL_BSP_EXPORT_TIMEOUT.
  const sender = createTraceSender({ ...config.traces, timeoutMs: Math.min(config.traces.timeoutMs, config.delivery.exportTimeoutMs) }, resource, diagToLogger(logger));
  if (sender === undefined) return undefined;
  // Its lines name where the spans go: a failure is about that URL (shown without secrets).
  const log = logger.child({ component: 'export', signal: 'traces', ...exportUrl(config.traces) });
  return createDelivery<SpanRecord>({
    name: 'traces',
    send: (batch) => sender.send(batch),
    sizeOf: estimateSpanBytes,
    maxItems: config.delivery.maxSpans,
    maxBytes: config.delivery.maxBytes,
    batchSize: config.delivery.batchSize,
    scheduleDelayMs: config.delivery.scheduleDelayMs,
    onDelivered,
    // Readiness (/healthz) follows whether the collector takes spans, also on a quiet stream.
    recheckAfterRefusal: true,
    ...lossLogging(log, 'spans', (timeoutMs) => sender.shutdown(timeoutMs)),
  });
}

function createLogDelivery(config: Config, logger: Logger): Delivery<ReadableLogRecord> | undefined {
  const sender = createLogSender({ ...config.logs, timeoutMs: Math.min(config.logs.timeoutMs, config.delivery.logs.exportTimeoutMs) });
  if (sender === undefined) return undefined;
  const log = logger.child({ component: 'export', signal: 'logs', ...exportUrl(config.logs) });
  return createDelivery<ReadableLogRecord>({
    name: 'logs',
    send: (batch) => sender.send(batch),
    sizeOf: (r) => 300 + (typeof r.body === 'string' ? r.body.length : 200),
    maxItems: config.delivery.logs.maxRecords,
    maxBytes: config.delivery.maxBytes,
    batchSize: config.delivery.logs.batchSize,
    scheduleDelayMs: config.delivery.logs.scheduleDelayMs,
    ...lossLogging(log, 'log records', (timeoutMs) => sender.shutdown(timeoutMs)),
  });
}

/** A signal's OTLP URL as log lines show it (no user info, no query values); nothing for another exporter. */
function exportUrl(signal: { readonly exporter: string; readonly url: string }): { url?: string } {
  return signal.exporter === 'otlp' ? { url: shownUrl(signal.url) } : {};
}

/**
 * Loss is logged once per interval with a count, never once per item; what is still unreported when
 * the delivery closes is logged then (the process may exit before the interval's timer fires).
 */
function lossLogging(log: Logger, what: string, closeSender: (timeoutMs?: number) => Promise<void>) {
  const pending = { dropped: 0, rejected: 0, error: undefined as string | undefined };
  let timer: NodeJS.Timeout | undefined;
  const report = (): void => {
    clearTimeout(timer);
    timer = undefined;
    if (pending.dropped > 0) log.error({ count: pending.dropped }, `delivery buffer full: dropped the oldest ${what}`);
    if (pending.rejected > 0) log.error({ count: pending.rejected, err: pending.error }, `collector rejected ${what}; not retried`);
    pending.dropped = 0;
    pending.rejected = 0;
  };
  return {
    onLoss(kind: 'dropped' | 'rejected', count: number, error: string | undefined): void {
      pending[kind] += count;
      if (error !== undefined) pending.error = error;
      if (timer === undefined) {
        timer = setTimeout(report, 1_000);
        timer.unref();
      }
    },
    onFailure(error: string, retryInMs: number): void {
      log.warn({ err: error, retryInMs }, `export of ${what} failed; retrying`);
    },
    onRecovered(afterFailures: number): void {
      log.info({ afterFailures }, `export of ${what} recovered`);
    },
    onTooLarge(error: string, items: number, maxBatchBytes: number): void {
      log.warn({ err: error, items, maxBatchBytes }, `collector refused a batch of ${what} as too large; sending it again in smaller batches`);
    },
    close(timeoutMs?: number): Promise<void> {
      report();
      return closeSender(timeoutMs);
    },
  };
}

/** Attribute names said to have had a value OpenTelemetry does not take, at most (each once). */
const MAX_INVALID_ATTRIBUTES_SAID = 100;

/** A promise, or anything with a `then` method, as `await` takes it. */
function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function';
}
