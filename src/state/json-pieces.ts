/** The method of an object that writes its own JSON text, a piece at a time. */
export const JSON_PIECES = Symbol('jsonPieces');

export interface JsonWriter {
  /** Pieces that joined are `JSON.stringify(this)`. */
  [JSON_PIECES](): Iterable<string>;
}

const isWriter = (value: unknown): value is JsonWriter =>
  typeof value === 'object' && value !== null && typeof (value as Partial<JsonWriter>)[JSON_PIECES] === 'function';

/**
 * `JSON.stringify(value)` cut into pieces, so that a writer can give the event loop a turn between
 * them: a state file of tens of megabytes is serialised a slice at a time instead of in one call
 * that holds up every run for a few hundred milliseconds. Objects are walked key by key and arrays
 * longer than `slice` are serialised `slice` elements at a time; everything else (and anything with
 * a `toJSON`) goes to `JSON.stringify` whole. The pieces joined are exactly `JSON.stringify(value)`,
 * except that a top-level value with no JSON form (undefined, a function) gives `null`, and that an
 * element's `toJSON` is given its index within its slice. An object with a `[JSON_PIECES]` method,
 * as the value or as a member's value, gives its own pieces instead (its JSON, written faster than
 * `JSON.stringify` would); inside an array, its `toJSON` is used.
 */
export function* jsonPieces(value: unknown, slice = 2000): Generator<string, void, undefined> {
  if (isWriter(value)) {
    yield* value[JSON_PIECES]();
    return;
  }
  if (Array.isArray(value)) {
    if (value.length <= slice) {
      yield JSON.stringify(value);
      return;
    }
    for (let i = 0; i < value.length; i += slice) {
      const end = Math.min(i + slice, value.length);
      // One native call per slice (a hole, like undefined, is null); its brackets come off.
      const part = JSON.stringify(value.slice(i, end));
      yield `${i === 0 ? '[' : ','}${part.slice(1, -1)}${end === value.length ? ']' : ''}`;
    }
    return;
  }
  if (value === null || typeof value !== 'object' || typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    yield JSON.stringify(value) ?? 'null';
    return;
  }
  let first = true;
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key];
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue; // JSON.stringify leaves these keys out
    yield `${first ? '{' : ','}${JSON.stringify(key)}:`;
    first = false;
    yield* jsonPieces(v, slice);
  }
  yield first ? '{}' : '}';
}
