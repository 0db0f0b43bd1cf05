/**
 * Configuration problems on the command line: a flag is meant for prefect-otel alone, so a bad value
 * is an error (exit 2) whatever the setting; the same value in an OTEL_* variable, which every
 * OpenTelemetry component of the environment reads, warns and falls back.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startCli, type CliResult } from '../helpers/cli.js';
import { logLines } from '../helpers/watch-e2e.js';
import { SETTINGS } from '../../src/settings.js';
import { VERSION } from '../../src/version.js';

function cli(args: string[], env: Record<string, string>): Promise<CliResult> {
  return startCli(args, { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'info', ...env }, '').result;
}

test('a bad value given as a flag is a configuration error even for an OpenTelemetry setting (exit 2); only its OTEL_* variable warns and falls back', async () => {
  const flags = await cli(['replay', '-', '--traces-exporter', 'consol', '--otlp-timeout=5s'], {});
  assert.deepEqual({ code: flags.code, stderr: flags.stderr }, {
    code: 2,
    stderr: [
      'prefect-otel: invalid configuration:',
      '  - --otlp-timeout: expected a whole number ms, got "5s"',
      '  - --traces-exporter: must be one of otlp, console, none, got "consol"',
      '',
      '',
    ].join('\n'),
  });
  const variables = await cli(['replay', '-'], { OTEL_TRACES_EXPORTER: 'consol', OTEL_EXPORTER_OTLP_TIMEOUT: '5s', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' });
  assert.deepEqual({ code: variables.code, warnings: logLines(variables.stdout).filter((l) => l.component === 'config').map((l) => l.msg) }, {
    code: 0,
    warnings: [
      'OTEL_EXPORTER_OTLP_TIMEOUT: expected a whole number ms, got "5s"; using the default (10000)',
      'OTEL_TRACES_EXPORTER: must be one of otlp, console, none, got "consol"; using the default (otlp)',
    ],
  });
});

test('a blank flag for a setting that must say something (a service name, a state file, a URL) is a configuration error listed with the others (exit 2); the blank variable is unset', async () => {
  const flags = await cli(['replay', '-', '--service-name=', '--state-file', ' ', '--api-url=', '--otlp-timeout=5s'], {});
  assert.deepEqual({ code: flags.code, stderr: flags.stderr }, {
    code: 2,
    stderr: [
      'prefect-otel: invalid configuration:',
      '  - --api-url: must not be empty',
      '  - --otlp-timeout: expected a whole number ms, got "5s"',
      '  - --service-name: must not be empty',
      '  - --state-file: must not be empty',
      '',
      '',
    ].join('\n'),
  });
  const variables = await cli(['replay', '-'], { OTEL_SERVICE_NAME: '', PREFECT_OTEL_STATE_FILE: '', OTEL_RESOURCE_ATTRIBUTES: 'service.name=etl', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'debug' });
  const settings = logLines(variables.stdout).find((l) => l.msg === 'replay starting')?.settings as Record<string, unknown> | undefined;
  assert.deepEqual(
    { code: variables.code, serviceName: settings?.serviceName, stateFile: settings?.stateFile, warnings: logLines(variables.stdout).filter((l) => l.component === 'config' && l.level === 40) },
    { code: 0, serviceName: 'etl', stateFile: '.prefect-otel/state.json', warnings: [] },
  );
});

test('a flag with no value before the next flag says it needs one instead of taking that flag as its value (exit 2)', async () => {
  const r = await cli(['--settle-ms', '--batch-size', '5', 'replay', '-'], {});
  assert.deepEqual({ code: r.code, problems: r.stderr.split('\n\n')[0] }, {
    code: 2,
    problems: ['prefect-otel: invalid configuration:', '  - --settle-ms needs a value'].join('\n'),
  });
});

test('`--` ends the options: replay reads a file whose name starts with dashes; its summary names the exporter as the flag that chose it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-dashdash-'));
  try {
    writeFileSync(join(dir, '--events.jsonl'), '# nothing yet\n');
    const r = await startCli(['replay', '--traces-exporter=none', '--', '--events.jsonl'], { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'warn' }, '', { cwd: dir }).result;
    assert.deepEqual({ code: r.code, stderr: r.stderr }, {
      code: 0,
      stderr: [
        'events read: 0 (1 line, 1 blank or comment, 0 duplicates, 0 not about a run)',
        'skipped: 0',
        'runs: 0  spans: 0 (0 incomplete)',
        'spans: not exported (--traces-exporter=none)',
        'export: ok',
        '',
      ].join('\n'),
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unknown options are named as options, with the flag they are closest to; short ones too; `--no-<flag>` says how to turn a setting off', async () => {
  const r = await cli(['--setle-ms=4', '-V', '--no-api-tls-insecure-skip-verify', '--otlp-header', 'x=SECRET', '--frobnicate', 'replay', '-'], {});
  assert.deepEqual({ code: r.code, problems: r.stderr.split('\n\n')[0], secret: r.stderr.includes('SECRET') }, {
    code: 2,
    problems: [
      'prefect-otel: invalid configuration:',
      '  - unknown option --setle-ms (did you mean --settle-ms?)',
      '  - unknown option -V',
      '  - unknown option --no-api-tls-insecure-skip-verify (use --api-tls-insecure-skip-verify=false)',
      '  - unknown option --otlp-header (did you mean --otlp-headers?)',
      '  - unknown option --frobnicate',
    ].join('\n'),
    secret: false,
  });
});

test('a mistake on the command line is followed by one line pointing at the usage of the command it was for, not by the whole usage (exit 2)', async () => {
  const runs = await Promise.all([
    cli(['replay', '-', '--bogus'], {}),
    cli(['demo', '--traces-exporter'], {}),
    cli(['--frobnicate=1'], {}),
    cli(['wacth'], {}),
    cli(['start'], {}),
  ]);
  assert.deepEqual(runs.map((r) => ({ code: r.code, stderr: r.stderr })), [
    { code: 2, stderr: "prefect-otel: invalid configuration:\n  - unknown option --bogus\n\nRun 'prefect-otel replay --help' for the usage.\n" },
    { code: 2, stderr: "prefect-otel: invalid configuration:\n  - --traces-exporter needs a value\n\nRun 'prefect-otel demo --help' for the usage.\n" },
    { code: 2, stderr: "prefect-otel: invalid configuration:\n  - unknown option --frobnicate\n\nRun 'prefect-otel --help' for the usage.\n" },
    { code: 2, stderr: "prefect-otel: invalid configuration:\n  - unknown command \"wacth\" (did you mean watch?)\n\nRun 'prefect-otel --help' for the usage.\n" },
    { code: 2, stderr: "prefect-otel: invalid configuration:\n  - unknown command \"start\" (commands: watch, replay FILE, demo)\n\nRun 'prefect-otel --help' for the usage.\n" },
  ]);
});

test('a flag written as Python and Prefect write names (snake case, a variable\'s name) is named with the flag it means, its value never shown', async () => {
  const r = await cli(['--log_level=debug', '--PREFECT_API_KEY', 'pnu_SECRET', '--OTEL_EXPORTER_OTLP_HEADERS=authorization=SECRET', '--Settle_MS', '5', '--ssl_cert_file', 'x.pem', 'replay', '-'], {});
  assert.deepEqual({ code: r.code, problems: r.stderr.split('\n\n')[0], secret: r.stderr.includes('SECRET') }, {
    code: 2,
    problems: [
      'prefect-otel: invalid configuration:',
      '  - unknown option --log_level (did you mean --log-level?)',
      '  - unknown option --PREFECT_API_KEY (did you mean --api-key?)',
      '  - unknown option --OTEL_EXPORTER_OTLP_HEADERS (did you mean --otlp-headers?)',
      '  - unknown option --Settle_MS (did you mean --settle-ms?)',
      '  - unknown option --ssl_cert_file (did you mean --api-ssl-cert-file?)',
    ].join('\n'),
    secret: false,
  });
});

test('a configuration error (exit 2) also lists what was only warned of, so that one run shows everything to fix', async () => {
  const r = await cli(['replay', '-', '--batch-size=0'], { OTEL_BSP_MAX_QUEUE_SIZE: '-1', PREFECT_OTEL_SETLE_MS: '5', PREFECT_OTEL_LOG_FORMAT: 'xml' });
  assert.deepEqual({ code: r.code, stderr: r.stderr }, {
    code: 2,
    stderr: [
      'prefect-otel: invalid configuration:',
      '  - PREFECT_OTEL_LOG_FORMAT: must be one of json, pretty, got "xml"',
      '  - --batch-size: must be between 1 and 100000, got 0',
      'also (warnings):',
      '  - OTEL_BSP_MAX_QUEUE_SIZE: must be between 1 and 10000000, got -1; using the default (20000)',
      '  - PREFECT_OTEL_SETLE_MS is not a prefect-otel setting, so it does nothing (did you mean PREFECT_OTEL_SETTLE_MS?)',
      '',
      '',
    ].join('\n'),
  });
});

test('a true/false flag given alone is true, before or after the command; `--flag false`, `--flag=false` and `--flag yes` still say what they say', async () => {
  const WARNING = "--api-tls-insecure-skip-verify is on: the Prefect server's certificate is not checked";
  const SUMMARY = 'events read: 0 (0 lines, 0 duplicates, 0 not about a run)\nskipped: 0\nruns: 0  spans: 0 (0 incomplete)\nspans: 0 exported\nexport: ok\n';
  const runs = await Promise.all(
    [
      ['replay', '-', '--api-tls-insecure-skip-verify'],
      ['--api-tls-insecure-skip-verify', 'replay', '-'],
      ['replay', '--api-tls-insecure-skip-verify', '-'],
      ['replay', '-', '--api-tls-insecure-skip-verify', '--batch-size', '5'],
      ['replay', '-', '--api-tls-insecure-skip-verify', 'yes'],
      ['replay', '-', '--api-tls-insecure-skip-verify', 'FALSE'],
      ['replay', '-', '--api-tls-insecure-skip-verify=false'],
    ].map((args) => cli(args, {})),
  );
  assert.deepEqual(
    runs.map((r) => ({ code: r.code, stderr: r.stderr, warnings: logLines(r.stdout).filter((l) => l.level === 40).map((l) => l.msg) })),
    [
      { code: 0, stderr: SUMMARY, warnings: [WARNING] },
      { code: 0, stderr: SUMMARY, warnings: [WARNING] },
      { code: 0, stderr: SUMMARY, warnings: [WARNING] },
      { code: 0, stderr: SUMMARY, warnings: [WARNING] },
      { code: 0, stderr: SUMMARY, warnings: [WARNING] },
      { code: 0, stderr: SUMMARY, warnings: [] },
      { code: 0, stderr: SUMMARY, warnings: [] },
    ],
  );
});

test('each command\'s --help lists the flags that command reads and says how many others it does not read (warned of as flags); the general --help lists every one', async () => {
  const [watch, replay, demo, general] = await Promise.all([cli(['watch', '--help'], {}), cli(['replay', '--help'], {}), cli(['demo', '--help'], {}), cli(['--help'], {})]);
  const every = Object.values(SETTINGS).map((d) => d.flag);
  const listed = (r: CliResult): string[] => [...r.stdout.matchAll(/^ {2}(--[a-z-]+) +[A-Z_]+/gm)].map((m) => m[1]!);
  const left = (r: CliResult): string[] => every.filter((f) => !listed(r).includes(f));
  const stateAndStream = ['--state-file', '--resume-margin-ms', '--idle-timeout-ms', '--state-flush-ms', '--state-lease-ms'];
  assert.deepEqual(
    {
      watch: left(watch), replay: left(replay), demo: left(demo), general: left(general),
      notes: [watch, replay, demo, general].map((r) => r.stdout.split('\n').find((l) => l.startsWith('(prefect-otel --help lists'))),
    },
    {
      watch: [],
      replay: stateAndStream,
      demo: [
        '--api-url', '--api-key', '--auth-string', '--client-custom-headers', '--api-ssl-cert-file', '--api-tls-insecure-skip-verify', '--api-request-timeout', '--profile',
        '--otlp-metrics-endpoint', '--otlp-metrics-headers', '--otlp-metrics-protocol', '--otlp-metrics-compression', '--otlp-metrics-timeout',
        '--metrics-exporter', '--metric-export-interval-ms', '--metric-export-timeout-ms', '--otlp-metrics-temporality-preference',
        '--state-file', '--resume-margin-ms', '--idle-timeout-ms', '--state-flush-ms', '--state-lease-ms', '--stats-interval-ms', '--http-port', '--http-host',
      ],
      general: [],
      notes: [undefined, '(prefect-otel --help lists 5 more: replay does not read them, and warns of one given as a flag)', '(prefect-otel --help lists 25 more: demo does not read them, and warns of one given as a flag)', undefined],
    },
  );
});

test('a flag the command does not read is warned of, all of them in one line; the same settings as variables, shared by every command, are not', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'prefect-otel-unread-')), 'empty.jsonl');
  writeFileSync(file, '');
  const configLines = (r: CliResult): unknown[] => logLines(r.stdout).filter((l) => l.component === 'config').map((l) => [l.level, l.msg]);
  const [replay, replayVariables, demo] = await Promise.all([
    cli(['replay', file, '--resume-margin-ms', '5', '--batch-size', '10', '--state-file', join(tmpdir(), 'never.json')], {}),
    cli(['replay', file], { PREFECT_OTEL_RESUME_MARGIN_MS: '5', PREFECT_OTEL_STATE_FILE: join(tmpdir(), 'never.json') }),
    cli(['demo', '--api-url', 'http://127.0.0.1:9/api', '--log-format', 'json'], { OTEL_TRACES_EXPORTER: 'none' }),
  ]);
  assert.deepEqual(
    { replay: [replay.code, configLines(replay)], replayVariables: [replayVariables.code, configLines(replayVariables)], demo: [demo.code, configLines(demo)] },
    {
      replay: [0, [[40, '--resume-margin-ms, --state-file are not read by replay: they do nothing there']]],
      replayVariables: [0, []],
      demo: [0, [[40, '--api-url is not read by demo: it does nothing there']]],
    },
  );
});

test('`<command> --help` (or `help <command>`) prints that command\'s usage and exits 0, whatever else is on the line; `--help` alone the general one', async () => {
  const runs = await Promise.all(
    [['watch', '--help'], ['replay', '--help'], ['replay', 'events.jsonl', '-h'], ['help', 'replay'], ['demo', '--help'], ['--help']].map((args) => cli(args, {})),
  );
  const usage = (r: CliResult): string => r.stdout.split('\n').find((l) => l.startsWith('  prefect-otel')) ?? '';
  assert.deepEqual(
    runs.map((r) => ({ code: r.code, stderr: r.stderr, first: r.stdout.split('\n')[0], usage: usage(r), flags: r.stdout.includes('  --settle-ms '), exit: r.stdout.split('\n').find((l) => l.startsWith('Exit codes:')) })),
    [
      { code: 0, stderr: '', first: 'prefect-otel watch: follow the event stream of PREFECT_API_URL and export spans and logs until SIGINT/SIGTERM/SIGHUP', usage: '  prefect-otel [watch] [--flag value | --flag=value]…', flags: true, exit: 'Exit codes: 0 stopped by SIGINT/SIGTERM, 1 failure (spans neither delivered nor kept in the state file, protocol error) or a second signal,' },
      { code: 0, stderr: '', first: 'prefect-otel replay: build and export spans from a JSON-lines file of Prefect events', usage: '  prefect-otel replay FILE [--flag value | --flag=value]… [-- FILE]', flags: true, exit: 'Exit codes: 0 done, 1 failure (export failed, input unreadable, compressed or in another text encoding), 2 configuration error,' },
      { code: 0, stderr: '', first: 'prefect-otel replay: build and export spans from a JSON-lines file of Prefect events', usage: '  prefect-otel replay FILE [--flag value | --flag=value]… [-- FILE]', flags: true, exit: 'Exit codes: 0 done, 1 failure (export failed, input unreadable, compressed or in another text encoding), 2 configuration error,' },
      { code: 0, stderr: '', first: 'prefect-otel replay: build and export spans from a JSON-lines file of Prefect events', usage: '  prefect-otel replay FILE [--flag value | --flag=value]… [-- FILE]', flags: true, exit: 'Exit codes: 0 done, 1 failure (export failed, input unreadable, compressed or in another text encoding), 2 configuration error,' },
      { code: 0, stderr: '', first: 'prefect-otel demo: run a simulated Prefect workload through the pipeline and draw its traces', usage: '  prefect-otel demo [--flag value | --flag=value]…', flags: true, exit: 'Exit codes: 0 done, 1 the export to the collector failed, 2 configuration error.' },
      { code: 0, stderr: '', first: `prefect-otel ${VERSION}: Prefect flow runs and task runs as OpenTelemetry traces`, usage: "  prefect-otel [watch]        follow PREFECT_API_URL's event stream and export spans until SIGINT/SIGTERM/SIGHUP", flags: true, exit: 'Exit codes: 0 ok, 1 failure (export failed, input unreadable, compressed or in another text encoding, protocol error),' },
    ],
  );
});
