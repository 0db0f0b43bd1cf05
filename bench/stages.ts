/**
 * Where the time goes (child process, `--expose-gc`): the same events, held in memory, taken
 * through the pipeline one stage further at a time, in one process, so that the cost of each stage
 * is the difference between two passes. Every pass yields to the event loop as the pipeline does
 * between frames; the garbage a pass leaves is collected in its own time, not the next pass's.
 *
 *   1. JSON.parse                      what the ceilings do
 *   2. + checks                        parse and validate the event (SPEC §3)
 *   3. + classify                      which runs it names, which state it carries
 *   4. + run model                     dedupe, the run model, span records; no log lines
 *   5. + STLOGGING                     one line per transition, through the CLI's logger and destination (to /dev/null)
 *   6. + OTLP protobuf                 every finished span encoded by the SDK's serializer, 512 at a time
 *
 * What is left out: websocket receive, HTTP, the periodic state save and REST lookups.
 * Prints one JSON line: { events, rounds, stages: [{ name, usPerEvent }] } (best of the rounds).
 */
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resolveConfig } from '../src/config.js';
import { createResource, toReadableSpan } from '../src/export/spans.js';
import { createLogger, lineDestination } from '../src/log/logger.js';
import { classify } from '../src/model/classify.js';
import { parseEventText } from '../src/model/event.js';
import type { SpanRecord } from '../src/model/span-record.js';
import { createPipeline } from '../src/pipeline.js';
import { readLines } from './workload.js';

const [file, countText, roundsText] = process.argv.slice(2);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
const lines = await readLines(file!, Number(countText));
const rounds = Number(roundsText ?? 3);

const config = resolveConfig({}, { OTEL_TRACES_EXPORTER: 'none' });
const resource = createResource(config);
const BATCH = 512;
const YIELD_EVERY = 1000;
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Run `each` over every line, yielding every YIELD_EVERY lines; µs per line. */
async function pass(each: (line: string) => void, end?: () => Promise<void>): Promise<number> {
  gc!();
  const t0 = performance.now();
  for (let i = 0; i < lines.length; i++) {
    each(lines[i]!);
    if (i % YIELD_EVERY === YIELD_EVERY - 1) await turn();
  }
  await end?.();
  return ((performance.now() - t0) * 1000) / lines.length;
}

let sink = 0;
async function model(level: 'warn' | 'info', encode: boolean): Promise<number> {
  const logger = createLogger({ level, format: 'json', destination: lineDestination('/dev/null') });
  const batch: SpanRecord[] = [];
  const flush = (): void => {
    const bytes = ProtobufTraceSerializer.serializeRequest(batch.map((r) => toReadableSpan(r, resource)));
    sink += bytes?.length ?? 0;
    batch.length = 0;
  };
  const onSpan = encode
    ? (span: SpanRecord): void => {
        batch.push(span);
        if (batch.length >= BATCH) flush();
      }
    : undefined;
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan });
  return pass(
    (line) => pipeline.ingest(line),
    async () => {
      await pipeline.finish('end of input', 1000);
      if (encode && batch.length > 0) flush();
    },
  );
}

const stages: [string, () => Promise<number>][] = [
  ['JSON.parse', () => pass((line) => void (sink += (JSON.parse(line) as { id?: string }).id?.length ?? 0))],
  ['+ checks', () => pass((line) => void (sink += parseEventText(line).ok ? 1 : 0))],
  ['+ classify', () => pass((line) => {
    const r = parseEventText(line);
    if (r.ok) sink += classify(r.event).kind.length;
  })],
  ['+ run model', () => model('warn', false)],
  ['+ STLOGGING', () => model('info', false)],
  ['+ OTLP protobuf', () => model('info', true)],
];

const bestUs = stages.map(() => Infinity);
for (let round = 0; round < rounds; round++) {
  for (const [i, [, run]] of stages.entries()) bestUs[i] = Math.min(bestUs[i]!, await run());
}
process.stdout.write(`${JSON.stringify({ events: lines.length, rounds, sink, stages: stages.map(([name], i) => ({ name, usPerEvent: bestUs[i] })) })}\n`);
