import { readFileSync } from 'node:fs';
import { inspect, type InspectOptionsStylized } from 'node:util';
import { ConfigError } from './errors.js';
import { describeSampler, traceSampler } from './export/sampling.js';
import type { LogRecordLimits, SpanLimits } from './model/attribute-limits.js';
import type { TrackerOptions } from './model/tracker.js';
import { otlpSecrets, safeUrl, shownUrl } from './log/redact.js';
import { cloudUiUrl, PROTECTED_HEADERS, type CredentialNames } from './source/prefect-api.js';
import { readPrefectProfile, type PrefectProfile } from './source/prefect-profile.js';
import { proxyEnv, proxyProblem, proxyUrl, type ProxyEnv } from './source/proxy.js';
import { GRPC_NOT_SUPPORTED, SETTINGS, type SettingKey, type SettingValues, type TracesSamplerName } from './settings.js';

export { SETTINGS } from './settings.js';
export type { SettingKey, SettingDef, TracesSamplerName } from './settings.js';

export type Protocol = 'http/protobuf' | 'http/json';
export type Compression = 'gzip' | 'none';
export type TracesExporterKind = 'otlp' | 'console' | 'none';
export type LogsExporterKind = 'otlp' | 'none';
export type MetricsExporterKind = 'otlp' | 'none';
/** OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, as the OpenTelemetry spec defines it. */
export type MetricsTemporalityPreference = 'cumulative' | 'delta' | 'lowmemory';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type LogFormat = 'json' | 'pretty';

/** The settings whose value is a map of names to values: headers, resource attributes. */
type MapSettingKey = { [K in SettingKey]: SettingValues[K] extends Readonly<Record<string, string>> ? K : never }[SettingKey];

/**
 * Options accepted by `startPrefectTracing()` and the CLI flags; every field has an env equivalent.
 * A map (`otlpHeaders`, `resourceAttributes`, `clientCustomHeaders`…) is an object of names to values,
 * or the text its variable holds (`'k1=v1,k2=v2'`; JSON for `clientCustomHeaders`).
 */
export type PrefectTracingOptions = {
  [K in SettingKey]?: K extends MapSettingKey ? string | Readonly<Record<string, string>> : SettingValues[K];
};

export interface OtlpSignalConfig {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly protocol: Protocol;
  readonly compression: Compression;
  readonly timeoutMs: number;
}

/** How the Prefect server's certificate is checked (websocket and REST alike), as Prefect's own client does. */
export interface PrefectTls {
  /** The PEM text of PREFECT_API_SSL_CERT_FILE: these authorities instead of Node's own; undefined: Node's. */
  readonly ca: string | undefined;
  readonly caFile: string | undefined;
  /** False with PREFECT_API_TLS_INSECURE_SKIP_VERIFY. */
  readonly rejectUnauthorized: boolean;
}

export interface Config {
  readonly prefect: {
    readonly apiUrl: string;
    readonly apiKey: string | undefined;
    readonly authString: string | undefined;
    readonly uiUrl: string | undefined;
    /** PREFECT_CLIENT_CUSTOM_HEADERS, less the headers prefect-otel sets itself. */
    readonly customHeaders: Readonly<Record<string, string>>;
    readonly tls: PrefectTls;
    /** HTTPS_PROXY, HTTP_PROXY and NO_PROXY (either case), as Prefect's client reads them; undefined: none set. */
    readonly proxy: ProxyEnv | undefined;
    /** PREFECT_API_REQUEST_TIMEOUT: the longest one REST request (history page, look-up) may take. */
    readonly requestTimeoutMs: number;
    /** The flag, option or variable each credential was given with, for advice when it is refused. */
    readonly credentialNames: CredentialNames;
    /** PREFECT_PROFILE: the Prefect profile asked for by name; undefined: the profiles file's active one. */
    readonly profileName: string | undefined;
    /** The Prefect profile read (its name and file), whose settings apply where nothing else gives them; undefined: none. */
    readonly profile: { readonly name: string; readonly path: string } | undefined;
  };
  readonly traces: OtlpSignalConfig & { readonly exporter: TracesExporterKind };
  /** OTEL_TRACES_SAMPLER and, for the ratio samplers, OTEL_TRACES_SAMPLER_ARG (1 when unset): which traces are exported. */
  readonly sampler: { readonly name: TracesSamplerName; readonly ratio: number };
  readonly logs: OtlpSignalConfig & { readonly exporter: LogsExporterKind };
  /** `exportTimeoutMs`: OTEL_METRIC_EXPORT_TIMEOUT, the longest one export may take (the request's `timeoutMs` bounds it too). */
  readonly metrics: OtlpSignalConfig & { readonly exporter: MetricsExporterKind; readonly intervalMs: number; readonly exportTimeoutMs: number; readonly temporalityPreference: MetricsTemporalityPreference };
  readonly resource: { readonly serviceName: string; readonly attributes: Readonly<Record<string, string>> };
  readonly stateFile: string;
  /**
   * The variable, flag or option each setting given was read from (`PREFECT_OTEL_STATE_FILE`,
   * `--traces-exporter`, `option stateFile`); a setting at its default is absent. Messages name a
   * setting as the user gave it, and a state file given that cannot be used at start is a
   * configuration error (the default one is not).
   */
  readonly sources?: Readonly<Partial<Record<SettingKey, string>>>;
  readonly jaegerUrl: string | undefined;
  readonly log: { readonly level: LogLevel; readonly format: LogFormat };
  readonly model: Omit<TrackerOptions, 'uiUrl'> & {
    readonly dedupeWindowMs: number;
    readonly dedupeMaxIds: number;
    /** OpenTelemetry's span limits: attribute value length (undefined: none), attribute and link counts. */
    readonly spanLimits: SpanLimits;
    /** OpenTelemetry's log record limits, for the OTLP log records of OTEL_LOGS_EXPORTER=otlp: attribute value length (undefined: none) and count. */
    readonly logRecordLimits: LogRecordLimits;
  };
  readonly delivery: {
    readonly maxSpans: number;
    readonly maxBytes: number;
    readonly batchSize: number;
    readonly scheduleDelayMs: number;
    /** OTEL_BSP_EXPORT_TIMEOUT: the longest one export of spans may take (the request's `timeoutMs` bounds it too). */
    readonly exportTimeoutMs: number;
    /** The OTLP log records' buffer, batches and export timeout (OTEL_BLRP_*); the bytes bound is `maxBytes`, as for spans. */
    readonly logs: { readonly maxRecords: number; readonly batchSize: number; readonly scheduleDelayMs: number; readonly exportTimeoutMs: number };
  };
  readonly live: { readonly resumeMarginMs: number; readonly idleTimeoutMs: number; readonly stateFlushMs: number; readonly stateLeaseMs: number };
  readonly statsIntervalMs: number;
  readonly httpPort: number | undefined;
  /** PREFECT_OTEL_HTTP_HOST: the address the health endpoint listens on; undefined: every address. */
  readonly httpHost: string | undefined;
  /** Non-fatal problems (bad OTEL_* values that fell back to defaults, conflicting settings). */
  readonly warnings: readonly string[];
}

type Env = Readonly<Record<string, string | undefined>>;

/** One of Prefect's own settings (PREFECT_API_URL), which a Prefect profile may hold; not prefect-otel's (PREFECT_OTEL_*). */
const isPrefectSetting = (name: string): boolean => name.startsWith('PREFECT_') && !name.startsWith('PREFECT_OTEL_') && name !== 'PREFECT_PROFILE';

type Signal = 'Traces' | 'Logs' | 'Metrics';

/** A signal's own OTLP settings, by their SETTINGS keys. */
interface SignalSettings<S extends Signal> {
  readonly url: `otlp${S}Endpoint`;
  readonly headers: `otlp${S}Headers`;
  readonly protocol: `otlp${S}Protocol`;
  readonly compression: `otlp${S}Compression`;
  readonly timeoutMs: `otlp${S}TimeoutMs`;
}

const FROM_DEFAULT = 0;
const FROM_ENV = 1;
const FROM_OPTION = 2;

/**
 * Resolve the configuration: per key, option → env → default; per OTLP signal, a flag or option
 * of either kind → the signal's own variable → the generic one → default.
 * Every problem is collected and thrown as one ConfigError. A bad OTEL_* variable warns and falls
 * back (to the setting's next variable, else its default), as every OpenTelemetry component does;
 * the same value as a flag or option is a problem.
 * Prefect's own settings (PREFECT_API_URL, PREFECT_API_KEY…) not given by an option or their own
 * variable come from the active Prefect profile, as in Prefect (unless `readProfile` is false).
 * `optionName`: how a problem names an option's setting (the CLI names its flag). `otherOptions`:
 * keys of the options that are no setting but that the caller reads (`startPrefectTracing`'s `env`,
 * `logger`…); any other key that is no setting is a problem, as it would silently do nothing.
 */
export function resolveConfig(
  givenOptions: PrefectTracingOptions = {},
  givenEnv: Env = process.env,
  optionName: (key: SettingKey) => string = (key) => `option ${key}`,
  otherOptions: readonly string[] = [],
  readProfile = true,
): Config {
  const problems: string[] = [];
  const warnings: string[] = [];
  const options = settingOptions(givenOptions, otherOptions, problems);
  const env = variables(givenEnv, problems);
  const values = {} as Record<SettingKey, unknown>;
  /** Where each setting's value came from: an option (a flag) outranks a variable, which outranks the default. */
  const rank = new Map<SettingKey, number>();
  /** The variable, flag or option each setting was read from. */
  const sources = new Map<SettingKey, string>();
  /** OTLP protocol variables that asked for gRPC, and where their warning is. */
  const grpcAsked: { key: SettingKey; at: number }[] = [];
  /** The Prefect profile, read once the setting that names it is known (it is resolved first), when a setting may come from it. */
  const prefectProfile: { read: boolean; profile: PrefectProfile | undefined } = { read: !readProfile, profile: undefined };
  const fromProfile = (names: readonly string[]): { name: string; value: unknown; profile: PrefectProfile } | undefined => {
    if (!prefectProfile.read) {
      prefectProfile.read = true;
      prefectProfile.profile = readPrefectProfile(env, values.prefectProfile as SettingValues['prefectProfile'], sources.get('prefectProfile') ?? 'PREFECT_PROFILE', warnings);
    }
    const profile = prefectProfile.profile;
    if (profile === undefined) return undefined;
    for (const name of names) {
      const value = profile.values[name];
      if (value !== undefined && !(typeof value === 'string' && value.trim() === '')) return { name, value, profile };
    }
    return undefined;
  };
  // The profile's name first: every other setting of Prefect's may come from that profile.
  const ordered = (Object.entries(SETTINGS) as [SettingKey, (typeof SETTINGS)[SettingKey]][]).sort(([a], [b]) => Number(b === 'prefectProfile') - Number(a === 'prefectProfile'));
  for (const [key, def] of ordered) {
    const fromOption = options[key];
    let source: string | undefined;
    let raw: unknown;
    /** The setting's variables that are set, most specific first (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT before OTEL_ATTRIBUTE_COUNT_LIMIT). */
    const givenVariables = fromOption !== undefined ? [] : def.env.filter((name) => env[name] !== undefined && env[name].trim() !== '');
    // Prefect's own variables outrank its profile, which outranks any other (SSL_CERT_FILE), as in Prefect.
    const prefectNames = def.env.filter(isPrefectSetting);
    const profiled = fromOption === undefined && prefectNames.length > 0 && !givenVariables.some(isPrefectSetting) ? fromProfile(prefectNames) : undefined;
    if (fromOption !== undefined) {
      raw = fromOption;
      source = optionName(key);
    } else if (profiled !== undefined) {
      raw = profiled.value;
      source = `${profiled.name} in Prefect profile ${JSON.stringify(profiled.profile.name)} (${profiled.profile.path})`;
    } else if (givenVariables.length > 0) {
      source = givenVariables[0]!;
      raw = env[source];
    }
    if (raw === undefined) {
      values[key] = def.default;
      continue;
    }
    const parse = (value: unknown) => {
      const result = def.parse(value);
      return result.ok || !isQuoted(value) ? result : { ok: false as const, problem: `${result.problem} ${QUOTES_HINT}` };
    };
    let parsed = parse(raw);
    // An unusable OTEL_* variable gives way to the setting's next one, as the SDKs read them
    // (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=abc: OTEL_ATTRIBUTE_COUNT_LIMIT applies); the last, to the default.
    if (fromOption === undefined && def.env[0]?.startsWith('OTEL_')) {
      for (const name of givenVariables.slice(1)) {
        if (parsed.ok) break;
        const next = parse(env[name]);
        warnings.push(next.ok ? `${source}: ${parsed.problem}; ${name} applies` : `${source}: ${parsed.problem}`);
        source = name;
        raw = env[name];
        parsed = next;
      }
    }
    if (parsed.ok) {
      // A key in quotes is refused by the server with no word of why: the quotes are said (never the value).
      if (isQuoted(raw)) warnings.push(`${source}: the value is in quotes, which are kept as part of it (remove them)`);
      values[key] = parsed.value;
      if (source !== undefined) sources.set(key, source);
      rank.set(key, fromOption !== undefined ? FROM_OPTION : FROM_ENV);
    } else if (fromOption === undefined && def.env[0]?.startsWith('OTEL_')) {
      // An OTEL_* variable is shared with every OpenTelemetry component of the environment: a value
      // prefect-otel cannot use warns. A flag or option is meant for prefect-otel alone: an error.
      // A signal's own setting falls back to the generic one; any other to its default.
      const generic = SIGNAL_SETTING_RE.exec(def.env[0]);
      // gRPC asked for: what is used instead is said once every setting is known.
      if (parsed.problem === GRPC_NOT_SUPPORTED) grpcAsked.push({ key, at: warnings.length });
      warnings.push(`${source}: ${parsed.problem}; ${generic === null ? `using the default (${describeDefault(def.default)})` : `OTEL_EXPORTER_OTLP_${generic[1]!} applies`}`);
      values[key] = def.default;
    } else {
      problems.push(`${source}: ${parsed.problem}`);
    }
  }
  unknownVariables(env, warnings);
  const v = values as SettingValues;
  const ca = readCertificates(v.apiSslCertFile, sources.get('apiSslCertFile'), problems);
  const proxy = proxyEnv(env);
  for (const [name, value] of [['HTTPS_PROXY', proxy?.httpsProxy], ['HTTP_PROXY', proxy?.httpProxy]] as const) {
    const problem = proxyProblem(value);
    if (problem !== undefined) problems.push(`${name}: ${problem}`);
  }
  if (problems.length > 0) throw new ConfigError(problems, warnings);
  // Named as the user gave them: a flag is not its variable.
  const given = (key: SettingKey): string => sources.get(key) ?? SETTINGS[key].env[0]!;
  if (v.apiTlsInsecureSkipVerify) warnings.push(`${given('apiTlsInsecureSkipVerify')} is on: the Prefect server's certificate is not checked`);
  if (v.apiKey !== undefined && v.authString !== undefined) {
    warnings.push(`both ${given('apiKey')} and ${given('authString')} are set; using ${given('apiKey')}`);
  }
  // A batch cannot be larger than the buffer it is taken from (as the OpenTelemetry batch processors warn).
  for (const [batch, buffer, items] of [['batchSize', 'bufferMaxSpans', 'spans'], ['logsBatchSize', 'logsBufferMaxRecords', 'log records']] as const) {
    if (v[batch] > v[buffer]) warnings.push(`${given(batch)} (${v[batch]}) is larger than ${given(buffer)} (${v[buffer]}): batches of at most ${v[buffer]} ${items} are sent`);
  }
  // An argument to a sampler that takes none does nothing, though it looks as if it samples: said.
  if (v.tracesSamplerArg !== undefined && !v.tracesSampler.endsWith('traceidratio')) {
    warnings.push(`${given('tracesSamplerArg')} (${v.tracesSamplerArg}) applies to the traceidratio samplers only; ${given('tracesSampler')} is ${v.tracesSampler}: ignored`);
  }
  if (v.httpHost !== undefined && v.httpPort === undefined) {
    warnings.push(`${given('httpHost')} is set without ${given('httpPort')}: no health endpoint is served`);
  }
  // A signal's full URL given as the base URL, which the signal paths are appended to (…/v1/traces/v1/traces: a 404).
  const endpoint = new URL(v.otlpEndpoint);
  const signalPath = /\/v1\/(traces|logs|metrics)\/*$/.exec(endpoint.pathname);
  if (signalPath !== null) {
    const base = `${endpoint.origin}${endpoint.pathname.slice(0, signalPath.index)}`;
    warnings.push(`${given('otlpEndpoint')} ends in /v1/${signalPath[1]!}, and /v1/traces, /v1/logs and /v1/metrics are appended to it: give the collector's base URL (${base}), or the full URL as OTEL_EXPORTER_OTLP_${signalPath[1]!.toUpperCase()}_ENDPOINT`);
  }
  const rankOf = (key: SettingKey): number => rank.get(key) ?? FROM_DEFAULT;
  /** The signals whose own endpoint is in force, for `baseUrlWarnings`. */
  const ownUrls: { signal: 'traces' | 'logs' | 'metrics'; key: SettingKey; url: string }[] = [];
  /**
   * Per signal: a signal's own value wins over the generic one given the same way, as the
   * OpenTelemetry spec has it for variables; a flag or option wins over any variable, the signal's
   * own too (headers key by key, in the same order).
   */
  const signal = <S extends Signal>(path: string, own: SignalSettings<S>): OtlpSignalConfig => {
    /** The signal's own value, unless the generic one was given in a way that outranks it. */
    const mine = <K extends SettingKey>(key: K, generic: SettingKey): SettingValues[K] | undefined => (rankOf(key) >= rankOf(generic) ? v[key] : undefined);
    const ownHeaders: Readonly<Record<string, string>> = v[own.headers];
    const ownHeadersWin = rankOf(own.headers) >= rankOf('otlpHeaders');
    const ownUrl = mine(own.url, 'otlpEndpoint');
    if (ownUrl !== undefined) ownUrls.push({ signal: path.slice('v1/'.length) as 'traces' | 'logs' | 'metrics', key: own.url, url: ownUrl });
    return {
      url: ownUrl ?? signalUrl(v.otlpEndpoint, path),
      headers: Object.freeze(ownHeadersWin ? { ...v.otlpHeaders, ...ownHeaders } : { ...ownHeaders, ...v.otlpHeaders }),
      protocol: mine(own.protocol, 'otlpProtocol') ?? v.otlpProtocol,
      compression: mine(own.compression, 'otlpCompression') ?? v.otlpCompression,
      timeoutMs: mine(own.timeoutMs, 'otlpTimeoutMs') ?? v.otlpTimeoutMs,
    };
  };
  const config: Config = {
    prefect: {
      apiUrl: v.apiUrl.replace(/\/+$/, ''),
      apiKey: v.apiKey,
      authString: v.apiKey === undefined ? v.authString : undefined,
      // Only used to build links (span attributes, log lines): never with `user:password@` in them.
      // Unset for a Cloud workspace: its UI address, as Prefect's client derives it.
      uiUrl: v.uiUrl === undefined ? cloudUiUrl(v.apiUrl) : safeUrl(v.uiUrl).replace(/\/+$/, ''),
      customHeaders: customHeaders(v.clientCustomHeaders, sources.get('clientCustomHeaders'), warnings),
      tls: { ca, caFile: v.apiSslCertFile, rejectUnauthorized: !v.apiTlsInsecureSkipVerify },
      proxy,
      requestTimeoutMs: Math.round(v.apiRequestTimeout * 1_000),
      credentialNames: { apiKey: v.apiKey === undefined ? undefined : sources.get('apiKey'), authString: v.authString === undefined ? undefined : sources.get('authString') },
      profileName: v.prefectProfile,
      profile: prefectProfile.profile === undefined ? undefined : { name: prefectProfile.profile.name, path: prefectProfile.profile.path },
    },
    traces: {
      ...signal('v1/traces', { url: 'otlpTracesEndpoint', headers: 'otlpTracesHeaders', protocol: 'otlpTracesProtocol', compression: 'otlpTracesCompression', timeoutMs: 'otlpTracesTimeoutMs' }),
      exporter: v.tracesExporter,
    },
    sampler: { name: v.tracesSampler, ratio: v.tracesSamplerArg ?? 1 },
    logs: {
      ...signal('v1/logs', { url: 'otlpLogsEndpoint', headers: 'otlpLogsHeaders', protocol: 'otlpLogsProtocol', compression: 'otlpLogsCompression', timeoutMs: 'otlpLogsTimeoutMs' }),
      exporter: v.logsExporter,
    },
    metrics: {
      ...signal('v1/metrics', { url: 'otlpMetricsEndpoint', headers: 'otlpMetricsHeaders', protocol: 'otlpMetricsProtocol', compression: 'otlpMetricsCompression', timeoutMs: 'otlpMetricsTimeoutMs' }),
      exporter: v.metricsExporter,
      intervalMs: v.metricExportIntervalMs,
      exportTimeoutMs: v.metricExportTimeoutMs,
      temporalityPreference: v.otlpMetricsTemporalityPreference,
    },
    resource: { serviceName: serviceName(v, rankOf('serviceName') > FROM_DEFAULT), attributes: Object.freeze({ ...v.resourceAttributes }) },
    stateFile: v.stateFile,
    sources: Object.fromEntries(sources),
    jaegerUrl: v.jaegerUrl === undefined ? undefined : safeUrl(v.jaegerUrl).replace(/\/+$/, ''),
    log: { level: v.logLevel, format: v.logFormat },
    model: {
      settleMs: v.settleMs,
      taskGraceMs: v.taskGraceMs,
      openRunTimeoutMs: v.openRunTimeoutMs,
      maxOpenRuns: v.maxOpenRuns,
      maxSpanEvents: v.maxSpanEvents,
      payloadMaxChars: v.payloadMaxChars,
      dedupeWindowMs: v.dedupeWindowMs,
      dedupeMaxIds: v.dedupeMaxIds,
      spanLimits: {
        attributeValueLengthLimit: v.attributeValueLengthLimit,
        attributeCountLimit: v.attributeCountLimit,
        eventAttributeCountLimit: v.eventAttributeCountLimit,
        linkCountLimit: v.linkCountLimit,
        linkAttributeCountLimit: v.linkAttributeCountLimit,
      },
      logRecordLimits: { attributeValueLengthLimit: v.logRecordAttributeValueLengthLimit, attributeCountLimit: v.logRecordAttributeCountLimit },
    },
    delivery: {
      maxSpans: v.bufferMaxSpans,
      maxBytes: v.bufferMaxBytes,
      batchSize: Math.min(v.batchSize, v.bufferMaxSpans),
      scheduleDelayMs: v.scheduleDelayMs,
      exportTimeoutMs: v.exportTimeoutMs,
      logs: { maxRecords: v.logsBufferMaxRecords, batchSize: Math.min(v.logsBatchSize, v.logsBufferMaxRecords), scheduleDelayMs: v.logsScheduleDelayMs, exportTimeoutMs: v.logsExportTimeoutMs },
    },
    live: { resumeMarginMs: v.resumeMarginMs, idleTimeoutMs: v.idleTimeoutMs, stateFlushMs: v.stateFlushMs, stateLeaseMs: v.stateLeaseMs },
    statsIntervalMs: v.statsIntervalMs,
    httpPort: v.httpPort,
    httpHost: v.httpHost,
    // Frozen with the rest below, once the gRPC warnings are written.
    warnings,
  };
  for (const { signal, key, url } of ownUrls) {
    if (config[signal].exporter === 'otlp') warnings.push(...baseUrlWarning(signal, given(key), url));
  }
  for (const { key, at } of grpcAsked) warnings[at] = grpcWarning(key, config);
  const port = grpcPortWarning(config, grpcAsked.map(({ key }) => key));
  if (port !== undefined) warnings.push(port);
  return deepFreeze(withSettingsView(config));
}

/** What each signal sends, as its warnings name it. */
const ITEMS = { traces: 'spans', logs: 'log records', metrics: 'metrics' } as const;

/**
 * A signal's own endpoint that is a vendor's base URL (no path, or one ending in `/otlp`, as Grafana
 * Cloud's and Dynatrace's are): used as is, as the OpenTelemetry spec has it, its requests miss the
 * signal path, and the vendor refuses them for good (404). The mirror of the base URL that ends in a
 * signal path.
 */
function baseUrlWarning(signal: 'traces' | 'logs' | 'metrics', name: string, url: string): string[] {
  const u = new URL(url);
  if (u.pathname !== '/' && !/\/otlp\/*$/i.test(u.pathname)) return [];
  const full = signalUrl(u.href, `v1/${signal}`);
  return [`${name} (${shownUrl(u.href)}) is used as is, and has no OTLP signal path: ${ITEMS[signal]} are sent to it, not to ${shownUrl(full)}; give that full URL, or the base URL as OTEL_EXPORTER_OTLP_ENDPOINT`];
}

/**
 * An export endpoint on the collector's gRPC port (4317) with an OTLP/HTTP protocol, the only ones
 * spoken: its exports would fail with no word of why. Not said again for a signal whose gRPC
 * protocol warning says it already.
 */
function grpcPortWarning(config: Config, grpcKeys: readonly SettingKey[]): string | undefined {
  const covered = new Set<string>();
  for (const key of grpcKeys) {
    const own = protocolSignal(key);
    for (const s of own === undefined ? ['traces', 'logs', 'metrics'] : [own]) covered.add(s);
  }
  const onGrpcPort = (['traces', 'logs', 'metrics'] as const)
    .filter((s) => config[s].exporter === 'otlp' && !covered.has(s) && portOf(config[s].url) === '4317')
    .map((s) => `${s} to ${shownUrl(config[s].url)}`);
  if (onGrpcPort.length === 0) return undefined;
  return `${onGrpcPort.join(', ')}: 4317 is the collector's OTLP/gRPC port; prefect-otel speaks OTLP over HTTP, whose port is 4318 by default`;
}

/**
 * OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL=grpc: gRPC is not spoken, what is used instead, and, when an
 * endpoint it applies to is on the collector's gRPC port (4317), the collector's OTLP/HTTP port:
 * exports to the gRPC port would fail with no word of why.
 */
function grpcWarning(key: SettingKey, config: Config): string {
  const name = SETTINGS[key].env[0]!;
  const own = protocolSignal(key);
  const signals = own === undefined ? (['traces', 'logs', 'metrics'] as const).filter((s) => config[s].exporter === 'otlp') : [own];
  const used = own === undefined ? `${config.traces.protocol} is used` : `${own}: ${config[own].protocol} is used (OTEL_EXPORTER_OTLP_PROTOCOL)`;
  const onGrpcPort = signals.filter((s) => portOf(config[s].url) === '4317').map((s) => shownUrl(config[s].url));
  const port = onGrpcPort.length === 0 ? '' : `; ${onGrpcPort.join(', ')}: 4317 is the collector's OTLP/gRPC port, its OTLP/HTTP port is 4318 by default`;
  return `${name}: ${GRPC_NOT_SUPPORTED}; ${used}${port}`;
}

/** The signal an OTLP protocol setting is its own (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: traces); undefined for the generic one. */
function protocolSignal(key: SettingKey): 'traces' | 'logs' | 'metrics' | undefined {
  return /^OTEL_EXPORTER_OTLP_(TRACES|LOGS|METRICS)_PROTOCOL$/.exec(SETTINGS[key].env[0]!)?.[1]?.toLowerCase() as 'traces' | 'logs' | 'metrics' | undefined;
}

function portOf(url: string): string | undefined {
  try {
    return new URL(url).port;
  } catch {
    return undefined;
  }
}

/** What a value is, as a problem says it (never the value itself: it may be a secret). */
export function kindOf(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

const isRecord = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

const SETTING_KEYS: readonly string[] = Object.keys(SETTINGS);

/**
 * The options as a record of settings. Options that are no object are a problem, and so is each key
 * that is no setting: a misspelt option (`apiURL`) would otherwise silently leave its setting at the
 * default. Said with the nearest name, whatever its case.
 */
function settingOptions(options: unknown, others: readonly string[], problems: string[]): Readonly<Record<string, unknown>> {
  if (options === undefined) return {};
  if (!isRecord(options)) {
    problems.push(`options: expected an object of settings, got ${kindOf(options)}`);
    return {};
  }
  const byLower = new Map([...SETTING_KEYS, ...others].map((k) => [k.toLowerCase(), k]));
  for (const key of Object.keys(options)) {
    if (Object.hasOwn(SETTINGS, key) || others.includes(key)) continue;
    const close = closestName(key.toLowerCase(), byLower.keys());
    problems.push(`option ${key}: not a prefect-otel option, so it would do nothing${close === undefined ? '' : ` (did you mean ${byLower.get(close)!}?)`}`);
  }
  return options;
}

/** The environment, less any variable that is no string, each of which is a problem (variables are text: `'9464'`, not `9464`). */
function variables(env: unknown, problems: string[]): Env {
  if (!isRecord(env)) {
    problems.push(`option env: expected an object of environment variables, got ${kindOf(env)}`);
    return {};
  }
  const notText = Object.entries(env).filter(([, value]) => value !== undefined && typeof value !== 'string');
  if (notText.length === 0) return env as Env;
  for (const [name, value] of notText) problems.push(`option env: ${name}: expected a string, got ${kindOf(value)}`);
  return Object.fromEntries(Object.entries(env).filter(([, value]) => typeof value === 'string')) as Env;
}

/** prefect-otel's own variables: one it does not know is a misspelt setting, which would silently do nothing. */
const OWN_PREFIX = 'PREFECT_OTEL_';
const OWN_VARIABLES: ReadonlySet<string> = new Set(Object.values(SETTINGS).flatMap((d) => d.env.filter((e) => e.startsWith(OWN_PREFIX))));

/** A warning per PREFECT_OTEL_* variable that is no setting, with the setting it is closest to. */
function unknownVariables(env: Env, warnings: string[]): void {
  for (const name of Object.keys(env)) {
    if (!name.startsWith(OWN_PREFIX) || OWN_VARIABLES.has(name)) continue;
    const close = closestName(name.toUpperCase(), OWN_VARIABLES);
    warnings.push(`${name} is not a prefect-otel setting, so it does nothing${close === undefined ? '' : ` (did you mean ${close}?)`}`);
  }
}

/** Names at most this many edits away from a mistyped one are suggested. */
const MAX_SUGGESTION_EDITS = 2;

/** The known name nearest a mistyped one (`--setle-ms` → `--settle-ms`), if one is near enough. */
export function closestName(typed: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestEdits = MAX_SUGGESTION_EDITS + 1;
  for (const name of known) {
    const edits = editDistance(typed, name);
    if (edits < bestEdits) {
      best = name;
      bestEdits = edits;
    }
  }
  return best;
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** Said of a refused value in quotes: a `.env` file's quoting, kept by `docker --env-file` and Compose's `environment:` lists. */
const QUOTES_HINT = '(the quotes are part of the value: remove them)';

/** `"value"` or `'value'`: quotes that a shell would have removed. */
function isQuoted(raw: unknown): boolean {
  if (typeof raw !== 'string') return false;
  const t = raw.trim();
  return t.length >= 2 && (t[0] === '"' || t[0] === "'") && t.at(-1) === t[0];
}

/** The custom headers less the protected ones, each of which is said (as Prefect's client warns of them). */
function customHeaders(headers: Readonly<Record<string, string>>, source: string | undefined, warnings: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (PROTECTED_HEADERS.has(name.toLowerCase())) warnings.push(`${source ?? 'PREFECT_CLIENT_CUSTOM_HEADERS'}: header ${name} is ignored: prefect-otel sets it itself`);
    else out[name] = value;
  }
  return out;
}

/** The PEM text of a certificate file; a problem when it cannot be read or holds no certificate. */
function readCertificates(file: string | undefined, source: string | undefined, problems: string[]): string | undefined {
  if (file === undefined) return undefined;
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    problems.push(`${source ?? 'PREFECT_API_SSL_CERT_FILE'}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    return undefined;
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) problems.push(`${source ?? 'PREFECT_API_SSL_CERT_FILE'}: ${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return pem;
}

/**
 * `service.name` as the OpenTelemetry spec has it: OTEL_SERVICE_NAME (or the option) wins over a
 * `service.name` in OTEL_RESOURCE_ATTRIBUTES, which wins over the default (an operator that injects
 * the resource attributes names the service there).
 */
function serviceName(v: SettingValues, given: boolean): string {
  const fromAttributes = v.resourceAttributes['service.name'];
  return given || fromAttributes === undefined || fromAttributes === '' ? v.serviceName : fromAttributes;
}

/**
 * A signal's URL from the base endpoint: its path (`v1/traces`…) appended to the base's path, before
 * any query or fragment (a vendor's `?api-key=…`), which plain concatenation would put it after.
 */
function signalUrl(base: string, path: string): string {
  const end = base.search(/[?#]/);
  const [before, after] = end < 0 ? [base, ''] : [base.slice(0, end), base.slice(end)];
  return `${before.replace(/\/+$/, '')}/${path}${after}`;
}

/** The settings in force, secrets redacted (header values, `user:password@` and query values in URLs), for the startup log line. */
export function describeConfig(config: Config): Record<string, unknown> {
  const url = (u: string | undefined): string | undefined => (u === undefined ? undefined : shownUrl(u));
  // As used: `user:password@host:port` without a scheme would not parse as a URL with credentials to cut.
  const proxyShown = (p: string | undefined): string | undefined => (p === undefined ? undefined : safeUrl(proxyUrl(p).href));
  return {
    apiUrl: url(config.prefect.apiUrl),
    ...(config.prefect.profile === undefined ? {} : { prefectProfile: config.prefect.profile }),
    ...(Object.keys(config.prefect.customHeaders).length === 0 ? {} : { clientCustomHeaders: Object.keys(config.prefect.customHeaders).map((k) => `${k}=[redacted]`) }),
    ...(config.prefect.tls.caFile === undefined ? {} : { apiSslCertFile: config.prefect.tls.caFile }),
    ...(config.prefect.tls.rejectUnauthorized ? {} : { apiTlsInsecureSkipVerify: true }),
    ...(config.prefect.proxy === undefined ? {} : { proxy: { https: proxyShown(config.prefect.proxy.httpsProxy), http: proxyShown(config.prefect.proxy.httpProxy), noProxy: config.prefect.proxy.noProxy } }),
    auth: config.prefect.apiKey !== undefined ? 'api-key' : config.prefect.authString !== undefined ? 'auth-string' : 'none',
    uiUrl: url(config.prefect.uiUrl),
    tracesExporter: config.traces.exporter,
    tracesUrl: config.traces.exporter === 'otlp' ? url(config.traces.url) : undefined,
    // Said when it leaves traces out: a deployment missing spans shows why at its start.
    ...(traceSampler(config.sampler) === undefined ? {} : { tracesSampler: describeSampler(config.sampler) }),
    protocol: config.traces.protocol,
    compression: config.traces.compression,
    otlpHeaders: Object.keys(config.traces.headers).map((k) => `${k}=[redacted]`),
    logsExporter: config.logs.exporter,
    logsUrl: config.logs.exporter === 'otlp' ? url(config.logs.url) : undefined,
    ...(config.logs.exporter === 'otlp' ? transport('logs', config.logs) : {}),
    metricsExporter: config.metrics.exporter,
    metricsUrl: config.metrics.exporter === 'otlp' ? url(config.metrics.url) : undefined,
    ...(config.metrics.exporter === 'otlp' ? transport('metrics', config.metrics) : {}),
    metricExportIntervalMs: config.metrics.exporter === 'otlp' ? config.metrics.intervalMs : undefined,
    metricExportTimeoutMs: config.metrics.exporter === 'otlp' ? config.metrics.exportTimeoutMs : undefined,
    serviceName: config.resource.serviceName,
    stateFile: config.stateFile,
    jaegerUrl: url(config.jaegerUrl),
    model: config.model,
    delivery: config.delivery,
    httpPort: config.httpPort,
    ...(config.httpHost === undefined ? {} : { httpHost: config.httpHost }),
  };
}

/**
 * A configuration logged by an application (`logger.info({ config })`, `console.log(config)`)
 * shows the settings as the startup line does, without the secrets it holds: its `toJSON` (what
 * JSON.stringify and pino write) and its `util.inspect` form are `describeConfig`'s. Neither is
 * enumerable, so a copy of the configuration, or a part of it handed to a worker thread, is the plain data.
 */
function withSettingsView(config: Config): Config {
  return Object.defineProperties(config, {
    toJSON: { value: () => describeConfig(config) },
    [inspect.custom]: { value: (_depth: number, options: InspectOptionsStylized, show: typeof inspect) => show(describeConfig(config), options) },
  });
}

/**
 * Every secret the configuration holds, as a text may quote it: the API key and the auth string
 * (each also in the base64 of a Basic header), the custom headers' values and every signal's OTLP
 * header values, with the user info and query values of their URLs. For redacting texts that came
 * from outside (a skipped frame's excerpt).
 */
export function secretsOf(config: Config): string[] {
  const out = [config.traces, config.logs, config.metrics].flatMap((signal) => otlpSecrets(signal));
  out.push(...Object.values(config.prefect.customHeaders));
  for (const s of [config.prefect.apiKey, config.prefect.authString]) {
    if (s !== undefined && s !== '') out.push(s, Buffer.from(s, 'utf8').toString('base64'));
  }
  return out;
}

/** A log or metric signal's protocol, compression, timeout and header names (values redacted: they are secrets). */
function transport(prefix: 'logs' | 'metrics', signal: OtlpSignalConfig): Record<string, unknown> {
  return {
    [`${prefix}Protocol`]: signal.protocol,
    [`${prefix}Compression`]: signal.compression,
    [`${prefix}TimeoutMs`]: signal.timeoutMs,
    [`${prefix}Headers`]: Object.keys(signal.headers).map((k) => `${k}=[redacted]`),
  };
}

/** `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL` → `PROTOCOL`: a signal's own setting, which overrides the generic one. */
/** A signal's own form of a generic OTLP variable (the temporality preference has none). */
const SIGNAL_SETTING_RE = /^OTEL_EXPORTER_OTLP_(?:TRACES|LOGS|METRICS)_(ENDPOINT|HEADERS|PROTOCOL|COMPRESSION|TIMEOUT)$/;

function describeDefault(value: unknown): string {
  if (value === undefined) return 'unset';
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
