import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { TraceFlags } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { pino } from 'pino';
import { createLogger, createPrettyStream } from '../../src/log/logger.js';
import { INSTRUMENTATION_SCOPE } from '../../src/export/spans.js';
import { LINE_MAX_BYTES, TRUNCATED } from '../../src/log/line-bound.js';
import { createRunLogWriter, formatRunLogMessage, LINE_STATE_MESSAGE_MAX_CHARS } from '../../src/log/stlogging.js';
import type { PrefectEvent } from '../../src/model/event.js';
import { usToHrTime } from '../../src/model/time.js';
import type { RunLogRecord } from '../../src/model/tracker.js';

/** A stream that keeps every write (each one line) made to it. */
function sink(): { stream: Writable & { write(line: string): boolean }; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(String(chunk).replace(/\n$/, ''));
      done();
    },
  });
  return { stream, lines };
}

function event(over: Partial<PrefectEvent>): PrefectEvent {
  return {
    id: '0b3c2f8e-6d1a-4c55-9e2b-7a1d5c3e9f01',
    name: 'prefect.flow-run.Running',
    occurred: '2026-11-25T09:00:00.123456Z',
    occurredUs: Date.parse('2026-11-25T09:00:00.123Z') * 1000 + 456,
    received: undefined,
    receivedUs: undefined,
    resource: { id: 'prefect.flow-run.5f0e6a2b-1c3d-4e5f-8a9b-0c1d2e3f4a5b', name: undefined, labels: {} },
    related: [],
    payload: {},
    follows: undefined,
    ...over,
  };
}

const RUN_ID = '5f0e6a2b-1c3d-4e5f-8a9b-0c1d2e3f4a5b';
const base = { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7' };

const RECORDS: RunLogRecord[] = [
  {
    ...base,
    kind: 'transition',
    run: { type: 'flow', id: RUN_ID, name: 'etl-nightly', root: true },
    event: event({}),
    state: { type: 'RUNNING', name: 'Running', message: '', from: 'PENDING', runCount: 1, terminal: false },
  },
  {
    ...base,
    kind: 'transition',
    run: { type: 'task', id: RUN_ID, name: 'load-"quoted"\\name\twith\ncontrols é 雪 🚀', root: false },
    event: event({ name: 'prefect.task-run.Failed' }),
    state: { type: 'FAILED', name: "Didn't \"work\"", message: "line one\nline 'two'", from: 'RUNNING', runCount: 2, terminal: true },
  },
  {
    ...base,
    kind: 'event',
    run: { type: 'flow', id: RUN_ID, name: undefined, root: true },
    event: event({ name: 'acme.model.trained\u2028' }),
    state: undefined,
  },
  {
    ...base,
    kind: 'late',
    run: { type: 'task', id: RUN_ID, name: 'late one', root: false },
    event: event({ name: 'prefect.task-run.Completed' }),
    state: { type: 'COMPLETED', name: 'Completed', message: 'All done', from: undefined, runCount: undefined, terminal: true },
  },
];

const OPTION_SETS = [
  { jaegerUrl: undefined, uiUrl: undefined },
  { jaegerUrl: 'http://localhost:16686', uiUrl: 'http://127.0.0.1:4200' },
];

test("STLOGGING lines from prefect-otel's own logger are exactly the lines pino writes for the same record", () => {
  for (const options of OPTION_SETS) {
    for (const format of ['json', 'pretty'] as const) {
      const own = sink();
      const ownWriter = createRunLogWriter(createLogger({ level: 'info', format, destination: own.stream }), options);
      // The same settings on a logger createLogger did not make: written through pino's serializer.
      const viaPino = sink();
      const pinoLogger = pino(
        { level: 'info', base: { service: 'prefect-otel' }, timestamp: pino.stdTimeFunctions.epochTime, redact: { paths: ['apiKey'], censor: '[redacted]' } },
        format === 'json' ? viaPino.stream : createPrettyStream(viaPino.stream),
      );
      const pinoWriter = createRunLogWriter(pinoLogger, options);
      for (const record of RECORDS) {
        ownWriter(record);
        pinoWriter(record);
      }
      assert.equal(own.lines.length, RECORDS.length);
      // Byte for byte, once the time is the same.
      const stripTime = (line: string): string => (format === 'json' ? line.replace(/^\{"level":(\d+),"time":\d+,/, '{"level":$1,"time":0,') : line.slice(12));
      assert.deepEqual(own.lines.map(stripTime), viaPino.lines.map(stripTime));
      if (format === 'json') for (const line of own.lines) assert.equal(typeof (JSON.parse(line) as { time: unknown }).time, 'number');
      else for (const line of own.lines) assert.match(line, /^\d\d:\d\d:\d\d\.\d{3} (INFO |WARN ) STLOGGING: /);
    }
  }
});

test('STLOGGING lines follow the logger level: warn drops transitions and keeps late events', () => {
  const own = sink();
  const writer = createRunLogWriter(createLogger({ level: 'warn', format: 'json', destination: own.stream }), OPTION_SETS[0]!);
  for (const record of RECORDS) writer(record);
  assert.deepEqual(
    own.lines.map((l) => (JSON.parse(l) as { msg: string }).msg),
    [`STLOGGING: Task run ${RUN_ID} (late one) state transition: None -> COMPLETED (state_name='Completed', message='All done') (late: its span was already exported)`],
  );
});

test('the message of each record: a state\'s name and message quoted as Python\'s repr writes them (quotes, backslashes and control characters escaped), the run name as it is', () => {
  assert.deepEqual(RECORDS.map((r) => formatRunLogMessage(r)), [
    `Flow run ${RUN_ID} (etl-nightly) state transition: PENDING -> RUNNING (state_name='Running', message='')`,
    `Task run ${RUN_ID} (${RECORDS[1]!.run.name!}) state transition: RUNNING -> FAILED (state_name=${String.raw`'Didn\'t "work"'`}, message=${String.raw`'line one\nline \'two\''`})`,
    `Event acme.model.trained\u2028 (id=${RECORDS[2]!.event.id}) on flow run ${RUN_ID}`,
    `Task run ${RUN_ID} (late one) state transition: None -> COMPLETED (state_name='Completed', message='All done')`,
  ]);
});

test('a line of a trace the sampler leaves out says trace_flags 00 and has no Jaeger link; a kept trace\'s terminal line has one', () => {
  for (const sampled of [true, false]) {
    const own = sink();
    const viaPino = sink();
    const options = { ...OPTION_SETS[1]!, traceSampled: (traceId: string) => sampled && traceId === base.traceId };
    const writers = [createRunLogWriter(createLogger({ level: 'info', format: 'json', destination: own.stream }), options), createRunLogWriter(pino({ level: 'info' }, viaPino.stream), options)];
    for (const write of writers) for (const record of RECORDS) write(record);
    for (const lines of [own.lines, viaPino.lines]) {
      assert.deepEqual(
        lines.map((l) => JSON.parse(l) as Record<string, unknown>).map((l) => [l['prefect.event.name'], l.trace_flags, l.jaeger_url ?? null]),
        RECORDS.map((r) => [r.event.name, sampled ? '01' : '00', sampled && r.state?.terminal === true ? `http://localhost:16686/trace/${base.traceId}` : null]),
      );
    }
  }
});

/** A run name as a `flow_run_name` template can make it: a forged second line, a colour change. */
const FORGED_NAME = 'fox\n09:00:00.000 INFO  STLOGGING: Flow run 00000000-0000-0000-0000-000000000000 (forged) state transition: RUNNING -> COMPLETED\x1b[31mRED\x1b[0m';
const FORGED: RunLogRecord[] = [
  {
    ...base,
    kind: 'transition',
    run: { type: 'flow', id: RUN_ID, name: FORGED_NAME, root: true },
    event: event({}),
    state: { type: 'RUNNING', name: 'Run\rning', message: 'a\rCR\r\nCRLF \u2028 \u2029 \u0085 \u009b2J \u007f \u0000 \\n', from: 'PENDING\nFORGED-FROM', runCount: 1, terminal: false },
  },
  {
    ...base,
    kind: 'event',
    run: { type: 'flow', id: RUN_ID, name: FORGED_NAME, root: true },
    event: event({ name: 'my.event\nFORGED\x1b[2J' }),
    state: undefined,
  },
];

/** The forged name as the pretty stream writes it: escaped, on the record's one line. */
const FORGED_NAME_ESCAPED = String.raw`fox\n09:00:00.000 INFO  STLOGGING: Flow run 00000000-0000-0000-0000-000000000000 (forged) state transition: RUNNING -> COMPLETED\x1b[31mRED\x1b[0m`;
/** The state message as quote() writes it, in both formats. */
const MESSAGE_QUOTED = String.raw`'a\rCR\r\nCRLF \u2028 \u2029 \x85 \x9b2J \x7f \x00 \\n'`;

test('control characters in run names, event names and states: each pretty record is exactly one line with them escaped; JSON keeps the text', () => {
  for (const own of [true, false]) {
    const pretty = sink();
    const json = sink();
    const loggers = own
      ? [createLogger({ level: 'info', format: 'pretty', destination: pretty.stream }), createLogger({ level: 'info', format: 'json', destination: json.stream })]
      : [pino({ level: 'info', base: { service: 'prefect-otel' } }, createPrettyStream(pretty.stream)), pino({ level: 'info', base: { service: 'prefect-otel' } }, json.stream)];
    const writers = loggers.map((l) => createRunLogWriter(l, OPTION_SETS[0]!));
    for (const record of FORGED) for (const write of writers) write(record);
    const common = `component=runs trace_id=${base.traceId} span_id=${base.spanId} trace_flags=01 prefect.run.id=${RUN_ID} prefect.run.type=flow`;
    assert.deepEqual(pretty.lines.map((l) => l.slice(12)), [
      ` INFO  STLOGGING: Flow run ${RUN_ID} (${FORGED_NAME_ESCAPED}) state transition: PENDING\\nFORGED-FROM -> RUNNING (state_name='Run\\rning', message=${MESSAGE_QUOTED})  ` +
        `${common} prefect.event.id=${FORGED[0]!.event.id} prefect.event.name=prefect.flow-run.Running occurred=2026-11-25T09:00:00.123456Z prefect.run.name=${FORGED_NAME_ESCAPED} prefect.state.type=RUNNING prefect.state.name=Run\\rning`,
      ` INFO  STLOGGING: Event my.event\\nFORGED\\x1b[2J (id=${FORGED[1]!.event.id}) on flow run ${RUN_ID}  ` +
        `${common} prefect.event.id=${FORGED[1]!.event.id} prefect.event.name=my.event\\nFORGED\\x1b[2J occurred=2026-11-25T09:00:00.123456Z prefect.run.name=${FORGED_NAME_ESCAPED}`,
    ]);
    // JSON escapes every control character itself; the message text is the one both formats show.
    assert.deepEqual(json.lines.map((l) => (JSON.parse(l) as { msg: string }).msg), [
      `STLOGGING: Flow run ${RUN_ID} (${FORGED_NAME}) state transition: PENDING\nFORGED-FROM -> RUNNING (state_name='Run\\rning', message=${MESSAGE_QUOTED})`,
      `STLOGGING: Event my.event\nFORGED\x1b[2J (id=${FORGED[1]!.event.id}) on flow run ${RUN_ID}`,
    ]);
  }
});

test('the pretty stream escapes control characters in any record: message, string values, values inside objects, keys', () => {
  const pretty = sink();
  const log = createLogger({ level: 'info', format: 'pretty', destination: pretty.stream });
  log.warn({ detail: 'resource.evil\nFORGED\x1b[2J is a number', nested: { 'k\u0085': 'a\u2028b\u009bc\u007f' }, n: 1 }, 'skipped\r malformed\tinput');
  assert.deepEqual(pretty.lines.map((l) => l.slice(12)), [
    String.raw` WARN  skipped\r malformed\tinput  detail=resource.evil\nFORGED\x1b[2J is a number nested={"k\x85":"a\u2028b\x9bc\x7f"} n=1`,
  ]);
});

test('with OTEL_LOGS_EXPORTER=otlp each record goes out as an OTel log record with the line\'s message, level, trace context and fields', () => {
  const own = sink();
  const emitted: ReadableLogRecord[] = [];
  const resource = resourceFromAttributes({ 'service.name': 'prefect' });
  const writer = createRunLogWriter(createLogger({ level: 'info', format: 'json', destination: own.stream }), { ...OPTION_SETS[1]!, otelLogs: { resource, emit: (r) => void emitted.push(r) } });
  const beforeMs = Date.now();
  for (const record of RECORDS) writer(record);
  const afterMs = Date.now();
  const lines = own.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const CORRELATION = new Set(['level', 'time', 'service', 'component', 'trace_id', 'span_id', 'trace_flags', 'msg']);
  // The whole record: timed at the event's `occurred`, observed when written, the severity as a number too, sampled.
  assert.deepEqual(
    emitted.map(({ hrTimeObserved: _observed, ...r }) => r),
    lines.map((l) => ({
      hrTime: usToHrTime(RECORDS[0]!.event.occurredUs),
      spanContext: { traceId: l.trace_id, spanId: l.span_id, traceFlags: TraceFlags.SAMPLED },
      severityNumber: l.level === 40 ? SeverityNumber.WARN : SeverityNumber.INFO,
      severityText: l.level === 40 ? 'WARN' : 'INFO',
      body: l.msg,
      resource,
      instrumentationScope: INSTRUMENTATION_SCOPE,
      attributes: Object.fromEntries(Object.entries(l).filter(([k]) => !CORRELATION.has(k))),
      droppedAttributesCount: 0,
    })),
  );
  for (const { hrTimeObserved: [s, ns] } of emitted) {
    const ms = s * 1000 + ns / 1e6;
    assert.ok(ms >= beforeMs && ms <= afterMs + 1, `observed at ${ms}, written between ${beforeMs} and ${afterMs}`);
  }
});

test('a STLOGGING line quotes at most LINE_STATE_MESSAGE_MAX_CHARS of a state message, marked as cut; the OTel log record keeps it whole', () => {
  const own = sink();
  const emitted: ReadableLogRecord[] = [];
  const resource = resourceFromAttributes({ 'service.name': 'prefect' });
  const writer = createRunLogWriter(createLogger({ level: 'info', format: 'json', destination: own.stream }), { ...OPTION_SETS[0]!, otelLogs: { resource, emit: (r) => void emitted.push(r) } });
  // A character outside the BMP on the cut is kept whole.
  const message = `${'x'.repeat(LINE_STATE_MESSAGE_MAX_CHARS - 1)}🚀${'y'.repeat(30_000)}`;
  const record: RunLogRecord = { ...RECORDS[1]!, run: { type: 'task', id: RUN_ID, name: 'load', root: false }, state: { ...RECORDS[1]!.state!, name: 'Failed', message } };
  writer(record);
  const line = JSON.parse(own.lines[0]!) as Record<string, unknown>;
  const quoted = `${'x'.repeat(LINE_STATE_MESSAGE_MAX_CHARS - 1)}🚀${TRUNCATED}`;
  assert.deepEqual(
    { msg: line.msg, body: emitted[0]!.body },
    {
      msg: `STLOGGING: Task run ${RUN_ID} (load) state transition: RUNNING -> FAILED (state_name='Failed', message='${quoted}')`,
      body: `STLOGGING: Task run ${RUN_ID} (load) state transition: RUNNING -> FAILED (state_name='Failed', message='${message}')`,
    },
  );
  assert.ok(Buffer.byteLength(own.lines[0]!) < LINE_MAX_BYTES);
});
