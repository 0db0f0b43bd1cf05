/**
 * A map that forgets its oldest entries in constant time. A plain `Map` used as a queue (set at the
 * end, delete `keys().next()`) slows down without bound in V8: deleted entries stay in the table as
 * holes until it is rehashed, and every walk from the start steps over all of them, so at 500,000
 * entries each eviction cost hundreds of microseconds. Here the order lives in a separate queue;
 * the map is only ever looked up.
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
    const seq = this.nextSeq++;
    // Deleting first keeps the map's own order equal to the queue's (see `rebuild`).
    this.slots.delete(key);
    this.slots.set(key, { value, seq });
    this.keys.push(key);
    this.seqs.push(seq);
    // Replaced and deleted keys leave stale queue entries; never let them outnumber the live ones.
    if (this.keys.length - this.head > 2 * this.slots.size + 1024) this.rebuild();
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
    this.compact();
    return oldest;
  }

  /** Oldest first. */
  *entries(): IterableIterator<[string, V]> {
    for (const [key, slot] of this.slots) yield [key, slot.value];
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.entries();
  }

  private compact(): void {
    if (this.head < 4096 || this.head * 2 < this.keys.length) return;
    this.keys = this.keys.slice(this.head);
    this.seqs = this.seqs.slice(this.head);
    this.head = 0;
  }

  private rebuild(): void {
    this.keys = [];
    this.seqs = [];
    this.head = 0;
    for (const [key, slot] of this.slots) {
      this.keys.push(key);
      this.seqs.push(slot.seq);
    }
  }
}
