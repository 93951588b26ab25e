import type { DeadLetterReason } from './events.js';
import type { ConflictOutcome, DeadLetterOutcome } from './outcome.js';

/** Every header the adapters add to a dead letter starts with this. */
export const DEAD_LETTER_HEADER_PREFIX = 'x-inboxkit-';

/**
 * The dead-letter headers every adapter writes, whatever the broker. Each adapter adds
 * where the message came from (`@inboxkit/kafka`: topic, partition, offset...;
 * `@inboxkit/rabbitmq`: exchange, routing key, queue) and exports the whole set as its own
 * `DEAD_LETTER_HEADERS`.
 */
export const DEAD_LETTER_HEADERS = {
  /** Why: `non_retryable`, `retries_exhausted`, `invalid_message`, `payload_conflict` or `crash_loop`. */
  reason: 'x-inboxkit-reason',
  /** The last error's `name`, e.g. `NonRetryableError`. */
  errorName: 'x-inboxkit-error-name',
  /** The last error's `message`, bounded (see the adapter). */
  errorMessage: 'x-inboxkit-error-message',
  /** The last error's stack, bounded (see the adapter). */
  errorStack: 'x-inboxkit-error-stack',
  /** The last error's `code`, when it has one (`INBOX_INVALID_MESSAGE`, a SQLSTATE...). */
  errorCode: 'x-inboxkit-error-code',
  /** Handler attempts (for a crash loop: attempts that never finished). */
  attempts: 'x-inboxkit-attempts',
  /** The message id, when the message had a usable one. */
  messageId: 'x-inboxkit-message-id',
  /** The inbox consumer name (the first half of the inbox key). */
  consumer: 'x-inboxkit-consumer',
  /** ISO 8601: when the first attempt started. */
  firstSeenAt: 'x-inboxkit-first-seen-at',
  /** ISO 8601: when it was dead-lettered. */
  failedAt: 'x-inboxkit-failed-at',
  /**
   * Times the message was replayed from a dead-letter destination (`inboxkit dlq replay`
   * sets it); kept when the message is dead-lettered again, so replays cannot loop.
   */
  replays: 'x-inboxkit-replays',
} as const;

/** What the common dead-letter headers say about a failure, before the adapter encodes it. */
export interface DeadLetterFailure {
  readonly reason: DeadLetterReason;
  readonly error: Error;
  /** The error's `code` as text, when it has a string or number one. */
  readonly errorCode: string | undefined;
  readonly attempts: number;
  readonly messageId: string | undefined;
  readonly firstSeenAt: Date;
}

/**
 * The failure a dead-letter or conflict outcome describes, in the terms of
 * {@link DEAD_LETTER_HEADERS}. A conflict is dead-lettered as `payload_conflict` after 0
 * attempts, first seen `now`.
 */
export function deadLetterFailure(outcome: DeadLetterOutcome | ConflictOutcome, now: Date): DeadLetterFailure {
  const error = outcome.error;
  const code = (error as { code?: unknown }).code;
  const errorCode = typeof code === 'string' || typeof code === 'number' ? String(code) : undefined;
  if (outcome.status === 'conflict') {
    return {
      reason: 'payload_conflict',
      error,
      errorCode,
      attempts: 0,
      messageId: outcome.messageId,
      firstSeenAt: now,
    };
  }
  return {
    reason: outcome.reason,
    error,
    errorCode,
    attempts: outcome.attempts,
    messageId: outcome.messageId,
    firstSeenAt: outcome.firstSeenAt,
  };
}
