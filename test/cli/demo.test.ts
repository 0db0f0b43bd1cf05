/**
 * The demo as a user runs it: with no Prefect and no collector, against a collector that is not
 * there, and into a pipe whose reader stops early.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startCli, type CliResult } from '../helpers/cli.js';
import { startOtlpReceiver } from '../helpers/otlp-receiver.js';

function cli(args: string[], env: Record<string, string>, input?: string): Promise<CliResult> {
  return startCli(args, { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'info', ...env }, input ?? '').result;
}

test('the demo runs with no Prefect and no collector and draws trees', async () => {
  const r = await cli(['demo'], {});
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /167 events → 51 spans in 4 traces/);
  assert.match(r.stdout, /^etl \(.+\)\s+Failed/m);
  assert.match(r.stdout, /├─ transform \(transform-.+\)\s+Failed/);
  // At info the log lines are in the output; at the demo's own default (warn) they are not, and it says how to print them.
  assert.match(r.stdout, /grep [0-9a-f]{32} finds all \d+ of this trace's,\s+e\.g\./);
  const quiet = await cli(['demo'], { PREFECT_OTEL_LOG_LEVEL: '', COLUMNS: '200' });
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.match(quiet.stdout, /grep [0-9a-f]{32} finds all \d+ of this trace's \(printed here with PREFECT_OTEL_LOG_LEVEL=info\), e\.g\./);
  assert.ok(!quiet.stdout.includes(' INFO '), 'no info line at the default level');
});

test('the demo against a collector that is not there: the trees first, then the real reason the spans were not delivered, and its warnings in the configured log', async () => {
  const r = await cli(['demo'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_EXPORTER_OTLP_TIMEOUT: '300', OTEL_TRACES_EXPORTER: '', PREFECT_OTEL_LOG_LEVEL: '' });
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stdout.split('\n');
  const drawn = lines.findIndex((l) => /^etl \(.+\)\s+Failed/.test(l));
  const sending = lines.indexOf('Sending 51 spans to http://127.0.0.1:9/v1/traces …');
  assert.ok(drawn >= 0 && sending > drawn, r.stdout);
  assert.equal(lines.filter((l) => l.startsWith('Exported ')).join('\n'), 'Exported 0 spans to http://127.0.0.1:9/v1/traces (51 not delivered: connect ECONNREFUSED 127.0.0.1:9).');
  // The demo's log is pretty, at warn, unless configured: the export's warnings are shown, its info lines are not.
  const logged = lines.filter((l) => /^\d\d:\d\d:\d\d\.\d{3} /.test(l));
  assert.ok(logged.length > 0 && logged.every((l) => / WARN  export of spans failed; retrying .*err=connect ECONNREFUSED 127\.0\.0\.1:9/.test(l)), logged.join('\n'));
});

test('the demo against a collector that refuses the spans (a 400, or a wrong port answering 404): exit 1, and how many with its answer on one line', async () => {
  const refusing = await startOtlpReceiver({ respond: () => ({ status: 400, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 3, message: 'invalid span:\n  trace_id \u001b[31mbad\u001b[0m\r' }) }) });
  const notCollector = await startOtlpReceiver({ respond: () => ({ status: 404, headers: { 'content-type': 'text/html' }, body: '<html><body>Not Found</body></html>\n' }) });
  try {
    const [refused, wrongPort] = await Promise.all([refusing, notCollector].map((c) => cli(['demo'], { OTEL_EXPORTER_OTLP_ENDPOINT: c.url, PREFECT_OTEL_LOG_LEVEL: 'silent' })));
    const exported = (r: CliResult): string[] => r.stdout.split('\n').filter((l) => l.startsWith('Exported ') || l.startsWith(')'));
    assert.deepEqual(
      { refused: { code: refused!.code, exported: exported(refused!) }, wrongPort: { code: wrongPort!.code, exported: exported(wrongPort!) } },
      {
        refused: { code: 1, exported: [`Exported 0 spans to ${refusing.url}/v1/traces (51 rejected: HTTP 400 Bad Request: invalid span:\\n  trace_id \\x1b[31mbad\\x1b[0m).`] },
        wrongPort: { code: 1, exported: [`Exported 0 spans to ${notCollector.url}/v1/traces (51 rejected: HTTP 404 Not Found: <html><body>Not Found</body></html>).`] },
      },
    );
  } finally {
    await Promise.all([refusing.close(), notCollector.close()]);
  }
});

test('the demo with PREFECT_OTEL_JAEGER_URL: the failed trace\'s link when its spans were delivered, none when the collector refused them all', async () => {
  const taking = await startOtlpReceiver();
  const refusing = await startOtlpReceiver({ respond: () => 401 });
  try {
    const env = (c: { url: string }): Record<string, string> => ({ OTEL_EXPORTER_OTLP_ENDPOINT: c.url, PREFECT_OTEL_JAEGER_URL: 'http://jaeger.test:16686', PREFECT_OTEL_LOG_LEVEL: 'silent' });
    const [delivered, refused] = await Promise.all([cli(['demo'], env(taking)), cli(['demo'], env(refusing))]);
    const ending = (r: CliResult): string[] => r.stdout.split('\n').filter((l) => /^(Sending|Exported|Open) /.test(l));
    assert.deepEqual(
      { delivered: { code: delivered.code, ending: ending(delivered) }, refused: { code: refused.code, ending: ending(refused) } },
      {
        delivered: {
          code: 0,
          ending: [
            `Sending 51 spans to ${taking.url}/v1/traces …`,
            `Exported 51 spans to ${taking.url}/v1/traces.`,
            'Open http://jaeger.test:16686/trace/01a211bc8c9c7986985619147fd1e034',
          ],
        },
        refused: {
          code: 1,
          ending: [`Sending 51 spans to ${refusing.url}/v1/traces …`, `Exported 0 spans to ${refusing.url}/v1/traces (51 rejected: HTTP 401 Unauthorized).`],
        },
      },
    );
  } finally {
    await Promise.all([taking.close(), refusing.close()]);
  }
});

test('the demo with a ratio sampler: the trees and the spans sent are the traces kept, and the spans left out are said with the sampler', async (t) => {
  const receiver = await startOtlpReceiver();
  t.after(() => receiver.close());
  const r = await cli(['demo'], { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.5', PREFECT_OTEL_LOG_LEVEL: 'silent', COLUMNS: '200' });
  assert.equal(r.code, 0, r.stderr);
  const spans = receiver.spans();
  const traces = new Set(spans.map((s) => s.traceId));
  assert.deepEqual(
    r.stdout.split('\n').filter((l) => /^(\d+ events|Exported )/.test(l)),
    [
      `167 events → ${spans.length} spans in ${traces.size} traces; ${51 - spans.length} more spans left out by the sampler (OTEL_TRACES_SAMPLER=traceidratio 0.5)`,
      `Exported ${spans.length} spans to ${receiver.url}/v1/traces.`,
    ],
  );
  assert.deepEqual(new Set([...r.stdout.matchAll(/^trace ([0-9a-f]{32})/gm)].map((m) => m[1])), traces, 'a tree for each trace sent, and only those');
  assert.ok(traces.size > 0 && traces.size < 4, `some of the 4 traces kept, got ${traces.size}`);
});

test('the demo with OTel logs on and no collector: the spans and the log records not delivered are each counted alone', async () => {
  const r = await cli(['demo'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_EXPORTER_OTLP_TIMEOUT: '300', OTEL_LOGS_EXPORTER: 'otlp', PREFECT_OTEL_LOG_LEVEL: 'silent' });
  assert.equal(r.code, 1, r.stderr);
  const exported = r.stdout.split('\n').filter((l) => l.startsWith('Exported '));
  assert.equal(exported.length, 2, r.stdout);
  assert.equal(exported[0], 'Exported 0 spans to http://127.0.0.1:9/v1/traces (51 not delivered: connect ECONNREFUSED 127.0.0.1:9).');
  assert.match(exported[1]!, /^Exported 0 log records to http:\/\/127\.0\.0\.1:9\/v1\/logs \(\d+ not delivered: connect ECONNREFUSED 127\.0\.0\.1:9\)\.$/);
});

test('the demo with OTel logs on and only a logs endpoint, which refuses them: spans are not exported, and the log records refused are said with the answer, exit 1', async () => {
  const refusing = await startOtlpReceiver({ respond: () => 401 });
  try {
    const r = await cli(['demo'], { OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: `${refusing.url}/v1/logs`, OTEL_LOGS_EXPORTER: 'otlp', PREFECT_OTEL_LOG_LEVEL: 'silent' });
    assert.equal(r.code, 1, r.stderr);
    const ending = r.stdout.split('\n').filter((l) => /^(Spans were not|Exported) /.test(l));
    assert.equal(ending.length, 2, r.stdout);
    assert.match(ending[0]!, /^Spans were not exported: set OTEL_EXPORTER_OTLP_ENDPOINT/);
    assert.match(ending[1]!, new RegExp(`^Exported 0 log records to ${refusing.url.replace(/[.]/g, '\\.')}/v1/logs \\((\\d+) rejected: HTTP 401 Unauthorized\\)\\.$`));
  } finally {
    await refusing.close();
  }
});

test('the demo piped into a reader that stops early (demo | head) ends normally', async () => {
  const { child, result } = startCli(['demo'], {});
  child.stdout!.once('data', () => child.stdout!.destroy());
  const r = await result;
  assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 0, stderr: '' });
});

test('the demo links its simulated runs only to a UI given as PREFECT_UI_URL, not to the Cloud workspace of a PREFECT_API_URL it does not read', async () => {
  const cloud = 'https://api.prefect.cloud/api/accounts/9b5e6a10-1c2d-4e3f-8a9b-0c1d2e3f4a5b/workspaces/3f2e1d0c-b9a8-4765-9432-10fedcba9876';
  const [unset, given] = await Promise.all([
    cli(['demo'], { PREFECT_API_URL: cloud, PREFECT_OTEL_LOG_FORMAT: 'json' }),
    cli(['demo'], { PREFECT_API_URL: cloud, PREFECT_UI_URL: 'http://ui.test:4200', PREFECT_OTEL_LOG_FORMAT: 'json' }),
  ]);
  const runUrls = (r: CliResult): string[] => [...new Set(r.stdout.split('\n').filter((l) => l.startsWith('{') && l.includes('STLOGGING: ')).map((l) => /"prefect\.run\.url":"(https?:\/\/[^/"]+)/.exec(l)?.[1] ?? 'none'))];
  assert.deepEqual([unset.code, runUrls(unset), given.code, runUrls(given)], [0, ['none'], 0, ['http://ui.test:4200']]);
});
