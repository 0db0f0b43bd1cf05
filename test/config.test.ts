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
