import { InboxError } from '@inboxkit/core';

/**
 * Publishing to the dead-letter topic failed or was not acknowledged in time. The record's
 * offset does not move: its partition is paused and the record comes back after a backoff.
 *
 * Code `INBOX_KAFKA_DEAD_LETTER_FAILED`.
 */
export class DeadLetterPublishError extends InboxError {
  /** The dead-letter topic the publish was for. */
  readonly topic: string;

  constructor(topic: string, message: string, options?: { cause?: unknown }) {
    super('INBOX_KAFKA_DEAD_LETTER_FAILED', message, options);
    this.topic = topic;
  }
}
