/**
 * A fake OTLP/HTTP collector on 127.0.0.1:0. It takes what the real exporters send to `/v1/traces`,
 * `/v1/logs` and `/v1/metrics` (JSON or protobuf, optionally gzip) and normalises both encodings to one shape, so
 * tests can deepEqual whole spans. It can answer any status (503 storms, 429 with Retry-After),
 * answer slowly, or just count (benchmarks).
 */
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { countNested, decodeRequest, forEachSpanId } from './otlp-proto.js';

export type AttrValue = string | number | boolean | AttrValue[] | { [k: string]: AttrValue };

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** OTLP enum: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Record<string, AttrValue>;
  /** `droppedAttributesCount` of an event or link only when non-zero. */
  events: { name: string; timeUnixNano: string; attributes: Record<string, AttrValue>; droppedAttributesCount?: number }[];
  /** `flags` as the span's (W3C flags | 0x100 | 0x200 when remote) and `traceState`, each only when set. */
  links: { traceId: string; spanId: string; traceState?: string; attributes: Record<string, AttrValue>; droppedAttributesCount?: number; flags?: number }[];
  /** Code 0 unset, 1 ok, 2 error; `message` only when non-empty. */
  status: { code: number; message?: string };
  resource: Record<string, AttrValue>;
  scope: { name: string; version?: string };
  /** Only when non-zero (W3C flags | 0x100 "has is_remote" | 0x200 "is remote"). */
  flags?: number;
  /** Only when non-zero. */
  droppedEventsCount?: number;
  /** Only when non-zero. */
  droppedAttributesCount?: number;
  /** Only when non-zero. */
  droppedLinksCount?: number;
}

export interface ReceivedLog {
  traceId?: string;
  spanId?: string;
  flags?: number;
  timeUnixNano: string;
  severityNumber?: number;
  severityText?: string;
  body: AttrValue;
  attributes: Record<string, AttrValue>;
  resource: Record<string, AttrValue>;
  scope: { name: string; version?: string };
  droppedAttributesCount?: number;
}

export interface ReceivedDataPoint {
  attributes: Record<string, AttrValue>;
  /** Gauges and sums. */
  value?: number;
  /** Histograms: per-bucket (not cumulative) counts, `explicitBounds.length + 1` of them. */
  count?: number;
  sum?: number;
  bucketCounts?: number[];
  explicitBounds?: number[];
}

export interface ReceivedMetric {
  name: string;
  description: string;
  unit: string;
  type: 'gauge' | 'sum' | 'histogram';
  /** Sums only. */
  monotonic?: boolean;
  /** Sums and histograms: 1 delta, 2 cumulative. */
  temporality?: number;
  points: ReceivedDataPoint[];
  resource: Record<string, AttrValue>;
  scope: { name: string; version?: string };
}

/** Count, sum and xor (mod 2^64) of the span ids received in discard mode: a duplicate or a missing span changes them. */
export interface SpanIdDigest {
  count: number;
  sum: bigint;
  xor: bigint;
}

export interface ReceivedRequest {
  path: string;
  contentType: string;
  contentEncoding?: string;
  /** The status answered. */
  status: number;
  /** Body bytes as sent (compressed when gzip). */
  bytes: number;
  /** The request's headers, names in lower case. */
  headers: Record<string, string>;
}

export interface OtlpReceiverOptions {
  /**
   * Status (and headers, reason phrase, body) for the n-th request (1-based, all requests counted) of `bytes` bytes as
   * sent; default 200 with an empty answer. Only 2xx requests count as received.
   */
  respond?: (n: number, path: string, bytes: number) => number | { status: number; headers?: Record<string, string>; reason?: string; body?: string | Buffer };
  /** Answer after this many ms (for the n-th request, 1-based, to `path`). */
  delayMs?: number | ((n: number, path: string) => number);
  /** Count spans/logs (without decoding them), requests and bytes, but keep nothing. */
  discard?: boolean;
  /** Serve HTTPS with this key and certificate (PEM); with `ca`, only clients with a certificate it signed are accepted. */
  tls?: { key: string; cert: string; ca?: string };
  /**
   * The paths the receiver takes each signal on, as a vendor's endpoint serves them
   * (`/otlp/v1/traces`, `/api/v2/otlp/v1/metrics`); default `/v1/traces`, `/v1/logs`, `/v1/metrics`.
   * Any other path is answered 404.
   */
  paths?: Readonly<Record<string, 'traces' | 'logs' | 'metrics'>>;
}

export interface OtlpReceiver {
  /** What OTEL_EXPORTER_OTLP_ENDPOINT is set to: `http://127.0.0.1:PORT` (`https://` with `tls`). */
  url: string;
  readonly requests: ReceivedRequest[];
  spans(): ReceivedSpan[];
  logs(): ReceivedLog[];
  waitForSpans(n: number, timeoutMs?: number): Promise<ReceivedSpan[]>;
  waitForLogs(n: number, timeoutMs?: number): Promise<ReceivedLog[]>;
  /** One entry per accepted metrics request: the metrics it carried. */
  metrics(): ReceivedMetric[][];
  waitForMetricExports(n: number, timeoutMs?: number): Promise<ReceivedMetric[][]>;
  /** Answer nothing from now on (requests wait, unanswered) until the returned function is called. */
  hold(): () => void;
  /** Requests of `path` (`/v1/traces`…) received, not answered yet, whose connection is still open: the sender may still get the answer. */
  unanswered(path: string): number;
  /** Discard mode: a digest of the span ids received. */
  readonly spanIdDigest: SpanIdDigest;
  /** spans/logs/metricExports: received (2xx) only; requests/bytes: every request. */
  readonly counts: { spans: number; logs: number; metricExports: number; requests: number; bytes: number };
  close(): Promise<void>;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (typeof v === 'object' && v !== null ? (v as Obj) : {});
const list = (v: unknown): Obj[] => (Array.isArray(v) ? (v as unknown[]).map(obj) : []);
/** A string or number as a string (64-bit values arrive as either), else `fallback`. */
const str = (v: unknown, fallback: string): string => (typeof v === 'string' || typeof v === 'number' ? String(v) : fallback);

/** Ids: OTLP/JSON carries hex, protobuf (decoded with `bytes: String`) base64; '' → undefined. */
function hexId(v: unknown, proto: boolean): string | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  return proto ? Buffer.from(v, 'base64').toString('hex') : v.toLowerCase();
}

function value(v: unknown): AttrValue {
  const a = obj(v);
  if ('stringValue' in a) return String(a.stringValue);
  if ('boolValue' in a) return Boolean(a.boolValue);
  if ('intValue' in a) return Number(a.intValue);
  if ('doubleValue' in a) return Number(a.doubleValue);
  if ('arrayValue' in a) return list(obj(a.arrayValue).values).map(value);
  if ('kvlistValue' in a) return attrs(obj(a.kvlistValue).values);
  if ('bytesValue' in a) return String(a.bytesValue); // base64 in both encodings
  return '';
}

function requestHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, v] of Object.entries(req.headers)) if (v !== undefined) out[name] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

function attrs(kvs: unknown): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of list(kvs)) out[String(kv.key)] = value(kv.value);
  return out;
}

function scope(s: unknown): { name: string; version?: string } {
  const o = obj(s);
  return { name: typeof o.name === 'string' ? o.name : '', ...(typeof o.version === 'string' && o.version !== '' ? { version: o.version } : {}) };
}

/** Put `value` under `key` only when it is set (deepEqual tells a missing key from an undefined one). */
function optional<T extends object, K extends string, V>(o: T, key: K, v: V | undefined): T & { [k in K]?: V } {
  if (v !== undefined) (o as Record<string, unknown>)[key] = v;
  return o;
}
const nonZero = (v: unknown): number | undefined => (v === undefined || v === null || Number(v) === 0 ? undefined : Number(v));

function link(l: Obj, proto: boolean): ReceivedSpan['links'][number] {
  const out: ReceivedSpan['links'][number] = { traceId: hexId(l.traceId, proto) ?? '', spanId: hexId(l.spanId, proto) ?? '', attributes: attrs(l.attributes) };
  optional(out, 'traceState', typeof l.traceState === 'string' && l.traceState !== '' ? l.traceState : undefined);
  optional(out, 'droppedAttributesCount', nonZero(l.droppedAttributesCount));
  return optional(out, 'flags', nonZero(l.flags));
}

export function normaliseSpans(body: Obj, proto: boolean): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of list(body.resourceSpans)) {
    const resource = attrs(obj(rs.resource).attributes);
    for (const ss of list(rs.scopeSpans)) {
      for (const s of list(ss.spans)) {
        const st = obj(s.status);
        const span: ReceivedSpan = {
          traceId: hexId(s.traceId, proto) ?? '',
          spanId: hexId(s.spanId, proto) ?? '',
          name: str(s.name, ''),
          kind: Number(s.kind ?? 0),
          startTimeUnixNano: str(s.startTimeUnixNano, '0'),
          endTimeUnixNano: str(s.endTimeUnixNano, '0'),
          attributes: attrs(s.attributes),
          events: list(s.events).map((e) => optional({ name: str(e.name, ''), timeUnixNano: str(e.timeUnixNano, '0'), attributes: attrs(e.attributes) }, 'droppedAttributesCount', nonZero(e.droppedAttributesCount))),
          links: list(s.links).map((l) => link(l, proto)),
          status: optional({ code: Number(st.code ?? 0) }, 'message', typeof st.message === 'string' && st.message !== '' ? st.message : undefined),
          resource,
          scope: scope(ss.scope),
        };
        optional(span, 'parentSpanId', hexId(s.parentSpanId, proto));
        optional(span, 'flags', nonZero(s.flags));
        optional(span, 'droppedEventsCount', nonZero(s.droppedEventsCount));
        optional(span, 'droppedAttributesCount', nonZero(s.droppedAttributesCount));
        optional(span, 'droppedLinksCount', nonZero(s.droppedLinksCount));
        out.push(span);
      }
    }
  }
  return out;
}

export function normaliseLogs(body: Obj, proto: boolean): ReceivedLog[] {
  const out: ReceivedLog[] = [];
  for (const rl of list(body.resourceLogs)) {
    const resource = attrs(obj(rl.resource).attributes);
    for (const sl of list(rl.scopeLogs)) {
      for (const r of list(sl.logRecords)) {
        const log: ReceivedLog = { timeUnixNano: str(r.timeUnixNano, '0'), body: value(r.body), attributes: attrs(r.attributes), resource, scope: scope(sl.scope) };
        optional(log, 'traceId', hexId(r.traceId, proto));
        optional(log, 'spanId', hexId(r.spanId, proto));
        optional(log, 'flags', nonZero(r.flags));
        optional(log, 'severityNumber', nonZero(r.severityNumber));
        optional(log, 'severityText', typeof r.severityText === 'string' && r.severityText !== '' ? r.severityText : undefined);
        optional(log, 'droppedAttributesCount', nonZero(r.droppedAttributesCount));
        out.push(log);
      }
    }
  }
  return out;
}

export function normaliseMetrics(body: Obj): ReceivedMetric[] {
  const out: ReceivedMetric[] = [];
  const num = (v: unknown): number | undefined => (v === undefined || v === null ? undefined : Number(v));
  for (const rm of list(body.resourceMetrics)) {
    const resource = attrs(obj(rm.resource).attributes);
    for (const sm of list(rm.scopeMetrics)) {
      for (const m of list(sm.metrics)) {
        const type = 'histogram' in m ? 'histogram' : 'sum' in m ? 'sum' : 'gauge';
        const data = obj(m[type]);
        const metric: ReceivedMetric = { name: str(m.name, ''), description: str(m.description, ''), unit: str(m.unit, ''), type, points: [], resource, scope: scope(sm.scope) };
        if (type === 'sum') metric.monotonic = data.isMonotonic === true;
        if (type !== 'gauge') metric.temporality = Number(data.aggregationTemporality ?? 0);
        for (const p of list(data.dataPoints)) {
          const point: ReceivedDataPoint = { attributes: attrs(p.attributes) };
          if (type === 'histogram') {
            point.count = Number(p.count ?? 0);
            optional(point, 'sum', num(p.sum));
            point.bucketCounts = (Array.isArray(p.bucketCounts) ? (p.bucketCounts as unknown[]) : []).map(Number);
            point.explicitBounds = (Array.isArray(p.explicitBounds) ? (p.explicitBounds as unknown[]) : []).map(Number);
          } else point.value = num(p.asInt) ?? num(p.asDouble) ?? 0;
          metric.points.push(point);
        }
        out.push(metric);
      }
    }
  }
  return out;
}

const SIGNALS = { '/v1/traces': 'traces', '/v1/logs': 'logs', '/v1/metrics': 'metrics' } as const;
type Signal = (typeof SIGNALS)[keyof typeof SIGNALS];
const MASK64 = (1n << 64n) - 1n;

export async function startOtlpReceiver(options: OtlpReceiverOptions = {}): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const logs: ReceivedLog[] = [];
  const metricExports: ReceivedMetric[][] = [];
  const requests: ReceivedRequest[] = [];
  const counts = { spans: 0, logs: 0, metricExports: 0, requests: 0, bytes: 0 };
  const spanIdDigest: SpanIdDigest = { count: 0, sum: 0n, xor: 0n };
  const digest = (id: bigint): void => {
    spanIdDigest.count += 1;
    spanIdDigest.sum = (spanIdDigest.sum + id) & MASK64;
    spanIdDigest.xor ^= id;
  };
  const waiters = new Set<() => void>();
  const timers = new Set<NodeJS.Timeout>();

  /** Decode and keep (or just count) one accepted body; throws on a malformed one. */
  function accept(signal: Signal, raw: Buffer, json: boolean): void {
    if (options.discard === true && signal !== 'metrics') {
      if (json) {
        const body = obj(JSON.parse(raw.toString('utf8')));
        const inner = signal === 'traces' ? ['resourceSpans', 'scopeSpans', 'spans'] : ['resourceLogs', 'scopeLogs', 'logRecords'];
        for (const r of list(body[inner[0]!])) {
          for (const s of list(r[inner[1]!])) {
            for (const item of list(s[inner[2]!])) {
              counts[signal === 'traces' ? 'spans' : 'logs'] += 1;
              if (signal === 'traces') digest(BigInt(`0x${str(item.spanId, '0')}`));
            }
          }
        }
      } else if (signal === 'traces') {
        forEachSpanId(raw, (id) => {
          counts.spans += 1;
          digest(Buffer.from(id).readBigUInt64BE(0));
        });
      } else counts.logs += countNested(raw, [1, 2, 2]);
      return;
    }
    const body = json ? obj(JSON.parse(raw.toString('utf8'))) : decodeRequest(signal, raw);
    if (signal === 'metrics') {
      metricExports.push(normaliseMetrics(body));
      counts.metricExports += 1;
    } else if (signal === 'traces') {
      const got = normaliseSpans(body, !json);
      spans.push(...got);
      counts.spans += got.length;
    } else {
      const got = normaliseLogs(body, !json);
      logs.push(...got);
      counts.logs += got.length;
    }
  }

  function answer(req: IncomingMessage, res: ServerResponse, raw: Buffer, n: number): void {
    const path = (req.url ?? '').split('?')[0]!;
    const contentType = String(req.headers['content-type'] ?? '');
    const encoding = req.headers['content-encoding'];
    const signal: Signal | undefined = options.paths !== undefined ? options.paths[path] : SIGNALS[path as keyof typeof SIGNALS];
    const r = options.respond?.(n, path, raw.length) ?? 200;
    const headers = typeof r === 'number' ? {} : (r.headers ?? {});
    const custom: { reason?: string; body?: string | Buffer } = typeof r === 'number' ? {} : { reason: r.reason, body: r.body };
    let status = typeof r === 'number' ? r : r.status;
    if (req.method !== 'POST') status = 405;
    else if (signal === undefined) status = 404;
    const json = contentType.startsWith('application/json');
    if (status >= 200 && status < 300) {
      try {
        if (!json && !contentType.startsWith('application/x-protobuf')) status = 415;
        else accept(signal!, encoding === 'gzip' ? gunzipSync(raw) : raw, json);
      } catch {
        status = 400;
      }
    }
    requests.push({ path, contentType, ...(encoding === undefined ? {} : { contentEncoding: encoding }), status, bytes: raw.length, headers: requestHeaders(req) });
    const answerHeaders = { 'content-type': json ? 'application/json' : contentType || 'application/x-protobuf', ...headers };
    if (custom.reason === undefined) res.writeHead(status, answerHeaders);
    else res.writeHead(status, custom.reason, answerHeaders);
    res.end(custom.body ?? (json ? '{}' : Buffer.alloc(0)));
    for (const w of waiters) w();
  }

  let n = 0;
  let held: (() => void)[] | undefined;
  const open = new Map<ServerResponse, string>();
  const listener: RequestListener = (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    open.set(res, (req.url ?? '').split('?')[0]!);
    res.on('close', () => open.delete(res));
    res.on('finish', () => open.delete(res));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const i = ++n;
      counts.requests++;
      counts.bytes += raw.length;
      const delay = typeof options.delayMs === 'function' ? options.delayMs(i, (req.url ?? '').split('?')[0]!) : (options.delayMs ?? 0);
      // A request whose connection is already gone (its sender gave up) is not received.
      const go = (): void => {
        if (res.destroyed) return;
        if (delay <= 0) return answer(req, res, raw, i);
        const t = setTimeout(() => {
          timers.delete(t);
          if (!res.destroyed) answer(req, res, raw, i);
        }, delay);
        timers.add(t);
      };
      if (held !== undefined) held.push(go);
      else go();
    });
  };
  const tls = options.tls;
  const server = tls === undefined
    ? createServer(listener)
    : createTlsServer({ key: tls.key, cert: tls.cert, ...(tls.ca === undefined ? {} : { ca: tls.ca, requestCert: true, rejectUnauthorized: true }) }, listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const waitFor = <T>(what: string, get: () => T[], count: () => number, want: number, timeoutMs: number): Promise<T[]> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (count() < want) return;
        cleanup();
        resolve(get());
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`expected ${want} ${what}, received ${count()} in ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  return {
    url: `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    requests,
    spans: () => [...spans],
    logs: () => [...logs],
    waitForSpans: (want, timeoutMs = 10_000) => waitFor('spans', () => [...spans], () => counts.spans, want, timeoutMs),
    waitForLogs: (want, timeoutMs = 10_000) => waitFor('logs', () => [...logs], () => counts.logs, want, timeoutMs),
    metrics: () => [...metricExports],
    waitForMetricExports: (want, timeoutMs = 10_000) => waitFor('metric exports', () => [...metricExports], () => counts.metricExports, want, timeoutMs),
    hold: () => {
      held ??= [];
      return () => {
        const waiting = held ?? [];
        held = undefined;
        waiting.forEach((go) => go());
      };
    },
    unanswered: (path) => [...open.values()].filter((p) => p === path).length,
    spanIdDigest,
    counts,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
