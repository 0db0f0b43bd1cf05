/**
 * The progress line of `replay` on a terminal. Log lines go to standard output, often the same
 * terminal: the progress line leaves the cursor at the start of its line, so a log line written
 * next replaces it instead of being appended to it (`…open runs{"level":30,…}`).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../src/config.js';
import { createLogger } from '../src/log/logger.js';
import { runReplay } from '../src/replay.js';

test('replay on a terminal: each progress line returns the cursor to the start of its line, the last one ends the line', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'prefect-otel-progress-')), 'events.jsonl');
  // Comment lines count as lines read: a progress line at line 1,024, then the final one.
  writeFileSync(file, '# a comment\n'.repeat(1_500));
  const writes: string[] = [];
  const summary = await runReplay({
    config: resolveConfig({ tracesExporter: 'none', apiUrl: 'http://127.0.0.1:9/api' }, {}),
    logger: createLogger({ level: 'silent', format: 'json' }),
    file,
    progress: { tty: true, write: (text) => void writes.push(text) },
  });
  assert.equal(summary.lines, 1_500);
  assert.deepEqual(writes, [
    '\rreplay 100%  1,024 lines  0 spans  0 open runs\x1b[K\r',
    '\rreplay 100%  1,500 lines  0 spans  0 open runs\x1b[K\n',
  ]);
});
