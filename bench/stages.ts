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
 *   6. + export hand-off               every finished span as JSON text, 512 at a time: the pipeline's
 *                                      thread's share of the export (the export thread does the rest)
 *
 * Beside them, the export thread's work on the same spans: the batches' text parsed back, turned
 * into the SDK's spans and encoded by its protobuf serializer, per event of the input.
 *
 * What is left out: websocket receive, HTTP, the periodic state save and REST lookups.
 * Prints one JSON line: { events, rounds, stages: [{ name, usPerEvent }], exportThreadUs } (best of the rounds).
 */
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resolveConfig } from '../src/config.js';
import { createResource, readableSpansFromJson } from '../src/export/spans.js';
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
/** Every batch the export thread was handed in the last pass with `handOff`, as text. */
let handedOver: string[] = [];

async function model(level: 'warn' | 'info', handOff: boolean): Promise<number> {
  const logger = createLogger({ level, format: 'json', destination: lineDestination('/dev/null') });
  const batch: SpanRecord[] = [];
  handedOver = [];
  const flush = (): void => {
    handedOver.push(JSON.stringify(batch));
    batch.length = 0;
  };
  const onSpan = handOff
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
      if (handOff && batch.length > 0) flush();
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
  ['+ export hand-off', () => model('info', true)],
];

/** The export thread's work on the batches of the last hand-off pass; µs per input event. */
function exportThread(): number {
  gc!();
  const t0 = performance.now();
  for (const text of handedOver) {
    sink += ProtobufTraceSerializer.serializeRequest(readableSpansFromJson(text, resource))?.length ?? 0;
  }
  handedOver = [];
  return ((performance.now() - t0) * 1000) / lines.length;
}

const bestUs = stages.map(() => Infinity);
let exportThreadUs = Infinity;
for (let round = 0; round < rounds; round++) {
  for (const [i, [, run]] of stages.entries()) bestUs[i] = Math.min(bestUs[i]!, await run());
  exportThreadUs = Math.min(exportThreadUs, exportThread());
}
process.stdout.write(`${JSON.stringify({ events: lines.length, rounds, sink, stages: stages.map(([name], i) => ({ name, usPerEvent: bestUs[i] })), exportThreadUs })}\n`);
