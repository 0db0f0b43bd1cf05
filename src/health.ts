import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { errorText } from './errors.js';
import { LAG_METRIC, METRIC_DEFS } from './metric-defs.js';
import type { TracingStats } from './stats.js';

export interface HealthServer {
  readonly port: number;
  /** The address listened on (`::` or `0.0.0.0`: every address). */
  readonly address: string;
  /** Let the process end while the server listens (inside a host application). */
  unref(): void;
  close(): Promise<void>;
}

/**
 * `/healthz` (readiness): 200 when connected to Prefect and exporting (the last export did not fail;
 * after spans refused for good, the collector took a request again: with nothing else to send, an
 * empty one is sent with backoff to find out), 503 with the reason otherwise (status `standby` while another process holds the state file,
 * `stopping` once `shutdown()` has begun). `/livez` (liveness): 200 whenever the process answers, also
 * while it only waits (a standby, the Prefect server or the collector down): a liveness probe on
 * `/healthz` would restart a standby at every probe period, and a process that is waiting out an
 * outage with its spans buffered. `/metrics`:
 * the counters in Prometheus text format. Without a `host`, every address: IPv6 and IPv4 where the
 * machine has IPv6 (a probe to a pod's address in an IPv6 cluster), IPv4 where it has not, as
 * Node's own default.
 */
export async function startHealthServer(port: number, stats: () => TracingStats, host?: string): Promise<HealthServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz' && path !== '/metrics' && path !== '/livez') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/livez') {
      // Nothing read: that the process answers is the answer.
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      return;
    }
    let s: TracingStats;
    try {
      s = stats();
    } catch (err) {
      // A throw here would be uncaught and end the process (the host application's, under register).
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`cannot read the stats: ${errorText(err)}\n`);
      return;
    }
    if (path === '/healthz') {
      const problems: string[] = [];
      if (s.stopping) problems.push('shutting down: delivering what is buffered');
      else if (s.standby) problems.push('standby: another process holds the state file');
      else if (!s.connected) problems.push('not connected to the Prefect event stream');
      if (!s.spans.exporting) problems.push('exports to the collector are failing');
      const status = problems.length === 0 ? 'ok' : s.stopping ? 'stopping' : s.standby ? 'standby' : 'unavailable';
      res.writeHead(problems.length === 0 ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status, problems, connected: s.connected, exporting: s.spans.exporting }));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
    res.end(renderMetrics(s));
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new HealthListenError(err, host, port)));
    if (host === undefined) server.listen(port, () => resolve());
    else server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  return {
    port: bound.port,
    address: bound.address,
    unref: () => void server.unref(),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Why the port cannot be had, said in the words of the setting to change: Node's own message names neither prefect-otel nor it. */
const LISTEN_REASONS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'the port is in use; choose a free one, or 0 for any',
  EACCES: 'not permitted to listen on this port; choose one above 1023, or 0 for any',
};

/** Why the address cannot be had: the host setting is the one to change. */
const HOST_REASONS: Readonly<Record<string, string>> = {
  EADDRNOTAVAIL: 'no network interface of this machine has this address; choose one it has, or leave it unset for every address',
  ENOTFOUND: 'no such host name; give an address of this machine, or leave it unset for every address',
  EAI_AGAIN: 'the host name could not be resolved now; give an address of this machine, or leave it unset for every address',
};

/**
 * The health server cannot listen: an error of the setup, not of prefect-otel, said in the words of
 * the setting to change (the CLI shows its message, not a stack). It keeps the system error's `code`
 * (EADDRINUSE…) and the error itself as `cause`.
 */
export class HealthListenError extends Error {
  readonly code: string | undefined;
  constructor(err: NodeJS.ErrnoException, host: string | undefined, port: number) {
    const ofHost = host !== undefined && err.code !== undefined ? HOST_REASONS[err.code] : undefined;
    const reason = ofHost ?? (err.code === undefined ? undefined : LISTEN_REASONS[err.code]) ?? err.message;
    const where = host === undefined ? `port ${port}` : `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const setting = ofHost !== undefined ? 'PREFECT_OTEL_HTTP_HOST, option httpHost' : 'PREFECT_OTEL_HTTP_PORT, option httpPort';
    super(`the health endpoint cannot listen on ${where} (${setting}): ${reason}`, { cause: err });
    this.name = 'HealthListenError';
    this.code = err.code;
  }
}

/** Prometheus text exposition of the stats. */
export function renderMetrics(s: TracingStats): string {
  const lines: string[] = [];
  for (const def of METRIC_DEFS) {
    lines.push(`# HELP ${def.prometheus} ${def.help}`, `# TYPE ${def.prometheus} ${def.type}`);
    const v = def.read(s);
    if (typeof v === 'number') lines.push(`${def.prometheus} ${v}`);
    else for (const [label, n] of Object.entries(v)) lines.push(`${def.prometheus}{${def.label ?? 'label'}="${escapeLabel(label)}"} ${n}`);
  }
  const lag = s.spans.exportLag;
  const name = LAG_METRIC.prometheus;
  lines.push(`# HELP ${name} ${LAG_METRIC.help}`, `# TYPE ${name} histogram`);
  for (const [le, n] of lag.buckets) lines.push(`${name}_bucket{le="${le}"} ${n}`);
  lines.push(`${name}_sum ${lag.sumS}`, `${name}_count ${lag.count}`);
  return `${lines.join('\n')}\n`;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
