import { hasCode, NonRetryableError } from './errors.js';
import type { RetryPolicy } from './retry-policy.js';

/**
 * How a failure steers processing:
 * - `unavailable`: the database does not answer. Not the message's fault: never
 *   dead-letter, never ack; hand it back and try later.
 * - `lock_timeout`: our own claim waited too long for another delivery of the same id.
 * - `contention`: a handler statement lost a lock race (55P03, 40001, 40P01), or the
 *   crash-loop count found no second connection in time (`ConnectionBusyError`). Retried
 *   after a pause without spending the message's retry budget: it would succeed once the
 *   lock is free.
 * - `permanent`: dead-letter at once.
 * - `transient`: roll back and retry with backoff; counts as an attempt.
 */
export type FailureKind = 'unavailable' | 'lock_timeout' | 'contention' | 'permanent' | 'transient';

/**
 * SQLSTATE classes and codes that mean "the database is not there", not "this message is
 * bad" (PostgreSQL Appendix A).
 */
const UNAVAILABLE_SQLSTATE_CLASSES: ReadonlySet<string> = new Set([
  '08', // connection exception
  '53', // insufficient resources (too many connections, disk full, out of memory)
  '58', // system error (I/O)
  '28', // invalid authorization: a configuration problem, not the message's
]);
const UNAVAILABLE_SQLSTATES: ReadonlySet<string> = new Set([
  '57P01', // admin_shutdown: terminating connection due to administrator command
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: the database system is starting up / shutting down
  '57P05', // idle_session_timeout
  '3D000', // invalid_catalog_name: database does not exist
  '25P03', // idle_in_transaction_session_timeout
]);

/**
 * SQLSTATEs of lock contention: a fresh transaction gets past them once the other holder
 * is done, so they do not spend the message's retry budget.
 */
const CONTENTION_SQLSTATES: ReadonlySet<string> = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available (a handler statement hit lock_timeout)
]);

/** Socket-level errors of the Node.js runtime. */
const SOCKET_ERRNOS: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
]);

/** Messages node-postgres, pg-pool and Kysely use for a connection that is gone or never came. */
const DRIVER_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'is not queryable',
  'Client was closed',
  'Cannot use a pool after calling end on the pool',
  'driver has already been destroyed',
  'Connection ended',
];

function sqlstate(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Whether `error` says the database (or the connection to it) is gone rather than that a
 * statement failed: `'database'` when Postgres or the driver said so (a SQLSTATE of the
 * classes above, a driver message), `'socket'` for a bare socket error, which may also
 * come from a handler's call to some other service. Looks through `cause` chains and
 * `AggregateError`s.
 */
export function databaseFailure(error: unknown, depth = 0): 'database' | 'socket' | undefined {
  if (typeof error !== 'object' || error === null || depth > 5) return undefined;
  const state = sqlstate(error);
  if (state !== undefined) {
    return UNAVAILABLE_SQLSTATES.has(state) || UNAVAILABLE_SQLSTATE_CLASSES.has(state.slice(0, 2))
      ? 'database'
      : undefined;
  }
  if (hasCode(error, 'INBOX_DATABASE_UNAVAILABLE')) return 'database';
  const message = (error as { message?: unknown }).message;
  if (typeof message === 'string' && DRIVER_MESSAGES.some((m) => message.includes(m))) return 'database';
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && SOCKET_ERRNOS.has(code)) return 'socket';
  if (error instanceof AggregateError) {
    for (const inner of error.errors) {
      const found = databaseFailure(inner, depth + 1);
      if (found !== undefined) return found;
    }
  }
  return databaseFailure((error as { cause?: unknown }).cause, depth + 1);
}

/** True for lock contention (see {@link CONTENTION_SQLSTATES}), also behind a `cause`. */
export function isContention(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 5) return false;
  const state = sqlstate(error);
  if (state !== undefined) return CONTENTION_SQLSTATES.has(state);
  return isContention((error as { cause?: unknown }).cause, depth + 1);
}

/** True when the error was raised by `lock_timeout`. */
export function isLockTimeout(error: unknown): boolean {
  return sqlstate(error) === '55P03';
}

/**
 * True for `undefined_function` (42883) and `insufficient_privilege` (42501): raised by a
 * call of the claim function, the function of migration 0002 is missing or this role may
 * not execute it.
 */
export function isUnusableFunction(error: unknown): boolean {
  const state = sqlstate(error);
  return state === '42883' || state === '42501';
}

/** True when the error marks itself, or is marked by the policy, as not worth retrying. */
export function isNonRetryable(error: unknown, policy: RetryPolicy): boolean {
  if (error instanceof NonRetryableError || hasCode(error, 'INBOX_NON_RETRYABLE')) return true;
  if ((error as { name?: unknown } | null)?.name === 'NonRetryableError') return true;
  return policy.nonRetryable.some((cls) => error instanceof cls);
}

/**
 * Sorts a failure. The error only *suggests* that the database is gone (a SQLSTATE of
 * class 08, 53 or 58, a driver message, a socket error); whether it is, is decided by
 * asking the database (`reachable`). An error of those kinds from a database that
 * answers is the message's problem (a statement binding 70,000 parameters gets 08P01
 * from a live server; another client's "Connection terminated" is not ours) and counts
 * as an attempt, so it can never hand the same message back forever.
 */
export async function classifyFailure(
  error: unknown,
  policy: RetryPolicy,
  reachable: () => Promise<boolean>,
): Promise<FailureKind> {
  if (hasCode(error, 'INBOX_LOCK_TIMEOUT')) return 'lock_timeout';
  if (hasCode(error, 'INBOX_CONNECTION_BUSY')) return 'contention';
  if (databaseFailure(error) !== undefined && !(await reachable())) return 'unavailable';
  if (isNonRetryable(error, policy)) return 'permanent';
  if (isContention(error)) return 'contention';
  return 'transient';
}
