import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import { resolveConfig } from '../../src/config.js';
import { answerWithinMs, createThreadedTraceSender } from '../../src/export/export-thread.js';
import { createOtlpTraceSender, createTraceSender, onThisThread } from '../../src/export/exporters.js';
import { createResource, toReadableSpan } from '../../src/export/spans.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';

const silent: DiagLogger = { error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined, verbose: () => undefined };

/** Spans with every kind of value the model writes: ints, doubles, booleans, string arrays, non-ASCII text, links, an error status. */
function records(): SpanRecord[] {
  const run = { id: 'r', type: 'flow', name: 'etl', attempt: 0, finalState: undefined, incomplete: false } as const;
  return [
    {
      traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', parentSpanId: undefined, name: 'etl / ancient-fox', kind: 'server',
      startUs: 1_700_000_000_123_456, endUs: 1_700_000_061_654_321, status: { code: 'error', message: 'Flow run encountered an exception: ValueError("é ✓ 𝄞")' },
      attributes: { 'prefect.run.id': 'f0e1d2c3', 'prefect.tags': ['nightly', 'ünïcode'], 'prefect.run.wait_ms': 1_234, 'prefect.run.incomplete': false, ratio: 0.25, big: 2 ** 53 - 1 },
      events: [
        { name: 'Scheduled', timeUs: 1_700_000_000_000_001, attributes: { 'prefect.state.type': 'SCHEDULED', 'prefect.run.count': 0 } },
        { name: 'Failed', timeUs: 1_700_000_061_654_321, attributes: { 'prefect.state.message': '', 'prefect.event.received_lag_ms': -3 } },
      ],
      links: [{ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', attributes: { 'prefect.link.kind': 'parent_task' } }],
      run,
    },
    {
      traceId: '0af7651916cd43dd8448eb211c80319c', spanId: '53995c3f42cd8ad8', parentSpanId: 'b7ad6b7169203331', name: 'extract-0', kind: 'internal',
      startUs: 1_700_000_001_000_000, endUs: 1_700_000_002_000_000, status: { code: 'unset' }, attributes: {}, events: [], links: [], run,
    },
  ];
}

/** An HTTP server that answers 200 to everything and keeps each request's body as sent. */
async function capture() {
  const bodies: Buffer[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks));
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, bodies, close: () => new Promise<void>((r) => server.close(() => r())) };
}

for (const protocol of ['http/protobuf', 'http/json'] as const) {
  test(`the export thread sends the very request the SDK's ${protocol} exporter makes of the same spans on the pipeline's thread`, async () => {
    const server = await capture();
    try {
      const config = resolveConfig({ otlpEndpoint: server.url, otlpProtocol: protocol, serviceName: 'etl-prod' }, { OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod' });
      const resource = createResource(config);
      const threaded = createTraceSender(config.traces, resource)!;
      assert.deepEqual(await threaded.send(records()), { ok: true });
      await threaded.shutdown();
      const direct = createOtlpTraceSender(config.traces);
      assert.deepEqual(await direct.send(records().map((r) => toReadableSpan(r, resource))), { ok: true });
      await direct.shutdown();
      assert.equal(server.bodies.length, 2);
      assert.ok(server.bodies[0]!.length > 500, `a request of ${server.bodies[0]!.length} bytes`);
      assert.ok(server.bodies[0]!.equals(server.bodies[1]!), 'the two requests differ');
    } finally {
      await server.close();
    }
  });
}

test('an export thread that dies answers the batches it held as retryable failures, and the next batch starts another', async () => {
  const config = resolveConfig({ otlpEndpoint: 'http://127.0.0.1:9' }, {});
  const sender = createThreadedTraceSender(
    { signal: config.traces, resourceAttributes: {} },
    { workerUrl: new URL('../helpers/dying-export-worker.js', import.meta.url), fallback: () => assert.fail('a thread that started is not replaced by the fallback') },
  );
  const [ok, die] = [records()[1]!, { ...records()[1]!, name: 'die' }];
  assert.deepEqual(await sender.send([ok]), { ok: true });
  const held = await Promise.all([sender.send([die]), sender.send([ok])]);
  const lost = { ok: false, retryable: true, error: 'the export thread stopped (exit code 7)' };
  assert.deepEqual(held, [lost, lost]);
  assert.deepEqual(await sender.send([ok]), { ok: true });
  await sender.shutdown();
  assert.deepEqual(await sender.send([ok]), { ok: false, retryable: false, error: 'the trace exporter is shut down' });
});

test('an export thread that leaves a batch unanswered past the export\'s bound is stopped: the batch is answered as a retryable failure (so /healthz says exports are failing), said once, and the next batch starts another thread', async () => {
  const config = resolveConfig({ otlpEndpoint: 'http://127.0.0.1:9' }, {});
  const errors: string[] = [];
  const sender = createThreadedTraceSender(
    { signal: { ...config.traces, timeoutMs: 100 }, resourceAttributes: {} },
    {
      workerUrl: new URL('../helpers/dying-export-worker.js', import.meta.url),
      fallback: () => assert.fail('a thread that started is not replaced by the fallback'),
      answerWithinMs: 300,
      diag: { ...silent, error: (message: string) => void errors.push(message) },
    },
  );
  const [ok, hang] = [records()[1]!, { ...records()[1]!, name: 'hang' }];
  assert.deepEqual(await sender.send([ok]), { ok: true });
  const given = 'the export thread gave no answer within 300 ms (an export\'s own bound is 100 ms); it is stopped, and the next batch starts another';
  assert.deepEqual(await sender.send([hang]), { ok: false, retryable: true, error: given });
  assert.deepEqual(await sender.send([ok]), { ok: true });
  await sender.shutdown();
  assert.deepEqual(errors, [given]);
});

test('a batch to the export thread may take an export\'s bound and as much again, at least 5 s more, before the thread counts as hung', () => {
  assert.deepEqual([100, 10_000, 30_000].map(answerWithinMs), [5_100, 20_000, 60_000]);
});

test('when the export thread cannot start, the batches it was given and every later one are sent from the pipeline\'s thread, with one warning', async () => {
  const receiver = await startOtlpReceiver();
  const warnings: string[] = [];
  diag.setLogger({ ...silent, warn: (message: string) => void warnings.push(message) }, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
  try {
    const config = resolveConfig({ otlpEndpoint: receiver.url }, {});
    const resource = createResource(config);
    let fallbacks = 0;
    const sender = createThreadedTraceSender(
      { signal: config.traces, resourceAttributes: resource.attributes },
      {
        workerUrl: new URL('./no-such-export-worker.js', import.meta.url),
        fallback: () => {
          fallbacks += 1;
          return onThisThread(createOtlpTraceSender(config.traces), resource);
        },
      },
    );
    const [a, b] = records();
    assert.deepEqual(await Promise.all([sender.send([a!]), sender.send([b!])]), [{ ok: true }, { ok: true }]);
    assert.deepEqual(await sender.send([{ ...b!, spanId: '1111111111111111' }]), { ok: true });
    await sender.shutdown();
    assert.deepEqual(receiver.spans().map((s) => s.spanId).sort(), ['1111111111111111', '53995c3f42cd8ad8', 'b7ad6b7169203331']);
    assert.equal(fallbacks, 1);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^the export thread (failed|stopped).*; spans are encoded and sent on the pipeline's thread instead$/);
  } finally {
    diag.disable();
    await receiver.close();
  }
});
