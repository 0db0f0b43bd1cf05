import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { lineBatches } from '../../src/source/lines.js';

async function ours(chunks: Buffer[]): Promise<string[]> {
  const out: string[] = [];
  for await (const batch of lineBatches(Readable.from(chunks))) out.push(...batch);
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

test('lines are the ones readline gives, however the bytes are cut into chunks', async () => {
  for (const text of TEXTS) {
    const bytes = Buffer.from(text, 'utf8');
    const expected = await readline([bytes]);
    assert.deepEqual(await ours([bytes]), expected, JSON.stringify(text));
    // Every cut into two chunks and every cut into chunks of 1, 2 and 3 bytes: multi-byte characters and CRLFs split.
    for (let i = 0; i <= bytes.length; i++) assert.deepEqual(await ours([bytes.subarray(0, i), bytes.subarray(i)]), expected, `${JSON.stringify(text)} cut at ${i}`);
    for (const size of [1, 2, 3]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
      assert.deepEqual(await ours(chunks), expected, `${JSON.stringify(text)} in ${size}-byte chunks`);
    }
  }
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
  for await (const batch of lineBatches(Readable.from(chunks), (n) => counted.push(n))) batches.push(batch);
  assert.deepEqual(batches, [['{"a":1}'], ['{"b":2}', '{"c":3}'], ['{"d":4}']]);
  assert.deepEqual(counted, [12, 3, 16, 0]);
});
