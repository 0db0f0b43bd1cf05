/**
 * A Prefect server behind an access proxy (Cloudflare Access, IAP) that wants headers of its own:
 * Prefect's `PREFECT_CLIENT_CUSTOM_HEADERS` goes with the websocket upgrade and every REST request,
 * never into a log line, and cannot replace the headers prefect-otel sets itself.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startCli } from '../helpers/cli.js';
import { logLines, startServers, watchUntilSpans, workload } from '../helpers/watch-e2e.js';

const SECRET = 'cf-s3cret-0123456789';

test('PREFECT_CLIENT_CUSTOM_HEADERS: sent with the websocket upgrade and every REST request beside the credentials, never logged; a protected header is ignored and said so', async (t) => {
  const w = workload(1);
  const { prefect, receiver } = await startServers(t, w.taskRuns);
  const headers = { 'CF-Access-Client-Id': 'client-id.access', 'CF-Access-Client-Secret': SECRET, 'User-Agent': 'curl/8', Authorization: 'Bearer not-this-one' };
  const r = await watchUntilSpans(t, { prefect, receiver }, w, { PREFECT_API_AUTH_STRING: 'admin:pass', PREFECT_CLIENT_CUSTOM_HEADERS: JSON.stringify(headers) }, 1);

  const basic = `Basic ${Buffer.from('admin:pass').toString('base64')}`;
  const sent = (h: Record<string, unknown>) => ({ id: h['cf-access-client-id'], secret: h['cf-access-client-secret'], userAgent: String(h['user-agent']).split('/')[0], authorization: h.authorization });
  const expected = { id: 'client-id.access', secret: SECRET, userAgent: 'prefect-otel', authorization: basic };
  assert.deepEqual(prefect.upgrades.map((u) => sent(u.headers)), [expected]);
  assert.ok(prefect.restRequests.length > 0, 'REST lookups were made');
  assert.deepEqual(prefect.restRequests.map((q) => sent(q.headers)), prefect.restRequests.map(() => expected));

  const lines = logLines(r.stdout);
  assert.ok(!r.stdout.includes(SECRET) && !r.stderr.includes(SECRET), 'the header value is never logged');
  assert.deepEqual(lines.filter((l) => (l.level ?? 0) >= 40).map((l) => l.msg), ['PREFECT_CLIENT_CUSTOM_HEADERS: header User-Agent is ignored: prefect-otel sets it itself']);
  const settings = lines.find((l) => l.msg === 'prefect-otel starting')?.settings as Record<string, unknown>;
  assert.deepEqual(settings.clientCustomHeaders, ['CF-Access-Client-Id=[redacted]', 'CF-Access-Client-Secret=[redacted]', 'Authorization=[redacted]']);
});

test('PREFECT_CLIENT_CUSTOM_HEADERS that is not a JSON object of strings is a configuration error (exit 2), its value not shown', async () => {
  const runs = await Promise.all(
    [`{"X-Token": "${SECRET}"`, '["a"]', `{"X-Token": 7}`, `{"X Token": "${SECRET}"}`].map((value) => startCli(['replay', '-'], { PREFECT_CLIENT_CUSTOM_HEADERS: value }, '').result),
  );
  assert.deepEqual(runs.map((r) => ({ code: r.code, stderr: r.stderr.split('\n')[1] })), [
    { code: 2, stderr: '  - PREFECT_CLIENT_CUSTOM_HEADERS: expected a JSON object of header names and values, e.g. {"CF-Access-Client-Id": "…"}' },
    { code: 2, stderr: '  - PREFECT_CLIENT_CUSTOM_HEADERS: expected a JSON object of header names and values' },
    { code: 2, stderr: '  - PREFECT_CLIENT_CUSTOM_HEADERS: the value of header "X-Token" must be a string' },
    { code: 2, stderr: '  - PREFECT_CLIENT_CUSTOM_HEADERS: "X Token" is not a valid HTTP header name' },
  ]);
  for (const r of runs) assert.ok(!r.stderr.includes(SECRET));
});
