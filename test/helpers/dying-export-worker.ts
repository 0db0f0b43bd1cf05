/**
 * An export thread for tests of the sender's side: it answers every batch as sent, except that a
 * batch holding a span named `die` ends the thread on the spot, with exit code 7, and one holding a
 * span named `hang` is never answered (the thread goes on answering the others).
 */
import { parentPort } from 'node:worker_threads';
import type { FromExportThread, ToExportThread } from '../../src/export/export-thread.js';

// The test runner loads every file under dist/test/ as a test file; there it has nothing to do.
parentPort?.postMessage({ type: 'ready' } satisfies FromExportThread);
parentPort?.on('message', (message: ToExportThread) => {
  const port = parentPort!;
  if (message.type === 'shutdown') {
    port.postMessage({ type: 'closed' } satisfies FromExportThread);
    return;
  }
  const spans = JSON.parse(message.spans) as { name: string }[];
  if (spans.some((s) => s.name === 'die')) process.exit(7);
  if (spans.some((s) => s.name === 'hang')) return;
  port.postMessage({ type: 'result', id: message.id, result: { ok: true } } satisfies FromExportThread);
});
