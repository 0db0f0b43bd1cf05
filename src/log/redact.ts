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
    return url.replace(USERINFO_RE, '$1');
  }
  if (u.username === '' && u.password === '') return url;
  u.username = '';
  u.password = '';
  return u.href;
}

/**
 * `text` with the user info of every URL in it (`//user:password@`, up to the last `@` before the
 * path, query or fragment) replaced by `[redacted]`: for texts that may quote a URL that did not
 * parse, such as a setting's value or the OpenTelemetry SDK's own messages.
 */
export function redactUserinfo(text: string): string {
  return text.replace(USERINFO_RE_GLOBAL, '$1[redacted]@');
}

const USERINFO_RE = /(\/\/)[^/?#\s]*@/;
const USERINFO_RE_GLOBAL = new RegExp(USERINFO_RE.source, 'g');

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
