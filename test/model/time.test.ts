import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTimestampUs } from '../../src/model/time.js';

const utcUs = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0): number => Date.UTC(y, mo - 1, d, h, mi, s) * 1000;
/** The first instant refused: every microsecond before it is exact in a double and a uint64 in nanoseconds. */
const END_US = utcUs(2200, 1, 1);

test('timestamps: only instants OTLP can carry (1970 to 2200) with offsets up to ±23:59 are read; the rest is not a time', () => {
  const table: [string, number | undefined][] = [
    // The edges of the range, in UTC and across a zone offset.
    ['1970-01-01T00:00:00Z', 0],
    ['1970-01-01T00:00:00.000001Z', 1],
    ['1969-12-31T23:59:59.999999Z', undefined],
    ['1969-12-31T23:00:00-01:00', 0],
    ['1970-01-01T00:30:00+01:00', undefined],
    ['2199-12-31T23:59:59.999999Z', END_US - 1],
    ['2200-01-01T00:00:00Z', undefined],
    ['2200-01-01T00:30:00+01:00', END_US - 1_800_000_000],
    ['2199-12-31T23:30:00-01:00', undefined],
    // Years Date.UTC would read as 19xx, and years past what uint64 nanoseconds hold.
    ['0001-01-01T00:00:00Z', undefined],
    ['0070-01-01T00:00:00Z', undefined],
    ['0099-06-01T00:00:00Z', undefined],
    ['0100-01-01T00:00:00Z', undefined],
    ['1901-01-01T00:00:00Z', undefined],
    ['2500-01-01T00:00:00Z', undefined],
    ['2600-01-01T00:00:00Z', undefined],
    ['9999-12-31T23:59:59Z', undefined],
    // Zone offsets: hours 0–23, minutes 0–59.
    ['2026-08-21T12:00:05-23:59', utcUs(2026, 8, 22, 11, 59, 5)],
    ['2026-08-21T12:00:05+23:59', utcUs(2026, 8, 20, 12, 1, 5)],
    ['2026-08-21T12:00:05+0530', utcUs(2026, 8, 21, 6, 30, 5)],
    ['2026-08-21T12:00:05.5+05', utcUs(2026, 8, 21, 7, 0, 5) + 500_000],
    ['2026-08-21T12:00:05+24:00', undefined],
    ['2026-08-21T12:00:05+99:99', undefined],
    ['2026-08-21T12:00:05-00:60', undefined],
    ['2026-08-21T12:00:05+2400', undefined],
    // Unchanged: the forms Prefect writes, and what was never a time.
    ['2026-08-21T12:00:05.123456Z', utcUs(2026, 8, 21, 12, 0, 5) + 123_456],
    ['2026-08-21T12:00:05.123456+00:00', utcUs(2026, 8, 21, 12, 0, 5) + 123_456],
    ['2026-08-21t12:00:05z', utcUs(2026, 8, 21, 12, 0, 5)],
    ['2026-08-21 12:00:05', utcUs(2026, 8, 21, 12, 0, 5)],
    ['2026-08-21T12:00:60Z', utcUs(2026, 8, 21, 12, 1, 0)],
    ['2026-08-21T24:00:00Z', undefined],
    ['2026-02-30T00:00:00Z', undefined],
    ['+002026-08-21T12:00:05Z', undefined],
  ];
  assert.deepEqual(table.map(([text]) => [text, parseTimestampUs(text)]), table);
  assert.ok(END_US < Number.MAX_SAFE_INTEGER && BigInt(END_US) * 1000n < 2n ** 64n);
});

test('timestamps: the fast path for the second last read never returns what the full parse refuses', () => {
  assert.equal(parseTimestampUs('2199-12-31T23:59:59.000001Z'), END_US - 999_999);
  assert.equal(parseTimestampUs('2199-12-31T23:59:59.999999Z'), END_US - 1);
  // A refused time is not remembered, so the next one in its second is refused too.
  assert.equal(parseTimestampUs('1901-01-01T00:00:00.000001Z'), undefined);
  assert.equal(parseTimestampUs('1901-01-01T00:00:00.000002Z'), undefined);
});
