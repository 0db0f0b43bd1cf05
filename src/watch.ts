import type { Logger } from 'pino';
import type { Config } from './config.js';
import { EXIT_CODES, errorText, exitCodeFor } from './errors.js';
import { STOP_SIGNALS } from './signals.js';
import { SECOND_SIGNAL_WAIT_MS, stateCallsInFlight, stateCallsSettleWithin, StateUnansweredError } from './state/exit-bound.js';
import { stateFileTarget } from './state/state-store.js';
import { startWithConfig } from './tracing.js';

export interface WatchOptions {
  readonly config: Config;
  readonly logger: Logger;
}

/**
 * `prefect-otel watch`: follow the event stream until SIGINT/SIGTERM/SIGHUP, then stop reading, persist
 * state, flush exports and exit 0. A second signal exits at once (1), or, when a call on the state
 * file's file system is still in flight SECOND_SIGNAL_WAIT_MS after it, says which and ends the
 * process by SIGKILL. A last save of the state file, or the release of its lock, stuck on a file
 * system that does not answer is given up after STATE_EXIT_TIMEOUT_MS: said, then the process ends
 * by SIGKILL. After SIGHUP the process then ends
 * by that signal, as a hung-up process does: its terminal may be gone, and Node's own teardown
 * aborts when it cannot restore a terminal that hung up.
 */
export async function runWatch(options: WatchOptions): Promise<number> {
  const handle = startWithConfig(options.config, { logger: options.logger });
  let signals = 0;
  let hungUp = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals === 1 && signal === 'SIGHUP') hungUp = true;
    if (signals === 2) {
      secondSignal(signal, options);
      return;
    }
    // A third signal while the second one waits: that wait is bounded, and ends the process either way.
    if (signals > 2) return;
    options.logger.info({ signal }, 'signal received');
    void handle.shutdown();
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  try {
    await handle.done;
    return EXIT_CODES.OK;
  } catch (err) {
    if (err instanceof StateUnansweredError) {
      // A call on the state file's file system is stuck on a thread that Node would wait for at
      // exit, for ever: the process can only end by a signal, one that nothing can hold up.
      endByKill(errorText(err), options.logger);
    }
    process.stderr.write(`prefect-otel: ${errorText(err)}\n`);
    return exitCodeFor(err);
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
    if (hungUp) {
      options.logger.flush();
      process.kill(process.pid, 'SIGHUP');
    }
  }
}

/** The process ended by SIGKILL, as it cannot exit while a call on its file system is stuck; `message` said first. */
function endByKill(message: string, logger: Logger): void {
  process.stderr.write(`prefect-otel: ${message} (ending by SIGKILL: a process cannot exit while a call on its file system is stuck)\n`);
  logger.flush();
  process.kill(process.pid, 'SIGKILL');
}

/**
 * A second signal: exit at once (1), without waiting for the shutdown. A call on the state file still
 * in flight is waited for SECOND_SIGNAL_WAIT_MS at most (`process.exit()` would wait for it for
 * ever); one still in flight then is said, with its step, and the process ends by SIGKILL.
 */
function secondSignal(signal: NodeJS.Signals, options: WatchOptions): void {
  const exit = (): void => {
    options.logger.warn({ signal }, 'second signal: exiting without waiting');
    options.logger.flush();
    process.exit(EXIT_CODES.FAILURE);
  };
  if (stateCallsInFlight().length === 0) {
    exit();
    return;
  }
  void stateCallsSettleWithin(SECOND_SIGNAL_WAIT_MS).then((settled) => {
    if (settled) {
      exit();
      return;
    }
    const steps = stateCallsInFlight();
    const message = `second signal while a call on the state file's file system does not answer (${steps.join(', ')}): exiting without waiting`;
    options.logger.error({ component: 'watch', signal, steps, path: stateFileTarget(options.config.stateFile), waitedMs: SECOND_SIGNAL_WAIT_MS }, message);
    endByKill(message, options.logger);
  });
}
