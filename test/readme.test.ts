import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { COMMAND_USAGE, parseArgs, USAGE } from '../src/cli.js';
import { resolveConfig, type Config } from '../src/config.js';
import { EXIT_CODES } from '../src/errors.js';
import { LAG_METRIC, METRIC_DEFS } from '../src/metric-defs.js';
import { ATTR, CICD_RESULT, SPAN_EVENT } from '../src/model/attributes.js';
import { SETTINGS } from '../src/settings.js';
import { STATE_EXIT_TIMEOUT_MS } from '../src/state/exit-bound.js';
import { BREAKER_FAILURES, BREAKER_PAUSE_MS, NATIVE_SPAN_WAIT_MS } from '../src/source/native-spans.js';
import { GATHER_MS, MAX_BATCH, MAX_IN_FLIGHT, OWNER_LOOKUPS_IN_FLIGHT, OWNER_LOOKUPS_QUEUED_MAX } from '../src/source/run-lookups.js';
import { OWNER_CACHE_MAX } from '../src/model/tracker.js';
import { MAX_EVENT_BYTES, MAX_EVENT_NAME, SKIP_REASONS } from '../src/model/event.js';
import { startCli } from './helpers/cli.js';
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

/** The README's configuration table as a reader sees it, read from the README alone. */
interface ReadmeRow {
  readonly env: readonly string[];
  readonly flag: string;
  readonly option: string;
  /** The default column without its backticks; `—` for none. */
  readonly default: string;
}

function readmeRows(): ReadmeRow[] {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const rows: ReadmeRow[] = [];
  for (const line of readme.split('\n')) {
    const m = /^\| (`[A-Z_]+`(?: \/ `[A-Z_]+`)*) \| `(--[a-z-]+)` \| `(\w+)` \| ([^|]+) \|/.exec(line);
    if (m === null) continue;
    rows.push({ env: [...m[1]!.matchAll(/`([A-Z_]+)`/g)].map((e) => e[1]!), flag: m[2]!, option: m[3]!, default: m[4]!.trim().replace(/^`|`$/g, '') });
  }
  return rows;
}

/** Where each option's value is in force in the resolved configuration. */
const IN_FORCE: Record<string, (c: Config) => unknown> = {
  apiUrl: (c) => c.prefect.apiUrl,
  apiKey: (c) => c.prefect.apiKey,
  authString: (c) => c.prefect.authString,
  clientCustomHeaders: (c) => c.prefect.customHeaders,
  apiSslCertFile: (c) => c.prefect.tls.caFile,
  apiTlsInsecureSkipVerify: (c) => !c.prefect.tls.rejectUnauthorized,
  apiRequestTimeout: (c) => c.prefect.requestTimeoutMs / 1_000,
  uiUrl: (c) => c.prefect.uiUrl,
  prefectProfile: (c) => c.prefect.profileName,
  // The base URL, as each signal's URL shows it once `/v1/<signal>` is taken off again.
  otlpEndpoint: (c) => [c.traces.url.replace(/\/v1\/traces$/, ''), c.logs.url.replace(/\/v1\/logs$/, ''), c.metrics.url.replace(/\/v1\/metrics$/, '')],
  otlpTracesEndpoint: (c) => c.traces.url,
  otlpLogsEndpoint: (c) => c.logs.url,
  otlpMetricsEndpoint: (c) => c.metrics.url,
  otlpHeaders: (c) => [c.traces.headers, c.logs.headers, c.metrics.headers],
  otlpTracesHeaders: (c) => c.traces.headers,
  otlpLogsHeaders: (c) => c.logs.headers,
  otlpMetricsHeaders: (c) => c.metrics.headers,
  otlpProtocol: (c) => [c.traces.protocol, c.logs.protocol, c.metrics.protocol],
  otlpTracesProtocol: (c) => c.traces.protocol,
  otlpLogsProtocol: (c) => c.logs.protocol,
  otlpMetricsProtocol: (c) => c.metrics.protocol,
  otlpCompression: (c) => [c.traces.compression, c.logs.compression, c.metrics.compression],
  otlpTracesCompression: (c) => c.traces.compression,
  otlpLogsCompression: (c) => c.logs.compression,
  otlpMetricsCompression: (c) => c.metrics.compression,
  otlpTimeoutMs: (c) => [c.traces.timeoutMs, c.logs.timeoutMs, c.metrics.timeoutMs],
  otlpTracesTimeoutMs: (c) => c.traces.timeoutMs,
  otlpLogsTimeoutMs: (c) => c.logs.timeoutMs,
  otlpMetricsTimeoutMs: (c) => c.metrics.timeoutMs,
  serviceName: (c) => c.resource.serviceName,
  resourceAttributes: (c) => c.resource.attributes,
  tracesExporter: (c) => c.traces.exporter,
  tracesSampler: (c) => c.sampler.name,
  tracesSamplerArg: (c) => c.sampler.ratio,
  logsExporter: (c) => c.logs.exporter,
  metricsExporter: (c) => c.metrics.exporter,
  metricExportIntervalMs: (c) => c.metrics.intervalMs,
  metricExportTimeoutMs: (c) => c.metrics.exportTimeoutMs,
  otlpMetricsTemporalityPreference: (c) => c.metrics.temporalityPreference,
  stateFile: (c) => c.stateFile,
  jaegerUrl: (c) => c.jaegerUrl,
  logLevel: (c) => c.log.level,
  logFormat: (c) => c.log.format,
  settleMs: (c) => c.model.settleMs,
  taskGraceMs: (c) => c.model.taskGraceMs,
  openRunTimeoutMs: (c) => c.model.openRunTimeoutMs,
  maxOpenRuns: (c) => c.model.maxOpenRuns,
  maxSpanEvents: (c) => c.model.maxSpanEvents,
  attributeValueLengthLimit: (c) => c.model.spanLimits.attributeValueLengthLimit,
  attributeCountLimit: (c) => c.model.spanLimits.attributeCountLimit,
  eventAttributeCountLimit: (c) => c.model.spanLimits.eventAttributeCountLimit,
  linkCountLimit: (c) => c.model.spanLimits.linkCountLimit,
  linkAttributeCountLimit: (c) => c.model.spanLimits.linkAttributeCountLimit,
  logRecordAttributeValueLengthLimit: (c) => c.model.logRecordLimits.attributeValueLengthLimit,
  logRecordAttributeCountLimit: (c) => c.model.logRecordLimits.attributeCountLimit,
  payloadMaxChars: (c) => c.model.payloadMaxChars,
  dedupeWindowMs: (c) => c.model.dedupeWindowMs,
  dedupeMaxIds: (c) => c.model.dedupeMaxIds,
  bufferMaxSpans: (c) => c.delivery.maxSpans,
  bufferMaxBytes: (c) => c.delivery.maxBytes,
  batchSize: (c) => c.delivery.batchSize,
  scheduleDelayMs: (c) => c.delivery.scheduleDelayMs,
  logsBufferMaxRecords: (c) => c.delivery.logs.maxRecords,
  logsBatchSize: (c) => c.delivery.logs.batchSize,
  logsScheduleDelayMs: (c) => c.delivery.logs.scheduleDelayMs,
  exportTimeoutMs: (c) => c.delivery.exportTimeoutMs,
  logsExportTimeoutMs: (c) => c.delivery.logs.exportTimeoutMs,
  resumeMarginMs: (c) => c.live.resumeMarginMs,
  idleTimeoutMs: (c) => c.live.idleTimeoutMs,
  stateFlushMs: (c) => c.live.stateFlushMs,
  stateLeaseMs: (c) => c.live.stateLeaseMs,
  statsIntervalMs: (c) => c.statsIntervalMs,
  httpPort: (c) => c.httpPort,
  httpHost: (c) => c.httpHost,
};

/** A value for each setting other than its default, as a user would write it. */
const SAMPLE: Record<string, string> = {
  apiUrl: 'http://prefect.test:4200/api',
  apiKey: 'pnu_sample',
  authString: 'admin:pass',
  clientCustomHeaders: '{"CF-Access-Client-Id": "id"}',
  apiSslCertFile: fileURLToPath(new URL('test/fixtures/tls/localhost-cert.pem', ROOT)),
  apiTlsInsecureSkipVerify: 'true',
  apiRequestTimeout: '2.5',
  uiUrl: 'http://ui.test:4200',
  otlpEndpoint: 'http://collector.test:4318',
  otlpTracesEndpoint: 'http://collector.test:4318/t',
  otlpLogsEndpoint: 'http://collector.test:4318/l',
  otlpMetricsEndpoint: 'http://collector.test:4318/m',
  otlpHeaders: 'x-team=a',
  otlpTracesHeaders: 'x-team=t',
  otlpLogsHeaders: 'x-team=l',
  otlpMetricsHeaders: 'x-team=m',
  otlpProtocol: 'http/json',
  otlpTracesProtocol: 'http/json',
  otlpLogsProtocol: 'http/json',
  otlpMetricsProtocol: 'http/json',
  otlpCompression: 'gzip',
  otlpTracesCompression: 'gzip',
  otlpLogsCompression: 'gzip',
  otlpMetricsCompression: 'gzip',
  otlpTimeoutMs: '2500',
  otlpTracesTimeoutMs: '2500',
  otlpLogsTimeoutMs: '2500',
  otlpMetricsTimeoutMs: '2500',
  serviceName: 'etl-tracing',
  resourceAttributes: 'deployment.environment.name=prod',
  tracesExporter: 'console',
  tracesSampler: 'traceidratio',
  tracesSamplerArg: '0.25',
  logsExporter: 'otlp',
  metricsExporter: 'otlp',
  otlpMetricsTemporalityPreference: 'delta',
  stateFile: '/var/lib/prefect-otel/state.json',
  jaegerUrl: 'http://jaeger.test:16686',
  logLevel: 'debug',
  logFormat: 'pretty',
  httpPort: '9464',
  httpHost: '127.0.0.1',
  attributeValueLengthLimit: '256',
  attributeCountLimit: '32',
  eventAttributeCountLimit: '16',
  linkCountLimit: '4',
  linkAttributeCountLimit: '8',
  logRecordAttributeValueLengthLimit: '64',
  logRecordAttributeCountLimit: '4',
};

/** The sample for a numeric setting: one more than its default, which every bound allows. */
const sampleFor = (row: ReadmeRow): string => SAMPLE[row.option] ?? String(Number(row.default) + 1);

test("every row of the README's configuration table: its flag is in --help beside its variables and the CLI reads it as the row's option", () => {
  const rows = readmeRows();
  assert.ok(rows.length >= 50, `the configuration table has its rows (found ${rows.length})`);
  const wrong = rows.flatMap((row) => {
    const problems: string[] = [];
    const helpLine = new RegExp(`^  ${row.flag.replace(/-/g, '\\-')} +${row.env.join(' \\| ')}$`, 'm');
    if (!helpLine.test(USAGE)) problems.push(`--help has no line "${row.flag}  ${row.env.join(' | ')}"`);
    // A true/false flag takes the next argument as its value only when it is one (alone, it is true).
    const value = typeof SETTINGS[row.option as keyof typeof SETTINGS]?.default === 'boolean' ? 'false' : 'x';
    for (const argv of [[row.flag, value], [`${row.flag}=${value}`]]) {
      const parsed = parseArgs(argv);
      if (parsed.problems.length > 0 || JSON.stringify(parsed.options) !== JSON.stringify({ [row.option]: value })) {
        problems.push(`${argv.join(' ')} parses as ${JSON.stringify({ options: parsed.options, problems: parsed.problems })}`);
      }
    }
    return problems.map((p) => `${row.flag}: ${p}`);
  });
  assert.deepEqual(wrong, []);
  // And --help lists nothing the table does not.
  const helpFlags = [...USAGE.matchAll(/^ {2}(--[a-z-]+) +[A-Z_]+/gm)].map((m) => m[1]);
  assert.deepEqual(helpFlags, rows.map((r) => r.flag));
});

/**
 * What a row says, in force: the default column is what a run with nothing set uses; the row's
 * flag and each of its variables set the same thing, and that thing is not the default; a blank
 * flag is an error exactly where the row has a default, and clears the setting where it has none (`—`).
 */
test("every row of the README's configuration table is what the configuration in force does", () => {
  const rows = readmeRows();
  assert.deepEqual(rows.map((r) => r.option).sort(), Object.keys(IN_FORCE).sort(), 'every row has its place in the configuration');
  const byDefault = resolveConfig({}, {});
  const wrong = rows.flatMap((row) => {
    const problems: string[] = [];
    const inForce = IN_FORCE[row.option]!;
    const shown = (v: unknown): string => JSON.stringify(v);
    if (row.default !== '—') {
      const actual = inForce(byDefault);
      const values = Array.isArray(actual) ? actual : [actual];
      const asText = values.map((v) => (typeof v === 'boolean' || typeof v === 'number' ? String(v) : v));
      if (!asText.every((v) => v === row.default)) problems.push(`default is ${shown(actual)}, the row says ${row.default}`);
    }
    const sample = sampleFor(row);
    let fromFlag: unknown;
    try {
      fromFlag = inForce(resolveConfig(parseArgs([row.flag, sample]).options, {}));
    } catch (err) {
      problems.push(`${row.flag} ${sample} is refused: ${(err as Error).message}`);
    }
    if (JSON.stringify(fromFlag) === JSON.stringify(inForce(byDefault))) problems.push(`${row.flag} ${sample} changes nothing`);
    for (const name of row.env) {
      let fromEnv: unknown;
      try {
        fromEnv = inForce(resolveConfig({}, { [name]: sample }));
      } catch (err) {
        problems.push(`${name}=${sample} is refused: ${(err as Error).message}`);
      }
      if (JSON.stringify(fromEnv) !== JSON.stringify(fromFlag)) problems.push(`${name}=${sample} gives ${shown(fromEnv)}, ${row.flag} gives ${shown(fromFlag)}`);
    }
    let blankRefused = false;
    try {
      resolveConfig(parseArgs([`${row.flag}=`]).options, {});
    } catch {
      blankRefused = true;
    }
    if (blankRefused !== (row.default !== '—')) problems.push(`a blank ${row.flag}= is ${blankRefused ? 'refused' : 'accepted'}, but the row's default is ${row.default}`);
    return problems.map((p) => `${row.flag}: ${p}`);
  });
  assert.deepEqual(wrong, []);
});

test("the README's exit codes are the CLI's, and --help lists the same", () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const section = readme.slice(readme.indexOf('## Exit codes'), readme.indexOf('## Troubleshooting'));
  const codes = [...section.matchAll(/^\| (\d+)(?: \/ (\d+))? \|/gm)].flatMap((m) => m.slice(1).filter((c) => c !== undefined).map(Number));
  const signalled = ['SIGINT', 'SIGTERM'].map((s) => 128 + osConstants.signals[s as 'SIGINT' | 'SIGTERM']);
  assert.deepEqual(codes, [...Object.values(EXIT_CODES), ...signalled]);
  const helpCodes = [...(/Exit codes: ([^]*)$/.exec(USAGE)?.[1] ?? '').matchAll(/\b(\d+)\b/g)].map((m) => Number(m[1]));
  assert.deepEqual(helpCodes, codes);
});

test("the README's exit statuses of a process ended by a signal are that signal's, and watch --help names the one watch ends itself by", () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const section = readme.slice(readme.indexOf('## Exit codes'), readme.indexOf('## Troubleshooting'));
  const rows = [...section.matchAll(/^\| (\d+) \(ended by (SIG[A-Z]+)\) \|/gm)].map((m) => [Number(m[1]), m[2]!] as const);
  assert.deepEqual(rows.map(([, signal]) => signal), ['SIGHUP', 'SIGKILL']);
  assert.deepEqual(rows.filter(([code, signal]) => code !== 128 + osConstants.signals[signal as NodeJS.Signals]), []);
  assert.ok(COMMAND_USAGE.watch.includes(`SIGKILL (${128 + osConstants.signals.SIGKILL})`), 'watch --help names SIGKILL and its status');
  assert.ok(COMMAND_USAGE.watch.includes(`${STATE_EXIT_TIMEOUT_MS / 1000} s`) && section.includes(`not done ${STATE_EXIT_TIMEOUT_MS / 1000} s after the flush`), 'both give the bound');
});

test('every metric the README names is one prefect-otel serves or exports, under that name', () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const prometheus = new Set([...METRIC_DEFS.map((d) => d.prometheus), LAG_METRIC.prometheus]);
  const otel = new Set([...METRIC_DEFS.flatMap((d) => (d.otel === undefined ? [] : [d.otel])), LAG_METRIC.otel]);
  // The span event prefect-otel names itself shares the `prefect_otel` namespace with its metrics.
  const events = new Set<string>(Object.values(SPAN_EVENT));
  const named = [...new Set([...readme.matchAll(/\b(?:prefect_otel[._][a-z_.]*[a-z]|process_[a-z_]+_bytes)\b/g)].map((m) => m[0]))].filter((n) => !events.has(n));
  assert.deepEqual(named.filter((n) => !(n.includes('.') ? otel : prometheus).has(n)), []);
  // The labels the README shows (`{outcome=…}`) are the metric's label.
  const labelled = [...readme.matchAll(/\b(prefect_otel_[a-z_]+)\{(\w+)=/g)].map((m) => [m[1], m[2]]);
  assert.deepEqual(labelled.filter(([name, label]) => METRIC_DEFS.find((d) => d.prometheus === name)?.label !== label), []);
});

test('every span attribute the README names is one prefect-otel writes, under that name', () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const written = new Set<string>(Object.values(ATTR));
  // `prefect.state.type/name/message` names three attributes; `cicd.pipeline.*` a family.
  const named = [...readme.matchAll(/`((?:prefect|cicd)\.[a-z_.*-]+(?:\/[a-z_-]+)*)(?: = [^`]+)?`/g)].flatMap((m) => {
    const [first, ...rest] = m[1]!.split('/');
    const prefix = first!.slice(0, first!.lastIndexOf('.') + 1);
    return [first!, ...rest.map((leaf) => prefix + leaf)];
  });
  assert.ok(named.length >= 30, `the README names the attributes (found ${named.length})`);
  const unknown = named.filter((n) => (n.endsWith('.*') ? ![...written].some((w) => w.startsWith(n.slice(0, -1))) : !written.has(n)));
  assert.deepEqual([...new Set(unknown)], []);
  // The result values of `cicd.pipeline.*` the README lists are the convention's, as written.
  assert.deepEqual(/result ((?:`\w+`\/?)+)/.exec(readme)?.[1]?.split('/').map((v) => v.replace(/`/g, '')), Object.values(CICD_RESULT));
});

/**
 * "From `npm run demo`": the README's trace is what the demo draws, line for line, and the ids the
 * demo's log lines carry are the ones the README's formula computes (trace id: the root flow run
 * id without dashes; span id: the first 16 hex digits of SHA-256 of the run id).
 */
test("the README's demo trace is the demo's, and the demo's ids follow the README's formula", async () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const block = /From `npm run demo`:\n\n```\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(block !== undefined, 'the demo trace is in the README');
  const r = await startCli(['demo'], {}).result;
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes(block), `the demo draws the README's trace:\n${block}`);
  const traceId = /^trace ([0-9a-f]{32}) /.exec(block)?.[1];
  const logged = [...r.stdout.matchAll(/STLOGGING: (Flow|Task) run ([0-9a-f-]{36}) .* trace_id=([0-9a-f]{32}) span_id=([0-9a-f]{16})$/gm)];
  assert.ok(logged.length >= 3, 'the demo shows log lines with their ids');
  const spanId = (uuid: string): string => createHash('sha256').update(uuid).digest('hex').slice(0, 16);
  assert.deepEqual(
    logged.map((m) => ({ traceId: m[3], spanId: m[4] })),
    logged.map((m) => ({ traceId, spanId: spanId(m[2]!) })),
  );
  // The root flow run's own lines: its id without dashes is the trace id.
  assert.ok(logged.some((m) => m[1] === 'Flow' && m[2]!.replace(/-/g, '') === traceId));
});

/**
 * "with `keepAlive: false` it does not [hold the process open], and `shutdown()` on `beforeExit`
 * flushes": an application that does just that ends by itself once its own work is done, and its
 * shutdown saved the state and released the state file.
 */
// A bound of its own, below the file's: an application held open is then ended by the test's after hook.
test("the README's keepAlive: false with shutdown() on beforeExit: the application ends by itself, its state saved", { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-keepalive-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A port nothing listens on: Prefect is down, the stream keeps retrying in the background.
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const { port } = closed.address() as AddressInfo;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const stateFile = join(dir, 'state.json');
  const app = [
    `import { startPrefectTracing } from ${JSON.stringify(new URL('dist/src/index.js', ROOT).href)};`,
    `const tracing = startPrefectTracing({ apiUrl: 'http://127.0.0.1:${port}/api', tracesExporter: 'none', stateFile: ${JSON.stringify(stateFile)}, keepAlive: false });`,
    "process.once('beforeExit', () => void tracing.shutdown());",
    "setImmediate(() => console.log('application done'));",
  ].join('\n');
  const child = spawn(process.execPath, ['--input-type=module', '-e', app], { env: { PATH: process.env.PATH ?? '' } });
  // An application held open (the sentence untrue) would outlive the test: the test's timeout ends it.
  t.after(() => child.kill());
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  const lines = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { msg: string }).msg);
  assert.deepEqual(
    { code, done: stdout.includes('application done'), last: lines.at(-1), saved: existsSync(stateFile), lockLeft: existsSync(`${stateFile}.lock`) },
    { code: 0, done: true, last: 'stopped', saved: true, lockLeft: false },
  );
});

/**
 * The README's log section against a real run (the demo, its log as JSON): its example lines are
 * the shapes of real STLOGGING messages (`…` standing for the rest of an id, any run name), every
 * STLOGGING record carries the fields it names, and with PREFECT_OTEL_JAEGER_URL exactly the
 * terminal-state lines carry `jaeger_url=<url>/trace/<trace_id>`.
 */
test("the README's log lines are the demo's: message shapes, correlation fields, jaeger_url on terminal-state lines", async () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const section = readme.slice(readme.indexOf('## Logs'), readme.indexOf('## Configuration'));
  const examples = /```\n([\s\S]*?)```/.exec(section)?.[1]?.trim().split('\n') ?? [];
  const carried = /Each line carries ([\s\S]*?), so /.exec(section)?.[1]?.replace(/\([^)]*\)/g, '') ?? '';
  const fields = [...carried.matchAll(/`([\w.]+)`/g)].map((m) => m[1]!);
  assert.ok(examples.length >= 2 && fields.length >= 5, 'the log section has its examples and its field names');
  const jaeger = 'http://jaeger.test:16686';
  const r = await startCli(['demo'], { PREFECT_OTEL_LOG_LEVEL: 'info', PREFECT_OTEL_LOG_FORMAT: 'json', PREFECT_OTEL_JAEGER_URL: jaeger }).result;
  assert.equal(r.code, 0, r.stderr);
  const records = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown> & { msg: string });
  const stlogging = records.filter((l) => l.msg.startsWith('STLOGGING: '));
  assert.ok(stlogging.length > 100, 'the demo logs its transitions');
  const shape = (example: string): RegExp =>
    new RegExp(
      `^${example
        .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
        .replace(/[0-9a-f]{8}-…/g, '[0-9a-f-]{36}')
        .replace(/\\\([a-z]+-[a-z0-9]+\\\)/g, '\\([^)]+\\)')
        .replace(/…/g, '[^ )]+')}$`,
    );
  assert.deepEqual(examples.filter((e) => !stlogging.some((l) => shape(e).test(l.msg))), [], 'every example is the shape of a real line');
  assert.deepEqual(stlogging.filter((l) => !fields.every((f) => typeof l[f] === 'string')).map((l) => l.msg), [], `every line carries ${fields.join(', ')}`);
  const terminal = /state transition: \S+ -> (?:COMPLETED|FAILED|CRASHED|CANCELLED) /;
  assert.deepEqual(
    stlogging.filter((l) => l.jaeger_url !== (terminal.test(l.msg) ? `${jaeger}/trace/${String(l.trace_id)}` : undefined)).map((l) => l.msg),
    [],
  );
});

/** Every string prefect-otel's source writes, a template's `${…}` parts as `\0` (nested templates on their own). */
function sourceStrings(): string[] {
  const strings: string[] = [];
  const walk = (dir: URL): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(new URL(`${entry.name}/`, dir));
      else if (entry.name.endsWith('.ts')) {
        const file = ts.createSourceFile(entry.name, readFileSync(new URL(entry.name, dir), 'utf8'), ts.ScriptTarget.Latest);
        const visit = (node: ts.Node): void => {
          if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) strings.push(node.text);
          else if (ts.isTemplateExpression(node)) strings.push(node.head.text + node.templateSpans.map((s) => `\0${s.literal.text}`).join(''));
          ts.forEachChild(node, visit);
        };
        visit(file);
      }
    }
  };
  walk(new URL('src/', ROOT));
  return strings;
}

/**
 * The log lines and errors the README quotes, each beside a line the code writes: the quote is in
 * the README as given, each of its parts (around `…`) is in that line, and the line is one the
 * source writes (a template's `${…}` standing for any text), so a message reworded in the code
 * shows here as a README to update.
 */
test('every log line and error the README quotes is one prefect-otel writes', () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8').replace(/\s+/g, ' ');
  const quoted: readonly { readonly quote: string; readonly written: string }[] = [
    { quote: '`export of spans failed; retrying`', written: 'export of spans failed; retrying' },
    { quote: '`standby: …`', written: 'standby: another process follows the stream with this state file; taking over when it stops or stops renewing its lock' },
    { quote: '`stopped`', written: 'stopped' },
    { quote: '`log records:`', written: 'log records: 3 exported' },
    { quote: '"refused authentication"', written: 'the Prefect event stream refused authentication (expected auth_success, got "error"): check PREFECT_API_KEY' },
    { quote: '"refused … with HTTP 401/403"', written: 'the Prefect server refused the event-stream upgrade with HTTP 401/403: check PREFECT_API_KEY' },
    { quote: '"Prefect server unreachable"', written: 'Prefect server unreachable, retrying in 500 ms' },
    { quote: '"connecting to the Prefect event stream failed, retrying"', written: 'connecting to the Prefect event stream failed, retrying in 500 ms' },
    { quote: '`app.prefect.cloud` address in the browser, which is refused with the API URL to use', written: 'app.prefect.cloud is the Prefect Cloud web UI, not its API: use https://api.prefect.cloud/api/accounts/<account id>/workspaces/<workspace id>' },
    { quote: '`run look-up in the Prefect API failed`', written: 'run look-up in the Prefect API failed' },
    { quote: '`run first seen leaving a terminal state, and its state history could not be read`', written: 'run first seen leaving a terminal state, and its state history could not be read: numbered as its first rerun (its span id may be one exported before)' },
    { quote: '`run look-ups:`', written: 'run look-ups: the Prefect API refused GET /task_runs/x with HTTP 401: check PREFECT_API_KEY; subflows whose parent is not in the file became roots of their own traces, and runs first seen leaving a terminal state were numbered as their first rerun' },
    { quote: '`no Prefect API there`', written: 'no Prefect API there (PREFECT_API_URL must end in /api): subflows whose parent is not in the file become roots of their own traces' },
    { quote: '`could not write the state file`', written: 'could not write the state file' },
    { quote: '`the state file is written again`', written: 'the state file is written again' },
    { quote: '`a save of the state file has not finished for 10 s: its file system does not answer; …`', written: 'a save of the state file has not finished for 10 s: its file system does not answer; no save is started until it does, and a restart meanwhile resumes from the last complete save' },
    { quote: "`the state file's file system answers again`", written: "the state file's file system answers again" },
    { quote: '`exports to the collector are failing`', written: 'exports to the collector are failing' },
    { quote: '`final metrics export failed`', written: 'final metrics export failed' },
  ];
  // A template made mostly of `${…}` (`${a}: ${b}`) would match any line: the source's own text must be 12 characters or the whole line.
  const templates = sourceStrings().map((s) => ({ pattern: new RegExp(`^${s.split('\0').map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^]*')}$`), own: s.replace(/\0/g, '').length }));
  const problems = quoted.flatMap(({ quote, written }) => [
    ...(readme.includes(quote) ? [] : [`the README no longer quotes ${quote}`]),
    ...quote.replace(/^[`"]|[`"]$/g, '').split(/ ?… ?/).filter((part) => !written.includes(part.replace(/^`|`.*$/g, ''))).map((part) => `"${part}" is not in "${written}"`),
    ...(templates.some((t) => t.own >= Math.min(12, written.length) && t.pattern.test(written)) ? [] : [`the source writes no line "${written}"`]),
  ]);
  assert.deepEqual(problems, []);
});

/**
 * The bounds the README states in numbers are the code's: the subflow parent lookups, the state-history
 * lookups of a rerun's number, the batched flow-run lookups of Prefect's own spans, the length kept of
 * names and the length of a replayed line.
 */
test("the README's lookup and length bounds are the code's", () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8').replace(/\s+/g, ' ');
  const words: Readonly<Record<string, number>> = { two: 2, three: 3, four: 4, five: 5 };
  const number = (text: string | undefined): number | undefined => (text === undefined ? undefined : (words[text] ?? Number(text.replace(/,/g, ''))));
  const stated = (pattern: RegExp): (number | undefined)[] => pattern.exec(readme)?.slice(1).map(number) ?? [undefined];
  assert.deepEqual(
    {
      parentLookups: stated(/`GET \/api\/task_runs\/\{id\}`, its last ([\d,]+) answers cached, at most (\w+) requests at a time and ([\d,]+) waiting/),
      historyLookups: stated(/`GET \/api\/task_run_states\/\?task_run_id=\{id\}` for a task run\), at most (\w+) requests at a time and ([\d,]+) waiting/),
      nativeBatch: stated(/Runs asked within (\d+) ms of each other share one `POST \/api\/flow_runs\/filter` \(by id, up to (\d+) runs per request, at most (\w+) requests at a time\)/),
      nativeWaitS: stated(/a finished flow span waits for it at most (\d+) s past/),
      breaker: stated(/after (\w+) connection failures in a row, lookups pause for (\d+) s/),
      nameChars: stated(/`prefect\.event\.resource\.id\/name` \(each at most ([\d,]+) characters/),
      lineMiB: stated(/a line holds at most (\d+) MiB \(([\d,]+) bytes of UTF-8/),
    },
    {
      parentLookups: [OWNER_CACHE_MAX, OWNER_LOOKUPS_IN_FLIGHT, OWNER_LOOKUPS_QUEUED_MAX],
      historyLookups: [OWNER_LOOKUPS_IN_FLIGHT, OWNER_LOOKUPS_QUEUED_MAX],
      nativeBatch: [GATHER_MS, MAX_BATCH, MAX_IN_FLIGHT],
      nativeWaitS: [NATIVE_SPAN_WAIT_MS / 1000],
      breaker: [BREAKER_FAILURES, BREAKER_PAUSE_MS / 1000],
      nameChars: [MAX_EVENT_NAME],
      lineMiB: [MAX_EVENT_BYTES / (1024 * 1024), MAX_EVENT_BYTES],
    },
  );
});

/** The README's headings outside code blocks, as GitHub makes their anchors (lower case, punctuation dropped, spaces as `-`, repeats numbered). */
function headingAnchors(readme: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let inCode = false;
  for (const line of readme.split('\n')) {
    if (line.startsWith('```')) inCode = !inCode;
    const heading = inCode ? null : /^#{1,6} (.+?) *#*$/.exec(line);
    if (heading === null) continue;
    const slug = heading[1]!.toLowerCase().replace(/[^\p{L}\p{N}\p{M} _-]/gu, '').replace(/ /g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return anchors;
}

test('every link inside the README leads somewhere: an anchor to one of its headings, a path to a file of the repository', () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const anchors = headingAnchors(readme);
  const targets = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((t) => !/^[a-z]+:/.test(t));
  assert.ok(targets.filter((t) => t.startsWith('#')).length >= 10, `the README links its sections (found ${targets.length} links)`);
  const broken = targets.filter((t) => (t.startsWith('#') ? !anchors.has(t.slice(1)) : !existsSync(new URL(t.split('#')[0]!, ROOT))));
  assert.deepEqual(broken, [], `headings: ${[...anchors].join(', ')}`);
});

/** The text of every source file under src/. */
function sourceText(): string {
  const parts: string[] = [];
  const walk = (dir: URL): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(new URL(`${entry.name}/`, dir));
      else if (entry.name.endsWith('.ts')) parts.push(readFileSync(new URL(entry.name, dir), 'utf8'));
    }
  };
  walk(new URL('src/', ROOT));
  return parts.join('\n');
}

/**
 * The `kind` of log lines, the reasons a span ends incomplete and the skip reasons the README names
 * are the code's: each named `kind` is one the code writes, the incomplete reasons it lists are
 * exactly those a run is ended with, and a skip reason it names is one `/metrics` counts.
 */
test("the log lines' kinds, the incomplete reasons and the skip reasons the README names are the code's", () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8').replace(/\s+/g, ' ');
  const source = sourceText();
  const kinds = new Set([...source.matchAll(/\bkind: '([a-z_]+)'/g)].map((m) => m[1]!));
  const namedKinds = [
    ...[...readme.matchAll(/`kind` `([a-z_]+)`/g)].map((m) => m[1]!),
    ...[...readme.matchAll(/with a warning \(((?:`[a-z_]+`(?:, )?)+)\)/g)].flatMap((m) => [...m[1]!.matchAll(/`([a-z_]+)`/g)].map((k) => k[1]!)),
  ];
  assert.ok(namedKinds.length >= 3, `the README names kinds (found ${namedKinds.join(', ')})`);
  assert.deepEqual(namedKinds.filter((k) => !kinds.has(k)), []);
  // A run is ended incomplete by `finalize(run, reason…)` in the model, and `finish(reason)` at the end of replay's input.
  const written = new Set([...source.matchAll(/\b(?:finalize|finish)\(([^;]*)\)/g)].flatMap((m) => [...m[1]!.matchAll(/'([a-z_]+)'/g)].map((r) => r[1]!)));
  const listed = /`prefect\.run\.incomplete_reason`: (.*?)\. /.exec(readme)?.[1] ?? '';
  const commands = new Set(['watch', 'replay', 'demo']);
  assert.deepEqual([...listed.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!).filter((r) => !commands.has(r)).sort(), [...written].sort());
  const skip = /an `occurred` outside that is `([a-z_]+)`/.exec(readme)?.[1];
  assert.ok(skip !== undefined && (SKIP_REASONS as readonly string[]).includes(skip), `${String(skip)} is a skip reason`);
});

/**
 * The README's commands, as package.json defines them: `npm ci` builds dist/ (its `prepare` is the
 * build), `npm run demo` runs the bin's `demo`, `npm test` builds and runs the tests in dist/test/,
 * `node dist/src/cli.js` is the `prefect-otel` bin, and every `npm run <script>` named is a script.
 */
test("the README's set-up commands are package.json's scripts", () => {
  const readme = readFileSync(new URL('README.md', ROOT), 'utf8');
  const pkg = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as { scripts: Record<string, string>; bin: Record<string, string> };
  const first = /```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  assert.match(first, /^npm ci && npm run demo /m);
  assert.match(first, /^npm ci && npm test /m);
  const build = 'tsc -p tsconfig.json';
  const bin = pkg.bin['prefect-otel'];
  assert.deepEqual(
    {
      prepare: pkg.scripts.prepare, build: pkg.scripts.build, demo: pkg.scripts.demo,
      test: /^(.*?) && node --test\b.* (\S+)$/.exec(pkg.scripts.test ?? '')?.slice(1),
      cli: [...readme.matchAll(/\bnode (dist\/src\/\S+\.js)/g)].map((m) => m[1]).filter((f) => f !== bin),
      unknown: [...readme.matchAll(/\bnpm run ([a-z:-]+)/g)].map((m) => m[1]!).filter((name) => pkg.scripts[name] === undefined),
    },
    { prepare: build, build, demo: `node ${bin!} demo`, test: [build, 'dist/test/'], cli: [], unknown: [] },
  );
});
