import type { SpanRecord } from '../../src/model/span-record.js';

/** A finished root span record numbered `i` (ids from its hex), for tests of the export path alone. */
export function numberedSpan(i: number): SpanRecord {
  const hex = i.toString(16).padStart(16, '0');
  return {
    traceId: `${hex}${hex}`, spanId: hex, parentSpanId: undefined, name: 'etl', kind: 'server', startUs: 1_700_000_000_000_000, endUs: 1_700_000_001_000_000,
    status: { code: 'ok' }, attributes: { 'prefect.run.id': String(i) }, events: [], links: [],
    run: { id: String(i), type: 'flow', name: undefined, attempt: 0, finalState: undefined, incomplete: false },
  };
}
