/**
 * The few Prefect REST calls prefect-otel makes: run look-ups (a subflow's parent, a flow run's labels, a
 * run's state history) and the event history (to fill a gap longer than the websocket's 15-minute backfill).
 */
import { randomUUID } from 'node:crypto';
import { AuthError, ProtocolError, errorText } from '../errors.js';
import { createHttpClient, HttpTransportError, type TlsOptions } from './http-client.js';
import { PROXY_AUTH_REQUIRED, ProxyError, proxyVariable, type ProxyEnv } from './proxy.js';
import { parseTimestampUs } from '../model/time.js';
import type { HistoryState } from '../model/rerun-attempt.js';
import { canonicalUuid } from '../model/ids.js';
import { apiBase, authAdvice, authSetting, isApiPath, prefectAuth, redactSecrets, restAuthHeaders, shownServerText, USER_AGENT, type PrefectAuth } from './prefect-api.js';

/**
 * A call's value, or why there is none. `noApi`: the server answered, but not as a Prefect API does:
 * a 404 for a route it does not have (Starlette's `{"detail":"Not Found"}`, a proxy's page), or a
 * success that is no JSON at all (a web UI's or a sign-in page), as when the API URL lacks its `/api`.
 */
export type RestResult<T> = { ok: true; value: T } | { ok: false; status?: number; message: string; noApi?: true };

export interface TaskRunInfo {
  readonly id: string;
  readonly flowRunId: string | null;
  readonly name?: string;
  readonly taskKey?: string;
}

export interface FlowRunInfo {
  readonly id: string;
  readonly name?: string;
  readonly parentTaskRunId: string | null;
  /** The run's labels (string, number and boolean values), e.g. Prefect's own `__OTEL_TRACEPARENT`. */
  readonly labels: Readonly<Record<string, string | number | boolean>>;
  /** `expected_start_time`: when the run was due to start (its schedule's time for a run the scheduler made). */
  readonly expectedStartTime?: string;
}

export interface EventHistoryFilter {
  readonly sinceIso: string;
  readonly untilIso: string;
  /** Event-name prefixes; all events when absent. */
  readonly prefixes?: readonly string[] | undefined;
}

export interface PrefectRestClient {
  /**
   * `GET /task_runs/{id}`. 404 → `{ok:false,status:404}`; 401/403 (and a proxy's 407) throw AuthError.
   * This and the other look-ups are asked again as Prefect's client asks (see `LOOKUP_RETRIES`).
   */
  getTaskRun(id: string): Promise<RestResult<TaskRunInfo>>;
  /** `GET /flow_runs/{id}`. 404 → `{ok:false,status:404}`; 401/403 (and a proxy's 407) throw AuthError. */
  getFlowRun(id: string): Promise<RestResult<FlowRunInfo>>;
  /**
   * Many flow runs in one request: `POST /flow_runs/filter` with `flow_runs.id.any_` (Prefect's
   * `FlowRunFilterId`) and `limit` = the number of ids, so nothing is cut off. The runs found, in
   * the server's order; a run it does not have is simply absent. A server whose
   * `PREFECT_API_DEFAULT_LIMIT` is below `ids.length` answers 422. 401/403 (and a proxy's 407) throw AuthError.
   */
  getFlowRuns(ids: readonly string[]): Promise<RestResult<FlowRunInfo[]>>;
  /**
   * A run's state history: `GET /flow_run_states/?flow_run_id=<id>` or `GET
   * /task_run_states/?task_run_id=<id>` (src/prefect/server/api/flow_run_states.py,
   * task_run_states.py), a list of `State` (`id`, `type`, `name`, `timestamp`, `message`, …) ordered
   * by `timestamp`; a run the server does not have has none (an empty list). 401/403 (and a proxy's
   * 407) throw AuthError.
   */
  getRunStates(type: 'flow' | 'task', id: string): Promise<RestResult<HistoryState[]>>;
  /**
   * Pages of events, oldest first: `POST /events/filter`, then `GET /events/filter/next` on our own API
   * base with the `page-token` of each `next_page`. Throws AuthError on 401/403 and a proxy's 407 (a 403 on a later page
   * means a rejected page token: ProtocolError), RestRequestError on other failures (also a 2xx whose
   * body is not an event page: its start is in `body`).
   */
  readEvents(filter: EventHistoryFilter, options?: { signal?: AbortSignal }): AsyncGenerator<unknown[]>;
  /** Abort every request still out, and every later one at once: the process is stopping. */
  close(): void;
}

export interface RestClientOptions extends PrefectAuth {
  readonly apiUrl: string;
  /** Per request (default 10 s). */
  readonly timeoutMs?: number;
  readonly userAgent?: string;
  /** How the server's certificate is checked (PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY). */
  readonly tls?: TlsOptions | undefined;
  /** HTTP(S)_PROXY and NO_PROXY. */
  readonly proxy?: ProxyEnv | undefined;
  /** The longest one wait of a run look-up that the server asked to come back later (default 5 minutes). */
  readonly lookupMaxWaitMs?: number;
}

/** A history request that failed for a reason other than auth (network, timeout, HTTP 5xx, …). */
export class RestRequestError extends Error {
  readonly status: number | undefined;
  /** No connection could be made (see HttpTransportError.unreachable). */
  readonly unreachable: boolean;
  /** How long the answer's `Retry-After` asked to wait (a 429 or 503 whose wait was too long to take here). */
  readonly retryAfterMs: number | undefined;
  /** A successful answer whose body is not what was asked for (a proxy's sign-in page, say): its start, on one line, secrets redacted. */
  readonly body: string | undefined;
  /** The answer was marked `Prefect-Maintenance: true`: Prefect Cloud is down for maintenance. */
  readonly maintenance: boolean;
  constructor(message: string, status?: number, unreachable = false, retryAfterMs?: number, body?: string, maintenance = false) {
    super(message);
    this.maintenance = maintenance;
    this.name = 'RestRequestError';
    this.status = status;
    this.unreachable = unreachable;
    this.retryAfterMs = retryAfterMs;
    this.body = body;
  }
}

/** Prefect's `INTERACTIVE_PAGE_SIZE`: the server rejects a larger limit. */
export const EVENTS_PAGE_LIMIT = 50;
const DEFAULT_TIMEOUT_MS = 10_000;
/** A server that keeps handing out pages forever is broken; stop well before that hurts. */
const MAX_PAGES = 100_000;

/**
 * When a request answered as not now is sent again. `statuses`: the answers that say not now.
 * `maxRetries`: how often, in a row. `waitMs`: the wait when the server names none, by retry (0 first).
 * `maxRetryAfterMs`: the longest wait taken; a longer Retry-After is either given to the caller
 * (`longer: 'answer'`, whose own backoff applies) or waited for this long (`'cut'`).
 * `maintenance`: an answer marked `Prefect-Maintenance: true` is not counted against `maxRetries`.
 */
interface RetryPolicy {
  readonly statuses: ReadonlySet<number>;
  readonly maxRetries: number;
  readonly waitMs: (retry: number) => number;
  readonly maxRetryAfterMs: number;
  readonly longer: 'answer' | 'cut';
  readonly maintenance: boolean;
}

/**
 * The event history: a rate-limited (429) or briefly unavailable (503) answer is asked again up to 4
 * times, after the wait the server names (1 s when none) if it is a minute at most; anything longer
 * goes to the websocket's loop, which waits up to 5 minutes and keeps the window, so that the stream
 * is never held back here.
 */
const HISTORY_RETRIES: RetryPolicy = { statuses: new Set([429, 503]), maxRetries: 4, waitMs: () => 1_000, maxRetryAfterMs: 60_000, longer: 'answer', maintenance: false };

/**
 * Run look-ups, as Prefect's own client sends its requests (src/prefect/client/base.py,
 * `_send_with_retry`): 408, 429, 502 and 503 are asked again up to 5 times
 * (`PREFECT_CLIENT_MAX_RETRIES`' default), after the server's Retry-After or else 2, 4, 8… s, and an
 * answer marked `Prefect-Maintenance: true` as often as it comes, uncounted. Only the runs waiting for
 * the answer wait (within the open-run bounds, and in the state file at a restart); the stream goes
 * on. Unlike Prefect's, one wait is at most 5 minutes, as on the websocket's upgrade: a wrong or
 * hostile Retry-After must not park a look-up for hours.
 */
const LOOKUP_RETRIES: RetryPolicy = {
  statuses: new Set([408, 429, 502, 503]),
  maxRetries: 5,
  waitMs: (retry) => 2 ** (retry + 1) * 1_000,
  maxRetryAfterMs: 5 * 60_000,
  longer: 'cut',
  maintenance: true,
};

/**
 * The details of the 403 with which Prefect's CSRF protection (`PREFECT_SERVER_CSRF_PROTECTION_ENABLED`,
 * src/prefect/server/api/middleware.py) refuses a POST without a valid token: no token, no client
 * id, or one it does not hold (expired, or replaced).
 */
const CSRF_REFUSALS: ReadonlySet<string> = new Set(['Missing CSRF token.', 'Missing client identifier.', 'Invalid CSRF token or client identifier.']);

type Response_ = { status: number; body: unknown; text: string; retryAfter?: string; maintenance?: true } | { status: undefined; error: string; unreachable: boolean };

/** How much of an unexpected answer's body an error shows. */
const MAX_SHOWN_BODY_CHARS = 160;
/** The detail of Starlette's answer for a path no route serves (Prefect's own 404s name the object). */
const ROUTE_NOT_FOUND = 'Not Found';

/**
 * How long a `Retry-After` asks us to wait, in ms; undefined when it is absent or unreadable. Seconds,
 * also with a fraction (Prefect's client reads the header with `float()`, src/prefect/client/base.py,
 * and Prefect's own server sends fractions, src/prefect/server/api/concurrency_limits_v2.py), or an
 * HTTP date, which names its day and month in letters: `Date.parse` would take `120.5` for a date in
 * the year 120, and `1.5` for the 5th of January 2001, both long past.
 */
export function retryAfterMs(header: string | undefined, nowMs: number): number | undefined {
  const t = header?.trim() ?? '';
  if (/^\d+(?:\.\d*)?$/.test(t)) return Math.ceil(Number(t) * 1_000);
  if (!/[a-z]/i.test(t)) return undefined;
  const at = Date.parse(t);
  return Number.isFinite(at) ? Math.max(0, at - nowMs) : undefined;
}

/** The wait before asking again after an answer that says not now: undefined when it is longer than the policy waits. */
function notNowWaitMs(policy: RetryPolicy, retry: number, header: string | undefined): number | undefined {
  const ms = retryAfterMs(header, Date.now()) ?? policy.waitMs(retry);
  if (ms <= policy.maxRetryAfterMs) return ms;
  return policy.longer === 'cut' ? policy.maxRetryAfterMs : undefined;
}

/**
 * Resolves after `ms`, or at once when `signal` aborts. `unref`: the wait does not hold the process
 * open (a background re-read); a request someone awaits keeps it, or a replay could end mid-wait.
 */
export function pause(ms: number, signal: AbortSignal, unref = false): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    if (unref) timer.unref();
    signal.addEventListener('abort', done, { once: true });
  });
}

export function createPrefectRestClient(options: RestClientOptions): PrefectRestClient {
  const base = apiBase(options.apiUrl);
  const apiPath = isApiPath(options.apiUrl);
  const auth = prefectAuth(options);
  const http = createHttpClient({ timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS, tls: options.tls, proxy: options.proxy });
  const headers: Record<string, string> = {
    Accept: 'application/json',
    ...restAuthHeaders(auth),
    'User-Agent': options.userAgent ?? USER_AGENT,
  };

  const authError = (what: string, status: number): AuthError =>
    new AuthError(
      `the Prefect API refused ${what} with HTTP ${status}: ${authAdvice(auth, options.apiUrl)}`,
      authSetting(auth, options.apiUrl),
    );

  const closing = new AbortController();
  const lookupRetries: RetryPolicy = options.lookupMaxWaitMs === undefined ? LOOKUP_RETRIES : { ...LOOKUP_RETRIES, maxRetryAfterMs: options.lookupMaxWaitMs };

  /**
   * Prefect's CSRF protection, as its own client meets it: a server that has it on refuses a POST
   * without a token, which `GET /csrf-token?client=<id>` hands out for this client. Asked for only
   * once a server refuses a POST for the want of one, and again when it no longer takes the one held.
   */
  const csrf = { client: randomUUID(), token: undefined as string | undefined, fetching: undefined as Promise<void> | undefined };

  /** A new CSRF token, unless another request got one since `used` was refused. */
  async function renewCsrfToken(used: string | undefined, abort: AbortSignal): Promise<void> {
    if (csrf.token !== used) return;
    csrf.fetching ??= (async () => {
      const r = await requestOnce('GET', `/csrf-token?client=${csrf.client}`, undefined, abort);
      const token = r.status === 200 && isRecord(r.body) && typeof r.body.token === 'string' ? r.body.token : undefined;
      if (token !== undefined) csrf.token = token;
    })().finally(() => {
      csrf.fetching = undefined;
    });
    await csrf.fetching;
  }

  /**
   * One request; an answer that says not now (Prefect Cloud's rate limit, a server restarting, Prefect
   * Cloud's maintenance) is sent again as `policy` says, so that one busy moment does not cost a
   * history page or a look-up. A POST that CSRF protection refused is sent once more with a new token.
   */
  async function request(method: 'GET' | 'POST', path: string, policy: RetryPolicy, body?: unknown, signal?: AbortSignal): Promise<Response_> {
    const abort = signal === undefined ? closing.signal : AbortSignal.any([signal, closing.signal]);
    let csrfRenewed = false;
    for (let retries = 0; ; ) {
      const token = csrf.token;
      const r = await requestOnce(method, path, body, abort);
      if (method === 'POST' && !csrfRenewed && r.status === 403 && isRecord(r.body) && typeof r.body.detail === 'string' && CSRF_REFUSALS.has(r.body.detail)) {
        csrfRenewed = true;
        await renewCsrfToken(token, abort);
        if (csrf.token === undefined || abort.aborted) return r;
        continue;
      }
      if (r.status === undefined || !policy.statuses.has(r.status)) return r;
      const uncounted = policy.maintenance && r.maintenance === true;
      const waitMs = uncounted || retries < policy.maxRetries ? notNowWaitMs(policy, uncounted ? 0 : retries, r.retryAfter) : undefined;
      if (waitMs === undefined || abort.aborted) return r;
      if (!uncounted) retries += 1;
      await pause(waitMs, abort);
      if (abort.aborted) return r;
    }
  }

  async function requestOnce(method: 'GET' | 'POST', path: string, body: unknown, abort: AbortSignal): Promise<Response_> {
    try {
      const json = body === undefined ? undefined : JSON.stringify(body);
      const withBody = json === undefined ? headers : { ...headers, 'Content-Type': 'application/json' };
      const sent = method === 'POST' && csrf.token !== undefined ? { ...withBody, 'Prefect-Csrf-Token': csrf.token, 'Prefect-Csrf-Client': csrf.client } : withBody;
      const res = await http.send(method, `${base}${path}`, sent, json, abort);
      let parsed: unknown = undefined;
      if (res.text.length > 0) {
        try {
          parsed = JSON.parse(res.text) as unknown;
        } catch {
          parsed = undefined;
        }
      }
      return { status: res.status, body: parsed, text: res.text, ...(res.retryAfter === undefined ? {} : { retryAfter: res.retryAfter }), ...(res.maintenance === true ? { maintenance: true as const } : {}) };
    } catch (err) {
      // The proxy's credentials are missing or wrong: no retry brings them, as refused Prefect credentials.
      const cause = err instanceof HttpTransportError ? err.cause : undefined;
      if (cause instanceof ProxyError && cause.status === PROXY_AUTH_REQUIRED) throw new AuthError(redactSecrets(cause.message, auth), proxyVariable(new URL(base)));
      return { status: undefined, error: redactSecrets(errorText(err), auth), unreachable: err instanceof HttpTransportError && err.unreachable };
    }
  }

  /** One REST call whose answer `map` reads; undefined from `map` means an unexpected body. */
  async function call<T>(method: 'GET' | 'POST', path: string, what: string, body: unknown, map: (body: unknown) => T | undefined): Promise<RestResult<T>> {
    const r = await request(method, path, lookupRetries, body);
    if (r.status === undefined) return { ok: false, message: `${what} failed: ${r.error}` };
    if (r.status === 401 || r.status === 403) throw authError(what, r.status);
    if (r.status === 404) {
      // Prefect's own 404 names what it did not find ("Task not found", or an `exception_message`);
      // Starlette's "Not Found" for a route it does not have counts as such only at a URL that
      // is not an API's path (a server that words its not-found so is still believed).
      if (isRecord(r.body) && (r.body.detail !== ROUTE_NOT_FOUND || apiPath)) return { ok: false, status: 404, message: `${what}: not found` };
      const shown = shownServerText(r.text, auth, MAX_SHOWN_BODY_CHARS);
      return { ok: false, status: 404, message: `${what}: HTTP 404, no such route${shown === '' ? '' : ` (${shown})`}`, noApi: true };
    }
    if (r.status < 200 || r.status > 299) return { ok: false, status: r.status, message: `${what}: HTTP ${r.status}` };
    if (r.body === undefined && r.text.trim() !== '') {
      return { ok: false, status: r.status, message: `${what}: HTTP ${r.status} with a body that is not JSON (${shownServerText(r.text, auth, MAX_SHOWN_BODY_CHARS)})`, noApi: true };
    }
    const value = map(r.body);
    if (value === undefined) return { ok: false, status: r.status, message: `${what}: unexpected response body` };
    return { ok: true, value };
  }

  const getRun = <T>(kind: 'task_runs' | 'flow_runs', id: string, map: (body: Record<string, unknown>) => T | undefined): Promise<RestResult<T>> =>
    call('GET', `/${kind}/${encodeURIComponent(id)}`, `GET /${kind}/${id}`, undefined, (b) => (isRecord(b) ? map(b) : undefined));

  return {
    getTaskRun(id) {
      return getRun<TaskRunInfo>('task_runs', id, taskRunInfo);
    },

    getFlowRun(id) {
      return getRun<FlowRunInfo>('flow_runs', id, flowRunInfo);
    },

    getRunStates(type, id) {
      const path = type === 'flow' ? '/flow_run_states/' : '/task_run_states/';
      const param = type === 'flow' ? 'flow_run_id' : 'task_run_id';
      return call('GET', `${path}?${param}=${encodeURIComponent(id)}`, `GET ${path}?${param}=${id}`, undefined, statesOf);
    },

    getFlowRuns(ids) {
      const body = { flow_runs: { id: { any_: [...ids] } }, limit: ids.length };
      return call('POST', '/flow_runs/filter', 'POST /flow_runs/filter', body, (b) => {
        if (!Array.isArray(b)) return undefined;
        const runs: FlowRunInfo[] = [];
        for (const x of b) {
          const run = isRecord(x) ? flowRunInfo(x) : undefined;
          if (run !== undefined) runs.push(run);
        }
        return runs;
      });
    },

    close() {
      closing.abort();
      http.close();
    },

    async *readEvents(filter, opts = {}) {
      const body = (sinceIso: string, untilIso: string) => ({
        filter: {
          occurred: { since: sinceIso, until: untilIso },
          ...(filter.prefixes !== undefined ? { event: { prefix: [...filter.prefixes] } } : {}),
          order: 'ASC',
        },
        limit: EVENTS_PAGE_LIMIT,
      });
      /**
       * Every page of one query: `POST /events/filter`, then `GET /events/filter/next` with the
       * `page-token` of each `next_page`, each page's events and the number of pages read so far.
       */
      async function* pages(sinceIso: string, untilIso: string, pagesBefore: number): AsyncGenerator<{ events: unknown[]; read: number }> {
        let r = await request('POST', '/events/filter', HISTORY_RETRIES, body(sinceIso, untilIso), opts.signal);
        let what = 'POST /events/filter';
        const seenTokens = new Set<string>();
        for (let page = 0; pagesBefore + page < MAX_PAGES; page++) {
          if (r.status === undefined) throw new RestRequestError(`${what} failed: ${r.error}`, undefined, r.unreachable);
          if (r.status === 401 || (r.status === 403 && page === 0)) throw authError(what, r.status);
          if (r.status === 403) throw new ProtocolError(`${what}: the server rejected its own page token (HTTP 403)`);
          if (r.status < 200 || r.status > 299) {
            const maintenance = r.maintenance === true;
            throw new RestRequestError(`${what}: HTTP ${r.status}${maintenance ? ', marked Prefect-Maintenance: true' : ''}`, r.status, false, retryAfterMs(r.retryAfter, Date.now()), undefined, maintenance);
          }
          // Not Prefect's answer (a proxy's or an ingress's sign-in or error page, served with 200), or one
          // cut short: a failed request like any other, whose caller retries it under its own limits.
          if (!isRecord(r.body) || !Array.isArray(r.body.events)) {
            const shown = shownServerText(r.text, auth, MAX_SHOWN_BODY_CHARS);
            throw new RestRequestError(`${what}: HTTP ${r.status} with a body that is not an event page`, r.status, false, undefined, shown);
          }
          const next = r.body.next_page;
          yield { events: r.body.events as unknown[], read: pagesBefore + page + 1 };
          if (typeof next !== 'string' || next === '') return;
          const token = pageToken(next);
          if (token === undefined) throw new ProtocolError(`${what}: next_page has no page-token`);
          if (seenTokens.has(token)) throw new ProtocolError(`${what}: the server repeated a page token`);
          seenTokens.add(token);
          // Never follow the absolute URL: it is built from the server's idea of its base URL, which is
          // wrong behind a path-rewriting proxy. Only the token matters.
          what = 'GET /events/filter/next';
          r = await request('GET', `/events/filter/next?page-token=${encodeURIComponent(token)}`, HISTORY_RETRIES, undefined, opts.signal);
        }
        throw new ProtocolError(`POST /events/filter: more than ${MAX_PAGES} pages`);
      }

      // Prefect pages by OFFSET over the events ordered by `occurred` alone, and a database may order
      // events with equal `occurred` differently from one query to the next: of those that straddle
      // a page boundary, some would come twice and others never. When a page begins at the instant
      // the page before it ended at, every event of that instant is asked for in a query of its own
      // and given once, in place of the two pages' share of them.
      /** The instant the last page given ended at, and the ids given at it. */
      let tail: { us: number; iso: string; ids: Set<string> } | undefined;
      let read = 0;
      for await (const page of pages(filter.sinceIso, filter.untilIso, 0)) {
        read = page.read;
        let events = page.events;
        const first = events.length > 0 ? occurredUs(events[0]) : undefined;
        if (tail !== undefined && first !== undefined && first.us === tail.us) {
          const given = tail.ids;
          const out: unknown[] = [];
          const take = (event: unknown): void => {
            const id = idOf(event);
            if (id !== undefined && given.has(id)) return;
            if (id !== undefined) given.add(id);
            out.push(event);
          };
          for await (const same of pages(tail.iso, tail.iso, read)) {
            read = same.read;
            for (const event of same.events) if (occurredUs(event)?.us === tail.us) take(event);
          }
          // Those of the instant the query did not have (stored meanwhile) are kept from the page itself.
          for (const event of events) {
            if (occurredUs(event)?.us === tail.us) take(event);
            else out.push(event);
          }
          events = out;
        }
        const last = events.length > 0 ? occurredUs(events[events.length - 1]) : undefined;
        if (last !== undefined) {
          const ids = tail !== undefined && tail.us === last.us ? tail.ids : new Set<string>();
          for (let i = events.length - 1; i >= 0 && occurredUs(events[i])?.us === last.us; i--) {
            const id = idOf(events[i]);
            if (id !== undefined) ids.add(id);
          }
          tail = { us: last.us, iso: last.iso, ids };
        }
        if (events.length > 0) yield events;
      }
    },
  };
}

/** An event's `occurred`, as sent and in microseconds; undefined when it has none that reads. */
function occurredUs(event: unknown): { us: number; iso: string } | undefined {
  const occurred = isRecord(event) ? event.occurred : undefined;
  const us = typeof occurred === 'string' ? parseTimestampUs(occurred) : undefined;
  return us === undefined ? undefined : { us, iso: occurred as string };
}

function idOf(event: unknown): string | undefined {
  const id = isRecord(event) ? event.id : undefined;
  return typeof id === 'string' ? id : undefined;
}

/** The `page-token` query parameter of a `next_page` URL (absolute or relative). */
export function pageToken(nextPage: string): string | undefined {
  try {
    return new URL(nextPage, 'http://placeholder.invalid/').searchParams.get('page-token') ?? undefined;
  } catch {
    return undefined;
  }
}

/** A `TaskRun` as the few fields prefect-otel reads; undefined without an id. */
function taskRunInfo(b: Record<string, unknown>): TaskRunInfo | undefined {
  if (typeof b.id !== 'string') return undefined;
  return {
    id: b.id,
    flowRunId: typeof b.flow_run_id === 'string' ? b.flow_run_id : null,
    ...(typeof b.name === 'string' ? { name: b.name } : {}),
    ...(typeof b.task_key === 'string' ? { taskKey: b.task_key } : {}),
  };
}

/** A `FlowRunResponse` as the few fields prefect-otel reads; undefined without an id. */
function flowRunInfo(b: Record<string, unknown>): FlowRunInfo | undefined {
  if (typeof b.id !== 'string') return undefined;
  return {
    id: b.id,
    ...(typeof b.name === 'string' ? { name: b.name } : {}),
    parentTaskRunId: typeof b.parent_task_run_id === 'string' ? b.parent_task_run_id : null,
    labels: labelsOf(b.labels),
    ...(typeof b.expected_start_time === 'string' ? { expectedStartTime: b.expected_start_time } : {}),
  };
}

/** A list of `State` as the few fields prefect-otel reads, in the server's order; undefined when it is no list of states. */
function statesOf(b: unknown): HistoryState[] | undefined {
  if (!Array.isArray(b)) return undefined;
  const out: HistoryState[] = [];
  for (const s of b) {
    if (!isRecord(s) || typeof s.id !== 'string' || typeof s.type !== 'string') return undefined;
    out.push({ id: canonicalUuid(s.id) ?? s.id, type: s.type, timestampUs: typeof s.timestamp === 'string' ? parseTimestampUs(s.timestamp) : undefined });
  }
  return out;
}

/** KeyValueLabels: string, number or boolean values; anything else is left out. */
function labelsOf(v: unknown): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  if (!isRecord(v)) return out;
  for (const [k, x] of Object.entries(v)) if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') out[k] = x;
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
