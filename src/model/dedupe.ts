import { Additions } from '../state/additions.js';
import { FifoMap } from './fifo-map.js';

/**
 * Event ids seen recently, bounded by age and by count (oldest forgotten first). Prefect's stream
 * repeats events on backfill, reconnect and client resend; an id is remembered long enough to
 * cover the server's 15-minute backfill window plus the resume margin.
 */
export class DedupeSet {
  private readonly seen = new FifoMap<number>();
  private readonly added: Additions;

  constructor(
    private readonly windowMs: number,
    private readonly maxIds: number,
  ) {
    this.added = new Additions(maxIds);
  }

  get size(): number {
    return this.seen.size;
  }

  /** True when `id` is new (and now remembered); false for a duplicate. */
  add(id: string, nowMs: number): boolean {
    if (this.seen.has(id)) return false;
    this.seen.set(id, nowMs);
    this.added.note(id);
    this.evict(nowMs);
    return true;
  }

  has(id: string): boolean {
    return this.seen.has(id);
  }

  private evict(nowMs: number): void {
    const oldestAllowed = nowMs - this.windowMs;
    for (let oldest = this.seen.peek(); oldest !== undefined; oldest = this.seen.peek()) {
      if (this.seen.size <= this.maxIds && oldest[1] >= oldestAllowed) break;
      this.seen.shift();
    }
  }

  toJSON(): [string, number][] {
    return [...this.seen];
  }

  /** The ids remembered since the last call (for the state journal); undefined when too many to list. */
  takeAdded(): [string, number][] | undefined {
    return this.added.take(this.seen);
  }

  restore(entries: readonly (readonly [string, number])[], nowMs: number): void {
    for (const [id, at] of entries) this.seen.set(id, at);
    this.evict(nowMs);
  }
}
