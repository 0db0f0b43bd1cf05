/** CPU time (user + system, every thread of the process) in ms since `since`, a `process.cpuUsage()` reading. */
export function cpuMsSince(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}
