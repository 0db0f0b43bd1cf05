import type { Attributes, BatchObservableResult, Observable } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { JsonMetricsSerializer, MetricsExporterMetricsHelper, ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { AggregationTemporality, MeterProvider, PeriodicExportingMetricReader, type PushMetricExporter, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { Logger } from 'pino';
import type { Config, OtlpSignalConfig } from '../config.js';
import { errorText } from '../errors.js';
import { safeUrl } from '../log/redact.js';
import { LAG_METRIC, METRIC_DEFS } from '../metric-defs.js';
import type { TracingStats } from '../stats.js';
import { VERSION } from '../version.js';
import { createHttpDelegate } from './exporters.js';
import { LAG_BUCKETS_S, type LagHistogram } from './lag.js';
import { createResource } from './spans.js';

export interface MetricsExport {
  /** Export once more (the final values), then stop. */
  shutdown(): Promise<void>;
}

/**
 * OTLP/HTTP metrics exporter on the same release train as the trace and log exporters: the
 * published `exporter-metrics-otlp-*` packages stop at 0.223.0 and pin `sdk-metrics`/`core` 2.12.0,
 * which would put a second copy of the SDK beside ours. Cumulative temporality, as the default.
 */
export class OtlpMetricExporter extends OTLPExporterBase<ResourceMetrics> implements PushMetricExporter {
  private failing = false;

  /**
   * `log`: where a failing export is said, once when it starts failing and once when it works
   * again. The SDK's reader reports it only through OpenTelemetry's global diag, which inside an
   * application is the application's (the CLI routes it to its log too).
   */
  constructor(signal: OtlpSignalConfig, private readonly log?: Logger) {
    const encodings = { json: JsonMetricsSerializer, protobuf: ProtobufMetricsSerializer };
    super(createHttpDelegate(signal, { id: 'METRICS', path: 'v1/metrics' }, encodings, 'otlp_http_metric_exporter', MetricsExporterMetricsHelper));
  }

  override export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    super.export(metrics, (result) => {
      if (result.code !== ExportResultCode.SUCCESS && !this.failing) {
        this.failing = true;
        this.log?.warn({ error: result.error === undefined ? 'export failed' : errorText(result.error) }, 'metrics export failing; tried again at the next interval');
      } else if (result.code === ExportResultCode.SUCCESS && this.failing) {
        this.failing = false;
        this.log?.info('metrics export works again');
      }
      resultCallback(result);
    });
  }

  selectAggregationTemporality(): AggregationTemporality {
    return AggregationTemporality.CUMULATIVE;
  }
}

/**
 * With OTEL_METRICS_EXPORTER=otlp: the `/metrics` counters as observable instruments (read from the
 * stats once per collection) and the export-lag histogram with the same buckets, every
 * OTEL_METRIC_EXPORT_INTERVAL ms and once more at shutdown.
 */
export function startMetricsExport(config: Config, read: () => TracingStats, lag: LagHistogram, logger: Logger): MetricsExport | undefined {
  if (config.metrics.exporter === 'none') return undefined;
  const interval = config.metrics.intervalMs;
  const provider = new MeterProvider({
    resource: createResource(config),
    readers: [
      new PeriodicExportingMetricReader({
        exporter: new OtlpMetricExporter(config.metrics, logger.child({ component: 'export', signal: 'metrics' })),
        exportIntervalMillis: interval,
        exportTimeoutMillis: Math.min(interval, config.metrics.timeoutMs),
      }),
    ],
  });
  const meter = provider.getMeter('prefect-otel', VERSION);
  const observed: [def: (typeof METRIC_DEFS)[number], instrument: Observable][] = [];
  for (const def of METRIC_DEFS) {
    if (def.otel === undefined) continue;
    const options = { unit: def.unit, description: def.help };
    observed.push([def, def.type === 'counter' ? meter.createObservableCounter(def.otel, options) : meter.createObservableGauge(def.otel, options)]);
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
  logger.child({ component: 'export', signal: 'metrics' }).debug({ url: safeUrl(config.metrics.url), intervalMs: interval }, 'exporting metrics');
  return {
    async shutdown(): Promise<void> {
      lag.listener = undefined;
      try {
        await provider.shutdown();
      } catch (err) {
        logger.child({ component: 'export', signal: 'metrics' }).warn({ error: errorText(err) }, 'final metrics export failed');
      }
    },
  };
}
