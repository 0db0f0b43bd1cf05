import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { SETTINGS } from '../src/settings.js';
import { VERSION } from '../src/version.js';

const ROOT = new URL('../../', import.meta.url);

function renderTable(): string {
  const fmt = (v: string | number | Record<string, string> | undefined): string =>
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
