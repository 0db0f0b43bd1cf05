/**
 * Structural corruptions of one Prefect state event: what JSON allows and Prefect's schema forbids
 * (shared/reference/prefect-event-stream.md §2.1, §4): fields of the wrong type, dates out of range
 * or without a zone, state types that are not Prefect's, huge numbers, `__proto__`/`constructor`
 * keys, resource ids with no UUID or a non-canonical one, deeply nested payloads, ids reused with
 * other content. Each says what becomes of the frame: skipped for a reason, kept (what it says is
 * taken, or ignored), or dropped as a duplicate. Values are written as raw JSON text, so that a
 * number JSON.parse reads as Infinity, or a `__proto__` key, reaches the parser as it would on the wire.
 */
import type { SkipReason } from '../../src/model/event.js';

export type Ev = Record<string, unknown>;

/** What the pipeline does with the corrupted frame (the last line a corruption gives). */
export type Outcome = SkipReason | 'kept' | 'duplicate';

export interface Corruption {
  readonly name: string;
  readonly outcome: Outcome;
  /**
   * The lines that stand for the event: the corrupted frame, after the original when the corruption
   * is a resend with other content, or before it when a malformed copy with its id comes first.
   */
  lines(event: Ev, freshId: string): string[];
}

const RAW = '@@raw@@';
const clone = (e: Ev): Ev => JSON.parse(JSON.stringify(e)) as Ev;

/** The event as JSON text with the value at `path` replaced by `raw` (JSON text), or deleted when `raw` is undefined. */
export function withRaw(event: Ev, path: readonly (string | number)[], raw: string | undefined): string {
  const e = clone(event);
  let at: Record<string | number, unknown> = e;
  for (const key of path.slice(0, -1)) {
    const next = at[key];
    if (next === null || typeof next !== 'object') at[key] = {};
    at = at[key] as Record<string | number, unknown>;
  }
  const last = path.at(-1)!;
  if (raw === undefined) {
    delete at[last];
    return JSON.stringify(e);
  }
  // Defined, not assigned: assigning to `__proto__` would set the prototype, not a key.
  Object.defineProperty(at, last, { value: RAW, enumerable: true, configurable: true, writable: true });
  return JSON.stringify(e).replace(JSON.stringify(RAW), () => raw);
}

const set = (name: string, outcome: Outcome, path: readonly (string | number)[], raw: string | undefined): Corruption => ({
  name: `${path.join('.')} = ${raw === undefined ? '(absent)' : raw.length > 40 ? `${raw.slice(0, 40)}…` : raw}${name === '' ? '' : ` (${name})`}`,
  outcome,
  lines: (e, freshId) => [withRaw({ ...e, id: freshId }, path, raw)],
});

/** The same change, keeping the event's own id (a corruption of the id itself, or of something only the id keeps apart). */
const setKeepingId = (name: string, outcome: Outcome, path: readonly (string | number)[], raw: string | undefined): Corruption => ({
  ...set(name, outcome, path, raw),
  lines: (e) => [withRaw(e, path, raw)],
});

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const resourceId = (e: Ev): string => str((e.resource as Ev)['prefect.resource.id']);
/** `prefect.flow-run.` / `prefect.task-run.` and the run's UUID. */
const runIdParts = (e: Ev): [string, string] => {
  const m = /^(prefect\.(?:flow|task)-run\.)(.*)$/.exec(resourceId(e));
  return [m?.[1] ?? '', m?.[2] ?? ''];
};
const nested = (depth: number): string => `${'['.repeat(depth)}${']'.repeat(depth)}`;

/** Every corruption, for a state event of a flow or task run that has related resources. */
export const CORRUPTIONS: readonly Corruption[] = [
  // id
  ...['5', '1e400', '[]', '{}', 'true', '["0198c7d2-0000-7000-8000-000000000001"]'].map((raw) => setKeepingId('', 'wrong_type', ['id'], raw)),
  setKeepingId('', 'missing_field', ['id'], 'null'),
  setKeepingId('', 'missing_field', ['id'], undefined),
  setKeepingId('', 'bad_id', ['id'], '"not-a-uuid"'),
  setKeepingId('', 'bad_id', ['id'], '""'),
  { name: 'id in braces', outcome: 'bad_id', lines: (e) => [withRaw(e, ['id'], JSON.stringify(`{${str(e.id)}}`))] },
  { name: 'id in upper case (the same id)', outcome: 'kept', lines: (e) => [withRaw(e, ['id'], JSON.stringify(str(e.id).toUpperCase()))] },
  // event name
  ...['5', '[]', '{"name":"prefect.task-run.Running"}', 'false', '""'].map((raw) => set('', 'wrong_type', ['event'], raw)),
  set('', 'missing_field', ['event'], 'null'),
  set('', 'wrong_type', ['event'], JSON.stringify('x'.repeat(1025))),
  // occurred
  ...['1764320000000', '-1e400', '[]', '{"$date":"2026-01-01T00:00:00Z"}', 'true'].map((raw) => set('', 'wrong_type', ['occurred'], raw)),
  set('', 'missing_field', ['occurred'], 'null'),
  set('', 'missing_field', ['occurred'], undefined),
  ...[
    'NaN', 'Infinity', '', 'yesterday', '0000-01-01T00:00:00Z', '10000-01-01T00:00:00Z', '+010000-01-01T00:00:00Z', '-000001-01-01T00:00:00Z',
    '1969-12-31T23:59:59.999999Z', '2200-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '1900-01-01T00:00:00Z', '2026-02-30T10:00:00Z',
    '2026-01-01T25:00:00Z', '2026-01-01T10:00:00+24:00', '2026-01-01T10:00:00.1234567890Z', '2026-01-01', '2026-01-01T10:00:00ZZ',
  ].map((t) => set('', 'bad_timestamp', ['occurred'], JSON.stringify(t))),
  ...['1970-01-01T00:00:00Z', '2199-12-31T23:59:59.999999Z', '2026-01-01T10:00:00+23:59'].map((t) => set('far, but in range', 'kept', ['occurred'], JSON.stringify(t))),
  { name: 'occurred without a zone (read as UTC, as Prefect does)', outcome: 'kept', lines: (e, id) => [withRaw({ ...e, id }, ['occurred'], JSON.stringify(str(e.occurred).replace(/Z$/, '')))] },
  { name: 'occurred far ahead and no received', outcome: 'kept', lines: (e, id) => [withRaw({ ...e, id, occurred: '2199-06-01T00:00:00Z' }, ['received'], undefined)] },
  // received: the server's, only ever a bound; a bad one is ignored
  ...['5', 'null', '"soon"', '"1970-01-01T00:00:00Z"', '"2199-01-01T00:00:00Z"', '[]'].map((raw) => set('', 'kept', ['received'], raw)),
  // follows: optional; a bad one is ignored
  ...['5', '"not-a-uuid"', '{}', '[]'].map((raw) => set('', 'kept', ['follows'], raw)),
  // resource
  ...['5', '[]', '"prefect.task-run.0198c7d2-0000-7000-8000-000000000001"', 'true'].map((raw) => set('', 'wrong_type', ['resource'], raw)),
  set('', 'missing_field', ['resource'], 'null'),
  set('', 'missing_field', ['resource'], undefined),
  set('', 'missing_field', ['resource'], '{}'),
  ...['5', 'null', '[]', '{}', 'true', '1e400'].map((raw) => set('', 'wrong_type', ['resource', 'prefect.resource.id'], raw)),
  set('', 'missing_field', ['resource', 'prefect.resource.id'], '""'),
  set('', 'missing_field', ['resource', 'prefect.resource.id'], undefined),
  ...['prefect.run-count', 'prefect.state-type', 'prefect.state-name', 'prefect.resource.name'].flatMap((label) =>
    ['1', 'null', '["RUNNING"]', '{"type":"RUNNING"}', 'false'].map((raw) => set('labels must be strings', 'wrong_type', ['resource', label], raw))),
  ...['EXPLODED', 'AWAITINGRETRY', '', ' RUNNING', 'RUNNING\u0000', '__proto__', 'constructor', 'toString'].map((t) => set('not a Prefect state type', 'unknown_state', ['resource', 'prefect.state-type'], JSON.stringify(t))),
  set('in lower case', 'kept', ['resource', 'prefect.state-type'], '"running"'),
  ...['99999999999999999999999', '9'.repeat(400), '-1', '1.5', '1e3', 'NaN', 'Infinity', '', ' 2', '0x10'].map((n) => set('not a run count Prefect writes', 'kept', ['resource', 'prefect.run-count'], JSON.stringify(n))),
  set('an object value', 'wrong_type', ['resource', '__proto__'], '{"prefect.state-type":"EXPLODED"}'),
  set('a string value', 'kept', ['resource', '__proto__'], '"x"'),
  set('', 'wrong_type', ['resource', 'constructor'], '{"prototype":{"polluted":"yes"}}'),
  set('', 'kept', ['resource', 'constructor'], '"x"'),
  ...(['prefect.task-run.not-a-uuid', 'prefect.task-run.', 'prefect.flow-run.0198c7d2-0000-7000-8000-00000000000', 'prefect.flow-run.0198c7d2-0000-7000-8000-0000000000011'] as const).map((id) =>
    set('no UUID', 'bad_run_id', ['resource', 'prefect.resource.id'], JSON.stringify(id))),
  { name: 'resource id: the run UUID in braces', outcome: 'bad_run_id', lines: (e, id) => { const [p, u] = runIdParts(e); return [withRaw({ ...e, id }, ['resource', 'prefect.resource.id'], JSON.stringify(`${p}{${u}}`))]; } },
  { name: 'resource id: the run UUID in upper case (the same run)', outcome: 'kept', lines: (e, id) => { const [p, u] = runIdParts(e); return [withRaw({ ...e, id }, ['resource', 'prefect.resource.id'], JSON.stringify(`${p}${u.toUpperCase()}`))]; } },
  // related
  ...['5', '{"prefect.resource.id":"prefect.flow.x","prefect.resource.role":"flow"}', '"prefect.flow-run.x"', 'true'].map((raw) => set('', 'wrong_type', ['related'], raw)),
  set('taken as none', 'kept', ['related'], 'null'),
  ...['5', 'null', '[]', '"prefect.flow.x"', 'true'].map((raw) => set('', 'wrong_type', ['related', 0], raw)),
  set('', 'missing_field', ['related', 0], '{}'),
  ...['5', 'null', '[]', '{}', 'false'].map((raw) => set('', 'wrong_type', ['related', 0, 'prefect.resource.id'], raw)),
  set('', 'missing_field', ['related', 0, 'prefect.resource.id'], '""'),
  ...['5', 'null', '["flow"]', '{}', 'true'].map((raw) => set('', 'wrong_type', ['related', 0, 'prefect.resource.role'], raw)),
  set('', 'missing_field', ['related', 0, 'prefect.resource.role'], '""'),
  set('', 'missing_field', ['related', 0, 'prefect.resource.role'], undefined),
  set('', 'wrong_type', ['related', 0, 'prefect.resource.name'], '7'),
  set('', 'wrong_type', ['related', 0, '__proto__'], '{"prefect.resource.role":"flow-run"}'),
  set('a role Prefect does not use', 'kept', ['related', 0, 'prefect.resource.role'], '"__proto__"'),
  ...(['braces', 'upper case'] as const).map((how): Corruption => ({
    name: `related run id: its UUID in ${how}`,
    outcome: 'kept',
    lines: (e, id) => {
      const related = e.related as Ev[];
      const i = Math.max(0, related.findIndex((r) => /^prefect\.(flow|task)-run\./.test(str(r['prefect.resource.id']))));
      const m = /^(.*\.)([^.]*)$/.exec(str(related[i]?.['prefect.resource.id'])) ?? ['', 'prefect.flow-run.', ''];
      return [withRaw({ ...e, id }, ['related', i, 'prefect.resource.id'], JSON.stringify(`${m[1]}${how === 'braces' ? `{${m[2]}}` : m[2].toUpperCase()}`))];
    },
  })),
  // payload
  ...['5', '[]', '"{}"', 'true', '[{"validated_state":{"type":"RUNNING"}}]'].map((raw) => set('', 'wrong_type', ['payload'], raw)),
  set('taken as empty', 'kept', ['payload'], 'null'),
  ...['validated_state', 'intended', 'task_run', 'initial_state'].flatMap((key) =>
    ['5', 'null', '[]', '"RUNNING"', 'true', '{"type":5,"name":[],"message":{},"from":7,"to":null}', '1e400'].map((raw) => set('free-form payload', 'kept', ['payload', key], raw))),
  ...['5', 'null', '"tag-a"', '{}', '[1,null,{},[],"ok-tag",true]', '{"length":3}'].map((raw) => set('free-form payload', 'kept', ['payload', 'task_run', 'tags'], raw)),
  ...['5', 'null', '[]', '"x"', '{"__OTEL_TRACEPARENT":5}', '{"__OTEL_TRACEPARENT":"00-zz-yy-01"}', '{"__proto__":{"__OTEL_TRACEPARENT":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}'].map((raw) =>
    set('free-form payload', 'kept', ['payload', 'task_run', 'labels'], raw)),
  ...['5', 'null', '[]', '{}', '"x"'].map((raw) => set('free-form payload', 'kept', ['payload', 'task_run', 'task_key'], raw)),
  ...['5', '"x"', '[5,null,"x",{"input_type":"task_run","id":5},{"input_type":"task_run","id":"{0198c7d2-0000-7000-8000-000000000001}"}]', '{"0":{"input_type":"task_run","id":"0198c7d2-0000-7000-8000-000000000001"},"length":1}'].map((raw) =>
    set('free-form payload', 'kept', ['payload', 'task_run', 'task_inputs', '__parents__'], raw)),
  set('free-form payload', 'kept', ['payload', 'task_run', 'task_inputs'], '[[[]]]'),
  set('', 'kept', ['payload', '__proto__'], '{"validated_state":{"type":"EXPLODED"},"task_run":{"tags":["polluted"]}}'),
  set('', 'kept', ['payload', 'constructor'], '{"prototype":{"task_run":{"task_key":"polluted"}}}'),
  set('nested 3000 deep', 'kept', ['payload', 'deep'], nested(3000)),
  set('nested 3000 deep', 'kept', ['payload', 'task_run', 'task_inputs'], `{"__parents__":${nested(3000)}}`),
  set('huge numbers', 'kept', ['payload', 'numbers'], '[1e400,-1e400,1e308,-0,5e-324,123456789012345678901234567890]'),
  // nested far deeper than any stack: only described in a skip's detail
  set('nested 100000 deep', 'wrong_type', ['id'], nested(100_000)),
  set('nested 100000 deep', 'wrong_type', ['occurred'], `{"a":${nested(100_000)}}`),
  set('nested 100000 deep', 'wrong_type', ['resource'], nested(100_000)),
  set('nested 100000 deep', 'wrong_type', ['resource', 'prefect.resource.name'], nested(100_000)),
  set('nested 100000 deep', 'wrong_type', ['related', 0], nested(100_000)),
  set('nested 100000 deep', 'wrong_type', ['payload'], nested(100_000)),
  // top level keys Prefect does not send
  set('', 'kept', ['__proto__'], '{"id":"0198c7d2-0000-7000-8000-000000000001","occurred":"2026-01-01T00:00:00Z"}'),
  set('', 'kept', ['constructor'], '{"prototype":{"resource":{"prefect.resource.id":"x"}}}'),
  // the envelope
  ...([
    ['missing_field', (t: string) => `{"type":"event","event":[${t}]}`],
    ['missing_field', (t: string) => `{"type":"event","event":${JSON.stringify(t)}}`],
    ['missing_field', () => '{"type":"event","event":null}'],
    ['not_an_event_message', (t: string) => `{"type":["event"],"event":${t}}`],
    ['not_an_event_message', (t: string) => `{"type":"events","event":${t}}`],
    ['not_an_event_message', (t: string) => `{"type":null,"event":${t}}`],
    ['not_an_event_message', (t: string) => `{"type":{"__proto__":"event"},"event":${t}}`],
  ] as const).map(([outcome, wrap], k): Corruption => ({ name: `envelope ${k}`, outcome, lines: (e) => [wrap(JSON.stringify(e))] })),
  // one id, other content
  {
    name: 'the same id sent again later, as another state',
    outcome: 'duplicate',
    lines: (e) => [JSON.stringify(e), withRaw(withJson(e, ['resource', 'prefect.state-name'], 'Crashed'), ['resource', 'prefect.state-type'], '"CRASHED"')],
  },
  {
    name: 'the same id sent again later, about another run',
    outcome: 'duplicate',
    lines: (e) => [JSON.stringify(e), withRaw(e, ['resource', 'prefect.resource.id'], JSON.stringify(`${runIdParts(e)[0]}0198c7d2-0000-7000-8000-0000000000aa`))],
  },
];

/**
 * Corruptions that reuse the event's own id on a malformed frame sent before it: the frame is
 * skipped, and the event itself must still be taken (a skipped frame is not an event seen).
 */
export const MALFORMED_FIRST: readonly Corruption[] = [
  {
    name: 'a copy with a state type that is not Prefect\'s, then the event',
    outcome: 'unknown_state',
    lines: (e) => [withRaw(e, ['resource', 'prefect.state-type'], '"EXPLODED"'), JSON.stringify(e)],
  },
  {
    name: 'a copy whose resource id has the run UUID in braces, then the event',
    outcome: 'bad_run_id',
    lines: (e) => { const [p, u] = runIdParts(e); return [withRaw(e, ['resource', 'prefect.resource.id'], JSON.stringify(`${p}{${u}}`)), JSON.stringify(e)]; },
  },
];

/** Ids of the demo's kind (version 4 UUIDs), from a seeded generator. */
export function freshIds(random: () => number): () => string {
  const hex = (n: number): string => Array.from({ length: n }, () => Math.floor(random() * 16).toString(16)).join('');
  return () => `${hex(8)}-${hex(4)}-4${hex(3)}-a${hex(3)}-${hex(12)}`;
}

const RUN_RE = /^prefect\.(flow|task)-run\.([0-9a-f-]{36})$/;

/** Each run's own state events (its resource, its kind's event name, a state type label): indexes into `events`, by run id. */
export function stateEventsByRun(events: readonly Ev[]): Map<string, number[]> {
  const byRun = new Map<string, number[]>();
  events.forEach((e, i) => {
    const m = RUN_RE.exec(resourceId(e));
    if (m === null || !str(e.event).startsWith(`prefect.${m[1]}-run.`) || (e.resource as Ev)['prefect.state-type'] === undefined) return;
    byRun.set(m[2]!, [...(byRun.get(m[2]!) ?? []), i]);
  });
  return byRun;
}

/**
 * The events with each corruption sent beside one of `states` (chosen at random), not instead of
 * it: a malformed copy with the event's id before it (MALFORMED_FIRST), a resend with other content
 * or a frame of its own after it. Corruptions that are kept would change the run: leave them out.
 */
export function sentBeside(events: readonly Ev[], states: readonly number[], corruptions: readonly Corruption[], random: () => number): (Ev | string)[] {
  const fresh = freshIds(random);
  const at = new Map<number, Corruption[]>();
  for (const c of corruptions) {
    const i = states[Math.floor(random() * states.length)]!;
    at.set(i, [...(at.get(i) ?? []), c]);
  }
  return events.flatMap((e, i) => {
    const cs = at.get(i) ?? [];
    const before: (Ev | string)[] = cs.filter((c) => MALFORMED_FIRST.includes(c)).map((c) => c.lines(e, fresh())[0]!);
    const after = cs.filter((c) => !MALFORMED_FIRST.includes(c)).map((c) => c.lines(e, fresh()).at(-1)!);
    return [...before, e, ...after];
  });
}

/** The event as an object with the value at `path` set (a plain JSON value). */
function withJson(e: Ev, path: readonly string[], value: unknown): Ev {
  return JSON.parse(withRaw(e, path, JSON.stringify(value))) as Ev;
}
