/**
 * The progress line of `replay` on a terminal. Log lines go to standard output, often the same
 * terminal: the progress line leaves the cursor at the start of its line, so a log line written
 * next replaces it instead of being appended to it (`…open runs{"level":30,…}`).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { resolveConfig, type PrefectTracingOptions } from '../src/config.js';
import { createLogger } from '../src/log/logger.js';
import { formatReplaySummary, runReplay } from '../src/replay.js';
import { startOtlpReceiver, type OtlpReceiver } from './helpers/otlp-receiver.js';
import { flowRunStateEvent, taskRunStateEvent } from './helpers/prefect-events.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const fr = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const tr = '0198c7d2-6000-7abc-8def-000000000001';
const t0 = Date.UTC(2026, 10, 20, 9, 0, 0);

/** A collector that holds every export until the test ends. */
async function heldCollector(t: TestContext): Promise<OtlpReceiver> {
  const receiver = await startOtlpReceiver();
  const release = receiver.hold();
  t.after(async () => {
    release();
    await receiver.close();
  });
  return receiver;
}

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

test('replay on a narrow terminal: the progress line keeps within its width (the counts that do not fit are left out), so that it is rewritten in place, not wrapped onto new lines', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'prefect-otel-progress-narrow-')), 'events.jsonl');
  writeFileSync(file, '# a comment\n'.repeat(1_500));
  const run = async (columns: number | undefined): Promise<string[]> => {
    const writes: string[] = [];
    await runReplay({
      config: resolveConfig({ tracesExporter: 'none', apiUrl: 'http://127.0.0.1:9/api' }, {}),
      logger: createLogger({ level: 'silent', format: 'json' }),
      file,
      progress: { tty: true, columns: () => columns, write: (text) => void writes.push(text) },
    });
    return writes;
  };
  assert.deepEqual(await run(30), [
    '\rreplay 100%  1,024 lines\x1b[K\r',
    '\rreplay 100%  1,500 lines\x1b[K\n',
  ]);
  // Narrower than the first count: cut, and still one line.
  assert.deepEqual(await run(8), [
    '\rreplay \x1b[K\r',
    '\rreplay \x1b[K\n',
  ]);
  // A terminal that reports no width: the whole line.
  assert.deepEqual(await run(undefined), [
    '\rreplay 100%  1,024 lines  0 spans  0 open runs\x1b[K\r',
    '\rreplay 100%  1,500 lines  0 spans  0 open runs\x1b[K\n',
  ]);
});

/**
 * A replay of `lines` on a terminal, to a collector that holds its answers, whose Ctrl-C comes with
 * the progress write `signalAt` picks: its summary, and everything it wrote to the terminal. The
 * spans read wait `flushTimeoutMs` for the collector.
 */
async function replayStopped(collectorUrl: string, lines: readonly string[], signalAt: (text: string) => boolean, flushTimeoutMs = 500, options: PrefectTracingOptions = {}) {
  const file = join(mkdtempSync(join(tmpdir(), 'prefect-otel-interrupted-')), 'events.jsonl');
  writeFileSync(file, lines.join('\n'));
  const stop = new AbortController();
  const writes: string[] = [];
  const summary = await runReplay({
    config: resolveConfig({ apiUrl: 'http://127.0.0.1:9/api', otlpEndpoint: collectorUrl, otlpTimeoutMs: 2_000, ...options }, {}),
    logger: createLogger({ level: 'silent', format: 'json' }),
    file,
    progress: { tty: true, write: (text) => void (writes.push(text), signalAt(text) && stop.abort()) },
    signal: stop.signal,
    flushTimeoutMs,
  });
  return { summary, writes };
}

test('replay on a terminal stopped by a signal: once the progress line ends, a line says how many spans it still delivers and that a second Ctrl-C stops at once', async (t) => {
  const receiver = await heldCollector(t);
  const events = [
    flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 }),
    taskRunStateEvent({ taskRunId: tr, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: fr, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 + 1_000 }),
  ];
  // The signal comes with the first progress line (at line 1,024): the two runs read so far are ended as incomplete.
  const { summary, writes } = await replayStopped(receiver.url, [...events.map((e) => JSON.stringify(e)), ...Array<string>(1_500).fill('# a comment')], () => true);
  assert.deepEqual(
    { interrupted: summary.interrupted, spans: summary.spans, incomplete: summary.incomplete, writes },
    {
      interrupted: true,
      spans: 2,
      incomplete: 2,
      writes: [
        '\rreplay 100%  1,024 lines  0 spans  2 open runs\x1b[K\r',
        // The lines of the batch already read are taken in (the file is one batch here).
        '\rreplay 100%  1,501 lines  2 spans  0 open runs\x1b[K\n',
        'interrupted: delivering the 2 spans read (a second Ctrl-C stops at once)\n',
      ],
    },
  );
});

test('replay on a terminal stopped by a signal after the whole file was read, while its spans wait for the collector: the same line says so at once', async (t) => {
  const receiver = await heldCollector(t);
  const events = [
    flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 }),
    taskRunStateEvent({ taskRunId: tr, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: fr, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 + 1_000 }),
    taskRunStateEvent({ taskRunId: tr, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: fr, ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: t0 + 2_000 }),
    flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: t0 + 3_000 }),
  ];
  // The signal comes once the last progress line is written: the file was read to its end.
  const { summary, writes } = await replayStopped(receiver.url, events.map((e) => JSON.stringify(e)), (text) => text.endsWith('\n'));
  assert.deepEqual(
    { interrupted: summary.interrupted, spans: summary.spans, incomplete: summary.incomplete, writes },
    {
      interrupted: false,
      spans: 2,
      incomplete: 0,
      writes: [
        '\rreplay 100%  4 lines  2 spans  0 open runs\x1b[K\n',
        'interrupted: delivering the 2 spans read (a second Ctrl-C stops at once)\n',
      ],
    },
  );
});

test('replay on a terminal whose collector does not take the spans read: after two seconds a line says how many wait, for at most how long, and that Ctrl-C stops', async (t) => {
  const receiver = await heldCollector(t);
  const events = [
    flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 }),
    flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: t0 + 3_000 }),
  ];
  const { summary, writes } = await replayStopped(receiver.url, events.map((e) => JSON.stringify(e)), () => false, 4_000);
  // Two seconds of the four are left when the line is written (one, on a machine slow to run the timer).
  const shown = writes.map((w) => w.replace(/at most [12] s more/, 'at most 2 s more'));
  assert.deepEqual({ interrupted: summary.interrupted, spans: summary.spans, writes: shown }, {
    interrupted: false,
    spans: 1,
    writes: [
      '\rreplay 100%  2 lines  1 span  0 open runs\x1b[K\n',
      'waiting for the collector to take the 1 span read (at most 2 s more; Ctrl-C stops)\n',
    ],
  });
});

test('replay on a terminal whose collector does not take the spans read, more of them than the span buffer holds: the line counts those waiting for room too', async (t) => {
  const receiver = await heldCollector(t);
  // Three flow runs still open at the end of input, ended at once; the buffer holds one span and one is out at the collector.
  const events = ['0198c7d2-5b1e-7a3c-9f10-000000000001', '0198c7d2-5b1e-7a3c-9f10-000000000002', '0198c7d2-5b1e-7a3c-9f10-000000000003'].map((id, i) =>
    flowRunStateEvent({ flowRunId: id, flowRunName: `run-${i}`, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: t0 + i }),
  );
  const { summary, writes } = await replayStopped(receiver.url, events.map((e) => JSON.stringify(e)), () => false, 4_000, { bufferMaxSpans: 1, batchSize: 1, scheduleDelayMs: 0 });
  const shown = writes.map((w) => w.replace(/at most [12] s more/, 'at most 2 s more'));
  assert.deepEqual({ spans: summary.spans, writes: shown }, {
    spans: 3,
    writes: [
      '\rreplay 100%  3 lines  3 spans  0 open runs\x1b[K\n',
      'waiting for the collector to take the 3 spans read (at most 2 s more; Ctrl-C stops)\n',
    ],
  });
});

test('replay with OTel logs on: the summary counts spans not delivered, not the log records waiting beside them', async (t) => {
  const receiver = await heldCollector(t);
  const file = join(mkdtempSync(join(tmpdir(), 'prefect-otel-pending-')), 'events.jsonl');
  const task = (type: string, from: string, s: number) =>
    taskRunStateEvent({ taskRunId: tr, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: fr, ...FLOW, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: t0 + s * 1000 });
  const flow = (type: string, from: string, s: number) =>
    flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...FLOW, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: t0 + s * 1000 });
  // Two spans, four transitions: four STLOGGING records for the collector.
  writeFileSync(file, [flow('RUNNING', 'PENDING', 0), task('RUNNING', 'PENDING', 1), task('COMPLETED', 'RUNNING', 2), flow('COMPLETED', 'RUNNING', 3)].map((e) => JSON.stringify(e)).join('\n'));
  const summary = await runReplay({
    config: resolveConfig({ apiUrl: 'http://127.0.0.1:9/api', otlpEndpoint: receiver.url, logsExporter: 'otlp', otlpTimeoutMs: 2_000 }, {}),
    logger: createLogger({ level: 'silent', format: 'json' }),
    file,
    progress: { tty: false, write: () => undefined },
    flushTimeoutMs: 500,
  });
  assert.deepEqual(
    { spans: summary.spans, exported: summary.spansExported, pending: summary.spansPending, ok: summary.exportOk },
    { spans: 2, exported: 0, pending: 2, ok: false },
  );
  // The four log records waiting beside the spans have a line of their own.
  assert.deepEqual(formatReplaySummary(summary).split('\n'), [
    'events read: 4 (4 lines, 0 duplicates, 0 not about a run)',
    'skipped: 0',
    'runs: 2  spans: 2 (0 incomplete)',
    `spans: 0 exported, 2 not delivered (to ${receiver.url}/v1/traces)`,
    `log records: 0 exported, 4 not delivered (to ${receiver.url}/v1/logs)`,
    'export: FAILED',
  ]);
});

test('`prefect events stream` stopped on errors five times: the summary names the first three by line and counts the rest; a user:password or an API key in a message is not shown', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'prefect-otel-stops-')), 'events.jsonl');
  const flow = (type: string, from: string, s: number) =>
    JSON.stringify(flowRunStateEvent({ flowRunId: fr, flowRunName: 'crimson-fox', ...FLOW, state: { type, name: type.charAt(0) + type.slice(1).toLowerCase() }, from, runCount: 1, occurred: t0 + s * 1000 }));
  const stop = 'Connection closed, retrying... (no close frame received or sent)';
  const lines = [flow('PENDING', 'SCHEDULED', 0), stop, flow('RUNNING', 'PENDING', 1), stop, stop, `An unexpected error occurred: cannot connect to https://ops:hunter22@prefect.example/api with Authorization: Bearer pnu_AbCdEf0123456789XyZ`, '# a comment', stop, flow('COMPLETED', 'RUNNING', 2)];
  writeFileSync(file, `${lines.join('\n')}\n`);
  const summary = await runReplay({
    config: resolveConfig({ tracesExporter: 'none', apiUrl: 'http://127.0.0.1:9/api' }, {}),
    logger: createLogger({ level: 'silent', format: 'json' }),
    file,
    progress: { tty: false, write: () => undefined },
  });
  assert.deepEqual(summary.streamStops, {
    count: 5,
    first: [
      { line: 2, message: stop },
      { line: 4, message: stop },
      { line: 5, message: stop },
    ],
  });
  assert.deepEqual(formatReplaySummary(summary).split('\n'), [
    'events read: 3 (9 lines, 6 blank or comment, 0 duplicates, 0 not about a run)',
    'skipped: 0',
    'runs: 1  spans: 1 (0 incomplete)',
    'spans: not exported (option tracesExporter=none)',
    'export: ok',
    `gaps: \`prefect events stream\` stopped on an error 5 times (line 2: ${stop}; line 4: ${stop}; line 5: ${stop}; 2 more); events from then until it was started again are not in the input`,
  ]);
  // The fourth stop, past those the summary names: its user info is redacted where it is logged.
  const logged: Record<string, unknown>[] = [];
  await runReplay({
    config: resolveConfig({ tracesExporter: 'none', apiUrl: 'http://127.0.0.1:9/api' }, {}),
    logger: createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void logged.push(JSON.parse(l) as Record<string, unknown>) } }),
    file,
    progress: { tty: false, write: () => undefined },
  });
  assert.deepEqual(
    logged.map((r) => [r.line, r.message]),
    [
      [2, stop],
      [4, stop],
      [5, stop],
      [6, 'An unexpected error occurred: cannot connect to https://[redacted]@prefect.example/api with Authorization: [redacted]'],
      [8, stop],
    ],
  );
});
