import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import type { Logger } from 'pino';
import { redactUserinfo } from './redact.js';

/**
 * Route the OpenTelemetry SDK's own diagnostics (exporter failures, retries) into our log stream.
 * The SDK quotes an endpoint it cannot parse as it was given, user info included: that is redacted.
 */
export function routeDiagToLogger(logger: Logger, level: DiagLogLevel = DiagLogLevel.WARN): void {
  const l = logger.child({ component: 'otel-sdk' });
  const adapter: DiagLogger = {
    error: (message, ...args) => l.error({ args: clean(args) }, redactUserinfo(message)),
    warn: (message, ...args) => l.warn({ args: clean(args) }, redactUserinfo(message)),
    info: (message, ...args) => l.info({ args: clean(args) }, redactUserinfo(message)),
    debug: (message, ...args) => l.debug({ args: clean(args) }, redactUserinfo(message)),
    verbose: (message, ...args) => l.trace({ args: clean(args) }, redactUserinfo(message)),
  };
  diag.setLogger(adapter, { logLevel: level, suppressOverrideMessage: true });
}

function clean(args: unknown[]): unknown[] | undefined {
  if (args.length === 0) return undefined;
  return args.map((a) => (a instanceof Error ? { message: redactUserinfo(a.message), name: a.name } : typeof a === 'string' ? redactUserinfo(a) : a));
}
