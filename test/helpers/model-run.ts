import { resolveConfig } from '../../src/config.js';
import { createLogger } from '../../src/log/logger.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline } from '../../src/pipeline.js';

/**
 * Events (as Prefect sends them) through the pipeline on the event clock, to the end of input: every
 * span it built and every log record it wrote (debug and up), with the pipeline for its counters.
 * A string is a frame's text, taken as it is (malformed input); anything else is written as JSON.
 * `resolveOwner` and `resolveFlowParent` answer the lookups of where a subflow hangs, as watch and
 * replay do with the Prefect API; without `resolveFlowParent` a flow run not seen yet is a root.
 */
export async function runModel(
  events: readonly unknown[],
  overrides: Record<string, unknown> = {},
  resolveOwner?: (taskRunId: string) => Promise<string | null>,
  resolveFlowParent?: (flowRunId: string) => Promise<string | null | undefined>,
) {
  const config = resolveConfig({ tracesExporter: 'none', uiUrl: 'http://prefect.local:4200', ...overrides }, {});
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', format: 'json', destination: { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) } });
  const spans: SpanRecord[] = [];
  const pipeline = createPipeline({ config, logger, clock: 'event', delivery: null, onSpan: (s) => spans.push(s), resolveOwner, resolveFlowParent });
  for (const e of events) pipeline.ingest(typeof e === 'string' ? e : JSON.stringify(e));
  await pipeline.finish('end_of_input');
  return { spans, lines, pipeline };
}
