/**
 * A bounded delivery queue in front of an exporter. Producers never wait: items are queued and
 * sent in batches, one request at a time; a failed batch goes back to the front and is retried
 * with backoff while the queue keeps accepting work; when the bound (items or bytes) is reached,
 * the oldest items are dropped and counted. A batch the collector rejects for good (a 4xx other
 * than 408/429) is dropped and counted, not retried forever. A batch refused as too large (413 from a
 * proxy, or the OpenTelemetry Collector's 400 "request body too large": a body size limit) is sent again in halves; only a single item too large is
 * dropped, and later batches stay under the size that was refused.
 */
import { errorText } from '../errors.js';

/**
 * A send's outcome. `rejected`: of a batch the collector took, how many items it refused (an OTLP
 * partial success), with its message in `error`.
 */
export type SendResult =
  | { ok: true; rejected?: number; error?: string }
  /** `tooLarge`: the collector refused the request for its size (HTTP 413, or the Collector's 400 "request body too large"); a smaller one may pass. */
  | { ok: false; retryable: boolean; error: string; tooLarge?: boolean };

export interface DeliveryOptions<T> {
  readonly name: string;
  readonly send: (batch: T[]) => Promise<SendResult>;
  /** Release the sender once the queue is shut down, waiting at most `timeoutMs` for its last batch (undefined: as long as it takes). */
  readonly close?: (timeoutMs?: number) => Promise<void>;
  readonly sizeOf: (item: T) => number;
  readonly maxItems: number;
  readonly maxBytes: number;
  readonly batchSize: number;
  readonly scheduleDelayMs: number;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** Called after each delivered batch (latency measurement, hooks). */
  readonly onDelivered?: (batch: readonly T[]) => void;
  /** Called when items are dropped (bound) or rejected (permanent error). Aggregate before logging. */
  readonly onLoss?: (kind: 'dropped' | 'rejected', count: number, error: string | undefined) => void;
  readonly onFailure?: (error: string, willRetryInMs: number) => void;
  readonly onRecovered?: (afterFailures: number) => void;
  /** Called when a batch was too large for the collector and batches are now cut at `maxBatchBytes` (estimated). */
  readonly onTooLarge?: (error: string, items: number, maxBatchBytes: number) => void;
  /**
   * After a batch refused for good, with nothing left to send: ask the collector again with an empty
   * request, with backoff, until it takes one, so that `failing` ends when the collector accepts
   * exports again rather than at the next batch, which a quiet stream may not have for hours.
   */
  readonly recheckAfterRefusal?: boolean;
}

export interface DeliveryStats {
  queued: number;
  queuedBytes: number;
  inFlight: number;
  delivered: number;
  dropped: number;
  rejected: number;
  failedAttempts: number;
  lastSuccessMs: number | undefined;
  lastError: string | undefined;
  /**
   * True while the last attempt failed and a retry is pending, or since a batch was refused for good
   * until the collector takes a request again (`recheckAfterRefusal`: an empty one, when nothing is queued).
   */
  failing: boolean;
}

export interface FlushResult {
  readonly ok: boolean;
  readonly pending: number;
}

export interface Delivery<T> {
  enqueue(item: T): void;
  /**
   * Queue `item` only if it fits within both bounds (an empty queue takes any item); false: it was
   * not queued and nothing was dropped, the caller keeps it and offers it again later. A shut-down
   * queue takes it to drop and count it, as `enqueue` does.
   */
  offer(item: T): boolean;
  /** Send everything queued; resolves when the queue is empty, or with `ok: false` at the deadline. */
  flush(timeoutMs: number): Promise<FlushResult>;
  /**
   * Flush, then refuse further items and release the sender, waiting at most `closeTimeoutMs` for a
   * batch still out (undefined: until it is answered).
   */
  shutdown(timeoutMs: number, closeTimeoutMs?: number): Promise<FlushResult>;
  /** Items still queued and the batch still out, taken away (for the state file at shutdown). */
  drainQueued(): T[];
  /** The same items, left where they are (for the periodic save of the state file). */
  peekQueued(): T[];
  readonly stats: Readonly<DeliveryStats>;
}

const INITIAL_BACKOFF_MS = 1_000;
const MAX_BACKOFF_MS = 30_000;
const BACKOFF_MULTIPLIER = 2;

export function createDelivery<T>(options: DeliveryOptions<T>): Delivery<T> {
  /**
   * The items from `head` on; the places before it are emptied as items leave (sent or dropped), so
   * that what left is let go at once rather than when the array is next compacted.
   */
  const queue: ({ item: T; bytes: number } | undefined)[] = [];
  let head = 0;
  let sending = false;
  /** The batch being sent, until its answer. */
  let inFlight: { item: T; bytes: number }[] = [];
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let backoffMs = options.initialBackoffMs ?? INITIAL_BACKOFF_MS;
  let consecutiveFailures = 0;
  let retryAt = 0;
  let flushing = 0;
  /** The empty request of `recheckAfterRefusal`: its timer, whether it is out, and its backoff. */
  let recheckTimer: NodeJS.Timeout | undefined;
  let rechecking = false;
  let recheckBackoffMs = options.initialBackoffMs ?? INITIAL_BACKOFF_MS;
  /** Estimated bytes a batch may hold, learnt from the collector's 413 answers. */
  let maxBatchBytes = Infinity;
  const waiters = new Set<() => void>();
  const stats: DeliveryStats = {
    queued: 0, queuedBytes: 0, inFlight: 0, delivered: 0, dropped: 0, rejected: 0, failedAttempts: 0,
    lastSuccessMs: undefined, lastError: undefined, failing: false,
  };

  const compact = (): void => {
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
  };

  const enforceBound = (): void => {
    let dropped = 0;
    while (stats.queued > 0 && (stats.queued > options.maxItems || stats.queuedBytes > options.maxBytes)) {
      const entry = queue[head]!;
      queue[head++] = undefined;
      stats.queued -= 1;
      stats.queuedBytes -= entry.bytes;
      dropped += 1;
    }
    compact();
    if (dropped > 0) {
      stats.dropped += dropped;
      options.onLoss?.('dropped', dropped, undefined);
    }
  };

  const notify = (): void => {
    for (const w of [...waiters]) w();
  };

  const schedule = (delayMs: number): void => {
    if (timer !== undefined || sending) return;
    timer = setTimeout(() => {
      timer = undefined;
      void pump(true);
    }, delayMs);
    timer.unref();
  };

  const scheduleRecheck = (): void => {
    if (options.recheckAfterRefusal !== true || recheckTimer !== undefined || rechecking || closed || !stats.failing) return;
    const delay = Math.round(recheckBackoffMs * (0.5 + Math.random() / 2));
    recheckBackoffMs = Math.min(options.maxBackoffMs ?? MAX_BACKOFF_MS, recheckBackoffMs * BACKOFF_MULTIPLIER);
    recheckTimer = setTimeout(() => {
      recheckTimer = undefined;
      void recheck();
    }, delay);
    recheckTimer.unref();
  };

  /** Whether the collector takes a request again, asked with an empty one while nothing else is to be sent. */
  const recheck = async (): Promise<void> => {
    // A batch to send answers the question itself.
    if (sending || closed || !stats.failing || stats.queued > 0) return;
    rechecking = true;
    let result: SendResult;
    try {
      result = await options.send([]);
    } catch (err) {
      result = { ok: false, retryable: true, error: errorText(err) };
    }
    rechecking = false;
    if (closed) return;
    // A batch sent meanwhile decided it already.
    if (stats.failing) {
      if (result.ok) {
        stats.failing = false;
        recheckBackoffMs = options.initialBackoffMs ?? INITIAL_BACKOFF_MS;
      } else scheduleRecheck();
    }
    if (stats.queued > 0) void pump(flushing > 0 || stats.queued >= options.batchSize);
  };

  const pump = async (force: boolean): Promise<void> => {
    if (sending || rechecking) return;
    const now = Date.now();
    if (now < retryAt) {
      schedule(retryAt - now);
      return;
    }
    if (stats.queued === 0) {
      notify();
      return;
    }
    if (!force && stats.queued < options.batchSize) {
      schedule(options.scheduleDelayMs);
      return;
    }
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    sending = true;
    let n = Math.min(options.batchSize, stats.queued);
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      const b = queue[head + i]!.bytes;
      if (i > 0 && bytes + b > maxBatchBytes) n = i;
      else bytes += b;
    }
    const entries = queue.slice(head, head + n) as { item: T; bytes: number }[];
    queue.fill(undefined, head, head + n);
    head += n;
    stats.queued -= n;
    stats.queuedBytes -= bytes;
    stats.inFlight = n;
    inFlight = entries;
    compact();
    let result: SendResult;
    try {
      result = await options.send(entries.map((e) => e.item));
    } catch (err) {
      result = { ok: false, retryable: true, error: errorText(err) };
    }
    stats.inFlight = 0;
    inFlight = [];
    sending = false;
    if (result.ok) {
      const refused = result.rejected ?? 0;
      stats.delivered += n - refused;
      if (refused > 0) {
        stats.rejected += refused;
        stats.lastError = result.error;
        options.onLoss?.('rejected', refused, result.error);
      }
      stats.lastSuccessMs = Date.now();
      if (consecutiveFailures > 0) options.onRecovered?.(consecutiveFailures);
      consecutiveFailures = 0;
      stats.failing = false;
      backoffMs = options.initialBackoffMs ?? INITIAL_BACKOFF_MS;
      recheckBackoffMs = backoffMs;
      options.onDelivered?.(entries.map((e) => e.item));
    } else if (result.tooLarge === true && n > 1 && !closed) {
      // Not a failure of the collector: the same items go again at once, in smaller requests.
      queue.splice(head, 0, ...entries);
      stats.queued += n;
      stats.queuedBytes += bytes;
      maxBatchBytes = Math.max(1, Math.floor(bytes / 2));
      options.onTooLarge?.(result.error, n, maxBatchBytes);
      void pump(true);
      return;
    } else if (!result.retryable) {
      stats.rejected += n;
      stats.lastError = result.error;
      // Spans refused for good (a wrong credential, a 413) are failing exports too, for /healthz,
      // until the collector takes a request again (see `recheckAfterRefusal`).
      stats.failing = true;
      options.onLoss?.('rejected', n, result.error);
    } else {
      queue.splice(head, 0, ...entries);
      stats.queued += n;
      stats.queuedBytes += bytes;
      if (closed) {
        // Cut off by shutdown: not an attempt that failed, and there is no retry. The batch waits
        // for drainQueued (the state file); the collector's last answer stays the error.
        notify();
        return;
      }
      stats.failedAttempts += 1;
      stats.lastError = result.error;
      stats.failing = true;
      consecutiveFailures += 1;
      const jittered = Math.round(backoffMs * (0.5 + Math.random() / 2));
      retryAt = Date.now() + jittered;
      options.onFailure?.(result.error, jittered);
      backoffMs = Math.min(options.maxBackoffMs ?? MAX_BACKOFF_MS, backoffMs * BACKOFF_MULTIPLIER);
      enforceBound();
    }
    if (stats.queued === 0) {
      scheduleRecheck();
      notify();
      return;
    }
    void pump(flushing > 0 || stats.queued >= options.batchSize);
  };

  const flush = async (timeoutMs: number): Promise<FlushResult> => {
    flushing += 1;
    try {
      const deadline = Date.now() + timeoutMs;
      while (stats.queued > 0 || sending) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        if (!sending) {
          if (retryAt > Date.now()) retryAt = Math.min(retryAt, Date.now() + Math.min(left, backoffMs));
          void pump(true);
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(done, Math.min(left, 50));
          function done(): void {
            clearTimeout(t);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
        });
      }
      return { ok: stats.queued === 0 && !sending, pending: stats.queued + stats.inFlight };
    } finally {
      flushing -= 1;
    }
  };

  const push = (item: T, bytes: number): void => {
    queue.push({ item, bytes });
    stats.queued += 1;
    stats.queuedBytes += bytes;
    if (stats.queued > options.maxItems || stats.queuedBytes > options.maxBytes) enforceBound();
    if (!sending) {
      if (stats.queued >= options.batchSize && Date.now() >= retryAt) void pump(true);
      else schedule(Math.max(options.scheduleDelayMs, retryAt - Date.now()));
    }
  };

  const refuseClosed = (): void => {
    stats.dropped += 1;
    options.onLoss?.('dropped', 1, 'delivery is shut down');
  };

  return {
    enqueue(item: T): void {
      if (closed) refuseClosed();
      else push(item, options.sizeOf(item));
    },
    offer(item: T): boolean {
      if (closed) {
        refuseClosed();
        return true;
      }
      const bytes = options.sizeOf(item);
      if (stats.queued > 0 && (stats.queued + 1 > options.maxItems || stats.queuedBytes + bytes > options.maxBytes)) return false;
      push(item, bytes);
      return true;
    },
    flush,
    async shutdown(timeoutMs: number, closeTimeoutMs?: number): Promise<FlushResult> {
      const result = await flush(timeoutMs);
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      if (recheckTimer !== undefined) clearTimeout(recheckTimer);
      await options.close?.(closeTimeoutMs);
      return result;
    },
    peekQueued(): T[] {
      return [...inFlight, ...queue.slice(head)].map((e) => e!.item);
    },
    drainQueued(): T[] {
      // The batch still out goes too: its answer may never come (the process is stopping), and a
      // span sent twice is better than a span lost.
      const items = [...inFlight, ...queue.slice(head)].map((e) => e!.item);
      inFlight = [];
      queue.length = 0;
      head = 0;
      stats.queued = 0;
      stats.queuedBytes = 0;
      return items;
    },
    stats,
  };
}
