import { InboxError } from '@inboxkit/core';

/**
 * `subscription.ready({ timeoutMs })` gave up: the subscription did not consume within that
 * time (the broker refused or dropped every connection, or the topology could not be
 * asserted). The subscription itself goes on trying until `close()`.
 *
 * | code | meaning |
 * | --- | --- |
 * | `INBOX_RABBITMQ_UNAVAILABLE` | not consuming within `timeoutMs`; `cause` is the last connection error |
 */
export class BrokerUnavailableError extends InboxError {
  /** The subscription's queue. */
  readonly queue: string;

  constructor(queue: string, message: string, options?: { cause?: unknown }) {
    super('INBOX_RABBITMQ_UNAVAILABLE', message, options);
    this.queue = queue;
  }
}
