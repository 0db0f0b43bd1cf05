/**
 * A Prefect-protocol event server for benchmarks (child process): `/api/events/out` with the real
 * handshake (sub-protocol `prefect`, `auth` → `auth_success`, then the client's `filter`), then
 * `{"type":"event","event":…}` frames from a workload file.
 *
 * - `burst`: every frame as fast as the socket takes it (the client's receive side is the limit);
 * - `rate`: a steady rate, each event's `occurred`/`received` stamped with the time it is sent,
 *   so that the client's lag from `occurred` is real.
 *
 * Run lookups over REST are answered as Prefect would (`answerRest`).
 *
 * Started as `node server.js '<json options>'`; prints `{"port":…}` when listening and
 * `{"sent":…,"ms":…,"cpuMs":…}` when done (`cpuMs`: the process's CPU time while sending).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { WebSocketServer, type WebSocket } from 'ws';
import { flowRunResponse } from '../test/helpers/prefect-rest.js';
import { cpuMsSince } from './cpu.js';
import { readLines } from './workload.js';

interface ServerOptions {
  readonly file: string;
  readonly events: number;
  readonly mode: 'burst' | 'rate';
  /** Events per second (rate mode). */
  readonly rate?: number;
}

const HIGH_WATER = 4 * 1024 * 1024;

async function main(): Promise<void> {
  const options = JSON.parse(process.argv[2] ?? '{}') as ServerOptions;
  // Burst: every frame in memory first, so that the server is never the slow side. Rate: read as
  // sent, so a soak of millions of events does not have to fit in memory.
  const frames = options.mode === 'burst' ? (await readLines(options.file, options.events)).map((l) => `{"type":"event","event":${l}}`) : [];

  const http = createServer(answerRest);
  const wss = new WebSocketServer({ server: http, path: '/api/events/out', perMessageDeflate: false, handleProtocols: (p) => (p.has('prefect') ? 'prefect' : false) });
  wss.on('connection', (ws) => {
    let phase: 'auth' | 'filter' | 'live' = 'auth';
    ws.on('message', (data) => {
      const msg = JSON.parse((data as Buffer).toString()) as { type?: string };
      if (phase === 'auth' && msg.type === 'auth') {
        phase = 'filter';
        ws.send(JSON.stringify({ type: 'auth_success' }));
      } else if (phase === 'filter' && msg.type === 'filter') {
        phase = 'live';
        const started = performance.now();
        const cpu = process.cpuUsage();
        const finished = (sent: number): void => {
          process.stdout.write(`${JSON.stringify({ sent, ms: performance.now() - started, cpuMs: cpuMsSince(cpu) })}\n`);
        };
        if (options.mode === 'burst') sendBurst(ws, frames, finished);
        else sendAtRate(ws, options.file, options.events, options.rate ?? 1000, finished);
      }
    });
    ws.on('error', () => undefined);
  });
  http.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ port: (http.address() as AddressInfo).port })}\n`);
  });
  process.on('message', () => undefined);
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

const FLOW_RUN_PATH = /^\/api\/flow_runs\/([0-9a-f-]{36})$/;

/**
 * The run lookups of Prefect's REST API (reference §5): flow runs as a server that has every run
 * asked for (`GET /api/flow_runs/{id}` and `POST /api/flow_runs/filter` by `id.any_`, each run a
 * whole `FlowRunResponse` without an `__OTEL_TRACEPARENT` label); task runs as a server that has
 * none (`GET /api/task_runs/{id}` is a 404, as everything else is): the workload's subflows'
 * tracking task runs have no events.
 */
function answerRest(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const now = Date.now();
    const one = req.method === 'GET' ? FLOW_RUN_PATH.exec(req.url ?? '') : null;
    if (one !== null) return json(200, flowRunResponse({ id: one[1]! }, now));
    if (req.method === 'POST' && req.url === '/api/flow_runs/filter') {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { flow_runs?: { id?: { any_?: string[] } } };
        return json(200, (body.flow_runs?.id?.any_ ?? []).map((id) => flowRunResponse({ id }, now)));
      } catch {
        return json(422, { detail: 'Invalid request received.' });
      }
    }
    json(404, { detail: 'Not Found' });
  });
}

/**
 * As fast as the client reads: keep HIGH_WATER bytes queued and look again a millisecond later. The
 * wait is a timer, not `setImmediate`: polling would spin a core that the client (the pipeline
 * under test, on a two-core machine) needs, while 4 MB queued is far more than a millisecond's work.
 */
function sendBurst(ws: WebSocket, frames: readonly string[], finished: (sent: number) => void): void {
  let i = 0;
  const pump = (): void => {
    while (i < frames.length && ws.bufferedAmount < HIGH_WATER && ws.readyState === ws.OPEN) ws.send(frames[i++]!);
    if (i >= frames.length || ws.readyState !== ws.OPEN) finished(i);
    else setTimeout(pump, 1);
  };
  pump();
}

/** The workload's lines start with `"occurred"` and end with `"received"`: restamp both without a parse. */
const OCCURRED = /^\{"occurred":"[^"]*"/;
const RECEIVED = /"received":"[^"]*"\}$/;

function sendAtRate(ws: WebSocket, file: string, limit: number, rate: number, finished: (sent: number) => void): void {
  const next = lineReader(file);
  const started = performance.now();
  const startWall = Date.now();
  let i = 0;
  let ended = false;
  const timer = setInterval(() => {
    const due = Math.min(limit, Math.floor(((performance.now() - started) / 1000) * rate));
    while (i < due && ws.readyState === ws.OPEN) {
      const raw = next();
      if (raw === undefined) {
        ended = true;
        break;
      }
      const at = new Date(startWall + (performance.now() - started)).toISOString();
      const line = raw.replace(OCCURRED, `{"occurred":"${at}"`).replace(RECEIVED, `"received":"${at}"}`);
      ws.send(`{"type":"event","event":${line}}`);
      i += 1;
    }
    if (i >= limit || ended || ws.readyState !== ws.OPEN) {
      clearInterval(timer);
      finished(i);
    }
  }, 5);
}

/** The file's non-empty lines one at a time, read synchronously 4 MB at a time. */
function lineReader(file: string): () => string | undefined {
  const fd = openSync(file, 'r');
  const buf = Buffer.alloc(4 << 20);
  const decoder = new StringDecoder('utf8');
  let lines: string[] = [];
  let at = 0;
  let carry = '';
  let eof = false;
  return () => {
    while (at >= lines.length) {
      if (eof) return undefined;
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) {
        eof = true;
        closeSync(fd);
        lines = carry === '' ? [] : [carry];
      } else {
        lines = (carry + decoder.write(buf.subarray(0, n))).split('\n');
        carry = lines.pop() ?? '';
      }
      lines = lines.filter((l) => l !== '');
      at = 0;
    }
    return lines[at++];
  };
}

void main();
