/**
 * `node --import prefect-otel/register app.js`: start prefect-otel from the environment inside an
 * existing Node process. It never keeps that process alive by itself: when the application's own
 * work is done (`beforeExit`) it persists state and flushes, and the process exits as it would have.
 * On SIGINT/SIGTERM/SIGHUP it does the same, then lets the signal take its usual course (unless the
 * application handles that signal itself). A SIGHUP the application handles itself (a reload) does
 * not stop it.
 *
 * Only the main thread starts it. Node runs `--import` modules again in every worker thread, the
 * application's and prefect-otel's own export thread alike; an instance there would follow the
 * stream a second time, export every span again and write the same state file.
 *
 * `OTEL_SDK_DISABLED=true` switches it off, as it does every OpenTelemetry SDK (and the SDK's own
 * `--import …/register`): whoever disables telemetry for an application disables this too.
 */
import { isMainThread } from 'node:worker_threads';
import { ConfigError, errorText } from './errors.js';
import { startPrefectTracing, type PrefectTracingHandle } from './tracing.js';
import { STOP_SIGNALS } from './signals.js';

/** The OpenTelemetry spec's boolean: `true` in any case is true, anything else false. */
const SDK_DISABLED = process.env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true';

let handle: PrefectTracingHandle | undefined;
if (isMainThread && !SDK_DISABLED) {
  try {
    handle = startPrefectTracing({ keepAlive: false });
  } catch (err) {
    // Said as the CLI says it: the problems, and what was only warned of, so one start shows everything to fix.
    if (err instanceof ConfigError) process.stderr.write(`prefect-otel/register: ${err.message}\n${warningsText(err.warnings)}`);
    // Anything else is prefect-otel's own failure: said, and the application runs on without it
    // rather than dying while its modules load.
    else process.stderr.write(`prefect-otel/register: could not start, the application runs without it: ${errorText(err)}\n`);
  }
}

if (handle !== undefined) {
  const h = handle;
  // What stops prefect-otel while the application runs on (a state file set that cannot be used,
  // credentials refused) is said where a start's problems are, not only in prefect-otel's own log.
  h.done.catch((err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`prefect-otel/register: ${err.message}\n`);
    else process.stderr.write(`prefect-otel/register: stopped, the application runs on without it: ${errorText(err)}\n`);
  });
  const onSignal = (signal: NodeJS.Signals): void => {
    // Whether the application handles this signal is known now, not after the shutdown: a handler
    // it added with `process.once` is gone by then, and re-raising the signal would kill the
    // process in the middle of the application's own graceful stop. This listener comes first
    // (prepended), so every other listener of this signal is still registered here.
    const handledByApp = process.listenerCount(signal) > 1;
    // An application that handles SIGHUP itself uses it to reload (its configuration, its log
    // files) and runs on: so does prefect-otel. Without a handler of its own, SIGHUP ends the process.
    if (signal === 'SIGHUP' && handledByApp) return;
    process.off(signal, onSignal);
    void h.shutdown().finally(() => {
      if (!handledByApp && process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  };
  for (const signal of STOP_SIGNALS) process.prependListener(signal, onSignal);
  process.once('beforeExit', () => void h.shutdown());
}

/** The warnings of a configuration that also has problems, as the CLI lists them after the problems. */
function warningsText(warnings: readonly string[]): string {
  return warnings.length === 0 ? '' : `also (warnings):\n  - ${warnings.join('\n  - ')}\n`;
}

export const prefectTracing: PrefectTracingHandle | undefined = handle;
