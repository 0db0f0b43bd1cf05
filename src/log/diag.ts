import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import type { Logger } from 'pino';

/** Route the OpenTelemetry SDK's own diagnostics (exporter failures, retries) into our log stream. */
export function routeDiagToLogger(logger: Logger, level: DiagLogLevel = DiagLogLevel.WARN): void {
  const l = logger.child({ component: 'otel-sdk' });
  const adapter: DiagLogger = {
    error: (message, ...args) => l.error({ args: clean(args) }, message),
    warn: (message, ...args) => l.warn({ args: clean(args) }, message),
    info: (message, ...args) => l.info({ args: clean(args) }, message),
    debug: (message, ...args) => l.debug({ args: clean(args) }, message),
    verbose: (message, ...args) => l.trace({ args: clean(args) }, message),
  };
  diag.setLogger(adapter, { logLevel: level, suppressOverrideMessage: true });
}

function clean(args: unknown[]): unknown[] | undefined {
  if (args.length === 0) return undefined;
  return args.map((a) => (a instanceof Error ? { message: a.message, name: a.name } : a));
}
