/**
 * How the demo's trees fit the output they are written to: colour and width as Node's own output
 * and the shell's COLUMNS decide them, also when the output is a pipe or a file.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { terminalOptions } from '../../src/demo.js';
import { startCli } from '../helpers/cli.js';

const ESC = '\x1b[';

/** The first trace the demo draws, as printed. */
function firstTrace(stdout: string): string[] {
  const lines = stdout.split('\n');
  const from = lines.findIndex((l) => l.includes('trace 01a211e63cb3748e85d1501f95c870ce'));
  return lines.slice(from, lines.indexOf('', from));
}

test('demo into a pipe: FORCE_COLOR colours it (as Node and CI logs read it), COLUMNS sets its width; by default neither', async () => {
  const run = (env: Record<string, string>) => startCli(['demo'], env).result;
  const [plain, forced, forcedOff, narrow] = await Promise.all([run({}), run({ FORCE_COLOR: '1' }), run({ FORCE_COLOR: '0' }), run({ COLUMNS: '40' })]);
  for (const r of [plain, forced, forcedOff, narrow]) assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(
    { plain: plain.stdout.includes(ESC), forced: forced.stdout.includes(ESC), forcedOff: forcedOff.stdout.includes(ESC), narrow: narrow.stdout.includes(ESC) },
    { plain: false, forced: true, forcedOff: false, narrow: false },
  );
  // Colour changes nothing but the escape codes.
  assert.equal(forced.stdout.replace(/\x1b\[\d+m/g, ''), plain.stdout);
  assert.deepEqual(firstTrace(narrow.stdout), [
    'trace 01a211e63cb3748e85d1501f95c870ce  sync-crm  9 spans  10.2 s',
    'sync-crm  Cancel…     10.2 s  ▕████████▏',
    '├─ fetch_c…  Com…     1.54 s  ▕  █     ▏',
    '├─ fetch_c…  Com…     3.47 s  ▕  ██    ▏',
    '├─ fetch_c…  Com…     1.82 s  ▕  █     ▏',
    '├─ fetch_c…  Com…     3.84 s  ▕  ███   ▏',
    '├─ dedupe  Compl…     756 ms  ▕     █  ▏',
    '├─ upsert_…  Com…     419 ms  ▕     █  ▏',
    '├─ upsert_…  Run…      11 ms  ▕     █  ▏',
    '└─ upsert_…  Run…      19 ms  ▕     █  ▏',
  ]);
  assert.equal(firstTrace(plain.stdout)[1], 'sync-crm (gentle-heron)  Cancelled                                  10.2 s  ▕████████████████████▏');
});

test('demo at 60 columns: its summary is wrapped between words and its sample log lines cut with …, keeping their ids when there is room; only trace headers, never cut, may be longer', async () => {
  const [narrow, medium] = await Promise.all([startCli(['demo'], { COLUMNS: '60' }).result, startCli(['demo'], { COLUMNS: '100' }).result]);
  assert.equal(narrow.code, 0, narrow.stderr);
  const lines = narrow.stdout.split('\n');
  assert.deepEqual(lines.slice(0, 5), [
    'prefect-otel demo: 6 flow runs (4 roots, 1 by',
    '  run_deployment, 1 in-process subflow), 45 task runs, 167',
    '  events (2 late task events); flow runs ended Completed,',
    '  Skipped, Failed, Crashed, Cancelled',
    '167 events → 51 spans in 4 traces',
  ]);
  assert.deepEqual(lines.filter((l) => [...l].length > 60 && !l.startsWith('trace ')), []);
  assert.equal(lines.find((l) => l.startsWith('  STLOGGING: ')), '  STLOGGING: Flow run 01a211bc-8c9c-7986-9856-19147fd1e034 …');
  assert.equal(
    medium.stdout.split('\n').find((l) => l.startsWith('  STLOGGING: ')),
    '  STLOGGING: Flow run 01a211bc-…  trace_id=01a211bc8c9c7986985619147fd1e034 span_id=fd394e51d94b10cf',
  );
});

test('demo on a terminal: its width unless COLUMNS says otherwise, the default when it reports none; colour as the terminal and NO_COLOR say', () => {
  const tty = (columns: number, colors = true) => ({ isTTY: true, columns, hasColors: () => colors });
  assert.deepEqual(
    [
      terminalOptions(tty(120), {}),
      terminalOptions(tty(120), { COLUMNS: '60' }),
      terminalOptions(tty(0), {}),
      terminalOptions(tty(120, false), {}),
      terminalOptions(tty(120), { NO_COLOR: '1' }),
      terminalOptions(tty(120, false), { FORCE_COLOR: 'true' }),
      terminalOptions({ isTTY: false }, { COLUMNS: 'wide' }),
    ],
    [
      { color: true, width: 120 },
      { color: true, width: 60 },
      { color: true, width: undefined },
      { color: false, width: 120 },
      { color: false, width: 120 },
      { color: true, width: 120 },
      { color: false, width: undefined },
    ],
  );
});
