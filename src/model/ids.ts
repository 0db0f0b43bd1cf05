import { hash } from 'node:crypto';

const HEX32_RE = /^[0-9a-f]{32}$/i;
const ZERO_SPAN_ID = '0000000000000000';

/** The canonical lowercase dashed form of a UUID, or undefined when `text` is not one. */
export function canonicalUuid(text: string): string | undefined {
  // Every event names several ids: checked a character at a time, without a regular expression.
  if (text.length === 36) {
    let upper = false;
    for (let i = 0; i < 36; i++) {
      const c = text.charCodeAt(i);
      if (i === 8 || i === 13 || i === 18 || i === 23) {
        if (c !== 45 /* - */) return undefined;
      } else if (c >= 65 && c <= 70) upper = true;
      else if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return undefined;
    }
    return upper ? text.toLowerCase() : text;
  }
  if (HEX32_RE.test(text)) {
    const h = text.toLowerCase();
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  return undefined;
}

/** A trace is named by its root run: the root's UUID as 32 lowercase hex digits. */
export function traceIdForRun(runId: string): string {
  return runId.replace(/-/g, '').toLowerCase();
}

/**
 * A run's span id: the first 16 hex digits of SHA-256 of its canonical UUID; for its n-th rerun
 * (n ≥ 1), of `<uuid>:<n>`. Any process, and code inside the flow itself, computes the same id.
 */
export function spanIdForRun(runId: string, attempt = 0): string {
  const input = attempt === 0 ? runId.toLowerCase() : `${runId.toLowerCase()}:${attempt}`;
  let id = recentSpanIds.get(input);
  if (id !== undefined) return id;
  // One-shot hash: a fraction of a Hash object's cost for an input this short.
  const digest = hash('sha256', input, 'hex');
  id = digest.slice(0, 16);
  if (id === ZERO_SPAN_ID) id = digest.slice(16, 32);
  // Every event of a run asks for its span id and its parent's: remember the recent ones (bounded).
  if (recentSpanIds.size >= SPAN_ID_CACHE_SIZE) recentSpanIds.clear();
  recentSpanIds.set(input, id);
  return id;
}

/**
 * The library's `spanIdForRun`: the run's id in any form Prefect or OpenTelemetry shows it (the
 * dashed UUID in either case, or its 32 hex digits, as a trace id shows a root run) names the same
 * span. Anything else (a run's name, a rerun count that is no whole number ≥ 0) is a TypeError:
 * no span has such an id.
 */
export function spanIdForRunId(runId: string, rerun = 0): string {
  if (!Number.isSafeInteger(rerun) || rerun < 0) throw new TypeError(`spanIdForRun: rerun must be a whole number ≥ 0, got ${String(rerun)}`);
  return spanIdForRun(runUuid('spanIdForRun', runId), rerun);
}

/** The library's `traceIdForRun`: the root run's UUID, in any of those forms, as 32 lowercase hex digits. */
export function traceIdForRunId(runId: string): string {
  return traceIdForRun(runUuid('traceIdForRun', runId));
}

function runUuid(fn: string, runId: unknown): string {
  const uuid = typeof runId === 'string' ? canonicalUuid(runId.trim()) : undefined;
  if (uuid === undefined) throw new TypeError(`${fn}: expected a run id (a UUID, dashed or as 32 hex digits), got ${JSON.stringify(runId)?.slice(0, 80) ?? String(runId)}`);
  return uuid;
}

const SPAN_ID_CACHE_SIZE = 20_000;
const recentSpanIds = new Map<string, string>();
