import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { InputError } from '../../src/errors.js';
import { createStateStore, StateTakenError } from '../../src/state/state-store.js';
import { progressSeenMeanwhile } from '../helpers/meanwhile.js';

describe('state store', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'prefect-otel-state-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('round-trips JSON and creates missing directories', async () => {
    const path = join(dir, 'a', 'b', 'state.json');
    const store = createStateStore(path);
    assert.equal(store.path, path);
    const data = { version: 1, cursorUs: 1_787_313_605_123_456, dedupe: [['id-1', 5]], nested: { ok: true, none: null } };
    await store.save(data);
    assert.deepEqual(await store.load(), data);
    assert.deepEqual(JSON.parse(await readFile(path, 'utf8')), data);
  });

  it('replaces the file atomically and leaves no temp file behind', async () => {
    const path = join(dir, 'replace', 'state.json');
    const store = createStateStore(path);
    await store.save({ n: 1 });
    await store.save({ n: 2 });
    assert.deepEqual(await store.load(), { n: 2 });
    assert.deepEqual(await readdir(join(dir, 'replace')), ['state.json']);
  });

  it('tells a state file another writer saved from the one this store loaded or last saved, its own journal lines and saves under way not counted', async () => {
    const path = join(dir, 'own', 'state.json');
    const mine = createStateStore(path);
    const other = createStateStore(path);
    assert.equal(await mine.changedSinceOwn(), false, 'nothing to compare with before markOwn');
    await mine.markOwn();
    assert.equal(await mine.changedSinceOwn(), false, 'no file yet, and still none');
    const saving = mine.save({ n: 1 });
    assert.equal(await mine.changedSinceOwn(), false, 'its own save, under way');
    await saving;
    await mine.append('{"n":2}\n');
    assert.equal(await mine.changedSinceOwn(), false, 'its own save and journal line');
    await other.save({ n: 3 });
    assert.equal(await mine.changedSinceOwn(), true, 'another writer saved the file');
    await mine.markOwn();
    assert.equal(await mine.changedSinceOwn(), false, 'taken as its own again');
  });

  it('a save finds the state file another writer saved since its own last one, and writes nothing over it; one removed by hand it writes again', async () => {
    const path = join(dir, 'taken', 'state.json');
    const mine = createStateStore(path);
    const other = createStateStore(path);
    await mine.markOwn();
    await mine.save({ n: 1 });
    await mine.save({ n: 2 });
    // The other writer saves between this one's look at the lease and its write (it was frozen there).
    await other.save({ n: 3 });
    const refused = await mine.save({ n: 4 }).then(() => undefined, (err: unknown) => err);
    assert.ok(refused instanceof StateTakenError, String(refused));
    assert.equal(refused.message, `the state file ${path} was written by another process since this one last saved it: not written over`);
    assert.deepEqual([JSON.parse(await readFile(path, 'utf8')), (await readdir(join(dir, 'taken'))).sort()], [{ n: 3 }, ['state.json']]);
    // Taken as its own again (loaded afresh), or removed by hand: saved.
    await mine.markOwn();
    await mine.save({ n: 5 });
    await rm(path);
    await mine.save({ n: 6 });
    assert.deepEqual(JSON.parse(await readFile(path, 'utf8')), { n: 6 });
    // A store not told what is its own (no lock held) writes as it always did.
    await createStateStore(path).save({ n: 7 });
    assert.deepEqual(JSON.parse(await readFile(path, 'utf8')), { n: 7 });
  });

  it('never writes through a file or a symbolic link already at its temp path or its journal: another file they point to stays as it was, and the state is owner-only under a umask of 022', { skip: process.platform === 'win32' }, async () => {
    const umask = process.umask(0o022);
    after(() => process.umask(umask));
    const at = join(dir, 'links');
    await mkdir(at);
    const victim = join(at, 'other-file');
    await writeFile(victim, 'not the state\n', { mode: 0o644 });
    const path = join(at, 'state.json');
    // The temp path of this process's saves (its pid), as a kill would have left it, here a link.
    const tmp = `${path}.${process.pid}.tmp`;
    await symlink(victim, tmp);
    const store = createStateStore(path);
    await store.save({ n: 1 });
    assert.deepEqual(
      { victim: await readFile(victim, 'utf8'), victimMode: (await stat(victim)).mode & 0o777, state: await store.load(), stateMode: (await lstat(path)).mode & 0o777, files: (await readdir(at)).sort() },
      { victim: 'not the state\n', victimMode: 0o644, state: { n: 1 }, stateMode: 0o600, files: ['other-file', 'state.json'] },
    );
    // A leftover temp file of a wider mode is not reused either.
    await writeFile(tmp, 'left by a kill', { mode: 0o644 });
    await chmod(tmp, 0o644);
    await store.save({ n: 2 });
    assert.deepEqual({ state: await store.load(), stateMode: (await stat(path)).mode & 0o777 }, { state: { n: 2 }, stateMode: 0o600 });

    await symlink(victim, store.journalPath);
    await assert.rejects(store.append('{"line":1}\n'), (err: NodeJS.ErrnoException) => err.code === 'ELOOP');
    assert.deepEqual({ victim: await readFile(victim, 'utf8'), link: await readlink(store.journalPath) }, { victim: 'not the state\n', link: victim });
    // The next save supersedes the journal: the link is removed, not followed, and appends go to a journal of the store's own.
    await store.save({ n: 3 });
    await store.append('{"line":2}\n');
    assert.deepEqual(
      { victim: await readFile(victim, 'utf8'), journal: await store.loadJournal(), journalIsFile: (await lstat(store.journalPath)).isFile(), journalMode: (await stat(store.journalPath)).mode & 0o777 },
      { victim: 'not the state\n', journal: '{"line":2}\n', journalIsFile: true, journalMode: 0o600 },
    );
  });

  it('serialises concurrent saves: the last call wins and no write interleaves', async () => {
    const path = join(dir, 'concurrent', 'state.json');
    const store = createStateStore(path);
    const big = (n: number) => ({ n, filler: 'x'.repeat(200_000 + n) });
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.save(big(i))));
    const loaded = (await store.load()) as { n: number; filler: string };
    assert.deepEqual(loaded, big(19));
    assert.deepEqual(await readdir(join(dir, 'concurrent')), ['state.json']);
  });

  it('writes a large state a slice at a time, letting other work run in between, and reads it back whole', async () => {
    const path = join(dir, 'large', 'state.json');
    const store = createStateStore(path);
    // Each element counts its own serialisation, so other work can see how far the save has got.
    let serialised = 0;
    class Counted {
      constructor(readonly id: string, readonly at: number) {}
      toJSON(): [string, number] {
        serialised += 1;
        return [this.id, this.at];
      }
    }
    const n = 200_000;
    const dedupe = Array.from({ length: n }, (_, i) => new Counted(`0198c7d2-${String(i).padStart(4, '0')}-7000-8000-000000000000`, 1_787_313_605_123_456 + i));
    const { result: length, seen: seenMeanwhile } = await progressSeenMeanwhile(() => store.save({ version: 2, dedupe, tracker: { open: [], finished: [] } }), () => serialised);
    assert.equal(serialised, n);
    assert.ok(seenMeanwhile.some((c) => c > 0 && c < n), `no other work ran while the state was serialised (counts seen: ${[...new Set(seenMeanwhile)].join(', ')})`);
    const text = await readFile(path, 'utf8');
    assert.equal(length, text.length);
    assert.deepEqual(JSON.parse(text), { version: 2, dedupe: dedupe.map((d) => [d.id, d.at]), tracker: { open: [], finished: [] } });
  });

  it('a failed save rejects and does not block later saves', async () => {
    const blocker = join(dir, 'blocker');
    await writeFile(blocker, 'a file, not a directory');
    const bad = createStateStore(join(blocker, 'state.json'));
    await assert.rejects(bad.save({ n: 1 }));
    const path = join(dir, 'after-failure.json');
    const store = createStateStore(path);
    await assert.rejects(createStateStore(join(blocker, 'x.json')).save({}));
    await store.save({ n: 3 });
    assert.deepEqual(await store.load(), { n: 3 });
  });

  // mkdir under /proc says ENOENT although /proc exists: Node's `recursive: true` retried that forever.
  it('a directory the file system cannot hold (under /proc) fails the save and the append, naming the path and the reason', { skip: process.platform !== 'linux', timeout: 10_000 }, async () => {
    const path = `/proc/prefect-otel-${process.pid}/state/state.json`;
    const store = createStateStore(path);
    const reason = (op: string) => (err: unknown) => {
      assert.deepEqual({ op, message: (err as Error).message }, {
        op,
        message: `cannot create /proc/prefect-otel-${process.pid}/state, the directory of the state file ${path}: mkdir /proc/prefect-otel-${process.pid} says ENOENT although its parent exists (a file system that cannot hold it, such as /proc)`,
      });
      return true;
    };
    await assert.rejects(store.save({ n: 1 }), reason('save'));
    await assert.rejects(store.append('{"n":2}\n'), reason('append'));
    // Nothing is left waiting on the failed writes: the next save runs and fails the same way.
    await assert.rejects(store.save({ n: 3 }), reason('save again'));
  });

  it('returns undefined when the file does not exist', async () => {
    assert.equal(await createStateStore(join(dir, 'missing', 'state.json')).load(), undefined);
  });

  it('throws an InputError naming the path when the file is not JSON', async () => {
    const path = join(dir, 'corrupt.json');
    await writeFile(path, '{"version":1,"cursorUs":');
    await assert.rejects(createStateStore(path).load(), (err: unknown) => {
      assert.ok(err instanceof InputError);
      assert.equal(err.code, 'PREFECT_OTEL_INPUT');
      assert.match(err.message, new RegExp(`state file ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not valid JSON`));
      return true;
    });
    await writeFile(path, '');
    await assert.rejects(createStateStore(path).load(), InputError);
  });

  it('refuses a state file or journal that is not a regular file (a FIFO would wait for a writer for ever), naming the path and what is there', { skip: process.platform === 'win32', timeout: 10_000 }, async () => {
    const fifo = join(dir, 'fifo.json');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const asDir = join(dir, 'dir.json');
    await mkdir(asDir);
    const journalFifo = join(dir, 'journal-fifo.json');
    assert.equal(spawnSync('mkfifo', [`${journalFifo}.journal`]).status, 0);
    const messages = await Promise.all([
      createStateStore(fifo).load(),
      createStateStore(asDir).load(),
      createStateStore(journalFifo).loadJournal(),
    ].map((p) => p.then(() => 'resolved', (err: unknown) => (err instanceof InputError ? err.message : `not an InputError: ${String(err)}`))));
    assert.deepEqual(messages, [
      `cannot read the state file ${fifo}: not a regular file (a FIFO)`,
      `cannot read the state file ${asDir}: not a regular file (a directory)`,
      `cannot read the state journal ${journalFifo}.journal: not a regular file (a FIFO)`,
    ]);
  });
});
