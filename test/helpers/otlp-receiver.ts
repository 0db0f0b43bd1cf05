/**
 * A fake OTLP/HTTP collector on 127.0.0.1:0: decodes what the real exporters send (JSON or
 * protobuf, optionally gzip) for traces and logs into one normalised shape, and can answer with
 * any status (503 storms, 429 with Retry-After) to exercise retries.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import protobuf from 'protobufjs';

const SCHEMA = `syntax = "proto3"; package otlp;
message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
  double double_value = 4; ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7; } }
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; }
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
message Status { string message = 2; int32 code = 3; }
message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; uint32 dropped_attributes_count = 5; fixed32 flags = 6; }
message Span { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; string name = 5;
  int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10; repeated Event events = 11; uint32 dropped_events_count = 12;
  repeated Link links = 13; uint32 dropped_links_count = 14; Status status = 15; fixed32 flags = 16; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message LogRecord { fixed64 time_unix_nano = 1; int32 severity_number = 2; string severity_text = 3; AnyValue body = 5;
  repeated KeyValue attributes = 6; uint32 dropped_attributes_count = 7; fixed32 flags = 8; bytes trace_id = 9; bytes span_id = 10;
  fixed64 observed_time_unix_nano = 11; string event_name = 12; }
message ScopeLogs { InstrumentationScope scope = 1; repeated LogRecord log_records = 2; string schema_url = 3; }
message ResourceLogs { Resource resource = 1; repeated ScopeLogs scope_logs = 2; string schema_url = 3; }
message ExportLogsServiceRequest { repeated ResourceLogs resource_logs = 1; }`;

const root = protobuf.parse(SCHEMA).root;
const TraceReq = root.lookupType('otlp.ExportTraceServiceRequest');
const LogsReq = root.lookupType('otlp.ExportLogsServiceRequest');

export type AttrValue = string | number | boolean | AttrValue[] | { [k: string]: AttrValue };

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Record<string, AttrValue>;
  events: { name: string; timeUnixNano: string; attributes: Record<string, AttrValue> }[];
  links: { traceId: string; spanId: string; attributes: Record<string, AttrValue> }[];
  status: { code: number; message?: string };
  resource: Record<string, AttrValue>;
  scope: { name: string; version?: string };
}

export interface ReceivedLog {
  traceId?: string;
  spanId?: string;
  timeUnixNano: string;
  severityNumber?: number;
  severityText?: string;
  body: AttrValue;
  attributes: Record<string, AttrValue>;
  resource: Record<string, AttrValue>;
}

type Any = Record<string, any>;

/** Ids: JSON carries hex, protobuf (decoded with bytes: String) base64. */
function hexId(v: unknown, proto: boolean): string | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  return proto ? Buffer.from(v, 'base64').toString('hex') : v.toLowerCase();
}

function value(v: Any | undefined): AttrValue {
  if (v === undefined || v === null) return '';
  if ('stringValue' in v) return v.stringValue as string;
  if ('boolValue' in v) return v.boolValue as boolean;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('arrayValue' in v) return ((v.arrayValue?.values ?? []) as Any[]).map(value);
  if ('kvlistValue' in v) return attrs(v.kvlistValue?.values);
  return '';
}

function attrs(kvs: Any[] | undefined): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of kvs ?? []) out[kv.key as string] = value(kv.value as Any);
  return out;
}

function normaliseSpans(body: Any, proto: boolean): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of (body.resourceSpans ?? []) as Any[]) {
    for (const ss of (rs.scopeSpans ?? []) as Any[]) {
      for (const s of (ss.spans ?? []) as Any[]) {
        const span: ReceivedSpan = {
          traceId: hexId(s.traceId, proto)!,
          spanId: hexId(s.spanId, proto)!,
          name: s.name as string,
          kind: Number(s.kind ?? 0),
          startTimeUnixNano: String(s.startTimeUnixNano),
          endTimeUnixNano: String(s.endTimeUnixNano),
          attributes: attrs(s.attributes),
          events: ((s.events ?? []) as Any[]).map((e) => ({ name: e.name as string, timeUnixNano: String(e.timeUnixNano), attributes: attrs(e.attributes) })),
          links: ((s.links ?? []) as Any[]).map((l) => ({ traceId: hexId(l.traceId, proto)!, spanId: hexId(l.spanId, proto)!, attributes: attrs(l.attributes) })),
          status: { code: Number(s.status?.code ?? 0), ...(s.status?.message ? { message: s.status.message as string } : {}) },
          resource: attrs(rs.resource?.attributes),
          scope: { name: ss.scope?.name as string, ...(ss.scope?.version ? { version: ss.scope.version as string } : {}) },
        };
        const parent = hexId(s.parentSpanId, proto);
        if (parent !== undefined) span.parentSpanId = parent;
        out.push(span);
      }
    }
  }
  return out;
}

function normaliseLogs(body: Any, proto: boolean): ReceivedLog[] {
  const out: ReceivedLog[] = [];
  for (const rl of (body.resourceLogs ?? []) as Any[]) {
    for (const sl of (rl.scopeLogs ?? []) as Any[]) {
      for (const r of (sl.logRecords ?? []) as Any[]) {
        out.push({
          traceId: hexId(r.traceId, proto),
          spanId: hexId(r.spanId, proto),
          timeUnixNano: String(r.timeUnixNano),
          severityNumber: r.severityNumber === undefined ? undefined : Number(r.severityNumber),
          severityText: r.severityText as string | undefined,
          body: value(r.body as Any),
          attributes: attrs(r.attributes),
          resource: attrs(rl.resource?.attributes),
        });
      }
    }
  }
  return out;
}

export interface OtlpReceiverOptions {
  /** Status for the n-th request (1-based); 2xx requests are the ones that count as received. */
  respond?: (n: number, path: string) => number | { status: number; headers?: Record<string, string> };
}

export async function startOtlpReceiver(options: OtlpReceiverOptions = {}) {
  const spans: ReceivedSpan[] = [];
  const logs: ReceivedLog[] = [];
  const requests: { path: string; contentType: string; contentEncoding?: string; status: number; bytes: number }[] = [];
  let n = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '';
      const contentType = String(req.headers['content-type'] ?? '');
      const encoding = req.headers['content-encoding'];
      let raw = Buffer.concat(chunks);
      const r = options.respond?.(++n, path) ?? 200;
      const { status, headers } = typeof r === 'number' ? { status: r, headers: {} } : { status: r.status, headers: r.headers ?? {} };
      requests.push({ path, contentType, contentEncoding: encoding, status, bytes: raw.length });
      if (status >= 200 && status < 300) {
        if (encoding === 'gzip') raw = gunzipSync(raw);
        const json = contentType.startsWith('application/json');
        const type = path === '/v1/logs' ? LogsReq : TraceReq;
        const body = json ? (JSON.parse(raw.toString('utf8')) as Any) : (type.toObject(type.decode(raw), { longs: String, bytes: String, defaults: false }));
        if (path === '/v1/traces') spans.push(...normaliseSpans(body, !json));
        if (path === '/v1/logs') logs.push(...normaliseLogs(body, !json));
      }
      res.writeHead(status, { 'content-type': contentType, ...headers });
      res.end(contentType.startsWith('application/json') ? '{}' : Buffer.alloc(0));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const waitFor = async <T>(list: T[], count: number, timeoutMs: number): Promise<T[]> => {
    const deadline = Date.now() + timeoutMs;
    while (list.length < count) {
      if (Date.now() > deadline) throw new Error(`expected ${count}, received ${list.length}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return list;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    spans: () => [...spans],
    logs: () => [...logs],
    waitForSpans: (count: number, timeoutMs = 10_000) => waitFor(spans, count, timeoutMs),
    waitForLogs: (count: number, timeoutMs = 10_000) => waitFor(logs, count, timeoutMs),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
