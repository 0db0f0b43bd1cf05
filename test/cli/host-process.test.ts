/**
 * `node --import prefect-otel/register` never keeps its host alive: when the application's own work
 * is done the process exits 0 by itself, with state saved and spans flushed, whether Prefect is up
 * (a live socket) or down (a reconnect backoff), and with the health server listening.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { closedPort, FAST, liveConnections, logLines, replaySpans, shape, startServers, tempDir, until, workload } from '../helpers/watch-e2e.js';

/** The package root (dist/test/cli → ../../..). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** The module `--import prefect-otel/register` loads, by its file URL (the apps live outside the package). */
const REGISTER_URL = JSON.stringify(new URL('dist/src/register.js', `file://${ROOT}`).href);
/** Only a guard against a hang: a process that exits does so within a second or two. */
const EXIT_GUARD_MS = 30_000;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Run `node --import prefect-otel/register <app>` and collect its output and how it ended. */
function runHost(app: string, env: Record<string, string>, t: { after: (fn: () => void) => void }, options: { readonly closeStdout?: boolean } = {}) {
  const child = spawn(process.execPath, ['--import', 'prefect-otel/register', app], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...FAST, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  // A reader that goes away after the first output (`app | head -1`).
  if (options.closeStdout === true) child.stdout.once('data', () => child.stdout.destroy());
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = async (): Promise<Exit | 'still running'> => {
    let timer: NodeJS.Timeout | undefined;
    const guard = new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), EXIT_GUARD_MS)));
    const r = await Promise.race([closed, guard]);
    clearTimeout(timer);
    return r;
  };
  return { exited, kill: (signal: NodeJS.Signals) => child.kill(signal), stdout: () => stdout, stderr: () => stderr };
}

/**
 * A host application streaming `runs` runs: its `app.mjs` (and any other files it needs, in the
 * same directory) run under `node --import prefect-otel/register`, told how many spans to expect in
 * WANT_SPANS; once it has subscribed, the runs' events are published.
 */
async function streamToHost(
  t: TestContext, runs: number, app: readonly string[], files: Record<string, readonly string[]> = {}, env: Record<string, string> = {},
  options: { readonly closeStdout?: boolean; readonly beforePublish?: (host: ReturnType<typeof runHost>) => Promise<void> } = {},
) {
  const w = workload(runs);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const dir = tempDir();
  const stateFile = join(dir, 'state.json');
  for (const [name, lines] of Object.entries({ ...files, 'app.mjs': app })) writeFileSync(join(dir, name), [...lines, ''].join('\n'));
  const host = runHost(join(dir, 'app.mjs'), { WANT_SPANS: String(w.runs.size), PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: stateFile, ...env }, t, options);
  await until('subscription', () => liveConnections(prefect) === 1, 10_000, host.stderr);
  await options.beforePublish?.(host);
  prefect.publish(w.events);
  return { w, prefect, receiver, host, stateFile };
}

test('register: a host that finishes while Prefect streams runs exits 0 by itself; its spans reach the collector and the state is saved', async (t) => {
  // The host's own work: wait until it has seen every run's span, then stop its own timer and finish.
  const { w, prefect, receiver, host, stateFile } = await streamToHost(t, 2, [
    `import { prefectTracing } from ${REGISTER_URL};`,
    'const keep = setInterval(() => undefined, 1 << 30);',
    'let seen = 0;',
    "prefectTracing.on('span', () => {",
    "  if (++seen === Number(process.env.WANT_SPANS)) { clearInterval(keep); process.stdout.write('app done\\n'); }",
    '});',
  ]);

  const exit = await host.exited();
  assert.deepEqual(exit, { code: 0, signal: null }, `stdout: ${host.stdout().slice(-2000)}\nstderr: ${host.stderr()}`);
  const msgs = logLines(host.stdout()).map((l) => l.msg);
  assert.deepEqual(
    { appDone: host.stdout().includes('app done\n'), stopped: msgs.includes('stopped'), stateSaved: existsSync(stateFile) },
    { appDone: true, stopped: true, stateSaved: true },
  );
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
});

test('register with pretty log lines: a reader of standard output that goes away (app | head -1) does not end the host; it finishes its work and exits 0, spans delivered', async (t) => {
  const { receiver, host, w } = await streamToHost(
    t,
    2,
    [
      `import { prefectTracing } from ${REGISTER_URL};`,
      'const keep = setInterval(() => undefined, 1 << 30);',
      'let seen = 0;',
      "prefectTracing.on('span', () => {",
      "  if (++seen === Number(process.env.WANT_SPANS)) { clearInterval(keep); process.stderr.write('app done\\n'); }",
      '});',
    ],
    {},
    { PREFECT_OTEL_LOG_FORMAT: 'pretty' },
    { closeStdout: true },
  );
  const exit = await host.exited();
  assert.deepEqual({ exit, appDone: host.stderr().includes('app done\n') }, { exit: { code: 0, signal: null }, appDone: true }, host.stderr());
  assert.equal(receiver.spans().length, w.runs.size);
});

test('register: only the main thread runs prefect-otel; worker threads, the application\'s and its own export thread, start no second instance', async (t) => {
  // Once every span is out (prefect-otel's export thread has started by then), the app starts its worker, hears it and finishes.
  const app = [
    "import { Worker } from 'node:worker_threads';",
    `import { prefectTracing } from ${REGISTER_URL};`,
    'const keep = setInterval(() => undefined, 1 << 30);',
    'let seen = 0;',
    "prefectTracing.on('span', () => {",
    '  if (++seen !== Number(process.env.WANT_SPANS)) return;',
    "  const worker = new Worker(new URL('./worker.mjs', import.meta.url));",
    "  worker.once('message', (m) => { process.stdout.write(`worker: ${m}\\n`); clearInterval(keep); });",
    '});',
  ];
  // The application's own worker thread, started from a file as a worker pool does: Node runs the
  // `--import` there too. It reports whether prefect-otel started in it.
  const worker = [
    "import { parentPort } from 'node:worker_threads';",
    `import { prefectTracing } from ${REGISTER_URL};`,
    "parentPort.postMessage(prefectTracing === undefined ? 'no instance' : 'an instance');",
  ];
  const { w, prefect, receiver, host } = await streamToHost(t, 2, app, { 'worker.mjs': worker });

  const exit = await host.exited();
  assert.deepEqual(exit, { code: 0, signal: null }, `stdout: ${host.stdout().slice(-2000)}\nstderr: ${host.stderr()}`);
  const msgs = logLines(host.stdout()).map((l) => l.msg);
  assert.deepEqual(
    {
      worker: /^worker: (.*)$/m.exec(host.stdout())?.[1],
      starts: msgs.filter((m) => m === 'prefect-otel starting').length,
      stops: msgs.filter((m) => m === 'stopped').length,
      subscriptions: prefect.connections.length,
      stateErrors: msgs.filter((m) => m === 'could not write the state file').length,
    },
    { worker: 'no instance', starts: 1, stops: 1, subscriptions: 1, stateErrors: 0 },
  );
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
});

/** An application that only imports `prefect-otel/register` and prints whether it started an instance. */
function instanceProbeApp(dir: string): string {
  const app = join(dir, 'app.mjs');
  writeFileSync(
    app,
    [
      `import { prefectTracing } from ${REGISTER_URL};`,
      "process.stdout.write(prefectTracing === undefined ? 'no instance\\n' : 'an instance\\n');",
      '',
    ].join('\n'),
  );
  return app;
}

test('register: OTEL_SDK_DISABLED=true (any case) switches it off, as it does every OpenTelemetry SDK the application loads', async (t) => {
  const { prefect, receiver } = await startServers(t);
  const dir = tempDir();
  const stateFile = join(dir, 'state.json');
  const app = instanceProbeApp(dir);
  const host = runHost(app, { OTEL_SDK_DISABLED: 'True', PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: stateFile }, t);
  const exit = await host.exited();
  assert.deepEqual(
    { exit, stdout: host.stdout(), stderr: host.stderr(), upgrades: prefect.upgrades.length, requests: receiver.requests.length, stateSaved: existsSync(stateFile) },
    { exit: { code: 0, signal: null }, stdout: 'no instance\n', stderr: '', upgrades: 0, requests: 0, stateSaved: false },
  );
});

test('register: a configuration with problems and warnings lists them all on standard error and starts nothing; the host runs on and exits 0', async (t) => {
  const dir = tempDir();
  const app = instanceProbeApp(dir);
  const host = runHost(app, { PREFECT_OTEL_SETTLE_MS: 'abc', OTEL_EXPORTER_OTLP_TIMEOUT: 'soon', PREFECT_OTEL_STATE_FILE: join(dir, 'state.json') }, t);
  const exit = await host.exited();
  assert.deepEqual(
    { exit, stdout: host.stdout(), stderr: host.stderr() },
    {
      exit: { code: 0, signal: null },
      stdout: 'no instance\n',
      stderr: [
        'prefect-otel/register: invalid configuration:',
        '  - PREFECT_OTEL_SETTLE_MS: expected a whole number ms, got "abc"',
        'also (warnings):',
        '  - OTEL_EXPORTER_OTLP_TIMEOUT: expected a whole number ms, got "soon"; using the default (10000)',
        '',
      ].join('\n'),
    },
  );
});

test('register: a state file set that cannot be used, found only once it starts, is said on standard error too; the host runs on and exits 0', async (t) => {
  const dir = tempDir();
  writeFileSync(join(dir, 'app.mjs'), "setTimeout(() => process.stdout.write('app done\\n'), 300);\n");
  const host = runHost(join(dir, 'app.mjs'), { PREFECT_API_URL: `http://127.0.0.1:${await closedPort()}/api`, PREFECT_OTEL_STATE_FILE: '/proc/prefect-otel/state.json' }, t);
  const exit = await host.exited();
  assert.deepEqual(
    { exit, app: host.stdout().split('\n').filter((l) => l.startsWith('app ')), stderr: host.stderr() },
    {
      exit: { code: 0, signal: null },
      app: ['app done'],
      stderr: [
        'prefect-otel/register: invalid configuration:',
        '  - PREFECT_OTEL_STATE_FILE: cannot use the state file /proc/prefect-otel/state.json: the directory /proc/prefect-otel cannot be made (a file system that cannot hold it, such as /proc)',
        '',
      ].join('\n'),
    },
  );
});

test('register: a host that finishes while Prefect is down (reconnect backoff) and the health server listens exits 0 by itself', async (t) => {
  const dir = tempDir();
  const stateFile = join(dir, 'state.json');
  const app = join(dir, 'app.mjs');
  writeFileSync(app, "process.stdout.write('app done\\n');\n");
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const host = runHost(
    app,
    {
      PREFECT_API_URL: `http://127.0.0.1:${await closedPort()}/api`,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      PREFECT_OTEL_STATE_FILE: stateFile,
      PREFECT_OTEL_HTTP_PORT: '0',
    },
    t,
  );
  const exit = await host.exited();
  assert.deepEqual(exit, { code: 0, signal: null }, `stdout: ${host.stdout().slice(-2000)}\nstderr: ${host.stderr()}`);
  const msgs = logLines(host.stdout()).map((l) => l.msg);
  assert.deepEqual(
    { appDone: host.stdout().includes('app done\n'), health: msgs.includes('serving /healthz, /livez and /metrics'), stopped: msgs.includes('stopped'), stateSaved: existsSync(stateFile) },
    { appDone: true, health: true, stopped: true, stateSaved: true },
  );
});

test("register: SIGTERM to a host that stops gracefully from its own `process.once('SIGTERM')` handler: the application finishes its stop and exits 0; spans and state are saved", async (t) => {
  // The host's own graceful stop outlasts prefect-otel's: it waits for prefect-otel to be done, then
  // for work of its own (draining connections, say), then lets the process end.
  const { w, prefect, receiver, host, stateFile } = await streamToHost(t, 1, [
    `import { prefectTracing } from ${REGISTER_URL};`,
    'const keep = setInterval(() => undefined, 1 << 30);',
    "process.once('SIGTERM', () => {",
    "  process.stdout.write('app stopping\\n');",
    '  void prefectTracing.done.then(() => new Promise((r) => setTimeout(r, 300))).then(() => {',
    "    process.stdout.write('app stopped\\n');",
    '    clearInterval(keep);',
    '  });',
    '});',
    'let seen = 0;',
    "prefectTracing.on('span', () => { if (++seen === Number(process.env.WANT_SPANS)) process.stdout.write('app saw every span\\n'); });",
  ]);
  await until('every span seen', () => host.stdout().includes('app saw every span\n'), 10_000, host.stderr);
  host.kill('SIGTERM');

  const exit = await host.exited();
  const msgs = logLines(host.stdout()).map((l) => l.msg);
  assert.deepEqual(
    {
      exit,
      app: host.stdout().split('\n').filter((l) => l.startsWith('app ')),
      stops: msgs.filter((m) => m === 'stopped').length,
      stateSaved: existsSync(stateFile),
      lockLeft: existsSync(`${stateFile}.lock`),
    },
    { exit: { code: 0, signal: null }, app: ['app saw every span', 'app stopping', 'app stopped'], stops: 1, stateSaved: true, lockLeft: false },
    `stdout: ${host.stdout().slice(-2000)}\nstderr: ${host.stderr()}`,
  );
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
});

test('register: a SIGHUP the application handles itself (a reload) leaves prefect-otel running: runs that come after it are traced; SIGTERM then stops both', async (t) => {
  const { w, prefect, receiver, host } = await streamToHost(t, 1, [
    `import { prefectTracing } from ${REGISTER_URL};`,
    'const keep = setInterval(() => undefined, 1 << 30);',
    "process.on('SIGHUP', () => process.stdout.write('app reloaded\\n'));",
    "process.once('SIGTERM', () => void prefectTracing.done.then(() => clearInterval(keep)));",
    'let seen = 0;',
    "prefectTracing.on('span', () => { if (++seen === Number(process.env.WANT_SPANS)) process.stdout.write('app saw every span\\n'); });",
  ], {}, {}, {
    // The runs come after the reload.
    beforePublish: async (h) => {
      h.kill('SIGHUP');
      await until('the reload', () => h.stdout().includes('app reloaded\n'), 10_000, h.stderr);
    },
  });
  await until('every span seen', () => host.stdout().includes('app saw every span\n'), 10_000, host.stderr);
  host.kill('SIGTERM');

  const exit = await host.exited();
  const msgs = logLines(host.stdout()).map((l) => l.msg);
  assert.deepEqual(
    {
      exit,
      app: host.stdout().split('\n').filter((l) => l.startsWith('app ')),
      shutdowns: msgs.filter((m) => typeof m === 'string' && m.startsWith('shutting down')).length,
      connections: prefect.connections.length,
    },
    { exit: { code: 0, signal: null }, app: ['app reloaded', 'app saw every span'], shutdowns: 1, connections: 1 },
    `stdout: ${host.stdout().slice(-2000)}\nstderr: ${host.stderr()}`,
  );
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
});

for (const [api, dir] of [['the same OpenTelemetry API as prefect-otel', '@opentelemetry/api'], ['an older OpenTelemetry API (1.8) than prefect-otel\'s', 'otel-api-1.8']] as const) {
test(`register: inside an application whose own instrumentation, on ${api}, is loaded with --import (it runs in every thread), prefect-otel's requests are suppressed for it, in the main thread and in the export thread`, async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const tmp = tempDir();
  // What an HTTP client instrumentation loaded with `--import` does in each thread: register a
  // context manager and trace each request unless tracing is suppressed. It says so on stderr.
  const instrument = join(tmp, 'instrument.mjs');
  writeFileSync(
    instrument,
    [
      "import { AsyncLocalStorage } from 'node:async_hooks';",
      "import { subscribe } from 'node:diagnostics_channel';",
      "import { writeSync } from 'node:fs';",
      "import { isMainThread } from 'node:worker_threads';",
      `import { context, ROOT_CONTEXT } from ${JSON.stringify(new URL(`node_modules/${dir}/build/src/index.js`, `file://${ROOT}`).href)};`,
      `import { isTracingSuppressed } from ${JSON.stringify(new URL('node_modules/@opentelemetry/core/build/src/index.js', `file://${ROOT}`).href)};`,
      'const als = new AsyncLocalStorage();',
      'context.setGlobalContextManager({ active: () => als.getStore() ?? ROOT_CONTEXT, with: (ctx, fn, self, ...args) => als.run(ctx, () => fn.call(self, ...args)), bind: (_c, f) => f, enable() { return this; }, disable() { return this; } });',
      "subscribe('http.client.request.start', ({ request }) => {",
      "  writeSync(2, `request ${isMainThread ? 'main' : 'worker'} ${request.path.split('?')[0].replace(/[0-9a-f-]{36}/, 'ID')} ${isTracingSuppressed(context.active()) ? 'suppressed' : 'traced'}\\n`);",
      '});',
      '',
    ].join('\n'),
  );
  const app = join(tmp, 'app.mjs');
  writeFileSync(
    app,
    [
      `import { prefectTracing } from ${REGISTER_URL};`,
      'const keep = setInterval(() => undefined, 1 << 30);',
      'let seen = 0;',
      "prefectTracing.on('span', () => { if (++seen === Number(process.env.WANT_SPANS)) clearInterval(keep); });",
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, ['--import', instrument, '--import', 'prefect-otel/register', app], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', ...FAST, WANT_SPANS: String(w.runs.size), PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_STATE_FILE: join(tmp, 'state.json') },
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.resume();
  const closed = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  t.after(() => void (child.exitCode === null && child.signalCode === null && child.kill('SIGKILL')));
  await until('subscription', () => liveConnections(prefect) === 1, 10_000, () => stderr);
  prefect.publish(w.events);
  const exit = await closed;
  const seen = [...new Set(stderr.split('\n').filter((l) => l.startsWith('request ')))].sort();
  assert.deepEqual(
    { exit, seen },
    {
      exit: { code: 0, signal: null },
      seen: ['request main /api/events/out suppressed', ...seen.filter((l) => l.startsWith('request main /api/') && l !== 'request main /api/events/out suppressed' && l.endsWith(' suppressed')), 'request worker /v1/traces suppressed'].sort(),
    },
    stderr,
  );
  assert.ok(seen.some((l) => /^request main \/api\/(task|flow)_runs\//.test(l)), stderr);
  assert.equal(receiver.spans().length, w.runs.size);
});
}
