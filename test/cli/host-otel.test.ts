/**
 * Inside an application that has its own OpenTelemetry instrumentation: prefect-otel's own HTTP
 * requests (Prefect's REST API and event stream, the collector) are not traced as the application's
 * spans, and the application's code keeps its own context.
 */
import assert from 'node:assert/strict';
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { ClientRequest } from 'node:http';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { context, metrics, propagation, ROOT_CONTEXT, trace, type Context, type ContextManager } from '@opentelemetry/api';
import { isTracingSuppressed, W3CTraceContextPropagator } from '@opentelemetry/core';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { pino } from 'pino';
import { startPrefectTracing } from '../../src/index.js';
import { startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import { liveConnections, startServers, tempDir, until, workload } from '../helpers/watch-e2e.js';

/** The context manager an instrumented application registers (what `@opentelemetry/context-async-hooks` does, in short). */
class AlsContextManager implements ContextManager {
  private readonly als = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.als.getStore() ?? ROOT_CONTEXT;
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

test("library: an application's HTTP instrumentation sees prefect-otel's own requests as suppressed; the application's own requests and span listeners are not", async (t) => {
  assert.ok(context.setGlobalContextManager(new AlsContextManager()));
  t.after(() => context.disable());
  // What an HTTP client instrumentation does on each request: trace it unless tracing is suppressed.
  const requests: { path: string; suppressed: boolean }[] = [];
  const onRequest = (message: unknown): void => {
    const { request } = message as { request: ClientRequest };
    requests.push({ path: request.path.split('?')[0]!, suppressed: isTracingSuppressed(context.active()) });
  };
  subscribe('http.client.request.start', onRequest);
  t.after(() => unsubscribe('http.client.request.start', onRequest));

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
    stateFile: join(tempDir(), 'state.json'),
    settleMs: 100,
    statsIntervalMs: 0,
  });
  t.after(() => tracing.shutdown());
  tracing.on('span', () => void listenerSuppressed.push(isTracingSuppressed(context.active())));
  await tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  await receiver.waitForMetricExports(1);
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
      ].sort(),
      listener: [false],
    },
  );
  assert.ok([...byPath.keys()].some((p) => p.startsWith('/api/task_runs/') || p.startsWith('/api/flow_runs/')), JSON.stringify([...byPath.keys()]));
});

test("library: two instances on different state files beside the application's own OpenTelemetry SDK: each exports every span to its own collector as its own service; the application's global tracer provider, propagator and meter provider stay its own, and its spans go to its own exporter only", async (t) => {
  // The application's SDK, registered globally as NodeSDK does.
  const appExporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: appExporter })] });
  assert.ok(trace.setGlobalTracerProvider(provider));
  assert.ok(propagation.setGlobalPropagator(new W3CTraceContextPropagator()));
  t.after(() => {
    trace.disable();
    propagation.disable();
  });
  const globals = () => ({ tracerProvider: trace.getTracerProvider(), propagatorFields: propagation.fields(), meterProvider: metrics.getMeterProvider() });
  const before = globals();

  const w = workload(2);
  const { prefect, receiver: first } = await startServers(t, w.taskRuns);
  const second = await startOtlpReceiver();
  t.after(() => second.close());
  const dir = tempDir();
  const start = (receiver: OtlpReceiver, name: string) =>
    startPrefectTracing({ env: {}, logger: pino({ level: 'silent' }), apiUrl: prefect.url, otlpEndpoint: receiver.url, serviceName: name, stateFile: join(dir, `${name}.json`), httpPort: 0, metricsExporter: 'otlp', metricExportIntervalMs: 100, settleMs: 100, statsIntervalMs: 0 });
  const a = start(first, 'prefect-a');
  const b = start(second, 'prefect-b');
  t.after(async () => {
    await a.shutdown();
    await b.shutdown();
  });
  await Promise.all([a.ready, b.ready]);
  await until('two subscriptions', () => liveConnections(prefect) === 2);
  trace.getTracer('app').startActiveSpan('app work', (span) => span.end());
  prefect.publish(w.events);
  await Promise.all([first.waitForSpans(w.runs.size), second.waitForSpans(w.runs.size), first.waitForMetricExports(1), second.waitForMetricExports(1)]);
  trace.getTracer('app').startSpan('more app work').end();
  await Promise.all([a.shutdown(), b.shutdown()]);
  await Promise.all([a.done, b.done]);

  const seen = (receiver: OtlpReceiver) => ({
    services: [...new Set(receiver.spans().map((s) => s.resource['service.name']))],
    runs: receiver.spans().map((s) => s.attributes['prefect.run.id']).sort(),
  });
  const runs = [...w.runs.keys()].sort();
  const after = globals();
  assert.deepEqual(
    {
      first: seen(first),
      second: seen(second),
      ports: a.httpPort !== b.httpPort,
      states: [existsSync(join(dir, 'prefect-a.json')), existsSync(join(dir, 'prefect-b.json'))],
      app: appExporter.getFinishedSpans().map((s) => s.name),
      globals: { tracerProvider: after.tracerProvider === before.tracerProvider, propagatorFields: after.propagatorFields, meterProvider: after.meterProvider === before.meterProvider },
    },
    {
      first: { services: ['prefect-a'], runs },
      second: { services: ['prefect-b'], runs },
      ports: true,
      states: [true, true],
      app: ['app work', 'more app work'],
      globals: { tracerProvider: true, propagatorFields: ['traceparent', 'tracestate'], meterProvider: true },
    },
  );
});

/** A plain `http.get` by the application (fetch goes through undici, which this channel does not see). */
async function fetchWithHttp(url: string): Promise<void> {
  const { get } = await import('node:http');
  await new Promise<void>((resolve) => get(url, (res) => res.resume().on('end', resolve)).on('error', () => resolve()));
}
