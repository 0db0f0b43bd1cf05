/**
 * The live source: Prefect's `/api/events/out` websocket, kept open for as long as we run.
 *
 * Protocol (Prefect `src/prefect/server/api/events.py`, `utilities/subscriptions.py`):
 *   1. upgrade to `ws(s)://<PREFECT_API_URL>/events/out` offering the sub-protocol `prefect`;
 *   2. send `{"type":"auth","token":<API key | auth string | null>}`, expect `{"type":"auth_success"}`
 *      (a close 1008 or 4000-4999, or any other message of the protocol's form, means the credentials
 *      were refused; a dropped connection or a server error there is retried, and so is an answer in
 *      no Prefect form, or an upgrade answered without the sub-protocol, but only a few times in a row);
 *   3. send `{"type":"filter","filter":{…},"backfill":true}`; every later message is
 *      `{"type":"event","event":{…}}`, backfilled ones first, with nothing marking where backfill ends.
 *
 * Frames are handed on undecoded: parsing, dedupe by event id and ordering belong to the pipeline.
 *
 * What the server does not give us, we do here:
 *   - liveness: there is no application ping; we ping every `pingIntervalMs` and drop a socket that has
 *     been silent (no message, ping or pong) for `idleTimeoutMs` (half-open connections behind LBs);
 *   - reconnects with exponential backoff and jitter, resuming from the caller's cursor;
 *   - gaps longer than the server's backfill clamp (15 min): read from `POST /events/filter` first.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { AuthError, ProtocolError, errorText } from '../errors.js';
import { untraced } from '../export/untraced.js';
import { errFields } from '../log/err.js';
import { safeUrl } from '../log/redact.js';
import {
  authAdvice,
  authSetting,
  eventsOutUrl,
  apiUrlAdvice,
  isApiPath,
  prefectAuth,
  redactSecrets,
  shownServerText,
  restAuthHeaders,
  USER_AGENT,
  wsAuthToken,
  type CredentialNames,
} from './prefect-api.js';
import { isMaintenance, keepsAuthorization, MAINTENANCE_HEADER, REDIRECTS, tlsAgentOptions, type TlsOptions } from './http-client.js';
import { createTunnelAgent, PROXY_AUTH_REQUIRED, ProxyError, proxyFor, proxyVariable, type ProxyEnv } from './proxy.js';
import { createPrefectRestClient, pause, RestRequestError, retryAfterMs, type PrefectRestClient } from './rest.js';

export type EventOrigin = 'live' | 'history';
export type SubscriberStatus = 'connecting' | 'connected' | 'disconnected';

export interface EventSubscriberOptions {
  readonly apiUrl: string;
  readonly apiKey?: string | undefined;
  readonly authString?: string | undefined;
  /** How the user gave each credential, for advice when it is refused (see PrefectAuth). */
  readonly credentialNames?: CredentialNames | undefined;
  /** How the user gave the API URL (`--api-url`, `option apiUrl`), for advice on a wrong one; absent: PREFECT_API_URL. */
  readonly apiUrlName?: string | undefined;
  /** PREFECT_CLIENT_CUSTOM_HEADERS (PrefectAuth.customHeaders), on the upgrade and the gap fills. */
  readonly customHeaders?: Readonly<Record<string, string>> | undefined;
  /**
   * Logs connects, reconnects (attempt, delay), closes (code, reason) and history fills, and at debug
   * each live frame (its first MAX_LOGGED_FRAME_CHARS characters). Never secrets.
   */
  readonly logger: Logger;
  /** The resume cursor: µs since the epoch of the latest event seen, or undefined on a fresh start. */
  readonly resumeFromUs: () => number | undefined;
  /** Resume from cursor − margin, for events that arrive late or out of order. */
  readonly resumeMarginMs: number;
  /**
   * A raw websocket text frame (the whole `{"type":"event",…}` message, undecoded), or a bare event
   * object from the REST history. Exceptions are caught and logged; they never reach the socket.
   */
  readonly onEvent: (event: string | object, origin: EventOrigin) => void;
  readonly onStatus?: ((status: SubscriberStatus, detail?: string) => void) | undefined;
  /** How the server's certificate is checked (PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY), on the socket and the gap fills. */
  readonly tls?: TlsOptions | undefined;
  /** HTTP(S)_PROXY and NO_PROXY: the socket and the gap fills go through the proxy's tunnel. */
  readonly proxy?: ProxyEnv | undefined;
  /** For gap fills; created from apiUrl and the credentials when absent. */
  readonly rest?: PrefectRestClient | undefined;
  /**
   * Event-name prefixes to subscribe to. Default: no `event` filter at all, i.e. every event.
   * The run model needs more than `prefect.flow-run.` / `prefect.task-run.`: any event emitted inside a
   * run (user events with arbitrary names, artifacts, concurrency limits, …) carries `flow-run` /
   * `task-run` related resources, and `related` filters are ignored on the live stream (the server's
   * EventRelatedFilter has no `includes()`), so there is no server-side filter that selects "events
   * naming a run". The pipeline filters on the client.
   */
  readonly prefixes?: readonly string[] | undefined;
  /** The server's websocket backfill clamp (`PREFECT_SERVER_EVENTS_MAXIMUM_WEBSOCKET_BACKFILL`, 15 min). */
  readonly backfillWindowMs?: number | undefined;
  readonly pingIntervalMs?: number | undefined;
  readonly idleTimeoutMs?: number | undefined;
  readonly initialBackoffMs?: number | undefined;
  readonly maxBackoffMs?: number | undefined;
  /** HTTP upgrade, and then the wait for `auth_success`. */
  readonly handshakeTimeoutMs?: number | undefined;
  /** One event-history request (PREFECT_API_REQUEST_TIMEOUT; default 60 s, as Prefect's client). */
  readonly requestTimeoutMs?: number | undefined;
  /**
   * Ms up to which a previous process followed the stream, on the server's clock (from the state file): a
   * restart reads the history only from there (minus the margin), not from a cursor left behind
   * by a stream that was quiet for hours.
   */
  readonly coveredUntilMs?: number | undefined;
  /**
   * Nothing marks where a connection's backfill ends. It is taken as sent once the socket has had
   * no frame for this long (the server sends its pages back to back), or once an event that
   * occurred after the filter was sent has arrived (the backfill is in `occurred` order). Until
   * then the connection counts as followed only as far as its events got (default 5 s).
   */
  readonly backfillQuietMs?: number | undefined;
  /**
   * The server's backfill reads only what its EventPersister has written (every 5 s or 20 events): an
   * event published shortly before a subscription is in neither its backfill nor its live stream. And
   * while it sends a long backfill, it queues at most 256 live events for the subscriber and drops the
   * rest. So this long after the backfill of a subscription that resumes (a reconnect, a restart) is
   * sent, or of a fresh start's after which 256 frames or more came, the end of its backfill window,
   * up to then, is read again from `POST /events/filter` (default 10 s).
   */
  readonly persistLagMs?: number | undefined;
  /**
   * The longest a backfill is waited for before the end of its window is read again anyway (default
   * 15 min). A busy server's live frames may never pause for `backfillQuietMs`, and may all have
   * occurred before the subscription (a lagging server or sender clock): the backfill is then never
   * seen as sent, and without this the events it dropped would stay lost. The backfill holds at most
   * the 15 minutes of events before the subscription (the server's clamp), sent in pages as fast as
   * its database reads them: a server that could not send 15 minutes of its events in 15 minutes
   * could not keep its live stream up either.
   */
  readonly backfillMaxWaitMs?: number | undefined;
  /** Wall clock for filter times (default `Date.now`). Liveness uses a monotonic clock. */
  readonly now?: (() => number) | undefined;
  /**
   * Whether the live socket and the wait before a reconnect hold the process open (default true, as
   * `watch` needs). False inside a host application: the subscriber then never keeps it alive on its
   * own; only a connection attempt still does, for at most `handshakeTimeoutMs`.
   */
  readonly keepAlive?: boolean | undefined;
}

export interface SubscriberStats {
  /** Successful handshakes (auth accepted, filter sent). */
  readonly connects: number;
  /** Connection attempts after the first. */
  readonly reconnects: number;
  /** Live frames handed to `onEvent`. */
  readonly frames: number;
  /** History events handed to `onEvent`. */
  readonly historyEvents: number;
  readonly connected: boolean;
  readonly lastError?: string;
}

export interface EventSubscriber {
  /** Resolves after `stop()`; rejects with AuthError or ProtocolError when retrying cannot help (not logged here: the caller reports it). */
  readonly done: Promise<void>;
  /** Close with 1000 and stop reconnecting. Idempotent. */
  stop(): Promise<void>;
  readonly stats: SubscriberStats;
  /** Ms up to which the stream is known to have been followed (live or from history), on the server's clock, for the state file. */
  coveredUntilMs(): number | undefined;
}

export const SUBSCRIBER_DEFAULTS = {
  backfillWindowMs: 15 * 60_000,
  pingIntervalMs: 15_000,
  idleTimeoutMs: 45_000,
  initialBackoffMs: 500,
  maxBackoffMs: 30_000,
  handshakeTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  backfillQuietMs: 5_000,
  persistLagMs: 10_000,
  backfillMaxWaitMs: 15 * 60_000,
} as const;

/** Prefect's Python subscriber asks for events up to now + 365 days; without a future `until` the live stream stays empty. */
const UNTIL_AHEAD_MS = 365 * 24 * 3600_000;
/**
 * A fresh start reads the last minute, like Prefect's own subscriber, or the resume margin when that
 * is longer: the filter's `since` holds for the live events too, and a margin raised for senders whose
 * clocks run behind the server's must cover them from the first connection on.
 */
const FRESH_START_LOOKBACK_MS = 60_000;
/** Fill from history when the gap comes within this much of the server's backfill clamp. */
const HISTORY_SAFETY_MS = 60_000;
/** The backoff restarts from `initialBackoffMs` only after a connection stayed up this long. */
const STABLE_CONNECTION_MS = 30_000;
/** An HTTP `Date` is whole seconds. */
const DATE_RESOLUTION_MS = 1_000;
/** Less than this ahead (a round trip, say) is no skew worth correcting. */
const CLOCK_SKEW_TOLERANCE_MS = 1_000;
const BACKOFF_MULTIPLIER = 2;
/** The longest Retry-After on the upgrade (or the history) that is honoured: a wrong or hostile one must not park the stream for hours. */
const MAX_UPGRADE_RETRY_AFTER_MS = 5 * 60_000;
const MAX_PAYLOAD_BYTES = 16 * 1024 * 1024;
/**
 * Live events the server queues for a subscriber while it sends the backfill (Prefect's
 * SUBSCRIPTION_BACKLOG, `src/prefect/server/events/stream.py`); past it they are dropped silently.
 */
const SUBSCRIPTION_BACKLOG = 256;
/** History rounds per attempt (a round that takes longer than the window leaves a new gap). */
const MAX_HISTORY_ROUNDS = 5;
/** A failed history request (HTTP error, timeout, bad body) is retried this often in a row, without a read getting further, before the stream goes live without it. */
const MAX_HISTORY_FAILURES = 3;
/**
 * Statuses with which a history request was not answered by Prefect: a reverse proxy or ingress whose
 * server is down or restarting (502, 504), or a server that is not ready (503). The window is kept.
 */
const GATEWAY_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);
const HTTP_TOO_MANY_REQUESTS = 429;
/** Close codes that RFC 6455 leaves to applications (Prefect Cloud's own, say), as opposed to the protocol's and the network's. */
const APPLICATION_CLOSE_CODES = { min: 4000, max: 4999 } as const;
const CLOSE_WAIT_MS = 2_000;
const CALLBACK_ERROR_LOG_INTERVAL_MS = 10_000;
/** How much of an unexpected handshake message's `type` an error shows. */
const MAX_SHOWN_TYPE_CHARS = 40;
/** How much of the server's own text (a close reason, a refusal's reason, a reply in no Prefect form) an error shows. */
const MAX_SHOWN_SERVER_TEXT_CHARS = 120;
/**
 * Handshakes in a row that spoke something other than Prefect's protocol (an upgrade answered without
 * the sub-protocol, a reply to the auth message in no Prefect form) before the stream gives up:
 * a proxy or ingress set up so fails every time; a backend that is being replaced may do it once.
 */
const MAX_PROTOCOL_FAILURES = 3;
/**
 * Connections in a row that the server took (HTTP 101), then closed without a word in answer to the
 * auth message (dropped: 1006; a server error: 1011; any other close but Prefect's own refusal) before
 * the stream gives up with an AuthError. Prefect's own subscriber takes the first such close as
 * refused credentials (`_reconnect`, src/prefect/events/clients.py), and a proxy or gateway that
 * checks the token may end the connection so; a network blip in that one round trip, ten times in a
 * row, about two minutes at the default backoff, is not one.
 */
const MAX_AUTH_DROPS = 10;
/** Close codes that say nothing of the server's own: a normal close (ours echoed), none given, a dropped connection. */
const UNREMARKABLE_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 1005, 1006]);
/** Longest piece of a live frame (up to MAX_PAYLOAD_BYTES) that its debug line shows. */
const MAX_LOGGED_FRAME_CHARS = 4_096;
/** How much of a redirect target an error shows. */
const MAX_SHOWN_URL_CHARS = 200;

type Outcome =
  | { kind: 'fatal'; error: AuthError | ProtocolError }
  /** The upgrade showed the server's clock ahead of ours by enough to put the gap past its clamp: read the history first. */
  | { kind: 'refill' }
  /** Never got to the live phase: unreachable, upgrade refused, handshake timeout. */
  | {
      kind: 'failed';
      message: string;
      retryAfterMs?: number;
      /** A history read that failed after getting further: the backoff starts over. */
      progressed?: boolean;
      /** The server spoke something other than Prefect's protocol: fatal once it does so MAX_PROTOCOL_FAILURES times in a row. */
      protocolError?: ProtocolError;
      /** The upgrade was answered `Prefect-Maintenance: true`: Prefect Cloud is down for maintenance, waited for as long as it lasts. */
      maintenance?: true;
      /** Closed in answer to the auth message without a reply: refused credentials after MAX_AUTH_DROPS in a row. */
      authDropped?: { readonly code: number; readonly reason: string };
      /**
       * Something answered (an HTTP status other than a gateway's 502/503/504, a websocket that took
       * the upgrade): the retry line does not call the server unreachable.
       */
      answered?: boolean;
    }
  /** Was live, then closed. */
  | { kind: 'closed'; code: number; reason: string; liveMs: number }
  /** The server sent the upgrade from http to https on the same host (see `httpsUpgradeOf`): connect there. */
  | { kind: 'upgraded'; url: string }
  | { kind: 'stopped' };

export function createEventSubscriber(options: EventSubscriberOptions): EventSubscriber {
  const log = options.logger;
  const auth = prefectAuth(options);
  /**
   * A Prefect server answers a websocket at a path it does not serve with HTTP 403 (Starlette closes
   * it before accepting): at a URL that is no API path, a 403 says that, not refused credentials.
   */
  const apiPath = isApiPath(options.apiUrl);
  const now = options.now ?? Date.now;
  const backfillWindowMs = options.backfillWindowMs ?? SUBSCRIBER_DEFAULTS.backfillWindowMs;
  const pingIntervalMs = options.pingIntervalMs ?? SUBSCRIBER_DEFAULTS.pingIntervalMs;
  const idleTimeoutMs = options.idleTimeoutMs ?? SUBSCRIBER_DEFAULTS.idleTimeoutMs;
  const initialBackoffMs = options.initialBackoffMs ?? SUBSCRIBER_DEFAULTS.initialBackoffMs;
  const maxBackoffMs = options.maxBackoffMs ?? SUBSCRIBER_DEFAULTS.maxBackoffMs;
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? SUBSCRIBER_DEFAULTS.handshakeTimeoutMs;
  function streamEndpoint(url: string): { url: string; logUrl: string; tunnel: ReturnType<typeof createTunnelAgent> | undefined } {
    const tunnelProxy = proxyFor(new URL(url), options.proxy);
    return { url, logUrl: safeUrl(url), tunnel: tunnelProxy === undefined ? undefined : createTunnelAgent(tunnelProxy, url.startsWith('wss:'), handshakeTimeoutMs, tlsAgentOptions(options.tls)) };
  }
  /**
   * The event stream's URL (as logged) and the agent whose connections tunnel through HTTP(S)_PROXY,
   * unless NO_PROXY names the server: the API URL's, or the https one its server sends it to.
   */
  let endpoint = streamEndpoint(eventsOutUrl(options.apiUrl));
  const backfillQuietMs = options.backfillQuietMs ?? SUBSCRIBER_DEFAULTS.backfillQuietMs;
  const persistLagMs = options.persistLagMs ?? SUBSCRIBER_DEFAULTS.persistLagMs;
  const backfillMaxWaitMs = options.backfillMaxWaitMs ?? SUBSCRIBER_DEFAULTS.backfillMaxWaitMs;
  const prefixes = options.prefixes !== undefined ? [...options.prefixes] : undefined;
  const keepAlive = options.keepAlive ?? true;
  const rest =
    options.rest ??
    createPrefectRestClient({ ...auth, apiUrl: options.apiUrl, timeoutMs: options.requestTimeoutMs ?? SUBSCRIBER_DEFAULTS.requestTimeoutMs, tls: options.tls, proxy: options.proxy });
  const redact = (text: string): string => redactSecrets(text, auth);
  /** The server's own text for an error or a log line: on one line, credentials redacted, cut short. */
  const serverText = (text: string): string => shownServerText(text, auth, MAX_SHOWN_SERVER_TEXT_CHARS);

  const stats = { connects: 0, reconnects: 0, frames: 0, historyEvents: 0, connected: false, lastError: undefined as string | undefined };

  let stopped = false;
  let stopping: Promise<void> | undefined;
  let current: WebSocket | undefined;
  let sleepTimer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  let historyAbort: AbortController | undefined;
  /** Re-reads under way (one may outlive its connection, and overlap the next one's). */
  const rereadAborts = new Set<AbortController>();
  /** Re-reads of the end of a backfill window waiting for the server to write it (they outlive their connection). */
  const rereadTimers = new Set<NodeJS.Timeout>();
  /** Ms up to which the stream is known to have been followed (live or from history), on the server's clock. */
  let coveredUntilMs: number | undefined = options.coveredUntilMs;
  /**
   * While a connection is live: up to when it has followed the stream, or undefined while its
   * backfill may still be on its way (then only what came before it counts).
   */
  let liveCoveredUntilMs: (() => number | undefined) | undefined;
  let historyFailures = 0;
  /** Whether the body of an answer that was not an event page was logged since the history was last read (or given up). */
  let unexpectedBodyShown = false;
  /**
   * A history window that a server which did not answer (timeouts, a gateway's 502/503/504) left
   * unread while the stream went on without it. It is kept and read again should the websocket fail
   * too, so nothing is lost yet: only a connection that goes live moves past it, and says so then.
   */
  let unreadWindow: { readonly sinceMs: number; readonly events: number; readonly err: string } | undefined;
  /**
   * How far our clock runs ahead of the server's, from the `Date` of the upgrade response: at least
   * this much when positive; negative when the server's clock runs ahead of ours, by at least its
   * magnitude; 0 within the tolerance, or not known yet. The filter's `since` is the server's time: one
   * in its future would hide every live event until the server's clock got there. And the server
   * clamps `since` on its own clock: a gap measured on ours would look that much shorter.
   */
  let serverAheadMs = 0;

  let resolveDone!: () => void;
  let rejectDone!: (err: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  // Whoever cares awaits `done`; an unobserved rejection must not take the host process down.
  done.catch(() => undefined);

  const status = (s: SubscriberStatus, detail?: string): void => {
    stats.connected = s === 'connected';
    if (options.onStatus === undefined) return;
    try {
      options.onStatus(s, detail);
    } catch (err) {
      log.error({ err: errFields(err, redact) }, 'onStatus callback threw; ignored');
    }
  };

  /** A live frame as received, for a user debugging what the server sends (only at debug: a line per event). */
  const logFrame = (text: string): void => {
    // Redacted before it is cut short, as the handshake's replies are: a cut secret would no longer match.
    const shown = redact(text);
    log.debug({ frame: shown.length > MAX_LOGGED_FRAME_CHARS ? `${shown.slice(0, MAX_LOGGED_FRAME_CHARS)}…` : shown }, 'event stream frame');
  };

  let callbackErrors = 0;
  let callbackErrorLoggedAt = -Infinity;
  const deliver = (event: string | object, origin: EventOrigin): void => {
    try {
      options.onEvent(event, origin);
    } catch (err) {
      // Once, then at most every CALLBACK_ERROR_LOG_INTERVAL_MS with a count: a systematic bug must not flood the log.
      callbackErrors += 1;
      const t = performance.now();
      if (t - callbackErrorLoggedAt >= CALLBACK_ERROR_LOG_INTERVAL_MS) {
        callbackErrorLoggedAt = t;
        log.error({ err: errFields(err, redact), origin, count: callbackErrors }, 'onEvent callback threw; event skipped');
      }
    }
  };

  const cursorMs = (): number | undefined => {
    try {
      const us = options.resumeFromUs();
      return typeof us === 'number' && Number.isFinite(us) ? Math.floor(us / 1000) : undefined;
    } catch (err) {
      log.error({ err: errFields(err, redact) }, 'resumeFromUs threw; treating as a fresh start');
      return undefined;
    }
  };

  /**
   * Where the websocket's backfill starts: cursor − margin (a cursor ahead of this clock, e.g. from
   * a state file written with a skewed `occurred`, counts as now); with no event seen yet, what we
   * followed live − margin; on a fresh start, a short look-back.
   */
  const resumeSinceMs = (nowMs: number): number => {
    const c = cursorMs();
    if (c !== undefined) return Math.min(c, nowMs) - options.resumeMarginMs;
    return coveredUntilMs === undefined ? nowMs - Math.max(FRESH_START_LOOKBACK_MS, options.resumeMarginMs) : Math.min(coveredUntilMs, nowMs) - options.resumeMarginMs;
  };

  /** Where a resumed stream has to start for the history fill: as above, but never before what we already followed. */
  const gapStartMs = (): number | undefined => {
    if (cursorMs() === undefined && coveredUntilMs === undefined) return undefined;
    const from = resumeSinceMs(now() - serverAheadMs);
    return coveredUntilMs === undefined ? from : Math.max(from, coveredUntilMs - options.resumeMarginMs);
  };

  // Ref'd by default: during a backoff nothing else may keep a `watch` process alive. Inside a host
  // (keepAlive false) there is nothing to wait for once the host is done: the process may end here.
  const sleep = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      wake = resolve;
      sleepTimer = setTimeout(() => {
        sleepTimer = undefined;
        wake = undefined;
        resolve();
      }, ms);
      if (!keepAlive) sleepTimer.unref();
    });

  const backoffMs = (attempt: number): number => {
    const base = Math.min(maxBackoffMs, initialBackoffMs * BACKOFF_MULTIPLIER ** Math.max(0, attempt - 1));
    return Math.max(1, Math.round(base * (0.5 + Math.random() * 0.5)));
  };

  // ---- history ------------------------------------------------------------------------------------

  /**
   * The gap that the websocket's backfill would not cover, on the server's clock (as its clamp is):
   * from where the stream has to resume to the server's now, when that comes within
   * HISTORY_SAFETY_MS of the clamp.
   */
  function historyGap(): { fromMs: number; machineNowMs: number; serverNowMs: number; gapMs: number } | undefined {
    const fromMs = gapStartMs();
    if (fromMs === undefined) return undefined;
    const machineNowMs = now();
    const serverNowMs = machineNowMs - serverAheadMs;
    const gapMs = serverNowMs - fromMs;
    return gapMs > Math.max(0, backfillWindowMs - HISTORY_SAFETY_MS) ? { fromMs, machineNowMs, serverNowMs, gapMs } : undefined;
  }

  /** Fill a gap wider than the server's backfill from REST. Returns an outcome only when the attempt must not go on. */
  async function fillHistory(): Promise<Outcome | undefined> {
    for (let round = 0; round < MAX_HISTORY_ROUNDS && !stopped; round++) {
      const gap = historyGap();
      if (gap === undefined) return undefined;
      const { fromMs, gapMs } = gap;
      // Up to the later of the two clocks' now (one reading of this machine's clock, so the window
      // ends where the round's coverage does): an event a client stamped by either is not left out.
      const untilMs = Math.max(gap.machineNowMs, gap.serverNowMs);
      const window = { since: new Date(fromMs).toISOString(), until: new Date(untilMs).toISOString() };
      log.info({ ...window, gapMs, backfillWindowMs }, 'the gap is longer than the websocket backfill; reading the event history');
      const started = performance.now();
      let count = 0;
      let pages = 0;
      historyAbort = new AbortController();
      try {
        for await (const page of rest.readEvents({ sinceIso: window.since, untilIso: window.until, prefixes }, { signal: historyAbort.signal })) {
          pages += 1;
          for (const ev of page) {
            if (stopped) return { kind: 'stopped' };
            count += 1;
            stats.historyEvents += 1;
            deliver(ev !== null && typeof ev === 'object' ? ev : String(ev), 'history');
          }
          if (stopped) return { kind: 'stopped' };
        }
      } catch (err) {
        if (stopped) return { kind: 'stopped' };
        const message = redact(errorText(err));
        stats.lastError = message;
        if (err instanceof AuthError) return { kind: 'fatal', error: err };
        // Rate limited (Prefect Cloud): the server says when to come back. Waited for, window kept, however
        // often: a limit lifts, and the live stream would move past the window for good.
        // So is Prefect Cloud's maintenance (Prefect-Maintenance: true): it ends, and Prefect's own client waits it out.
        if (err instanceof RestRequestError && (err.status === HTTP_TOO_MANY_REQUESTS || err.maintenance)) {
          return {
            kind: 'failed', message: `event history: ${message}`, answered: true,
            ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: err.retryAfterMs }),
            ...(err.maintenance ? { maintenance: true as const } : {}),
          };
        }
        // A gateway's 502/503/504 (an ingress whose Prefect server is restarting) is no answer from the server.
        const answered = (err instanceof RestRequestError && err.status !== undefined && !GATEWAY_STATUSES.has(err.status)) || err instanceof ProtocolError;
        // A read that got further than time went on (its events left a shorter gap) is a server that
        // fails now and then (a busy or locked database), not one that cannot answer: only failures in
        // a row without that give the window up. One that reads slower than time goes is given up as before.
        const left = historyGap();
        const progressed = left === undefined || left.gapMs < gapMs;
        if (progressed) historyFailures = 0;
        // A server that is not there (refused, no such host) is waited for, window kept: it counts for nothing.
        if (!(err instanceof RestRequestError && err.unreachable)) historyFailures += 1;
        // What came instead of an event page (a proxy's sign-in page, say) is shown once, not on every try.
        if (err instanceof RestRequestError && err.body !== undefined && !unexpectedBodyShown) {
          unexpectedBodyShown = true;
          log.warn({ ...window, err: message, status: err.status, body: err.body }, 'the event history answered with something that is not an event page (a proxy in the way?); it is asked again');
        }
        if (err instanceof ProtocolError || historyFailures >= MAX_HISTORY_FAILURES) {
          // Go live and say what may be lost: a history that never answers (it times out, its body will
          // not decode) must not keep the live stream away for good. A server that answered gave the
          // window up; one that did not is left its window, read again should the websocket fail too
          // (once it is live, the stream moves past it anyway).
          historyFailures = 0;
          unexpectedBodyShown = false;
          if (answered) {
            log.error({ ...window, eventsRead: count, err: message }, 'reading the event history failed; events in this window may be missing');
            coveredUntilMs = gap.serverNowMs;
            unreadWindow = undefined;
          } else {
            // Said once per window: a gateway outage fails every round the same way until it ends.
            if (unreadWindow === undefined) log.warn({ ...window, eventsRead: count, err: message }, 'reading the event history failed; trying the live stream without it (the window is read again if that fails too)');
            unreadWindow = { sinceMs: unreadWindow?.sinceMs ?? fromMs, events: count, err: message };
          }
          return undefined;
        }
        return { kind: 'failed', message: `event history: ${message}`, progressed, answered };
      } finally {
        historyAbort = undefined;
      }
      historyFailures = 0;
      unexpectedBodyShown = false;
      unreadWindow = undefined;
      // The server's now, as far as its clock is known (not before the first connection of a process).
      coveredUntilMs = gap.serverNowMs;
      log.info({ ...window, eventsRead: count, pages, ms: Math.round(performance.now() - started) }, 'event history read');
    }
    // Still behind after the last round (the history reads slower than events come): go live, and
    // say what neither the history nor the websocket's backfill will cover.
    const left = stopped ? undefined : historyGap();
    if (left !== undefined) {
      log.error(
        { since: new Date(left.fromMs).toISOString(), until: new Date(left.serverNowMs - backfillWindowMs).toISOString(), gapMs: left.gapMs },
        `the event history could not be read up to now in ${MAX_HISTORY_ROUNDS} rounds (it reads slower than events come); events in this window may be missing`,
      );
    }
    return undefined;
  }

  /**
   * Read the end of a subscription's backfill window again from the history, once the server has
   * written what was published just before the subscription, and what it dropped from its live queue
   * while the backfill was sent (see `persistLagMs`): from the
   * filter's `since`, or the resume margin (at least the lag) before the subscription, to now.
   * Duplicates of what the backfill and the live stream gave are the caller's to drop, as ever.
   * A failed request (the busy server that dropped events may well fail one) is asked again with the
   * reconnect's backoff, from the last event read, until MAX_HISTORY_FAILURES fail in a row without
   * one getting further; refused credentials or broken page tokens give it up at once.
   */
  async function rereadBackfillEnd(filterSinceMs: number, subscribedAtMs: number): Promise<void> {
    if (stopped) return;
    const startMs = Math.max(filterSinceMs, subscribedAtMs - Math.max(options.resumeMarginMs, persistLagMs));
    const machineNowMs = now();
    const window = { since: new Date(startMs).toISOString(), until: new Date(Math.max(machineNowMs, machineNowMs - serverAheadMs)).toISOString() };
    const abort = new AbortController();
    rereadAborts.add(abort);
    let count = 0;
    let pages = 0;
    let failures = 0;
    /** Where the next try starts: the last event read (events come oldest first; its equals come again, as duplicates). */
    let fromIso = window.since;
    const started = performance.now();
    try {
      for (;;) {
        try {
          for await (const page of rest.readEvents({ sinceIso: fromIso, untilIso: window.until, prefixes }, { signal: abort.signal })) {
            pages += 1;
            for (const ev of page) {
              if (stopped) return;
              count += 1;
              stats.historyEvents += 1;
              deliver(ev !== null && typeof ev === 'object' ? ev : String(ev), 'history');
            }
            const last = lastOccurred(page);
            if (last !== undefined && Date.parse(last) > Date.parse(fromIso)) {
              fromIso = last;
              failures = 0;
            }
          }
          log.debug({ ...window, eventsRead: count, pages, ms: Math.round(performance.now() - started) }, 'the end of the backfill window read again from the event history');
          return;
        } catch (err) {
          if (stopped) return;
          failures += 1;
          const message = redact(errorText(err));
          if (err instanceof AuthError || err instanceof ProtocolError || failures >= MAX_HISTORY_FAILURES) {
            const body = err instanceof RestRequestError ? err.body : undefined;
            log.warn({ ...window, eventsRead: count, err: message, ...(body === undefined ? {} : { body }) }, 'reading the end of the backfill window again from the event history failed; events published just before the connection may be missing');
            return;
          }
          const waitMs = Math.max(backoffMs(failures), Math.min(err instanceof RestRequestError ? (err.retryAfterMs ?? 0) : 0, MAX_UPGRADE_RETRY_AFTER_MS));
          log.debug({ ...window, from: fromIso, err: message, attempt: failures, delayMs: waitMs }, 'reading the end of the backfill window again failed; asking again');
          await pause(waitMs, abort.signal, true);
          if (stopped) return;
        }
      }
    } finally {
      rereadAborts.delete(abort);
    }
  }

  // ---- one websocket connection -------------------------------------------------------------------

  function connect(): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      const token = wsAuthToken(auth);
      const { url, tunnel } = endpoint;
      // Untraced whenever it is made, as every request of prefect-otel's (see http-client's exchange).
      const ws = untraced(() => new WebSocket(url, ['prefect'], {
        perMessageDeflate: false,
        handshakeTimeout: handshakeTimeoutMs,
        maxPayload: MAX_PAYLOAD_BYTES,
        // A frame with broken UTF-8 is one bad event for the pipeline to skip, not a reason to reconnect.
        skipUTF8Validation: true,
        headers: { ...restAuthHeaders(auth), 'User-Agent': USER_AGENT },
        ...tlsAgentOptions(options.tls),
        ...(tunnel === undefined ? {} : { agent: tunnel }),
      }));
      current = ws;
      let phase: 'upgrade' | 'auth' | 'live' = 'upgrade';
      /** A frame came after the filter: the server took it (Prefect refuses a filter with 1002 before it sends any). */
      let streamed = false;
      let upgradeStatus: number | undefined;
      let upgradeRedirect: string | undefined;
      let upgradeTo: string | undefined;
      let upgradeRetryAfterMs: number | undefined;
      let upgradeMaintenance = false;
      let fatal: AuthError | ProtocolError | undefined;
      /** Set when the credentials were refused by a message (not a close): the close that follows may say more. */
      let refusedBy: { shown: string; reason: string | undefined } | undefined;
      /** The server spoke something other than Prefect's protocol in the handshake. */
      let protocolError: ProtocolError | undefined;
      let failure: string | undefined;
      let refill = false;
      let lastError: string | undefined;
      let liveSince = 0;
      let lastActivity = performance.now();
      /** When the last frame came (pongs aside), and whether the backfill is known to be sent. */
      let lastFrameAt = 0;
      let backfillSent = false;
      let filterSentAtMs = 0;
      /** Schedules the re-read of the end of the backfill window; undefined before the subscription and once done. */
      let scheduleReread: (() => void) | undefined;
      const timers: NodeJS.Timeout[] = [];
      const touch = (): void => {
        lastActivity = performance.now();
      };
      const backfillDone = (): boolean => {
        if (!backfillSent && performance.now() - lastFrameAt >= backfillQuietMs) backfillSent = true;
        if (!backfillSent) {
          const c = cursorMs();
          if (c !== undefined && c >= filterSentAtMs) backfillSent = true;
        }
        return backfillSent;
      };
      /**
       * A connection dropped in its backfill has followed the stream only as far as the cursor got.
       * On the server's clock, as the history is asked for: on this one, running ahead, the restart
       * after an outage would read the history only from that much after the stop.
       */
      const followedUntilMs = (): number | undefined => (backfillDone() ? now() - serverAheadMs - Math.max(0, performance.now() - lastActivity) : undefined);

      // The socket is the upgrade response's: from here on it is the live connection.
      ws.on('upgrade', (res) => {
        if (!keepAlive) res.socket.unref();
        // Prefect accepts with the sub-protocol it was offered, always; without it `ws` aborts the handshake.
        const answered = res.headers['sec-websocket-protocol'];
        if (answered !== 'prefect') protocolError = subprotocolMissing(answered === undefined ? undefined : serverText(answered));
        const before = serverAheadMs;
        noteServerClock(res.headers.date);
        // Only when the server's clock turned out further ahead than taken: a history that failed and
        // was gone past keeps its gap, and must not hold the stream back on every connection.
        refill = serverAheadMs < before - CLOCK_SKEW_TOLERANCE_MS && historyGap() !== undefined;
      });

      ws.on('unexpected-response', (_req, res) => {
        upgradeStatus = res.statusCode;
        upgradeRedirect = redirectTarget(res.headers.location, url);
        upgradeTo = httpsUpgradeOf(res.statusCode, res.headers.location, url);
        upgradeRetryAfterMs = retryAfterMs(res.headers['retry-after'], now());
        upgradeMaintenance = isMaintenance(res.headers[MAINTENANCE_HEADER]);
        res.resume();
        ws.terminate();
      });

      ws.on('open', () => {
        if (refill) {
          ws.terminate();
          return;
        }
        phase = 'auth';
        touch();
        ws.send(JSON.stringify({ type: 'auth', token }));
        const authTimer = setTimeout(() => {
          if (phase !== 'auth') return;
          failure = `no auth reply within ${handshakeTimeoutMs} ms`;
          ws.terminate();
        }, handshakeTimeoutMs);
        authTimer.unref();
        timers.push(authTimer);
        const ping = setInterval(() => {
          if (ws.readyState === WebSocket.OPEN) ws.ping();
        }, pingIntervalMs);
        ping.unref();
        timers.push(ping);
        const idle = setInterval(
          () => {
            const silentMs = performance.now() - lastActivity;
            if (silentMs <= idleTimeoutMs) return;
            failure = `no traffic for ${Math.round(silentMs)} ms`;
            log.warn({ silentMs: Math.round(silentMs), idleTimeoutMs }, 'the event stream went silent; dropping the connection');
            ws.terminate();
          },
          Math.max(5, Math.min(1_000, Math.floor(idleTimeoutMs / 4))),
        );
        idle.unref();
        timers.push(idle);
      });

      ws.on('ping', touch);
      ws.on('pong', touch);

      ws.on('message', (data) => {
        const t = performance.now();
        lastActivity = t;
        const text = rawToText(data);
        if (phase === 'live') {
          streamed = true;
          // A pause between frames: the backfill was sent before it.
          if (!backfillSent && t - lastFrameAt >= backfillQuietMs) backfillSent = true;
          lastFrameAt = t;
          stats.frames += 1;
          if (log.isLevelEnabled('debug')) logFrame(text);
          deliver(text, 'live');
          return;
        }
        if (phase !== 'auth' || refusedBy !== undefined || protocolError !== undefined) return;
        const reply = handshakeReply(text);
        if (reply === undefined) {
          // Not the protocol's form at all (a proxy's page, a garbled frame): no answer about the credentials.
          protocolError = new ProtocolError(
            `the Prefect event stream answered the auth message with something other than Prefect's protocol (expected {"type":"auth_success"}, got "${serverText(text)}")`,
          );
          ws.close(1002);
          return;
        }
        if (reply.type !== 'auth_success') {
          // Redacted before it is cut short: the server may echo the token, and a cut one would no longer match.
          refusedBy = { shown: JSON.stringify(redact(reply.type).slice(0, MAX_SHOWN_TYPE_CHARS)), reason: reply.reason === undefined ? undefined : serverText(reply.reason) };
          ws.close(1000);
          return;
        }
        phase = 'live';
        liveSince = performance.now();
        lastFrameAt = liveSince;
        // A fresh start has no events before it to miss.
        const resumed = cursorMs() !== undefined || coveredUntilMs !== undefined;
        const filter = buildFilter();
        filterSentAtMs = now() - serverAheadMs;
        liveCoveredUntilMs = followedUntilMs;
        ws.send(JSON.stringify({ type: 'filter', filter, backfill: true }));
        // The end of the backfill window is read again `persistLagMs` after the backfill is sent (not
        // after the subscription): live events published while it was sent wait in a queue of 256 on
        // the server, and those past it are dropped. Checked on a timer, not per frame; a backfill
        // never seen as sent counts as sent `backfillMaxWaitMs` after the subscription.
        const framesAtFilter = stats.frames;
        const filterSinceMs = Date.parse(filter.occurred.since);
        const subscribedAtMs = filterSentAtMs;
        const subscribedAt = liveSince;
        scheduleReread = (): void => {
          scheduleReread = undefined;
          clearInterval(sentCheck);
          // Not one of the connection's timers: a connection that drops before it fires still has its
          // window read, as the next one resumes from its last event − the margin, which may be past
          // what the server dropped while it sent this backfill.
          const reread = setTimeout(() => {
            rereadTimers.delete(reread);
            // A fresh start has no events before it to miss: only a queue that may have overflowed (256 frames came) is read again.
            if (resumed || stats.frames - framesAtFilter >= SUBSCRIPTION_BACKLOG) void rereadBackfillEnd(filterSinceMs, subscribedAtMs);
          }, persistLagMs);
          reread.unref();
          rereadTimers.add(reread);
        };
        const sentCheck = setInterval(
          () => {
            if (!backfillDone()) {
              if (performance.now() - subscribedAt < backfillMaxWaitMs) return;
              log.debug({ backfillMaxWaitMs }, 'the backfill was not seen to end (no pause in frames, none newer than the connection); the end of its window is read again anyway');
            }
            scheduleReread?.();
          },
          Math.max(5, Math.min(1_000, Math.floor(backfillQuietMs / 4))),
        );
        sentCheck.unref();
        timers.push(sentCheck);
        stats.connects += 1;
        log.info({ url: endpoint.logUrl, since: filter.occurred.since, until: filter.occurred.until, eventNames: prefixes === undefined ? 'all' : prefixes.join(', ') }, 'connected to the Prefect event stream');
        // The stream moves past a window the history left unread: what the server's backfill clamp cuts off is lost now.
        if (unreadWindow !== undefined) {
          const untilMs = filterSentAtMs - backfillWindowMs;
          const { sinceMs, events, err } = unreadWindow;
          unreadWindow = undefined;
          if (untilMs > sinceMs) log.error({ since: new Date(sinceMs).toISOString(), until: new Date(untilMs).toISOString(), eventsRead: events, err }, 'reading the event history failed; events in this window may be missing');
        }
        status('connected');
      });

      ws.on('error', (err) => {
        lastError = redact(err.message);
        // The proxy's credentials are missing or wrong: no retry brings them, as refused Prefect credentials.
        if (err instanceof ProxyError && err.status === PROXY_AUTH_REQUIRED) fatal ??= new AuthError(lastError, proxyVariable(new URL(url)));
        // ws closes the socket itself (1009) and the close carries no reason: say which frame did it.
        if ((err as NodeJS.ErrnoException).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') failure ??= `a frame larger than ${MAX_PAYLOAD_BYTES} bytes`;
      });

      ws.on('close', (code, reasonBuf) => {
        for (const t of timers) clearTimeout(t);
        if (current === ws) current = undefined;
        const reason = redact(reasonBuf.toString('utf8'));
        /** For an error: the server's text, on one line and short. */
        const shownReason = serverText(reasonBuf.toString('utf8'));
        const wasLive = phase === 'live';
        if (wasLive) {
          coveredUntilMs = followedUntilMs() ?? coveredUntilMs;
          liveCoveredUntilMs = undefined;
          // Sent (as far as the close shows) but not yet scheduled: its window is read all the same.
          if (backfillSent && !stopped) scheduleReread?.();
          if (!backfillSent && !stopped) {
            const c = cursorMs();
            if (c !== undefined) log.info({ cursor: new Date(c).toISOString() }, 'the event stream closed during its backfill; the next connection resumes from the last event received');
            else log.info('the event stream closed during its backfill, before any event arrived; the next connection asks for its window again');
          }
        }
        if (stopped) return resolve({ kind: 'stopped' });
        if (refill) return resolve({ kind: 'refill' });
        if (fatal !== undefined) return resolve({ kind: 'fatal', error: fatal });
        if (protocolError !== undefined) {
          status('disconnected', protocolError.message);
          return resolve({ kind: 'failed', message: protocolError.message, protocolError, answered: true });
        }
        if (refusedBy !== undefined) {
          // The close that follows a refusal may carry the server's reason too (not when it only answers ours).
          const closed = UNREMARKABLE_CLOSE_CODES.has(code) && shownReason === '' ? '' : `; close ${code}${shownReason ? `: ${shownReason}` : ''}`;
          return resolve({
            kind: 'fatal',
            error: new AuthError(
              `the Prefect event stream refused authentication (expected auth_success, got ${refusedBy.shown}${refusedBy.reason ? `: ${refusedBy.reason}` : ''}${closed}): ${authAdvice(auth, options.apiUrl)}`,
              authSetting(auth, options.apiUrl),
            ),
          });
        }
        if (upgradeTo !== undefined) return resolve({ kind: 'upgraded', url: upgradeTo });
        if (upgradeStatus === 401 || (upgradeStatus === 403 && apiPath)) {
          return resolve({
            kind: 'fatal',
            error: new AuthError(
              `the Prefect server refused the event-stream upgrade with HTTP ${upgradeStatus}: ${authAdvice(auth, options.apiUrl)}`,
              authSetting(auth, options.apiUrl),
            ),
          });
        }
        // Prefect refuses with 1008 and its reason ("Invalid token"). An application's own code in
        // answer to the auth message is a decision too, not a dropped connection: Prefect's client
        // takes any such close there as refused credentials.
        if (phase === 'auth' && (code === 1008 || (code >= APPLICATION_CLOSE_CODES.min && code <= APPLICATION_CLOSE_CODES.max))) {
          return resolve({
            kind: 'fatal',
            error: new AuthError(
              `the Prefect event stream refused authentication (close ${code}${shownReason ? `: ${shownReason}` : ''}): ${authAdvice(auth, options.apiUrl)}`,
              authSetting(auth, options.apiUrl),
            ),
          });
        }
        // Once frames came the filter was taken: a 1002 then is a protocol error on the way (a proxy,
        // a garbled frame), and the stream is resumed as after any dropped connection.
        if (code === 1002 && phase !== 'upgrade' && !streamed) {
          return resolve({
            kind: 'fatal',
            error: new ProtocolError(`the Prefect server rejected the subscription (close 1002${shownReason ? `: ${shownReason}` : ''})`),
          });
        }
        if (wasLive) {
          status('disconnected', `${code}${reason ? ` ${reason}` : ''}`);
          return resolve({ kind: 'closed', code, reason: failure ?? reason, liveMs: performance.now() - liveSince });
        }
        const maintenance = upgradeStatus !== undefined && upgradeMaintenance;
        // The server took the connection and closed it in answer to the auth message, without a word.
        const authDropped = phase === 'auth' && failure === undefined ? { code, reason: shownReason } : undefined;
        const message =
          failure ??
          (authDropped !== undefined ? `closed with ${code}${shownReason ? ` ${shownReason}` : ''} in answer to the auth message, before any reply`
          : maintenance ? `HTTP ${upgradeStatus} on the upgrade, marked Prefect-Maintenance: true`
          : upgradeStatus !== undefined ? upgradeRefused(upgradeStatus, upgradeRedirect, apiPath, options.apiUrlName ?? 'PREFECT_API_URL')
          : (lastError ?? `closed with ${code}${reason ? ` ${reason}` : ''}`));
        status('disconnected', message);
        // Past the upgrade, or an HTTP answer from more than a gateway: the server is there.
        const answered = phase !== 'upgrade' || (upgradeStatus !== undefined && !GATEWAY_STATUSES.has(upgradeStatus));
        resolve({
          kind: 'failed', message, answered,
          ...(upgradeRetryAfterMs === undefined ? {} : { retryAfterMs: upgradeRetryAfterMs }),
          ...(maintenance ? { maintenance: true as const } : {}),
          ...(authDropped !== undefined ? { authDropped } : {}),
        });
      });
    });
  }

  function buildFilter(): { occurred: { since: string; until: string }; event?: { prefix: string[] }; order: 'ASC' } {
    const nowMs = now();
    const sinceMs = resumeSinceMs(nowMs - serverAheadMs);
    return {
      occurred: { since: new Date(sinceMs).toISOString(), until: new Date(nowMs + UNTIL_AHEAD_MS).toISOString() },
      ...(prefixes !== undefined ? { event: { prefix: prefixes } } : {}),
      order: 'ASC',
    };
  }

  /** Keep how far our clock runs ahead of (or behind) the server's `Date` header, and say so once when it changes. */
  function noteServerClock(date: string | undefined): void {
    const serverMs = date === undefined ? NaN : Date.parse(date);
    if (!Number.isFinite(serverMs)) return;
    const t = now();
    // The header is cut to the second: the server's clock may be up to that much later than it says.
    // Either way the skew is taken as the least it can be.
    const aheadMs = t - (serverMs + DATE_RESOLUTION_MS);
    const behindMs = serverMs - t;
    const next = aheadMs > CLOCK_SKEW_TOLERANCE_MS ? aheadMs : behindMs > CLOCK_SKEW_TOLERANCE_MS ? -behindMs : 0;
    if (next !== 0 && Math.abs(next - serverAheadMs) > CLOCK_SKEW_TOLERANCE_MS) {
      if (next > 0) log.warn({ aheadMs: Math.round(next) }, "this machine's clock runs ahead of the Prefect server's; the event stream is asked for from the server's time");
      else log.warn({ behindMs: Math.round(-next) }, "the Prefect server's clock runs ahead of this machine's; gaps in the event stream are measured on the server's time");
    }
    serverAheadMs = next;
  }

  // ---- the loop -----------------------------------------------------------------------------------

  /** `disconnected`: whether to say so (a failed connection has said it already). */
  function giveUp(error: AuthError | ProtocolError, disconnected: boolean): void {
    stats.lastError = error.message;
    if (disconnected) status('disconnected', error.message);
    // Whoever awaits `done` reports it (watch: one fatal line): an error line here too would say it twice.
    log.debug({ code: error.code }, 'event stream stopped on an error that retrying cannot fix');
    rejectDone(error);
  }

  async function run(): Promise<void> {
    let failures = 0;
    let protocolFailures = 0;
    let authDrops = 0;
    for (let attempt = 0; !stopped; attempt++) {
      if (attempt > 0) stats.reconnects += 1;
      status('connecting');
      log.debug({ url: endpoint.logUrl, attempt: attempt + 1 }, 'connecting to the Prefect event stream');
      const outcome = (await fillHistory()) ?? (stopped ? { kind: 'stopped' as const } : await connect());
      if (outcome.kind === 'stopped' || stopped) return;
      if (outcome.kind === 'refill') continue;
      if (outcome.kind === 'upgraded') {
        const from = endpoint;
        endpoint = streamEndpoint(outcome.url);
        from.tunnel?.destroy();
        log.info({ from: from.logUrl, url: endpoint.logUrl }, `the Prefect server redirects the event stream from http to https; following it (${options.apiUrlName ?? 'PREFECT_API_URL'} could name the https URL)`);
        continue;
      }
      if (outcome.kind === 'fatal') {
        giveUp(outcome.error, true);
        return;
      }
      protocolFailures = outcome.kind === 'failed' && outcome.protocolError !== undefined ? protocolFailures + 1 : 0;
      if (outcome.kind === 'failed' && outcome.protocolError !== undefined && protocolFailures >= MAX_PROTOCOL_FAILURES) {
        giveUp(outcome.protocolError, false);
        return;
      }
      authDrops = outcome.kind === 'failed' && outcome.authDropped !== undefined ? authDrops + 1 : 0;
      if (outcome.kind === 'failed' && outcome.authDropped !== undefined && authDrops >= MAX_AUTH_DROPS) {
        const { code, reason } = outcome.authDropped;
        giveUp(
          new AuthError(
            `the Prefect event stream closed the connection in answer to the auth message ${authDrops} times in a row, without a reply (last: close ${code}${reason ? `: ${reason}` : ''}); Prefect's own client takes that as refused credentials, as a proxy or gateway that checks them may end the connection so: ${authAdvice(auth, options.apiUrl)}`,
            authSetting(auth, options.apiUrl),
          ),
          false,
        );
        return;
      }
      let delayMs: number;
      if (outcome.kind === 'closed') {
        if (outcome.liveMs >= STABLE_CONNECTION_MS) failures = 0;
        failures += 1;
        delayMs = backoffMs(failures);
        stats.lastError = `closed ${outcome.code}${outcome.reason ? ` ${outcome.reason}` : ''}`;
        log.warn({ closeCode: outcome.code, reason: outcome.reason, attempt: failures, delayMs }, `event stream closed, reconnecting in ${delayMs} ms`);
      } else {
        if (outcome.progressed === true) failures = 0;
        failures += 1;
        // A server that says when to come back (a 429 or 503 on the upgrade, a 429 on the history) is not asked sooner.
        delayMs = Math.max(backoffMs(failures), Math.min(outcome.retryAfterMs ?? 0, MAX_UPGRADE_RETRY_AFTER_MS));
        stats.lastError = outcome.message;
        const line = outcome.maintenance === true ? `the Prefect API is down for maintenance, retrying in ${delayMs} ms`
          : outcome.answered === true ? `connecting to the Prefect event stream failed, retrying in ${delayMs} ms` : `Prefect server unreachable, retrying in ${delayMs} ms`;
        log.warn({ url: endpoint.logUrl, err: outcome.message, attempt: failures, delayMs }, line);
      }
      await sleep(delayMs);
    }
  }

  const running = run().catch((err: unknown) => {
    // A bug here must not leave `done` pending forever.
    const error = err instanceof Error ? err : new Error(String(err));
    log.error({ err: errFields(err, redact) }, 'event subscriber failed');
    rejectDone(error);
  });

  return {
    done,
    coveredUntilMs(): number | undefined {
      return liveCoveredUntilMs?.() ?? coveredUntilMs;
    },
    get stats(): SubscriberStats {
      const { lastError, ...rest_ } = stats;
      return lastError === undefined ? { ...rest_ } : { ...rest_, lastError };
    },
    stop(): Promise<void> {
      stopping ??= (async () => {
        stopped = true;
        if (sleepTimer !== undefined) clearTimeout(sleepTimer);
        wake?.();
        historyAbort?.abort();
        for (const abort of rereadAborts) abort.abort();
        for (const t of rereadTimers) clearTimeout(t);
        rereadTimers.clear();
        const ws = current;
        if (ws !== undefined) {
          if (ws.readyState === WebSocket.OPEN) {
            const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
            ws.close(1000, 'prefect-otel stopping');
            const timer = setTimeout(() => ws.terminate(), CLOSE_WAIT_MS);
            await closed;
            clearTimeout(timer);
          } else if (ws.readyState !== WebSocket.CLOSED) {
            ws.terminate();
          }
        }
        // A CONNECT the proxy has not answered yet is not the websocket's to end: it would hold the process until its timeout.
        endpoint.tunnel?.destroy();
        await running;
        if (stats.connected) status('disconnected', 'stopped');
        log.info({ connects: stats.connects, reconnects: stats.reconnects, frames: stats.frames, historyEvents: stats.historyEvents }, 'event stream closed (stopped)');
        resolveDone();
      })();
      return stopping;
    },
  };
}

/**
 * Where a redirect on the upgrade points, as scheme, host and path only (a query may carry a token).
 * Other than the same host's https (`httpsUpgradeOf`), it is not followed: the auth message would
 * go to wherever it points.
 */
function redirectTarget(location: string | undefined, from: string): string | undefined {
  if (location === undefined) return undefined;
  try {
    const u = new URL(location, from);
    return `${u.protocol}//${u.host}${u.pathname}`.slice(0, MAX_SHOWN_URL_CHARS);
  } catch {
    return undefined;
  }
}

/**
 * The event stream's URL on https when a redirect on the upgrade only moves it there, as a proxy
 * that serves the host on https alone does: the same host and path, from http (or ws) on the
 * default port to https (or wss) on its own. Prefect's client follows it, and so do the
 * credentials (as with `keepsAuthorization` for the REST requests). Any other redirect is not
 * followed: undefined.
 */
function httpsUpgradeOf(status: number | undefined, location: string | undefined, from: string): string | undefined {
  if (status === undefined || !REDIRECTS.has(status) || location === undefined) return undefined;
  try {
    // As the http(s) URLs they are: ws: → http:, wss: → https:.
    const source = new URL(from.replace(/^ws/i, 'http'));
    const target = new URL(new URL(location, source).href.replace(/^ws/i, 'http'));
    if (source.protocol !== 'http:' || target.protocol !== 'https:' || target.pathname !== source.pathname || !keepsAuthorization(source, target)) return undefined;
    return `wss://${target.host}${target.pathname}`;
  } catch {
    return undefined;
  }
}

/** Why an upgrade was refused, with what to change; `apiUrlName` is the API URL's setting as the user gave it. */
function upgradeRefused(status: number, redirect: string | undefined, apiPath: boolean, apiUrlName: string): string {
  if (redirect !== undefined) return `HTTP ${status} on the upgrade, redirected to ${redirect} (not followed: ${apiUrlName} may have to name that server)`;
  // The server answered but has no event stream there: most often the API URL lacks its `/api`
  // (Prefect itself answers 403 there; a proxy, 404).
  if (status === 404 || (status === 403 && !apiPath)) return `HTTP ${status} on the upgrade: no Prefect event stream there (${apiUrlAdvice(apiUrlName)})`;
  // A page served in answer (a UI's catch-all route, a proxy that does not pass websocket upgrades).
  if (status >= 200 && status < 300) return `HTTP ${status} on the upgrade: a page, not an event stream (${apiUrlAdvice(apiUrlName)}; a proxy on the way must pass websocket upgrades)`;
  return `HTTP ${status} on the upgrade`;
}

/** The `occurred` of the last event of a history page that has one (a page is oldest first). */
function lastOccurred(page: readonly unknown[]): string | undefined {
  for (let i = page.length - 1; i >= 0; i--) {
    const occurred = (page[i] as { occurred?: unknown } | null)?.occurred;
    if (typeof occurred === 'string' && Number.isFinite(Date.parse(occurred))) return occurred;
  }
  return undefined;
}

function rawToText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

/**
 * A handshake message of the protocol's form (a JSON object with a string `type`): its `type`, and
 * the `reason` a refusal may give (Prefect's own client shows it), without keeping anything else.
 * Undefined for anything else.
 */
function handshakeReply(text: string): { type: string; reason: string | undefined } | undefined {
  try {
    const v = JSON.parse(text) as unknown;
    if (v !== null && typeof v === 'object' && typeof (v as { type?: unknown }).type === 'string') {
      const { type, reason } = v as { type: string; reason?: unknown };
      return { type, reason: typeof reason === 'string' ? reason : undefined };
    }
  } catch {
    // not JSON
  }
  return undefined;
}

/**
 * The upgrade was answered without the sub-protocol `prefect` (`answered`: the header's value as
 * shown, or undefined when there was none). Prefect's server always accepts with the sub-protocol it
 * was offered, so something between drops or changes the header: on the answer, or on the request
 * (a server without auth then accepts the socket in its legacy mode, without the sub-protocol).
 */
function subprotocolMissing(answered: string | undefined): ProtocolError {
  const got = answered === undefined ? 'no Sec-WebSocket-Protocol header' : `Sec-WebSocket-Protocol "${answered}"`;
  return new ProtocolError(
    `the event stream's websocket upgrade was answered without the sub-protocol "prefect" (${got} in the HTTP 101 answer): a proxy or ingress in front of the Prefect server ${answered === undefined ? 'drops' : 'changes'} that header; it must pass Sec-WebSocket-Protocol through, on the request and on the answer`,
  );
}
