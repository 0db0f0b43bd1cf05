import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FifoMap } from '../../src/model/fifo-map.js';

/** A small deterministic generator, so that a failure can be replayed. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('FifoMap behaves as a Map kept in insertion order, where replacing a key makes it newest', () => {
  for (const seed of [1, 2, 3]) {
    const next = random(seed);
    const fifo = new FifoMap<number>();
    // The reference: a plain Map with delete-then-set, the semantics FifoMap keeps without its cost.
    const ref = new Map<string, number>();
    for (let i = 0; i < 60_000; i++) {
      const key = `k${Math.floor(next() * 3_000)}`;
      const op = next();
      if (op < 0.55) {
        fifo.set(key, i);
        ref.delete(key);
        ref.set(key, i);
      } else if (op < 0.7) {
        assert.equal(fifo.delete(key), ref.delete(key));
      } else if (op < 0.9) {
        const oldest = ref.entries().next().value;
        if (oldest !== undefined) ref.delete(oldest[0]);
        assert.deepEqual(fifo.shift(), oldest);
      } else {
        assert.deepEqual(fifo.peek(), ref.entries().next().value);
        assert.equal(fifo.get(key), ref.get(key));
        assert.equal(fifo.has(key), ref.has(key));
      }
      assert.equal(fifo.size, ref.size);
    }
    assert.deepEqual([...fifo], [...ref]);
  }
});

test('FifoMap: draining gives every live entry once, oldest first, and then nothing', () => {
  const fifo = new FifoMap<string>();
  for (let i = 0; i < 10_000; i++) fifo.set(`k${i % 2_500}`, `v${i}`);
  fifo.delete('k0');
  const drained: [string, string][] = [];
  for (let e = fifo.shift(); e !== undefined; e = fifo.shift()) drained.push(e);
  assert.deepEqual(drained, Array.from({ length: 2_499 }, (_, j) => [`k${j + 1}`, `v${7_500 + j + 1}`]));
  assert.equal(fifo.size, 0);
  assert.equal(fifo.peek(), undefined);
});
