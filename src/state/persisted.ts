import { rename } from 'node:fs/promises';
import type { Logger } from 'pino';
import { failureFields } from '../log/err.js';
import { errorText } from '../errors.js';
import type { DedupeEntries } from '../model/dedupe.js';
import { canonicalUuid } from '../model/ids.js';
import type { SpanRecord } from '../model/span-record.js';
import type { TrackerSnapshot } from '../model/tracker.js';
import type { Pipeline } from '../pipeline.js';
import { isCtx, isNum, isObj, isOpenRun, isPendingSpan, isStr } from './entry-checks.js';
import { jsonPieces } from './json-pieces.js';
import { StateTakenError, type StateStore } from './state-store.js';

/**
 * What the state file holds: enough to resume as if the process had never stopped. Version 2
 * names a generation; the journal's lines of the same generation are applied on top of it.
 */
export interface PersistedState<Ids = [string, number][]> {
  readonly version: 1 | 2;
  readonly generation?: number;
  readonly savedAt: string;
  /** Latest `occurred` seen, µs since the epoch: the resume cursor. */
  readonly cursorUs: number | null;
  /**
   * Ms up to which the stream was followed, on the Prefect server's clock (absent in files written before it was kept).
   * A stream quiet for hours leaves the cursor hours behind: the restart reads the history from
   * here, not from the cursor, whose margin's event ids may be forgotten by then.
   */
  readonly coveredUntilMs?: number | null;
  /** Recently seen event ids with the time they were seen (written as `DedupeEntries`). */
  readonly dedupe: Ids;
  readonly tracker: TrackerSnapshot;
  /** Finished spans the collector had not accepted yet at shutdown. */
  readonly pendingSpans: SpanRecord[];
  /** The Prefect API followed, without credentials (absent in files written before it was kept): a file of another server is said at start. */
  readonly apiUrl?: string;
}

/**
 * One journal line: the event ids and finished runs added since the previous save, and the parts
 * of the state that change in place (cursor, open runs), whole. The newest complete line wins.
 * The spans waiting for the collector: those queued since the previous save (`spans`) and the ids
 * of those that left the queue since (`gone`: delivered, or dropped and counted); absent in lines
 * written before they were journaled.
 */
interface JournalLine<Ids = [string, number][]> {
  readonly generation: number;
  readonly savedAt: string;
  readonly cursorUs: number | null;
  readonly coveredUntilMs?: number | null;
  readonly dedupe: Ids;
  readonly finished: TrackerSnapshot['finished'];
  readonly tracker: Omit<TrackerSnapshot, 'finished'>;
  readonly spans?: SpanRecord[];
  readonly gone?: string[];
}

/** The whole state to persist, with the spans not delivered yet. */
function snapshotState(pipeline: Pipeline, pendingSpans: SpanRecord[], generation: number, coveredUntilMs: number | undefined, apiUrl: string | undefined): PersistedState<DedupeEntries> {
  return {
    ...(apiUrl === undefined ? {} : { apiUrl }),
    version: LATEST_VERSION,
    generation,
    savedAt: new Date().toISOString(),
    cursorUs: pipeline.cursorUs ?? null,
    coveredUntilMs: coveredUntilMs ?? null,
    dedupe: pipeline.dedupe.snapshot(),
    tracker: pipeline.tracker.snapshot(),
    pendingSpans,
  };
}

/**
 * The last save before exit failed after it had taken the spans the collector had not accepted out
 * of the queue: they are in no file and no queue, lost. Its message is the write's.
 */
export class SpansNotKeptError extends Error {
  constructor(
    readonly spans: number,
    cause: unknown,
  ) {
    super(errorText(cause), { cause });
    this.name = 'SpansNotKeptError';
  }
}

/** The format this version writes; it reads this one and the ones before. */
const LATEST_VERSION = 2;

/** One journal line: the JSON, a slice at a time, then its newline. */
function* jsonLine(value: unknown): Generator<string, void, undefined> {
  yield* jsonPieces(value);
  yield '\n';
}

/** Below this, the journal is never worth keeping instead of rewriting the state file. */
const JOURNAL_MIN_BYTES = 1 << 20;

/**
 * Saves the state every few seconds without rewriting what has not changed. The event ids and
 * finished runs (up to hundreds of thousands, and most of the state's size) are appended to the
 * journal as they are added; the state file is rewritten whole only when the journal has grown
 * past it, at shutdown, or after a failed write. So a save costs what changed since the last one.
 * Every save holds the spans still waiting for the collector too: a finished run is written as
 * finished, so a crash must not take its span with it (a collector down for an hour holds an
 * hour of spans); a span sent twice after a crash is better than a span lost.
 */
export class StateWriter {
  private generation = 0;
  private fileBytes = 0;
  private journalBytes = 0;
  /** The length of the last journal line. */
  private lineBytes = 0;
  private whole = true;
  /** Ids of the undelivered spans the state on disk holds. */
  private savedSpans = new Set<string>();

  constructor(
    private readonly store: Pick<StateStore, 'save' | 'append'>,
    private readonly pipeline: Pipeline,
    /** The journal may always grow to this size, however small the state file. */
    private readonly journalMinBytes = JOURNAL_MIN_BYTES,
    /** Up to when the stream was followed (the event subscriber's `coveredUntilMs`). */
    private readonly coveredUntilMs: () => number | undefined = () => undefined,
    /** The Prefect API followed, without credentials, written into the state file. */
    private readonly apiUrl?: string,
  ) {}

  /**
   * `drain`: the last save before exit; the spans not yet delivered are taken out of the queue.
   * Resolves to the number of undelivered spans the state now holds.
   */
  async save(drain: boolean): Promise<number> {
    const dedupe = this.pipeline.dedupe.takeAdded();
    const finished = this.pipeline.tracker.takeFinished();
    const traces = this.pipeline.traces;
    const pending = (drain ? traces?.drainQueued() : traces?.peekQueued()) ?? [];
    const pendingIds = new Set(pending.map((span) => span.spanId));
    const whole = drain || this.whole || finished === undefined;
    const covered = this.coveredUntilMs();
    try {
      // A line is about as long as the last one (the open runs are most of it): appended when that
      // fits, and made a slice at a time while it is written, as a rewrite is, since with many open
      // runs it is megabytes of JSON that would hold up the stream.
      if (!whole && this.journalBytes + this.lineBytes <= Math.max(this.fileBytes, this.journalMinBytes)) {
        const line: JournalLine<DedupeEntries> = {
          generation: this.generation,
          savedAt: new Date().toISOString(),
          cursorUs: this.pipeline.cursorUs ?? null,
          coveredUntilMs: covered ?? null,
          dedupe,
          finished,
          tracker: this.pipeline.tracker.snapshotChanging(),
          spans: pending.filter((span) => !this.savedSpans.has(span.spanId)),
          gone: [...this.savedSpans].filter((id) => !pendingIds.has(id)),
        };
        this.lineBytes = await this.store.append(jsonLine(line));
        this.journalBytes += this.lineBytes;
        this.savedSpans = pendingIds;
        return pending.length;
      }
      // A new generation: journal lines written before this file are ignored once it is in place.
      this.generation = Math.max(this.generation + 1, Date.now());
      this.whole = false;
      this.journalBytes = 0;
      this.lineBytes = 0;
      this.fileBytes = await this.store.save(snapshotState(this.pipeline, pending, this.generation, covered, this.apiUrl));
      this.savedSpans = pendingIds;
      return pending.length;
    } catch (err) {
      // What this save held is not on disk: the next one writes everything.
      this.whole = true;
      // The last save took the undelivered spans out of the queue: now they are nowhere. Unless the
      // state file is another process's now: that process's state has them, from this one's last save.
      if (err instanceof StateTakenError) throw err;
      if (drain && pending.length > 0) throw new SpansNotKeptError(pending.length, err);
      throw err;
    }
  }
}

/**
 * Load the state file and its journal into a fresh pipeline. A missing file is a fresh start. An
 * unreadable one is moved aside (`<file>.bad-<time>`, so that the next save does not destroy what a
 * person may still recover from it) and the process starts without it; entries that are not what
 * they should be (an open run, a waiting event, a pending span, the cursor) are left out and counted.
 */
export async function loadState(
  store: Pick<StateStore, 'load' | 'loadJournal' | 'path' | 'journalPath'>,
  pipeline: Pipeline,
  nowMs: number,
  log: Logger,
): Promise<{ openRuns: number; pendingSpans: number; cursor: string | null; coveredUntil: string | null; coveredUntilMs: number | undefined; journalLines: number; apiUrl: string | undefined } | undefined> {
  let data: unknown;
  try {
    data = await store.load();
  } catch (err) {
    log.error({ path: store.path, movedTo: await moveAside(store.path), err: failureFields(err) }, 'state file unreadable; starting without it');
    return undefined;
  }
  if (data === undefined) return undefined;
  let journal: string | undefined;
  try {
    journal = await store.loadJournal();
  } catch (err) {
    // The state file alone is an older point to resume from (what came after is read again), far
    // better than none: only the journal is moved aside.
    log.error({ path: store.journalPath, movedTo: await moveAside(store.journalPath), err: failureFields(err) }, 'state journal unreadable; resuming from the state file without it');
  }
  if (!isPersistedState(data)) {
    // A file of a newer format says so: the version that wrote it still reads it (after a downgrade, say).
    const version = isObj(data) ? data.version : undefined;
    const message = isNum(version) && version > LATEST_VERSION
      ? `state file written by a newer prefect-otel (format version ${version}; this one reads versions up to ${LATEST_VERSION}); starting without it`
      : 'state file has an unknown format; starting without it';
    // `formatVersion`, not `version`: every starting line has `version`, prefect-otel's own, as text.
    log.error({ path: store.path, movedTo: await moveAside(store.path), ...(isNum(version) ? { formatVersion: version } : {}) }, message);
    return undefined;
  }
  const { state: whole, lines } = applyJournal(data, journal, log);
  const { state, left } = usableParts(whole);
  if (left > 0) log.error({ path: store.path, left }, 'state file entries that are not what they should be were left out');
  pipeline.restoreCursor(state.cursorUs ?? undefined);
  const downMs = downtimeMs(state.savedAt, nowMs);
  pipeline.dedupe.restore(state.dedupe, nowMs, downMs);
  pipeline.tracker.restore(state.tracker, nowMs, downMs);
  for (const span of state.pendingSpans) pipeline.traces?.enqueue(span);
  return {
    // What the tracker kept: past PREFECT_OTEL_MAX_OPEN_RUNS the oldest were ended (evicted) as they were restored.
    openRuns: pipeline.tracker.openAttempts,
    pendingSpans: state.pendingSpans.length,
    cursor: state.cursorUs === null ? null : new Date(state.cursorUs / 1000).toISOString(),
    coveredUntil: typeof state.coveredUntilMs === 'number' ? new Date(state.coveredUntilMs).toISOString() : null,
    coveredUntilMs: state.coveredUntilMs ?? undefined,
    journalLines: lines,
    apiUrl: typeof state.apiUrl === 'string' ? state.apiUrl : undefined,
  };
}

/**
 * How long no process watched: from the last save to now. The state's clock times (when an event
 * id was seen, a run's last activity) are moved on by it: the stream did not move while nothing
 * read it, and what happened meanwhile is read from the cursor on. 0 for a time that is not one.
 */
function downtimeMs(savedAt: unknown, nowMs: number): number {
  const savedMs = typeof savedAt === 'string' ? Date.parse(savedAt) : NaN;
  return Number.isFinite(savedMs) && nowMs > savedMs ? nowMs - savedMs : 0;
}

async function moveAside(path: string): Promise<string | undefined> {
  const aside = `${path}.bad-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  try {
    await rename(path, aside);
    return aside;
  } catch {
    return undefined;
  }
}

/** The parts of a state that can be applied, and how many entries were left out. */
function usableParts(state: PersistedState): { state: PersistedState; left: number } {
  let left = 0;
  const keep = <T>(list: readonly T[], ok: (v: T) => boolean): T[] => list.filter((v) => ok(v) || ((left += 1), false));
  const t = state.tracker;
  const cursorOk = state.cursorUs === null || isNum(state.cursorUs);
  if (!cursorOk) left += 1;
  const coveredOk = state.coveredUntilMs === undefined || state.coveredUntilMs === null || isNum(state.coveredUntilMs);
  if (!coveredOk) left += 1;
  const usable: PersistedState = {
    ...state,
    dedupe: keep(state.dedupe as unknown[], (e) => Array.isArray(e) && isStr(e[0]) && canonicalUuid(e[0]) !== undefined && isNum(e[1])) as [string, number][],
    cursorUs: cursorOk ? state.cursorUs : null,
    coveredUntilMs: coveredOk ? state.coveredUntilMs : null,
    tracker: {
      open: keep(t.open as unknown[], isOpenRun) as TrackerSnapshot['open'],
      finished: keep(t.finished as unknown[], (e) => Array.isArray(e) && isStr(e[0]) && isObj(e[1]) && isCtx(e[1].ctx) && isNum(e[1].attempt) && isNum(e[1].lastTerminalUs)) as TrackerSnapshot['finished'],
      owners: keep(t.owners as unknown[], (e) => Array.isArray(e) && isStr(e[0]) && (e[1] === null || isStr(e[1]))) as TrackerSnapshot['owners'],
      waiting: keep(t.waiting as unknown[], (e) => isObj(e) && isStr(e.id) && isStr(e.name) && isNum(e.occurredUs) && isObj(e.resource) && isStr(e.resource.id) && Array.isArray(e.related)) as TrackerSnapshot['waiting'],
    },
    pendingSpans: keep(state.pendingSpans as unknown[], isPendingSpan) as SpanRecord[],
  };
  return { state: usable, left };
}

/** The state file with its journal's lines of the same generation applied, in order. */
function applyJournal(file: PersistedState, journal: string | undefined, log: Logger): { state: PersistedState; lines: number } {
  if (journal === undefined || file.version !== 2) return { state: file, lines: 0 };
  const dedupe = [...file.dedupe];
  const finished = [...file.tracker.finished];
  const spans = [...file.pendingSpans];
  const gone = new Set<unknown>();
  let latest: JournalLine | undefined;
  let lines = 0;
  for (const text of journal.split('\n')) {
    if (text === '') continue;
    let line: unknown;
    try {
      line = JSON.parse(text);
    } catch {
      // A crash while appending leaves the last line cut short: what it held is lost, nothing else.
      log.warn({ excerpt: text.slice(0, 120) }, 'state journal line cut short; ignored');
      continue;
    }
    if (!isJournalLine(line) || line.generation !== file.generation) continue;
    for (const entry of line.dedupe) dedupe.push(entry);
    for (const entry of line.finished) finished.push(entry);
    if (Array.isArray(line.spans)) for (const span of line.spans) spans.push(span);
    if (Array.isArray(line.gone)) for (const id of line.gone) gone.add(id);
    latest = line;
    lines += 1;
  }
  if (latest === undefined) return { state: file, lines: 0 };
  return {
    state: {
      ...file, savedAt: latest.savedAt, cursorUs: latest.cursorUs, coveredUntilMs: latest.coveredUntilMs, dedupe, tracker: { ...latest.tracker, finished },
      // A span id is never queued again once it left the queue: what left is gone whichever line said so.
      pendingSpans: gone.size === 0 ? spans : spans.filter((s) => !gone.has((s as Partial<SpanRecord> | null)?.spanId)),
    },
    lines,
  };
}

function isJournalLine(v: unknown): v is JournalLine {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  const t = o.tracker as Record<string, unknown> | undefined;
  return (
    typeof o.generation === 'number' &&
    Array.isArray(o.dedupe) &&
    Array.isArray(o.finished) &&
    t !== undefined &&
    Array.isArray(t.open) &&
    Array.isArray(t.owners) &&
    Array.isArray(t.waiting)
  );
}

function isPersistedState(v: unknown): v is PersistedState {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  const t = o.tracker as Record<string, unknown> | undefined;
  return (
    (o.version === 1 || o.version === 2) &&
    Array.isArray(o.dedupe) &&
    Array.isArray(o.pendingSpans) &&
    t !== undefined &&
    Array.isArray(t.open) &&
    Array.isArray(t.finished) &&
    Array.isArray(t.owners) &&
    Array.isArray(t.waiting)
  );
}
