/**
 * Inside a host application the process-wide OpenTelemetry `diag` logger is the host's: starting and
 * stopping prefect-otel leaves it as it was, and prefect-otel's own failures still reach its logger.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import { pino } from 'pino';
import { startPrefectTracing } from '../../src/index.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { closedPort, liveConnections, logLines, tempDir, until, workload } from '../helpers/watch-e2e.js';
import { errMessage } from '../helpers/log-err.js';

test("library: the host's diag logger keeps every message of its own after start and shutdown; an export failure is in prefect-otel's log", async (t) => {
  const hostLines: [level: string, message: string][] = [];
  const at =
    (level: string) =>
    (message: string): void =>
      void hostLines.push([level, message]);
  const hostLogger: DiagLogger = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), verbose: at('verbose') };
  diag.setLogger(hostLogger, DiagLogLevel.DEBUG);
  t.after(() => diag.disable());
  hostLines.length = 0; // the API's own "Registered a global for diag"

  const w = workload(1);
  const prefect = await startFakePrefect();
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  t.after(() => prefect.close());
  let text = '';
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        text += chunk.toString('utf8');
        done();
      },
    }),
  );
  const tracing = startPrefectTracing({
    env: {},
    logger,
    apiUrl: prefect.url,
    otlpEndpoint: `http://127.0.0.1:${await closedPort()}`,
    // The SDK retries a refused connection for as long as the export's timeout allows (10 s by
    // default): with 2 s it gives up after a second or so, far inside the wait for the failure below.
    otlpTimeoutMs: 2_000,
    stateFile: join(tempDir(), 'state.json'),
    settleMs: 100,
    statsIntervalMs: 0,
  });
  t.after(() => tracing.shutdown(500));
  await tracing.ready;
  diag.debug('host: debug after start');
  diag.warn('host: warning after start');

  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  const failed = () => logLines(text).filter((l) => l.msg === 'export of spans failed; retrying');
  await until('an export failure in the log', () => failed().length > 0, 20_000, () => text);
  await tracing.shutdown(500);
  diag.debug('host: debug after shutdown');

  assert.deepEqual([...hostLines], [
    ['debug', 'host: debug after start'],
    ['warn', 'host: warning after start'],
    ['debug', 'host: debug after shutdown'],
  ]);
  const first = failed()[0]!;
  assert.deepEqual(
    { level: first.level, component: first.component, signal: first.signal, error: /ECONNREFUSED/.test(errMessage(first.err) ?? '') },
    { level: 40, component: 'export', signal: 'traces', error: true },
    JSON.stringify(first),
  );
  assert.deepEqual(
    logLines(text).filter((l) => String(l.msg).startsWith('host:')),
    [],
    "the host's diag messages are not in prefect-otel's log",
  );
});
