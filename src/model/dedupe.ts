import { randomBytes } from 'node:crypto';
import { JSON_PIECES, type JsonWriter } from '../state/json-pieces.js';

/**
 * Event ids seen recently, bounded by age and by count (oldest forgotten first). Prefect's stream
 * repeats events on backfill, reconnect and client resend; an id is remembered long enough to
 * cover the server's 15-minute backfill window plus the resume margin.
 *
 * Event ids are UUIDs (parsing rejects any other), so each is kept as its 128 bits in typed
 * arrays: a ring of (id, time) in the order seen, and an open-addressing index into the ring.
 * That is 32–64 bytes per id (34 measured at 500,000 ids) and no object per id: the hundreds of
 * thousands of ids held give the garbage collector nothing to trace or move. A `Map` of the id
 * strings took 170 bytes and three heap objects per id. Ids forgotten (events turned down) leave
 * dead entries in the ring; it is closed up before it grows while half of it is dead, so it holds
 * at most four places per id remembered, bounded by `PREFECT_OTEL_DEDUPE_MAX_IDS` whatever the
 * stream turns down.
 *
 * The index hashes with a secret of its own (`seed`, random per set): ids come from whoever sends
 * events to Prefect, and ids made to share a hash that anyone can work out would pile up in one
 * run of the index, where each id seen costs a walk past all of them (forty thousand took seconds,
 * the default half million would take a quarter of an hour, and the stream with them).
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
  /** The index's hash secret. */
  private readonly seed: Uint32Array = new Uint32Array(randomBytes(8).buffer, 0, 2);

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
   * UUID is never a duplicate and is not remembered: no event can carry it. Nor is an id seen at a
   * time that is not a finite number, which the age bound would forget at once anyway. `atMs`: the
   * time it is remembered at; `nowMs`: the time ids older than the window are forgotten by (an
   * event's own time may be ahead of the clock).
   */
  add(id: string, atMs: number, nowMs = atMs): boolean {
    if (!readUuid(id, this.probe) || !Number.isFinite(atMs)) return true;
    if (this.find(this.probe) >= 0) return false;
    this.append(this.probe, atMs);
    this.evict(nowMs);
    return true;
  }

  /**
   * Forget `id`: an event remembered and then turned down (a state type Prefect does not have, a
   * payload too deep to write) was not taken, and a later copy of it with its id is not a duplicate.
   */
  forget(id: string): void {
    if (!readUuid(id, this.probe)) return;
    const slot = this.find(this.probe);
    if (slot >= 0) this.supersede(slot);
  }

  has(id: string): boolean {
    return readUuid(id, this.probe) && this.find(this.probe) >= 0;
  }

  /** Every id remembered, oldest first: a copy, for the state file. */
  snapshot(): DedupeEntries {
    return this.entriesFrom(this.headSeq);
  }

  /** Oldest first. */
  toJSON(): [string, number][] {
    return this.snapshot().toJSON();
  }

  /** The ids remembered since the last call (for the state journal), oldest first, those not yet forgotten. */
  takeAdded(): DedupeEntries {
    const entries = this.entriesFrom(Math.max(this.takenSeq, this.headSeq));
    this.takenSeq = this.nextSeq;
    return entries;
  }

  /**
   * Entries read from a state file, oldest first; a repeated id takes its later place and time.
   * An entry that is not a [UUID, finite number] pair is left out. `downMs`: how long nothing
   * watched since the file was saved; the entries' times move on by it, so an id is remembered for
   * the window of time the stream was followed. A restart after an outage longer than the window
   * reads the resume margin again, and must still know those ids.
   */
  restore(entries: readonly (readonly [string, number])[], nowMs: number, downMs = 0): void {
    for (const entry of entries as readonly unknown[]) {
      if (!Array.isArray(entry)) continue;
      const [id, at] = entry as unknown[];
      if (typeof id !== 'string' || typeof at !== 'number' || !Number.isFinite(at) || !readUuid(id, this.probe)) continue;
      const slot = this.find(this.probe);
      if (slot >= 0) this.supersede(slot);
      this.append(this.probe, at + downMs);
    }
    this.evict(nowMs);
    this.takenSeq = this.nextSeq;
  }

  private entriesFrom(fromSeq: number): DedupeEntries {
    let count = 0;
    for (let seq = fromSeq; seq < this.nextSeq; seq++) if (!isNaN(this.times[seq & this.mask]!)) count += 1;
    const ids = new Uint32Array(4 * count);
    const times = new Float64Array(count);
    let n = 0;
    for (let seq = fromSeq; seq < this.nextSeq; seq++) {
      const pos = seq & this.mask;
      const at = this.times[pos]!;
      if (isNaN(at)) continue;
      for (let w = 0; w < 4; w++) ids[4 * n + w] = this.ids[4 * pos + w]!;
      times[n++] = at;
    }
    return new DedupeEntries(ids, times);
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
    if (this.nextSeq - this.headSeq > this.mask) {
      // Full. Ids forgotten (events turned down after they were remembered) leave dead entries that
      // only the age or count bound would let go of, from the oldest on: a stream of such events
      // would otherwise grow the ring past the ids it remembers. At least half dead: closed up, else grown.
      if (2 * (this.nextSeq - this.headSeq - this.live) >= this.nextSeq - this.headSeq) this.closeUp();
      else this.grow();
    }
    const pos = this.nextSeq & this.mask;
    this.ids.set(words, 4 * pos);
    this.times[pos] = at;
    this.nextSeq += 1;
    this.live += 1;
    this.reindex(pos);
  }

  /** Put ring position `pos` into the index, at the first free slot from its id's hash. */
  private reindex(pos: number): void {
    const { index, indexMask } = this;
    let i = this.hashAt(pos) & indexMask;
    while (index[i] !== 0) i = (i + 1) & indexMask;
    index[i] = pos + 1;
  }

  /** An earlier entry of an id seen again while restoring, or one forgotten: it stays in the ring, dead. */
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
    const { ids, index, indexMask, seed } = this;
    for (let i = hashWords(seed, a, b, c, d) & indexMask; ; i = (i + 1) & indexMask) {
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
    return hashWords(this.seed, ids[at]!, ids[at + 1]!, ids[at + 2]!, ids[at + 3]!);
  }

  /**
   * Move the live entries together, in order, from the head on, and rebuild the index. Their
   * sequence numbers become consecutive; the journal's mark moves with them, so that `takeAdded`
   * still lists those added since it last did.
   */
  private closeUp(): void {
    const { ids, times, mask } = this;
    let to = this.headSeq;
    let taken = this.takenSeq;
    for (let seq = this.headSeq; seq < this.nextSeq; seq++) {
      const from = seq & mask;
      if (isNaN(times[from]!)) {
        if (seq < this.takenSeq) taken -= 1;
        continue;
      }
      const pos = to & mask;
      if (pos !== from) {
        ids.copyWithin(4 * pos, 4 * from, 4 * from + 4);
        times[pos] = times[from]!;
      }
      to += 1;
    }
    for (let seq = to; seq < this.nextSeq; seq++) times[seq & mask] = NaN;
    this.takenSeq = Math.max(taken, this.headSeq);
    this.nextSeq = to;
    this.index.fill(0);
    for (let seq = this.headSeq; seq < to; seq++) this.reindex(seq & mask);
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
      for (let w = 0; w < 4; w++) ids[4 * to + w] = this.ids[4 * from + w]!;
      times[to] = this.times[from]!;
    }
    this.ids = ids;
    this.times = times;
    this.mask = mask;
    this.index = new Int32Array(2 * capacity);
    this.indexMask = 2 * capacity - 1;
    for (let seq = this.headSeq; seq < this.nextSeq; seq++) {
      const pos = seq & mask;
      if (!isNaN(times[pos]!)) this.reindex(pos);
    }
  }
}

/**
 * Entries of a dedupe set, oldest first, copied out of it: they stay as they were while the state
 * is written a piece at a time. Their JSON is `[["<uuid>",<ms>],…]`, written straight from the
 * words without a string or an array per entry.
 */
export class DedupeEntries implements JsonWriter {
  constructor(
    private readonly ids: Uint32Array,
    private readonly times: Float64Array,
  ) {}

  get length(): number {
    return this.times.length;
  }

  toJSON(): [string, number][] {
    return Array.from(this.times, (at, i): [string, number] => [formatUuid(this.ids, 4 * i), at]);
  }

  *[JSON_PIECES](): Generator<string, void, undefined> {
    const { ids, times } = this;
    if (times.length === 0) {
      yield '[]';
      return;
    }
    // `,["` + 36 + `",` + a number's at most 24 characters + `]`.
    const buf = Buffer.allocUnsafe(ENTRIES_PER_PIECE * 66 + 2);
    for (let from = 0; from < times.length; from += ENTRIES_PER_PIECE) {
      const to = Math.min(from + ENTRIES_PER_PIECE, times.length);
      let n = writeEntries(buf, ids, times, from, to);
      if (to === times.length) buf[n++] = 93; // ]
      yield buf.toString('latin1', 0, n);
    }
  }
}

/** Entries `from` to `to` as JSON into `buf` (from its start, with the list's `[` or a `,` before each); returns the end. */
function writeEntries(buf: Buffer, ids: Uint32Array, times: Float64Array, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    buf[n++] = i === 0 ? 91 /* [ */ : 44; /* , */
    buf[n++] = 91; // [
    buf[n++] = 34; // "
    writeUuid(buf, n, ids, 4 * i);
    n += 36;
    buf[n++] = 34; // "
    buf[n++] = 44; // ,
    n = writeNumber(buf, n, times[i]!);
    buf[n++] = 93; // ]
  }
  return n;
}

/** `JSON.stringify(value)` of a finite number into `buf` at `n`; returns the end. */
function writeNumber(buf: Buffer, n: number, value: number): number {
  if (Number.isSafeInteger(value) && value >= 0) {
    // Whole milliseconds from the clock: the digits, eight at a time in 32-bit arithmetic.
    if (value < 1e8) return writeDigits(buf, n, value, 0);
    const high = Math.floor(value / 1e8);
    return writeDigits(buf, writeNumber(buf, n, high), value - high * 1e8, 8);
  }
  const text = String(value);
  for (let k = 0; k < text.length; k++) buf[n++] = text.charCodeAt(k);
  return n;
}

/** The decimal digits of `x` (0 ≤ x < 1e8), at least `width` of them (zero-padded); returns the end. */
function writeDigits(buf: Buffer, n: number, x: number, width: number): number {
  let digits = 1;
  for (let rest = (x / 10) | 0; rest > 0; rest = (rest / 10) | 0) digits += 1;
  const end = n + Math.max(digits, width);
  for (let at = end - 1; at >= n; at--) {
    const q = (x / 10) | 0;
    buf[at] = 48 + x - q * 10;
    x = q;
  }
  return end;
}

/** Entries written per piece of the state file: about 250 KB. */
const ENTRIES_PER_PIECE = 4096;

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
/** One UUID being formatted. */
const uuidText = Buffer.alloc(36);

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

/** The canonical lowercase dashed form of the UUID at `ids[at..at+3]`, as 36 bytes into `buf` from `n`. */
function writeUuid(buf: Buffer, n: number, ids: Uint32Array, at: number): void {
  let k = 0;
  for (let w = 0; w < 4; w++) {
    const word = ids[at + w]!;
    for (let shift = 28; shift >= 0; shift -= 4) buf[n + DIGIT_AT[k++]!] = HEX_CODE[(word >>> shift) & 15]!;
  }
  buf[n + 8] = buf[n + 13] = buf[n + 18] = buf[n + 23] = 45; // -
}

/**
 * The canonical form of the UUID at `ids[at..at+3]` as one flat string: put together from pieces,
 * a string is a chain of a dozen short-lived objects until it is written.
 */
function formatUuid(ids: Uint32Array, at: number): string {
  writeUuid(uuidText, 0, ids, at);
  return uuidText.toString('latin1');
}

/**
 * All four words mixed (time-ordered UUIDs share their leading bits), with the set's two secret
 * words: one before the first word, one after the last, so that neither a hash nor the order of
 * hashes of ids that differ in their last word can be worked out without them.
 */
function hashWords(seed: Uint32Array, a: number, b: number, c: number, d: number): number {
  let h = a ^ seed[0]!;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) ^ b;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) ^ c;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) ^ d;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) ^ seed[1]!;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
