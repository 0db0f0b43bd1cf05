/**
 * `npm run bench`: throughput, memory and latency of prefect-otel, each measured side by side with
 * its ceiling in the same run, on generated Prefect-format streams. Prints every figure and writes
 * them to bench/README.md with the machine they came from.
 *
 *   npm run bench                      # the suite
 *   npm run bench -- --soak            # also a soak: a steady rate for several minutes, RSS and heap sampled
 *   npm run bench -- --soak-only       # just the soak, nothing written
 *   npm run bench -- --soak-minutes 10 --live-events 300000 --replay-events 1000000 --no-write
 *   npm run bench -- --stages-events 50000   # the stage-by-stage split (6) on fewer events
 *   npm run bench -- --handoff-events 50000  # the hand-off to a worker thread (9) on fewer events
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, platform, release, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuMsSince } from './cpu.js';
import { startBenchReceiver, type BenchReceiver } from './receiver.js';
import { ensureWorkload, type WorkloadFile } from './workload.js';

const HERE = dirname(fileURLToPath(import.meta.url)); // dist/bench
const ROOT = join(HERE, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const README = join(ROOT, 'bench', 'README.md');

const { values: args } = parseArgs({
  options: {
    soak: { type: 'boolean', default: false },
    /** Only the soak (nothing is written to bench/README.md). */
    'soak-only': { type: 'boolean', default: false },
    'soak-minutes': { type: 'string', default: '5' },
    'soak-rate': { type: 'string', default: '3000' },
    'live-events': { type: 'string', default: '300000' },
    'replay-events': { type: 'string', default: '1000000' },
    'stages-events': { type: 'string', default: '150000' },
    'handoff-events': { type: 'string', default: '100000' },
    'latency-rate': { type: 'string', default: '5000' },
    'latency-seconds': { type: 'string', default: '30' },
    rounds: { type: 'string', default: '2' },
    'no-write': { type: 'boolean', default: false },
  },
});
const num = (k: keyof typeof args): number => Number(args[k]);

const TTY = process.stderr.isTTY;
const status = (text: string): void => {
  if (TTY) process.stderr.write(`\r${text}\x1b[K`);
};
const say = (text: string): void => {
  if (TTY) process.stderr.write('\r\x1b[K');
  process.stdout.write(`${text}\n`);
};

// ---- child processes ------------------------------------------------------------------------------

interface Child {
  readonly proc: ChildProcess;
  /** The next JSON line on stdout that satisfies `pick`. */
  next<T>(pick?: (o: Record<string, unknown>) => boolean): Promise<T>;
  readonly lines: Record<string, unknown>[];
  readonly exited: Promise<number>;
}

function node(script: string, argv: string[], opts: { env?: Record<string, string>; nodeArgs?: string[]; stdin?: boolean } = {}): Child {
  const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), join(HERE, script), ...argv], {
    env: { ...process.env, ...opts.env },
    stdio: [opts.stdin === true ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  return wrap(proc);
}

function wrap(proc: ChildProcess): Child {
  const lines: Record<string, unknown>[] = [];
  const waiters: { pick: (o: Record<string, unknown>) => boolean; resolve: (o: unknown) => void }[] = [];
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + String(d)).slice(-4000);
  });
  if (proc.stdout !== null) {
    createInterface({ input: proc.stdout }).on('line', (line) => {
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      lines.push(o);
      const i = waiters.findIndex((w) => w.pick(o));
      if (i !== -1) waiters.splice(i, 1)[0]!.resolve(o);
    });
  }
  const exited = new Promise<number>((resolve) => proc.on('exit', (code) => resolve(code ?? 1)));
  return {
    proc,
    lines,
    exited,
    next<T>(pick: (o: Record<string, unknown>) => boolean = () => true): Promise<T> {
      const found = lines.find(pick);
      if (found !== undefined) return Promise.resolve(found as T);
      return new Promise<T>((resolve, reject) => {
        waiters.push({ pick, resolve: resolve as (o: unknown) => void });
        void exited.then((code) => reject(new Error(`child exited (${code}) before answering: ${stderr}`)));
      });
    },
  };
}

async function startServer(file: WorkloadFile, events: number, mode: 'burst' | 'rate', rate?: number): Promise<{ url: string; child: Child }> {
  const child = node('server.js', [JSON.stringify({ file: file.path, events, mode, rate })], { stdin: true });
  const { port } = await child.next<{ port: number }>((o) => 'port' in o);
  return { url: `http://127.0.0.1:${port}/api`, child };
}

const stop = async (child: Child): Promise<void> => {
  child.proc.stdin?.end();
  child.proc.kill('SIGTERM');
  await child.exited;
};

// ---- measurements ---------------------------------------------------------------------------------

interface Throughput {
  readonly events: number;
  readonly ms: number;
  readonly perS: number;
}
const rate = (events: number, ms: number): Throughput => ({ events, ms, perS: events / (ms / 1000) });

/** CPU time, in ms, of the process that reads the events, over the measured part of a run. */
interface Cpu {
  readonly cpuMs: number;
}
/** … and of the benchmark server while it sent them. */
interface ServerCpu {
  readonly serverCpuMs: number;
}
/** … and of this process, which hosts the receiver and does little else meanwhile. */
interface ReceiverCpu {
  readonly receiverCpuMs: number;
}

/** The server's CPU time while it sent the frames (its `{"sent":…}` line). */
async function serverCpu(server: { child: Child }): Promise<number> {
  const r = await server.child.next<{ cpuMs: number }>((o) => 'sent' in o);
  return r.cpuMs;
}

async function wsCeiling(file: WorkloadFile, events: number): Promise<Throughput & Cpu & ServerCpu> {
  const server = await startServer(file, events, 'burst');
  try {
    const client = node('ceiling.js', [`${server.url.replace(/^http/, 'ws')}/events/out`, String(events)]);
    const r = await client.next<{ frames: number; ms: number; cpuMs: number }>((o) => 'frames' in o);
    await client.exited;
    return { ...rate(r.frames, r.ms), cpuMs: r.cpuMs, serverCpuMs: await serverCpu(server) };
  } finally {
    await stop(server.child);
  }
}

interface LiveResult extends Cpu {
  ms: number;
  frames: number;
  spans: number;
  finished: number;
  dropped: number;
  rejected: number;
  rssMb: number;
  skipped: Record<string, number>;
}

function liveEnv(apiUrl: string, receiver: BenchReceiver, stateDir: string, extra: Record<string, string>): Record<string, string> {
  return {
    PREFECT_API_URL: apiUrl,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    PREFECT_OTEL_STATE_FILE: join(stateDir, 'state.json'),
    PREFECT_OTEL_LOG_LEVEL: 'info',
    PREFECT_OTEL_STATS_INTERVAL_MS: '0',
    ...extra,
  };
}

/** Each run's STLOGGING lines go where a deployment's would: a file (here /dev/null), not a terminal. */
function spawnLive(events: number, env: Record<string, string>, nodeArgs: string[] = []): Child {
  const out = openSync('/dev/null', 'w');
  const proc = spawn(process.execPath, [...nodeArgs, join(HERE, 'live.js'), String(events)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', out] });
  return wrap(proc);
}

async function live(file: WorkloadFile, events: number): Promise<LiveResult & ServerCpu & ReceiverCpu & { receiverSpans: number }> {
  const server = await startServer(file, events, 'burst');
  const receiver = await startBenchReceiver({ keep: false });
  const stateDir = mkdtempSync(join(tmpdir(), 'prefect-otel-bench-'));
  try {
    // Throughput: runs end 100 ms after their last state (settle) and task runs left behind by a
    // crashed flow 250 ms after it (grace), so the run ends with the stream instead of a minute later.
    const child = spawnLive(events, liveEnv(server.url, receiver, stateDir, { PREFECT_OTEL_SETTLE_MS: '100', PREFECT_OTEL_TASK_GRACE_MS: '250' }));
    const ownCpu = process.cpuUsage();
    const r = await child.next<LiveResult>((o) => 'ms' in o);
    const receiverCpuMs = cpuMsSince(ownCpu);
    await child.exited;
    return { ...r, receiverSpans: receiver.counts.spans, serverCpuMs: await serverCpu(server), receiverCpuMs };
  } finally {
    await stop(server.child);
    await receiver.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

async function readParse(file: WorkloadFile): Promise<Throughput & Cpu> {
  const child = node('read-parse.js', [file.path]);
  const r = await child.next<{ lines: number; ms: number; cpuMs: number }>((o) => 'lines' in o);
  await child.exited;
  return { ...rate(r.lines, r.ms), cpuMs: r.cpuMs };
}

interface ReplayResult extends Throughput, Cpu, ReceiverCpu {
  readonly spans: number;
  readonly exported: number;
  readonly receiverSpans: number;
  readonly exitCode: number;
}

/** `prefect-otel replay FILE` end to end, exporting to the receiver; timed from spawn to exit. */
async function replay(file: WorkloadFile): Promise<ReplayResult> {
  const receiver = await startBenchReceiver({ keep: false });
  const out = openSync('/dev/null', 'w');
  const started = performance.now();
  const ownCpu = process.cpuUsage();
  // The preload reports the process's CPU time at exit: the replay is timed from spawn to exit too.
  const proc = spawn(process.execPath, ['--import', pathToFileURL(join(HERE, 'cpu-at-exit.js')).href, CLI, 'replay', file.path], {
    env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'info' },
    stdio: ['ignore', out, 'pipe'],
  });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += String(d);
  });
  const exitCode = await new Promise<number>((resolve) => proc.on('exit', (c) => resolve(c ?? 1)));
  const ms = performance.now() - started;
  const receiverCpuMs = cpuMsSince(ownCpu);
  await receiver.close();
  const spans = Number(/spans: (\d+)/.exec(stderr)?.[1] ?? NaN);
  const exported = Number(/spans: (\d+) exported/.exec(stderr)?.[1] ?? NaN);
  if (exitCode !== 0) throw new Error(`replay exited ${exitCode}: ${stderr.slice(-2000)}`);
  const cpuMs = Number(/bench-cpu-ms: ([\d.]+)/.exec(stderr)?.[1] ?? NaN);
  return { ...rate(file.events, ms), spans, exported, receiverSpans: receiver.counts.spans, exitCode, cpuMs, receiverCpuMs };
}

interface MemoryResult {
  runs: number;
  heapPerRun1: number;
  rssPerRun1: number;
  heapPerRun3: number;
  rssPerRun3: number;
}

/** A measurement that runs in a child process with `--expose-gc` and answers with one JSON line holding `key`. */
async function gcChild<T>(script: string, argv: string[], key: string): Promise<T> {
  const child = node(script, argv, { nodeArgs: ['--expose-gc'] });
  const r = await child.next<T>((o) => key in o);
  await child.exited;
  return r;
}

const memory = (file: WorkloadFile, runs: number): Promise<MemoryResult> => gcChild('memory.js', [file.path, String(runs)], 'runs');

interface StagesResult {
  readonly events: number;
  readonly rounds: number;
  readonly stages: { name: string; usPerEvent: number }[];
  /** The export thread's work on the same spans, per input event. */
  readonly exportThreadUs: number;
}

/** The pipeline taken apart, one stage further per pass over the same events in one process. */
const stages = (file: WorkloadFile, events: number): Promise<StagesResult> => gcChild('stages.js', [file.path, String(events), '3'], 'stages');

interface HandoffResult {
  readonly events: number;
  readonly rounds: number;
  readonly parseUs: number;
  readonly ways: { name: string; mainUs: number; cpuUs: number }[];
}

/** Events handed to a worker thread as text and as parsed objects, against parsing them. */
const handoff = (file: WorkloadFile, events: number): Promise<HandoffResult> => gcChild('handoff.js', [file.path, String(events), '3'], 'ways');

/** `JSON.parse 4.7 µs; + checks 6.5 (+1.8); …` */
function stagesLine(r: StagesResult): string {
  return r.stages.map((x, i) => (i === 0 ? `${x.name} ${fmt(x.usPerEvent, 1)} µs` : `${x.name} ${fmt(x.usPerEvent, 1)} (+${fmt(x.usPerEvent - r.stages[i - 1]!.usPerEvent, 1)})`)).join('; ');
}

interface LatencyResult {
  readonly rate: number;
  readonly seconds: number;
  readonly spans: number;
  readonly measured: number;
  readonly incomplete: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly dropped: number;
  readonly exported: number;
  readonly samples: { s: number; rssMb: number; heapMb: number; retainedMb: number; open: number }[];
}

/**
 * Steady rate, every event stamped with the time it is sent; lag = when the receiver got the span −
 * the span's end (its terminal event's `occurred`). Runs that never reached a terminal state (task
 * runs left running by a crash) end by the task grace, not by an event, and are counted apart.
 */
async function latency(eventsPerS: number, seconds: number, sampleMs = 0): Promise<LatencyResult> {
  const file = await ensureWorkload(Math.round(eventsPerS * seconds), status);
  const events = file.events;
  const server = await startServer(file, events, 'rate', eventsPerS);
  const receiver = await startBenchReceiver({ keep: true });
  const stateDir = mkdtempSync(join(tmpdir(), 'prefect-otel-bench-'));
  try {
    const env = liveEnv(server.url, receiver, stateDir, { PREFECT_OTEL_TASK_GRACE_MS: '5000', ...(sampleMs > 0 ? { BENCH_SAMPLE_MS: String(sampleMs) } : {}) });
    // Sampled runs (the soak) also force a full collection at each sample, to tell held memory from garbage.
    const child = spawnLive(events, env, sampleMs > 0 ? ['--expose-gc'] : []);
    const progress = setInterval(() => {
      const last = child.lines.filter((l) => l.sample === true).at(-1);
      status(`  ${eventsPerS} events/s: ${last === undefined ? '' : `${Math.round(Number(last.s))} s, RSS ${Number(last.rssMb).toFixed(0)} MB, ${String(last.open)} open runs`}`);
    }, 1000);
    const r = await child.next<LiveResult>((o) => 'ms' in o);
    clearInterval(progress);
    await child.exited;
    const lags: number[] = [];
    let incomplete = 0;
    // A flow run whose task runs never ended waits for them until the task grace, by design.
    const heldByGrace = new Set<string>();
    receiver.eachTimedSpan((_at, span) => {
      if ('prefect.run.incomplete_reason' in span.attributes && span.parentSpanId !== undefined) heldByGrace.add(span.parentSpanId);
    });
    receiver.eachTimedSpan((receivedMs, span) => {
      if ('prefect.run.incomplete_reason' in span.attributes || heldByGrace.has(span.spanId)) {
        incomplete += 1;
        return;
      }
      lags.push(receivedMs - Number(BigInt(span.endTimeUnixNano) / 1_000_000n));
    });
    lags.sort((a, b) => a - b);
    const q = (p: number): number => lags[Math.min(lags.length - 1, Math.floor(p * lags.length))] ?? NaN;
    const samples = child.lines.filter((l) => l.sample === true).map((l) => ({ s: Number(l.s), rssMb: Number(l.rssMb), heapMb: Number(l.heapMb), retainedMb: Number(l.retainedMb), open: Number(l.open) }));
    return { rate: eventsPerS, seconds: events / eventsPerS, spans: receiver.counts.spans, measured: lags.length, incomplete, p50: q(0.5), p99: q(0.99), max: lags.at(-1) ?? NaN, dropped: r.dropped, exported: r.spans, samples };
  } finally {
    await stop(server.child);
    await receiver.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

// ---- the suite ------------------------------------------------------------------------------------

/** The soak's second half, when the bounded sets are full: how far RSS and the held heap move. */
function soakSummary(soak: LatencyResult): string {
  const late = soak.samples.slice(Math.floor(soak.samples.length / 2));
  const range = (xs: number[]): string => `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))} MB`;
  if (late.length === 0) return 'no samples';
  return `second half: RSS ${range(late.map((x) => x.rssMb))}, heap held after a full GC ${range(late.map((x) => x.retainedMb))}`;
}

/** One row a minute: RSS, heap, heap held after a full GC, open runs. */
function soakTable(soak: LatencyResult): string[] {
  return soak.samples
    .filter((x, i) => i % 6 === 5 || i === soak.samples.length - 1)
    .map((x) => `${fmt(x.s / 60, 1).padStart(5)} min  RSS ${fmt(x.rssMb).padStart(4)} MB  heap ${fmt(x.heapMb).padStart(4)} MB  held ${fmt(x.retainedMb).padStart(4)} MB  open runs ${fmt(x.open)}`);
}

interface CpuBudget {
  readonly cores: number;
  readonly live: { us: number; serverUs: number; receiverUs: number; budgetUs: number };
  readonly ceiling: { us: number; serverUs: number };
  readonly replay: { us: number; receiverUs: number; budgetUs: number };
  readonly parse: { us: number };
}

/**
 * CPU µs per event of each side, and the pipeline's budget at 0.7 × its ceiling: at that rate the
 * machine's cores give cores / (0.7 × ceiling rate) seconds of CPU per event, of which the benchmark server's
 * sending (as in the ceiling run) and the receiver take their share, whatever the pipeline does.
 */
function cpuBudget(
  liveEvents: number, ceiling: Throughput & Cpu & ServerCpu, live: LiveResult & ServerCpu & ReceiverCpu,
  replayEvents: number, parse: Throughput & Cpu, replay: ReplayResult,
): CpuBudget {
  const per = (ms: number, events: number): number => (ms * 1000) / events;
  const cores = cpus().length;
  const liveUs = { us: per(live.cpuMs, liveEvents), serverUs: per(live.serverCpuMs, liveEvents), receiverUs: per(live.receiverCpuMs, liveEvents) };
  const ceilingUs = { us: per(ceiling.cpuMs, liveEvents), serverUs: per(ceiling.serverCpuMs, liveEvents) };
  const replayUs = { us: per(replay.cpuMs, replayEvents), receiverUs: per(replay.receiverCpuMs, replayEvents) };
  return {
    cores,
    live: { ...liveUs, budgetUs: (cores * 1e6) / (TARGET_RATIO * ceiling.perS) - ceilingUs.serverUs - liveUs.receiverUs },
    ceiling: ceilingUs,
    replay: { ...replayUs, budgetUs: (cores * 1e6) / (TARGET_RATIO * parse.perS) - replayUs.receiverUs },
    parse: { us: per(parse.cpuMs, replayEvents) },
  };
}

function budgetLine(b: CpuBudget): string {
  const f = (n: number): string => fmt(n, 1);
  return [
    `live ${f(b.live.us)} (server ${f(b.live.serverUs)}, receiver ${f(b.live.receiverUs)}), ceiling client ${f(b.ceiling.us)} (server ${f(b.ceiling.serverUs)}); at ${TARGET_RATIO} the ${b.cores} cores leave the pipeline ${f(b.live.budgetUs)}`,
    `replay ${f(b.replay.us)} (receiver ${f(b.replay.receiverUs)}), read + parse ${f(b.parse.us)}; at ${TARGET_RATIO} the ${b.cores} cores leave the replay ${f(b.replay.budgetUs)}`,
  ].join('; ');
}

/** The throughput target: the pipeline's rate against its ceiling's. */
const TARGET_RATIO = 0.7;

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const best = <T extends { ms: number }>(xs: T[]): T => xs.reduce((a, b) => (b.ms < a.ms ? b : a));

async function main(): Promise<void> {
  const cpu = cpus();
  const machine = `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${fmt(totalmem() / 2 ** 30)} GiB, ${platform()} ${release()}, Node ${process.version}`;
  const date = new Date().toISOString().slice(0, 10);
  say(`prefect-otel benchmark — ${machine}`);
  if (args['soak-only']) {
    const soak = await runSoak();
    if (soak.dropped > 0 || soak.spans !== soak.exported) say(`  span loss: soak: ${soak.exported} exported, ${soak.spans} received, ${soak.dropped} dropped`);
    return;
  }

  const replayFile = await ensureWorkload(num('replay-events'), status);
  say(`workload: ${fmt(replayFile.events)} events, ${fmt(replayFile.bytes / 2 ** 20)} MB (${replayFile.path})`);
  const liveFile = await ensureWorkload(num('live-events'), status);
  const liveEvents = liveFile.events;
  const rounds = Math.max(1, num('rounds'));
  const failures: string[] = [];

  // 1 + 2: the websocket ceiling and the live pipeline, alternated.
  const ceilings: (Throughput & Cpu & ServerCpu)[] = [];
  const lives: (LiveResult & ServerCpu & ReceiverCpu & { receiverSpans: number })[] = [];
  for (let i = 0; i < rounds; i++) {
    status(`live: round ${i + 1}/${rounds}, ceiling`);
    ceilings.push(await wsCeiling(liveFile, liveEvents));
    status(`live: round ${i + 1}/${rounds}, pipeline`);
    lives.push(await live(liveFile, liveEvents));
  }
  const ceiling = best(ceilings);
  const liveBest = best(lives);
  const liveRate = rate(liveEvents, liveBest.ms);
  const liveRatio = liveRate.perS / ceiling.perS;
  for (const l of lives) {
    if (l.dropped > 0 || l.rejected > 0 || l.receiverSpans !== l.finished) failures.push(`live: ${l.finished} spans finished, ${l.receiverSpans} received, ${l.dropped} dropped`);
  }
  say(`1. ceiling   ws receive + JSON.parse      ${fmt(ceiling.perS).padStart(9)} events/s  (${fmt(liveEvents)} frames in ${fmt(ceiling.ms / 1000, 2)} s)`);
  say(`2. live      ws → model → OTLP/HTTP       ${fmt(liveRate.perS).padStart(9)} events/s  (${fmt(liveBest.finished)} spans received in ${fmt(liveBest.ms / 1000, 2)} s)   live / ceiling = ${liveRatio.toFixed(2)}`);

  // 3: replay against read + parse.
  const parses: (Throughput & Cpu)[] = [];
  const replays: ReplayResult[] = [];
  for (let i = 0; i < rounds; i++) {
    status(`replay: round ${i + 1}/${rounds}, read + parse`);
    parses.push(await readParse(replayFile));
    status(`replay: round ${i + 1}/${rounds}, prefect-otel replay`);
    replays.push(await replay(replayFile));
  }
  const parse = best(parses);
  const replayBest = best(replays);
  const replayRatio = replayBest.perS / parse.perS;
  for (const r of replays) if (r.receiverSpans !== r.spans || r.exported !== r.spans) failures.push(`replay: ${r.spans} spans, ${r.exported} exported, ${r.receiverSpans} received`);
  say(`3. replay    read + JSON.parse            ${fmt(parse.perS).padStart(9)} events/s  (${fmt(parse.events)} lines in ${fmt(parse.ms / 1000, 2)} s)`);
  say(`             prefect-otel replay → OTLP   ${fmt(replayBest.perS).padStart(9)} events/s  (${fmt(replayBest.spans)} spans received in ${fmt(replayBest.ms / 1000, 2)} s)   replay / ceiling = ${replayRatio.toFixed(2)}`);

  const budget = cpuBudget(liveEvents, ceiling, liveBest, replayFile.events, parse, replayBest);
  say(`   CPU       µs per event, every thread: ${budgetLine(budget)}`);

  // 4: memory per open run.
  const mems: MemoryResult[] = [];
  for (const runs of [10_000, 100_000]) {
    status(`memory: ${fmt(runs)} open runs`);
    mems.push(await memory(replayFile, runs));
  }
  for (const m of mems) {
    const perEvent = (m.heapPerRun3 - m.heapPerRun1) / 2;
    say(`4. memory    ${fmt(m.runs).padStart(7)} open runs: heap ${fmt(m.heapPerRun1)} B/run after 1 event, ${fmt(m.heapPerRun3)} B/run after 3 (${fmt(perEvent)} B per span event; ${fmt(m.heapPerRun1 - perEvent)} B/run without); RSS ${fmt(m.rssPerRun3)} B/run`);
  }

  // 5: latency at a steady rate.
  status('latency');
  const lat = await latency(num('latency-rate'), num('latency-seconds'));
  if (lat.dropped > 0 || lat.spans !== lat.exported) failures.push(`latency: ${lat.exported} exported, ${lat.spans} received, ${lat.dropped} dropped`);
  say(`5. latency   ${fmt(lat.rate)} events/s for ${fmt(lat.seconds)} s: run end → span at the collector p50 ${fmt(lat.p50)} ms, p99 ${fmt(lat.p99)} ms, max ${fmt(lat.max)} ms (${fmt(lat.measured)} spans; ${fmt(lat.incomplete)} spans of runs held by the task grace not counted)`);

  // 6: where the time goes.
  status('stages');
  const split = await stages(liveFile, num('stages-events'));
  say(`6. stages    ${fmt(split.events)} events in one process, µs per event: ${stagesLine(split)}; the export thread beside them ${fmt(split.exportThreadUs, 1)}`);

  // 9: handing events to a worker thread.
  status('hand-off');
  const hand = await handoff(liveFile, num('handoff-events'));
  say(`9. hand-off  ${fmt(hand.events)} events to a worker thread, µs per event (main thread / all threads): ${hand.ways.map((w) => `${w.name} ${fmt(w.mainUs, 1)} / ${fmt(w.cpuUs, 1)}`).join('; ')}; JSON.parse ${fmt(hand.parseUs, 1)}`);

  let soak: LatencyResult | undefined;
  if (args.soak) {
    soak = await runSoak();
    if (soak.dropped > 0 || soak.spans !== soak.exported) failures.push(`soak: ${soak.exported} exported, ${soak.spans} received, ${soak.dropped} dropped`);
  }

  const targets = [
    { name: `live ≥ ${TARGET_RATIO} × ceiling`, ok: liveRatio >= TARGET_RATIO },
    { name: `replay ≥ ${TARGET_RATIO} × ceiling`, ok: replayRatio >= TARGET_RATIO },
    { name: '≤ 2 KB per open run (without span events)', ok: mems.every((m) => m.heapPerRun1 - (m.heapPerRun3 - m.heapPerRun1) / 2 <= 2048) },
    { name: 'p99 ≤ 1.5 s at 5k events/s', ok: lat.p99 <= 1500 },
    { name: 'zero spans dropped', ok: failures.length === 0 },
  ];
  say(`targets: ${targets.map((t) => `${t.ok ? 'met' : 'MISSED'}: ${t.name}`).join('; ')}`);
  for (const f of failures) say(`  span loss: ${f}`);

  if (!args['no-write']) {
    writeResults({ machine, date, liveEvents, ceiling, liveRate, liveRatio, liveBest, parse, replayBest, replayRatio, mems, lat, soak, targets, file: replayFile, split, budget, hand });
    say(`results written to bench/README.md`);
  }
}

async function runSoak(): Promise<LatencyResult> {
  const soakRate = num('soak-rate');
  status('soak');
  const soak = await latency(soakRate, num('soak-minutes') * 60, 10_000);
  say(`7. soak      ${fmt(soakRate)} events/s for ${fmt(soak.seconds / 60, 1)} min, p99 ${fmt(soak.p99)} ms, ${fmt(soak.dropped)} dropped; ${soakSummary(soak)}`);
  for (const line of soakTable(soak)) say(`   ${line}`);
  return soak;
}

function writeResults(r: {
  machine: string; date: string; liveEvents: number; ceiling: Throughput; liveRate: Throughput; liveRatio: number; liveBest: LiveResult;
  parse: Throughput; replayBest: ReplayResult; replayRatio: number; mems: MemoryResult[]; lat: LatencyResult; soak: LatencyResult | undefined;
  targets: { name: string; ok: boolean }[]; file: WorkloadFile; split: StagesResult; budget: CpuBudget; hand: HandoffResult;
}): void {
  const b = r.budget;
  const rows = [
    `Measured on ${r.date}: ${r.machine}. Workload: ${fmt(r.file.events)} events (${fmt(r.file.bytes / 2 ** 20)} MB), best of the rounds.`,
    '',
    '| measurement | result | ceiling | ratio |',
    '|---|---|---|---|',
    `| live: ws → model → OTLP/HTTP, ${fmt(r.liveEvents)} frames | ${fmt(r.liveRate.perS)} events/s (${fmt(r.liveBest.finished)} spans, ${fmt(r.liveBest.dropped)} dropped) | ${fmt(r.ceiling.perS)} events/s (ws receive + JSON.parse) | **${r.liveRatio.toFixed(2)}** |`,
    `| replay: ${fmt(r.file.events)}-event file → OTLP/HTTP | ${fmt(r.replayBest.perS)} events/s (${fmt(r.replayBest.spans)} spans, all received) | ${fmt(r.parse.perS)} events/s (read + JSON.parse) | **${r.replayRatio.toFixed(2)}** |`,
    ...r.mems.map((m) => {
      const perEvent = (m.heapPerRun3 - m.heapPerRun1) / 2;
      return `| memory: ${fmt(m.runs)} open runs | ${fmt(m.heapPerRun1 - perEvent)} B heap per run without span events; ${fmt(perEvent)} B per span event | RSS ${fmt(m.rssPerRun3)} B per run with 3 events | |`;
    }),
    `| latency: ${fmt(r.lat.rate)} events/s for ${fmt(r.lat.seconds)} s, defaults | run end → span at the collector: p50 ${fmt(r.lat.p50)} ms, p99 ${fmt(r.lat.p99)} ms, max ${fmt(r.lat.max)} ms (${fmt(r.lat.measured)} spans, ${fmt(r.lat.dropped)} dropped) | | |`,
    ...(r.soak === undefined
      ? []
      : [`| soak: ${fmt(r.soak.rate)} events/s for ${fmt(r.soak.seconds / 60, 1)} min | ${soakSummary(r.soak)}; p99 ${fmt(r.soak.p99)} ms; ${fmt(r.soak.dropped)} dropped | | |`]),
    '',
    `Targets: ${r.targets.map((t) => `${t.name}: ${t.ok ? 'met' : '**missed**'}`).join('; ')}.`,
    '',
    `Where the time goes: ${fmt(r.split.events)} events held in memory, taken one stage further per pass in one process (\`bench/stages.ts\`), best of ${r.split.rounds}:`,
    '',
    '| stage | µs per event, cumulative | this stage |',
    '|---|---|---|',
    ...r.split.stages.map((x, i) => `| ${x.name} | ${fmt(x.usPerEvent, 1)} | ${fmt(x.usPerEvent - (i === 0 ? 0 : r.split.stages[i - 1]!.usPerEvent), 1)} |`),
    '',
    `Beside them, the export thread's work on the same spans (the hand-off's text parsed back and encoded by the SDK's protobuf serializer): ${fmt(r.split.exportThreadUs, 1)} µs per event.`,
    '',
    `CPU time per event (user + system, every thread of the process, over the timed part of the best round), and what a ratio of ${TARGET_RATIO} would leave the pipeline if it kept the machine's ${b.cores} cores busy:`,
    '',
    `| run | CPU µs per event | beside it, µs per event | at ${TARGET_RATIO} × ceiling, the ${b.cores} cores leave the pipeline |`,
    '|---|---|---|---|',
    `| live pipeline | ${fmt(b.live.us, 1)} | server sending ${fmt(b.live.serverUs, 1)}; receiver ${fmt(b.live.receiverUs, 1)} | ${fmt(b.live.budgetUs, 1)} µs |`,
    `| ws ceiling client | ${fmt(b.ceiling.us, 1)} | server sending ${fmt(b.ceiling.serverUs, 1)} | |`,
    `| replay | ${fmt(b.replay.us, 1)} | receiver ${fmt(b.replay.receiverUs, 1)} | ${fmt(b.replay.budgetUs, 1)} µs |`,
    `| read + parse ceiling | ${fmt(b.parse.us, 1)} | | |`,
    '',
    `Handing ${fmt(r.hand.events)} of the live workload's events to a worker thread that only counts them (\`bench/handoff.ts\`), best of ${r.hand.rounds}; \`JSON.parse\` of one takes ${fmt(r.hand.parseUs, 1)} µs:`,
    '',
    '| handed over as | main thread, µs per event | CPU of both threads, µs per event |',
    '|---|---|---|',
    ...r.hand.ways.map((w) => `| ${w.name} | ${fmt(w.mainUs, 1)} | ${fmt(w.cpuUs, 1)} |`),
  ];
  const text = readFileSync(README, 'utf8');
  const start = '<!-- results:start -->';
  const end = '<!-- results:end -->';
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i === -1 || j === -1) throw new Error(`${README} has no ${start} … ${end} block`);
  writeFileSync(README, `${text.slice(0, i + start.length)}\n${rows.join('\n')}\n${text.slice(j)}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
