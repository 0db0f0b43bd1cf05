/**
 * Run `work`, reading `progress()` at every turn of the event loop while it runs: the counts other
 * work saw, to show that a long job (a state save) gave the loop turns instead of holding it.
 */
export async function progressSeenMeanwhile<T>(work: () => Promise<T>, progress: () => number): Promise<{ result: T; seen: number[] }> {
  const seen: number[] = [];
  let running = true;
  const look = (): void => {
    seen.push(progress());
    if (running) setImmediate(look);
  };
  setImmediate(look);
  try {
    return { result: await work(), seen };
  } finally {
    running = false;
  }
}
