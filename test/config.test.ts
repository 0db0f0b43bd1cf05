import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { describeConfig, resolveConfig, SETTINGS, type Config, type SettingKey } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { createResource } from '../src/export/spans.js';
import { VERSION } from '../src/version.js';

/** The OpenTelemetry JS SDK version this package pins (its spans' `telemetry.sdk.version`). */
const OTEL_CORE_VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { dependencies: Record<string, string> }).dependencies['@opentelemetry/core'];

const transport = (env: Record<string, string>) => {
  const c = resolveConfig({}, env);
  return Object.fromEntries((['traces', 'logs', 'metrics'] as const).map((s) => [s, [c[s].protocol, c[s].compression, c[s].timeoutMs]]));
};

test('OTLP protocol, compression and timeout: the generic variable sets every signal, the traces one only traces', () => {
  assert.deepEqual(transport({}), { traces: ['http/protobuf', 'none', 10_000], logs: ['http/protobuf', 'none', 10_000], metrics: ['http/protobuf', 'none', 10_000] });
  assert.deepEqual(transport({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip', OTEL_EXPORTER_OTLP_TIMEOUT: '3000' }), {
    traces: ['http/json', 'gzip', 3_000], logs: ['http/json', 'gzip', 3_000], metrics: ['http/json', 'gzip', 3_000],
  });
  assert.deepEqual(
    transport({ OTEL_EXPORTER_OTLP_TIMEOUT: '3000', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: 'gzip', OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '7000' }),
    { traces: ['http/json', 'gzip', 7_000], logs: ['http/protobuf', 'none', 3_000], metrics: ['http/protobuf', 'none', 3_000] },
  );
});

test('OTLP headers an HTTP request cannot carry are a configuration warning (OTel variables fall back to their default), their value never shown', () => {
  const c = resolveConfig({}, { OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%0Azzsecret', OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'bad name=1' });
  assert.deepEqual(c.traces.headers, {});
  assert.deepEqual(c.warnings, [
    'OTEL_EXPORTER_OTLP_HEADERS: the value of header authorization has characters an HTTP header cannot carry (a line break, say); using the default ({})',
    'OTEL_EXPORTER_OTLP_TRACES_HEADERS: the name of header 1 is not a valid HTTP header name (not shown: it may hold a secret); OTEL_EXPORTER_OTLP_HEADERS applies',
  ]);
  assert.deepEqual(resolveConfig({}, { OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20abc,x-tenant=t1' }).traces.headers, { authorization: 'Bearer abc', 'x-tenant': 't1' });
});

test('logs and metrics have their own OTLP headers, protocol, compression and timeout: option → signal variable → generic variable → default', () => {
  const env = {
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
    OTEL_EXPORTER_OTLP_HEADERS: 'x-all=generic,x-tenant=t1',
    OTEL_EXPORTER_OTLP_TIMEOUT: '3000',
    OTEL_EXPORTER_OTLP_LOGS_HEADERS: 'x-logs=from-env,x-tenant=t-logs',
    OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: 'gzip',
    OTEL_EXPORTER_OTLP_LOGS_TIMEOUT: '4000',
    OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'x-metrics=m',
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION: 'gzip',
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: '5000',
    OTEL_LOGS_EXPORTER: 'otlp',
    OTEL_METRICS_EXPORTER: 'otlp',
  };
  const c = resolveConfig({ otlpMetricsHeaders: { 'x-metrics': 'from-option' }, otlpMetricsTimeoutMs: 6_000 }, env);
  const signals = { traces: c.traces, logs: c.logs, metrics: c.metrics };
  assert.deepEqual(signals, {
    traces: { url: 'http://collector:4318/v1/traces', headers: { 'x-all': 'generic', 'x-tenant': 't1' }, protocol: 'http/protobuf', compression: 'none', timeoutMs: 3_000, exporter: 'otlp' },
    logs: { url: 'http://collector:4318/v1/logs', headers: { 'x-all': 'generic', 'x-tenant': 't-logs', 'x-logs': 'from-env' }, protocol: 'http/json', compression: 'gzip', timeoutMs: 4_000, exporter: 'otlp' },
    metrics: { url: 'http://collector:4318/v1/metrics', headers: { 'x-all': 'generic', 'x-tenant': 't1', 'x-metrics': 'from-option' }, protocol: 'http/json', compression: 'gzip', timeoutMs: 6_000, exporter: 'otlp', intervalMs: 60_000, exportTimeoutMs: 30_000, temporalityPreference: 'cumulative' },
  });
  assert.deepEqual(c.warnings, []);
});

test('a logs or metrics OTLP variable prefect-otel cannot use (gRPC, a bad header) warns and falls back to the generic one, secrets unshown', () => {
  const c = resolveConfig({}, {
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20generic',
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc',
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: 'soon',
    OTEL_EXPORTER_OTLP_LOGS_HEADERS: 'authorization=Bearer%0Dlogs-secret',
    OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: 'brotli',
  });
  assert.deepEqual([c.logs.protocol, c.logs.compression, c.logs.headers, c.metrics.protocol, c.metrics.timeoutMs], ['http/json', 'none', { authorization: 'Bearer generic' }, 'http/json', 10_000]);
  assert.deepEqual(c.warnings, [
    'OTEL_EXPORTER_OTLP_LOGS_HEADERS: the value of header authorization has characters an HTTP header cannot carry (a line break, say); OTEL_EXPORTER_OTLP_HEADERS applies',
    'OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: gRPC is not supported: prefect-otel speaks OTLP over HTTP only (http/protobuf or http/json); metrics: http/json is used (OTEL_EXPORTER_OTLP_PROTOCOL)',
    'OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: must be one of gzip, none, got "brotli"; OTEL_EXPORTER_OTLP_COMPRESSION applies',
    'OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: expected a whole number ms, got "soon"; OTEL_EXPORTER_OTLP_TIMEOUT applies',
  ]);
});

test('an OTLP endpoint on the collector\'s gRPC port 4317 with an HTTP protocol warns once, naming the signals and the OTLP/HTTP port; not again where the grpc warning says it, nor for a signal not exported', () => {
  const port = "4317 is the collector's OTLP/gRPC port; prefect-otel speaks OTLP over HTTP, whose port is 4318 by default";
  const generic = resolveConfig({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://user:pw@collector:4317', OTEL_LOGS_EXPORTER: 'otlp' });
  const one = resolveConfig({}, { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://collector:4317/v1/metrics' });
  const notExported = resolveConfig({}, { OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://collector:4317/v1/logs' });
  const withGrpc = resolveConfig({}, { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317', OTEL_LOGS_EXPORTER: 'otlp' });
  assert.deepEqual(
    { generic: generic.warnings, one: one.warnings, notExported: notExported.warnings, withGrpc: withGrpc.warnings },
    {
      generic: [`traces to http://collector:4317/v1/traces, logs to http://collector:4317/v1/logs: ${port}`],
      one: [`metrics to http://collector:4317/v1/metrics: ${port}`],
      notExported: [],
      withGrpc: [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: gRPC is not supported: prefect-otel speaks OTLP over HTTP only (http/protobuf or http/json); traces: http/protobuf is used (OTEL_EXPORTER_OTLP_PROTOCOL); http://collector:4317/v1/traces: 4317 is the collector's OTLP/gRPC port, its OTLP/HTTP port is 4318 by default",
        `logs to http://collector:4317/v1/logs: ${port}`,
      ],
    },
  );
});

test('OTLP protocol grpc warns that gRPC is not supported and what is used instead, with the collector\'s OTLP/HTTP port when the endpoint is on its gRPC port 4317; as a flag it is an error', () => {
  const grpc = 'gRPC is not supported: prefect-otel speaks OTLP over HTTP only (http/protobuf or http/json)';
  const port = "4317 is the collector's OTLP/gRPC port, its OTLP/HTTP port is 4318 by default";
  const generic = resolveConfig({}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317', OTEL_LOGS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://collector:4318/v1/logs' });
  const traces = resolveConfig({}, { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'GRPC' });
  const metrics = resolveConfig({}, { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'https://user:pw@collector:4317/v1/metrics?key=SECRET' });
  assert.deepEqual(
    { generic: [generic.warnings, generic.traces.protocol, generic.logs.protocol], traces: [traces.warnings, traces.traces.protocol], metrics: [metrics.warnings, metrics.metrics.protocol] },
    {
      generic: [[`OTEL_EXPORTER_OTLP_PROTOCOL: ${grpc}; http/protobuf is used; http://collector:4317/v1/traces: ${port}`], 'http/protobuf', 'http/protobuf'],
      traces: [[`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: ${grpc}; traces: http/protobuf is used (OTEL_EXPORTER_OTLP_PROTOCOL)`], 'http/protobuf'],
      metrics: [[`OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: ${grpc}; metrics: http/protobuf is used (OTEL_EXPORTER_OTLP_PROTOCOL); https://collector:4317/v1/metrics?key=[redacted]: ${port}`], 'http/protobuf'],
    },
  );
  assert.throws(() => resolveConfig({ otlpTracesProtocol: 'grpc' as never }, {}, (key) => SETTINGS[key].flag), (err: ConfigError) => {
    assert.deepEqual(err.problems, [`--otlp-traces-protocol: ${grpc}`]);
    return true;
  });
});

test('service.name: OTEL_SERVICE_NAME (or the option) wins over a service.name in OTEL_RESOURCE_ATTRIBUTES, which wins over the default, as OpenTelemetry has it', () => {
  const resource = (options: Parameters<typeof resolveConfig>[0], env: Record<string, string>) => createResource(resolveConfig(options, env)).attributes;
  const sdk = { 'telemetry.sdk.name': 'opentelemetry', 'telemetry.sdk.language': 'nodejs', 'telemetry.sdk.version': OTEL_CORE_VERSION, 'telemetry.distro.name': 'prefect-otel', 'telemetry.distro.version': VERSION };
  const attrs = 'service.name=etl%20tracer,deployment.environment.name=prod';
  assert.deepEqual(
    {
      fromAttributes: resource({}, { OTEL_RESOURCE_ATTRIBUTES: attrs }),
      fromVariable: resource({}, { OTEL_RESOURCE_ATTRIBUTES: attrs, OTEL_SERVICE_NAME: 'from-variable' }),
      fromOption: resource({ serviceName: 'from-option' }, { OTEL_RESOURCE_ATTRIBUTES: attrs, OTEL_SERVICE_NAME: 'from-variable' }),
      byDefault: resource({}, { OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=prod' }),
    },
    {
      fromAttributes: { 'service.name': 'etl tracer', 'deployment.environment.name': 'prod', ...sdk },
      fromVariable: { 'service.name': 'from-variable', 'deployment.environment.name': 'prod', ...sdk },
      fromOption: { 'service.name': 'from-option', 'deployment.environment.name': 'prod', ...sdk },
      byDefault: { 'service.name': 'prefect', 'deployment.environment.name': 'prod', ...sdk },
    },
  );
});

test('a number past the top of its range is an error, listed with the others, as one below it is', () => {
  assert.throws(
    () => resolveConfig({}, { PREFECT_API_REQUEST_TIMEOUT: '3601', PREFECT_OTEL_SETTLE_MS: '600001', PREFECT_OTEL_MAX_OPEN_RUNS: '1e3' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'PREFECT_API_REQUEST_TIMEOUT: must be between 0.1 and 3600 s, got 3601',
        'PREFECT_OTEL_SETTLE_MS: must be between 0 and 600000 ms, got 600001',
        'PREFECT_OTEL_MAX_OPEN_RUNS: expected a whole number, got "1e3"',
      ]);
      return true;
    },
  );
});

test('a key=value entry without a key is refused: OTEL_RESOURCE_ATTRIBUTES warns and falls back whole, the option is an error', () => {
  const c = resolveConfig({}, { OTEL_RESOURCE_ATTRIBUTES: 'team=data,=orphan' });
  assert.deepEqual(
    { warnings: c.warnings, resource: c.resource },
    {
      warnings: ['OTEL_RESOURCE_ATTRIBUTES: expected key=value pairs separated by commas (entry 2 is not key=value); using the default ({})'],
      resource: { serviceName: 'prefect', attributes: {} },
    },
  );
  assert.throws(() => resolveConfig({ resourceAttributes: '=x' }, {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.problems, ['option resourceAttributes: expected key=value pairs separated by commas (entry 1 is not key=value)']);
    return true;
  });
});

test('a blank text setting: a variable is unset (the default, or OTEL_RESOURCE_ATTRIBUTES\' service.name, applies); a flag or option is an error, listed with the others', () => {
  const inForce = (options: Parameters<typeof resolveConfig>[0], env: Record<string, string>) => {
    const c = resolveConfig(options, env);
    return { apiUrl: c.prefect.apiUrl, tracesUrl: c.traces.url, resource: c.resource, stateFile: c.stateFile, warnings: c.warnings };
  };
  const defaults = { apiUrl: 'http://127.0.0.1:4200/api', tracesUrl: 'http://localhost:4318/v1/traces', stateFile: '.prefect-otel/state.json', warnings: [] };
  const blankVariables = { PREFECT_API_URL: '', OTEL_EXPORTER_OTLP_ENDPOINT: ' ', OTEL_SERVICE_NAME: '', PREFECT_OTEL_STATE_FILE: '  ' };
  assert.deepEqual(
    {
      variables: inForce({}, blankVariables),
      withAttributes: inForce({}, { ...blankVariables, OTEL_RESOURCE_ATTRIBUTES: 'service.name=etl' }),
    },
    {
      variables: { ...defaults, resource: { serviceName: 'prefect', attributes: {} } },
      withAttributes: { ...defaults, resource: { serviceName: 'etl', attributes: { 'service.name': 'etl' } } },
    },
  );
  assert.throws(
    () => resolveConfig({ apiUrl: '', otlpEndpoint: ' ', serviceName: '', stateFile: '  ', settleMs: -1 }, { OTEL_SERVICE_NAME: 'from-variable' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'option apiUrl: must not be empty',
        'option otlpEndpoint: must not be empty',
        'option serviceName: must not be empty',
        'option stateFile: must not be empty',
        'option settleMs: must be between 0 and 600000 ms, got -1',
      ]);
      return true;
    },
  );
});

test('a blank optional flag or option clears its setting, over its variable too', () => {
  const c = resolveConfig(
    // As the CLI passes them: `--client-custom-headers=` and `--otlp-headers=` are blank strings.
    { apiKey: ' ', apiSslCertFile: '', uiUrl: '', prefectProfile: '', otlpTracesEndpoint: '', jaegerUrl: '  ', httpPort: '' as unknown as number, clientCustomHeaders: ' ' as unknown as Record<string, string>, otlpHeaders: '' as unknown as Record<string, string> },
    { PREFECT_API_KEY: 'key', PREFECT_PROFILE: 'cloud', SSL_CERT_FILE: '/nowhere/ca.pem', PREFECT_UI_URL: 'http://ui:4200', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://traces:4318/t', PREFECT_OTEL_JAEGER_URL: 'http://jaeger:16686', PREFECT_OTEL_HTTP_PORT: '9464', PREFECT_CLIENT_CUSTOM_HEADERS: '{"CF-Access-Client-Id": "id"}', OTEL_EXPORTER_OTLP_HEADERS: 'x-team=secret' },
  );
  assert.deepEqual(
    { prefect: c.prefect, tracesUrl: c.traces.url, tracesHeaders: c.traces.headers, jaegerUrl: c.jaegerUrl, httpPort: c.httpPort, warnings: c.warnings },
    { prefect: { apiUrl: 'http://127.0.0.1:4200/api', apiKey: undefined, authString: undefined, uiUrl: undefined, customHeaders: {}, tls: { ca: undefined, caFile: undefined, rejectUnauthorized: true }, proxy: undefined, requestTimeoutMs: 60_000, credentialNames: { apiKey: undefined, authString: undefined }, profileName: undefined, profile: undefined }, tracesUrl: 'http://localhost:4318/v1/traces', tracesHeaders: {}, jaegerUrl: undefined, httpPort: undefined, warnings: [] },
  );
});

test('a bad option is an error for every setting, OpenTelemetry ones too: only an OTEL_* variable warns and falls back', () => {
  assert.throws(
    () => resolveConfig({ tracesExporter: 'consol' as 'otlp', otlpTimeoutMs: '5s' as unknown as number, settleMs: -1 }, {}),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'option otlpTimeoutMs: expected a whole number ms, got "5s"',
        'option tracesExporter: must be one of otlp, console, none, got "consol"',
        'option settleMs: must be between 0 and 600000 ms, got -1',
      ]);
      return true;
    },
  );
});

test('an option that is no setting is an error, with the nearest name whatever its case; so are options and variables that are no text', () => {
  const problems = (options: unknown, env: unknown = {}): readonly string[] => {
    try {
      resolveConfig(options as Parameters<typeof resolveConfig>[0], env as Record<string, string>);
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.problems;
    }
    return [];
  };
  assert.deepEqual(problems({ apiURL: 'http://prefect:4200/api', otlpEndpont: 'http://collector:4318', settleMs: 100, colour: true, env: {} }), [
    'option apiURL: not a prefect-otel option, so it would do nothing (did you mean apiUrl?)',
    'option otlpEndpont: not a prefect-otel option, so it would do nothing (did you mean otlpEndpoint?)',
    'option colour: not a prefect-otel option, so it would do nothing',
    'option env: not a prefect-otel option, so it would do nothing',
  ]);
  assert.deepEqual(
    ([null, 'http://prefect:4200/api', 5, []] as const).map((options) => problems(options)),
    [
      ['options: expected an object of settings, got null'],
      ['options: expected an object of settings, got a string'],
      ['options: expected an object of settings, got a number'],
      ['options: expected an object of settings, got an array'],
    ],
  );
  // Variables are text: a number is said, with every other problem, instead of a TypeError.
  assert.deepEqual(problems({ settleMs: -1 }, { PREFECT_OTEL_HTTP_PORT: 9464, PREFECT_OTEL_LOG_LEVEL: 'debug', OTEL_SDK_DISABLED: false }), [
    'option env: PREFECT_OTEL_HTTP_PORT: expected a string, got a number',
    'option env: OTEL_SDK_DISABLED: expected a string, got a boolean',
    'option settleMs: must be between 0 and 600000 ms, got -1',
  ]);
  assert.deepEqual(problems({}, null), ['option env: expected an object of environment variables, got null']);
});

test('every setting given a value of any JavaScript type resolves or is a ConfigError, never a TypeError', () => {
  const values: unknown[] = [null, 5, -1, 1.5, NaN, Infinity, true, 'abc', '', [], ['a'], {}, { a: 1 }, { a: 'b' }, () => 1, Symbol('s'), 10n, new Date(0), Object.create(null)];
  const thrown: string[] = [];
  for (const key of Object.keys(SETTINGS)) {
    for (const value of values) {
      try {
        resolveConfig({ [key]: value }, {});
      } catch (err) {
        if (!(err instanceof ConfigError)) thrown.push(`${key}: ${String(err)}`);
      }
    }
  }
  assert.deepEqual(thrown, []);
  assert.deepEqual(
    [{ httpPort: 10n }, { tracesExporter: 10n }, { settleMs: Object.create(null) as unknown }].map((o) => {
      try {
        return resolveConfig(o as Parameters<typeof resolveConfig>[0], {}) && 'resolved';
      } catch (err) {
        return (err as ConfigError).problems;
      }
    }),
    [['option httpPort: expected a whole number, got "10"'], ['option tracesExporter: must be one of otlp, console, none, got 10n'], ['option settleMs: expected a whole number ms, got {}']],
  );
});

test('a flag or option wins over the environment, a signal\'s own variable too; between two flags or two variables the signal\'s own wins', () => {
  const env = {
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://generic-env:4318',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://traces-env:4318/v1/traces',
    OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'authorization=traces-env,x-traces=env',
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '7000',
    OTEL_EXPORTER_OTLP_LOGS_COMPRESSION: 'gzip',
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://metrics-env:4318/v1/metrics',
  };
  const c = resolveConfig(
    { otlpEndpoint: 'http://generic-option:4318', otlpHeaders: { authorization: 'generic-option' }, otlpProtocol: 'http/protobuf', otlpCompression: 'none', otlpMetricsEndpoint: 'http://metrics-option:4318/m' },
    env,
  );
  assert.deepEqual({ traces: c.traces, logs: c.logs, metrics: c.metrics }, {
    traces: { url: 'http://generic-option:4318/v1/traces', headers: { authorization: 'generic-option', 'x-traces': 'env' }, protocol: 'http/protobuf', compression: 'none', timeoutMs: 7_000, exporter: 'otlp' },
    logs: { url: 'http://generic-option:4318/v1/logs', headers: { authorization: 'generic-option' }, protocol: 'http/protobuf', compression: 'none', timeoutMs: 10_000, exporter: 'none' },
    metrics: { url: 'http://metrics-option:4318/m', headers: { authorization: 'generic-option' }, protocol: 'http/protobuf', compression: 'none', timeoutMs: 10_000, exporter: 'none', intervalMs: 60_000, exportTimeoutMs: 30_000, temporalityPreference: 'cumulative' },
  });
  // With no option, the environment alone: the signal's own variable wins over the generic one.
  const e = resolveConfig({}, env);
  assert.deepEqual([e.traces.url, e.traces.headers, e.traces.protocol, e.logs.url, e.logs.compression, e.metrics.url], [
    'http://traces-env:4318/v1/traces', { 'authorization': 'traces-env', 'x-traces': 'env' }, 'http/json', 'http://generic-env:4318/v1/logs', 'gzip', 'http://metrics-env:4318/v1/metrics',
  ]);
});

test('describeConfig: the proxies as they are used, a scheme-less user:password@host:port too, without their credentials', () => {
  const c = resolveConfig({}, { HTTPS_PROXY: 'otel:s3cret@proxy.corp:3128', HTTP_PROXY: 'http://otel:s3cret@proxy.corp:3129', NO_PROXY: 'localhost' });
  const shown = describeConfig(c);
  assert.deepEqual(shown.proxy, { https: 'http://proxy.corp:3128/', http: 'http://proxy.corp:3129/', noProxy: 'localhost' });
  assert.ok(!JSON.stringify(shown).includes('s3cret'), JSON.stringify(shown));
});

test('OTLP base endpoint with a query string (a vendor key): the signal paths go into the path, before the query, and the startup line shows no query value', () => {
  const c = resolveConfig({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.vendor.example/otlp/?api-key=k3yv4lue&region=eu#frag', OTEL_LOGS_EXPORTER: 'otlp', OTEL_METRICS_EXPORTER: 'otlp' });
  assert.deepEqual([c.traces.url, c.logs.url, c.metrics.url], [
    'https://otlp.vendor.example/otlp/v1/traces?api-key=k3yv4lue&region=eu#frag',
    'https://otlp.vendor.example/otlp/v1/logs?api-key=k3yv4lue&region=eu#frag',
    'https://otlp.vendor.example/otlp/v1/metrics?api-key=k3yv4lue&region=eu#frag',
  ]);
  const shown = describeConfig(c);
  assert.deepEqual([shown.tracesUrl, shown.logsUrl, shown.metricsUrl], [
    'https://otlp.vendor.example/otlp/v1/traces?api-key=[redacted]&region=[redacted]#frag',
    'https://otlp.vendor.example/otlp/v1/logs?api-key=[redacted]&region=[redacted]#frag',
    'https://otlp.vendor.example/otlp/v1/metrics?api-key=[redacted]&region=[redacted]#frag',
  ]);
  assert.ok(!JSON.stringify(shown).includes('k3yv4lue'), JSON.stringify(shown));
});

test('PREFECT_API_URL: a Cloud workspace URL with or without its trailing slash and a self-hosted one behind a path prefix are taken; the Cloud UI address, a Cloud URL without its workspace or on http:// and a query string are errors naming the URL to use', () => {
  const a = '0b3c5d7e-1111-4a2b-8c9d-0e1f2a3b4c5d';
  const w = '9a1e2f3b-2222-4c4d-9e5f-6a7b8c9d0e1f';
  const taken = (url: string): string => resolveConfig({}, { PREFECT_API_URL: url }).prefect.apiUrl;
  assert.deepEqual(
    [taken(`https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}`), taken(`https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}/`), taken('https://host/prefect/api/')],
    [`https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}`, `https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}`, 'https://host/prefect/api'],
  );
  const problems = (url: string): readonly string[] => {
    try {
      resolveConfig({}, { PREFECT_API_URL: url });
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.problems;
    }
    return [];
  };
  assert.deepEqual(
    {
      ui: problems(`https://app.prefect.cloud/account/${a}/workspace/${w}/dashboard`),
      uiHome: problems('https://app.prefect.cloud/'),
      cloudNoWorkspace: problems('https://api.prefect.cloud/api'),
      cloudPastWorkspace: problems(`https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}/events/out`),
      query: problems('https://user:pw@host:4200/api?token=abc#x'),
      cloudHttp: problems(`http://API.prefect.cloud/api/accounts/${a}/workspaces/${w}/`),
    },
    {
      ui: [`PREFECT_API_URL: app.prefect.cloud is the Prefect Cloud web UI, not its API: use https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}`],
      uiHome: ['PREFECT_API_URL: app.prefect.cloud is the Prefect Cloud web UI, not its API: use https://api.prefect.cloud/api/accounts/<account id>/workspaces/<workspace id>'],
      cloudNoWorkspace: ['PREFECT_API_URL: a Prefect Cloud API URL names a workspace: https://api.prefect.cloud/api/accounts/<account id>/workspaces/<workspace id>'],
      cloudPastWorkspace: [`PREFECT_API_URL: a Prefect Cloud API URL ends at its workspace (API paths are appended to it): use https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}`],
      query: ['PREFECT_API_URL: must not have a query or fragment (API paths are appended to it): use https://host:4200/api'],
      cloudHttp: [`PREFECT_API_URL: Prefect Cloud is reached over https only (over http:// the API key would be sent unencrypted): use https://api.prefect.cloud/api/accounts/${a}/workspaces/${w}`],
    },
  );
});

test('PREFECT_UI_URL unset for a Prefect Cloud workspace is its UI address, as Prefect\'s client derives it (settings/models/_defaults.py default_ui_url); set, or for a self-hosted server, it is as given', () => {
  const A = '9b5e6a10-1c2d-4e3f-8a9b-0c1d2e3f4a5b';
  const W = '3f2e1d0c-b9a8-4765-9432-10fedcba9876';
  const cloud = `https://api.prefect.cloud/api/accounts/${A}/workspaces/${W}`;
  const ui = (env: Record<string, string>, options: { uiUrl?: string } = {}): Pick<Config['prefect'], 'apiUrl' | 'uiUrl'> => {
    const c = resolveConfig(options, env);
    return { apiUrl: c.prefect.apiUrl, uiUrl: c.prefect.uiUrl };
  };
  assert.deepEqual(
    [
      ui({ PREFECT_API_URL: cloud, PREFECT_API_KEY: 'pnu_key' }),
      ui({ PREFECT_API_URL: `${cloud}/`, PREFECT_API_KEY: 'pnu_key', PREFECT_UI_URL: ' ' }),
      ui({ PREFECT_API_URL: `HTTPS://API.PREFECT.CLOUD/api/accounts/${A}/workspaces/${W}`, PREFECT_API_KEY: 'pnu_key' }),
      ui({ PREFECT_API_URL: cloud, PREFECT_API_KEY: 'pnu_key', PREFECT_UI_URL: 'https://prefect-ui.corp.example/ws/' }),
      ui({ PREFECT_API_URL: cloud, PREFECT_API_KEY: 'pnu_key' }, { uiUrl: 'https://links.example' }),
      ui({ PREFECT_API_URL: 'http://prefect-server:4200/api' }),
      ui({ PREFECT_API_URL: 'https://prefect.example.com/api' }),
    ],
    [
      { apiUrl: cloud, uiUrl: `https://app.prefect.cloud/account/${A}/workspace/${W}` },
      { apiUrl: cloud, uiUrl: `https://app.prefect.cloud/account/${A}/workspace/${W}` },
      { apiUrl: `HTTPS://API.PREFECT.CLOUD/api/accounts/${A}/workspaces/${W}`, uiUrl: `https://app.prefect.cloud/account/${A}/workspace/${W}` },
      { apiUrl: cloud, uiUrl: 'https://prefect-ui.corp.example/ws' },
      { apiUrl: cloud, uiUrl: 'https://links.example' },
      { apiUrl: 'http://prefect-server:4200/api', uiUrl: undefined },
      { apiUrl: 'https://prefect.example.com/api', uiUrl: undefined },
    ],
  );
  assert.equal(describeConfig(resolveConfig({}, { PREFECT_API_URL: cloud, PREFECT_API_KEY: 'pnu_key' })).uiUrl, `https://app.prefect.cloud/account/${A}/workspace/${W}`);
});

test('PREFECT_UI_URL and PREFECT_OTEL_JAEGER_URL with a query or fragment are errors naming the URL to use (every link would land inside it); with a path and a trailing slash they are taken, without user info (links go into every span and log line)', () => {
  const config = resolveConfig({}, { PREFECT_UI_URL: 'https://ui:s3cret@host/prefect/', PREFECT_OTEL_JAEGER_URL: 'https://user:pw@jaeger.example/jaeger/' });
  assert.deepEqual([config.prefect.uiUrl, config.jaegerUrl], ['https://host/prefect', 'https://jaeger.example/jaeger']);
  let problems: readonly string[] = [];
  try {
    resolveConfig({}, { PREFECT_UI_URL: 'https://ui.example/?token=UITOKEN', PREFECT_OTEL_JAEGER_URL: 'https://user:pw@jaeger.example/jaeger#search' });
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    problems = err.problems;
  }
  assert.deepEqual(problems, [
    'PREFECT_UI_URL: must not have a query or fragment (link paths are appended to it): use https://ui.example/',
    'PREFECT_OTEL_JAEGER_URL: must not have a query or fragment (link paths are appended to it): use https://jaeger.example/jaeger',
  ]);
});

/** What resolving `env` says: its warnings, or the problems of the ConfigError it throws. */
function said(env: Record<string, string>): string[] {
  try {
    return [...resolveConfig({}, env).warnings];
  } catch (err) {
    return [...(err as ConfigError).problems];
  }
}

test('a URL setting that does not parse because its password holds a /, ? or # (or a space and one of them) is quoted without any of its user info', () => {
  const passwords = ['pa/ss', 'pa?ss', 'pa#ss', 'pa ss/x', 'p@ss:w/x'];
  const urlSettings = ['PREFECT_API_URL', 'PREFECT_UI_URL', 'PREFECT_OTEL_JAEGER_URL', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT', 'HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy'];
  // One setting in full: the error names it and quotes the URL, user info cut out.
  assert.deepEqual(said({ PREFECT_API_URL: 'http://admin:pa/ss@prefect.corp:4200/api' }), ['PREFECT_API_URL: not a URL: "http://[redacted]@prefect.corp:4200/api"']);
  assert.deepEqual(said({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otel:pa?ss@collector:4318' }), ['OTEL_EXPORTER_OTLP_ENDPOINT: not a URL: "https://[redacted]@collector:4318"; using the default (http://localhost:4318)']);
  assert.deepEqual(said({ HTTPS_PROXY: 'proxyuser:pa#ss@proxy.corp:3128' }), ['HTTPS_PROXY: not a URL: "proxy.corp:3128"']);
  // Every URL setting, every such password: something is said, and no part of the password.
  for (const name of urlSettings) {
    for (const password of passwords) {
      const lines = said({ [name]: `http://someone:${password}@host.corp:4200/api` });
      assert.equal(lines.length, 1, `${name} ${password}: ${lines.join('\n')}`);
      for (const piece of ['pa/ss', 'pa?ss', 'pa#ss', 'pa ss', 'ss/x', 'p@ss', 'ss:w', 'someone']) assert.ok(!lines[0]!.includes(piece), `${name} ${password}: ${lines[0]}`);
    }
  }
});

test('OTLP headers written in another format (name: value, JSON) are a warning or an error that quotes no part of them: the text before a base64 credential\'s = padding is the credential', () => {
  const credential = 'dXNlcjpwYXNzd29yZA==';
  const said = (value: string): string[] => {
    const lines = [...resolveConfig({}, { OTEL_EXPORTER_OTLP_HEADERS: value, OTEL_EXPORTER_OTLP_LOGS_HEADERS: value }).warnings];
    try {
      // As the CLI passes a flag: the text as given.
      resolveConfig({ otlpMetricsHeaders: value as unknown as Record<string, string> }, {});
    } catch (err) {
      lines.push(...(err as ConfigError).problems);
    }
    return lines;
  };
  assert.deepEqual(said(`Authorization: Basic ${credential}`), [
    'OTEL_EXPORTER_OTLP_HEADERS: the name of header 1 is not a valid HTTP header name: write name=value, not name: value (not shown: it may hold a secret); using the default ({})',
    'OTEL_EXPORTER_OTLP_LOGS_HEADERS: the name of header 1 is not a valid HTTP header name: write name=value, not name: value (not shown: it may hold a secret); OTEL_EXPORTER_OTLP_HEADERS applies',
    'option otlpMetricsHeaders: the name of header 1 is not a valid HTTP header name: write name=value, not name: value (not shown: it may hold a secret)',
  ]);
  assert.deepEqual(said(`{"Authorization":"Basic ${credential}"}`), [
    'OTEL_EXPORTER_OTLP_HEADERS: the name of header 1 is not a valid HTTP header name: the headers look like JSON, where key=value pairs separated by commas are expected (not shown: it may hold a secret); using the default ({})',
    'OTEL_EXPORTER_OTLP_LOGS_HEADERS: the name of header 1 is not a valid HTTP header name: the headers look like JSON, where key=value pairs separated by commas are expected (not shown: it may hold a secret); OTEL_EXPORTER_OTLP_HEADERS applies',
    'option otlpMetricsHeaders: the name of header 1 is not a valid HTTP header name: the headers look like JSON, where key=value pairs separated by commas are expected (not shown: it may hold a secret)',
  ]);
  // A value holding a comma (not %-encoded): its second part is no header.
  assert.deepEqual(said('x-api-key=abc,de/f0g=h')[0], 'OTEL_EXPORTER_OTLP_HEADERS: the name of header 2 is not a valid HTTP header name (not shown: it may hold a secret); using the default ({})');
  for (const line of [...said(`Authorization: Basic ${credential}`), ...said(`{"Authorization":"Basic ${credential}"}`), ...said('x-api-key=abc,de/f0g=h')]) {
    for (const piece of ['dXNlcjpwYXNzd29yZA', 'Basic', 'de/f0g']) assert.ok(!line.includes(piece), line);
  }
});

test('a batch size larger than the span buffer is said, with what is sent instead (as the OpenTelemetry batch processor warns), whether from variables or options', () => {
  const fromEnv = resolveConfig({}, { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '1000', OTEL_BSP_MAX_QUEUE_SIZE: '10' });
  assert.deepEqual({ delivery: fromEnv.delivery, warnings: fromEnv.warnings }, {
    delivery: { maxSpans: 10, maxBytes: 64 * 1024 * 1024, batchSize: 10, scheduleDelayMs: 200, exportTimeoutMs: 30_000, logs: { maxRecords: 80_000, batchSize: 512, scheduleDelayMs: 200, exportTimeoutMs: 30_000 } },
    warnings: ['OTEL_BSP_MAX_EXPORT_BATCH_SIZE (1000) is larger than OTEL_BSP_MAX_QUEUE_SIZE (10): batches of at most 10 spans are sent'],
  });
  const fromOptions = resolveConfig({ batchSize: 1000 }, { OTEL_BSP_MAX_QUEUE_SIZE: '10' }, (key) => (key === 'batchSize' ? '--batch-size' : key));
  assert.deepEqual(fromOptions.warnings, ['--batch-size (1000) is larger than OTEL_BSP_MAX_QUEUE_SIZE (10): batches of at most 10 spans are sent']);
  assert.deepEqual(resolveConfig({}, { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '10', OTEL_BSP_MAX_QUEUE_SIZE: '10' }).warnings, []);
});

test('the OTLP log records have their own buffer and batches, from OTEL_BLRP_* as OpenTelemetry reads them, whatever the span settings; a batch larger than the buffer is said; a bad value warns and keeps the default', () => {
  const spans = { OTEL_BSP_MAX_QUEUE_SIZE: '100', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '50', OTEL_BSP_SCHEDULE_DELAY: '5000' };
  const logs = (env: Record<string, string>, options = {}) => {
    const c = resolveConfig(options, { ...spans, ...env }, (key) => `--${key}`);
    return { logs: c.delivery.logs, spans: { maxSpans: c.delivery.maxSpans, batchSize: c.delivery.batchSize, scheduleDelayMs: c.delivery.scheduleDelayMs }, warnings: c.warnings };
  };
  const spanDelivery = { maxSpans: 100, batchSize: 50, scheduleDelayMs: 5000 };
  assert.deepEqual(logs({}), { logs: { maxRecords: 80_000, batchSize: 512, scheduleDelayMs: 200, exportTimeoutMs: 30_000 }, spans: spanDelivery, warnings: [] });
  assert.deepEqual(logs({ OTEL_BLRP_MAX_QUEUE_SIZE: '2048', OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: '256', OTEL_BLRP_SCHEDULE_DELAY: '1000' }), {
    logs: { maxRecords: 2048, batchSize: 256, scheduleDelayMs: 1000, exportTimeoutMs: 30_000 },
    spans: spanDelivery,
    warnings: [],
  });
  assert.deepEqual(logs({ OTEL_BLRP_MAX_QUEUE_SIZE: '10', OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: '512' }), {
    logs: { maxRecords: 10, batchSize: 10, scheduleDelayMs: 200, exportTimeoutMs: 30_000 },
    spans: spanDelivery,
    warnings: ['OTEL_BLRP_MAX_EXPORT_BATCH_SIZE (512) is larger than OTEL_BLRP_MAX_QUEUE_SIZE (10): batches of at most 10 log records are sent'],
  });
  assert.deepEqual(logs({ OTEL_BLRP_SCHEDULE_DELAY: 'soon' }), {
    logs: { maxRecords: 80_000, batchSize: 512, scheduleDelayMs: 200, exportTimeoutMs: 30_000 },
    spans: spanDelivery,
    warnings: ['OTEL_BLRP_SCHEDULE_DELAY: expected a whole number ms, got "soon"; using the default (200)'],
  });
  assert.deepEqual(logs({}, { logsBatchSize: 20, logsBufferMaxRecords: 10 }).warnings, ['--logsBatchSize (20) is larger than --logsBufferMaxRecords (10): batches of at most 10 log records are sent']);
});

test('a URL setting written without its scheme (host:port/path) is named as such, with the URL meant, not as the scheme "localhost:"', () => {
  assert.deepEqual(said({ PREFECT_API_URL: 'localhost:4200/api' }), ['PREFECT_API_URL: "localhost:4200/api" has no scheme: use http://localhost:4200/api']);
  assert.deepEqual(said({ PREFECT_API_URL: 'prefect' }), ['PREFECT_API_URL: "prefect" has no scheme: use http://prefect']);
  assert.deepEqual(said({ PREFECT_API_URL: 'api.prefect.cloud/api/accounts/0f0f0f0f-1111-2222-3333-444444444444/workspaces/5a5a5a5a-1111-2222-3333-444444444444' }), [
    'PREFECT_API_URL: "api.prefect.cloud/api/accounts/0f0f0f0f-1111-2222-3333-444444444444/workspaces/5a5a5a5a-1111-2222-3333-444444444444" has no scheme: use https://api.prefect.cloud/api/accounts/0f0f0f0f-1111-2222-3333-444444444444/workspaces/5a5a5a5a-1111-2222-3333-444444444444',
  ]);
  assert.deepEqual(said({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }), ['OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" has no scheme: use http://collector:4318; using the default (http://localhost:4318)']);
  // Its user info is no more shown than in a URL with a scheme.
  assert.deepEqual(said({ PREFECT_UI_URL: 'admin:SECRET@ui.corp:4200' }), ['PREFECT_UI_URL: "[redacted]@ui.corp:4200" has no scheme: use http://[redacted]@ui.corp:4200']);
  // A scheme that is there but not http(s) is still said as one.
  assert.deepEqual(said({ PREFECT_API_URL: 'ftp://x' }), ['PREFECT_API_URL: expected an http:// or https:// URL, got ftp:']);
});

test('a value wrapped in quotes (copied from a .env file) is refused with the quotes named as the cause, or warned of where it is accepted (a key, a name), its value never shown', () => {
  let problems: readonly string[] = [];
  try {
    resolveConfig({}, { PREFECT_API_URL: '"http://prefect:4200/api"', PREFECT_OTEL_SETTLE_MS: "'5'", PREFECT_API_KEY: '"pnu_SECRET"' });
  } catch (err) {
    problems = (err as ConfigError).problems;
  }
  assert.deepEqual(problems, [
    'PREFECT_API_URL: not a URL: "\\"http://prefect:4200/api\\"" (the quotes are part of the value: remove them)',
    'PREFECT_OTEL_SETTLE_MS: expected a whole number ms, got "\'5\'" (the quotes are part of the value: remove them)',
  ]);
  assert.deepEqual(resolveConfig({}, { OTEL_TRACES_EXPORTER: '"none"' }).warnings, [
    'OTEL_TRACES_EXPORTER: must be one of otlp, console, none, got "\\"none\\"" (the quotes are part of the value: remove them); using the default (otlp)',
  ]);
  const accepted = resolveConfig({ serviceName: "'etl'" }, { PREFECT_API_KEY: ' "pnu_SECRET" ' }, (key) => `--${key}`);
  assert.deepEqual(accepted.warnings, [
    'PREFECT_API_KEY: the value is in quotes, which are kept as part of it (remove them)',
    "--serviceName: the value is in quotes, which are kept as part of it (remove them)",
  ]);
});

test('a PREFECT_OTEL_* variable that is no setting is warned of, with the setting it is closest to; other variables are not prefect-otel\'s to judge', () => {
  const c = resolveConfig({}, { PREFECT_OTEL_SETLE_MS: '5', PREFECT_OTEL_MAX_SPAN_EVENTS: '10', PREFECT_OTEL_SETTLE_MS: '7', PREFECT_OTHER: '1', OTEL_BSP_MAX_QUEU_SIZE: '3' });
  assert.deepEqual({ settleMs: c.model.settleMs, warnings: c.warnings }, {
    settleMs: 7,
    warnings: [
      'PREFECT_OTEL_SETLE_MS is not a prefect-otel setting, so it does nothing (did you mean PREFECT_OTEL_SETTLE_MS?)',
      'PREFECT_OTEL_MAX_SPAN_EVENTS is not a prefect-otel setting, so it does nothing',
    ],
  });
});

test('the warnings of a setting name it as it was given: the flag or option, else its variable', () => {
  const flag = (key: string): string => `--${key}`;
  assert.deepEqual(resolveConfig({ apiTlsInsecureSkipVerify: true, authString: 'u:p' }, { PREFECT_API_KEY: 'pnu_x' }, flag).warnings, [
    "--apiTlsInsecureSkipVerify is on: the Prefect server's certificate is not checked",
    'both PREFECT_API_KEY and --authString are set; using PREFECT_API_KEY',
  ]);
  const both = resolveConfig({}, { PREFECT_API_TLS_INSECURE_SKIP_VERIFY: 'yes', PREFECT_API_KEY: 'pnu_x', PREFECT_API_AUTH_STRING: 'u:p' });
  assert.deepEqual(both.warnings, [
    "PREFECT_API_TLS_INSECURE_SKIP_VERIFY is on: the Prefect server's certificate is not checked",
    'both PREFECT_API_KEY and PREFECT_API_AUTH_STRING are set; using PREFECT_API_KEY',
  ]);
  // The auth string is left out of the configuration in force, as the warning says.
  assert.deepEqual({ apiKey: both.prefect.apiKey, authString: both.prefect.authString }, { apiKey: 'pnu_x', authString: undefined });
});

test('OTLP headers written as JSON or as `name: value` with no `=` in them are refused with the format to use, their text never shown', () => {
  let problems: readonly string[] = [];
  try {
    resolveConfig({ otlpHeaders: '{"Authorization":"SECRET"}' as never, otlpTracesHeaders: 'Authorization: Bearer SECRET' as never }, {}, (key) => `--${key}`);
  } catch (err) {
    problems = (err as ConfigError).problems;
  }
  assert.deepEqual(problems, [
    '--otlpHeaders: expected key=value pairs separated by commas (entry 1 is not key=value): the headers look like JSON, where key=value pairs separated by commas are expected',
    '--otlpTracesHeaders: expected key=value pairs separated by commas (entry 1 is not key=value): write name=value, not name: value',
  ]);
});

test("PREFECT_API_REQUEST_TIMEOUT is seconds as Prefect writes them (60 by default, fractions allowed); anything else is an error listed with the others", () => {
  assert.equal(resolveConfig({}, {}).prefect.requestTimeoutMs, 60_000);
  assert.equal(resolveConfig({}, { PREFECT_API_REQUEST_TIMEOUT: '2.5' }).prefect.requestTimeoutMs, 2_500);
  assert.equal(resolveConfig({ apiRequestTimeout: 120 }, { PREFECT_API_REQUEST_TIMEOUT: '2.5' }).prefect.requestTimeoutMs, 120_000);
  assert.throws(
    () => resolveConfig({}, { PREFECT_API_REQUEST_TIMEOUT: '60s', PREFECT_OTEL_SETTLE_MS: '-1' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.problems, [
        'PREFECT_API_REQUEST_TIMEOUT: expected a number of seconds, got "60s"',
        'PREFECT_OTEL_SETTLE_MS: must be between 0 and 600000 ms, got -1',
      ]);
      return true;
    },
  );
  assert.throws(() => resolveConfig({}, { PREFECT_API_REQUEST_TIMEOUT: '0' }), (err: unknown) => err instanceof ConfigError && err.problems[0] === 'PREFECT_API_REQUEST_TIMEOUT: must be between 0.1 and 3600 s, got 0');
});

test('OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: cumulative by default, delta or lowmemory in any case; another value warns and keeps cumulative, as OTel components do (it has no generic form to fall back to)', () => {
  assert.equal(resolveConfig({}, {}).metrics.temporalityPreference, 'cumulative');
  assert.equal(resolveConfig({}, { OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'Delta' }).metrics.temporalityPreference, 'delta');
  const c = resolveConfig({}, { OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'deltas' });
  assert.deepEqual({ preference: c.metrics.temporalityPreference, warnings: c.warnings }, {
    preference: 'cumulative',
    warnings: ['OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: must be one of cumulative, delta, lowmemory, got "deltas"; using the default (cumulative)'],
  });
});

test('the health endpoint\'s address without its port warns that nothing is served; with it, no warning', () => {
  const flag = (key: SettingKey): string => SETTINGS[key].flag;
  assert.deepEqual(
    {
      variable: resolveConfig({}, { PREFECT_OTEL_HTTP_HOST: '127.0.0.1' }).warnings,
      flag: resolveConfig({ httpHost: '::1' }, {}, flag).warnings,
      both: resolveConfig({}, { PREFECT_OTEL_HTTP_HOST: '127.0.0.1', PREFECT_OTEL_HTTP_PORT: '9464' }).warnings,
    },
    {
      variable: ['PREFECT_OTEL_HTTP_HOST is set without PREFECT_OTEL_HTTP_PORT: no health endpoint is served'],
      flag: ['--http-host is set without PREFECT_OTEL_HTTP_PORT: no health endpoint is served'],
      both: [],
    },
  );
});

test('an OTLP base URL that ends in a signal path (…/v1/traces, to which /v1/traces is appended) warns with the base URL and the signal\'s own variable; the base URL does not', () => {
  const warned = (endpoint: string): readonly string[] => resolveConfig({}, { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint }).warnings;
  assert.deepEqual(
    { traces: warned('http://collector:4318/v1/traces'), logs: warned('https://user:pw@otlp.example.com/otlp/v1/logs/'), base: warned('http://collector:4318'), prefix: warned('http://collector:4318/otlp') },
    {
      traces: ['OTEL_EXPORTER_OTLP_ENDPOINT ends in /v1/traces, and /v1/traces, /v1/logs and /v1/metrics are appended to it: give the collector\'s base URL (http://collector:4318), or the full URL as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'],
      logs: ['OTEL_EXPORTER_OTLP_ENDPOINT ends in /v1/logs, and /v1/traces, /v1/logs and /v1/metrics are appended to it: give the collector\'s base URL (https://otlp.example.com/otlp), or the full URL as OTEL_EXPORTER_OTLP_LOGS_ENDPOINT'],
      base: [],
      prefix: [],
    },
  );
});

test("a signal's own OTLP endpoint given as a vendor's base URL (no path, or one ending in /otlp), which is used as is, warns with the full URL and the generic variable; a full URL, or a signal not exported, does not", () => {
  const warned = (env: Record<string, string>, options = {}): readonly string[] => resolveConfig(options, { OTEL_LOGS_EXPORTER: 'otlp', ...env }, (key) => `--${key}`).warnings;
  assert.deepEqual(
    {
      root: warned({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://api.honeycomb.io' }),
      grafana: warned({ OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/' }),
      dynatrace: warned({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'https://abc12345.live.dynatrace.com/api/v2/otlp?x=s3cret', OTEL_METRICS_EXPORTER: 'otlp' }),
      flag: warned({}, { otlpTracesEndpoint: 'https://user:pw@otlp.nr-data.net:443/' }),
      full: warned({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/traces', OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'https://http-intake.logs.datadoghq.com/v1/logs' }),
      notExported: warned({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'https://abc12345.live.dynatrace.com/api/v2/otlp' }),
    },
    {
      root: ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (https://api.honeycomb.io/) is used as is, and has no OTLP signal path: spans are sent to it, not to https://api.honeycomb.io/v1/traces; give that full URL, or the base URL as OTEL_EXPORTER_OTLP_ENDPOINT'],
      grafana: ['OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/) is used as is, and has no OTLP signal path: log records are sent to it, not to https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/logs; give that full URL, or the base URL as OTEL_EXPORTER_OTLP_ENDPOINT'],
      dynatrace: ['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT (https://abc12345.live.dynatrace.com/api/v2/otlp?x=[redacted]) is used as is, and has no OTLP signal path: metrics are sent to it, not to https://abc12345.live.dynatrace.com/api/v2/otlp/v1/metrics?x=[redacted]; give that full URL, or the base URL as OTEL_EXPORTER_OTLP_ENDPOINT'],
      flag: ['--otlpTracesEndpoint (https://otlp.nr-data.net/) is used as is, and has no OTLP signal path: spans are sent to it, not to https://otlp.nr-data.net/v1/traces; give that full URL, or the base URL as OTEL_EXPORTER_OTLP_ENDPOINT'],
      full: [],
      notExported: [],
    },
  );
});

test('OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG: the samplers that need no other service; a value that cannot be used warns and falls back as a variable, is an error as a flag; an argument no sampler reads is said', () => {
  const sampler = (env: Record<string, string>, options = {}) => {
    try {
      const c = resolveConfig(options, env, (key) => `--${key}`);
      return { sampler: c.sampler, warnings: c.warnings };
    } catch (err) {
      return { problems: (err as ConfigError).problems };
    }
  };
  assert.deepEqual(sampler({}), { sampler: { name: 'parentbased_always_on', ratio: 1 }, warnings: [] });
  assert.deepEqual(sampler({ OTEL_TRACES_SAMPLER: ' TraceIdRatio ', OTEL_TRACES_SAMPLER_ARG: '.25' }), { sampler: { name: 'traceidratio', ratio: 0.25 }, warnings: [] });
  assert.deepEqual(sampler({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio' }), { sampler: { name: 'parentbased_traceidratio', ratio: 1 }, warnings: [] });
  assert.deepEqual(sampler({ OTEL_TRACES_SAMPLER: 'always_off' }, { tracesSampler: 'traceidratio', tracesSamplerArg: 0 }), { sampler: { name: 'traceidratio', ratio: 0 }, warnings: [] });
  assert.deepEqual(sampler({ OTEL_TRACES_SAMPLER: 'parentbased_jaeger_remote', OTEL_TRACES_SAMPLER_ARG: 'endpoint=http://jaeger:14250' }), {
    sampler: { name: 'parentbased_always_on', ratio: 1 },
    warnings: [
      'OTEL_TRACES_SAMPLER: parentbased_jaeger_remote is not supported (it needs a remote sampling service); use one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio; using the default (parentbased_always_on)',
      'OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got "endpoint=http://jaeger:14250"; using the default (unset)',
    ],
  });
  assert.deepEqual(sampler({ OTEL_TRACES_SAMPLER: 'always_off', OTEL_TRACES_SAMPLER_ARG: '0.1' }), {
    sampler: { name: 'always_off', ratio: 0.1 },
    warnings: ['OTEL_TRACES_SAMPLER_ARG (0.1) applies to the traceidratio samplers only; OTEL_TRACES_SAMPLER is always_off: ignored'],
  });
  assert.deepEqual(sampler({}, { tracesSampler: 'xray', tracesSamplerArg: 1.5 }), {
    problems: [
      '--tracesSampler: xray is not supported (it needs a remote sampling service); use one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio',
      '--tracesSamplerArg: must be between 0 and 1, got 1.5',
    ],
  });
  // The startup line names a sampler that leaves traces out, and only such a one.
  const shown = (env: Record<string, string>) => describeConfig(resolveConfig({}, env)).tracesSampler;
  assert.deepEqual(
    [shown({}), shown({ OTEL_TRACES_SAMPLER: 'always_on' }), shown({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' }), shown({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' }), shown({ OTEL_TRACES_SAMPLER: 'parentbased_always_off' })],
    [undefined, undefined, undefined, 'parentbased_traceidratio 0.1', 'parentbased_always_off'],
  );
});

test('OTEL_TRACES_SAMPLER_ARG in exponent form, as the SDKs read it (1e-3 is one trace in a thousand), as a variable and as a flag; what is no number still warns', () => {
  const ratio = (env: Record<string, string>, options = {}) => {
    try {
      const c = resolveConfig(options, env, (key) => `--${key}`);
      return { ratio: c.sampler.ratio, warnings: c.warnings };
    } catch (err) {
      return { problems: (err as ConfigError).problems };
    }
  };
  const env = (arg: string) => ({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: arg });
  assert.deepEqual(
    ['1e-3', ' 5E-1 ', '+0.25', '2.5e-1', '1E0', '0e5'].map((arg) => ratio(env(arg))),
    [0.001, 0.5, 0.25, 0.25, 1, 0].map((r) => ({ ratio: r, warnings: [] })),
  );
  assert.deepEqual(ratio({}, { tracesSampler: 'traceidratio', tracesSamplerArg: '1e-4' }), { ratio: 0.0001, warnings: [] });
  assert.deepEqual([ratio(env('1e1')), ratio(env('0x1')), ratio(env('1e')), ratio(env('Infinity'))], [
    { ratio: 1, warnings: ['OTEL_TRACES_SAMPLER_ARG: must be between 0 and 1, got 10; using the default (unset)'] },
    { ratio: 1, warnings: ['OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got "0x1"; using the default (unset)'] },
    { ratio: 1, warnings: ['OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got "1e"; using the default (unset)'] },
    { ratio: 1, warnings: ['OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got "Infinity"; using the default (unset)'] },
  ]);
});

test('a limit variable that cannot be used gives way to the next one of its setting, as the SDKs read them: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc with OTEL_ATTRIBUTE_COUNT_LIMIT=32 keeps 32 attributes; with none usable, the default', () => {
  const limits = (env: Record<string, string>) => {
    const c = resolveConfig({}, env);
    const { attributeCountLimit, attributeValueLengthLimit, eventAttributeCountLimit, linkAttributeCountLimit } = c.model.spanLimits;
    return { limits: { attributeCountLimit, attributeValueLengthLimit, eventAttributeCountLimit, linkAttributeCountLimit }, warnings: c.warnings };
  };
  assert.deepEqual(
    limits({
      OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: 'abc', OTEL_ATTRIBUTE_COUNT_LIMIT: '32',
      OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: '-1', OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: '256',
      OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT: '"8"', OTEL_SPAN_ATTRIBUTE_PER_EVENT_COUNT_LIMIT: '16',
      OTEL_LINK_ATTRIBUTE_COUNT_LIMIT: 'x', OTEL_SPAN_ATTRIBUTE_PER_LINK_COUNT_LIMIT: 'y',
    }),
    {
      limits: { attributeCountLimit: 32, attributeValueLengthLimit: 256, eventAttributeCountLimit: 16, linkAttributeCountLimit: 128 },
      warnings: [
        'OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT: must be between 0 and 1000000000, got -1; OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT applies',
        'OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: expected a whole number, got "abc"; OTEL_ATTRIBUTE_COUNT_LIMIT applies',
        'OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT: expected a whole number, got "\\"8\\"" (the quotes are part of the value: remove them); OTEL_SPAN_ATTRIBUTE_PER_EVENT_COUNT_LIMIT applies',
        'OTEL_LINK_ATTRIBUTE_COUNT_LIMIT: expected a whole number, got "x"',
        'OTEL_SPAN_ATTRIBUTE_PER_LINK_COUNT_LIMIT: expected a whole number, got "y"; using the default (128)',
      ],
    },
  );
  // A usable first variable wins, as before; the second is not looked at.
  assert.deepEqual(limits({ OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '64', OTEL_ATTRIBUTE_COUNT_LIMIT: 'abc' }).limits.attributeCountLimit, 64);
  // …for the span; the log records' count limit (OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT unset) reads it and falls back.
  assert.deepEqual(limits({ OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '64', OTEL_ATTRIBUTE_COUNT_LIMIT: 'abc' }).warnings, ['OTEL_ATTRIBUTE_COUNT_LIMIT: expected a whole number, got "abc"; using the default (128)']);
  assert.deepEqual(resolveConfig({}, { OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT: 'abc', OTEL_ATTRIBUTE_COUNT_LIMIT: '16' }).model.logRecordLimits, { attributeValueLengthLimit: undefined, attributeCountLimit: 16 });
});
