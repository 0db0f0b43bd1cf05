/**
 * The package as a service author installs it: the tarball `npm pack` makes, unpacked into a fresh
 * project's node_modules beside the production dependencies alone (no devDependency, no network). A
 * TypeScript service type-checks against the published declarations, in strict mode and with the
 * libraries' declarations checked too, under each module resolution a service may use; a CommonJS
 * service `require()`s it.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** The compiled test lives in dist/test/deploy/, three levels below the repository root. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The tarball of this working copy (`prepare` has run: the tests run from dist/), made once. */
let packed: string | undefined;
function tarball(): string {
  if (packed !== undefined) return packed;
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-pack-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  return (packed = join(dir, readdirSync(dir).find((f) => f.endsWith('.tgz'))!));
}

/** A project with the packed package and its production dependencies installed; removed after the test. */
function consumerProject(t: { after: (fn: () => void) => void }, type: 'module' | 'commonjs'): string {
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-consumer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const installed = join(dir, 'node_modules', 'prefect-otel');
  mkdirSync(installed, { recursive: true });
  execFileSync('tar', ['xzf', tarball(), '-C', installed, '--strip-components=1']);
  // The production dependency tree as npm would install it; each hoisted package is linked (nested
  // ones come with their parent), and the service's own @types/node.
  // (`npm ls` also lists the tree when it exits 1 for an extraneous package elsewhere in node_modules.)
  const tree = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, encoding: 'utf8' }).stdout;
  const hoisted = tree.split('\n').map((p) => p.slice(p.indexOf('/node_modules/') + 1)).filter((p) => p.startsWith('node_modules/') && p.split('node_modules/').length === 2);
  for (const rel of [...new Set(hoisted), 'node_modules/@types/node']) {
    mkdirSync(dirname(join(dir, rel)), { recursive: true });
    symlinkSync(join(ROOT, rel), join(dir, rel), 'dir');
  }
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'service', private: true, type }));
  return dir;
}

/** A service's code against the published types: options, hooks, the handle and its events, the errors. */
const SERVICE = `import { ConfigError, startPrefectTracing, type PipelineHooks, type PrefectTracingHandle, type SpanHookView, type SpanRecord, type StartOptions, type TracingStats } from 'prefect-otel';
import { prefectTracing } from 'prefect-otel/register';

const hooks: PipelineHooks = {
  span: (s: SpanHookView) => {
    s.name = \`etl/\${s.name}\`;
    s.attributes['team'] = 'data';
    if (s.run.type === 'flow' && s.run.attempt > 0) s.attributes['retried'] = true;
    // The README's way to remove an attribute.
    s.attributes['prefect.run.name'] = null;
  },
};
const options: StartOptions = { apiUrl: 'http://prefect:4200/api', otlpEndpoint: 'http://collector:4318', settleMs: 500, keepAlive: false, hooks };
// Maps as the README's table writes them (the variable's text), or as objects.
const maps: StartOptions = {
  otlpHeaders: 'authorization=Bearer%20abc,x-scope=data', otlpTracesHeaders: { 'x-tenant': 'data' },
  resourceAttributes: 'deployment.environment=prod', clientCustomHeaders: '{"CF-Access-Client-Id": "id"}',
};
void maps;
let tracing: PrefectTracingHandle;
try {
  tracing = startPrefectTracing(options);
} catch (err) {
  if (err instanceof ConfigError) console.error(err.problems.join('\\n'), err.warnings);
  throw err;
}
const onSpan = (span: SpanRecord): void => console.log(span.traceId, span.spanId, span.name, span.attributes['prefect.run.id']);
tracing.on('span', onSpan);
tracing.once('status', (status) => console.log(status === 'connected'));
tracing.on('error', (err: Error) => console.error(err.message));
tracing.off('span', onSpan);
const stats: TracingStats = tracing.stats();
console.log(stats.spans.exported, tracing.config.stateFile, tracing.httpPort);
void tracing.ready.then(() => tracing.shutdown(5_000));
void tracing.done.catch(() => undefined);
void prefectTracing?.shutdown();
`;

test('a TypeScript service type-checks against the installed package in strict mode, libraries checked too, whatever its module resolution', (t) => {
  const diagnostics: Record<string, string[]> = {};
  // The libraries' declarations are parsed once for all the checks (the same files, through the links).
  const parsed = new Map<string, ts.SourceFile | undefined>();
  const check = (dir: string, file: string, name: string, given: ts.CompilerOptions): void => {
    writeFileSync(join(dir, file), SERVICE);
    const options = { ...given, target: ts.ScriptTarget.ES2022, strict: true, noEmit: true, skipLibCheck: false, types: ['node'], typeRoots: [join(dir, 'node_modules', '@types')] };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (fileName, languageVersion, ...rest) => {
      const key = `${typeof languageVersion === 'object' ? JSON.stringify(languageVersion) : languageVersion}:${fileName}`;
      if (fileName.startsWith(dir) && !fileName.includes('node_modules')) return getSourceFile(fileName, languageVersion, ...rest);
      if (!parsed.has(key)) parsed.set(key, getSourceFile(fileName, languageVersion, ...rest));
      return parsed.get(key);
    };
    const program = ts.createProgram([join(dir, file)], options, host);
    diagnostics[name] = ts.getPreEmitDiagnostics(program).map((d) => `${d.file === undefined ? '' : `${d.file.fileName.slice(dir.length + 1)}: `}${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
  };
  const esm = consumerProject(t, 'module');
  check(esm, 'node16.ts', 'node16', { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 });
  check(esm, 'nodenext.ts', 'nodenext', { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext });
  check(esm, 'bundler.ts', 'bundler', { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler });
  // A CommonJS service: nodenext compiles its imports to require(), which Node >= 20.19 allows for an ES module.
  const cjs = consumerProject(t, 'commonjs');
  check(cjs, 'service.cts', 'nodenext (CommonJS)', { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext });
  // A classic tsconfig as `tsc --init` writes it (`"module": "commonjs"`, whose resolution, node10,
  // reads no `exports`; `esModuleInterop`): the subpath's types are found through `typesVersions`.
  check(cjs, 'classic.ts', 'node10 (CommonJS)', { module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10, esModuleInterop: true });
  assert.deepEqual(diagnostics, { node16: [], nodenext: [], bundler: [], 'nodenext (CommonJS)': [], 'node10 (CommonJS)': [] });
});

test("a CommonJS service require()s the installed package: its exports, and a ConfigError that lists each problem of the options", { skip: process.features.require_module !== true && 'this Node cannot require() an ES module' }, (t) => {
  const dir = consumerProject(t, 'commonjs');
  writeFileSync(join(dir, 'service.js'), [
    "const lib = require('prefect-otel');",
    "const { prefectTracing } = require('prefect-otel/register');",
    'let problems;',
    "try { lib.startPrefectTracing({ env: {}, apiUrl: 'http://prefect:4200/api', setleMs: 100, keepAlive: 'yes' }); } catch (err) { problems = [err instanceof lib.ConfigError, err.code, err.problems]; }",
    'process.stdout.write(JSON.stringify({ exports: Object.keys(lib).sort(), register: prefectTracing === undefined, problems }));',
    '',
  ].join('\n'));
  // Started from the environment by register: switched off here, as an application's telemetry can be.
  const run = spawnSync(process.execPath, ['service.js'], { cwd: dir, encoding: 'utf8', env: { PATH: process.env.PATH ?? '', OTEL_SDK_DISABLED: 'true' } });
  assert.deepEqual(
    { status: run.status, stderr: run.stderr, out: JSON.parse(run.stdout || 'null') as unknown },
    {
      status: 0,
      stderr: '',
      out: {
        exports: ['ATTR', 'AuthError', 'ConfigError', 'ERROR_CODES', 'EXIT_CODES', 'ExportError', 'InputError', 'PrefectOtelError', 'ProtocolError', 'SETTINGS', 'describeConfig', 'parseEvent', 'parseEventText', 'resolveConfig', 'spanIdForRun', 'startPrefectTracing', 'traceIdForRun'],
        register: true,
        problems: [true, 'PREFECT_OTEL_CONFIG', ['option setleMs: not a prefect-otel option, so it would do nothing (did you mean settleMs?)', 'option keepAlive: expected true or false, got a string']],
      },
    },
  );
});
