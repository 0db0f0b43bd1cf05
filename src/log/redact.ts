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
