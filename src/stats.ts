import type { LagSummary } from './export/lag.js';
import type { Pipeline } from './pipeline.js';

export interface TracingStats {
  readonly uptimeS: number;
  readonly connected: boolean;
  /** Waiting for another process to release the state file (see `PREFECT_OTEL_STATE_LEASE_MS`). */
  readonly standby: boolean;
  /** `shutdown()` has begun: the stream is left, what is buffered is being delivered. */
  readonly stopping: boolean;
  readonly events: {
    readonly received: number;
    readonly accepted: number;
    readonly duplicates: number;
    readonly unrelated: number;
    readonly skipped: Readonly<Record<string, number>>;
  };
  readonly runs: {
    readonly open: number;
    readonly opened: number;
    readonly incomplete: number;
    readonly reruns: number;
    readonly lateEvents: number;
    readonly evicted: number;
    /** Scheduled flow runs, never started, that Prefect deleted (a deployment paused, redeployed or deleted, or the run itself): forgotten without a span. */
    readonly deletedScheduled: number;
    readonly pendingLookups: number;
    /** Lookups of where a run hangs (a subflow's tracking task's flow run, an unseen flow run's tracking task), and their outcomes. */
    readonly parentLookups: { readonly lookups: number; readonly found: number; readonly failed: number; readonly abandoned: number };
    /** Lookups of the state history of runs first seen leaving a terminal state (to number the rerun), and their outcomes. */
    readonly rerunLookups: { readonly lookups: number; readonly found: number; readonly failed: number; readonly abandoned: number };
    /** Lookups of Prefect's own span of flow runs (REST labels) and their outcomes. */
    readonly nativeSpans: { readonly lookups: number; readonly linked: number; readonly noLabel: number; readonly failed: number; readonly late: number };
  };
  readonly spans: {
    readonly finished: number;
    /** Finished spans of traces the sampler (OTEL_TRACES_SAMPLER) left out: not exported. */
    readonly unsampled: number;
    readonly exported: number;
    /**
     * Spans not yet accepted by the collector: queued, in the request it has not answered yet, and
     * (replay) held until the queue has room for them.
     */
    readonly buffered: number;
    readonly dropped: number;
    readonly rejected: number;
    readonly exportFailures: number;
    readonly exporting: boolean;
    /** Seconds from a span's end to its acceptance by the collector, per delivered span. */
    readonly exportLag: LagSummary;
    /** Span hooks that threw or replaced the attributes with no object (the span exported unchanged), or whose promise rejected (exported with what the hook set before it awaited). */
    readonly hookErrors: number;
  };
  /** OTLP log records (OTEL_LOGS_EXPORTER=otlp; all 0 without it), counted as the spans are. */
  readonly logRecords: {
    readonly exported: number;
    /** Waiting for the collector: queued, and in the request it has not answered yet. */
    readonly buffered: number;
    readonly dropped: number;
    readonly rejected: number;
    readonly exportFailures: number;
  };
  /** The state file (`watch` with one): writes that failed, all together; while they fail, a restart resumes from the last that worked. */
  readonly state: { readonly saveFailures: number };
  readonly memory: { readonly rssBytes: number; readonly heapUsedBytes: number };
  readonly source: { readonly connects: number; readonly reconnects: number; readonly frames: number; readonly historyEvents: number };
}

export function collectStats(
  pipeline: Pipeline,
  extra: { connected: boolean; standby?: boolean; stopping?: boolean; startedMs: number; subscriber?: { connects: number; reconnects: number; frames: number; historyEvents: number } | undefined; stateSaveFailures?: number },
): TracingStats {
  const c = pipeline.counters;
  const t = pipeline.tracker.counts;
  const d = pipeline.traces?.stats;
  const l = pipeline.logs?.stats;
  const mem = process.memoryUsage();
  return {
    uptimeS: Math.round((Date.now() - extra.startedMs) / 1000),
    connected: extra.connected,
    standby: extra.standby ?? false,
    stopping: extra.stopping ?? false,
    events: {
      received: c.received,
      accepted: c.accepted,
      duplicates: c.duplicates,
      unrelated: c.unrelated,
      skipped: Object.fromEntries(Object.entries(c.skipped).filter(([, n]) => n > 0)),
    },
    runs: {
      open: pipeline.tracker.openRuns,
      opened: t.runsOpened,
      incomplete: t.incomplete,
      reruns: t.reruns,
      lateEvents: t.lateEvents,
      evicted: t.evicted,
      deletedScheduled: t.deletedScheduled,
      pendingLookups: pipeline.tracker.pendingLookups,
      parentLookups: { ...t.parentLookups },
      rerunLookups: { ...t.rerunLookups },
      nativeSpans: { ...t.native },
    },
    spans: {
      finished: t.spans,
      unsampled: c.unsampled,
      exported: d?.delivered ?? 0,
      // A batch out at the collector is still waiting for it: it goes back to the queue if refused. So
      // are the spans replay holds back until the queue has room (the runs the end of input ended at once).
      buffered: (d?.queued ?? 0) + (d?.inFlight ?? 0) + pipeline.heldSpans,
      dropped: d?.dropped ?? 0,
      rejected: d?.rejected ?? 0,
      exportFailures: d?.failedAttempts ?? 0,
      // No trace exporter (OTEL_TRACES_EXPORTER=none): nothing to fail.
      exporting: d === undefined ? true : !d.failing,
      exportLag: pipeline.exportLag.summary(),
      hookErrors: c.hookErrors,
    },
    logRecords: {
      exported: l?.delivered ?? 0,
      buffered: (l?.queued ?? 0) + (l?.inFlight ?? 0),
      dropped: l?.dropped ?? 0,
      rejected: l?.rejected ?? 0,
      exportFailures: l?.failedAttempts ?? 0,
    },
    state: { saveFailures: extra.stateSaveFailures ?? 0 },
    memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed },
    source: {
      connects: extra.subscriber?.connects ?? 0,
      reconnects: extra.subscriber?.reconnects ?? 0,
      frames: extra.subscriber?.frames ?? 0,
      historyEvents: extra.subscriber?.historyEvents ?? 0,
    },
  };
}

/**
 * The stats as the `stats` and `stopped` log lines carry them: the export-lag buckets as
 * `{ le, count }` objects, not `[le, count]` pairs, since a log store cannot map an array whose items
 * are of different types (a string bound, a number count).
 */
export function statsLogFields(stats: TracingStats): Record<string, unknown> {
  const { exportLag } = stats.spans;
  return { ...stats, spans: { ...stats.spans, exportLag: { ...exportLag, buckets: exportLag.buckets.map(([le, count]) => ({ le, count })) } } };
}
