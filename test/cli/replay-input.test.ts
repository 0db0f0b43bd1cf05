import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { spanIdForRun } from '../../src/model/ids.js';
import { CLI, startCli, type CliResult } from '../helpers/cli.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { until } from '../helpers/watch-e2e.js';
import { flowRunStateEvent, taskRunStateEvent, type WireEvent } from '../helpers/prefect-events.js';

const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
const TR = '0198c7d2-6000-7abc-8def-000000000001';
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);

function smallRun(): WireEvent[] {
  return [
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: T0, id: '0198c7d2-eeee-7000-8000-000000000001' }),
    taskRunStateEvent({ taskRunId: TR, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: T0 + 1000, id: '0198c7d2-eeee-7000-8000-000000000002' }),
    taskRunStateEvent({ taskRunId: TR, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: T0 + 2000, id: '0198c7d2-eeee-7000-8000-000000000003' }),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'COMPLETED', name: 'Completed' }, from: 'RUNNING', runCount: 1, occurred: T0 + 3000, id: '0198c7d2-eeee-7000-8000-000000000004' }),
  ];
}

async function replay(input: string): Promise<{ r: CliResult; spans: ReceivedSpan[] }> {
  const receiver = await startOtlpReceiver();
  try {
    const r = await startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url }, input).result;
    return { r, spans: receiver.spans().sort((a, b) => a.name.localeCompare(b.name)) };
  } finally {
    await receiver.close();
  }
}

test('a saved page of /api/events/filter, and a JSON array of events, on a line: each event is read, the spans are those of the same events one a line', async () => {
  const events = smallRun();
  const plain = await replay(`${events.map((e) => JSON.stringify(e)).join('\n')}\n`);
  assert.equal(plain.r.code, 0, plain.r.stderr);
  assert.deepEqual(plain.spans.map((s) => [s.name, s.spanId]), [['etl', spanIdForRun(FR)], ['extract', spanIdForRun(TR)]]);
  const page = (evs: WireEvent[], next: string | null) => JSON.stringify({ events: evs, total: events.length, next_page: next });
  const inputs = {
    // As Python's json.dump writes it, and as the API sends it (newest first): two pages, then an empty one.
    pages: `${JSON.stringify({ events: events.slice(2).reverse(), total: 4, next_page: 'http://127.0.0.1:4200/api/events/filter/next?page-token=abc' }, null, 0).replace(/":/g, '": ').replace(/,"/g, ', "')}\n${page(events.slice(0, 2).reverse(), null)}\n${page([], null)}\n`,
    array: `${JSON.stringify(events)}\n`,
  };
  const LINES_READ = { pages: '3 lines', array: '1 line' };
  for (const [name, input] of Object.entries(inputs)) {
    const got = await replay(input);
    assert.equal(got.r.code, 0, got.r.stderr);
    assert.deepEqual(got.r.stderr.split('\n').slice(0, 3), [`events read: 4 (${LINES_READ[name as keyof typeof inputs]}, 0 duplicates, 0 not about a run)`, 'skipped: 0', 'runs: 2  spans: 2 (0 incomplete)'], name);
    assert.deepEqual(got.spans, plain.spans, name);
  }
});

test('an array that is not of events and a page with a bad event: skipped and counted, the good events of the page read; an empty array (an empty page through jq -c .events) holds no event and is no skip', async () => {
  const events = smallRun();
  const input = ['[]', '[1,2]', JSON.stringify({ events: [...events, { id: 'x' }], total: 5, next_page: null })].join('\n');
  const got = await replay(input);
  assert.equal(got.r.code, 0, got.r.stderr);
  assert.deepEqual(got.r.stderr.split('\n').slice(0, 3), ['events read: 4 (3 lines, 0 duplicates, 0 not about a run)', 'skipped: 2 (not_an_object: 1, bad_id: 1)', 'runs: 2  spans: 2 (0 incomplete)']);
  assert.equal(got.spans.length, 2);
});

test('a compressed file or UTF-16 text: refused at once with what to run instead, exit 1, nothing skipped line by line', async () => {
  const events = smallRun();
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-replay-input-'));
  const text = `${events.map((e) => JSON.stringify(e)).join('\n')}\n`;
  const gz = join(dir, 'events.jsonl.gz');
  writeFileSync(gz, gzipSync(text));
  const utf16 = join(dir, 'events-powershell.jsonl');
  writeFileSync(utf16, Buffer.from(`\uFEFF${text}`, 'utf16le'));
  // Without a byte-order mark, as `iconv -t UTF-16LE` writes it, and big-endian.
  const utf16le = join(dir, 'events-le.jsonl');
  writeFileSync(utf16le, Buffer.from(text, 'utf16le'));
  const utf16be = join(dir, 'events-be.jsonl');
  writeFileSync(utf16be, Buffer.from(text, 'utf16le').swap16());
  const run = (args: string[]) => startCli(args, { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none' }).result;
  const cases: [CliResult, string][] = [
    [await run(['replay', gz]), `prefect-otel: ${gz} is gzip-compressed, not JSON lines: decompress it first, e.g. gunzip -c ${gz} | prefect-otel replay -`],
    [await run(['replay', utf16]), `prefect-otel: ${utf16} is UTF-16 text, not UTF-8: convert it first, e.g. iconv -f UTF-16 -t UTF-8 ${utf16} | prefect-otel replay -`],
    [await run(['replay', utf16le]), `prefect-otel: ${utf16le} is UTF-16 text (little-endian), not UTF-8: convert it first, e.g. iconv -f UTF-16LE -t UTF-8 ${utf16le} | prefect-otel replay -`],
    [await run(['replay', utf16be]), `prefect-otel: ${utf16be} is UTF-16 text (big-endian), not UTF-8: convert it first, e.g. iconv -f UTF-16BE -t UTF-8 ${utf16be} | prefect-otel replay -`],
  ];
  for (const [r, message] of cases) {
    assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 1, stderr: `${message}\n` });
    assert.ok(!r.stdout.includes('skipped malformed input'), r.stdout);
  }
});

test('JSON written over many lines: every line read, skipped and counted as any other, and the summary says how to rewrite it as JSON lines', async () => {
  const events = smallRun();
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-replay-input-'));
  const pretty = join(dir, 'page.json');
  writeFileSync(pretty, `${JSON.stringify({ events, total: 4, next_page: null }, null, 2)}\n`);
  const hint = (file: string): string =>
    `input: JSON written over many lines? replay reads one event (or array of events, or /api/events/filter page) a line: rewrite it first, e.g. jq -c '.events? // . | if type == "array" then .[] else . end' ${file} | prefect-otel replay -`;
  const run = (args: string[], input?: string) => startCli(args, { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none' }, input).result;
  const cases: [CliResult, string][] = [
    [await run(['replay', pretty]), hint(pretty)],
    // Events one after another, as `jq '.events[]'` (without -c) writes them.
    [await run(['replay', '-'], events.map((e) => JSON.stringify(e, null, 2)).join('\n')), hint('FILE')],
    [await run(['replay', '-'], `\n# exported\n${JSON.stringify(events, null, 2)}\n`), hint('FILE')],
  ];
  for (const [r, message] of cases) {
    const summary = r.stderr.split('\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(summary[0]!, /^events read: 0 \(\d+ lines/);
    assert.match(summary[1]!, /^skipped: \d+ \(invalid_json: \d+/);
    assert.deepEqual(summary.slice(-4), ['export: ok', 'input: no line was a Prefect event', message, '']);
  }
  // A file that starts with a bare `{` line and goes on with JSON lines keeps every event after it.
  const mixed = await run(['replay', '-'], `{\n${events.map((e) => JSON.stringify(e)).join('\n')}\n`);
  assert.deepEqual({ code: mixed.code, summary: mixed.stderr.split('\n') }, {
    code: 0,
    summary: [
      'events read: 4 (5 lines, 0 duplicates, 0 not about a run)',
      'skipped: 1 (invalid_json: 1)',
      'runs: 2  spans: 2 (0 incomplete)',
      'spans: not exported (OTEL_TRACES_EXPORTER=none)',
      'export: ok',
      hint('FILE'),
      '',
    ],
  });
});

test('lines read and not one of them an event: the summary says so, as a replay of nothing it exits 0; an empty input says nothing of it', async () => {
  const run = (input: string) => startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none' }, input).result;
  const wrong = await run('2026-11-20 09:00:00 INFO started\n{"level":30,"msg":"hello"}\n');
  assert.deepEqual({ code: wrong.code, stderr: wrong.stderr }, {
    code: 0,
    stderr: [
      'events read: 0 (2 lines, 0 duplicates, 0 not about a run)',
      'skipped: 2 (invalid_json: 1, missing_field: 1)',
      'runs: 0  spans: 0 (0 incomplete)',
      'spans: not exported (OTEL_TRACES_EXPORTER=none)',
      'export: ok',
      'input: no line was a Prefect event',
      '',
    ].join('\n'),
  });
  for (const input of ['', '\n# nothing exported yet\n\n']) {
    const empty = await run(input);
    assert.deepEqual({ code: empty.code, last: empty.stderr.split('\n').slice(-3) }, { code: 0, last: ['spans: not exported (OTEL_TRACES_EXPORTER=none)', 'export: ok', ''] }, JSON.stringify(input));
  }
});

/** util-linux `script`: a pseudo-terminal for replay's standard input, as a user's terminal session gives it. */
const SCRIPT = '/usr/bin/script';

test('replay - at a terminal: it says that it reads what is typed or pasted and how to end it; the events pasted and Ctrl-D give their spans and summary', { skip: !existsSync(SCRIPT) && `${SCRIPT} is not installed` }, async (t) => {
  const note = 'reading Prefect events typed or pasted here, one JSON event a line: Ctrl-D ends the input, Ctrl-C stops';
  const terminal = spawn(SCRIPT, ['-qfc', `exec '${process.execPath}' '${CLI}' replay -`, '/dev/null'], {
    env: { PATH: process.env.PATH ?? '', PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'warn' },
  });
  t.after(() => void terminal.kill('SIGKILL'));
  let shown = '';
  terminal.stdout.on('data', (d: Buffer) => (shown += d.toString()));
  const exited = new Promise<number | null>((resolve) => terminal.on('exit', resolve));
  await until('the note', () => shown.includes(note), 20_000, () => shown);
  // Pasted, then Ctrl-D at the start of a line: the terminal ends the input.
  terminal.stdin.write(`${smallRun().map((e) => JSON.stringify(e)).join('\n')}\n`);
  await until('the pasted lines echoed', () => shown.split('\n').length > 4, 20_000, () => shown);
  terminal.stdin.write('\x04');
  assert.equal(await exited, 0, shown);
  const lines = shown.replaceAll('\r\n', '\n').split('\n');
  assert.equal(lines[0], note);
  assert.deepEqual(lines.slice(-6), [
    'events read: 4 (4 lines, 0 duplicates, 0 not about a run)',
    'skipped: 0',
    'runs: 2  spans: 2 (0 incomplete)',
    'spans: not exported (OTEL_TRACES_EXPORTER=none)',
    'export: ok',
    '',
  ]);
});

test('the summary adds up: blank, whitespace-only and comment lines are counted as such beside the events and the skipped lines (BOM, CRLF, no last newline)', async () => {
  const events = smallRun().map((e) => JSON.stringify(e));
  const input = `\uFEFF# exported from Prefect\r\n\r\n${events[0]}\r\n   \r\n\t\r\n${events[1]}\r\n{oops\r\n${events[2]}\r\n\r\n${events[3]}`;
  const got = await replay(input);
  assert.deepEqual({ code: got.r.code, summary: got.r.stderr.split('\n').slice(0, 3) }, {
    code: 0,
    summary: ['events read: 4 (10 lines, 5 blank or comment, 0 duplicates, 0 not about a run)', 'skipped: 1 (invalid_json: 1)', 'runs: 2  spans: 2 (0 incomplete)'],
  });
  assert.equal(got.spans.length, 2);
});

test('a file that ends partway through its last event (copied while it was written): the summary says so and which line; a whole last line without a line end, a cut line with one, or a last line of text say nothing of it', async () => {
  const events = smallRun().map((e) => JSON.stringify(e));
  const run = (input: string) => startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'error' }, input).result;
  const summary = (skipped: string, incomplete: number, ...input: string[]) => [
    'events read: 3 (4 lines, 0 duplicates, 0 not about a run)',
    `skipped: ${skipped}`,
    `runs: 2  spans: 2 (${incomplete} incomplete)`,
    'spans: not exported (OTEL_TRACES_EXPORTER=none)',
    'export: ok',
    ...input,
    '',
  ].join('\n');
  const head = `${events.slice(0, 3).join('\n')}\n`;
  const cases: [string, string][] = [
    // The flow run's Completed event cut short: skipped, and the run ends incomplete at the end of the input.
    [head + events[3]!.slice(0, 120), summary('1 (invalid_json: 1)', 1, 'input: the last line (4) ends partway through an event: skipped (was the file copied while it was still written?)')],
    [`${head}${events[3]}`, summary('0', 0).replace('events read: 3', 'events read: 4')],
    [`${events[0]}\n${events[1]}\n${events[2]!.slice(0, 120)}\n${events[3]}\n`, summary('1 (invalid_json: 1)', 1)],
    [`${head}Exported by hand`, summary('1 (invalid_json: 1)', 1)],
  ];
  for (const [input, stderr] of cases) {
    const r = await run(input);
    assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 0, stderr }, input.slice(-150));
  }
});

test('a missing file, a directory, a path through a file: one line that says why in words, exit 1, no stack trace', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-replay-input-'));
  const file = join(dir, 'events.jsonl');
  writeFileSync(file, '');
  const cases: [string, string][] = [
    [join(dir, 'missing.jsonl'), 'no such file'],
    [dir, 'it is a directory (replay reads one file of JSON lines)'],
    [join(file, 'x'), 'a part of the path is not a directory'],
  ];
  for (const [path, why] of cases) {
    const r = await startCli(['replay', path], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none' }).result;
    assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 1, stderr: `prefect-otel: cannot read ${path}: ${why}\n` });
  }
});

test('a file without read permission: one line that says so in words, exit 1, no errno code or stack trace', { skip: process.platform === 'win32' ? 'no POSIX file modes' : false }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-replay-input-'));
  chmodSync(dir, 0o755);
  const file = join(dir, 'events.jsonl');
  writeFileSync(file, `${smallRun().map((e) => JSON.stringify(e)).join('\n')}\n`);
  chmodSync(file, 0o000);
  // Root reads any file: the CLI runs as nobody then, which it can only where nobody may read the checkout.
  const user = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;
  if (user !== undefined && spawnSync(process.execPath, [CLI, '--version'], user).status !== 0) {
    t.skip('run as root from a checkout the user nobody may not read');
    return;
  }
  const r = await startCli(['replay', file], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'warn' }, undefined, { user }).result;
  assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 1, stderr: `prefect-otel: cannot read ${file}: permission denied\n` });
});

test('files put together with cat, each with its byte order mark: the event after each mark is read, not skipped as invalid JSON', async () => {
  const events = smallRun().map((e) => JSON.stringify(e));
  const file = (lines: string[]) => `\uFEFF${lines.join('\n')}\n`;
  const got = await replay(file(events.slice(0, 2)) + file(events.slice(2)));
  assert.deepEqual({ code: got.r.code, summary: got.r.stderr.split('\n').slice(0, 3) }, {
    code: 0,
    summary: ['events read: 4 (4 lines, 0 duplicates, 0 not about a run)', 'skipped: 0', 'runs: 2  spans: 2 (0 incomplete)'],
  });
  const plain = await replay(`${events.join('\n')}\n`);
  assert.deepEqual(got.spans, plain.spans);
});

test("the command suggested for a compressed file quotes a name the shell would split", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-replay-input-'));
  const gz = join(dir, "Bob's events (1).jsonl.gz");
  writeFileSync(gz, gzipSync(`${smallRun().map((e) => JSON.stringify(e)).join('\n')}\n`));
  const r = await startCli(['replay', gz], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none' }).result;
  assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 1, stderr: `prefect-otel: ${gz} is gzip-compressed, not JSON lines: decompress it first, e.g. gunzip -c '${dir}/Bob'\\''s events (1).jsonl.gz' | prefect-otel replay -\n` });
});

test('a JSON array of events, or a saved page, longer than a line may be: skipped and counted as too large, and the summary says how to write it one event a line', async () => {
  // Four events of 600 KB each: one a line they are read, together on one line they pass the 2 MB bound.
  const events = smallRun().map((e) => ({ ...e, payload: { ...e.payload, note: 'x'.repeat(600_000) } }));
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-replay-input-'));
  const run = (args: string[], input?: string) => startCli(args, { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none' }, input).result;
  const one = await run(['replay', '-'], `${events.map((e) => JSON.stringify(e)).join('\n')}\n`);
  assert.deepEqual(one.stderr.split('\n').slice(0, 2), ['events read: 4 (4 lines, 0 duplicates, 0 not about a run)', 'skipped: 0']);
  const array = join(dir, 'events.json');
  writeFileSync(array, JSON.stringify(events));
  const hint = (file: string): string =>
    `input: an array of events (or /api/events/filter page) on one line longer than 2097152 bytes (2 MiB of UTF-8) is skipped whole: write it one event a line first, e.g. jq -c '.events? // . | if type == "array" then .[] else . end' ${file} | prefect-otel replay -`;
  const cases: [CliResult, string][] = [
    [await run(['replay', array]), hint(array)],
    [await run(['replay', '-'], `${JSON.stringify({ events, total: 4, next_page: null })}\n`), hint('FILE')],
  ];
  for (const [r, message] of cases) {
    assert.deepEqual({ code: r.code, stderr: r.stderr }, {
      code: 0,
      stderr: [
        'events read: 0 (1 line, 0 duplicates, 0 not about a run)',
        'skipped: 1 (too_large: 1)',
        'runs: 0  spans: 0 (0 incomplete)',
        'spans: not exported (OTEL_TRACES_EXPORTER=none)',
        'export: ok',
        'input: no line was a Prefect event',
        message,
        '',
      ].join('\n'),
    });
  }
  // A single event that large is only skipped: rewriting the file would not help it.
  const big = await run(['replay', '-'], `${JSON.stringify({ ...events[0]!, payload: { note: 'x'.repeat(2_200_000) } })}\n`);
  assert.deepEqual(big.stderr.split('\n').slice(-3), ['export: ok', 'input: no line was a Prefect event', '']);
});

test('a recording of the websocket with the client\'s own messages: the auth message is skipped and counted like the others, and its token (an API key or auth string) is never logged', async () => {
  const events = smallRun().map((e) => JSON.stringify({ type: 'event', event: e }));
  const lines = [
    '{"type":"auth","token":"pnu_0123456789abcdefSECRET"}',
    '{"type":"auth_success"}',
    '{"type":"filter","filter":{"event":{"prefix":["prefect.flow-run."]}},"backfill":true}',
    ...events,
    // The same message written over many lines, token and all.
    '{',
    '  "type": "auth",',
    '  "token": "admin:pa\\"ss-SECRET"',
    '}',
  ];
  const r = await startCli(['replay', '-'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'debug' }, `${lines.join('\n')}\n`).result;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').slice(0, 2), ['events read: 4 (11 lines, 0 duplicates, 0 not about a run)', 'skipped: 7 (invalid_json: 4, not_an_event_message: 3)']);
  assert.ok(!`${r.stdout}${r.stderr}`.includes('SECRET'), r.stdout);
  const skips = r.stdout.split('\n').filter((l) => l.includes('skipped malformed input')).map((l) => (JSON.parse(l) as { excerpt: string }).excerpt);
  assert.deepEqual(skips, [
    '{"type":"auth","token":"[redacted]"}',
    '{"type":"auth_success"}',
    lines[2],
    '{',
    '"type": "auth",',
    '"token": "[redacted]"',
    '}',
  ]);
});

test('saved pages of /api/events/filter appended one after another with nothing between them (curl … >> pages.json): each page\'s events are read, a cut page is skipped', async () => {
  const events = smallRun();
  const plain = await replay(`${events.map((e) => JSON.stringify(e)).join('\n')}\n`);
  const page = (evs: WireEvent[], next: string | null) => JSON.stringify({ events: evs, total: events.length, next_page: next });
  // As the API answers them (newest first, no newline at the end), and a last one cut short.
  const cut = page(events.slice(0, 1), null).slice(0, 40);
  const got = await replay(`${page(events.slice(2).reverse(), 'http://127.0.0.1:4200/api/events/filter/next?page-token=abc')}${page(events.slice(0, 2).reverse(), null)}${cut}`);
  assert.deepEqual({ code: got.r.code, summary: got.r.stderr.split('\n').slice(0, 3) }, {
    code: 0,
    summary: ['events read: 4 (1 line, 0 duplicates, 0 not about a run)', 'skipped: 1 (invalid_json: 1)', 'runs: 2  spans: 2 (0 incomplete)'],
  });
  assert.deepEqual(got.spans, plain.spans);
  const warned = got.r.stdout.split('\n').filter((l) => l.includes('skipped malformed input')).map((l) => (JSON.parse(l) as { excerpt: string }).excerpt);
  assert.deepEqual(warned, [cut]);
});

test("the output of `prefect events stream > events.jsonl`: its own status lines (Subscribing to event stream..., and Exiting... after Ctrl-C) are counted with the comments, not skipped and warned of; the spans are those of the events alone", async () => {
  const events = smallRun().map((e) => JSON.stringify(e));
  const plain = await replay(`${events.join('\n')}\n`);
  const streamed = await replay(`Subscribing to event stream...\n${events.join('\n')}\nExiting...\n`);
  const warnings = streamed.r.stdout.split('\n').filter((l) => l.includes('"level":40'));
  assert.deepEqual(
    { code: streamed.r.code, summary: streamed.r.stderr.split('\n').slice(0, 3), warnings, spans: streamed.spans },
    { code: 0, summary: ['events read: 4 (6 lines, 2 blank or comment, 0 duplicates, 0 not about a run)', 'skipped: 0', 'runs: 2  spans: 2 (0 incomplete)'], warnings: [], spans: plain.spans },
  );
});

test('the output of `prefect events stream` that stopped on an error (its message wrapped at 80 columns by its console) and was started again with `>>`: the message is said as a gap, once, with its line, not skipped as bad input; the spans are those of the events alone', async () => {
  const events = smallRun().map((e) => JSON.stringify(e));
  const plain = await replay(`${events.join('\n')}\n`);
  const dropped = ['Connection closed, retrying... (received 1011 (internal error) keepalive ping timeout; then', 'sent 1011 (internal error) keepalive ping timeout)'];
  const refused = ['An unexpected error occurred: Cannot connect to host prefect.example:4200 ssl:default', "[Errno 111] Connect call failed ('10.0.0.7', 4200)"];
  const inputs = {
    'started again': [`Subscribing to event stream...`, events[0], events[1], ...dropped, 'Subscribing to event stream...', events[2], events[3]],
    'at the end': [events[0], events[1], events[2], events[3], 'An unexpected error occurred: server rejected WebSocket connection: HTTP 502'],
    // Python's words for an OS error, wrapped where its `[Errno …]` begins: a `[` that opens no array of events.
    'wrapped before a bracket': [events[0], events[1], ...refused, events[2], events[3]],
  };
  const expected = {
    'started again': { line: 4, message: `${dropped.join(' ')}`, lines: 8, blank: 4 },
    'at the end': { line: 5, message: 'An unexpected error occurred: server rejected WebSocket connection: HTTP 502', lines: 5, blank: 1 },
    'wrapped before a bracket': { line: 3, message: refused.join(' '), lines: 6, blank: 2 },
  };
  for (const [name, lines] of Object.entries(inputs)) {
    const got = await replay(`${lines.join('\n')}\n`);
    const { line, message, lines: n, blank } = expected[name as keyof typeof expected];
    const warnings = got.r.stdout.split('\n').filter((l) => l.includes('"level":40')).map((l) => {
      const r = JSON.parse(l) as Record<string, unknown>;
      return { msg: r.msg, line: r.line, message: r.message };
    });
    assert.deepEqual(
      { code: got.r.code, summary: got.r.stderr.split('\n').filter((l) => l !== ''), warnings, spans: got.spans },
      {
        code: 0,
        summary: [
          `events read: 4 (${n} lines, ${blank} blank or comment, 0 duplicates, 0 not about a run)`,
          'skipped: 0',
          'runs: 2  spans: 2 (0 incomplete)',
          'spans: 2 exported',
          'export: ok',
          `gaps: \`prefect events stream\` stopped on an error once (line ${line}: ${message}); events from then until it was started again are not in the input`,
        ],
        warnings: [{ msg: '`prefect events stream` stopped here on an error: events from then until it was started again are not in the input', line, message }],
        spans: plain.spans,
      },
      name,
    );
  }
});

/**
 * A task run's state event as Prefect 2 emits it (`emit_task_run_state_change_event` in 2.x's
 * `src/prefect/utilities/engine.py`): no `payload.task_run`, so no task key, and no run count or
 * orchestration label; the run is named `<task name>-<n>`, n counting the task's calls in its flow
 * run (`create_task_run_future` in 2.x's `src/prefect/engine.py`).
 */
function prefect2TaskEvent(e: WireEvent): WireEvent {
  const { task_run: _, ...payload } = e.payload;
  const { 'prefect.run-count': _count, 'prefect.orchestration': _orchestration, ...resource } = e.resource;
  return { ...e, resource, payload };
}

test('events written by Prefect 2 (task runs named `<task>-<n>`, with no task key): each task span is named by its task, the run name kept as an attribute', async () => {
  const task = (id: string, name: string, s: number, state: { type: string; name: string }, from: string | null): WireEvent =>
    prefect2TaskEvent(taskRunStateEvent({ taskRunId: id, taskRunName: name, taskKey: 'unused', flowRunId: FR, ...FLOW, state, from, runCount: 1, occurred: T0 + s * 1000 }));
  const running = { type: 'RUNNING', name: 'Running' };
  const completed = { type: 'COMPLETED', name: 'Completed' };
  const runs = [
    ['0198c7d2-6000-7abc-8def-000000000011', 'extract-0'],
    ['0198c7d2-6000-7abc-8def-000000000012', 'extract-1'],
    ['0198c7d2-6000-7abc-8def-000000000013', 'load-a1b2c3'],
  ] as const;
  const events = [
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: running, from: 'PENDING', runCount: 1, occurred: T0 }),
    ...runs.flatMap(([id, name], i) => [task(id, name, 1 + 2 * i, running, 'PENDING'), task(id, name, 2 + 2 * i, completed, 'RUNNING')]),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: completed, from: 'RUNNING', runCount: 1, occurred: T0 + 9000 }),
  ];
  const got = await replay(`${events.map((e) => JSON.stringify(e)).join('\n')}\n`);
  assert.equal(got.r.code, 0, got.r.stderr);
  const named = got.spans.map((s) => [s.name, s.attributes['prefect.run.name'], s.attributes['cicd.pipeline.task.name'] ?? null]).sort((a, b) => JSON.stringify(a[1]).localeCompare(JSON.stringify(b[1])));
  assert.deepEqual(named, [
    ['etl', 'crimson-fox', null],
    ['extract', 'extract-0', 'extract'],
    ['extract', 'extract-1', 'extract'],
    // Not a count after the dash: a name Prefect did not number (a task run name of the user's) stays whole.
    ['load-a1b2c3', 'load-a1b2c3', 'load-a1b2c3'],
  ]);
});

test('the output of `prefect events stream --format text`: every line skipped as not JSON, and the summary says to save the stream as JSON instead', async () => {
  const text = smallRun().map((e) => `${e.occurred.replace('Z', '+00:00')} ${e.event} ${e.resource['prefect.resource.id']}`);
  const got = await replay(`Subscribing to event stream...\n${text.join('\n')}\n`);
  assert.deepEqual(
    { code: got.r.code, summary: got.r.stderr.split('\n').filter((l) => l !== ''), spans: got.spans },
    {
      code: 0,
      summary: [
        'events read: 0 (5 lines, 1 blank or comment, 0 duplicates, 0 not about a run)',
        'skipped: 4 (invalid_json: 4)',
        'runs: 0  spans: 0 (0 incomplete)',
        'spans: 0 exported',
        'export: ok',
        'input: no line was a Prefect event',
        'input: the output of `prefect events stream --format text`? its lines hold no event payload (no states, no related runs) and cannot be replayed: save the stream in its default JSON format, e.g. prefect events stream > events.jsonl',
      ],
      spans: [],
    },
  );
});
