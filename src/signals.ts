/**
 * The signals that stop prefect-otel gracefully (`watch`, `replay`, `register` inside a host).
 * SIGHUP among them: a terminal or ssh session that closes sends it, and Node's default (Node resets
 * an inherited `nohup` ignore) would end the process without saving the state or flushing what is
 * on its way to the collector.
 */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
