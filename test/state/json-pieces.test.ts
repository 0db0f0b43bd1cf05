import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JSON_PIECES, jsonPieces } from '../../src/state/json-pieces.js';

const joined = (value: unknown, slice?: number): string => [...jsonPieces(value, slice)].join('');

describe('jsonPieces', () => {
  const samples: [string, unknown][] = [
    ['null', null],
    ['a number', 1_787_313_605_123_456],
    ['a string that needs escaping', 'it\'s "quoted"\n\u2028 é \u0001'],
    ['an empty object', {}],
    ['an empty array', []],
    ['members JSON leaves out', { a: undefined, b: () => 1, c: Symbol('s'), d: 1, e: undefined }],
    ['only members JSON leaves out', { a: undefined }],
    ['array elements with no JSON form', [undefined, () => 1, Symbol('s'), null, 0]],
    ['values with toJSON', { at: new Date(Date.UTC(2026, 10, 27, 8, 0, 0, 123)), nested: [{ toJSON: () => 'x' }] }],
    ['a Map and a sparse array', { m: new Map([['k', 1]]), sparse: [1, , 3] }],
    ['a state-shaped object', { version: 2, savedAt: '2026-11-27T08:00:00.000Z', cursorUs: null, dedupe: [['id-1', 5], ['id-2', 6]], tracker: { open: [{ ref: { type: 'flow', id: 'f' }, meta: { tags: ['a'], name: undefined }, events: [] }], owners: [], waiting: [] } }],
  ];
  for (const [name, value] of samples) {
    it(`joins to JSON.stringify's text: ${name}`, () => {
      assert.equal(joined(value), JSON.stringify(value));
      assert.equal(joined(value, 1), JSON.stringify(value));
    });
  }

  it('cuts arrays longer than a slice into pieces of that many elements, at every length around the boundary', () => {
    for (const length of [0, 1, 2, 3, 4, 5, 6, 7, 9]) {
      const value = { before: 'x', list: Array.from({ length }, (_, i) => (i % 3 === 0 ? [i, `e${i}`] : i % 3 === 1 ? undefined : { i })), after: [1] };
      const pieces = [...jsonPieces(value, 3)];
      assert.equal(pieces.join(''), JSON.stringify(value), `length ${length}`);
      // Only lists longer than a slice are cut; each cut piece holds one slice.
      const listPieces = pieces.slice(pieces.indexOf(',"list":') + 1, pieces.indexOf(',"after":'));
      assert.equal(listPieces.length, length > 3 ? Math.ceil(length / 3) : 1, `length ${length}`);
    }
  });

  it('an object that writes its own JSON gives its pieces, as a value and as a member', () => {
    const writer = { [JSON_PIECES]: () => ['[1,', '2]'], toJSON: () => 'not used by jsonPieces' };
    assert.deepEqual([...jsonPieces(writer)], ['[1,', '2]']);
    assert.deepEqual([...jsonPieces({ a: writer, b: 3 })], ['{"a":', '[1,', '2]', ',"b":', '3', '}']);
  });

  it('a top-level value with no JSON form is written as null', () => {
    assert.equal(joined(undefined), 'null');
  });
});
