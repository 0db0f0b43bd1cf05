/**
 * The strict Prometheus text reader: a well-formed exposition read whole, and each rule it checks
 * broken once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePrometheusText } from './prometheus-text.js';

const GOOD = [
  '# HELP jobs_total Jobs done, by "kind" \\\\ with a\\nsecond line.',
  '# TYPE jobs_total counter',
  'jobs_total{kind="a\\"b\\\\c\\nd"} 3',
  'jobs_total{kind="plain"} 1e+21',
  '# TYPE temp gauge',
  'temp NaN',
  '# TYPE lag_seconds histogram',
  'lag_seconds_bucket{le="0.5"} 1',
  'lag_seconds_bucket{le="1"} 2',
  'lag_seconds_bucket{le="+Inf"} 2',
  'lag_seconds_sum 1.25',
  'lag_seconds_count 2',
  '',
].join('\n');

test('a well-formed exposition is read whole: families, help unescaped, label values unescaped, values as Prometheus reads them', () => {
  assert.deepEqual(parsePrometheusText(GOOD), [
    {
      name: 'jobs_total', type: 'counter', help: 'Jobs done, by "kind" \\ with a\nsecond line.',
      samples: [{ name: 'jobs_total', labels: { kind: 'a"b\\c\nd' }, value: 3 }, { name: 'jobs_total', labels: { kind: 'plain' }, value: 1e21 }],
    },
    { name: 'temp', type: 'gauge', help: undefined, samples: [{ name: 'temp', labels: {}, value: NaN }] },
    {
      name: 'lag_seconds', type: 'histogram', help: undefined,
      samples: [
        { name: 'lag_seconds_bucket', labels: { le: '0.5' }, value: 1 },
        { name: 'lag_seconds_bucket', labels: { le: '1' }, value: 2 },
        { name: 'lag_seconds_bucket', labels: { le: '+Inf' }, value: 2 },
        { name: 'lag_seconds_sum', labels: {}, value: 1.25 },
        { name: 'lag_seconds_count', labels: {}, value: 2 },
      ],
    },
  ]);
});

test('each rule broken is an error naming it', () => {
  const broken: [string, string][] = [
    ['# TYPE a counter\na 1', 'the text does not end with a newline'],
    ['# TYPE a counter\n# TYPE a counter\na 1\n', 'line 2: second TYPE for a'],
    ['# HELP a x\n# HELP a y\na 1\n', 'line 2: second HELP for a'],
    ['a 1\n# TYPE a counter\n', 'line 2: TYPE for a after its samples'],
    ['a 1\nb 1\na{x="1"} 2\n', 'family a: its lines are not together'],
    ['a{x="1"} 1\na{x="1"} 2\n', 'line 2: series a{x="1"} twice'],
    ['a{__x="1"} 1\n', 'line 1: invalid label name "__x"'],
    ['a{x-y="1"} 1\n', 'line 1: invalid label name "x-y"'],
    ['a{x="1",x="2"} 1\n', 'line 1: label x twice'],
    ['a{x="a\\tb"} 1\n', 'line 1: label x\'s value has an escape \\t the format does not know'],
    ['# HELP a tab\\there\na 1\n', 'line 1: HELP text has an escape \\t the format does not know'],
    ['a 1,000\n', 'line 1: value "1,000" is not a number Prometheus reads'],
    ['a Infinity\n', 'line 1: value "Infinity" is not a number Prometheus reads'],
    ['# TYPE a counter\na -1\n', 'line 2: counter a is negative'],
    ['1a 1\n', 'line 1: invalid metric name "1a"'],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n', 'h: +Inf bucket 2 differs from _count 3'],
    ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', 'h: bucket le=Infinity below the one before: not cumulative'],
    ['# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', 'h: le 1 not above 2'],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', 'h: no +Inf bucket last'],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n', 'h: _sum or _count missing'],
  ];
  assert.deepEqual(
    broken.map(([text]) => {
      try {
        parsePrometheusText(text);
        return 'read without error';
      } catch (err) {
        return (err as Error).message;
      }
    }),
    broken.map(([, message]) => message),
  );
});
