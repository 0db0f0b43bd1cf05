/** Runs the built CLI as a child process with a clean environment, as a user's shell would. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** Leave standard input open for the test to write to (replay `-`); it must end it. */
  readonly keepStdinOpen?: boolean;
  /** Do not keep standard output (it is still read, e.g. by the test's own listener). */
  readonly discardStdout?: boolean;
  /** The directory the CLI runs in (a relative FILE is read from there). */
  readonly cwd?: string;
  /** Run as this user and group (a test run by root that needs a file it may not read). */
  readonly user?: { readonly uid: number; readonly gid: number };
}

export function startCli(args: string[], env: Record<string, string>, input?: string, options: CliOptions = {}): { child: ChildProcess; result: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, cwd: options.cwd, ...options.user });
  let stdout = '';
  let stderr = '';
  if (options.discardStdout !== true) child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  else child.stdout.resume();
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const result = new Promise<CliResult>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  if (options.keepStdinOpen !== true && (input !== undefined || args[0] === 'replay')) child.stdin.end(input ?? '');
  else if (input !== undefined) child.stdin.write(input);
  return { child, result };
}

/** One sample's value from the child's `/metrics` (PREFECT_OTEL_HTTP_PORT), read as Prometheus text. */
export async function readMetric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}
