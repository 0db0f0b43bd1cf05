/**
 * The bound on the state file's work at exit: whether a work settled within it, a work that failed
 * counting as settled (its failure is the caller's to look at), and no timer left behind to hold
 * the process open once the answer is in.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { settlesWithin } from '../../src/state/exit-bound.js';

const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('settlesWithin', () => {
  it('is true for a work that resolves or rejects within the bound, false for one that has not settled by then', async () => {
    const never = new Promise<void>(() => undefined);
    assert.deepEqual(
      await Promise.all([
        settlesWithin(Promise.resolve('saved'), 60_000),
        settlesWithin(Promise.reject(new Error('EACCES: permission denied')), 60_000),
        settlesWithin(new Promise((resolve) => setTimeout(resolve, 10)), 60_000),
        settlesWithin(never, 20),
      ]),
      [true, true, true, false],
    );
  });

  it('leaves no timer behind once the work has settled: the process is not held open for the rest of the bound', async () => {
    const before = timers();
    assert.equal(await settlesWithin(Promise.resolve(), 60_000), true);
    assert.equal(await settlesWithin(Promise.reject(new Error('EIO')), 60_000), true);
    assert.equal(timers(), before);
  });
});
