/**
 * Failures as every log line carries them: one object under `err`, pino's shape (what its
 * `stdSerializers.err` writes, and what `@elastic/ecs-pino-format` maps to ECS `error.type`,
 * `error.message` and `error.stack_trace`). A log store maps a key's type once (Elasticsearch,
 * OpenSearch, Loki's JSON parser), so `err` is never a string on one line and an object on the next.
 */

/** `type`: the error's class (`Error` for a failure known only as text); `stack`: only for a thrown Error that has one. */
export interface ErrFields {
  readonly type: string;
  readonly message: string;
  readonly stack?: string;
}

const same = (text: string): string => text;

/**
 * `err` as a log line shows it: an Error as its class, message and stack; a failure described in
 * text (an HTTP answer, a timeout) as an `Error` with that message; anything else thrown as its
 * text. `redact` is applied to the message and the stack.
 */
export function errFields(err: unknown, redact: (text: string) => string = same): ErrFields {
  if (isErrFields(err)) return redact === same ? err : { ...err, message: redact(err.message), ...(err.stack === undefined ? {} : { stack: redact(err.stack) }) };
  if (err instanceof Error) {
    const type = typeof err.name === 'string' && err.name !== '' ? err.name : 'Error';
    const message = typeof err.message === 'string' ? err.message : String(err.message);
    return typeof err.stack === 'string' && err.stack !== '' ? { type, message: redact(message), stack: redact(err.stack) } : { type, message: redact(message) };
  }
  return { type: 'Error', message: redact(typeof err === 'string' ? err : safeText(err)) };
}

/**
 * An expected failure (a file that cannot be written, an answer that is not one): its class and
 * message, no stack, which would only say where prefect-otel noticed it.
 */
export function failureFields(err: unknown, redact: (text: string) => string = same): ErrFields {
  const { type, message } = errFields(err, redact);
  return { type, message };
}

/**
 * An error's `code` as log lines carry it: always a string (`PREFECT_OTEL_AUTH`, `ECONNREFUSED`);
 * a numeric one (an HTTP status) as its digits. Undefined when it has none. A websocket close code
 * is `closeCode` and an HTTP status `status`, both numbers: never `code`.
 */
export function errorCode(err: unknown): string | undefined {
  const code = err !== null && typeof err === 'object' ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : typeof code === 'number' ? String(code) : undefined;
}

/** pino's serializer for `err`: every logger prefect-otel writes through (its own, or a host application's) has it. */
export const ERR_SERIALIZERS = { err: (value: unknown): ErrFields => errFields(value) };

function isErrFields(value: unknown): value is ErrFields {
  if (value === null || typeof value !== 'object' || value instanceof Error || Object.getPrototypeOf(value) !== Object.prototype) return false;
  const v = value as Record<string, unknown>;
  return typeof v.type === 'string' && typeof v.message === 'string' && (v.stack === undefined || typeof v.stack === 'string');
}

function safeText(value: unknown): string {
  try {
    return String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}
