/**
 * HTTP requests for the REST client, on `node:http`/`node:https` with keep-alive connections.
 * A flow run's look-up costs about 70 µs of CPU this way against about 250 µs through `fetch`
 * (measured on loopback, four at a time), and a busy server asks for one per flow run.
 *
 * What `fetch` did for us is done here: redirects are followed (at most `MAX_REDIRECTS`; a 303,
 * or a 301/302 answering a POST, continues as a GET without the body; a redirect that leaves the
 * origin carries only the headers that hold no secret, see `keepsAuthorization`), gzip, deflate and
 * brotli bodies are decoded, and one deadline bounds the whole exchange, redirects and body
 * included. A body (and what it decodes to) is bounded too, at `MAX_BODY_BYTES` unless told
 * otherwise.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { brotliDecompress, gunzip, inflate } from 'node:zlib';
import { promisify } from 'node:util';
import { untraced } from '../export/untraced.js';
import { createTunnelAgent, ProxyError, proxyFor, type ProxyEnv } from './proxy.js';

export const MAX_REDIRECTS = 5;
/**
 * An idle connection is closed by us after this long: before uvicorn's default 5 s keep-alive
 * timeout closes it from the server's side, so that no request goes out on a socket the server is
 * just closing (which fails as a reset).
 */
export const IDLE_SOCKET_MS = 4_000;
/** The largest answer read: a page of events or a run is far smaller; beyond it, memory would follow the server. */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;
const CUT_SHORT = 'the connection closed before the whole answer arrived';
/** The statuses that send a request elsewhere (`Location`). */
export const REDIRECTS: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);
const DECODERS: Record<string, (b: Buffer, o: { maxOutputLength: number }) => Promise<Buffer>> = {
  gzip: promisify(gunzip),
  'x-gzip': promisify(gunzip),
  deflate: promisify(inflate),
  br: promisify(brotliDecompress),
};

/**
 * The headers a redirect that leaves the origin carries on (lower case): those prefect-otel sets
 * that say nothing about who asks. Authorization, the custom headers of
 * `PREFECT_CLIENT_CUSTOM_HEADERS` (an access proxy's client secret) and the CSRF token are the
 * server's own to see: an access proxy that sends a request on to its sign-in page on another host
 * must not hand them to that host.
 */
const CROSS_ORIGIN_HEADERS: ReadonlySet<string> = new Set(['accept', 'content-type', 'user-agent']);

/**
 * Whether a redirect carries the credentials on: within the origin, and, as Prefect's own client
 * (httpx) has it, from http to https on the same host, both on their default ports (a proxy that
 * sends `http://prefect.example.com/api` to `https://prefect.example.com/api`). Anywhere else they
 * are dropped, so that a redirect never hands them to another server.
 */
export function keepsAuthorization(from: URL, to: URL): boolean {
  if (from.origin === to.origin) return true;
  return from.protocol === 'http:' && to.protocol === 'https:' && from.hostname === to.hostname && from.port === '' && to.port === '';
}

export interface HttpAnswer {
  readonly status: number;
  /** The body, decoded as UTF-8. */
  readonly text: string;
  /** The `Retry-After` header of a 429 or 503, as sent (seconds or an HTTP date). */
  readonly retryAfter?: string;
  /** The answer carries `Prefect-Maintenance: true`: Prefect Cloud is down for maintenance (src/prefect/client/base.py). */
  readonly maintenance?: true;
}

/** The header with which Prefect Cloud marks an answer given while it is down for maintenance (lower case, as Node gives headers). */
export const MAINTENANCE_HEADER = 'prefect-maintenance';

/** Whether a `Prefect-Maintenance` header says maintenance: Prefect's client compares it with `"true"`. */
export function isMaintenance(header: string | string[] | undefined): boolean {
  return header === 'true';
}

/** No HTTP answer: the connection failed, the deadline passed, the caller aborted, the body would not decode. */
export class HttpTransportError extends Error {
  /** No connection to the server could be made (refused, no such host, no route): it is not there, as opposed to not answering. */
  readonly unreachable: boolean;
  constructor(message: string, options?: { cause?: unknown; unreachable?: boolean }) {
    super(message, options);
    this.name = 'HttpTransportError';
    this.unreachable = options?.unreachable ?? false;
  }
}

/** Socket errors that say no connection could be made at all. */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

export interface HttpClient {
  /** Resolves to the final answer, whatever its status; rejects only with an HttpTransportError. */
  send(method: 'GET' | 'POST', url: string, headers: Readonly<Record<string, string>>, body?: string, signal?: AbortSignal): Promise<HttpAnswer>;
  /** End what the proxy tunnels hold, CONNECTs not yet answered included: the process is stopping. */
  close(): void;
}

/** How an https server's certificate is checked: `ca` instead of Node's authorities; `rejectUnauthorized` false checks nothing. */
export interface TlsOptions {
  readonly ca?: string | undefined;
  readonly rejectUnauthorized?: boolean | undefined;
}

/** The https agents' certificate checks. */
export function tlsAgentOptions(tls: TlsOptions | undefined): { ca?: string; rejectUnauthorized?: false } {
  return { ...(tls?.ca === undefined ? {} : { ca: tls.ca }), ...(tls?.rejectUnauthorized === false ? { rejectUnauthorized: false as const } : {}) };
}

export function createHttpClient(options: {
  readonly timeoutMs: number;
  readonly idleSocketMs?: number;
  readonly maxBodyBytes?: number;
  readonly tls?: TlsOptions | undefined;
  /** HTTP(S)_PROXY and NO_PROXY: requests go through the proxy's tunnel unless NO_PROXY names the host. */
  readonly proxy?: ProxyEnv | undefined;
}): HttpClient {
  // Idle keep-alive sockets are unref'd by the agent, so they never hold the process open, and
  // closed after `idleSocketMs` (the agent's socket timeout only ends free sockets).
  const keep = { keepAlive: true, timeout: options.idleSocketMs ?? IDLE_SOCKET_MS };
  const agents = { http: new HttpAgent(keep), https: new HttpsAgent({ ...keep, ...tlsAgentOptions(options.tls) }) };
  /** Tunnel agents by proxy and scheme, made on first use. */
  const tunnels = new Map<string, HttpAgent>();
  const agentFor = (target: URL): HttpAgent => {
    const secure = target.protocol === 'https:';
    const proxy = proxyFor(target, options.proxy);
    if (proxy === undefined) return secure ? agents.https : agents.http;
    const key = `${secure ? 's' : ''}|${proxy.href}`;
    let agent = tunnels.get(key);
    if (agent === undefined) tunnels.set(key, (agent = createTunnelAgent(proxy, secure, options.timeoutMs, { ...keep, ...(secure ? tlsAgentOptions(options.tls) : {}) })));
    return agent;
  };

  return {
    close() {
      for (const agent of tunnels.values()) agent.destroy();
    },
    async send(method, url, headers, body, signal) {
      const limits: Limits = { deadline: Date.now() + options.timeoutMs, timeoutMs: options.timeoutMs, signal, maxBodyBytes: options.maxBodyBytes ?? MAX_BODY_BYTES };
      let target = parseUrl(url);
      let m: 'GET' | 'POST' = method;
      let payload = body;
      let h: Record<string, string> = { ...headers };
      for (let redirects = 0; ; redirects++) {
        const res = await exchange(target, m, h, payload, limits, agentFor(target));
        const location = res.headers.location;
        if (!REDIRECTS.has(res.statusCode ?? 0) || location === undefined) {
          const retryAfter = res.headers['retry-after'];
          const maintenance = isMaintenance(res.headers[MAINTENANCE_HEADER]);
          const text = await readBody(res, limits);
          return { status: res.statusCode ?? 0, text, ...(retryAfter === undefined ? {} : { retryAfter }), ...(maintenance ? { maintenance: true as const } : {}) };
        }
        res.resume(); // a redirect's own body is not needed
        if (redirects === MAX_REDIRECTS) throw new HttpTransportError(`more than ${MAX_REDIRECTS} redirects`);
        const next = parseUrl(location, target);
        if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new HttpTransportError(`redirected to an unsupported scheme ${next.protocol}`);
        if (res.statusCode === 303 || ((res.statusCode === 301 || res.statusCode === 302) && m === 'POST')) {
          m = 'GET';
          payload = undefined;
          h = withoutHeader(h, 'content-type');
        }
        if (!keepsAuthorization(target, next)) h = Object.fromEntries(Object.entries(h).filter(([k]) => CROSS_ORIGIN_HEADERS.has(k.toLowerCase())));
        target = next;
      }
    },
  };
}

/** What bounds one exchange, redirects and body included. */
interface Limits {
  readonly deadline: number;
  readonly timeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly maxBodyBytes: number;
}

/** One request; resolves with the response head (its body still to read). */
function exchange(url: URL, method: 'GET' | 'POST', headers: Record<string, string>, body: string | undefined, limits: Limits, agent: HttpAgent): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const head: OutgoingHttpHeaders = { ...headers, 'Accept-Encoding': 'gzip, deflate, br' };
    if (body !== undefined) head['Content-Length'] = Buffer.byteLength(body);
    // Made untraced whenever it is made: an application whose OpenTelemetry SDK started after
    // prefect-otel has a context manager that the timers and sockets made before it do not carry.
    const req = untraced(() => (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers: head, agent }));
    const stop = guard(limits, (err) => req.destroy(err));
    req.on('error', (err) => {
      stop();
      const unreachable = err instanceof ProxyError ? err.unreachable : UNREACHABLE_CODES.has((err as NodeJS.ErrnoException).code ?? '');
      reject(err instanceof HttpTransportError ? err : new HttpTransportError(describe(err), { cause: err, unreachable }));
    });
    req.on('response', (res) => {
      stop();
      resolve(res);
    });
    req.end(body);
  });
}

/** The whole body, decoded as its Content-Encoding says, within the same deadline. */
function readBody(res: IncomingMessage, limits: Limits): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const stop = guard(limits, (err) => res.destroy(err));
    const tooLarge = (): HttpTransportError => new HttpTransportError(`the answer is larger than ${limits.maxBodyBytes} bytes`);
    res.on('data', (c: Buffer) => {
      bytes += c.length;
      if (bytes > limits.maxBodyBytes) res.destroy(tooLarge());
      else chunks.push(c);
    });
    const cut = (cause?: unknown): void => {
      stop();
      reject(new HttpTransportError(CUT_SHORT, { cause }));
    };
    res.on('error', (err) => {
      if (err instanceof HttpTransportError) {
        stop();
        reject(err);
      } else cut(err); // Node's own 'aborted' (ECONNRESET): the server went away mid-body
    });
    res.on('close', () => {
      if (!res.complete) cut();
    });
    res.on('end', () => {
      stop();
      const raw = Buffer.concat(chunks);
      const encoding = (res.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
      if (encoding === 'identity' || raw.length === 0) return resolve(raw.toString('utf8'));
      const decode = DECODERS[encoding];
      if (decode === undefined) return reject(new HttpTransportError(`unsupported Content-Encoding ${encoding}`));
      decode(raw, { maxOutputLength: limits.maxBodyBytes }).then(
        (b) => resolve(b.toString('utf8')),
        (err: unknown) =>
          reject((err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE' ? tooLarge() : new HttpTransportError(`the ${encoding} body would not decode: ${describe(err)}`, { cause: err })),
      );
    });
  });
}

/** Destroy with a timeout or abort error when the deadline passes or the signal fires; returns the disarm. */
function guard({ deadline, timeoutMs, signal }: Limits, destroy: (err: Error) => void): () => void {
  const timer = setTimeout(() => destroy(new HttpTransportError(`timed out after ${timeoutMs} ms`)), Math.max(0, deadline - Date.now()));
  const onAbort = (): void => destroy(new HttpTransportError('aborted'));
  if (signal?.aborted === true) queueMicrotask(onAbort);
  else signal?.addEventListener('abort', onAbort, { once: true });
  return () => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  };
}

/** A socket error as a sentence with its code, e.g. `connect ECONNREFUSED 127.0.0.1:4200`. */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

function parseUrl(text: string, base?: URL): URL {
  try {
    return new URL(text, base);
  } catch {
    throw new HttpTransportError(base === undefined ? 'not a URL' : 'redirected to something that is not a URL');
  }
}

function withoutHeader(headers: Record<string, string>, name: string): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== name));
}
