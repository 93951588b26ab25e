/** Exponential backoff between attempts. */
export interface BackoffOptions {
  /** Delay after the first failure, in milliseconds. */
  readonly minDelayMs?: number;
  /** Largest delay, in milliseconds. */
  readonly maxDelayMs?: number;
  /** Growth factor from one delay to the next. Default `2`. */
  readonly factor?: number;
}

/** A backoff with its options checked. */
export interface Backoff {
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor: number;
}

/**
 * The delay before attempt `failures + 1`, with "equal jitter": half the exponential delay
 * plus a random share of the other half. Never below half of `minDelayMs` (so a failing
 * loop never spins), never above `maxDelayMs`, and processes that failed together do not
 * come back together.
 */
export function backoffDelayMs(backoff: Backoff, failures: number, random: () => number = Math.random): number {
  const exponent = Math.max(0, failures - 1);
  const base = Math.min(backoff.maxDelayMs, backoff.minDelayMs * backoff.factor ** exponent);
  return Math.round(base / 2 + random() * (base / 2));
}

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
