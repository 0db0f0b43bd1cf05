/**
 * Prefect's own span of a flow run, from the run's REST labels (`GET /api/flow_runs/{id}` →
 * `labels.__OTEL_TRACEPARENT`, reference §5–§6), so the flow run's span can link to it.
 *
 * Design (the timing rules are in RunTracker.askNativeSpan and `due`):
 * - The tracker asks once per run attempt, when the attempt is first seen Running (or terminal);
 *   the request runs in the background and never blocks event reading.
 * - At most `MAX_IN_FLIGHT` requests at a time; the rest wait in a queue that holds at most one
 *   entry per open flow run attempt (bounded by the open-run bound). A queued request whose span
 *   has meanwhile been exported is dropped without a request.
 * - Live (wall clock): a finished flow span waits for its answer at most `NATIVE_SPAN_WAIT_MS` past
 *   the settle window, then goes out without the link. Replay (event clock, where a bound in event
 *   time means nothing): it waits for the answer, which the REST timeout bounds.
 * - After `BREAKER_FAILURES` consecutive transport failures (no HTTP answer: refused, timed out),
 *   lookups are answered `failed` without a request for `BREAKER_PAUSE_MS`, so an unreachable
 *   server costs no time per run.
 * - A failed, empty or late lookup means no link. Each outcome is counted (RunTracker.counts.native)
 *   and logged at debug; REST errors are already free of secrets.
 */
import type { Logger } from 'pino';
import { OTEL_TRACEPARENT_LABEL } from '../model/attributes.js';
import type { PrefectRestClient } from './rest.js';

/** What a lookup found: the label (undefined when absent), or why there is no answer. */
export type NativeSpanAnswer =
  | { readonly ok: true; readonly traceparent: string | undefined }
  | { readonly ok: false; readonly reason: string; readonly transport: boolean };

export type FetchNativeSpan = (flowRunId: string) => Promise<NativeSpanAnswer>;

/** In live mode, how long past the settle window a finished flow span waits for its lookup. */
export const NATIVE_SPAN_WAIT_MS = 2_000;
export const MAX_IN_FLIGHT = 4;
export const BREAKER_FAILURES = 3;
export const BREAKER_PAUSE_MS = 30_000;

/** `GET /api/flow_runs/{id}` → its `__OTEL_TRACEPARENT` label. Never throws. */
export function nativeSpanFromRest(rest: Pick<PrefectRestClient, 'getFlowRun'>): FetchNativeSpan {
  return async (flowRunId) => {
    try {
      const r = await rest.getFlowRun(flowRunId);
      if (!r.ok) return { ok: false, reason: r.message, transport: r.status === undefined };
      const label = r.value.labels[OTEL_TRACEPARENT_LABEL];
      return { ok: true, traceparent: typeof label === 'string' ? label : undefined };
    } catch (err) {
      // An AuthError: the event stream reports refused credentials itself; here it only means no link.
      return { ok: false, reason: err instanceof Error ? err.message : String(err), transport: false };
    }
  };
}

export interface NativeSpanLookupOptions {
  readonly fetch: FetchNativeSpan;
  /** Whether the span of this attempt still waits for the answer (else the request is skipped). */
  readonly wanted: (flowRunId: string, attempt: number) => boolean;
  /** Deliver the answer (`failed` for any failure) to the tracker. */
  readonly answer: (flowRunId: string, attempt: number, answer: { traceparent: string | undefined } | 'failed') => string;
  readonly logger: Logger;
  readonly now?: () => number;
}

/** Queue a lookup; the promise settles once the answer has been delivered (or the lookup skipped). */
export type NativeSpanLookup = (flowRunId: string, attempt: number) => Promise<void>;

export function createNativeSpanLookup(options: NativeSpanLookupOptions): NativeSpanLookup {
  const log = options.logger;
  const now = options.now ?? Date.now;
  const queue: { flowRunId: string; attempt: number; done: () => void }[] = [];
  let inFlight = 0;
  let transportFailures = 0;
  let pausedUntil = 0;

  const deliver = (flowRunId: string, attempt: number, a: NativeSpanAnswer): void => {
    const outcome = options.answer(flowRunId, attempt, a.ok ? { traceparent: a.traceparent } : 'failed');
    const fields = { 'prefect.run.id': flowRunId, attempt, outcome };
    if (!a.ok) log.debug({ ...fields, reason: a.reason }, "flow run lookup failed: no link to Prefect's own span");
    else if (outcome === 'late') log.debug(fields, "flow run lookup answered after the span was exported: no link to Prefect's own span");
    else if (outcome === 'no_label') log.debug({ ...fields, label: a.traceparent }, "flow run has no valid __OTEL_TRACEPARENT label: no link to Prefect's own span");
  };

  const pump = (): void => {
    while (inFlight < MAX_IN_FLIGHT && queue.length > 0) {
      const job = queue.shift()!;
      if (!options.wanted(job.flowRunId, job.attempt)) {
        job.done();
        continue;
      }
      if (now() < pausedUntil) {
        deliver(job.flowRunId, job.attempt, { ok: false, reason: 'lookups paused after repeated connection failures', transport: false });
        job.done();
        continue;
      }
      inFlight += 1;
      void (async () => {
        let a: NativeSpanAnswer;
        try {
          a = await options.fetch(job.flowRunId);
        } catch (err) {
          a = { ok: false, reason: err instanceof Error ? err.message : String(err), transport: false };
        }
        inFlight -= 1;
        if (!a.ok && a.transport) {
          transportFailures += 1;
          if (transportFailures >= BREAKER_FAILURES) {
            pausedUntil = now() + BREAKER_PAUSE_MS;
            transportFailures = 0;
            log.debug({ pauseMs: BREAKER_PAUSE_MS, reason: a.reason }, 'flow run lookups paused after repeated connection failures');
          }
        } else {
          transportFailures = 0;
        }
        try {
          deliver(job.flowRunId, job.attempt, a);
        } catch (err) {
          log.error({ err, 'prefect.run.id': job.flowRunId }, 'flow run lookup answer could not be applied');
        } finally {
          job.done();
          pump();
        }
      })();
    }
  };

  return (flowRunId, attempt) =>
    new Promise<void>((resolve) => {
      queue.push({ flowRunId, attempt, done: resolve });
      pump();
    });
}
