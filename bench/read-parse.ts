/**
 * The replay ceiling (child process): read a JSON-lines file line by line and `JSON.parse` each line.
 * Prints `{"lines":…,"ms":…,"cpuMs":…}`.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { cpuMsSince } from './cpu.js';

const started = performance.now();
const cpu = process.cpuUsage();
let lines = 0;
let sink = 0;
for await (const line of createInterface({ input: createReadStream(process.argv[2]!), crlfDelay: Infinity })) {
  if (line === '') continue;
  const e = JSON.parse(line) as { id?: string };
  sink += e.id?.length ?? 0;
  lines += 1;
}
process.stdout.write(`${JSON.stringify({ lines, ms: performance.now() - started, cpuMs: cpuMsSince(cpu), sink })}\n`);
