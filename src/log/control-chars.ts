/**
 * Control characters written as escapes, so that text from events (run names, event names, state
 * messages, label keys) keeps a log record on one line and cannot move the cursor, colour or clear
 * a terminal: C0 controls, DEL, C1 controls (U+0085 is a line break, U+009B a CSI) and the Unicode
 * line and paragraph separators. Written as Python's repr writes them: `\n`, `\r`, `\t`, `\x1b`,
 * `\u2028`. `CONTROL_CHARS`: the set, for a regular expression's character class.
 */
export const CONTROL_CHARS = '\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029';
const CONTROL = new RegExp(`[${CONTROL_CHARS}]`, 'g');
const CONTROL_TEST = new RegExp(`[${CONTROL_CHARS}]`);

const NAMED: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function escapeOne(c: string): string {
  const named = NAMED[c];
  if (named !== undefined) return named;
  const code = c.charCodeAt(0);
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** `text` with every control character escaped; the same string when it has none. */
export function escapeControls(text: string): string {
  return CONTROL_TEST.test(text) ? text.replace(CONTROL, escapeOne) : text;
}
