/**
 * Every attribute key prefect-otel writes, once. The `prefect.run.*`, `prefect.state.*` and
 * `prefect.tags` names are the ones Prefect's own in-process telemetry uses; the `cicd.*` names are
 * the OpenTelemetry CI/CD semantic conventions.
 */
export const ATTR = {
  RUN_ID: 'prefect.run.id',
  RUN_TYPE: 'prefect.run.type',
  RUN_NAME: 'prefect.run.name',
  RUN_COUNT: 'prefect.run.count',
  RUN_WAIT_MS: 'prefect.run.wait_ms',
  RUN_INCOMPLETE: 'prefect.run.incomplete',
  RUN_INCOMPLETE_REASON: 'prefect.run.incomplete_reason',
  RUN_ATTEMPT: 'prefect.run.attempt',
  STATE_TYPE: 'prefect.state.type',
  STATE_NAME: 'prefect.state.name',
  STATE_MESSAGE: 'prefect.state.message',
  STATE_ID: 'prefect.state.id',
  STATE_FROM: 'prefect.state.from',
  TAGS: 'prefect.tags',
  TAGS_DROPPED: 'prefect.tags.dropped_count',
  FLOW_NAME: 'prefect.flow.name',
  FLOW_ID: 'prefect.flow.id',
  DEPLOYMENT_NAME: 'prefect.deployment.name',
  DEPLOYMENT_ID: 'prefect.deployment.id',
  WORK_POOL_NAME: 'prefect.work-pool.name',
  WORK_POOL_TYPE: 'prefect.work-pool.type',
  WORK_QUEUE_NAME: 'prefect.work-queue.name',
  TASK_KEY: 'prefect.task.key',
  PARENT_TASK_RUN_ID: 'prefect.parent_task_run.id',
  EVENT_ID: 'prefect.event.id',
  EVENT_RESOURCE_ID: 'prefect.event.resource.id',
  EVENT_RESOURCE_NAME: 'prefect.event.resource.name',
  EVENT_PAYLOAD: 'prefect.event.payload',
  EVENT_RECEIVED_LAG_MS: 'prefect.event.received_lag_ms',
  EVENTS_SUMMARISED: 'prefect.events.summarised_count',
  EVENTS_SUMMARISED_NAMES: 'prefect.events.summarised_names',
  /** Summarised events whose names are not in `summarised_names` (past `MAX_SUMMARISED_NAMES` distinct names). */
  EVENTS_SUMMARISED_OTHER: 'prefect.events.summarised_other_count',
  CICD_PIPELINE_NAME: 'cicd.pipeline.name',
  CICD_PIPELINE_RUN_ID: 'cicd.pipeline.run.id',
  CICD_PIPELINE_RESULT: 'cicd.pipeline.result',
  CICD_PIPELINE_RUN_URL: 'cicd.pipeline.run.url.full',
  CICD_TASK_NAME: 'cicd.pipeline.task.name',
  CICD_TASK_RUN_ID: 'cicd.pipeline.task.run.id',
  CICD_TASK_RUN_RESULT: 'cicd.pipeline.task.run.result',
  CICD_TASK_RUN_URL: 'cicd.pipeline.task.run.url.full',
  /** The semantic conventions' class of the error a failed or crashed run ended with. */
  ERROR_TYPE: 'error.type',
  LINK_KIND: 'prefect.link.kind',
} as const;

/** `cicd.pipeline.result` / `cicd.pipeline.task.run.result` values for Prefect's terminal states. */
export const CICD_RESULT = {
  COMPLETED: 'success',
  FAILED: 'failure',
  CRASHED: 'error',
  CANCELLED: 'cancellation',
} as const;

/**
 * The result of a task run or subflow stopped at Pending `NotReady`: what it waited for did not
 * complete, so Prefect never ran it, which is the conventions' `skip` ("skipped, e.g. due to a
 * precondition not being met"), for `cicd.pipeline.result` and `cicd.pipeline.task.run.result` alike.
 */
export const CICD_RESULT_SKIP = 'skip';

/** Names of the span events prefect-otel adds itself (state events are named after the state). */
export const SPAN_EVENT = {
  SUMMARY: 'prefect_otel.events_summarised',
} as const;

/** The label that carries Prefect's own W3C traceparent on runs. */
export const OTEL_TRACEPARENT_LABEL = '__OTEL_TRACEPARENT';
