import type { Logger } from 'pino';
import type { SpanRecord } from '../model/span-record.js';
import type { TrackerSnapshot } from '../model/tracker.js';
import type { Pipeline } from '../pipeline.js';

/** What the state file holds: enough to resume as if the process had never stopped. */
export interface PersistedState {
  readonly version: 1;
  readonly savedAt: string;
  /** Latest `occurred` seen, µs since the epoch: the resume cursor. */
  readonly cursorUs: number | null;
  /** Recently seen event ids with the time they were seen. */
  readonly dedupe: [string, number][];
  readonly tracker: TrackerSnapshot;
  /** Finished spans the collector had not accepted yet at shutdown. */
  readonly pendingSpans: SpanRecord[];
}

interface Store {
  load(): Promise<unknown>;
  readonly path: string;
}

/** The state to persist; `drain` (at shutdown) also moves undelivered spans into it. */
export function snapshotState(pipeline: Pipeline, drain: boolean): PersistedState {
  return {
    version: 1,
    savedAt: new Date().toISOString(),
    cursorUs: pipeline.cursorUs ?? null,
    dedupe: pipeline.dedupe.toJSON(),
    tracker: pipeline.tracker.snapshot(),
    pendingSpans: drain ? (pipeline.traces?.drainQueued() ?? []) : [],
  };
}

/** Load the state file into a fresh pipeline. A missing file is a fresh start; an unreadable one is logged and ignored. */
export async function loadState(
  store: Store,
  pipeline: Pipeline,
  nowMs: number,
  log: Logger,
): Promise<{ openRuns: number; pendingSpans: number; cursor: string | null } | undefined> {
  let data: unknown;
  try {
    data = await store.load();
  } catch (err) {
    log.error({ path: store.path, err: { message: (err as Error).message } }, 'state file unreadable; starting without it');
    return undefined;
  }
  if (data === undefined) return undefined;
  if (!isPersistedState(data)) {
    log.error({ path: store.path }, 'state file has an unknown format; starting without it');
    return undefined;
  }
  pipeline.restoreCursor(data.cursorUs ?? undefined);
  pipeline.dedupe.restore(data.dedupe, nowMs);
  pipeline.tracker.restore(data.tracker, nowMs);
  for (const span of data.pendingSpans) pipeline.traces?.enqueue(span);
  return {
    openRuns: data.tracker.open.length,
    pendingSpans: data.pendingSpans.length,
    cursor: data.cursorUs === null ? null : new Date(data.cursorUs / 1000).toISOString(),
  };
}

function isPersistedState(v: unknown): v is PersistedState {
  if (v === null || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  const t = o.tracker as Record<string, unknown> | undefined;
  return (
    o.version === 1 &&
    Array.isArray(o.dedupe) &&
    Array.isArray(o.pendingSpans) &&
    t !== undefined &&
    Array.isArray(t.open) &&
    Array.isArray(t.finished) &&
    Array.isArray(t.owners) &&
    Array.isArray(t.waiting)
  );
}
