import assert from 'node:assert/strict';
import { appendFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveConfig } from '../../src/config.js';
import { errorText } from '../../src/errors.js';
import { createDelivery } from '../../src/export/delivery.js';
import { estimateSpanBytes } from '../../src/export/spans.js';
import { createLogger } from '../../src/log/logger.js';
import { spanIdForRun } from '../../src/model/ids.js';
import type { SpanRecord } from '../../src/model/span-record.js';
import { createPipeline, type Pipeline } from '../../src/pipeline.js';
import { generateDemoWorkload } from '../../src/source/demo-workload.js';
import { loadState, StateWriter } from '../../src/state/persisted.js';
import { createStateStore } from '../../src/state/state-store.js';
import { progressSeenMeanwhile } from '../helpers/meanwhile.js';

const workload = generateDemoWorkload({ seed: 11, flows: 12 });
const events = workload.events;

const quiet = createLogger({ level: 'silent', format: 'json' });

/** What `fn` throws. */
function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('did not throw');
}

function pipeline(): Pipeline {
  return createPipeline({ config: resolveConfig({ tracesExporter: 'none' }, {}), logger: quiet, clock: 'event', delivery: null });
}

/** Feed `slice` of the workload's events to `p`. */
function feed(p: Pipeline, slice: readonly Record<string, unknown>[]): void {
  for (const e of slice) p.ingest(JSON.stringify(e));
}

/**
 * Everything the state holds, as JSON carries it (no undefined members), without an open run's
 * clock readings: a restored run's timers start again from the restore.
 */
function whole(p: Pipeline): unknown {
  const text = JSON.stringify({ cursorUs: p.cursorUs, dedupe: p.dedupe.toJSON(), tracker: p.tracker.snapshot() });
  return JSON.parse(text, (key, value: unknown) => (key === 'lastActivityMs' || key === 'terminalAtMs' ? undefined : value));
}

/** The pipeline's own clock (event time): a restore at this time keeps every id it remembered. */
const clockOf = (p: Pipeline): number => p.dedupe.toJSON().at(-1)?.[1] ?? 0;

describe('state journal', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prefect-otel-journal-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A state file under its own directory, a fresh pipeline, and a writer saving it there. */
  const setUp = (name: string, journalMinBytes?: number) => {
    const path = join(dir, name, 'state.json');
    const store = createStateStore(path);
    const a = pipeline();
    return { path, store, a, writer: new StateWriter(store, a, journalMinBytes) };
  };

  it('a save appends only what was added since the last one, and loading file + journal gives back the whole state', async () => {
    const { path, store, a, writer } = setUp('resume');
    const third = Math.floor(events.length / 3);
    feed(a, events.slice(0, third));
    await writer.save(false);
    const fileAfterFirst = await readFile(path, 'utf8');
    assert.deepEqual(await readdir(join(dir, 'resume')), ['state.json']);

    feed(a, events.slice(third, 2 * third));
    await writer.save(false);
    feed(a, events.slice(2 * third));
    await writer.save(false);

    // The file was not rewritten; the journal has one line per save, each with only the new ids.
    assert.equal(await readFile(path, 'utf8'), fileAfterFirst);
    const lines = (await readFile(store.journalPath, 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l) as { dedupe: [string, number][] });
    assert.equal(lines.length, 2);
    assert.deepEqual(lines.map((l) => l.dedupe.map(([id]) => id)), [events.slice(third, 2 * third).map((e) => e.id), events.slice(2 * third).map((e) => e.id)]);

    const b = pipeline();
    const restored = await loadState(store, b, clockOf(a), quiet);
    assert.equal(restored?.journalLines, 2);
    assert.deepEqual(whole(b), whole(a));
  });

  it('a state file holds the state as it was when its save was called, though events arrive while it is written', async () => {
    const { path, a, writer } = setUp('moving');
    const half = Math.floor(events.length / 2);
    feed(a, events.slice(0, half));
    assert.ok(a.tracker.snapshotChanging().open.length > 0, 'no run is open half-way');
    const saving = writer.save(false);
    const atCall = (): unknown => JSON.parse(JSON.stringify({ cursorUs: a.cursorUs, dedupe: a.dedupe.toJSON(), tracker: a.tracker.snapshot() }));
    const expected = atCall();
    // The runs open at the call go on changing (span events, names, tags) while the file is written.
    feed(a, events.slice(half));
    await saving;
    assert.notDeepEqual(atCall(), expected);
    const file = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    assert.deepEqual({ cursorUs: file.cursorUs, dedupe: file.dedupe, tracker: file.tracker }, expected);
  });

  it('a journal line is made a slice at a time while it is written, letting other work run in between', async () => {
    const path = join(dir, 'large-line', 'state.json');
    const store = createStateStore(path);
    // Spans waiting for a collector that is down; each counts its own serialisation, so other work can see how far the save has got.
    let serialised = 0;
    class Counted {
      constructor(readonly spanId: string) {}
      toJSON(): { spanId: string } {
        serialised += 1;
        return { spanId: this.spanId };
      }
    }
    const delivery = createDelivery<SpanRecord>({
      name: 'traces', sizeOf: () => 1, maxItems: 1_000_000, maxBytes: 1 << 30, batchSize: 1_000_000, scheduleDelayMs: 3_600_000,
      send: () => Promise.resolve({ ok: false, retryable: true, error: 'down' }),
    });
    const a = createPipeline({ config: resolveConfig({}, {}), logger: quiet, clock: 'event', delivery });
    const writer = new StateWriter(store, a, 1 << 30);
    feed(a, events.slice(0, 10));
    await writer.save(false); // the first save writes the file
    const n = 200_000;
    for (let i = 0; i < n; i++) delivery.enqueue(new Counted(i.toString(16).padStart(16, '0')) as unknown as SpanRecord);
    serialised = 0;
    const { result: kept, seen: seenMeanwhile } = await progressSeenMeanwhile(() => writer.save(false), () => serialised);
    assert.equal(kept, n);
    assert.equal(serialised, n);
    assert.ok(seenMeanwhile.some((c) => c > 0 && c < n), `no other work ran while the journal line was serialised (counts seen: ${[...new Set(seenMeanwhile)].join(', ')})`);
    const lines = (await readFile(store.journalPath, 'utf8')).split('\n');
    assert.deepEqual([lines.length, lines.at(-1), (JSON.parse(lines[0]!) as { spans: unknown[] }).spans.length], [2, '', n]);
    await a.shutdown(0);
  });

  it('a line cut short by a crash loses only that save; lines of an older file are ignored', async () => {
    const { store, a, writer } = setUp('crash');
    const half = Math.floor(events.length / 2);
    feed(a, events.slice(0, half));
    await writer.save(false);
    feed(a, events.slice(half, half + 40));
    await writer.save(false);
    const expected = whole(a);
    // The next save dies half-way through its line; a line from another generation sits before it.
    const stale = { generation: 1, savedAt: new Date().toISOString(), cursorUs: 1, dedupe: [['0198c7d2-0000-7000-8000-000000000000', 1]], finished: [], tracker: { open: [], owners: [], waiting: [] } };
    await appendFile(store.journalPath, `${JSON.stringify(stale)}\n{"generation":${Date.now()},"savedAt":"2026-11-`);

    const b = pipeline();
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void lines.push(l) } });
    const restored = await loadState(store, b, clockOf(a), log);
    assert.equal(restored?.journalLines, 1);
    assert.deepEqual(whole(b), expected);
    assert.deepEqual(lines.map((l) => (JSON.parse(l) as { msg: string }).msg), ['state journal line cut short; ignored']);
  });

  it('once the journal outgrows the file, the next save rewrites the file and drops the journal', async () => {
    const { path, store, a, writer } = setUp('compact', 0);
    const generations: number[] = [];
    const generation = async (): Promise<number> => (JSON.parse(await readFile(path, 'utf8')) as { generation: number }).generation;
    /** After each save: whether it rewrote the file (a new generation), the journal's size before its last line, and the file's size. */
    const saves: { rewrote: boolean; journalBefore: number | undefined; file: number }[] = [];
    for (let i = 0; i < events.length; i += 50) {
      feed(a, events.slice(i, i + 50));
      await writer.save(false);
      generations.push(await generation());
      const journal = await readFile(store.journalPath).catch(() => undefined);
      const journalBefore = journal === undefined ? undefined : journal.subarray(0, journal.length - 1).lastIndexOf(0x0a) + 1;
      saves.push({ rewrote: generations.length === 1 || generations.at(-1) !== generations.at(-2), journalBefore, file: (await stat(path)).size });
    }
    // Some saves appended, some rewrote the file (a new generation each time). A line is appended
    // only while the journal before it is no larger than the file (the line itself may be larger than
    // the last); a rewrite drops the journal.
    assert.ok(saves.some((x) => !x.rewrote), 'no save appended');
    assert.ok(saves.filter((x) => x.rewrote).length > 1, 'the file was never rewritten');
    assert.deepEqual(
      saves.filter((x) => (x.rewrote ? x.journalBefore !== undefined : x.journalBefore === undefined || x.journalBefore > x.file)),
      [],
      'a rewrite drops the journal; an append keeps the journal before it within the size of the file',
    );
    const b = pipeline();
    await loadState(store, b, clockOf(a), quiet);
    assert.deepEqual(whole(b), whole(a));
  });

  it('after a failed write the next save writes the whole state', async () => {
    const path = join(dir, 'failed', 'state.json');
    const real = createStateStore(path);
    let failNext = false;
    const store = {
      save: (data: unknown) => real.save(data),
      append: (text: string) => (failNext ? Promise.reject(new Error('ENOSPC: no space left on device')) : real.append(text)),
    };
    const a = pipeline();
    const writer = new StateWriter(store, a);
    const third = Math.floor(events.length / 3);
    feed(a, events.slice(0, third));
    await writer.save(false);
    feed(a, events.slice(third, 2 * third));
    failNext = true;
    await assert.rejects(writer.save(false), /ENOSPC/);
    failNext = false;
    feed(a, events.slice(2 * third));
    await writer.save(false);
    assert.deepEqual(await readdir(join(dir, 'failed')), ['state.json']);
    const b = pipeline();
    await loadState(real, b, clockOf(a), quiet);
    assert.deepEqual(whole(b), whole(a));
  });

  it('a state file written before the journal (version 1) still loads, and a journal beside it is not applied', async () => {
    const path = join(dir, 'v1', 'state.json');
    const store = createStateStore(path);
    const a = pipeline();
    feed(a, events);
    const v1 = { version: 1, savedAt: new Date().toISOString(), cursorUs: a.cursorUs, dedupe: a.dedupe.toJSON(), tracker: a.tracker.snapshot(), pendingSpans: [] };
    await store.save(v1);
    const stray = { generation: 0, savedAt: v1.savedAt, cursorUs: 1, dedupe: [['0198c7d2-0000-7000-8000-000000000000', 1]], finished: [], tracker: { open: [], owners: [], waiting: [] } };
    await appendFile(store.journalPath, `${JSON.stringify(stray)}\n`);
    const b = pipeline();
    const restored = await loadState(store, b, clockOf(a), quiet);
    assert.equal(restored?.journalLines, 0);
    assert.deepEqual(whole(b), whole(a));
  });
  it('every save holds the spans the collector has not taken: those queued since the last save are appended, those delivered since are named gone', async () => {
    const path = join(dir, 'spans', 'state.json');
    const store = createStateStore(path);
    /** A collector that is up or down, behind a real delivery queue. */
    const withCollector = () => {
      const collector = { up: false };
      const delivery = createDelivery<SpanRecord>({
        name: 'traces', sizeOf: () => 100, maxItems: 100, maxBytes: 1 << 20, batchSize: 100, scheduleDelayMs: 1, initialBackoffMs: 1, maxBackoffMs: 1,
        send: () => Promise.resolve(collector.up ? { ok: true } : { ok: false, retryable: true, error: 'down' }),
      });
      const p = createPipeline({ config: resolveConfig({}, {}), logger: quiet, clock: 'event', delivery });
      return { collector, delivery, p };
    };
    const span = (n: number): SpanRecord => ({
      traceId: '0198c7d25b1e7a3c9f102b3c4d5e6f70', spanId: `00000000000000${String(n).padStart(2, '0')}`, parentSpanId: undefined, name: 'etl', kind: 'server',
      startUs: n, endUs: n + 1, status: { code: 'ok' }, attributes: { 'prefect.run.id': `run-${n}` }, events: [], links: [],
      run: { id: `run-${n}`, type: 'flow', name: undefined, attempt: 0, finalState: { type: 'COMPLETED', name: 'Completed' }, incomplete: false },
      // One past OpenTelemetry's count limits: what was dropped is counted after a restart too.
      ...(n === 4 ? {
        events: [{ name: 'Completed', timeUs: n + 1, attributes: { 'prefect.state.type': 'COMPLETED' }, droppedAttributes: 5 }],
        links: [{ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 0, remote: true, attributes: {}, droppedAttributes: 1 }],
        droppedAttributes: 12, droppedLinks: 2,
      } : {}),
    });
    const a = withCollector();
    const writer = new StateWriter(store, a.p);
    a.delivery.enqueue(span(1));
    a.delivery.enqueue(span(2));
    assert.equal((await a.delivery.flush(50)).pending, 2);
    assert.equal(await writer.save(false), 2);
    a.collector.up = true;
    assert.equal((await a.delivery.flush(5_000)).ok, true);
    a.collector.up = false;
    a.delivery.enqueue(span(3));
    await writer.save(false);
    a.delivery.enqueue(span(4));
    assert.equal(await writer.save(false), 2);
    const lines = (await readFile(store.journalPath, 'utf8')).trimEnd().split('\n').map((l) => JSON.parse(l) as { spans: SpanRecord[]; gone: string[] });
    assert.deepEqual(lines.map((l) => [l.spans.map((s) => s.spanId), l.gone]), [[[span(3).spanId], [span(1).spanId, span(2).spanId]], [[span(4).spanId], []]]);

    // Killed here: a new process sends the two spans not delivered, and not the two that were.
    const b = withCollector();
    assert.equal((await loadState(store, b.p, 0, quiet))?.pendingSpans, 2);
    assert.deepEqual(b.delivery.peekQueued(), JSON.parse(JSON.stringify([span(3), span(4)])));
    await a.p.shutdown(0);
    await b.p.shutdown(0);
  });

  it('an open run or a waiting span damaged inside (an event, a state, a link that is not one, a link\'s flags that are not a byte) is left out and counted; every other one is restored and sent', async () => {
    const path = join(dir, 'damaged-inside', 'state.json');
    const store = createStateStore(path);
    /** A pipeline behind a real delivery queue with the exporter's own size estimate; `sent`: the spans the collector took (id and name). */
    const withCollector = (up: boolean) => {
      const sent: string[] = [];
      const delivery = createDelivery<SpanRecord>({
        name: 'traces', sizeOf: estimateSpanBytes, maxItems: 10_000, maxBytes: 1 << 26, batchSize: 10_000, scheduleDelayMs: 1, initialBackoffMs: 1, maxBackoffMs: 1,
        send: (batch) => {
          if (!up) return Promise.resolve({ ok: false, retryable: true, error: 'down' });
          for (const span of batch) sent.push(`${span.spanId} ${span.name}`);
          return Promise.resolve({ ok: true });
        },
      });
      return { sent, p: createPipeline({ config: resolveConfig({}, {}), logger: quiet, clock: 'event', delivery }) };
    };
    // Half the workload with the collector down: finished runs wait in the queue, the others are open.
    const a = withCollector(false);
    feed(a.p, events.slice(0, Math.floor(events.length / 2)));
    await new StateWriter(store, a.p).save(true);
    await a.p.shutdown(0);
    type Run = { ref: { id: string }; attempt: number; events: unknown[]; latest: unknown };
    type Span = { spanId: string; name: string; events: unknown[]; links: unknown[] };
    const good = await readFile(path, 'utf8');
    const state = JSON.parse(good) as { tracker: { open: Run[] }; pendingSpans: Span[] };
    const [open, pending] = [state.tracker.open, state.pendingSpans];
    assert.ok(open.length >= 3 && pending.length >= 4, `${open.length} open runs, ${pending.length} waiting spans`);
    open[0]!.events[0] = null;
    open[1]!.latest = 5;
    pending[0]!.events = [null];
    pending[1]!.links = [{ traceId: 'not a trace id', spanId: '0123456789abcdef', attributes: {} }];
    pending[2]!.links = [{ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: '0123456789abcdef', traceFlags: 'sampled', remote: true, attributes: {} }];
    await writeFile(path, JSON.stringify(state));

    const lines: string[] = [];
    const log = createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void lines.push(l) } });
    const b = withCollector(true);
    const restored = await loadState(store, b.p, clockOf(a.p), log);
    assert.deepEqual([restored?.openRuns, restored?.pendingSpans], [open.length - 2, pending.length - 3]);
    assert.deepEqual(lines.map((l) => { const r = JSON.parse(l) as { msg: string; left: number }; return [r.msg, r.left]; }), [['state file entries that are not what they should be were left out', 5]]);
    // The runs still open end as incomplete, each with its span, with the waiting spans.
    b.p.tick(clockOf(a.p));
    await b.p.finish('end of test', 0);
    assert.equal((await b.p.flush(5_000)).ok, true);
    // What the undamaged state gives, but for the five damaged entries' spans.
    const c = withCollector(true);
    await writeFile(path, good);
    await loadState(store, c.p, clockOf(a.p), quiet);
    c.p.tick(clockOf(a.p));
    await c.p.finish('end of test', 0);
    assert.equal((await c.p.flush(5_000)).ok, true);
    const damaged = new Set([pending[0]!.spanId, pending[1]!.spanId, pending[2]!.spanId, spanIdForRun(open[0]!.ref.id, open[0]!.attempt), spanIdForRun(open[1]!.ref.id, open[1]!.attempt)]);
    assert.equal(c.sent.filter((s) => damaged.has(s.split(' ')[0]!)).length, 5);
    assert.deepEqual(b.sent.sort(), c.sent.filter((s) => !damaged.has(s.split(' ')[0]!)).sort());
    await c.p.shutdown(0);
    await b.p.shutdown(0);
  });

  it('an open run whose names are not text (a task key, a run name, a traceparent that is a number or an object) is left out and counted, not restored to fail when its span is built; every other one is restored and ends as it would', async () => {
    const path = join(dir, 'damaged-meta', 'state.json');
    const store = createStateStore(path);
    const withSpans = () => {
      const spans: SpanRecord[] = [];
      return { spans, p: createPipeline({ config: resolveConfig({ tracesExporter: 'none' }, {}), logger: quiet, clock: 'event', delivery: null, onSpan: (s) => spans.push(s) }) };
    };
    const a = withSpans();
    feed(a.p, events.slice(0, Math.floor(events.length / 2)));
    await new StateWriter(store, a.p).save(true);
    type Run = { ref: { id: string; type: string }; attempt: number; meta: Record<string, unknown> };
    const good = await readFile(path, 'utf8');
    const state = JSON.parse(good) as { tracker: { open: Run[] } };
    const tasks = state.tracker.open.filter((r) => typeof r.meta.taskKey === 'string');
    const flow = state.tracker.open.find((r) => r.ref.type === 'flow');
    assert.ok(tasks.length >= 2 && flow !== undefined, `${tasks.length} open task runs`);
    tasks[0]!.meta.taskKey = 42;
    tasks[1]!.meta.traceparent = 7;
    flow.meta.name = { text: 'not a name' };
    await writeFile(path, JSON.stringify(state));

    const lines: string[] = [];
    const log = createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void lines.push(l) } });
    const b = withSpans();
    const restored = await loadState(store, b.p, clockOf(a.p), log);
    assert.equal(restored?.openRuns, state.tracker.open.length - 3);
    assert.deepEqual(lines.map((l) => { const r = JSON.parse(l) as { msg: string; left: number }; return [r.msg, r.left]; }), [['state file entries that are not what they should be were left out', 3]]);
    b.p.tick(clockOf(a.p));
    await b.p.finish('end of test');
    // What the undamaged state gives, but for the three damaged runs' spans.
    const c = withSpans();
    await writeFile(path, good);
    await loadState(store, c.p, clockOf(a.p), quiet);
    c.p.tick(clockOf(a.p));
    await c.p.finish('end of test');
    const damaged = new Set([...tasks.slice(0, 2), flow].map((r) => spanIdForRun(r.ref.id, r.attempt)));
    assert.equal(c.spans.filter((s) => damaged.has(s.spanId)).length, 3);
    assert.deepEqual(b.spans.map((s) => s.spanId).sort(), c.spans.map((s) => s.spanId).filter((id) => !damaged.has(id)).sort());
  });

  it('time while no process watched does not count: after an outage longer than the dedupe window the ids saved are still known, their times moved on by the outage; a save stamped ahead of the clock is no outage', async () => {
    const path = join(dir, 'outage', 'state.json');
    const store = createStateStore(path);
    await mkdir(join(dir, 'outage'), { recursive: true });
    const windowMs = resolveConfig({ tracesExporter: 'none' }, {}).model.dedupeWindowMs;
    const savedMs = Date.UTC(2026, 0, 5, 12);
    const ids = ['0198c7d2-eeee-7000-8000-000000000001', '0198c7d2-eeee-7000-8000-000000000002'];
    const restoreAt = async (savedAt: number, nowMs: number): Promise<[string, number][]> => {
      const body = { version: 2, generation: 1, savedAt: new Date(savedAt).toISOString(), cursorUs: null, dedupe: [[ids[0], savedMs - 60_000], [ids[1], savedMs - 1_000]], tracker: { open: [], finished: [], owners: [], waiting: [] }, pendingSpans: [] };
      await writeFile(path, JSON.stringify(body));
      const b = pipeline();
      await loadState(store, b, nowMs, quiet);
      return b.dedupe.toJSON();
    };
    const outageMs = windowMs + 3_600_000;
    assert.deepEqual(await restoreAt(savedMs, savedMs + outageMs), [[ids[0], savedMs - 60_000 + outageMs], [ids[1], savedMs - 1_000 + outageMs]]);
    // Saved "later" than now (a clock set back): no outage, the times stay as saved.
    assert.deepEqual(await restoreAt(savedMs + 5_000, savedMs + 1_000), [[ids[0], savedMs - 60_000], [ids[1], savedMs - 1_000]]);
  });

  it('a state file of a newer format is moved aside with a message naming its version; one of no known format says that', async () => {
    const path = join(dir, 'versions', 'state.json');
    const store = createStateStore(path);
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void lines.push(l) } });
    const body = { savedAt: new Date(0).toISOString(), cursorUs: null, dedupe: [], tracker: { open: [], finished: [], owners: [], waiting: [] }, pendingSpans: [] };
    const said = [];
    for (const version of [3, 0]) {
      await mkdir(join(dir, 'versions'), { recursive: true });
      await writeFile(path, JSON.stringify({ version, ...body }));
      lines.length = 0;
      assert.equal(await loadState(store, pipeline(), 0, log), undefined);
      const r = JSON.parse(lines[0]!) as { msg: string; formatVersion: number; path: string; movedTo: string };
      assert.ok(r.movedTo.startsWith(`${path}.bad-`));
      said.push([lines.length, r.msg, r.formatVersion, r.path]);
      await rm(r.movedTo);
    }
    assert.deepEqual(said, [
      [1, 'state file written by a newer prefect-otel (format version 3; this one reads versions up to 2); starting without it', 3, path],
      [1, 'state file has an unknown format; starting without it', 0, path],
    ]);
  });

  it('open runs saved under a higher bound than the one in force are ended at the restore, oldest first, down to the bound', async () => {
    const path = join(dir, 'lower-bound', 'state.json');
    const store = createStateStore(path);
    const a = pipeline();
    feed(a, events.slice(0, Math.floor(events.length / 2)));
    await new StateWriter(store, a).save(true);
    // Only the open runs: events waiting for a lookup would open runs of their own.
    const state = JSON.parse(await readFile(path, 'utf8')) as { tracker: { open: { ref: { id: string }; latest: { state: { type: string } } | null }[]; waiting: unknown[] } };
    state.tracker.waiting = [];
    await writeFile(path, JSON.stringify(state));
    const ids = state.tracker.open.map((r) => r.ref.id);
    assert.ok(ids.length > 3, `${ids.length} open runs`);

    const sent: SpanRecord[] = [];
    const delivery = createDelivery<SpanRecord>({
      name: 'traces', sizeOf: () => 100, maxItems: 10_000, maxBytes: 1 << 26, batchSize: 10_000, scheduleDelayMs: 1,
      send: (batch) => (sent.push(...batch), Promise.resolve({ ok: true })),
    });
    const b = createPipeline({ config: resolveConfig({ maxOpenRuns: 3 }, {}), logger: quiet, clock: 'event', delivery });
    const resumed = await loadState(store, b, clockOf(a), quiet);
    // What the resume line says is open: the runs kept, not those in the file.
    assert.equal(resumed?.openRuns, 3);
    assert.equal((await b.flush(5_000)).ok, true);
    assert.deepEqual(
      { open: b.tracker.snapshot().open.map((r) => r.ref.id), ended: sent.map((s) => [s.run.id, s.run.incomplete]), evicted: b.tracker.counts.evicted },
      // One that had not ended yet goes out as incomplete.
      { open: ids.slice(-3), ended: state.tracker.open.slice(0, -3).map((r) => [r.ref.id, !['COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED'].includes(r.latest?.state.type ?? '')]), evicted: ids.length - 3 },
    );
    await b.shutdown(0);
  });

  it('a journal that cannot be read is moved aside and the state file is resumed from without it', async () => {
    const { path, store, a, writer } = setUp('journal-unreadable');
    const half = Math.floor(events.length / 2);
    feed(a, events.slice(0, half));
    await writer.save(false);
    const atFile = whole(a);
    const fileClock = clockOf(a);
    feed(a, events.slice(half));
    await writer.save(false);
    // The journal is there but cannot be read (here: a directory in its place).
    await rm(store.journalPath);
    await mkdir(store.journalPath);

    const lines: string[] = [];
    const log = createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void lines.push(l) } });
    const b = pipeline();
    const restored = await loadState(store, b, fileClock, log);
    assert.equal(restored?.journalLines, 0);
    assert.deepEqual(whole(b), atFile);
    const record = JSON.parse(lines[0]!) as { msg: string; path: string; movedTo: string; err: unknown };
    assert.deepEqual(
      [lines.length, record.msg, record.path, record.err],
      [1, 'state journal unreadable; resuming from the state file without it', store.journalPath, { type: 'InputError', message: `cannot read the state journal ${store.journalPath}: not a regular file (a directory)` }],
    );
    assert.deepEqual((await readdir(join(dir, 'journal-unreadable'))).sort(), ['state.json', record.movedTo.split('/').at(-1)!].sort());
    assert.ok(record.movedTo.startsWith(`${path}.journal.bad-`));
  });

  it('entries that are not what they should be are left out and counted, the rest restored; an unreadable file is moved aside, not overwritten', async () => {
    const { path, store, a, writer } = setUp('damaged');
    feed(a, events.slice(0, Math.floor(events.length / 2)));
    await writer.save(true);
    const good = JSON.parse(await readFile(path, 'utf8')) as { cursorUs: unknown; dedupe: unknown[]; tracker: { open: unknown[]; finished: unknown[]; waiting: unknown[] }; pendingSpans: unknown[] };
    const damaged = {
      ...good,
      // Seen event ids: a number, an id that is no UUID, a time that is no number.
      dedupe: [...good.dedupe, 42, ['not-an-event-id', 1], ['0198c7d2-0000-7000-8000-000000000002', 'soon']],
      tracker: { ...good.tracker, open: [...good.tracker.open, { bogus: true }], finished: [...good.tracker.finished, ['0198c7d2-0000-7000-8000-000000000001', null]], waiting: [...good.tracker.waiting, {}] },
      pendingSpans: [...good.pendingSpans, {}],
    };
    await writeFile(path, JSON.stringify(damaged));
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', format: 'json', destination: { write: (l: string) => void lines.push(l) } });
    const b = pipeline();
    const restored = await loadState(store, b, clockOf(a), log);
    assert.equal(restored?.openRuns, good.tracker.open.length);
    assert.deepEqual(whole(b), whole(a));
    assert.deepEqual(lines.map((l) => { const r = JSON.parse(l) as { msg: string; left: number }; return [r.msg, r.left]; }), [['state file entries that are not what they should be were left out', 7]]);

    // A cursor that is not a number is left out too (the run goes on from a fresh start's look-back).
    await writeFile(path, JSON.stringify({ ...good, cursorUs: 'abc' }));
    const c = pipeline();
    assert.equal((await loadState(store, c, clockOf(a), quiet))?.cursor, null);

    await writeFile(path, '{"version":2,"tracker":');
    const d = pipeline();
    lines.length = 0;
    assert.equal(await loadState(store, d, clockOf(a), log), undefined);
    const record = JSON.parse(lines[0]!) as { msg: string; movedTo: string; path: string; err: unknown };
    // The reason as its class and one line of text, as the other state file errors give it (no stack).
    assert.deepEqual(
      { msg: record.msg, path: record.path, err: record.err },
      { msg: 'state file unreadable; starting without it', path, err: { type: 'InputError', message: `the state file ${path} is not valid JSON: ${errorText(catchError(() => JSON.parse('{"version":2,"tracker":')))}` } },
    );
    assert.deepEqual((await readdir(join(dir, 'damaged'))).sort(), [record.movedTo.split('/').at(-1)!]);
    assert.equal(await readFile(record.movedTo, 'utf8'), '{"version":2,"tracker":');
  });
});
