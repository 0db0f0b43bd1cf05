/**
 * Reaching Prefect through an HTTP proxy, as Prefect's own client does: `HTTPS_PROXY` for https
 * and wss URLs, `HTTP_PROXY` for http and ws, `NO_PROXY` for the hosts to reach directly (each in
 * either case, the lower-case one first, as Python reads them). The connection is a tunnel made
 * with `CONNECT host:port`, for the websocket and for REST alike, so the proxy sees neither the
 * credentials nor the events; TLS to the server runs inside the tunnel and checks the server's
 * certificate as a direct connection would.
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type ClientRequestArgs } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type AgentOptions as HttpsAgentOptions } from 'node:https';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { untraced } from '../export/untraced.js';
import { safeUrl } from '../log/redact.js';

/** The proxy variables, as read from the environment. */
export interface ProxyEnv {
  readonly httpProxy: string | undefined;
  readonly httpsProxy: string | undefined;
  readonly noProxy: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

/** HTTPS_PROXY, HTTP_PROXY and NO_PROXY from `env`; undefined when no proxy is set. */
export function proxyEnv(env: Env): ProxyEnv | undefined {
  const read = (name: string): string | undefined => {
    const v = env[name.toLowerCase()] ?? env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const httpProxy = read('HTTP_PROXY');
  const httpsProxy = read('HTTPS_PROXY');
  if (httpProxy === undefined && httpsProxy === undefined) return undefined;
  return { httpProxy, httpsProxy, noProxy: read('NO_PROXY') };
}

/** A problem with a proxy URL, for the configuration errors; undefined when it is usable. */
export function proxyProblem(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const schemeless = !value.includes('://');
  const full = schemeless ? `http://${value}` : value;
  let u: URL;
  try {
    u = new URL(full);
  } catch {
    // Quoted as written, minus the credentials: a bare `user:password@host:port` has them too.
    const shown = safeUrl(full).slice(schemeless ? 'http://'.length : 0);
    return `not a URL: ${JSON.stringify(shown.slice(0, 120))}`;
  }
  return u.protocol === 'http:' || u.protocol === 'https:' ? undefined : `expected an http:// or https:// proxy, got ${u.protocol}`;
}

/** A proxy variable's value as a URL: a bare `host:port` (or `user:password@host:port`) is an http:// proxy. */
export function proxyUrl(value: string): URL {
  return new URL(value.includes('://') ? value : `http://${value}`);
}

/** The variable that names the proxy for `target`: HTTPS_PROXY for https and wss, HTTP_PROXY for http and ws. */
export function proxyVariable(target: URL): 'HTTPS_PROXY' | 'HTTP_PROXY' {
  return target.protocol === 'https:' || target.protocol === 'wss:' ? 'HTTPS_PROXY' : 'HTTP_PROXY';
}

/** The proxy to reach `target` through, or undefined to connect directly. */
export function proxyFor(target: URL, env: ProxyEnv | undefined): URL | undefined {
  if (env === undefined) return undefined;
  const proxy = proxyVariable(target) === 'HTTPS_PROXY' ? env.httpsProxy : env.httpProxy;
  if (proxy === undefined || bypassed(target, env.noProxy)) return undefined;
  return proxyUrl(proxy);
}

/**
 * Whether NO_PROXY names the target: `*`; a host, which also covers its subdomains (`example.com`,
 * `.example.com` and `*.example.com` alike); an IP address; each with an optional `:port`.
 */
function bypassed(target: URL, noProxy: string | undefined): boolean {
  if (noProxy === undefined) return false;
  const host = target.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const port = target.port !== '' ? target.port : target.protocol === 'https:' || target.protocol === 'wss:' ? '443' : '80';
  for (const raw of noProxy.split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    // `[v6]:port`, a bare IPv6 address (more than one colon), or `host:port`.
    const m = /^\[(.*)\](?::(\d+))?$/.exec(entry) ?? (entry.split(':').length > 2 ? [entry, entry, undefined] : /^(.*?)(?::(\d+))?$/.exec(entry)!);
    const name = m[1].replace(/^\*?\./, '');
    if (m[2] !== undefined && m[2] !== port) continue;
    if (host === name || host.endsWith(`.${name}`)) return true;
  }
  return false;
}

/**
 * Statuses with which a proxy says it could not reach the server (Squid answers 503 to a refused
 * connection, most others 502): the server is not there, as a refused direct connection says.
 */
const UNREACHABLE_STATUSES = new Set([502, 503]);

/** A proxy's answer to CONNECT when it wants credentials it was not given (or not these). */
export const PROXY_AUTH_REQUIRED = 407;

/** A proxy's answer other than 200 to CONNECT (the proxy is there, and says no), or no answer in time. */
export class ProxyError extends Error {
  /** The proxy says the server cannot be reached: waited for, like a refused direct connection. */
  readonly unreachable: boolean;
  /** The proxy's answer to CONNECT; undefined when it gave none. */
  readonly status: number | undefined;
  constructor(message: string, unreachable = false, status?: number) {
    super(message);
    this.name = 'ProxyError';
    this.unreachable = unreachable;
    this.status = status;
  }
}

/**
 * An agent whose connections are tunnels through `proxy`: `secure` ones carry TLS to the server,
 * checked with `tls` (the certificate authorities and whether to check at all). A proxy that takes
 * the connection but does not answer CONNECT within `connectTimeoutMs` is given up: until a tunnel
 * is there, the request has no socket, so neither its own timeout nor a destroy reaches the CONNECT.
 */
export function createTunnelAgent(proxy: URL, secure: boolean, connectTimeoutMs: number, options: HttpsAgentOptions = {}): HttpAgent {
  const request = proxy.protocol === 'https:' ? httpsRequest : httpRequest;
  const auth = proxy.username !== '' ? `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}` : undefined;
  const shown = safeUrl(proxy.href).replace(/\/$/, '');

  /** CONNECTs not answered yet: the agent's destroy() ends them too (the agent's own lists hold no socket until a tunnel is there). */
  const pending = new Set<ClientRequest>();
  const tunnel = (opts: ClientRequestArgs, callback: (err: Error | null, stream: Duplex) => void): void => {
    const host = String(opts.host ?? opts.hostname ?? 'localhost').replace(/^\[|\]$/g, '');
    const port = Number(opts.port ?? (secure ? 443 : 80));
    const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    // Untraced whenever it is made, as every request of prefect-otel's (see http-client's exchange).
    const connect = untraced(() => request({
      host: proxy.hostname.replace(/^\[|\]$/g, ''),
      port: proxy.port === '' ? (proxy.protocol === 'https:' ? 443 : 80) : Number(proxy.port),
      method: 'CONNECT',
      path: authority,
      headers: { Host: authority, ...(auth === undefined ? {} : { 'Proxy-Authorization': auth }) },
      agent: false,
    }));
    pending.add(connect);
    let settled = false;
    const done = (err: Error | null, stream: Duplex): void => {
      if (settled) return;
      settled = true;
      pending.delete(connect);
      clearTimeout(timer);
      callback(err, stream);
    };
    const timer = setTimeout(() => {
      done(new ProxyError(`the proxy ${shown} did not answer CONNECT ${authority} within ${connectTimeoutMs} ms`), undefined as unknown as Duplex);
      connect.destroy();
    }, connectTimeoutMs);
    connect.once('connect', (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        done(new ProxyError(`the proxy ${shown} refused CONNECT ${authority} with HTTP ${res.statusCode ?? '?'}${res.statusCode === PROXY_AUTH_REQUIRED ? ' (it wants credentials: add a user and password to the proxy URL)' : ''}`, UNREACHABLE_STATUSES.has(res.statusCode ?? 0), res.statusCode), undefined as unknown as Duplex);
        return;
      }
      if (!secure) {
        done(null, socket);
        return;
      }
      const tlsOptions: ConnectionOptions = { ...(opts as ConnectionOptions), socket, servername: (opts as ConnectionOptions).servername ?? host };
      done(null, tlsConnect(tlsOptions));
    });
    // The socket error's code goes along: a proxy that is not there is waited for as a server that is not there.
    connect.once('error', (err: NodeJS.ErrnoException) =>
      done(Object.assign(new Error(`the proxy ${shown} could not be reached: ${err.message}`), { code: err.code }), undefined as unknown as Duplex),
    );
    connect.end();
  };

  const abandon = (): void => {
    for (const c of pending) c.destroy();
  };
  // The https agent's TLS options (the authorities, whether to check) reach `tunnel` in `opts`.
  const Base: typeof HttpAgent = secure ? HttpsAgent : HttpAgent;
  return new (class extends Base {
    override createConnection(opts: ClientRequestArgs, done?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
      tunnel(opts, done ?? (() => undefined));
      return undefined;
    }
    override destroy(): void {
      abandon();
      super.destroy();
    }
  })(options);
}
