/**
 * The keys added to a bounded map since they were last taken: what the state journal appends
 * between full snapshots. It holds at most `max` keys; past that it only remembers that some were
 * lost, and the next save writes the whole state instead.
 */
export class Additions {
  private keys: string[] = [];
  private lost = false;

  constructor(private readonly max: number) {}

  note(key: string): void {
    if (this.lost) return;
    if (this.keys.length >= this.max) {
      this.lost = true;
      this.keys = [];
      return;
    }
    this.keys.push(key);
  }

  /** The keys noted since the last `take` (a key may repeat), or undefined when some were lost. */
  take(): string[] | undefined {
    const keys = this.lost ? undefined : this.keys;
    this.keys = [];
    this.lost = false;
    return keys;
  }
}
