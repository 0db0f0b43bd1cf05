/** Redaction for texts that are about to be logged or thrown. */

/**
 * A URL safe to log: no `user:password@`. A password may hold a raw `@` (the URL parser takes the
 * last `@` before the path as the end of the user info), so the URL is parsed rather than cut at
 * its first `@`.
 */
export function safeUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url.replace(VALUE_USERINFO_RE, '$1');
  }
  if (u.username === '' && u.password === '') return url;
  u.username = '';
  u.password = '';
  return u.href;
}

/**
 * A URL as a log line shows it: no `user:password@`, and no query value (a vendor's endpoint may
 * take its key as `?api-key=…`); the parameter names stay, to show what was given.
 */
export function shownUrl(url: string): string {
  return safeUrl(url).replace(QUERY_VALUE_RE, '$1[redacted]');
}

/** A query parameter's value: after `?name=` or `&name=`, up to the next `&` or the fragment. */
const QUERY_VALUE_RE = /([?&][^=&#]*=)[^&#]+/g;

/**
 * `text` with the user info of every URL in it replaced by `[redacted]`: for texts that may quote
 * a URL, such as the OpenTelemetry SDK's own messages. A URL that parses has its user info where
 * the parser finds it (`//user:password@`, up to the last `@` before the path, query or fragment).
 * One that does not parse may not parse because its password holds a `/`, `?` or `#`: there the
 * user info runs up to the last `@` before white space.
 */
export function redactUserinfo(text: string): string {
  return text.replace(URL_TOKEN_RE, (token) => {
    if (!token.includes('@')) return token;
    return URL.canParse(`http:${token}`) ? token.replace(USERINFO_RE, '$1[redacted]@') : token.replace(TOKEN_USERINFO_RE, '$1[redacted]@');
  });
}

/**
 * A text meant to be one URL, which did not parse (a setting's value, quoted in its error), with
 * everything from `//` to its last `@` replaced by `[redacted]` (its password may hold a `/`, `?`,
 * `#` or a space, any of which may be why it did not parse), and each query value too, as
 * `shownUrl` has them (a vendor's endpoint may take its key as `?api-key=…`).
 */
export function redactUrlValue(value: string): string {
  return value.replace(VALUE_USERINFO_RE, '$1[redacted]@').replace(QUERY_VALUE_RE, '$1[redacted]');
}

/** From `//` to the next white space. */
const URL_TOKEN_RE = /\/\/\S*/g;
const USERINFO_RE = /^(\/\/)[^/?#\\\s]*@/;
const TOKEN_USERINFO_RE = /^(\/\/)\S*@/;
const VALUE_USERINFO_RE = /(\/\/)[\s\S]*@/;

/**
 * `text` with the value of each `"token"` field replaced by `[redacted]`: a recording of Prefect's
 * websocket given to replay may hold the client's own `{"type":"auth","token":…}` message, whose
 * token is the API key or auth string. For excerpts of skipped input; a value cut short by the
 * excerpt is redacted up to its end.
 */
export function redactTokenFields(text: string): string {
  return text.includes('"token"') ? text.replace(TOKEN_FIELD_RE, '$1[redacted]"') : text;
}

/** `"token":` and the string after it, escapes and all, to its closing quote or the end of the text. */
const TOKEN_FIELD_RE = /("token"\s*:\s*")(?:[^"\\]|\\.?)*"?/g;

/**
 * `text` with every credential redacted that it carries in a form known from recordings, logs and
 * dumps, whether or not it is one of this configuration's: `"token"` fields (see
 * `redactTokenFields`) and other JSON fields named for a secret (`"password"`, `"api_key"`,
 * `"authorization"`…); the value of an `Authorization` or `Proxy-Authorization` header, in a header
 * dump (`> Authorization: Bearer …`) or JSON; a `Bearer` or `Basic` credential anywhere; Prefect API
 * keys (`pnu_…`, `pnb_…`); a Prefect or OTLP credential variable's value (`PREFECT_API_KEY=…`,
 * `OTEL_EXPORTER_OTLP_HEADERS='…'`); the user info of URLs and their credential-like query values
 * (`?token=…`). For excerpts of skipped input: a file given to replay may be a recording of a
 * session, or hold a `curl -v` dump or an environment listing, on a host with none of these set.
 */
export function redactCredentials(text: string): string {
  return redactUserinfo(redactTokenFields(text))
    .replace(SECRET_FIELD_RE, '$1[redacted]"')
    .replace(AUTHORIZATION_RE, '$1[redacted]')
    .replace(AUTH_SCHEME_RE, '$1 [redacted]')
    .replace(PREFECT_KEY_RE, '[redacted]')
    .replace(CREDENTIAL_VARIABLE_RE, '$1[redacted]')
    .replace(CREDENTIAL_QUERY_RE, '$1[redacted]');
}

/** A JSON string field named for a secret, to its closing quote or the end of the text. */
const SECRET_FIELD_RE =
  /("(?:password|passwd|secret|client[_-]?secret|api[_-]?key|apikey|auth[_-]?string|authorization|proxy[_-]?authorization|access[_-]?token|refresh[_-]?token|id[_-]?token|x-api-key|cf-access-client-secret)"\s*:\s*")(?:[^"\\]|\\.?)*"?/gi;
/** An Authorization header's value, as a header dump or `key=value` writes it, to the end of its line. */
const AUTHORIZATION_RE = /(\b(?:proxy-)?authorization\s*[:=]\s*)(?!\[redacted\])[^\s"',;}][^\r\n"',;}]*/gi;
/** A credential of the HTTP schemes that carry one in the clear (the scheme's name stays). */
const AUTH_SCHEME_RE = /\b(Bearer|Basic)\s+(?!\[redacted\])[A-Za-z0-9._~+/-]{4,}=*/gi;
/** A Prefect Cloud API key (`pnu_`: a user's, `pnb_`: a service account's). */
const PREFECT_KEY_RE = /\bpn[ub]_[A-Za-z0-9]+/g;
/** A credential variable assigned (`NAME=value`, `NAME: value`, `"NAME": "value"`): its value quoted, or to the end of its line. */
const CREDENTIAL_VARIABLE_RE =
  /(\b(?:PREFECT_API_KEY|PREFECT_API_AUTH_STRING|PREFECT_CLIENT_CUSTOM_HEADERS|OTEL_EXPORTER_OTLP_(?:TRACES_|LOGS_|METRICS_)?HEADERS)["']?\s*[=:]\s*)(?!\[redacted\])(?:"(?:[^"\\]|\\.?)*"?|'[^']*'?|[^\r\n]+)/g;
/** A query value whose name says it is a credential (`?token=…`, `&api-key=…`). */
const CREDENTIAL_QUERY_RE = /([?&](?:token|access_token|api[-_]?key|apikey|key|auth|password|secret|sig|signature)=)[^&#\s"']+/gi;

/**
 * The secrets a URL carries, as a server that quotes the request back may show them: the password
 * of its user info (as written and decoded), the `Authorization: Basic` value that Node's HTTP
 * client makes of the user info, and each query value (a vendor's endpoint may take its key as
 * `?api-key=…`), as written and decoded. For `secretRedactor`, beside the headers' values.
 */
export function urlSecrets(url: string): string[] {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return [];
  }
  const decode = (text: string): string => {
    try {
      return decodeURIComponent(text);
    } catch {
      return text;
    }
  };
  const out: string[] = [];
  if (u.username !== '' || u.password !== '') {
    out.push(u.password, decode(u.password), Buffer.from(`${decode(u.username)}:${decode(u.password)}`, 'utf8').toString('base64'));
  }
  for (const m of u.search.matchAll(/[?&][^=&#]*=([^&#]+)/g)) out.push(m[1]!, decode(m[1]!));
  for (const value of u.searchParams.values()) out.push(value);
  return out.filter((v) => v !== '');
}

/** The secrets of one OTLP signal: its headers' values and those its URL carries. */
export function otlpSecrets(signal: { readonly url: string; readonly headers: Readonly<Record<string, string>> }): string[] {
  return [...Object.values(signal.headers), ...urlSecrets(signal.url)];
}

/** Shorter values (`t1`, `true`) are too common to stand for a secret in a text. */
const MIN_SECRET_CHARS = 6;
/** A word of a value (`Bearer <token>`) is redacted on its own when at least this long. */
const MIN_SECRET_WORD_CHARS = 8;

/**
 * A function that replaces each of `values` (the OTLP headers' values) in a text by `[redacted]`,
 * and each long word of them too: a collector or proxy that quotes the request back in its error
 * (`invalid token <token>`) must not put a credential in our log. Built once per exporter.
 */
export function secretRedactor(values: readonly string[]): (text: string) => string {
  const secrets = new Set<string>();
  for (const v of values) {
    const value = v.trim();
    if (value.length >= MIN_SECRET_CHARS) secrets.add(value);
    for (const word of value.split(/\s+/)) if (word.length >= MIN_SECRET_WORD_CHARS) secrets.add(word);
  }
  // Longest first, so that a whole value goes before its words.
  const ordered = [...secrets].sort((a, b) => b.length - a.length);
  if (ordered.length === 0) return (text) => text;
  return (text) => {
    let out = text;
    for (const s of ordered) if (out.includes(s)) out = out.split(s).join('[redacted]');
    return out;
  };
}
