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

test('a batch holds the lines its chunk completed; a chunk that completes none gives no batch', async () => {
  const batches: string[][] = [];
  const chunks = ['{"a":1}\n{"b"', ':2}', '\n{"c":3}\n{"d":4}', ''].map((s) => Buffer.from(s));
  const counted: number[] = [];
  for await (const batch of lineBatches(Readable.from(chunks), (n) => counted.push(n))) batches.push(batch);
  assert.deepEqual(batches, [['{"a":1}'], ['{"b":2}', '{"c":3}'], ['{"d":4}']]);
  assert.deepEqual(counted, [12, 3, 16, 0]);
});
