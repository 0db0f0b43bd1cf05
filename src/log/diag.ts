import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { redactUserinfo } from './redact.js';

/**
 * The OpenTelemetry SDK's own diagnostics (exporter failures, retries) as lines of our log stream.
 * The SDK quotes an endpoint it cannot parse as it was given, user info included: that is redacted.
 */
export function diagToLogger(logger: Logger): DiagLogger {
  const l = logger.child({ component: 'otel-sdk' });
  return {
    error: (message, ...args) => l.error({ args: clean(args) }, redactUserinfo(message)),
    warn: (message, ...args) => {
      if (readsConfiguration(message)) l.debug({ args: clean(args) }, redactUserinfo(message));
      else l.warn({ args: clean(args) }, redactUserinfo(message));
    },
    info: (message, ...args) => l.info({ args: clean(args) }, redactUserinfo(message)),
    debug: (message, ...args) => l.debug({ args: clean(args) }, redactUserinfo(message)),
    verbose: (message, ...args) => l.trace({ args: clean(args) }, redactUserinfo(message)),
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

function clean(args: unknown[]): unknown[] | undefined {
  if (args.length === 0) return undefined;
  return args.map((a) => (a instanceof Error ? { message: redactUserinfo(a.message), name: a.name } : typeof a === 'string' ? redactUserinfo(a) : a));
}
