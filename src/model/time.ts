import type { HrTime } from '@opentelemetry/api';

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}(?::?\d{2})?)?$/;

/**
 * The instants accepted: 1970-01-01T00:00:00Z (inclusive) to 2200-01-01T00:00:00Z (exclusive).
 * OTLP carries times as unsigned 64-bit nanoseconds since the epoch: a time before 1970 or after
 * July 2554 would wrap around in protobuf, or be refused by a strict collector in JSON together
 * with the whole batch of unrelated spans. Microseconds stay exact in a double only until 2255.
 */
const MIN_TIMESTAMP_US = 0;
const MAX_TIMESTAMP_US = Date.UTC(2200, 0, 1) * 1000;
/** Years checked before Date.UTC, which reads 0–99 as 1900–1999; an offset may cross a year end. */
const MIN_YEAR = 1969;
const MAX_YEAR = 2200;

/**
 * Microseconds since the epoch for an ISO-8601 timestamp as Prefect writes them: pydantic JSON
 * (`…Z`) and Python isoformat (`…+00:00`), with 0–9 fraction digits. A missing zone is UTC, as in
 * Prefect's naive datetimes. Microseconds stay exact in a double (< 2^53) where nanoseconds would not.
 * Undefined for text that is not such a timestamp, a zone offset past ±23:59, or an instant outside
 * [MIN_TIMESTAMP_US, MAX_TIMESTAMP_US).
 */
export function parseTimestampUs(text: string): number | undefined {
  // Events come in bursts within the same second: reuse the last whole-second prefix's value.
  if (text.length > 21 && text.length <= 30 && text.charCodeAt(19) === 46 /* . */ && text.charCodeAt(text.length - 1) === 90 /* Z */ && text.startsWith(lastPrefix)) {
    const micros = fractionMicros(text, 20, text.length - 1);
    if (micros !== undefined) return lastPrefixMs * 1000 + micros;
  }
  const m = ISO_RE.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac = '', zone = 'Z'] = m;
  const year = Number(y), month = Number(mo), day = Number(d), hour = Number(h), minute = Number(mi), second = Number(s);
  if (year < MIN_YEAR || year > MAX_YEAR) return undefined;
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) return undefined;
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(ms);
  if (check.getUTCDate() !== day || check.getUTCMonth() !== month - 1) return undefined;
  let offsetMin = 0;
  if (zone !== 'Z' && zone !== 'z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const offsetHours = Number(digits.slice(0, 2)), offsetMinutes = Number(digits.slice(2, 4) || '0');
    if (offsetHours > 23 || offsetMinutes > 59) return undefined;
    offsetMin = sign * (offsetHours * 60 + offsetMinutes);
  }
  const us = (ms - offsetMin * 60_000) * 1000 + fractionMicros(frac, 0, frac.length)!; // the pattern took digits only
  if (us < MIN_TIMESTAMP_US || us >= MAX_TIMESTAMP_US) return undefined;
  // Only an accepted whole second is reused by the fast path above, so its results stay in range.
  if ((zone === 'Z' || zone === 'z') && text.charCodeAt(10) === 84 /* T */) {
    lastPrefix = text.slice(0, 19);
    lastPrefixMs = ms;
  }
  return us;
}

/**
 * The fraction digits in text[from, to) as microseconds (digits past the sixth are cut), read
 * without allocating; undefined when one is not a digit. The caller bounds how many there are.
 */
function fractionMicros(text: string, from: number, to: number): number | undefined {
  let micros = 0;
  for (let i = from; i < to; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return undefined;
    if (i - from < 6) micros = micros * 10 + digit;
  }
  for (let n = to - from; n < 6; n++) micros *= 10;
  return micros;
}

let lastPrefix = '\u0000';
let lastPrefixMs = 0;

export function usToHrTime(us: number): HrTime {
  const seconds = Math.floor(us / 1e6);
  return [seconds, (us - seconds * 1e6) * 1000];
}

/** `2026-08-21T12:00:05.123456Z`, microsecond precision. */
export function usToIso(us: number): string {
  const ms = Math.floor(us / 1000);
  const second = Math.floor(ms / 1000);
  if (second !== lastIsoSecond) {
    lastIsoSecond = second;
    lastIso = new Date(second * 1000).toISOString().slice(0, 20);
  }
  return `${lastIso}${String((ms - second * 1000) * 1000 + (us - ms * 1000)).padStart(6, '0')}Z`;
}

let lastIsoSecond = NaN;
let lastIso = '';

export function usToMs(us: number): number {
  return us / 1000;
}
