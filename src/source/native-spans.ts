/**
 * Prefect's own span of a flow run, from the run's REST labels (`labels.__OTEL_TRACEPARENT`,
 * reference §5–§6), so the flow run's span can link to it.
 *
 * Design (the timing rules are in RunTracker.askNativeSpan and `due`):
 * - The tracker asks once per run attempt, when the attempt is first seen Running (or terminal);
 *   the request runs in the background and never blocks event reading.
 * - Lookups share requests: up to `MAX_BATCH` flow runs go in one `POST /api/flow_runs/filter`
 *   (by id). A lookup waits at most `GATHER_MS` for others to join it, so a busy server is asked
 *   once per batch instead of once per flow run, and a quiet one as soon as a run starts.
 *   A server that refuses the filter (HTTP 400, 404, 405 or 422: a proxy that lets only some routes
 *   through, a `PREFECT_API_DEFAULT_LIMIT` below the batch) is asked `GET /api/flow_runs/{id}`
 *   per run from then on, `PER_RUN_CONCURRENCY` at a time.
 * - At most `MAX_IN_FLIGHT` requests at a time; the rest wait in a queue that holds at most one
 *   entry per open flow run attempt (bounded by the open-run bound). A queued lookup whose span
 *   has meanwhile been exported is dropped without a request.
 * - Live (wall clock): a finished flow span waits for its answer at most `NATIVE_SPAN_WAIT_MS` past
 *   the settle window, then goes out without the link. Replay (event clock, where a bound in event
 *   time means nothing): it waits for the answer, which the REST timeout bounds.
 * - After `BREAKER_FAILURES` consecutive requests that failed in transport (no HTTP answer:
 *   refused, timed out), lookups are answered `failed` without a request for `BREAKER_PAUSE_MS`, so
 *   an unreachable server costs no time per run.
 * - A failed, empty or late lookup means no link; so does a run the server does not have. Each
 *   outcome is counted (RunTracker.counts.native) and logged at debug; REST errors are already free
 *   of secrets.
 */
import type { Logger } from 'pino';
import { OTEL_TRACEPARENT_LABEL } from '../model/attributes.js';
import { canonicalUuid } from '../model/ids.js';
import type { FlowRunInfo, PrefectRestClient } from './rest.js';

/** What a lookup found: the label (undefined when absent), or why there is no answer. */
export type NativeSpanAnswer =
  | { readonly ok: true; readonly traceparent: string | undefined }
  | { readonly ok: false; readonly reason: string; readonly transport: boolean };

/** The answers for a batch of flow runs, one per id, in the order asked. */
export type FetchNativeSpans = (flowRunIds: readonly string[]) => Promise<NativeSpanAnswer[]>;

/** In live mode, how long past the settle window a finished flow span waits for its lookup. */
export const NATIVE_SPAN_WAIT_MS = 2_000;
/** Flow runs per request; Prefect's default `PREFECT_API_DEFAULT_LIMIT` is 200. */
export const MAX_BATCH = 50;
/** The longest a lookup waits for others to share its request. */
export const GATHER_MS = 20;
export const MAX_IN_FLIGHT = 2;
/** Requests at a time for one batch on a server that refused the filter. */
export const PER_RUN_CONCURRENCY = 4;
export const BREAKER_FAILURES = 3;
export const BREAKER_PAUSE_MS = 30_000;

/** Statuses that say the server will not take the filter request, as opposed to failing it. */
const FILTER_REFUSED = new Set([400, 404, 405, 422]);

const labelOf = (run: FlowRunInfo): NativeSpanAnswer => {
  const label = run.labels[OTEL_TRACEPARENT_LABEL];
  return { ok: true, traceparent: typeof label === 'string' ? label : undefined };
};

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Flow runs' `__OTEL_TRACEPARENT` labels over REST, a batch per request. Never throws. */
export function nativeSpanFromRest(rest: Pick<PrefectRestClient, 'getFlowRun' | 'getFlowRuns'>): FetchNativeSpans {
  let filter = true;

  const perRun = async (id: string): Promise<NativeSpanAnswer> => {
    const r = await rest.getFlowRun(id);
    return r.ok ? labelOf(r.value) : { ok: false, reason: r.message, transport: r.status === undefined };
  };

  return async (ids) => {
    try {
      if (filter) {
        const r = await rest.getFlowRuns([...new Set(ids)]);
        if (r.ok) {
          const found = new Map(r.value.map((run) => [canonicalUuid(run.id) ?? run.id, run]));
          return ids.map((id) => {
            const run = found.get(id);
            return run === undefined ? { ok: false, reason: `POST /flow_runs/filter: flow run ${id} not found`, transport: false } : labelOf(run);
          });
        }
        if (r.status === undefined || !FILTER_REFUSED.has(r.status)) {
          return ids.map(() => ({ ok: false, reason: r.message, transport: r.status === undefined }));
        }
        filter = false;
      }
      const answers: NativeSpanAnswer[] = new Array<NativeSpanAnswer>(ids.length);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < ids.length) {
          const i = next++;
          answers[i] = await perRun(ids[i]!);
        }
      };
      await Promise.all(Array.from({ length: Math.min(PER_RUN_CONCURRENCY, ids.length) }, worker));
      return answers;
    } catch (err) {
      // An AuthError: the event stream reports refused credentials itself; here it only means no link.
      return ids.map(() => ({ ok: false, reason: errorText(err), transport: false }));
    }
  };
}

export interface NativeSpanLookupOptions {
  readonly fetch: FetchNativeSpans;
  /** Whether the span of this attempt still waits for the answer (else the request is skipped). */
  readonly wanted: (flowRunId: string, attempt: number) => boolean;
  /** Deliver the answer (`failed` for any failure) to the tracker. */
  readonly answer: (flowRunId: string, attempt: number, answer: { traceparent: string | undefined } | 'failed') => string;
  readonly logger: Logger;
  readonly now?: () => number;
}

/** Queue a lookup; the promise settles once the answer has been delivered (or the lookup skipped). */
export type NativeSpanLookup = (flowRunId: string, attempt: number) => Promise<void>;

interface Job {
  readonly flowRunId: string;
  readonly attempt: number;
  readonly done: () => void;
}

export function createNativeSpanLookup(options: NativeSpanLookupOptions): NativeSpanLookup {
  const log = options.logger;
  const now = options.now ?? Date.now;
  const queue: Job[] = [];
  let inFlight = 0;
  let transportFailures = 0;
  let pausedUntil = 0;
  /** Set while the queue's oldest lookup waits for others to join it; `ripe` once it has waited long enough. */
  let gathering: NodeJS.Timeout | undefined;
  let ripe = false;

  const deliver = (job: Job, a: NativeSpanAnswer): void => {
    const { flowRunId, attempt } = job;
    try {
      const outcome = options.answer(flowRunId, attempt, a.ok ? { traceparent: a.traceparent } : 'failed');
      const fields = { 'prefect.run.id': flowRunId, attempt, outcome };
      if (!a.ok) log.debug({ ...fields, reason: a.reason }, "flow run lookup failed: no link to Prefect's own span");
      else if (outcome === 'late') log.debug(fields, "flow run lookup answered after the span was exported: no link to Prefect's own span");
      else if (outcome === 'no_label') log.debug({ ...fields, label: a.traceparent }, "flow run has no valid __OTEL_TRACEPARENT label: no link to Prefect's own span");
    } catch (err) {
      log.error({ err, 'prefect.run.id': flowRunId }, 'flow run lookup answer could not be applied');
    } finally {
      job.done();
    }
  };

  const send = (jobs: Job[]): void => {
    inFlight += 1;
    void (async () => {
      let answers: NativeSpanAnswer[];
      try {
        answers = await options.fetch(jobs.map((j) => j.flowRunId));
        if (answers.length !== jobs.length) throw new Error(`${answers.length} answers for ${jobs.length} flow runs`);
      } catch (err) {
        answers = jobs.map(() => ({ ok: false, reason: errorText(err), transport: false }));
      }
      inFlight -= 1;
      if (answers.every((a) => !a.ok && a.transport)) {
        transportFailures += 1;
        if (transportFailures >= BREAKER_FAILURES) {
          pausedUntil = now() + BREAKER_PAUSE_MS;
          transportFailures = 0;
          const first = answers[0];
          log.debug({ pauseMs: BREAKER_PAUSE_MS, reason: first !== undefined && !first.ok ? first.reason : undefined }, 'flow run lookups paused after repeated connection failures');
        }
      } else {
        transportFailures = 0;
      }
      jobs.forEach((job, i) => deliver(job, answers[i]!));
      pump();
    })();
  };

  const pump = (): void => {
    while (inFlight < MAX_IN_FLIGHT && queue.length > 0) {
      if (queue.length < MAX_BATCH && !ripe) {
        gathering ??= setTimeout(() => {
          gathering = undefined;
          ripe = true;
          pump();
        }, GATHER_MS);
        return;
      }
      ripe = false;
      const asked: Job[] = [];
      for (const job of queue.splice(0, MAX_BATCH)) {
        if (!options.wanted(job.flowRunId, job.attempt)) job.done();
        else if (now() < pausedUntil) deliver(job, { ok: false, reason: 'lookups paused after repeated connection failures', transport: false });
        else asked.push(job);
      }
      if (asked.length > 0) send(asked);
    }
    if (queue.length === 0 && gathering !== undefined) {
      clearTimeout(gathering);
      gathering = undefined;
      ripe = false;
    }
  };

  return (flowRunId, attempt) =>
    new Promise<void>((resolve) => {
      queue.push({ flowRunId, attempt, done: resolve });
      pump();
    });
}
