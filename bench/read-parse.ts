/**
 * The replay ceiling (child process): read a JSON-lines file line by line and `JSON.parse` each line.
 * Lines are split as replay splits them (`lineBatches`), from the stream's default 64 KB chunks:
 * the fastest chunk size for reading alone (replay reads 1 MB at a time, which suits it better
 * with the export thread and the garbage collector on the other core). Prints `{"lines":…,"ms":…,"cpuMs":…}`.
 */
import { createReadStream } from 'node:fs';
import { lineBatches } from '../src/source/lines.js';
import { cpuMsSince } from './cpu.js';

const started = performance.now();
const cpu = process.cpuUsage();
let lines = 0;
let sink = 0;
for await (const batch of lineBatches(createReadStream(process.argv[2]!))) {
  for (const line of batch) {
    if (line === '') continue;
    const e = JSON.parse(line) as { id?: string };
    sink += e.id?.length ?? 0;
    lines += 1;
  }
}
process.stdout.write(`${JSON.stringify({ lines, ms: performance.now() - started, cpuMs: cpuMsSince(cpu), sink })}\n`);
