/**
 * Reaching Prefect through an HTTP proxy that only tunnels (`CONNECT`), as corporate egress proxies
 * do: HTTP_PROXY / HTTPS_PROXY / NO_PROXY, as Prefect's own client reads them, for the websocket and
 * the REST lookups, with the proxy's credentials from the proxy URL and never in a log line; TLS to
 * the server inside the tunnel, its certificate checked as on a direct connection.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { HAS_OPENSSL, makeCertificates } from '../helpers/certificates.js';
import { startConnectProxy } from '../helpers/connect-proxy.js';
import { startFakePrefect } from '../helpers/fake-prefect.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { logLines, replaySpans, shape, startServers, startWatch, tempDir, watchUntilSpans, workload, type LogLine } from '../helpers/watch-e2e.js';

const PASSWORD = 'proxy-pa55word';

test('watch through HTTP_PROXY: the websocket and every REST lookup tunnel through it with its credentials, never logged; NO_PROXY goes direct; a proxy that refuses says so', async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const proxy = await startConnectProxy({ credentials: `otel:${PASSWORD}` });
  t.after(() => proxy.close());
  const prefectAuthority = new URL(prefect.url).host;

  const run = async (env: Record<string, string>, connection: number): Promise<LogLine[]> => {
    const r = await watchUntilSpans(t, { prefect, receiver }, w, env, connection);
    assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD), 'the proxy password is never logged');
    return logLines(r.stdout);
  };

  // http_proxy (lower case, as Python reads it first) with the proxy's credentials in its URL.
  const lines = await run({ http_proxy: `http://otel:${PASSWORD}@127.0.0.1:${proxy.port}`, HTTP_PROXY: 'http://127.0.0.1:1' }, 1);
  const auth = `Basic ${Buffer.from(`otel:${PASSWORD}`).toString('base64')}`;
  assert.ok(proxy.tunnels.length >= 2, 'a tunnel for the websocket and one for REST');
  assert.deepEqual(new Set(proxy.tunnels.map((x) => JSON.stringify(x))), new Set([JSON.stringify({ authority: prefectAuthority, proxyAuthorization: auth, status: 200 })]));
  assert.ok(prefect.restRequests.some((q) => q.path.includes('/task_runs/')), 'the subflow parent was looked up through the proxy');
  assert.deepEqual(shape(receiver.spans()), shape(await replaySpans(w.events, prefect.url)));
  const settings = lines.find((l) => l.msg === 'prefect-otel starting')?.settings as Record<string, unknown>;
  assert.deepEqual(settings.proxy, { http: `http://127.0.0.1:${proxy.port}/` });
  assert.deepEqual(lines.filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg), []);

  // NO_PROXY names the server: straight there.
  const tunnelsBefore = proxy.tunnels.length;
  await run({ HTTP_PROXY: `http://otel:${PASSWORD}@127.0.0.1:${proxy.port}`, NO_PROXY: 'localhost,127.0.0.1' }, 2);
  assert.equal(proxy.tunnels.length, tunnelsBefore);

  // Without the credentials the proxy answers 407: refused credentials, said once, exit 3, no retry loop.
  const tunnelsBeforeRefusal = proxy.tunnels.length;
  const refused = await startWatch({ PREFECT_API_URL: prefect.url, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, HTTP_PROXY: proxy.url }, t).result;
  const message = `the proxy http://127.0.0.1:${proxy.port} refused CONNECT ${prefectAuthority} with HTTP 407 (it wants credentials: add a user and password to the proxy URL)`;
  assert.deepEqual(
    {
      code: refused.code,
      stderr: refused.stderr,
      severe: logLines(refused.stdout).filter((l) => (l.level ?? 0) >= 40).map(({ level, code, setting, msg }) => ({ level, code, setting, msg })),
      tunnels: proxy.tunnels.slice(tunnelsBeforeRefusal).map((x) => x.status),
    },
    { code: 3, stderr: `prefect-otel: ${message}\n`, severe: [{ level: 60, code: 'PREFECT_OTEL_AUTH', setting: 'HTTP_PROXY', msg: message }], tunnels: [407] },
  );
});

test('watch through HTTPS_PROXY to a Prefect server behind TLS: TLS inside the tunnel, the certificate checked against PREFECT_API_SSL_CERT_FILE', { skip: !HAS_OPENSSL && 'openssl is not installed' }, async (t) => {
  const pem = makeCertificates(tempDir());
  const w = workload(1);
  const prefect = await startFakePrefect({ tls: { key: readFileSync(pem.serverKey, 'utf8'), cert: readFileSync(pem.serverCert, 'utf8') } });
  for (const r of w.taskRuns) prefect.addTaskRun(r);
  const receiver = await startOtlpReceiver();
  const proxy = await startConnectProxy();
  t.after(async () => {
    await receiver.close();
    await prefect.close();
    await proxy.close();
  });
  await watchUntilSpans(t, { prefect, receiver }, w, { HTTPS_PROXY: proxy.url, PREFECT_API_SSL_CERT_FILE: pem.ca }, 1);
  assert.ok(proxy.tunnels.length >= 2 && proxy.tunnels.every((x) => x.authority === new URL(prefect.url).host && x.status === 200), JSON.stringify(proxy.tunnels));
  assert.equal(receiver.spans().filter((s) => s.parentSpanId === undefined || s.parentSpanId === '').length, 1, 'the subflow found its parent over REST through the tunnel');
});
