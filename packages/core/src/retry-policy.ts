import { ConfigurationError } from './errors.js';
import { bool } from './option-checks.js';

/** What a `shouldRetry` predicate is shown. */
export interface RetryDecisionContext {
  /** What the failed attempt threw. */
  readonly error: Error;
  /** 1 for the first attempt. */
  readonly attemptNumber: number;
  /** Retries the policy still allows after this attempt. */
  readonly retriesLeft: number;
}

/**
 * When and how often a failing handler runs again, in process, each attempt in a new
 * transaction. The names and meanings are p-retry's, which does the work.
 *
 * Errors that are never retried whatever this says: {@link NonRetryableError} and the
 * classes in `nonRetryable` (dead-lettered at once), `TypeError`s (programming errors,
 * as p-retry treats them), and an unreachable database (not the message's fault: it is
 * handed back to the broker instead, see `retryLater`).
 */
export interface RetryOptions {
  /**
   * Retries after the first attempt; `0` for none. Default `3`. `Infinity` only together
   * with a finite `maxRetryTime`: every message must settle in a bounded time.
   */
  readonly retries?: number;
  /** Exponential factor between delays. Default `2`. */
  readonly factor?: number;
  /** Delay before the first retry, in milliseconds. Default `100`. */
  readonly minTimeout?: number;
  /** Largest delay between two attempts, in milliseconds. Default `5000`. */
  readonly maxTimeout?: number;
  /** Multiply each delay by a random factor between 1 and 2 (jitter). Default `true`. */
  readonly randomize?: boolean;
  /** Stop retrying once this many milliseconds have passed since the first attempt. Default `Infinity`. */
  readonly maxRetryTime?: number;
  /**
   * Decides whether an error is worth another attempt; `false` dead-letters the message
   * at once. Default: every error is retried.
   *
   * @example
   * ```ts
   * shouldRetry: ({ error }) => !(error instanceof ValidationError)
   * ```
   */
  readonly shouldRetry?: (context: RetryDecisionContext) => boolean | Promise<boolean>;
  /** Error classes that are never retried, as if they extended {@link NonRetryableError}. */
  readonly nonRetryable?: ReadonlyArray<abstract new (...args: never[]) => Error>;
}

/** The compiled, validated policy. */
export interface RetryPolicy {
  readonly retries: number;
  readonly factor: number;
  readonly minTimeout: number;
  readonly maxTimeout: number;
  readonly randomize: boolean;
  readonly maxRetryTime: number;
  /** The options' `shouldRetry`, if any. */
  readonly shouldRetry: ((context: RetryDecisionContext) => boolean | Promise<boolean>) | undefined;
  readonly nonRetryable: ReadonlyArray<abstract new (...args: never[]) => Error>;
}

const RETRY_KEYS = new Set([
  'retries',
  'factor',
  'minTimeout',
  'maxTimeout',
  'randomize',
  'maxRetryTime',
  'shouldRetry',
  'nonRetryable',
]);

export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  retries: 3,
  factor: 2,
  minTimeout: 100,
  maxTimeout: 5000,
  randomize: true,
  maxRetryTime: Number.POSITIVE_INFINITY,
  shouldRetry: undefined,
  nonRetryable: Object.freeze([]),
});

export function compileRetryPolicy(options: RetryOptions | undefined, prefix = 'retry'): RetryPolicy {
  if (options === undefined) return DEFAULT_RETRY;
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError(`Expected \`${prefix}\` to be an object.`);
  }
  for (const key of Object.keys(options)) {
    if (!RETRY_KEYS.has(key)) {
      throw new ConfigurationError(`Unknown option \`${prefix}.${key}\`; known: ${[...RETRY_KEYS].join(', ')}.`);
    }
  }
  const policy: RetryPolicy = {
    retries: nonNegative(`${prefix}.retries`, options.retries, DEFAULT_RETRY.retries, true),
    factor: nonNegative(`${prefix}.factor`, options.factor, DEFAULT_RETRY.factor),
    minTimeout: nonNegative(`${prefix}.minTimeout`, options.minTimeout, DEFAULT_RETRY.minTimeout),
    maxTimeout: nonNegative(`${prefix}.maxTimeout`, options.maxTimeout, DEFAULT_RETRY.maxTimeout, true),
    randomize: bool(`${prefix}.randomize`, options.randomize, DEFAULT_RETRY.randomize),
    maxRetryTime: nonNegative(`${prefix}.maxRetryTime`, options.maxRetryTime, DEFAULT_RETRY.maxRetryTime, true),
    shouldRetry: fn(`${prefix}.shouldRetry`, options.shouldRetry),
    nonRetryable: classes(`${prefix}.nonRetryable`, options.nonRetryable),
  };
  if (!Number.isFinite(policy.retries) && !Number.isFinite(policy.maxRetryTime)) {
    throw new ConfigurationError(
      `\`${prefix}.retries\` is Infinity with no \`${prefix}.maxRetryTime\`: a message that keeps failing would be retried forever and never dead-lettered. Give a finite \`${prefix}.retries\` or a finite \`${prefix}.maxRetryTime\` (milliseconds).`,
    );
  }
  if (policy.maxTimeout < policy.minTimeout) {
    throw new ConfigurationError(
      `\`${prefix}.maxTimeout\` (${policy.maxTimeout}) must not be smaller than \`${prefix}.minTimeout\` (${policy.minTimeout}).`,
    );
  }
  return Object.freeze(policy);
}

/**
 * The delay before retry number `retry` (1-based) without jitter, as p-retry computes it.
 * With `randomize` the real delay lies between this and twice this.
 */
export function retryDelayMs(policy: RetryPolicy, retry: number): number {
  return Math.min(policy.minTimeout * Math.max(policy.factor, 1) ** (retry - 1), policy.maxTimeout);
}

/**
 * The longest time all retries of one message can wait, in milliseconds (jitter at its
 * maximum, bounded by `maxRetryTime`). Retention must be longer than this.
 */
export function retrySpanMs(policy: RetryPolicy): number {
  const jitter = policy.randomize ? 2 : 1;
  let total = 0;
  let retry = 1;
  let previous = -1;
  // Delays grow until they stop growing (maxTimeout, or a factor of 1); from there on each
  // adds the same, so the rest is one multiplication, and `retries: Infinity` gives
  // Infinity instead of a loop that never ends.
  for (; retry <= policy.retries && total < policy.maxRetryTime; retry++) {
    const delay = retryDelayMs(policy, retry);
    if (delay === previous) {
      const remaining = policy.retries - retry + 1;
      if (delay > 0) total += remaining * delay * jitter;
      break;
    }
    total += delay * jitter;
    previous = delay;
  }
  return Math.min(total, policy.maxRetryTime);
}

function nonNegative(option: string, value: unknown, fallback: number, allowInfinity = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new ConfigurationError(`Expected \`${option}\` to be a non-negative number, got ${String(value)}.`);
  }
  if (!Number.isFinite(value) && !allowInfinity) {
    throw new ConfigurationError(`Expected \`${option}\` to be a finite number, got ${String(value)}.`);
  }
  if (option.endsWith('.retries') && Number.isFinite(value) && !Number.isInteger(value)) {
    throw new ConfigurationError(`Expected \`${option}\` to be a whole number, got ${value}.`);
  }
  return value;
}

function fn<F>(option: string, value: F | undefined): F | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') {
    throw new ConfigurationError(`Expected \`${option}\` to be a function, got ${typeof value}.`);
  }
  return value;
}

function classes(
  option: string,
  value: ReadonlyArray<abstract new (...args: never[]) => Error> | undefined,
): ReadonlyArray<abstract new (...args: never[]) => Error> {
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value) || value.some((entry) => typeof entry !== 'function')) {
    throw new ConfigurationError(`Expected \`${option}\` to be an array of error classes.`);
  }
  return Object.freeze([...value]);
}
