import type { DiagLogger } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { CompressionAlgorithm, OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import {
  JsonLogsSerializer,
  JsonTraceSerializer,
  LogsExporterMetricsHelper,
  ProtobufLogsSerializer,
  ProtobufTraceSerializer,
  TraceExporterMetricsHelper,
  type IExporterMetricsHelper,
  type ISerializer,
} from '@opentelemetry/otlp-transformer';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { ConsoleSpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import type { Resource } from '@opentelemetry/resources';
import type { OtlpSignalConfig } from '../config.js';
import type { SpanRecord } from '../model/span-record.js';
import { VERSION } from '../version.js';
import type { SendResult } from './delivery.js';
import { createThreadedTraceSender } from './export-thread.js';
import { toReadableSpan } from './spans.js';

interface Exporter<T> {
  export(items: T[], done: (result: ExportResult) => void): void;
  shutdown(): Promise<void>;
}

export interface Sender<T> {
  send(items: T[]): Promise<SendResult>;
  shutdown(): Promise<void>;
}

/** HTTP statuses worth retrying; every other 4xx/5xx answer means the collector will never accept the batch. */
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

function exporterOptions(signal: OtlpSignalConfig) {
  return {
    url: signal.url,
    headers: { ...signal.headers },
    timeoutMillis: signal.timeoutMs,
    compression: signal.compression === 'gzip' ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE,
    concurrencyLimit: 4,
    userAgent: `prefect-otel/${VERSION}`,
  };
}

/** What the SDK calls each signal in its OTEL_EXPORTER_OTLP_<SIGNAL>_* variables, and its URL path. */
type OtlpSignalKind = { readonly id: 'TRACES' | 'LOGS' | 'METRICS'; readonly path: string };

/**
 * The SDK's HTTP export delegate for one signal, configured exactly as prefect-otel resolved it.
 * The SDK also reads OTEL_EXPORTER_OTLP_* itself and *adds* the env headers to those given in code,
 * so a header a flag or option overrode, or one prefect-otel rejected (a line break in it), would
 * reach the wire anyway: the headers are replaced with the resolved ones. URL, timeout and
 * compression are always given in code, so the SDK's env values for them never apply (its TLS file
 * variables, which prefect-otel does not read, still do).
 */
export function createHttpDelegate<Internal, Response>(
  signal: OtlpSignalConfig,
  kind: OtlpSignalKind,
  encodings: { readonly json: ISerializer<Internal, Response>; readonly protobuf: ISerializer<Internal, Response> },
  component: string,
  metricsHelper: IExporterMetricsHelper<Internal>,
) {
  const json = signal.protocol === 'http/json';
  const contentType = json ? 'application/json' : 'application/x-protobuf';
  const options = convertLegacyHttpOptions(exporterOptions(signal), kind.id, kind.path, { 'Content-Type': contentType });
  const headers = { ...signal.headers, 'Content-Type': contentType };
  return createOtlpHttpExportDelegate(
    { ...options, headers: () => Promise.resolve(headers) },
    json ? encodings.json : encodings.protobuf,
    component,
    metricsHelper,
    undefined,
  );
}

function wrap<T>(exporter: Exporter<T>): Sender<T> {
  return {
    send: (items) =>
      new Promise<SendResult>((resolve) => {
        exporter.export(items, (result) => {
          if (result.code === ExportResultCode.SUCCESS) {
            resolve({ ok: true });
            return;
          }
          const err: (Error & { code?: unknown }) | undefined = result.error;
          const status = typeof err?.code === 'number' ? err.code : undefined;
          const message = err === undefined ? 'export failed' : status !== undefined ? `HTTP ${status} ${err.message}` : err.message;
          resolve({ ok: false, retryable: status === undefined || RETRYABLE_STATUS.has(status), error: message });
        });
      }),
    shutdown: () => exporter.shutdown(),
  };
}

/**
 * The trace sender for the configured exporter. OTLP encodes and sends on its own thread, whose SDK
 * diagnostics go to `diag`; the console exporter (a debugging aid) prints from this one.
 */
export function createTraceSender(
  signal: OtlpSignalConfig & { exporter: 'otlp' | 'console' | 'none' },
  resource: Resource,
  diag?: DiagLogger,
): Sender<SpanRecord> | undefined {
  if (signal.exporter === 'none') return undefined;
  if (signal.exporter === 'console') return onThisThread(wrap(new ConsoleSpanExporter()), resource);
  return createThreadedTraceSender(
    { signal, resourceAttributes: resource.attributes },
    { fallback: () => onThisThread(createOtlpTraceSender(signal), resource), diag },
  );
}

/** A sender of span records that converts and sends them on the calling thread. */
export function onThisThread(sender: Sender<ReadableSpan>, resource: Resource): Sender<SpanRecord> {
  return { send: (items) => sender.send(items.map((r) => toReadableSpan(r, resource))), shutdown: () => sender.shutdown() };
}

/** The SDK's OTLP trace exporter for the configured protocol (run on the export thread). */
export function createOtlpTraceSender(signal: OtlpSignalConfig): Sender<ReadableSpan> {
  const encodings = { json: JsonTraceSerializer, protobuf: ProtobufTraceSerializer };
  return wrap(new OTLPExporterBase(createHttpDelegate(signal, { id: 'TRACES', path: 'v1/traces' }, encodings, 'otlp_http_span_exporter', TraceExporterMetricsHelper)));
}

/** The SDK's OTLP log exporter for the logs' own protocol (OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, else the generic one). */
export function createLogSender(signal: OtlpSignalConfig & { exporter: 'otlp' | 'none' }): Sender<ReadableLogRecord> | undefined {
  if (signal.exporter === 'none') return undefined;
  const encodings = { json: JsonLogsSerializer, protobuf: ProtobufLogsSerializer };
  return wrap(new OTLPExporterBase(createHttpDelegate(signal, { id: 'LOGS', path: 'v1/logs' }, encodings, 'otlp_http_log_exporter', LogsExporterMetricsHelper)));
}
