import { EventEmitter, once } from 'node:events';
import { inspect, type InspectOptionsStylized } from 'node:util';
import { pino, type Logger } from 'pino';
import { describeConfig, kindOf, resolveConfig, type Config, type PrefectTracingOptions } from './config.js';
import { AuthError, ConfigError, errorText, ExportError } from './errors.js';
import { inApplicationRoot, untraced } from './export/untraced.js';
import { prefectAuth } from './source/prefect-api.js';
import { startMetricsExport, type MetricsExport } from './export/metrics.js';
import { startHealthServer, type HealthServer } from './health.js';
import { ERR_SERIALIZERS, errorCode, failureFields } from './log/err.js';
import { createLogger } from './log/logger.js';
import { plural } from './log/words.js';
import { safeUrl } from './log/redact.js';
import type { SpanRecord } from './model/span-record.js';
import { createPipeline, type Pipeline, type PipelineHooks } from './pipeline.js';
import { nativeSpanFromRest } from './source/native-spans.js';
import { createFlowParentLookup, createOwnerLookup, createStateHistoryLookup, deletedFlowRunsFromRest, type OwnerLookupOptions } from './source/run-lookups.js';
import { createPrefectRestClient, type PrefectRestClient } from './source/rest.js';
import { createEventSubscriber, SUBSCRIBER_DEFAULTS, type EventSubscriber } from './source/websocket.js';
import { createStateLease, isThisProcess, type LeaseHolder, type StateLease } from './state/lease.js';
import { loadState, SpansNotKeptError, StateWriter } from './state/persisted.js';
import { createStateStore, stateFileTarget, StateTakenError } from './state/state-store.js';
import { inFlightCalls, settlesWithin, STATE_EXIT_TIMEOUT_MS, StateUnansweredError } from './state/exit-bound.js';
import { collectStats, statsLogFields, type TracingStats } from './stats.js';
import { VERSION } from './version.js';

export interface StartOptions extends PrefectTracingOptions {
  /** Environment to read settings from (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * Log through this pino logger (the application's) instead of writing JSON lines to standard
   * output: at its own level, or at `logLevel` (`PREFECT_OTEL_LOG_LEVEL`) when that is set;
   * `logFormat` does not apply.
   */
  readonly logger?: Logger;
  readonly hooks?: PipelineHooks;
  /**
   * Whether prefect-otel holds the process open until `shutdown()` (default true, like a listening
   * server: a program whose only job is to trace must not end on its own, with nothing flushed).
   * False: it never keeps the process alive by itself, and the host calls `shutdown()` when its own
   * work is done (`process.once('beforeExit', …)`, as `prefect-otel/register` does) to persist state
   * and flush; a batch already being sent still holds the process until the collector answers.
   */
  readonly keepAlive?: boolean;
}

export interface PrefectTracingHandle {
  readonly config: Config;
  /**
   * Resolves once the state file is loaded and the subscriber started (a standby: once it took over,
   * or at shutdown); rejects with a ConfigError when a state file set explicitly cannot be used.
   */
  readonly ready: Promise<void>;
  /** Resolves after `shutdown()`; rejects when the stream cannot go on (authentication refused, protocol error). */
  readonly done: Promise<void>;
  /**
   * Stop reading, persist state, flush exports. Idempotent. `timeoutMs` (default 10 s) bounds the
   * wait for the collector, all of it: to take what is buffered, to answer a batch still out, and the
   * last metrics export; what it has not taken by then is kept in the state file. Saving the state
   * and writing the last lines come after it; the save and the lock's release are given
   * STATE_EXIT_TIMEOUT_MS (10 s), past which a file system that does not answer is said and `done`
   * rejects with a StateUnansweredError (the process cannot exit normally while that call is stuck).
   * Rejects with a TypeError, stopping nothing, when it is not a number >= 0.
   */
  shutdown(timeoutMs?: number): Promise<void>;
  stats(): TracingStats;
  /** The port of the health endpoint, once `ready` (when PREFECT_OTEL_HTTP_PORT is set). */
  readonly httpPort: number | undefined;
  /** Every exported span, after hooks. */
  on(event: 'span', listener: (span: SpanRecord) => void): this;
  /** The stream cannot go on (authentication refused, protocol error): `done` rejects with the same error. */
  on(event: 'error', listener: (err: Error) => void): this;
  /** The event stream's connection. */
  on(event: 'status', listener: (status: 'connecting' | 'connected' | 'disconnected') => void): this;
  once(event: 'span', listener: (span: SpanRecord) => void): this;
  once(event: 'error', listener: (err: Error) => void): this;
  once(event: 'status', listener: (status: 'connecting' | 'connected' | 'disconnected') => void): this;
  off(event: 'span', listener: (span: SpanRecord) => void): this;
  off(event: 'error', listener: (err: Error) => void): this;
  off(event: 'status', listener: (status: 'connecting' | 'connected' | 'disconnected') => void): this;
}

const TICK_MS = 100;
/** How often a standby looks at the state file's lock at most. */
const STANDBY_LOOK_MS = 1_000;
const SHUTDOWN_TIMEOUT_MS = 10_000;
/** How often a state file that keeps failing to be written is logged again. */
const STATE_ERROR_LOG_MS = 60_000;
/** Failed parent look-ups logged as warnings (with the Prefect API's answer); the rest at debug, as the notices of the runs they leave as roots are. */
const LOOKUP_FAILURES_WARNED = 10;

class Tracing extends EventEmitter implements PrefectTracingHandle {
  readonly config: Config;
  readonly ready: Promise<void>;
  readonly done: Promise<void>;
  private readonly logger: Logger;
  private readonly pipeline: Pipeline;
  /** Run lookups (subflow parents, Prefect's own spans). */
  private readonly rest: PrefectRestClient;
  private subscriber: EventSubscriber | undefined;
  private health: HealthServer | undefined;
  private readonly metrics: MetricsExport | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped: Promise<void> | undefined;
  private failure: Error | undefined;
  private connected = false;
  private resolveDone!: () => void;
  private rejectDone!: (err: Error) => void;
  private readonly store;
  private readonly state: StateWriter;
  private readonly lease: StateLease;
  /**
   * `starting` until the state file's lock is first tried; `standby` while another process holds it;
   * `held` once it is this process's; `lost` once another process took it; `released` at the end of shutdown.
   */
  private leaseState: 'starting' | 'standby' | 'held' | 'unlocked' | 'lost' | 'released' = 'starting';
  private wakeStandby: (() => void) | undefined;
  /**
   * The lock's renewal, and the one in flight. It goes on through shutdown, which can take longer
   * than the lease (exports cut short after SHUTDOWN_TIMEOUT_MS), until the last save is written.
   */
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private readonly startedMs = Date.now();
  /** Periodic saves that failed in a row, and when the last of them was logged. */
  private saveFailures = 0;
  private saveFailureLoggedMs = 0;
  /** Every save that failed, periodic and final (`prefect_otel_state_save_failures_total`). */
  private saveFailuresTotal = 0;
  /** When the periodic save still running began (its look at the lock included); undefined when none is. */
  private saveSinceMs: number | undefined;
  /** Whether the periodic save still running was said to be stuck (it ran past STATE_EXIT_TIMEOUT_MS). */
  private saveStuck = false;

  private readonly keepAlive: boolean;

  constructor(config: Config, options: Pick<StartOptions, 'logger' | 'hooks' | 'keepAlive'>) {
    // An `async` listener's rejection comes to the method below, as a listener's throw is caught.
    super({ captureRejections: true });
    this.config = config;
    this.keepAlive = options.keepAlive ?? true;
    this.logger = options.logger ?? createLogger({ level: this.config.log.level, format: this.config.log.format });
    for (const w of this.config.warnings) this.logger.warn({ component: 'config' }, w);
    const rest = (this.rest = createPrefectRestClient({
      apiUrl: this.config.prefect.apiUrl,
      ...prefectAuth(this.config.prefect),
      timeoutMs: this.config.prefect.requestTimeoutMs,
      tls: this.config.prefect.tls,
      proxy: this.config.prefect.proxy,
    }));
    // A parent look-up that failed says why (the notice of the run that became a root cannot): the
    // first few as warnings, as those notices are, the rest at debug.
    let lookupFailures = 0;
    const lookupLog = this.logger.child({ component: 'source' });
    const lookups: OwnerLookupOptions = {
      onAuthError: (err) => {
        // The look-ups' answers from now on are no answers: the runs waiting for them stay waiting,
        // are saved with the state and asked again on the next start, with credentials that work.
        this.pipeline.seal();
        this.fail(err);
      },
      onFailure: (failure) => {
        // A look-up that the shutdown cut short has nothing to say.
        if (this.stopping) return;
        lookupFailures += 1;
        const line = lookupFailures < LOOKUP_FAILURES_WARNED ? 'run look-up in the Prefect API failed'
          : lookupFailures === LOOKUP_FAILURES_WARNED ? 'run look-up in the Prefect API failed (further ones are logged at debug)' : undefined;
        if (line === undefined) lookupLog.debug({ err: failure.reason }, 'run look-up in the Prefect API failed');
        else lookupLog.warn({ err: failure.reason }, line);
      },
    };
    this.pipeline = createPipeline({
      config: this.config,
      logger: this.logger,
      clock: 'wall',
      hooks: options.hooks,
      nativeSpans: nativeSpanFromRest(rest),
      resolveOwner: createOwnerLookup(rest, lookups),
      resolveFlowParent: createFlowParentLookup(rest, lookups),
      resolveStateHistory: createStateHistoryLookup(rest, lookups),
      deletedFlowRuns: deletedFlowRunsFromRest(rest),
      onSpan: (span) => {
        if (this.listenerCount('span') > 0) {
          try {
            // The application's own code, in its own (root) context: not prefect-otel's untraced one.
            inApplicationRoot(() => this.emit('span', span));
          } catch (err) {
            this.logger.error({ component: 'watch', err }, 'a span listener threw; ignored');
          }
        }
      },
    });
    this.metrics = startMetricsExport(this.config, () => this.stats(), this.pipeline.exportLag, this.logger);
    const stateFile = stateFileTarget(this.config.stateFile);
    // Every call on the state file, its journal and its lock is counted while in flight, under the
    // step it does: one stuck there holds the process at exit (see exit-bound.ts), and `watch` says which.
    this.store = inFlightCalls(createStateStore(stateFile), {
      load: 'read', loadJournal: 'journal read', save: 'save', append: 'journal line',
      removeLeftovers: 'removal of leftover temp files', markOwn: 'look at the state file', changedSinceOwn: 'look at the state file',
    });
    this.state = new StateWriter(this.store, this.pipeline, undefined, () => this.subscriber?.coveredUntilMs(), safeUrl(this.config.prefect.apiUrl));
    this.lease = inFlightCalls(createStateLease(stateFile, this.config.live.stateLeaseMs), {
      tryAcquire: 'lock', check: 'lock check', renew: 'lock renewal', release: 'lock release',
    });
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // `done` is for whoever awaits it; an unobserved rejection must not crash the host process.
    this.done.catch(() => undefined);
    this.ready = this.start();
    this.ready.catch((err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))));
  }

  /**
   * An `async` listener (of `span`, `status` or `error`) whose promise rejected: logged and ignored, as
   * a listener that throws is, instead of an unhandled rejection that ends the host process.
   */
  override [EventEmitter.captureRejectionSymbol](err: Error, event: string | symbol): void {
    this.logger.error({ component: 'watch', err }, `a ${String(event)} listener rejected; ignored`);
  }

  private async start(): Promise<void> {
    const log = this.logger.child({ component: 'watch' });
    log.info({ version: VERSION, settings: describeConfig(this.config) }, 'prefect-otel starting');
    if (this.config.httpPort !== undefined) {
      this.health = await startHealthServer(this.config.httpPort, () => this.stats(), this.config.httpHost);
      if (!this.keepAlive) this.health.unref();
      log.info({ port: this.health.port, address: this.health.address }, 'serving /healthz, /livez and /metrics');
    }
    if (!(await this.takeLease(log))) return;
    if (this.leaseState === 'held') {
      const removed = await this.store.removeLeftovers();
      if (removed.length > 0) log.info({ files: removed }, 'removed the temp files of state saves that a process stopped in the middle of');
    }
    const restored = await loadState(this.store, this.pipeline, Date.now(), log);
    // What is there now is this process's: a state file another process writes later is not.
    if (this.leaseState === 'held') await this.store.markOwn().catch(() => undefined);
    if (restored !== undefined) {
      const { coveredUntilMs: _ms, apiUrl: savedFor, ...shown } = restored;
      log.info(shown, 'resumed from the state file');
      // The same file used for another server (a local one, then a Cloud workspace, from one directory):
      // its cursor and open runs are not this server's. Said, not guessed at: one server has many URLs.
      const following = safeUrl(this.config.prefect.apiUrl);
      if (savedFor !== undefined && savedFor.replace(/\/+$/, '') !== following.replace(/\/+$/, '')) {
        log.warn({ path: this.store.path, savedFor, following }, 'the state file was written following another Prefect API URL: its cursor and open runs are taken over as they are; if this is another server, give it its own PREFECT_OTEL_STATE_FILE');
      }
    }
    // Shut down while the state file was read (a large one takes seconds): its timers are cleared
    // already, so none may start now, nor a subscription.
    if (this.stopping) return;
    this.subscriber = createEventSubscriber({
      apiUrl: this.config.prefect.apiUrl,
      ...prefectAuth(this.config.prefect),
      apiUrlName: this.config.sources?.apiUrl,
      logger: this.logger.child({ component: 'source' }),
      tls: this.config.prefect.tls,
      proxy: this.config.prefect.proxy,
      requestTimeoutMs: this.config.prefect.requestTimeoutMs,
      resumeFromUs: () => this.pipeline.cursorUs,
      coveredUntilMs: restored?.coveredUntilMs,
      resumeMarginMs: this.config.live.resumeMarginMs,
      idleTimeoutMs: this.config.live.idleTimeoutMs,
      // A healthy server answers a ping well within the idle timeout.
      pingIntervalMs: Math.min(SUBSCRIBER_DEFAULTS.pingIntervalMs, Math.floor(this.config.live.idleTimeoutMs / 3)),
      keepAlive: this.keepAlive,
      onEvent: (frame) => this.pipeline.ingest(frame),
      onStatus: (status) => {
        this.connected = status === 'connected';
        inApplicationRoot(() => this.emit('status', status));
      },
    });
    this.subscriber.done.then(
      () => undefined,
      (err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err))),
    );
    this.every(TICK_MS, () => this.pipeline.tick());
    this.every(this.config.live.stateFlushMs, () => void this.persist());
    if (this.config.statsIntervalMs > 0) {
      this.every(this.config.statsIntervalMs, () => this.logger.child({ component: 'stats' }).info(statsLogFields(this.stats()), 'stats'));
    }
  }

  /**
   * Wait as a standby while another process holds the state file's lock; then keep the lock renewed.
   * False when shut down before taking over. A lock that cannot be written at all (a read-only
   * directory) is said once, and the process goes on without it, as it does when saves fail.
   */
  private async takeLease(log: Logger): Promise<boolean> {
    let waitingFor: string | undefined;
    for (;;) {
      if (this.stopping) return false;
      let outcome;
      try {
        outcome = await this.lease.tryAcquire();
      } catch (err) {
        // A state file the user named that cannot be made is a mistake to fix now, not a process
        // that runs for days without resuming; the default one (in a read-only working directory) is not.
        const given = this.config.sources?.stateFile;
        if (given !== undefined) throw new ConfigError([`${given}: cannot use the state file ${this.config.stateFile}: ${unusablePath(err, this.config.stateFile)}`]);
        log.error({ err: failureFields(err), path: this.lease.path }, 'could not take the state file lock; going on without it: another process on this state file would export every span too');
        this.leaseState = 'unlocked';
        return !this.stopping;
      }
      if (outcome.acquired) {
        if (this.stopping) {
          await this.lease.release();
          return false;
        }
        this.leaseState = 'held';
        // A holder of this host that is gone (SIGKILL, a crash, OOM) is taken over at once, its lease
        // unexpired: said as such, not as one that stopped renewing (frozen, cut off, on another host).
        if (outcome.tookOver !== undefined) {
          const how = outcome.holderGone === true ? 'took over the state file from a process of this host that no longer runs' : 'took over the state file from a process that stopped renewing its lock';
          log.warn({ holder: shownHolder(outcome.tookOver), path: this.lease.path }, how);
        }
        else if (waitingFor !== undefined) log.info({ path: this.lease.path }, 'the state file is free: taking over');
        this.renewTimer = setInterval(() => {
          this.renewing = this.renewLease();
        }, Math.max(100, Math.floor(this.lease.leaseMs / 3)));
        this.renewTimer.unref();
        return true;
      }
      this.leaseState = 'standby';
      const holder = outcome.holder === undefined ? undefined : shownHolder(outcome.holder);
      const key = JSON.stringify(holder ?? null);
      if (key !== waitingFor) {
        waitingFor = key;
        log.info(
          { holder, path: this.lease.path, leaseMs: this.lease.leaseMs, expiresInMs: Math.round(outcome.expiresInMs) },
          // A start right after a shutdown() of the same process finds the lock of the one stopping.
          outcome.holder !== undefined && isThisProcess(outcome.holder)
            ? 'standby: an earlier start in this process still holds this state file (it is stopping); taking over when it releases its lock'
            : 'standby: another process follows the stream with this state file; taking over when it stops or stops renewing its lock',
        );
      }
      // Look again when the lease would run out, and every second meanwhile: a lock released, or its
      // holder gone from this host, is seen soon.
      const waitMs = Math.max(50, Math.min(Math.ceil(outcome.expiresInMs) + 10, Math.floor(this.lease.leaseMs / 3), STANDBY_LOOK_MS));
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, waitMs);
        if (!this.keepAlive) t.unref();
        this.wakeStandby = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wakeStandby = undefined;
    }
  }

  /** Renew the lock; a process that lost it (frozen past its lease, say) stops without saving over the new holder's state. */
  private async renewLease(): Promise<void> {
    if (this.leaseState !== 'held') return;
    let outcome;
    try {
      outcome = await this.lease.renew();
    } catch (err) {
      this.logger.warn({ component: 'watch', err: failureFields(err), path: this.lease.path }, 'could not renew the state file lock');
      return;
    }
    if (!outcome.held) this.loseLease(outcome.holder);
    else if (outcome.remade === true) await this.keepRemadeLock();
  }

  /**
   * A lock this process had to make again (it was gone) is its own only while the state file is
   * still the one it loaded or last saved. One another process wrote means that process took the
   * state file over while this one was frozen past its lease, and has stopped since (its lock
   * removed): its last save is the state to resume from. Then the lock just made is removed and this
   * process stops without saving, as when it finds its lock taken. True when the lock is kept.
   */
  private async keepRemadeLock(): Promise<boolean> {
    let changed: boolean;
    try {
      changed = await this.store.changedSinceOwn();
    } catch {
      return true;
    }
    if (!changed) return true;
    await this.stateTaken();
    return false;
  }

  /**
   * The state file is another process's now (`changedSinceOwn`, or a save that found it so): that
   * process took it over while this one was frozen. This one stops without saving, as when it finds
   * its lock taken, and removes a lock of its own it may have made again meanwhile.
   */
  private async stateTaken(): Promise<void> {
    // Lost first: a look under way that finds the lock released then says nothing of its own.
    this.loseLease(undefined, true);
    await this.lease.release();
  }

  /**
   * Whether this process may write the state file: asked before each save, because a process frozen
   * past its lease (SIGSTOP, a suspended VM) runs its overdue save as soon as it resumes, before its
   * overdue renewal has told it that another process took over. A lock that cannot be read does not
   * stop saves, as it does not stop renewals. What is left: a freeze between this look and the write.
   */
  private async mayWriteState(): Promise<boolean> {
    if (this.leaseState !== 'held') return this.leaseState === 'unlocked';
    let outcome;
    try {
      outcome = await this.lease.check();
    } catch {
      return true;
    }
    if (!outcome.held) {
      this.loseLease(outcome.holder);
      return false;
    }
    return outcome.remade === true ? this.keepRemadeLock() : true;
  }

  /**
   * Another process holds the lock now (or held it, and has `stoppedSince`): stop, saving nothing
   * more over its state (exit 1).
   */
  private loseLease(holder: LeaseHolder | undefined, stoppedSince = false): void {
    if (this.leaseState !== 'held') return;
    this.leaseState = 'lost';
    const shown = holder === undefined ? undefined : shownHolder(holder);
    const who = stoppedSince ? 'and has stopped since: the state file is its last save' : shown === undefined ? 'holder unknown' : `pid ${shown.pid} on ${shown.host}`;
    const err = new Error(`another process took over the state file ${this.config.stateFile} (${who}): this one stopped renewing its lock for longer than the lease; stopping without saving`);
    if (!this.stopping) {
      this.fail(err);
      return;
    }
    // Learnt while shutting down: said as a failure would be, and the exit says it too.
    this.logger.fatal({ component: 'watch' }, err.message);
    this.failure ??= err;
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(() => {
      try {
        fn();
      } catch (err) {
        this.logger.error({ component: 'watch', err }, 'periodic task failed');
      }
    }, ms);
    t.unref();
    this.timers.push(t);
  }

  /**
   * The periodic save. A state file that cannot be written (a read-only directory) fails the same way
   * every few seconds: the first failure is logged, then one line per STATE_ERROR_LOG_MS with the
   * count, and one when a save works again. One that does not end (a file system that stopped
   * answering) is said once past STATE_EXIT_TIMEOUT_MS, and none is started behind it.
   */
  private async persist(): Promise<void> {
    if (this.saveSinceMs !== undefined) {
      // The save before has not finished: its file system does not answer (an NFS server gone, a
      // frozen disk). None is started behind it: each would hold its own copy of every open run in
      // memory, one more per interval, for as long as the file system stays silent. When it answers,
      // the next save takes in all that came meanwhile.
      const forMs = Date.now() - this.saveSinceMs;
      if (!this.saveStuck && forMs >= STATE_EXIT_TIMEOUT_MS) {
        this.saveStuck = true;
        this.saveFailuresTotal += 1;
        this.logger.error(
          { component: 'watch', path: this.store.path, timeoutMs: STATE_EXIT_TIMEOUT_MS },
          `a save of the state file has not finished for ${STATE_EXIT_TIMEOUT_MS / 1000} s: its file system does not answer; no save is started until it does, and a restart meanwhile resumes from the last complete save`,
        );
      }
      return;
    }
    this.saveSinceMs = Date.now();
    try {
      await this.persistOnce();
    } finally {
      this.saveSinceMs = undefined;
      if (this.saveStuck) {
        this.saveStuck = false;
        this.logger.info({ component: 'watch', path: this.store.path }, 'the state file\'s file system answers again');
      }
    }
  }

  private async persistOnce(): Promise<void> {
    // Once shutting down, the last save is shutdown's own.
    if (!(await this.mayWriteState()) || this.stopping) return;
    // The STLOGGING lines of the events this save takes in go out first: a kill after the save
    // would otherwise lose those still gathered for the next write, and the next process, which
    // knows their events as seen, would not write them again. An application's logger that fails
    // to flush keeps its lines to itself; the save goes on.
    try {
      this.logger.flush();
    } catch {
      // said by that logger's own stream, if at all
    }
    try {
      await this.state.save(false);
    } catch (err) {
      if (err instanceof StateTakenError) return this.stateTaken();
      this.saveFailures += 1;
      this.saveFailuresTotal += 1;
      const nowMs = Date.now();
      if (this.saveFailures === 1 || nowMs - this.saveFailureLoggedMs >= STATE_ERROR_LOG_MS) {
        this.saveFailureLoggedMs = nowMs;
        this.logger.error({ component: 'watch', err: failureFields(err), path: this.store.path, failures: this.saveFailures }, 'could not write the state file');
      }
      return;
    }
    if (this.saveFailures > 0) {
      this.logger.info({ component: 'watch', path: this.store.path, failures: this.saveFailures }, 'the state file is written again');
      this.saveFailures = 0;
    }
  }

  private fail(err: Error): void {
    if (this.stopping) return;
    this.logger.fatal({ component: 'watch', code: errorCode(err), ...(err instanceof AuthError ? { setting: err.setting } : {}) }, err.message);
    this.failure = err;
    if (this.listenerCount('error') > 0) {
      try {
        inApplicationRoot(() => this.emit('error', err));
      } catch (listenerErr) {
        // As a span listener's: with nothing of the host's to catch it, it would end the process unsaved.
        this.logger.error({ component: 'watch', err: listenerErr }, 'an error listener threw; ignored');
      }
    }
    void this.shutdown();
  }

  get httpPort(): number | undefined {
    return this.health?.port;
  }

  /**
   * The handle as an application that logs it (`logger.info({ tracing })`) or prints it sees it: the
   * settings as the startup line shows them, and where it stands. Its other fields hold the
   * credentials, the REST client and the application's own logger.
   */
  toJSON(): Record<string, unknown> {
    return { settings: describeConfig(this.config), connected: this.connected, standby: this.leaseState === 'standby', stopping: this.stopping, httpPort: this.httpPort };
  }

  [inspect.custom](_depth: number, options: InspectOptionsStylized, show: typeof inspect): string {
    return `PrefectTracing ${show(this.toJSON(), options)}`;
  }

  /** True from the start of `shutdown()` on. */
  get stopping(): boolean {
    return this.stopped !== undefined;
  }

  stats(): TracingStats {
    return collectStats(this.pipeline, {
      connected: this.connected, standby: this.leaseState === 'standby', stopping: this.stopping, subscriber: this.subscriber?.stats, startedMs: this.startedMs,
      stateSaveFailures: this.saveFailuresTotal,
    });
  }

  /**
   * The last save (only the lock's holder writes the state: a standby's would overwrite the
   * holder's), then the lock released. `step` says where it is, for the line that says it is stuck.
   */
  private async saveAndRelease(log: Logger, step: { now: ExitStep }): Promise<void> {
    step.now = 'lock check';
    if (await this.mayWriteState()) {
      step.now = 'save';
      try {
        const kept = await this.state.save(true);
        if (kept > 0) log.warn({ count: kept, path: this.store.path }, 'spans the collector has not taken yet are kept in the state file; the next start sends them');
      } catch (err) {
        if (err instanceof StateTakenError) await this.stateTaken();
        else {
          this.saveFailuresTotal += 1;
          log.error({ err: failureFields(err), path: this.store.path }, 'could not write the state file');
        }
        if (err instanceof SpansNotKeptError) {
          // Neither delivered nor kept for the next start: a failure, as an export that failed is.
          const lost = new ExportError(`${plural(err.spans, 'span')} the collector has not taken could not be kept in the state file ${this.store.path} either: they are lost`);
          log.error({ count: err.spans, path: this.store.path }, lost.message);
          this.failure ??= lost;
        }
      }
    }
    step.now = 'lock release';
    clearInterval(this.renewTimer);
    await this.renewing;
    if (this.leaseState === 'held') {
      this.leaseState = 'released';
      await this.lease.release();
    }
  }

  shutdown(timeoutMs = SHUTDOWN_TIMEOUT_MS): Promise<void> {
    // A wait that never ends (NaN, a string from untyped code) would hold a shutdown open for as
    // long as the collector is down: said, before anything stops.
    if (this.stopped === undefined && (typeof timeoutMs !== 'number' || !(timeoutMs >= 0))) {
      return Promise.reject(new TypeError(`shutdown(timeoutMs): expected a number of ms >= 0, got ${typeof timeoutMs === 'number' ? String(timeoutMs) : typeof timeoutMs}`));
    }
    this.stopped ??= untraced(async () => {
      const log = this.logger.child({ component: 'watch' });
      if (this.leaseState === 'standby') log.info('shutting down a standby: nothing to save or send');
      else if (this.leaseState === 'starting') log.info('shutting down before the state file was taken: nothing to save or send');
      else log.info('shutting down: stop reading, persist state, flush exports');
      for (const t of this.timers) clearInterval(t);
      this.wakeStandby?.();
      // A start still taking the lock or reading the state file when its file system stops answering
      // never ends: past the bound, nothing is saved (the state was not read), and the file stays as it is.
      const started = await settlesWithin(this.ready, STATE_EXIT_TIMEOUT_MS);
      await this.subscriber?.stop().catch(() => undefined);
      this.pipeline.tick();
      // One bound for every wait on the collector: the flush, a batch still out when the exporters
      // close, and the last metrics export.
      const deadline = Date.now() + timeoutMs;
      const left = (): number => Math.max(0, deadline - Date.now());
      const flushed = await this.pipeline.flush(timeoutMs);
      // The state saved next is the last word: a lookup answered after it would log lines and build
      // spans that the next process, taking over the events still waiting, makes again. Lookups
      // still out are cut short, so that none holds the process open until its timeout.
      this.pipeline.seal();
      this.rest.close();
      // The exporters close before the state is saved and the lock released: while a batch may still
      // reach the collector, no standby may take over and send it again from the state file. A batch
      // the collector answers meanwhile is delivered; one still out when the bound runs out is given
      // up here and kept in the state file (a span sent twice is better than a span lost).
      await this.pipeline.shutdown(0, left());
      // The state file's work comes last and is bounded: a file system that stops answering holds a
      // call for ever (see exit-bound.ts). What it has not done by then is said, and `watch` ends.
      const step: { now: ExitStep } = { now: 'start' };
      const finished = started && (await settlesWithin(this.saveAndRelease(log, step), STATE_EXIT_TIMEOUT_MS));
      if (!finished) {
        clearInterval(this.renewTimer);
        const message = unansweredMessage(step.now, this.store.path, this.lease.path);
        log.error({ path: this.store.path, lock: this.lease.path, step: step.now, timeoutMs: STATE_EXIT_TIMEOUT_MS }, message);
        this.failure = new StateUnansweredError(message);
      }
      // Log records are not kept in the state file (their lines are in this process's own output):
      // what the collector did not take is lost, and said so with a count.
      const logs = this.pipeline.logs?.stats;
      const lostLogs = logs === undefined ? 0 : logs.queued + logs.inFlight;
      if (lostLogs > 0) log.error({ count: lostLogs }, 'log records the collector has not taken are lost at exit (their lines are in this output)');
      await this.metrics?.shutdown(left());
      await this.health?.close();
      log.info({ ...statsLogFields(this.stats()), undelivered: flushed.pending }, 'stopped');
      // When shutdown() resolves the lines must be out (register re-raises the signal next): write
      // what is gathered, then wait for a write still in flight on an asynchronous destination.
      this.logger.flush();
      await flushLogger(this.logger);
      if (this.failure === undefined) this.resolveDone();
      else this.rejectDone(this.failure);
    });
    return this.stopped;
  }
}

/** Where the state file's work at exit is: the start still taking the lock or reading the file, the look at the lock before the last save, the save, the lock's release. */
type ExitStep = 'start' | 'lock check' | 'save' | 'lock release';

/** What a state file's work stuck at `step` leaves undone, and where the next start resumes from. */
function unansweredMessage(step: ExitStep, path: string, lock: string): string {
  const why = `its file system has not answered for ${STATE_EXIT_TIMEOUT_MS / 1000} s (an NFS server gone, a frozen or full disk)`;
  switch (step) {
    case 'start':
      return `the state file ${path} was still being locked or read at start, and ${why}: nothing is saved; the next start resumes from the state file as it is`;
    case 'lock check':
    case 'save':
      return `the last save of the state file ${path} did not finish: ${why}; what came since the last complete save is not saved: the next start resumes from that save and reads the events since then again`;
    case 'lock release':
      return `the lock ${lock} of the state file was not released: ${why}; the next start takes it over at once in this host's process namespace, elsewhere once its lease has run out`;
  }
}

/** What a file system error means, in words, for a path that cannot be used. */
const PATH_ERRORS: Readonly<Record<string, string>> = {
  ENOTDIR: 'a part of its path is a file, not a directory',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EROFS: 'the file system is read-only',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is used up',
  EISDIR: 'a directory is in the way',
  ENAMETOOLONG: 'the path is too long',
  ELOOP: 'too many symbolic links on its path',
};

/**
 * Why a state file cannot be used, in words; the message itself for an error not known here. A
 * directory on its path that cannot be made is named (the cause of makeStateDirectory's error).
 */
function unusablePath(err: unknown, stateFile: string): string {
  const own = err as NodeJS.ErrnoException;
  const e = (own.code === undefined && own.cause !== undefined ? own.cause : own) as NodeJS.ErrnoException;
  const where = e.path === undefined || e.path.startsWith(stateFile) ? '' : ` (${e.path})`;
  if (e.code === 'ENOENT' && where !== '') return `the directory ${e.path} cannot be made (a file system that cannot hold it, such as /proc)`;
  const words = e.code === undefined ? undefined : PATH_ERRORS[e.code];
  return words === undefined ? errorText(err) : `${words}${where}`;
}

/** A lock's holder as logs and errors show it. */
function shownHolder(h: LeaseHolder): { pid: number; host: string; since: string } {
  return { pid: h.pid, host: h.host, since: h.since };
}

/**
 * Wait until the log lines are written. A user's logger may write asynchronously, and pino's
 * `flush(cb)` then calls back at once (minLength 0), so wait for the stream's `drain` while a write
 * is in flight; bounded, so a stuck stdout cannot hold the shutdown.
 */
async function flushLogger(logger: Logger, timeoutMs = 1_000): Promise<void> {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as (EventEmitter & { _writing?: unknown }) | undefined;
  if (!(stream instanceof EventEmitter) || stream._writing !== true) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([once(stream, 'drain'), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]).catch(() => undefined);
  clearTimeout(timer);
}

/** The options of `startPrefectTracing()` that are no setting: how it runs inside the host. */
const START_OPTIONS: readonly (keyof StartOptions)[] = ['env', 'logger', 'hooks', 'keepAlive'];
/** What prefect-otel calls on a logger it is given. */
const LOGGER_METHODS = ['child', 'fatal', 'error', 'warn', 'info', 'debug', 'trace', 'flush'] as const;

/**
 * The problems of the options that are no setting, found at the start rather than as a TypeError
 * when a span comes (a hook that is no function) or at shutdown (a logger without `flush`).
 */
function startOptionProblems(options: StartOptions): string[] {
  const problems: string[] = [];
  if (options === null || typeof options !== 'object') return problems;
  const { logger, hooks, keepAlive } = options as Record<keyof StartOptions, unknown>;
  if (keepAlive !== undefined && typeof keepAlive !== 'boolean') problems.push(`option keepAlive: expected true or false, got ${kindOf(keepAlive)}`);
  if (logger !== undefined) {
    const missing = logger !== null && typeof logger === 'object' ? LOGGER_METHODS.filter((m) => typeof (logger as Record<string, unknown>)[m] !== 'function') : undefined;
    if (missing === undefined) problems.push(`option logger: expected a pino logger, got ${kindOf(logger)}`);
    else if (missing.length > 0) problems.push(`option logger: expected a pino logger; this one has no method ${missing.join(', ')}`);
  }
  if (hooks !== undefined) {
    if (hooks === null || typeof hooks !== 'object' || Array.isArray(hooks)) {
      problems.push(`option hooks: expected an object such as { span: (span) => { … } }, got ${kindOf(hooks)}`);
    } else {
      for (const name of Object.keys(hooks)) if (name !== 'span') problems.push(`option hooks.${name}: not a hook, so it would never be called (the hook is span)`);
      const span = (hooks as Record<string, unknown>).span;
      if (span !== undefined && typeof span !== 'function') problems.push(`option hooks.span: expected a function, got ${kindOf(span)}`);
    }
  }
  return problems;
}

/**
 * Follow a Prefect server's event stream and export its runs as traces until `shutdown()`. Throws a
 * ConfigError listing every problem of the options and the environment: a value of the wrong type,
 * an option that is no setting.
 */
export function startPrefectTracing(options: StartOptions = {}): PrefectTracingHandle {
  const problems = startOptionProblems(options);
  const env = options !== null && typeof options === 'object' && options.env !== undefined ? options.env : process.env;
  let config: Config;
  try {
    config = resolveConfig(options, env, undefined, START_OPTIONS);
  } catch (err) {
    if (err instanceof ConfigError && problems.length > 0) throw new ConfigError([...err.problems, ...problems], err.warnings);
    throw err;
  }
  if (problems.length > 0) throw new ConfigError(problems, config.warnings);
  return startOnce(config, { logger: hostLogger(options.logger, config), hooks: options.hooks, keepAlive: options.keepAlive });
}

/**
 * The application's logger as prefect-otel logs through it: at the level `logLevel` (or
 * `PREFECT_OTEL_LOG_LEVEL`) sets, when one is set, and at the logger's own level otherwise.
 */
function hostLogger(logger: Logger | undefined, config: Config): Logger | undefined {
  if (logger === undefined) return undefined;
  // Its lines carry `err` in prefect-otel's one shape, whatever serializers the application set.
  return logger.child({}, { serializers: ERR_SERIALIZERS, ...(config.sources?.logLevel === undefined ? {} : { level: config.log.level }) });
}

/** The same, with a configuration already resolved (the CLI). */
export function startWithConfig(config: Config, options: Pick<StartOptions, 'logger' | 'hooks' | 'keepAlive'> = {}): PrefectTracingHandle {
  return startOnce(config, options);
}

/**
 * The instances running in this process, by state file. Two on one file would export every span
 * twice and overwrite each other's state (`--import prefect-otel/register` and an application's own
 * `startPrefectTracing()`, say). Kept on `globalThis`, so that two copies of the package share it.
 */
const RUNNING = ((globalThis as Record<symbol, unknown>)[Symbol.for('prefect-otel.running')] ??= new Map()) as Map<string, Tracing>;

function startOnce(config: Config, options: Pick<StartOptions, 'logger' | 'hooks' | 'keepAlive'>): PrefectTracingHandle {
  const key = stateFileTarget(config.stateFile);
  const already = RUNNING.get(key);
  if (already !== undefined && !already.stopping) {
    (options.logger ?? createLogger({ level: config.log.level, format: config.log.format })).warn(
      { component: 'watch', stateFile: key },
      'prefect-otel already runs in this process with this state file; this start returns that instance',
    );
    return already;
  }
  const tracing = untraced(() => new Tracing(config, options));
  RUNNING.set(key, tracing);
  void tracing.done.catch(() => undefined).finally(() => {
    if (RUNNING.get(key) === tracing) RUNNING.delete(key);
  });
  return tracing;
}
