import type { AttributeValue } from '@opentelemetry/api';
import type { Attributes, SpanRecord } from './span-record.js';

/**
 * OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT / OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT as the OpenTelemetry
 * SDKs apply them: a string value longer than the limit is cut to it, and so is each string of an
 * array; other values are kept as they are. Applied to a span's attributes, its events' and its
 * links', after the span hook, so that what a hook sets is bounded too.
 */
export function limitAttributeValueLengths(record: SpanRecord, limit: number | undefined): SpanRecord {
  if (limit === undefined) return record;
  const attributes = limitAttributes(record.attributes, limit);
  let changed = attributes !== record.attributes;
  const events = record.events.map((e) => {
    const a = limitAttributes(e.attributes, limit);
    if (a === e.attributes) return e;
    changed = true;
    return { ...e, attributes: a };
  });
  const links = record.links.map((l) => {
    const a = limitAttributes(l.attributes, limit);
    if (a === l.attributes) return l;
    changed = true;
    return { ...l, attributes: a };
  });
  return changed ? { ...record, attributes, events, links } : record;
}

/** The attributes with each value within the limit: the same object when none was over it. */
function limitAttributes(attributes: Attributes, limit: number): Attributes {
  let out: Attributes | undefined;
  for (const key in attributes) {
    const value = attributes[key]!;
    const limited = limitValue(value, limit);
    if (limited !== value) (out ??= { ...attributes })[key] = limited;
  }
  return out ?? attributes;
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
