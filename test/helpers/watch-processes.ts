/**
 * Two `prefect-otel watch` processes in turn, or side by side, on one state file: what the restart
 * and standby tests read of them (log lines as they arrive, STLOGGING lines, the files on disk).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { TestContext } from 'node:test';
import type { FakePrefect, WireEvent } from './fake-prefect.js';
import { closedPort, liveConnections, logLines, startWatch, until, type LogLine, type Workload } from './watch-e2e.js';

/** The child's log lines as they arrive. */
export function follow(child: ReturnType<typeof startWatch>['child']): () => LogLine[] {
  let text = '';
  child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  return () => logLines(text);
}

export const stlogging = (lines: LogLine[]): LogLine[] => lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('STLOGGING: '));

/** The event ids of the STLOGGING lines of both processes: each event once, all of them. */
export function assertEachEventLoggedOnce(first: LogLine[], second: LogLine[], w: Workload): void {
  const ids = [...stlogging(first), ...stlogging(second)].map((l) => l['prefect.event.id'] as string);
  assert.deepEqual(ids.slice().sort(), w.events.map((e) => e.id).sort());
}

/**
 * The first of two processes in turn: a `watch` sent `events`, stopped with SIGTERM once it has
 * logged each of them, and seen to exit 0. Its log lines.
 */
export async function watchUntilEachLogged(t: TestContext, prefect: FakePrefect, env: Record<string, string>, events: WireEvent[]): Promise<() => LogLine[]> {
  const first = startWatch(env, t);
  const lines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(events);
  await until('every event taken', () => stlogging(lines()).length === events.length);
  first.child.kill('SIGTERM');
  assert.equal((await first.result).code, 0);
  return lines;
}

/** The state file and its journal as text (either may not be there yet). */
export function stateText(stateFile: string): string {
  const read = (path: string): string => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return '';
    }
  };
  return read(stateFile) + read(`${stateFile}.journal`);
}

/**
 * A `watch` whose collector is down (a closed port), sent the whole workload, once every span is
 * built and waits for the collector (as its stats lines say).
 */
export async function spansBuiltWithCollectorDown(t: TestContext, prefect: FakePrefect, w: Workload, env: Record<string, string>) {
  const first = startWatch({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await closedPort()}`, PREFECT_OTEL_STATS_INTERVAL_MS: '50' }, t);
  const firstLines = follow(first.child);
  await until('subscription', () => liveConnections(prefect) === 1);
  prefect.publish(w.events);
  const finished = () => firstLines().filter((l) => l.msg === 'stats').map((l) => (l.spans as { finished: number }).finished);
  await until('every span built', () => finished().includes(w.runs.size));
  return { first, firstLines };
}

/** `/healthz` of a process, from the port its log line says it serves on. */
export async function healthz(lines: LogLine[]): Promise<{ code: number; body: unknown }> {
  const port = lines.find((l) => l.msg === 'serving /healthz, /livez and /metrics')?.port as number;
  const res = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { code: res.status, body: await res.json() };
}

export const levels = (lines: LogLine[], min: number) => lines.filter((l) => (l.level ?? 0) >= min);

/** The state file and its journal, as they are on disk (the lock aside). */
export function stateFiles(stateFile: string): Record<string, string> {
  const dir = dirname(stateFile);
  return Object.fromEntries(readdirSync(dir).filter((f) => !f.includes('.lock')).sort().map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
}
