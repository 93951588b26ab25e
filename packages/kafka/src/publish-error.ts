import { InboxError } from '@inboxkit/core';

/** Why a dead-letter publish did not succeed. */
export type PublishFailure =
  /** The dead-letter topic does not exist, and `assertTopology` is off. */
  | 'missing_topic'
  /** The broker did not acknowledge the publish within `deadLetterTimeoutMs`. */
  | 'timeout'
  /** The broker could not be reached, or refused the records (or the topic's check or creation). */
  | 'broker_error';

/**
 * A dead-letter publish did not succeed. The record's offset does not move: its partition
 * is paused (event `paused`, reason `dead_letter_failed`, this error) and the record comes
 * back after a backoff. The same class, with the same word for the same idea, as
 * RabbitMQ's adapter.
 *
 * | code | meaning |
 * | --- | --- |
 * | `INBOX_KAFKA_PUBLISH_FAILED` | the dead-letter topic is missing, or the broker refused the publish or did not acknowledge it within `deadLetterTimeoutMs` |
 *
 * @example
 * ```ts
 * control.on('paused', ({ error }) => {
 *   if (error instanceof PublishError && error.failure === 'missing_topic') alert(`create ${error.topic}`)
 * })
 * ```
 */
export class PublishError extends InboxError {
  /** Why the publish did not succeed. */
  readonly failure: PublishFailure;
  /** The dead-letter topic the publish was for. */
  readonly topic: string;

  constructor(failure: PublishFailure, topic: string, detail: string, options?: { cause?: unknown }) {
    super(
      'INBOX_KAFKA_PUBLISH_FAILED',
      `Publish to dead-letter topic ${JSON.stringify(topic)} failed (${failure}): ${detail}`,
      options,
    );
    this.failure = failure;
    this.topic = topic;
  }
}
