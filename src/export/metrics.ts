import { randomUUID } from 'node:crypto';
import type { Attributes, BatchObservableResult, Observable } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { JsonMetricsSerializer, MetricsExporterMetricsHelper, ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { AggregationTemporality, InstrumentType, MeterProvider, PeriodicExportingMetricReader, type PushMetricExporter, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { Logger } from 'pino';
import type { Config, MetricsTemporalityPreference, OtlpSignalConfig } from '../config.js';
import { errorText } from '../errors.js';
import { otlpSecrets, secretRedactor, shownUrl } from '../log/redact.js';
import { LAG_METRIC, METRIC_DEFS } from '../metric-defs.js';
import type { TracingStats } from '../stats.js';
import { VERSION } from '../version.js';
import { createHttpDelegate, describeFailure, waitAtMost } from './exporters.js';
import { watchRetriedAnswers, type RetriedAnswers } from './retried-answers.js';
import { LAG_BUCKETS_S, type LagHistogram } from './lag.js';
import { createResource } from './spans.js';

export interface MetricsExport {
  /** Export once more (the final values), then stop; wait at most `timeoutMs` for the collector (undefined: as long as the export takes). */
  shutdown(timeoutMs?: number): Promise<void>;
}

/**
 * OTLP/HTTP metrics exporter on the same release train as the trace and log exporters: the
 * published `exporter-metrics-otlp-*` packages stop at 0.223.0 and pin `sdk-metrics`/`core` 2.12.0,
 * which would put a second copy of the SDK beside ours. Cumulative temporality unless
 * OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE asks for deltas.
 */
export class OtlpMetricExporter extends OTLPExporterBase<ResourceMetrics> implements PushMetricExporter {
  /** Why the latest export failed; undefined once one went through. */
  failedWith: string | undefined;
  /** Set before the last export (at shutdown), whose failure the shutdown says: there is no next interval. */
  final = false;
  /** Takes the OTLP header values out of what the collector said. */
  readonly redact: (text: string) => string;
  private readonly retried: RetriedAnswers;

  /**
   * `log`: where a failing export is said, once when it starts failing, once when it works again,
   * and for the last export. The SDK's reader would report every failed interval again, as an error
   * with its stack through OpenTelemetry's global diag (which the CLI routes to its log): with a
   * `log`, the reader is told the export went through. Nothing is lost by it: cumulative values
   * are carried by the next export, and deltas are taken at collection, whatever the export's outcome.
   */
  constructor(
    signal: OtlpSignalConfig,
    private readonly log?: Logger,
    private readonly preference: MetricsTemporalityPreference = 'cumulative',
  ) {
    const encodings = { json: JsonMetricsSerializer, protobuf: ProtobufMetricsSerializer };
    const redact = secretRedactor(otlpSecrets(signal));
    super(createHttpDelegate(signal, { id: 'METRICS', path: 'v1/metrics' }, encodings, 'otlp_http_metric_exporter', MetricsExporterMetricsHelper, undefined, redact));
    this.redact = redact;
    this.retried = watchRetriedAnswers(signal.url);
  }

  override export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    this.retried.clear();
    super.export(metrics, (result) => {
      if (result.code === ExportResultCode.SUCCESS) {
        if (this.failedWith !== undefined) this.log?.info('metrics export works again');
        this.failedWith = undefined;
        resultCallback(result);
        return;
      }
      // Worded as a failed span or log export is, the collector's status and message in it.
      const error = describeFailure(result.error, this.redact, this.retried).message;
      if (this.failedWith === undefined && !this.final) this.log?.warn({ err: error }, 'metrics export failing; tried again at the next interval');
      this.failedWith = error;
      resultCallback(this.log === undefined ? result : { code: ExportResultCode.SUCCESS });
    });
  }

  /**
   * OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, as the spec's table has it: `delta` makes the
   * counters (observable ones too) and histograms deltas, `lowmemory` only the synchronous counters
   * and histograms; up-down counters and gauges stay cumulative. With deltas, the values of an export
   * that failed are lost, as in every OpenTelemetry SDK: the reader does not send them again.
   */
  selectAggregationTemporality(instrumentType: InstrumentType): AggregationTemporality {
    const delta =
      instrumentType === InstrumentType.HISTOGRAM ||
      instrumentType === InstrumentType.COUNTER ||
      (instrumentType === InstrumentType.OBSERVABLE_COUNTER && this.preference === 'delta');
    return this.preference !== 'cumulative' && delta ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;
  }
}

/**
 * How long one metrics export may take: the OTLP timeout and OTEL_METRIC_EXPORT_TIMEOUT, but within
 * the interval (the SDK's reader gives an export no longer), and short of it, so that a collector
 * that does not answer fails the request (said once by the exporter) before the reader gives up on
 * it, which the SDK would log as an error at every interval.
 */
function requestTimeoutMs(timeoutMs: number, exportTimeoutMs: number, intervalMs: number): number {
  return Math.max(1, Math.min(timeoutMs, exportTimeoutMs, Math.floor((intervalMs * 3) / 4)));
}

/**
 * The spans' resource, plus a `service.instance.id` of this process (a random UUID, as the semantic
 * conventions recommend; one set in OTEL_RESOURCE_ATTRIBUTES is kept). These metrics describe the
 * process, and two of them at once (a holder and its standby, a replica per workspace under one
 * service name) would otherwise be one series at the backend, each export overwriting the other's
 * cumulative values. The spans stay without it: they are the same whichever process builds them.
 */
function metricsResource(config: Config): Resource {
  const resource = createResource(config);
  return resource.attributes['service.instance.id'] !== undefined ? resource : resource.merge(resourceFromAttributes({ 'service.instance.id': randomUUID() }));
}

/**
 * With OTEL_METRICS_EXPORTER=otlp: the `/metrics` counters and gauges as observable Counters and
 * UpDownCounters (read from the stats once per collection) and the export-lag histogram with the same buckets, every
 * OTEL_METRIC_EXPORT_INTERVAL ms and once more at shutdown.
 */
export function startMetricsExport(config: Config, read: () => TracingStats, lag: LagHistogram, logger: Logger): MetricsExport | undefined {
  if (config.metrics.exporter === 'none') return undefined;
  const interval = config.metrics.intervalMs;
  // Its lines name where the metrics go, as the spans' and log records' do.
  const log = logger.child({ component: 'export', signal: 'metrics', url: shownUrl(config.metrics.url) });
  const exporter = new OtlpMetricExporter(
    { ...config.metrics, timeoutMs: requestTimeoutMs(config.metrics.timeoutMs, config.metrics.exportTimeoutMs, interval) },
    log,
    config.metrics.temporalityPreference,
  );
  const provider = new MeterProvider({
    resource: metricsResource(config),
    readers: [
      new PeriodicExportingMetricReader({
        exporter,
        exportIntervalMillis: interval,
        // Never reached first: the request's own timeout ends a hung export, and is said once.
        exportTimeoutMillis: interval,
      }),
    ],
  });
  const meter = provider.getMeter('prefect-otel', VERSION);
  const observed: [def: (typeof METRIC_DEFS)[number], instrument: Observable][] = [];
  for (const def of METRIC_DEFS) {
    if (def.otel === undefined) continue;
    const options = { unit: def.unit, description: def.help };
    // The gauges count what there is at the moment (additive): asynchronous UpDownCounters, not Gauges.
    observed.push([def, def.type === 'counter' ? meter.createObservableCounter(def.otel, options) : meter.createObservableUpDownCounter(def.otel, options)]);
  }
  meter.addBatchObservableCallback(
    (result: BatchObservableResult) => {
      const s = read();
      for (const [def, instrument] of observed) {
        const v = def.read(s);
        if (typeof v === 'number') result.observe(instrument, v);
        else for (const [label, n] of Object.entries(v)) result.observe(instrument, n, { [def.label ?? 'label']: label } satisfies Attributes);
      }
    },
    observed.map(([, instrument]) => instrument),
  );
  const histogram = meter.createHistogram(LAG_METRIC.otel, { unit: LAG_METRIC.unit, description: LAG_METRIC.help, advice: { explicitBucketBoundaries: [...LAG_BUCKETS_S] } });
  lag.listener = (seconds) => histogram.record(seconds);
  log.debug({ intervalMs: interval }, 'exporting metrics');
  return {
    async shutdown(timeoutMs?: number): Promise<void> {
      lag.listener = undefined;
      exporter.final = true;
      let error: string | undefined;
      try {
        if (await waitAtMost(provider.shutdown(), timeoutMs)) error = exporter.failedWith;
        else error = "no answer before the shutdown's timeout ran out; given up";
      } catch (err) {
        error = exporter.redact(errorText(err));
      }
      if (error !== undefined) log.warn({ err: error }, 'final metrics export failed');
    },
  };
}
