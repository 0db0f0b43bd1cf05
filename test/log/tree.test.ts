import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDuration, renderTraceTrees } from '../../src/log/tree.js';
import type { StateType } from '../../src/model/classify.js';
import type { SpanEventRecord, SpanRecord } from '../../src/model/span-record.js';

const T0 = Date.UTC(2026, 10, 25, 9, 0, 0) * 1000;
const S = 1_000_000;
const TRACE_A = '0198c7d25b1e7a3c9f102b3c4d5e6f70';
const TRACE_B = '0198c7d3aaaa7bbb8ccc0123456789ab';
const TRACE_C = '0198c7d4eeee7fff8aaa0123456789ab';

interface SpanSpec {
  readonly trace?: string;
  readonly id: string;
  readonly parent?: string;
  readonly name: string;
  readonly run?: string;
  readonly start: number;
  readonly end: number;
  readonly state?: readonly [StateType, string];
  readonly error?: string;
  readonly incomplete?: boolean;
  readonly attempt?: number;
  readonly events?: readonly SpanEventRecord[];
}

/** A SpanRecord as the run model would produce it; times in seconds after T0. */
function span(s: SpanSpec): SpanRecord {
  const [type, name] = s.state ?? ['COMPLETED', 'Completed'];
  return {
    traceId: s.trace ?? TRACE_A,
    spanId: s.id,
    parentSpanId: s.parent,
    name: s.name,
    kind: s.parent === undefined ? 'server' : 'internal',
    startUs: T0 + s.start * S,
    endUs: T0 + s.end * S,
    status: s.error !== undefined ? { code: 'error', message: s.error } : type === 'COMPLETED' ? { code: 'ok' } : { code: 'unset' },
    attributes: {},
    events: s.events ?? [],
    links: [],
    run: { id: `run-${s.id}`, type: s.parent === undefined ? 'flow' : 'task', name: s.run, attempt: s.attempt ?? 0, finalState: { type, name }, incomplete: s.incomplete ?? false },
  };
}

const ev = (name: string, atS: number, message?: string): SpanEventRecord => ({
  name, timeUs: T0 + atS * S, attributes: message === undefined ? {} : { 'prefect.state.message': message },
});

/** Trace A: flow → tasks → nested task, a failed rerun, a subflow with a zero-length incomplete task. */
const TRACE_A_SPANS: SpanRecord[] = [
  span({ id: 'a000000000000001', name: 'etl', run: 'crimson-fox', start: 0, end: 12.4 }),
  span({ id: 'a000000000000002', parent: 'a000000000000001', name: 'extract', run: 'extract-3f2', start: 0.5, end: 1.35,
    events: [ev('Pending', 0.5), ev('Running', 0.51), ev('Completed', 1.35)] }),
  span({ id: 'a000000000000003', parent: 'a000000000000002', name: 'parse', run: 'parse-1a2', start: 0.6, end: 0.9 }),
  span({ id: 'a000000000000004', parent: 'a000000000000001', name: 'load', run: 'load-7c1', start: 2, end: 4.1, state: ['FAILED', 'Failed'],
    error: 'ValueError: bad row 17', attempt: 1, events: [ev('Running', 2), ev('Failed', 4.1, 'ValueError: bad row 17')] }),
  span({ id: 'a000000000000005', parent: 'a000000000000001', name: 'quality-checks', run: 'amber-owl', start: 5, end: 8 }),
  span({ id: 'a000000000000006', parent: 'a000000000000005', name: 'check', run: 'check-001', start: 6, end: 6, state: ['RUNNING', 'Running'], incomplete: true }),
];

/** Trace B: a cancelled run whose two children start at the same instant. */
const TRACE_B_SPANS: SpanRecord[] = [
  span({ trace: TRACE_B, id: 'b000000000000001', name: 'publish-report', run: 'quiet-ibis', start: 20, end: 205, state: ['CANCELLED', 'Cancelled'] }),
  span({ trace: TRACE_B, id: 'b000000000000003', parent: 'b000000000000001', name: 'render', run: 'render-9c0', start: 21, end: 80 }),
  span({ trace: TRACE_B, id: 'b000000000000002', parent: 'b000000000000001', name: 'publish', run: 'publish-4d4', start: 21, end: 40 }),
];

/** Trace C: its root was never exported; only an orphan task remains. */
const ORPHAN = span({ trace: TRACE_C, id: 'c000000000000002', parent: 'c000000000000001', name: 'notify', run: 'notify-818', start: 30, end: 30.25, state: ['CRASHED', 'Crashed'], error: 'Crash detected' });

test('renders each trace as a tree: glyphs, run names, states, durations, bars, errors, markers', () => {
  // Input order is scrambled on purpose: traces and children are ordered by start time.
  const spans = [ORPHAN, ...TRACE_B_SPANS, ...[...TRACE_A_SPANS].reverse()];
  const expected = [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  etl  6 spans  12.4 s',
    'etl (crimson-fox)  Completed                            12.4 s  ▕████████████████████▏',
    '├─ extract (extract-3f2)  Completed                     850 ms  ▕ █                  ▏',
    '│  └─ parse (parse-1a2)  Completed                      300 ms  ▕ █                  ▏',
    '├─ load (load-7c1)  Failed  attempt 2                   2.10 s  ▕   ████             ▏  error: ValueError: bad row 17',
    '└─ quality-checks (amber-owl)  Completed                3.00 s  ▕        █████       ▏',
    '   └─ check (check-001)  Running  [incomplete]            0 ms  ▕          █         ▏',
    '',
    'trace 0198c7d3aaaa7bbb8ccc0123456789ab  publish-report  3 spans  3 m 05 s',
    'publish-report (quiet-ibis)  Cancelled                3 m 05 s  ▕████████████████████▏',
    '├─ publish (publish-4d4)  Completed                     19.0 s  ▕██                  ▏',
    '└─ render (render-9c0)  Completed                       59.0 s  ▕██████              ▏',
    '',
    'trace 0198c7d4eeee7fff8aaa0123456789ab  (root not exported)  1 span  250 ms',
    'notify (notify-818)  Crashed  (parent not exported)     250 ms  ▕████████████████████▏  error: Crash detected',
    '',
  ].join('\n');
  assert.equal(renderTraceTrees(spans, { color: false, width: 120 }), expected);
});

test('at a narrow width: run names go first, then names are cut so that the markers stay whole; errors that do not fit get their own line; span events listed', () => {
  const expected = [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  etl  6 spans  12.4 s',
    'etl (crimson-fox)  Completed          12.4 s  ▕████████████▏',
    '├─ extract  Completed                 850 ms  ▕█           ▏',
    '│  │  · +0 ms Pending',
    '│  │  · +10 ms Running',
    '│  │  · … 1 more event',
    '│  └─ parse  Completed                300 ms  ▕█           ▏',
    '├─ load  Failed  attempt 2            2.10 s  ▕  ██        ▏',
    '│     error: ValueError: bad row 17',
    '│     · +0 ms Running',
    '│     · +2.10 s Failed: ValueError: bad row 17',
    '└─ quality-checks  Completed          3.00 s  ▕     ███    ▏',
    '   └─ che…  Running  [incomplete]       0 ms  ▕      █     ▏',
    '',
  ].join('\n');
  assert.equal(renderTraceTrees(TRACE_A_SPANS, { width: 60, maxEventsPerSpan: 2 }), expected);
});

test('colours state names, errors and bars only when asked', () => {
  const plain = renderTraceTrees(TRACE_A_SPANS, { color: false });
  assert.doesNotMatch(plain, /\x1b\[/);
  const coloured = renderTraceTrees(TRACE_A_SPANS, { color: true });
  assert.match(coloured, /\x1b\[32mCompleted\x1b\[0m/);
  assert.match(coloured, /\x1b\[31mFailed\x1b\[0m/);
  assert.match(coloured, /\x1b\[31merror: ValueError: bad row 17\x1b\[0m/);
  assert.match(coloured, /\x1b\[33mRunning\x1b\[0m/);
  assert.match(coloured, /\x1b\[33m  \[incomplete\]\x1b\[0m/);
  // Colour changes nothing but the escape codes.
  assert.equal(coloured.replace(/\x1b\[\d+m/g, ''), plain);
  // The whole drawing: the header in bold, the tree glyphs dim, each state name and its bar in the state's colour.
  const sgr = (code: number) => (text: string): string => `\x1b[${code}m${text}\x1b[0m`;
  const [bold, dim, red, green, yellow] = [sgr(1), sgr(2), sgr(31), sgr(32), sgr(33)];
  assert.equal(renderTraceTrees(TRACE_A_SPANS, { color: true, width: 120 }), [
    `${bold('trace 0198c7d25b1e7a3c9f102b3c4d5e6f70')}  etl  6 spans  12.4 s`,
    `etl (crimson-fox)  ${green('Completed')}                       12.4 s  ${green('▕████████████████████▏')}`,
    `${dim('├─ ')}extract (extract-3f2)  ${green('Completed')}                850 ms  ${green('▕ █                  ▏')}`,
    `${dim('│  └─ ')}parse (parse-1a2)  ${green('Completed')}                 300 ms  ${green('▕ █                  ▏')}`,
    `${dim('├─ ')}load (load-7c1)  ${red('Failed')}  attempt 2              2.10 s  ${red('▕   ████             ▏')}  ${red('error: ValueError: bad row 17')}`,
    `${dim('└─ ')}quality-checks (amber-owl)  ${green('Completed')}           3.00 s  ${green('▕        █████       ▏')}`,
    `${dim('   └─ ')}check (check-001)  ${yellow('Running')}${yellow('  [incomplete]')}       0 ms  ${yellow('▕          █         ▏')}`,
    '',
  ].join('\n'));
});

test('handles empty input, a lone zero-length span and a parent cycle', () => {
  assert.equal(renderTraceTrees([]), '(no spans)\n');
  const lone = span({ id: 'd000000000000001', name: 'tiny', start: 1, end: 1 });
  assert.equal(renderTraceTrees([lone], { width: 60 }), [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  tiny  1 span  0 ms',
    'tiny  Completed        0 ms  ▕█           ▏',
    '',
  ].join('\n'));
  const a = span({ id: 'e000000000000001', parent: 'e000000000000002', name: 'a', start: 0, end: 1 });
  const b = span({ id: 'e000000000000002', parent: 'e000000000000001', name: 'b', start: 0.5, end: 1 });
  // A parent cycle (malformed input) still draws every span once, the first one marked.
  assert.equal(renderTraceTrees([b, a], { width: 80 }), [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  (root not exported)  2 spans  1.00 s',
    'a  Completed  (parent not exported)     1.00 s  ▕████████████████▏',
    '└─ b  Completed                         500 ms  ▕        ████████▏',
    '',
  ].join('\n'));
});

test('formats durations for humans', () => {
  const cases: [number, string][] = [
    [0, '0 ms'], [420, '420 µs'], [850_000, '850 ms'], [999_600, '1.00 s'], [2_414_000, '2.41 s'], [9_996_000, '10.0 s'],
    [12_400_000, '12.4 s'], [59_960_000, '1 m 00 s'], [185_000_000, '3 m 05 s'], [7_620_000_000, '2 h 07 m'], [90_000_000_000, '1 d 01 h'],
  ];
  assert.deepEqual(cases.map(([us]) => formatDuration(us)), cases.map(([, text]) => text));
});

test('a name too long for the line is cut, not what follows it: the state, the attempt and the markers stay; so does the trace header\'s width', () => {
  const long = `extract_customer_records_from_the_legacy_warehouse_${'x'.repeat(150)}`;
  const spans = [
    span({ id: 'f000000000000001', name: `nightly_${long}`, run: 'crimson-fox', start: 0, end: 10 }),
    span({ id: 'f000000000000002', parent: 'f000000000000001', name: long, run: `${long}-abc`, start: 1, end: 2 }),
    span({ id: 'f000000000000003', parent: 'f000000000000001', name: long, run: `${long}-abd`, start: 2, end: 3, state: ['FAILED', 'Failed'], error: 'boom', attempt: 1 }),
    span({ id: 'f000000000000004', parent: 'f000000000000001', name: long, start: 3, end: 3, state: ['RUNNING', 'Running'], incomplete: true }),
  ];
  const expected = [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  nightly_extract_customer_records_from_the_…  4 spans  10.0 s',
    'nightly_extract_customer_records_from_the_legacy_ware…  Completed     10.0 s  ▕████████████████████▏',
    '├─ extract_customer_records_from_the_legacy_warehouse…  Completed     1.00 s  ▕  ██                ▏',
    '├─ extract_customer_records_from_the_legacy_w…  Failed  attempt 2     1.00 s  ▕    ██              ▏',
    '│     error: boom',
    '└─ extract_customer_records_from_the_lega…  Running  [incomplete]       0 ms  ▕      █             ▏',
    '',
  ].join('\n');
  const drawn = renderTraceTrees(spans, { width: 100 });
  assert.equal(drawn, expected);
  assert.ok(drawn.split('\n').every((l) => [...l].length <= 100));
});

test('at 40 columns each span\'s line fits and keeps the start of its state, however short its name gets; the header is not cut', () => {
  const spans = [
    span({ id: 'f000000000000001', name: 'sync-crm', run: 'gentle-heron', start: 0, end: 10.2, state: ['CANCELLED', 'Cancelled'] }),
    span({ id: 'f000000000000002', parent: 'f000000000000001', name: 'fetch_contacts', run: 'fetch_contacts-826', start: 1, end: 2.54 }),
    span({ id: 'f000000000000003', parent: 'f000000000000001', name: 'upsert_contacts', run: 'upsert_contacts-abc', start: 5, end: 5.011, state: ['RUNNING', 'Running'], incomplete: true }),
  ];
  const expected = [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  sync-crm  3 spans  10.2 s',
    'sync-crm  Cancel…     10.2 s  ▕████████▏',
    '├─ fetch_c…  Com…     1.54 s  ▕ █      ▏',
    '└─ upsert_…  Run…      11 ms  ▕    █   ▏',
    '',
  ].join('\n');
  assert.equal(renderTraceTrees(spans, { width: 40 }), expected);
});

test('names in wide characters (Japanese, Chinese, Korean, emoji) take two columns each: the columns stay aligned and lines within the width', () => {
  const spans = [
    span({ id: 'f000000000000001', name: '日次集計フロー', run: 'r', start: 0, end: 10 }),
    span({ id: 'f000000000000002', parent: 'f000000000000001', name: 'データ抽出', run: 'データ抽出-1a2', start: 1, end: 2 }),
    span({ id: 'f000000000000003', parent: 'f000000000000001', name: '📦 load', run: 'load-1', start: 2, end: 3 }),
  ];
  assert.equal(renderTraceTrees(spans, { width: 60 }), [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  日次集計フロー  3 spans  10.0 s',
    '日次集計フロー (r)  Completed         10.0 s  ▕████████████▏',
    '├─ データ抽出  Completed              1.00 s  ▕ █          ▏',
    '└─ 📦 load (load-1)  Completed        1.00 s  ▕  ██        ▏',
    '',
  ].join('\n'));
  // Cut to fit, a wide name loses whole characters; a header that cannot fit keeps its root's name whole.
  assert.equal(renderTraceTrees([span({ id: 'f000000000000009', name: 'データ抽出とデータ変換とデータ読込', start: 0, end: 1 })], { width: 40 }).split('\n')[1], 'データ…  Complet…     1.00 s  ▕████████▏');
});

test('control characters in names, states, errors and span events (ANSI colours, a screen clear, a title, carriage returns, tabs) are drawn as escapes on one line and keep the columns', () => {
  const traceback = 'Traceback (most recent call last):\r\n  File "flow.py", line 3\r\n\x1b[31mValueError\x1b[0m: bad\trow\r17\x1b]0;pwned\x07\x1b[2J';
  const spans = [
    span({ id: 'f000000000000001', name: 'etl\x1b[1m', run: 'red\x1b[31m-fox', start: 0, end: 10, state: ['FAILED', 'Failed\x1b[5m'], error: traceback,
      events: [ev('Failed\x1b[0m', 10, 'boom\x1b[2K\rdone')] }),
    span({ id: 'f000000000000002', parent: 'f000000000000001', name: 'load\tall', run: 'load\u009b31m', start: 1, end: 2 }),
  ];
  assert.equal(renderTraceTrees(spans, { width: 120, maxEventsPerSpan: 1 }), [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  etl\\x1b[1m  2 spans  10.0 s',
    'etl\\x1b[1m (red\\x1b[31m-fox)  Failed\\x1b[5m     10.0 s  ▕████████████████████▏',
    '│  error: Traceback (most recent call last): File "flow.py", line 3 \\x1b[31mValueError\\x1b[0m: bad\\trow\\r17\\x1b]0;pwned…',
    '│  · +10.0 s Failed\\x1b[0m: boom\\x1b[2K\\rdone',
    '└─ load\\tall (load\\x9b31m)  Completed           1.00 s  ▕  ██                ▏',
    '',
  ].join('\n'));
});

test('bars are as long as their spans within a cell, steps that follow one another draw end to end, and a span shorter than a cell is drawn within its parent', () => {
  // 10 s in 20 cells: half a second a cell. Each step starts when the one before it ends.
  const spans = [
    span({ id: 'f000000000000001', name: 'etl', start: 0, end: 10 }),
    span({ id: 'f000000000000002', parent: 'f000000000000001', name: 'extract', start: 0.9, end: 1.64 }),
    span({ id: 'f000000000000007', parent: 'f000000000000002', name: 'connect', start: 0.92, end: 0.95 }),
    span({ id: 'f000000000000003', parent: 'f000000000000001', name: 'transform', start: 1.64, end: 3.15 }),
    span({ id: 'f000000000000004', parent: 'f000000000000001', name: 'load', start: 3.15, end: 6.15 }),
    span({ id: 'f000000000000005', parent: 'f000000000000004', name: 'validate', start: 3.2, end: 4.1 }),
    span({ id: 'f000000000000006', parent: 'f000000000000001', name: 'notify', start: 6.15, end: 6.17 }),
  ];
  assert.equal(renderTraceTrees(spans, { width: 100 }), [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  etl  7 spans  10.0 s',
    'etl  Completed                10.0 s  ▕████████████████████▏',
    '├─ extract  Completed         740 ms  ▕  █                 ▏',
    '│  └─ connect  Completed       30 ms  ▕  █                 ▏',
    '├─ transform  Completed       1.51 s  ▕   ███              ▏',
    '├─ load  Completed            3.00 s  ▕      ██████        ▏',
    '│  └─ validate  Completed     900 ms  ▕      ██            ▏',
    '└─ notify  Completed           20 ms  ▕            █       ▏',
    '',
  ].join('\n'));
});

test('emoji drawn two columns wide outside the pictograph blocks (✅ ❌ ⏳ ⚡ 🟢) take two columns; text-style symbols (© ™ ☀) one', () => {
  const spans = [
    span({ id: 'f000000000000001', name: '⚡ nightly', run: 'r', start: 0, end: 10 }),
    span({ id: 'f000000000000002', parent: 'f000000000000001', name: '✅ validate', start: 1, end: 2 }),
    span({ id: 'f000000000000003', parent: 'f000000000000001', name: '❌ reject ⏳', start: 2, end: 3 }),
    span({ id: 'f000000000000004', parent: 'f000000000000001', name: '🟢 publish', start: 3, end: 4 }),
    span({ id: 'f000000000000005', parent: 'f000000000000001', name: '© ☀ ™ notes', start: 4, end: 5 }),
  ];
  assert.equal(renderTraceTrees(spans, { width: 60 }), [
    'trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  ⚡ nightly  5 spans  10.0 s',
    '⚡ nightly (r)  Completed      10.0 s  ▕████████████▏',
    '├─ ✅ validate  Completed      1.00 s  ▕ █          ▏',
    '├─ ❌ reject ⏳  Completed     1.00 s  ▕  ██        ▏',
    '├─ 🟢 publish  Completed       1.00 s  ▕    █       ▏',
    '└─ © ☀ ™ notes  Completed      1.00 s  ▕     █      ▏',
    '',
  ].join('\n'));
});
