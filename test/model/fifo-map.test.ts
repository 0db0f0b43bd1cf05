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

test('FifoMap behaves as a Map kept in insertion order, where replacing or touching a key makes it newest', () => {
  for (const seed of [1, 2, 3]) {
    const next = random(seed);
    const fifo = new FifoMap<number>();
    // The reference: a plain Map with delete-then-set, the semantics FifoMap keeps without its cost.
    const ref = new Map<string, number>();
    for (let i = 0; i < 60_000; i++) {
      const key = `k${Math.floor(next() * 3_000)}`;
      const op = next();
      if (op < 0.4) {
        fifo.set(key, i);
        ref.delete(key);
        ref.set(key, i);
      } else if (op < 0.55) {
        const value = ref.get(key);
        assert.equal(fifo.touch(key), value !== undefined);
        if (value !== undefined) {
          ref.delete(key);
          ref.set(key, value);
        }
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
    assert.deepEqual([...fifo.values()], [...ref.values()]);
  }
});

/** Every pair the queue still holds, before and after its head. */
function queueLength(fifo: FifoMap<unknown>): number {
  return (fifo as unknown as { keys: string[] }).keys.length;
}

test('FifoMap: used as a bounded LRU (new keys, touches, the oldest deleted by key), its queue stays bounded', () => {
  // The open-run table's pattern: a run is added, touched by its later events, and ends by being
  // deleted by key (finished or evicted after a peek), never by shift.
  const fifo = new FifoMap<number>();
  const ref = new Map<string, number>();
  let longest = 0;
  for (let i = 0; i < 300_000; i++) {
    fifo.set(`run${i}`, i);
    ref.set(`run${i}`, i);
    if (i >= 2) {
      fifo.touch(`run${i - 2}`);
      const v = ref.get(`run${i - 2}`);
      if (v !== undefined) {
        ref.delete(`run${i - 2}`);
        ref.set(`run${i - 2}`, v);
      }
    }
    if (fifo.size > 500) {
      const [oldest] = fifo.peek()!;
      assert.equal(oldest, ref.keys().next().value);
      fifo.delete(oldest);
      ref.delete(oldest);
    }
    longest = Math.max(longest, queueLength(fifo));
  }
  assert.equal(fifo.size, 500);
  assert.deepEqual([...fifo], [...ref]);
  assert.ok(longest <= 2 * 501 + 1024 + 4096 * 2, `queue reached ${longest} pairs for 500 entries`);
});

test('FifoMap: a key touched over and over keeps one live place, and the queue stays bounded', () => {
  const fifo = new FifoMap<number>();
  for (let i = 0; i < 100; i++) fifo.set(`k${i}`, i);
  for (let i = 0; i < 200_000; i++) fifo.touch(`k${i % 50}`);
  // k50..k99 were never touched: they are now the oldest, in insertion order, then k0..k49.
  assert.deepEqual([...fifo].map(([k]) => k), [...Array.from({ length: 50 }, (_, j) => `k${50 + j}`), ...Array.from({ length: 50 }, (_, j) => `k${j}`)]);
  assert.ok(queueLength(fifo) <= 2 * fifo.size + 1024, `${queueLength(fifo)} queued pairs for ${fifo.size} entries`);
  assert.equal(fifo.touch('missing'), false);
  assert.equal(fifo.size, 100);
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
