import { ConfigurationError } from '@inboxkit/core';

/** How long a partition stays paused after an infrastructure error (exponential, with jitter). */
export interface PauseBackoffOptions {
  /** Pause after the first failure, in milliseconds. Default `1000`. */
  readonly minDelayMs?: number;
  /** Longest pause, in milliseconds. Default `30000`. */
  readonly maxDelayMs?: number;
  /** Growth factor from one pause to the next while failures go on. Default `2`. */
  readonly factor?: number;
}

export interface PauseBackoff {
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor: number;
}

const KEYS = new Set(['minDelayMs', 'maxDelayMs', 'factor']);

export function compilePauseBackoff(options: PauseBackoffOptions | undefined): PauseBackoff {
  if (options === undefined) return { minDelayMs: 1000, maxDelayMs: 30_000, factor: 2 };
  if (typeof options !== 'object' || options === null)
    throw new ConfigurationError('Expected `pause` to be an object.');
  for (const key of Object.keys(options)) {
    if (!KEYS.has(key))
      throw new ConfigurationError(`Unknown option \`pause.${key}\`; known: ${[...KEYS].join(', ')}.`);
  }
  const check = (name: string, value: number | undefined, fallback: number, min: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
      throw new ConfigurationError(
        `Expected \`pause.${name}\` to be a finite number of at least ${min}, got ${String(value)}.`,
      );
    }
    return value;
  };
  const minDelayMs = check('minDelayMs', options.minDelayMs, 1000, 1);
  const maxDelayMs = check('maxDelayMs', options.maxDelayMs, Math.max(30_000, minDelayMs), 1);
  const factor = check('factor', options.factor, 2, 1);
  if (maxDelayMs < minDelayMs) {
    throw new ConfigurationError(
      `\`pause.maxDelayMs\` (${maxDelayMs}) must not be smaller than \`pause.minDelayMs\` (${minDelayMs}).`,
    );
  }
  return { minDelayMs, maxDelayMs, factor };
}

/**
 * The pause after `failures` failures in a row: half the exponential delay plus a random
 * share of the other half, so partitions (and processes) that failed together do not all
 * come back at the same moment.
 */
export function pauseDelayMs(backoff: PauseBackoff, failures: number, random: () => number = Math.random): number {
  const base = Math.min(backoff.maxDelayMs, backoff.minDelayMs * backoff.factor ** Math.max(0, failures - 1));
  return Math.round(base / 2 + random() * (base / 2));
}
