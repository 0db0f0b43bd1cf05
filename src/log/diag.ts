import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { failureFields, type ErrFields } from './err.js';
import { redactUserinfo } from './redact.js';

/**
 * The OpenTelemetry SDK's own diagnostics (exporter failures, retries) as lines of our log stream.
 * The SDK quotes an endpoint it cannot parse as it was given, user info included: that is redacted.
 */
export function diagToLogger(logger: Logger): DiagLogger {
  const l = logger.child({ component: 'otel-sdk' });
  return {
    error: (message, ...args) => l.error(clean(args), redactUserinfo(message)),
    warn: (message, ...args) => {
      if (readsConfiguration(message)) l.debug(clean(args), redactUserinfo(message));
      else l.warn(clean(args), redactUserinfo(message));
    },
    info: (message, ...args) => l.info(clean(args), redactUserinfo(message)),
    debug: (message, ...args) => l.debug(clean(args), redactUserinfo(message)),
    verbose: (message, ...args) => l.trace(clean(args), redactUserinfo(message)),
  };
}

/**
 * The SDK's notices about the OTEL_EXPORTER_OTLP_* variables it reads itself (`Configuration: Could
 * not parse environment-provided export URL: …`, `Unknown value … for OTEL_EXPORTER_OTLP_TIMEOUT`). prefect-otel has read and checked the same
 * variables, warned of a bad one with the value it uses instead, and gives the exporters their URL,
 * timeout and compression in code: a second, different warning would only mislead. At debug.
 */
function readsConfiguration(message: string): boolean {
  return message.startsWith('Configuration: ') || OTLP_VARIABLE_VALUE_RE.test(message);
}
/** `Unknown value 'abc' for OTEL_EXPORTER_OTLP_TIMEOUT, expected a number, using defaults` */
const OTLP_VARIABLE_VALUE_RE = /^Unknown value .* for OTEL_EXPORTER_OTLP_\w+,/;

/**
 * Make our log stream the process-wide `diag` logger. Only the CLI does this, as it owns its
 * process; inside a host application `diag` is the host's, and prefect-otel leaves it alone.
 */
export function routeDiagToLogger(logger: Logger, level: DiagLogLevel = DiagLogLevel.WARN): void {
  diag.setLogger(diagToLogger(logger), { logLevel: level, suppressOverrideMessage: true });
}

/**
 * The SDK's extra arguments as a line's fields: the first Error under `err`, as every line has a
 * failure; the rest under `args` as text (an object as its JSON), so that `args` is an array of
 * strings on every line (a log store cannot map an array whose items are of different types).
 */
function clean(args: unknown[]): { err?: ErrFields; args?: string[] } {
  let err: ErrFields | undefined;
  const rest: string[] = [];
  for (const a of args) {
    if (a instanceof Error && err === undefined) err = failureFields(a, redactUserinfo);
    else rest.push(redactUserinfo(typeof a === 'string' ? a : a instanceof Error ? `${a.name}: ${a.message}` : argText(a)));
  }
  return { ...(err === undefined ? {} : { err }), ...(rest.length === 0 ? {} : { args: rest }) };
}

function argText(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
