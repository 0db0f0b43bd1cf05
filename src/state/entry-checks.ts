/**
 * Whether an entry read from the state file is what the process that wrote it meant, down to the
 * parts that are read later: an open run's events and state, a waiting span's events and links.
 * The file is JSON that a person, another version of prefect-otel, or a bug may have changed; an
 * entry checked only at its top would be restored, then throw when its span is built (every tick,
 * for ever, the span never sent), stop the start, or make the exporter refuse the whole batch it is
 * in. These run once per entry at start, never per event.
 */
type Obj = Record<string, unknown>;

export const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
export const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
export const isStr = (v: unknown): v is string => typeof v === 'string';
/** A number, or nothing (`null` in the file, or absent). */
const isNumOrNone = (v: unknown): boolean => v === null || v === undefined || isNum(v);
const isStrOrNone = (v: unknown): boolean => v === null || v === undefined || isStr(v);
const every = (v: unknown, ok: (x: unknown) => boolean): boolean => Array.isArray(v) && v.every(ok);

const HEX_32 = /^[0-9a-f]{32}$/;
const HEX_16 = /^[0-9a-f]{16}$/;
const isTraceId = (v: unknown): boolean => isStr(v) && HEX_32.test(v);
const isSpanId = (v: unknown): boolean => isStr(v) && HEX_16.test(v);

/**
 * Attributes: an object. Their values are not looked into: a span hook may have set any, and the
 * exporter takes what the hook gave it.
 */
const isAttributes = isObj;

/** A run's trace context: its trace, its parent span (none on a root). */
export const isCtx = (v: unknown): boolean =>
  isObj(v) && isTraceId(v.traceId) && typeof v.root === 'boolean' && (v.parentSpanId === undefined || v.parentSpanId === null || isSpanId(v.parentSpanId));

/** A span event as an open run keeps it, with its event id and `follows`. */
const isRunEvent = (v: unknown): boolean =>
  isObj(v) && isStr(v.id) && isStr(v.name) && isNum(v.timeUs) && isAttributes(v.attributes) && isStrOrNone(v.follows);

/** A run's latest state: the event it came in and the state (its type decides whether the run ended). */
const isLatest = (v: unknown): boolean =>
  v === null || v === undefined ||
  (isObj(v) && isStr(v.id) && isNum(v.occurredUs) && isStrOrNone(v.follows) && isObj(v.state) && isStr(v.state.type) && isStr(v.state.name) && isStrOrNone(v.state.message));

const isSummary = (v: unknown): boolean =>
  v === null || v === undefined || (isObj(v) && isNum(v.count) && isNum(v.firstUs) && (v.names === undefined || isObj(v.names)) && isNumOrNone(v.other));

/** The names and ids a run keeps (`RunMeta`): text, or absent (the state file never writes them as null). */
const META_TEXT = ['name', 'flowName', 'flowId', 'deploymentName', 'deploymentId', 'workPoolName', 'workPoolType', 'workQueueName', 'taskKey', 'parentTaskRunId', 'flowRunId', 'traceparent'] as const;

/** What a run knows of itself (`RunMeta`): its span's name, attributes and link are made of it. */
const isMeta = (v: unknown): boolean =>
  isObj(v) && every(v.tags, isStr) && META_TEXT.every((key) => v[key] === undefined || isStr(v[key])) &&
  (v.tagsDropped === undefined || isNum(v.tagsDropped)) && (v.expectedStartUs === undefined || isNum(v.expectedStartUs)) && (v.parentTaskIds === undefined || every(v.parentTaskIds, isStr));

/** An open run (`RunStateData`), with everything its span is built from. */
export function isOpenRun(r: unknown): boolean {
  return (
    isObj(r) && isObj(r.ref) && isStr(r.ref.id) && (r.ref.type === 'flow' || r.ref.type === 'task') &&
    isMeta(r.meta) && isCtx(r.ctx) && isNum(r.attempt) && isNum(r.lastActivityMs) &&
    every(r.events, isRunEvent) && isLatest(r.latest) && isSummary(r.summarised) &&
    isNumOrNone(r.firstEventUs) && isNumOrNone(r.lastEventUs) && isNumOrNone(r.innerLastUs) && isNumOrNone(r.startUs) && isNumOrNone(r.firstScheduledUs) &&
    isNumOrNone(r.maxRunCount) && isNumOrNone(r.terminalAtMs) && (r.awaitingWorker === undefined || typeof r.awaitingWorker === 'boolean')
  );
}

const isSpanEvent = (v: unknown): boolean => isObj(v) && isStr(v.name) && isNum(v.timeUs) && isAttributes(v.attributes) && isNumOrNone(v.droppedAttributes);
const isTraceFlags = (v: unknown): boolean => v === undefined || (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xff);
const isSpanLink = (v: unknown): boolean =>
  isObj(v) && isTraceId(v.traceId) && isSpanId(v.spanId) && isTraceFlags(v.traceFlags) && (v.remote === undefined || typeof v.remote === 'boolean') &&
  isAttributes(v.attributes) && isNumOrNone(v.droppedAttributes);
const isStatus = (v: unknown): boolean => isObj(v) && (v.code === 'unset' || v.code === 'ok' || (v.code === 'error' && isStr(v.message)));

/** A finished span waiting for the collector (`SpanRecord`), as the exporter encodes it. */
export function isPendingSpan(s: unknown): boolean {
  return (
    isObj(s) && isTraceId(s.traceId) && isSpanId(s.spanId) && (s.parentSpanId === undefined || s.parentSpanId === null || isSpanId(s.parentSpanId)) &&
    isStr(s.name) && (s.kind === 'server' || s.kind === 'internal') && isNum(s.startUs) && isNum(s.endUs) && isStatus(s.status) &&
    isAttributes(s.attributes) && every(s.events, isSpanEvent) && every(s.links, isSpanLink) && isNumOrNone(s.droppedEvents) && isNumOrNone(s.droppedAttributes) && isNumOrNone(s.droppedLinks) &&
    isObj(s.run) && isStr(s.run.id)
  );
}
