import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import type { Config } from './config.js';
import type { DeliveryStats } from './export/delivery.js';
import { samplerAsGiven } from './export/sampling.js';
import { EXIT_CODES } from './errors.js';
import { LINE_SHAPE, ownLineStream } from './log/logger.js';
import { STLOGGING_PREFIX } from './log/stlogging.js';
import { columns, cutToColumns, renderTraceTrees } from './log/tree.js';
import type { SpanRecord } from './model/span-record.js';
import { createPipeline } from './pipeline.js';
import { generateDemoWorkload } from './source/demo-workload.js';
import { shownUrl } from './log/redact.js';
import { escapeControls } from './log/control-chars.js';
import { plural } from './log/words.js';

export interface DemoOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly out: NodeJS.WritableStream;
  readonly color: boolean;
  /** Columns the trees may use (see `terminalOptions`); default DEFAULT_WIDTH. */
  readonly width?: number | undefined;
  readonly seed?: number;
}

const SAMPLE_LOG_LINES = 6;
/** Columns for the trees when neither COLUMNS nor a terminal says. */
const DEFAULT_WIDTH = 100;
/** FORCE_COLOR values that turn colour on, as Node's own output reads them (any other value turns it off). */
const FORCE_COLOR_ON: ReadonlySet<string> = new Set(['', '1', '2', '3', 'true']);

/** What `terminalOptions` needs of standard output (a `tty.WriteStream` on a terminal). */
export interface OutputStream {
  readonly isTTY?: boolean;
  readonly columns?: number;
  hasColors?(env?: object): boolean;
}

/**
 * Colour and width for the trees, decided as Node's own output and the shell decide them: FORCE_COLOR
 * wins, also into a pipe (CI logs); else colour only on a terminal that has it, without NO_COLOR,
 * NODE_DISABLE_COLORS or TERM=dumb. COLUMNS (when a positive number) wins over the terminal's
 * width, as in curses and Python; a terminal that reports 0 columns (`docker run -t` before it is
 * sized) counts as none, and the default width applies.
 */
export function terminalOptions(out: OutputStream, env: Readonly<Record<string, string | undefined>>): { color: boolean; width: number | undefined } {
  const tty = out.isTTY === true;
  const force = env.FORCE_COLOR;
  const color = force !== undefined
    ? FORCE_COLOR_ON.has(force)
    : tty && env.NO_COLOR === undefined && env.NODE_DISABLE_COLORS === undefined && env.TERM !== 'dumb' && (out.hasColors?.(env) ?? false);
  const columns = Number(env.COLUMNS);
  const width = Number.isInteger(columns) && columns > 0 ? columns : tty && out.columns !== undefined && out.columns > 0 ? out.columns : undefined;
  return { color, width };
}

/**
 * `prefect-otel demo`: a simulated Prefect workload, in the server's wire format, goes through the
 * same pipeline as a live stream (parser, run model, STLOGGING writer, exporter when configured);
 * the resulting traces are drawn as trees, followed by the log lines of one trace.
 */
export async function runDemo(options: DemoOptions): Promise<number> {
  const { config, out } = options;
  const workload = generateDemoWorkload({ seed: options.seed ?? 7 });
  const spans: SpanRecord[] = [];
  const runLines: string[] = [];
  // STLOGGING lines are captured so the demo can show how a trace's log lines are found by its trace
  // id; every line also goes to the configured log at its level (warnings and errors by default).
  const capture = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.includes(STLOGGING_PREFIX)) runLines.push(line);
      done();
    },
  });
  const streams: pino.StreamEntry[] = [{ stream: capture, level: 'info' }];
  const configured = ownLineStream(options.logger);
  if (configured !== undefined && config.log.level !== 'silent') streams.push({ stream: configured, level: config.log.level });
  const level = pino.levels.values[config.log.level]! < pino.levels.values.info! ? config.log.level : 'info';
  const logger = pino({ level, ...LINE_SHAPE }, pino.multistream(streams));
  const pipeline = createPipeline({
    config,
    logger,
    clock: 'event',
    resolveOwner: (taskRunId) => Promise.resolve(workload.taskRunOwners.get(taskRunId) ?? null),
    onSpan: (span) => spans.push(span),
  });
  for (const event of workload.events) pipeline.ingest(JSON.stringify({ type: 'event', event }));
  await pipeline.finish('end_of_input');

  // The traces are drawn as soon as they are built; sending them to a collector may take a while.
  const traceCount = new Set(spans.map((s) => s.traceId)).size;
  out.write(wrapWords(`prefect-otel demo: ${workload.summary}`, options.width ?? DEFAULT_WIDTH));
  const unsampled = pipeline.counters.unsampled;
  const left = unsampled === 0 ? '' : `; ${plural(unsampled, 'more span')} left out by the sampler (${samplerAsGiven(config)})`;
  out.write(wrapWords(`${plural(workload.events.length, 'event')} → ${plural(spans.length, 'span')} in ${plural(traceCount, 'trace')}${left}`, options.width ?? DEFAULT_WIDTH));
  out.write('\n');
  out.write(renderTraceTrees(spans, { color: options.color, width: options.width ?? DEFAULT_WIDTH }));
  out.write('\n');

  const failed = spans.find((s) => s.status.code === 'error' && s.parentSpanId === undefined) ?? spans.find((s) => s.parentSpanId === undefined);
  if (failed !== undefined) {
    const lines = runLines.filter((l) => l.includes(failed.traceId));
    // The demo's own log starts at warnings unless configured: the lines are not in its output then.
    const shown = pino.levels.values[config.log.level]! <= pino.levels.values.info! ? '' : ' (printed here with PREFECT_OTEL_LOG_LEVEL=info)';
    out.write(wrapWords(`Log lines carry the trace id: grep ${failed.traceId} finds all ${lines.length} of this trace's${shown}, e.g.`, options.width ?? DEFAULT_WIDTH));
    for (const l of lines.slice(0, SAMPLE_LOG_LINES)) out.write(`${sampleLine(l, options.width)}\n`);
    out.write('\n');
  }
  const destination = config.traces.exporter === 'otlp' ? shownUrl(config.traces.url) : config.traces.exporter;
  if (pipeline.traces !== undefined) out.write(`Sending ${plural(spans.length, 'span')} to ${destination} …\n`);
  const flushed = await pipeline.shutdown(Math.max(10_000, config.traces.timeoutMs * 2));
  const t = pipeline.traces?.stats;
  if (t === undefined) {
    out.write(wrapWords('Spans were not exported: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318) to send them to a collector.', options.width ?? DEFAULT_WIDTH));
  } else {
    out.write(`Exported ${deliveryReport(t, 'span', destination)}.\n`);
    // A link to a trace the collector did not take would open on "trace not found".
    if (config.jaegerUrl !== undefined && failed !== undefined && t.delivered > 0) out.write(`Open ${config.jaegerUrl}/trace/${failed.traceId}\n`);
  }
  // With OTEL_LOGS_EXPORTER=otlp the STLOGGING records go to the collector too, and are said the same way.
  const l = pipeline.logs?.stats;
  if (l !== undefined) out.write(`Exported ${deliveryReport(l, 'log record', shownUrl(config.logs.url))}.\n`);
  options.logger.flush();
  const whole = (s: DeliveryStats | undefined): boolean => s === undefined || (s.rejected === 0 && s.dropped === 0 && s.queued + s.inFlight === 0);
  return flushed.ok && whole(t) && whole(l) ? EXIT_CODES.OK : EXIT_CODES.FAILURE;
}

/**
 * `12 spans to <url>`, and what was not delivered: refused by the collector (a wrong path or port
 * answering 404, a 401), dropped from a full queue, or still waiting at the end, with the
 * collector's last answer, on one line.
 */
function deliveryReport(s: DeliveryStats, noun: string, destination: string): string {
  const pending = s.queued + s.inFlight;
  const lost = [
    ...(s.rejected > 0 ? [`${s.rejected} rejected`] : []),
    ...(s.dropped > 0 ? [`${s.dropped} dropped`] : []),
    ...(pending > 0 ? [`${pending} not delivered`] : []),
  ];
  const reason = escapeControls((s.lastError ?? 'no answer from the collector').trim());
  return `${plural(s.delivered, noun)} to ${destination}${lost.length === 0 ? '' : ` (${lost.join(', ')}: ${reason})`}`;
}

/** Columns of a sample log line's message kept before its ids, when the line is cut to the width. */
const MIN_MESSAGE_COLUMNS = 24;

/**
 * `{"level":30,…,"msg":"STLOGGING: …","trace_id":"…"}` → `  STLOGGING: …  trace_id=… span_id=…`.
 * With a width (a terminal's, or COLUMNS), a line too long for it is cut with `…` rather than
 * wrapped: the message is cut, and the ids it shows stay; when too little of the message would be
 * left, the end of the line is cut.
 */
function sampleLine(line: string, width: number | undefined): string {
  let message: string;
  let ids: string;
  try {
    const o = JSON.parse(line) as Record<string, unknown>;
    message = escapeControls(String(o.msg));
    ids = `  trace_id=${String(o.trace_id)} span_id=${String(o.span_id)}`;
  } catch {
    message = escapeControls(line);
    ids = '';
  }
  const whole = `  ${message}${ids}`;
  if (width === undefined || columns(whole) <= width) return whole;
  const room = width - 2 - columns(ids);
  if (room >= MIN_MESSAGE_COLUMNS) return `  ${cutToColumns(message, room - 1)}…${ids}`;
  return `${cutToColumns(whole, width - 1)}…`;
}

/** A text as lines of at most `width` columns, broken between words; the lines after the first indented. */
function wrapWords(text: string, width: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    const next = line === '' ? word : `${line} ${word}`;
    if (line !== '' && columns(next) > width) {
      lines.push(line);
      line = `  ${word}`;
    } else line = next;
  }
  lines.push(line);
  return `${lines.join('\n')}\n`;
}
