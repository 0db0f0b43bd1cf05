/** `prefect-otel replay` as a child process, and one small run of events to give it. */
import { startCli, type CliResult } from './cli.js';
import { flowRunStateEvent, taskRunStateEvent } from './prefect-events.js';

/** The built CLI with a Prefect API that is not there (replay needs none) and log lines at info. */
export function cli(args: string[], env: Record<string, string>, input?: string): Promise<CliResult> {
  return startCli(args, { PREFECT_API_URL: 'http://127.0.0.1:9/api', PREFECT_OTEL_LOG_LEVEL: 'info', ...env }, input ?? '').result;
}

export const FLOW = { flowId: '6a1f0c7e-1111-4a2b-9c3d-0e1f2a3b4c5d', flowName: 'etl' };
export const FR = '0198c7d2-5b1e-7a3c-9f10-2b3c4d5e6f70';
export const TR = '0198c7d2-6000-7abc-8def-000000000001';
export const T0 = Date.UTC(2026, 10, 20, 9, 0, 0);

/** A flow run and its task, both Failed, as websocket event messages (one JSON line each). */
export function smallRun(): string[] {
  return [
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: T0, id: '0198c7d2-eeee-7000-8000-000000000001' }),
    taskRunStateEvent({ taskRunId: TR, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, ...FLOW, state: { type: 'RUNNING', name: 'Running' }, from: 'PENDING', runCount: 1, occurred: T0 + 1000, id: '0198c7d2-eeee-7000-8000-000000000002' }),
    taskRunStateEvent({ taskRunId: TR, taskRunName: 'extract-3f2', taskKey: 'extract-9a8b7c6d', flowRunId: FR, ...FLOW, state: { type: 'FAILED', name: 'Failed', message: 'ValueError: bad row 17' }, from: 'RUNNING', runCount: 1, occurred: T0 + 2000, id: '0198c7d2-eeee-7000-8000-000000000003' }),
    flowRunStateEvent({ flowRunId: FR, flowRunName: 'crimson-fox', ...FLOW, state: { type: 'FAILED', name: 'Failed', message: 'Flow run encountered an exception' }, from: 'RUNNING', runCount: 1, occurred: T0 + 3000, id: '0198c7d2-eeee-7000-8000-000000000004' }),
  ].map((e) => JSON.stringify({ type: 'event', event: e }));
}
