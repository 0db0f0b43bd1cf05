/**
 * A JSON file written atomically: a crash leaves either the old file or the new one, never half of
 * one. Saves are serialised, so two overlapping `save()` calls cannot interleave their writes.
 */
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { InputError } from '../errors.js';

export interface StateStore {
  /** The parsed file; `undefined` when it does not exist. Throws InputError when it is not JSON. */
  load(): Promise<unknown>;
  /** Write `data` as JSON: temp file, fsync, rename over the file, fsync the directory. */
  save(data: unknown): Promise<void>;
  readonly path: string;
}

export function createStateStore(path: string): StateStore {
  const tmpPath = `${path}.${process.pid}.tmp`;
  let tail: Promise<void> = Promise.resolve();

  async function write(text: string): Promise<void> {
    const dir = dirname(path);
    await mkdir(dir, { recursive: true });
    try {
      const fh = await open(tmpPath, 'w', 0o600);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmpPath, path);
    } catch (err) {
      await unlink(tmpPath).catch(() => undefined);
      throw err;
    }
    await syncDirectory(dir);
  }

  return {
    path,

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

    save(data: unknown): Promise<void> {
      // Serialise now: the snapshot is the data as it was at the call, not when the write runs.
      let text: string;
      try {
        // JSON.stringify(undefined) is undefined at run time despite its type.
        text = `${(JSON.stringify(data) as string | undefined) ?? 'null'}\n`;
      } catch (err) {
        return Promise.reject(err instanceof Error ? err : new Error(String(err)));
      }
      const done = tail.then(() => write(text));
      tail = done.catch(() => undefined);
      return done;
    },
  };
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
