/**
 * The logging methods inboxkit calls. A pino logger satisfies it as it is; so does any
 * object with these four methods taking `(fields, message)`.
 */
export interface InboxLogger {
  /** Per-message detail (claims, duplicates). */
  debug(fields: object, message?: string): void;
  /** Lifecycle (started, closed). */
  info(fields: object, message?: string): void;
  /** Retries, dead letters, a database or broker away. */
  warn(fields: object, message?: string): void;
  /** Failures the caller should look at. */
  error(fields: object, message?: string): void;
  /** Optional (pino has it): lets a hot path skip building a line that would not be written. */
  isLevelEnabled?(level: string): boolean;
}

const noop = (): void => {};

/** The default: logs nothing. */
export const silentLogger: InboxLogger = Object.freeze({
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
});
