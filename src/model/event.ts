import { errorText } from '../errors.js';
import { canonicalUuid } from './ids.js';
import { parseTimestampUs } from './time.js';

/** A Prefect resource: `prefect.resource.id`, its optional name, and every label. */
export interface Resource {
  readonly id: string;
  readonly name: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
}

export interface RelatedResource extends Resource {
  readonly role: string;
}

/** A validated Prefect event (server `ReceivedEvent`). */
export interface PrefectEvent {
  /** Canonical lowercase UUID; for state events this is the state id. */
  readonly id: string;
  /** The event name, e.g. `prefect.flow-run.Running`. */
  readonly name: string;
  readonly occurred: string;
  readonly occurredUs: number;
  readonly received: string | undefined;
  readonly receivedUs: number | undefined;
  readonly resource: Resource;
  readonly related: readonly RelatedResource[];
  readonly payload: Readonly<Record<string, unknown>>;
  readonly follows: string | undefined;
}

export const SKIP_REASONS = [
  'invalid_json',
  'not_an_object',
  'not_an_event_message',
  'missing_field',
  'wrong_type',
  'bad_timestamp',
  'bad_id',
  'bad_run_id',
  'unknown_state',
  'too_large',
  'too_deep',
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export type ParseResult =
  | { readonly ok: true; readonly event: PrefectEvent }
  | { readonly ok: false; readonly reason: SkipReason; readonly detail: string };

/** Largest frame or line accepted, in bytes of UTF-8 (2 MiB); Prefect itself drops events over 1.5 MB. */
export const MAX_EVENT_BYTES = 2 * 1024 * 1024;

/**
 * Whether `text` takes more than MAX_EVENT_BYTES as UTF-8, as it did on the wire or in the file: a
 * UTF-16 code unit is 1 to 3 bytes, so only a text longer than a third of the bound is measured.
 */
export function overEventBytes(text: string): boolean {
  if (text.length > MAX_EVENT_BYTES) return true;
  return text.length * 3 > MAX_EVENT_BYTES && Buffer.byteLength(text, 'utf8') > MAX_EVENT_BYTES;
}
/** Longest event name accepted; also the longest of the other texts a span event keeps from an event (see RunTracker). */
export const MAX_EVENT_NAME = 1024;

const fail = (reason: SkipReason, detail: string): ParseResult => ({ ok: false, reason, detail });

/** Parse one JSON text (a websocket frame or a replay line). Never throws. */
export function parseEventText(text: string): ParseResult {
  if (overEventBytes(text)) return fail('too_large', `more than ${MAX_EVENT_BYTES} bytes of UTF-8`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail('invalid_json', errorText(err));
  }
  return parseEvent(value);
}

/**
 * Validate a bare Event object or a `{"type":"event","event":{…}}` envelope. Total: every input
 * gives an event or a reason.
 */
export function parseEvent(value: unknown): ParseResult {
  if (!isRecord(value)) return fail('not_an_object', `expected a JSON object, got ${describe(value)}`);
  let body: Record<string, unknown> = value;
  if ('type' in value && !('occurred' in value && 'resource' in value)) {
    if (value.type !== 'event') return fail('not_an_event_message', `message type ${show(value.type)}`);
    if (!isRecord(value.event)) return fail('missing_field', 'envelope without an "event" object');
    body = value.event;
  }
  const id = body.id;
  if (id === undefined || id === null) return fail('missing_field', 'id');
  if (typeof id !== 'string') return fail('wrong_type', `id is ${describe(id)}`);
  const canonicalId = canonicalUuid(id);
  if (canonicalId === undefined) return fail('bad_id', `id ${quoted(id)} is not a UUID`);

  const name = body.event;
  if (name === undefined || name === null) return fail('missing_field', 'event');
  if (typeof name !== 'string') return fail('wrong_type', `event is ${describe(name)}`);
  if (name.length === 0 || name.length > MAX_EVENT_NAME) return fail('wrong_type', `event name length ${name.length}`);

  const occurred = body.occurred;
  if (occurred === undefined || occurred === null) return fail('missing_field', 'occurred');
  if (typeof occurred !== 'string') return fail('wrong_type', `occurred is ${describe(occurred)}`);
  const occurredUs = parseTimestampUs(occurred);
  if (occurredUs === undefined) return fail('bad_timestamp', `occurred ${quoted(occurred)}`);

  let received: string | undefined;
  let receivedUs: number | undefined;
  if (typeof body.received === 'string') {
    receivedUs = parseTimestampUs(body.received);
    if (receivedUs !== undefined) received = body.received;
  }

  if (body.resource === undefined || body.resource === null) return fail('missing_field', 'resource');
  const resource = parseResource(body.resource, 'resource');
  if (!isResource(resource)) return resource;

  const related: RelatedResource[] = [];
  if (body.related !== undefined && body.related !== null) {
    if (!Array.isArray(body.related)) return fail('wrong_type', `related is ${describe(body.related)}`);
    for (let i = 0; i < body.related.length; i++) {
      const where = `related[${i}]`;
      const r = parseResource(body.related[i], where);
      if (!isResource(r)) return r;
      const role = r.labels['prefect.resource.role'];
      if (role === undefined || role === '') return fail('missing_field', `${where}.prefect.resource.role`);
      related.push({ id: r.id, name: r.name, labels: r.labels, role });
    }
  }

  let payload: Record<string, unknown> = {};
  if (body.payload !== undefined && body.payload !== null) {
    if (!isRecord(body.payload)) return fail('wrong_type', `payload is ${describe(body.payload)}`);
    payload = body.payload;
  }

  const follows = typeof body.follows === 'string' ? canonicalUuid(body.follows) : undefined;

  return {
    ok: true,
    event: { id: canonicalId, name, occurred, occurredUs, received, receivedUs, resource, related, payload, follows },
  };
}

function parseResource(value: unknown, where: string): Resource | ParseResult {
  if (!isRecord(value)) return fail('wrong_type', `${where} is ${describe(value)}`);
  // Checked in place and kept as is: a parsed frame's objects belong to this event alone.
  for (const key in value) {
    const v = value[key];
    if (typeof v !== 'string') return fail('wrong_type', `${where}.${clip(key)} is ${describe(v)}, labels must be strings`);
  }
  const labels = value as Record<string, string>;
  const id = labels['prefect.resource.id'];
  if (id === undefined || id === '') return fail('missing_field', `${where}.prefect.resource.id`);
  const name = labels['prefect.resource.name'];
  return { id, name: name === '' ? undefined : name, labels };
}

function isResource(value: Resource | ParseResult): value is Resource {
  return !('ok' in value);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** Longest piece of the input a skip's detail repeats (the excerpt shows the input itself). */
const DETAIL_TEXT_MAX = 60;

/** At most DETAIL_TEXT_MAX characters of `text`, `…` when cut. */
function clip(text: string): string {
  return truncate(text, DETAIL_TEXT_MAX);
}

/**
 * `text` cut to `max` characters (UTF-16 code units, one less where the cut would split a surrogate
 * pair), `…` marking the cut. The cut is a copy: V8 makes `slice` a view
 * that holds the whole text in memory, so a run keeping the first 4 KiB of each of its events'
 * megabyte payloads would hold the megabytes. Joining the pieces makes a new string of their
 * characters alone; it costs a copy of `max` characters, only for a text that is cut.
 */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  // Never between the two halves of a surrogate pair (an emoji): the lone half is no character, and
  // OTLP's UTF-8 carries it as U+FFFD. The cut falls before the pair.
  const end = max > 0 && isHighSurrogate(text.charCodeAt(max - 1)) && isLowSurrogate(text.charCodeAt(max)) ? max - 1 : max;
  return [text.slice(0, end), '…'].join('');
}

const isHighSurrogate = (c: number): boolean => c >= 0xd800 && c <= 0xdbff;
const isLowSurrogate = (c: number): boolean => c >= 0xdc00 && c <= 0xdfff;

/** `text` clipped, as a JSON string. */
function quoted(text: string): string {
  return text.length > DETAIL_TEXT_MAX ? `${JSON.stringify(text.slice(0, DETAIL_TEXT_MAX))}…` : JSON.stringify(text);
}

/** A value for a detail, short whatever it is, and never an exception (a deep or cyclic object is only described). */
function show(value: unknown): string {
  if (typeof value === 'string') return quoted(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return describe(value);
}

/** A short, single-line excerpt of bad input for a log line. */
export function excerpt(text: string, max = 160): string {
  // Flattening only shrinks a text, so a flattened prefix is a prefix of the flattened whole: as much
  // is flattened as the excerpt takes, not the whole of a 2 MB line (whitespace runs aside).
  for (let take = max * 4; ; take *= 8) {
    const part = take >= text.length ? text : text.slice(0, take);
    const flat = part.replace(/\s+/g, ' ');
    if (flat.length > max) return `${flat.slice(0, max)}…`;
    if (part === text) return flat;
  }
}
