import type { Logger } from 'pino';
import type { Config } from './config.js';
import { EXIT_CODES, errorText, exitCodeFor } from './errors.js';
import { STOP_SIGNALS } from './signals.js';
import { StateUnansweredError } from './state/exit-bound.js';
import { startWithConfig } from './tracing.js';

export interface WatchOptions {
  readonly config: Config;
  readonly logger: Logger;
}

/**
 * `prefect-otel watch`: follow the event stream until SIGINT/SIGTERM/SIGHUP, then stop reading, persist
 * state, flush exports and exit 0. A second signal exits at once. A last save of the state file, or
 * the release of its lock, stuck on a file system that does not answer is given up after
 * STATE_EXIT_TIMEOUT_MS: said, then the process ends by SIGKILL. After SIGHUP the process then ends
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
    if (signals > 1) {
      options.logger.warn({ signal }, 'second signal: exiting without waiting');
      options.logger.flush();
      process.exit(EXIT_CODES.FAILURE);
    }
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
      process.stderr.write(`prefect-otel: ${errorText(err)} (ending by SIGKILL: a process cannot exit while a call on its file system is stuck)\n`);
      options.logger.flush();
      process.kill(process.pid, 'SIGKILL');
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
