/**
 * A trace sender whose encoding and HTTP run on a worker thread (`span-export-worker.ts`). The
 * pipeline's thread only turns a batch of span records into JSON text and posts it; the answer
 * comes back as a SendResult, so the delivery queue, its retries and its bounds stay where they
 * were. The thread is started on the first batch, holds the process open only while a batch is
 * out, and is started again on the next batch if it ever dies (the batches it held come back as
 * retryable failures). A thread that cannot start at all (its script missing from a bundle, no
 * threads allowed) is not tried again: batches are sent from the pipeline's thread instead.
 */
import { Worker } from 'node:worker_threads';
import { diag as globalDiag, type Attributes, type DiagLogger } from '@opentelemetry/api';
import type { OtlpSignalConfig } from '../config.js';
import { errorText } from '../errors.js';
import type { SpanRecord } from '../model/span-record.js';
import type { SendResult } from './delivery.js';
import type { Sender } from './exporters.js';

export interface ExportThreadInit {
  readonly signal: OtlpSignalConfig;
  readonly resourceAttributes: Attributes;
}

export type ToExportThread = { readonly type: 'send'; readonly id: number; readonly spans: string } | { readonly type: 'shutdown' };

export type FromExportThread =
  | { readonly type: 'result'; readonly id: number; readonly result: SendResult }
  | { readonly type: 'diag'; readonly level: 'error' | 'warn' | 'info' | 'debug' | 'verbose'; readonly message: string; readonly args: unknown[] }
  | { readonly type: 'ready' }
  | { readonly type: 'closed' };

/** How long a shutdown waits for the thread's exporter to close before the thread is stopped. */
const CLOSE_TIMEOUT_MS = 2_000;
/**
 * The least time given beyond an export's own bound (the signal's `timeoutMs`, retries included)
 * before a batch the thread has not answered counts as hung: the thread is busy with something else
 * (a loop, a blocking call) or its exporter's promise never settles.
 */
const MIN_ANSWER_GRACE_MS = 5_000;

/**
 * How long the thread may take to answer a batch: the export's own bound, and as much again (at
 * least `MIN_ANSWER_GRACE_MS`) for a loaded machine. Past it the thread is stopped and its batches are
 * answered as retryable failures, so that a wedged thread costs one failed attempt, seen on
 * `/healthz`, instead of every span from then on while nothing says so.
 */
export function answerWithinMs(exportTimeoutMs: number): number {
  return exportTimeoutMs + Math.max(exportTimeoutMs, MIN_ANSWER_GRACE_MS);
}

const WORKER_URL = new URL('./span-export-worker.js', import.meta.url);

interface Thread {
  readonly worker: Worker;
  /** Set once the thread has loaded and made its exporter. */
  ready: boolean;
  /** Batches posted and not answered yet, by id, with the timer that gives up on the thread if it never answers. */
  readonly pending: Map<number, { readonly items: SpanRecord[]; readonly answer: (result: SendResult) => void; readonly hung: NodeJS.Timeout }>;
  closed?: () => void;
  /** Stop a thread that left a batch unanswered for too long. */
  giveUp?: () => void;
}

export interface ThreadedSenderOptions {
  /** The sender to use on this thread when the export thread cannot start. */
  readonly fallback: () => Sender<SpanRecord>;
  /** The thread's script (tests give one that dies on cue). */
  readonly workerUrl?: URL;
  /** How long the thread may take to answer a batch before it counts as hung (default: `answerWithinMs` of the signal's timeout). */
  readonly answerWithinMs?: number;
  /**
   * Where the SDK's diagnostics from the thread, and the warning that it could not start, go: our
   * logger, so that they reach prefect-otel's log inside a host whose `diag` is its own (default: `diag`).
   */
  readonly diag?: DiagLogger;
}

export function createThreadedTraceSender(init: ExportThreadInit, options: ThreadedSenderOptions): Sender<SpanRecord> {
  let thread: Thread | undefined;
  let fallback: Sender<SpanRecord> | undefined;
  let nextId = 0;
  let shutDown = false;
  const diag = options.diag ?? globalDiag;
  const answerMs = options.answerWithinMs ?? answerWithinMs(init.signal.timeoutMs);

  const useFallback = (reason: string): Sender<SpanRecord> => {
    diag.warn(`${reason}; spans are encoded and sent on the pipeline's thread instead`);
    return (fallback = options.fallback());
  };

  const start = (): Thread => {
    const t: Thread = { worker: new Worker(options.workerUrl ?? WORKER_URL, { workerData: init }), ready: false, pending: new Map() };
    const lost = (error: string): void => {
      if (thread === t) thread = undefined;
      const held = [...t.pending.values()];
      for (const { hung } of held) clearTimeout(hung);
      t.pending.clear();
      t.closed?.();
      if (!t.ready && !shutDown && fallback === undefined) {
        const instead = useFallback(error);
        for (const { items, answer } of held) {
          instead.send(items).then(answer, (err: unknown) => answer({ ok: false, retryable: true, error: errorText(err) }));
        }
        return;
      }
      for (const { answer } of held) answer({ ok: false, retryable: true, error });
    };
    t.worker.unref();
    t.worker.on('message', (message: FromExportThread) => {
      if (message.type === 'result') {
        const batch = t.pending.get(message.id);
        t.pending.delete(message.id);
        if (batch !== undefined) clearTimeout(batch.hung);
        if (t.pending.size === 0) t.worker.unref();
        batch?.answer(message.result);
      } else if (message.type === 'diag') diag[message.level](message.message, ...message.args);
      else if (message.type === 'ready') t.ready = true;
      else t.closed?.();
    });
    t.worker.on('error', (err) => lost(`the export thread failed: ${err.message}`));
    t.worker.on('exit', (code) => lost(`the export thread stopped (exit code ${code})`));
    t.giveUp = () => {
      const error = `the export thread gave no answer within ${answerMs} ms (an export's own bound is ${init.signal.timeoutMs} ms); it is stopped, and the next batch starts another`;
      diag.error(error);
      // Answered now: a thread that does not stop at once must not hold its batches any longer.
      lost(error);
      void t.worker.terminate().catch(() => undefined);
    };
    return t;
  };

  return {
    send(items: SpanRecord[]): Promise<SendResult> {
      if (shutDown) return Promise.resolve({ ok: false, retryable: false, error: 'the trace exporter is shut down' });
      if (fallback !== undefined) return fallback.send(items);
      let t = thread;
      if (t === undefined) {
        try {
          t = thread = start();
        } catch (err) {
          return useFallback(`the export thread could not start: ${errorText(err)}`).send(items);
        }
      }
      const id = nextId++;
      const spans = JSON.stringify(items);
      return new Promise<SendResult>((answer) => {
        const hung = setTimeout(() => t.giveUp?.(), answerMs);
        hung.unref();
        t.pending.set(id, { items, answer, hung });
        t.worker.ref();
        t.worker.postMessage({ type: 'send', id, spans } satisfies ToExportThread);
      });
    },

    async shutdown(timeoutMs?: number): Promise<void> {
      shutDown = true;
      await fallback?.shutdown(timeoutMs);
      const t = thread;
      if (t === undefined) return;
      thread = undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(CLOSE_TIMEOUT_MS, timeoutMs ?? CLOSE_TIMEOUT_MS));
        t.closed = () => {
          clearTimeout(timer);
          resolve();
        };
        t.worker.postMessage({ type: 'shutdown' } satisfies ToExportThread);
      });
      await t.worker.terminate();
    },
  };
}
