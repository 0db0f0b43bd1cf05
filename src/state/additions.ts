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

  /**
   * The entries of `from` for the keys noted since the last call, oldest first (a key may repeat;
   * keys no longer in `from` are left out), or undefined when some were lost.
   */
  take<V>(from: { get(key: string): V | undefined }): [string, V][] | undefined {
    const keys = this.lost ? undefined : this.keys;
    this.keys = [];
    this.lost = false;
    if (keys === undefined) return undefined;
    const entries: [string, V][] = [];
    for (const key of keys) {
      const value = from.get(key);
      if (value !== undefined) entries.push([key, value]);
    }
    return entries;
  }
}
