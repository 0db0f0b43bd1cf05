/**
 * Where Prefect's APIs live and how to authenticate to them.
 *
 * `PREFECT_API_URL` already ends in `/api` (self-hosted: `http://host:4200/api`; Cloud:
 * `https://api.prefect.cloud/api/accounts/<a>/workspaces/<w>`), so every path here is appended to it.
 */
import { VERSION } from '../version.js';
import { escapeControls } from '../log/control-chars.js';
import { redactUserinfo } from '../log/redact.js';

export interface PrefectAuth {
  /** Prefect Cloud API key (`PREFECT_API_KEY`). Wins when both are set, as in Prefect's own client. */
  readonly apiKey?: string | undefined;
  /** Self-hosted `PREFECT_API_AUTH_STRING`, e.g. `admin:pass`. */
  readonly authString?: string | undefined;
  /**
   * `PREFECT_CLIENT_CUSTOM_HEADERS`: sent with every request and the websocket upgrade (an access
   * proxy's credentials, say); secrets like the others. An Authorization from the credentials above wins.
   */
  readonly customHeaders?: Readonly<Record<string, string>> | undefined;
  /**
   * How the user gave each credential, for advice (`--api-key`, `option authString`, a variable);
   * absent: its environment variable's name.
   */
  readonly credentialNames?: CredentialNames | undefined;
}

/**
 * The credentials and their names, and nothing else, from options or a configuration that carries
 * them: every client is given all of them from one place, so none is left behind.
 */
export function prefectAuth(from: PrefectAuth): PrefectAuth {
  return { apiKey: from.apiKey, authString: from.authString, customHeaders: from.customHeaders, credentialNames: from.credentialNames };
}

export interface CredentialNames {
  readonly apiKey?: string | undefined;
  readonly authString?: string | undefined;
}

/**
 * Headers prefect-otel sets itself, which PREFECT_CLIENT_CUSTOM_HEADERS cannot replace: Prefect's
 * own client protects these on the websocket and the REST API alike (lower case).
 */
export const PROTECTED_HEADERS: ReadonlySet<string> = new Set([
  'user-agent', 'host', 'connection', 'upgrade', 'content-length', 'content-type', 'transfer-encoding',
  'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol',
  'prefect-csrf-token', 'prefect-csrf-client',
]);

/** The setting a user has to fix when the server refuses us. */
export type AuthSetting = 'PREFECT_API_KEY' | 'PREFECT_API_AUTH_STRING';

export const USER_AGENT = `prefect-otel/${VERSION}`;

/** The API base without trailing slashes. */
export function apiBase(apiUrl: string): string {
  return apiUrl.trim().replace(/\/+$/, '');
}

/**
 * `ws(s)://…/events/out` for a `PREFECT_API_URL`, as Prefect's `events_out_socket_from_api_url`:
 * http→ws, https→wss, trailing slashes stripped. A ws(s) URL is kept as it is.
 */
export function eventsOutUrl(apiUrl: string): string {
  const base = apiBase(apiUrl).replace(/^http(s?):\/\//i, (_m, s: string) => `ws${s.toLowerCase()}://`);
  return `${base}/events/out`;
}

/** What to change when a URL serves no Prefect API; `apiUrlName` is the setting as the user gave it. */
export function apiUrlAdvice(apiUrlName: string): string {
  return `${apiUrlName} must be the API's URL, which for a self-hosted server ends in /api, e.g. http://host:4200/api`;
}

/** A Cloud workspace's API path, or a self-hosted server's (`…/api`). */
const API_PATH = /(?:\/api|\/api\/accounts\/[^/]+\/workspaces\/[^/]+)$/i;

/**
 * Whether a `PREFECT_API_URL` has a path Prefect serves its API at: ending in `/api` (self-hosted;
 * also behind a proxy that keeps the path) or a Cloud workspace's `/api/accounts/<a>/workspaces/<w>`.
 */
export function isApiPath(apiUrl: string): boolean {
  try {
    return API_PATH.test(new URL(apiBase(apiUrl)).pathname.replace(/\/+$/, ''));
  } catch {
    return false;
  }
}

/** True for a Prefect Cloud host name (`prefect.cloud`, `*.prefect.cloud`; lowercase). */
export function isCloudHost(host: string): boolean {
  return host === 'prefect.cloud' || host.endsWith('.prefect.cloud');
}

/** True for Prefect Cloud (`*.prefect.cloud`), where the credential is an API key. */
export function isCloudUrl(apiUrl: string): boolean {
  try {
    return isCloudHost(new URL(apiBase(apiUrl)).hostname.toLowerCase());
  } catch {
    return false;
  }
}

/** A Prefect Cloud workspace's API URL on Cloud's own API host, with its account and workspace ids. */
const CLOUD_WORKSPACE_API_URL = /^https:\/\/api\.prefect\.cloud(?::443)?\/api\/accounts\/([^/?#]+)\/workspaces\/([^/?#]+)\/*$/i;

/**
 * The Prefect Cloud UI address of a workspace whose API URL is `apiUrl`, as Prefect's client takes
 * for PREFECT_UI_URL when it is not set (`default_ui_url` in src/prefect/settings/models/_defaults.py,
 * with PREFECT_CLOUD_API_URL `https://api.prefect.cloud/api` and the `https://api` → `https://app`
 * of `default_cloud_ui_url` in src/prefect/settings/models/cloud.py):
 * `https://api.prefect.cloud/api/accounts/<a>/workspaces/<w>` → `https://app.prefect.cloud/account/<a>/workspace/<w>`.
 * Undefined for any other URL: a self-hosted server's API URL is often one a browser cannot reach
 * (a service name inside a cluster), so its UI address is left to PREFECT_UI_URL.
 */
export function cloudUiUrl(apiUrl: string): string | undefined {
  const ids = CLOUD_WORKSPACE_API_URL.exec(apiUrl.trim());
  return ids === null ? undefined : `https://app.prefect.cloud/account/${ids[1]}/workspace/${ids[2]}`;
}

/**
 * HTTP headers for REST calls and the websocket upgrade: the custom headers, then `Bearer <key>` for
 * an API key or `Basic base64(auth string)` for an auth string.
 */
export function restAuthHeaders(auth: PrefectAuth): Record<string, string> {
  const custom = { ...auth.customHeaders };
  if (nonEmpty(auth.apiKey) || nonEmpty(auth.authString)) {
    for (const name of Object.keys(custom)) if (name.toLowerCase() === 'authorization') delete custom[name];
  }
  if (nonEmpty(auth.apiKey)) return { ...custom, Authorization: `Bearer ${auth.apiKey}` };
  if (nonEmpty(auth.authString)) return { ...custom, Authorization: `Basic ${Buffer.from(auth.authString, 'utf8').toString('base64')}` };
  return custom;
}

/** The token of the websocket `{"type":"auth"}` message: the API key, else the raw auth string, else null. */
export function wsAuthToken(auth: PrefectAuth): string | null {
  if (nonEmpty(auth.apiKey)) return auth.apiKey;
  if (nonEmpty(auth.authString)) return auth.authString;
  return null;
}

/** Which setting to name when credentials are refused (or missing). */
export function authSetting(auth: PrefectAuth, apiUrl: string): AuthSetting {
  if (nonEmpty(auth.apiKey)) return 'PREFECT_API_KEY';
  if (nonEmpty(auth.authString)) return 'PREFECT_API_AUTH_STRING';
  return isCloudUrl(apiUrl) ? 'PREFECT_API_KEY' : 'PREFECT_API_AUTH_STRING';
}

/**
 * A sentence for an AuthError: what happened and which setting to fix. Never contains the secret.
 * The credential of the other kind of server (a Cloud key sent to a self-hosted server, an auth
 * string sent to Cloud) is named as the likely mistake.
 */
export function authAdvice(auth: PrefectAuth, apiUrl: string): string {
  const setting = authSetting(auth, apiUrl);
  const given = setting === 'PREFECT_API_KEY' ? nonEmpty(auth.apiKey) : nonEmpty(auth.authString);
  if (!given) return `set ${setting}`;
  // The credential sent, named as the user gave it (a flag, an option or a variable).
  const name = (setting === 'PREFECT_API_KEY' ? auth.credentialNames?.apiKey : auth.credentialNames?.authString) ?? setting;
  const cloud = isCloudUrl(apiUrl);
  if (setting === 'PREFECT_API_KEY' && !cloud) return `check ${name} (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)`;
  if (setting === 'PREFECT_API_AUTH_STRING' && cloud) return `check ${name} (Prefect Cloud takes PREFECT_API_KEY, not an auth string)`;
  return `check ${name}`;
}

/**
 * Remove the secrets (and their Basic/base64 form) from a text that is about to be logged or thrown,
 * and any `user:password@` in URLs.
 */
export function redactSecrets(text: string, auth: PrefectAuth): string {
  let out = redactUserinfo(text);
  for (const s of [auth.apiKey, auth.authString, ...Object.values(auth.customHeaders ?? {})]) {
    if (!nonEmpty(s)) continue;
    out = out.split(s).join('[redacted]');
    const b64 = Buffer.from(s, 'utf8').toString('base64');
    out = out.split(b64).join('[redacted]');
  }
  return out;
}

/** How much of the server's text `shownServerText` looks at (redacted, escaped): a frame or a body may be megabytes long. */
const MAX_SCANNED_SERVER_TEXT_CHARS = 4_096;
/** A credential's start this long, at the end of a server's text that was cut short, is taken for the credential. */
const MIN_CUT_SECRET_CHARS = 6;

/**
 * The server's own text (a close reason, a refusal's reason, a reply or a body in no Prefect form)
 * as an error or a log line shows it: on one line (whitespace runs as one space, control characters
 * escaped), at most `maxChars` long with `…` when cut, and every credential redacted, also one the
 * text ends in the start of (a close reason is cut at 123 bytes, and only the text's start is read).
 */
export function shownServerText(text: string, auth: PrefectAuth, maxChars: number): string {
  let out = redactSecrets(text.length > MAX_SCANNED_SERVER_TEXT_CHARS ? text.slice(0, MAX_SCANNED_SERVER_TEXT_CHARS) : text, auth);
  for (const s of [auth.apiKey, auth.authString, ...Object.values(auth.customHeaders ?? {})]) {
    if (!nonEmpty(s) || s.length < MIN_CUT_SECRET_CHARS) continue;
    for (let n = Math.min(s.length - 1, out.length); n >= MIN_CUT_SECRET_CHARS; n--) {
      if (out.endsWith(s.slice(0, n))) {
        out = `${out.slice(0, out.length - n)}[redacted]`;
        break;
      }
    }
  }
  out = escapeControls(out.replace(/\s+/g, ' ').trim());
  return out.length > maxChars ? `${out.slice(0, maxChars)}…` : out;
}

function nonEmpty(s: string | undefined): s is string {
  return typeof s === 'string' && s.length > 0;
}
