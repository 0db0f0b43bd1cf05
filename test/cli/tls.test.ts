/**
 * TLS on both sides, with certificates made for the test by openssl under a private authority.
 * The collector: behind TLS, and asking for a client certificate (mTLS); the OpenTelemetry TLS
 * variables (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `…_CLIENT_CERTIFICATE`, `…_CLIENT_KEY`) reach the
 * exporters, on the export thread too, for spans and log records alike. The Prefect server: behind
 * TLS, its websocket and REST API checked against Prefect's own `PREFECT_API_SSL_CERT_FILE` (or
 * `SSL_CERT_FILE`), or not checked with `PREFECT_API_TLS_INSECURE_SKIP_VERIFY`.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { test } from 'node:test';
import { HAS_OPENSSL, makeCertificates } from '../helpers/certificates.js';
import { startCli } from '../helpers/cli.js';
import { startFakePrefect, type FakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { FAST, firstUnreachableRetry, logLines, replaySpans, shape, tempDir, watchUntilSpans, workload, type LogLine } from '../helpers/watch-e2e.js';
import { errMessage } from '../helpers/log-err.js';

/** `prefect-otel replay` of the events to `endpoint`, with `env`; exits 0. */
async function replay(file: string, env: Record<string, string>): Promise<void> {
  const { result } = startCli(['replay', file], { ...FAST, PREFECT_API_URL: 'http://127.0.0.1:9/api', ...env });
  const r = await result;
  assert.equal(r.code, 0, r.stderr);
}

test('OTLP to a collector behind TLS: a private CA from OTEL_EXPORTER_OTLP_CERTIFICATE, and a client certificate for mTLS, for spans and log records; the same spans as over plain HTTP', { skip: !HAS_OPENSSL && 'openssl is not installed' }, async (t) => {
  const dir = tempDir();
  const pem = makeCertificates(dir);
  const w = workload(1);
  const events = join(dir, 'events.jsonl');
  writeFileSync(events, w.events.map((e) => JSON.stringify(e)).join('\n'));

  const plain = await startOtlpReceiver();
  const tls = await startOtlpReceiver({ tls: { key: readFileSync(pem.serverKey, 'utf8'), cert: readFileSync(pem.serverCert, 'utf8') } });
  const mtls = await startOtlpReceiver({ tls: { key: readFileSync(pem.serverKey, 'utf8'), cert: readFileSync(pem.serverCert, 'utf8'), ca: readFileSync(pem.ca, 'utf8') } });
  t.after(async () => {
    await Promise.all([plain.close(), tls.close(), mtls.close()]);
  });
  assert.match(tls.url, /^https:/);

  await replay(events, { OTEL_EXPORTER_OTLP_ENDPOINT: plain.url, OTEL_LOGS_EXPORTER: 'otlp' });
  await replay(events, { OTEL_EXPORTER_OTLP_ENDPOINT: tls.url, OTEL_EXPORTER_OTLP_CERTIFICATE: pem.ca, OTEL_LOGS_EXPORTER: 'otlp' });
  // The per-signal names for traces; the generic ones for logs.
  await replay(events, {
    OTEL_EXPORTER_OTLP_ENDPOINT: mtls.url,
    OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: pem.ca, OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: pem.clientCert, OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: pem.clientKey,
    OTEL_EXPORTER_OTLP_CERTIFICATE: pem.ca, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: pem.clientCert, OTEL_EXPORTER_OTLP_CLIENT_KEY: pem.clientKey,
    OTEL_LOGS_EXPORTER: 'otlp',
  });

  assert.equal(plain.spans().length, w.runs.size);
  assert.deepEqual(shape(tls.spans()), shape(plain.spans()));
  assert.deepEqual(shape(mtls.spans()), shape(plain.spans()));
  const bodies = (logs: ReturnType<typeof plain.logs>) => logs.map((l) => l.body).sort();
  assert.ok(plain.logs().length > 0);
  assert.deepEqual(bodies(tls.logs()), bodies(plain.logs()));
  assert.deepEqual(bodies(mtls.logs()), bodies(plain.logs()));
});

test('a Prefect server behind TLS: its certificate checked against PREFECT_API_SSL_CERT_FILE (or SSL_CERT_FILE) on the websocket and the REST lookups, not checked with PREFECT_API_TLS_INSECURE_SKIP_VERIFY, refused without either', { skip: !HAS_OPENSSL && 'openssl is not installed' }, async (t) => {
  const dir = tempDir();
  const pem = makeCertificates(dir);
  const w = workload(1);
  const prefect = await startFakePrefect({ tls: { key: readFileSync(pem.serverKey, 'utf8'), cert: readFileSync(pem.serverCert, 'utf8') } });
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  assert.match(prefect.url, /^https:/);

  /** A watch that follows the stream until the spans of the workload arrive; its log lines. */
  const follow = async (env: Record<string, string>, connection: number): Promise<LogLine[]> => logLines((await watchUntilSpans(t, { prefect, receiver }, w, env, connection)).stdout);
  const warnings = (lines: LogLine[]) => lines.filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg);

  // The subflow's parent is found over REST (one root), and the spans are what replay makes over TLS too.
  const checked = await follow({ PREFECT_API_SSL_CERT_FILE: pem.ca }, 1);
  assert.deepEqual(warnings(checked), []);
  assert.ok(prefect.restRequests.some((r) => r.path.includes('/task_runs/')), 'a subflow parent asked for over REST');
  assert.equal(receiver.spans().filter((s) => s.parentSpanId === undefined || s.parentSpanId === '').length, 1, 'one root: the subflow hangs under its parent');
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url, { PREFECT_API_SSL_CERT_FILE: pem.ca })));

  // Prefect's fallback name, and the switch that checks nothing (said at start).
  assert.deepEqual(warnings(await follow({ SSL_CERT_FILE: pem.ca }, 2)), []);
  assert.deepEqual(warnings(await follow({ PREFECT_API_TLS_INSECURE_SKIP_VERIFY: 'true' }, 3)), ["PREFECT_API_TLS_INSECURE_SKIP_VERIFY is on: the Prefect server's certificate is not checked"]);

  // Neither: the server is not trusted, and the retries say why.
  const retry = await firstUnreachableRetry(t, { PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url });
  // Node 22 and later add a hint after it (`--use-system-ca`).
  assert.match(errMessage(retry.err) ?? '', /^unable to verify the first certificate(;|$)/);
  assert.equal(prefect.connections.length, 3, 'no connection without a trusted certificate');
});

test('PREFECT_API_SSL_CERT_FILE that cannot be read, or holds no certificate, is a configuration error (exit 2)', async () => {
  const dir = tempDir();
  const notPem = join(dir, 'not-a-cert.txt');
  writeFileSync(notPem, 'hello');
  const missing = join(dir, 'missing.pem');
  const runs = await Promise.all([
    startCli(['replay', '-'], { PREFECT_API_SSL_CERT_FILE: missing }, '').result,
    startCli(['replay', '-', '--api-ssl-cert-file', notPem, '--api-tls-insecure-skip-verify=maybe'], {}, '').result,
  ]);
  assert.deepEqual(runs.map((r) => ({ code: r.code, stderr: r.stderr })), [
    { code: 2, stderr: `prefect-otel: invalid configuration:\n  - PREFECT_API_SSL_CERT_FILE: cannot read ${missing}: ENOENT\n\n` },
    { code: 2, stderr: `prefect-otel: invalid configuration:\n  - --api-tls-insecure-skip-verify: expected true or false, got "maybe"\n  - --api-ssl-cert-file: ${notPem} holds no PEM certificate (-----BEGIN CERTIFICATE-----)\n\n` },
  ]);
});

test("a Prefect server that its proxy serves on https alone: PREFECT_API_URL given as http:// on port 80 is redirected to https on 443; the event stream and the REST look-ups follow it with the credentials, as Prefect's client does, and say so once", { skip: !HAS_OPENSSL && 'openssl is not installed' }, async (t) => {
  const pem = makeCertificates(tempDir());
  const w = workload(1);
  const listen = (server: Server, port: number) =>
    new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
  // What such a proxy answers on port 80: every request and every upgrade sent to https, path kept.
  const plain = createServer((req, res) => res.writeHead(308, { location: `https://127.0.0.1${req.url ?? '/'}`, 'content-length': '0' }).end());
  const redirected: string[] = [];
  plain.on('upgrade', (req: IncomingMessage, socket: Duplex) => {
    redirected.push(req.url ?? '');
    socket.on('error', () => undefined).end(`HTTP/1.1 301 Moved Permanently\r\nLocation: https://127.0.0.1${req.url ?? '/'}\r\nContent-Length: 0\r\n\r\n`);
  });
  t.after(() => plain.close());
  if (!(await listen(plain, 80))) return t.skip('port 80 of 127.0.0.1 is not free to listen on');
  let prefect: FakePrefect;
  try {
    prefect = await startFakePrefect({ port: 443, authString: 'admin:s3cret', tls: { key: readFileSync(pem.serverKey, 'utf8'), cert: readFileSync(pem.serverCert, 'utf8') } });
  } catch {
    return t.skip('port 443 of 127.0.0.1 is not free to listen on');
  }
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
  });
  assert.equal(prefect.port, 443);

  const r = await watchUntilSpans(t, { prefect, receiver }, w, { PREFECT_API_URL: 'http://127.0.0.1/api', PREFECT_API_AUTH_STRING: 'admin:s3cret', PREFECT_API_SSL_CERT_FILE: pem.ca }, 1);
  const lines = logLines(r.stdout);
  assert.deepEqual(
    {
      redirected,
      said: lines.filter((l) => (l.level ?? 0) >= 40 || String(l.msg).includes('from http to https')).map(({ level, component, from, url, msg }) => ({ level, component, from, url, msg })),
    },
    {
      redirected: ['/api/events/out'],
      said: [{ level: 30, component: 'source', from: 'ws://127.0.0.1/api/events/out', url: 'wss://127.0.0.1/api/events/out', msg: 'the Prefect server redirects the event stream from http to https; following it (PREFECT_API_URL could name the https URL)' }],
    },
  );
  assert.ok(prefect.restRequests.some((q) => q.path.includes('/task_runs/')), 'a subflow parent asked for over REST, through the redirect');
  assert.equal(receiver.spans().filter((s) => s.parentSpanId === undefined || s.parentSpanId === '').length, 1, 'one root: the subflow hangs under its parent');
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url, { PREFECT_API_AUTH_STRING: 'admin:s3cret', PREFECT_API_SSL_CERT_FILE: pem.ca })));
  assert.ok(!r.stdout.includes('s3cret') && !r.stderr.includes('s3cret'));
});
