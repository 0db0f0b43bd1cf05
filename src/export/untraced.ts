import { ROOT_CONTEXT, type Context, type ContextManager } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';

const UNTRACED = suppressTracing(ROOT_CONTEXT);

/**
 * Where every 1.x copy of `@opentelemetry/api` in the process keeps what was registered globally,
 * the application's context manager among it. Our own copy's `context` refuses a manager that an
 * older copy registered (an application whose SDK pins API 1.8 while ours is 1.9 gets two copies
 * from npm): it would run our work in no context at all, and the application's instrumentation,
 * which reads its own manager, would trace our requests. A context manager's `with` is the same in
 * every 1.x, so it is called directly, whichever copy registered it.
 */
const API_GLOBALS = Symbol.for('opentelemetry.js.api.1');

function registeredContextManager(): ContextManager | undefined {
  const globals = (globalThis as Record<symbol, { context?: ContextManager } | undefined>)[API_GLOBALS];
  return globals?.context;
}

function runIn<T>(ctx: Context, fn: () => T): T {
  const manager = registeredContextManager();
  return manager === undefined ? fn() : manager.with(ctx, fn);
}

/**
 * Run prefect-otel's own work with tracing suppressed, in no context of the application's: inside an
 * application with its own OpenTelemetry instrumentation (an HTTP client instrumentation, say, which
 * `--import` loads in every thread, the export thread's too), the requests to Prefect's API and event
 * stream and to the collector would otherwise be traced as the application's spans. Everything
 * started in here (timers, sockets, the metrics reader) keeps this context through the
 * application's context manager; without one it is a plain call.
 */
export function untraced<T>(fn: () => T): T {
  return runIn(UNTRACED, fn);
}

/** Run the application's listeners in its root context: not in ours, where tracing is suppressed. */
export function inApplicationRoot<T>(fn: () => T): T {
  return runIn(ROOT_CONTEXT, fn);
}
