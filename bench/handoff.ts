/**
 * What it costs to hand events to a worker thread (child process, `--expose-gc`): the question any
 * design that spreads the pipeline over both cores has to answer first. The same events, held in
 * memory, are posted to a worker that only counts them, four ways: as text one by one, as text in
 * batches, as parsed objects one by one, as parsed objects in batches. For each, the main thread's
 * time per event (what the thread that reads the websocket would pay) and the whole process's CPU
 * time per event (both threads, the structured clone on both sides, the garbage collector); with
 * `JSON.parse` of the same text for comparison.
 *
 * Prints one JSON line: { events, rounds, parseUs, ways: [{ name, mainUs, cpuUs }] } (best of the rounds).
 */
import { Worker } from 'node:worker_threads';
import { cpuMsSince } from './cpu.js';
import { readLines } from './workload.js';

const [file, countText, roundsText] = process.argv.slice(2);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
const lines = await readLines(file!, Number(countText));
const objects = lines.map((l) => JSON.parse(l) as unknown);
const rounds = Number(roundsText ?? 3);
const BATCH = 256;

// The worker counts what it is given and answers `null` once it has `expected` events.
const worker = new Worker(
  `const { parentPort } = require('node:worker_threads');
  let expected = 0, seen = 0;
  parentPort.on('message', (m) => {
    if (typeof m === 'number') { expected = m; seen = 0; parentPort.postMessage(null); return; }
    seen += Array.isArray(m) ? m.length : 1;
    if (seen === expected) parentPort.postMessage(null);
  });`,
  { eval: true },
);
const answer = (): Promise<unknown> => new Promise((resolve) => worker.once('message', resolve));

async function post(items: readonly unknown[], batch: number): Promise<{ mainUs: number; cpuUs: number }> {
  worker.postMessage(items.length);
  await answer();
  gc!();
  const done = answer();
  const cpu = process.cpuUsage();
  const t = performance.now();
  if (batch === 1) for (const item of items) worker.postMessage(item);
  else for (let i = 0; i < items.length; i += batch) worker.postMessage(items.slice(i, i + batch));
  const mainMs = performance.now() - t;
  await done;
  return { mainUs: (mainMs * 1000) / items.length, cpuUs: (cpuMsSince(cpu) * 1000) / items.length };
}

const ways = [
  { name: 'text, one by one', items: lines, batch: 1 },
  { name: `text, ${BATCH} at a time`, items: lines, batch: BATCH },
  { name: 'parsed objects, one by one', items: objects, batch: 1 },
  { name: `parsed objects, ${BATCH} at a time`, items: objects, batch: BATCH },
];
const best = ways.map((w) => ({ name: w.name, mainUs: Infinity, cpuUs: Infinity }));
let parseUs = Infinity;
let sink = 0;
for (let r = 0; r < rounds; r++) {
  gc();
  const t = performance.now();
  for (const line of lines) sink += (JSON.parse(line) as { id: string }).id.length;
  parseUs = Math.min(parseUs, ((performance.now() - t) * 1000) / lines.length);
  for (let i = 0; i < ways.length; i++) {
    const m = await post(ways[i]!.items, ways[i]!.batch);
    best[i]!.mainUs = Math.min(best[i]!.mainUs, m.mainUs);
    best[i]!.cpuUs = Math.min(best[i]!.cpuUs, m.cpuUs);
  }
}
await worker.terminate();
process.stdout.write(`${JSON.stringify({ events: lines.length, rounds, parseUs, ways: best, sink })}\n`);
