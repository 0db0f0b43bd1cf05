import { constants as fsConstants, createReadStream, open, openSync, statSync, type Stats } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { InputError, errorText } from './errors.js';
import { startMetricsExport } from './export/metrics.js';
import { samplerAsGiven } from './export/sampling.js';
import { startHealthServer } from './health.js';
import type { FlushResult } from './export/delivery.js';
import { createPipeline, type Pipeline } from './pipeline.js';
import { nativeSpanFromRest } from './source/native-spans.js';
import { createFlowParentLookup, createOwnerLookup, createStateHistoryLookup, type OwnerLookupOptions } from './source/run-lookups.js';
import { excerpt, isRecord, MAX_EVENT_BYTES, overEventBytes } from './model/event.js';
import { lineBatches, READ_CHUNK_BYTES } from './source/lines.js';
import { redactCredentials, safeUrl, shownUrl } from './log/redact.js';
import { escapeControls } from './log/control-chars.js';
import { createPrefectRestClient } from './source/rest.js';
import { apiUrlAdvice, prefectAuth } from './source/prefect-api.js';
import { collectStats, statsLogFields, type TracingStats } from './stats.js';
import { plural } from './log/words.js';

/** Counts in the progress lines, grouped as `1,024`. */
const GROUPED = { grouped: true } as const;

export interface ReplaySummary {
  /** Stopped by `signal` before the end of the input. */
  readonly interrupted: boolean;
  readonly lines: number;
  /** Lines with nothing to read: blank, a `#` comment, or a status or stop message of `prefect events stream`. */
  readonly blank: number;
  readonly events: number;
  readonly duplicates: number;
  readonly unrelated: number;
  readonly skipped: Readonly<Record<string, number>>;
  readonly runs: number;
  readonly spans: number;
  readonly incomplete: number;
  readonly spansExported: number;
  /** Spans of traces the sampler left out, and the sampler as the summary names it (`traceidratio 0.25`). */
  readonly spansUnsampled?: { readonly count: number; readonly sampler: string };
  readonly spansDropped: number;
  readonly spansRejected: number;
  readonly spansPending: number;
  /** Where the spans went (OTLP: the URL without secrets) and the collector's last error, for a summary that counts spans lost. */
  readonly spansTo?: { readonly destination: string; readonly lastError: string | undefined };
  /** With OTEL_LOGS_EXPORTER=otlp: what became of the OTLP log records, where they went and the collector's last error. */
  readonly logRecords?: {
    readonly exported: number;
    readonly dropped: number;
    readonly rejected: number;
    readonly pending: number;
    readonly destination?: string;
    readonly lastError?: string | undefined;
  };
  readonly exportOk: boolean;
  readonly exporter: string;
  /** How the trace exporter was chosen, as the summary names it (`--traces-exporter`); the variable when it was not given. */
  readonly exporterSetting?: string;
  /** What to do when the input was not JSON lines (JSON written over many lines), for the summary. */
  readonly hint?: string;
  /**
   * The Prefect API refused the credentials on a run look-up (its answer, naming the setting to fix,
   * no secret): subflows whose parent is not in the file became roots. The exit code says so (3).
   */
  readonly apiRefused?: string;
  /** Where `prefect events stream` said it stopped on an error (the first few), and how often. */
  readonly streamStops?: { readonly count: number; readonly first: readonly StreamStop[] };
  /** The input's last line, when it ended partway through an event (no line end after it) and was skipped. */
  readonly cutLastLine?: number;
}

export interface ReplayOptions {
  readonly config: Config;
  readonly logger: Logger;
  /** A path, or `-` for standard input. */
  readonly file: string;
  readonly stdin?: Readable;
  /**
   * Progress lines (a TTY on stderr gets one, rewritten in place); `columns`: the terminal's width
   * now, which the line keeps within (a wrapped line could not be rewritten in place).
   */
  readonly progress?: { readonly write: (text: string) => void; readonly tty: boolean; readonly columns?: () => number | undefined };
  readonly flushTimeoutMs?: number;
  /** Stop reading (SIGINT/SIGTERM): the runs read so far are ended and their spans delivered. */
  readonly signal?: AbortSignal;
}

const PROGRESS_INTERVAL_MS = 250;
/** What replay does without the Prefect API's answers to its run look-ups. */
const WITHOUT_LOOKUPS = 'subflows whose parent is not in the file become roots of their own traces, and runs first seen leaving a terminal state are numbered as their first rerun';

/** What the usual reasons a file cannot be opened mean, in words rather than an errno code. */
const FILE_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'a part of the path is not a directory',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'too many symbolic links',
};

/**
 * A named pipe as a stream that `destroy()` ends at once, also while its writer sends nothing, and
 * before any writer has opened it: opened without waiting for one (`O_NONBLOCK`), it is read once a
 * writer sends, and ends when the last writer closes it. A plain open would wait for a writer on a
 * thread of Node's pool, which a stop cannot end and an exit waits for: Ctrl-C would do nothing.
 */
async function openPipe(file: string): Promise<Readable> {
  let fd: number;
  try {
    fd = await new Promise<number>((resolve, reject) => open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK, (err, f) => (err === null ? resolve(f) : reject(err))));
  } catch (err) {
    throw new InputError(`cannot read ${file}: ${fileErrorText(err)}`, { cause: err });
  }
  return new Socket({ fd, readable: true, writable: false });
}

function fileErrorText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return (code === undefined ? undefined : FILE_ERRORS[code]) ?? errorText(err);
}

/**
 * What `prefect events stream` prints on standard output besides the events: before the first, and
 * after Ctrl-C. A file written as `prefect events stream > events.jsonl` holds them; they say nothing
 * about a run and are counted with the comments, not skipped and warned of.
 */
const PREFECT_CLI_STATUS = new Set(['Subscribing to event stream...', 'Exiting...']);
const OPENING_BRACE = 0x7b;
const HASH = 0x23;

function isPrefectCliStatus(line: string): boolean {
  return line.charCodeAt(0) !== OPENING_BRACE && PREFECT_CLI_STATUS.has(line.trimEnd());
}

/**
 * How the messages begin that `prefect events stream` prints on standard output when it stops on an
 * error (`exit_with_error` in Prefect's `cli/events.py`): a dropped connection, anything else. The
 * stream ended there; events after it, until the command was started again, are not in the file.
 */
const PREFECT_CLI_STOPS = ['Connection closed, retrying... (', 'An unexpected error occurred: ', 'An exception occurred.'];

function isPrefectCliStop(line: string): boolean {
  return line.charCodeAt(0) !== OPENING_BRACE && PREFECT_CLI_STOPS.some((p) => line.startsWith(p));
}

/**
 * Whether a line is the wrapped rest of a stop message that has `parts` lines so far: text, not an
 * event, an array of events, a comment or another message. A `[` that opens no array of objects
 * (`[Errno 111] Connect call failed`, as Python words an OS error) is the message's.
 */
function continuesStop(line: string, parts: number): boolean {
  const first = line.charCodeAt(0);
  return parts < CLI_STOP_MAX_LINES && line !== '' && first !== OPENING_BRACE && first !== HASH && !EVENT_ARRAY_START.test(line) && !isPrefectCliStatus(line) && !isPrefectCliStop(line);
}

/** How a line holding an array of events (or an empty one) begins. */
const EVENT_ARRAY_START = /^\[\s*[{\]]/;

/** At most this many lines after a stop message are taken as its wrapped rest (Prefect's console wraps at 80 columns). */
const CLI_STOP_MAX_LINES = 8;
/** How many stops the summary names by line. */
const CLI_STOPS_SHOWN = 3;
/** How much of a stop message is looked at for credentials before its excerpt is taken (its lines may be long). */
const MAX_STOP_SCANNED_CHARS = 4_096;

/** Where `prefect events stream` stopped, as the summary says it. */
export interface StreamStop {
  readonly line: number;
  readonly message: string;
}

/** The longest a replay waits for one run look-up. */
const REPLAY_LOOKUP_TIMEOUT_MS = 5_000;

/** Replay a JSON-lines file of Prefect events through the pipeline and deliver every span. */
export async function runReplay(options: ReplayOptions): Promise<ReplaySummary> {
  const { config, logger } = options;
  const rest = createPrefectRestClient({
    apiUrl: config.prefect.apiUrl,
    ...prefectAuth(config.prefect),
    // A file needs no server: a look-up is not waited for longer than this, whatever Prefect's own timeout.
    timeoutMs: Math.min(REPLAY_LOOKUP_TIMEOUT_MS, config.prefect.requestTimeoutMs),
    // Nor is a server that asks to come back later (a rate limit, maintenance) waited for longer at a time.
    lookupMaxWaitMs: REPLAY_LOOKUP_TIMEOUT_MS,
    tls: config.prefect.tls,
    proxy: config.prefect.proxy,
  });
  let stopAsking = false;
  let apiRefused: string | undefined;
  const lookupOptions: OwnerLookupOptions = {
    skip: () => stopAsking,
    onFailure: (failure) => {
      if (stopAsking) return;
      if (failure.noApi === true) {
        // The URL answers, but with no Prefect API (most often the `/api` left out): every look-up would.
        stopAsking = true;
        const advice = apiUrlAdvice(config.sources?.apiUrl ?? 'PREFECT_API_URL');
        logger.warn({ component: 'replay', apiUrl: safeUrl(config.prefect.apiUrl), err: failure.reason }, `no Prefect API there (${advice}): ${WITHOUT_LOOKUPS}`);
        return;
      }
      if (!failure.transport) return;
      // Replaying a file needs no server: once it cannot be reached, stop asking for every subflow.
      stopAsking = true;
      logger.warn({ component: 'replay', apiUrl: safeUrl(config.prefect.apiUrl), err: failure.reason }, `Prefect API unreachable: ${WITHOUT_LOOKUPS}`);
    },
    onAuthError: (err) => {
      if (stopAsking) return;
      // As unreachable: said once, with the setting to fix, and not asked again for every subflow;
      // unlike it, a mistake to fix, which the summary and the exit code say too.
      stopAsking = true;
      apiRefused = err.message;
      logger.warn({ component: 'replay', apiUrl: safeUrl(config.prefect.apiUrl), err: err.message }, `Prefect API refused the credentials: ${WITHOUT_LOOKUPS}`);
    },
  };
  const pipeline = createPipeline({
    config,
    logger,
    clock: 'event',
    backpressure: true,
    nativeSpans: nativeSpanFromRest(rest),
    resolveOwner: createOwnerLookup(rest, lookupOptions),
    resolveFlowParent: createFlowParentLookup(rest, lookupOptions),
    resolveStateHistory: createStateHistoryLookup(rest, lookupOptions),
  });

  let input: Readable;
  let totalBytes: number | undefined;
  if (options.file === '-') {
    input = options.stdin ?? process.stdin;
    // Typed or pasted at a terminal: without a word, a replay waiting for its input looks hung.
    if ((input as Readable & { isTTY?: boolean }).isTTY === true) {
      options.progress?.write('reading Prefect events typed or pasted here, one JSON event a line: Ctrl-D ends the input, Ctrl-C stops\n');
    }
  } else {
    let stat: Stats;
    try {
      stat = statSync(options.file);
    } catch (err) {
      throw new InputError(`cannot read ${options.file}: ${fileErrorText(err)}`, { cause: err });
    }
    if (stat.isDirectory()) throw new InputError(`cannot read ${options.file}: it is a directory (replay reads one file of JSON lines)`);
    if (stat.isFIFO()) {
      // A named pipe (`mkfifo`, or `<(prefect events stream)`) is read as standard input is: a read
      // of the file system's waits for its writer however long, and a stop could not end it.
      input = await openPipe(options.file);
    } else {
      totalBytes = stat.size;
      // Opened here, not on the stream's first read: a file that may not be read (its mode, an ACL)
      // is said in words, as a missing one is, not as a read failure with an errno code.
      let fd: number;
      try {
        fd = openSync(options.file, 'r');
      } catch (err) {
        throw new InputError(`cannot read ${options.file}: ${fileErrorText(err)}`, { cause: err });
      }
      input = createReadStream(options.file, { fd, highWaterMark: READ_CHUNK_BYTES });
    }
  }
  // While reading: the same stats, `/metrics` and OTel metrics as `watch` ("connected" = reading input).
  const startedMs = Date.now();
  let reading = true;
  const stats = (): TracingStats => collectStats(pipeline, { connected: reading, startedMs });
  const statsLog = logger.child({ component: 'stats' });
  const metrics = startMetricsExport(config, stats, pipeline.exportLag, logger);
  const health = config.httpPort === undefined ? undefined : await startHealthServer(config.httpPort, stats, config.httpHost);
  if (health !== undefined) logger.info({ component: 'replay', port: health.port, address: health.address }, 'serving /healthz, /livez and /metrics');
  const statsTimer = config.statsIntervalMs > 0 ? setInterval(() => statsLog.info(statsLogFields(stats()), 'stats'), config.statsIntervalMs).unref() : undefined;
  try {
    const summary = await replayLines(options, pipeline, input, totalBytes, () => (reading = false));
    return apiRefused === undefined ? summary : { ...summary, apiRefused };
  } finally {
    // Every run is ended: a look-up still out (or waiting to ask again) has nothing left to answer, and
    // must not hold the process open until the server's Retry-After.
    rest.close();
    clearInterval(statsTimer);
    await metrics?.shutdown();
    statsLog.info(statsLogFields(stats()), 'stats');
    await health?.close();
  }
}

async function replayLines(options: ReplayOptions, pipeline: Pipeline, input: Readable, totalBytes: number | undefined, done: () => void): Promise<ReplaySummary> {
  const { config } = options;
  let bytesRead = 0;
  let lineCount = 0;
  let blankCount = 0;
  let lastProgress = 0;
  const progress = (final: boolean): void => {
    const p = options.progress;
    if (p === undefined || !p.tty) return;
    const pct = totalBytes ? ` ${Math.min(100, Math.floor((bytesRead / totalBytes) * 100))}%` : '';
    const parts = [`replay${pct}`, plural(lineCount, 'line', GROUPED), plural(pipeline.tracker.counts.spans, 'span', GROUPED), plural(pipeline.tracker.openRuns, 'open run', GROUPED)];
    const text = fitProgress(parts, p.columns?.());
    // The cursor goes back to the start of the line: a log line written next to the same terminal
    // (standard output) then replaces the progress line instead of being appended to it.
    p.write(`\r${text}\x1b[K${final ? '\n' : '\r'}`);
  };

  const { signal } = options;
  // Standard input may have nothing to give for a long time: stop waiting for it too.
  const stopReading = (): void => void input.destroy();
  signal?.addEventListener('abort', stopReading, { once: true });
  /** What the first line with content looks like, once read. */
  let firstShape: LineShape | undefined;
  // A stop message of `prefect events stream`, and the lines it was wrapped onto, until an event's line.
  let stop: { line: number; parts: string[] } | undefined;
  let stopCount = 0;
  const stops: StreamStop[] = [];
  const endStop = (): void => {
    if (stop === undefined) return;
    const said = stop.parts.join(' ');
    const message = excerpt(redactCredentials(said.length > MAX_STOP_SCANNED_CHARS ? said.slice(0, MAX_STOP_SCANNED_CHARS) : said), 300);
    stopCount += 1;
    if (stops.length < CLI_STOPS_SHOWN) stops.push({ line: stop.line, message });
    options.logger.warn({ component: 'replay', line: stop.line, message }, '`prefect events stream` stopped here on an error: events from then until it was started again are not in the input');
    stop = undefined;
  };
  /** A line that starts as an array of events or a page and is longer than a line may be. */
  let tooLargeBatch = false;
  /** The input ended inside its last line (copied while it was written, cut by a full disk). */
  let unterminated = false;
  /** That last line, when it was skipped as JSON cut short. */
  let cutLastLine: number | undefined;
  try {
    const reading = lineBatches(refuseNotUtf8Text(input, options.file), { onChunk: (bytes) => (bytesRead += bytes), maxLineChars: MAX_EVENT_BYTES, onUnterminated: () => (unterminated = true) });
    for await (const lines of reading) {
      if (signal?.aborted === true) break;
      for (const line of lines) {
        lineCount += 1;
        const trimmed = line.trimStart();
        if (stop !== undefined && continuesStop(trimmed, stop.parts.length)) {
          stop.parts.push(trimmed.trimEnd());
          blankCount += 1;
        } else {
          endStop();
          if (isPrefectCliStop(trimmed)) {
            stop = { line: lineCount, parts: [trimmed.trimEnd()] };
            blankCount += 1;
          } else if (trimmed !== '' && !trimmed.startsWith('#') && !isPrefectCliStatus(trimmed)) {
            firstShape ??= shapeOf(trimmed);
            const invalidBefore = pipeline.counters.skipped.invalid_json;
            if (ingestLine(pipeline, trimmed)) tooLargeBatch = true;
            // Begun as JSON and not ended: the event was cut short, not something else than an event.
            if (unterminated && pipeline.counters.skipped.invalid_json > invalidBefore && (trimmed.startsWith('{') || trimmed.startsWith('['))) cutLastLine = lineCount;
          } else {
            blankCount += 1;
          }
        }
        // After every line: one line can finish spans of megabytes (their events' payloads), or many.
        if (pipeline.backpressure()) await waitForCollector(pipeline, () => signal?.aborted === true);
        if ((lineCount & 1023) === 0) {
          const now = Date.now();
          if (now - lastProgress >= PROGRESS_INTERVAL_MS) {
            lastProgress = now;
            progress(false);
          }
        }
      }
    }
  } catch (err) {
    if (err instanceof InputError) throw err;
    if (signal?.aborted !== true) throw new InputError(`reading ${options.file} failed: ${errorText(err)}`, { cause: err });
  } finally {
    signal?.removeEventListener('abort', stopReading);
  }
  endStop();
  const interrupted = signal?.aborted === true;
  await pipeline.finish(interrupted ? 'interrupted' : 'end_of_input');
  progress(true);
  // Stopped by a signal (while reading, or since, while the spans read wait for the collector), the
  // delivery may still take up to the flush timeout: say what it waits for, and how not to.
  const sayDelivering = (): void => {
    const waiting = spansWaiting(pipeline);
    if (waiting > 0 && options.progress?.tty === true) {
      options.progress.write(`interrupted: delivering the ${plural(waiting, 'span', GROUPED)} read (a second Ctrl-C stops at once)\n`);
    }
  };
  if (signal?.aborted === true) sayDelivering();
  else signal?.addEventListener('abort', sayDelivering, { once: true });
  let flushed: FlushResult;
  // Ending the open runs can finish more spans than the buffer holds: they wait their turn, within the flush timeout.
  const deadline = Date.now() + (options.flushTimeoutMs ?? Math.max(30_000, config.traces.timeoutMs * 3));
  // On a terminal, a collector slow to take the spans read (or not there) is said while it is waited for.
  const slowNote = options.progress?.tty !== true ? undefined : setTimeout(() => {
    const waiting = spansWaiting(pipeline);
    if (waiting > 0 && signal?.aborted !== true) {
      const leftS = Math.max(1, Math.round((deadline - Date.now()) / 1000));
      options.progress!.write(`waiting for the collector to take the ${plural(waiting, 'span', GROUPED)} read (at most ${leftS} s more; Ctrl-C stops)\n`);
    }
  }, SLOW_DELIVERY_NOTE_MS);
  slowNote?.unref();
  try {
    await waitForCollector(pipeline, () => Date.now() >= deadline);
    flushed = await pipeline.shutdown(Math.max(0, deadline - Date.now()));
  } finally {
    clearTimeout(slowNote);
    signal?.removeEventListener('abort', sayDelivering);
  }
  done();
  const t = pipeline.traces?.stats;
  const l = pipeline.logs?.stats;
  const c = pipeline.counters;
  return {
    interrupted,
    lines: lineCount,
    blank: blankCount,
    events: c.accepted + c.unrelated + c.duplicates,
    duplicates: c.duplicates,
    unrelated: c.unrelated,
    skipped: Object.fromEntries(Object.entries(c.skipped).filter(([, n]) => n > 0)),
    runs: pipeline.tracker.counts.runsOpened,
    spans: pipeline.tracker.counts.spans,
    incomplete: pipeline.tracker.counts.incomplete,
    spansExported: t?.delivered ?? 0,
    ...(c.unsampled === 0 ? {} : { spansUnsampled: { count: c.unsampled, sampler: samplerAsGiven(config) } }),
    spansDropped: t?.dropped ?? 0,
    spansRejected: t?.rejected ?? 0,
    // The trace buffer's own: `flushed` counts the OTel log records still waiting too.
    spansPending: t === undefined ? 0 : t.queued + t.inFlight,
    ...(t === undefined ? {} : { spansTo: { destination: destinationOf(config.traces), lastError: t.lastError } }),
    ...(l === undefined ? {} : { logRecords: { exported: l.delivered, dropped: l.dropped, rejected: l.rejected, pending: l.queued + l.inFlight, destination: destinationOf(config.logs), lastError: l.lastError } }),
    // Log records lost count as spans lost do (those not delivered are in `flushed`).
    exportOk: flushed.ok && [t, l].every((d) => d === undefined || (d.dropped === 0 && d.rejected === 0)),
    exporter: config.traces.exporter,
    exporterSetting: config.sources?.tracesExporter ?? 'OTEL_TRACES_EXPORTER',
    ...inputHint(options.file, (c.skipped.invalid_json ?? 0) > 0, firstShape, tooLargeBatch),
    ...(stopCount > 0 ? { streamStops: { count: stopCount, first: stops } } : {}),
    ...(cutLastLine === undefined ? {} : { cutLastLine }),
  };
}

/** Spans read and not yet taken by the collector: queued, out in a request, or held until the queue has room. */
function spansWaiting(pipeline: Pipeline): number {
  return pipeline.traces === undefined ? 0 : pipeline.traces.stats.queued + pipeline.traces.stats.inFlight + pipeline.heldSpans;
}

/** Where a signal is exported: its OTLP URL as logs show it (no user info, no query values), or the exporter's name. */
function destinationOf(signal: { readonly exporter: string; readonly url: string }): string {
  return signal.exporter === 'otlp' ? shownUrl(signal.url) : signal.exporter;
}

/**
 * The progress line's parts within a terminal `columns` wide: the last counts left out first, the
 * rest cut as a last resort; short of the last column, where a terminal may wrap.
 */
function fitProgress(parts: string[], columns: number | undefined): string {
  const room = columns !== undefined && Number.isInteger(columns) && columns > 1 ? columns - 1 : Infinity;
  let text = parts.join('  ');
  while (text.length > room && parts.length > 1) {
    parts.pop();
    text = parts.join('  ');
  }
  return text.slice(0, room);
}

/** How long the spans read may wait for the collector, on a terminal, before a line says so. */
const SLOW_DELIVERY_NOTE_MS = 2_000;

/**
 * What an input that is not UTF-8 text starts with: a compressed export, or text saved as UTF-16
 * (Windows PowerShell's `>`); and how to give it to replay as UTF-8 JSON lines.
 */
const NOT_UTF8_TEXT: readonly { readonly magic: readonly number[]; readonly what: string; readonly fix: string }[] = [
  { magic: [0x1f, 0x8b], what: 'gzip-compressed, not JSON lines', fix: 'decompress it first, e.g. gunzip -c' },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], what: 'zstd-compressed, not JSON lines', fix: 'decompress it first, e.g. zstd -dc' },
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], what: 'xz-compressed, not JSON lines', fix: 'decompress it first, e.g. xz -dc' },
  { magic: [0x42, 0x5a, 0x68], what: 'bzip2-compressed, not JSON lines', fix: 'decompress it first, e.g. bzip2 -dc' },
  { magic: [0x50, 0x4b, 0x03, 0x04], what: 'zip-compressed, not JSON lines', fix: 'decompress it first, e.g. unzip -p' },
  { magic: [0xff, 0xfe], what: 'UTF-16 text, not UTF-8', fix: 'convert it first, e.g. iconv -f UTF-16 -t UTF-8' },
  { magic: [0xfe, 0xff], what: 'UTF-16 text, not UTF-8', fix: 'convert it first, e.g. iconv -f UTF-16 -t UTF-8' },
  // Without a byte-order mark: JSON's first character (`{`, `[`) with a NUL beside it, which UTF-8 text never has there.
  ...[0x7b, 0x5b].flatMap((c) => [
    { magic: [c, 0x00], what: 'UTF-16 text (little-endian), not UTF-8', fix: 'convert it first, e.g. iconv -f UTF-16LE -t UTF-8' },
    { magic: [0x00, c], what: 'UTF-16 text (big-endian), not UTF-8', fix: 'convert it first, e.g. iconv -f UTF-16BE -t UTF-8' },
  ]),
];

/**
 * The input's chunks, refused at the first if it is not UTF-8 text: read as lines, its bytes
 * would only be skipped one by one as invalid JSON.
 */
async function* refuseNotUtf8Text(input: AsyncIterable<Buffer | string>, file: string): AsyncGenerator<Buffer | string, void, undefined> {
  let first = true;
  for await (const chunk of input) {
    if (first) {
      first = false;
      if (typeof chunk !== 'string') {
        const format = NOT_UTF8_TEXT.find((f) => chunk.length >= f.magic.length && f.magic.every((b, i) => chunk[i] === b));
        if (format !== undefined) {
          const name = file === '-' ? 'standard input' : file;
          throw new InputError(`${name} is ${format.what}: ${format.fix} ${commandArgument(file)} | prefect-otel replay -`);
        }
      }
    }
    yield chunk;
  }
}

/** The input as a suggested command names it: quoted for the shell when it must be, so that it can be pasted. */
function commandArgument(file: string): string {
  if (file === '-') return 'FILE';
  return /^[\w./@%+=:,-]+$/.test(file) ? file : `'${file.replace(/'/g, "'\\''")}'`;
}

/**
 * What a first line says of the whole input: only `{` or `[` starts JSON written over many lines
 * (an API answer saved pretty-printed, `jq` output without -c), and a line of
 * `prefect events stream --format text` starts that output; either is skipped line by line as
 * invalid JSON.
 */
type LineShape = 'jsonDocument' | 'prefectText' | 'other';

function shapeOf(trimmed: string): LineShape {
  const text = trimmed.trimEnd();
  if (text === '{' || text === '[') return 'jsonDocument';
  return PREFECT_TEXT_FORMAT_LINE.test(text) ? 'prefectText' : 'other';
}

/** The summary's hint on how to give replay an input it skipped as invalid JSON, or one with too long a line. */
function inputHint(file: string, invalidJson: boolean, firstShape: LineShape | undefined, tooLargeBatch: boolean): { hint?: string } {
  if (invalidJson && firstShape === 'jsonDocument') return { hint: jsonLinesHint(file) };
  if (invalidJson && firstShape === 'prefectText') return { hint: TEXT_FORMAT_HINT };
  return tooLargeBatch ? { hint: tooLargeBatchHint(file) } : {};
}

/**
 * What to do with JSON written over many lines: the command is right for a saved page, an array of
 * events, and events one after another (`jq` without -c).
 */
function jsonLinesHint(file: string): string {
  return `input: JSON written over many lines? replay reads one event (or array of events, or /api/events/filter page) a line: rewrite it first, e.g. ${JQ_ONE_EVENT_A_LINE} ${commandArgument(file)} | prefect-otel replay -`;
}

/**
 * A line of `prefect events stream --format text`: the event's `occurred` (Python's `isoformat()`),
 * its name and its resource's id, nothing more (`cli/events.py`).
 */
const PREFECT_TEXT_FORMAT_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)? \S+ \S+$/;

/** What to do with the text output of `prefect events stream`: it has no payload, so no state, to replay. */
const TEXT_FORMAT_HINT =
  'input: the output of `prefect events stream --format text`? its lines hold no event payload (no states, no related runs) and cannot be replayed: save the stream in its default JSON format, e.g. prefect events stream > events.jsonl';

/** The command that writes events, arrays of them and saved pages, however written, one event a line. */
const JQ_ONE_EVENT_A_LINE = `jq -c '.events? // . | if type == "array" then .[] else . end'`;

/**
 * What to do with an array of events (Python's `json.dump` of a list, `jq -s -c`) or a page longer
 * than a line may be: the same command writes it one event a line, each within the bound.
 */
function tooLargeBatchHint(file: string): string {
  return `input: an array of events (or /api/events/filter page) on one line longer than ${MAX_EVENT_BYTES} bytes (2 MiB of UTF-8) is skipped whole: write it one event a line first, e.g. ${JQ_ONE_EVENT_A_LINE} ${commandArgument(file)} | prefect-otel replay -`;
}

/** `{"events"`: how a saved page of `POST /api/events/filter` starts; no event line does. */
const EVENT_PAGE_START = '{"events"';

/**
 * Where one saved page ends and the next begins when they were saved with nothing between them
 * (`curl … >> pages.json`: the API's answers end without a newline). Nowhere else in JSON: inside a
 * string a quote is escaped, and no value follows a `}` without a comma.
 */
const PAGES_JOINED = `}${EVENT_PAGE_START}`;

/**
 * One line, from its first character that is not white space: a byte order mark inside the input
 * (files with one each, put together with `cat`) is white space to `trimStart` but not to
 * `JSON.parse`. The line is an event, or many events at once: a JSON array of them, or a page of
 * `POST /api/events/filter` (`{"events":[…],"total":…,"next_page":…}`) as it is saved from the API.
 * Only a line that starts like those is parsed here; an event line costs one character compare more.
 * True for such a line longer than the bound (cut by `lineBatches`): skipped whole as too large.
 */
function ingestLine(pipeline: Pipeline, trimmed: string): boolean {
  const first = trimmed.charCodeAt(0);
  if (first !== 0x5b && (first !== 0x7b || !trimmed.startsWith(EVENT_PAGE_START))) {
    pipeline.ingest(trimmed);
    return false;
  }
  if (overEventBytes(trimmed)) {
    pipeline.ingest(trimmed); // skipped, counted and logged there
    return true;
  }
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    if (first === 0x7b && trimmed.includes(PAGES_JOINED)) {
      // Pages saved one after another with nothing between them: each is read (or skipped) on its own.
      const pages = trimmed.split(PAGES_JOINED);
      for (let i = 0; i < pages.length; i++) ingestLine(pipeline, `${i === 0 ? '' : EVENT_PAGE_START}${pages[i]}${i === pages.length - 1 ? '' : '}'}`);
    } else {
      pipeline.ingest(trimmed); // skipped, counted and logged there
    }
    return false;
  }
  // An array of events (`[]`, as `jq -c .events` writes an empty page, holds none), or a page of them.
  const events = Array.isArray(value) ? (value.length === 0 || isRecord(value[0]) ? value : undefined) : isRecord(value) && Array.isArray(value.events) ? value.events : undefined;
  if (events === undefined) pipeline.ingest(trimmed);
  else for (const event of events as unknown[]) pipeline.ingest(event);
  return false;
}

/**
 * Backpressure: a file can be read far faster than a collector accepts spans and log records; never
 * overflow a buffer (by items or by bytes). Sends until the held spans are in the trace buffer and
 * both buffers are below half their bounds, or until `stop`.
 */
async function waitForCollector(pipeline: Pipeline, stop: () => boolean): Promise<void> {
  while (pipeline.backpressure() && !stop()) {
    const r = await pipeline.flush(1_000);
    if (!r.ok && (pipeline.traces?.stats.failing === true || pipeline.logs?.stats.failing === true)) await new Promise((res) => setTimeout(res, 200));
  }
}

/**
 * Lines were read and not one was an event: the input is likely not Prefect events (the wrong file,
 * a log). Said in the summary; the exit code stays that of the export. An empty input is not this.
 */
export function noEventsRead(s: ReplaySummary): boolean {
  return s.events === 0 && Object.keys(s.skipped).length > 0;
}

/** The summary's line for the stops of `prefect events stream` in the input. */
function streamStopsText(stops: NonNullable<ReplaySummary['streamStops']>): string {
  const where = stops.first.map((x) => `line ${x.line}: ${escapeControls(x.message)}`).join('; ');
  const more = stops.count > stops.first.length ? `; ${stops.count - stops.first.length} more` : '';
  const times = stops.count === 1 ? 'once' : `${stops.count} times`;
  return `gaps: \`prefect events stream\` stopped on an error ${times} (${where}${more}); events from then until it was started again are not in the input`;
}

export function formatReplaySummary(s: ReplaySummary): string {
  const skipped = Object.entries(s.skipped);
  const skippedText = skipped.length === 0 ? '0' : `${skipped.reduce((n, [, v]) => n + v, 0)} (${skipped.map(([k, v]) => `${k}: ${v}`).join(', ')})`;
  // What the collector refused or did not take is said with where it was sent and its last answer, as
  // the demo says it; so are items dropped while it failed (not those a small buffer bound dropped).
  const fate = (exported: number, dropped: number, rejected: number, pending: number, to?: { readonly destination?: string; readonly lastError?: string | undefined }): string => {
    const lost = to?.destination !== undefined && (rejected + pending > 0 || (dropped > 0 && to.lastError !== undefined));
    const why = to?.lastError === undefined ? '' : `: ${escapeControls(to.lastError.trim())}`;
    return `${exported} exported${dropped ? `, ${dropped} dropped` : ''}${rejected ? `, ${rejected} rejected` : ''}${pending ? `, ${pending} not delivered` : ''}${lost ? ` (to ${to.destination}${why})` : ''}`;
  };
  const exported = s.exporter === 'none' ? `not exported (${s.exporterSetting ?? 'OTEL_TRACES_EXPORTER'}=none)` : fate(s.spansExported, s.spansDropped, s.spansRejected, s.spansPending, s.spansTo);
  const logs = s.logRecords;
  return [
    `events read: ${s.events} (${plural(s.lines, 'line')}${s.blank ? `, ${s.blank} blank or comment` : ''}, ${plural(s.duplicates, 'duplicate')}, ${s.unrelated} not about a run)`,
    `skipped: ${skippedText}`,
    `runs: ${s.runs}  spans: ${s.spans} (${s.incomplete} incomplete)`,
    `spans: ${exported}${s.spansUnsampled === undefined ? '' : `; ${s.spansUnsampled.count} not sampled (${s.spansUnsampled.sampler})`}`,
    ...(logs === undefined ? [] : [`log records: ${fate(logs.exported, logs.dropped, logs.rejected, logs.pending, logs)}`]),
    s.exportOk ? 'export: ok' : 'export: FAILED',
    ...(noEventsRead(s) ? ['input: no line was a Prefect event'] : []),
    ...(s.hint !== undefined ? [s.hint] : []),
    ...(s.cutLastLine === undefined ? [] : [`input: the last line (${s.cutLastLine}) ends partway through an event: skipped (was the file copied while it was still written?)`]),
    ...(s.streamStops === undefined ? [] : [streamStopsText(s.streamStops)]),
    ...(s.apiRefused === undefined ? [] : [`run look-ups: ${escapeControls(s.apiRefused)}; subflows whose parent is not in the file became roots of their own traces, and runs first seen leaving a terminal state were numbered as their first rerun`]),
    ...(s.interrupted ? ['interrupted: the rest of the input was not read; runs still open were ended as incomplete'] : []),
  ].join('\n');
}
