import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';

const UNTRACED = suppressTracing(ROOT_CONTEXT);

/**
 * Run prefect-otel's own work with tracing suppressed, in no context of the application's: inside an
 * application with its own OpenTelemetry instrumentation (an HTTP client instrumentation, say, which
 * `--import` loads in every thread, the export thread's too), the requests to Prefect's API and event
 * stream and to the collector would otherwise be traced as the application's spans. Everything
 * started in here (timers, sockets, the metrics reader) keeps this context through the
 * application's context manager; without one it is a plain call.
 */
export function untraced<T>(fn: () => T): T {
  return context.with(UNTRACED, fn);
}
