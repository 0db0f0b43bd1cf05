import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { excerpt, MAX_EVENT_BYTES, SKIP_REASONS, type SkipReason } from '../../src/model/event.js';
import type { TracingStats } from '../../src/stats.js';
import { startCli } from '../helpers/cli.js';
import { startOtlpReceiver, type AttrValue, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { DEEP_JSON_WRITABLE, DEEP_PAYLOAD_JSON, flowRunStateEvent, taskRunStateEvent } from '../helpers/prefect-events.js';
import { CORRUPTIONS, MALFORMED_FIRST, sentBeside, stateEventsByRun } from '../helpers/corrupt-events.js';
import { generateDemoWorkload, mulberry32 } from '../../src/source/demo-workload.js';

const dir = mkdtempSync(join(tmpdir(), 'prefect-otel-bad-input-'));
const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);
const RUNS = 40;
const BAD_PER_GOOD = 25;
const WARN_PER_REASON = 10;
const hex12 = (n: number): string => n.toString(16).padStart(12, '0');

/** Good runs: a flow with two tasks, one failing; runs overlap in time. */
function goodEvents(): { line: string; occurred: number }[] {
  const out: { line: string; occurred: number }[] = [];
  for (let i = 0; i < RUNS; i++) {
    const fr = `0198c7d2-5b1e-7a3c-9f10-${hex12(i)}`;
    const t = T0 + i * 700;
    const s = (type: string, name: string, message?: string) => ({ type, name, ...(message === undefined ? {} : { message }) });
    const task = (n: number, state: ReturnType<typeof s>, from: string, at: number) =>
      taskRunStateEvent({ taskRunId: `0198c7d2-6000-7abc-8def-${hex12(i * 2 + n)}`, taskRunName: `t-${n}`, taskKey: `step${n}-1a2b`, flowRunId: fr, ...FLOW, state, from, runCount: 1, occurred: at, id: `0198c7d2-eeee-7000-8000-${hex12(i * 10 + n * 2 + (state.type === 'RUNNING' ? 0 : 1))}` });
    const events = [
      flowRunStateEvent({ flowRunId: fr, flowRunName: `run-${i}`, ...FLOW, state: s('RUNNING', 'Running'), from: 'PENDING', runCount: 1, occurred: t, id: `0198c7d2-eeee-7000-8000-${hex12(i * 10 + 8)}` }),
      task(0, s('RUNNING', 'Running'), 'PENDING', t + 100),
      task(1, s('RUNNING', 'Running'), 'PENDING', t + 150),
      task(0, s('COMPLETED', 'Completed'), 'RUNNING', t + 900),
      task(1, s('FAILED', 'Failed', `ValueError: row ${i}`), 'RUNNING', t + 1200),
      flowRunStateEvent({ flowRunId: fr, flowRunName: `run-${i}`, ...FLOW, state: s('FAILED', 'Failed', 'a task failed'), from: 'RUNNING', runCount: 1, occurred: t + 1500, id: `0198c7d2-eeee-7000-8000-${hex12(i * 10 + 9)}` }),
    ];
    for (const e of events) out.push({ line: JSON.stringify({ type: 'event', event: e }), occurred: Date.parse(e.occurred) });
  }
  return out.sort((a, b) => a.occurred - b.occurred);
}

/** Malformed input of every kind the parser and classifier know, each line distinct. */
function badLine(n: number, occurredMs: number): { reason: SkipReason; line: string } {
  const iso = new Date(occurredMs).toISOString();
  const id = `0198c7d2-bad0-7000-8000-${hex12(n)}`;
  const res = (rid: string, labels = '') => `{"prefect.resource.id":"${rid}"${labels}}`;
  const kinds: (() => { reason: SkipReason; line: string })[] = [
    () => ({ reason: 'invalid_json', line: `{"id":"${id}","event": oops ${n}` }),
    () => ({ reason: 'invalid_json', line: `not json at all #${n}` }),
    () => ({ reason: 'not_an_object', line: `[${n},"event"]` }),
    () => ({ reason: 'not_an_object', line: String(n) }),
    () => ({ reason: 'not_an_event_message', line: `{"type":"ping","seq":${n}}` }),
    () => ({ reason: 'missing_field', line: `{"id":"${id}","event":"prefect.flow-run.Running","resource":${res('prefect.flow-run.x')}}` }),
    () => ({ reason: 'missing_field', line: `{"type":"event","event":"not an object ${n}"}` }),
    () => ({ reason: 'wrong_type', line: `{"id":${n},"event":"x","occurred":"${iso}","resource":${res('x')}}` }),
    // A label value that is not a string.
    () => ({ reason: 'wrong_type', line: `{"id":"${id}","event":"prefect.flow-run.Running","occurred":"${iso}","resource":${res(`prefect.flow-run.${id}`, `,"prefect.run-count":${n}`)}}` }),
    () => ({ reason: 'wrong_type', line: `{"id":"${id}","event":"x","occurred":"${iso}","resource":${res('x')},"related":{"n":${n}}}` }),
    () => ({ reason: 'bad_timestamp', line: `{"id":"${id}","event":"x","occurred":"soon-${n}","resource":${res('x')}}` }),
    () => ({ reason: 'bad_id', line: `{"id":"run-${n}","event":"x","occurred":"${iso}","resource":${res('x')}}` }),
    () => ({ reason: 'bad_run_id', line: `{"id":"${id}","event":"prefect.flow-run.Running","occurred":"${iso}","resource":${res(`prefect.flow-run.not-a-uuid-${n}`)}}` }),
    () => ({ reason: 'unknown_state', line: `{"id":"${id}","event":"prefect.flow-run.Exploded","occurred":"${iso}","resource":${res(`prefect.flow-run.0198c7d2-bad1-7000-8000-${hex12(n)}`, ',"prefect.state-type":"EXPLODED","prefect.state-name":"Exploded"')}}` }),
  ];
  return kinds[n % kinds.length]!();
}

function hugeLine(n: number): { reason: SkipReason; line: string } {
  const blob = 'x'.repeat(MAX_EVENT_BYTES + 1000);
  return { reason: 'too_large', line: `{"id":"0198c7d2-bad2-7000-8000-${hex12(n)}","event":"x","occurred":"2026-11-20T09:00:00Z","resource":{"prefect.resource.id":"x"},"payload":{"blob":"${blob}"}}` };
}

/** A custom event on a good run whose payload is nested deeper than JSON.stringify can write (JSON.parse reads it). */
function deepLine(n: number, goodLine: string, occurredMs: number): { reason: SkipReason; line: string } {
  const flowRun = /prefect\.flow-run\.[0-9a-f-]{36}/.exec(goodLine)![0];
  const event = { id: `0198c7d2-bad3-7000-8000-${hex12(n)}`, event: 'acme.deep', occurred: new Date(occurredMs).toISOString(), resource: { 'prefect.resource.id': flowRun }, payload: { x: 0 } };
  return { reason: 'too_deep', line: JSON.stringify(event).replace('{"x":0}', DEEP_PAYLOAD_JSON) };
}

function byId(spans: ReceivedSpan[]): ReceivedSpan[] {
  return [...spans].sort((a, b) => a.spanId.localeCompare(b.spanId));
}


/** `prefect-otel replay <file>` (no Prefect server to look parents up) to a receiver: its result and the spans the receiver decoded, by id. */
async function replayToReceiver(file: string) {
  const receiver = await startOtlpReceiver();
  const r = await startCli(['replay', file], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_OTEL_LOG_LEVEL: 'info' }).result;
  await receiver.close();
  return { r, spans: byId(receiver.spans()) };
}
test('a flood of malformed lines of every kind between good runs: the process stays up, the good spans are exactly those of the good events alone, every skip is counted by reason and logged a bounded number of times with an excerpt', async () => {
  const good = goodEvents();
  const bad: { reason: SkipReason; line: string }[] = [];
  const flood: string[] = [];
  let n = 0;
  good.forEach((g, i) => {
    flood.push(g.line);
    for (let k = 0; k < BAD_PER_GOOD; k++) {
      const b = badLine(n++, g.occurred);
      bad.push(b);
      flood.push(b.line);
    }
    if (i % 80 === 40) {
      const h = hugeLine(i);
      bad.push(h);
      flood.push(h.line);
    }
    if (i % 20 === 10 && !DEEP_JSON_WRITABLE) {
      const d = deepLine(i, g.line, g.occurred);
      bad.push(d);
      flood.push(d.line);
    }
  });
  const goodFile = join(dir, 'good.jsonl');
  const floodFile = join(dir, 'flood.jsonl');
  writeFileSync(goodFile, `# ${RUNS} runs\n${good.map((g) => g.line).join('\n')}\n`);
  writeFileSync(floodFile, `# the same runs with ${bad.length} malformed lines between their events\n${flood.join('\n')}\n`);

  const alone = await replayToReceiver(goodFile);
  const flooded = await replayToReceiver(floodFile);
  assert.equal(alone.r.code, 0, alone.r.stderr);
  assert.equal(flooded.r.code, 0, flooded.r.stderr);
  assert.equal(alone.spans.length, RUNS * 3);
  assert.deepEqual(flooded.spans, alone.spans, 'the malformed lines change nothing on the good spans');

  const expected: Partial<Record<SkipReason, number>> = {};
  for (const b of bad) expected[b.reason] = (expected[b.reason] ?? 0) + 1;
  // Every skip reason is exercised (too_deep only where JSON.stringify cannot write deep values).
  const reasons = SKIP_REASONS.filter((r) => !(r === 'too_deep' && DEEP_JSON_WRITABLE));
  assert.deepEqual(Object.keys(expected).sort(), [...reasons].sort(), 'every skip reason is exercised');
  assert.ok(bad.length >= 5_000, `${bad.length} malformed lines`);
  const inOrder = reasons.map((r) => [r, expected[r]!] as const);
  assert.match(flooded.r.stderr, new RegExp(`skipped: ${bad.length} \\(${inOrder.map(([r, c]) => `${r}: ${c}`).join(', ')}\\)`));
  const stats = flooded.r.stdout.split('\n').filter((l) => l.includes('"msg":"stats"')).map((l) => JSON.parse(l) as TracingStats);
  assert.deepEqual(stats.at(-1)!.events, { received: good.length + bad.length, accepted: good.length, duplicates: 0, unrelated: 0, skipped: Object.fromEntries(inOrder) });

  const warned = flooded.r.stdout.split('\n').filter((l) => l.includes('skipped malformed input')).map((l) => JSON.parse(l) as { level: number; reason: SkipReason; excerpt: string });
  const want = reasons.flatMap((reason) => bad.filter((b) => b.reason === reason).slice(0, WARN_PER_REASON).map((b) => ({ reason, excerpt: excerpt(b.line) })));
  assert.deepEqual(
    warned.map((w) => ({ reason: w.reason, excerpt: w.excerpt })).sort((a, b) => SKIP_REASONS.indexOf(a.reason) - SKIP_REASONS.indexOf(b.reason)),
    want,
    'at most 10 warnings per reason, each with an excerpt of the line',
  );
  assert.ok(warned.every((w) => w.level === 40 && w.excerpt.length <= 161));
  assert.ok(flooded.r.stdout.length < alone.r.stdout.length + 200_000, 'the log does not grow with the flood');
});

test('huge malformed lines give short warnings: the detail repeats at most a clipped piece of the input', async () => {
  const longKey = `k${'e'.repeat(1_500_000)}`;
  const good = JSON.parse(goodEvents()[0]!.line) as { event: Record<string, unknown> };
  const lines = [
    JSON.stringify({ ...good.event, resource: { 'prefect.resource.id': 'x', [longKey]: 5 } }),
    `{"type":"event${'x'.repeat(1_500_000)}"}`,
    `{"type":${'['.repeat(100_000)}${']'.repeat(100_000)}}`,
  ];
  const file = join(dir, 'huge-malformed.jsonl');
  writeFileSync(file, `${lines.join('\n')}\n`);
  const r = await startCli(['replay', file], { PREFECT_API_URL: 'http://127.0.0.1:9/api', OTEL_TRACES_EXPORTER: 'none', PREFECT_OTEL_LOG_LEVEL: 'info', PREFECT_OTEL_STATS_INTERVAL_MS: '0' }).result;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /skipped: 3 \(not_an_event_message: 2, wrong_type: 1\)/);
  const warned = r.stdout.split('\n').filter((l) => l.includes('malformed') || l.includes('could not be processed'));
  assert.deepEqual(
    warned.map((l) => {
      const o = JSON.parse(l) as { msg: string; reason: string; detail: string; excerpt: string };
      return { msg: o.msg, reason: o.reason, detail: o.detail, excerpt: o.excerpt, short: l.length < 600 };
    }),
    [
      { msg: 'skipped malformed input', reason: 'wrong_type', detail: `resource.k${'e'.repeat(59)}… is a number, labels must be strings`, excerpt: excerpt(lines[0]!), short: true },
      { msg: 'skipped malformed input', reason: 'not_an_event_message', detail: `message type "event${'x'.repeat(55)}"…`, excerpt: excerpt(lines[1]!), short: true },
      { msg: 'skipped malformed input', reason: 'not_an_event_message', detail: 'message type an array', excerpt: excerpt(lines[2]!), short: true },
    ],
  );
});

/** Every attribute as OTLP carried it: a string, a boolean, a finite number, or an array of strings. */
function assertWellTyped(spans: ReceivedSpan[]): void {
  const check = (attrs: Record<string, AttrValue>, where: string): void => {
    for (const [k, v] of Object.entries(attrs)) {
      const ok = typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)) || (Array.isArray(v) && v.every((x) => typeof x === 'string'));
      assert.ok(ok, `${where}: ${k} = ${JSON.stringify(v)}`);
    }
  };
  for (const s of spans) {
    check(s.attributes, `span ${s.spanId}`);
    for (const e of s.events) check(e.attributes, `span ${s.spanId} event ${e.name}`);
    for (const l of s.links) check(l.attributes, `span ${s.spanId} link`);
  }
}

test('replay of a workload with malformed frames of every structural kind beside two runs\' events: the spans the collector gets are those of the workload alone, each frame is counted under its reason and the counts add up, each warning carries a bounded excerpt of its line', async () => {
  const { events } = generateDemoWorkload({ seed: 11, startMs: Date.UTC(2025, 0, 6, 9, 0, 0) });
  const runs = [...stateEventsByRun(events).values()];
  const kindOf = (states: number[]): string => String(((events[states[0]!]!.resource as Record<string, unknown>)['prefect.resource.id'])).slice(0, 17);
  const task = runs.find((states) => kindOf(states) === 'prefect.task-run.')!;
  const flow = runs.find((states) => kindOf(states) === 'prefect.flow-run.')!;
  const malformed = [...CORRUPTIONS.filter((c) => c.outcome !== 'kept'), ...MALFORMED_FIRST];
  const fuzzed = sentBeside(events, [...task, ...flow], [...malformed, ...malformed], mulberry32(11)).map((l) => (typeof l === 'string' ? l : JSON.stringify(l)));
  const goodFile = join(dir, 'workload.jsonl');
  const fuzzFile = join(dir, 'workload-fuzzed.jsonl');
  writeFileSync(goodFile, `${events.map((e) => JSON.stringify(e)).join('\n')}\n`);
  writeFileSync(fuzzFile, `${fuzzed.join('\n')}\n`);

  const alone = await replayToReceiver(goodFile);
  const fuzz = await replayToReceiver(fuzzFile);
  assert.equal(alone.r.code, 0, alone.r.stderr);
  assert.equal(fuzz.r.code, 0, fuzz.r.stderr);
  assert.ok(alone.spans.length > 40, `${alone.spans.length} spans`);
  assert.deepEqual(fuzz.spans, alone.spans, 'the malformed frames change no span');
  assertWellTyped(fuzz.spans);

  const outcomes = [...malformed, ...malformed].map((c) => c.outcome);
  const skipped = SKIP_REASONS.map((reason) => [reason, outcomes.filter((o) => o === reason).length] as const).filter(([, n]) => n > 0);
  const skippedTotal = skipped.reduce((n, [, k]) => n + k, 0);
  const duplicates = outcomes.filter((o) => o === 'duplicate').length;
  // Every line is one frame: each is an event read (taken, a duplicate, or about no run) or a skip.
  assert.match(fuzz.r.stderr, new RegExp(`events read: ${fuzzed.length - skippedTotal} \\(${fuzzed.length} lines, ${duplicates} duplicates, 0 not about a run\\)`));
  assert.match(fuzz.r.stderr, new RegExp(`skipped: ${skippedTotal} \\(${skipped.map(([r, n]) => `${r}: ${n}`).join(', ')}\\)`));
  const stats = fuzz.r.stdout.split('\n').filter((l) => l.includes('"msg":"stats"')).map((l) => JSON.parse(l) as TracingStats);
  assert.deepEqual(stats.at(-1)!.events, { received: fuzzed.length, accepted: events.length, duplicates, unrelated: 0, skipped: Object.fromEntries(skipped) });

  const warned = fuzz.r.stdout.split('\n').filter((l) => l.includes('skipped malformed input')).map((l) => JSON.parse(l) as { reason: SkipReason; excerpt: string; detail: string });
  const excerpts = new Set(fuzzed.map((l) => excerpt(l)));
  assert.deepEqual(
    Object.fromEntries(SKIP_REASONS.map((reason) => [reason, warned.filter((w) => w.reason === reason).length]).filter(([, n]) => n !== 0)),
    Object.fromEntries(skipped.map(([reason, n]) => [reason, Math.min(n, WARN_PER_REASON)])),
    'at most 10 warnings per reason',
  );
  for (const w of warned) {
    assert.ok(excerpts.has(w.excerpt) && w.excerpt.length <= 161, `an excerpt of a line of the input, at most 161 characters: ${w.excerpt}`);
    assert.ok(w.detail.length <= 200, `a short detail: ${w.detail}`);
  }
  assert.doesNotMatch(fuzz.r.stdout, /could not be processed/);
});
