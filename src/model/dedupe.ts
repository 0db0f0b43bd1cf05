/**
 * Event ids seen recently, bounded by age and by count (oldest forgotten first). Prefect's stream
 * repeats events on backfill, reconnect and client resend; an id is remembered long enough to
 * cover the server's 15-minute backfill window plus the resume margin.
 *
 * Event ids are UUIDs (parsing rejects any other), so each is kept as its 128 bits in typed
 * arrays: a ring of (id, time) in the order seen, and an open-addressing index into the ring.
 * That is 32–64 bytes per id (34 measured at 500,000 ids) and no object per id: the hundreds of
 * thousands of ids held give the garbage collector nothing to trace or move. A `Map` of the id
 * strings took 170 bytes and three heap objects per id.
 */
export class DedupeSet {
  /** Ring of ids, four 32-bit words each; the entry with sequence number `s` sits at `s & mask`. */
  private ids: Uint32Array;
  /** When each ring entry was seen; NaN for an entry superseded by a later copy of its id. */
  private times: Float64Array;
  private mask: number;
  /** Ring position + 1 of each id held (0: empty), by hash, linear probing. */
  private index: Int32Array;
  private indexMask: number;
  /** Sequence numbers of the oldest entry and of the next one. */
  private headSeq = 0;
  private nextSeq = 0;
  /** The first sequence number not yet handed to the state journal. */
  private takenSeq = 0;
  private live = 0;
  private readonly probe = new Uint32Array(4);

  constructor(
    private readonly windowMs: number,
    private readonly maxIds: number,
  ) {
    this.ids = new Uint32Array(4 * INITIAL_CAPACITY);
    this.times = new Float64Array(INITIAL_CAPACITY);
    this.mask = INITIAL_CAPACITY - 1;
    this.index = new Int32Array(2 * INITIAL_CAPACITY);
    this.indexMask = 2 * INITIAL_CAPACITY - 1;
  }

  get size(): number {
    return this.live;
  }

  /**
   * True when `id` is new (and now remembered); false for a duplicate. A string that is not a
   * UUID is never a duplicate and is not remembered: no event can carry it.
   */
  add(id: string, nowMs: number): boolean {
    if (!readUuid(id, this.probe)) return true;
    if (this.find(this.probe) >= 0) return false;
    this.append(this.probe, nowMs);
    this.evict(nowMs);
    return true;
  }

  has(id: string): boolean {
    return readUuid(id, this.probe) && this.find(this.probe) >= 0;
  }

  /** Oldest first. */
  toJSON(): [string, number][] {
    return this.entriesFrom(this.headSeq);
  }

  /** The ids remembered since the last call (for the state journal), oldest first, those not yet forgotten. */
  takeAdded(): [string, number][] {
    const entries = this.entriesFrom(Math.max(this.takenSeq, this.headSeq));
    this.takenSeq = this.nextSeq;
    return entries;
  }

  /** Entries read from a state file, oldest first; a repeated id takes its later place and time. */
  restore(entries: readonly (readonly [string, number])[], nowMs: number): void {
    for (const [id, at] of entries) {
      if (typeof at !== 'number' || isNaN(at) || !readUuid(id, this.probe)) continue;
      const slot = this.find(this.probe);
      if (slot >= 0) this.supersede(slot);
      this.append(this.probe, at);
    }
    this.evict(nowMs);
    this.takenSeq = this.nextSeq;
  }

  private entriesFrom(fromSeq: number): [string, number][] {
    const out: [string, number][] = [];
    for (let seq = fromSeq; seq < this.nextSeq; seq++) {
      const pos = seq & this.mask;
      const at = this.times[pos]!;
      if (!isNaN(at)) out.push([formatUuid(this.ids, 4 * pos), at]);
    }
    return out;
  }

  private evict(nowMs: number): void {
    const oldestAllowed = nowMs - this.windowMs;
    while (this.headSeq < this.nextSeq) {
      const pos = this.headSeq & this.mask;
      const at = this.times[pos]!;
      if (!isNaN(at)) {
        if (this.live <= this.maxIds && at >= oldestAllowed) break;
        this.unindex(pos);
        this.live -= 1;
      }
      this.headSeq += 1;
    }
  }

  private append(words: Uint32Array, at: number): void {
    if (this.nextSeq - this.headSeq > this.mask) this.grow();
    const pos = this.nextSeq & this.mask;
    this.ids.set(words, 4 * pos);
    this.times[pos] = at;
    this.nextSeq += 1;
    this.live += 1;
    let i = hashWords(words[0]!, words[1]!, words[2]!, words[3]!) & this.indexMask;
    while (this.index[i] !== 0) i = (i + 1) & this.indexMask;
    this.index[i] = pos + 1;
  }

  /** An earlier entry of an id seen again (only while restoring): it stays in the ring, dead. */
  private supersede(pos: number): void {
    this.unindex(pos);
    this.times[pos] = NaN;
    this.live -= 1;
  }

  /** The ring position holding `words`, or -1. */
  private find(words: Uint32Array): number {
    const a = words[0]!;
    const b = words[1]!;
    const c = words[2]!;
    const d = words[3]!;
    const { ids, index, indexMask } = this;
    for (let i = hashWords(a, b, c, d) & indexMask; ; i = (i + 1) & indexMask) {
      const slot = index[i]!;
      if (slot === 0) return -1;
      const at = 4 * (slot - 1);
      if (ids[at] === a && ids[at + 1] === b && ids[at + 2] === c && ids[at + 3] === d) return slot - 1;
    }
  }

  /** Take ring position `pos` out of the index, moving back the entries probed past it. */
  private unindex(pos: number): void {
    const { index, indexMask } = this;
    let hole = this.hashAt(pos) & indexMask;
    while (index[hole] !== pos + 1) hole = (hole + 1) & indexMask;
    for (let j = (hole + 1) & indexMask; index[j] !== 0; j = (j + 1) & indexMask) {
      const home = this.hashAt(index[j]! - 1) & indexMask;
      // Entry j may fill the hole unless its home lies cyclically in (hole, j].
      const between = hole <= j ? home > hole && home <= j : home > hole || home <= j;
      if (!between) {
        index[hole] = index[j]!;
        hole = j;
      }
    }
    index[hole] = 0;
  }

  private hashAt(pos: number): number {
    const at = 4 * pos;
    const ids = this.ids;
    return hashWords(ids[at]!, ids[at + 1]!, ids[at + 2]!, ids[at + 3]!);
  }

  /** Double the ring (keeping each entry's sequence number) and rebuild the index. */
  private grow(): void {
    const capacity = 2 * (this.mask + 1);
    const ids = new Uint32Array(4 * capacity);
    const times = new Float64Array(capacity);
    const mask = capacity - 1;
    for (let seq = this.headSeq; seq < this.nextSeq; seq++) {
      const from = seq & this.mask;
      const to = seq & mask;
      ids.set(this.ids.subarray(4 * from, 4 * from + 4), 4 * to);
      times[to] = this.times[from]!;
    }
    this.ids = ids;
    this.times = times;
    this.mask = mask;
    this.index = new Int32Array(2 * capacity);
    this.indexMask = 2 * capacity - 1;
    for (let seq = this.headSeq; seq < this.nextSeq; seq++) {
      const pos = seq & mask;
      if (isNaN(times[pos]!)) continue;
      let i = this.hashAt(pos) & this.indexMask;
      while (this.index[i] !== 0) i = (i + 1) & this.indexMask;
      this.index[i] = pos + 1;
    }
  }
}

const INITIAL_CAPACITY = 1024;

/** Value of each hex digit by character code; -1 for any other character. */
const HEX_VALUE = new Int8Array(128).fill(-1);
for (let v = 0; v < 16; v++) {
  HEX_VALUE[v.toString(16).charCodeAt(0)] = v;
  HEX_VALUE[v.toString(16).toUpperCase().charCodeAt(0)] = v;
}
/** Character codes of the lowercase hex digits. */
const HEX_CODE = Array.from({ length: 16 }, (_, v) => v.toString(16).charCodeAt(0));
/** Where the 32 digits of a dashed UUID go. */
const DIGIT_AT = Array.from({ length: 36 }, (_, i) => i).filter((i) => i !== 8 && i !== 13 && i !== 18 && i !== 23);
/** The character codes of one UUID being formatted; the dashes stay in place. */
const uuidCodes: number[] = Array.from({ length: 36 }, () => 45 /* - */);

/** The 128 bits of a dashed UUID into `out`; false when `text` is not one. */
function readUuid(text: string, out: Uint32Array): boolean {
  if (text.length !== 36) return false;
  let word = 0;
  let w = 0;
  for (let i = 0; i < 36; i++) {
    const c = text.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 45 /* - */) return false;
      continue;
    }
    const v = c < 128 ? HEX_VALUE[c]! : -1;
    if (v < 0) return false;
    word = (word << 4) | v;
    // Digits 8, 16, 24 and 32 close a word; the dashes sit at 8, 13, 18, 23.
    if (i === 7 || i === 17 || i === 27 || i === 35) {
      out[w++] = word;
      word = 0;
    }
  }
  return true;
}

/**
 * The canonical lowercase dashed form of the UUID at `ids[at..at+3]`, made as one flat string: put
 * together from pieces, a string is a chain of a dozen short-lived objects until it is written.
 */
function formatUuid(ids: Uint32Array, at: number): string {
  let k = 0;
  for (let w = 0; w < 4; w++) {
    const word = ids[at + w]!;
    for (let shift = 28; shift >= 0; shift -= 4) uuidCodes[DIGIT_AT[k++]!] = HEX_CODE[(word >>> shift) & 15]!;
  }
  return String.fromCharCode.apply(null, uuidCodes);
}

/** All four words mixed (time-ordered UUIDs share their leading bits). */
function hashWords(a: number, b: number, c: number, d: number): number {
  let h = Math.imul(a ^ (a >>> 16), 0x85ebca6b) ^ b;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) ^ c;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) ^ d;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
