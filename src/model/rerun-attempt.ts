import { TERMINAL_STATE_TYPES, type StateType } from './classify.js';

/** One state of a run's state history, as Prefect keeps it (`GET /flow_run_states/`, `GET /task_run_states/`). */
export interface HistoryState {
  /** The state id, which is the id of its state event. */
  readonly id: string;
  readonly type: string;
  /** Its `timestamp` (µs), which is its state event's `occurred`; undefined when unreadable. */
  readonly timestampUs: number | undefined;
}

/** The state event a rerun was first seen by: its id (the state id), `occurred`, type, and whether it leaves a terminal state. */
export interface RerunState {
  readonly id: string;
  readonly occurredUs: number;
  readonly type: string;
  readonly leavesTerminal: boolean;
}

/**
 * Which rerun of its run a state opens, from the run's state history in Prefect's order (by
 * timestamp): the times the run left a terminal state (for one that is not terminal: one terminal
 * state to another, RolledBack or a state set by hand, runs nothing again) up to and including this
 * state. The states before it are those before it in the history; when it is not there (not recorded
 * yet), those stamped up to its `occurred`. At least 1: the state itself leaves a terminal state.
 */
export function rerunAttemptFromHistory(history: readonly HistoryState[], state: RerunState): number {
  const at = history.findIndex((s) => s.id === state.id);
  const before = at >= 0 ? history.slice(0, at) : history.filter((s) => s.id !== state.id && s.timestampUs !== undefined && s.timestampUs <= state.occurredUs);
  let count = 0;
  for (let i = 1; i < before.length; i++) if (reruns(before[i - 1]!.type, before[i]!.type)) count += 1;
  if (state.leavesTerminal && !terminal(state.type)) count += 1;
  return Math.max(1, count);
}

function terminal(type: string): boolean {
  return TERMINAL_STATE_TYPES.has(type as StateType);
}

function reruns(from: string, to: string): boolean {
  return terminal(from) && !terminal(to);
}
