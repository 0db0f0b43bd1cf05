/**
 * Inside an application that has its own OpenTelemetry instrumentation: prefect-otel's own HTTP
 * requests (Prefect's REST API and event stream, the collector) are not traced as the application's
 * spans, and the application's code keeps its own context.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { context, metrics, propagation, ROOT_CONTEXT, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { pino } from 'pino';
import { startPrefectTracing } from '../../src/index.js';
import { assertAppInstrumentationSeesOwnRequestsOnly } from '../helpers/app-instrumentation.js';
import { startOtlpReceiver, type OtlpReceiver } from '../helpers/otlp-receiver.js';
import { liveConnections, startServers, tempDir, until, workload } from '../helpers/watch-e2e.js';

test("library: an application's HTTP instrumentation sees prefect-otel's own requests as suppressed; the application's own requests and span listeners are not", async (t) => {
  await assertAppInstrumentationSeesOwnRequestsOnly(t, { context, ROOT_CONTEXT });
});

test("library: an application whose own OpenTelemetry SDK starts just after prefect-otel (its code, under --import prefect-otel/register): its HTTP instrumentation still sees prefect-otel's requests as suppressed, the event stream and REST look-ups included", async (t) => {
  await assertAppInstrumentationSeesOwnRequestsOnly(t, { context, ROOT_CONTEXT }, 'after');
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
