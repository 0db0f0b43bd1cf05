/**
 * A map that forgets its oldest entries in constant time, and can move an entry to the newest end
 * (`touch`) without allocating. A plain `Map` used as a queue (set at the end, delete
 * `keys().next()`) slows down without bound in V8: deleted entries stay in the table as holes until
 * it is rehashed, and every walk from the start steps over all of them, so at 500,000 entries each
 * eviction cost hundreds of microseconds. Here the order lives in a separate queue of (key, seq)
 * pairs; the map is only ever looked up. A key's live pair is the one whose seq its slot holds;
 * older pairs of the same key are stale and skipped.
 */
export class FifoMap<V> {
  private readonly slots = new Map<string, { value: V; seq: number }>();
  private keys: string[] = [];
  private seqs: number[] = [];
  private head = 0;
  private nextSeq = 0;

  get size(): number {
    return this.slots.size;
  }

  get(key: string): V | undefined {
    return this.slots.get(key)?.value;
  }

  has(key: string): boolean {
    return this.slots.has(key);
  }

  /** Insert, or replace and make newest. */
  set(key: string, value: V): void {
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = { value, seq: -1 };
      this.slots.set(key, slot);
    } else slot.value = value;
    this.enqueue(key, slot);
  }

  /** Make an entry newest, keeping its value; false when there is none. */
  touch(key: string): boolean {
    const slot = this.slots.get(key);
    if (slot === undefined) return false;
    this.enqueue(key, slot);
    return true;
  }

  delete(key: string): boolean {
    return this.slots.delete(key);
  }

  /** The oldest entry, left in place. */
  peek(): [string, V] | undefined {
    while (this.head < this.keys.length) {
      const key = this.keys[this.head]!;
      const slot = this.slots.get(key);
      if (slot !== undefined && slot.seq === this.seqs[this.head]) return [key, slot.value];
      this.head += 1;
    }
    return undefined;
  }

  /** Remove and return the oldest entry. */
  shift(): [string, V] | undefined {
    const oldest = this.peek();
    if (oldest !== undefined) {
      this.slots.delete(oldest[0]);
      this.head += 1;
    }
    return oldest;
  }

  /** Oldest first. */
  *entries(): IterableIterator<[string, V]> {
    const { keys, seqs } = this;
    for (let i = this.head; i < keys.length; i++) {
      const slot = this.slots.get(keys[i]!);
      if (slot !== undefined && slot.seq === seqs[i]) yield [keys[i]!, slot.value];
    }
  }

  /** Oldest first. */
  *values(): IterableIterator<V> {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.entries();
  }

  /** Make `slot` (already in the map) the newest pair of `key`. */
  private enqueue(key: string, slot: { seq: number }): void {
    slot.seq = this.nextSeq++;
    this.keys.push(key);
    this.seqs.push(slot.seq);
    // Pairs before the head are gone; replaced, touched and deleted keys leave stale pairs after it.
    // Neither may outnumber the live ones.
    if (this.keys.length - this.head > 2 * this.slots.size + 1024) this.rebuild();
    else if (this.head >= 4096 && this.head * 2 >= this.keys.length) this.compact();
  }

  private compact(): void {
    this.keys = this.keys.slice(this.head);
    this.seqs = this.seqs.slice(this.head);
    this.head = 0;
  }

  /** Keep only the live pairs, in order. */
  private rebuild(): void {
    const keys: string[] = [];
    const seqs: number[] = [];
    for (let i = this.head; i < this.keys.length; i++) {
      const slot = this.slots.get(this.keys[i]!);
      if (slot !== undefined && slot.seq === this.seqs[i]) {
        keys.push(this.keys[i]!);
        seqs.push(this.seqs[i]!);
      }
    }
    this.keys = keys;
    this.seqs = seqs;
    this.head = 0;
  }
}
