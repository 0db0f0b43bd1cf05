import { SKIP_REASONS } from './model/event.js';
import type { TracingStats } from './stats.js';

/**
 * Every metric once: its Prometheus name (`/metrics`), its OpenTelemetry name (OTLP metrics, when
 * exported), and how to read it from the stats. The OTel names map to the Prometheus names by the
 * Collector's usual translation (dots → `_`, unit `s` → `_seconds`, monotonic sums → `_total`).
 * That translation appends `_ratio` to a gauge of unit `1`, so a 0/1 gauge counts something
 * (`{connection}`, `{process}`) instead: its name then stays the same on both sides.
 *
 * Every gauge here counts what there is at the moment (runs open, spans buffered, connections):
 * values that add up across processes and attributes, which OpenTelemetry records with an
 * (asynchronous) UpDownCounter, not a Gauge, whose values are non-additive. Over OTLP they are
 * non-monotonic sums; the Collector's Prometheus exporter shows those as gauges, under the same name.
 */
export interface MetricDef {
  readonly prometheus: string;
  /** Undefined: only on `/metrics` (process facts that OTel has its own conventions for). */
  readonly otel: string | undefined;
  /** The Prometheus type; over OTLP a counter is an asynchronous Counter, a gauge an asynchronous UpDownCounter. */
  readonly type: 'counter' | 'gauge';
  readonly unit: string;
  readonly help: string;
  /** A value, or values by the `label` attribute. */
  readonly read: (s: TracingStats) => number | Readonly<Record<string, number>>;
  readonly label?: string;
}

/**
 * Every skip reason, 0 until it counts: a series that appears only at its first increment is missed
 * by `rate()` and `increase()` (its first sample is already 1), so an alert on skipped input would not
 * fire on the first one (Prometheus, "Avoid missing metrics"). The stats keep only the reasons seen.
 */
const NO_SKIPS: Readonly<Record<string, number>> = Object.fromEntries(SKIP_REASONS.map((r) => [r, 0]));

export const METRIC_DEFS: readonly MetricDef[] = [
  { prometheus: 'prefect_otel_up_seconds', otel: undefined, type: 'gauge', unit: 's', help: 'Seconds since start.', read: (s) => s.uptimeS },
  { prometheus: 'process_resident_memory_bytes', otel: undefined, type: 'gauge', unit: 'By', help: 'Resident memory size in bytes.', read: (s) => s.memory.rssBytes },
  { prometheus: 'nodejs_heap_size_used_bytes', otel: undefined, type: 'gauge', unit: 'By', help: 'V8 heap in use, in bytes.', read: (s) => s.memory.heapUsedBytes },
  { prometheus: 'prefect_otel_connected', otel: 'prefect_otel.connected', type: 'gauge', unit: '{connection}', help: '1 while subscribed to the Prefect event stream (replay: until what it read is delivered).', read: (s) => (s.connected ? 1 : 0) },
  { prometheus: 'prefect_otel_standby', otel: 'prefect_otel.standby', type: 'gauge', unit: '{process}', help: '1 while waiting for another process to release the state file.', read: (s) => (s.standby ? 1 : 0) },
  { prometheus: 'prefect_otel_events_received_total', otel: 'prefect_otel.events.received', type: 'counter', unit: '{event}', help: 'Frames and lines received.', read: (s) => s.events.received },
  { prometheus: 'prefect_otel_events_accepted_total', otel: 'prefect_otel.events.accepted', type: 'counter', unit: '{event}', help: 'Events applied to a run.', read: (s) => s.events.accepted },
  { prometheus: 'prefect_otel_events_duplicate_total', otel: 'prefect_otel.events.duplicate', type: 'counter', unit: '{event}', help: 'Events dropped as duplicates (same event id).', read: (s) => s.events.duplicates },
  { prometheus: 'prefect_otel_events_unrelated_total', otel: 'prefect_otel.events.unrelated', type: 'counter', unit: '{event}', help: 'Valid events that name no flow or task run.', read: (s) => s.events.unrelated },
  { prometheus: 'prefect_otel_events_skipped_total', otel: 'prefect_otel.events.skipped', type: 'counter', unit: '{event}', help: 'Malformed input skipped, by reason.', read: (s) => ({ ...NO_SKIPS, ...s.events.skipped }), label: 'reason' },
  { prometheus: 'prefect_otel_runs_open', otel: 'prefect_otel.runs.open', type: 'gauge', unit: '{run}', help: 'Runs held in memory.', read: (s) => s.runs.open },
  { prometheus: 'prefect_otel_runs_opened_total', otel: 'prefect_otel.runs.opened', type: 'counter', unit: '{run}', help: 'Run attempts seen.', read: (s) => s.runs.opened },
  { prometheus: 'prefect_otel_runs_incomplete_total', otel: 'prefect_otel.runs.incomplete', type: 'counter', unit: '{run}', help: 'Runs ended without a terminal state.', read: (s) => s.runs.incomplete },
  { prometheus: 'prefect_otel_runs_evicted_total', otel: 'prefect_otel.runs.evicted', type: 'counter', unit: '{run}', help: 'Runs ended early by the open-run bound.', read: (s) => s.runs.evicted },
  { prometheus: 'prefect_otel_scheduled_runs_deleted_total', otel: 'prefect_otel.scheduled_runs.deleted', type: 'counter', unit: '{run}', help: 'Scheduled flow runs, never started, that Prefect no longer has (deleted with their deployment\'s schedule, or one by one): forgotten without a span.', read: (s) => s.runs.deletedScheduled },
  { prometheus: 'prefect_otel_reruns_total', otel: 'prefect_otel.reruns', type: 'counter', unit: '{run}', help: 'Runs that left a terminal state again.', read: (s) => s.runs.reruns },
  {
    prometheus: 'prefect_otel_native_span_lookups_total', otel: 'prefect_otel.native_span_lookups', type: 'counter', unit: '{lookup}', help: "Flow-run lookups of Prefect's own span, by outcome.",
    read: (s) => ({ linked: s.runs.nativeSpans.linked, no_label: s.runs.nativeSpans.noLabel, failed: s.runs.nativeSpans.failed, late: s.runs.nativeSpans.late }), label: 'outcome',
  },
  {
    prometheus: 'prefect_otel_parent_lookups_total', otel: 'prefect_otel.parent_lookups', type: 'counter', unit: '{lookup}', help: 'Lookups of where a run hangs (the flow run owning a subflow\'s tracking task, the tracking task of a flow run not seen yet), by outcome; failed and abandoned ones leave a root of its own trace.',
    read: (s) => ({ found: s.runs.parentLookups.found, failed: s.runs.parentLookups.failed, abandoned: s.runs.parentLookups.abandoned }), label: 'outcome',
  },
  {
    prometheus: 'prefect_otel_rerun_lookups_total', otel: 'prefect_otel.rerun_lookups', type: 'counter', unit: '{lookup}', help: 'Lookups of the state history of a run first seen leaving a terminal state, to number its rerun, by outcome; failed and abandoned ones number it as the first rerun.',
    read: (s) => ({ found: s.runs.rerunLookups.found, failed: s.runs.rerunLookups.failed, abandoned: s.runs.rerunLookups.abandoned }), label: 'outcome',
  },
  { prometheus: 'prefect_otel_pending_parent_lookups', otel: 'prefect_otel.pending_parent_lookups', type: 'gauge', unit: '{lookup}', help: 'Lookups not yet answered (of where a run hangs, of a rerun\'s number) whose runs\' events wait.', read: (s) => s.runs.pendingLookups },
  { prometheus: 'prefect_otel_late_events_total', otel: 'prefect_otel.late_events', type: 'counter', unit: '{event}', help: 'Events that arrived after their run was exported.', read: (s) => s.runs.lateEvents },
  { prometheus: 'prefect_otel_spans_finished_total', otel: 'prefect_otel.spans.finished', type: 'counter', unit: '{span}', help: 'Spans built.', read: (s) => s.spans.finished },
  { prometheus: 'prefect_otel_spans_unsampled_total', otel: 'prefect_otel.spans.unsampled', type: 'counter', unit: '{span}', help: 'Spans not exported because the sampler (OTEL_TRACES_SAMPLER) left their trace out.', read: (s) => s.spans.unsampled },
  { prometheus: 'prefect_otel_spans_exported_total', otel: 'prefect_otel.spans.exported', type: 'counter', unit: '{span}', help: 'Spans accepted by the collector.', read: (s) => s.spans.exported },
  { prometheus: 'prefect_otel_spans_buffered', otel: 'prefect_otel.spans.buffered', type: 'gauge', unit: '{span}', help: 'Spans waiting for the collector.', read: (s) => s.spans.buffered },
  { prometheus: 'prefect_otel_spans_dropped_total', otel: 'prefect_otel.spans.dropped', type: 'counter', unit: '{span}', help: 'Spans dropped because the buffer was full.', read: (s) => s.spans.dropped },
  { prometheus: 'prefect_otel_spans_rejected_total', otel: 'prefect_otel.spans.rejected', type: 'counter', unit: '{span}', help: 'Spans the collector rejected for good.', read: (s) => s.spans.rejected },
  { prometheus: 'prefect_otel_span_hook_errors_total', otel: 'prefect_otel.span_hook_errors', type: 'counter', unit: '{span}', help: 'Spans whose span hook threw, rejected or replaced the attributes with no object.', read: (s) => s.spans.hookErrors },
  { prometheus: 'prefect_otel_export_failures_total', otel: 'prefect_otel.export.failures', type: 'counter', unit: '{attempt}', help: 'Failed export attempts of spans (retried).', read: (s) => s.spans.exportFailures },
  { prometheus: 'prefect_otel_log_records_exported_total', otel: 'prefect_otel.log_records.exported', type: 'counter', unit: '{log_record}', help: 'OTLP log records (OTEL_LOGS_EXPORTER=otlp) accepted by the collector.', read: (s) => s.logRecords.exported },
  { prometheus: 'prefect_otel_log_records_buffered', otel: 'prefect_otel.log_records.buffered', type: 'gauge', unit: '{log_record}', help: 'OTLP log records waiting for the collector.', read: (s) => s.logRecords.buffered },
  { prometheus: 'prefect_otel_log_records_dropped_total', otel: 'prefect_otel.log_records.dropped', type: 'counter', unit: '{log_record}', help: 'OTLP log records dropped because the buffer was full.', read: (s) => s.logRecords.dropped },
  { prometheus: 'prefect_otel_log_records_rejected_total', otel: 'prefect_otel.log_records.rejected', type: 'counter', unit: '{log_record}', help: 'OTLP log records the collector rejected for good.', read: (s) => s.logRecords.rejected },
  { prometheus: 'prefect_otel_state_save_failures_total', otel: 'prefect_otel.state.save_failures', type: 'counter', unit: '{attempt}', help: 'Writes of the state file that failed (a full or read-only disk): while they fail, a restart resumes from the last write that worked.', read: (s) => s.state.saveFailures },
  { prometheus: 'prefect_otel_log_export_failures_total', otel: 'prefect_otel.log_export.failures', type: 'counter', unit: '{attempt}', help: 'Failed export attempts of OTLP log records (retried).', read: (s) => s.logRecords.exportFailures },
  { prometheus: 'prefect_otel_reconnects_total', otel: 'prefect_otel.reconnects', type: 'counter', unit: '{reconnect}', help: 'Connection attempts to the Prefect event stream after the first: each retry while it cannot be reached, and each resume after a drop.', read: (s) => s.source.reconnects },
];

/** The export-lag histogram (buckets in `export/lag.ts`). */
export const LAG_METRIC = {
  prometheus: 'prefect_otel_export_lag_seconds',
  otel: 'prefect_otel.export.lag',
  unit: 's',
  help: 'Seconds from a span\'s end (its terminal event) to its acceptance by the collector.',
} as const;
