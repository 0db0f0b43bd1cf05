/**
 * The REST half of the fake Prefect server (reference §2.1, §3, §5): event ingestion with the
 * server's `Event` validation, `POST /events/filter` + `GET /events/filter/next` paging, run lookups
 * one at a time and `POST /flow_runs/filter` / `POST /task_runs/filter` by id or link, and the state
 * history of a run (`GET /flow_run_states/?flow_run_id=…`, `GET /task_run_states/?task_run_id=…`)
 * from the state events stored.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { canonicalUuid, matches, microsToIso, parseFilter, toMicros, type ParsedFilter } from './event-filter.js';
import type { WireEvent } from './fake-prefect.js';

export interface StoredEvent {
  ev: WireEvent;
  us: number | undefined;
  seq: number;
}

export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function labelIssues(v: unknown, loc: (string | number)[], related: boolean): ValidationIssue[] {
  if (!isObject(v)) return [{ loc, msg: 'Input should be a valid dictionary', type: 'dict_type' }];
  const out: ValidationIssue[] = [];
  for (const [k, val] of Object.entries(v)) if (typeof val !== 'string') out.push({ loc: [...loc, k], msg: 'Input should be a valid string', type: 'string_type' });
  if (Object.keys(v).length > 500) out.push({ loc, msg: 'Value error, The maximum number of labels per resource is 500', type: 'value_error' });
  for (const [label, kind] of related ? ([['prefect.resource.id', 'Resources'], ['prefect.resource.role', 'Related Resources']] as const) : ([['prefect.resource.id', 'Resources']] as const)) {
    if (!(label in v)) out.push({ loc, msg: `Value error, ${kind} must include the ${label} label`, type: 'value_error' });
    else if (!v[label]) out.push({ loc, msg: `Value error, The ${label} label must be non-empty`, type: 'value_error' });
  }
  return out;
}

/**
 * The server's `Event` model (src/prefect/server/events/schemas/events.py): `id` and `occurred`
 * required, a non-empty `prefect.resource.id`, related resources with a role, string label values,
 * ≤ 100 related, ≤ 500 labels, names ≤ 1024 chars. On success, the `ReceivedEvent` as the server
 * serialises it (its key order, canonical UUIDs, `occurred` in `Z` form, `received` = now).
 */
export function validateEvent(x: unknown, index: number, nowMs: number): { event: WireEvent } | { issues: ValidationIssue[] } {
  const at = (...loc: (string | number)[]) => ['body', index, ...loc];
  if (!isObject(x)) return { issues: [{ loc: at(), msg: 'Input should be a valid dictionary or object to extract fields from', type: 'model_attributes_type' }] };
  const issues: ValidationIssue[] = [];
  const occurredUs = toMicros(x.occurred);
  if (x.occurred === undefined) issues.push({ loc: at('occurred'), msg: 'Field required', type: 'missing' });
  else if (occurredUs === undefined) issues.push({ loc: at('occurred'), msg: 'Input should be a valid datetime', type: 'datetime_parsing' });
  if (typeof x.event !== 'string') issues.push({ loc: at('event'), msg: x.event === undefined ? 'Field required' : 'Input should be a valid string', type: x.event === undefined ? 'missing' : 'string_type' });
  else if (x.event.length > 1024) issues.push({ loc: at('event'), msg: 'Value error, Event name must be at most 1024 characters', type: 'value_error' });
  if (x.resource === undefined) issues.push({ loc: at('resource'), msg: 'Field required', type: 'missing' });
  else issues.push(...labelIssues(x.resource, at('resource'), false));
  const related = x.related ?? [];
  if (!Array.isArray(related)) issues.push({ loc: at('related'), msg: 'Input should be a valid list', type: 'list_type' });
  else {
    if (related.length > 100) issues.push({ loc: at('related'), msg: 'Value error, The maximum number of related resources is 100', type: 'value_error' });
    related.forEach((r, i) => issues.push(...labelIssues(r, at('related', i), true)));
  }
  const payload = x.payload ?? {};
  if (!isObject(payload)) issues.push({ loc: at('payload'), msg: 'Input should be a valid dictionary', type: 'dict_type' });
  const id = canonicalUuid(x.id);
  if (id === undefined) issues.push({ loc: at('id'), msg: x.id === undefined ? 'Field required' : 'Input should be a valid UUID', type: x.id === undefined ? 'missing' : 'uuid_parsing' });
  const follows = x.follows === undefined || x.follows === null ? null : canonicalUuid(x.follows);
  if (follows === undefined) issues.push({ loc: at('follows'), msg: 'Input should be a valid UUID', type: 'uuid_parsing' });
  if (issues.length > 0) return { issues };
  return {
    event: {
      occurred: microsToIso(occurredUs!),
      event: x.event as string,
      resource: x.resource as Record<string, string>,
      related: related as Record<string, string>[],
      payload: payload as Record<string, unknown>,
      id: id!,
      follows: follows ?? null,
      received: microsToIso(nowMs * 1000),
    },
  };
}

export interface RestContext {
  basePath: string;
  nextPageBase: string | undefined;
  now: () => number;
  events: () => StoredEvent[];
  /** Events of equal `occurred` in a different order in each query (`switches.tiesVary`). */
  tiesVary: () => boolean;
  ingest: (events: WireEvent[]) => void;
  taskRuns: Map<string, Record<string, unknown>>;
  flowRuns: Map<string, Record<string, unknown>>;
  /** `PREFECT_API_DEFAULT_LIMIT`: `limit` of a `/flow_runs/filter` body when absent, and its maximum. */
  defaultLimit: number;
}

interface Page {
  filter: ParsedFilter;
  count: number;
  offset: number;
  pageSize: number;
}

const INTERACTIVE_PAGE_SIZE = 50;

/**
 * Stored events matching `filter` (related filters included, as the SQL applies them), in its order;
 * ties in insertion order, or in its reverse with `ties` -1.
 */
export function query(stored: StoredEvent[], filter: ParsedFilter, ties: 1 | -1 = 1): StoredEvent[] {
  const out = stored.filter((s) => matches(filter, s.ev, s.us, { related: true }));
  const dir = filter.order === 'ASC' ? 1 : -1;
  return out.sort((a, b) => (a.us! - b.us!) * dir || (a.seq - b.seq) * ties);
}

type Reply = (status: number, json?: unknown) => void;

/** Routes under the base path; auth and the `restStatus` switch are checked by the caller. */
export function createRestRoutes(ctx: RestContext) {
  const pages = new Map<string, Page>();
  let tokenSeq = 0;
  let queries = 0;

  const page = (req: IncomingMessage, p: Page) => {
    const all = query(ctx.events(), p.filter, ctx.tiesVary() && ++queries % 2 === 0 ? -1 : 1);
    const events = all.slice(p.offset, p.offset + p.pageSize).map((s) => s.ev);
    let next_page: string | null = null;
    if (p.pageSize > 0 && p.offset + p.pageSize < p.count) {
      // Opaque, and like Prefect's base64 tokens it needs URL-encoding ('+', '/', '=').
      const token = `tok+/${++tokenSeq}==`;
      pages.set(token, { ...p, offset: p.offset + p.pageSize });
      const base = ctx.nextPageBase ?? `http://${req.headers.host ?? '127.0.0.1'}${ctx.basePath}`;
      next_page = `${base}/events/filter/next?page-token=${encodeURIComponent(token)}`;
    }
    return { events, total: p.count, next_page };
  };

  return (req: IncomingMessage, route: string, search: URLSearchParams, body: unknown, reply: Reply): void => {
    const method = req.method ?? 'GET';
    if (method === 'POST' && route === '/events') {
      if (!Array.isArray(body)) return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['body'], msg: 'Input should be a valid list', type: 'list_type' }], request_body: body });
      const results = body.map((x, i) => validateEvent(x, i, ctx.now()));
      const issues = results.flatMap((r) => ('issues' in r ? r.issues : []));
      if (issues.length > 0) return reply(422, { exception_message: 'Invalid request received.', exception_detail: issues, request_body: body });
      ctx.ingest(results.map((r) => (r as { event: WireEvent }).event));
      return reply(204);
    }
    if (method === 'POST' && route === '/events/filter') {
      if (body !== undefined && !isObject(body)) return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['body'], msg: 'Input should be a valid dictionary', type: 'dict_type' }], request_body: body });
      const b = body ?? {};
      const limit = b.limit ?? INTERACTIVE_PAGE_SIZE;
      if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 0 || limit > INTERACTIVE_PAGE_SIZE) {
        return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['body', 'limit'], msg: 'Input should be less than or equal to 50', type: 'less_than_equal' }], request_body: body });
      }
      const parsed = parseFilter(b.filter ?? {}, ctx.now());
      if (!parsed.ok) return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['body', 'filter'], msg: parsed.error, type: 'value_error' }], request_body: body });
      const count = query(ctx.events(), parsed.filter).length;
      return reply(200, page(req, { filter: parsed.filter, count, offset: 0, pageSize: limit }));
    }
    if (method === 'GET' && route === '/events/filter/next') {
      const p = pages.get(search.get('page-token') ?? '');
      if (p === undefined) return reply(403, { detail: 'Invalid page token' });
      return reply(200, page(req, p));
    }
    if (method === 'POST' && (route === '/flow_runs/filter' || route === '/task_runs/filter')) return reply(...filterRuns(ctx, body, route === '/flow_runs/filter' ? 'flow_runs' : 'task_runs'));
    const labels = /^\/flow_runs\/([^/]+)\/labels$/.exec(route);
    if (method === 'PATCH' && labels !== null) {
      // What Prefect's flow engine sends when its own span starts (`update_flow_run_labels`): merged in.
      const id = canonicalUuid(decodeURIComponent(labels[1]!));
      const found = id === undefined ? undefined : ctx.flowRuns.get(id);
      if (found === undefined) return reply(404, { detail: 'Flow run not found' });
      if (!isObject(body)) return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['body'], msg: 'Input should be a valid dictionary', type: 'dict_type' }], request_body: body });
      found.labels = { ...(found.labels as Record<string, unknown>), ...body };
      found.updated = microsToIso(ctx.now() * 1000);
      return reply(204);
    }
    if (method === 'GET' && (route === '/flow_run_states/' || route === '/task_run_states/')) return reply(...runStates(ctx, route === '/flow_run_states/' ? 'flow' : 'task', search));
    const run = /^\/(task_runs|flow_runs)\/([^/]+)$/.exec(route);
    if (method === 'GET' && run !== null) {
      const id = canonicalUuid(decodeURIComponent(run[2]!));
      if (id === undefined) return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['path', 'id'], msg: 'Input should be a valid UUID', type: 'uuid_parsing' }], request_body: null });
      const found = (run[1] === 'task_runs' ? ctx.taskRuns : ctx.flowRuns).get(id);
      return found === undefined ? reply(404, { detail: run[1] === 'task_runs' ? 'Task not found' : 'Flow run not found' }) : reply(200, found);
    }
    reply(404, { detail: 'Not Found' });
  };
}

/**
 * `GET /flow_run_states/?flow_run_id=<id>` and `GET /task_run_states/?task_run_id=<id>`
 * (src/prefect/server/api/flow_run_states.py `read_flow_run_states`, task_run_states.py; the models
 * order by `timestamp`): the run's states as a list of `State`, from its state events (`prefect.<kind>-run.<Name>`
 * with a `validated_state`): the event id is the state id, `timestamp` its `occurred`; ties in the
 * order stored. A run the server does not have: an empty list. The query parameter is required (422
 * without it, or with no UUID). Only the path with its trailing slash is routed: FastAPI redirects
 * the one without (307).
 */
function runStates(ctx: RestContext, kind: 'flow' | 'task', search: URLSearchParams): [number, unknown] {
  const param = `${kind}_run_id`;
  const raw = search.get(param);
  if (raw === null) return [422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['query', param], msg: 'Field required', type: 'missing' }], request_body: null }];
  const id = canonicalUuid(raw);
  if (id === undefined) return [422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['query', param], msg: 'Input should be a valid UUID', type: 'uuid_parsing' }], request_body: null }];
  const resource = `prefect.${kind}-run.${id}`;
  const states = ctx.events()
    .filter((s) => s.ev.resource['prefect.resource.id'] === resource && s.ev.event.startsWith(`prefect.${kind}-run.`) && isObject(s.ev.payload.validated_state) && s.us !== undefined)
    .sort((a, b) => a.us! - b.us! || a.seq - b.seq)
    // One row per state, however often its event was sent.
    .filter((s, i, all) => all.findIndex((o) => o.ev.id === s.ev.id) === i)
    .map(({ ev }) => {
      const v = ev.payload.validated_state as Record<string, unknown>;
      return {
        id: canonicalUuid(ev.id) ?? ev.id, created: ev.received ?? ev.occurred, updated: ev.received ?? ev.occurred,
        type: v.type, name: v.name ?? null, timestamp: ev.occurred, message: v.message ?? null, data: null,
        state_details: { ...(isObject(v.state_details) ? v.state_details : {}), [`${kind}_run_id`]: id },
      };
    });
  return [200, states];
}

/** The criterion besides the id that each filter serves: a flow run's parent task run, a task run's flow run. */
const LINK_FIELD = { flow_runs: 'parent_task_run_id', task_runs: 'flow_run_id' } as const;

/**
 * `POST /flow_runs/filter` and `POST /task_runs/filter` (src/prefect/server/api/flow_runs.py
 * `read_flow_runs`, task_runs.py `read_task_runs`): a body of `sort` (default `ID_DESC`), `limit`
 * (`LimitBody`: at most PREFECT_API_DEFAULT_LIMIT, else 422), `offset` and a `flow_runs` /
 * `task_runs` filter, of which `id.any_` / `id.not_any_` and `parent_task_run_id.any_` /
 * `flow_run_id.any_` are served (all given criteria must hold); the runs as a list.
 */
function filterRuns(ctx: RestContext, body: unknown, kind: 'flow_runs' | 'task_runs'): [number, unknown] {
  const invalid = (loc: string[], msg: string, type: string): [number, unknown] => [422, { exception_message: 'Invalid request received.', exception_detail: [{ loc, msg, type }], request_body: body }];
  if (body !== undefined && !isObject(body)) return invalid(['body'], 'Input should be a valid dictionary', 'dict_type');
  const b = body ?? {};
  const limit = b.limit ?? ctx.defaultLimit;
  if (typeof limit !== 'number' || !Number.isInteger(limit)) return invalid(['body', 'limit'], 'Input should be a valid integer', 'int_type');
  if (limit < 0) return [422, { detail: 'Invalid limit: must be greater than or equal to 0.' }];
  if (limit > ctx.defaultLimit) return [422, { detail: `Invalid limit: must be less than or equal to ${ctx.defaultLimit}.` }];
  const offset = b.offset ?? 0;
  if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) return invalid(['body', 'offset'], 'Input should be greater than or equal to 0', 'greater_than_equal');
  const f = b[kind] ?? {};
  if (!isObject(f)) return invalid(['body', kind], 'Input should be a valid dictionary', 'dict_type');
  const uuids = (v: unknown): Set<string> | undefined | 'bad' => {
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v)) return 'bad';
    const out = new Set<string>();
    for (const x of v) {
      const id = canonicalUuid(x);
      if (id === undefined) return 'bad';
      out.add(id);
    }
    return out;
  };
  const id = isObject(f.id) ? f.id : {};
  const linkField = LINK_FIELD[kind];
  const link = isObject(f[linkField]) ? f[linkField] : {};
  const any = uuids(id.any_);
  const notAny = uuids(id.not_any_);
  const links = uuids(link.any_);
  for (const [v, loc] of [[any, 'id'], [notAny, 'id'], [links, linkField]] as const) {
    if (v === 'bad') return invalid(['body', kind, loc], 'Input should be a valid UUID', 'uuid_parsing');
  }
  const runs = [...(kind === 'flow_runs' ? ctx.flowRuns : ctx.taskRuns)].filter(([rid, r]) => {
    if (any instanceof Set && !any.has(rid)) return false;
    if (notAny instanceof Set && notAny.has(rid)) return false;
    const linked = canonicalUuid(r[linkField]);
    if (links instanceof Set && !(linked !== undefined && links.has(linked))) return false;
    return true;
  });
  const sort = b.sort ?? 'ID_DESC';
  if (sort !== 'ID_DESC') return invalid(['body', 'sort'], 'only ID_DESC is served by this fake', 'enum');
  runs.sort(([x], [y]) => (x < y ? 1 : -1));
  return [200, runs.slice(offset, offset + limit).map(([, r]) => r)];
}

export interface FlowRunInput {
  id: string;
  name?: string;
  flow_id?: string;
  deployment_id?: string | null;
  parent_task_run_id?: string | null;
  /** Merged over the server's default labels (`prefect.flow.id`, and `prefect.deployment.id` for a deployment run). */
  labels?: Record<string, string | number | boolean>;
  [k: string]: unknown;
}

/**
 * A flow run as `GET /flow_runs/{id}` answers (`FlowRunResponse`, reference §5): every field, null
 * where unset, `labels` with the server's defaults. Fields given in `run` win.
 */
export function flowRunResponse(run: FlowRunInput, nowMs: number): Record<string, unknown> {
  const now = microsToIso(nowMs * 1000);
  const flowId = run.flow_id ?? '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d';
  const deploymentId = run.deployment_id ?? null;
  const { labels, ...rest } = run;
  return {
    created: now, updated: now, name: 'crimson-fox', flow_id: flowId, state_id: null,
    deployment_id: deploymentId, deployment_version: null, work_queue_id: null, work_queue_name: null, flow_version: null,
    parameters: {}, idempotency_key: null, context: {}, empirical_policy: { max_retries: 0, retry_delay_seconds: 0.0, retries: 0, retry_delay: 0, pause_keys: [], resuming: false, retry_type: null },
    tags: [], parent_task_run_id: null, state_type: null, state_name: null, run_count: 0, expected_start_time: null,
    next_scheduled_start_time: null, start_time: null, end_time: null, total_run_time: 0.0, estimated_run_time: 0.0,
    estimated_start_time_delta: 0.0, auto_scheduled: false, infrastructure_document_id: null, infrastructure_pid: null,
    created_by: null, work_pool_id: null, work_pool_name: null, state: null, job_variables: {},
    ...rest,
    id: run.id.toLowerCase(),
    labels: { 'prefect.flow.id': flowId, ...(deploymentId === null ? {} : { 'prefect.deployment.id': deploymentId }), ...labels },
  };
}

/** Read a request body; `undefined` when empty, the raw text when it is not JSON. */
export async function readJsonBody(req: IncomingMessage): Promise<{ body: unknown; invalid: boolean }> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return { body: undefined, invalid: false };
  try {
    return { body: JSON.parse(text) as unknown, invalid: false };
  } catch {
    return { body: text, invalid: true };
  }
}

export function sendJson(res: ServerResponse, status: number, json?: unknown): void {
  const text = json === undefined || status === 204 ? '' : JSON.stringify(json);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
