/**
 * Resolves after `ms` milliseconds, or at once when `signal` aborts (without rejecting:
 * the caller looks at the signal). The timer keeps the process alive on purpose: a
 * consumer waiting to reconnect must not exit because no socket is open.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0 || signal?.aborted === true) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
