/**
 * A small Prefect server on loopback speaking the real protocol (shared/reference/prefect-event-stream.md):
 * `/api/events/out` with sub-protocol `prefect`, the auth message (1008 on a bad token), the filter
 * (1002 on unknown keys), `until` defaulting to *now*, `since` clamped to the backfill window,
 * backfill then live; `POST /api/events/filter` paging with an absolute `next_page` on the wrong
 * host (as behind a proxy); `GET /api/task_runs/{id}`.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';

export interface TestEvent {
  id: string;
  occurred: string;
  event: string;
  resource: Record<string, string>;
  related: unknown[];
  payload: Record<string, unknown>;
}

interface Connection {
  path: string | undefined;
  protocol: string;
  headers: IncomingHttpHeaders;
  authToken: string | null | undefined;
  filters: unknown[];
  closeCode?: number;
  closeReason?: string;
  ws: WebSocket;
  live: boolean;
  sinceMs: number;
  untilMs: number;
  prefixes: string[] | undefined;
}

interface RestRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body?: unknown;
}

export interface MiniOptions {
  authString?: string;
  apiKey?: string;
  backfillWindowMs?: number;
  /** Answer the upgrade with this HTTP status. */
  rejectUpgrade?: number;
  /** Close every subscription with 1002 after the filter message. */
  rejectFilters?: boolean;
  autoPong?: boolean;
  port?: number;
}

const FILTER_KEYS = new Set(['occurred', 'event', 'resource', 'related', 'any_resource', 'id', 'text', 'order']);

export async function startMiniPrefect(opts: MiniOptions = {}) {
  const backfillWindowMs = opts.backfillWindowMs ?? 15 * 60_000;
  const expected = opts.authString ?? opts.apiKey;
  const stored: TestEvent[] = [];
  const connections: Connection[] = [];
  const upgrades: { path: string | undefined; headers: IncomingHttpHeaders }[] = [];
  const restRequests: RestRequest[] = [];
  const pages = new Map<string, { events: TestEvent[]; offset: number }>();
  let tokenSeq = 0;
  const taskRuns = new Map<string, { id: string; flow_run_id: string | null; name?: string }>();

  const matches = (ev: TestEvent, sinceMs: number, untilMs: number, prefixes: string[] | undefined): boolean => {
    const t = Date.parse(ev.occurred);
    return t >= sinceMs && t <= untilMs && (prefixes === undefined || prefixes.some((p) => ev.event.startsWith(p)));
  };
  const sorted = (events: TestEvent[]): TestEvent[] => [...events].sort((a, b) => Date.parse(a.occurred) - Date.parse(b.occurred));
  const frame = (ev: TestEvent): string => JSON.stringify({ type: 'event', event: ev });

  const wss = new WebSocketServer({
    noServer: true,
    autoPong: opts.autoPong ?? true,
    handleProtocols: (protocols) => (protocols.has('prefect') ? 'prefect' : false),
  });

  const server: Server = createServer((req, res) => void handleRest(req, res));
  server.on('upgrade', (req, socket, head) => {
    upgrades.push({ path: req.url, headers: req.headers });
    if (opts.rejectUpgrade !== undefined) {
      socket.end(`HTTP/1.1 ${opts.rejectUpgrade} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    if (req.url !== '/api/events/out') {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, req));
  });

  function onConnection(ws: WebSocket, req: IncomingMessage): void {
    const conn: Connection = {
      path: req.url,
      protocol: ws.protocol,
      headers: req.headers,
      authToken: undefined,
      filters: [],
      ws,
      live: false,
      sinceMs: 0,
      untilMs: 0,
      prefixes: undefined,
    };
    connections.push(conn);
    let phase: 'auth' | 'filter' | 'live' = 'auth';
    ws.on('close', (code, reason) => {
      conn.live = false;
      conn.closeCode = code;
      conn.closeReason = reason.toString();
    });
    ws.on('message', (data: Buffer) => {
      const msg = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
      if (phase === 'auth') {
        if (msg.type !== 'auth') return ws.close(1008, "Expected 'auth' message");
        conn.authToken = msg.token as string | null;
        if (expected !== undefined && (msg.token === null || msg.token === undefined)) return ws.close(1008, 'Auth required but no token provided');
        if (expected !== undefined && msg.token !== expected) return ws.close(1008, 'Invalid token');
        phase = 'filter';
        return ws.send(JSON.stringify({ type: 'auth_success' }));
      }
      if (phase === 'filter') {
        conn.filters.push(msg);
        if (msg.type !== 'filter') return ws.close(1002, "Expected 'filter' message");
        const f = (msg.filter ?? {}) as Record<string, unknown>;
        const unknown = Object.keys(f).filter((k) => !FILTER_KEYS.has(k));
        if (opts.rejectFilters === true || unknown.length > 0) return ws.close(1002, `Invalid filter: ${unknown.join(',') || 'forced'}`);
        const occurred = (f.occurred ?? {}) as { since?: string; until?: string };
        const nowMs = Date.now();
        conn.sinceMs = Math.max(occurred.since !== undefined ? Date.parse(occurred.since) : 0, nowMs - backfillWindowMs);
        conn.untilMs = occurred.until !== undefined ? Date.parse(occurred.until) : nowMs;
        conn.prefixes = (f.event as { prefix?: string[] } | undefined)?.prefix;
        phase = 'live';
        if (msg.backfill !== false) {
          for (const ev of sorted(stored)) if (matches(ev, conn.sinceMs, conn.untilMs, conn.prefixes)) ws.send(frame(ev));
        }
        conn.live = true;
      }
      // later messages are read and ignored, as Prefect does
    });
  }

  async function handleRest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const body = text === '' ? undefined : (JSON.parse(text) as unknown);
    restRequests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, ...(body !== undefined ? { body } : {}) });
    const reply = (status: number, json?: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(json === undefined ? '' : JSON.stringify(json));
    };
    if (opts.authString !== undefined && req.headers.authorization !== `Basic ${Buffer.from(opts.authString).toString('base64')}`) return reply(401, { detail: 'nope' });
    if (opts.apiKey !== undefined && req.headers.authorization !== `Bearer ${opts.apiKey}`) return reply(401, { detail: 'nope' });
    const url = new URL(req.url ?? '/', 'http://x');
    const page = (events: TestEvent[], offset: number) => {
      const slice = events.slice(offset, offset + 50);
      let next_page: string | null = null;
      if (offset + 50 < events.length) {
        const token = `tok+/${++tokenSeq}==`;
        pages.set(token, { events, offset: offset + 50 });
        // As Prefect does, an absolute URL built from the server's idea of its base: wrong behind a proxy.
        next_page = `http://wrong-host.invalid:1/elsewhere/api/events/filter/next?page-token=${encodeURIComponent(token)}`;
      }
      return { events: slice, total: events.length, next_page };
    };
    if (req.method === 'POST' && url.pathname === '/api/events/filter') {
      const b = body as { filter: { occurred: { since: string; until: string }; event?: { prefix: string[] } }; limit: number };
      if (b.limit > 50) return reply(422, { detail: 'limit' });
      const events = sorted(stored).filter((ev) => matches(ev, Date.parse(b.filter.occurred.since), Date.parse(b.filter.occurred.until), b.filter.event?.prefix));
      return reply(200, page(events, 0));
    }
    if (req.method === 'GET' && url.pathname === '/api/events/filter/next') {
      const p = pages.get(url.searchParams.get('page-token') ?? '');
      if (p === undefined) return reply(403, { detail: 'Invalid page token' });
      return reply(200, page(p.events, p.offset));
    }
    const taskRun = /^\/api\/task_runs\/([0-9a-f-]+)$/.exec(url.pathname);
    if (req.method === 'GET' && taskRun !== null) {
      const run = taskRuns.get(taskRun[1]!);
      return run === undefined ? reply(404, { detail: 'Task run not found' }) : reply(200, run);
    }
    reply(404, { detail: 'Not found' });
  }

  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}/api`,
    port,
    connections,
    upgrades,
    restRequests,
    addTaskRun(run: { id: string; flow_run_id: string | null; name?: string }): void {
      taskRuns.set(run.id, run);
    },
    store(events: TestEvent[]): void {
      stored.push(...events);
    },
    publish(events: TestEvent[]): void {
      stored.push(...events);
      for (const c of connections) {
        if (!c.live) continue;
        for (const ev of events) if (matches(ev, c.sinceMs, c.untilMs, c.prefixes)) c.ws.send(frame(ev));
      }
    },
    sendRaw(data: string | Buffer, binary = false): void {
      for (const c of connections) if (c.live) c.ws.send(data, { binary });
    },
    dropConnections(code = 1011): void {
      for (const c of connections) if (c.ws.readyState === WebSocket.OPEN) c.ws.close(code, 'dropped by the test');
    },
    async close(): Promise<void> {
      for (const c of wss.clients) c.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      wss.close();
    },
  };
}

export type Mini = Awaited<ReturnType<typeof startMiniPrefect>>;
