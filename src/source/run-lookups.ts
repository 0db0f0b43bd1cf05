/**
 * Run look-ups over REST, queued and bounded. A busy server starts hundreds of runs a second;
 * asking for each one alone costs the server a request per run and us a request's CPU per run.
 *
 * - `lookupMany` asks `POST /…_runs/filter` by id for a whole batch. A server that refuses the
 *   filter (HTTP 400, 404, 405 or 422: a proxy that lets only some routes through, a
 *   `PREFECT_API_DEFAULT_LIMIT` below the batch) is asked `GET /…_runs/{id}` per run from then on,
 *   `PER_RUN_CONCURRENCY` at a time.
 * - `createBatchQueue` gathers look-ups into batches: by default one waits at most `GATHER_MS` for
 *   others to join it, a batch holds at most `MAX_BATCH` runs, and at most `MAX_IN_FLIGHT` batches
 *   are out at a time; the rest wait in the queue, at most `maxQueued` (a server that answers slowly
 *   or never must not make it grow with the stream): past that the oldest is answered without a request.
 * - `createOwnerLookup` resolves subflow parents one `GET /task_runs/{id}` each, as SPEC §2 says,
 *   through a queue of batches of one: at most `OWNER_LOOKUPS_IN_FLIGHT` at a time, at most
 *   `OWNER_LOOKUPS_QUEUED_MAX` waiting.
 * - `createFlowParentLookup` asks `GET /flow_runs/{id}` for the tracking task of a flow run not seen
 *   yet that runs hang under (a subflow's events were missed or come later), the same way.
 * - `createStateHistoryLookup` asks `GET /flow_run_states/?flow_run_id=…` (or
 *   `/task_run_states/?task_run_id=…`) for the state history of a run first seen leaving a terminal
 *   state, to number its rerun, the same way.
 */
import { AuthError, errorText } from '../errors.js';
import { canonicalUuid } from '../model/ids.js';
import type { RunType } from '../model/classify.js';
import type { HistoryState } from '../model/rerun-attempt.js';
import type { PrefectRestClient, RestResult } from './rest.js';

/**
 * A run found by id, or why there is none (`transport`: no HTTP answer at all; `absent`: the filter
 * request was answered without it, so the server does not have it).
 */
export type RunAnswer<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string; readonly transport: boolean; readonly absent?: true };

/** Runs per request; Prefect's default `PREFECT_API_DEFAULT_LIMIT` is 200. */
export const MAX_BATCH = 50;
/** The longest a look-up waits for others to share its request. */
export const GATHER_MS = 20;
export const MAX_IN_FLIGHT = 2;
/** Requests at a time for one batch on a server that refused the filter. */
export const PER_RUN_CONCURRENCY = 4;
/** Subflow parent look-ups (one request per task run) out at a time. */
export const OWNER_LOOKUPS_IN_FLIGHT = 4;
/** Subflow parent look-ups waiting for a request; past it the oldest is answered "not found" without one. */
export const OWNER_LOOKUPS_QUEUED_MAX = 1_000;
/** Look-ups waiting for a batch (the default limits); past it the oldest is answered without a request. */
export const MAX_QUEUED = 10_000;

export interface BatchLimits {
  readonly maxBatch: number;
  readonly gatherMs: number;
  readonly maxInFlight: number;
  readonly maxQueued: number;
}

const BATCHES: BatchLimits = { maxBatch: MAX_BATCH, gatherMs: GATHER_MS, maxInFlight: MAX_IN_FLIGHT, maxQueued: MAX_QUEUED };

/** Statuses that say the server will not take the filter request, as opposed to failing it. */
const FILTER_REFUSED = new Set([400, 404, 405, 422]);

/**
 * Look up runs by id, a batch per request: `many` is the filter request, `one` the single GET.
 * The answers are in the order of `ids` (an id asked twice is answered twice); a run the server
 * does not have is `not found`. An AuthError from either request is thrown.
 */
export function lookupMany<T extends { readonly id: string }>(
  many: (ids: readonly string[]) => Promise<RestResult<T[]>>,
  one: (id: string) => Promise<RestResult<T>>,
  noun: string,
): (ids: readonly string[]) => Promise<RunAnswer<T>[]> {
  let filter = true;
  return async (ids) => {
    if (filter) {
      const r = await many([...new Set(ids)]);
      if (r.ok) {
        const found = new Map(r.value.map((run) => [canonicalUuid(run.id) ?? run.id, run]));
        return ids.map((id): RunAnswer<T> => {
          const run = found.get(canonicalUuid(id) ?? id);
          return run === undefined ? { ok: false, reason: `${noun} ${id} not found`, transport: false, absent: true } : { ok: true, value: run };
        });
      }
      if (r.status === undefined || !FILTER_REFUSED.has(r.status)) {
        return ids.map(() => ({ ok: false, reason: r.message, transport: r.status === undefined }));
      }
      filter = false;
    }
    const answers = new Array<RunAnswer<T>>(ids.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < ids.length) {
        const i = next++;
        const r = await one(ids[i]!);
        answers[i] = r.ok ? r : { ok: false, reason: r.message, transport: r.status === undefined };
      }
    };
    await Promise.all(Array.from({ length: Math.min(PER_RUN_CONCURRENCY, ids.length) }, worker));
    return answers;
  };
}

/**
 * Queue jobs and hand them to `send` in batches (see the module's doc). `send` must settle; the
 * batch's slot is free again when it has. A job pushed out of a full queue goes to `overflow`,
 * which answers it without a request.
 */
export function createBatchQueue<J>(send: (jobs: J[]) => Promise<void>, overflow: (job: J) => void, limits: BatchLimits = BATCHES): (job: J) => void {
  const { maxBatch, gatherMs, maxInFlight, maxQueued } = limits;
  const queue: J[] = [];
  let inFlight = 0;
  /** Set while the queue's oldest job waits for others to join it; `ripe` once it has waited long enough. */
  let gathering: NodeJS.Timeout | undefined;
  let ripe = false;

  const pump = (): void => {
    while (inFlight < maxInFlight && queue.length > 0) {
      if (queue.length < maxBatch && !ripe) {
        gathering ??= setTimeout(() => {
          gathering = undefined;
          ripe = true;
          pump();
        }, gatherMs);
        return;
      }
      ripe = false;
      inFlight += 1;
      void send(queue.splice(0, maxBatch))
        .catch(() => undefined)
        .finally(() => {
          inFlight -= 1;
          pump();
        });
    }
    if (queue.length === 0 && gathering !== undefined) {
      clearTimeout(gathering);
      gathering = undefined;
      ripe = false;
    }
  };

  return (job) => {
    queue.push(job);
    if (queue.length > maxQueued) overflow(queue.shift()!);
    pump();
  };
}

export interface OwnerLookupOptions {
  /** Credentials refused (401/403): the lookup itself answers null. */
  readonly onAuthError?: (err: AuthError) => void;
  /** Every lookup that found no owner for a reason other than the task run having none. */
  readonly onFailure?: (failure: { readonly reason: string; readonly transport: boolean; readonly noApi?: true }) => void;
  /** While true, lookups answer null at once, without a request. */
  readonly skip?: () => boolean;
}

/**
 * The flow run that owns a task run (a subflow's tracking task: reference §5, `flow_run_id`), one
 * `GET /task_runs/{id}` per task run, at most `OWNER_LOOKUPS_IN_FLIGHT` at a time; null when it
 * cannot be found.
 */
export function createOwnerLookup(rest: Pick<PrefectRestClient, 'getTaskRun'>, options: OwnerLookupOptions = {}): (taskRunId: string) => Promise<string | null> {
  return createQueuedLookup(async (id: string): Promise<RestResult<string | null>> => {
    const r = await rest.getTaskRun(id);
    return r.ok ? { ok: true, value: r.value.flowRunId } : r;
  }, options, null);
}

/**
 * The tracking task of a flow run (`parent_task_run_id`: a subflow's or run_deployment child's
 * parent, reference §4c), one `GET /flow_runs/{id}` per flow run, through a queue of its own with the
 * same bounds as `createOwnerLookup`; null when it has none, undefined when it cannot be found.
 */
export function createFlowParentLookup(rest: Pick<PrefectRestClient, 'getFlowRun'>, options: OwnerLookupOptions = {}): (flowRunId: string) => Promise<string | null | undefined> {
  return createQueuedLookup(async (id: string): Promise<RestResult<string | null>> => {
    const r = await rest.getFlowRun(id);
    return r.ok ? { ok: true, value: r.value.parentTaskRunId } : r;
  }, options, undefined);
}

/**
 * The state history of a run (reference §5; ordered by `timestamp`, as Prefect orders it), one
 * `GET /flow_run_states/?flow_run_id=…` or `GET /task_run_states/?task_run_id=…` per run, through a
 * queue of its own with the same bounds as `createOwnerLookup`; undefined when it cannot be read.
 */
export function createStateHistoryLookup(rest: Pick<PrefectRestClient, 'getRunStates'>, options: OwnerLookupOptions = {}): (run: { readonly type: RunType; readonly id: string }) => Promise<readonly HistoryState[] | undefined> {
  return createQueuedLookup((run: { readonly type: RunType; readonly id: string }) => rest.getRunStates(run.type, run.id), options, undefined);
}

/**
 * One request per run (`get`), at most `OWNER_LOOKUPS_IN_FLIGHT` at a time, at most
 * `OWNER_LOOKUPS_QUEUED_MAX` waiting; `failed` when there is no answer.
 */
function createQueuedLookup<K, V, F extends null | undefined>(get: (key: K) => Promise<RestResult<V>>, options: OwnerLookupOptions, failed: F): (key: K) => Promise<V | F> {
  const enqueue = createBatchQueue<{ readonly id: K; readonly resolve: (answer: V | F) => void }>(
    async ([job]) => {
      if (job === undefined) return;
      if (options.skip?.() === true) return job.resolve(failed);
      let answer: V | F = failed;
      try {
        const r = await get(job.id);
        if (r.ok) answer = r.value;
        else options.onFailure?.({ reason: r.message, transport: r.status === undefined, ...(r.noApi === true ? { noApi: true as const } : {}) });
      } catch (err) {
        if (err instanceof AuthError) options.onAuthError?.(err);
        options.onFailure?.({ reason: errorText(err), transport: false });
      }
      job.resolve(answer);
    },
    (job) => {
      options.onFailure?.({ reason: `more than ${OWNER_LOOKUPS_QUEUED_MAX} lookups waiting for the server`, transport: false });
      job.resolve(failed);
    },
    { maxBatch: 1, gatherMs: 0, maxInFlight: OWNER_LOOKUPS_IN_FLIGHT, maxQueued: OWNER_LOOKUPS_QUEUED_MAX },
  );
  return (id) => (options.skip?.() === true ? Promise.resolve(failed) : new Promise((resolve) => enqueue({ id, resolve })));
}

/**
 * The flow runs among `ids` that the server no longer has, asked `MAX_BATCH` at a time with
 * `POST /flow_runs/filter`, one request after the other. Only a filter answer that leaves a run out
 * counts: a server that refused the filter is asked `GET /flow_runs/{id}`, whose 404 may as well be a
 * proxy's, so those runs count as still there; so do the runs of a request that failed. Never throws.
 */
export function deletedFlowRunsFromRest(rest: Pick<PrefectRestClient, 'getFlowRun' | 'getFlowRuns'>): (ids: readonly string[]) => Promise<string[]> {
  const lookup = lookupMany((ids) => rest.getFlowRuns(ids), (id) => rest.getFlowRun(id), 'POST /flow_runs/filter: flow run');
  return async (ids) => {
    const gone: string[] = [];
    for (let i = 0; i < ids.length; i += MAX_BATCH) {
      const batch = ids.slice(i, i + MAX_BATCH);
      try {
        (await lookup(batch)).forEach((a, j) => {
          if (!a.ok && a.absent === true) gone.push(batch[j]!);
        });
      } catch {
        // Refused credentials: the event stream reports them; here the runs keep waiting.
        break;
      }
    }
    return gone;
  };
}
