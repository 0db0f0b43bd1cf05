import type { AttributeValue } from '@opentelemetry/api';
import type { Attributes, SpanEventRecord, SpanLinkRecord, SpanRecord } from './span-record.js';

/**
 * OpenTelemetry's span limits (SpanLimits), from the variables the SDKs read:
 * OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT / OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT (undefined: none),
 * OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT / OTEL_ATTRIBUTE_COUNT_LIMIT, OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT,
 * OTEL_SPAN_LINK_COUNT_LIMIT and OTEL_LINK_ATTRIBUTE_COUNT_LIMIT. The span event count limit is
 * the run model's own (`maxSpanEvents`): past it events are summarised, not dropped.
 */
export interface SpanLimits {
  readonly attributeValueLengthLimit: number | undefined;
  readonly attributeCountLimit: number;
  readonly eventAttributeCountLimit: number;
  readonly linkCountLimit: number;
  readonly linkAttributeCountLimit: number;
}

/**
 * The span within the limits, as the OpenTelemetry SDKs apply them: a string value longer than the
 * length limit is cut to it, and so is each string of an array; attributes past a count limit are
 * dropped, the first ones set kept (a span's own before what a span hook adds), and counted in
 * the span's, event's or link's dropped attributes; links past their limit are dropped, the last
 * ones kept, and counted. Applied after the span hook, so that what a hook sets is bounded too.
 * The same record when it is within every limit.
 */
export function applySpanLimits(record: SpanRecord, limits: SpanLimits): SpanRecord {
  // Every span passes here: one that is within the limits costs counting its keys, no copy.
  if (limits.attributeValueLengthLimit === undefined && withinCounts(record, limits)) return record;
  const attributes = limitAttributes(record.attributes, limits.attributeCountLimit, limits.attributeValueLengthLimit);
  let changed = attributes.value !== record.attributes;
  const events = record.events.map((e): SpanEventRecord => {
    const a = limitAttributes(e.attributes, limits.eventAttributeCountLimit, limits.attributeValueLengthLimit);
    if (a.value === e.attributes) return e;
    changed = true;
    return { ...e, attributes: a.value, ...(a.dropped === 0 ? {} : { droppedAttributes: (e.droppedAttributes ?? 0) + a.dropped }) };
  });
  const droppedLinks = Math.max(0, record.links.length - limits.linkCountLimit);
  const links = (droppedLinks === 0 ? record.links : record.links.slice(droppedLinks)).map((l): SpanLinkRecord => {
    const a = limitAttributes(l.attributes, limits.linkAttributeCountLimit, limits.attributeValueLengthLimit);
    if (a.value === l.attributes) return l;
    changed = true;
    return { ...l, attributes: a.value, ...(a.dropped === 0 ? {} : { droppedAttributes: (l.droppedAttributes ?? 0) + a.dropped }) };
  });
  if (!changed && droppedLinks === 0) return record;
  return {
    ...record,
    attributes: attributes.value,
    events,
    links,
    ...(attributes.dropped === 0 ? {} : { droppedAttributes: (record.droppedAttributes ?? 0) + attributes.dropped }),
    ...(droppedLinks === 0 ? {} : { droppedLinks: (record.droppedLinks ?? 0) + droppedLinks }),
  };
}

/**
 * OpenTelemetry's log record limits (LogRecordLimits), from the variables the SDKs read:
 * OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT / OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT (undefined: none)
 * and OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT / OTEL_ATTRIBUTE_COUNT_LIMIT.
 */
export interface LogRecordLimits {
  readonly attributeValueLengthLimit: number | undefined;
  readonly attributeCountLimit: number;
}

/**
 * A log record's attributes within the limits, as the OpenTelemetry SDKs apply them to a log
 * record: a longer string value (each string of an array) cut to the length limit, the attributes
 * past the count limit dropped (the first set kept) and counted. The body is not an attribute and
 * is left as it is. The same object when it is within both limits.
 */
export function applyLogRecordLimits(attributes: Attributes, limits: LogRecordLimits): { readonly value: Attributes; readonly dropped: number } {
  if (limits.attributeValueLengthLimit === undefined && countWithin(attributes, limits.attributeCountLimit)) return { value: attributes, dropped: 0 };
  return limitAttributes(attributes, limits.attributeCountLimit, limits.attributeValueLengthLimit);
}

/** Whether the span, its events and links are within the count limits. */
function withinCounts(record: SpanRecord, limits: SpanLimits): boolean {
  if (!countWithin(record.attributes, limits.attributeCountLimit) || record.links.length > limits.linkCountLimit) return false;
  for (const e of record.events) if (!countWithin(e.attributes, limits.eventAttributeCountLimit)) return false;
  for (const l of record.links) if (!countWithin(l.attributes, limits.linkAttributeCountLimit)) return false;
  return true;
}

function countWithin(attributes: Attributes, limit: number): boolean {
  let n = 0;
  for (const _ in attributes) if (++n > limit) return false;
  return true;
}

/** The first `countLimit` attributes, each value within the length limit: the same object when nothing was over a limit. */
function limitAttributes(attributes: Attributes, countLimit: number, lengthLimit: number | undefined): { value: Attributes; dropped: number } {
  let out: Attributes | undefined;
  let kept = 0;
  let dropped = 0;
  for (const key in attributes) {
    if (kept === countLimit) {
      out ??= keysBefore(attributes, key);
      dropped += 1;
      continue;
    }
    kept += 1;
    const value = attributes[key]!;
    const limited = lengthLimit === undefined ? value : limitValue(value, lengthLimit);
    if (limited !== value) (out ??= { ...attributes })[key] = limited;
  }
  if (out !== undefined && dropped > 0) {
    // A copy made for a cut value before the count limit was reached holds every key: keep the first ones.
    const keys = Object.keys(out);
    for (let i = countLimit; i < keys.length; i++) delete out[keys[i]!];
  }
  return { value: out ?? attributes, dropped };
}

/** A copy of the attributes set before `stop`. */
function keysBefore(attributes: Attributes, stop: string): Attributes {
  const out: Attributes = {};
  for (const key in attributes) {
    if (key === stop) break;
    out[key] = attributes[key]!;
  }
  return out;
}

function limitValue(value: AttributeValue, limit: number): AttributeValue {
  if (typeof value === 'string') return cut(value, limit);
  if (!Array.isArray(value) || !value.some((v) => typeof v === 'string' && v.length > limit)) return value;
  return (value as readonly unknown[]).map((v) => (typeof v === 'string' ? cut(v, limit) : v)) as AttributeValue;
}

/** The first `limit` characters of `text`, counting a character outside the BMP as one (its surrogate pair is never split). */
function cut(text: string, limit: number): string {
  if (text.length <= limit) return text;
  let units = 0;
  for (let chars = 0; chars < limit && units < text.length; chars++) {
    const c = text.charCodeAt(units);
    units += c >= 0xd800 && c <= 0xdbff && units + 1 < text.length ? 2 : 1;
  }
  return text.slice(0, units);
}
