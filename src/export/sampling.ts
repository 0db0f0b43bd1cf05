import { ROOT_CONTEXT, SpanKind } from '@opentelemetry/api';
import { AlwaysOffSampler, ParentBasedSampler, SamplingDecision, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace';
import type { Config } from '../config.js';

/**
 * Whether a trace is exported, as OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG ask, decided by
 * OpenTelemetry's own samplers; undefined when every trace is. A trace's root is a flow run with no
 * parent outside prefect-otel, so the parent-based samplers decide as their root sampler does, and
 * the decision of the root holds for every span of its trace: each is asked with no parent, by its
 * trace id, which the ratio sampler decides on alone. A trace is thus kept or dropped whole, the same
 * way in every process and on every restart. (Only the JS SDK's ratio sampler decides the same: the
 * collector's probabilistic sampler and other languages' SDKs read other bits of the trace id, so
 * with the same ratio they keep other traces.)
 */
export function traceSampler(sampler: Config['sampler']): ((traceId: string) => boolean) | undefined {
  const root = rootSampler(sampler);
  if (root === undefined) return undefined;
  const decider: Sampler = sampler.name.startsWith('parentbased_') ? new ParentBasedSampler({ root }) : root;
  return (traceId) => decider.shouldSample(ROOT_CONTEXT, traceId, '', SpanKind.INTERNAL, {}, []).decision === SamplingDecision.RECORD_AND_SAMPLED;
}

/** The sampler for traces without a parent; undefined: every trace. */
function rootSampler({ name, ratio }: Config['sampler']): Sampler | undefined {
  switch (name) {
    case 'always_on':
    case 'parentbased_always_on':
      return undefined;
    case 'always_off':
    case 'parentbased_always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
    case 'parentbased_traceidratio':
      return ratio >= 1 ? undefined : new TraceIdRatioBasedSampler(ratio);
  }
}

/** The sampler as a summary names it: `always_off`, `traceidratio 0.25`. */
export function describeSampler({ name, ratio }: Config['sampler']): string {
  return name.endsWith('traceidratio') ? `${name} ${ratio}` : name;
}

/** The sampler with the setting it was given as, for a summary: `OTEL_TRACES_SAMPLER=traceidratio 0.25`, `--traces-sampler=always_off`. */
export function samplerAsGiven(config: Pick<Config, 'sampler' | 'sources'>): string {
  return `${config.sources?.tracesSampler ?? 'OTEL_TRACES_SAMPLER'}=${describeSampler(config.sampler)}`;
}
