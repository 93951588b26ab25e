import { ConfigurationError } from './errors.js';

/** An exponential backoff with jitter, as an adapter's options take it. */
export interface BackoffOptions {
  /** Delay after the first failure, in milliseconds. */
  readonly minDelayMs?: number;
  /** Longest delay, in milliseconds. */
  readonly maxDelayMs?: number;
  /** Growth factor from one delay to the next while failures go on. Default `2`. */
  readonly factor?: number;
}

/** A backoff with its options checked. */
export interface Backoff {
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor: number;
}

const KEYS = new Set(['minDelayMs', 'maxDelayMs', 'factor']);

/**
 * Checks a backoff option named `option` (e.g. `pause`), filling in `defaults`. Errors name
 * the option: "Expected `pause.minDelayMs` to be ...".
 */
export function compileBackoff(option: string, options: BackoffOptions | undefined, defaults: Backoff): Backoff {
  if (options === undefined) return defaults;
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(`Expected \`${option}\` to be an object.`);
  }
  for (const key of Object.keys(options)) {
    if (!KEYS.has(key)) {
      throw new ConfigurationError(`Unknown option \`${option}.${key}\`; known: ${[...KEYS].join(', ')}.`);
    }
  }
  const check = (name: string, value: number | undefined, fallback: number, min: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
      throw new ConfigurationError(
        `Expected \`${option}.${name}\` to be a finite number of at least ${min}, got ${String(value)}.`,
      );
    }
    return value;
  };
  const minDelayMs = check('minDelayMs', options.minDelayMs, defaults.minDelayMs, 1);
  const maxDelayMs = check('maxDelayMs', options.maxDelayMs, Math.max(defaults.maxDelayMs, minDelayMs), 1);
  const factor = check('factor', options.factor, defaults.factor, 1);
  if (maxDelayMs < minDelayMs) {
    throw new ConfigurationError(
      `\`${option}.maxDelayMs\` (${maxDelayMs}) must not be smaller than \`${option}.minDelayMs\` (${minDelayMs}).`,
    );
  }
  return { minDelayMs, maxDelayMs, factor };
}

/**
 * The delay after `failures` failures in a row, with "equal jitter": half the exponential
 * delay plus a random share of the other half. Never below half of `minDelayMs` (a failing
 * loop never spins), never above `maxDelayMs`, and consumers that failed together do not
 * all come back at the same moment.
 */
export function backoffDelayMs(backoff: Backoff, failures: number, random: () => number = Math.random): number {
  const base = Math.min(backoff.maxDelayMs, backoff.minDelayMs * backoff.factor ** Math.max(0, failures - 1));
  return Math.round(base / 2 + random() * (base / 2));
}
