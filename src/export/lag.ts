/**
 * Export lag: from a span's end (its terminal event's `occurred`, or the last event of an
 * incomplete run) to the moment the collector accepted it. A fixed-bucket histogram: constant
 * memory, O(1) per delivered span, the same buckets in the stats line, `/metrics` and OTel metrics.
 */

/** Upper bounds (seconds, inclusive) of the buckets; one more bucket (+Inf) holds the rest. */
export const LAG_BUCKETS_S: readonly number[] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 21600, 86400];

export interface LagSummary {
  readonly count: number;
  /** Sum of all observed lags (s). */
  readonly sumS: number;
  readonly maxS: number;
  /** Quantile estimates: the upper bound of the bucket the quantile falls in (the maximum for the last bucket). */
  readonly p50S: number;
  readonly p90S: number;
  readonly p99S: number;
  /** Cumulative counts per upper bound, in order, as Prometheus `le` labels (`"0.1"`, …, `"+Inf"`). */
  readonly buckets: readonly (readonly [le: string, count: number])[];
}

export class LagHistogram {
  /** Per-bucket (not cumulative) counts; the last one is +Inf. */
  private readonly counts = new Float64Array(LAG_BUCKETS_S.length + 1);
  private count = 0;
  private sum = 0;
  private max = 0;
  /** Told every observation (the OTel histogram when metrics are exported). */
  listener: ((seconds: number) => void) | undefined;

  /** Record one lag in seconds; a negative lag (clock skew between Prefect and us) counts as 0. */
  observe(seconds: number): void {
    const v = seconds > 0 ? seconds : 0;
    let i = 0;
    while (i < LAG_BUCKETS_S.length && v > LAG_BUCKETS_S[i]!) i++;
    this.counts[i]! += 1;
    this.count += 1;
    this.sum += v;
    if (v > this.max) this.max = v;
    this.listener?.(v);
  }

  /** Lag of each span just delivered, measured at `nowMs`. */
  observeDelivered(spans: readonly { readonly endUs: number }[], nowMs: number): void {
    for (const s of spans) this.observe((nowMs - s.endUs / 1000) / 1000);
  }

  summary(): LagSummary {
    const buckets: [string, number][] = [];
    let cumulative = 0;
    for (let i = 0; i < this.counts.length; i++) {
      cumulative += this.counts[i]!;
      buckets.push([i < LAG_BUCKETS_S.length ? String(LAG_BUCKETS_S[i]) : '+Inf', cumulative]);
    }
    const quantile = (q: number): number => {
      if (this.count === 0) return 0;
      const rank = Math.ceil(q * this.count);
      let seen = 0;
      for (let i = 0; i < LAG_BUCKETS_S.length; i++) {
        seen += this.counts[i]!;
        if (seen >= rank) return Math.min(LAG_BUCKETS_S[i]!, this.max);
      }
      return this.max;
    };
    return { count: this.count, sumS: this.sum, maxS: this.max, p50S: quantile(0.5), p90S: quantile(0.9), p99S: quantile(0.99), buckets };
  }
}
