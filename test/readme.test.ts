import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { SETTINGS } from '../src/settings.js';
import { VERSION } from '../src/version.js';

const ROOT = new URL('../../', import.meta.url);

function renderTable(): string {
  const fmt = (v: string | number | boolean | Record<string, string> | undefined): string =>
    v === undefined ? '—' : typeof v === 'object' ? (Object.keys(v).length > 0 ? JSON.stringify(v) : '—') : `\`${v}\``;
  const rows = Object.entries(SETTINGS).map(([key, d]) => `| \`${d.env.join('` / `')}\` | \`${d.flag}\` | \`${key}\` | ${fmt(d.default)} | ${d.doc} |`);
  return ['| env | flag | option | default | meaning |', '|---|---|---|---|---|', ...rows].join('\n');
}

test("the README's configuration table is the code's settings table", () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  assert.ok(readme.includes(renderTable()), 'README table differs from src/settings.ts; regenerate it');
});

test('the version constant follows package.json', () => {
  const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { version: string };
  assert.equal(VERSION, pkg.version);
});

/**
 * The README's library snippet, as a TypeScript consumer of the installed package writes it: under
 * each module resolution a consumer's tsconfig may use, `prefect-otel` resolves to its type
 * declarations and the snippet type-checks (hook and listener parameters typed, strict).
 */
test("the README's library snippet type-checks in a TypeScript consumer, whatever its module resolution", (t) => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const snippet = /```js\n(import \{ startPrefectTracing \} from 'prefect-otel';[\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(snippet !== undefined, 'the library snippet is in the README');
  // A consumer project with the package installed (a link to this package, as `npm install` of a tarball lays it out).
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-consumer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(fileURLToPath(ROOT), join(dir, 'node_modules', 'prefect-otel'), 'dir');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const file = join(dir, 'app.ts');
  writeFileSync(file, snippet);
  const typeRoots = [fileURLToPath(new URL('node_modules/@types', ROOT))];
  const resolutions = {
    nodenext: { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext },
    bundler: { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler },
    node10: { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Node10 },
  };
  const diagnostics = Object.fromEntries(
    Object.entries(resolutions).map(([name, options]) => {
      const program = ts.createProgram([file], { ...options, target: ts.ScriptTarget.ES2022, strict: true, noEmit: true, skipLibCheck: true, typeRoots, types: ['node'] });
      return [name, ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'))];
    }),
  );
  assert.deepEqual(diagnostics, { nodenext: [], bundler: [], node10: [] });
});
