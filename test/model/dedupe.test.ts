import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DedupeSet } from '../../src/model/dedupe.js';
import { jsonPieces } from '../../src/state/json-pieces.js';

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
  assert.deepEqual(r.takeAdded().toJSON(), []);
  // Restored after 60 s in which nothing watched: the ids' times move on by it, and the window keeps them.
  const late = new DedupeSet(10_000, 100);
  late.restore(d.toJSON(), 115_000, 60_000);
  assert.deepEqual(late.toJSON(), [...Array.from({ length: 5 }, (_, j): [string, number] => [id(45 + j), 105_000 + j * 1_000]), [id(999), 115_000]]);
});

/**
 * The set as specified, written the obvious way: a Map in the order ids were seen. `taken` is the
 * sequence number from which `takeAdded` lists.
 */
class ReferenceDedupe {
  private seen = new Map<string, { at: number; seq: number }>();
  private seq = 0;
  private taken = 0;
  constructor(
    private readonly windowMs: number,
    private readonly maxIds: number,
  ) {}
  get size(): number {
    return this.seen.size;
  }
  has(id: string): boolean {
    return this.seen.has(id);
  }
  forget(id: string): void {
    this.seen.delete(id);
  }
  add(id: string, nowMs: number): boolean {
    if (this.seen.has(id)) return false;
    this.seen.set(id, { at: nowMs, seq: this.seq++ });
    this.evict(nowMs);
    return true;
  }
  restore(entries: [string, number][], nowMs: number): void {
    for (const [id, at] of entries) {
      this.seen.delete(id);
      this.seen.set(id, { at, seq: this.seq++ });
    }
    this.evict(nowMs);
    this.taken = this.seq;
  }
  takeAdded(): [string, number][] {
    const out = [...this.seen].filter(([, e]) => e.seq >= this.taken).map(([id, e]): [string, number] => [id, e.at]);
    this.taken = this.seq;
    return out;
  }
  toJSON(): [string, number][] {
    return [...this.seen].map(([id, e]) => [id, e.at]);
  }
  private evict(nowMs: number): void {
    for (const [id, e] of this.seen) {
      if (this.seen.size <= this.maxIds && e.at >= nowMs - this.windowMs) break;
      this.seen.delete(id);
    }
  }
}

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number): () => number {
  // mulberry32: a counter stepped by a constant, then mixed; period 2^32.
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const uuidOf = (rand: () => number): string => {
  const hex = Array.from({ length: 32 }, () => Math.floor(rand() * 16).toString(16)).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
};

test('dedupe: random adds, repeats, ids forgotten, clock jumps, restores and journal takes agree with a plain Map, through the ring growing', () => {
  for (const seed of [1, 2, 3]) {
    const rand = random(seed);
    // Few distinct ids for the first seed (many repeats, many index collisions), many for the others.
    const pool = Array.from({ length: seed === 1 ? 3_000 : 40_000 }, () => uuidOf(rand));
    const [windowMs, maxIds] = seed === 3 ? [5_000, 30_000] : [60_000, 2_500];
    let d = new DedupeSet(windowMs, maxIds);
    let ref = new ReferenceDedupe(windowMs, maxIds);
    let now = 1_000_000;
    for (let step = 0; step < 60_000; step++) {
      const r = rand();
      if (r < 0.0005) {
        // A restart: both load what the other side saved, with a stray repeat of an id inside.
        const saved = ref.toJSON();
        const extra: [string, number][] = saved.length > 0 ? [[saved[0]![0], now]] : [];
        const entries = [...saved, ...extra];
        assert.deepEqual(d.toJSON(), saved);
        d = new DedupeSet(windowMs, maxIds);
        ref = new ReferenceDedupe(windowMs, maxIds);
        d.restore(entries, now);
        ref.restore(entries, now);
      } else if (r < 0.002) {
        assert.deepEqual(d.takeAdded().toJSON(), ref.takeAdded(), `take at step ${step}, seed ${seed}`);
      } else if (r < 0.03) {
        // An event turned down after it was remembered.
        const id = pool[Math.floor(rand() * pool.length)]!;
        d.forget(id);
        ref.forget(id);
      } else {
        // The clock mostly moves on, sometimes stands still and now and then steps back.
        now += r < 0.01 ? -200 : Math.floor(rand() * 3);
        const id = pool[Math.floor(rand() * pool.length)]!;
        assert.equal(d.add(id, now), ref.add(id, now), `add at step ${step}, seed ${seed}`);
      }
      assert.equal(d.size, ref.size);
    }
    assert.deepEqual(d.toJSON(), ref.toJSON());
    for (const id of pool) assert.equal(d.has(id), ref.has(id));
  }
});

test('dedupe: a string that is not a UUID is never a duplicate and is not kept; a restored one, and any entry that is not a pair, is dropped', () => {
  const d = new DedupeSet(60_000, 100);
  assert.equal(d.add('not-a-uuid', 1), true);
  assert.equal(d.add('not-a-uuid', 2), true);
  assert.equal(d.add('0198c7d2-eeee-7000-8000-00000000000g', 3), true);
  assert.equal(d.size, 0);
  // So is an id seen at a time that is not a number.
  assert.equal(d.add(id(9), NaN), true);
  assert.equal(d.add(id(9), NaN), true);
  assert.equal(d.size, 0);
  // A hand-edited state file: entries that are not [UUID, number] pairs are left out.
  const edited = [['evt-1', 5], null, 7, [42, 1], [id(3)], [id(4), '8'], [id(5), null], [id(1), 6], ['0198C7D2-EEEE-7000-8000-000000000002', 7]];
  d.restore(edited as [string, number][], 10);
  // Upper-case digits name the same UUID; it is written back in the canonical form.
  assert.deepEqual(d.toJSON(), [[id(1), 6], [id(2), 7]]);
  assert.equal(d.add(id(2), 11), false);
});

test('dedupe: the state file text written from the words is JSON.stringify of the entries, at every piece boundary', () => {
  const rand = random(7);
  for (const count of [0, 1, 2, 4_095, 4_096, 4_097, 9_000]) {
    const d = new DedupeSet(7 * 86_400_000, 50_000);
    // Whole milliseconds from a live clock, fractions from replay's event clock, and numbers whose
    // digits need zero padding, cross 10^8, pass the safe integers or are negative.
    const times = [1_795_790_881_932, 1_767_571_225_732.493, 0.5, 1e21 + 2 ** 20, 1e8, 99_999_990, 2 ** 53 - 8_000, 2 ** 53 + 2, -5, 0];
    const entries = Array.from({ length: count }, (_, i): [string, number] => [uuidOf(rand), times[i % times.length]! + i]);
    d.restore(entries, 1_795_790_881_932);
    const snapshot = d.snapshot();
    const text = [...jsonPieces(snapshot)].join('');
    assert.equal(text, JSON.stringify(entries), `${count} entries`);
    assert.deepEqual(JSON.parse(text), snapshot.toJSON());
    assert.equal(snapshot.length, count);
    // A copy: what is added after the snapshot is not in it.
    d.add(uuidOf(rand), 1_795_790_881_933);
    assert.equal([...jsonPieces(snapshot)].join(''), text);
  }
});

/**
 * Ids that a hash anyone can work out (the index's mixing of the four words without a secret) puts
 * into the first 128 slots of an index of up to 2^20 slots: the last word is chosen, for each target
 * hash, by running that mixing's last steps backwards.
 */
function idsPiledUpUnderAPublicHash(count: number): string[] {
  const K1 = 0x85ebca6b;
  const K2 = 0xc2b2ae35;
  const inverse = (k: number): number => {
    let x = k;
    for (let i = 0; i < 5; i++) x = Math.imul(x, 2 - Math.imul(k, x));
    return x;
  };
  const unshift = (y: number, s: number): number => {
    let x = y;
    for (let i = 0; i < 32 / s + 1; i++) x = (y ^ (x >>> s)) >>> 0;
    return x;
  };
  // The steps after the last word, backwards.
  const beforeLastSteps = (hash: number): number => unshift(Math.imul(unshift(hash, 16), inverse(K2)) >>> 0, 13);
  const [a, b, c] = [0x0198c7d2, 0x70008000, 0x80000000];
  let h = Math.imul(a ^ (a >>> 16), K1) ^ b;
  h = Math.imul(h ^ (h >>> 13), K2) ^ c;
  const mixedBeforeLastWord = Math.imul(h ^ (h >>> 16), K1);
  const hex = (n: number): string => (n >>> 0).toString(16).padStart(8, '0');
  return Array.from({ length: count }, (_, i) => {
    const hash = (((i >> 7) << 20) | (i & 127)) >>> 0;
    const d = (beforeLastSteps(hash) ^ mixedBeforeLastWord) >>> 0;
    const w = `${hex(a)}${hex(b)}${hex(c)}${hex(d)}`;
    return `${w.slice(0, 8)}-${w.slice(8, 12)}-${w.slice(12, 16)}-${w.slice(16, 20)}-${w.slice(20)}`;
  });
}

test('dedupe: ids made to share a hash that anyone can work out from the source do not pile up in the index (each id seen would walk past all of them): it hashes with a secret of its own', () => {
  const ids = idsPiledUpUnderAPublicHash(20_000);
  assert.equal(new Set(ids).size, ids.length);
  const d = new DedupeSet(3_600_000, 500_000);
  for (const x of ids) assert.equal(d.add(x, 1_000), true);
  for (const x of ids) assert.equal(d.add(x, 2_000), false);
  assert.equal(d.size, ids.length);
  // The longest run of taken slots in the index: what finding an id not there walks, at most.
  const index = (d as unknown as { index: Int32Array }).index;
  let longest = 0;
  let run = 0;
  for (let i = 0; i < 2 * index.length; i++) {
    run = index[i % index.length] !== 0 ? run + 1 : 0;
    longest = Math.max(longest, Math.min(run, index.length));
  }
  // 20,000 ids in 65,536 slots: spread out, the longest run is a few dozen slots.
  assert.equal(index.length, 65_536);
  assert.ok(longest < 500, `the longest run of taken slots is ${longest}`);
});

/** Places in the ring (each an id's 16 bytes, its time and two index slots), whatever they hold. */
const ringPlaces = (d: DedupeSet): number => (d as unknown as { mask: number }).mask + 1;

test('dedupe: ids forgotten as their events are turned down do not grow the ring past the count bound: 200,000 of them beside the ids remembered keep it within four places per id of the bound (2,048 for 1,000), and it agrees with a plain Map throughout', () => {
  const maxIds = 1_000;
  const d = new DedupeSet(60 * 60_000, maxIds);
  const ref = new ReferenceDedupe(60 * 60_000, maxIds);
  let most = 0;
  for (let n = 0; n < 200_000; n++) {
    const now = 1_000_000 + n;
    // One event in a hundred is taken; the rest are turned down after they were remembered.
    const kept = id(n);
    assert.equal(d.add(kept, now), ref.add(kept, now));
    if (n % 100 !== 0) {
      d.forget(kept);
      ref.forget(kept);
    }
    if (n % 7_919 === 0) assert.deepEqual(d.takeAdded().toJSON(), ref.takeAdded(), `take at ${n}`);
    most = Math.max(most, ringPlaces(d));
  }
  assert.equal(d.size, ref.size);
  // The bound, but for the last id: forgotten after the count bound made room for it.
  assert.equal(d.size, maxIds - 1);
  assert.deepEqual(d.toJSON(), ref.toJSON());
  assert.deepEqual(d.takeAdded().toJSON(), ref.takeAdded());
  for (let n = 199_000; n < 200_000; n++) assert.equal(d.has(id(n)), ref.has(id(n)));
  // Half of it dead at most before it is closed up, a power of two: 2,048 places hold 1,000 ids.
  assert.ok(most <= 2_048, `the ring grew to ${most} places for ${maxIds} ids`);
});
