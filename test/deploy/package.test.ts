/**
 * What `npm install prefect-otel` (and so `npx prefect-otel`) gets: the tarball `npm pack` makes
 * from this working copy, and the production dependencies. Tests and benchmarks stay out; every
 * compiled file has its source (no output left over from a deleted module), shipped too, so that
 * the source maps and declaration maps point at files the package has; the bin and every
 * export are in it; and the compiled code imports only packages of `dependencies`, since
 * `devDependencies` are not installed for a user.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { posix } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/** The compiled test lives in dist/test/deploy/, three levels below the repository root. */
const ROOT = new URL('../../../', import.meta.url);

interface PackageJson {
  bin: Record<string, string>;
  exports: Record<string, string | Record<string, string>>;
  dependencies: Record<string, string>;
}
const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as PackageJson;

/** The files of the tarball, without building it (`prepare` has run: the tests run from dist/). */
function packedFiles(): string[] {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: fileURLToPath(ROOT), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return (JSON.parse(out) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path).sort();
}

/** `@scope/name/sub` -> `@scope/name`; `name/sub` -> `name`. */
const packageOf = (specifier: string): string => specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/');

test('npm pack: the docs, package.json, src/ and the compiled dist/src; bin and exports inside; no tests', () => {
  const files = packedFiles();
  const sources = files.filter((f) => f.startsWith('src/'));
  assert.deepEqual(files.filter((f) => !f.startsWith('dist/') && !f.startsWith('src/')), ['CHANGELOG.md', 'LICENSE', 'README.md', 'package.json']);
  assert.ok(sources.length > 0 && sources.every((f) => f.endsWith('.ts')), 'src/ holds the TypeScript sources');
  const compiled = files.filter((f) => f.startsWith('dist/'));
  const misplaced = compiled.filter((f) => {
    const m = /^dist\/(src\/.+?)(?:\.js|\.d\.ts|\.js\.map|\.d\.ts\.map)$/.exec(f);
    return m === null || !sources.includes(`${m[1]}.ts`);
  });
  assert.deepEqual(misplaced, [], 'only compiled sources of src/, each with its .ts');
  // A stack trace under --enable-source-maps, and an editor's "go to definition", land on a file the package has.
  const unresolved = compiled
    .filter((f) => f.endsWith('.map'))
    .flatMap((f) => {
      const map = JSON.parse(readFileSync(new URL(f, ROOT), 'utf8')) as { sources: string[] };
      return map.sources.map((s) => posix.join(posix.dirname(f), s)).filter((s) => !files.includes(s));
    });
  assert.deepEqual(unresolved, [], 'every source map points at a packed source');
  assert.ok(compiled.some((f) => f.endsWith('.d.ts.map')), 'declaration maps are packed');
  const targets = [
    ...Object.values(pkg.bin),
    ...Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e))),
  ].map((p) => p.replace(/^\.\//, ''));
  assert.deepEqual(targets.filter((t) => !files.includes(t)), [], 'bin and exports are in the tarball');
  const bin = Object.values(pkg.bin)[0]!;
  assert.equal(readFileSync(new URL(bin, ROOT), 'utf8').split('\n')[0], '#!/usr/bin/env node');
});

test('the compiled code imports only Node built-ins and packages of dependencies', () => {
  const builtins = new Set(builtinModules);
  const js = packedFiles().filter((f) => f.endsWith('.js'));
  const imported = new Set(js.flatMap((f) => {
    const code = readFileSync(new URL(f, ROOT), 'utf8');
    // Static imports and re-exports (tsc writes each at the start of a line), side-effect imports, import().
    const statics = code.matchAll(/^(?:(?:import|export)\b[^;'"]*?\bfrom|import)\s*['"]([^'"]+)['"]/gm);
    const dynamics = code.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g);
    return [...statics, ...dynamics].map((m) => m[1]!).filter((s) => !s.startsWith('.'));
  }));
  const outside = [...imported].filter((s) => !s.startsWith('node:') && !builtins.has(s) && !(packageOf(s) in pkg.dependencies));
  assert.deepEqual(outside.sort(), []);
  assert.ok([...imported].some((s) => packageOf(s) === '@opentelemetry/sdk-trace'), 'the scan sees the imports');
});
