import { isRecord, type PrefectEvent, type SkipReason } from './event.js';
import { canonicalUuid } from './ids.js';

export type RunType = 'flow' | 'task';

export interface RunRef {
  readonly type: RunType;
  /** Canonical lowercase UUID. */
  readonly id: string;
  readonly name: string | undefined;
}

/** Prefect's state types (`StateType`). */
export const STATE_TYPES = ['SCHEDULED', 'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED', 'PAUSED', 'CANCELLING'] as const;
export type StateType = (typeof STATE_TYPES)[number];
export const TERMINAL_STATE_TYPES: ReadonlySet<StateType> = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'CRASHED']);

export interface StateInfo {
  readonly type: StateType;
  /** The state name as Prefect wrote it (`Running`, `AwaitingRetry`, custom names verbatim). */
  readonly name: string;
  readonly message: string;
  /** The intended "from" state type, when not null. */
  readonly from: string | undefined;
  readonly runCount: number | undefined;
}

export type Classified =
  | { readonly kind: 'state'; readonly run: RunRef; readonly state: StateInfo }
  | { readonly kind: 'heartbeat'; readonly run: RunRef }
  /** Any other event naming runs; `runs` is innermost first (task runs before flow runs). */
  | { readonly kind: 'run-event'; readonly runs: readonly RunRef[] }
  | { readonly kind: 'unrelated' }
  | { readonly kind: 'invalid'; readonly reason: SkipReason; readonly detail: string };

const RUN_PREFIX = { flow: 'prefect.flow-run.', task: 'prefect.task-run.' } as const;
/**
 * Longest `prefect.run-count` read; a longer one is not a count Prefect writes (an int column), and
 * is ignored like any other that is not one. Fifteen digits stay an exact integer in a double and
 * in OTLP's int64; more became 1e+23, or Infinity, which OTLP/JSON writes as null.
 */
const MAX_RUN_COUNT_DIGITS = 15;
const HEARTBEAT = 'prefect.flow-run.heartbeat';

/** `prefect.flow-run.<uuid>` → a flow run, `prefect.task-run.<uuid>` → a task run. */
export function runRefFromResourceId(resourceId: string, name?: string): RunRef | undefined {
  for (const type of ['flow', 'task'] as const) {
    const prefix = RUN_PREFIX[type];
    if (resourceId.startsWith(prefix)) {
      const id = canonicalUuid(resourceId.slice(prefix.length));
      return id === undefined ? undefined : { type, id, name };
    }
  }
  return undefined;
}

function runTypeOfName(eventName: string): RunType | undefined {
  if (eventName.startsWith(RUN_PREFIX.flow)) return 'flow';
  if (eventName.startsWith(RUN_PREFIX.task)) return 'task';
  return undefined;
}

/** What an event means for the run model. Pure. */
export function classify(event: PrefectEvent): Classified {
  const own = runRefFromResourceId(event.resource.id, event.resource.name);
  const nameType = runTypeOfName(event.name);
  const resourceIsRun = event.resource.id.startsWith(RUN_PREFIX.flow) || event.resource.id.startsWith(RUN_PREFIX.task);
  if (resourceIsRun && own === undefined) {
    return { kind: 'invalid', reason: 'bad_run_id', detail: `resource ${JSON.stringify(event.resource.id.slice(0, 80))} does not end in a UUID` };
  }
  if (own !== undefined && event.name === HEARTBEAT) return { kind: 'heartbeat', run: own };

  const validated = isRecord(event.payload.validated_state) ? event.payload.validated_state : undefined;
  const typeLabel = event.resource.labels['prefect.state-type'] ?? (typeof validated?.type === 'string' ? validated.type : undefined);
  if (own !== undefined && nameType === own.type && typeLabel !== undefined) {
    const type = typeLabel.toUpperCase();
    if (!(STATE_TYPES as readonly string[]).includes(type)) {
      return { kind: 'invalid', reason: 'unknown_state', detail: `state type ${JSON.stringify(typeLabel.slice(0, 40))}` };
    }
    const suffix = event.name.slice(RUN_PREFIX[own.type].length);
    const name = nonEmpty(event.resource.labels['prefect.state-name']) ?? stringField(validated, 'name') ?? suffix;
    const message = event.resource.labels['prefect.state-message'] ?? stringField(validated, 'message') ?? '';
    const intended = isRecord(event.payload.intended) ? event.payload.intended : undefined;
    const from = typeof intended?.from === 'string' && intended.from !== '' ? intended.from : undefined;
    const countText = event.resource.labels['prefect.run-count'];
    const runCount = countText !== undefined && countText.length <= MAX_RUN_COUNT_DIGITS && /^\d+$/.test(countText) ? Number(countText) : undefined;
    return { kind: 'state', run: own, state: { type: type as StateType, name, message, from, runCount } };
  }

  const runs: RunRef[] = [];
  const seen = new Set<string>();
  const add = (ref: RunRef | undefined): void => {
    if (ref !== undefined && !seen.has(ref.id)) {
      seen.add(ref.id);
      runs.push(ref);
    }
  };
  add(own);
  for (const r of event.related) if (r.id.startsWith(RUN_PREFIX.task)) add(runRefFromResourceId(r.id, r.name));
  for (const r of event.related) if (r.id.startsWith(RUN_PREFIX.flow)) add(runRefFromResourceId(r.id, r.name));
  if (runs.length === 0 && AUTOMATION_STATE_EVENTS.has(event.name)) for (const ref of automationRuns(event.payload)) add(ref);
  return runs.length > 0 ? { kind: 'run-event', runs } : { kind: 'unrelated' };
}

/**
 * An automation's trigger firing or resolving (`create_automation_state_change_event` in
 * src/prefect/server/events/schemas/automations.py) relates only the event that set it off
 * (`prefect.event.<id>`, role `triggering-event`): the run it is about is named in its payload, in
 * `triggering_event` (that event, dumped whole) or, for a proactive trigger that fired on no event
 * (a run left Running too long), in `triggering_labels` (the labels it counted by, such as
 * `prefect.resource.id`).
 */
const AUTOMATION_STATE_EVENTS: ReadonlySet<string> = new Set(['prefect.automation.triggered', 'prefect.automation.resolved']);
/** How many of the triggering event's related resources are looked at. */
const MAX_TRIGGERING_RELATED = 64;

/** The runs an automation's state event is about: the triggering event's (innermost first), or its trigger's labels'. */
function automationRuns(payload: Record<string, unknown>): RunRef[] {
  const refs: RunRef[] = [];
  const resourceRef = (resource: unknown): RunRef | undefined => {
    if (!isRecord(resource)) return undefined;
    // Its id only: a name in a payload was never checked as an event's own resources are.
    const id = resource['prefect.resource.id'];
    return typeof id === 'string' ? runRefFromResourceId(id) : undefined;
  };
  const triggering = payload.triggering_event;
  if (isRecord(triggering)) {
    const related = Array.isArray(triggering.related) ? triggering.related.slice(0, MAX_TRIGGERING_RELATED).map(resourceRef) : [];
    const own = resourceRef(triggering.resource);
    for (const ref of [own, ...related.filter((r) => r?.type === 'task'), ...related.filter((r) => r?.type === 'flow')]) if (ref !== undefined) refs.push(ref);
  } else {
    const label = isRecord(payload.triggering_labels) ? payload.triggering_labels['prefect.resource.id'] : undefined;
    const ref = typeof label === 'string' ? runRefFromResourceId(label) : undefined;
    if (ref !== undefined) refs.push(ref);
  }
  return refs;
}

function nonEmpty(text: string | undefined): string | undefined {
  return text === undefined || text === '' ? undefined : text;
}

function stringField(obj: Record<string, unknown> | undefined, key: string): string | undefined {
  const v = obj?.[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}
