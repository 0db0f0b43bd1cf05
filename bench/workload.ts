/**
 * Benchmark input: Prefect events in the wire format, as JSON lines, generated once and cached under
 * `bench/.data/`. The realistic mix of the demo (deployment runs, retries, a subflow, a
 * run_deployment child, custom events, failures, crashes, cancellations), widened to flows of
 * 10–50 task runs.
 */
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { generateDemoWorkload } from '../src/source/demo-workload.js';

export const DATA_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', '.data');
/** Flows generated per chunk: one chunk is a few MB of events in memory at a time. */
const FLOWS_PER_CHUNK = 100;
const MAP_WIDTH: readonly [number, number] = [8, 40];
/** Chunks follow each other in time, a day apart, so no two chunks' runs overlap. */
const CHUNK_GAP_MS = 24 * 3600_000;
const START_MS = Date.UTC(2026, 0, 5, 0, 0, 0);

export interface WorkloadFile {
  readonly path: string;
  readonly events: number;
  readonly bytes: number;
}

/**
 * The cached file of at least `events` events, generating it when missing. Whole chunks only: every
 * run in the file ends, so a live run over it ends too.
 */
export async function ensureWorkload(events: number, progress?: (text: string) => void): Promise<WorkloadFile> {
  mkdirSync(DATA_DIR, { recursive: true });
  const path = join(DATA_DIR, `events-${events}.jsonl`);
  if (existsSync(path)) return { path, events: await countLines(path), bytes: statSync(path).size };
  const tmp = `${path}.tmp`;
  const out = createWriteStream(tmp);
  let written = 0;
  for (let chunk = 0; written < events; chunk++) {
    const w = generateDemoWorkload({ seed: 1000 + chunk, flows: FLOWS_PER_CHUNK, mapWidth: MAP_WIDTH, startMs: START_MS + chunk * CHUNK_GAP_MS });
    let text = '';
    for (const e of w.events) text += `${JSON.stringify(e)}\n`;
    written += w.events.length;
    if (!out.write(text)) await new Promise<void>((r) => out.once('drain', () => r()));
    progress?.(`generating ${path}: ${written.toLocaleString('en-US')} / ${events.toLocaleString('en-US')} events`);
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  renameSync(tmp, path);
  return { path, events: written, bytes: statSync(path).size };
}

async function countLines(path: string): Promise<number> {
  let n = 0;
  for await (const line of createInterface({ input: createReadStream(path), crlfDelay: Infinity })) if (line !== '') n += 1;
  return n;
}

/** The first `limit` lines of a workload file. */
export async function readLines(path: string, limit = Infinity): Promise<string[]> {
  const lines: string[] = [];
  const rl = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  for await (const line of rl) {
    if (line === '') continue;
    lines.push(line);
    if (lines.length >= limit) break;
  }
  rl.close();
  return lines;
}
