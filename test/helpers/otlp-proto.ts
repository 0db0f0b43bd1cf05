/**
 * The parts of opentelemetry-proto (common, resource, trace, logs, metrics, and the three export
 * requests) a receiver needs, as an inline protobufjs schema with the upstream field numbers, plus a cheap
 * wire-format counter for spans/log records that does not decode anything else.
 */
import protobuf from 'protobufjs';

const SCHEMA = `syntax = "proto3"; package otlp;
message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
  double double_value = 4; ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7; } }
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
message Status { string message = 2; int32 code = 3; }
message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4;
  uint32 dropped_attributes_count = 5; fixed32 flags = 6; }
message Span { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; string name = 5;
  int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10; repeated Event events = 11; uint32 dropped_events_count = 12;
  repeated Link links = 13; uint32 dropped_links_count = 14; Status status = 15; fixed32 flags = 16; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message LogRecord { fixed64 time_unix_nano = 1; int32 severity_number = 2; string severity_text = 3; AnyValue body = 5;
  repeated KeyValue attributes = 6; uint32 dropped_attributes_count = 7; fixed32 flags = 8; bytes trace_id = 9;
  bytes span_id = 10; fixed64 observed_time_unix_nano = 11; string event_name = 12; }
message ScopeLogs { InstrumentationScope scope = 1; repeated LogRecord log_records = 2; string schema_url = 3; }
message ResourceLogs { Resource resource = 1; repeated ScopeLogs scope_logs = 2; string schema_url = 3; }
message ExportLogsServiceRequest { repeated ResourceLogs resource_logs = 1; }
message Exemplar { repeated KeyValue filtered_attributes = 7; fixed64 time_unix_nano = 2; double as_double = 3; sfixed64 as_int = 6;
  bytes span_id = 4; bytes trace_id = 5; }
message NumberDataPoint { repeated KeyValue attributes = 7; fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3;
  oneof value { double as_double = 4; sfixed64 as_int = 6; } repeated Exemplar exemplars = 5; uint32 flags = 8; }
message HistogramDataPoint { repeated KeyValue attributes = 9; fixed64 start_time_unix_nano = 2; fixed64 time_unix_nano = 3;
  fixed64 count = 4; optional double sum = 5; repeated fixed64 bucket_counts = 6; repeated double explicit_bounds = 7;
  repeated Exemplar exemplars = 8; uint32 flags = 10; optional double min = 11; optional double max = 12; }
message Gauge { repeated NumberDataPoint data_points = 1; }
message Sum { repeated NumberDataPoint data_points = 1; int32 aggregation_temporality = 2; bool is_monotonic = 3; }
message Histogram { repeated HistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message Metric { string name = 1; string description = 2; string unit = 3;
  oneof data { Gauge gauge = 5; Sum sum = 7; Histogram histogram = 9; } repeated KeyValue metadata = 12; }
message ScopeMetrics { InstrumentationScope scope = 1; repeated Metric metrics = 2; string schema_url = 3; }
message ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; string schema_url = 3; }
message ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }`;

const root = protobuf.parse(SCHEMA).root;
const TraceRequest = root.lookupType('otlp.ExportTraceServiceRequest');
const LogsRequest = root.lookupType('otlp.ExportLogsServiceRequest');
const MetricsRequest = root.lookupType('otlp.ExportMetricsServiceRequest');

/**
 * Decode an export request into the OTLP/JSON object shape (camelCase keys; 64-bit numbers as
 * decimal strings; bytes, including ids, as base64; fields at their default value omitted).
 */
export function decodeRequest(signal: 'traces' | 'logs' | 'metrics', buf: Uint8Array): Record<string, unknown> {
  const type = signal === 'traces' ? TraceRequest : signal === 'logs' ? LogsRequest : MetricsRequest;
  return type.toObject(type.decode(buf), { longs: String, bytes: String, defaults: false });
}

/** Read a varint at `pos`; returns [value, next position]. */
function varint(buf: Uint8Array, pos: number): [number, number] {
  let value = 0;
  let shift = 1;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated varint');
    const b = buf[pos++]!;
    value += (b & 0x7f) * shift;
    if (b < 0x80) return [value, pos];
    shift *= 128;
  }
}

/**
 * Count the length-delimited fields reached by following `path` (field numbers) from the top
 * message, without decoding: `[1, 2, 2]` counts spans in an ExportTraceServiceRequest
 * (resource_spans → scope_spans → spans) and log records in an ExportLogsServiceRequest.
 */
export function countNested(buf: Uint8Array, path: readonly number[], start = 0, end = buf.length): number {
  let count = 0;
  for (const f of lengthDelimited(buf, start, end)) {
    if (f.field === path[0]) count += path.length === 1 ? 1 : countNested(buf, path.slice(1), f.start, f.end);
  }
  return count;
}

/** The length-delimited fields of a message between `start` and `end`, skipping every other wire type. */
function* lengthDelimited(buf: Uint8Array, start: number, end: number): Generator<{ field: number; start: number; end: number }> {
  let pos = start;
  while (pos < end) {
    const [key, afterKey] = varint(buf, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    pos = afterKey;
    if (wire === 0) pos = varint(buf, pos)[1];
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const [len, body] = varint(buf, pos);
      pos = body + len;
      if (pos > end) throw new Error('truncated field');
      yield { field, start: body, end: pos };
    } else throw new Error(`unsupported wire type ${wire}`);
  }
}

/**
 * Call `each` with the span id (field 2 of Span) of every span in an ExportTraceServiceRequest,
 * without decoding anything else.
 */
export function forEachSpanId(buf: Uint8Array, each: (spanId: Uint8Array) => void, path: readonly number[] = [1, 2, 2], start = 0, end = buf.length): void {
  for (const f of lengthDelimited(buf, start, end)) {
    if (path.length === 0) {
      if (f.field === 2) each(buf.subarray(f.start, f.end));
    } else if (f.field === path[0]) forEachSpanId(buf, each, path.slice(1), f.start, f.end);
  }
}
