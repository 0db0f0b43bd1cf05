/**
 * The trace exporter's thread: it turns batches of span records, handed over as JSON text, into
 * the SDK's spans and sends them with the SDK's OTLP exporter. Encoding a batch as protobuf would
 * cost the pipeline's thread about twice what `JSON.stringify` of the same records does, and the
 * HTTP request is made here too, so that work runs beside the pipeline instead of in it.
 *
 * Messages in: `{ type: 'send', id, spans }` (a JSON array of SpanRecord), `{ type: 'shutdown' }`.
 * Messages out: `{ type: 'result', id, result }` (a SendResult), `{ type: 'diag', … }` (the SDK's
 * own diagnostics, logged by the main thread), `{ type: 'ready' }` once the exporter is made,
 * `{ type: 'closed' }` after a shutdown.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { diag, type DiagLogger, DiagLogLevel } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { errorText } from '../errors.js';
import { otlpSecrets, secretRedactor } from '../log/redact.js';
import type { ExportThreadInit, FromExportThread, ToExportThread } from './export-thread.js';
import { createOtlpTraceSender } from './exporters.js';
import { untraced } from './untraced.js';
import { readableSpansFromJson } from './spans.js';

const port = parentPort;
if (port === null) throw new Error('span-export-worker runs as a worker thread');
const init = workerData as ExportThreadInit;
const post = (message: FromExportThread): void => port.postMessage(message);

/** The SDK's messages quote the collector's answers, which may quote our request's headers. */
const redact = secretRedactor(otlpSecrets(init.signal));
const forward = (level: 'error' | 'warn' | 'info' | 'debug' | 'verbose') => (text: string, ...args: unknown[]): void => {
  const message = redact(text);
  const plain = args.map((a) => (a instanceof Error ? { message: redact(a.message), name: a.name } : typeof a === 'string' ? redact(a) : a));
  try {
    post({ type: 'diag', level, message, args: plain });
  } catch {
    post({ type: 'diag', level, message, args: [] }); // an argument that cannot cross threads
  }
};
const logger: DiagLogger = { error: forward('error'), warn: forward('warn'), info: forward('info'), debug: forward('debug'), verbose: forward('verbose') };
diag.setLogger(logger, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });

const resource = resourceFromAttributes(init.resourceAttributes);
const sender = createOtlpTraceSender(init.signal);
post({ type: 'ready' });

port.on('message', (message: ToExportThread) => {
  if (message.type === 'shutdown') {
    void sender.shutdown().finally(() => post({ type: 'closed' }));
    return;
  }
  let spans;
  try {
    spans = readableSpansFromJson(message.spans, resource);
  } catch (err) {
    // Not a collector's answer: the same batch would fail the same way again.
    post({ type: 'result', id: message.id, result: { ok: false, retryable: false, error: `cannot encode spans: ${(err as Error).message}` } });
    return;
  }
  // An application's own instrumentation loaded with `--import` runs in this thread too: the
  // request to the collector is prefect-otel's, not one of the application's spans.
  void untraced(() => sender.send(spans))
    .catch((err: unknown) => ({ ok: false as const, retryable: false, error: `export failed: ${errorText(err)}` }))
    .then((result) => post({ type: 'result', id: message.id, result }));
});
