#!/usr/bin/env node
import { constants as osConstants } from 'node:os';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { closestName, describeConfig, resolveConfig, SETTINGS, type Config, type PrefectTracingOptions, type SettingDef, type SettingKey } from './config.js';
import { ConfigError, EXIT_CODES, exitCodeFor, PrefectOtelError } from './errors.js';
import { HealthListenError } from './health.js';
import { routeDiagToLogger } from './log/diag.js';
import { createLogger } from './log/logger.js';
import { STOP_SIGNALS } from './signals.js';
import { SECOND_SIGNAL_WAIT_MS, STATE_EXIT_TIMEOUT_MS } from './state/exit-bound.js';
import { VERSION } from './version.js';

const COMMANDS = ['watch', 'replay', 'demo', 'help', 'version'] as const;
type Command = (typeof COMMANDS)[number];

export interface ParsedArgs {
  readonly command: Command;
  readonly file: string | undefined;
  readonly options: PrefectTracingOptions;
  readonly problems: readonly string[];
  /** `help`: the command whose usage is asked for (`replay --help`, `help replay`), if any. */
  readonly helpFor?: 'watch' | 'replay' | 'demo';
  /** The command as the command line named it (`watch`, `replay`, `demo`); undefined when none was (watch by default) or it was no command. */
  readonly named?: 'watch' | 'replay' | 'demo';
}

/** The --help column of flags: as wide as the longest. */
const FLAG_COLUMN = Math.max(...Object.values(SETTINGS).map((d) => d.flag.length));
const FLAG_TO_KEY = new Map(Object.entries(SETTINGS).map(([key, def]) => [def.flag, key]));
/** A setting's flag by each of its variables' names (`PREFECT_API_URL` → `--api-url`). */
const VARIABLE_TO_FLAG = new Map(Object.values(SETTINGS).flatMap((def) => def.env.map((name) => [name, def.flag] as const)));

/** `prefect-otel [watch|replay FILE|demo] [--flag value | --flag=value]… [-- FILE]`; every setting has a flag. */
export function parseArgs(argv: readonly string[]): ParsedArgs {
  const problems: string[] = [];
  const options: Record<string, unknown> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      // The end of the options, as for every command line tool: what follows is a file (`replay -- --odd-name`).
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (arg === '-h' || arg === '--help') {
      positional.unshift('help');
      continue;
    }
    if (arg === '-v' || arg === '--version') {
      positional.unshift('version');
      continue;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const flag = eq === -1 ? arg : arg.slice(0, eq);
      const key = FLAG_TO_KEY.get(flag);
      if (key === undefined) {
        // Every option takes a value: the next argument is this one's (a mistyped --api-key's key,
        // say), so it is neither echoed nor read as a command; unless it is a command's name
        // (`--bogus replay events.jsonl`).
        const next = argv[i + 1];
        if (eq === -1 && next !== undefined && !next.startsWith('-') && !(COMMANDS as readonly string[]).includes(next)) i += 1;
        problems.push(unknownOption(flag));
        continue;
      }
      const next = argv[i + 1];
      // A true/false flag alone is true (`--api-tls-insecure-skip-verify replay -`), as on every
      // command line: the next argument is its value only when it is one (`--flag false`).
      if (eq === -1 && typeof SETTINGS[key as SettingKey].default === 'boolean' && !isBooleanWord(next)) {
        options[key] = true;
        continue;
      }
      // `--settle-ms --batch-size 5`: the next flag is not this one's value (a value that starts
      // with `--` is given as `--flag=value`).
      const value: string | undefined = eq !== -1 ? arg.slice(eq + 1) : next === undefined || next.startsWith('--') ? undefined : next;
      if (eq === -1 && value !== undefined) i += 1;
      if (value === undefined) {
        problems.push(`${flag} needs a value`);
        continue;
      }
      options[key] = value;
      continue;
    }
    if (arg.length > 1 && arg.startsWith('-') && !/^-\d/.test(arg)) {
      // A short option (`-V`, `-x`): only -h and -v exist.
      problems.push(unknownOption(arg));
      continue;
    }
    positional.push(arg);
  }
  let command: Command = 'watch';
  let named: ParsedArgs['named'];
  const first = positional[0];
  if (first !== undefined) {
    if ((COMMANDS as readonly string[]).includes(first)) {
      command = first as Command;
      if (command === 'watch' || command === 'replay' || command === 'demo') named = command;
      positional.shift();
    } else if (first !== '-' ) {
      // A mistyped command is named with the one it is closest to (`wacth`: watch).
      const meant = shown(first).startsWith('"') ? closestName(first, COMMANDS) : undefined;
      problems.push(`unknown command ${shown(first)} (${meant === undefined ? 'commands: watch, replay FILE, demo' : `did you mean ${meant}?`})`);
      positional.shift();
    }
  }
  let file: string | undefined;
  if (command === 'replay') {
    file = positional.shift();
    if (file === undefined) problems.push('replay needs a FILE argument (use - for standard input)');
    // `replay events-*.jsonl`: said once, however many files the shell gave.
    else if (positional.length > 0) {
      problems.push('unexpected argument after FILE (not shown: it may be a secret): replay reads one file; to replay many, put them together: cat FILE… | prefect-otel replay -');
      positional.length = 0;
    }
  }
  if (positional.length > 0 && command !== 'help') problems.push(`unexpected argument ${shown(positional[0]!)}`);
  const asked = command === 'help' ? positional[0] : undefined;
  const helpFor = asked === 'watch' || asked === 'replay' || asked === 'demo' ? asked : undefined;
  return { command, file, options, problems, helpFor, named };
}

/** The words a true/false setting reads (as Prefect reads its own): what may follow such a flag as its value. */
const BOOLEAN_WORDS = new Set(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off']);

function isBooleanWord(arg: string | undefined): boolean {
  return arg !== undefined && BOOLEAN_WORDS.has(arg.trim().toLowerCase());
}

/**
 * An unknown option, named when it looks like one (a mistyped flag, with the flag it is closest to);
 * anything else might be a secret. `--no-<flag>`: true/false settings take a value.
 */
function unknownOption(flag: string): string {
  const meant = flagSpelledOtherwise(flag);
  if (meant !== undefined) return `unknown option ${flag} (did you mean ${meant}?)`;
  if (!/^--?[A-Za-z][A-Za-z0-9-]{0,60}$/.test(flag)) return 'unknown option (not shown: it may be a secret)';
  const negatedKey = flag.startsWith('--no-') ? FLAG_TO_KEY.get(`--${flag.slice(5)}`) : undefined;
  const negated = negatedKey === undefined ? undefined : SETTINGS[negatedKey as SettingKey];
  if (negated !== undefined && typeof negated.default === 'boolean') return `unknown option ${flag} (use ${negated.flag}=false)`;
  const close = closestName(flag.replace(/^-+/, '--').toLowerCase(), FLAG_TO_KEY.keys());
  return close === undefined ? `unknown option ${flag}` : `unknown option ${flag} (did you mean ${close}?)`;
}

/**
 * The flag an option names in another spelling: snake case or capitals (`--log_level`, as Python and
 * Prefect write names), or one of the setting's variables (`--PREFECT_API_URL`). Such an option is a
 * known name, so it is shown: it cannot be a secret.
 */
function flagSpelledOtherwise(flag: string): string | undefined {
  const name = flag.replace(/^-+/, '');
  const asFlag = `--${name.toLowerCase().replace(/_/g, '-')}`;
  return FLAG_TO_KEY.has(asFlag) ? asFlag : VARIABLE_TO_FLAG.get(name.toUpperCase().replace(/-/g, '_'));
}

/** An argument as an error message may show it: a word (a mistyped command) quoted; anything else might be a secret. */
function shown(arg: string): string {
  return /^[a-z][a-z-]{0,19}$/.test(arg) ? JSON.stringify(arg) : '(not shown: it may be a secret)';
}

/** A flag beside its variables, as --help lists them. */
const flagLine = (d: SettingDef<unknown>): string => `  ${d.flag.padEnd(FLAG_COLUMN)} ${d.env.join(' | ')}`;

/** Every flag beside its variables, as the general --help lists them. */
const FLAGS_TEXT = `Every setting is an environment variable and a flag (flag wins):
${Object.values(SETTINGS).map(flagLine).join('\n')}
`;

/** The flags a command reads, as its --help lists them; the others it accepts, and they do nothing there. */
function commandFlagsText(command: 'watch' | 'replay' | 'demo'): string {
  const defs: SettingDef<unknown>[] = Object.values(SETTINGS);
  const read = defs.filter((d) => d.commands === undefined || d.commands.includes(command));
  const others = defs.length - read.length;
  return `The settings ${command} reads; each is an environment variable and a flag (flag wins):
${read.map(flagLine).join('\n')}
${others === 0 ? '' : `(prefect-otel --help lists ${others} more: ${command} does not read them, and warns of one given as a flag)\n`}`;
}

export const USAGE = `prefect-otel ${VERSION}: Prefect flow runs and task runs as OpenTelemetry traces

Usage:
  prefect-otel [watch]        follow PREFECT_API_URL's event stream and export spans until SIGINT/SIGTERM/SIGHUP
  prefect-otel replay FILE    build and export spans from a JSON-lines file of Prefect events (- = stdin)
  prefect-otel demo           run a simulated Prefect workload through the pipeline and draw its traces
  prefect-otel [COMMAND] --help | --version

${FLAGS_TEXT}
Exit codes: 0 ok, 1 failure (export failed, input unreadable, compressed or in another text encoding, protocol error),
2 configuration error, 3 authentication refused, 130 / 143 replay stopped by SIGINT / SIGTERM.
`;

/** `prefect-otel <command> --help`: what the command does, its command line, the flags, and its own exit codes. */
export const COMMAND_USAGE: Readonly<Record<'watch' | 'replay' | 'demo', string>> = {
  watch: `prefect-otel watch: follow the event stream of PREFECT_API_URL and export spans and logs until SIGINT/SIGTERM/SIGHUP
(then save the state, flush and exit; a second signal exits at once, by SIGKILL when the state file's file system does not answer)

Usage:
  prefect-otel [watch] [--flag value | --flag=value]…

${commandFlagsText('watch')}
Exit codes: 0 stopped by SIGINT/SIGTERM, 1 failure (spans neither delivered nor kept in the state file, protocol error) or a second signal,
2 configuration error, 3 the Prefect server refused the credentials; after SIGHUP the same stop, then it ends by that signal;
SIGKILL (137) when the state file's file system leaves the last save, or the lock's release, unanswered for ${STATE_EXIT_TIMEOUT_MS / 1000} s,
or a call on it still unanswered ${SECOND_SIGNAL_WAIT_MS / 1000} s after a second signal (said first).
`,
  replay: `prefect-otel replay: build and export spans from a JSON-lines file of Prefect events
(one per line: bare events or {"type":"event","event":…} envelopes; or on one line a JSON array of events or a saved
/api/events/filter page; # lines are comments; FILE - reads standard input)

Usage:
  prefect-otel replay FILE [--flag value | --flag=value]… [-- FILE]

${commandFlagsText('replay')}
Exit codes: 0 done, 1 failure (export failed, input unreadable, compressed or in another text encoding), 2 configuration error,
3 the Prefect API refused the credentials on a run look-up (the spans delivered; subflows whose parent is not in the file
made roots, runs first seen leaving a terminal state numbered as their first rerun),
130 / 143 stopped by SIGINT / SIGTERM (what was read is delivered first; after SIGHUP the same, then it ends by that signal).
`,
  demo: `prefect-otel demo: run a simulated Prefect workload through the pipeline and draw its traces
(no Prefect server or collector needed; exported too when an OTLP endpoint or OTEL_TRACES_EXPORTER is set)

Usage:
  prefect-otel demo [--flag value | --flag=value]…

${commandFlagsText('demo')}
Exit codes: 0 done, 1 the export to the collector failed, 2 configuration error.
`,
};

/** The flags given that the command does not read (`prefect-otel <command> --help` leaves them out). */
export function unreadFlags(args: ParsedArgs): string[] {
  const command = args.command;
  if (command !== 'watch' && command !== 'replay' && command !== 'demo') return [];
  return Object.keys(args.options)
    .map((key): SettingDef<unknown> => SETTINGS[key as SettingKey])
    .filter((def) => def.commands !== undefined && !def.commands.includes(command))
    .map((def) => def.flag);
}

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const args = parseArgs(argv);
  if (args.command === 'help') {
    process.stdout.write(args.helpFor === undefined ? USAGE : COMMAND_USAGE[args.helpFor]);
    return EXIT_CODES.OK;
  }
  if (args.command === 'version') {
    process.stdout.write(`${VERSION}\n`);
    return EXIT_CODES.OK;
  }
  // Every problem at once: the arguments' and the settings' (with the options the arguments did give).
  const problems = [...args.problems];
  let warnings: readonly string[] = [];
  let config: Config | undefined;
  try {
    // On the command line an option is a flag: a problem names it as the user wrote it.
    // The demo's runs are simulated: the Prefect profile (a server, a key) is not read.
    config = resolveConfig(demoDefaults(args, env), env, (key) => SETTINGS[key].flag, [], args.command !== 'demo');
    warnings = config.warnings;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    problems.push(...err.problems);
    warnings = err.warnings;
  }
  if (config === undefined || problems.length > 0) {
    const warned = warnings.length === 0 ? '' : `also (warnings):\n  - ${warnings.join('\n  - ')}\n`;
    // A mistake on the command line points at the usage of the command it was for; the usage itself
    // (dozens of lines) would push the problems off the top of the terminal.
    const pointer = args.problems.length > 0 ? `Run 'prefect-otel ${args.named === undefined ? '' : `${args.named} `}--help' for the usage.\n` : '';
    process.stderr.write(`prefect-otel: ${new ConfigError(problems).message}\n${warned}\n${pointer}`);
    return EXIT_CODES.CONFIG;
  }
  const logger = createLogger({ level: config.log.level, format: config.log.format });
  routeDiagToLogger(logger);
  // `watch` logs them as it starts, as it does inside a host application.
  if (args.command !== 'watch') for (const w of config.warnings) logger.warn({ component: 'config' }, w);
  // A flag the command does not read would be ignored without a word (`demo --api-url …`); the
  // variables stay silent, shared by every command (a `.env` file).
  const unread = unreadFlags(args);
  if (unread.length > 0) logger.warn({ component: 'config' }, `${unread.join(', ')} ${unread.length === 1 ? 'is' : 'are'} not read by ${args.command}: ${unread.length === 1 ? 'it does' : 'they do'} nothing there`);
  try {
    switch (args.command) {
      case 'replay': {
        logger.debug({ component: 'config', settings: describeConfig(config) }, 'replay starting');
        const { runReplay, formatReplaySummary } = await import('./replay.js');
        // The first SIGINT/SIGTERM/SIGHUP stops reading and delivers what was read; a second one ends at once.
        const stop = new AbortController();
        let stoppedBy: NodeJS.Signals | undefined;
        const signalExit = (sig: NodeJS.Signals): number => 128 + (osConstants.signals[sig] ?? 0);
        const onSignal = (sig: NodeJS.Signals): void => {
          if (stoppedBy !== undefined) process.exit(signalExit(sig));
          stoppedBy = sig;
          stop.abort();
        };
        for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
        try {
          const summary = await runReplay({
            config,
            logger,
            file: args.file!,
            progress: { tty: process.stderr.isTTY === true, columns: () => process.stderr.columns, write: (t) => process.stderr.write(t) },
            signal: stop.signal,
          });
          process.stderr.write(`${formatReplaySummary(summary)}\n`);
          logger.flush();
          if (stoppedBy !== undefined) return signalExit(stoppedBy);
          if (!summary.exportOk) return EXIT_CODES.FAILURE;
          return summary.apiRefused === undefined ? EXIT_CODES.OK : EXIT_CODES.AUTH;
        } finally {
          for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
          // As watch: a hung-up process ends by the signal, not through Node's exit, which aborts on a terminal that hung up.
          if (stoppedBy === 'SIGHUP') process.kill(process.pid, 'SIGHUP');
        }
      }
      case 'demo': {
        const { runDemo, terminalOptions } = await import('./demo.js');
        return await runDemo({ config: demoConfig(config, args, env), logger, out: process.stdout, ...terminalOptions(process.stdout, env) });
      }
      case 'watch': {
        const { runWatch } = await import('./watch.js');
        const code = await runWatch({ config, logger });
        // Its shutdown is done: the state saved, the last lines written. A request that a collector
        // holds unanswered (the last metrics export or log records, given up on) must not keep the
        // process for its own timeout: a stop is bounded for the supervisor's grace period.
        logger.flush();
        process.exit(code);
      }
    }
  } catch (err) {
    const code = exitCodeFor(err);
    // Errors of the input or the setup are said; anything else is a defect, shown with its stack.
    const expected = err instanceof PrefectOtelError || err instanceof HealthListenError;
    const message = expected ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
    logger.fatal({ code: expected ? err.code : undefined }, message);
    logger.flush();
    process.stderr.write(`prefect-otel: ${message}\n`);
    return code;
  }
  return EXIT_CODES.OK;
}

/**
 * The demo needs no collector: unless the user points it at one (an OTLP endpoint or an explicit
 * OTEL_TRACES_EXPORTER), spans are only drawn, and log lines stay quiet so the trees can be read.
 */
function demoDefaults(args: ParsedArgs, env: NodeJS.ProcessEnv): PrefectTracingOptions {
  if (args.command !== 'demo') return args.options;
  const o: Record<string, unknown> = { ...args.options };
  // A blank variable is unset, as resolveConfig reads it.
  const unset = (v: unknown): boolean => v === undefined || (typeof v === 'string' && v.trim() === '');
  const endpointSet = [o.otlpEndpoint, o.otlpTracesEndpoint, env.OTEL_EXPORTER_OTLP_ENDPOINT, env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT].some((v) => !unset(v));
  if (o.tracesExporter === undefined && unset(env.OTEL_TRACES_EXPORTER) && !endpointSet) o.tracesExporter = 'none';
  if (o.logLevel === undefined && unset(env.PREFECT_OTEL_LOG_LEVEL)) o.logLevel = 'warn';
  if (o.logFormat === undefined && unset(env.PREFECT_OTEL_LOG_FORMAT)) o.logFormat = 'pretty';
  return o;
}

/**
 * The demo's runs are simulated: run links only from a UI URL given as such, not the one a Cloud
 * workspace's PREFECT_API_URL (which the demo does not read) would give, whose UI has none of them.
 */
function demoConfig(config: Config, args: ParsedArgs, env: NodeJS.ProcessEnv): Config {
  const given = args.options.uiUrl !== undefined || (env.PREFECT_UI_URL ?? '').trim() !== '';
  return given || config.prefect.uiUrl === undefined ? config : Object.freeze({ ...config, prefect: Object.freeze({ ...config.prefect, uiUrl: undefined }) });
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

/**
 * A reader that goes away (`prefect-otel demo | head`) is not a failure of the work: what is left to
 * print is dropped, and the spans are still delivered. Any other error of standard output is said
 * once on standard error. An error of standard error itself has nowhere to be said: a terminal that
 * closed (EIO after SIGHUP) must not end the process before it has saved its state and flushed.
 */
function tolerateClosedOutput(): void {
  let said = false;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED' || said) return;
    said = true;
    process.stderr.write(`prefect-otel: cannot write to standard output: ${err.message}\n`);
  });
  process.stderr.on('error', () => undefined);
}

if (isMain()) {
  tolerateClosedOutput();
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`prefect-otel: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = EXIT_CODES.FAILURE;
    },
  );
}
