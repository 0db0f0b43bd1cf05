import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { lineBatches } from '../../src/source/lines.js';

async function ours(chunks: Buffer[], maxLineChars?: number): Promise<string[]> {
  const out: string[] = [];
  for await (const batch of lineBatches(Readable.from(chunks), { maxLineChars })) out.push(...batch);
  return out;
}

/** Every cut into two chunks and every cut into chunks of 1, 2 and 3 bytes. */
function cuts(bytes: Buffer): [string, Buffer[]][] {
  const out: [string, Buffer[]][] = [['whole', [bytes]]];
  for (let i = 0; i <= bytes.length; i++) out.push([`cut at ${i}`, [bytes.subarray(0, i), bytes.subarray(i)]]);
  for (const size of [1, 2, 3]) {
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
    out.push([`${size}-byte chunks`, chunks]);
  }
  return out;
}

async function readline(chunks: Buffer[]): Promise<string[]> {
  const out: string[] = [];
  for await (const line of createInterface({ input: Readable.from(chunks), crlfDelay: Infinity })) out.push(line);
  return out;
}

const TEXTS = [
  '{"id":"a"}\n{"id":"b"}\n',
  '{"id":"a"}\r\n{"id":"b"}\r\n',
  'no end of line',
  'ends in CR\r',
  '\n\n\nthree empty lines first\n',
  'lone\rCR\r\rtwice\r\r\nthen CRLF\n\r\n',
  'ünïcödé ✓ 𝄞 across the cut\n€€€\r\n',
  '',
  '\r\n',
];

test('lines are the ones readline gives, however the bytes are cut into chunks, and with the bound at their longest', async () => {
  for (const text of [...TEXTS, `${Array.from({ length: 40 }, (_, i) => `cr-only line ${i}`).join('\r')}\r`]) {
    const bytes = Buffer.from(text, 'utf8');
    const expected = await readline([bytes]);
    const longest = Math.max(0, ...expected.map((l) => l.length));
    for (const [how, chunks] of cuts(bytes)) {
      assert.deepEqual(await ours(chunks), expected, `${JSON.stringify(text)}, ${how}`);
      assert.deepEqual(await ours(chunks, longest), expected, `${JSON.stringify(text)}, ${how}, bound ${longest}`);
    }
  }
});

test('a line past the bound is given cut one character past it, and the lines around it whole', async () => {
  const text = `first\r\n${'x'.repeat(500)}\n${'a'.repeat(50)}\r${'b'.repeat(300)}\r\nlast ${'é'.repeat(40)}\r${'z'.repeat(200)}`;
  const expected = ['first', 'x'.repeat(101), 'a'.repeat(50), 'b'.repeat(101), `last ${'é'.repeat(40)}`, 'z'.repeat(101)];
  assert.deepEqual(
    (await readline([Buffer.from(text)])).map((l) => l.slice(0, 101)),
    expected,
    'readline gives the same lines, whole',
  );
  for (const [how, chunks] of cuts(Buffer.from(text, 'utf8'))) assert.deepEqual(await ours(chunks, 100), expected, how);
});

test('chunks far larger than a decoded piece: characters and CRLFs cut at piece edges are put back together', async () => {
  const PIECE = 64 * 1024;
  // A 4-byte character across the first piece edge, a CRLF across the second, a 3-byte character
  // across the third, then lines of every length from 1 to 1,000 bytes with 2-, 3- and 4-byte
  // characters and LF, CRLF and lone CR endings, and a last line without an end.
  const a = `${'a'.repeat(PIECE - 2)}𝄞\n`;
  const b = `${'b'.repeat(2 * PIECE - 1 - Buffer.byteLength(a))}\r\n`;
  const c = `${'c'.repeat(3 * PIECE - 1 - Buffer.byteLength(a + b))}✓\r`;
  const rest: string[] = [];
  for (let i = 1; i <= 1000; i++) rest.push(`${'x'.repeat(i)}${['é', '✓', '𝄞', ''][i % 4]}${['\n', '\r\n', '\r'][i % 3]}`);
  const bytes = Buffer.from(`${a}${b}${c}${rest.join('')}no end`, 'utf8');
  assert.equal(bytes.subarray(PIECE - 2, PIECE + 2).toString(), '𝄞');
  assert.equal(bytes.subarray(2 * PIECE - 1, 2 * PIECE + 1).toString(), '\r\n');
  assert.equal(bytes.subarray(3 * PIECE - 1, 3 * PIECE + 2).toString(), '✓');
  const expected = await readline([bytes]);
  assert.equal(expected.length, 1004);
  assert.deepEqual(await ours([bytes]), expected);
  for (const edge of [PIECE - 1, PIECE, PIECE + 1, 2 * PIECE, 3 * PIECE + 1]) {
    assert.deepEqual(await ours([bytes.subarray(0, edge), bytes.subarray(edge)]), expected, `cut at ${edge}`);
  }
});

test('a batch holds the lines its chunk completed; a chunk that completes none gives no batch', async () => {
  const batches: string[][] = [];
  const chunks = ['{"a":1}\n{"b"', ':2}', '\n{"c":3}\n{"d":4}', ''].map((s) => Buffer.from(s));
  const counted: number[] = [];
  for await (const batch of lineBatches(Readable.from(chunks), { onChunk: (n) => counted.push(n) })) batches.push(batch);
  assert.deepEqual(batches, [['{"a":1}'], ['{"b":2}', '{"c":3}'], ['{"d":4}']]);
  assert.deepEqual(counted, [12, 3, 16, 0]);
});

test('a byte order mark at the start of the input is not part of the first line, however the bytes are cut; one further in is kept', async () => {
  const text = '{"id":"a"}\r\n{"id":"b"}\n';
  const withBom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]);
  for (const [name, chunks] of cuts(withBom)) assert.deepEqual(await ours(chunks), ['{"id":"a"}', '{"id":"b"}'], name);
  assert.deepEqual(await ours([Buffer.from(`${text}\ufeff{"id":"c"}\n`)]), ['{"id":"a"}', '{"id":"b"}', '\ufeff{"id":"c"}']);
});
