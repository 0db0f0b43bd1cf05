import type { AttributeValue } from '@opentelemetry/api';
import type { RunType, StateType } from './classify.js';

export type Attributes = Record<string, AttributeValue>;

export interface SpanEventRecord {
  readonly name: string;
  readonly timeUs: number;
  readonly attributes: Attributes;
  /** Attributes past OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT; absent when none. */
  readonly droppedAttributes?: number;
}

export interface SpanLinkRecord {
  readonly traceId: string;
  readonly spanId: string;
  /** The linked context's W3C trace flags (its traceparent's); absent: sampled (`01`), as every span of ours is. */
  readonly traceFlags?: number;
  /** The linked context came from another process (a propagated traceparent); absent: one of our own spans. */
  readonly remote?: boolean;
  readonly attributes: Attributes;
  /** Attributes past OTEL_LINK_ATTRIBUTE_COUNT_LIMIT; absent when none. */
  readonly droppedAttributes?: number;
}

export type SpanStatusRecord =
  | { readonly code: 'unset' }
  | { readonly code: 'ok' }
  | { readonly code: 'error'; readonly message: string };

/** One finished run attempt, ready to export. Plain data: the model knows nothing of the SDK. */
export interface SpanRecord {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  readonly name: string;
  readonly kind: 'server' | 'internal';
  readonly startUs: number;
  readonly endUs: number;
  readonly status: SpanStatusRecord;
  readonly attributes: Attributes;
  /** Sorted by time (and `follows` for ties). */
  readonly events: readonly SpanEventRecord[];
  readonly links: readonly SpanLinkRecord[];
  /** Events folded into the summary event past the limit (OTLP's `droppedEventsCount`); absent when none. */
  readonly droppedEvents?: number;
  /** Attributes past OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT; absent when none. */
  readonly droppedAttributes?: number;
  /** Links past OTEL_SPAN_LINK_COUNT_LIMIT; absent when none. */
  readonly droppedLinks?: number;
  readonly run: {
    readonly id: string;
    readonly type: RunType;
    readonly name: string | undefined;
    readonly attempt: number;
    readonly finalState: { readonly type: StateType; readonly name: string } | undefined;
    readonly incomplete: boolean;
  };
}
