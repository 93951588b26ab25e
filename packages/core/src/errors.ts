/**
 * Every error inboxkit throws or reports is an {@link InboxError} with a stable `code`.
 *
 * Errors are recognised by `code` (or `name`) as well as by `instanceof`, because an
 * application may load two copies of this package.
 *
 * | code | class | meaning |
 * | --- | --- | --- |
 * | `INBOX_CONFIGURATION` | {@link ConfigurationError} | an option is missing, unknown or out of range |
 * | `INBOX_INVALID_MESSAGE` | {@link InvalidMessageError} | a message has no usable id or payload |
 * | `INBOX_NON_RETRYABLE` | {@link NonRetryableError} | thrown by a handler: dead-letter at once, no more attempts |
 * | `INBOX_PAYLOAD_CONFLICT` | {@link PayloadConflictError} | an id was reused for different content |
 * | `INBOX_LOCK_TIMEOUT` | {@link LockTimeoutError} | another delivery of the same id held it longer than `lockTimeoutMs` |
 * | `INBOX_DATABASE_UNAVAILABLE` | {@link DatabaseUnavailableError} | Postgres could not be reached; nothing was decided |
 * | `INBOX_CRASH_LOOP` | {@link CrashLoopError} | a redelivered message started its handler `crashLoopLimit` times without finishing |
 * | `INBOX_HANDLER_FAILED` | {@link HandlerError} | a handler threw something that is not an `Error` |
 * | `INBOX_HANDLER_TIMEOUT` | {@link HandlerTimeoutError} | a handler attempt ran longer than `handlerTimeoutMs` |
 * | `INBOX_CONNECTION_BUSY` | {@link ConnectionBusyError} | a crash-loop count found no second connection in time; the message is handed back |
 * | `INBOX_INVALID_OUTBOX_MESSAGE` | `InvalidOutboxMessageError` | `outbox.enqueue` was given a message with an invalid field |
 * | `INBOX_OUTBOX_BROKER_UNAVAILABLE` | `BrokerUnavailableForRelayError` | a relay could not reach its broker; it pauses |
 */
export class InboxError extends Error {
  /** A stable, documented code; never reused for another meaning. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * An option is missing, unknown or out of range. Thrown by the call that is given the
 * option (a factory, or a method such as `outbox.failed({ limit })`), never later.
 *
 * `code`: `'INBOX_CONFIGURATION'`.
 */
export class ConfigurationError extends InboxError {
  constructor(message: string) {
    super('INBOX_CONFIGURATION', message);
  }
}

/**
 * A message broke a rule: no id, an id that is not a string, empty, longer than
 * `maxIdLength` or holding a NUL character, or a payload that could not be decoded.
 * Such a message is dead-lettered without running the handler.
 *
 * `code`: `'INBOX_INVALID_MESSAGE'`.
 */
export class InvalidMessageError extends InboxError {
  /** The id the message carried, when it had one. */
  readonly messageId: string | undefined;

  constructor(message: string, messageId?: string, options?: { cause?: unknown }) {
    super('INBOX_INVALID_MESSAGE', message, options);
    this.messageId = messageId;
  }
}

/**
 * Throw this (or a subclass) from a handler to say that retrying cannot help: the
 * transaction is rolled back and the message is dead-lettered at once.
 *
 * `code`: `'INBOX_NON_RETRYABLE'`.
 *
 * @example
 * ```ts
 * if (charge.amountCents <= 0) throw new NonRetryableError('amount must be positive')
 * ```
 */
export class NonRetryableError extends InboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INBOX_NON_RETRYABLE', message, options);
  }
}

/**
 * The same message id arrived with a payload whose fingerprint differs from the stored one.
 *
 * `code`: `'INBOX_PAYLOAD_CONFLICT'`.
 */
export class PayloadConflictError extends InboxError {
  /** The id whose stored fingerprint differs. */
  readonly messageId: string;

  constructor(consumer: string, messageId: string) {
    super(
      'INBOX_PAYLOAD_CONFLICT',
      `Message id ${JSON.stringify(messageId)} was already processed by consumer ${JSON.stringify(consumer)} with a different payload; the id is being reused for other content.`,
    );
    this.messageId = messageId;
  }
}

/**
 * Another delivery of the same id held its key longer than `lockTimeoutMs`. The first
 * delivery may still roll back, so this message must be retried later, never acked.
 *
 * `code`: `'INBOX_LOCK_TIMEOUT'`.
 */
export class LockTimeoutError extends InboxError {
  constructor(messageId: string, lockTimeoutMs: number, options?: { cause?: unknown }) {
    super(
      'INBOX_LOCK_TIMEOUT',
      `Message id ${JSON.stringify(messageId)} is being processed by another transaction that did not finish within lockTimeoutMs (${lockTimeoutMs} ms); retry later.`,
      options,
    );
  }
}

/**
 * A suspect delivery's crash-loop count, which runs on a second connection while the
 * attempt's transaction holds the first, found no connection or could not finish within
 * `max(lockTimeoutMs, 1 s)` (every pool connection busy, a pooler's queue full, a lock on
 * the count's row). Not the message's fault: like lock contention it is waited out without
 * spending the retry budget, then the message is handed back (`retry_later`).
 *
 * `code`: `'INBOX_CONNECTION_BUSY'`.
 */
export class ConnectionBusyError extends InboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INBOX_CONNECTION_BUSY', message, options);
  }
}

/**
 * A handler attempt ran longer than `handlerTimeoutMs`. Its transaction was rolled back
 * (the statement it was running, if any, cancelled) and its `context.signal` aborted with
 * this error. Retried like any transient failure; dead-lettered when retries run out.
 *
 * `code`: `'INBOX_HANDLER_TIMEOUT'`.
 */
export class HandlerTimeoutError extends InboxError {
  /** The message whose attempt timed out. */
  readonly messageId: string;
  /** The limit it ran past (`handlerTimeoutMs`). */
  readonly timeoutMs: number;

  constructor(messageId: string, timeoutMs: number) {
    super(
      'INBOX_HANDLER_TIMEOUT',
      `The handler of message id ${JSON.stringify(messageId)} ran longer than handlerTimeoutMs (${timeoutMs} ms); its transaction was rolled back.`,
    );
    this.messageId = messageId;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Postgres could not be reached or dropped the connection. Never a reason to dead-letter.
 *
 * `code`: `'INBOX_DATABASE_UNAVAILABLE'`.
 */
export class DatabaseUnavailableError extends InboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INBOX_DATABASE_UNAVAILABLE', message, options);
  }
}

/**
 * A redelivered message started its handler `crashLoopLimit` times and the process never
 * finished it (it crashed, was killed, or ran out of memory each time).
 *
 * `code`: `'INBOX_CRASH_LOOP'`.
 */
export class CrashLoopError extends InboxError {
  /** Attempts that started and never finished. */
  readonly attempts: number;

  constructor(messageId: string, attempts: number) {
    super(
      'INBOX_CRASH_LOOP',
      `Message id ${JSON.stringify(messageId)} started its handler ${attempts} times without finishing (the process died each time); it is dead-lettered without running again.`,
    );
    this.attempts = attempts;
  }
}

/**
 * A handler threw a value that is not an `Error`; the value is kept as `cause`.
 *
 * `code`: `'INBOX_HANDLER_FAILED'`.
 */
export class HandlerError extends InboxError {
  constructor(value: unknown) {
    super('INBOX_HANDLER_FAILED', `Handler threw a non-Error value: ${describe(value)}`, {
      cause: value,
    });
  }
}

/** Turns anything thrown into an `Error`, keeping `Error`s as they are. */
export function toError(value: unknown): Error {
  return value instanceof Error ? value : new HandlerError(value);
}

/** True when `error` is an inboxkit error with this code, whichever copy of the package made it. */
export function hasCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

function describe(value: unknown): string {
  try {
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    return text === undefined ? String(value) : text.slice(0, 200);
  } catch {
    return String(value);
  }
}
