/**
 * Memory per open run (child process, `--expose-gc`): the real pipeline (model, dedupe, run logs;
 * no exporter) holding N open flow runs, each opened by real wire-format events with fresh ids.
 * Prints heap and RSS growth per run after one state event and after three, so that the cost of a
 * run without its span events can be told from the cost of each span event.
 */
import { pino } from 'pino';
import { resolveConfig } from '../src/config.js';
import { createPipeline } from '../src/pipeline.js';
import { readLines } from './workload.js';

const [file, countText] = process.argv.slice(2);
const runs = Number(countText);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

const config = resolveConfig({}, { OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_MAX_OPEN_RUNS: String(runs * 2), PREFECT_OTEL_DEDUPE_MAX_IDS: String(runs * 4) });
const logger = pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: true }));
const pipeline = createPipeline({ config, logger, clock: 'wall', delivery: null });

// One real flow run's first three state events (Scheduled, Pending, Running), as templates.
const lines = await readLines(file!, 5_000);
const byRun = new Map<string, string[]>();
for (const line of lines) {
  const e = JSON.parse(line) as { event: string; resource: Record<string, string> };
  if (!/^prefect\.flow-run\.(Scheduled|Pending|Running)$/.test(e.event)) continue;
  const id = e.resource['prefect.resource.id']!.slice('prefect.flow-run.'.length);
  byRun.set(id, [...(byRun.get(id) ?? []), line]);
}
const [templateRun, template] = [...byRun].find(([, ls]) => ls.length === 3)!;

const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');
const fresh = (run: number, line: string, k: number): string => {
  const e = JSON.parse(line.replaceAll(templateRun, `0198c7d2-0000-7000-8000-${hex(run, 12)}`)) as Record<string, unknown>;
  e.id = `0198c7d3-${hex(k, 4)}-7000-8000-${hex(run, 12)}`;
  return JSON.stringify(e);
};

const measure = (): { heap: number; rss: number } => {
  gc();
  gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
};

const base = measure();
for (let r = 0; r < runs; r++) pipeline.ingest(fresh(r, template[0]!, 0));
const one = measure();
for (let r = 0; r < runs; r++) {
  pipeline.ingest(fresh(r, template[1]!, 1));
  pipeline.ingest(fresh(r, template[2]!, 2));
}
const three = measure();
if (pipeline.tracker.openRuns !== runs) throw new Error(`expected ${runs} open runs, have ${pipeline.tracker.openRuns}`);
process.stdout.write(
  `${JSON.stringify({
    runs,
    heapPerRun1: (one.heap - base.heap) / runs,
    rssPerRun1: (one.rss - base.rss) / runs,
    heapPerRun3: (three.heap - base.heap) / runs,
    rssPerRun3: (three.rss - base.rss) / runs,
  })}\n`,
);
