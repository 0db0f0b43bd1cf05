/**
 * `prefect-otel replay` never shows a secret: credentials in URLs (also ones that do not parse),
 * OTLP header values (also written in the wrong format), with the collector down or up.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { logLines } from '../helpers/watch-e2e.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';
import { cli, FR, smallRun, TR } from '../helpers/replay-cli.js';

test('a collector that stays down: replay says so and exits non-zero; secrets in OTLP headers and credentials in URLs never reach the output', async () => {
  // Two of the passwords hold a raw `@`: the user info runs to the last one.
  const r = await cli(['replay', '-'], {
    PREFECT_API_URL: 'http://prefect-user:api@pass123@127.0.0.1:9/api',
    PREFECT_UI_URL: 'http://ui-user:uipass123@127.0.0.1:9',
    PREFECT_OTEL_JAEGER_URL: 'http://jaeger-user:jaegerpass123@127.0.0.1:9',
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otlp-user:otlp@pass123@127.0.0.1:9',
    OTEL_EXPORTER_OTLP_TIMEOUT: '300',
    OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=sup3rs3cret',
    OTEL_LOGS_EXPORTER: 'otlp',
    OTEL_METRICS_EXPORTER: 'otlp',
    PREFECT_OTEL_LOG_LEVEL: 'debug',
  }, smallRun().join('\n'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /export: FAILED/);
  const out = `${r.stdout}${r.stderr}`;
  for (const secret of ['sup3rs3cret', 'pass123', 'uipass123', 'jaegerpass123']) assert.ok(!out.includes(secret), `${secret} in the output`);
  // The URLs themselves are logged, without their credentials.
  const settings = logLines(r.stdout).find((l) => l.msg === 'replay starting')?.settings as Record<string, unknown> | undefined;
  assert.deepEqual(
    settings && [settings.apiUrl, settings.uiUrl, settings.jaegerUrl, settings.tracesUrl, settings.logsUrl, settings.metricsUrl, settings.otlpHeaders],
    ['http://127.0.0.1:9/api', 'http://127.0.0.1:9', 'http://127.0.0.1:9', 'http://127.0.0.1:9/v1/traces', 'http://127.0.0.1:9/v1/logs', 'http://127.0.0.1:9/v1/metrics', ['x-api-key=[redacted]']],
  );
});

test('a URL setting that does not parse is quoted without its user info, by prefect-otel and by the OpenTelemetry SDK', async () => {
  const bad = await cli(['replay', '-'], { PREFECT_API_URL: 'http://admin:s3cret@host:99999/api' });
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr.split('\n')[1], '  - PREFECT_API_URL: not a URL: "http://[redacted]@host:99999/api"');
  const receiver = await startOtlpReceiver();
  try {
    // An OTel variable that does not parse warns and falls back (here to the traces endpoint that does).
    const r = await cli(['replay', '-'], {
      PREFECT_API_URL: 'http://127.0.0.1:9/api',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otuser:OT@PASSWD@[::1',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/v1/traces`,
    }, smallRun().join('\n'));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!`${r.stdout}${r.stderr}`.includes('PASSWD'), r.stdout);
    const warnings = logLines(r.stdout).filter((l) => l.level === 40).map((l) => l.msg as string);
    assert.ok(warnings.some((m) => m.includes('http://[redacted]@[::1')), warnings.join('\n'));
    assert.deepEqual(receiver.spans().map((s) => s.attributes['prefect.run.id']).sort(), [FR, TR].sort());
  } finally {
    await receiver.close();
  }
});

test('a URL setting that does not parse because its password holds a / or ? is quoted without the password, by prefect-otel and by the OpenTelemetry SDK', async () => {
  const bad = await cli(['replay', '-'], { PREFECT_API_URL: 'http://admin:s3/cret@host:4200/api', HTTPS_PROXY: 'proxyuser:pr?xysecret@proxy.corp:3128' });
  assert.equal(bad.code, 2);
  assert.deepEqual(bad.stderr.split('\n\n')[0]!.split('\n'), [
    'prefect-otel: invalid configuration:',
    '  - PREFECT_API_URL: not a URL: "http://[redacted]@host:4200/api"',
    '  - HTTPS_PROXY: not a URL: "proxy.corp:3128"',
  ]);
  const receiver = await startOtlpReceiver();
  try {
    const r = await cli(['replay', '-'], {
      PREFECT_API_URL: 'http://127.0.0.1:9/api',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otuser:OT/PASSWD@collector.corp:4318',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${receiver.url}/v1/traces`,
      OTEL_EXPORTER_OTLP_TIMEOUT: 'soon',
    }, smallRun().join('\n'));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!`${r.stdout}${r.stderr}`.includes('PASSWD'), r.stdout);
    const warnings = logLines(r.stdout).filter((l) => l.level === 40).map((l) => l.msg as string);
    // Each said once, by prefect-otel: the SDK's own reading of the variables (which does not apply) is at debug.
    assert.deepEqual(warnings, [
      'OTEL_EXPORTER_OTLP_ENDPOINT: not a URL: "http://[redacted]@collector.corp:4318"; using the default (http://localhost:4318)',
      'OTEL_EXPORTER_OTLP_TIMEOUT: expected a whole number ms, got "soon"; using the default (10000)',
    ]);
    assert.deepEqual(receiver.spans().map((s) => s.attributes['prefect.run.id']).sort(), [FR, TR].sort());
  } finally {
    await receiver.close();
  }
});

test('OTLP headers written as name: value are a warning that quotes none of the credential, and the spans still go out', async () => {
  const receiver = await startOtlpReceiver();
  try {
    const r = await cli(['replay', '-'], {
      PREFECT_API_URL: 'http://127.0.0.1:9/api',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_HEADERS: 'Authorization: Basic T1RVU0VSOk9UUEFTU1dE==',
    }, smallRun().join('\n'));
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!`${r.stdout}${r.stderr}`.includes('T1RVU0VSOk9UUEFTU1dE'), r.stdout);
    const warnings = logLines(r.stdout).filter((l) => l.level === 40).map((l) => l.msg as string);
    assert.ok(warnings.includes('OTEL_EXPORTER_OTLP_HEADERS: the name of header 1 is not a valid HTTP header name: write name=value, not name: value (not shown: it may hold a secret); using the default ({})'), warnings.join('\n'));
    assert.deepEqual(receiver.spans().map((s) => s.attributes['prefect.run.id']).sort(), [FR, TR].sort());
  } finally {
    await receiver.close();
  }
});

test('skipped input that quotes a credential of the configuration is logged with the credential redacted, even where the excerpt cuts it', async () => {
  const apiKey = 'pnu_S3cretKeyValue0123456789';
  const authString = 'admin:Hunter2Password';
  const secrets = {
    customHeader: 'CfAccessSecret5551234',
    otlpHeader: 'OtlpHeaderSecret987654',
    logsHeader: 'LogsHeaderSecret424242',
  };
  const env = {
    PREFECT_CLIENT_CUSTOM_HEADERS: JSON.stringify({ 'CF-Access-Client-Secret': secrets.customHeader }),
    OTEL_EXPORTER_OTLP_HEADERS: `x-api-key=${secrets.otlpHeader}`,
    OTEL_EXPORTER_OTLP_LOGS_HEADERS: `x-logs-key=${secrets.logsHeader}`,
    OTEL_TRACES_EXPORTER: 'none',
  };
  const event = JSON.parse(smallRun()[0]!) as { event: Record<string, unknown> };
  const quoting = (credential: string, basic: string): string[] => [
    // The event's id is the credential: the reason's detail quotes it.
    JSON.stringify({ type: 'event', event: { ...event.event, id: credential } }),
    // Not JSON, the credential inside the excerpt, and again where the excerpt's 160 characters end.
    `{"event": "x", "note": "${credential} ${Object.values(secrets).join(' ')} ${basic}`,
    `${'.'.repeat(150)} ${credential} ${Object.values(secrets).join(' ')}`,
  ];
  const runs = [
    { env: { ...env, PREFECT_API_KEY: apiKey }, credential: apiKey },
    { env: { ...env, PREFECT_API_AUTH_STRING: authString }, credential: authString },
  ];
  for (const { env: runEnv, credential } of runs) {
    // As a Basic header has it, for the auth string.
    const basic = Buffer.from(credential).toString('base64');
    const r = await cli(['replay', '-'], runEnv, [...smallRun(), ...quoting(credential, basic)].join('\n'));
    assert.equal(r.code, 0, r.stderr);
    const out = `${r.stdout}${r.stderr}`;
    // No eight characters in a row of any credential, so not even the start of one the excerpt cut.
    for (const secret of [credential, basic, ...Object.values(secrets)]) {
      for (let i = 0; i + 8 <= secret.length; i++) assert.ok(!out.includes(secret.slice(i, i + 8)), `${secret.slice(i, i + 8)} of ${secret} in the output:\n${out}`);
    }
    const skipped = logLines(r.stdout).filter((l) => l.msg === 'skipped malformed input');
    assert.deepEqual(skipped.map((l) => [l.reason, l.detail, l.excerpt]), [
      ['bad_id', 'id "[redacted]" is not a UUID', skipped[0]?.excerpt],
      ['invalid_json', skipped[1]?.detail, `{"event": "x", "note": "${Array(5).fill('[redacted]').join(' ')}`],
      // Redacted before it is cut: what is left of the credential is the start of `[redacted]`.
      ['invalid_json', skipped[2]?.detail, `${'.'.repeat(150)} [redacted…`],
    ]);
  }
});

test('a collector that quotes the request back in its refusal (its URL, its Authorization header) shows neither the user info of the OTLP endpoint nor its query values', async () => {
  // Some collectors and proxies answer with what they were sent: here the request's URL and its
  // Authorization header, which the exporter makes of the endpoint's user info (Basic).
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(401, `Refused ${req.headers.authorization ?? ''}`, { 'content-type': 'text/plain' });
      res.end(`no access for ${req.headers.authorization ?? 'nobody'} to ${req.url ?? ''}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const user = 'otlp-user';
    const password = 'Passw0rdInTheUrl';
    const token = 'QueryT0kenValue42';
    const r = await cli(['replay', '-'], {
      PREFECT_API_URL: 'http://127.0.0.1:9/api',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://${user}:${password}@127.0.0.1:${port}/otlp?api-key=${token}`,
      OTEL_LOGS_EXPORTER: 'otlp',
      OTEL_METRICS_EXPORTER: 'otlp',
      PREFECT_OTEL_LOG_LEVEL: 'debug',
    }, smallRun().join('\n'));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /spans: 0 exported, 2 rejected \(to http:\/\/127\.0\.0\.1:\d+\/otlp\/v1\/traces\?api-key=\[redacted\]: HTTP 401 /);
    const out = `${r.stdout}${r.stderr}`;
    const basic = Buffer.from(`${user}:${password}`).toString('base64');
    for (const secret of [password, token, basic]) assert.ok(!out.includes(secret), `${secret} in the output:\n${out}`);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('skipped input that holds credentials of no setting here (a header dump, an environment listing, a URL with a password) is logged with them redacted', async () => {
  const lines = [
    '> Authorization: Bearer pnu_AbCdEf0123456789XyZ',
    'export PREFECT_API_KEY=pnu_ZZZZ0123456789yyyy',
    'curl http://admin:Hunter2Pass@prefect:4200/api/events/filter',
    '{"headers": {"Authorization": "Basic YWRtaW46SHVudGVyMlBhc3M="}}',
  ];
  const r = await cli(['replay', '-'], { OTEL_TRACES_EXPORTER: 'none' }, [...smallRun(), ...lines].join('\n'));
  assert.equal(r.code, 0, r.stderr);
  const out = `${r.stdout}${r.stderr}`;
  for (const secret of ['AbCdEf0123456789XyZ', 'ZZZZ0123456789yyyy', 'Hunter2Pass', 'YWRtaW46SHVudGVyMlBhc3M=']) assert.ok(!out.includes(secret), `${secret} in the output:\n${out}`);
  assert.deepEqual(
    logLines(r.stdout).filter((l) => l.msg === 'skipped malformed input').map((l) => [l.reason, l.excerpt]),
    [
      ['invalid_json', '> Authorization: [redacted]'],
      ['invalid_json', 'export PREFECT_API_KEY=[redacted]'],
      ['invalid_json', 'curl http://[redacted]@prefect:4200/api/events/filter'],
      ['missing_field', '{"headers": {"Authorization": "[redacted]"}}'],
    ],
  );
});
