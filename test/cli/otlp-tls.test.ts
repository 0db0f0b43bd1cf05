/**
 * A collector behind TLS with a private certificate authority, and one that asks for a client
 * certificate (mTLS): the OpenTelemetry TLS variables (`OTEL_EXPORTER_OTLP_CERTIFICATE`,
 * `…_CLIENT_CERTIFICATE`, `…_CLIENT_KEY`) reach the exporters, on the export thread too, for spans
 * and log records alike. Certificates are made for the test with openssl.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startCli } from '../helpers/cli.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { FAST, shape, tempDir, workload } from '../helpers/watch-e2e.js';

const HAS_OPENSSL = spawnSync('openssl', ['version']).status === 0;

/** A CA, a server certificate for 127.0.0.1 and a client certificate it signed, as PEM files in `dir`. */
function makeCertificates(dir: string): Record<'ca' | 'serverKey' | 'serverCert' | 'clientKey' | 'clientCert', string> {
  const file = (name: string): string => join(dir, name);
  const openssl = (...args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=prefect-otel test CA');
  for (const [name, ext] of [['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'], ['client', 'extendedKeyUsage=clientAuth\n']] as const) {
    writeFileSync(file(`${name}.ext`), ext);
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
  }
  return { ca: file('ca.pem'), serverKey: file('server.key'), serverCert: file('server.pem'), clientKey: file('client.key'), clientCert: file('client.pem') };
}

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
