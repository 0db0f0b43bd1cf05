/**
 * Inside an application whose OpenTelemetry API is an older 1.x than prefect-otel's (its SDK pins
 * 1.8, say): npm gives prefect-otel its own copy, which refuses the context manager the
 * application's copy registered. prefect-otel's requests must still be suppressed for the
 * application's instrumentation, and its span listeners still run in the application's context.
 * Alone in its file: the first API copy to register anything in a process fixes the version of the
 * process-wide registry, and the other test file registers through prefect-otel's own copy.
 */
import { test } from 'node:test';
import { context, ROOT_CONTEXT } from 'otel-api-1.8';
import { assertAppInstrumentationSeesOwnRequestsOnly } from '../helpers/app-instrumentation.js';

test("library: an application with an older OpenTelemetry API (1.8) than prefect-otel's: its HTTP instrumentation sees prefect-otel's own requests as suppressed; the application's own requests and span listeners are not", async (t) => {
  await assertAppInstrumentationSeesOwnRequestsOnly(t, { context, ROOT_CONTEXT });
});
