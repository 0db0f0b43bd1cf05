import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPLogExporter as OTLPLogExporterJson } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as OTLPLogExporterProto } from '@opentelemetry/exporter-logs-otlp-proto';
import { OTLPTraceExporter as OTLPTraceExporterJson } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPTraceExporterProto } from '@opentelemetry/exporter-trace-otlp-proto';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
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

export function exporterOptions(signal: OtlpSignalConfig) {
  return {
    url: signal.url,
    headers: { ...signal.headers },
    timeoutMillis: signal.timeoutMs,
    compression: signal.compression === 'gzip' ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE,
    concurrencyLimit: 4,
    userAgent: `prefect-otel/${VERSION}`,
  };
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
 * The trace sender for the configured exporter. OTLP encodes and sends on its own thread; the
 * console exporter (a debugging aid) prints from this one.
 */
export function createTraceSender(
  signal: OtlpSignalConfig & { exporter: 'otlp' | 'console' | 'none' },
  resource: Resource,
): Sender<SpanRecord> | undefined {
  if (signal.exporter === 'none') return undefined;
  if (signal.exporter === 'console') return onThisThread(wrap(new ConsoleSpanExporter()), resource);
  return createThreadedTraceSender(
    { signal, resourceAttributes: resource.attributes },
    { fallback: () => onThisThread(createOtlpTraceSender(signal), resource) },
  );
}

/** A sender of span records that converts and sends them on the calling thread. */
export function onThisThread(sender: Sender<ReadableSpan>, resource: Resource): Sender<SpanRecord> {
  return { send: (items) => sender.send(items.map((r) => toReadableSpan(r, resource))), shutdown: () => sender.shutdown() };
}

/** The SDK's OTLP trace exporter for the configured protocol (run on the export thread). */
export function createOtlpTraceSender(signal: OtlpSignalConfig): Sender<ReadableSpan> {
  const options = exporterOptions(signal);
  return wrap(signal.protocol === 'http/json' ? new OTLPTraceExporterJson(options) : new OTLPTraceExporterProto(options));
}

export function createLogSender(signal: OtlpSignalConfig & { exporter: 'otlp' | 'none' }): Sender<ReadableLogRecord> | undefined {
  if (signal.exporter === 'none') return undefined;
  const options = exporterOptions(signal);
  return wrap(signal.protocol === 'http/json' ? new OTLPLogExporterJson(options) : new OTLPLogExporterProto(options));
}
