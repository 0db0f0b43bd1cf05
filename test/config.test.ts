import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolveConfig } from '../src/config.js';

const transport = (env: Record<string, string>) => {
  const c = resolveConfig({}, env);
  return Object.fromEntries((['traces', 'logs', 'metrics'] as const).map((s) => [s, [c[s].protocol, c[s].compression, c[s].timeoutMs]]));
};

test('OTLP protocol, compression and timeout: the generic variable sets every signal, the traces one only traces', () => {
  assert.deepEqual(transport({}), { traces: ['http/protobuf', 'none', 10_000], logs: ['http/protobuf', 'none', 10_000], metrics: ['http/protobuf', 'none', 10_000] });
  assert.deepEqual(transport({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip', OTEL_EXPORTER_OTLP_TIMEOUT: '3000' }), {
    traces: ['http/json', 'gzip', 3_000], logs: ['http/json', 'gzip', 3_000], metrics: ['http/json', 'gzip', 3_000],
  });
  assert.deepEqual(
    transport({ OTEL_EXPORTER_OTLP_TIMEOUT: '3000', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: 'gzip', OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '7000' }),
    { traces: ['http/json', 'gzip', 7_000], logs: ['http/protobuf', 'none', 3_000], metrics: ['http/protobuf', 'none', 3_000] },
  );
});

test('OTLP headers an HTTP request cannot carry are a configuration warning (OTel variables fall back to their default), their value never shown', () => {
  const c = resolveConfig({}, { OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%0Azzsecret', OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'bad name=1' });
  assert.deepEqual(c.traces.headers, {});
  assert.deepEqual(c.warnings, [
    'OTEL_EXPORTER_OTLP_HEADERS: the value of header authorization has characters an HTTP header cannot carry (a line break, say); using the default ({})',
    'OTEL_EXPORTER_OTLP_TRACES_HEADERS: "bad name" is not a valid HTTP header name; using the default ({})',
  ]);
  assert.deepEqual(resolveConfig({}, { OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20abc,x-tenant=t1' }).traces.headers, { authorization: 'Bearer abc', 'x-tenant': 't1' });
});
