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
 * How long a second signal waits for the state file's calls in flight before `watch` ends the
 * process by SIGKILL. The rule is "a call still in flight this long after the second signal is
 * stuck": a second signal means now, and `process.exit()` would wait for such a call for ever (Node
 * waits for its threads at exit), while ending by SIGKILL as soon as any call is in flight would turn
 * the few milliseconds of a healthy journal line or lock renewal into a kill said as a stuck file
 * system. A file system that answers does so well within this; one that does not never does, so the
 * outcome depends on the file system, not on when the signal comes (nor on how long the call was in
 * flight before it). Killing the process mid-save loses no more than a kill does: a save goes
 * through a temp file renamed over the state file, and a journal line cut short is ignored.
 */
export const SECOND_SIGNAL_WAIT_MS = 1_000;

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

/**
 * The state file's calls in flight in this process (a save, a journal line, a look at the lock, its
 * renewal or release, the reads at start), each under the step it does, from its start until it
 * settles. A process cannot exit while one of them is stuck on its file system: `watch` looks here
 * when a second signal asks it to exit at once.
 */
const inFlight = new Map<symbol, string>();
let whenIdle: { readonly promise: Promise<void>; readonly resolve: () => void } | undefined;

/**
 * `target` with each method named in `steps` counted in flight, under that step, while its promise
 * is pending; everything else as it is. A call that never settles (its file system does not answer)
 * stays in flight for good.
 */
export function inFlightCalls<T extends object>(target: T, steps: { readonly [K in keyof T]?: string }): T {
  const counted: Record<string, unknown> = {};
  for (const [name, step] of Object.entries(steps) as [string, string][]) {
    const method = (target as Record<string, unknown>)[name];
    if (typeof method !== 'function') continue;
    counted[name] = (...args: unknown[]): Promise<unknown> => {
      const call = Symbol(step);
      inFlight.set(call, step);
      // A throw as well as a rejection settles it.
      const settled = (async () => await (method as (...a: unknown[]) => unknown).apply(target, args))();
      return settled.finally(() => {
        inFlight.delete(call);
        if (inFlight.size === 0 && whenIdle !== undefined) {
          whenIdle.resolve();
          whenIdle = undefined;
        }
      });
    };
  }
  return { ...target, ...counted };
}

/** The steps of the state file's calls in flight now, each once, oldest first; empty when none is. */
export function stateCallsInFlight(): string[] {
  return [...new Set(inFlight.values())];
}

/**
 * Whether no state-file call is in flight any more within `ms`: true as soon as none is (at once
 * when none is now), false when one still is after `ms`. A call started meanwhile is waited for too.
 */
export async function stateCallsSettleWithin(ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (inFlight.size > 0) {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    if (whenIdle === undefined) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      whenIdle = { promise, resolve };
    }
    if (!(await settlesWithin(whenIdle.promise, left))) return false;
  }
  return true;
}
