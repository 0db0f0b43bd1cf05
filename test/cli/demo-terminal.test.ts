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
