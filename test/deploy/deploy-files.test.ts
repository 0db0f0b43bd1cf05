/**
 * There is no Docker engine here, so the shipped compose stack and collector config are parsed and
 * cross-checked instead: every reference resolves, ports and endpoints agree, names are SPEC §2's.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parse } from 'yaml';
import { SETTINGS } from '../../src/settings.js';

const ROOT = new URL('../../../', import.meta.url);
const read = (path: string): string => readFileSync(new URL(path, ROOT), 'utf8');

type Obj = Record<string, any>;
const collector = parse(read('otel-collector.yaml')) as Obj;
const compose = parse(read('docker-compose.yml')) as Obj;

test('collector: every component a pipeline names is defined; memory_limiter first; current exporter names', () => {
  const pipelines = collector.service.pipelines as Record<string, Obj>;
  assert.deepEqual(Object.keys(pipelines).sort(), ['logs', 'traces']);
  for (const [name, p] of Object.entries(pipelines)) {
    for (const kind of ['receivers', 'processors', 'exporters'] as const) {
      for (const c of p[kind] as string[]) assert.ok(c in collector[kind], `${name}: ${kind} ${c} is not defined`);
    }
    assert.equal((p.processors as string[])[0], 'memory_limiter', `${name}: memory_limiter must be first`);
  }
  for (const ext of collector.service.extensions as string[]) assert.ok(ext in collector.extensions, `extension ${ext}`);
  const types = Object.keys(collector.exporters as Obj).map((k) => k.split('/')[0]);
  for (const deprecated of ['otlp', 'otlphttp', 'logging', 'jaeger']) assert.ok(!types.includes(deprecated), `deprecated exporter ${deprecated}`);
  assert.deepEqual(collector.receivers.otlp.protocols, { grpc: { endpoint: '0.0.0.0:4317' }, http: { endpoint: '0.0.0.0:4318' } });
  assert.deepEqual(pipelines.logs!.exporters.sort(), ['debug', 'file/logs']);
});

test("collector → Jaeger: the traces exporter targets the compose jaeger service's OTLP gRPC port", () => {
  const jaegerExporters = (collector.service.pipelines.traces.exporters as string[]).filter((e) => e.startsWith('otlp_grpc'));
  assert.deepEqual(jaegerExporters, ['otlp_grpc/jaeger']);
  assert.equal(collector.exporters['otlp_grpc/jaeger'].endpoint, 'jaeger:4317');
  assert.match(compose.services.jaeger.image as string, /^jaegertracing\/jaeger:2\./, 'Jaeger v2, not the EOL v1 all-in-one');
});

test('compose: the five services, published ports, healthchecks behind service_healthy, mounted collector config', () => {
  const services = compose.services as Record<string, Obj>;
  assert.deepEqual(Object.keys(services).sort(), ['jaeger', 'otel-collector', 'prefect-otel', 'prefect-server', 'sample-flow']);
  const published = (s: Obj): string[] => ((s.ports ?? []) as string[]).map((p) => String(p).split(':')[0]!);
  assert.deepEqual(published(services.jaeger!), ['16686']);
  assert.deepEqual(published(services['prefect-server']!), ['4200']);
  assert.deepEqual(published(services['otel-collector']!), ['4317', '4318', '13133']);
  for (const [name, s] of Object.entries(services)) {
    for (const [dep, cond] of Object.entries((s.depends_on ?? {}) as Record<string, { condition: string }>)) {
      assert.ok(dep in services, `${name} depends on unknown ${dep}`);
      if (cond.condition === 'service_healthy') assert.ok(services[dep]!.healthcheck, `${dep} needs a healthcheck`);
    }
  }
  const col = services['otel-collector']!;
  const configArg = (col.command as string[]).find((a) => a.startsWith('--config='))!.slice('--config='.length);
  assert.ok((col.volumes as string[]).includes(`./otel-collector.yaml:${configArg}:ro`));
});

test("compose: prefect-otel's environment uses SPEC §2 names and points at the right services", () => {
  const env = compose.services['prefect-otel'].environment as Record<string, string>;
  const known = new Set(Object.values(SETTINGS).flatMap((d) => d.env));
  for (const key of Object.keys(env)) assert.ok(known.has(key), `${key} is not a prefect-otel setting`);
  const otlp = new URL(env.OTEL_EXPORTER_OTLP_ENDPOINT!);
  assert.equal(otlp.hostname, 'otel-collector');
  assert.equal(otlp.port, collector.receivers.otlp.protocols.http.endpoint.split(':')[1]);
  const api = new URL(env.PREFECT_API_URL!);
  assert.deepEqual([api.hostname, api.port, api.pathname], ['prefect-server', '4200', '/api']);
  assert.equal(compose.services['sample-flow'].environment.PREFECT_API_URL, env.PREFECT_API_URL);
});

test('Dockerfile: multi-stage, non-root, runs the package bin', () => {
  const docker = read('Dockerfile');
  const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string> };
  assert.ok((docker.match(/^FROM /gm) ?? []).length >= 2);
  assert.match(docker, /^USER node$/m);
  assert.match(docker, new RegExp(`^ENTRYPOINT \\["node", "${pkg.bin['prefect-otel']!.replace(/\./g, '\\.')}"\\]$`, 'm'));
});

test('sample flow: tasks, a retry, a subflow and a failure', () => {
  const py = read('examples/sample-flow/flow.py');
  assert.match(py, /^@flow\(/m);
  assert.match(py, /^@task\(retries=\d/m);
  assert.match(py, /quality_checks\(rows\)/, 'the etl flow calls the subflow');
  assert.match(py, /raise ValueError/);
  assert.match(py, /\.serve\(/);
});
