import { InboxError } from '@inboxkit/core';

/**
 * A dead-letter publish failed or was not acknowledged in time. The record's offset does
 * not move: its partition is paused and the record comes back after a backoff. (RabbitMQ's
 * adapter has a `PublishError` of its own for the same idea.)
 *
 * Code `INBOX_KAFKA_DEAD_LETTER_FAILED`.
 */
export class PublishError extends InboxError {
  /** The topic the publish was for. */
  readonly topic: string;

  constructor(topic: string, message: string, options?: { cause?: unknown }) {
    super('INBOX_KAFKA_DEAD_LETTER_FAILED', message, options);
    this.topic = topic;
  }
}
