/**
 * The replay ceiling (child process): read a JSON-lines file line by line and `JSON.parse` each line.
 * The file is read and its lines split as replay reads and splits them (`lineBatches`, 1 MB reads,
 * the size this process is fastest at too). Prints `{"lines":…,"ms":…,"cpuMs":…}`.
 */
import { createReadStream } from 'node:fs';
import { lineBatches, READ_CHUNK_BYTES } from '../src/source/lines.js';
import { cpuMsSince } from './cpu.js';

const started = performance.now();
const cpu = process.cpuUsage();
let lines = 0;
let sink = 0;
for await (const batch of lineBatches(createReadStream(process.argv[2]!, { highWaterMark: READ_CHUNK_BYTES }))) {
  for (const line of batch) {
    if (line === '') continue;
    const e = JSON.parse(line) as { id?: string };
    sink += e.id?.length ?? 0;
    lines += 1;
  }
}
process.stdout.write(`${JSON.stringify({ lines, ms: performance.now() - started, cpuMs: cpuMsSince(cpu), sink })}\n`);
