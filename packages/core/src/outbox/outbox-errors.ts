import { InboxError } from '../errors.js';

/**
 * A message given to `outbox.enqueue` broke a rule: no destination, a payload that is
 * neither bytes nor JSON-serializable, headers that are not text, an id that cannot be
 * stored. Thrown before any statement, so the transaction is untouched.
 *
 * | code | meaning |
 * | --- | --- |
 * | `INBOX_INVALID_OUTBOX_MESSAGE` | `field` names what is wrong; `index` is the message's place in the array given |
 */
export class InvalidOutboxMessageError extends InboxError {
  /** The offending field: `'topic'`, `'exchange'`, `'routingKey'`, `'key'`, `'headers'`, `'payload'`, `'messageId'`. */
  readonly field: string;
  /** The message's index in the array passed to `enqueue` (0 for a single message). */
  readonly index: number;

  constructor(field: string, index: number, detail: string) {
    super('INBOX_INVALID_OUTBOX_MESSAGE', `Outbox message ${index}: \`${field}\` ${detail}`);
    this.field = field;
    this.index = index;
  }
}

/**
 * Thrown by a relay's `publish` step when the broker cannot be reached at all (no
 * connection, the connection dropped during the batch). Nothing is counted against the
 * messages: the relay pauses with a backoff and tries again.
 *
 * | code | meaning |
 * | --- | --- |
 * | `INBOX_OUTBOX_BROKER_UNAVAILABLE` | the broker did not answer; `cause` is the client's error |
 */
export class BrokerUnavailableForRelayError extends InboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INBOX_OUTBOX_BROKER_UNAVAILABLE', message, options);
  }
}
