/**
 * One process at a time follows the stream for a state file. It holds `<state file>.lock`: created
 * with O_EXCL, rewritten every third of the lease, removed at shutdown. A process started on the
 * same state file meanwhile is a standby: it takes over once the lock is removed, once its lease
 * has run out (the holder stopped renewing it: killed, frozen, its host gone; the lock's age is
 * its modification time, which a shared file system stamps with one clock, and is measured on that
 * clock before a take-over, not on this host's, which may run ahead of it), or at once when the
 * holder is a process of this host, in this process namespace, that no longer runs. Standbys that
 * find the same stale lock take it over one at a time (see `removeStale`): one of them holds it.
 */
import { readlinkSync } from 'node:fs';
import { link, open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { randomUUID } from 'node:crypto';
import { makeStateDirectory } from './state-store.js';

/** What a lock says about the process that holds it. */
export interface LeaseHolder {
  readonly pid: number;
  readonly host: string;
  /** The holder's process namespace (Linux), so that a pid is only looked up where it means the same process. */
  readonly pidNamespace: string | null;
  readonly token: string;
  readonly since: string;
}

export type AcquireResult =
  /** `holderGone`: the holder taken over from was a process of this host that no longer runs (killed, crashed), not one whose lease ran out. */
  | { readonly acquired: true; readonly tookOver?: LeaseHolder | undefined; readonly holderGone?: true }
  /** `holder` is undefined while the lock is being written (or is not one of ours); `expiresInMs` is when it runs out unless renewed. */
  | { readonly acquired: false; readonly holder: LeaseHolder | undefined; readonly expiresInMs: number };

/**
 * `remade`: the lock was gone and this process made it again. Removed by hand, or released by a
 * process that took it over while this one was frozen and has stopped since: then the state file
 * is that process's, which the holder must not write over (see `StateStore.changedSinceOwn`).
 */
export type LeaseCheck = { readonly held: true; readonly remade?: true } | { readonly held: false; readonly holder: LeaseHolder | undefined };

export interface StateLease {
  readonly path: string;
  readonly leaseMs: number;
  /** Try once. Throws only what is not about the lock being held (a directory that cannot be written). */
  tryAcquire(): Promise<AcquireResult>;
  /** Write the lock again. Resolves to the process that holds it instead when this one no longer does. */
  renew(): Promise<LeaseCheck>;
  /** Whether the lock is still this process's, as `renew` says, without writing it (one read): asked before each save. */
  check(): Promise<LeaseCheck>;
  /** Remove the lock if it is still this process's. */
  release(): Promise<void>;
}

/** What `link` fails with on a file system that has no hard links. */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/** When this process started (a little before this module was loaded). */
const PROCESS_STARTED_MS = Date.now() - process.uptime() * 1000;

function pidNamespace(): string | null {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return null;
  }
}

function parseHolder(text: string): LeaseHolder | undefined {
  try {
    const v = JSON.parse(text) as Partial<LeaseHolder> | null;
    if (v === null || typeof v !== 'object') return undefined;
    if (typeof v.pid !== 'number' || typeof v.host !== 'string' || typeof v.token !== 'string' || typeof v.since !== 'string') return undefined;
    return { pid: v.pid, host: v.host, pidNamespace: typeof v.pidNamespace === 'string' ? v.pidNamespace : null, token: v.token, since: v.since };
  } catch {
    return undefined;
  }
}

/** Whether `holder` is this very process (an earlier start of it, still stopping). */
export function isThisProcess(holder: LeaseHolder): boolean {
  return holder.pid === process.pid && holder.host === hostname() && holder.pidNamespace === pidNamespace() && Date.parse(holder.since) >= PROCESS_STARTED_MS;
}

/** Whether `holder` is known to be gone: a process of this host and namespace that no longer runs, or this process's own earlier self. */
function holderGone(holder: LeaseHolder, self: LeaseHolder): boolean {
  if (holder.host !== self.host || holder.pidNamespace === null || holder.pidNamespace !== self.pidNamespace) return false;
  // This pid: this process, or an earlier one that had it (a restarted container is pid 1 again).
  if (holder.pid === self.pid) return Date.parse(holder.since) < PROCESS_STARTED_MS;
  try {
    process.kill(holder.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** A lock as read: `content` and `mtimeMs` tell this lock from one made later at the same path. */
interface SeenLock {
  readonly holder: LeaseHolder | undefined;
  readonly ageMs: number;
  readonly content: string;
  readonly mtimeMs: number;
}

export function createStateLease(stateFile: string, leaseMs: number): StateLease {
  const path = `${stateFile}.lock`;
  const guard = `${path}.takeover`;
  /** The take-over guard another process holds, and since when this one sees it. */
  let guardSeen: { readonly key: string; readonly sinceMs: number } | undefined;
  let released = false;
  const self: LeaseHolder = { pid: process.pid, host: hostname(), pidNamespace: pidNamespace(), token: randomUUID(), since: new Date().toISOString() };
  const text = (): string => `${JSON.stringify(self)}\n`;

  /**
   * Make the lock, written whole before it appears: its text goes to a file of this process's own,
   * which is then linked at the lock's path (refused when a lock is there). A lock opened with O_EXCL
   * and written after would be there empty for a moment, and read then (by this process's other look
   * as well) as another process's. A file system without hard links gets that, for want of better.
   */
  async function create(): Promise<boolean> {
    const made = `${path}.${self.token}.new`;
    try {
      try {
        await writeFile(made, text());
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await makeStateDirectory(dirname(path), stateFile);
        await writeFile(made, text());
      }
      const linked = await link(made, path).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'EEXIST') return false;
          if (NO_HARD_LINKS.has(err.code ?? '')) return undefined;
          throw err;
        },
      );
      if (linked === undefined) return await createInPlace();
      if (!linked) return false;
    } finally {
      await unlink(made).catch(() => undefined);
    }
    released = false;
    return true;
  }

  async function createInPlace(): Promise<boolean> {
    let handle;
    try {
      handle = await open(path, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
    try {
      await handle.writeFile(text());
    } finally {
      await handle.close();
    }
    released = false;
    return true;
  }

  /** The lock as it is now: its holder, its age, and what identifies this very lock (its text and modification time); undefined when there is none. */
  async function current(): Promise<SeenLock | undefined> {
    try {
      const [content, info] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
      return { holder: parseHolder(content), ageMs: Date.now() - info.mtimeMs, content, mtimeMs: info.mtimeMs };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * Remove the stale lock `seen`, and only it. Standbys that read the same stale lock race to replace
   * it; one that unlinked the path after another had made its fresh lock there would remove that
   * one, and both would run. So a lock that is not one's own is only removed under `<lock>.takeover`
   * (made with O_EXCL, removed right after), and only when it is still, by its text and modification
   * time, the lock that was read: a standby that comes second finds the fresh lock and waits. The
   * lock is renamed aside and compared again there, so that one replaced between that reading and
   * the removal (its holder released it, and a new one was made) is linked back, not removed.
   *
   * Unless its holder is `gone`, the lock must also have run out by the file system's clock: the
   * guard, just made, bears that clock's time. This host's clock ahead of the file server's by more
   * than the lease would otherwise find every lock stale, and take it from a holder that renews it.
   */
  async function removeStale(seen: SeenLock, gone: boolean): Promise<void> {
    if (!(await takeGuard())) return;
    const aside = `${path}.${self.token}.stale`;
    try {
      const now = await current();
      if (now === undefined || now.content !== seen.content || now.mtimeMs !== seen.mtimeMs) return;
      const fileSystemNowMs = (await stat(guard).catch(() => undefined))?.mtimeMs ?? -Infinity;
      if (!gone && fileSystemNowMs - now.mtimeMs <= leaseMs) return;
      try {
        await rename(path, aside);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      const [content, info] = await Promise.all([readFile(aside, 'utf8'), stat(aside)]);
      if (content !== seen.content || info.mtimeMs !== seen.mtimeMs) {
        await link(aside, path).catch(async (err: NodeJS.ErrnoException) => {
          // A file system without hard links: put it back by renaming.
          if (err.code !== 'EEXIST') await rename(aside, path);
        });
      }
    } finally {
      await unlink(aside).catch(() => undefined);
      await unlink(guard).catch(() => undefined);
    }
  }

  /**
   * Take `<lock>.takeover`. False while another standby holds it (for milliseconds); one seen
   * unchanged for a lease, by this process's monotonic clock (not compared with the file system's),
   * was left by a process that died while taking over, and is removed so that the next look can take it.
   */
  async function takeGuard(): Promise<boolean> {
    try {
      await (await open(guard, 'wx')).close();
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const info = await stat(guard).catch(() => undefined);
    if (info === undefined) return false;
    const key = `${info.ino}:${info.mtimeMs}`;
    if (guardSeen?.key !== key) guardSeen = { key, sinceMs: performance.now() };
    else if (performance.now() - guardSeen.sinceMs > leaseMs) await unlink(guard).catch(() => undefined);
    return false;
  }

  /**
   * The lock made again, once for the looks that find it gone at the same time (a renewal and the
   * look before a save): one of them making it must not make the other see it, unwritten or
   * written, as another process's.
   */
  let remaking: Promise<boolean> | undefined;
  const remake = (): Promise<boolean> => (remaking ??= create().finally(() => (remaking = undefined)));

  async function check(): Promise<LeaseCheck> {
    const lock = await current();
    // A lock removed by hand is made again, unless another process was quicker; not one this process
    // released (a look still under way then must not leave a lock behind it).
    if (lock === undefined && released) return { held: false, holder: undefined };
    if (lock === undefined) {
      if (await remake()) return { held: true, remade: true };
      // Another process was quicker, or this one's other look, which found the lock gone just before this one did.
      const now = await current();
      return now?.holder?.token === self.token ? { held: true, remade: true } : { held: false, holder: now?.holder };
    }
    return lock.holder?.token === self.token ? { held: true } : { held: false, holder: lock.holder };
  }

  return {
    path,
    leaseMs,

    async tryAcquire(): Promise<AcquireResult> {
      if (await create()) return { acquired: true };
      const lock = await current();
      if (lock === undefined) return (await create()) ? { acquired: true } : { acquired: false, holder: undefined, expiresInMs: leaseMs };
      const gone = lock.holder !== undefined && holderGone(lock.holder, self);
      if (!gone && lock.ageMs <= leaseMs) return { acquired: false, holder: lock.holder, expiresInMs: Math.max(0, leaseMs - lock.ageMs) };
      await removeStale(lock, gone);
      // Another standby may have been quicker: then it holds the new lock, and this one waits.
      if (await create()) return { acquired: true, tookOver: lock.holder, ...(gone ? { holderGone: true as const } : {}) };
      const now = await current();
      return { acquired: false, holder: now?.holder, expiresInMs: leaseMs };
    },

    check,

    async renew() {
      let handle;
      try {
        handle = await open(path, 'r+');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return check();
        throw err;
      }
      try {
        const holder = parseHolder(await handle.readFile('utf8'));
        if (holder?.token !== self.token) return { held: false, holder };
        // The same bytes written over themselves, not a truncated file written again: on a full file
        // system that would leave the lock empty, and read back as another process's. And they go to
        // the lock whose token was just read, never to one another process made meanwhile.
        await handle.write(text(), 0);
        return { held: true };
      } finally {
        await handle.close();
      }
    },

    async release(): Promise<void> {
      released = true;
      const lock = await current().catch(() => undefined);
      if (lock?.holder?.token === self.token) await unlink(path).catch(() => undefined);
    },
  };
}
