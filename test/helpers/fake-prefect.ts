/**
 * A fake Prefect server on 127.0.0.1:0 that speaks the real protocol
 * (/work/shared/reference/prefect-event-stream.md §1–§4), for testing a real client:
 *
 * - `ws <base>/events/out`: sub-protocol `prefect` + auth message (1008 on failures), legacy mode
 *   without a sub-protocol when no auth is configured (HTTP 403 when it is, and at any other path), the filter message
 *   (1002 on errors, unknown keys rejected), `until` defaulting to *now* at parse time, `since`
 *   clamped to the backfill window, backfill (of what is written: `holdPersist`) then live through a bounded per-subscriber queue whose
 *   overflow is dropped silently. `related` filters apply to the backfill only (as the server's SQL
 *   does); they match every live event, as on the server.
 * - `ws <base>/events/in`, `POST /events`, `POST /events/filter` + `GET /events/filter/next`,
 *   `GET /task_runs/{id}`, `GET /flow_runs/{id}`, `POST /task_runs/filter`, `POST /flow_runs/filter`, `PATCH /flow_runs/{id}/labels`,
 *   `GET /flow_run_states/?flow_run_id=…`, `GET /task_run_states/?task_run_id=…` (from the state events stored),
 *   `GET /csrf-token`; REST auth is Basic (auth string) or Bearer (API key); CSRF protection on request.
 * - `switches` for misbehaviour (duplicates, reordering, a stuck stream, malformed frames, closes, a
 *   proxy that drops the sub-protocol header, a reply to the auth message that is not Prefect's).
 */
import { createServer, STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type RequestListener } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { matches, microsToIso, parseFilter, toMicros, type ParsedFilter } from './event-filter.js';
import { createRestRoutes, flowRunResponse, query, readJsonBody, sendJson, validateEvent, type FlowRunInput, type StoredEvent } from './prefect-rest.js';

/** An event as Prefect serialises a `ReceivedEvent` (§4). Loose on purpose: tests also send odd ones. */
export type WireEvent = {
  id: string;
  occurred: string;
  event: string;
  resource: Record<string, string>;
  related: Record<string, string>[];
  payload: Record<string, unknown>;
  follows?: string | null;
  received?: string;
};

export interface FakePrefectOptions {
  /** Self-hosted `PREFECT_SERVER_API_AUTH_STRING`: the WS token must equal it; REST needs `Basic base64(it)`. */
  authString?: string;
  /** Prefect Cloud: the WS token must equal the key; REST needs `Bearer <key>`. */
  apiKey?: string;
  /** Default `/api`; e.g. `/api/accounts/<uuid>/workspaces/<uuid>` for Cloud. */
  basePath?: string;
  /** The `since` clamp of `/events/out`; default 15 min. */
  backfillWindowMs?: number;
  /** Per-subscriber live queue; default 256 (Prefect's SUBSCRIPTION_BACKLOG). */
  backlog?: number;
  /** Clock in ms for defaults, the clamp and `received`; default `Date.now`. */
  now?: () => number;
  /** Backfill page size (default 250): each page is queried when the previous one is sent, with OFFSET, as Prefect does. */
  pageSize?: number;
  /**
   * How long each backfill page after the first takes to query (default 0), as Prefect's COUNT/OFFSET
   * queries on a busy database do: live events published meanwhile wait in the subscriber's queue,
   * and those past its backlog are dropped (`src/prefect/server/events/stream.py`).
   */
  backfillPageDelayMs?: number;
  /** `PREFECT_API_DEFAULT_LIMIT` (default 200): the largest `limit` the `/…/filter` REST routes take. */
  defaultLimit?: number;
  /** Answer every WS upgrade with this HTTP status. */
  rejectUpgrade?: number;
  /** Prefix of the absolute `next_page` URLs (default: `http://<Host header><basePath>`), e.g. a wrong one as behind a proxy. */
  nextPageBase?: string;
  /** Close every subscription with 1002 "Invalid filter: forced" after its filter message. */
  rejectFilters?: boolean;
  /** Answer WS pings (default true); false: pings go unanswered while `switches.stall` is on, as a half-open server's would. */
  autoPong?: boolean;
  /** Only to re-listen on a port an earlier fake got from port 0 (server restart tests). */
  port?: number;
  /** Serve HTTPS and WSS with this key and certificate (PEM): a server behind TLS. */
  tls?: { key: string; cert: string };
  /**
   * `PREFECT_SERVER_CSRF_PROTECTION_ENABLED`: every POST, PUT, PATCH and DELETE needs the
   * `Prefect-Csrf-Token` and `Prefect-Csrf-Client` headers of a token from `GET /csrf-token?client=…`
   * (403 otherwise, as Prefect's CsrfMiddleware answers). Off (Prefect's default), `GET /csrf-token`
   * answers 422 "CSRF protection is disabled.".
   */
  csrfProtection?: boolean;
}

export interface ConnectionRecord {
  /** The upgrade request's URL. */
  path: string;
  /** The accepted sub-protocol ('' in legacy mode). */
  protocol: string;
  headers: IncomingHttpHeaders;
  /** The auth message's token: undefined before/without an auth message, or when it had no `token` key. */
  authToken: string | null | undefined;
  /** Messages received in the filter step (normally one). */
  filters: unknown[];
  /** True from an accepted filter until the socket closes. */
  live: boolean;
  /** Live events dropped for this subscriber because its backlog was full (part of `stats.droppedForBacklog`). */
  dropped: number;
  /** Live events waiting in this subscriber's queue now (at most the backlog). */
  readonly queued: number;
  /** The code the server closed with, else the one the client's close carried (1006 when the TCP connection just died). */
  closeCode?: number;
  closeReason?: string;
}

export interface RestRequestRecord {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body?: unknown;
}

export interface FakePrefectSwitches {
  /** Send every live event twice. */
  duplicate: boolean;
  /** Deliver live events in swapped pairs; a leftover odd one follows after ~50 ms. */
  reorder: boolean;
  /** Queue (and drop beyond the backlog) but send nothing, like a stuck Distributor; resumes when false again. */
  stall: boolean;
  /** Malformed frames before each live event: non-JSON, an array, an event message without / with a bad event, a binary frame. */
  badFrames: number;
  /** Terminate each connection after sending this many events (0 = never). */
  closeAfter: number;
  /** Nonzero: every REST request is answered with this status. */
  restStatus: number;
  /** The `Retry-After` of those answers (Prefect Cloud's rate limit sends one with its 429s); none when undefined. */
  restRetryAfter: string | undefined;
  /**
   * Down for maintenance, as Prefect Cloud marks it: the `restStatus` answers carry
   * `Prefect-Maintenance: true` (the header Prefect's client retries on without counting,
   * src/prefect/client/base.py), and every websocket upgrade is answered HTTP 503 with it (and
   * `restRetryAfter` as its `Retry-After`); the latter is an inference, as Prefect's repository shows
   * only the client's side.
   */
  maintenance: boolean;
  /**
   * Nonzero: every n-th REST request (counted from the server's start) is answered with HTTP 500, as
   * by a Prefect server whose database is now and then locked or busy.
   */
  restFailEvery: number;
  /** Hold every REST answer (a slow server) until set false again; requests are recorded as they arrive. */
  holdRest: boolean;
  /**
   * Published events are delivered live but not written where the backfill and `/events/filter`
   * read them until set false again, as by Prefect's EventPersister, which writes every 5 s or 20
   * events (reference §1.6): an event published shortly before a subscription is in neither its
   * backfill nor its live stream. `store()` is never held.
   */
  holdPersist: boolean;
  /**
   * Answers given, in turn, to the next REST requests instead of the server's, as by a proxy or an
   * ingress in front of it (its HTML sign-in page with HTTP 200, say). Each is taken once.
   */
  restReplies: { status: number; contentType: string; body: string }[];
  /**
   * Nonzero: this many more websocket upgrades (`Infinity`: all) are answered without their
   * `Sec-WebSocket-Protocol: prefect` header, the sub-protocol still taken, as through a proxy or
   * ingress that drops that header from the HTTP 101 answer.
   */
  stripSubprotocol: number;
  /**
   * Raw text frames, one per connection in turn, each sent in answer to an auth message the server
   * would accept, in place of `{"type":"auth_success"}` (a proxy's page, a garbled frame); that
   * connection then waits for the client. Taken from the front; empty: the server's own answer.
   */
  authReplies: string[];
  /**
   * Order events of equal `occurred` differently in each `/events/filter` query or page (the order
   * they were stored in, then its reverse, in turn), as a database may: Prefect orders by `occurred`
   * alone, so OFFSET pages then repeat some of those that straddle a boundary and skip others.
   */
  tiesVary: boolean;
}

export interface FakePrefect {
  /** PREFECT_API_URL for a client: `http://127.0.0.1:PORT<basePath>`. */
  url: string;
  port: number;
  /** Store and deliver live; sets `received` (on the given object) if absent. Synchronous; delivery is asynchronous. */
  publish(events: WireEvent | WireEvent[]): void;
  /** Store only: history for backfills and `/events/filter`. Sets `received` if absent. */
  store(events: WireEvent | WireEvent[]): void;
  addTaskRun(run: { id: string; flow_run_id: string | null; name?: string; task_key?: string; [k: string]: unknown }): void;
  /** Served by `GET /flow_runs/{id}` and `POST /flow_runs/filter` as a whole `FlowRunResponse` (defaults filled in, server labels merged). */
  addFlowRun(run: FlowRunInput): void;
  readonly connections: ConnectionRecord[];
  /** Every WS upgrade attempt, including rejected ones. */
  readonly upgrades: { path: string; headers: IncomingHttpHeaders }[];
  readonly restRequests: RestRequestRecord[];
  readonly stats: { droppedForBacklog: number; sent: number };
  /** Set its fields at any time (the object itself stays). */
  readonly switches: FakePrefectSwitches;
  /** Forget every CSRF token handed out, as the server does once they expire (`PREFECT_SERVER_CSRF_TOKEN_EXPIRATION`). */
  expireCsrfTokens(): void;
  /** Send a raw frame to every live `/events/out` connection. */
  sendRaw(data: string | Buffer, binary?: boolean): void;
  /** Terminate (no code) or close with `code` every open WS connection. */
  dropConnections(code?: number): void;
  /** Resolves once `n` connections in total have completed the filter step. */
  waitForConnections(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

interface Sub {
  rec: ConnectionRecord;
  ws: WebSocket;
  filter?: ParsedFilter;
  backfill?: { filter: ParsedFilter; count: number; offset: number; page: WireEvent[]; ids: Set<string>; queried?: boolean };
  queue: WireEvent[];
  held?: WireEvent;
  heldTimer?: NodeJS.Timeout;
  sentEvents: number;
  badSeq: number;
  scheduled: boolean;
}

const HIGH_WATER = 64 * 1024;
/** `PREFECT_SERVER_CSRF_TOKEN_EXPIRATION`'s default. */
const CSRF_TOKEN_TTL_MS = 3600_000;
const BAD_FRAMES: (string | Buffer)[] = ['this is not JSON {', '[1,2,3]', '{"type":"event"}', '{"type":"event","event":{"id":1}}', Buffer.from([0xde, 0xad, 0xbe, 0xef])];
const frame = (ev: WireEvent): string => JSON.stringify({ type: 'event', event: ev });
const asList = (e: WireEvent | WireEvent[]): WireEvent[] => (Array.isArray(e) ? e : [e]);
const pyTruthy = (v: unknown): boolean => !(v === null || v === false || v === 0 || v === '' || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && Object.keys(v).length === 0));

/** WebSocket close reasons are limited to 123 bytes. */
function reason(s: string): string {
  let out = s;
  while (Buffer.byteLength(out) > 123) out = out.slice(0, -1);
  return out;
}

export async function startFakePrefect(options: FakePrefectOptions = {}): Promise<FakePrefect> {
  const now = options.now ?? Date.now;
  const basePath = (options.basePath ?? '/api').replace(/\/+$/, '');
  const windowMs = options.backfillWindowMs ?? 15 * 60_000;
  const backlog = options.backlog ?? 256;
  const pageSize = options.pageSize ?? 250;
  const pageDelayMs = options.backfillPageDelayMs ?? 0;
  const tokens = [options.authString, options.apiKey].filter((t): t is string => t !== undefined);
  const restAuth = [...(options.authString === undefined ? [] : [`Basic ${Buffer.from(options.authString).toString('base64')}`]), ...(options.apiKey === undefined ? [] : [`Bearer ${options.apiKey}`])];
  const stored: StoredEvent[] = [];
  let seq = 0;
  const subs: Sub[] = [];
  const connections: ConnectionRecord[] = [];
  const upgrades: { path: string; headers: IncomingHttpHeaders }[] = [];
  const restRequests: RestRequestRecord[] = [];
  const stats = { droppedForBacklog: 0, sent: 0 };
  const taskRuns = new Map<string, Record<string, unknown>>();
  const flowRuns = new Map<string, Record<string, unknown>>();
  let filtered = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  let stall = false;
  let holdRest = false;
  let holdPersist = false;
  const unpersisted: WireEvent[] = [];
  const heldRest: (() => void)[] = [];
  const csrfTokens = new Map<string, { token: string; expiresMs: number }>();
  const switches: FakePrefectSwitches = {
    duplicate: false, reorder: false, badFrames: 0, closeAfter: 0, restStatus: 0, restRetryAfter: undefined, maintenance: false, restFailEvery: 0, restReplies: [], stripSubprotocol: 0, authReplies: [], tiesVary: false,
    get stall() { return stall; },
    set stall(v: boolean) { stall = v; if (!v) subs.forEach(schedule); },
    get holdRest() { return holdRest; },
    set holdRest(v: boolean) { holdRest = v; if (!v) heldRest.splice(0).forEach((release) => release()); },
    get holdPersist() { return holdPersist; },
    set holdPersist(v: boolean) { holdPersist = v; if (!v) unpersisted.splice(0).forEach(persist); },
  };

  const persist = (ev: WireEvent): void => void stored.push({ ev, us: toMicros(ev.occurred), seq: seq++ });
  const receive = (ev: WireEvent): void => {
    ev.received ??= microsToIso(now() * 1000);
    persist(ev);
  };

  function publish(events: WireEvent | WireEvent[]): void {
    const list = asList(events);
    if (holdPersist) {
      for (const ev of list) ev.received ??= microsToIso(now() * 1000);
      unpersisted.push(...list);
    } else list.forEach(receive);
    for (const sub of subs) {
      if (sub.filter === undefined || sub.ws.readyState !== WebSocket.OPEN) continue;
      for (const ev of list) {
        if (!matches(sub.filter, ev, toMicros(ev.occurred))) continue;
        if (sub.queue.length >= backlog) {
          stats.droppedForBacklog++;
          sub.rec.dropped++;
        } else sub.queue.push(ev);
      }
      schedule(sub);
    }
  }

  function schedule(sub: Sub): void {
    if (sub.scheduled) return;
    sub.scheduled = true;
    setImmediate(() => pump(sub));
  }

  /** Drains one subscriber as fast as its socket takes it: backfill pages first, then the live queue. */
  function pump(sub: Sub): void {
    sub.scheduled = false;
    const { ws } = sub;
    if (stall || ws.readyState !== WebSocket.OPEN) return;
    while (!stall && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < HIGH_WATER) {
      const bf = sub.backfill;
      if (bf !== undefined && bf.page.length === 0 && bf.offset < bf.count) {
        if (pageDelayMs > 0 && bf.queried !== true) {
          bf.queried = true; // the query runs meanwhile; the live queue waits behind it
          setTimeout(() => schedule(sub), pageDelayMs);
          return;
        }
        bf.queried = false;
        bf.page = query(stored, bf.filter).slice(bf.offset, bf.offset + pageSize).map((s) => s.ev);
        bf.offset += pageSize;
        if (bf.page.length === 0) bf.offset = bf.count;
      }
      const next = bf?.page.shift();
      if (next !== undefined) {
        bf!.ids.add(next.id);
        send(sub, next);
        continue;
      }
      const ev = sub.queue.shift();
      if (ev === undefined) return;
      if (bf?.ids.delete(ev.id) === true) continue; // already backfilled on this connection (skipped once)
      deliverLive(sub, ev);
    }
    if (!stall && ws.readyState === WebSocket.OPEN) setTimeout(() => schedule(sub), 5); // socket buffer full: try again shortly
  }

  function deliverLive(sub: Sub, ev: WireEvent): void {
    if (!switches.reorder && sub.held === undefined) return sendLive(sub, ev);
    if (sub.held === undefined) {
      sub.held = ev;
      sub.heldTimer = setTimeout(() => flushHeld(sub), 50);
      return;
    }
    const held = sub.held;
    clearTimeout(sub.heldTimer);
    sub.held = undefined;
    sendLive(sub, ev);
    sendLive(sub, held);
  }

  function flushHeld(sub: Sub): void {
    const held = sub.held;
    sub.held = undefined;
    if (held !== undefined && sub.ws.readyState === WebSocket.OPEN) sendLive(sub, held);
  }

  function sendLive(sub: Sub, ev: WireEvent): void {
    for (let i = 0; i < switches.badFrames; i++) {
      const bad = BAD_FRAMES[sub.badSeq++ % BAD_FRAMES.length]!;
      sub.ws.send(bad, { binary: typeof bad !== 'string' });
    }
    send(sub, ev);
    if (switches.duplicate) send(sub, ev);
  }

  function send(sub: Sub, ev: WireEvent): void {
    if (sub.ws.readyState !== WebSocket.OPEN) return;
    sub.ws.send(frame(ev));
    stats.sent++;
    sub.sentEvents++;
    if (switches.closeAfter > 0 && sub.sentEvents >= switches.closeAfter) sub.ws.terminate();
  }

  const closeWith = (sub: Sub, code: number, why = ''): void => {
    sub.rec.closeCode = code;
    sub.rec.closeReason = reason(why);
    sub.ws.close(code, sub.rec.closeReason);
  };

  const wss = new WebSocketServer({
    noServer: true,
    autoPong: options.autoPong ?? true,
    handleProtocols: (_protocols, req) => (offersPrefect(req) ? 'prefect' : false),
  });
  // As uvicorn's websockets server: the 101 response carries the server's Date.
  wss.on('headers', (headers) => {
    headers.push(`Date: ${new Date(now()).toUTCString()}`);
    if (switches.stripSubprotocol <= 0) return;
    switches.stripSubprotocol -= 1;
    const i = headers.findIndex((h) => h.toLowerCase().startsWith('sec-websocket-protocol:'));
    if (i >= 0) headers.splice(i, 1);
  });
  // As `accept_prefect_socket` (src/prefect/server/utilities/subscriptions.py): every
  // Sec-WebSocket-Protocol header (Node joins repeated ones with ", "), split on commas, each trimmed.
  const offersPrefect = (req: IncomingMessage): boolean => String(req.headers['sec-websocket-protocol'] ?? '').split(',').some((p) => p.trim() === 'prefect');

  function onConnection(ws: WebSocket, req: IncomingMessage, kind: 'out' | 'in'): void {
    const queue: WireEvent[] = [];
    const rec: ConnectionRecord = {
      path: req.url ?? '', protocol: ws.protocol, headers: req.headers, authToken: undefined, filters: [], live: false, dropped: 0,
      get queued() { return queue.length; },
    };
    const sub: Sub = { rec, ws, queue, sentEvents: 0, badSeq: 0, scheduled: false };
    connections.push(rec);
    if (kind === 'out') subs.push(sub);
    let phase: 'auth' | 'filter' | 'open' = ws.protocol === 'prefect' ? 'auth' : kind === 'out' ? 'filter' : 'open';
    if (options.autoPong === false) {
      ws.on('ping', (data) => {
        if (!stall) ws.pong(data);
      });
    }
    ws.on('close', (code, why) => {
      rec.live = false;
      rec.closeCode ??= code;
      rec.closeReason ??= why.toString();
      clearTimeout(sub.heldTimer);
      const i = subs.indexOf(sub);
      if (i >= 0) subs.splice(i, 1);
    });
    ws.on('error', () => undefined);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (phase === 'open' && kind === 'out') return; // read and ignored, as still_connected() does
      let msg: unknown;
      try {
        if (isBinary) throw new Error('binary');
        msg = JSON.parse(data.toString('utf8'));
      } catch {
        return closeWith(sub, 1011); // receive_json/iter_text raise: the handler dies
      }
      const m = (typeof msg === 'object' && msg !== null && !Array.isArray(msg) ? msg : undefined) as Record<string, unknown> | undefined;
      if (phase === 'auth') {
        if (m?.type !== 'auth') return closeWith(sub, 1008, "Expected 'auth' message");
        rec.authToken = m.token as string | null | undefined;
        if (tokens.length > 0) {
          if (m.token === undefined || m.token === null || m.token === '') return closeWith(sub, 1008, 'Auth required but no token provided');
          if (!tokens.includes(m.token as string)) return closeWith(sub, 1008, 'Invalid token');
        }
        const reply = switches.authReplies.shift();
        if (reply !== undefined) {
          phase = 'open';
          ws.send(reply);
          return;
        }
        phase = kind === 'out' ? 'filter' : 'open';
        ws.send(JSON.stringify({ type: 'auth_success' }));
        return;
      }
      if (kind === 'in') {
        const r = validateEvent(msg, 0, now());
        if ('issues' in r) return closeWith(sub, 1011);
        return publish(r.event);
      }
      rec.filters.push(msg);
      if (m === undefined || !('type' in m)) return closeWith(sub, 1011); // message["type"] raises
      if (m.type !== 'filter') return closeWith(sub, 1002, "Expected 'filter' message");
      if (options.rejectFilters === true) return closeWith(sub, 1002, 'Invalid filter: forced');
      if (!('filter' in m)) return closeWith(sub, 1002, "Invalid filter: 'filter'");
      const parsed = parseFilter(m.filter, now(), windowMs);
      if (!parsed.ok) return closeWith(sub, 1002, `Invalid filter: ${parsed.error}`);
      const filter = { ...parsed.filter, order: 'ASC' as const };
      sub.filter = filter;
      if (!('backfill' in m) || pyTruthy(m.backfill)) {
        // The count and the first page at once, as `query_events` reads them; later pages as they are sent.
        const matching = query(stored, filter);
        sub.backfill = { filter, count: matching.length, offset: pageSize, page: matching.slice(0, pageSize).map((x) => x.ev), ids: new Set() };
      }
      phase = 'open';
      rec.live = true;
      filtered++;
      for (const w of waiters.filter((x) => filtered >= x.n)) w.resolve();
      schedule(sub);
    });
  }

  const routes = createRestRoutes({ basePath, nextPageBase: options.nextPageBase, now, events: () => stored, tiesVary: () => switches.tiesVary, ingest: (evs) => publish(evs), taskRuns, flowRuns, defaultLimit: options.defaultLimit ?? 200 });
  const handler: RequestListener = (req, res) => {
    void (async () => {
      const { body, invalid } = await readJsonBody(req);
      restRequests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, ...(body === undefined ? {} : { body }) });
      if (holdRest) await new Promise<void>((release) => heldRest.push(release));
      const reply = (status: number, json?: unknown) => sendJson(res, status, json);
      const proxied = switches.restReplies.shift();
      if (proxied !== undefined) return void res.writeHead(proxied.status, { 'Content-Type': proxied.contentType }).end(proxied.body);
      if (switches.restStatus !== 0) {
        if (switches.restRetryAfter !== undefined) res.setHeader('Retry-After', switches.restRetryAfter);
        if (switches.maintenance) res.setHeader('Prefect-Maintenance', 'true');
        return reply(switches.restStatus, { detail: STATUS_CODES[switches.restStatus] ?? 'Error' });
      }
      if (switches.restFailEvery > 0 && restRequests.length % switches.restFailEvery === 0) return reply(500, { exception_message: 'Internal Server Error' });
      if (restAuth.length > 0 && !restAuth.includes(String(req.headers.authorization ?? ''))) return reply(401, { exception_message: 'Unauthorized' });
      const url = new URL(req.url ?? '/', 'http://x');
      const refusal = csrfRefusal(req);
      if (refusal !== undefined) return reply(403, { detail: refusal });
      if (req.method === 'GET' && url.pathname === `${basePath}/csrf-token`) return csrfToken(url.searchParams.get('client'), reply);
      if (!url.pathname.startsWith(`${basePath}/`)) return reply(404, { detail: 'Not Found' });
      if (invalid) return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }], request_body: body });
      routes(req, url.pathname.slice(basePath.length), url.searchParams, body, reply);
    })();
  };
  /** Prefect's CsrfMiddleware (src/prefect/server/api/middleware.py): the detail of its 403, or undefined when the request may pass. */
  function csrfRefusal(req: IncomingMessage): string | undefined {
    if (options.csrfProtection !== true || !['POST', 'PUT', 'PATCH', 'DELETE'].includes(req.method ?? '')) return undefined;
    const token = req.headers['prefect-csrf-token'];
    const client = req.headers['prefect-csrf-client'];
    if (token === undefined) return 'Missing CSRF token.';
    if (client === undefined) return 'Missing client identifier.';
    const held = csrfTokens.get(String(client));
    return held === undefined || held.token !== token || held.expiresMs <= now() ? 'Invalid CSRF token or client identifier.' : undefined;
  }
  /** `GET /csrf-token?client=…` (src/prefect/server/api/csrf_token.py): a new token for the client, replacing its old one. */
  function csrfToken(client: string | null, reply: (status: number, json?: unknown) => void): void {
    if (options.csrfProtection !== true) return reply(422, { detail: 'CSRF protection is disabled.' });
    if (client === null) return reply(422, { exception_message: 'Invalid request received.', exception_detail: [{ loc: ['query', 'client'], msg: 'Field required', type: 'missing' }], request_body: null });
    const token = randomBytes(32).toString('base64url');
    const expiresMs = now() + CSRF_TOKEN_TTL_MS;
    csrfTokens.set(client, { token, expiresMs });
    const at = microsToIso(now() * 1000);
    reply(200, { id: randomUUID(), created: at, updated: at, token, client, expiration: microsToIso(expiresMs * 1000) });
  }
  const server = options.tls === undefined ? createServer(handler) : createTlsServer({ key: options.tls.key, cert: options.tls.cert }, handler);

  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    upgrades.push({ path: req.url ?? '', headers: req.headers });
    // A client that gives up on a refused upgrade may reset the connection: not this server's error.
    socket.on('error', () => undefined);
    const refuse = (status: number) => socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    if (options.rejectUpgrade !== undefined) return refuse(options.rejectUpgrade);
    if (switches.maintenance) {
      const retryAfter = switches.restRetryAfter === undefined ? '' : `Retry-After: ${switches.restRetryAfter}\r\n`;
      return socket.end(`HTTP/1.1 503 Service Unavailable\r\nPrefect-Maintenance: true\r\n${retryAfter}Content-Length: 0\r\nConnection: close\r\n\r\n`);
    }
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const kind = path === `${basePath}/events/out` ? 'out' : path === `${basePath}/events/in` ? 'in' : undefined;
    // Starlette closes a websocket at a route it does not have before accepting it (the router's
    // not_found, the UI's StaticFiles alike), which uvicorn answers with HTTP 403.
    if (kind === undefined) return refuse(403);
    // Without the sub-protocol the server closes before accepting when auth is configured: HTTP 403.
    if (!offersPrefect(req) && tokens.length > 0) return refuse(403);
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, req, kind));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}${basePath}`,
    port,
    publish,
    store: (events) => asList(events).forEach(receive),
    addTaskRun: (run) => void taskRuns.set(run.id.toLowerCase(), run),
    addFlowRun: (run) => void flowRuns.set(run.id.toLowerCase(), flowRunResponse(run, now())),
    connections,
    upgrades,
    restRequests,
    stats,
    switches,
    expireCsrfTokens: () => csrfTokens.clear(),
    sendRaw(data, binary = false) {
      for (const s of subs) if (s.rec.live) s.ws.send(data, { binary });
    },
    dropConnections(code) {
      for (const ws of wss.clients) {
        if (code === undefined) ws.terminate();
        else if (ws.readyState === WebSocket.OPEN) ws.close(code, 'dropped by the test');
      }
    },
    waitForConnections(n, timeoutMs = 5_000) {
      if (filtered >= n) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`expected ${n} subscriptions, got ${filtered} in ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ n, resolve: () => { clearTimeout(timer); resolve(); } });
      });
    },
    async close() {
      switches.holdRest = false;
      for (const s of subs) clearTimeout(s.heldTimer);
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---- for tests written against the first version of this helper -----------------------------------

/** @deprecated use startFakePrefect; this one answers `next_page` with a wrong absolute host, as behind a proxy. */
export const startMiniPrefect = (options: FakePrefectOptions = {}): Promise<FakePrefect> =>
  startFakePrefect({ nextPageBase: 'http://wrong-host.invalid:1/elsewhere/api', ...options });
/** @deprecated */
export type MiniOptions = FakePrefectOptions;
/** @deprecated */
export type Mini = FakePrefect;
/** @deprecated */
export type TestEvent = WireEvent;
