import { SeverityNumber } from '@opentelemetry/api-logs';
import { TraceFlags } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { Logger } from 'pino';
import { CONTROL_CHARS, escapeControls } from './control-chars.js';
import { TRUNCATED } from './line-bound.js';
import { ownLineStream } from './logger.js';
import { INSTRUMENTATION_SCOPE } from '../export/spans.js';
import { usToHrTime, usToIso } from '../model/time.js';
import { applyLogRecordLimits, type LogRecordLimits } from '../model/attribute-limits.js';
import type { RunLogRecord } from '../model/tracker.js';

export const STLOGGING_PREFIX = 'STLOGGING: ';

export interface RunLogWriterOptions {
  /** Whether a trace is exported (OTEL_TRACES_SAMPLER); absent: every trace. A line of a trace left out says `trace_flags` `00`. */
  readonly traceSampled?: ((traceId: string) => boolean) | undefined;
  readonly jaegerUrl: string | undefined;
  readonly uiUrl: string | undefined;
  /** When set, every record is also handed over as an OTel log record (OTEL_LOGS_EXPORTER=otlp). */
  readonly otelLogs?: { readonly resource: Resource; readonly emit: (record: ReadableLogRecord) => void; readonly limits?: LogRecordLimits };
}

const RUN_WORD = { flow: 'Flow run', task: 'Task run' } as const;
const RUN_WORD_LOWER = { flow: 'flow run', task: 'task run' } as const;

/** Python-repr-like quoting, kept on one line: backslashes, quotes and control characters escaped. */
function quote(text: string): string {
  if (!NEEDS_QUOTING.test(text)) return `'${text}'`;
  return `'${escapeControls(text.replace(/\\/g, '\\\\').replace(/'/g, "\\'"))}'`;
}

const NEEDS_QUOTING = new RegExp(`[\\\\'${CONTROL_CHARS}]`);

/**
 * Longest state message a STLOGGING line quotes (characters); a longer one is cut and ends in
 * `…[truncated]`, so that the line stays within LINE_MAX_BYTES with its message still well-formed.
 * The OTel log record's body and the span event keep their own bounds.
 */
export const LINE_STATE_MESSAGE_MAX_CHARS = 2_048;

/** The first `max` characters of `text` (a character outside the BMP counts as one and is never split), marked when cut. */
function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  let units = 0;
  for (let chars = 0; chars < max && units < text.length; chars++) units += text.codePointAt(units)! > 0xffff ? 2 : 1;
  return units >= text.length ? text : `${text.slice(0, units)}${TRUNCATED}`;
}

/** The message of a STLOGGING line, without the prefix; `maxStateMessageChars`: where the state message is cut (the line's bound; none for an OTel log record's body). */
export function formatRunLogMessage(record: RunLogRecord, maxStateMessageChars = Infinity): string {
  const { run, event, state } = record;
  if (state !== undefined) {
    const name = run.name === undefined ? '' : ` (${run.name})`;
    return `${RUN_WORD[run.type]} ${run.id}${name} state transition: ${state.from ?? 'None'} -> ${state.type} (state_name=${quote(state.name)}, message=${quote(cutText(state.message, maxStateMessageChars))})`;
  }
  return `Event ${event.name} (id=${event.id}) on ${RUN_WORD_LOWER[run.type]} ${run.id}`;
}

type LineOptions = Pick<RunLogWriterOptions, 'jaegerUrl' | 'uiUrl' | 'traceSampled'>;

/** Whether the record's trace is exported: the line's `trace_flags`, and a Jaeger link only to a trace that is there. */
const isSampled = (record: RunLogRecord, options: LineOptions): boolean => options.traceSampled === undefined || options.traceSampled(record.traceId);

/** The structured fields of a STLOGGING line: the OTel log-correlation keys and Prefect's ids. */
export function runLogFields(record: RunLogRecord, options: LineOptions): Record<string, unknown> {
  const { run, event, state } = record;
  const sampled = isSampled(record, options);
  const fields: Record<string, unknown> = {
    trace_id: record.traceId,
    span_id: record.spanId,
    trace_flags: sampled ? '01' : '00',
    'prefect.run.id': run.id,
    'prefect.run.type': run.type,
    'prefect.event.id': event.id,
    'prefect.event.name': event.name,
    occurred: usToIso(event.occurredUs),
  };
  if (run.name !== undefined) fields['prefect.run.name'] = run.name;
  if (state !== undefined) {
    fields['prefect.state.type'] = state.type;
    fields['prefect.state.name'] = state.name;
  }
  if (record.kind === 'late') fields.late = true;
  if (options.uiUrl !== undefined) fields['prefect.run.url'] = `${options.uiUrl}/runs/${run.type}-run/${run.id}`;
  if (options.jaegerUrl !== undefined && sampled && state?.terminal === true) fields.jaeger_url = `${options.jaegerUrl}/trace/${record.traceId}`;
  return fields;
}

const str = JSON.stringify;

/**
 * The line pino writes for `log.info(runLogFields(record), message)` on a `createLogger` logger's
 * `runs` child, built as text: the same keys in the same order, the same JSON. One of these is
 * written for every transition, and pino's generic serializer was a fifth of the pipeline's time.
 * `message`: without the prefix, with the late suffix for a late record.
 */
export function formatRunLogLine(record: RunLogRecord, message: string, options: LineOptions, timeMs: number): string {
  const { run, event, state } = record;
  const late = record.kind === 'late';
  const sampled = isSampled(record, options);
  // Run and event ids are canonical UUIDs and state types come from a fixed set (the parser and the
  // classifier reject anything else): written without escaping. Names and messages are escaped.
  let line = `{"level":${late ? 40 : 30},"time":${timeMs},"service":"prefect-otel","component":"runs","trace_id":"${record.traceId}","span_id":"${record.spanId}","trace_flags":"${sampled ? '01' : '00'}","prefect.run.id":"${run.id}","prefect.run.type":"${run.type}","prefect.event.id":"${event.id}","prefect.event.name":${str(event.name)},"occurred":"${usToIso(event.occurredUs)}"`;
  if (run.name !== undefined) line += `,"prefect.run.name":${str(run.name)}`;
  if (state !== undefined) line += `,"prefect.state.type":"${state.type}","prefect.state.name":${str(state.name)}`;
  if (late) line += ',"late":true';
  if (options.uiUrl !== undefined) line += `,"prefect.run.url":${str(`${options.uiUrl}/runs/${run.type}-run/${run.id}`)}`;
  if (options.jaegerUrl !== undefined && sampled && state?.terminal === true) line += `,"jaeger_url":${str(`${options.jaegerUrl}/trace/${record.traceId}`)}`;
  return `${line},"msg":${str(`${STLOGGING_PREFIX}${message}`)}}\n`;
}

const LATE_SUFFIX = ' (late: its span was already exported)';
const withLate = (message: string, late: boolean): string => (late ? `${message}${LATE_SUFFIX}` : message);
/** Whether the record's state message is longer than a line quotes. */
const long = (record: RunLogRecord): boolean => record.state !== undefined && record.state.message.length > LINE_STATE_MESSAGE_MAX_CHARS;

/** Writes one STLOGGING record per state transition and attached event. */
export function createRunLogWriter(logger: Logger, options: RunLogWriterOptions): (record: RunLogRecord) => void {
  // Run lines carry only what the events said (ids, names, states), never a setting: no redaction
  // paths to walk on the hottest log line.
  const log = logger.child({ component: 'runs' }, { msgPrefix: STLOGGING_PREFIX, redact: [] });
  const stream = ownLineStream(logger);
  return (record) => {
    const late = record.kind === 'late';
    const toLog = logger.isLevelEnabled(late ? 'warn' : 'info');
    if (!toLog && options.otelLogs === undefined) return;
    // The late suffix is part of the message, in the line and in the OTel log record alike.
    const message = late ? `${formatRunLogMessage(record)}${LATE_SUFFIX}` : formatRunLogMessage(record);
    if (toLog) {
      const lineMessage = long(record) ? withLate(formatRunLogMessage(record, LINE_STATE_MESSAGE_MAX_CHARS), late) : message;
      if (stream !== undefined) stream.write(formatRunLogLine(record, lineMessage, options, Date.now()));
      else if (late) log.warn(runLogFields(record, options), lineMessage);
      else log.info(runLogFields(record, options), lineMessage);
    }
    if (options.otelLogs !== undefined) {
      const fields: Record<string, string | boolean> = {};
      for (const [k, v] of Object.entries(runLogFields(record, options))) {
        if (k === 'trace_id' || k === 'span_id' || k === 'trace_flags') continue;
        if (typeof v === 'string' || typeof v === 'boolean') fields[k] = v;
      }
      // OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT and the count limit, as the SDK's LoggerProvider applies them.
      const { value: attributes, dropped } = options.otelLogs.limits === undefined ? { value: fields, dropped: 0 } : applyLogRecordLimits(fields, options.otelLogs.limits);
      options.otelLogs.emit({
        hrTime: usToHrTime(record.event.occurredUs),
        hrTimeObserved: usToHrTime(Date.now() * 1000),
        spanContext: { traceId: record.traceId, spanId: record.spanId, traceFlags: isSampled(record, options) ? TraceFlags.SAMPLED : TraceFlags.NONE },
        severityNumber: late ? SeverityNumber.WARN : SeverityNumber.INFO,
        severityText: late ? 'WARN' : 'INFO',
        body: `${STLOGGING_PREFIX}${message}`,
        resource: options.otelLogs.resource,
        instrumentationScope: INSTRUMENTATION_SCOPE,
        attributes,
        droppedAttributesCount: dropped,
      });
    }
  };
}
