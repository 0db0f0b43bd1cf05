/**
 * Every setting once: its option name, environment variables (most specific first), CLI flag,
 * default and parser. resolveConfig(), the CLI's flag parser, the startup log's redaction and the
 * README's configuration table all come from this table.
 */
import { isIP } from 'node:net';
import { redactUrlValue } from './log/redact.js';
import { isCloudHost } from './source/prefect-api.js';

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

export interface SettingDef<T> {
  readonly env: readonly string[];
  readonly flag: string;
  readonly default: T;
  readonly parse: (raw: unknown) => Parsed<T>;
  readonly secret?: boolean;
  readonly doc: string;
  /** The commands that read it (each command's --help lists only those); absent: every command. */
  readonly commands?: readonly Command[];
}

export type Command = 'watch' | 'replay' | 'demo';
/** The Prefect API (look-ups), metrics, the health endpoints and stats lines: not the demo, which has no server and runs for a moment. */
const NOT_DEMO: readonly Command[] = ['watch', 'replay'];
/** The state file and the live stream. */
const WATCH_ONLY: readonly Command[] = ['watch'];

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(problem: string): Parsed<T> => ({ ok: false, problem });

/** A refused value in a problem, quoted; never throws (a BigInt, an object without a prototype). */
function quoted(raw: unknown, max = 40): string {
  if (typeof raw === 'string') return JSON.stringify(raw.slice(0, max));
  try {
    return JSON.stringify(raw) ?? `a ${typeof raw}`;
  } catch {
    return typeof raw === 'bigint' ? `${raw}n` : `an ${typeof raw}`;
  }
}

/** A refused value as text (an option's number, `5s`), quoted; never throws. */
const quotedText = (raw: unknown): string =>
  raw !== null && (typeof raw === 'object' || typeof raw === 'function') ? quoted(raw) : JSON.stringify(String(raw).slice(0, 40));

/**
 * Text that must say something. A blank variable is unset (resolveConfig skips it, as the
 * OpenTelemetry spec has it), but a blank flag or option (`--service-name=`) is a mistake: it
 * would name the service or the state file nothing. Settings where blank means "none" are `optional`.
 */
function text(raw: unknown): Parsed<string> {
  if (typeof raw !== 'string') return bad(`expected a string, got ${typeof raw}`);
  const value = raw.trim();
  return value === '' ? bad('must not be empty') : ok(value);
}

function httpUrl(raw: unknown): Parsed<string> {
  const t = text(raw);
  if (!t.ok) return t;
  // `localhost:4200/api` parses as a URL of scheme `localhost:`, and `prefect` not at all: say what
  // is missing and the URL meant (https for Prefect Cloud), user info redacted as in any URL.
  if (!t.value.includes('://') && URL.canParse(`http://${t.value}`)) {
    const scheme = /(^|\.)prefect\.cloud$/i.test(new URL(`http://${t.value}`).hostname) ? 'https://' : 'http://';
    const meant = redactUrlValue(`${scheme}${t.value}`);
    return bad(`${JSON.stringify(meant.slice(scheme.length, scheme.length + 120))} has no scheme: use ${meant.slice(0, scheme.length + 120)}`);
  }
  let u: URL;
  try {
    u = new URL(t.value);
  } catch {
    return bad(`not a URL: ${JSON.stringify(redactUrlValue(t.value).slice(0, 120))}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return bad(`expected an http:// or https:// URL, got ${u.protocol}`);
  return ok(t.value);
}

/** Prefect Cloud's UI host: its page addresses look like an API URL but serve no API. */
const CLOUD_UI_HOST = 'app.prefect.cloud';
const CLOUD_API_HOST = 'api.prefect.cloud';
/** `/account/<a>/workspace/<w>/…` in a Cloud UI address. */
const CLOUD_UI_PATH = /^\/account\/([0-9a-f-]{36})\/workspaces?\/([0-9a-f-]{36})(?:\/|$)/i;
/** A Cloud workspace's API path, which the event stream and the look-ups are appended to. */
const CLOUD_WORKSPACE_PATH = /^\/api\/accounts\/[0-9a-f-]{36}\/workspaces\/[0-9a-f-]{36}\/*$/i;
/** A Cloud workspace's API path at the start of a longer one (`…/workspaces/<w>/events/out`). */
const CLOUD_WORKSPACE_PREFIX = /^\/api\/accounts\/[0-9a-f-]{36}\/workspaces\/[0-9a-f-]{36}\//i;
const CLOUD_API_URL_FORM = 'https://api.prefect.cloud/api/accounts/<account id>/workspaces/<workspace id>';

/**
 * PREFECT_API_URL: an http(s) URL every API path is appended to. The mistakes that would otherwise
 * only show as an endless retry of a 404 are refused here with the URL to use: the Cloud UI's address
 * pasted from the browser, a Cloud URL without its workspace or on http://, and a query or fragment
 * (the paths would land inside it).
 */
function prefectApiUrl(raw: unknown): Parsed<string> {
  const t = httpUrl(raw);
  if (!t.ok) return t;
  const u = new URL(t.value);
  const host = u.hostname.toLowerCase();
  if (host === CLOUD_UI_HOST) {
    const ids = CLOUD_UI_PATH.exec(u.pathname);
    const use = ids === null ? CLOUD_API_URL_FORM : `https://${CLOUD_API_HOST}/api/accounts/${ids[1]}/workspaces/${ids[2]}`;
    return bad(`${CLOUD_UI_HOST} is the Prefect Cloud web UI, not its API: use ${use}`);
  }
  // Prefect Cloud is served over https: on http:// each REST request would send the API key
  // unencrypted before any redirect to https:// could be followed.
  if (u.protocol === 'http:' && isCloudHost(host)) {
    return bad(`Prefect Cloud is reached over https only (over http:// the API key would be sent unencrypted): use https://${u.host}${u.pathname.replace(/\/+$/, '')}`);
  }
  if (host === CLOUD_API_HOST && !CLOUD_WORKSPACE_PATH.test(u.pathname)) {
    const within = CLOUD_WORKSPACE_PREFIX.exec(u.pathname);
    if (within !== null) return bad(`a Prefect Cloud API URL ends at its workspace (API paths are appended to it): use ${u.origin}${within[0].replace(/\/+$/, '')}`);
    return bad(`a Prefect Cloud API URL names a workspace: ${CLOUD_API_URL_FORM}`);
  }
  return noQuery(u, 'API paths') ?? t;
}

/**
 * PREFECT_UI_URL, PREFECT_OTEL_JAEGER_URL: an http(s) URL that links are made from by appending a
 * path (`/runs/flow-run/<id>`, `/trace/<trace id>`). With a query or fragment every link would be
 * broken (the path would land inside it) and would carry the query into every span and log line.
 */
function linkBaseUrl(raw: unknown): Parsed<string> {
  const t = httpUrl(raw);
  if (!t.ok) return t;
  const u = new URL(t.value);
  return noQuery(u, 'link paths') ?? t;
}

/** The refusal of a base URL with a query or fragment, which `appended` would land inside; undefined when it has neither. */
function noQuery(u: URL, appended: string): Parsed<string> | undefined {
  if (u.search === '' && u.hash === '') return undefined;
  return bad(`must not have a query or fragment (${appended} are appended to it): use ${u.origin}${u.pathname}`);
}

/** A host name as DNS has it: dot-separated labels of letters, digits and inner hyphens. */
const HOST_NAME_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

/**
 * An address to listen on: an IPv4 or IPv6 address (`127.0.0.1`, `::1`, `0.0.0.0`, `::`) or a host
 * name of this machine (`localhost`). A URL, a port or brackets around an IPv6 address are refused
 * here, where Node would only fail at listen time with an error that names no setting.
 */
function listenHost(raw: unknown): Parsed<string> {
  const t = text(raw);
  if (!t.ok) return t;
  const host = t.value;
  if (isIP(host) !== 0 || HOST_NAME_RE.test(host)) return ok(host);
  const bracketed = /^\[(.*)\]$/.exec(host);
  if (bracketed !== null && isIP(bracketed[1]!) === 6) return bad(`write an IPv6 address without brackets: ${bracketed[1]!}`);
  return bad(`expected an IP address or a host name of this machine (127.0.0.1, ::, localhost), without a scheme or port, got ${quoted(host, 60)}`);
}

/** Unset when absent or blank: a blank flag or option clears the setting (over its variable too). */
function optional<T>(parse: (raw: unknown) => Parsed<T>): (raw: unknown) => Parsed<T | undefined> {
  return (raw) => (raw === undefined || (typeof raw === 'string' && raw.trim() === '') ? ok(undefined) : parse(raw));
}

function integer(min: number, max: number, unit = ''): (raw: unknown) => Parsed<number> {
  return (raw) => {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n)) return bad(`expected a whole number${unit}, got ${quotedText(raw)}`);
    if (n < min || n > max) return bad(`must be between ${min} and ${max}${unit}, got ${n}`);
    return ok(n);
  };
}

/** A number of seconds, fractions allowed, as Prefect's float settings are written (`60`, `2.5`). */
function seconds(min: number, max: number): (raw: unknown) => Parsed<number> {
  return (raw) => {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(raw) ? Number(raw) : NaN;
    if (!Number.isFinite(n)) return bad(`expected a number of seconds, got ${quotedText(raw)}`);
    if (n < min || n > max) return bad(`must be between ${min} and ${max} s, got ${n}`);
    return ok(n);
  };
}

/** As Prefect reads its boolean settings: true/false, 1/0, yes/no, on/off, in any case. */
function boolean(raw: unknown): Parsed<boolean> {
  if (typeof raw === 'boolean') return ok(raw);
  const t = typeof raw === 'string' ? raw.trim().toLowerCase() : '';
  if (['true', '1', 'yes', 'on'].includes(t)) return ok(true);
  if (['false', '0', 'no', 'off'].includes(t)) return ok(false);
  return bad(`expected true or false, got ${quoted(raw)}`);
}

function oneOf<const T extends string>(values: readonly T[]): (raw: unknown) => Parsed<T> {
  return (raw) => {
    const t = typeof raw === 'string' ? raw.trim().toLowerCase() : raw;
    return values.includes(t as T) ? ok(t as T) : bad(`must be one of ${values.join(', ')}, got ${quoted(raw, Infinity)}`);
  };
}

/** OTEL_TRACES_SAMPLER's values that prefect-otel applies: the ones that need no other service. */
export const TRACES_SAMPLERS = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] as const;
export type TracesSamplerName = (typeof TRACES_SAMPLERS)[number];

function samplerName(raw: unknown): Parsed<TracesSamplerName> {
  const t = typeof raw === 'string' ? raw.trim().toLowerCase() : raw;
  if (TRACES_SAMPLERS.includes(t as TracesSamplerName)) return ok(t as TracesSamplerName);
  // Samplers that ask another service (Jaeger's sampling endpoint, AWS X-Ray) for their rules.
  if (t === 'jaeger_remote' || t === 'parentbased_jaeger_remote' || t === 'xray') return bad(`${t} is not supported (it needs a remote sampling service); use one of ${TRACES_SAMPLERS.join(', ')}`);
  return bad(`must be one of ${TRACES_SAMPLERS.join(', ')}, got ${quoted(raw, Infinity)}`);
}

/**
 * A probability: a number from 0 to 1, as OTEL_TRACES_SAMPLER_ARG is written (`0.25`, `1`, `.5`),
 * also in exponent form (`1e-3`, `5E-1`), which the SDKs read as a number too: shared with services
 * that sample one trace in a thousand, it must not export every trace here.
 */
function probability(raw: unknown): Parsed<number> {
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*\+?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?\s*$/i.test(raw) ? Number(raw) : NaN;
  if (!Number.isFinite(n)) return bad(`expected a number from 0 to 1, got ${quotedText(raw)}`);
  if (n < 0 || n > 1) return bad(`must be between 0 and 1, got ${n}`);
  return ok(n);
}

/** `k1=v1,k2=v2` with URL-encoded parts, as OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES define it. */
function keyValues(raw: unknown): Parsed<Record<string, string>> {
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(raw)) {
      if (typeof v !== 'string') return bad(`value of ${k} must be a string`);
      out[k] = v;
    }
    return ok(out);
  }
  if (typeof raw !== 'string') return bad('expected key=value pairs');
  const out: Record<string, string> = {};
  for (const part of raw.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) return bad(`expected key=value pairs separated by commas (entry ${Object.keys(out).length + 1} is not key=value)`);
    try {
      out[decodeURIComponent(part.slice(0, eq).trim())] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return bad('contains a malformed %-escape');
    }
  }
  return ok(out);
}

/**
 * OTLP headers: `key=value` pairs whose names are HTTP tokens and whose values an HTTP header can
 * carry (no line break or other control character once %-decoded). Caught here, such a header is a
 * configuration error instead of an export that fails, and is retried, forever. A value is never
 * shown: it is usually a secret. Nor is a name that is not a header name: it is most often a header
 * written in another format, `Authorization: Basic dXNlcjpwYXNzd29yZA==` or JSON, whose text up to
 * the `=` of its base64 padding is the credential.
 */
function httpHeaders(raw: unknown): Parsed<Record<string, string>> {
  const parsed = keyValues(raw);
  // `{"Authorization": "…"}` or `Authorization: Bearer …` has no `=` to fail on later: said here the same way.
  if (!parsed.ok) return typeof raw === 'string' ? bad(`${parsed.problem}${headerNameHint(raw)}`) : parsed;
  let n = 0;
  for (const [name, value] of Object.entries(parsed.value)) {
    n += 1;
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return bad(`the name of header ${n} is not a valid HTTP header name${headerNameHint(name)} (not shown: it may hold a secret)`);
    if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) return bad(`the value of header ${name} has characters an HTTP header cannot carry (a line break, say)`);
  }
  return parsed;
}

/** What a name that is not an HTTP header name most likely is, said without quoting it. */
function headerNameHint(name: string): string {
  if (name.trimStart().startsWith('{')) return ': the headers look like JSON, where key=value pairs separated by commas are expected';
  if (name.includes(':')) return ': write name=value, not name: value';
  return '';
}

/**
 * `PREFECT_CLIENT_CUSTOM_HEADERS` as Prefect reads it: a JSON object of header names to string
 * values (an object as an option), each a header HTTP can carry. Values are never shown.
 */
function jsonHeaders(raw: unknown): Parsed<Record<string, string>> {
  let value: unknown = raw;
  // Blank is no headers, as a blank `--otlp-headers=` is: it clears the setting, its variable too.
  if (typeof raw === 'string' && raw.trim() === '') return ok({});
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch {
      return bad('expected a JSON object of header names and values, e.g. {"CF-Access-Client-Id": "…"}');
    }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return bad('expected a JSON object of header names and values');
  const out: Record<string, string> = {};
  for (const [name, v] of Object.entries(value)) {
    if (typeof v !== 'string') return bad(`the value of header ${JSON.stringify(name.slice(0, 60))} must be a string`);
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return bad(`${JSON.stringify(name.slice(0, 60))} is not a valid HTTP header name`);
    if (/[^\t\x20-\x7e\x80-\xff]/.test(v)) return bad(`the value of header ${name} has characters an HTTP header cannot carry (a line break, say)`);
    out[name] = v;
  }
  return ok(out);
}

/**
 * The OTLP transports prefect-otel speaks. The OpenTelemetry spec also names `grpc` for every
 * signal; that value warns and falls back like any other unsupported one, saying that gRPC is not
 * spoken at all (resolveConfig adds the collector's OTLP/HTTP port when the endpoint is its gRPC one).
 */
const OTLP_PROTOCOLS = ['http/protobuf', 'http/json'] as const;
export const GRPC_NOT_SUPPORTED = 'gRPC is not supported: prefect-otel speaks OTLP over HTTP only (http/protobuf or http/json)';

function otlpProtocol(raw: unknown): Parsed<OtlpProtocol> {
  if (typeof raw === 'string' && raw.trim().toLowerCase() === 'grpc') return bad(GRPC_NOT_SUPPORTED);
  return oneOf(OTLP_PROTOCOLS)(raw);
}
const OTLP_COMPRESSIONS = ['gzip', 'none'] as const;
type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];
type OtlpCompression = (typeof OTLP_COMPRESSIONS)[number];

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;

export const SETTINGS = {
  apiUrl: {
    env: ['PREFECT_API_URL'], flag: '--api-url', commands: NOT_DEMO, default: 'http://127.0.0.1:4200/api', parse: prefectApiUrl,
    doc: 'Prefect server or Cloud workspace API URL (same meaning as in Prefect)',
  },
  apiKey: {
    env: ['PREFECT_API_KEY'], flag: '--api-key', commands: NOT_DEMO, default: undefined, parse: optional(text), secret: true,
    doc: 'Prefect Cloud API key (websocket auth token; `Authorization: Bearer` on REST)',
  },
  authString: {
    env: ['PREFECT_API_AUTH_STRING'], flag: '--auth-string', commands: NOT_DEMO, default: undefined, parse: optional(text), secret: true,
    doc: 'self-hosted `user:pass` (websocket auth token; `Authorization: Basic` on REST)',
  },
  clientCustomHeaders: {
    env: ['PREFECT_CLIENT_CUSTOM_HEADERS'], flag: '--client-custom-headers', commands: NOT_DEMO, default: {}, parse: jsonHeaders, secret: true,
    doc: 'JSON object of headers sent with every request to Prefect and the websocket upgrade, e.g. an access proxy\'s credentials (Prefect\'s setting)',
  },
  apiSslCertFile: {
    env: ['PREFECT_API_SSL_CERT_FILE', 'SSL_CERT_FILE'], flag: '--api-ssl-cert-file', commands: NOT_DEMO, default: undefined, parse: optional(text),
    doc: 'PEM file of the certificate authorities that the Prefect server\'s certificate is checked against, instead of the usual ones (Prefect\'s setting; `SSL_CERT_FILE` as in Prefect)',
  },
  apiTlsInsecureSkipVerify: {
    env: ['PREFECT_API_TLS_INSECURE_SKIP_VERIFY'], flag: '--api-tls-insecure-skip-verify', commands: NOT_DEMO, default: false, parse: boolean,
    doc: '`true`: the Prefect server\'s certificate is not checked at all (Prefect\'s setting; for development only)',
  },
  apiRequestTimeout: {
    env: ['PREFECT_API_REQUEST_TIMEOUT'], flag: '--api-request-timeout', commands: NOT_DEMO, default: 60, parse: seconds(0.1, 3_600),
    doc: 'seconds one request to the Prefect REST API may take: the event history after a long gap, run look-ups (Prefect\'s setting)',
  },
  uiUrl: {
    env: ['PREFECT_UI_URL'], flag: '--ui-url', default: undefined, parse: optional(linkBaseUrl),
    doc: "Prefect UI base URL; run links in span attributes and log lines (unset with a Prefect Cloud workspace's `PREFECT_API_URL`: its `https://app.prefect.cloud/account/<a>/workspace/<w>`, as Prefect derives it)",
  },
  prefectProfile: {
    env: ['PREFECT_PROFILE'], flag: '--profile', commands: NOT_DEMO, default: undefined, parse: optional(text),
    doc: "the Prefect profile whose settings (`PREFECT_API_URL`, `PREFECT_API_KEY`…) apply where no variable, flag or option gives them: from `profiles.toml` in `PREFECT_HOME` (`~/.prefect`), or the file `PREFECT_PROFILES_PATH` names, as in Prefect (unset: the file's `active` profile)",
  },
  otlpEndpoint: {
    env: ['OTEL_EXPORTER_OTLP_ENDPOINT'], flag: '--otlp-endpoint', default: 'http://localhost:4318', parse: httpUrl,
    doc: 'OTLP/HTTP base URL; `/v1/traces`, `/v1/logs` and `/v1/metrics` are appended to its path (before a query, whose values logs do not show)',
  },
  otlpTracesEndpoint: {
    env: ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'], flag: '--otlp-traces-endpoint', default: undefined, parse: optional(httpUrl),
    doc: 'full OTLP/HTTP traces URL, used as is',
  },
  otlpLogsEndpoint: {
    env: ['OTEL_EXPORTER_OTLP_LOGS_ENDPOINT'], flag: '--otlp-logs-endpoint', default: undefined, parse: optional(httpUrl),
    doc: 'full OTLP/HTTP logs URL, used as is',
  },
  otlpMetricsEndpoint: {
    env: ['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT'], flag: '--otlp-metrics-endpoint', commands: NOT_DEMO, default: undefined, parse: optional(httpUrl),
    doc: 'full OTLP/HTTP metrics URL, used as is',
  },
  otlpHeaders: {
    env: ['OTEL_EXPORTER_OTLP_HEADERS'], flag: '--otlp-headers', default: {}, parse: httpHeaders, secret: true,
    doc: '`key=value,…` headers sent with every OTLP request',
  },
  otlpTracesHeaders: {
    env: ['OTEL_EXPORTER_OTLP_TRACES_HEADERS'], flag: '--otlp-traces-headers', default: {}, parse: httpHeaders, secret: true,
    doc: 'headers for trace requests only (win over the generic ones)',
  },
  otlpLogsHeaders: {
    env: ['OTEL_EXPORTER_OTLP_LOGS_HEADERS'], flag: '--otlp-logs-headers', default: {}, parse: httpHeaders, secret: true,
    doc: 'headers for log requests only (win over the generic ones)',
  },
  otlpMetricsHeaders: {
    env: ['OTEL_EXPORTER_OTLP_METRICS_HEADERS'], flag: '--otlp-metrics-headers', commands: NOT_DEMO, default: {}, parse: httpHeaders, secret: true,
    doc: 'headers for metric requests only (win over the generic ones)',
  },
  otlpProtocol: {
    env: ['OTEL_EXPORTER_OTLP_PROTOCOL'], flag: '--otlp-protocol', default: 'http/protobuf', parse: otlpProtocol,
    doc: '`http/protobuf` or `http/json` (`grpc` is not supported: it warns and `http/protobuf` is used; the collector takes OTLP/HTTP on 4318)',
  },
  otlpTracesProtocol: {
    env: ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'], flag: '--otlp-traces-protocol', default: undefined as OtlpProtocol | undefined, parse: optional(otlpProtocol),
    doc: 'protocol for traces only',
  },
  otlpLogsProtocol: {
    env: ['OTEL_EXPORTER_OTLP_LOGS_PROTOCOL'], flag: '--otlp-logs-protocol', default: undefined as OtlpProtocol | undefined, parse: optional(otlpProtocol),
    doc: 'protocol for logs only',
  },
  otlpMetricsProtocol: {
    env: ['OTEL_EXPORTER_OTLP_METRICS_PROTOCOL'], flag: '--otlp-metrics-protocol', commands: NOT_DEMO, default: undefined as OtlpProtocol | undefined, parse: optional(otlpProtocol),
    doc: 'protocol for metrics only',
  },
  otlpCompression: {
    env: ['OTEL_EXPORTER_OTLP_COMPRESSION'], flag: '--otlp-compression', default: 'none', parse: oneOf(OTLP_COMPRESSIONS),
    doc: '`gzip` or `none`',
  },
  otlpTracesCompression: {
    env: ['OTEL_EXPORTER_OTLP_TRACES_COMPRESSION'], flag: '--otlp-traces-compression', default: undefined as OtlpCompression | undefined, parse: optional(oneOf(OTLP_COMPRESSIONS)),
    doc: 'compression for traces only',
  },
  otlpLogsCompression: {
    env: ['OTEL_EXPORTER_OTLP_LOGS_COMPRESSION'], flag: '--otlp-logs-compression', default: undefined as OtlpCompression | undefined, parse: optional(oneOf(OTLP_COMPRESSIONS)),
    doc: 'compression for logs only',
  },
  otlpMetricsCompression: {
    env: ['OTEL_EXPORTER_OTLP_METRICS_COMPRESSION'], flag: '--otlp-metrics-compression', commands: NOT_DEMO, default: undefined as OtlpCompression | undefined, parse: optional(oneOf(OTLP_COMPRESSIONS)),
    doc: 'compression for metrics only',
  },
  otlpTimeoutMs: {
    env: ['OTEL_EXPORTER_OTLP_TIMEOUT'], flag: '--otlp-timeout', default: 10_000, parse: integer(1, 10 * MINUTE_MS, ' ms'),
    doc: 'time for one export including the exporter\'s own retries (ms)',
  },
  otlpTracesTimeoutMs: {
    env: ['OTEL_EXPORTER_OTLP_TRACES_TIMEOUT'], flag: '--otlp-traces-timeout', default: undefined as number | undefined, parse: optional(integer(1, 10 * MINUTE_MS, ' ms')),
    doc: 'timeout for traces only (ms)',
  },
  otlpLogsTimeoutMs: {
    env: ['OTEL_EXPORTER_OTLP_LOGS_TIMEOUT'], flag: '--otlp-logs-timeout', default: undefined as number | undefined, parse: optional(integer(1, 10 * MINUTE_MS, ' ms')),
    doc: 'timeout for logs only (ms)',
  },
  otlpMetricsTimeoutMs: {
    env: ['OTEL_EXPORTER_OTLP_METRICS_TIMEOUT'], flag: '--otlp-metrics-timeout', commands: NOT_DEMO, default: undefined as number | undefined, parse: optional(integer(1, 10 * MINUTE_MS, ' ms')),
    doc: 'timeout for metrics only (ms)',
  },
  serviceName: {
    env: ['OTEL_SERVICE_NAME'], flag: '--service-name', default: 'prefect', parse: text,
    doc: '`service.name` of the exported spans',
  },
  resourceAttributes: {
    env: ['OTEL_RESOURCE_ATTRIBUTES'], flag: '--resource-attributes', default: {}, parse: keyValues,
    doc: 'extra resource attributes, `key=value,…`',
  },
  tracesExporter: {
    env: ['OTEL_TRACES_EXPORTER'], flag: '--traces-exporter', default: 'otlp',
    parse: oneOf(['otlp', 'console', 'none'] as const),
    doc: '`otlp`, `console` (a debugging aid: the SDK prints each span as a multi-line object on standard output, among the log lines) or `none`',
  },
  tracesSampler: {
    env: ['OTEL_TRACES_SAMPLER'], flag: '--traces-sampler', default: 'parentbased_always_on',
    parse: samplerName,
    doc: 'which traces are exported, as OpenTelemetry\'s samplers decide: `parentbased_always_on` (every trace), `always_on`, `always_off`, `traceidratio` or `parentbased_traceidratio` (the share `OTEL_TRACES_SAMPLER_ARG` of traces, chosen by trace id), `parentbased_always_off`; a trace is kept or dropped whole (its root flow run decides for its subflows and task runs), and a dropped trace\'s STLOGGING lines are still written, with `trace_flags` `00`',
  },
  tracesSamplerArg: {
    env: ['OTEL_TRACES_SAMPLER_ARG'], flag: '--traces-sampler-arg', default: undefined as number | undefined,
    parse: optional(probability),
    doc: 'with `traceidratio` and `parentbased_traceidratio`: the share of traces exported, from 0 to 1; unset: 1',
  },
  logsExporter: {
    env: ['OTEL_LOGS_EXPORTER'], flag: '--logs-exporter', default: 'none',
    parse: oneOf(['otlp', 'none'] as const),
    doc: '`otlp` also ships the STLOGGING records to the collector as OTel logs',
  },
  metricsExporter: {
    env: ['OTEL_METRICS_EXPORTER'], flag: '--metrics-exporter', commands: NOT_DEMO, default: 'none',
    parse: oneOf(['otlp', 'none'] as const),
    doc: '`otlp` also exports the counters and the export-lag histogram of `/metrics` as OTel metrics',
  },
  metricExportIntervalMs: {
    env: ['OTEL_METRIC_EXPORT_INTERVAL'], flag: '--metric-export-interval-ms', commands: NOT_DEMO, default: 60_000, parse: integer(100, DAY_MS, ' ms'),
    doc: 'how often the metrics are exported (ms); a last export happens at shutdown',
  },
  metricExportTimeoutMs: {
    env: ['OTEL_METRIC_EXPORT_TIMEOUT'], flag: '--metric-export-timeout-ms', commands: NOT_DEMO, default: 30_000, parse: integer(1, DAY_MS, ' ms'),
    doc: 'the longest one metrics export may take (ms); it also takes at most `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT` and three quarters of the interval',
  },
  otlpMetricsTemporalityPreference: {
    env: ['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE'], flag: '--otlp-metrics-temporality-preference', commands: NOT_DEMO, default: 'cumulative',
    parse: oneOf(['cumulative', 'delta', 'lowmemory'] as const),
    doc: '`cumulative`, `delta` (counters and the histogram as deltas, for a backend that takes only those) or `lowmemory` (the histogram as deltas), as the OpenTelemetry spec defines them',
  },
  stateFile: {
    env: ['PREFECT_OTEL_STATE_FILE'], flag: '--state-file', commands: WATCH_ONLY, default: '.prefect-otel/state.json', parse: text,
    doc: 'where the resume cursor and open runs are persisted',
  },
  jaegerUrl: {
    env: ['PREFECT_OTEL_JAEGER_URL'], flag: '--jaeger-url', default: undefined, parse: optional(linkBaseUrl),
    doc: 'Jaeger UI base URL; terminal-state log lines carry `jaeger_url=<url>/trace/<trace_id>`',
  },
  logLevel: {
    env: ['PREFECT_OTEL_LOG_LEVEL'], flag: '--log-level', default: 'info',
    parse: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
    doc: 'pino level',
  },
  logFormat: {
    env: ['PREFECT_OTEL_LOG_FORMAT'], flag: '--log-format', default: 'json',
    parse: oneOf(['json', 'pretty'] as const),
    doc: '`json` (one object per line) or `pretty`',
  },
  settleMs: {
    env: ['PREFECT_OTEL_SETTLE_MS'], flag: '--settle-ms', default: 500, parse: integer(0, 10 * MINUTE_MS, ' ms'),
    doc: 'how long a finished run waits for late or reordered events before its span is exported',
  },
  taskGraceMs: {
    env: ['PREFECT_OTEL_TASK_GRACE_MS'], flag: '--task-grace-ms', default: 60_000, parse: integer(0, DAY_MS, ' ms'),
    doc: 'how long task runs may stay open after their flow run ended before they are ended as incomplete, and a flow run a worker submitted waits after its end for the worker\'s `executed-flow-run` event',
  },
  openRunTimeoutMs: {
    env: ['PREFECT_OTEL_OPEN_RUN_TIMEOUT_MS'], flag: '--open-run-timeout-ms', default: DAY_MS, parse: integer(1_000, 30 * DAY_MS, ' ms'),
    doc: 'a run with no event for this long is ended as incomplete (a flow run\'s tasks and subflows count as its events; a run Scheduled and not started yet, a flow run Scheduled again after it started (`Resuming`, `AwaitingRetry`), or Paused, is waiting, not idle; a flow run Scheduled that long is looked up in Prefect: if Prefect deleted it, forgotten when it never started, else ended as incomplete)',
  },
  maxOpenRuns: {
    env: ['PREFECT_OTEL_MAX_OPEN_RUNS'], flag: '--max-open-runs', default: 100_000, parse: integer(1, 10_000_000),
    doc: 'bound on runs held in memory, and on events waiting for look-ups (subflow parents, a rerun\'s number); past it the least recently active run is ended as incomplete (the oldest lookup is given up)',
  },
  maxSpanEvents: {
    env: ['OTEL_SPAN_EVENT_COUNT_LIMIT'], flag: '--max-span-events', default: 1_000, parse: integer(2, 1_000_000),
    doc: 'span events kept per span (OTel\'s default is 128); past it the oldest are summarised in one event (`prefect_otel.events_summarised`, naming at most 128 event names, the rest counted in `prefect.events.summarised_other_count`), other events before state transitions',
  },
  attributeValueLengthLimit: {
    env: ['OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT', 'OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT'], flag: '--attribute-value-length-limit', default: undefined as number | undefined, parse: optional(integer(0, 1_000_000_000)),
    doc: 'longest string attribute value of a span, its span events and links (characters; each string of an array too), as OpenTelemetry limits them: a longer one is cut to it, also one a span hook sets; unset: no limit beyond prefect-otel\'s own',
  },
  attributeCountLimit: {
    env: ['OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT', 'OTEL_ATTRIBUTE_COUNT_LIMIT'], flag: '--attribute-count-limit', default: 128, parse: integer(0, 1_000_000),
    doc: 'attributes kept per span, as OpenTelemetry limits them: past it the last set (those a span hook adds first) are dropped and counted in the span\'s `droppedAttributesCount`',
  },
  eventAttributeCountLimit: {
    env: ['OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT', 'OTEL_SPAN_ATTRIBUTE_PER_EVENT_COUNT_LIMIT'], flag: '--event-attribute-count-limit', default: 128, parse: integer(0, 1_000_000),
    doc: 'attributes kept per span event, as OpenTelemetry limits them: past it the last are dropped and counted in the event\'s `droppedAttributesCount`',
  },
  linkCountLimit: {
    env: ['OTEL_SPAN_LINK_COUNT_LIMIT'], flag: '--link-count-limit', default: 128, parse: integer(0, 1_000_000),
    doc: 'links kept per span, as OpenTelemetry limits them: past it the first are dropped and counted in the span\'s `droppedLinksCount`',
  },
  linkAttributeCountLimit: {
    env: ['OTEL_LINK_ATTRIBUTE_COUNT_LIMIT', 'OTEL_SPAN_ATTRIBUTE_PER_LINK_COUNT_LIMIT'], flag: '--link-attribute-count-limit', default: 128, parse: integer(0, 1_000_000),
    doc: 'attributes kept per link, as OpenTelemetry limits them: past it the last are dropped and counted in the link\'s `droppedAttributesCount`',
  },
  logRecordAttributeValueLengthLimit: {
    env: ['OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT', 'OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT'], flag: '--log-record-attribute-value-length-limit', default: undefined as number | undefined, parse: optional(integer(0, 1_000_000_000)),
    doc: 'with `OTEL_LOGS_EXPORTER=otlp`: longest string attribute value of an OTel log record (characters; each string of an array too), as OpenTelemetry limits them: a longer one is cut to it; the body is not an attribute and is not cut; unset: no limit',
  },
  logRecordAttributeCountLimit: {
    env: ['OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT', 'OTEL_ATTRIBUTE_COUNT_LIMIT'], flag: '--log-record-attribute-count-limit', default: 128, parse: integer(0, 1_000_000),
    doc: 'with `OTEL_LOGS_EXPORTER=otlp`: attributes kept per OTel log record, as OpenTelemetry limits them: past it the last are dropped and counted in the record\'s `droppedAttributesCount`',
  },
  payloadMaxChars: {
    env: ['PREFECT_OTEL_PAYLOAD_MAX_CHARS'], flag: '--payload-max-chars', default: 4_096, parse: integer(0, 1_000_000),
    doc: 'length of the `prefect.event.payload` JSON kept on a span event, and of `prefect.state.message` (span event and status); a cut text ends in `…` (a cut payload is no longer valid JSON) and never splits a character',
  },
  dedupeWindowMs: {
    env: ['PREFECT_OTEL_DEDUPE_WINDOW_MS'], flag: '--dedupe-window-ms', default: 60 * MINUTE_MS, parse: integer(MINUTE_MS, 7 * DAY_MS, ' ms'),
    doc: "how long event ids are remembered to drop duplicates, on the machine's clock (in `replay` too: copies in a file are duplicates however far apart their events' times)",
  },
  dedupeMaxIds: {
    env: ['PREFECT_OTEL_DEDUPE_MAX_IDS'], flag: '--dedupe-max-ids', default: 500_000, parse: integer(1_000, 50_000_000),
    doc: 'bound on remembered event ids',
  },
  bufferMaxSpans: {
    env: ['OTEL_BSP_MAX_QUEUE_SIZE'], flag: '--buffer-max-spans', default: 20_000, parse: integer(1, 10_000_000),
    doc: 'finished spans held while the collector is slow or down; past it the oldest are dropped and counted',
  },
  bufferMaxBytes: {
    env: ['PREFECT_OTEL_BUFFER_MAX_BYTES'], flag: '--buffer-max-bytes', default: 64 * 1024 * 1024, parse: integer(1024, 16 * 1024 * 1024 * 1024),
    doc: 'the same bound in (estimated) bytes; separately, the bound of the events waiting for look-ups of subflow parents and of a rerun\'s number (past it the oldest look-up is given up: its runs become roots, or its rerun the first)',
  },
  batchSize: {
    env: ['OTEL_BSP_MAX_EXPORT_BATCH_SIZE'], flag: '--batch-size', default: 512, parse: integer(1, 100_000),
    doc: 'spans per OTLP request',
  },
  scheduleDelayMs: {
    env: ['OTEL_BSP_SCHEDULE_DELAY'], flag: '--schedule-delay-ms', default: 200, parse: integer(0, MINUTE_MS, ' ms'),
    doc: 'longest wait before a partly filled batch of spans is sent',
  },
  exportTimeoutMs: {
    env: ['OTEL_BSP_EXPORT_TIMEOUT'], flag: '--export-timeout-ms', default: 30_000, parse: integer(1, DAY_MS, ' ms'),
    doc: 'the longest one OTLP export of spans may take, its retries included (ms); it also takes at most `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`',
  },
  logsBufferMaxRecords: {
    env: ['OTEL_BLRP_MAX_QUEUE_SIZE'], flag: '--logs-buffer-max-records', default: 80_000, parse: integer(1, 40_000_000),
    doc: 'with `OTEL_LOGS_EXPORTER=otlp`: log records held while the collector is slow or down (within `PREFECT_OTEL_BUFFER_MAX_BYTES` too); past it the oldest are dropped and counted',
  },
  logsBatchSize: {
    env: ['OTEL_BLRP_MAX_EXPORT_BATCH_SIZE'], flag: '--logs-batch-size', default: 512, parse: integer(1, 100_000),
    doc: 'with `OTEL_LOGS_EXPORTER=otlp`: log records per OTLP request',
  },
  logsScheduleDelayMs: {
    env: ['OTEL_BLRP_SCHEDULE_DELAY'], flag: '--logs-schedule-delay-ms', default: 200, parse: integer(0, MINUTE_MS, ' ms'),
    doc: 'with `OTEL_LOGS_EXPORTER=otlp`: longest wait before a partly filled batch of log records is sent',
  },
  logsExportTimeoutMs: {
    env: ['OTEL_BLRP_EXPORT_TIMEOUT'], flag: '--logs-export-timeout-ms', default: 30_000, parse: integer(1, DAY_MS, ' ms'),
    doc: 'with `OTEL_LOGS_EXPORTER=otlp`: the longest one OTLP export of log records may take, its retries included (ms); it also takes at most `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`',
  },
  resumeMarginMs: {
    env: ['PREFECT_OTEL_RESUME_MARGIN_MS'], flag: '--resume-margin-ms', commands: WATCH_ONLY, default: 2 * MINUTE_MS, parse: integer(0, DAY_MS, ' ms'),
    doc: 'on reconnect, resume this far before the last seen event (a first start reads the last minute, or this far back when longer); Prefect\'s live stream drops the events that occurred before that point, so it must exceed how far a sender\'s clock runs behind the Prefect server\'s (a warning says when an event shows more)',
  },
  idleTimeoutMs: {
    env: ['PREFECT_OTEL_IDLE_TIMEOUT_MS'], flag: '--idle-timeout-ms', commands: WATCH_ONLY, default: 45_000, parse: integer(1_000, HOUR_MS, ' ms'),
    doc: 'a connection with no event, ping or pong for this long is dropped and resumed (pings go out every third of it, at most 15 s apart)',
  },
  stateFlushMs: {
    env: ['PREFECT_OTEL_STATE_FLUSH_MS'], flag: '--state-flush-ms', commands: WATCH_ONLY, default: 5_000, parse: integer(100, HOUR_MS, ' ms'),
    doc: 'how often the state file is written while watching',
  },
  stateLeaseMs: {
    env: ['PREFECT_OTEL_STATE_LEASE_MS'], flag: '--state-lease-ms', commands: WATCH_ONLY, default: 30_000, parse: integer(300, HOUR_MS, ' ms'),
    doc: 'one process at a time uses a state file (`<state file>.lock`, renewed every third of this); another one started on it waits as a standby and takes over when the lock is released, or this long after its holder stopped renewing it',
  },
  statsIntervalMs: {
    env: ['PREFECT_OTEL_STATS_INTERVAL_MS'], flag: '--stats-interval-ms', commands: NOT_DEMO, default: 60_000, parse: integer(0, DAY_MS, ' ms'),
    doc: 'how often a stats line is logged (0 = never)',
  },
  httpPort: {
    env: ['PREFECT_OTEL_HTTP_PORT'], flag: '--http-port', commands: NOT_DEMO, default: undefined as number | undefined, parse: optional(integer(0, 65_535)),
    doc: 'serve `/healthz`, `/livez` and `/metrics` on this port (0 = any free port)',
  },
  httpHost: {
    env: ['PREFECT_OTEL_HTTP_HOST'], flag: '--http-host', commands: NOT_DEMO, default: undefined as string | undefined, parse: optional(listenHost),
    doc: 'the address `/healthz`, `/livez` and `/metrics` are served on (`127.0.0.1`: this host only); unset: every address, IPv6 and IPv4',
  },
} satisfies Record<string, SettingDef<unknown>>;

export type SettingKey = keyof typeof SETTINGS;
type ParsedValue<F> = F extends (raw: unknown) => Parsed<infer T> ? T : never;
export type SettingValues = { -readonly [K in SettingKey]: ParsedValue<(typeof SETTINGS)[K]['parse']> };

/** Names of env vars whose values must never be logged. */
export const SECRET_ENV = new Set(Object.values(SETTINGS).filter((d) => 'secret' in d && d.secret).flatMap((d) => d.env));
