/**
 * A JSON file written atomically: a crash leaves either the old file or the new one, never half of
 * one. Beside it, a journal (`<file>.journal`) that lines are appended to: a crash leaves at most
 * its last line cut short. Writes are serialised, so two overlapping calls cannot interleave.
 */
import { constants, readlinkSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { errorText, InputError } from '../errors.js';
import { jsonPieces } from './json-pieces.js';

/**
 * The state file is no longer the one this process loaded or last saved (`StateStore.changedSinceOwn`):
 * another process took it over while this one was frozen past its lease, saved, and perhaps stopped
 * since. Nothing was written over its state.
 */
export class StateTakenError extends Error {
  constructor(path: string) {
    super(`the state file ${path} was written by another process since this one last saved it: not written over`);
    this.name = 'StateTakenError';
  }
}

export interface StateStore {
  /** The parsed file; `undefined` when it does not exist. Throws InputError when it is not JSON. */
  load(): Promise<unknown>;
  /**
   * Write `data` as JSON: temp file, fsync, rename over the file, fsync the directory; then remove
   * the journal, which the new file supersedes. Resolves to the length of the text written.
   * The JSON is made a slice at a time while it is written, with the event loop free in between:
   * `data` must be a snapshot that nothing changes until the save resolves.
   */
  save(data: unknown): Promise<number>;
  /**
   * Append `text` (or its pieces, made a slice at a time while they are written, as `save` does) to
   * the journal and fsync it. Resolves to the length of the text appended.
   */
  append(text: string | Iterable<string>): Promise<number>;
  /** The journal's text; undefined when there is none. */
  loadJournal(): Promise<string | undefined>;
  /**
   * Remove the temp files of saves that other processes did not finish (killed while writing):
   * each is as large as the state, and no process would ever remove it. Only for the process that
   * holds the state file. Resolves to the paths removed.
   */
  removeLeftovers(): Promise<string[]>;
  /** Take the state file as it is now as this process's own (after loading it); each save does so too. */
  markOwn(): Promise<void>;
  /**
   * Whether the state file is no longer the one this process loaded or last saved: another process
   * wrote it meanwhile. False before `markOwn`. Waits for a save under way.
   */
  changedSinceOwn(): Promise<boolean>;
  readonly path: string;
  readonly journalPath: string;
}

export function createStateStore(path: string): StateStore {
  const tmpPath = `${path}.${process.pid}.tmp`;
  const tmpName = new RegExp(`^${escapeRegExp(basename(path))}\\.\\d+\\.tmp$`);
  const journalPath = `${path}.journal`;
  let tail: Promise<void> = Promise.resolve();
  /** The state file as this process last loaded or saved it (`null`: there was none); undefined before `markOwn`. */
  let own: FileIdentity | null | undefined;
  const serially = (op: () => Promise<void>): Promise<void> => {
    const done = tail.then(op);
    tail = done.catch(() => undefined);
    return done;
  };

  async function write(pieces: Iterable<string>): Promise<number> {
    const dir = dirname(path);
    await makeStateDirectory(dir, path);
    let length: number;
    try {
      // A file already at the temp path (one a kill left, with this pid; a link someone put there)
      // is removed, not written through: the temp file is always a new one of this process's own.
      await unlink(tmpPath).catch(() => undefined);
      length = await writeSynced(tmpPath, NEW_FILE, pieces);
      const written = await identityOf(tmpPath);
      // Looked at last, just before the rename: a process frozen in the middle of a save (after the
      // lease was looked at) may resume after another has taken the state file over and saved it,
      // or has even removed this save's temp file as a leftover of a process gone.
      if (own !== undefined && (written === null || !sameFile(await identityOf(path), own))) throw new StateTakenError(path);
      await rename(tmpPath, path);
      if (own !== undefined) own = written;
    } catch (err) {
      await unlink(tmpPath).catch(() => undefined);
      throw err;
    }
    await syncDirectory(dir);
    return length;
  }

  return {
    path,
    journalPath,

    async load(): Promise<unknown> {
      let text: string;
      try {
        text = await readRegularFile(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return undefined;
        throw new InputError(`cannot read the state file ${path}: ${code ?? (err as Error).message}`, { cause: err });
      }
      try {
        return JSON.parse(text) as unknown;
      } catch (err) {
        throw new InputError(`the state file ${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
    },

    async save(data: unknown): Promise<number> {
      let length = 0;
      await serially(async () => {
        length = await write(withNewline(jsonPieces(data)));
        await unlink(journalPath).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
      });
      return length;
    },

    async append(text: string | Iterable<string>): Promise<number> {
      let length = 0;
      await serially(async () => {
        await makeStateDirectory(dirname(path), path);
        length = await writeSynced(journalPath, APPEND_NO_LINK, typeof text === 'string' ? [text] : text);
      });
      return length;
    },

    async removeLeftovers(): Promise<string[]> {
      const dir = dirname(path);
      const names = await readdir(dir).catch(() => [] as string[]);
      const own = basename(tmpPath);
      const leftovers = names.filter((name) => name !== own && tmpName.test(name)).map((name) => join(dir, name));
      const removed: string[] = [];
      for (const file of leftovers) if (await unlink(file).then(() => true, () => false)) removed.push(file);
      return removed;
    },

    async markOwn(): Promise<void> {
      await serially(async () => {
        own = await identityOf(path);
      });
    },

    async changedSinceOwn(): Promise<boolean> {
      let changed = false;
      await serially(async () => {
        if (own === undefined) return;
        const now = await identityOf(path);
        changed = now?.ino !== own?.ino || now?.size !== own?.size || now?.mtimeMs !== own?.mtimeMs;
      });
      return changed;
    },

    async loadJournal(): Promise<string | undefined> {
      try {
        return await readRegularFile(journalPath);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return undefined;
        throw new InputError(`cannot read the state journal ${journalPath}: ${code ?? (err as Error).message}`, { cause: err });
      }
    },
  };
}

/** What tells one state file from another written at its path: its inode, size and modification time. */
interface FileIdentity {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

/**
 * Whether a save may replace the file at the state file's path: it is still `own`, the one this
 * process loaded or saved last, or there is none (removed by hand: written again; a process that
 * took the state file over always leaves one).
 */
function sameFile(now: FileIdentity | null, own: FileIdentity | null | undefined): boolean {
  if (now === null) return true;
  return now.ino === own?.ino && now.size === own.size && now.mtimeMs === own.mtimeMs;
}

/** The identity of the file at `file`; null when there is none. */
async function identityOf(file: string): Promise<FileIdentity | null> {
  try {
    const { ino, size, mtimeMs } = await stat(file);
    return { ino, size, mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * The text of a regular file. Anything else there is refused before it is opened: reading a FIFO
 * would wait for a writer for ever, and a device has no end.
 */
async function readRegularFile(file: string): Promise<string> {
  const info = await stat(file);
  if (!info.isFile()) throw new Error(`not a regular file (${info.isDirectory() ? 'a directory' : info.isFIFO() ? 'a FIFO' : info.isSocket() ? 'a socket' : 'a device'})`);
  return readFile(file, 'utf8');
}

/** Links followed before giving up: the kernel's own limit for a path (ELOOP). */
const MAX_LINKS = 40;

/**
 * The file a state-file path names, as an absolute path: a symbolic link (or a chain of them)
 * followed to its target, which need not exist yet. Saves replace the file by renaming a temp file
 * over it, which would replace a link with a plain file, and the state would stop reaching the
 * volume the link points to; the journal and the lock belong beside the target for the same
 * reason, and two links to one file then share one lock. A path that is no link is returned as it is.
 */
export function stateFileTarget(path: string): string {
  let current = resolve(path);
  for (let i = 0; i < MAX_LINKS; i++) {
    let target: string;
    try {
      target = readlinkSync(current);
    } catch {
      // EINVAL: not a link; ENOENT: nothing there yet. Anything else is said by the first open.
      return current;
    }
    current = resolve(dirname(current), target);
  }
  return current;
}

/**
 * `mkdir -p` of the state file's directory, one level at a time. Node's own `recursive: true`
 * never settles when mkdir says ENOENT for a directory whose parent exists (a path under /proc,
 * say): it creates the parent (EEXIST), tries the directory again, and so on forever on a libuv
 * thread, holding this save and every later one, the last save at shutdown too. Here a level
 * still missing once its parent is in place is an error that names the path and the reason.
 */
export async function makeStateDirectory(dir: string, file: string): Promise<void> {
  try {
    await makeDirectory(dir);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const reason = e.code === 'ENOENT'
      ? `mkdir ${e.path ?? dir} says ENOENT although its parent exists (a file system that cannot hold it, such as /proc)`
      : errorText(err);
    throw new Error(`cannot create ${dir}, the directory of the state file ${file}: ${reason}`, { cause: err });
  }
}

/** `dir` and its missing parents; each is tried once after its parent exists, so this always settles. */
async function makeDirectory(dir: string): Promise<void> {
  try {
    await mkdir(dir);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // An existing file there is said by the write that follows (ENOTDIR, naming the path).
    if (code === 'EEXIST') return;
    if (code !== 'ENOENT' || dirname(dir) === dir) throw err;
  }
  await makeDirectory(dirname(dir));
  await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
}

const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The state file ends with a newline, like the journal's lines. */
function* withNewline(pieces: Iterable<string>): Generator<string, void, undefined> {
  yield* pieces;
  yield '\n';
}

/** Text gathered before each write: about a few milliseconds of serialising between two turns of the event loop. */
const WRITE_CHUNK_CHARS = 1 << 20;

/**
 * The temp file of a save: created here, never one that is there already (O_EXCL), so never a
 * symbolic link followed to another file, which the save would write over.
 */
const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL;
/** The journal: appended to, never through a symbolic link (its path is beside the state file's target, which is no link). */
const APPEND_NO_LINK = constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | (constants.O_NOFOLLOW ?? 0);

/**
 * Write the pieces to a new file or append them (`flags`), about a megabyte per write, then fsync
 * the file; resolves to the number of characters written. Owner-only permissions: it holds run
 * names and ids, and the payloads of the runs' events.
 */
async function writeSynced(file: string, flags: number, pieces: Iterable<string>): Promise<number> {
  const fh = await open(file, flags, 0o600);
  let length = 0;
  try {
    let chunk: string[] = [];
    let chars = 0;
    for (const piece of pieces) {
      chunk.push(piece);
      chars += piece.length;
      if (chars >= WRITE_CHUNK_CHARS) {
        await fh.writeFile(chunk.join(''), 'utf8'); // successive writeFile calls continue where the last one ended
        length += chars;
        chunk = [];
        chars = 0;
      }
    }
    if (chars > 0) await fh.writeFile(chunk.join(''), 'utf8');
    length += chars;
    await fh.sync();
  } finally {
    await fh.close();
  }
  return length;
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
