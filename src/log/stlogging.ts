import { SeverityNumber } from '@opentelemetry/api-logs';
import { TraceFlags } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import type { Logger } from 'pino';
import { INSTRUMENTATION_SCOPE } from '../export/spans.js';
import { usToHrTime, usToIso } from '../model/time.js';
import type { RunLogRecord } from '../model/tracker.js';

export const STLOGGING_PREFIX = 'STLOGGING: ';

export interface RunLogWriterOptions {
  readonly jaegerUrl: string | undefined;
  readonly uiUrl: string | undefined;
  /** When set, every record is also handed over as an OTel log record (OTEL_LOGS_EXPORTER=otlp). */
  readonly otelLogs?: { readonly resource: Resource; readonly emit: (record: ReadableLogRecord) => void };
}

const RUN_WORD = { flow: 'Flow run', task: 'Task run' } as const;
const RUN_WORD_LOWER = { flow: 'flow run', task: 'task run' } as const;

/** Python-repr-like quoting, kept on one line. */
function quote(text: string): string {
  return `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\r?\n/g, '\\n')}'`;
}

/** The message of a STLOGGING line, without the prefix. */
export function formatRunLogMessage(record: RunLogRecord): string {
  const { run, event, state } = record;
  if (state !== undefined) {
    const name = run.name === undefined ? '' : ` (${run.name})`;
    return `${RUN_WORD[run.type]} ${run.id}${name} state transition: ${state.from ?? 'None'} -> ${state.type} (state_name=${quote(state.name)}, message=${quote(state.message)})`;
  }
  return `Event ${event.name} (id=${event.id}) on ${RUN_WORD_LOWER[run.type]} ${run.id}`;
}

/** The structured fields of a STLOGGING line: the OTel log-correlation keys and Prefect's ids. */
export function runLogFields(record: RunLogRecord, options: Pick<RunLogWriterOptions, 'jaegerUrl' | 'uiUrl'>): Record<string, unknown> {
  const { run, event, state } = record;
  const fields: Record<string, unknown> = {
    trace_id: record.traceId,
    span_id: record.spanId,
    trace_flags: '01',
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
  if (options.jaegerUrl !== undefined && state?.terminal === true) fields.jaeger_url = `${options.jaegerUrl}/trace/${record.traceId}`;
  return fields;
}

/** Writes one STLOGGING record per state transition and attached event. */
export function createRunLogWriter(logger: Logger, options: RunLogWriterOptions): (record: RunLogRecord) => void {
  // Run lines carry only what the events said (ids, names, states), never a setting: no redaction
  // paths to walk on the hottest log line.
  const log = logger.child({ component: 'runs' }, { msgPrefix: STLOGGING_PREFIX, redact: [] });
  return (record) => {
    const late = record.kind === 'late';
    const toLog = late ? log.isLevelEnabled('warn') : log.isLevelEnabled('info');
    if (!toLog && options.otelLogs === undefined) return;
    const message = formatRunLogMessage(record);
    const fields = runLogFields(record, options);
    if (toLog) {
      if (late) log.warn(fields, `${message} (late: its span was already exported)`);
      else log.info(fields, message);
    }
    if (options.otelLogs !== undefined) {
      const attributes: Record<string, string | boolean> = {};
      for (const [k, v] of Object.entries(fields)) {
        if (k === 'trace_id' || k === 'span_id' || k === 'trace_flags') continue;
        if (typeof v === 'string' || typeof v === 'boolean') attributes[k] = v;
      }
      options.otelLogs.emit({
        hrTime: usToHrTime(record.event.occurredUs),
        hrTimeObserved: usToHrTime(Date.now() * 1000),
        spanContext: { traceId: record.traceId, spanId: record.spanId, traceFlags: TraceFlags.SAMPLED },
        severityNumber: late ? SeverityNumber.WARN : SeverityNumber.INFO,
        severityText: late ? 'WARN' : 'INFO',
        body: `${STLOGGING_PREFIX}${message}`,
        resource: options.otelLogs.resource,
        instrumentationScope: INSTRUMENTATION_SCOPE,
        attributes,
        droppedAttributesCount: 0,
      });
    }
  };
}
