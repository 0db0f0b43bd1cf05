import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { classify } from '../../src/model/classify.js';
import { excerpt, parseEvent, parseEventText } from '../../src/model/event.js';
import { canonicalUuid, spanIdForRun, traceIdForRun } from '../../src/model/ids.js';
import { spanIdForRun as libSpanIdForRun, traceIdForRun as libTraceIdForRun } from '../../src/index.js';
import { parseTimestampUs, usToHrTime, usToIso } from '../../src/model/time.js';

const FIXTURES = new URL('../../../test/fixtures/', import.meta.url);
const [flowEnvelope, taskBare] = readFileSync(new URL('reference-examples.jsonl', FIXTURES), 'utf8')
  .split('\n')
  .filter((l) => l.startsWith('{'));

test('timestamps: pydantic Z and isoformat +00:00 forms give the same microsecond', () => {
  const z = parseTimestampUs('2026-08-21T12:00:05.123456Z');
  assert.equal(z, Date.UTC(2026, 7, 21, 12, 0, 5) * 1000 + 123456);
  assert.equal(parseTimestampUs('2026-08-21T12:00:05.123456+00:00'), z);
  assert.equal(parseTimestampUs('2026-08-21T14:00:05.123456+02:00'), z);
  assert.equal(parseTimestampUs('2026-08-21T12:00:05.123456789Z'), z, 'nanoseconds are cut to microseconds');
  assert.equal(parseTimestampUs('2026-08-21T12:00:05Z'), Date.UTC(2026, 7, 21, 12, 0, 5) * 1000);
  assert.equal(parseTimestampUs('2026-08-21T12:00:05.5'), Date.UTC(2026, 7, 21, 12, 0, 5) * 1000 + 500000, 'naive = UTC');
  for (const bad of ['', 'yesterday', '2026-02-30T00:00:00Z', '2026-13-01T00:00:00Z', '2026-08-21T25:00:00Z', '2026-08-21']) {
    assert.equal(parseTimestampUs(bad), undefined, bad);
  }
  assert.deepEqual(usToHrTime(z), [Math.floor(Date.UTC(2026, 7, 21, 12, 0, 5) / 1000), 123456000]);
  assert.equal(usToIso(z), '2026-08-21T12:00:05.123456Z');
});

test('timestamps: within the second of the last one read, every fraction is read as on its own', () => {
  const second = Date.UTC(2026, 7, 21, 12, 0, 5) * 1000;
  assert.equal(parseTimestampUs('2026-08-21T12:00:05.000001Z'), second + 1);
  const cases: [string, number | undefined][] = [
    ['2026-08-21T12:00:05.1Z', second + 100000],
    ['2026-08-21T12:00:05.12Z', second + 120000],
    ['2026-08-21T12:00:05.987654Z', second + 987654],
    ['2026-08-21T12:00:05.9876549Z', second + 987654],
    ['2026-08-21T12:00:05.123456789Z', second + 123456],
    ['2026-08-21T12:00:05.1234567891Z', undefined],
    ['2026-08-21T12:00:05.Z', undefined],
    ['2026-08-21T12:00:05.12a4Z', undefined],
    ['2026-08-21T12:00:05.-1Z', undefined],
    ['2026-08-21T12:00:05.5+01:00', second + 500000 - 3_600_000_000],
  ];
  for (const [text, us] of cases) {
    parseTimestampUs('2026-08-21T12:00:05.000001Z');
    assert.equal(parseTimestampUs(text), us, text);
  }
});

test('ids: trace id is the root run UUID in hex; span id is SHA-256 of the dashed UUID (and of uuid:n for reruns)', () => {
  const run = '0198C7D2-5B1E-7A3C-9F10-2B3C4D5E6F70';
  assert.equal(canonicalUuid(run), '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70');
  assert.equal(canonicalUuid('0198c7d25b1e7a3c9f102b3c4d5e6f70'), '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70');
  assert.equal(canonicalUuid('not-a-uuid'), undefined);
  assert.equal(traceIdForRun('0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70'), '0198c7d25b1e7a3c9f102b3c4d5e6f70');
  // Independently computed: printf %s 0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70 | sha256sum | cut -c1-16
  assert.equal(spanIdForRun('0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70'), 'b2ad0c72402549ef');
  // Its reruns: printf %s 0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70:1 | sha256sum | cut -c1-16 (and :2).
  assert.deepEqual(
    [1, 2].map((n) => spanIdForRun('0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', n)),
    ['be36c34382a062ba', 'bbe656205c831354'],
  );
});

test('ids: the library\'s spanIdForRun and traceIdForRun take a run id as Prefect shows it (dashed, either case) or as a trace id shows a root run (32 hex digits), and give the ids of the spans exported for it', () => {
  const id = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
  const forms = [id, id.toUpperCase(), id.replace(/-/g, ''), id.replace(/-/g, '').toUpperCase(), ` ${id}\n`];
  assert.deepEqual(
    forms.map((f) => [libSpanIdForRun(f), libSpanIdForRun(f, 2), libTraceIdForRun(f)]),
    forms.map(() => [spanIdForRun(id), spanIdForRun(id, 2), '0198c7d25b1e7a3c9f102b3c4d5e6f70']),
  );
  assert.equal(spanIdForRun(id), 'b2ad0c72402549ef');
  // No run has such an id: a run's name, a rerun count that is no whole number.
  assert.throws(() => libSpanIdForRun('crimson-fox'), { name: 'TypeError', message: 'spanIdForRun: expected a run id (a UUID, dashed or as 32 hex digits), got "crimson-fox"' });
  assert.throws(() => libTraceIdForRun(undefined as unknown as string), { name: 'TypeError', message: 'traceIdForRun: expected a run id (a UUID, dashed or as 32 hex digits), got undefined' });
  for (const rerun of [-1, 1.5, Number.NaN]) assert.throws(() => libSpanIdForRun(id, rerun), { name: 'TypeError', message: `spanIdForRun: rerun must be a whole number ≥ 0, got ${rerun}` });
});

test('ids: canonicalUuid accepts exactly the 8-4-4-4-12 hex form (any case) and the 32-digit form', () => {
  const pattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const good = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
  const variants = [good, good.toUpperCase(), `${good} `, ` ${good.slice(1)}`, good.replace(/-/g, '_'), good.slice(0, 35), `${good}0`];
  // Every single-character change of the good id: each position, each character class.
  for (let i = 0; i < good.length; i++) for (const c of ['0', 'a', 'F', 'g', 'G', '-', '/', ':', '@', '`', '{', 'é']) variants.push(`${good.slice(0, i)}${c}${good.slice(i + 1)}`);
  for (const text of variants) {
    const expected = pattern.test(text) ? text.toLowerCase() : undefined;
    assert.equal(canonicalUuid(text), expected, text);
  }
  assert.equal(canonicalUuid(good), good);
});

test('time: usToIso writes every microsecond across millisecond and second boundaries', () => {
  const base = Date.UTC(2026, 7, 21, 12, 0, 5) * 1000;
  const cases: [number, string][] = [
    [base, '2026-08-21T12:00:05.000000Z'],
    [base + 1, '2026-08-21T12:00:05.000001Z'],
    [base + 999, '2026-08-21T12:00:05.000999Z'],
    [base + 1000, '2026-08-21T12:00:05.001000Z'],
    [base + 999_999, '2026-08-21T12:00:05.999999Z'],
    [base + 1_000_000, '2026-08-21T12:00:06.000000Z'],
    [base - 1, '2026-08-21T12:00:04.999999Z'],
    [Date.UTC(2026, 11, 31, 23, 59, 59) * 1000 + 999_999, '2026-12-31T23:59:59.999999Z'],
  ];
  for (const [us, iso] of cases) {
    assert.equal(usToIso(us), iso);
    assert.equal(parseTimestampUs(iso), us, `round trip of ${iso}`);
  }
});

test('parser: the reference §4a envelope becomes a whole typed event', () => {
  const r = parseEventText(flowEnvelope!);
  assert.equal(r.ok, true);
  if (!r.ok) return;
  // Labels and payload are kept as sent: the resource's and each related resource's whole label map.
  const sent = (JSON.parse(flowEnvelope!) as { event: { resource: Record<string, string>; related: Record<string, string>[]; payload: unknown } }).event;
  assert.deepEqual(r.event.resource.labels, sent.resource);
  assert.deepEqual(r.event.related.map((x) => x.labels), sent.related);
  assert.deepEqual(r.event.payload, {
    intended: { from: 'PENDING', to: 'RUNNING' },
    initial_state: { type: 'PENDING', name: 'Pending' },
    validated_state: { type: 'RUNNING', name: 'Running' },
  });
  assert.deepEqual(
    { ...r.event, related: r.event.related.map((x) => [x.role, x.id, x.name]), payload: undefined, resource: { ...r.event.resource, labels: undefined } },
    {
      id: '0f3c2b1a-6666-4f70-8a81-5d6e7f8091a2',
      name: 'prefect.flow-run.Running',
      occurred: '2026-08-21T12:00:05.123456Z',
      occurredUs: Date.UTC(2026, 7, 21, 12, 0, 5) * 1000 + 123456,
      received: '2026-08-21T12:00:05.140211Z',
      receivedUs: Date.UTC(2026, 7, 21, 12, 0, 5) * 1000 + 140211,
      resource: { id: 'prefect.flow-run.0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', name: 'crimson-fox', labels: undefined },
      related: [
        ['flow', 'prefect.flow.6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', 'etl'],
        ['deployment', 'prefect.deployment.7b2e1d8f-2222-4b3c-8d4e-1f2a3b4c5d6e', 'prod'],
        ['work-queue', 'prefect.work-queue.8c3f2e90-3333-4c4d-9e5f-2a3b4c5d6e7f', 'default'],
        ['work-pool', 'prefect.work-pool.9d4031a1-4444-4d5e-8f60-3b4c5d6e7f80', 'k8s-pool'],
        ['task-run', 'prefect.task-run.0198c7d1-ffff-7e00-8a00-aaaaaaaaaaaa', 'amber-owl'],
        ['tag', 'prefect.tag.etl', undefined],
        ['tag', 'prefect.tag.nightly', undefined],
        ['creator', 'prefect.automation.ae5142b2-5555-4e6f-9071-4c5d6e7f8091', 'rerun-on-failure'],
      ],
      payload: undefined,
      follows: '1e4d3c2b-7777-4081-9b92-6e7f8091a2b3',
    },
  );
  assert.deepEqual(classify(r.event), {
    kind: 'state',
    run: { type: 'flow', id: '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70', name: 'crimson-fox' },
    state: { type: 'RUNNING', name: 'Running', message: '', from: 'PENDING', runCount: 1 },
  });
});

test('parser: the reference §4b bare task-run event is a task state event', () => {
  const r = parseEventText(taskBare!);
  assert.equal(r.ok, true);
  if (!r.ok) return;
  assert.deepEqual(classify(r.event), {
    kind: 'state',
    run: { type: 'task', id: '0198c7d2-6000-7abc-8def-0123456789ab', name: 'extract-3f2' },
    state: { type: 'RUNNING', name: 'Running', message: '', from: 'PENDING', runCount: 1 },
  });
});

test('classifier: custom names, heartbeats, events naming runs (innermost first), unrelated, unknown states', () => {
  const base = JSON.parse(taskBare!) as Record<string, unknown>;
  const withResource = (event: string, resource: Record<string, string>, related: unknown[] = []) => {
    const r = parseEvent({ ...base, event, resource, related, payload: {} });
    assert.ok(r.ok, JSON.stringify(r));
    return classify(r.event);
  };
  const flowRun = 'prefect.flow-run.0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
  const taskRun = 'prefect.task-run.0198c7d2-6000-7abc-8def-0123456789ab';
  assert.deepEqual(
    withResource('prefect.flow-run.Cached', { 'prefect.resource.id': flowRun, 'prefect.state-type': 'COMPLETED', 'prefect.state-name': 'Cached', 'prefect.state-message': 'from cache' }),
    { kind: 'state', run: { type: 'flow', id: flowRun.slice(17), name: undefined }, state: { type: 'COMPLETED', name: 'Cached', message: 'from cache', from: undefined, runCount: undefined } },
  );
  assert.deepEqual(withResource('prefect.flow-run.heartbeat', { 'prefect.resource.id': flowRun, 'prefect.version': '3.8.4' }), {
    kind: 'heartbeat',
    run: { type: 'flow', id: flowRun.slice(17), name: undefined },
  });
  assert.deepEqual(
    withResource('acme.rows.loaded', { 'prefect.resource.id': 'acme.table.orders' }, [
      { 'prefect.resource.id': flowRun, 'prefect.resource.role': 'flow-run', 'prefect.resource.name': 'crimson-fox' },
      { 'prefect.resource.id': taskRun, 'prefect.resource.role': 'task-run', 'prefect.resource.name': 'extract-3f2' },
    ]),
    {
      kind: 'run-event',
      runs: [
        { type: 'task', id: taskRun.slice(17), name: 'extract-3f2' },
        { type: 'flow', id: flowRun.slice(17), name: 'crimson-fox' },
      ],
    },
  );
  assert.deepEqual(withResource('prefect.work-pool.ready', { 'prefect.resource.id': 'prefect.work-pool.x' }), { kind: 'unrelated' });
  assert.deepEqual(withResource('prefect.flow-run.Weird', { 'prefect.resource.id': flowRun, 'prefect.state-type': 'EXPLODED' }), {
    kind: 'invalid',
    reason: 'unknown_state',
    detail: 'state type "EXPLODED"',
  });
  assert.deepEqual(withResource('prefect.flow-run.Running', { 'prefect.resource.id': 'prefect.flow-run.nope', 'prefect.state-type': 'RUNNING' }), {
    kind: 'invalid',
    reason: 'bad_run_id',
    detail: 'resource "prefect.flow-run.nope" does not end in a UUID',
  });
});

test('parser: malformed input gives a reason, never an exception', () => {
  const good = JSON.parse(taskBare!) as Record<string, unknown>;
  const cases: [unknown, string][] = [
    ['{not json', 'invalid_json'],
    ['[1,2]', 'not_an_object'],
    ['"text"', 'not_an_object'],
    ['{"type":"auth_success"}', 'not_an_event_message'],
    ['{"type":"event"}', 'missing_field'],
    [{ ...good, id: undefined }, 'missing_field'],
    [{ ...good, id: 42 }, 'wrong_type'],
    [{ ...good, id: 'abc' }, 'bad_id'],
    [{ ...good, occurred: 'yesterday' }, 'bad_timestamp'],
    [{ ...good, occurred: 1234 }, 'wrong_type'],
    [{ ...good, event: undefined }, 'missing_field'],
    [{ ...good, resource: { 'prefect.resource.id': 'x', n: 1 } }, 'wrong_type'],
    [{ ...good, resource: {} }, 'missing_field'],
    [{ ...good, related: [{ 'prefect.resource.id': 'x' }] }, 'missing_field'],
    [{ ...good, related: 'nope' }, 'wrong_type'],
    [{ ...good, payload: [1] }, 'wrong_type'],
    ['x'.repeat(3 * 1024 * 1024), 'too_large'],
    // Fewer characters than the bound, more bytes of UTF-8 (3 each): too large, not judged by its length.
    ['雪'.repeat(800_000), 'too_large'],
  ];
  for (const [input, reason] of cases) {
    const r = typeof input === 'string' ? parseEventText(input) : parseEvent(input);
    assert.equal(r.ok, false, JSON.stringify(input).slice(0, 80));
    if (!r.ok) assert.equal(r.reason, reason, JSON.stringify(input).slice(0, 80));
  }
  // Optional fields may be missing: related, payload, follows, received.
  const minimal = parseEvent({ id: good.id, occurred: good.occurred, event: 'x.y', resource: { 'prefect.resource.id': 'x' } });
  assert.deepEqual(minimal.ok && { ...minimal.event }, {
    id: '0198c7d2-6001-7000-8000-00000000000b',
    name: 'x.y',
    occurred: '2026-08-21T12:00:06.000001Z',
    occurredUs: Date.UTC(2026, 7, 21, 12, 0, 6) * 1000 + 1,
    received: undefined,
    receivedUs: undefined,
    resource: { id: 'x', name: undefined, labels: { 'prefect.resource.id': 'x' } },
    related: [],
    payload: {},
    follows: undefined,
  });
});

test('parser: a skip\'s detail is short whatever the input: long keys and values are cut, a deep or cyclic value is only described', () => {
  const good = JSON.parse(taskBare!) as Record<string, unknown>;
  const longKey = `k${'e'.repeat(1_500_000)}`;
  const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const cases: [unknown, string, string][] = [
    [JSON.stringify({ ...good, resource: { 'prefect.resource.id': 'x', [longKey]: 5 } }), 'wrong_type', `resource.k${'e'.repeat(59)}… is a number, labels must be strings`],
    [JSON.stringify({ ...good, related: [{ 'prefect.resource.id': 'x', [longKey]: null }] }), 'wrong_type', `related[0].k${'e'.repeat(59)}… is null, labels must be strings`],
    [`{"type":"event${'x'.repeat(1_500_000)}"}`, 'not_an_event_message', `message type "event${'x'.repeat(55)}"…`],
    [`{"type":${deep}}`, 'not_an_event_message', 'message type an array'],
    [{ type: cyclic }, 'not_an_event_message', 'message type an object'],
    ['{"type":42}', 'not_an_event_message', 'message type 42'],
    [{ ...good, id: { a: 1 } }, 'wrong_type', 'id is an object'],
    ['{"type":"auth_success"}', 'not_an_event_message', 'message type "auth_success"'],
    [JSON.stringify({ ...good, id: 'u'.repeat(100) }), 'bad_id', `id "${'u'.repeat(60)}"… is not a UUID`],
    [JSON.stringify({ ...good, occurred: 'soon' }), 'bad_timestamp', 'occurred "soon"'],
  ];
  const got = cases.map(([input]) => {
    const r = typeof input === 'string' ? parseEventText(input) : parseEvent(input);
    return r.ok ? { ok: true } : { reason: r.reason, detail: r.detail };
  });
  assert.deepEqual(got, cases.map(([, reason, detail]) => ({ reason, detail })));
});

test('classifier: a state\'s type, name and message come from the resource labels, else from `validated_state`; the type in any case; an intended "from" that is null or empty is none', () => {
  const base = JSON.parse(taskBare!) as { resource: Record<string, string>; payload: Record<string, unknown> };
  const { 'prefect.state-type': _type, 'prefect.state-name': _name, 'prefect.state-message': _message, ...otherLabels } = base.resource;
  const stateOf = (labels: Record<string, string>, payload: Record<string, unknown>): unknown => {
    const r = parseEvent({ ...base, resource: { ...otherLabels, ...labels }, payload: { ...base.payload, ...payload } });
    assert.ok(r.ok, JSON.stringify(r));
    const c = classify(r.event);
    return c.kind === 'state' ? c.state : c;
  };
  const validated = { type: 'FAILED', name: 'TimedOut', message: 'took too long' };
  assert.deepEqual(
    [
      stateOf({ 'prefect.state-type': 'running', 'prefect.state-name': 'Running', 'prefect.state-message': 'go' }, { intended: { from: 'PENDING', to: 'RUNNING' } }),
      stateOf({}, { validated_state: validated, intended: { from: null, to: 'FAILED' } }),
      stateOf({ 'prefect.state-type': 'FAILED', 'prefect.state-name': '' }, { validated_state: validated, intended: { from: '', to: 'FAILED' } }),
      stateOf({ 'prefect.state-type': 'CRASHED', 'prefect.state-message': '' }, { validated_state: {}, intended: {} }),
    ],
    [
      { type: 'RUNNING', name: 'Running', message: 'go', from: 'PENDING', runCount: 1 },
      { type: 'FAILED', name: 'TimedOut', message: 'took too long', from: undefined, runCount: 1 },
      { type: 'FAILED', name: 'TimedOut', message: 'took too long', from: undefined, runCount: 1 },
      // Without a name anywhere: the event name's suffix (`prefect.task-run.<state name>`).
      { type: 'CRASHED', name: 'Running', message: '', from: undefined, runCount: 1 },
    ],
  );
});

test('classifier: a run count is read when it is an integer OTLP holds exactly; longer digit strings are not counts Prefect writes and are left out', () => {
  const base = JSON.parse(taskBare!) as { resource: Record<string, string> };
  const runCountOf = (text: string): unknown => {
    const r = parseEvent({ ...base, resource: { ...base.resource, 'prefect.run-count': text } });
    assert.ok(r.ok, JSON.stringify(r));
    const c = classify(r.event);
    assert.equal(c.kind, 'state');
    return c.kind === 'state' ? c.state.runCount : 'not a state';
  };
  assert.deepEqual(
    ['0', '1', '12', '007', '999999999999999', '1000000000000000', '99999999999999999999999', '9'.repeat(400), '-1', '1.5', '1e3', 'Infinity', ''].map((t) => [t.slice(0, 30), runCountOf(t)]),
    [['0', 0], ['1', 1], ['12', 12], ['007', 7], ['999999999999999', 999_999_999_999_999], ['1000000000000000', undefined], ['99999999999999999999999', undefined],
      ['9'.repeat(30), undefined], ['-1', undefined], ['1.5', undefined], ['1e3', undefined], ['Infinity', undefined], ['', undefined]],
  );
});

test('excerpt: the excerpt of a skipped line is its whitespace flattened and cut, also where whitespace runs cross what is read of a long line', () => {
  const plain = (text: string, max: number): string => {
    const flat = text.replace(/\s+/g, ' ');
    return flat.length > max ? `${flat.slice(0, max)}…` : flat;
  };
  const texts: string[] = ['', ' ', 'a', '{"id": 1}', 'x'.repeat(160), 'x'.repeat(161), `${' \n\t'.repeat(100_000)}{"event": "late"}`];
  // Whitespace runs of every length around 4×, 32× and 256× the excerpt's length, at every offset near them.
  for (const at of [640, 5120, 40_960]) {
    for (const run of [1, 2, 159, 160, 161, 700, 6000, 50_000]) {
      for (const shift of [-2, -1, 0, 1]) texts.push(`${'y'.repeat(Math.max(0, at - run + shift))}${' '.repeat(run)}z${'w'.repeat(200)}`);
    }
  }
  for (const max of [10, 160]) for (const text of texts) assert.equal(excerpt(text, max), plain(text, max), `${text.length} chars, max ${max}`);
});
