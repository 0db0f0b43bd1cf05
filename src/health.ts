import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TracingStats } from './stats.js';

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * `/healthz`: 200 when connected to Prefect and exporting (the last export did not fail), 503 with
 * the reason otherwise. `/metrics`: the counters in Prometheus text format.
 */
export async function startHealthServer(port: number, stats: () => TracingStats, host = '0.0.0.0'): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const s = stats();
    if (path === '/healthz') {
      const problems: string[] = [];
      if (!s.connected) problems.push('not connected to the Prefect event stream');
      if (!s.spans.exporting) problems.push('exports to the collector are failing');
      res.writeHead(problems.length === 0 ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: problems.length === 0 ? 'ok' : 'unavailable', problems, connected: s.connected, exporting: s.spans.exporting }));
      return;
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(renderMetrics(s));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

type Metric = [name: string, type: 'counter' | 'gauge', help: string, samples: [labels: string, value: number][]];

/** Prometheus text exposition of the stats. */
export function renderMetrics(s: TracingStats): string {
  const one = (v: number): [string, number][] => [['', v]];
  const metrics: Metric[] = [
    ['prefect_otel_up_seconds', 'gauge', 'Seconds since start.', one(s.uptimeS)],
    ['prefect_otel_connected', 'gauge', '1 while subscribed to the Prefect event stream.', one(s.connected ? 1 : 0)],
    ['prefect_otel_events_received_total', 'counter', 'Frames and lines received.', one(s.events.received)],
    ['prefect_otel_events_accepted_total', 'counter', 'Events applied to a run.', one(s.events.accepted)],
    ['prefect_otel_events_duplicate_total', 'counter', 'Events dropped as duplicates (same event id).', one(s.events.duplicates)],
    ['prefect_otel_events_unrelated_total', 'counter', 'Valid events that name no flow or task run.', one(s.events.unrelated)],
    ['prefect_otel_events_skipped_total', 'counter', 'Malformed input skipped, by reason.', Object.entries(s.events.skipped).map(([r, n]) => [`reason="${r}"`, n])],
    ['prefect_otel_runs_open', 'gauge', 'Runs held in memory.', one(s.runs.open)],
    ['prefect_otel_runs_opened_total', 'counter', 'Run attempts seen.', one(s.runs.opened)],
    ['prefect_otel_runs_incomplete_total', 'counter', 'Runs ended without a terminal state.', one(s.runs.incomplete)],
    ['prefect_otel_runs_evicted_total', 'counter', 'Runs ended early by the open-run bound.', one(s.runs.evicted)],
    ['prefect_otel_reruns_total', 'counter', 'Runs that left a terminal state again.', one(s.runs.reruns)],
    ['prefect_otel_native_span_lookups_total', 'counter', "Flow-run lookups of Prefect's own span, by outcome.", [
      ['outcome="linked"', s.runs.nativeSpans.linked], ['outcome="no_label"', s.runs.nativeSpans.noLabel], ['outcome="failed"', s.runs.nativeSpans.failed], ['outcome="late"', s.runs.nativeSpans.late],
    ]],
    ['prefect_otel_late_events_total', 'counter', 'Events that arrived after their run was exported.', one(s.runs.lateEvents)],
    ['prefect_otel_spans_finished_total', 'counter', 'Spans built.', one(s.spans.finished)],
    ['prefect_otel_spans_exported_total', 'counter', 'Spans accepted by the collector.', one(s.spans.exported)],
    ['prefect_otel_spans_buffered', 'gauge', 'Spans waiting for the collector.', one(s.spans.buffered)],
    ['prefect_otel_spans_dropped_total', 'counter', 'Spans dropped because the buffer was full.', one(s.spans.dropped)],
    ['prefect_otel_spans_rejected_total', 'counter', 'Spans the collector rejected for good.', one(s.spans.rejected)],
    ['prefect_otel_export_failures_total', 'counter', 'Failed export attempts (retried).', one(s.spans.exportFailures)],
    ['prefect_otel_reconnects_total', 'counter', 'Reconnects to the Prefect event stream.', one(s.source.reconnects)],
  ];
  const lines: string[] = [];
  for (const [name, type, help, samples] of metrics) {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels === '' ? '' : `{${labels}}`} ${value}`);
  }
  return `${lines.join('\n')}\n`;
}
