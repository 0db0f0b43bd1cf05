/**
 * Prefect's own span of a flow run, from the run's REST labels (`labels.__OTEL_TRACEPARENT`,
 * reference §5–§6), so the flow run's span can link to it.
 *
 * Design (the timing rules are in RunTracker.askNativeSpan and `due`):
 * - The tracker asks once per run attempt, when the attempt is first seen Running (or terminal);
 *   the request runs in the background and never blocks event reading.
 * - Lookups share requests (run-lookups.ts): up to `MAX_BATCH` flow runs go in one
 *   `POST /api/flow_runs/filter` by id, a lookup waiting at most `GATHER_MS` for others to join it;
 *   a server that refuses the filter is asked `GET /api/flow_runs/{id}` per run from then on.
 * - At most `MAX_IN_FLIGHT` requests at a time; the rest wait in a queue of at most `MAX_QUEUED`
 *   lookups (a slow server would otherwise make it grow with the stream: a lookup stays queued
 *   after its span was exported). Past it the oldest is answered `failed` without a request
 *   (counted, logged at debug). A queued lookup whose span has meanwhile been exported is dropped
 *   without a request.
 * - Live (wall clock): a finished flow span waits for its answer at most `NATIVE_SPAN_WAIT_MS` past
 *   the settle window, then goes out without the link. Replay (event clock, where a bound in event
 *   time means nothing): it waits for the answer, which the REST timeout bounds.
 * - After `BREAKER_FAILURES` consecutive requests that failed in transport (no HTTP answer:
 *   refused, timed out), lookups are answered `failed` without a request for `BREAKER_PAUSE_MS`, so
 *   an unreachable server costs no time per run.
 * - A failed, empty or late lookup means no link; so does a run the server does not have. Each
 *   outcome is counted (RunTracker.counts.native) and logged at debug; REST errors are already free
 *   of secrets. The first lookup the API refuses (HTTP 401/403: credentials whose role cannot read
 *   flow runs) is a warning, once, saying which setting to fix.
 */
import type { Logger } from 'pino';
import { OTEL_TRACEPARENT_LABEL } from '../model/attributes.js';
import { parseTimestampUs } from '../model/time.js';
import type { FlowRunInfo, PrefectRestClient } from './rest.js';
import { AuthError, errorText } from '../errors.js';
import { createBatchQueue, lookupMany, MAX_QUEUED } from './run-lookups.js';

export { GATHER_MS, MAX_BATCH, MAX_IN_FLIGHT, MAX_QUEUED } from './run-lookups.js';

/**
 * What a lookup found: the label (undefined when absent) and when the run was due to start
 * (`expected_start_time`, µs; undefined when absent or not a timestamp), or why there is no answer.
 */
export type NativeSpanAnswer =
  | { readonly ok: true; readonly traceparent: string | undefined; readonly expectedStartUs?: number | undefined }
  | { readonly ok: false; readonly reason: string; readonly transport: boolean; readonly refused?: true };

/** A lookup's answer as the tracker takes it. */
export interface NativeSpanFound {
  readonly traceparent: string | undefined;
  readonly expectedStartUs?: number | undefined;
}

/** The answers for a batch of flow runs, one per id, in the order asked. */
export type FetchNativeSpans = (flowRunIds: readonly string[]) => Promise<NativeSpanAnswer[]>;

/** In live mode, how long past the settle window a finished flow span waits for its lookup. */
export const NATIVE_SPAN_WAIT_MS = 2_000;
export const BREAKER_FAILURES = 3;
export const BREAKER_PAUSE_MS = 30_000;

/** Flow runs' `__OTEL_TRACEPARENT` labels over REST, a batch per request. Never throws. */
export function nativeSpanFromRest(rest: Pick<PrefectRestClient, 'getFlowRun' | 'getFlowRuns'>): FetchNativeSpans {
  const lookup = lookupMany<FlowRunInfo>((ids) => rest.getFlowRuns(ids), (id) => rest.getFlowRun(id), 'POST /flow_runs/filter: flow run');
  return async (ids) => {
    try {
      return (await lookup(ids)).map((a): NativeSpanAnswer => {
        if (!a.ok) return { ok: false, reason: a.reason, transport: a.transport };
        const label = a.value.labels[OTEL_TRACEPARENT_LABEL];
        const expectedStartUs = a.value.expectedStartTime === undefined ? undefined : parseTimestampUs(a.value.expectedStartTime);
        return { ok: true, traceparent: typeof label === 'string' ? label : undefined, ...(expectedStartUs === undefined ? {} : { expectedStartUs }) };
      });
    } catch (err) {
      // An AuthError: the credentials (or their role) do not reach flow runs. Here it only means no
      // link; the lookup warns once (the event stream reports credentials it refuses itself).
      const refused = err instanceof AuthError ? { refused: true as const } : {};
      return ids.map(() => ({ ok: false, reason: errorText(err), transport: false, ...refused }));
    }
  };
}

export interface NativeSpanLookupOptions {
  readonly fetch: FetchNativeSpans;
  /** Whether the span of this attempt still waits for the answer (else the request is skipped). */
  readonly wanted: (flowRunId: string, attempt: number) => boolean;
  /** Deliver the answer (`failed` for any failure) to the tracker. */
  readonly answer: (flowRunId: string, attempt: number, answer: NativeSpanFound | 'failed') => string;
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
  let transportFailures = 0;
  let pausedUntil = 0;
  let refusalWarned = false;

  const deliver = (job: Job, a: NativeSpanAnswer): void => {
    const { flowRunId, attempt } = job;
    try {
      const outcome = options.answer(flowRunId, attempt, a.ok ? { traceparent: a.traceparent, ...(a.expectedStartUs === undefined ? {} : { expectedStartUs: a.expectedStartUs }) } : 'failed');
      const fields = { 'prefect.run.id': flowRunId, attempt, outcome };
      if (!a.ok && a.refused === true && !refusalWarned) {
        refusalWarned = true;
        log.warn({ ...fields, reason: a.reason }, "flow run lookups refused: flow run spans carry no link to Prefect's own span (logged once; each refusal after this at debug)");
      } else if (!a.ok) log.debug({ ...fields, reason: a.reason }, "flow run lookup failed: no link to Prefect's own span");
      else if (outcome === 'late') log.debug(fields, "flow run lookup answered after the span was exported: no link to Prefect's own span");
      else if (outcome === 'no_label') log.debug({ ...fields, label: a.traceparent }, "flow run has no valid __OTEL_TRACEPARENT label: no link to Prefect's own span");
    } catch (err) {
      log.error({ err, 'prefect.run.id': flowRunId }, 'flow run lookup answer could not be applied');
    } finally {
      job.done();
    }
  };

  const enqueue = createBatchQueue<Job>(async (jobs) => {
    const asked: Job[] = [];
    for (const job of jobs) {
      if (!options.wanted(job.flowRunId, job.attempt)) job.done();
      else if (now() < pausedUntil) deliver(job, { ok: false, reason: 'lookups paused after repeated connection failures', transport: false });
      else asked.push(job);
    }
    if (asked.length === 0) return;
    let answers: NativeSpanAnswer[];
    try {
      answers = await options.fetch(asked.map((j) => j.flowRunId));
      if (answers.length !== asked.length) throw new Error(`${answers.length} answers for ${asked.length} flow runs`);
    } catch (err) {
      answers = asked.map(() => ({ ok: false, reason: errorText(err), transport: false }));
    }
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
    asked.forEach((job, i) => deliver(job, answers[i]!));
  }, (job) => {
    if (options.wanted(job.flowRunId, job.attempt)) deliver(job, { ok: false, reason: `more than ${MAX_QUEUED} lookups waiting for the server`, transport: false });
    else job.done();
  });

  return (flowRunId, attempt) => new Promise<void>((done) => enqueue({ flowRunId, attempt, done }));
}
