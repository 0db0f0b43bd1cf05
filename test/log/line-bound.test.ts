/** Log lines within 16 KiB (Docker's json-file driver and containerd's CRI logger split longer ones), their keys and types kept. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { boundLine, LINE_MAX_BYTES, TRUNCATED } from '../../src/log/line-bound.js';

const bytes = (s: string): number => Buffer.byteLength(s);
const line = (o: Record<string, unknown>): string => `${JSON.stringify(o)}\n`;

test('a line within the bound is the same string', () => {
  const l = line({ level: 30, msg: 'x'.repeat(LINE_MAX_BYTES - 100) });
  assert.equal(boundLine(l), l);
});

test('a long line has its longest text cut with a marker, every other field as it was, and fits', () => {
  const head = { level: 50, time: 1_795_978_101_308, service: 'prefect-otel', component: 'export', count: 2, ok: false };
  const out = boundLine(line({ ...head, err: { type: 'Error', message: `HTTP 400: ${'z'.repeat(40_000)}` }, msg: 'collector rejected spans; not retried' }));
  assert.ok(bytes(out) <= LINE_MAX_BYTES && out.endsWith('}\n'), `${bytes(out)} bytes`);
  const o = JSON.parse(out) as { err: { message: string } };
  const kept = o.err.message.length - TRUNCATED.length;
  assert.deepEqual(o, { ...head, err: { type: 'Error', message: `HTTP 400: ${'z'.repeat(kept - 10)}${TRUNCATED}` }, msg: 'collector rejected spans; not retried' });
  // As much as fits is kept.
  assert.ok(bytes(out) > LINE_MAX_BYTES - 20, `${bytes(out)} bytes`);
});

test('multi-byte and escaped text is measured as the bytes it takes, and a character is never split', () => {
  for (const unit of ['雪', '🚀', '\u001b', '"', 'é']) {
    const out = boundLine(line({ level: 30, a: unit.repeat(9_000), b: unit.repeat(9_000), msg: 'm' }));
    assert.ok(bytes(out) <= LINE_MAX_BYTES, `${JSON.stringify(unit)}: ${bytes(out)} bytes`);
    const o = JSON.parse(out) as { a: string; b: string; msg: string };
    for (const v of [o.a, o.b]) {
      const text = v.endsWith(TRUNCATED) ? v.slice(0, -TRUNCATED.length) : v;
      assert.equal(text, unit.repeat(text.length / unit.length), JSON.stringify(unit));
    }
    assert.equal(o.msg, 'm');
  }
});

test('a line of thousands of short values keeps its identity and its message, cut', () => {
  const many = Object.fromEntries(Array.from({ length: 3_000 }, (_, i) => [`k${i}`, `v${i}`]));
  const out = boundLine(line({ level: 30, time: 1, service: 'prefect-otel', component: 'x', ...many, msg: 'y'.repeat(20_000) }));
  assert.ok(bytes(out) <= LINE_MAX_BYTES, `${bytes(out)} bytes`);
  const o = JSON.parse(out) as Record<string, unknown>;
  assert.deepEqual(Object.keys(o), ['level', 'time', 'service', 'component', 'msg']);
  assert.ok(String(o.msg).endsWith(TRUNCATED));
});

test('text that is not JSON is cut to the bound, with the marker', () => {
  const out = boundLine(`${'n'.repeat(20_000)}\n`);
  assert.ok(bytes(out) <= LINE_MAX_BYTES && out.endsWith(`${TRUNCATED}\n`), `${bytes(out)} bytes`);
});
