/** Reading a log line's `err`: one object on every line (`src/log/err.ts`). */
import assert from 'node:assert/strict';

/**
 * The message of a failure known as text, once the line's whole `err` is seen to be one
 * (`{ type: 'Error', message }`, no other key); undefined for a line without `err`.
 */
export function errMessage(err: unknown): string | undefined {
  if (err === undefined) return undefined;
  assert.deepEqual(Object.keys(err as object).sort(), ['message', 'type'], `err: ${JSON.stringify(err)}`);
  assert.equal((err as { type: unknown }).type, 'Error');
  return (err as { message: string }).message;
}
