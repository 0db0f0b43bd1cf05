/**
 * The collector stand-in: an OTLP/HTTP endpoint on 127.0.0.1 that accepts every export request.
 * It counts spans without decoding them, or (for latency) also keeps each request's body with the
 * time it arrived, decoded only after the run.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { countNested, decodeRequest } from '../test/helpers/otlp-proto.js';
import { normaliseSpans, type ReceivedSpan } from '../test/helpers/otlp-receiver.js';

/** ExportTraceServiceRequest.resource_spans(1).scope_spans(2).spans(2) */
const SPAN_PATH = [1, 2, 2] as const;

export interface BenchReceiver {
  readonly url: string;
  readonly counts: { spans: number; requests: number; bytes: number };
  /** Each span with the wall-clock ms its request arrived (only when keeping bodies), decoded one request at a time. */
  eachTimedSpan(fn: (receivedMs: number, span: ReceivedSpan) => void): void;
  close(): Promise<void>;
}

export async function startBenchReceiver(options: { keep: boolean }): Promise<BenchReceiver> {
  const counts = { spans: 0, requests: 0, bytes: 0 };
  const kept: { receivedMs: number; body: Buffer }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const receivedMs = Date.now();
      const body = Buffer.concat(chunks);
      counts.requests += 1;
      counts.bytes += body.length;
      if (req.url === '/v1/traces') {
        counts.spans += countNested(body, SPAN_PATH);
        if (options.keep) kept.push({ receivedMs, body });
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    eachTimedSpan: (fn) => {
      for (const { receivedMs, body } of kept) for (const span of normaliseSpans(decodeRequest('traces', body), true)) fn(receivedMs, span);
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
