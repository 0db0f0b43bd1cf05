import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { ROOT_CONTEXT } from '@opentelemetry/api';
import { SamplingDecision, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace';
import { describeSampler, traceSampler } from '../../src/export/sampling.js';
import { traceIdForRun } from '../../src/model/ids.js';
import { TRACES_SAMPLERS } from '../../src/settings.js';

const traceIds = Array.from({ length: 400 }, () => traceIdForRun(randomUUID()));

test('each sampler decides every trace id as OpenTelemetry\'s own does; a parent-based one as its root sampler, since a trace\'s root has no parent', () => {
  const decisions = (name: (typeof TRACES_SAMPLERS)[number], ratio: number) => {
    const sampled = traceSampler({ name, ratio });
    return sampled === undefined ? 'every trace' : traceIds.map(sampled);
  };
  const sdk = new TraceIdRatioBasedSampler(0.3);
  const byRatio = traceIds.map((id) => sdk.shouldSample(ROOT_CONTEXT, id).decision === SamplingDecision.RECORD_AND_SAMPLED);
  const kept = byRatio.filter(Boolean).length;
  assert.ok(kept > 60 && kept < 180, `about 30 % of 400 trace ids kept, got ${kept}`);
  assert.deepEqual(Object.fromEntries(TRACES_SAMPLERS.map((name) => [name, decisions(name, 0.3)])), {
    always_on: 'every trace',
    parentbased_always_on: 'every trace',
    always_off: traceIds.map(() => false),
    parentbased_always_off: traceIds.map(() => false),
    traceidratio: byRatio,
    parentbased_traceidratio: byRatio,
  });
  assert.deepEqual([decisions('traceidratio', 1), decisions('traceidratio', 0)], ['every trace', traceIds.map(() => false)]);
  assert.deepEqual([describeSampler({ name: 'traceidratio', ratio: 0.3 }), describeSampler({ name: 'always_off', ratio: 0.3 })], ['traceidratio 0.3', 'always_off']);
});
