import { diag, type DiagLogger } from '@opentelemetry/api';
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
import { otlpSecrets, secretRedactor } from '../log/redact.js';
import type { SpanRecord } from '../model/span-record.js';
import { VERSION } from '../version.js';
import type { SendResult } from './delivery.js';
import { createThreadedTraceSender } from './export-thread.js';
import { watchRetriedAnswers, type RetriedAnswers } from './retried-answers.js';
import { toReadableSpan } from './spans.js';

interface Exporter<T> {
  export(items: T[], done: (result: ExportResult) => void): void;
  shutdown(): Promise<void>;
}

export interface Sender<T> {
  send(items: T[]): Promise<SendResult>;
  /**
   * Release the exporter once its last batch is answered; with `timeoutMs`, wait at most that long
   * for it (the process is stopping, and what that batch held is accounted for by the caller).
   */
  shutdown(timeoutMs?: number): Promise<void>;
}

/**
 * Whether `work` ended within `timeoutMs` (undefined: wait as long as it takes); its failure is
 * thrown as it comes. Once the time is up it goes on unobserved.
 */
export async function waitAtMost(work: Promise<unknown>, timeoutMs: number | undefined): Promise<boolean> {
  if (timeoutMs === undefined) {
    await work;
    return true;
  }
  work.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(resolve, timeoutMs, false)));
  try {
    return await Promise.race([work.then(() => true as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** HTTP statuses worth retrying; every other 4xx/5xx answer means the collector will never accept the batch. */
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

/** The collector's (or a proxy's) answer to a request over its body size limit. */
const PAYLOAD_TOO_LARGE = 413;

/**
 * The OpenTelemetry Collector's OTLP/HTTP receiver (and Jaeger v2's, built on it) answers a body over
 * its `max_request_body_size` (20 MiB by default) with 400 and this message (Go's
 * `http.MaxBytesError`) in its google.rpc.Status, not with 413: a size refusal all the same.
 */
const BAD_REQUEST = 400;
const COLLECTOR_TOO_LARGE = 'request body too large';

/** Whether an answer refused the request for its size, so a smaller one may pass. */
function refusedForSize(status: number | undefined, collectorSaid: string): boolean {
  return status === PAYLOAD_TOO_LARGE || (status === BAD_REQUEST && collectorSaid.includes(COLLECTOR_TOO_LARGE));
}

/**
 * How the SDK says it stopped reading an answer past its 4 MiB limit. The status of that answer is
 * unknown, so the collector may well have taken the batch: sending it again could export the same
 * spans twice (and would, for as long as the answer stays that large).
 */
const OVERSIZED_ANSWER = 'response body exceeded size limit';

/**
 * What a 2xx answer said beyond "accepted": the items the collector refused (OTLP partial success).
 * Left here by `readingAnswers` and taken by the export's callback, which the SDK calls in the same
 * tick, right after reading the answer.
 */
interface AnswerSlot {
  last: { readonly rejected: number; readonly message: string } | undefined;
}

/** How much of the collector's own words goes into a failure's message. */
const COLLECTOR_TEXT_MAX_CHARS = 200;
/** A run of printable text in a body read as UTF-8 (a protobuf body's strings survive that; its binary framing does not). */
const PRINTABLE_RUN_RE = /[^\u0000-\u001f\u007f-\u009f\ufffd]{3,}/;

/**
 * What the collector said about a failed request: the `message` of the google.rpc.Status it answers
 * with (OTLP/JSON, or the first printable run of a protobuf body, where the message is the first
 * string), or a proxy's plain text; '' when there is nothing to quote.
 */
function collectorText(body: unknown, redact: (text: string) => string): string {
  if (typeof body !== 'string' || body === '') return '';
  let text: string | undefined;
  try {
    const parsed: unknown = JSON.parse(body);
    if (isObject(parsed)) text = typeof parsed.message === 'string' ? parsed.message : '';
  } catch {
    // Not JSON: protobuf or plain text.
  }
  return cutShort(redact((text ?? PRINTABLE_RUN_RE.exec(body)?.[0] ?? '').trim()));
}

/** The collector's text, already redacted (a credential cut in two would no longer be recognised), cut short. */
function cutShort(text: string): string {
  return text.length > COLLECTOR_TEXT_MAX_CHARS ? `${text.slice(0, COLLECTOR_TEXT_MAX_CHARS)}…` : text;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
const UTF8 = new TextDecoder();

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
  answers?: AnswerSlot,
  redact: (text: string) => string = secretRedactor(otlpSecrets(signal)),
) {
  const json = signal.protocol === 'http/json';
  const contentType = json ? 'application/json' : 'application/x-protobuf';
  const options = convertLegacyHttpOptions(exporterOptions(signal), kind.id, kind.path, { 'Content-Type': contentType });
  const headers = { ...signal.headers, 'Content-Type': contentType };
  const serializer = readingAnswers(json ? encodings.json : encodings.protobuf, json, redact, answers);
  return createOtlpHttpExportDelegate({ ...options, headers: () => Promise.resolve(headers) }, serializer, component, metricsHelper, undefined);
}

/**
 * The serializer with our reading of the collector's 2xx answers in place of the SDK's, which logs a
 * partial success as it came (a collector that quotes the request's credential back included) and
 * counts nothing, and logs an answer that is not OTLP (an HTML page from a proxy) byte by byte,
 * up to 4 MiB per request. Here the items refused go to `answers` to be counted, a warning is
 * logged with the credentials redacted, and an answer that is not OTLP is said once.
 */
function readingAnswers<Internal, Response>(
  serializer: ISerializer<Internal, Response>,
  json: boolean,
  redact: (text: string) => string,
  answers: AnswerSlot | undefined,
): ISerializer<Internal, Response> {
  let saidUnreadable = false;
  return {
    serializeRequest: (request) => serializer.serializeRequest(request),
    deserializeResponse(data: Uint8Array): Response {
      let response: unknown;
      try {
        response = !json ? serializer.deserializeResponse(data) : data.length === 0 ? {} : JSON.parse(UTF8.decode(data));
      } catch {
        if (!saidUnreadable) {
          saidUnreadable = true;
          diag.warn(`the collector took an export, but its answer (${data.length} bytes) is not an OTLP ${json ? 'JSON' : 'protobuf'} response: is the endpoint an OTLP/HTTP receiver?`);
        }
        return {} as Response;
      }
      const partial = isObject(response) && isObject(response.partialSuccess) ? response.partialSuccess : undefined;
      if (partial !== undefined) {
        const count = Number(partial.rejectedSpans ?? partial.rejectedLogRecords ?? partial.rejectedDataPoints ?? 0);
        const message = typeof partial.errorMessage === 'string' ? cutShort(redact(partial.errorMessage)) : '';
        if (Number.isFinite(count) && count > 0 && answers !== undefined) answers.last = { rejected: count, message };
        else if (count > 0 || message !== '') diag.warn(`the collector took an export only in part (${count} refused): ${message}`);
      }
      // Nothing for the SDK to log.
      return {} as Response;
    },
  };
}

/** A failed export as the SDK reports it: an HTTP answer's status in `code`, its body in `data`. */
type ExportFailure = Error & { code?: unknown; data?: unknown };

/** What the SDK says after retrying an answer it retries by itself (429, 502, 503, 504), with no status. */
const SDK_RETRIED_MESSAGE = 'Export failed with retryable status';

/**
 * What a failed export says: `HTTP <status> <reason phrase>: <the collector's message>` for an
 * answer, the transport's error otherwise; for an answer the SDK retried by itself, whose status it
 * does not report, the last such answer `retried` saw (`HTTP 503 Service Unavailable`). The reason
 * phrase and the message are the collector's text, which may quote the request's headers: OTLP
 * header values are redacted.
 */
export function describeFailure(err: ExportFailure | undefined, redact: (text: string) => string, retried?: RetriedAnswers): { status: number | undefined; said: string; message: string } {
  const status = typeof err?.code === 'number' ? err.code : undefined;
  const said = status === undefined ? '' : collectorText(err?.data, redact);
  const answered = status === undefined && err?.message === SDK_RETRIED_MESSAGE ? retried?.last() : undefined;
  const text = err === undefined ? 'export failed' : status !== undefined ? `HTTP ${status} ${err.message}${said === '' ? '' : `: ${said}`}` : (answered ?? err.message);
  return { status, said, message: redact(text) };
}

function wrap<T>(exporter: Exporter<T>, redact: (text: string) => string = (t) => t, answers?: AnswerSlot, retried?: RetriedAnswers): Sender<T> {
  return {
    send: (items) =>
      new Promise<SendResult>((resolve) => {
        retried?.clear();
        exporter.export(items, (result) => {
          const answer = answers?.last;
          if (answers !== undefined) answers.last = undefined;
          if (result.code === ExportResultCode.SUCCESS) {
            resolve(answer === undefined ? { ok: true } : { ok: true, rejected: Math.min(answer.rejected, items.length), error: answer.message });
            return;
          }
          const err: ExportFailure | undefined = result.error;
          if (err?.message.includes(OVERSIZED_ANSWER) === true) {
            resolve({ ok: false, retryable: false, error: "the collector's answer was larger than the exporter reads (4 MiB); not sent again, as the collector may have taken it" });
            return;
          }
          const { status, said, message } = describeFailure(err, redact, retried);
          const failure = { ok: false, retryable: status === undefined || RETRYABLE_STATUS.has(status), error: message } as const;
          resolve(refusedForSize(status, said) ? { ...failure, tooLarge: true } : failure);
        });
      }),
    shutdown: async (timeoutMs) => void (await waitAtMost(exporter.shutdown(), timeoutMs)),
  };
}

/** The SDK's OTLP exporter for one signal, with the collector's answers read by `readingAnswers`. */
function otlpSender<Internal, Response>(
  signal: OtlpSignalConfig,
  kind: OtlpSignalKind,
  encodings: { readonly json: ISerializer<Internal[], Response>; readonly protobuf: ISerializer<Internal[], Response> },
  component: string,
  metricsHelper: IExporterMetricsHelper<Internal[]>,
): Sender<Internal> {
  const answers: AnswerSlot = { last: undefined };
  const redact = secretRedactor(otlpSecrets(signal));
  const delegate = createHttpDelegate(signal, kind, encodings, component, metricsHelper, answers, redact);
  return wrap(new OTLPExporterBase<Internal[]>(delegate), redact, answers, watchRetriedAnswers(signal.url));
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
  return { send: (items) => sender.send(items.map((r) => toReadableSpan(r, resource))), shutdown: (timeoutMs) => sender.shutdown(timeoutMs) };
}

/** The SDK's OTLP trace exporter for the configured protocol (run on the export thread). */
export function createOtlpTraceSender(signal: OtlpSignalConfig): Sender<ReadableSpan> {
  const encodings = { json: JsonTraceSerializer, protobuf: ProtobufTraceSerializer };
  return otlpSender(signal, { id: 'TRACES', path: 'v1/traces' }, encodings, 'otlp_http_span_exporter', TraceExporterMetricsHelper);
}

/** The SDK's OTLP log exporter for the logs' own protocol (OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, else the generic one). */
export function createLogSender(signal: OtlpSignalConfig & { exporter: 'otlp' | 'none' }): Sender<ReadableLogRecord> | undefined {
  if (signal.exporter === 'none') return undefined;
  const encodings = { json: JsonLogsSerializer, protobuf: ProtobufLogsSerializer };
  return otlpSender(signal, { id: 'LOGS', path: 'v1/logs' }, encodings, 'otlp_http_log_exporter', LogsExporterMetricsHelper);
}
