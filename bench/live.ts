/**
 * The live pipeline (child process): `startPrefectTracing`, exactly what `prefect-otel watch` runs,
 * against the benchmark server, exporting OTLP/HTTP to the benchmark's receiver. Configured by the
 * environment like the CLI. Prints `{"ms":…,"spans":…,…}` once every frame is read and every span
 * is delivered: from the first frame to the last span accepted by the receiver; `cpuMs` is the
 * process's CPU time (every thread: the garbage collector's helpers too) over the same span of time.
 */
import { resolveConfig } from '../src/config.js';
import { startPrefectTracing } from '../src/index.js';
import { createLogger, lineDestination } from '../src/log/logger.js';
import { cpuMsSince } from './cpu.js';

const expected = Number(process.argv[2]);
// Log lines (one STLOGGING line per transition) go to a file, buffered exactly as the CLI buffers
// stdout (a deployment's log file); stdout carries the result.
const config = resolveConfig({});
const logger = createLogger({ level: config.log.level, format: 'json', destination: lineDestination(process.env.BENCH_LOG_FILE ?? '/dev/null') });
const handle = startPrefectTracing({ logger });
let first: number | undefined;
let cpu = process.cpuUsage();
handle.on('status', (s) => {
  if (s === 'connected' && first === undefined) {
    first = performance.now();
    cpu = process.cpuUsage();
  }
});
handle.on('error', (err) => process.stderr.write(`${err.message}\n`));

// Soak: a memory sample every BENCH_SAMPLE_MS; with --expose-gc also the heap that survives a full
// collection (what the process really holds, as opposed to garbage not yet collected).
const sampleMs = Number(process.env.BENCH_SAMPLE_MS ?? 0);
const gc = (globalThis as { gc?: () => void }).gc;
if (sampleMs > 0) {
  const t0 = performance.now();
  setInterval(() => {
    const s = handle.stats();
    const m = process.memoryUsage();
    gc?.();
    const retainedMb = gc === undefined ? undefined : process.memoryUsage().heapUsed / 2 ** 20;
    process.stdout.write(`${JSON.stringify({ sample: true, s: (performance.now() - t0) / 1000, rssMb: m.rss / 2 ** 20, heapMb: m.heapUsed / 2 ** 20, retainedMb, open: s.runs.open, frames: s.source.frames, exported: s.spans.exported })}\n`);
  }, sampleMs).unref();
}

// Every 20 ms: the stats read /proc for memory, which costs the pipeline under test if polled much more often.
const poll = setInterval(() => {
  const s = handle.stats();
  if (first === undefined || s.source.frames < expected) return;
  if (s.runs.open > 0 || s.runs.pendingLookups > 0 || s.spans.buffered > 0 || s.spans.exported + s.spans.dropped + s.spans.rejected < s.spans.finished) return;
  const ms = performance.now() - first;
  clearInterval(poll);
  const mem = process.memoryUsage();
  process.stdout.write(`${JSON.stringify({ ms, cpuMs: cpuMsSince(cpu), frames: s.source.frames, spans: s.spans.exported, finished: s.spans.finished, dropped: s.spans.dropped, rejected: s.spans.rejected, skipped: s.events.skipped, rssMb: mem.rss / 2 ** 20 })}\n`);
  void handle.shutdown(5_000).then(() => process.exit(0));
}, 20);
