import type { SpanEventRecord, SpanRecord } from '../model/span-record.js';
import { escapeControls } from './control-chars.js';
import { plural } from './words.js';

export interface TreeOptions {
  /** ANSI colours (state names, errors, bars); off by default. */
  readonly color?: boolean;
  /** Target line width in columns (default 100); the label column shrinks to fit. */
  readonly width?: number;
  /** List up to this many span events under each span (default 0: none). */
  readonly maxEventsPerSpan?: number;
}

const DEFAULT_WIDTH = 100;
const MIN_LABEL_WIDTH = 16;
/** A name cut to fit keeps at least this many columns (its `…` included), unless fewer keep its markers on the line. */
const MIN_NAME_WIDTH = 8;
const DURATION_WIDTH = 9;
const GAP = '  ';
const ANSI = { bold: '\x1b[1m', dim: '\x1b[2m', red: '\x1b[31m', green: '\x1b[32m', yellow: '\x1b[33m' } as const;
const RESET = '\x1b[0m';
const STATE_MESSAGE_ATTR = 'prefect.state.message';

type Style = keyof typeof ANSI;
/**
 * `optional` segments (the run name) are left out before anything is cut; then the `shrink` one (the
 * span's name) is cut, so that what follows it (state, attempt, markers) stays on the line.
 */
interface Segment { readonly text: string; readonly style?: Style; readonly optional?: boolean; readonly shrink?: boolean; readonly marker?: boolean }

interface Row {
  readonly label: Segment[];
  readonly duration: string;
  readonly bar: string;
  readonly style: Style;
  readonly error: string | undefined;
  /** Prefix for the lines drawn under the span (error when it does not fit, events). */
  readonly detailPrefix: string;
  readonly events: string[];
}

/**
 * Draws finished spans as one tree per trace, for a terminal:
 *
 *     trace 0198c7d25b1e7a3c9f102b3c4d5e6f70  etl  4 spans  12.4 s
 *     etl (crimson-fox)  Completed                 12.4 s  ▕████████████████████▏
 *     ├─ extract (extract-3f2)  Completed          850 ms  ▕ █                  ▏
 *     │  └─ parse (parse-1a2)  Completed           300 ms  ▕ █                  ▏
 *     └─ load (load-7c1)  Failed  attempt 2        2.10 s  ▕   ████             ▏  error: ValueError: bad row 17
 *
 * Traces are ordered by start time, children by start time. A span whose parent is not among the
 * spans is drawn at the top level of its trace, marked `(parent not exported)`. An error that does
 * not fit on its span's line goes on the line below; with `maxEventsPerSpan`, span events follow
 * (`· +1.20 s Running`). Pure: no I/O.
 */
export function renderTraceTrees(spans: readonly SpanRecord[], options: TreeOptions = {}): string {
  if (spans.length === 0) return '(no spans)\n';
  const color = options.color ?? false;
  const width = Math.max(40, Math.floor(options.width ?? DEFAULT_WIDTH));
  const maxEvents = Math.max(0, Math.floor(options.maxEventsPerSpan ?? 0));
  const barWidth = Math.min(20, Math.max(8, Math.round(width / 5)));

  const traces = new Map<string, SpanRecord[]>();
  for (const s of spans) {
    const list = traces.get(s.traceId);
    if (list === undefined) traces.set(s.traceId, [s]);
    else list.push(s);
  }
  const ordered = [...traces.entries()].map(([traceId, list]) => ({ traceId, list, startUs: list.reduce((m, s) => Math.min(m, s.startUs), Infinity) }));
  ordered.sort((a, b) => a.startUs - b.startUs || compare(a.traceId, b.traceId));

  const blocks = ordered.map(({ traceId, list, startUs }) => {
    const endUs = list.reduce((m, s) => Math.max(m, s.endUs), -Infinity);
    const rows = traceRows(list, { startUs, endUs, barWidth, maxEvents });
    const root = [...list].sort(byStart).find((s) => s.parentSpanId === undefined);
    const header: Segment[] = [
      { text: `trace ${traceId}`, style: 'bold' },
      { text: GAP },
      { text: root === undefined ? '(root not exported)' : escapeControls(root.name), shrink: root !== undefined },
      { text: `${GAP}${plural(list.length, 'span')}${GAP}${formatDuration(endUs - startUs)}` },
    ];
    return { header, rows };
  });

  const fixed = GAP.length + DURATION_WIDTH + GAP.length + barWidth + 2;
  const longest = blocks.reduce((m, b) => b.rows.reduce((n, r) => Math.max(n, textLength(r.label)), m), 0);
  const labelWidth = Math.max(MIN_LABEL_WIDTH, Math.min(longest, width - fixed));

  const out: string[] = [];
  for (const [i, block] of blocks.entries()) {
    if (i > 0) out.push('');
    // The header is not cut: its trace id is what the reader searches for; a line too long wraps.
    out.push(paint(shrinkName(block.header, width, true), color));
    for (const row of block.rows) {
      const label = fit(row.label, labelWidth);
      const line = [...label, { text: ' '.repeat(labelWidth - textLength(label)) + GAP + row.duration.padStart(DURATION_WIDTH) + GAP }, { text: row.bar, style: row.style }];
      const error = row.error === undefined ? undefined : `error: ${row.error}`;
      const fits = error !== undefined && textLength(line) + GAP.length + columns(error) <= width;
      if (fits) line.push({ text: GAP }, { text: error, style: 'red' });
      out.push(paint(line, color));
      if (error !== undefined && !fits) out.push(paint(clip([{ text: row.detailPrefix, style: 'dim' }, { text: error, style: 'red' }], width), color));
      for (const e of row.events) out.push(paint(clip([{ text: row.detailPrefix, style: 'dim' }, { text: e }], width), color));
    }
  }
  return `${out.join('\n')}\n`;
}

interface TraceGeometry { readonly startUs: number; readonly endUs: number; readonly barWidth: number; readonly maxEvents: number }

function traceRows(list: readonly SpanRecord[], g: TraceGeometry): Row[] {
  const ids = new Set(list.map((s) => s.spanId));
  const children = new Map<string, SpanRecord[]>();
  const top: SpanRecord[] = [];
  for (const s of list) {
    const p = s.parentSpanId;
    if (p === undefined || p === s.spanId || !ids.has(p)) top.push(s);
    else {
      const siblings = children.get(p);
      if (siblings === undefined) children.set(p, [s]);
      else siblings.push(s);
    }
  }
  const rows: Row[] = [];
  const drawn = new Set<SpanRecord>();
  const walk = (span: SpanRecord, prefix: string, glyph: string, childPrefix: string, parentCells: Cells | undefined): void => {
    drawn.add(span);
    const kids = (children.get(span.spanId) ?? []).filter((k) => !drawn.has(k)).sort(byStart);
    const orphan = span.parentSpanId !== undefined && glyph === '';
    const spanCells = cells(span, g, parentCells);
    rows.push(row(span, [{ text: prefix + glyph, style: 'dim' }], orphan, childPrefix + (kids.length > 0 ? '│  ' : '   '), spanCells, g));
    kids.forEach((k, i) => {
      const last = i === kids.length - 1;
      walk(k, childPrefix, last ? '└─ ' : '├─ ', childPrefix + (last ? '   ' : '│  '), spanCells);
    });
  };
  for (const s of top.sort(byStart)) walk(s, '', '', '', undefined);
  // Spans caught in a parent cycle (malformed input) are still drawn, at the top level.
  for (const s of [...list].sort(byStart)) if (!drawn.has(s)) walk(s, '', '', '', undefined);
  return rows;
}

function row(span: SpanRecord, glyphs: Segment[], orphan: boolean, detailPrefix: string, spanCells: Cells, g: TraceGeometry): Row {
  const style = stateStyle(span);
  const label: Segment[] = [...glyphs, { text: escapeControls(span.name), shrink: true }];
  if (span.run.name !== undefined && span.run.name !== '') label.push({ text: ` (${escapeControls(span.run.name)})`, optional: true });
  label.push({ text: GAP }, { text: span.run.finalState === undefined ? 'no state' : escapeControls(span.run.finalState.name), style });
  if (span.run.attempt > 0) label.push({ text: `${GAP}attempt ${span.run.attempt + 1}`, marker: true });
  if (span.run.incomplete) label.push({ text: `${GAP}[incomplete]`, style: 'yellow', marker: true });
  if (orphan) label.push({ text: `${GAP}(parent not exported)`, style: 'dim', marker: true });
  const events = g.maxEvents > 0 ? eventLines(span, g.maxEvents) : [];
  const error = span.status.code === 'error' ? oneLine(span.status.message) : undefined;
  return { label, duration: formatDuration(span.endUs - span.startUs), bar: bar(spanCells, g.barWidth), style, error, detailPrefix, events };
}

function eventLines(span: SpanRecord, max: number): string[] {
  const lines = span.events.slice(0, max).map((e) => `· ${offset(e.timeUs - span.startUs)} ${escapeControls(e.name)}${messageOf(e)}`);
  const more = span.events.length - max;
  if (more > 0) lines.push(`· … ${plural(more, 'more event')}`);
  return lines;
}

function messageOf(e: SpanEventRecord): string {
  const m = e.attributes[STATE_MESSAGE_ATTR];
  return typeof m === 'string' && m !== '' ? `: ${oneLine(m)}` : '';
}

/**
 * A message (a traceback, a collector's answer) on one line, its line breaks as spaces; any other
 * control character (an ANSI colour or screen-clearing sequence, a carriage return, a tab) written as
 * an escape, so that it can neither move the cursor nor throw the columns out.
 */
function oneLine(text: string): string {
  return escapeControls(text.replace(/\s*\n\s*/g, ' '));
}

/** The cells of a span's bar: from (inclusive) to (exclusive), out of the trace's `barWidth`. */
type Cells = readonly [number, number];

/**
 * Where the span sits between its trace's start and end. Its start and end are rounded to the nearest
 * cell boundary, so that a bar is as long as its span within a cell (a span twice as long draws
 * about twice as long), spans that follow one another draw end to end, and a span starts no earlier
 * than one that started before it. A span shorter than a cell takes one cell, within its parent's bar.
 */
function cells(span: SpanRecord, g: TraceGeometry, parent: Cells | undefined): Cells {
  const n = g.barWidth;
  const total = g.endUs - g.startUs;
  if (!(total > 0)) return [0, 1];
  const start = ((span.startUs - g.startUs) / total) * n;
  const end = ((span.endUs - g.startUs) / total) * n;
  const from = Math.min(n - 1, Math.max(0, Math.round(start)));
  const to = Math.min(n, Math.round(end));
  if (to > from) return [from, to];
  // Shorter than a cell: the cell after the boundary its start rounds to, as for a longer span that
  // starts with it; the one before when only that one is within its parent's bar.
  const cell = parent !== undefined && from >= parent[1] && from - 1 >= parent[0] ? from - 1 : from;
  return [cell, cell + 1];
}

/** `▕  ████      ▏` */
function bar([from, to]: Cells, n: number): string {
  return `▕${' '.repeat(from)}${'█'.repeat(to - from)}${' '.repeat(n - to)}▏`;
}

function stateStyle(span: SpanRecord): Style {
  if (span.run.incomplete) return 'yellow';
  const type = span.run.finalState?.type;
  if (type === 'COMPLETED') return 'green';
  if (type === 'FAILED' || type === 'CRASHED') return 'red';
  return 'yellow';
}

/** `850 ms`, `2.41 s`, `12.4 s`, `3 m 05 s`, `2 h 07 m`. */
export function formatDuration(us: number): string {
  const abs = Math.max(0, Math.round(us));
  if (abs < 1_000) return abs === 0 ? '0 ms' : `${abs} µs`;
  const ms = Math.round(abs / 1_000);
  if (ms < 1_000) return `${ms} ms`;
  const centis = Math.round(abs / 10_000);
  if (centis < 1_000) return `${(centis / 100).toFixed(2)} s`;
  const tenths = Math.round(abs / 100_000);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)} s`;
  const secs = Math.round(abs / 1_000_000);
  if (secs < 3_600) return `${Math.floor(secs / 60)} m ${pad2(secs % 60)} s`;
  const mins = Math.round(abs / 60_000_000);
  if (mins < 1_440) return `${Math.floor(mins / 60)} h ${pad2(mins % 60)} m`;
  const hours = Math.round(abs / 3_600_000_000);
  return `${Math.floor(hours / 24)} d ${pad2(hours % 24)} h`;
}

function offset(us: number): string {
  return `${us < 0 ? '-' : '+'}${formatDuration(Math.abs(us))}`;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

function byStart(a: SpanRecord, b: SpanRecord): number {
  return a.startUs - b.startUs || a.endUs - b.endUs || compare(a.name, b.name) || compare(a.spanId, b.spanId);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Characters a terminal draws two columns wide: East Asian Wide and Fullwidth (Hangul, CJK, kana,
 * fullwidth forms) and emoji drawn as emoji by default (Emoji_Presentation: 📦, also ✅ ❌ ⏳ ⚡ 🟢
 * outside the pictograph blocks, but not text-style symbols such as © ™ ☀); and ones it draws in
 * none (combining marks, format characters).
 */
const WIDE_CHAR = /[\u1100-\u115F\u2E80-\u303E\u3041-\u33FF\u3400-\u4DBF\u4E00-\u9FFF\uA000-\uA4CF\uAC00-\uD7A3\uF900-\uFAFF\uFE30-\uFE4F\uFF00-\uFF60\uFFE0-\uFFE6\u{20000}-\u{3FFFD}\p{Emoji_Presentation}]/u;
const ZERO_WIDTH_CHAR = /[\p{Mn}\p{Me}\p{Cf}]/u;

function charColumns(c: string): number {
  if (c < '\u0300') return 1;
  return ZERO_WIDTH_CHAR.test(c) ? 0 : WIDE_CHAR.test(c) ? 2 : 1;
}

/** Columns a text takes on a terminal. */
export function columns(text: string): number {
  let n = 0;
  for (const c of text) n += charColumns(c);
  return n;
}

/** The longest start of `text` that takes at most `max` columns. */
export function cutToColumns(text: string, max: number): string {
  let n = 0;
  let out = '';
  for (const c of text) {
    n += charColumns(c);
    if (n > max) break;
    out += c;
  }
  return out;
}

function textLength(segments: readonly Segment[]): number {
  return segments.reduce((n, s) => n + columns(s.text), 0);
}

/**
 * Fit segments into `max` columns: optional ones left out first, then the name shortened (to
 * MIN_NAME_WIDTH; further, down to its first character and `…`, when that keeps the markers
 * (attempt, `[incomplete]`, `(parent not exported)`) whole), then the end cut.
 */
function fit(segments: readonly Segment[], max: number): Segment[] {
  if (textLength(segments) <= max) return [...segments];
  const shortened = shrinkName(segments.filter((s) => s.optional !== true), max);
  const markers = shortened.some((s) => s.marker === true);
  return clip(textLength(shortened) <= max || !markers ? shortened : shrinkName(shortened, max, true, 2), max);
}

/**
 * Shorten the `shrink` segment (to no less than `minWidth` columns) so that the whole fits in
 * `max` columns, or comes as close as it can; `onlyToFit`: leave it whole unless that makes it fit.
 */
function shrinkName(segments: readonly Segment[], max: number, onlyToFit = false, minWidth = MIN_NAME_WIDTH): Segment[] {
  const over = textLength(segments) - max;
  const i = segments.findIndex((s) => s.shrink === true);
  if (over <= 0 || i < 0) return [...segments];
  const text = segments[i]!.text;
  const target = Math.max(minWidth, columns(text) - over);
  if (target >= columns(text) || (onlyToFit && target > columns(text) - over)) return [...segments];
  return segments.map((s, j) => (j === i ? { ...s, text: `${cutToColumns(text, target - 1)}…` } : s));
}

/** Cut segments to `max` columns, ending in `…` when something was cut. */
function clip(segments: readonly Segment[], max: number): Segment[] {
  if (textLength(segments) <= max) return [...segments];
  const out: Segment[] = [];
  let room = max - 1;
  for (const s of segments) {
    const n = columns(s.text);
    if (n <= room) {
      out.push(s);
      room -= n;
      continue;
    }
    if (room > 0) out.push({ ...s, text: cutToColumns(s.text, room) });
    break;
  }
  out.push({ text: '…' });
  return out;
}

function paint(segments: readonly Segment[], color: boolean): string {
  return segments.map((s) => (color && s.style !== undefined && s.text !== '' ? `${ANSI[s.style]}${s.text}${RESET}` : s.text)).join('');
}
