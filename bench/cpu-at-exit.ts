/**
 * Preloaded (`node --import`) into a process the benchmark times from spawn to exit (the replay
 * CLI): at exit, writes the process's whole CPU time to stderr as `bench-cpu-ms: <ms>`.
 */
import { writeSync } from 'node:fs';

process.on('exit', () => {
  const { user, system } = process.cpuUsage();
  writeSync(2, `bench-cpu-ms: ${(user + system) / 1000}\n`);
});
