import { type Kysely, sql } from 'kysely';
import { ConfigurationError, DatabaseUnavailableError, toError } from './errors.js';

/** A failed start-up attempt, as `onRetry` sees it. */
export interface StartupRetry {
  /** Failed attempts so far: 1 after the first. */
  readonly attempt: number;
  /** The wait before the next attempt, in milliseconds. */
  readonly delayMs: number;
  /** Why this attempt failed. */
  readonly error: Error;
}

/**
 * How start-up waits for a service that does not answer yet (a database or a broker being
 * restarted, or started after the consumer): attempts with exponential backoff and jitter.
 */
export interface StartupWaitOptions {
  /**
   * Gives up after this many milliseconds and rejects with the last attempt's error as
   * `cause`. Default `Infinity`: waits until the service answers or `signal` aborts, as a
   * process run by an orchestrator should (its own probes decide when it is too late).
   */
  readonly timeoutMs?: number;
  /** Stops waiting at once: rejects with the signal's `reason`. */
  readonly signal?: AbortSignal;
  /** Wait after the first failure, in milliseconds. Default `250`. */
  readonly minDelayMs?: number;
  /** Longest wait between attempts, in milliseconds. Default `5000`. */
  readonly maxDelayMs?: number;
  /**
   * Called after each failed attempt, before the wait: log it, or a consumer waiting for its
   * database looks hung. An exception it throws is ignored.
   */
  readonly onRetry?: (retry: StartupRetry) => void;
}

/** What {@link retryUntilReady} needs besides the attempt. */
export interface RetryUntilReadyRules {
  /** What is waited for, for errors: `'Postgres'`, `'the Kafka broker'`. */
  readonly what: string;
  /** The option's name in errors, e.g. `'waitForDatabase'`. */
  readonly option: string;
  /** Errors that waiting cannot cure (a wrong password): rethrown at once. Default: none. */
  readonly permanent?: (error: unknown) => boolean;
  /** The error to reject with when `timeoutMs` passed; default an `Error` naming `what`. */
  readonly timedOut?: (message: string, lastError: Error) => Error;
}

interface CompiledWait {
  readonly timeoutMs: number;
  readonly signal: AbortSignal | undefined;
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly onRetry: ((retry: StartupRetry) => void) | undefined;
}

const KEYS = new Set(['timeoutMs', 'signal', 'minDelayMs', 'maxDelayMs', 'onRetry']);

function compileWait(options: StartupWaitOptions | undefined, option: string): CompiledWait {
  const given = options ?? {};
  if (typeof given !== 'object' || given === null) {
    throw new ConfigurationError(`Expected \`${option}\` to be an object.`);
  }
  for (const key of Object.keys(given)) {
    if (!KEYS.has(key)) {
      throw new ConfigurationError(`Unknown option \`${option}.${key}\`; known: ${[...KEYS].join(', ')}.`);
    }
  }
  const duration = (name: string, value: number | undefined, fallback: number, infinite: boolean): number => {
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || Number.isNaN(value) || value < 0 || (!infinite && !Number.isFinite(value))) {
      throw new ConfigurationError(
        `Expected \`${option}.${name}\` to be a ${infinite ? '' : 'finite '}number of milliseconds of at least 0, got ${String(value)}.`,
      );
    }
    return value;
  };
  const timeoutMs = duration('timeoutMs', given.timeoutMs, Number.POSITIVE_INFINITY, true);
  const minDelayMs = Math.max(1, duration('minDelayMs', given.minDelayMs, 250, false));
  const maxDelayMs = duration('maxDelayMs', given.maxDelayMs, Math.max(5000, minDelayMs), false);
  if (maxDelayMs < minDelayMs) {
    throw new ConfigurationError(
      `\`${option}.maxDelayMs\` (${maxDelayMs}) must not be smaller than \`${option}.minDelayMs\` (${minDelayMs}).`,
    );
  }
  if (given.signal !== undefined && !(given.signal instanceof AbortSignal)) {
    throw new ConfigurationError(`Expected \`${option}.signal\` to be an AbortSignal.`);
  }
  if (given.onRetry !== undefined && typeof given.onRetry !== 'function') {
    throw new ConfigurationError(`Expected \`${option}.onRetry\` to be a function.`);
  }
  return { timeoutMs, signal: given.signal, minDelayMs, maxDelayMs, onRetry: given.onRetry };
}

/**
 * Runs `attempt` until it resolves, waiting between failures with exponential backoff and
 * "equal jitter" (half the delay plus a random share of the other half, so processes that
 * failed together do not come back together). Rejects with the signal's reason on abort,
 * at once with an error `rules.permanent` recognises, or after `timeoutMs` with the last
 * error as cause. An attempt still running at the deadline is no longer waited for.
 */
export async function retryUntilReady<T>(
  attempt: () => Promise<T>,
  options: StartupWaitOptions | undefined,
  rules: RetryUntilReadyRules,
): Promise<T> {
  const wait = compileWait(options, rules.option);
  const started = Date.now();
  const deadline = started + wait.timeoutMs;
  for (let failures = 1; ; failures++) {
    wait.signal?.throwIfAborted();
    let error: Error;
    try {
      return await bounded(attempt(), deadline - Date.now(), wait.signal);
    } catch (thrown) {
      wait.signal?.throwIfAborted();
      if (thrown instanceof AttemptTimedOut) error = thrown.lastError ?? new Error('no answer');
      else if (rules.permanent?.(thrown) === true) throw thrown;
      else error = toError(thrown);
    }
    const left = deadline - Date.now();
    const base = Math.min(wait.maxDelayMs, wait.minDelayMs * 2 ** Math.min(failures - 1, 30));
    const delayMs = Math.min(Math.round(base / 2 + Math.random() * (base / 2)), Math.max(0, left));
    if (left <= 0) {
      const message = `${rules.what} did not answer within ${rules.option}.timeoutMs (${wait.timeoutMs} ms, ${failures} attempts); the last error: ${error.message}`;
      throw rules.timedOut?.(message, error) ?? new Error(message, { cause: error });
    }
    try {
      wait.onRetry?.({ attempt: failures, delayMs, error });
    } catch {
      // a logging callback must not stop the wait
    }
    await sleep(delayMs, wait.signal);
  }
}

/** An attempt still running at the deadline. */
class AttemptTimedOut extends Error {
  readonly lastError: Error | undefined;
  constructor(lastError?: Error) {
    super('timed out');
    this.lastError = lastError;
  }
}

/** `promise`, or a rejection after `ms` or when `signal` aborts (the promise is left to settle on its own). */
async function bounded<T>(promise: Promise<T>, ms: number, signal: AbortSignal | undefined): Promise<T> {
  if (!Number.isFinite(ms) && signal === undefined) return promise;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  promise.catch(() => {}); // settles unobserved when the deadline wins
  const stop = new Promise<never>((_, reject) => {
    if (Number.isFinite(ms)) {
      timer = setTimeout(
        () => reject(new AttemptTimedOut(new Error(`no answer within the ${Math.max(0, ms)} ms left`))),
        Math.max(0, ms),
      );
    }
    if (signal !== undefined) {
      onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
    }
  });
  try {
    return await Promise.race([promise, stop]);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * SQLSTATEs that waiting cannot cure: a wrong password or role (class 28) and a database
 * that does not exist (3D000). Everything else (refused connections, `57P03` "the database
 * system is starting up", `53300` too many connections...) is waited out.
 */
function permanentDatabaseError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('28') || code === '3D000');
}

/**
 * Waits until the database answers `SELECT 1`, probing with backoff: for start-up during an
 * outage (a Postgres being restarted or failed over, or started after the consumer), so the
 * consumer comes up when the database does instead of exiting. A wrong password or a
 * missing database fails at once. Rejects with `DatabaseUnavailableError` when `timeoutMs`
 * passed, with the signal's reason on abort.
 *
 * @example
 * ```ts
 * await waitForDatabase(db, { onRetry: ({ attempt, error }) => log.warn({ attempt, err: error }, 'waiting for Postgres') })
 * ```
 */
export async function waitForDatabase<DB>(db: Kysely<DB>, options: StartupWaitOptions = {}): Promise<void> {
  await retryUntilReady(
    async () => {
      await sql`SELECT 1`.execute(db);
    },
    options,
    {
      what: 'Postgres',
      option: 'waitForDatabase',
      permanent: permanentDatabaseError,
      timedOut: (message, lastError) => new DatabaseUnavailableError(message, { cause: lastError }),
    },
  );
}
