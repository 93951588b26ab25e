import { InboxError } from '@inboxkit/core';

/** Why a confirmed publish did not succeed. */
export type PublishFailure = 'timeout' | 'nacked' | 'unroutable' | 'channel_closed' | 'not_connected';

/**
 * A dead-letter, retry or reply publish was not confirmed by the broker. The delivery it
 * was made for is not acked: it is requeued after a backoff and handled again.
 *
 * | code | meaning |
 * | --- | --- |
 * | `INBOX_RABBITMQ_PUBLISH_FAILED` | the broker nacked the publish, returned it as unroutable, did not confirm it within `publishTimeoutMs`, or the channel closed first |
 */
export class PublishError extends InboxError {
  /** Why the publish did not succeed. */
  readonly failure: PublishFailure;
  /** The exchange the publish was for (`''`: the default exchange). */
  readonly exchange: string;
  /** Its routing key. */
  readonly routingKey: string;

  constructor(
    failure: PublishFailure,
    exchange: string,
    routingKey: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(
      'INBOX_RABBITMQ_PUBLISH_FAILED',
      `Publish to exchange ${JSON.stringify(exchange)} with routing key ${JSON.stringify(routingKey)} failed (${failure}): ${detail}`,
      options,
    );
    this.failure = failure;
    this.exchange = exchange;
    this.routingKey = routingKey;
  }
}
