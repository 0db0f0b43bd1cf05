import { Writable } from 'node:stream';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogFormat, LogLevel } from '../config.js';
import { escapeControls } from './control-chars.js';
import { ERR_SERIALIZERS } from './err.js';
import { boundLine } from './line-bound.js';

export type { Logger } from 'pino';

/** Keys that could hold a secret, wherever they appear in a log object. */
const REDACT = [
  'apiKey', 'authString', 'token', 'authorization', 'Authorization', 'headers.authorization', 'headers.Authorization',
  '*.apiKey', '*.authString', '*.token', '*.headers', 'otlpHeaders',
];

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OMIT_PRETTY = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'service']);

/**
 * One line per record, `HH:MM:SS.mmm LEVEL message key=value …`: for people, not for log pipelines.
 * Messages and values are written unquoted, so control characters in them (from run and event names)
 * are escaped: a record is always one line and never drives the terminal.
 */
export function createPrettyStream(out: NodeJS.WritableStream = process.stdout): DestinationStream {
  const state = outputState(out);
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      if (state.failed) {
        done();
        return;
      }
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line === '') continue;
        out.write(`${escapeControls(prettyLine(boundLine(`${line}\n`)))}\n`);
      }
      done();
    },
  });
}

/** Per output stream the pretty lines go to: whether it failed. One listener per stream, however many loggers write to it. */
const outputs = new WeakMap<NodeJS.WritableStream, { failed: boolean }>();

/**
 * A reader that went away (EPIPE) or any other failure of an output is an 'error' event on it,
 * which with no listener ends the process: inside a host application, the host. The lines are
 * dropped from then on (the CLI says once on standard error why standard output failed).
 */
function outputState(out: NodeJS.WritableStream): { failed: boolean } {
  let state = outputs.get(out);
  if (state === undefined) {
    const s = { failed: false };
    out.on('error', () => {
      s.failed = true;
    });
    outputs.set(out, s);
    state = s;
  }
  return state;
}

function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : '';
  const level = LEVEL_NAMES[Number(o.level)] ?? String(o.level);
  const rest = Object.entries(o)
    .filter(([k]) => !OMIT_PRETTY.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : k === 'err' ? errText(v) : JSON.stringify(v)}`)
    .join(' ');
  return `${time} ${level.padEnd(5)} ${typeof o.msg === 'string' ? o.msg : ''}${rest === '' ? '' : `  ${rest}`}`;
}

/** A line's `err` for people: its message (`Type: message` for a class other than Error), or its stack, which starts so. */
function errText(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  const { type, message, stack } = v as { type?: unknown; message?: unknown; stack?: unknown };
  if (typeof message !== 'string') return JSON.stringify(v);
  const head = typeof type === 'string' && type !== 'Error' ? `${type}: ${message}` : message;
  return typeof stack === 'string' ? stack : head;
}

export interface LoggerOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Where lines go; default stdout. */
  readonly destination?: DestinationStream;
}

/**
 * Loggers made by `createLogger`, with the stream they write to: their lines have a known shape
 * (`{"level":…,"time":…,"service":"prefect-otel",…,"msg":…}`), so the hottest line (STLOGGING) can be
 * written to the stream as text without pino's generic serializer. A logger from elsewhere (a
 * library user's own pino) is always written through pino.
 */
const ownStreams = new WeakMap<Logger, DestinationStream>();

/** Where a logger from `createLogger` writes its lines; undefined for any other logger. */
export function ownLineStream(logger: Logger): DestinationStream | undefined {
  return ownStreams.get(logger);
}

/** What every prefect-otel line carries (`service`, epoch-ms `time`, a failure as one `err` object) and what no line may show (secrets). */
export const LINE_SHAPE = {
  base: { service: 'prefect-otel' },
  timestamp: pino.stdTimeFunctions.epochTime,
  serializers: ERR_SERIALIZERS,
  redact: { paths: REDACT, censor: '[redacted]' },
} satisfies pino.LoggerOptions;

export function createLogger(options: LoggerOptions): Logger {
  const stream =
    options.format === 'pretty' ? createPrettyStream(options.destination as NodeJS.WritableStream | undefined) : (options.destination ?? stdoutDestination());
  const logger = pino({ level: options.level, ...LINE_SHAPE }, stream);
  ownStreams.set(logger, stream);
  return logger;
}

/**
 * Synchronous, so that a reader slower than the pipeline slows it down instead of growing an
 * unbounded buffer of lines in memory; lines are gathered into writes of about LOG_WRITE_CHARS
 * (one system call per line would cost a fifth of a replay), and nothing waits longer than
 * LOG_FLUSH_MS. What is left goes out when the process exits.
 */
function stdoutDestination(): DestinationStream {
  return lineDestination(1);
}

/**
 * A synchronous, buffered destination for log lines (stdout's, or a file's), flushed at exit. One per
 * destination for the whole process, whatever the number of loggers: a host that starts and shuts
 * prefect-otel down again and again would otherwise gather a flush timer and a writer per start.
 */
export function lineDestination(dest: number | string): DestinationStream {
  const existing = openStreams.get(dest);
  if (existing !== undefined) return existing;
  const where = typeof dest === 'number' ? (dest === 1 ? 'standard output' : `file descriptor ${dest}`) : dest;
  const stream = new LineBatcher(pino.destination({ ...(typeof dest === 'number' ? { fd: dest } : { dest }), sync: true, minLength: 0 }), where);
  if (openStreams.size === 0) process.once('exit', flushAtExit);
  openStreams.set(dest, stream);
  return stream;
}

const LOG_WRITE_CHARS = 16 * 1024;
const LOG_FLUSH_MS = 100;
/** The destinations made so far, by file descriptor or path. */
const openStreams = new Map<number | string, LineBatcher>();

/**
 * Gathers whole lines and hands them to the file writer as one string per batch. The file writer
 * (sonic-boom) measures the bytes of its whole pending buffer on every write, so with a line per
 * call the cost of a line grew with the batch size; here each line costs a push.
 */
class LineBatcher implements DestinationStream {
  private lines: string[] = [];
  private chars = 0;
  private readonly timer: NodeJS.Timeout;
  /** A write failed: the lines have nowhere to go, and the work (spans) goes on without them. */
  private failed = false;

  constructor(
    private readonly out: ReturnType<typeof pino.destination>,
    private readonly where: string,
  ) {
    this.timer = setInterval(() => this.drain(), LOG_FLUSH_MS);
    this.timer.unref();
    // pino's own listener turns a reader that went away (EPIPE) into silence; any other failure (a
    // full disk, a terminal that is gone) would be thrown out of the write and end the process.
    out.on('error', (err: NodeJS.ErrnoException) => this.fail(err));
  }

  write(text: string): void {
    if (this.failed) return;
    // Under 16 KiB, as Docker's and containerd's log drivers keep a line whole (pino writes one line a call).
    const line = boundLine(text);
    this.lines.push(line);
    this.chars += line.length;
    if (this.chars >= LOG_WRITE_CHARS) this.drain();
  }

  /** pino's `logger.flush(cb)`. */
  flush(cb?: (err?: Error) => void): void {
    try {
      this.drain();
    } catch (err) {
      cb?.(err as Error);
      return;
    }
    cb?.();
  }

  /**
   * The file writer is synchronous: a write has reached the file when it returns, so draining is all
   * there is to do. (Its own flushSync retries a failing write for ever, holding the process at exit.)
   */
  flushSync(): void {
    this.drain();
  }

  private fail(err: NodeJS.ErrnoException): void {
    if (this.failed) return;
    this.failed = true;
    this.lines = [];
    this.chars = 0;
    clearInterval(this.timer);
    if (err.code === 'EPIPE') return;
    try {
      process.stderr.write(`prefect-otel: cannot write log lines to ${this.where} (${err.message}); they are dropped from now on\n`);
    } catch {
      // Standard error is gone too: nothing left to say it on.
    }
  }

  private drain(): void {
    if (this.lines.length === 0) return;
    const text = this.lines.length === 1 ? this.lines[0]! : this.lines.join('');
    this.lines = [];
    this.chars = 0;
    this.out.write(text);
  }
}

function flushAtExit(): void {
  for (const stream of openStreams.values()) {
    try {
      stream.flushSync();
    } catch {
      // stdout is gone (EPIPE): nothing left to write to.
    }
  }
}
