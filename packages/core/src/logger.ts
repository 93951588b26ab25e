/**
 * The logging methods inboxkit calls. A pino logger satisfies it as it is; so does any
 * object with these four methods taking `(fields, message)`.
 */
export interface InboxLogger {
  /** One line per message the adapters are done with (`inboxkit: message handled`), and minor failures. */
  debug(fields: object, message?: string): void;
  /** Starting and stopping: consuming, closed, a relay resumed, a dead-letter topic created. */
  info(fields: object, message?: string): void;
  /** Failures inboxkit recovers from: a connection lost, waiting for Postgres or the broker, a relay paused. */
  warn(fields: object, message?: string): void;
  /** Failures that need a look: an event listener that threw, a delivery it could not take, the relay loop failing. */
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
