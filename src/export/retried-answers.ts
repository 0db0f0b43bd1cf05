/**
 * The collector's last answer that the OpenTelemetry exporter retries by itself (429, 502, 503,
 * 504): after its retries the SDK reports only "Export failed with retryable status", without the
 * status, so a failure line or a summary could not say what the collector answered. prefect-otel's
 * own export requests (its User-Agent) are watched through Node's `http.client.response.finish`
 * diagnostics channel, per OTLP URL, in the thread that sends them.
 */
import { subscribe } from 'node:diagnostics_channel';
import type { ClientRequest, IncomingMessage } from 'node:http';

/** The statuses the SDK retries by itself (`isExportHTTPErrorRetryable`). */
const SDK_RETRIED = new Set([429, 502, 503, 504]);
const USER_AGENT_PREFIX = 'prefect-otel/';

/** The last retried answer per watched URL (`protocol//host[:port]/path?query`). */
const lastAnswer = new Map<string, string | undefined>();
let subscribed = false;

function onResponse(message: unknown): void {
  const { request, response } = message as { request: ClientRequest; response: IncomingMessage };
  const status = response.statusCode;
  if (status === undefined || !SDK_RETRIED.has(status)) return;
  if (String(request.getHeader('user-agent') ?? '').startsWith(USER_AGENT_PREFIX) !== true) return;
  const key = `${request.protocol}//${String(request.getHeader('host'))}${request.path}`;
  if (lastAnswer.has(key)) lastAnswer.set(key, `HTTP ${status}${response.statusMessage === undefined || response.statusMessage === '' ? '' : ` ${response.statusMessage}`}`);
}

export interface RetriedAnswers {
  /** Forget the answer before: called as an export starts. */
  clear(): void;
  /** `HTTP 503 Service Unavailable`, the last retried answer since `clear`, or undefined. */
  last(): string | undefined;
}

/** Watch the answers to the exports sent to `url`. */
export function watchRetriedAnswers(url: string): RetriedAnswers {
  if (!subscribed) {
    subscribed = true;
    subscribe('http.client.response.finish', onResponse);
  }
  const u = new URL(url);
  const key = `${u.protocol}//${u.host}${u.pathname}${u.search}`;
  lastAnswer.set(key, undefined);
  return {
    clear: () => void lastAnswer.set(key, undefined),
    last: () => lastAnswer.get(key),
  };
}
