/**
 * Log lines are kept under 16 KiB: Docker's json-file driver splits a longer line into 16 KiB pieces,
 * and so does containerd's CRI logger (partial lines), and a collector reading either then has pieces
 * of JSON that parse as nothing. A line over the bound has its longest text values cut, each ending
 * in a visible marker, until it fits; its keys and their types stay as they were.
 */

/** The most bytes of UTF-8 a log line takes, its line feed included: under Docker's and containerd's 16 KiB. */
export const LINE_MAX_BYTES = 16_000;
/** What ends a text value cut to keep its line within LINE_MAX_BYTES. */
export const TRUNCATED = '…[truncated]';
const TRUNCATED_COST = Buffer.byteLength(JSON.stringify(TRUNCATED)) - 2;
/** Rounds of cutting before the line is reduced to its message alone (a line of thousands of keys). */
const MAX_ROUNDS = 32;
/** Keys a line reduced to its message keeps. */
const KEPT_KEYS = ['level', 'time', 'service', 'component', 'trace_id', 'span_id', 'trace_flags', 'msg'];

/**
 * The line (JSON text ending in a line feed) within `maxBytes`: the same string when it is. A UTF-16
 * code unit is at most 3 bytes of UTF-8, so a short line costs one comparison.
 */
export function boundLine(line: string, maxBytes = LINE_MAX_BYTES): string {
  if (line.length * 3 <= maxBytes || Buffer.byteLength(line) <= maxBytes) return line;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return `${cutToBytes(line.trimEnd(), maxBytes - TRUNCATED_COST - 1)}${TRUNCATED}\n`;
  }
  if (value === null || typeof value !== 'object') return `${cutToBytes(line.trimEnd(), maxBytes - TRUNCATED_COST - 1)}${TRUNCATED}\n`;
  const record = value as Record<string, unknown>;
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const text = `${JSON.stringify(record)}\n`;
    const bytes = Buffer.byteLength(text);
    if (bytes <= maxBytes) return text;
    const longest = longestText(record);
    if (longest === undefined) break;
    const keep = Math.max(0, longest.cost - (bytes - maxBytes) - TRUNCATED_COST);
    longest.holder[longest.key] = `${cutToBytes(longest.text, keep)}${TRUNCATED}`;
  }
  // Past every round: the line's identity and its message, cut.
  const kept: Record<string, unknown> = {};
  for (const k of KEPT_KEYS) if (k in record && typeof record[k] !== 'object') kept[k] = record[k];
  const msg = typeof kept.msg === 'string' ? kept.msg : '';
  kept.msg = '';
  const room = maxBytes - Buffer.byteLength(`${JSON.stringify(kept)}\n`) - TRUNCATED_COST;
  kept.msg = `${cutToBytes(msg, Math.max(0, room))}${TRUNCATED}`;
  return `${JSON.stringify(kept)}\n`;
}

type Holder = Record<string | number, unknown>;

/** The string value that takes the most bytes in the line (JSON-escaped), wherever it is nested. */
function longestText(root: Holder): { holder: Holder; key: string | number; text: string; cost: number } | undefined {
  let best: { holder: Holder; key: string | number; text: string; cost: number } | undefined;
  const walk = (holder: Holder): void => {
    for (const key of Object.keys(holder)) {
      const v = holder[key];
      if (typeof v === 'string') {
        // A bound on the escaped size first: most values are far shorter than the longest.
        if (best !== undefined && v.length * 6 < best.cost) continue;
        const cost = escapedBytes(v);
        if (best === undefined || cost > best.cost) best = { holder, key: Array.isArray(holder) ? Number(key) : key, text: v, cost };
      } else if (v !== null && typeof v === 'object') walk(v as Holder);
    }
  };
  walk(root);
  return best;
}

const escapedBytes = (text: string): number => Buffer.byteLength(JSON.stringify(text)) - 2;

/** The longest start of `text` whose JSON-escaped UTF-8 takes at most `maxBytes`, never splitting a character. */
function cutToBytes(text: string, maxBytes: number): string {
  let used = 0;
  let end = 0;
  for (const ch of text) {
    const cost = escapedBytes(ch);
    if (used + cost > maxBytes) break;
    used += cost;
    end += ch.length;
  }
  return text.slice(0, end);
}
