import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DedupeSet } from '../../src/model/dedupe.js';

const id = (n: number): string => `0198c7d2-eeee-7000-8000-${String(n).padStart(12, '0')}`;

test('dedupe: a repeated id is a duplicate; past the count bound the oldest ids are forgotten first', () => {
  const d = new DedupeSet(60_000, 1_000);
  for (let n = 0; n < 5_000; n++) assert.equal(d.add(id(n), 1_000 + n), true);
  assert.equal(d.size, 1_000);
  assert.equal(d.add(id(4_999), 7_000), false);
  assert.equal(d.has(id(3_999)), false);
  assert.deepEqual(d.toJSON(), Array.from({ length: 1_000 }, (_, j) => [id(4_000 + j), 1_000 + 4_000 + j]));
  // Forgotten ids are new again, and take the newest place.
  assert.equal(d.add(id(0), 7_001), true);
  assert.deepEqual(d.toJSON().at(-1), [id(0), 7_001]);
  assert.deepEqual(d.toJSON()[0], [id(4_001), 5_001]);
});

test('dedupe: ids older than the window are forgotten as time moves on, and a restore applies both bounds', () => {
  const d = new DedupeSet(10_000, 100);
  for (let n = 0; n < 50; n++) d.add(id(n), n * 1_000);
  // At 55 s everything seen before 45 s is past the window.
  d.add(id(999), 55_000);
  assert.deepEqual(d.toJSON().map(([x]) => x), [...Array.from({ length: 5 }, (_, j) => id(45 + j)), id(999)]);
  const r = new DedupeSet(10_000, 3);
  r.restore(d.toJSON(), 55_000);
  assert.deepEqual(r.toJSON(), [[id(48), 48_000], [id(49), 49_000], [id(999), 55_000]]);
  assert.deepEqual(r.takeAdded(), []);
});
