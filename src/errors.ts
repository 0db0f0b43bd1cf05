/** Stable error codes; the CLI maps them to exit codes (config → 2, everything else → 1). */
export const ERROR_CODES = {
  CONFIG: 'PREFECT_OTEL_CONFIG',
  AUTH: 'PREFECT_OTEL_AUTH',
  PROTOCOL: 'PREFECT_OTEL_PROTOCOL',
  EXPORT: 'PREFECT_OTEL_EXPORT',
  INPUT: 'PREFECT_OTEL_INPUT',
} as const;

/** What a caught value says: an Error's message, anything else as a string. */
export const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

export class PrefectOtelError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Every configuration problem found at once; the CLI prints them all and exits 2. */
export class ConfigError extends PrefectOtelError {
  readonly problems: readonly string[];
  /** What was only warned of (an OTEL_* variable that fell back, say): said with the problems, so one run shows everything to fix. */
  readonly warnings: readonly string[];
  constructor(problems: readonly string[], warnings: readonly string[] = []) {
    super(ERROR_CODES.CONFIG, `invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.problems = [...problems];
    this.warnings = [...warnings];
  }
}

/** The Prefect server refused our credentials; retrying cannot help. */
export class AuthError extends PrefectOtelError {
  readonly setting: string;
  constructor(message: string, setting: string) {
    super(ERROR_CODES.AUTH, message);
    this.setting = setting;
  }
}

/** The server spoke something other than Prefect's event protocol. */
export class ProtocolError extends PrefectOtelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ERROR_CODES.PROTOCOL, message, options);
  }
}

/** Spans could not be delivered to the collector. */
export class ExportError extends PrefectOtelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ERROR_CODES.EXPORT, message, options);
  }
}

/** An input file could not be read at all (a bad line inside it is skipped, not thrown). */
export class InputError extends PrefectOtelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ERROR_CODES.INPUT, message, options);
  }
}

export const EXIT_CODES = { OK: 0, FAILURE: 1, CONFIG: 2, AUTH: 3 } as const;

export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError) return EXIT_CODES.CONFIG;
  if (err instanceof AuthError) return EXIT_CODES.AUTH;
  return EXIT_CODES.FAILURE;
}
