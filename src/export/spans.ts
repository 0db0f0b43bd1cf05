import { SpanKind, SpanStatusCode, TraceFlags, type Link, type SpanContext } from '@opentelemetry/api';
import { SDK_INFO, type InstrumentationScope } from '@opentelemetry/core';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME, ATTR_TELEMETRY_SDK_VERSION } from '@opentelemetry/semantic-conventions';
import type { Config } from '../config.js';
import type { SpanRecord } from '../model/span-record.js';
import { usToHrTime } from '../model/time.js';
import { VERSION } from '../version.js';

export const INSTRUMENTATION_SCOPE: InstrumentationScope = { name: 'prefect-otel', version: VERSION };

/** The resource of every exported span and log record: `service.name` and OTEL_RESOURCE_ATTRIBUTES. */
export function createResource(config: Config): Resource {
  return resourceFromAttributes({
    ...config.resource.attributes,
    [ATTR_SERVICE_NAME]: config.resource.serviceName,
    'telemetry.sdk.name': 'opentelemetry',
    'telemetry.sdk.language': 'nodejs',
    // The OpenTelemetry JS SDK that encodes and sends the spans.
    'telemetry.sdk.version': SDK_INFO[ATTR_TELEMETRY_SDK_VERSION],
    'telemetry.distro.name': 'prefect-otel',
    'telemetry.distro.version': VERSION,
  });
}

const KIND = { server: SpanKind.SERVER, internal: SpanKind.INTERNAL } as const;

/** A finished span as the SDK's exporters expect it; ids, times and limits are ours. */
export function toReadableSpan(record: SpanRecord, resource: Resource): ReadableSpan {
  const context: SpanContext = { traceId: record.traceId, spanId: record.spanId, traceFlags: TraceFlags.SAMPLED };
  const parent: SpanContext | undefined =
    record.parentSpanId === undefined ? undefined : { traceId: record.traceId, spanId: record.parentSpanId, traceFlags: TraceFlags.SAMPLED };
  const start = usToHrTime(record.startUs);
  const end = usToHrTime(record.endUs);
  const links: Link[] = record.links.map((l) => ({
    // OTLP Link.flags: these W3C flags, with the link's IS_REMOTE bit from `isRemote`.
    context: { traceId: l.traceId, spanId: l.spanId, traceFlags: l.traceFlags ?? TraceFlags.SAMPLED, isRemote: l.remote === true },
    attributes: l.attributes,
    droppedAttributesCount: l.droppedAttributes ?? 0,
  }));
  return {
    name: record.name,
    kind: KIND[record.kind],
    spanContext: () => context,
    parentSpanContext: parent,
    startTime: start,
    endTime: end,
    duration: usToHrTime(record.endUs - record.startUs),
    ended: true,
    status:
      record.status.code === 'error'
        ? { code: SpanStatusCode.ERROR, message: record.status.message }
        : { code: record.status.code === 'ok' ? SpanStatusCode.OK : SpanStatusCode.UNSET },
    attributes: record.attributes,
    links,
    events: record.events.map((e) => ({ name: e.name, time: usToHrTime(e.timeUs), attributes: e.attributes, droppedAttributesCount: e.droppedAttributes ?? 0 })),
    resource,
    instrumentationScope: INSTRUMENTATION_SCOPE,
    droppedAttributesCount: record.droppedAttributes ?? 0,
    droppedEventsCount: record.droppedEvents ?? 0,
    droppedLinksCount: record.droppedLinks ?? 0,
  };
}

/** A batch handed to the export thread (the JSON text of its span records) as the SDK's spans. */
export function readableSpansFromJson(text: string, resource: Resource): ReadableSpan[] {
  return (JSON.parse(text) as SpanRecord[]).map((r) => toReadableSpan(r, resource));
}

/** A cheap estimate of a span's encoded size, for the delivery buffer's byte bound. */
export function estimateSpanBytes(record: SpanRecord): number {
  let n = 200 + record.name.length;
  for (const key in record.attributes) n += key.length + valueSize(record.attributes[key]);
  for (const e of record.events) {
    n += 40 + e.name.length;
    for (const key in e.attributes) n += key.length + valueSize(e.attributes[key]);
  }
  return n + record.links.length * 80;
}

function valueSize(v: unknown): number {
  if (typeof v === 'string') return v.length + 4;
  if (Array.isArray(v)) {
    let n = 4;
    for (const x of v) n += typeof x === 'string' ? x.length + 4 : 10;
    return n;
  }
  return 10;
}
