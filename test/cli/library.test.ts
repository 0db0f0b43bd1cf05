/**
 * The library inside a Node process: `startPrefectTracing()` with span hooks and the `span` event,
 * and `node --import prefect-otel/register` from the environment alone, both against the fake
 * Prefect server and the decoding OTLP receiver.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import { pino } from 'pino';
import { AuthError, ConfigError, describeConfig, startPrefectTracing, type SpanRecord } from '../../src/index.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { FAST, liveConnections, logLines, replaySpans, shape, tempDir, until, workload } from '../helpers/watch-e2e.js';
import { errMessage } from '../helpers/log-err.js';

/** The package root (dist/test/cli → ../../..). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The package's entry point as a JSON string, for a host app's `await import(…)`. */
const INDEX = JSON.stringify(new URL('dist/src/index.js', `file://${ROOT}`).href);

/**
 * A host app, its lines written to `dir` as an ES module and started with Node's defaults and
 * nothing of this environment but PATH; its output gathered as it comes.
 */
function startHostApp(dir: string, lines: string[]) {
  const app = join(dir, 'app.mjs');
  writeFileSync(app, [...lines, ''].join('\n'));
  const child = spawn(process.execPath, [app], { cwd: dir, env: { PATH: process.env.PATH ?? '' } });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, out, exited };
}

function captureLogger() {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines: () => logLines(text) };
}

test('library: a span hook renames and adds attributes; a throwing hook is logged and counted, its span goes out unchanged', async (t) => {
  const w = workload(3);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  const { logger, lines } = captureLogger();
  const [bad] = [...w.runs].find(([, name]) => name === 'load')!;
  const tracing = startPrefectTracing({
    env: {},
    logger,
    apiUrl: prefect.url,
    otlpEndpoint: receiver.url,
    stateFile: join(tempDir(), 'state.json'),
    settleMs: 100,
    statsIntervalMs: 0,
    hooks: {
      span: (s) => {
        if (s.run.id === bad) throw new Error('hook failed on purpose');
        s.name = `etl/${s.name}`;
        s.attributes['team'] = 'data';
      },
    },
  });
  t.after(async () => {
    await tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  const emitted: SpanRecord[] = [];
  tracing.on('span', (s) => emitted.push(s));
  await tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);

  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  const expected = (spans: ReceivedSpan[]) =>
    shape(spans).map((s) => (s.attributes['prefect.run.id'] === bad ? s : { ...s, name: `etl/${s.name}`, attributes: { ...s.attributes, team: 'data' } }));
  assert.deepEqual(shape(receiver.spans()), expected(await replaySpans(w.events, prefect.url)));
  assert.deepEqual(
    emitted.map((s) => [s.spanId, s.name, s.attributes['team']]).sort(),
    receiver.spans().map((s) => [s.spanId, s.name, s.attributes['team']]).sort(),
    'the span event carries each exported span, after hooks',
  );
  const hookLogs = lines().filter((l) => l.msg === 'span hook threw; span exported unchanged');
  assert.deepEqual(
    hookLogs.map((l) => ({ level: l.level, run: l['prefect.run.id'], err: (l.err as { message: string }).message })),
    [{ level: 50, run: bad, err: 'hook failed on purpose' }],
  );
  assert.equal(tracing.stats().spans.hookErrors, 1);

  // The handle keeps working after the hook threw: a second workload goes out renamed too.
  const more = workload(1);
  for (const r of more.taskRuns) prefect.addTaskRun(r);
  prefect.publish(more.events);
  await receiver.waitForSpans(w.runs.size + more.runs.size);
  const later = receiver.spans().filter((s) => more.runs.has(s.attributes['prefect.run.id'] as string));
  assert.deepEqual(later.map((s) => [s.name, s.attributes['team']]).sort(), [...more.runs.values()].map((n) => [`etl/${n}`, 'data']).sort());
  // A timeout that is no number of ms (from untyped code) would wait forever for a collector that
  // is down: refused, and nothing stops; a good one then stops it.
  await assert.rejects(tracing.shutdown(Number.NaN), { name: 'TypeError', message: 'shutdown(timeoutMs): expected a number of ms >= 0, got NaN' });
  await assert.rejects(tracing.shutdown('5000' as unknown as number), { name: 'TypeError', message: 'shutdown(timeoutMs): expected a number of ms >= 0, got string' });
  assert.equal(tracing.stats().stopping, false);
  await tracing.shutdown();
  await tracing.done;
  assert.deepEqual(
    { hookErrors: tracing.stats().spans.hookErrors, exported: tracing.stats().spans.exported, emitted: emitted.length },
    { hookErrors: 1, exported: w.runs.size + more.runs.size, emitted: w.runs.size + more.runs.size },
  );
});

test('library: an async span hook is not awaited and its rejection never reaches the host as an unhandled one: logged and counted, the span goes out with what the hook set before it awaited', async (t) => {
  const w = workload(2);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  const dir = tempDir();
  // A host with Node's default for an unhandled rejection: the process ends with it.
  const { child, out, exited } = startHostApp(dir, [
    `const { startPrefectTracing } = await import(${INDEX});`,
    `const tracing = startPrefectTracing({ env: {}, apiUrl: ${JSON.stringify(prefect.url)}, otlpEndpoint: ${JSON.stringify(receiver.url)}, stateFile: ${JSON.stringify(join(dir, 'state.json'))}, settleMs: 100, statsIntervalMs: 0,`,
    "  hooks: { span: async (s) => { s.attributes['before'] = 'set'; await new Promise((r) => setTimeout(r, 5)); s.attributes['after'] = 'set'; s.name = 'renamed late'; throw new Error('hook failed after its await'); } } });",
    "process.stdin.once('data', async () => { await tracing.shutdown(); process.stderr.write(JSON.stringify({ hookErrors: tracing.stats().spans.hookErrors })); process.stdin.destroy(); });",
  ]);
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await receiver.close();
    await prefect.close();
  });
  await until('subscription', () => liveConnections(prefect) === 1, 10_000, () => out.stderr);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  // Every hook has rejected by now (5 ms after each span), or the host is gone.
  await until('every hook rejected', () => logLines(out.stdout).filter((l) => String(l.msg).startsWith('span hook rejected')).length === w.runs.size || child.exitCode !== null, 10_000, () => out.stderr);
  child.stdin.write('stop\n');
  assert.deepEqual({ code: await exited, stderr: out.stderr }, { code: 0, stderr: JSON.stringify({ hookErrors: w.runs.size }) });
  assert.deepEqual(
    receiver.spans().map((s) => [s.attributes['prefect.run.id'], s.name, s.attributes['before'], s.attributes['after']]).sort(),
    [...w.runs].map(([id, name]) => [id, name, 'set', undefined]).sort(),
  );
  const said = logLines(out.stdout).filter((l) => String(l.msg).startsWith('span hook'));
  assert.deepEqual(
    said.map((l) => [l.level, l.msg, (l.err as { message?: string } | undefined)?.message, l['prefect.run.id']]).sort(),
    [
      [40, 'span hook returned a promise: hooks run synchronously, what it changes after it awaits is not exported', undefined, undefined],
      ...[...w.runs.keys()].map((id) => [50, 'span hook rejected; span exported with what it changed before it awaited', 'hook failed after its await', id]),
    ].sort(),
  );
});

test('library: async span and status listeners that reject are logged and ignored, as listeners that throw are; every span is delivered and the host goes on', async (t) => {
  const w = workload(1);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  const { logger, lines } = captureLogger();
  const tracing = startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, otlpEndpoint: receiver.url, stateFile: join(tempDir(), 'state.json'), settleMs: 100, statsIntervalMs: 0 });
  t.after(async () => {
    await tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  // An application that stores each span (or status) somewhere of its own, which fails.
  const store = async (what: string): Promise<void> => {
    await new Promise((resolve) => setTimeout(resolve, 1));
    throw new Error(`could not store the ${what}`);
  };
  // Listeners that return a promise, as an application written in JavaScript passes them.
  /* eslint-disable @typescript-eslint/no-misused-promises */
  tracing.on('span', () => store('span'));
  tracing.once('status', () => store('status'));
  /* eslint-enable @typescript-eslint/no-misused-promises */
  // And one that throws at once.
  tracing.on('span', () => {
    throw new Error('could not count the span');
  });
  await tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  await until('every listener rejected', () => lines().filter((l) => String(l.msg).endsWith('listener rejected; ignored')).length === w.runs.size + 1);
  await tracing.shutdown();
  await tracing.done;
  assert.deepEqual(
    lines().filter((l) => Number(l.level) >= 40).map((l) => [l.level, l.component, l.msg, (l.err as { message?: string } | undefined)?.message]).sort(),
    [
      [50, 'watch', 'a status listener rejected; ignored', 'could not store the status'],
      ...[...w.runs.keys()].map(() => [50, 'watch', 'a span listener rejected; ignored', 'could not store the span']),
      ...[...w.runs.keys()].map(() => [50, 'watch', 'a span listener threw; ignored', 'could not count the span']),
    ].sort(),
  );
  assert.equal(receiver.spans().length, w.runs.size);
});

test('library: attribute values a span hook sets follow OpenTelemetry\'s rules: a BigInt, an object or a mixed array is dropped and said once per name, null removes an attribute; every span is delivered and the state is saved', async (t) => {
  const w = workload(2);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  const { logger, lines } = captureLogger();
  const tracing = startPrefectTracing({
    env: {}, logger, apiUrl: prefect.url, otlpEndpoint: receiver.url, stateFile: join(tempDir(), 'state.json'), settleMs: 100, stateFlushMs: 100, statsIntervalMs: 0,
    hooks: {
      span: (s) => {
        s.attributes['team'] = 'data';
        s.attributes['rows'] = 17;
        // Typed as a hook may write it: null removes an attribute.
        s.attributes['prefect.run.name'] = null;
        // A row count from a database driver, a whole record, a list of mixed values (from untyped code): none is an OpenTelemetry attribute value.
        const attributes = s.attributes as Record<string, unknown>;
        attributes['rows.exact'] = 17n;
        attributes['owner'] = { name: 'data-team' };
        attributes['sizes'] = [1, 'large'];
      },
    },
  });
  t.after(async () => {
    await tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  await tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  const expected = shape(await replaySpans(w.events, prefect.url)).map((s) => {
    const { 'prefect.run.name': _name, ...kept } = s.attributes;
    return { ...s, attributes: { ...kept, team: 'data', rows: 17 } };
  });
  assert.deepEqual(shape(receiver.spans()), expected);
  await tracing.shutdown();
  await tracing.done;
  const said = lines().filter((l) => Number(l.level) >= 40 && l.component !== 'config');
  assert.deepEqual(
    said.map((l) => [l.level, l.msg, l.attribute, l.type]),
    [
      ['rows.exact', 'bigint'],
      ['owner', 'object'],
      ['sizes', 'array of mixed or nested values'],
    ].map(([attribute, type]) => [40, 'span hook set an attribute to a value OpenTelemetry does not take (a string, number, boolean, or an array of one of them); the attribute is dropped', attribute, type]),
  );
  assert.deepEqual({ exported: tracing.stats().spans.exported, hookErrors: tracing.stats().spans.hookErrors }, { exported: w.runs.size, hookErrors: 0 });
});

test('library: authentication refused: done rejects with an AuthError, the error event carries it, and an error listener that throws is logged while prefect-otel still stops and saves its state', async (t) => {
  const prefect = await startFakePrefect({ apiKey: 'the-right-key' });
  t.after(() => prefect.close());
  const { logger, lines } = captureLogger();
  const stateFile = join(tempDir(), 'state.json');
  const tracing = startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, apiKey: 'a-wrong-key', tracesExporter: 'none', stateFile, statsIntervalMs: 0 });
  const events: unknown[] = [];
  tracing.on('status', (status) => void events.push(['status', status]));
  tracing.on('error', (err) => {
    events.push(['error', err instanceof AuthError, (err as AuthError).code, err.message]);
    throw new Error('the error listener failed too');
  });
  const settled = await Promise.race([
    tracing.done.then(() => 'resolved', (err: Error) => `rejected: ${err.name} ${err.message}`),
    new Promise((resolve) => setTimeout(() => resolve('done never settled'), 10_000)),
  ]);
  const message = 'the Prefect event stream refused authentication (close 1008: Invalid token): check option apiKey (a self-hosted Prefect server takes PREFECT_API_AUTH_STRING, not an API key)';
  assert.deepEqual(
    {
      settled,
      events,
      listenerError: lines().filter((l) => l.msg === 'an error listener threw; ignored').map((l) => [l.component, (l.err as { message: string }).message]),
      stopped: lines().filter((l) => l.msg === 'stopped').length,
      saved: existsSync(stateFile),
      leaked: JSON.stringify(lines()).includes('a-wrong-key'),
    },
    {
      settled: `rejected: AuthError ${message}`,
      events: [['status', 'connecting'], ['status', 'disconnected'], ['error', true, 'PREFECT_OTEL_AUTH', message]],
      listenerError: [['watch', 'the error listener failed too']],
      stopped: 1,
      saved: true,
      leaked: false,
    },
  );
});

test('library: every problem of the options at once, those that are no setting too (env, logger, hooks, keepAlive): a ConfigError, and nothing starts', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const dir = tempDir();
  const options = {
    env: { PREFECT_OTEL_SETTLE_MS: 100 },
    apiUrl: prefect.url,
    apiURL: prefect.url,
    stateFile: join(dir, 'state.json'),
    keepAlive: 'no',
    // A console is no pino logger: prefect-otel would call its `child` at once and its `flush` at shutdown.
    logger: console,
    hooks: { span: 'rename', spans: () => undefined },
  };
  assert.throws(
    () => startPrefectTracing(options as unknown as Parameters<typeof startPrefectTracing>[0]),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.deepEqual(err.problems, [
        'option apiURL: not a prefect-otel option, so it would do nothing (did you mean apiUrl?)',
        'option env: PREFECT_OTEL_SETTLE_MS: expected a string, got a number',
        'option keepAlive: expected true or false, got a string',
        'option logger: expected a pino logger; this one has no method child, fatal, flush',
        'option hooks.spans: not a hook, so it would never be called (the hook is span)',
        'option hooks.span: expected a function, got a string',
      ]);
      return true;
    },
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual({ upgrades: prefect.upgrades.length, files: readdirSync(dir) }, { upgrades: 0, files: [] });
  // The same options, right: it starts.
  const tracing = startPrefectTracing({ env: { PREFECT_OTEL_SETTLE_MS: '100' }, apiUrl: prefect.url, stateFile: join(dir, 'state.json'), keepAlive: false, logger: pino({ level: 'silent' }), hooks: { span: () => undefined }, tracesExporter: 'none' });
  await tracing.ready;
  await tracing.shutdown();
  await tracing.done;
});

test('library: the handle and its config, logged by the application through pino or printed with util.inspect, show the settings as the startup line does and where it stands, never the credentials', async (t) => {
  const prefect = await startFakePrefect({ apiKey: 'pnu_KEYKEYKEY' });
  t.after(() => prefect.close());
  const secrets = ['pnu_KEYKEYKEY', 'otlp-header-value', 'cf-client-secret'];
  const { logger, lines } = captureLogger();
  const tracing = startPrefectTracing({
    env: {},
    logger: pino({ level: 'silent' }),
    apiUrl: prefect.url,
    apiKey: 'pnu_KEYKEYKEY',
    otlpHeaders: { 'x-api-key': 'otlp-header-value' },
    clientCustomHeaders: { 'CF-Access-Client-Secret': 'cf-client-secret' },
    tracesExporter: 'none',
    stateFile: join(tempDir(), 'state.json'),
    httpPort: 0,
    statsIntervalMs: 0,
  });
  t.after(() => tracing.shutdown());
  await tracing.ready;
  await until('connected', () => tracing.stats().connected);
  logger.info({ tracing }, 'prefect-otel started');
  logger.info({ config: tracing.config }, 'its configuration');
  const printed = [inspect(tracing, { depth: Infinity }), inspect(tracing.config, { depth: Infinity })];
  const settings = describeConfig(tracing.config);
  const shown = JSON.parse(JSON.stringify(settings)) as Record<string, unknown>;
  assert.deepEqual(
    {
      logged: lines().map(({ tracing: h, config, msg }) => ({ msg, tracing: h, config })),
      printed: printed.map((text) => text.startsWith('PrefectTracing {') || text.startsWith('{')),
      secrets: secrets.filter((secret) => [...printed, JSON.stringify(lines())].some((text) => text.includes(secret))),
      // The handle's own fields are still there for the application to read.
      apiKey: tracing.config.prefect.apiKey,
    },
    {
      logged: [
        { msg: 'prefect-otel started', tracing: { settings: shown, connected: true, standby: false, stopping: false, httpPort: tracing.httpPort }, config: undefined },
        { msg: 'its configuration', tracing: undefined, config: shown },
      ],
      printed: [true, true],
      secrets: [],
      apiKey: 'pnu_KEYKEYKEY',
    },
  );
  assert.deepEqual({ auth: settings.auth, otlpHeaders: settings.otlpHeaders, clientCustomHeaders: settings.clientCustomHeaders }, { auth: 'api-key', otlpHeaders: ['x-api-key=[redacted]'], clientCustomHeaders: ['CF-Access-Client-Secret=[redacted]'] });
  await tracing.shutdown();
  await tracing.done;
});

test('library: shutdown(timeoutMs) with a collector that takes every request and answers none, spans, log records and metrics exported to it: it resolves within timeoutMs, the spans kept in the state file, and the next start sends them', async (t) => {
  const w = workload(1);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const hung = await startOtlpReceiver();
  const release = hung.hold();
  const next = await startOtlpReceiver();
  t.after(async () => {
    release();
    await Promise.all([hung.close(), next.close(), prefect.close()]);
  });
  const { logger, lines } = captureLogger();
  const stateFile = join(tempDir(), 'state.json');
  const tracing = startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, otlpEndpoint: hung.url, logsExporter: 'otlp', metricsExporter: 'otlp', stateFile, settleMs: 100, statsIntervalMs: 0 });
  let built = 0;
  tracing.on('span', () => void (built += 1));
  await tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await until('every span built and an export out', () => built === w.runs.size && hung.counts.requests > 0);
  const timeoutMs = 1_000;
  const started = Date.now();
  await tracing.shutdown(timeoutMs);
  const tookMs = Date.now() - started;
  await tracing.done;

  const restarted = startPrefectTracing({ env: {}, logger: pino({ level: 'silent' }), apiUrl: prefect.url, otlpEndpoint: next.url, stateFile, settleMs: 100, statsIntervalMs: 0 });
  await next.waitForSpans(w.runs.size);
  await restarted.shutdown();
  await restarted.done;
  const stlogging = lines().filter((l) => String(l.msg).startsWith('STLOGGING: ')).length;
  assert.deepEqual(
    {
      // The flush takes the whole timeout here; before, closing the exporters and the last metrics
      // export waited seconds more each (a batch still out, retried until its own timeout).
      withinTimeout: tookMs < timeoutMs + 4_000 ? 'yes' : `${tookMs} ms`,
      said: lines()
        .filter((l) => (l.level ?? 0) >= 40 && !String(l.msg).startsWith('export of'))
        .map((l) => [l.msg, l.count ?? errMessage(l.err)]),
      sentOnRestart: next.spans().map((s) => s.attributes['prefect.run.id']).sort(),
    },
    {
      withinTimeout: 'yes',
      said: [
        ['spans the collector has not taken yet are kept in the state file; the next start sends them', w.runs.size],
        ['log records the collector has not taken are lost at exit (their lines are in this output)', stlogging],
        ['final metrics export failed', "no answer before the shutdown's timeout ran out; given up"],
      ],
      sentOnRestart: [...w.runs.keys()].sort(),
    },
  );
});

test('library: shutdown() keeps the state file locked until the exporters are closed: no request to the collector is still open once a standby could take over and send its batch again', async (t) => {
  const w = workload(1);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const hung = await startOtlpReceiver();
  const release = hung.hold();
  t.after(async () => {
    release();
    await Promise.all([hung.close(), prefect.close()]);
  });
  const stateFile = join(tempDir(), 'state.json');
  const lock = `${stateFile}.lock`;
  const tracing = startPrefectTracing({ env: {}, logger: pino({ level: 'silent' }), apiUrl: prefect.url, otlpEndpoint: hung.url, stateFile, settleMs: 100, statsIntervalMs: 0 });
  let built = 0;
  tracing.on('span', () => void (built += 1));
  await tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await until('every span built and an export out', () => built === w.runs.size && hung.unanswered('/v1/traces') > 0);
  // Whether a batch was still out (its connection open) at the moment the lock went.
  let outWhenUnlocked: number | undefined;
  const watch = setInterval(() => {
    if (outWhenUnlocked === undefined && !existsSync(lock)) outWhenUnlocked = hung.unanswered('/v1/traces');
  }, 1);
  await tracing.shutdown(500);
  await tracing.done;
  clearInterval(watch);
  outWhenUnlocked ??= hung.unanswered('/v1/traces');
  assert.deepEqual({ outWhenUnlocked, lock: existsSync(lock) }, { outWhenUnlocked: 0, lock: false });
});

test("library: with the application's own pino logger, prefect-otel logs at the level logLevel or PREFECT_OTEL_LOG_LEVEL sets, and at the logger's own level when neither is set", async (t) => {
  const w = workload(1);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  t.after(() => prefect.close());
  /** The levels of the lines one start writes through an application logger at `info`, its workload traced. */
  const levelsSeen = async (settings: { logLevel?: 'debug' | 'warn'; env?: Record<string, string> }): Promise<number[]> => {
    const { logger, lines } = captureLogger();
    const tracing = startPrefectTracing({ env: {}, ...settings, logger, apiUrl: prefect.url, tracesExporter: 'none', stateFile: join(tempDir(), 'state.json'), settleMs: 100, statsIntervalMs: 0 });
    let spans = 0;
    tracing.on('span', () => void (spans += 1));
    await tracing.ready;
    await until('subscription', () => liveConnections(prefect) === 1);
    prefect.publish(w.events);
    await until('every span', () => spans === w.runs.size);
    await tracing.shutdown();
    await tracing.done;
    await until('disconnected', () => liveConnections(prefect) === 0);
    return [...new Set(lines().map((l) => Number(l.level)))].sort();
  };
  assert.deepEqual(
    {
      own: await levelsSeen({}),
      debugOption: await levelsSeen({ logLevel: 'debug' }),
      debugVariable: await levelsSeen({ env: { PREFECT_OTEL_LOG_LEVEL: 'debug' } }),
      warnOption: await levelsSeen({ logLevel: 'warn' }),
    },
    // The frames of the stream are at debug, the STLOGGING lines at info; nothing of this workload warns.
    { own: [30], debugOption: [20, 30], debugVariable: [20, 30], warnOption: [] },
  );
});

test('library: a second start on the same state file in one process returns the running instance; every span goes out once', async (t) => {
  const w = workload(2);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  const stateFile = join(tempDir(), 'state.json');
  const start = () => {
    const { logger, lines } = captureLogger();
    return { tracing: startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, otlpEndpoint: receiver.url, stateFile, settleMs: 100, statsIntervalMs: 0 }), lines };
  };
  const first = start();
  const second = start();
  t.after(async () => {
    await first.tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  assert.equal(second.tracing, first.tracing);
  assert.deepEqual(second.lines().map((l) => [l.level, l.msg]), [[40, 'prefect-otel already runs in this process with this state file; this start returns that instance']]);
  await first.tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  await first.tracing.shutdown();
  assert.deepEqual({ connections: prefect.connections.length, spans: receiver.spans().length, ids: new Set(receiver.spans().map((s) => s.spanId)).size }, { connections: 1, spans: w.runs.size, ids: w.runs.size });
  // Once it has stopped, a start is a new instance.
  const third = start();
  assert.notEqual(third.tracing, first.tracing);
  await third.tracing.shutdown();
});

// SIGHUP as SIGTERM: a closing terminal sends it, and the host ends with it as it would have, after the flush.
for (const signal of ['SIGTERM', 'SIGHUP'] as const) test(`node --import prefect-otel/register: an application exports spans from the environment alone, and ${signal} saves and flushes before it ends the host`, async (t) => {
  const w = workload(2);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  const dir = tempDir();
  // An application that knows nothing of prefect-otel: it just stays up, as a server would.
  const app = join(dir, 'app.mjs');
  writeFileSync(app, "process.stdout.write('app started\\n');\nsetInterval(() => undefined, 1 << 30);\n");
  // `--import` resolves its specifier from the working directory: in the package root,
  // `prefect-otel/register` is a self-reference through package.json `exports`.
  const child = spawn(process.execPath, ['--import', 'prefect-otel/register', app], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      ...FAST,
      PREFECT_API_URL: prefect.url,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      PREFECT_OTEL_STATE_FILE: join(dir, 'state.json'),
    },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await receiver.close();
    await prefect.close();
  });

  await until('subscription', () => liveConnections(prefect) === 1, 10_000, () => stderr);
  prefect.publish(w.events);
  await receiver.waitForSpans(w.runs.size);
  child.kill(signal);
  // register persists and flushes, then lets the signal take its usual course.
  assert.deepEqual(await exited, { code: null, signal }, stderr);
  assert.ok(stdout.startsWith('app started\n') || stdout.includes('app started\n'), stdout);
  const msgs = logLines(stdout).map((l) => l.msg);
  assert.ok(msgs.includes('prefect-otel starting') && msgs.includes('stopped'), JSON.stringify(msgs.filter((m) => !String(m).startsWith('STLOGGING'))) + stderr);
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
});

test('library: a state file written following another Prefect API URL is said at start, with both URLs and no credentials; the same URL is not', async (t) => {
  const [a, b] = await Promise.all([startFakePrefect({ authString: 'admin:SECRETPW' }), startFakePrefect({ authString: 'admin:SECRETPW' })]);
  t.after(() => Promise.all([a.close(), b.close()]));
  const stateFile = join(tempDir(), 'state.json');
  const withCredentials = (url: string): string => url.replace('http://', 'http://admin:SECRETPW@');
  const start = async (prefect: typeof a) => {
    const { logger, lines } = captureLogger();
    const tracing = startPrefectTracing({ env: {}, logger, apiUrl: withCredentials(prefect.url), authString: 'admin:SECRETPW', tracesExporter: 'none', stateFile, statsIntervalMs: 0 });
    await until('subscription', () => liveConnections(prefect) === 1);
    await tracing.shutdown();
    return lines().filter((l) => String(l.msg).startsWith('the state file was written following another'));
  };
  assert.deepEqual(await start(a), [], 'a fresh state file');
  assert.deepEqual(await start(a), [], 'the same server');
  const said = await start(b);
  assert.deepEqual(said.map((l) => [l.level, l.savedFor, l.following]), [[40, a.url, b.url]]);
  assert.ok(!JSON.stringify(said).includes('SECRETPW'));
});

test('library: a state file that cannot be written is logged once, then again only when it is written again', async (t) => {
  const prefect = await startFakePrefect();
  const { logger, lines } = captureLogger();
  // Once started, the state file's directory is made a file: every save fails until it is removed.
  const dir = tempDir();
  const blocker = join(dir, 'not-a-dir');
  const tracing = startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, tracesExporter: 'none', stateFile: join(blocker, 'state.json'), stateFlushMs: 100, statsIntervalMs: 0 });
  t.after(async () => {
    await tracing.shutdown();
    await prefect.close();
  });
  await until('subscription', () => liveConnections(prefect) === 1);
  renameSync(blocker, join(dir, 'moved'));
  writeFileSync(blocker, '');
  const saves = () => lines().filter((l) => l.msg === 'could not write the state file' || l.msg === 'the state file is written again');
  await until('a save failed', () => saves().length === 1);
  // More saves fail meanwhile; none of them is logged.
  await until('four more saves failed', () => tracing.stats().state.saveFailures >= 5);
  rmSync(blocker);
  await until('a save works again', () => saves().length === 2);
  assert.deepEqual(
    saves().map((l) => ({ level: l.level, component: l.component, msg: l.msg, failures: l.failures, error: (l.err as { message?: string } | undefined)?.message?.includes('not-a-dir') === true })),
    [
      { level: 50, component: 'watch', msg: 'could not write the state file', failures: 1, error: true },
      { level: 30, component: 'watch', msg: 'the state file is written again', failures: saves()[1]!.failures, error: false },
    ],
  );
  // Every failed save is counted (prefect_otel_state_save_failures_total), also once it works again.
  assert.equal(tracing.stats().state.saveFailures, Number(saves()[1]!.failures));
});

test('library: a metrics export that fails is said in prefect-otel\'s own log, once when it starts failing and once when it works again', async (t) => {
  const prefect = await startFakePrefect();
  // The first export fails (a 503 to the SDK's own retries too); the later ones go through.
  const receiver = await startOtlpReceiver({ respond: (n, path) => (path === '/v1/metrics' && n <= 6 ? { status: 503, headers: { 'retry-after': '0' } } : 200) });
  const { logger, lines } = captureLogger();
  const tracing = startPrefectTracing({
    env: {}, logger, apiUrl: prefect.url, otlpEndpoint: receiver.url, tracesExporter: 'none',
    metricsExporter: 'otlp', metricExportIntervalMs: 400, stateFile: join(tempDir(), 'state.json'), statsIntervalMs: 0,
  });
  t.after(async () => {
    await tracing.shutdown();
    await receiver.close();
    await prefect.close();
  });
  await receiver.waitForMetricExports(2);
  const said = () => lines().filter((l) => l.signal === 'metrics' && Number(l.level) >= 30).map((l) => [l.level, l.msg, errMessage(l.err)]);
  await until('the recovery is said', () => said().length === 2);
  assert.deepEqual(said(), [
    [40, 'metrics export failing; tried again at the next interval', 'HTTP 503 Service Unavailable'],
    [30, 'metrics export works again', undefined],
  ]);
});

test('library: a health port already in use fails prefect-otel alone, with an error that names the port and the setting; the host goes on', async (t) => {
  const prefect = await startFakePrefect();
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '0.0.0.0', resolve));
  const port = (taken.address() as AddressInfo).port;
  t.after(async () => {
    await new Promise((resolve) => taken.close(resolve));
    await prefect.close();
  });
  const { logger, lines } = captureLogger();
  const stateFile = join(tempDir(), 'state.json');
  const tracing = startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, tracesExporter: 'none', stateFile, httpPort: port, statsIntervalMs: 0 });
  // Not a standby: the state file's lock has not been tried yet.
  const standbyAtStart = tracing.stats().standby;
  const errors: string[] = [];
  tracing.on('error', (err) => void errors.push(err.message));
  const message = (p: Promise<void>) => p.then(() => 'resolved', (err: Error & { code?: string }) => `${err.code}: ${err.message}`);
  const expected = `EADDRINUSE: the health endpoint cannot listen on port ${port} (PREFECT_OTEL_HTTP_PORT, option httpPort): the port is in use; choose a free one, or 0 for any`;
  assert.deepEqual(
    {
      ready: await message(tracing.ready),
      done: await message(tracing.done),
      errors,
      fatal: lines().filter((l) => Number(l.level) >= 50).map((l) => [l.level, l.code, l.msg]),
      upgrades: prefect.upgrades.length,
      lock: existsSync(`${stateFile}.lock`),
      standby: [standbyAtStart, tracing.stats().standby],
      shutdown: lines().filter((l) => String(l.msg).startsWith('shutting down')).map((l) => l.msg),
    },
    {
      ready: expected,
      done: expected,
      errors: [expected.slice('EADDRINUSE: '.length)],
      fatal: [[60, 'EADDRINUSE', expected.slice('EADDRINUSE: '.length)]],
      upgrades: 0,
      lock: false,
      standby: [false, false],
      shutdown: ['shutting down before the state file was taken: nothing to save or send'],
    },
  );
});

test('library: shutdown() while the state file is read leaves nothing running after it: no subscription, no periodic stats line', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const stateFile = join(tempDir(), 'state.json');
  writeFileSync(stateFile, JSON.stringify({ version: 2, generation: 1, savedAt: new Date().toISOString(), cursorUs: null, dedupe: [], tracker: { open: [], finished: [], owners: [], waiting: [] }, pendingSpans: [] }));
  let text = '';
  let stopping: Promise<void> | undefined;
  const logger = pino({ level: 'info' }, new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString('utf8');
      // The last line of reading the state file: the host shuts prefect-otel down right then.
      if (stopping === undefined && chunk.toString('utf8').includes('"msg":"resumed from the state file"')) stopping = tracing.shutdown();
      done();
    },
  }));
  const tracing = startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, tracesExporter: 'none', stateFile, statsIntervalMs: 1 });
  await tracing.done;
  await stopping;
  // A stats line every millisecond, were the timer running: a few turns of the event loop would show it.
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  const msgs = logLines(text).map((l) => l.msg);
  assert.deepEqual(msgs.slice(msgs.indexOf('stopped') + 1), []);
  assert.deepEqual({ subscriptions: prefect.connections.length, stats: msgs.filter((m) => m === 'stats').length }, { subscriptions: 0, stats: 0 });
});

test('library: a host that starts and shuts prefect-otel down again and again keeps no timer of an earlier start; its log lines all reach standard output', async (t) => {
  const prefect = await startFakePrefect();
  t.after(() => prefect.close());
  const dir = tempDir();
  // The host counts the repeating timers alive after each start and shutdown (an interval lives
  // until it is cleared): the same number after every round, whatever the number of rounds.
  const { out, exited } = startHostApp(dir, [
    "import { createHook } from 'node:async_hooks';",
    `const { startPrefectTracing } = await import(${INDEX});`,
    'const live = new Map();',
    "createHook({ init(id, type, _t, res) { if (type === 'Timeout') live.set(id, res); }, destroy(id) { live.delete(id); } }).enable();",
    'const intervals = () => [...live.values()].filter((r) => r._repeat !== null && !r._destroyed).length;',
    'const counts = [];',
    'for (let i = 0; i < 4; i++) {',
    `  const tracing = startPrefectTracing({ env: {}, apiUrl: ${JSON.stringify(prefect.url)}, tracesExporter: 'none', stateFile: ${JSON.stringify(join(dir, 'state'))} + i + '.json', statsIntervalMs: 0 });`,
    '  await tracing.ready;',
    '  await tracing.shutdown();',
    '  counts.push(intervals());',
    '}',
    'process.stderr.write(JSON.stringify(counts));',
  ]);
  const code = await exited;
  const counts = JSON.parse(out.stderr) as number[];
  assert.deepEqual(
    { code, counts, starting: logLines(out.stdout).filter((l) => l.msg === 'prefect-otel starting').length, stopped: logLines(out.stdout).filter((l) => l.msg === 'stopped').length },
    { code: 0, counts: counts.map(() => counts[0]), starting: 4, stopped: 4 },
  );
});

test('library: a start right after shutdown() of an instance on the same state file, in the same process, waits for that one to release its lock, says so as such, and takes over; every span goes out once', async (t) => {
  const w = workload(2);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  const stateFile = join(tempDir(), 'state.json');
  const start = () => {
    const { logger, lines } = captureLogger();
    return { tracing: startPrefectTracing({ env: {}, logger, apiUrl: prefect.url, otlpEndpoint: receiver.url, stateFile, settleMs: 100, statsIntervalMs: 0 }), lines };
  };
  const first = start();
  await first.tracing.ready;
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events.slice(0, Math.floor(w.events.length / 2)));
  const stopping = first.tracing.shutdown();
  const second = start();
  await stopping;
  await second.tracing.ready;
  await until('second subscription', () => liveConnections(prefect) === 1 && prefect.connections.length === 2);
  prefect.publish(w.events.slice(Math.floor(w.events.length / 2)));
  await receiver.waitForSpans(w.runs.size);
  await second.tracing.shutdown();
  assert.deepEqual(
    second.lines().filter((l) => String(l.msg).startsWith('standby') || String(l.msg).includes('taking over')).map((l) => [l.msg, (l.holder as { pid?: number } | undefined)?.pid]),
    [
      ['standby: an earlier start in this process still holds this state file (it is stopping); taking over when it releases its lock', process.pid],
      ['the state file is free: taking over', undefined],
    ],
  );
  assert.deepEqual(receiver.spans().map((s) => s.attributes['prefect.run.id']).sort(), [...w.runs.keys()].sort());
});
