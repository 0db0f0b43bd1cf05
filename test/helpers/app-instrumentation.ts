/**
 * An application with its own OpenTelemetry HTTP instrumentation, in-process, around a running
 * prefect-otel: which requests it sees, and whether tracing is suppressed for each, read through the
 * application's own copy of `@opentelemetry/api` (which may be older than prefect-otel's).
 */
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { ClientRequest } from 'node:http';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { Context, ContextManager } from '@opentelemetry/api';
import { isTracingSuppressed } from '@opentelemetry/core';
import { pino } from 'pino';
import { startPrefectTracing } from '../../src/index.js';
import { liveConnections, startServers, tempDir, until, workload } from './watch-e2e.js';

/** What the application's copy of the API offers for this (any 1.x has it). */
export interface AppContextApi {
  readonly context: {
    setGlobalContextManager(manager: ContextManager): boolean;
    active(): Context;
    disable(): void;
  };
  readonly ROOT_CONTEXT: Context;
}

/** The context manager an instrumented application registers (what `@opentelemetry/context-async-hooks` does, in short). */
class AlsContextManager implements ContextManager {
  private readonly als = new AsyncLocalStorage<Context>();
  constructor(private readonly root: Context) {}
  active(): Context {
    return this.als.getStore() ?? this.root;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.als.run(ctx, () => fn.call(thisArg, ...args));
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.als.disable();
    return this;
  }
}

/**
 * The application registers its context manager through `api`, and its HTTP client instrumentation
 * records each request's path and whether tracing was suppressed for it. prefect-otel streams one
 * flow with its task runs (REST lookups, the event stream, OTLP traces, log records and metrics),
 * then the application makes a request of its own: only that one, and prefect-otel's span
 * listeners, are the application's to trace. `sdkStarts`: whether the application's SDK (its
 * context manager and instrumentation) starts before prefect-otel or just after it, as under
 * `--import prefect-otel/register` with an SDK the application's own code starts.
 */
export async function assertAppInstrumentationSeesOwnRequestsOnly(t: TestContext, api: AppContextApi, sdkStarts: 'before' | 'after' = 'before'): Promise<void> {
  // What an HTTP client instrumentation does on each request: trace it unless tracing is suppressed.
  const requests: { path: string; suppressed: boolean }[] = [];
  const onRequest = (message: unknown): void => {
    const { request } = message as { request: ClientRequest };
    requests.push({ path: request.path.split('?')[0]!, suppressed: isTracingSuppressed(api.context.active()) });
  };
  const startAppSdk = (): void => {
    assert.ok(api.context.setGlobalContextManager(new AlsContextManager(api.ROOT_CONTEXT)));
    t.after(() => api.context.disable());
    subscribe('http.client.request.start', onRequest);
    t.after(() => unsubscribe('http.client.request.start', onRequest));
  };
  if (sdkStarts === 'before') startAppSdk();

  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const listenerSuppressed: boolean[] = [];
  const tracing = startPrefectTracing({
    env: {},
    logger: pino({ level: 'silent' }),
    apiUrl: prefect.url,
    otlpEndpoint: receiver.url,
    metricsExporter: 'otlp',
    metricExportIntervalMs: 400,
    logsExporter: 'otlp',
    stateFile: join(tempDir(), 'state.json'),
    settleMs: 100,
    statsIntervalMs: 0,
  });
  if (sdkStarts === 'after') startAppSdk();
  t.after(() => tracing.shutdown());
  tracing.on('span', () => void listenerSuppressed.push(isTracingSuppressed(api.context.active())));
  await tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  await receiver.waitForMetricExports(1);
  await receiver.waitForLogs(1);
  await tracing.shutdown();
  // The application's own request, after prefect-otel started and stopped, is traced as before.
  await fetchWithHttp(`${prefect.url}/app-own-request`);

  const byPath = new Map<string, Set<boolean>>();
  for (const r of requests) byPath.set(r.path, (byPath.get(r.path) ?? new Set()).add(r.suppressed));
  assert.deepEqual(
    { paths: [...byPath].map(([path, s]) => [path, [...s]]).sort(), listener: [...new Set(listenerSuppressed)] },
    {
      paths: [
        ['/api/app-own-request', [false]],
        ['/api/events/out', [true]],
        ...[...byPath.keys()].filter((p) => p.startsWith('/api/') && p !== '/api/events/out' && p !== '/api/app-own-request').map((p) => [p, [true]]),
        ['/v1/metrics', [true]],
        ['/v1/logs', [true]],
      ].sort(),
      listener: [false],
    },
  );
  assert.ok([...byPath.keys()].some((p) => p.startsWith('/api/task_runs/') || p.startsWith('/api/flow_runs/')), JSON.stringify([...byPath.keys()]));
}

/** A plain `http.get` by the application (fetch goes through undici, which this channel does not see). */
async function fetchWithHttp(url: string): Promise<void> {
  const { get } = await import('node:http');
  await new Promise<void>((resolve) => get(url, (res) => res.resume().on('end', resolve)).on('error', () => resolve()));
}
