/**
 * What ships beside the code (SPEC §6): otel-collector.yaml, docker-compose.yml, the Dockerfile and
 * the sample flow. No Docker engine runs here, so they are parsed and cross-checked instead: every
 * name one file uses is defined where it points, ports and endpoints agree across files, and the
 * environment uses SPEC §2's names only.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { test } from 'node:test';
import { parseDocument } from 'yaml';
import { SETTINGS } from '../../src/settings.js';
import {
  type Obj, asObj, asString, asStrings, commandArgs, dependsOn, environment, flagValue, mounts, ports,
} from './compose-syntax.js';

/** The compiled test lives in dist/test/deploy/, three levels below the repository root. */
const ROOT = new URL('../../../', import.meta.url);
const read = (path: string): string => readFileSync(new URL(path, ROOT), 'utf8');

/**
 * SPEC §2's environment names, copied here (CI's clean clone is not guaranteed to have ../shared/),
 * and the standard OpenTelemetry names the README adds to them.
 */
const SPEC_ENV = new Set([
  'OTEL_METRICS_EXPORTER',
  'PREFECT_API_URL', 'PREFECT_API_KEY', 'PREFECT_API_AUTH_STRING', 'PREFECT_UI_URL',
  'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_HEADERS',
  'OTEL_EXPORTER_OTLP_TRACES_HEADERS', 'OTEL_EXPORTER_OTLP_PROTOCOL', 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL',
  'OTEL_EXPORTER_OTLP_COMPRESSION', 'OTEL_EXPORTER_OTLP_TIMEOUT', 'OTEL_SERVICE_NAME', 'OTEL_RESOURCE_ATTRIBUTES',
  'OTEL_TRACES_EXPORTER', 'OTEL_LOGS_EXPORTER', 'PREFECT_OTEL_STATE_FILE', 'PREFECT_OTEL_JAEGER_URL',
  'PREFECT_OTEL_LOG_LEVEL', 'PREFECT_OTEL_LOG_FORMAT',
]);
/** Exporter types renamed or removed in collector >= 0.144 (otlp -> otlp_grpc, otlphttp -> otlp_http). */
const DEPRECATED_EXPORTERS = new Set(['otlp', 'otlphttp', 'logging', 'jaeger']);
const PIPELINE_KINDS = ['receivers', 'processors', 'exporters'] as const;
const JAEGER_OTLP_HTTP_PORT = 4318;
const PROMETHEUS_PORT = 8889;
const JAEGER_UI_PORT = 16686;

function loadYaml(path: string): Obj {
  const doc = parseDocument(read(path));
  const problems = [...doc.errors, ...doc.warnings].map((e) => e.message);
  if (problems.length > 0) throw new Error(`${path}: ${problems.join('; ')}`);
  return asObj(doc.toJS(), path);
}

const collector = loadYaml('otel-collector.yaml');
const compose = loadYaml('docker-compose.yml');
const services = asObj(compose.services, 'services');
const service = (name: string): Obj => asObj(services[name], `services.${name}`);
const pipelines = asObj(asObj(collector.service, 'service').pipelines, 'service.pipelines');
const pipeline = (name: string): Obj => asObj(pipelines[name], `pipeline ${name}`);
const exporters = asObj(collector.exporters, 'exporters');
/** `otlp_grpc/jaeger` -> `otlp_grpc`. */
const componentType = (id: string): string => id.split('/')[0]!;
/** `host:port` or `scheme://host:port` -> its parts. */
function hostPort(endpoint: string): { host: string; port: string } {
  const url = new URL(endpoint.includes('://') ? endpoint : `tcp://${endpoint}`);
  return { host: url.hostname, port: url.port };
}
const otlpProtocols = asObj(asObj(asObj(collector.receivers, 'receivers').otlp, 'receivers.otlp').protocols, 'otlp.protocols');
const receiverPort = (protocol: 'grpc' | 'http'): number =>
  Number(hostPort(asString(asObj(otlpProtocols[protocol], protocol).endpoint, `otlp.${protocol}.endpoint`)).port);
const prefectOtelEnv = environment(service('prefect-otel'), 'prefect-otel');
/** The port `prefect server start` listens on inside its container. */
const prefectServerPort = Number(flagValue(commandArgs(service('prefect-server'), 'prefect-server'), '--port') ?? '4200');
/** The host port published for a container port, for URLs a browser on the host opens. */
function publishedFor(name: string, target: number): number | undefined {
  return ports(service(name), name).find((p) => p.target === target)?.published;
}

test('collector: a pipeline for every signal prefect-otel sends (the OTLP receiver answers 404 for one without); the components they name are exactly the ones defined; extensions likewise', () => {
  assert.deepEqual(Object.keys(pipelines).sort(), ['logs', 'metrics', 'traces']);
  assert.deepEqual(Object.keys(pipelines).map((p) => asStrings(pipeline(p).receivers, `${p}.receivers`)), [['otlp'], ['otlp'], ['otlp']]);
  for (const kind of PIPELINE_KINDS) {
    const used = new Set(Object.keys(pipelines).flatMap((p) => asStrings(pipeline(p)[kind], `${p}.${kind}`)));
    assert.deepEqual([...used].sort(), Object.keys(asObj(collector[kind], kind)).sort(), `${kind}: used in a pipeline = defined`);
  }
  const extensions = asStrings(asObj(collector.service, 'service').extensions, 'service.extensions');
  assert.deepEqual(extensions.sort(), Object.keys(asObj(collector.extensions, 'extensions')).sort());
});

/** A component's keys: `true` is a value (or a map of free keys) that is not checked further. */
type KeyTree = { [key: string]: KeyTree | true };
const COLLECTOR_KEYS = JSON.parse(read('test/deploy/collector-config-keys.json')) as {
  collectorVersion: string;
  components: Record<'receivers' | 'processors' | 'exporters' | 'extensions', Record<string, KeyTree>>;
};

/** The paths in `value` that `known` does not have, as `a.b.c`. */
function unknownKeys(value: unknown, known: KeyTree | true, path: string): string[] {
  if (known === true || value === null || typeof value !== 'object' || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([key, inner]) => {
    const sub = known[key];
    return sub === undefined ? [`${path}.${key}`] : unknownKeys(inner, sub, `${path}.${key}`);
  });
}

/**
 * The commented alternatives under "Common changes": each block starts at a commented component
 * id (`# otlp_grpc/tempo:`) and runs over the commented lines indented below it. Uncommented, they
 * are what a user pastes into `exporters:`.
 */
function commentedComponents(text: string): Obj {
  const blocks: string[][] = [];
  let current: string[] | undefined;
  for (const line of text.split('\n')) {
    const head = /^ {2}# ([a-z_]+(?:\/[a-z0-9_]+)?):\s*$/.exec(line);
    if (head) blocks.push((current = [`${head[1]}:`]));
    else if (current && /^ {2}# {3}/.test(line)) current.push(line.replace(/^ {2}# /, ''));
    else current = undefined;
  }
  return Object.assign({}, ...blocks.map((b) => asObj(parseDocument(b.join('\n')).toJS(), b[0]!)));
}

test(`collector: every key in otel-collector.yaml, and in its commented alternatives, is one collector ${COLLECTOR_KEYS.collectorVersion} reads (an unknown key stops it at start)`, () => {
  const image = asString(service('otel-collector').image, 'otel-collector.image');
  assert.equal(image.split(':')[1], COLLECTOR_KEYS.collectorVersion, 'test/deploy/collector-config-keys.json is read from the collector the compose file runs');
  assert.deepEqual(Object.keys(collector).filter((k) => !['receivers', 'processors', 'exporters', 'extensions', 'connectors', 'service'].includes(k)), []);
  const alternatives = commentedComponents(read('otel-collector.yaml'));
  assert.deepEqual(Object.keys(alternatives).sort(), ['otlp_grpc/tempo', 'otlp_http/honeycomb', 'otlp_http/loki']);
  const unknown = (['receivers', 'processors', 'exporters', 'extensions'] as const).flatMap((kind) => {
    const defined = { ...asObj(collector[kind] ?? {}, kind), ...(kind === 'exporters' ? alternatives : {}) };
    return Object.entries(defined).flatMap(([id, cfg]) => {
      const known = COLLECTOR_KEYS.components[kind][componentType(id)];
      return known === undefined ? [`${kind}.${id}: no such ${kind.slice(0, -1)} type`] : unknownKeys(cfg ?? {}, known, `${kind}.${id}`);
    });
  });
  assert.deepEqual(unknown, []);
  const svc = asObj(collector.service, 'service');
  assert.deepEqual(Object.keys(svc).filter((k) => !['extensions', 'pipelines', 'telemetry'].includes(k)), []);
  assert.deepEqual(Object.keys(pipelines).flatMap((p) => Object.keys(pipeline(p)).filter((k) => !PIPELINE_KINDS.includes(k as never)).map((k) => `${p}.${k}`)), []);
});

test('collector: memory_limiter first and batch in every pipeline; no deprecated exporter types', () => {
  const shape = Object.fromEntries(Object.keys(pipelines).map((p) => {
    const processors = asStrings(pipeline(p).processors, `${p}.processors`).map(componentType);
    return [p, { first: processors[0], batch: processors.includes('batch') }];
  }));
  const expected = { first: 'memory_limiter', batch: true };
  assert.deepEqual(shape, { logs: expected, metrics: expected, traces: expected });
  const types = Object.keys(exporters).map(componentType);
  assert.deepEqual(types.filter((t) => DEPRECATED_EXPORTERS.has(t)), []);
});

test('collector: OTLP on 0.0.0.0:4317 (gRPC) and 0.0.0.0:4318 (HTTP); logs go to file and debug, metrics to a Prometheus endpoint', () => {
  const endpoints = Object.fromEntries(Object.entries(otlpProtocols).map(([p, cfg]) => [p, asObj(cfg, p).endpoint]));
  assert.deepEqual(endpoints, { grpc: '0.0.0.0:4317', http: '0.0.0.0:4318' });
  assert.deepEqual(asStrings(pipeline('logs').exporters, 'logs.exporters').map(componentType).sort(), ['debug', 'file']);
  assert.deepEqual(asStrings(pipeline('metrics').exporters, 'metrics.exporters'), ['prometheus']);
  assert.equal(asObj(exporters.prometheus, 'prometheus').endpoint, `0.0.0.0:${PROMETHEUS_PORT}`);
});

test("collector -> Jaeger: the traces pipeline's OTLP exporter targets the compose jaeger service (v2) over OTLP/HTTP, which takes larger requests than gRPC's 4 MiB", () => {
  const remote = asStrings(pipeline('traces').exporters, 'traces.exporters')
    .filter((id) => componentType(id).startsWith('otlp'))
    .map((id) => {
      const cfg = asObj(exporters[id], id);
      const { host, port } = hostPort(asString(cfg.endpoint, `${id}.endpoint`));
      return { type: componentType(id), endpoint: asString(cfg.endpoint, `${id}.endpoint`), host, port, tls: cfg.tls };
    });
  assert.deepEqual(remote, [{ type: 'otlp_http', endpoint: `http://jaeger:${JAEGER_OTLP_HTTP_PORT}`, host: 'jaeger', port: String(JAEGER_OTLP_HTTP_PORT), tls: undefined }]);
  const jaegerImage = asString(service('jaeger').image, 'jaeger.image');
  assert.match(jaegerImage, /^jaegertracing\/jaeger:2\.\d+\.\d+$/, 'Jaeger v2 pinned, not the end-of-life v1 all-in-one');
});

/**
 * Jaeger's OTLP/HTTP receiver refuses a request body over 20 MiB (its `max_request_body_size`
 * default, counted after decompression), and the collector's OTLP/HTTP exporter retries only 429,
 * 502, 503 and 504 and never splits a refused request: the whole batch is lost. A count of spans cannot bound the bytes (one
 * span at the default settings holds up to `maxSpanEvents` events of up to `payloadMaxChars`
 * characters each), so the exporter splits what it sends by serialized size.
 */
test('collector -> Jaeger: requests split by serialized size below the 20 MiB Jaeger accepts, whatever the span count', () => {
  const JAEGER_MAX_REQUEST_BYTES = 20 * 1024 * 1024;
  const perSpanBytes = Number(SETTINGS.maxSpanEvents.default) * Number(SETTINGS.payloadMaxChars.default);
  const batchMaxSpans = Number(asObj(asObj(collector.processors, 'processors').batch, 'batch').send_batch_max_size);
  assert.ok(batchMaxSpans * perSpanBytes > JAEGER_MAX_REQUEST_BYTES, 'a full batch of the largest spans is over the limit');
  const bounds = asStrings(pipeline('traces').exporters, 'traces.exporters')
    .filter((id) => componentType(id).startsWith('otlp'))
    .map((id) => {
      const queue = asObj(asObj(exporters[id], id).sending_queue ?? {}, `${id}.sending_queue`);
      const batch = asObj(queue.batch ?? {}, `${id}.sending_queue.batch`);
      const maxSize = Number(batch.max_size);
      return { id, sizer: batch.sizer, bounded: maxSize > 0 && maxSize <= JAEGER_MAX_REQUEST_BYTES };
    });
  assert.deepEqual(bounds, [{ id: 'otlp_http/jaeger', sizer: 'bytes', bounded: true }]);
});

test('collector service: config mounted where --config points, receiver and health ports published as-is', () => {
  const col = service('otel-collector');
  const image = asString(col.image, 'otel-collector.image');
  assert.match(image, /^otel\/opentelemetry-collector-contrib:\d+\.\d+\.\d+$/, 'contrib (it has the file exporter), pinned');
  const configPath = flagValue(commandArgs(col, 'otel-collector'), '--config');
  const configMounts = mounts(col, 'otel-collector').filter((m) => m.source === './otel-collector.yaml');
  assert.deepEqual(configMounts.map((m) => ({ target: m.target, readOnly: m.readOnly })), [{ target: configPath, readOnly: true }]);

  const healthCheck = asObj(asObj(collector.extensions, 'extensions').health_check, 'health_check');
  const health = hostPort(asString(healthCheck.endpoint, 'health_check.endpoint'));
  const published = ports(col, 'otel-collector').map((p) => [p.published, p.target]).sort();
  const wanted = [receiverPort('grpc'), receiverPort('http'), Number(health.port), PROMETHEUS_PORT].map((p) => [p, p]).sort();
  assert.deepEqual(published, wanted);
  // The image is FROM scratch: no shell, curl or wget, so a healthcheck inside it could never pass.
  assert.equal(col.healthcheck, undefined);
});

test('collector service: the file exporter writes into a named volume the collector process can write', () => {
  const col = service('otel-collector');
  const files = Object.keys(exporters).filter((id) => componentType(id) === 'file');
  const placed = files.map((id) => {
    const cfg = asObj(exporters[id], id);
    const dir = posix.dirname(asString(cfg.path, `${id}.path`));
    const mount = mounts(col, 'otel-collector').find((m) => m.target === dir);
    const declared = mount !== undefined && mount.source in asObj(compose.volumes, 'volumes');
    return { format: cfg.format, kind: mount?.kind, readOnly: mount?.readOnly, declared };
  });
  assert.deepEqual(placed, [{ format: 'json', kind: 'volume', readOnly: false, declared: true }]);
  // A fresh named volume is root-owned and the image's own user is uid 10001.
  assert.equal(String(col.user).split(':')[0], '0');
});

test('compose: exactly the five services, their published ports, every image pinned', () => {
  assert.deepEqual(Object.keys(services).sort(), ['jaeger', 'otel-collector', 'prefect-otel', 'prefect-server', 'sample-flow']);
  const published = Object.fromEntries(Object.keys(services).map((name) => [
    name, ports(service(name), name).map((p) => p.published ?? 0).sort((a, b) => a - b),
  ]));
  assert.deepEqual(published, {
    jaeger: [JAEGER_UI_PORT], 'otel-collector': [4317, 4318, PROMETHEUS_PORT, 13133], 'prefect-otel': [], 'prefect-server': [prefectServerPort], 'sample-flow': [],
  });
  const pinned = (image: string): boolean => /:[^:/]*\d[^:/]*$/.test(image) && !/:(?:[^:/]*-)?latest\b/.test(image);
  const floating = Object.keys(services)
    .filter((name) => service(name).image !== undefined)
    .map((name) => asString(service(name).image, `${name}.image`))
    .filter((image) => !pinned(image));
  assert.deepEqual(floating, []);
  assert.equal(service('sample-flow').image, service('prefect-server').image, 'Prefect client and server of one version');
  // Published on this host only: the Prefect API and the OTLP receivers have no authentication.
  const everywhere = Object.keys(services).flatMap((name) =>
    ((service(name).ports as unknown[] | undefined) ?? []).map(String).filter((p) => !p.startsWith('127.0.0.1:')).map((p) => `${name} ${p}`));
  assert.deepEqual(everywhere, []);
});

test('compose: depends_on names existing services, what is awaited healthy has a healthcheck, the server probe hits /api/health', () => {
  const edges = Object.keys(services).flatMap((name) =>
    Object.entries(dependsOn(service(name), name)).map(([dep, condition]) => ({ name, dep, condition })));
  assert.deepEqual(edges.filter((e) => !(e.dep in services)), []);
  const unchecked = edges.filter((e) => {
    if (e.condition !== 'service_healthy') return false;
    const hc = service(e.dep).healthcheck;
    return hc === undefined || asObj(hc, `${e.dep}.healthcheck`).disable === true;
  });
  assert.deepEqual(unchecked, []);
  const awaits = (name: string): Record<string, string> => dependsOn(service(name), name);
  assert.equal(awaits('prefect-otel')['prefect-server'], 'service_healthy');
  assert.ok(awaits('prefect-otel')['otel-collector'], 'prefect-otel starts after the collector');
  assert.equal(awaits('sample-flow')['prefect-server'], 'service_healthy');

  const probe = asStrings(asObj(service('prefect-server').healthcheck, 'prefect-server.healthcheck').test, 'test').join(' ');
  const url = /https?:\/\/(?:localhost|127\.0\.0\.1):(\d+)(\/api\/health)\b/.exec(probe);
  assert.deepEqual(url?.slice(1), [String(prefectServerPort), '/api/health']);
});

test("compose: prefect-otel's environment uses SPEC §2 names (and the health port its healthcheck asks) only and sets what the stack relies on", () => {
  assert.deepEqual(Object.keys(prefectOtelEnv).filter((k) => !SPEC_ENV.has(k) && k !== 'PREFECT_OTEL_HTTP_PORT'), []);
  // The compose healthcheck asks /livez on the port the service serves it on.
  const check = (asObj(service('prefect-otel').healthcheck, 'prefect-otel.healthcheck').test as unknown[]).join(' ');
  assert.match(check, new RegExp(`http://127\\.0\\.0\\.1:${String(prefectOtelEnv.PREFECT_OTEL_HTTP_PORT)}/livez`));
  const needed = [
    'PREFECT_API_URL', 'PREFECT_UI_URL', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_SERVICE_NAME', 'OTEL_LOGS_EXPORTER',
    'PREFECT_OTEL_JAEGER_URL', 'PREFECT_OTEL_STATE_FILE', 'OTEL_METRICS_EXPORTER',
  ];
  assert.deepEqual(needed.filter((k) => !(k in prefectOtelEnv)), []);
  assert.deepEqual([prefectOtelEnv.OTEL_LOGS_EXPORTER, prefectOtelEnv.OTEL_METRICS_EXPORTER], ['otlp', 'otlp']);
});

/**
 * The variables the image and the compose service set are ones prefect-otel reads (src/settings.ts):
 * a misspelt OTEL_* name is silently nothing. NODE_ENV is for npm and Node, not prefect-otel.
 */
test("compose and Dockerfile set only variables prefect-otel's settings read", () => {
  const known = new Set(Object.values(SETTINGS).flatMap((d) => d.env));
  const dockerEnv = dockerStages(read('Dockerfile')).at(-1)!.lines
    .filter((l) => /^ENV\s/.test(l))
    .flatMap((l) => [...l.slice(4).matchAll(/([A-Za-z_][A-Za-z0-9_]*)=/g)].map((m) => m[1]!));
  assert.ok(dockerEnv.includes('PREFECT_OTEL_STATE_FILE'), `the image sets its state file: ${dockerEnv.join(', ')}`);
  const set = { compose: Object.keys(prefectOtelEnv), Dockerfile: dockerEnv.filter((k) => k !== 'NODE_ENV') };
  assert.deepEqual(
    Object.fromEntries(Object.entries(set).map(([file, names]) => [file, names.filter((k) => !known.has(k))])),
    { compose: [], Dockerfile: [] },
  );
});

test('compose: prefect-otel reaches the collector and the server where they listen; browser links use published ports', () => {
  const otlp = new URL(prefectOtelEnv.OTEL_EXPORTER_OTLP_ENDPOINT ?? '');
  assert.deepEqual([otlp.protocol, otlp.hostname, Number(otlp.port), otlp.pathname], ['http:', 'otel-collector', receiverPort('http'), '/']);
  const api = new URL(prefectOtelEnv.PREFECT_API_URL ?? '');
  assert.deepEqual([api.hostname, Number(api.port), api.pathname], ['prefect-server', prefectServerPort, '/api']);
  assert.equal(environment(service('sample-flow'), 'sample-flow').PREFECT_API_URL, prefectOtelEnv.PREFECT_API_URL);

  const ui = new URL(prefectOtelEnv.PREFECT_UI_URL ?? '');
  assert.deepEqual([ui.hostname, Number(ui.port)], ['localhost', publishedFor('prefect-server', prefectServerPort)]);
  const jaeger = new URL(prefectOtelEnv.PREFECT_OTEL_JAEGER_URL ?? '');
  assert.deepEqual([jaeger.hostname, Number(jaeger.port)], ['localhost', publishedFor('jaeger', JAEGER_UI_PORT)]);
});

test('compose: the state file sits on a named volume that the image hands to the node user', () => {
  const dir = posix.dirname(prefectOtelEnv.PREFECT_OTEL_STATE_FILE ?? '');
  const mount = mounts(service('prefect-otel'), 'prefect-otel').find((m) => m.target === dir);
  assert.deepEqual(mount && { kind: mount.kind, readOnly: mount.readOnly, declared: mount.source in asObj(compose.volumes, 'volumes') },
    { kind: 'volume', readOnly: false, declared: true });
  assert.match(read('Dockerfile'), new RegExp(`chown node:node ${dir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\b`));
});

/** Dockerfile instructions, continuation lines joined, comments dropped, split into stages. */
function dockerStages(text: string): { from: string; lines: string[] }[] {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const stages: { from: string; lines: string[] }[] = [];
  for (const line of lines) {
    if (/^FROM\s/i.test(line)) stages.push({ from: line, lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  return stages;
}

/**
 * Which paths of the repository `docker build` sends as its context, by `.dockerignore` as Docker
 * reads it: each line a pattern on the path from the root (`*` and `?` within one path segment,
 * `**` across segments), `!` re-includes, the last pattern that matches the path or one of its
 * parent directories decides.
 */
function dockerContextFilter(dockerignore: string): (path: string) => boolean {
  const rules = dockerignore.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((line) => {
    const include = line.startsWith('!');
    const pattern = posix.normalize((include ? line.slice(1) : line).trim()).replace(/^\/+|\/+$/g, '');
    const source = pattern.split('**').map((part) =>
      part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')).join('.*');
    return { include, re: new RegExp(`^${source}$`) };
  });
  return (path) => {
    const segments = path.split('/');
    const prefixes = segments.map((_, i) => segments.slice(0, i + 1).join('/'));
    let sent = true;
    for (const rule of rules) if (prefixes.some((p) => rule.re.test(p))) sent = rule.include;
    return sent;
  };
}

/**
 * The build context is what the Dockerfile copies from it and nothing else: `docker compose up
 * --build` sends the whole context before building, and a working copy holds far more than the
 * repository (node_modules, dist, the benchmark's generated data in bench/.data, `npm pack`
 * tarballs). Every top-level entry of this working copy, and what .gitignore keeps out of git, is
 * checked against .dockerignore.
 */
test('Dockerfile: the build context is exactly what the Dockerfile copies from it', () => {
  const inContext = dockerContextFilter(read('.dockerignore'));
  const copied = dockerStages(read('Dockerfile')).flatMap((s) => s.lines)
    .filter((l) => /^COPY\s/.test(l) && !l.includes('--from='))
    .flatMap((l) => l.split(/\s+/).slice(1, -1).map((src) => src.replace(/^\.\/|\/$/g, '')));
  const gitignored = read('.gitignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
    .map((p) => p.replace(/^\/|\/$/g, '').replace(/\*/g, 'any'));
  const candidates = [
    ...readdirSync(ROOT), ...gitignored, ...gitignored.map((p) => `${p}/file`),
    'bench/.data/events.jsonl', 'prefect-otel-0.1.0.tgz', 'src/cli.ts',
  ];
  const sent = [...new Set(candidates)].filter(inContext).filter((p) => !p.startsWith('src/')).sort();
  assert.deepEqual(sent, [...new Set(copied)].sort());
  assert.ok(inContext('src/cli.ts') && inContext('src/model/event.ts'), 'the sources under src/ are sent');
});

test('Dockerfile: build then runtime stage; the runtime runs the package bin as a non-root user', () => {
  const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string>; engines: { node: string } };
  const bin = pkg.bin['prefect-otel']!;
  const stages = dockerStages(read('Dockerfile'));
  assert.ok(stages.length >= 2, 'multi-stage');
  const build = stages[0]!;
  const runtime = stages.at(-1)!;
  const buildName = /\sAS\s+(\S+)/i.exec(build.from)?.[1];
  const minNode = Number(/(\d+)/.exec(pkg.engines.node)?.[1]);
  const nodeMajors = stages.map((s) => Number(/^FROM\s+node:(\d+)/i.exec(s.from)?.[1]));
  assert.deepEqual(nodeMajors.filter((major) => !(major >= minNode)), [], `node images that satisfy engines ${pkg.engines.node}`);

  assert.ok(build.lines.some((l) => /^RUN .*\bnpm ci\b/.test(l)) && build.lines.some((l) => /^RUN .*\bnpm run build\b/.test(l)));
  assert.ok(runtime.lines.some((l) => /^RUN .*\bnpm ci\b.*--omit=dev/.test(l)), 'production dependencies only');
  const copies = runtime.lines
    .filter((l) => l.startsWith(`COPY --from=${buildName} `))
    .map((l) => l.split(/\s+/).at(-1)!.replace(/^\.\//, ''));
  assert.deepEqual(copies, [posix.dirname(bin)], 'the runtime takes the directory of the bin from the build stage');
  const users = runtime.lines.filter((l) => l.startsWith('USER ')).map((l) => l.slice(5).trim());
  assert.ok(users.length > 0 && !['root', '0'].includes(users.at(-1)!.split(':')[0]!), `non-root user, got ${users.join(',')}`);
  const entrypoint = runtime.lines.filter((l) => l.startsWith('ENTRYPOINT ')).map((l) => JSON.parse(l.slice(11)) as unknown);
  assert.deepEqual(entrypoint, [['node', bin]]);

  const inContext = dockerContextFilter(read('.dockerignore'));
  const copiedFromContext = stages.flatMap((s) => s.lines).filter((l) => /^COPY\s/.test(l) && !l.includes('--from='))
    .flatMap((l) => l.split(/\s+/).slice(1, -1));
  assert.deepEqual(copiedFromContext.filter((src) => !inContext(src.replace(/\/$/, '')) || !existsSync(new URL(src, ROOT))), []);

  const built = asObj(service('prefect-otel').build, 'prefect-otel.build');
  assert.deepEqual([built.context, built.dockerfile ?? 'Dockerfile'], ['.', 'Dockerfile']);
});

/**
 * The `docker run` the Dockerfile's header shows for `watch` keeps the state file on a volume (with
 * `--rm` or `docker rm` it went with the container) and gives the shutdown its time: a SIGTERM
 * flushes for up to 10 s before the state is saved, gives the save 10 s, and ends the process
 * within 22 s (README, Guarantees), and `docker stop` kills after 10 s by default.
 */
test("Dockerfile: the header's docker run keeps the state directory on a volume and waits out the shutdown", () => {
  const text = read('Dockerfile');
  const stateDir = posix.dirname(/PREFECT_OTEL_STATE_FILE=(\S+)/.exec(text)?.[1] ?? '');
  const header = text.split('\n').filter((l) => l.startsWith('#')).map((l) => l.slice(1)).join('\n').replace(/\\\n/g, ' ');
  const watchRun = /docker run (?:(?!\n)[^`])*?prefect-otel(?=\s*$)/m.exec(header)?.[0] ?? '';
  assert.match(watchRun, new RegExp(`-v \\S+:${stateDir.replace(/[/.]/g, '\\$&')}(\\s|$)`), `the state directory ${stateDir} mounted: ${watchRun}`);
  assert.ok(Number(/--stop-timeout (\d+)/.exec(watchRun)?.[1]) >= 22, `--stop-timeout past the 22 s a shutdown may take: ${watchRun}`);
});

/**
 * The image runs a Node that is supported and tested: the LTS line CI runs the whole suite on
 * (.ci/run), not the oldest line package.json accepts. Node 20 reached its end of life on
 * 2026-04-30 (nodejs/Release schedule): no security fixes for an image built on it.
 */
test('Dockerfile: every stage on the Node LTS major that CI runs the suite on', () => {
  const lts = /^LTS_VERSION=(\d+)\./m.exec(read('.ci/run'))?.[1];
  assert.ok(lts !== undefined, '.ci/run names LTS_VERSION');
  const majors = dockerStages(read('Dockerfile')).map((s) => /^FROM\s+node:(\d+)/i.exec(s.from)?.[1]);
  assert.deepEqual(majors, majors.map(() => lts));
});

/** Top-level Python functions under a decorator: name and body (the indented lines that follow). */
function decorated(py: string, decorator: 'flow' | 'task'): { name: string; header: string; body: string }[] {
  const re = new RegExp(`^(@${decorator}\\b[^\\n]*)\\n(?:@[^\\n]*\\n)*def (\\w+)\\([^\\n]*\\n((?:[ \\t]+[^\\n]*\\n|\\n)*)`, 'gm');
  return [...py.matchAll(re)].map((m) => ({ header: m[1]!, name: m[2]!, body: m[3]! }));
}

test('sample flow: tasks, a retried task, a subflow called from a flow, a task that raises; served by compose', () => {
  const py = read('examples/sample-flow/flow.py');
  const flows = decorated(py, 'flow');
  const tasks = decorated(py, 'task');
  assert.ok(tasks.length >= 2, `tasks: ${tasks.map((t) => t.name).join(', ')}`);
  assert.ok(tasks.some((t) => /\bretries=[1-9]/.test(t.header)), 'a task with retries');
  const subflowCalls = flows.flatMap((f) => flows
    .filter((g) => g !== f && new RegExp(`\\b${g.name}\\(`).test(f.body))
    .map((g) => `${f.name} -> ${g.name}`));
  assert.ok(subflowCalls.length > 0, 'a flow calls another flow');
  assert.ok(tasks.some((t) => /^\s+raise \w+/m.test(t.body)), 'a task raises');
  assert.match(py, /\.serve\([^)]*\binterval=/);

  const sample = service('sample-flow');
  const script = commandArgs(sample, 'sample-flow').find((a) => a.endsWith('.py'));
  const mount = mounts(sample, 'sample-flow').find((m) => script?.startsWith(`${m.target}/`));
  const onHost = mount && posix.join(mount.source, script!.slice(mount.target.length));
  assert.equal(onHost, 'examples/sample-flow/flow.py', `compose runs ${script} from ${mount?.source}`);
});
