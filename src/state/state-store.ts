/**
 * A JSON file written atomically: a crash leaves either the old file or the new one, never half of
 * one. Beside it, a journal (`<file>.journal`) that lines are appended to: a crash leaves at most
 * its last line cut short. Writes are serialised, so two overlapping calls cannot interleave.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { InputError } from '../errors.js';

export interface StateStore {
  /** The parsed file; `undefined` when it does not exist. Throws InputError when it is not JSON. */
  load(): Promise<unknown>;
  /**
   * Write `data` as JSON: temp file, fsync, rename over the file, fsync the directory; then remove
   * the journal, which the new file supersedes. Resolves to the length of the text written.
   */
  save(data: unknown): Promise<number>;
  /** Append `text` to the journal and fsync it. */
  append(text: string): Promise<void>;
  /** The journal's text; undefined when there is none. */
  loadJournal(): Promise<string | undefined>;
  readonly path: string;
  readonly journalPath: string;
}

export function createStateStore(path: string): StateStore {
  const tmpPath = `${path}.${process.pid}.tmp`;
  const journalPath = `${path}.journal`;
  let tail: Promise<void> = Promise.resolve();
  const serially = (op: () => Promise<void>): Promise<void> => {
    const done = tail.then(op);
    tail = done.catch(() => undefined);
    return done;
  };

  async function write(text: string): Promise<void> {
    const dir = dirname(path);
    await mkdir(dir, { recursive: true });
    try {
      await writeSynced(tmpPath, 'w', text);
      await rename(tmpPath, path);
    } catch (err) {
      await unlink(tmpPath).catch(() => undefined);
      throw err;
    }
    await syncDirectory(dir);
  }

  return {
    path,
    journalPath,

    async load(): Promise<unknown> {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return undefined;
        throw new InputError(`cannot read the state file ${path}: ${code ?? String(err)}`, { cause: err });
      }
      try {
        return JSON.parse(text) as unknown;
      } catch (err) {
        throw new InputError(`the state file ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
    },

    async save(data: unknown): Promise<number> {
      // Serialise now: the snapshot is the data as it was at the call, not when the write runs.
      // JSON.stringify(undefined) is undefined at run time despite its type.
      const text = `${(JSON.stringify(data) as string | undefined) ?? 'null'}\n`;
      await serially(async () => {
        await write(text);
        await unlink(journalPath).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
      });
      return text.length;
    },

    append(text: string): Promise<void> {
      return serially(async () => {
        await mkdir(dirname(path), { recursive: true });
        await writeSynced(journalPath, 'a', text);
      });
    },

    async loadJournal(): Promise<string | undefined> {
      try {
        return await readFile(journalPath, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return undefined;
        throw new InputError(`cannot read the state journal ${journalPath}: ${code ?? String(err)}`, { cause: err });
      }
    },
  };
}

/** Write (`w`) or append (`a`) `text`, then fsync the file. Owner-only permissions: it holds run names and ids. */
async function writeSynced(file: string, flags: 'w' | 'a', text: string): Promise<void> {
  const fh = await open(file, flags, 0o600);
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Make the rename durable. Not every platform or file system can open or fsync a directory. */
async function syncDirectory(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Windows (EISDIR/EPERM), some network file systems (EINVAL): the rename is still atomic.
  } finally {
    await fh?.close().catch(() => undefined);
  }
}
