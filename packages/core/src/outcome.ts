import type { DeadLetterReason, RetryLaterReason, StoredStatus } from './events.js';

/** The handler ran and committed together with the message's key. Ack it. */
export interface ProcessedOutcome<R> {
  /** Tells the outcomes apart. */
  readonly status: 'processed';
  /** The message's id: its key in the inbox. */
  readonly messageId: string;
  /** What the handler returned. */
  readonly result: R;
  /** Attempts it took, 1 when the first one succeeded. */
  readonly attempts: number;
}

/** The key was already in the inbox; the handler did not run. Ack it. */
export interface DuplicateOutcome {
  /** Tells the outcomes apart. */
  readonly status: 'duplicate';
  /** The message's id: its key in the inbox. */
  readonly messageId: string;
  /** The result stored by the first delivery, or `undefined` when none was kept. */
  readonly result: unknown;
  /** Whether the first delivery was processed or dead-lettered. */
  readonly previousStatus: StoredStatus;
  /** When the first delivery committed; `undefined` for a copy of a message within the same batch. */
  readonly processedAt: Date | undefined;
}

/** The key was in the inbox with a different payload fingerprint: dead-letter it. */
export interface ConflictOutcome {
  /** Tells the outcomes apart. */
  readonly status: 'conflict';
  /** The message's id: its key in the inbox, which holds the first content. */
  readonly messageId: string;
  /** A {@link PayloadConflictError} (`code: 'INBOX_PAYLOAD_CONFLICT'`). */
  readonly error: Error;
}

/**
 * The message cannot be processed: publish it to the dead-letter destination, then call
 * `inbox.recordDeadLetter(...)`, then ack.
 */
export interface DeadLetterOutcome {
  /** Tells the outcomes apart. */
  readonly status: 'dead_letter';
  /** `undefined` when the message had no usable id. */
  readonly messageId: string | undefined;
  /** Why it is dead-lettered. */
  readonly reason: DeadLetterReason;
  /** The last error. */
  readonly error: Error;
  /** Attempts made. */
  readonly attempts: number;
  /** When the first attempt started (or the first crash-loop attempt was recorded). */
  readonly firstSeenAt: Date;
}

/**
 * Nothing was decided: the database was unreachable or another delivery of the same id
 * held it too long. Do not ack and do not dead-letter: let the broker deliver it again
 * after a backoff.
 */
export interface RetryLaterOutcome {
  /** Tells the outcomes apart. */
  readonly status: 'retry_later';
  /** The message's id; `undefined` when it had none that could be read. */
  readonly messageId: string | undefined;
  /** What was in the way. */
  readonly reason: RetryLaterReason;
  /** The error that stopped it. */
  readonly error: Error;
  /** Attempts made. */
  readonly attempts: number;
}

/** What became of one message; adapters turn it into ack, nack, offset commit or dead-letter. */
export type ProcessOutcome<R = unknown> =
  | ProcessedOutcome<R>
  | DuplicateOutcome
  | ConflictOutcome
  | DeadLetterOutcome
  | RetryLaterOutcome;

/** True when the broker may forget the message (ack, commit its offset). */
export function isSettled(outcome: ProcessOutcome): outcome is ProcessedOutcome<unknown> | DuplicateOutcome {
  return outcome.status === 'processed' || outcome.status === 'duplicate';
}
