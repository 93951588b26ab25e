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
 * Checks a backoff option named `option` (e.g. `pause`), filling in `defaults`; delays may
 * not exceed `limitMs`. Errors name the option: "Expected `pause.minDelayMs` to be ...".
 */
export function compileBackoff(
  option: string,
  options: BackoffOptions | undefined,
  defaults: Backoff,
  limitMs = Number.MAX_SAFE_INTEGER,
): Backoff {
  if (options === undefined) return defaults;
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(`Expected \`${option}\` to be an object.`);
  }
  for (const key of Object.keys(options)) {
    if (!KEYS.has(key)) {
      throw new ConfigurationError(`Unknown option \`${option}.${key}\`; known: ${[...KEYS].join(', ')}.`);
    }
  }
  const check = (name: string, value: number | undefined, fallback: number, max: number): number => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 1 || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? 'of at least 1' : `from 1 to ${max}`;
      throw new ConfigurationError(`Expected \`${option}.${name}\` to be a number ${range}, got ${String(value)}.`);
    }
    return value;
  };
  const minDelayMs = check('minDelayMs', options.minDelayMs, defaults.minDelayMs, limitMs);
  const maxDelayMs = check('maxDelayMs', options.maxDelayMs, Math.max(defaults.maxDelayMs, minDelayMs), limitMs);
  const factor = check('factor', options.factor, defaults.factor, Number.MAX_SAFE_INTEGER);
  if (maxDelayMs < minDelayMs) {
    throw new ConfigurationError(
      `\`${option}.maxDelayMs\` (${maxDelayMs}) must not be smaller than \`${option}.minDelayMs\` (${minDelayMs}).`,
    );
  }
  return Object.freeze({ minDelayMs, maxDelayMs, factor });
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
