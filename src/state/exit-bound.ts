/**
 * The bound on the state file's work at exit. A file system that stops answering (an NFS server
 * gone, a frozen or full disk) holds a call (open, write, fsync, rename, a read of the lock) on a
 * libuv thread for ever: a shutdown that awaits it never ends, and the service manager kills the
 * process after its grace period with nothing in the log to say why. Node also waits for those
 * threads when the process exits (`process.exit()` or the end of the event loop), so a process
 * that gave up on such a call can only end by a signal.
 */

/**
 * How long the last save of the state file and the release of its lock may take at exit (and, when
 * the state file is still being locked or read at start, that start), as the collector gets 10 s:
 * with the event stream's 2 s, a stop stays within 22 s, inside a 30 s grace period.
 */
export const STATE_EXIT_TIMEOUT_MS = 10_000;

/**
 * The state file's work at exit did not finish within STATE_EXIT_TIMEOUT_MS: a call on its file
 * system is stuck. The process cannot exit normally while it is (Node waits for the thread that
 * holds it): `watch` ends by SIGKILL once it has said so.
 */
export class StateUnansweredError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateUnansweredError';
  }
}

/** Whether `work` settled within `ms` (its outcome is the caller's to look at); a work still running then is left to run. */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([work.then(() => true, () => true), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
